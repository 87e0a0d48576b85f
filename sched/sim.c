/*
 * `kumo sim` (sched/sim.h, docs/sim.md): the coordinator's policy objects, unchanged (the same
 * const structs; shared objects through coord_find_policy, the coordinator's own loader), run
 * against modelled VMs through their own sched_ops table in virtual time. The log is the
 * coordinator's JSON lines with ts in virtual seconds, so what reads one reads the other.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "sched/coord.h"
#include "sched/sched.h"
#include "sched/sim.h"
#include "sched/stats.h"
#include "vmm/numa.h"

/*
 * libm for the simulator alone: kumo is one binary, and no VMM should map a library only
 * `kumo sim` uses (docs/dependencies.md), so sim_run() dlopens it for exp and pow.
 */
static struct {
	void *h;
	double (*exp)(double);
	double (*pow)(double, double);
} libm;

static int libm_open(char *err, size_t errlen)
{
	const char *e;

	if (libm.h)
		return 0;
	libm.h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
	if (libm.h) {
		libm.exp = (double (*)(double))dlsym(libm.h, "exp");
		libm.pow = (double (*)(double, double))dlsym(libm.h, "pow");
		if (libm.exp && libm.pow)
			return 0;
		dlclose(libm.h);
		libm.h = NULL;
	}
	e = dlerror();
	snprintf(err, errlen, "libm.so.6 (exp, pow): %s", e ? e : "cannot load");
	return -ELIBACC;
}

static double min_d(double a, double b)
{
	return a < b ? a : b;
}

static double max_d(double a, double b)
{
	return a > b ? a : b;
}

#define MIB		(1ull << 20)
#define MIN_KEEP	(32ull << 20)	/* as the coordinator: no balloon target below this */
#define OOM_SLACK	(16ull << 20)	/* what a guest keeps free before it deflates on OOM */
#define MAX_VCPUS	64
#define LOAD_FREQ_MS	5000		/* the kernel's loadavg period */
#define MAX_POLICIES	16
#define ERRLEN		256

struct hist {
	double t;
	uint64_t target, actual;
	int nice, weight;
};

struct svm {
	struct sim_vm_conf c;
	struct sim_lru lru;
	uint64_t target, actual, anon;
	/* the file workload */
	bool files_on;
	struct sim_files f;
	double f_start;
	uint32_t file_pages;
	double *zcdf;
	uint32_t zn;
	double reads_due, hot_due;
	long burst_no;
	uint32_t hot_off, once_next;
	uint64_t ws_bytes;
	/* CPUs */
	double busy, got;
	uint64_t parked;
	uint64_t pin[MAX_VCPUS];
	int nice, weight;		/* weight: cgroup cpu.weight, 0 none */
	uint64_t cpu_ns;
	double psi10;
	uint64_t seq;
	/* totals, and the CSV interval's start */
	uint64_t csv_hits, csv_acc, csv_act;
	uint64_t csv_cpu_ns;
	uint64_t m_hits, m_acc, m_cpu_ns;	/* at the scenario's measure time */
	/* what each sample saw, for the lag and the validation */
	struct hist *h;
	int nh, caph;
};

struct simr {
	struct sched head;		/* first: the policy API's handle */
	struct sim_scenario *sc;
	const struct sim_opts *o;
	struct svm *vm;
	int n;
	int64_t now_ms;
	const char *policy;
	uint64_t rng;
	double load[3], burners, load_rec;
	bool have_load_rec;
	uint64_t budget;
};

static double now_s(const struct simr *r)
{
	return r->now_ms / 1000.0;
}

/* ---- the log (the coordinator's format) ---- */

static struct json_object *dbl(double v, int decimals)
{
	char buf[48];

	snprintf(buf, sizeof(buf), "%.*f", decimals, v);
	return json_object_new_double_s(v, buf);
}

static void put_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

static struct json_object *line(const struct simr *r, const char *type, int vm)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ts", dbl(now_s(r), 6));
	json_object_object_add(o, "type", json_object_new_string(type));
	if (vm >= 0)
		json_object_object_add(o, "vm", json_object_new_string(r->vm[vm].c.name));
	return o;
}

