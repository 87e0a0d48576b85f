/*
 * Live migration of this VM (docs/migration.md): the source's `migrate` / `migrate-cancel`
 * verbs run migrate/migration.c's sender on a thread of their own; `kumo run --incoming ADDR`
 * receives. This file only connects them to the VM: pause, quiesce, state, dirty logging.
 */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/memserver.h"
#include "migrate/migration.h"
#include "migrate/split.h"
#include "migrate/state.h"
#include "migrate/stream.h"
#include "mm/dirty.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"
#include "vmm/migration.h"
#include "vmm/snapshot.h"
#include "vmm/vm-control.h"
#include "vmm/vm.h"

struct vm_migration {
	pthread_t thread;
	int running;			/* atomic: the sender thread exists and has not ended */
	int joinable;
	int cancel;			/* atomic: migrate-cancel */
	int fd;
	int was_paused;
	char to[256];
	struct mig_params params;
	struct mig_remote *remote;	/* destination, post-copy: the source's memory */
	int remote_fd;
	pthread_mutex_t lock;		/* remote, remote_fd, lazy_result */
	int lazy_result;		/* 1 all memory arrived, -1 lost, 0 not yet */
	/* Split migration (migrate/split.h, docs/split-migration.md). */
	int split;			/* the source's migration is a split one */
	struct mig_split_params sp;
	char sub_addr[MIG_SPLIT_SUBS_MAX][MIG_SPLIT_ADDR_MAX];
	struct mig_split_result split_res;	/* source: the last split's figures */
	int split_done;
	struct mig_split_dest *split_dest;	/* main host: the sub-hosts' pages */
};

static void finish_remote(struct vm_migration *mg);

/* ---- the source's ops ---- */

static int src_dirty_start(void *opaque)
{
	struct vm *vm = opaque;

	return kvm_dirty_log_start(&vm->kvm, &vm->mem);
}

static int src_dirty_sync(void *opaque)
{
	struct vm *vm = opaque;

	return kvm_dirty_log_sync(&vm->kvm, &vm->mem);
}

static void src_dirty_stop(void *opaque)
{
	struct vm *vm = opaque;

	kvm_dirty_log_stop(&vm->kvm, &vm->mem);
}

static int src_stop(void *opaque)
{
	struct vm *vm = opaque;
	char err[256];
	int ret;

	vm->mig->was_paused = vm_is_paused(vm);
	ret = vm_pause(vm);
	if (ret)
		return ret;
	ret = vm_quiesce_devices(vm, err, sizeof(err));
	if (ret) {
		pr_err("migration: %s", err);
		vm_resume_devices(vm);
		if (!vm->mig->was_paused)
			vm_resume(vm);
	}
	return ret;
}

static int src_state(void *opaque, void **blob, size_t *size)
{
	struct vm *vm = opaque;
	char err[256];
	int ret = vm_state_encode(vm, blob, size, err, sizeof(err));

	if (ret)
		pr_err("migration: %s", err);
	return ret;
}

static void src_resume(void *opaque)
{
	struct vm *vm = opaque;

	vm_resume_devices(vm);
	if (!vm->mig->was_paused)
		vm_resume(vm);
}

static struct json_object *progress_json(const struct mig_progress *p)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "phase", json_object_new_string(p->phase ? p->phase : ""));
	json_object_object_add(o, "round", json_object_new_int((int)p->round));
	json_object_object_add(o, "pages_sent", json_object_new_int64((int64_t)p->pages_sent));
	json_object_object_add(o, "zero_pages", json_object_new_int64((int64_t)p->zero_pages));
	json_object_object_add(o, "bytes_sent", json_object_new_int64((int64_t)p->bytes_sent));
	json_object_object_add(o, "dirty_pages", json_object_new_int64((int64_t)p->dirty_pages));
	json_object_object_add(o, "dirty_rate_pages_s",
			       json_object_new_int64((int64_t)p->dirty_rate));
	json_object_object_add(o, "bandwidth_bytes_s", json_object_new_int64((int64_t)p->bandwidth));
	json_object_object_add(o, "expected_downtime_ms",
			       json_object_new_double(p->expected_downtime_ns == UINT64_MAX ? -1 :
						      (double)p->expected_downtime_ns / 1e6));
	json_object_object_add(o, "downtime_ms", json_object_new_double((double)p->downtime_ns / 1e6));
	json_object_object_add(o, "total_ms", json_object_new_double((double)p->total_ns / 1e6));
	json_object_object_add(o, "postcopy_pages",
			       json_object_new_int64((int64_t)p->postcopy_reads));
	return o;
}