static void emit(const struct simr *r, struct json_object *o)
{
	if (r->o->log)
		fprintf(r->o->log, "%s\n", json_object_to_json_string_ext(o,
			JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* ---- the model's figures, as the guest and the VMM would give them ---- */

static uint64_t cached_bytes(const struct svm *v)
{
	return (v->lru.nr[SIM_PAGE_INACTIVE] + v->lru.nr[SIM_PAGE_ACTIVE]) * v->lru.page_bytes;
}

/* Counters the guest keeps in 4 KiB pages. */
static uint64_t in_pages(const struct svm *v, uint64_t modelled)
{
	return modelled * (v->lru.page_bytes / 4096);
}

static uint64_t used_bytes(const struct svm *v)
{
	return v->c.base + v->anon + cached_bytes(v);
}

static uint64_t cache_limit(const struct svm *v)
{
	uint64_t room = v->actual > v->c.base + v->anon ? v->actual - v->c.base - v->anon : 0;

	return room / v->lru.page_bytes;
}

static void fill_agent(const struct svm *v, struct sched_agent *a)
{
	uint64_t used = used_bytes(v);

	memset(a, 0, sizeof(*a));
	a->seq = v->seq;
	a->mem_total = v->c.ram;
	a->mem_free = v->actual > used ? v->actual - used : 0;
	a->cached = cached_bytes(v);
	a->active_file = v->lru.nr[SIM_PAGE_ACTIVE] * v->lru.page_bytes;
	a->inactive_file = v->lru.nr[SIM_PAGE_INACTIVE] * v->lru.page_bytes;
	a->mem_available = a->mem_free + a->cached;
	a->committed_as = v->anon;
	a->refault_file = in_pages(v, v->lru.st.refault);
	a->activate_file = in_pages(v, v->lru.st.activate);
	a->pgscan = in_pages(v, v->lru.st.scanned);
	a->psi = true;
	a->psi_some_avg10 = v->psi10;
}

static void fill_mem(const struct svm *v, struct sched_mem *m)
{
	struct sched_agent a;

	fill_agent(v, &a);
	memset(m, 0, sizeof(*m));
	m->ram_bytes = v->c.ram;
	m->resident_bytes = used_bytes(v);
	m->balloon = v->c.balloon;
	m->target_bytes = v->c.balloon ? v->target : v->c.ram;
	m->actual_bytes = v->c.balloon ? v->actual : v->c.ram;
	m->balloon_stats = v->c.balloon;
	m->free_memory = a.mem_free;
	m->total_memory = v->c.ram;
	m->available_memory = a.mem_available;
	m->disk_caches = a.cached;
}

static int running_vcpus(const struct svm *v, uint64_t *pool)
{
	int up = 0;

	*pool = 0;
	for (int c = 0; c < v->c.vcpus; c++) {
		if (v->parked >> c & 1)
			continue;
		up++;
		*pool |= v->pin[c];
	}
	return up;
}

static void fill_host(const struct simr *r, struct sched_host *h)
{
	uint64_t used = 0;

	memset(h, 0, sizeof(*h));
	for (int i = 0; i < r->n; i++)
		used += r->vm[i].c.balloon ? r->vm[i].actual : r->vm[i].c.ram;
	h->load[0] = r->have_load_rec ? r->load_rec : r->load[0];
	h->load[1] = r->load[1];
	h->load[2] = r->load[2];
	h->cpus = r->sc->cpus;
	h->mem_total = r->sc->host_mem;
	h->mem_available = r->sc->host_mem > used ? r->sc->host_mem - used : 0;
	h->budget_bytes = r->budget;
}

/* ---- the policy API on the model ---- */

static struct simr *to_sim(const struct sched *s)
{
	return (struct simr *)s;
}

static struct svm *vm_of(const struct sched *s, int vm)
{
	struct simr *r = to_sim(s);

	return vm >= 0 && vm < r->n ? &r->vm[vm] : NULL;
}

static double api_now(const struct sched *s)
{
	return now_s(to_sim(s));
}

static int api_vm_count(const struct sched *s)
{
	return to_sim(s)->n;
}

static const char *api_vm_name(const struct sched *s, int vm)
{
	struct svm *v = vm_of(s, vm);

	return v ? v->c.name : NULL;
}

static int api_get_mem(const struct sched *s, int vm, struct sched_mem *out)
{
	struct svm *v = vm_of(s, vm);

	if (!v)
		return -EINVAL;
	fill_mem(v, out);
	return 0;
}

static int api_get_cpu(const struct sched *s, int vm, struct sched_cpu *out)
{
	struct svm *v = vm_of(s, vm);

	if (!v)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->vcpus = v->c.vcpus;
	out->vcpu_time_ns = v->cpu_ns;
	out->nice = v->nice;
	return 0;
}

static int api_get_agent(const struct sched *s, int vm, struct sched_agent *out)
{
	struct svm *v = vm_of(s, vm);

	if (!v)
		return -EINVAL;
	fill_agent(v, out);
	return 0;
}

static int api_get_host(const struct sched *s, struct sched_host *out)
{
	fill_host(to_sim(s), out);
	return 0;
}

static struct json_object *action(struct simr *r, int vm, const char *what, const char *why)
{
	struct json_object *o = line(r, "action", vm);

	json_object_object_add(o, "policy", json_object_new_string(r->policy ? r->policy : "-"));
	json_object_object_add(o, "action", json_object_new_string(what));
	if (why)
		json_object_object_add(o, "why", json_object_new_string(why));
	return o;
}

static int done(struct simr *r, struct json_object *o, int ret, const char *err)
{
	json_object_object_add(o, "ok", json_object_new_boolean(ret == 0));
	if (ret)
		json_object_object_add(o, "error", json_object_new_string(err ? err : strerror(-ret)));
	emit(r, o);
	return ret;
}

static int api_set_balloon(struct sched *s, int vm, uint64_t keep, const char *why)
{
	struct simr *r = to_sim(s);
	struct svm *v = vm_of(s, vm);
	struct json_object *o;
	uint64_t others = 0, t;

	if (!v)
		return -EINVAL;
	o = action(r, vm, "balloon", why);
	put_u64(o, "requested", keep);
	if (!v->c.balloon)
		return done(r, o, -ENODEV, "no balloon device");
	for (int i = 0; i < r->n; i++)
		if (i != vm)
			others += r->vm[i].c.balloon ? r->vm[i].target : r->vm[i].c.ram;
	t = sched_bound_target(keep, v->c.ram, r->budget, others, MIN_KEEP);
	if (!t)
		return done(r, o, -ENOSPC, "no room within the host budget");
	put_u64(o, "target", t);
	json_object_object_add(o, "bounded", json_object_new_boolean(t != keep));
	v->target = t;
	return done(r, o, 0, NULL);
}

static int api_set_nice(struct sched *s, int vm, int nice, const char *why)
{
	struct simr *r = to_sim(s);
	struct svm *v = vm_of(s, vm);
	struct json_object *o;

	if (!v)
		return -EINVAL;
	o = action(r, vm, "nice", why);
	json_object_object_add(o, "requested", json_object_new_int(nice));
	v->nice = nice < -20 ? -20 : nice > 19 ? 19 : nice;
	json_object_object_add(o, "nice", json_object_new_int(v->nice));
	return done(r, o, 0, NULL);
}

static int api_set_cpu_weight(struct sched *s, int vm, int weight, const char *why)
{
	struct simr *r = to_sim(s);
	struct svm *v = vm_of(s, vm);
	struct json_object *o;

	if (!v)
		return -EINVAL;
	o = action(r, vm, "cpu.weight", why);
	json_object_object_add(o, "requested", json_object_new_int(weight));
	v->weight = weight < 1 ? 1 : weight > 10000 ? 10000 : weight;
	json_object_object_add(o, "weight", json_object_new_int(v->weight));
	return done(r, o, 0, NULL);
}

static int api_set_pin(struct sched *s, int vm, int vcpu, const char *cpus, const char *why)
{
	struct simr *r = to_sim(s);
	struct svm *v = vm_of(s, vm);
	struct json_object *o;
	uint64_t mask;

	if (!v || !cpus)
		return -EINVAL;
	o = action(r, vm, "pin", why);
	json_object_object_add(o, "vcpu", json_object_new_int(vcpu));
	json_object_object_add(o, "cpus", json_object_new_string(cpus));
	if (vcpu < 0 || vcpu >= v->c.vcpus)
		return done(r, o, -EREMOTEIO, "no such vCPU");
	if (numa_parse_cpulist(cpus, &mask, r->sc->cpus < 64 ? r->sc->cpus : 64))
		return done(r, o, -EREMOTEIO, "bad CPU list");
	v->pin[vcpu] = mask;
	return done(r, o, 0, NULL);
}

static int api_set_park(struct sched *s, int vm, const char *cpus, bool park, const char *why)
{
	struct simr *r = to_sim(s);
	struct svm *v = vm_of(s, vm);
	struct json_object *o;
	uint64_t mask = ~0ull;

	if (!v || (park && !cpus))
		return -EINVAL;
	o = action(r, vm, park ? "park" : "unpark", why);
	if (cpus)
		json_object_object_add(o, "cpus", json_object_new_string(cpus));
	if (cpus && numa_parse_cpulist(cpus, &mask, v->c.vcpus))
		return done(r, o, -EREMOTEIO, "bad CPU list");
	mask = park ? v->parked | mask : v->parked & ~mask;
	if (v->c.vcpus < 64 && (mask & ((1ull << v->c.vcpus) - 1)) == (1ull << v->c.vcpus) - 1)
		return done(r, o, -EREMOTEIO, "cannot park every CPU");
	v->parked = mask;
	return done(r, o, 0, NULL);
}

static void api_log(struct sched *s, const char *policy, const char *msg)
{
	struct simr *r = to_sim(s);
	struct json_object *o = line(r, "policy", -1);

	json_object_object_add(o, "policy", json_object_new_string(policy ? policy : "-"));
	json_object_object_add(o, "msg", json_object_new_string(msg ? msg : ""));
	emit(r, o);
}

static const struct sched_ops sim_ops = {
	.version = SCHED_API_VERSION,
	.now = api_now,
	.vm_count = api_vm_count,
	.vm_name = api_vm_name,
	.get_mem = api_get_mem,
	.get_cpu = api_get_cpu,
	.get_agent = api_get_agent,
	.get_host = api_get_host,
	.set_balloon = api_set_balloon,
	.set_nice = api_set_nice,
	.set_cpu_weight = api_set_cpu_weight,
	.set_pin = api_set_pin,
	.set_park = api_set_park,
	.log = api_log,
};

/* ---- the model in time ---- */

static void read_file(struct svm *v, uint32_t file, uint64_t limit);

static int set_files(struct svm *v, const struct sim_files *f, double t)
{
	uint64_t pages;

	v->f = *f;
	v->f_start = t;
	v->files_on = f->files && (f->rate > 0 || f->burst_mult > 0);
	v->file_pages = (uint32_t)((f->file_bytes + v->lru.page_bytes - 1) / v->lru.page_bytes);
	v->ws_bytes = (uint64_t)f->files * f->file_bytes;
	pages = (uint64_t)f->files * v->file_pages;
	if (pages > INT32_MAX || sim_lru_grow(&v->lru, (uint32_t)pages))
		return -ENOMEM;
	/* Replayed cache: only files not read yet are read, and at once (it was there). */
	if (f->pattern == SIM_ONCE) {
		uint64_t limit = cache_limit(v);

		if (v->once_next > f->files)
			v->once_next = f->files;
		while (v->once_next < f->files)
			read_file(v, v->once_next++, limit);
	} else {
		v->once_next = 0;
	}
	v->burst_no = -1;
	if (f->pattern == SIM_ZIPF && f->files) {
		double sum = 0, *cdf = realloc(v->zcdf, f->files * sizeof(*cdf));

		if (!cdf)
			return -ENOMEM;
		for (uint32_t i = 0; i < f->files; i++)
			cdf[i] = (sum += libm.pow(i + 1.0, -f->zipf));
		for (uint32_t i = 0; i < f->files; i++)
			cdf[i] /= sum;
		v->zcdf = cdf;
		v->zn = f->files;
	}
	return 0;
}

static uint32_t pick_file(struct simr *r, struct svm *v)
{
	switch (v->f.pattern) {
	case SIM_ZIPF: {
		double u = sim_rand01(&r->rng);
		uint32_t lo = 0, hi = v->zn - 1;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (v->zcdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		return lo;
	}
	case SIM_ONCE:
		return v->once_next < v->f.files ? v->once_next++ : UINT32_MAX;
	default:
		return (uint32_t)(sim_rand(&r->rng) % v->f.files);
	}
}

static void read_file(struct svm *v, uint32_t file, uint64_t limit)
{
	uint32_t p0 = file * v->file_pages;

	for (uint32_t i = 0; i < v->file_pages; i++)
		sim_lru_access(&v->lru, p0 + i, limit);
}

static void run_reads(struct simr *r, struct svm *v, double dt)
{
	uint64_t limit = cache_limit(v);
	double into = now_s(r) - v->f_start;
	bool burst = false;

	if (!v->files_on)
		return;
	if (v->f.burst_every > 0) {
		long k = (long)(into / v->f.burst_every);

		burst = into - k * v->f.burst_every < v->f.burst_len;
		if (burst && k != v->burst_no) {	/* a new burst: new hot content */
			v->burst_no = k;
			v->hot_off = (uint32_t)(sim_rand(&r->rng) % v->f.files);
		}
	}
	v->reads_due += v->f.rate * dt;
	while (v->reads_due >= 1) {
		uint32_t f = pick_file(r, v);

		v->reads_due -= 1;
		if (f == UINT32_MAX)
			break;
		read_file(v, f, limit);
	}
	if (!burst)
		return;
	v->hot_due += v->f.rate * v->f.burst_mult * dt;
	while (v->hot_due >= 1) {
		uint32_t f = (uint32_t)((v->hot_off + sim_rand(&r->rng) % v->f.burst_files) %
					v->f.files);

		v->hot_due -= 1;
		read_file(v, f, limit);
	}
}

static void move_balloon(struct svm *v, double dt)
{
	uint64_t step = (uint64_t)(v->c.balloon_rate * dt);
	uint64_t need = v->c.base + v->anon + OOM_SLACK;

	if (need > v->c.ram)
		need = v->c.ram;
	if (!v->c.balloon) {
		v->actual = v->c.ram;
		return;
	}
	if (v->target < v->actual) {
		uint64_t a = v->actual - v->target > step ? v->actual - step : v->target;

		/* The guest cannot give what its anonymous memory holds: inflation stalls. */
		v->actual = a < need && v->actual >= need ? need : a < need ? v->actual : a;
	} else if (v->target > v->actual) {
		v->actual = v->target - v->actual > step ? v->actual + step : v->target;
	}
	if (v->actual < need)		/* deflate-on-oom */
		v->actual = need;
}

static void advance(struct simr *r, double dt)
{
	struct sim_cpu_ent e[SIM_MAX_VMS + 1];
	int ne = 0;
	double cap = r->sc->cpus;

	for (int i = 0; i < r->n; i++) {
		struct svm *v = &r->vm[i];
		uint64_t act0 = v->lru.st.activate;
		double stall, a = libm.exp(-dt / 10.0);

		move_balloon(v, dt);
		sim_lru_shrink(&v->lru, cache_limit(v));
		run_reads(r, v, dt);
		/* Memory PSI: tasks wait on refaults of their workingset (workingset_refault). */
		stall = in_pages(v, v->lru.st.activate - act0) * r->sc->io_ms / 1000.0 / dt;
		v->psi10 = v->psi10 * a + (stall > 1 ? 100.0 : stall * 100.0) * (1 - a);
	}
	/* CPUs: pinned VMs on their own pCPUs (exclusive keeps them disjoint), the rest share. */
	for (int i = 0; i < r->n; i++) {
		struct svm *v = &r->vm[i];
		uint64_t pool;
		int up = running_vcpus(v, &pool);
		double threads = v->busy < up ? v->busy : up;

		if (pool) {
			int k = __builtin_popcountll(pool);

			v->got = threads < k ? threads : k;
			cap -= k;
			continue;
		}
		e[ne].threads = threads;
		e[ne].weight = v->weight ? 1024.0 * v->weight / 100.0 / (threads > 0 ? threads : 1)
					 : sim_nice_weight(v->nice);
		ne++;
	}
	e[ne].threads = r->burners;
	e[ne].weight = 1024;
	sim_cpu_share(e, ne + 1, cap > 0 ? cap : 0);
	for (int i = 0, k = 0; i < r->n; i++) {
		struct svm *v = &r->vm[i];
		uint64_t pool;

		running_vcpus(v, &pool);
		if (!pool)
			v->got = e[k++].got;
		v->cpu_ns += (uint64_t)(v->got * dt * 1e9);
	}
}

/* The kernel's calc_load every 5 s: runnable threads, whatever their nice. */
static void update_load(struct simr *r)
{
	static const double f[3] = { 5.0 / 60, 5.0 / 300, 5.0 / 900 };
	double n = r->burners;

	for (int i = 0; i < r->n; i++) {
		uint64_t pool;
		int up = running_vcpus(&r->vm[i], &pool);

		n += r->vm[i].busy < up ? r->vm[i].busy : up;
	}
	for (int i = 0; i < 3; i++)
		r->load[i] = r->load[i] * libm.exp(-f[i]) + n * (1 - libm.exp(-f[i]));
}

static int apply_event(struct simr *r, const struct sim_event *e)
{
	struct svm *v = e->vm >= 0 ? &r->vm[e->vm] : NULL;

	switch (e->kind) {
	case SIM_EV_FILES:
		return set_files(v, &e->files, e->t);
	case SIM_EV_ANON:
		v->anon = e->bytes;
		return 0;
	case SIM_EV_CPU:
		v->busy = e->value;
		return 0;
	case SIM_EV_BURNERS:
		r->burners = e->value;
		return 0;
	case SIM_EV_LOAD:
		r->load_rec = e->value;
		r->have_load_rec = true;
		return 0;
	}
	return 0;
}

static void sample(struct simr *r)
{
	struct sched_host h;
	struct json_object *o, *m;

	fill_host(r, &h);
	o = line(r, "host", -1);
	json_object_object_add(o, "ok", json_object_new_boolean(true));
	json_object_object_add(o, "load1", dbl(h.load[0], 2));
	put_u64(o, "mem_total", h.mem_total);
	put_u64(o, "mem_available", h.mem_available);
	put_u64(o, "budget", h.budget_bytes);
	emit(r, o);
	for (int i = 0; i < r->n; i++) {
		struct svm *v = &r->vm[i];
		struct sched_agent a;
		struct sched_mem mm;

		v->seq++;
		fill_mem(v, &mm);
		fill_agent(v, &a);
		o = line(r, "sample", i);
		m = json_object_new_object();
		put_u64(m, "ram", mm.ram_bytes);
		put_u64(m, "resident", mm.resident_bytes);
		if (mm.balloon) {
			put_u64(m, "target", mm.target_bytes);
			put_u64(m, "actual", mm.actual_bytes);
			put_u64(m, "swap_in", 0);
			put_u64(m, "major_faults", 0);
			put_u64(m, "available", mm.available_memory);
			put_u64(m, "disk_caches", mm.disk_caches);
		}
		json_object_object_add(o, "mem", m);
		m = json_object_new_object();
		json_object_object_add(m, "age_s", dbl(0, 3));
		put_u64(m, "seq", a.seq);
		put_u64(m, "committed_as", a.committed_as);
		put_u64(m, "cached", a.cached);
		put_u64(m, "active_file", a.active_file);
		put_u64(m, "mem_available", a.mem_available);
		put_u64(m, "refault_file", a.refault_file);
		put_u64(m, "pswpin", 0);
		put_u64(m, "pgmajfault", 0);
		json_object_object_add(m, "psi_some_avg10", dbl(a.psi_some_avg10, 2));
		/* The simulator's own figure (not in a real log): what a patched guest would count. */
		put_u64(m, "hits", in_pages(v, v->lru.st.hits));
		json_object_object_add(o, "agent", m);
		m = json_object_new_object();
		json_object_object_add(m, "vcpus", json_object_new_int(v->c.vcpus));
		put_u64(m, "vcpu_time_ns", v->cpu_ns);
		json_object_object_add(m, "nice", json_object_new_int(v->nice));
		json_object_object_add(o, "cpu", m);
		emit(r, o);
		if (v->nh == v->caph) {
			int cap = v->caph ? v->caph * 2 : 256;
			struct hist *hh = realloc(v->h, cap * sizeof(*hh));

			if (!hh)
				continue;
			v->h = hh;
			v->caph = cap;
		}
		v->h[v->nh++] = (struct hist){ now_s(r), mm.target_bytes, mm.actual_bytes, v->nice,
						 v->weight };
	}
}

static void csv_rows(struct simr *r)
{
	FILE *f = r->o->csv;

	if (!f)
		return;
	for (int i = 0; i < r->n; i++) {
		struct svm *v = &r->vm[i];
		uint64_t hits = v->lru.st.hits - v->csv_hits;
		uint64_t acc = v->lru.st.hits + v->lru.st.misses - v->csv_acc;

		fprintf(f, "%.1f,%s,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.4f,%llu,%llu,%llu,%.2f,%d,%.3f\n",
			now_s(r), v->c.name, v->target / (double)MIB, v->actual / (double)MIB,
			v->anon / (double)MIB, cached_bytes(v) / (double)MIB,
			v->lru.nr[SIM_PAGE_ACTIVE] * v->lru.page_bytes / (double)MIB,
			v->ws_bytes / (double)MIB, acc ? (double)hits / acc : 0.0,
			(unsigned long long)in_pages(v, acc), (unsigned long long)in_pages(v, hits),
			(unsigned long long)in_pages(v, v->lru.st.activate - v->csv_act), v->psi10,
			v->nice, r->o->csv_every > 0 ?
				(v->cpu_ns - v->csv_cpu_ns) / 1e9 / r->o->csv_every : 0.0);
		v->csv_hits = v->lru.st.hits;
		v->csv_acc = v->lru.st.hits + v->lru.st.misses;
		v->csv_act = v->lru.st.activate;
		v->csv_cpu_ns = v->cpu_ns;
	}
}

/* ---- replaying a `kumo coord --log` ---- */

/* What the real run did, to compare with (per VM in the order of the log). */
struct rec {
	double t;
	int vm;
	bool has_target, has_nice;
	uint64_t target, actual;	/* the VMM's balloon target and actual at this sample */
	int nice;
	int weight;			/* a cpu.weight action, 0 none */
	int pin_vcpu;			/* a pin action, -1 none */
	uint64_t pin;
};

struct replay {
	struct rec *rec;
	int nrec, caprec;
};

static struct json_object *get(struct json_object *o, const char *k)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static int add_rec(struct replay *rp, const struct rec *x)
{
	if (rp->nrec == rp->caprec) {
		int cap = rp->caprec ? rp->caprec * 2 : 256;
		struct rec *n = realloc(rp->rec, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		rp->rec = n;
		rp->caprec = cap;
	}
	rp->rec[rp->nrec++] = *x;
	return 0;
}

/* A figure from a log line: within lo..hi, else def (a log is input; it may say anything). */
static uint64_t fig(struct json_object *o, const char *k, uint64_t lo, uint64_t hi, uint64_t def)
{
	struct json_object *v = get(o, k);
	int64_t x;

	if (!v || !(json_object_is_type(v, json_type_int) ||
		    json_object_is_type(v, json_type_double)))
		return def;
	x = json_object_get_int64(v);
	return x < 0 || (uint64_t)x < lo || (uint64_t)x > hi ? def : (uint64_t)x;
}

struct replay_vm {
	double last_t;
	uint64_t last_ns, last_cached;
	bool have_ns;
};

static int replay_vm_index(struct sim_scenario *sc, const char *name, struct json_object *mem,
			   struct json_object *agent, struct json_object *cpu)
{
	struct sim_vm_conf *v;
	uint64_t ram, avail, comm, actual;

	for (int i = 0; i < sc->nvms; i++)
		if (!strcmp(sc->vm[i].name, name))
			return i;
	if (sc->nvms == SIM_MAX_VMS || !mem)
		return -1;
	ram = fig(mem, "ram", 16ull << 20, 1ull << 40, 0);
	if (!ram)
		return -1;
	v = &sc->vm[sc->nvms];
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->ram = ram;
	v->balloon = get(mem, "target") != NULL;
	v->target = v->balloon ? fig(mem, "target", 16ull << 20, ram, ram) : ram;
	v->balloon_rate = 85.0 * MIB;	/* what the box's balloon showed (docs/sim.md) */
	v->vcpus = cpu ? (int)fig(cpu, "vcpus", 1, MAX_VCPUS, 1) : 1;
	v->nice = cpu ? (int)fig(cpu, "nice", 0, 19, 0) : 0;
	if (cpu && get(cpu, "nice") && json_object_get_int(get(cpu, "nice")) < 0 &&
	    json_object_get_int(get(cpu, "nice")) >= -20)
		v->nice = json_object_get_int(get(cpu, "nice"));
	/* The kernel and the rest: what the guest keeps besides its cache and Committed_AS. */
	actual = v->balloon ? fig(mem, "actual", 0, ram, ram) : ram;
	avail = agent ? fig(agent, "mem_available", 0, ram, 0) : 0;
	comm = agent ? fig(agent, "committed_as", 0, ram, 0) : 0;
	v->base = actual > avail + comm ? actual - avail - comm : 64ull << 20;
	if (v->base < (16ull << 20) || v->base > ram / 2)
		v->base = ram / 8;
	return sc->nvms++;
}

static int load_replay(struct sim_scenario *sc, struct replay *rp, char *err, size_t errlen)
{
	struct replay_vm rv[SIM_MAX_VMS] = { 0 };
	FILE *f = fopen(sc->replay, "re");
	char *buf = NULL;
	size_t cap = 0;
	double t0 = -1, last = 0;
	int lineno = 0, ret = 0;

	if (!f) {
		snprintf(err, errlen, "replay %s: %s", sc->replay, strerror(errno));
		return -EINVAL;		/* refused input, as a scenario file that is not there */
	}
	/* Time 0 is the first sample's. */
	while (t0 < 0 && getline(&buf, &cap, f) > 0) {
		struct json_object *o = json_tokener_parse(buf), *ts, *ty;

		if (o && (ts = get(o, "ts")) && (ty = get(o, "type")) &&
		    !strcmp(json_object_get_string(ty), "sample"))
			t0 = json_object_get_double(ts);
		if (o)
			json_object_put(o);
	}
	rewind(f);
	while (getline(&buf, &cap, f) > 0) {
		struct json_object *o = json_tokener_parse(buf), *ts, *ty, *vmn;
		const char *type, *name;
		double t;
		int vm;

		lineno++;
		if (!o || !(ts = get(o, "ts")) || !(ty = get(o, "type"))) {
			if (o)
				json_object_put(o);
			continue;	/* not a log line: skipped */
		}
		type = json_object_get_string(ty);
		t = json_object_get_double(ts) - t0;
		if (t0 < 0 || t < -1 || t > 1e7) {
			json_object_put(o);
			continue;
		}
		last = t;
		vmn = get(o, "vm");
		name = vmn ? json_object_get_string(vmn) : NULL;
		if (name && strlen(name) >= SIM_NAME)
			name = NULL;	/* a name we could not keep whole: not ours to guess */
		if (!strcmp(type, "host")) {
			struct sim_event *e = sim_scenario_event(sc);
			double *tk = realloc(sc->ticks, (sc->nticks + 1) * sizeof(*tk));

			/* A new round of samples: the policies tick after its last one. */
			if (tk) {
				sc->ticks = tk;
				tk[sc->nticks++] = t > 0 ? t : 0;
			}
			uint64_t b = fig(o, "budget", 16ull << 20, 1ull << 46, 0);

			if (!e) {
				ret = -ENOMEM;
				json_object_put(o);
				break;
			}
			e->t = t;
			e->vm = -1;
			e->kind = SIM_EV_LOAD;
			e->value = json_object_get_double(get(o, "load1"));
			if (!(e->value >= 0 && e->value < 1e5))
				e->value = 0;
			if (!sc->budget && b)
				sc->budget = b;
		} else if (!strcmp(type, "sample") && name) {
			struct json_object *mem = get(o, "mem"), *ag = get(o, "agent"),
					   *cpu = get(o, "cpu");
			struct rec x = { .t = t, .pin_vcpu = -1 };
			struct sim_event *e;

			if (sc->nticks && t > sc->ticks[sc->nticks - 1])
				sc->ticks[sc->nticks - 1] = t;
			vm = replay_vm_index(sc, name, mem, ag, cpu);
			if (vm < 0) {
				json_object_put(o);
				continue;
			}
			x.vm = vm;
			if (mem && (x.target = fig(mem, "target", 1, sc->vm[vm].ram, 0))) {
				x.has_target = true;
				x.actual = fig(mem, "actual", 1, sc->vm[vm].ram, 0);
			}
			if (cpu && get(cpu, "vcpu_time_ns")) {
				uint64_t ns = fig(cpu, "vcpu_time_ns", 0, UINT64_MAX >> 1, 0);
				int nice = json_object_get_int(get(cpu, "nice"));

				x.has_nice = nice >= -20 && nice <= 19;
				x.nice = nice;
				if (rv[vm].have_ns && t > rv[vm].last_t && ns >= rv[vm].last_ns &&
				    (e = sim_scenario_event(sc))) {
					/* What it ran since the last sample: its demand from then on. */
					e->t = rv[vm].last_t;
					e->vm = vm;
					e->kind = SIM_EV_CPU;
					e->value = (ns - rv[vm].last_ns) / 1e9 / (t - rv[vm].last_t);
					if (e->value > sc->vm[vm].vcpus)
						e->value = sc->vm[vm].vcpus;
				}
				rv[vm].have_ns = true;
				rv[vm].last_ns = ns;
				rv[vm].last_t = t;
			}
			if (ag && (e = sim_scenario_event(sc))) {
				uint64_t cached = fig(ag, "cached", 0, sc->vm[vm].ram, 0);

				e->t = t;
				e->vm = vm;
				e->kind = SIM_EV_ANON;
				e->bytes = fig(ag, "committed_as", 0, sc->vm[vm].ram, 0);
				/* The cache it showed, as files read once (4 KiB each). */
				if (cached != rv[vm].last_cached && (e = sim_scenario_event(sc))) {
					rv[vm].last_cached = cached;
					e->t = t;
					e->vm = vm;
					e->kind = SIM_EV_FILES;
					e->files.files = (uint32_t)(cached / 4096);
					e->files.file_bytes = 4096;
					e->files.rate = 1e6;
					e->files.pattern = SIM_ONCE;
				}
			}
			if (add_rec(rp, &x)) {
				ret = -ENOMEM;
				json_object_put(o);
				break;
			}
		} else if (!strcmp(type, "action") && name) {
			const char *act = json_object_get_string(get(o, "action"));
			struct rec x = { .t = t, .pin_vcpu = -1 };

			vm = -1;
			for (int i = 0; i < sc->nvms; i++)
				if (!strcmp(sc->vm[i].name, name))
					vm = i;
			if (vm >= 0 && act && json_object_get_boolean(get(o, "ok"))) {
				x.vm = vm;
				if (!strcmp(act, "cpu.weight"))
					x.weight = (int)fig(o, "weight", 1, 10000, 0);
				else if (!strcmp(act, "pin") && get(o, "cpus") &&
					 !numa_parse_cpulist(json_object_get_string(get(o, "cpus")),
							     &x.pin, 64))
					x.pin_vcpu = (int)fig(o, "vcpu", 0, MAX_VCPUS - 1, 0);
				if ((x.weight || x.pin_vcpu >= 0) && add_rec(rp, &x)) {
					ret = -ENOMEM;
					json_object_put(o);
					break;
				}
			}
		}
		json_object_put(o);
	}
	free(buf);
	fclose(f);
	if (ret) {
		snprintf(err, errlen, "replay %s: out of memory", sc->replay);
		return ret;
	}
	if (!sc->nvms) {
		snprintf(err, errlen, "replay %s: no VM samples in %d lines", sc->replay, lineno);
		return -EINVAL;
	}
	sc->duration = last + 0.5;
	sim_scenario_sort(sc);
	return 0;
}

/* The sim's sample nearest to t. */
static const struct hist *hist_at(const struct svm *v, double t)
{
	const struct hist *best = NULL;

	for (int i = 0; i < v->nh; i++)
		if (!best || fabs(v->h[i].t - t) < fabs(best->t - t))
			best = &v->h[i];
	return best;
}

static void validate(const struct simr *r, const struct replay *rp, FILE *out)
{
	fprintf(out, "validation against %s:\n", r->sc->replay);
	for (int i = 0; i < r->n; i++) {
		const struct svm *v = &r->vm[i];
		double maxrel = 0, sumrel = 0, maxt = 0, maxrel1 = 0, sumrel1 = 0, maxact = 0;
		int nt = 0, nn = 0, nmatch = 0, maxdn = 0, nw = 0, wmatch = 0, np = 0, pmatch = 0;
		uint64_t last_real = 0, last_sim = 0;
		uint64_t lastpin[MAX_VCPUS] = { 0 };

		for (int k = 0; k < rp->nrec; k++) {
			const struct rec *x = &rp->rec[k];
			const struct hist *h;

			if (x->vm != i || !(h = hist_at(v, x->t)))
				continue;
			if (x->has_target && x->target) {
				double rel = fabs((double)h->target - (double)x->target) / x->target;
				double rel1 = rel;

				/* The same target within a second (the policies' timing jitter). */
				for (int j = 0; j < v->nh; j++)
					if (fabs(v->h[j].t - x->t) <= 1.0 + 1e-9)
						rel1 = min_d(rel1, fabs((double)v->h[j].target -
									(double)x->target) / x->target);
				maxrel1 = max_d(maxrel1, rel1);
				sumrel1 += rel1;
				if (x->actual)
					maxact = max_d(maxact, fabs((double)h->actual - (double)x->actual) /
								x->actual);

				if (rel > maxrel) {
					maxrel = rel;
					maxt = x->t;
				}
				sumrel += rel;
				nt++;
				last_real = x->target;
				last_sim = h->target;
			}
			if (x->has_nice) {
				int dn = abs(h->nice - x->nice);

				nn++;
				nmatch += !dn;
				maxdn = dn > maxdn ? dn : maxdn;
			}
			if (x->weight) {
				int w = v->weight;	/* what the sim had set at its next sample */

				for (int j = 0; j < v->nh; j++)
					if (v->h[j].t > x->t + 1e-6) {
						w = v->h[j].weight;
						break;
					}
				nw++;
				wmatch += w == x->weight;
			}
			if (x->pin_vcpu >= 0 && x->pin_vcpu < MAX_VCPUS)
				lastpin[x->pin_vcpu] = x->pin;
		}
		for (int c = 0; c < v->c.vcpus; c++) {
			if (!lastpin[c])
				continue;
			np++;
			pmatch += lastpin[c] == v->pin[c];
		}
		fprintf(out, "  %s:", v->c.name);
		if (nt)
			fprintf(out, " balloon target path: %d samples, deviation mean %.1f%% max "
				"%.1f%% (at %.0f s), within 1 s mean %.1f%% max %.1f%%, end %llu MiB "
				"real vs %llu MiB sim;", nt, 100 * sumrel / nt, 100 * maxrel, maxt,
				100 * sumrel1 / nt, 100 * maxrel1,
				(unsigned long long)(last_real / MIB),
				(unsigned long long)(last_sim / MIB));
		if (nt)
			fprintf(out, " balloon actual path: max deviation %.1f%%;", 100 * maxact);
		if (nn)
			fprintf(out, " nice path: %d/%d samples equal, max difference %d;", nmatch,
				nn, maxdn);
		if (nw)
			fprintf(out, " cpu.weight: %d/%d actions matched;", wmatch, nw);
		if (np)
			fprintf(out, " final pins: %d/%d vCPUs equal;", pmatch, np);
		fprintf(out, " hit ratio: not in a real log (the guest does not count hits)\n");
	}
}

/* ---- the run ---- */

/* How long each working-set change took to move the target half-way to where it settled. */
static void report_lags(const struct simr *r, FILE *out)
{
	const struct sim_scenario *sc = r->sc;

	for (int k = 0; k < sc->nev; k++) {
		const struct sim_event *e = &sc->ev[k], *nx = NULL;
		const struct svm *v;
		const struct hist *h0, *h1;
		double half = -1;

		if (e->kind != SIM_EV_FILES || e->t <= 0 || sc->replay[0])
			continue;
		v = &r->vm[e->vm];
		for (int j = k + 1; j < sc->nev && !nx; j++)
			if (sc->ev[j].vm == e->vm && sc->ev[j].kind == SIM_EV_FILES)
				nx = &sc->ev[j];
		h0 = hist_at(v, e->t);
		h1 = hist_at(v, (nx ? nx->t : sc->duration) - 1);
		if (!h0 || !h1 || h0->target == h1->target)
			continue;
		for (int i = 0; i < v->nh && half < 0; i++) {
			double mid = ((double)h0->target + (double)h1->target) / 2;

			if (v->h[i].t >= e->t && (h1->target > h0->target ? v->h[i].target >= mid :
						  v->h[i].target <= mid))
				half = v->h[i].t - e->t;
		}
		fprintf(out, "  %s: working set -> %llu MiB at %.0f s: target %llu -> %llu MiB, "
			"half-way after %.0f s\n", v->c.name,
			(unsigned long long)((uint64_t)e->files.files * e->files.file_bytes / MIB), e->t,
			(unsigned long long)(h0->target / MIB), (unsigned long long)(h1->target / MIB),
			half);
	}
}

static void summary(struct simr *r, double host_s, FILE *out)
{
	struct json_object *o = line(r, "summary", -1), *vms = json_object_new_array();
	uint64_t th = 0, ta = 0, tcpu = 0;

	for (int i = 0; i < r->n; i++)
		tcpu += r->vm[i].cpu_ns;
	fprintf(out, "kumo sim: %s, policy %s, seed %llu: %.0f s virtual in %.2f s\n", r->sc->name,
		r->sc->policy, (unsigned long long)r->sc->seed, r->sc->duration, host_s);
	for (int i = 0; i < r->n; i++) {
		struct svm *v = &r->vm[i];
		uint64_t acc = v->lru.st.hits + v->lru.st.misses, lo = UINT64_MAX, hi = 0;
		struct json_object *m = json_object_new_object();

		th += v->lru.st.hits;
		ta += acc;
		for (int k = 0; k < v->nh; k++) {
			lo = v->h[k].target < lo ? v->h[k].target : lo;
			hi = v->h[k].target > hi ? v->h[k].target : hi;
		}
		fprintf(out, "  %s: hit ratio %.3f (%llu reads of 4 KiB), target %llu MiB at the "
			"end (%llu..%llu), cache %llu MiB, cpu %.1f s (%.3f of the VMs'), nice %d\n",
			v->c.name, acc ? (double)v->lru.st.hits / acc : 0.0,
			(unsigned long long)in_pages(v, acc), (unsigned long long)(v->target / MIB),
			(unsigned long long)(lo == UINT64_MAX ? 0 : lo / MIB),
			(unsigned long long)(hi / MIB), (unsigned long long)(cached_bytes(v) / MIB),
			v->cpu_ns / 1e9, tcpu ? (double)v->cpu_ns / tcpu : 0.0, v->nice);
		json_object_object_add(m, "vm", json_object_new_string(v->c.name));
		json_object_object_add(m, "hit_ratio", dbl(acc ? (double)v->lru.st.hits / acc : 0, 4));
		put_u64(m, "reads", in_pages(v, acc));
		put_u64(m, "target", v->target);
		json_object_object_add(m, "cpu_s", dbl(v->cpu_ns / 1e9, 3));
		json_object_object_add(m, "cpu_share", dbl(tcpu ? (double)v->cpu_ns / tcpu : 0, 4));
		json_object_object_add(m, "nice", json_object_new_int(v->nice));
		json_object_array_add(vms, m);
	}
	fprintf(out, "  system: hit ratio %.3f\n", ta ? (double)th / ta : 0.0);
	if (r->sc->measure > 0) {
		uint64_t mh = 0, ma = 0, mc = 0;

		fprintf(out, "  from %.0f s:", r->sc->measure);
		for (int i = 0; i < r->n; i++) {
			struct svm *v = &r->vm[i];
			uint64_t h = v->lru.st.hits - v->m_hits;
			uint64_t a = v->lru.st.hits + v->lru.st.misses - v->m_acc;

			mh += h;
			ma += a;
			fprintf(out, " %s %.3f,", v->c.name, a ? (double)h / a : 0.0);
		}
		fprintf(out, " system %.3f\n", ma ? (double)mh / ma : 0.0);
		for (int i = 0; i < r->n; i++)
			mc += r->vm[i].cpu_ns - r->vm[i].m_cpu_ns;
		if (mc) {
			fprintf(out, "  CPU shares from %.0f s:", r->sc->measure);
			for (int i = 0; i < r->n; i++)
				fprintf(out, " %s %.3f", r->vm[i].c.name,
					(double)(r->vm[i].cpu_ns - r->vm[i].m_cpu_ns) / mc);
			fputc('\n', out);
		}
		json_object_object_add(o, "hit_ratio_measured", dbl(ma ? (double)mh / ma : 0, 4));
	}
	report_lags(r, out);
	json_object_object_add(o, "scenario", json_object_new_string(r->sc->name));
	json_object_object_add(o, "policy", json_object_new_string(r->sc->policy));
	json_object_object_add(o, "hit_ratio", dbl(ta ? (double)th / ta : 0, 4));
	json_object_object_add(o, "vms", vms);
	emit(r, o);
}

static int64_t ms_of(double t)
{
	return (int64_t)(t * 1000 + 0.5);
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int sim_run(struct sim_scenario *sc, const struct sim_opts *o, char *err, size_t errlen)
{
	const struct sched_policy *pol[MAX_POLICIES];
	void *handles[MAX_POLICIES] = { 0 }, *states[MAX_POLICIES] = { 0 };
	int64_t due[MAX_POLICIES], period = 0, step, end, next_sample = 0, next_csv = 0, next_load;
	struct replay rp = { 0 };
	struct simr r = { 0 };
	char list[sizeof(sc->policy)], *tok, *save;
	int npol = 0, inited = 0, ei = 0, tick = 0, ret = 0;
	double t_start = mono();

	if ((ret = libm_open(err, errlen)))
		return ret;
	if (sc->replay[0] && (ret = load_replay(sc, &rp, err, errlen)))
		return ret;
	if (!sc->nvms) {
		snprintf(err, errlen, "%s: no vm (and no replay)", sc->name);
		return -EINVAL;
	}
	r.head.ops = &sim_ops;
	r.sc = sc;
	r.o = o;
	r.rng = sc->seed;
	r.budget = sc->budget ? sc->budget : sc->host_mem;
	r.load[0] = r.load[1] = r.load[2] = sc->load;
	snprintf(list, sizeof(list), "%s", sc->policy);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "none"))
			continue;
		if (npol == MAX_POLICIES) {
			snprintf(err, errlen, "at most %d policies", MAX_POLICIES);
			ret = -EINVAL;
			goto out;
		}
		pol[npol] = coord_find_policy(tok, &handles[npol], err, errlen);
		if (!pol[npol]) {
			ret = -EINVAL;
			goto out;
		}
		npol++;
	}
	r.vm = calloc(sc->nvms, sizeof(*r.vm));
	if (!r.vm) {
		ret = -ENOMEM;
		goto out;
	}
	for (; r.n < sc->nvms; r.n++) {
		struct svm *v = &r.vm[r.n];

		v->c = sc->vm[r.n];
		v->target = v->actual = v->c.balloon && v->c.target ? v->c.target : v->c.ram;
		v->nice = v->c.nice;
		if (sim_lru_init(&v->lru, 1, sc->page_bytes)) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (; inited < npol; inited++) {
		if (pol[inited]->init && (ret = pol[inited]->init(&r.head, &states[inited]))) {
			snprintf(err, errlen, "policy %s: init: %s", pol[inited]->name,
				 strerror(-ret));
			goto out;
		}
		if (!period || pol[inited]->period_ms < period)
			period = pol[inited]->period_ms;
		due[inited] = 0;
	}
	if (!period)
		period = 1000;
	step = (int64_t)(sc->step * 1000 + 0.5);
	if (step < 1)
		step = 1;
	end = ms_of(sc->duration);
	next_load = LOAD_FREQ_MS;
	if (sc->nticks)
		next_sample = ms_of(sc->ticks[0]);
	if (o->log) {
		struct json_object *l = line(&r, "sim", -1);

		json_object_object_add(l, "scenario", json_object_new_string(sc->name));
		json_object_object_add(l, "policy", json_object_new_string(sc->policy));
		put_u64(l, "seed", sc->seed);
		emit(&r, l);
	}
	for (;;) {
		int64_t dt;

		while (ei < sc->nev && ms_of(sc->ev[ei].t) <= r.now_ms)
			if ((ret = apply_event(&r, &sc->ev[ei++]))) {
				snprintf(err, errlen, "out of memory for the model");
				goto out;
			}
		if (r.now_ms >= next_load) {
			update_load(&r);
			next_load += LOAD_FREQ_MS;
		}
		if (r.now_ms >= next_sample) {
			sample(&r);
			for (int i = 0; i < npol; i++) {
				if (r.now_ms < due[i])
					continue;
				r.policy = pol[i]->name;
				pol[i]->tick(&r.head, states[i]);
				r.policy = NULL;
				due[i] = r.now_ms + pol[i]->period_ms - period / 2;
			}
			if (tick < sc->nticks) {
				while (tick < sc->nticks && ms_of(sc->ticks[tick]) <= r.now_ms)
					tick++;
				next_sample = tick < sc->nticks ? ms_of(sc->ticks[tick]) : INT64_MAX;
			} else if (!sc->nticks) {
				next_sample += period;
			} else {
				next_sample = INT64_MAX;
			}
		}
		if (o->csv && r.now_ms >= next_csv) {
			csv_rows(&r);
			next_csv += (int64_t)(o->csv_every * 1000 + 0.5);
		}
		if (sc->measure > 0 && r.now_ms == ms_of(sc->measure))
			for (int i = 0; i < r.n; i++) {
				r.vm[i].m_hits = r.vm[i].lru.st.hits;
				r.vm[i].m_acc = r.vm[i].lru.st.hits + r.vm[i].lru.st.misses;
				r.vm[i].m_cpu_ns = r.vm[i].cpu_ns;
			}
		if (r.now_ms >= end)
			break;
		dt = step;
		if (next_sample - r.now_ms < dt)
			dt = next_sample - r.now_ms;
		if (ei < sc->nev) {
			int64_t te = ms_of(sc->ev[ei].t) - r.now_ms;

			if (te > 0 && te < dt)
				dt = te;
		}
		if (end - r.now_ms < dt)
			dt = end - r.now_ms;
		if (sc->measure > 0) {
			int64_t tm = ms_of(sc->measure) - r.now_ms;

			if (tm > 0 && tm < dt)
				dt = tm;
		}
		advance(&r, dt / 1000.0);
		r.now_ms += dt;
	}
	summary(&r, mono() - t_start, o->out);
	if (sc->replay[0])
		validate(&r, &rp, o->out);
out:
	for (int i = 0; i < inited; i++)
		if (pol[i]->fini)
			pol[i]->fini(states[i]);
	for (int i = 0; i < npol; i++)
		if (handles[i])
			dlclose(handles[i]);
	for (int i = 0; i < r.n; i++) {
		sim_lru_free(&r.vm[i].lru);
		free(r.vm[i].zcdf);
		free(r.vm[i].h);
	}
	free(r.vm);
	free(rp.rec);
	return ret;
}

/* ---- kumo sim ---- */

static const char sim_usage[] =
	"usage: kumo sim SCENARIO [--seed N] [--log FILE] [--csv FILE] [--csv-every S]\n"
	"                [--policy LIST] [--replay LOG]\n"
	"  SCENARIO        a scenario file (sched/scenarios/*.txt, docs/sim.md)\n"
	"  --seed N        the workload generators' seed (default: the scenario's, else 1)\n"
	"  --log FILE      the JSON-lines log, as kumo coord writes it (ts in virtual seconds)\n"
	"  --csv FILE      per-VM rows every --csv-every seconds (default 5)\n"
	"  --policy LIST   instead of the scenario's policies ('none': no policy, equal split)\n"
	"  --replay LOG    drive the VMs from a `kumo coord --log` file instead of the scenario's\n";

static int read_file_all(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return -errno;
	for (;;) {
		size_t got;

		if (n + 4096 > cap) {
			char *b;

			if (cap > (16u << 20)) {
				free(buf);
				fclose(f);
				return -EFBIG;
			}
			b = realloc(buf, cap = cap * 2 + 8192);
			if (!b) {
				free(buf);
				fclose(f);
				return -ENOMEM;
			}
			buf = b;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (!got)
			break;
	}
	fclose(f);
	*out = buf;
	*len = n;
	return 0;
}

int sim_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "log", required_argument, NULL, 'l' },
		{ "csv", required_argument, NULL, 'c' },
		{ "csv-every", required_argument, NULL, 'e' },
		{ "policy", required_argument, NULL, 'p' },
		{ "replay", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *logpath = NULL, *csvpath = NULL, *policy = NULL, *replay = NULL, *seed = NULL;
	struct sim_opts o = { .out = stdout, .csv_every = 5 };
	struct sim_scenario sc;
	char err[ERRLEN], *text = NULL, *end;
	size_t len = 0;
	int opt, ret;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': seed = optarg; break;
		case 'l': logpath = optarg; break;
		case 'c': csvpath = optarg; break;
		case 'p': policy = optarg; break;
		case 'r': replay = optarg; break;
		case 'e':
			o.csv_every = strtod(optarg, &end);
			if (*end || !(o.csv_every >= 0.1 && o.csv_every <= 1e6)) {
				fprintf(stderr, "kumo sim: --csv-every %s: 0.1..1e6 seconds\n", optarg);
				return 2;
			}
			break;
		case 'h':
			fputs(sim_usage, stdout);
			return 0;
		default:
			fputs(sim_usage, stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "kumo sim: needs one scenario file\n%s", sim_usage);
		return 2;
	}
	ret = read_file_all(argv[optind], &text, &len);
	if (ret) {
		fprintf(stderr, "kumo sim: %s: %s\n", argv[optind], strerror(-ret));
		return 2;
	}
	ret = sim_parse(text, len, argv[optind], &sc, err, sizeof(err));
	free(text);
	if (ret) {
		fprintf(stderr, "kumo sim: %s\n", err);
		return 2;
	}
	if (seed) {
		unsigned long long s = strtoull(seed, &end, 0);

		if (*end || !*seed) {
			fprintf(stderr, "kumo sim: --seed %s: not a number\n", seed);
			sim_scenario_free(&sc);
			return 2;
		}
		sc.seed = s;
	}
	if ((policy && strlen(policy) >= sizeof(sc.policy)) ||
	    (replay && strlen(replay) >= sizeof(sc.replay))) {
		fprintf(stderr, "kumo sim: --policy/--replay: too long\n");
		sim_scenario_free(&sc);
		return 2;
	}
	if (policy)
		strcpy(sc.policy, policy);
	if (replay)
		strcpy(sc.replay, replay);
	if (logpath && !(o.log = fopen(logpath, "we"))) {
		fprintf(stderr, "kumo sim: --log %s: %s\n", logpath, strerror(errno));
		sim_scenario_free(&sc);
		return 1;
	}
	if (csvpath && !(o.csv = fopen(csvpath, "we"))) {
		fprintf(stderr, "kumo sim: --csv %s: %s\n", csvpath, strerror(errno));
		if (o.log)
			fclose(o.log);
		sim_scenario_free(&sc);
		return 1;
	}
	if (o.csv)
		fprintf(o.csv, "t,vm,target_mib,actual_mib,anon_mib,cached_mib,active_file_mib,"
			"working_set_mib,hit_ratio,reads,hits,activations,psi_some_avg10,nice,cpus\n");
	ret = sim_run(&sc, &o, err, sizeof(err));
	if (ret)
		fprintf(stderr, "kumo sim: %s\n", err);
	if (o.log)
		fclose(o.log);
	if (o.csv)
		fclose(o.csv);
	sim_scenario_free(&sc);
	return ret == -EINVAL ? 2 : ret ? 1 : 0;	/* refused input (policy, replay) : failed */
}