static void src_progress(void *opaque, const struct mig_progress *p)
{
	vm_control_event(opaque, "migrate-progress", progress_json(p));
}

static const struct mig_source_ops source_ops = {
	.dirty_start = src_dirty_start,
	.dirty_sync = src_dirty_sync,
	.dirty_stop = src_dirty_stop,
	.stop = src_stop,
	.state = src_state,
	.resume = src_resume,
	.progress = src_progress,
};

static void *sender(void *arg)
{
	struct vm *vm = arg;
	struct vm_migration *mg = vm->mig;
	struct mig_progress res;
	char err[512] = "";
	struct json_object *ev;
	int ret;

	seccomp_enter(KUMO_THREAD_MIGRATION);
	ret = mig_source_run(&vm->mem, vm->ncpus, mg->fd, &source_ops, vm, &mg->params, &res,
			     err, sizeof(err));
	close(mg->fd);
	mg->fd = -1;
	ev = progress_json(&res);
	if (!ret) {
		pr_info("migration to %s done: %.1f ms, downtime %.1f ms, %llu bytes sent",
			mg->to, (double)res.total_ns / 1e6, (double)res.downtime_ns / 1e6,
			(unsigned long long)res.bytes_sent);
		vm_control_event(vm, "migrate-done", ev);
		vm_request_stop(vm, VM_STOP_USER, KUMO_EXIT_POWEROFF);
	} else {
		json_object_object_add(ev, "error", json_object_new_string(err));
		pr_err("migration to %s failed: %s%s", mg->to, err,
		       ret == -ENOTRECOVERABLE ? " (after the switch-over: the VM is lost)" :
		       " (the VM runs on here)");
		vm_control_event(vm, "migrate-failed", ev);
		if (ret == -ENOTRECOVERABLE)
			vm_request_stop(vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
	}
	__atomic_store_n(&mg->running, 0, __ATOMIC_RELEASE);
	return NULL;
}

static struct json_object *split_json(const struct mig_split_counts *c)
{
	struct json_object *o = json_object_new_object(), *subs = json_object_new_array();

	json_object_object_add(o, "pages_main", json_object_new_int64((int64_t)c->pages_main));
	json_object_object_add(o, "pages_free", json_object_new_int64((int64_t)c->pages_free));
	for (unsigned int i = 0; i < c->nr_subs && i < MIG_SPLIT_SUBS_MAX; i++)
		json_object_array_add(subs, json_object_new_int64((int64_t)c->pages_sub[i]));
	json_object_object_add(o, "pages_sub", subs);
	json_object_object_add(o, "pages_remote", json_object_new_int64((int64_t)c->pages_remote));
	json_object_object_add(o, "replicas", json_object_new_int((int)c->replicas));
	json_object_object_add(o, "pages_in", json_object_new_int64((int64_t)c->pages_in));
	json_object_object_add(o, "pages_in_replica",
			       json_object_new_int64((int64_t)c->pages_in_replica));
	json_object_object_add(o, "bytes_in", json_object_new_int64((int64_t)c->bytes_in));
	json_object_object_add(o, "errors", json_object_new_int64((int64_t)c->errors));
	json_object_object_add(o, "owner_failures",
			       json_object_new_int64((int64_t)c->owner_failures));
	json_object_object_add(o, "subs_gone", json_object_new_int((int)c->subs_gone));
	json_object_object_add(o, "pages_in_bulk", json_object_new_int64((int64_t)c->pages_in_bulk));
	json_object_object_add(o, "bulk_gone", json_object_new_int((int)c->bulk_gone));
	json_object_object_add(o, "pages_out", json_object_new_int64((int64_t)c->pages_out));
	json_object_object_add(o, "bytes_out", json_object_new_int64((int64_t)c->bytes_out));
	json_object_object_add(o, "pageout_refused",
			       json_object_new_int64((int64_t)c->pageout_refused));
	json_object_object_add(o, "resident_budget_bytes", json_object_new_int64((int64_t)c->budget));
	return o;
}

static void *split_sender(void *arg)
{
	struct vm *vm = arg;
	struct vm_migration *mg = vm->mig;
	struct mig_split_result res;
	char err[512] = "";
	struct json_object *ev;
	int ret;

	seccomp_enter(KUMO_THREAD_MIGRATION);
	ret = mig_split_source_run(&vm->mem, vm->ncpus, mg->fd, &source_ops, vm, &mg->sp, &res,
				   err, sizeof(err));
	close(mg->fd);
	mg->fd = -1;
	for (unsigned int i = 0; i < mg->sp.nr_subs; i++) {
		ms_client_close(mg->sp.sub[i]);
		mg->sp.sub[i] = NULL;
	}
	mg->split_res = res;
	mg->split_done = 1;
	ev = split_json(&res.c);
	json_object_object_add(ev, "bytes_main", json_object_new_int64((int64_t)res.bytes_main));
	json_object_object_add(ev, "bytes_sub", json_object_new_int64((int64_t)res.bytes_sub));
	json_object_object_add(ev, "total_ms", json_object_new_double((double)res.total_ns / 1e6));
	json_object_object_add(ev, "split", json_object_new_boolean(1));
	if (!ret) {
		pr_info("split migration to %s done: %.1f ms, %llu bytes to the main host, %llu to "
			"the sub-hosts, %llu free pages not sent", mg->to, (double)res.total_ns / 1e6,
			(unsigned long long)res.bytes_main, (unsigned long long)res.bytes_sub,
			(unsigned long long)res.c.pages_free);
		vm_control_event(vm, "migrate-done", ev);
		vm_request_stop(vm, VM_STOP_USER, KUMO_EXIT_POWEROFF);
	} else {
		json_object_object_add(ev, "error", json_object_new_string(err));
		pr_err("split migration to %s failed: %s (the VM runs on here)", mg->to, err);
		vm_control_event(vm, "migrate-failed", ev);
	}
	__atomic_store_n(&mg->running, 0, __ATOMIC_RELEASE);
	return NULL;
}

/* sub=ADDR[,ADDR...] main-mem=SIZE [tracking=on|off]: connect to the sub-hosts. */
static int split_setup(struct vm_migration *mg, const struct vm_migrate_args *a, char *err,
		       size_t errlen)
{
	const char *p = a->sub;
	char why[256];

	memset(&mg->sp, 0, sizeof(mg->sp));
	mg->sp.main_mem = a->main_mem;
	mg->sp.tracking = !a->no_tracking;
	if (getrandom(&mg->sp.vm_id, sizeof(mg->sp.vm_id), 0) != sizeof(mg->sp.vm_id) ||
	    !mg->sp.vm_id)
		mg->sp.vm_id = vm_now_ns() | 1;
	while (*p) {
		size_t n = strcspn(p, ",");
		unsigned int i = mg->sp.nr_subs;
		int fd;

		if (i == MIG_SPLIT_SUBS_MAX || !n || n >= MIG_SPLIT_ADDR_MAX) {
			snprintf(err, errlen, "sub=%s: 1 to %d addresses of under %d bytes", a->sub,
				 MIG_SPLIT_SUBS_MAX, MIG_SPLIT_ADDR_MAX);
			return -EINVAL;
		}
		memcpy(mg->sub_addr[i], p, n);
		mg->sub_addr[i][n] = '\0';
		mg->sp.sub_addr[i] = mg->sub_addr[i];
		mg->sp.nr_subs++;
		p += n + (p[n] == ',');
		fd = mig_connect(mg->sub_addr[i], why, sizeof(why));
		if (fd < 0 || ms_client_open(fd, mg->sp.vm_id, &mg->sp.sub[i], why, sizeof(why))) {
			snprintf(err, errlen, "sub-host %s: %s", mg->sub_addr[i], why);
			return fd < 0 ? fd : -ECONNREFUSED;
		}
	}
	if (!mg->sp.nr_subs) {
		snprintf(err, errlen, "sub=: no sub-host");
		return -EINVAL;
	}
	mg->sp.replicas = a->replicas;
	mg->sp.pageout = a->pageout;
	return mig_split_params_check(&mg->sp, err, errlen);
}

static void split_teardown(struct vm_migration *mg)
{
	for (unsigned int i = 0; i < MIG_SPLIT_SUBS_MAX; i++) {
		ms_client_close(mg->sp.sub[i]);
		mg->sp.sub[i] = NULL;
	}
}

/*
 * The remote fault service times (migrate/lazy.c's log2 histogram): the non-empty buckets as
 * {lo_us, hi_us (null: unbounded), faults}, in order.
 */
static struct json_object *fault_hist_json(const struct mig_lazy_stats *st)
{
	struct json_object *a = json_object_new_array();

	for (int i = 0; i < MIG_LAZY_HIST; i++) {
		struct json_object *b;
		uint64_t lo, hi;

		if (!st->latency_hist[i])
			continue;
		mig_lazy_hist_bounds(i, &lo, &hi);
		b = json_object_new_object();
		json_object_object_add(b, "lo_us", json_object_new_int64((int64_t)(lo / 1000)));
		json_object_object_add(b, "hi_us", hi == UINT64_MAX ? NULL :
				       json_object_new_int64((int64_t)(hi / 1000)));
		json_object_object_add(b, "faults",
				       json_object_new_int64((int64_t)st->latency_hist[i]));
		json_object_array_add(a, b);
	}
	return a;
}

int vm_split_stats(struct vm *vm, struct json_object **result, char *err, size_t errlen)
{
	struct vm_migration *mg = vm->mig;
	struct mig_split_counts c;
	struct json_object *o;

	if (mg && mg->split_dest) {
		mig_split_dest_counts(mg->split_dest, &c);
		o = split_json(&c);
		json_object_object_add(o, "role", json_object_new_string("main"));
		if (vm->lazy) {
			struct mig_lazy_stats st;

			mig_lazy_stats(vm->lazy, &st);
			/* With page-out: the budget in force (0: none), resident, high-water mark. */
			const char *name[] = { "faults", "pages_zero_served", "budget_pages",
					       "pages_resident", "resident_max", "evictions_failed",
					       "faults_over_budget", "wp_faults" };
			uint64_t v[] = { st.faults, st.pages_zero, st.budget_pages, st.pages_resident,
					 st.resident_max, st.evictions_failed, st.over_budget,
					 st.wp_faults };

			for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
				json_object_object_add(o, name[i], json_object_new_int64((int64_t)v[i]));
			json_object_object_add(o, "fault_median_us", json_object_new_double(
				(double)mig_lazy_latency_median_ns(&st) / 1e3));
			json_object_object_add(o, "fault_p99_us", json_object_new_double(
				(double)mig_lazy_latency_quantile_ns(&st, 990) / 1e3));
			json_object_object_add(o, "fault_max_us", json_object_new_double(
				(double)st.latency_max_ns / 1e3));
			json_object_object_add(o, "fault_hist", fault_hist_json(&st));
		}
	} else if (mg && mg->split_done && !__atomic_load_n(&mg->running, __ATOMIC_ACQUIRE)) {
		o = split_json(&mg->split_res.c);
		json_object_object_add(o, "role", json_object_new_string("source"));
		json_object_object_add(o, "bytes_main",
				       json_object_new_int64((int64_t)mg->split_res.bytes_main));
		json_object_object_add(o, "bytes_sub",
				       json_object_new_int64((int64_t)mg->split_res.bytes_sub));
		json_object_object_add(o, "total_ms", json_object_new_double(
			(double)mg->split_res.total_ns / 1e6));
	} else {
		snprintf(err, errlen, "no split migration here");
		return -ENOENT;
	}
	*result = o;
	return 0;
}

/* "auto", "off", "now", "after-rounds:N". */
static int parse_postcopy(const char *s, struct mig_params *p)
{
	char *end;
	long n;

	if (!strcmp(s, "auto"))
		p->postcopy = MIG_POSTCOPY_AUTO;
	else if (!strcmp(s, "off"))
		p->postcopy = MIG_POSTCOPY_OFF;
	else if (!strcmp(s, "now"))
		p->postcopy_now = 1;
	else if (!strncmp(s, "after-rounds:", 13) && (n = strtol(s + 13, &end, 10)) >= 0 &&
		 !*end && end != s + 13 && n <= 1000) {
		if (n == 0)
			p->postcopy_now = 1;
		else
			p->postcopy = (int)n;
	} else {
		return -EINVAL;
	}
	return 0;
}

int vm_migrate_start(struct vm *vm, const struct vm_migrate_args *a, char *err, size_t errlen)
{
	struct vm_migration *mg;
	int ret;

	if (!vm->mig) {
		vm->mig = calloc(1, sizeof(*vm->mig));
		if (!vm->mig)
			return -ENOMEM;
		vm->mig->fd = vm->mig->remote_fd = -1;
		pthread_mutex_init(&vm->mig->lock, NULL);
	}
	mg = vm->mig;
	if (__atomic_load_n(&mg->running, __ATOMIC_ACQUIRE)) {
		snprintf(err, errlen, "a migration to %s is running", mg->to);
		return -EBUSY;
	}
	if (mg->joinable) {
		pthread_join(mg->thread, NULL);
		mg->joinable = 0;
	}
	if (vm->lazy) {
		snprintf(err, errlen, "this VM's memory is still arriving (lazy restore)");
		return -EBUSY;
	}
	memset(&mg->params, 0, sizeof(mg->params));
	mg->params.downtime_ns = (a->downtime_ms ? a->downtime_ms : 300) * 1000000ULL;
	mg->params.bandwidth = a->bandwidth;
	mg->params.max_rounds = 30;
	mg->params.postcopy = MIG_POSTCOPY_OFF;
	if (a->postcopy && parse_postcopy(a->postcopy, &mg->params)) {
		snprintf(err, errlen, "postcopy=%s: not auto, off, now or after-rounds:N", a->postcopy);
		return -EINVAL;
	}
	mg->params.cancel = &mg->cancel;
	mg->cancel = 0;
	snprintf(mg->to, sizeof(mg->to), "%s", a->to);
	mg->split = a->sub != NULL;
	if (mg->split && (ret = split_setup(mg, a, err, errlen))) {
		split_teardown(mg);
		return ret;
	}
	ret = mig_connect(a->to, err, errlen);
	if (ret < 0) {
		split_teardown(mg);
		return ret;
	}
	mg->fd = ret;
	__atomic_store_n(&mg->running, 1, __ATOMIC_RELEASE);
	ret = -pthread_create(&mg->thread, NULL, mg->split ? split_sender : sender, vm);
	if (ret) {
		__atomic_store_n(&mg->running, 0, __ATOMIC_RELEASE);
		split_teardown(mg);
		close(mg->fd);
		mg->fd = -1;
		snprintf(err, errlen, "cannot start the migration thread: %s", strerror(-ret));
		return ret;
	}
	pthread_setname_np(mg->thread, "kumo-migrate");
	mg->joinable = 1;
	return 0;
}

int vm_migrate_cancel(struct vm *vm)
{
	if (!vm->mig || !__atomic_load_n(&vm->mig->running, __ATOMIC_ACQUIRE))
		return -ENOENT;
	__atomic_store_n(&vm->mig->cancel, 1, __ATOMIC_RELEASE);
	return 0;
}

void vm_migration_end(struct vm *vm)
{
	struct vm_migration *mg = vm->mig;

	if (!mg)
		return;
	if (mg->joinable) {
		__atomic_store_n(&mg->cancel, 1, __ATOMIC_RELEASE);
		if (mg->fd >= 0)
			shutdown(mg->fd, SHUT_RDWR);	/* out of a blocking send or receive */
		pthread_join(mg->thread, NULL);
	}
	vm_restore_end(vm);	/* the lazy server no longer reads from the remote */
	mig_split_dest_forget(mg->split_dest);	/* the sub-hosts' room back */
	mig_split_dest_free(mg->split_dest);
	split_teardown(mg);
	pthread_mutex_lock(&mg->lock);
	if (mg->remote) {
		mg->lazy_result = -1;
		finish_remote(mg);
	}
	pthread_mutex_unlock(&mg->lock);
	pthread_mutex_destroy(&mg->lock);
	free(mg);
	vm->mig = NULL;
}

/* ---- the destination ---- */

static int dst_load(void *opaque, const void *blob, size_t size)
{
	struct vm *vm = opaque;
	struct mig_machine mach;
	struct mig_state st;
	int ret = mig_state_decode(blob, size, &st);

	if (ret)
		return ret;
	mig_machine_describe(&mach, &vm->mem, vm->ncpus);
	ret = mig_machine_check(&st.machine, &mach);
	if (!ret)
		ret = vm_state_load(vm, &st);
	mig_state_free(&st);
	return ret;
}

static int dst_lazy(void *opaque, const struct mig_page_source *src)
{
	return vm_lazy_begin(opaque, src);
}

static int dst_start(void *opaque)
{
	struct vm *vm = opaque;

	pr_debug("migration: starting %u vCPU(s) at CLOCK_MONOTONIC %.6f s", vm->ncpus,
		 (double)vm_now_ns() / 1e9);
	return vm_start(vm);
}

static const struct mig_dest_ops dest_ops = {
	.load = dst_load,
	.lazy = dst_lazy,
	.start = dst_start,
};

/* Post-copy: tell the source whether all memory arrived; mg->lock held. */
static void finish_remote(struct vm_migration *mg)
{
	int ok = mg->lazy_result > 0;

	mig_dest_finish(mg->remote, ok);
	mg->remote = NULL;
	close(mg->remote_fd);
	mg->remote_fd = -1;
	pr_info("migration: post-copy %s", ok ? "complete: the source may exit" :
		"failed: guest memory was lost with the source");
}

/* From the lazy watcher: all the memory is here (or lost). */
static void dst_lazy_done(struct vm *vm, int ok)
{
	struct vm_migration *mg = vm->mig;

	if (!mg)
		return;
	pthread_mutex_lock(&mg->lock);
	if (!mg->lazy_result) {
		mg->lazy_result = ok ? 1 : -1;
		if (mg->remote)
			finish_remote(mg);
	}
	pthread_mutex_unlock(&mg->lock);
}

int vm_incoming(struct vm *vm, const char *addr, char *err, size_t errlen)
{
	uint64_t t0 = vm_now_ns();
	struct mig_remote *remote = NULL;
	int lfd, fd, ret;

	vm->mig = calloc(1, sizeof(*vm->mig));
	if (!vm->mig)
		return -ENOMEM;
	vm->mig->fd = vm->mig->remote_fd = -1;
	pthread_mutex_init(&vm->mig->lock, NULL);
	lfd = mig_listen(addr, err, errlen);
	if (lfd < 0)
		return lfd;
	pr_info("migration: waiting for the VM on %s", addr);
	vm_control_event(vm, "incoming", NULL);
	fd = mig_accept(lfd, err, errlen);
	close(lfd);
	if (fd < 0)
		return fd;
	/* Set before the vCPUs start: the watcher may finish before we return. */
	vm->lazy_done = dst_lazy_done;
	if (mig_split_peek(fd) == 1) {
		/* Split: the main link ends here; the sub-hosts serve the rest. */
		ret = mig_split_dest_run(&vm->mem, vm->ncpus, fd, &dest_ops, vm, NULL, NULL,
					 &vm->mig->split_dest, err, errlen);
		close(fd);
		if (!ret)
			pr_info("split migration: received from %s in %.1f ms; the sub-hosts' pages "
				"follow on demand", addr, (double)(vm_now_ns() - t0) / 1e6);
		return ret;
	}
	vm->mig->remote_fd = fd;
	ret = mig_dest_run(&vm->mem, vm->ncpus, fd, &dest_ops, vm, &remote, err, errlen);
	if (ret && remote) {
		/* The lazy server may still hold it: vm_migration_end() frees it after it. */
		pthread_mutex_lock(&vm->mig->lock);
		vm->mig->remote = remote;
		vm->mig->lazy_result = -1;
		pthread_mutex_unlock(&vm->mig->lock);
		return ret;
	}
	if (ret) {
		vm->mig->remote_fd = -1;
		close(fd);
		return ret;
	}
	pthread_mutex_lock(&vm->mig->lock);
	if (remote) {
		vm->mig->remote = remote;
		if (vm->mig->lazy_result)	/* the memory arrived before we got here */
			finish_remote(vm->mig);
	} else {
		vm->mig->remote_fd = -1;
		close(fd);
	}
	pthread_mutex_unlock(&vm->mig->lock);
	pr_info("migration: received from %s in %.1f ms (%s)", addr,
		(double)(vm_now_ns() - t0) / 1e6, remote ? "post-copy: memory follows" :
		"pre-copy");
	return 0;
}
