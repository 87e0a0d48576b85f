#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <json-c/json.h>

#include "devices/virtio-balloon.h"
#include "devices/virtio-blk.h"
#include "devices/virtio-pci.h"
#include "vmm/agent-relay.h"
#include "vmm/control.h"
#include "vmm/log.h"
#include "vmm/vcpu.h"
#include "vmm/vm-control.h"
#include "vmm/migration.h"
#include "vmm/snapshot.h"
#include "vmm/vm.h"

static const char *vm_state(struct vm *vm)
{
	if (__atomic_load_n(&vm->stop, __ATOMIC_ACQUIRE))
		return "stopping";
	return vm_is_paused(vm) ? "paused" : "running";
}

/* Resident bytes of guest RAM on the host: what the guest touched minus what was given back. */
static uint64_t guest_ram_resident(struct vm *vm)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t resident = 0;
	unsigned char vec[4096];
	const struct mm_region *reg;

	mm_for_each_region(&vm->mem, reg) {
		for (uint64_t off = 0; off < reg->size;) {
			uint64_t chunk = reg->size - off;

			if (chunk > sizeof(vec) * (uint64_t)page)
				chunk = sizeof(vec) * (uint64_t)page;
			if (mincore(reg->hva + off, chunk, vec) == 0)
				for (uint64_t i = 0; i < chunk / (uint64_t)page; i++)
					resident += vec[i] & 1;
			off += chunk;
		}
	}
	return resident * (uint64_t)page;
}

static struct json_object *device_list(struct vm *vm)
{
	struct json_object *a = json_object_new_array();

	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		const struct vm_virtio *v = &vm->virtio[i];
		struct json_object *d = json_object_new_object();
		char slot[16];

		snprintf(slot, sizeof(slot), "00:%02x.0", v->pci->pci.slot);
		json_object_object_add(d, "type", json_object_new_string(v->vdev->ops->name));
		json_object_object_add(d, "pci", json_object_new_string(slot));
		json_object_object_add(d, "status", json_object_new_int(v->vdev->status));
		if (v->vdev->ops->device_id == VIRTIO_ID_BLOCK) {
			const struct virtio_blk *b = (const struct virtio_blk *)v->vdev;

			json_object_object_add(d, "path", json_object_new_string(b->path));
			json_object_object_add(d, "read_only", json_object_new_boolean(b->opts.read_only));
		}
		json_object_array_add(a, d);
	}
	return a;
}

static int verb_status(void *opaque, struct json_object *args, struct json_object **result,
		       char *err, size_t errlen)
{
	struct vm *vm = opaque;
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "state", json_object_new_string(vm_state(vm)));
	json_object_object_add(r, "vcpus", json_object_new_int((int)vm->ncpus));
	json_object_object_add(r, "memory_bytes", json_object_new_int64((int64_t)vm->mem.ram_size));
	json_object_object_add(r, "uptime_s",
			       json_object_new_double((double)(vm_now_ns() - vm->start_ns) / 1e9));
	json_object_object_add(r, "pvm", json_object_new_boolean(vm->pvm));
	if (vm->cfg.kernel)
		json_object_object_add(r, "kernel", json_object_new_string(vm->cfg.kernel));
	json_object_object_add(r, "devices", device_list(vm));
	*result = r;
	return 0;
}

static int verb_pause(void *opaque, struct json_object *args, struct json_object **result,
		      char *err, size_t errlen)
{
	struct vm *vm = opaque;
	int ret = vm_pause(vm);

	if (ret < 0) {
		snprintf(err, errlen, "the VM is stopping");
		return ret;
	}
	vm_control_event(vm, "paused", NULL);
	return 0;
}

static int verb_resume(void *opaque, struct json_object *args, struct json_object **result,
		       char *err, size_t errlen)
{
	struct vm *vm = opaque;
	int ret = vm_resume(vm);

	if (ret < 0) {
		snprintf(err, errlen, "the VM is stopping");
		return ret;
	}
	vm_control_event(vm, "resumed", NULL);
	return 0;
}

static int verb_quit(void *opaque, struct json_object *args, struct json_object **result,
		     char *err, size_t errlen)
{
	struct vm *vm = opaque;

	vm_request_stop(vm, VM_STOP_USER, KUMO_EXIT_POWEROFF);
	return 0;
}

/*
 * As QEMU's balloon command: targets are the memory the guest keeps; the device itself
 * speaks in pages held by the balloon.
 */
static struct json_object *balloon_json(struct vm *vm)
{
	struct json_object *o = json_object_new_object();
	uint64_t held, want;

	virtio_balloon_get(vm->balloon, &held, &want);
	json_object_object_add(o, "target_bytes", json_object_new_int64((int64_t)(vm->mem.ram_size - want)));
	json_object_object_add(o, "actual_bytes", json_object_new_int64((int64_t)(vm->mem.ram_size - held)));
	json_object_object_add(o, "balloon_bytes", json_object_new_int64((int64_t)held));
	return o;
}

static struct json_object *balloon_stats_json(struct virtio_dev *b)
{
	static const char *const names[VIRTIO_BALLOON_S_NR_KNOWN] = {
		"swap_in", "swap_out", "major_faults", "minor_faults", "free_memory",
		"total_memory", "available_memory", "disk_caches", "hugetlb_allocations",
		"hugetlb_failures",
	};
	struct json_object *o = json_object_new_object();
	struct balloon_stats st;

	if (virtio_balloon_stats(b, &st) < 0)
		return o;
	for (unsigned int t = 0; t < BALLOON_STATS_MAX_TAGS; t++) {
		char name[32];

		if (!(st.valid & (1ULL << t)))
			continue;
		if (t < VIRTIO_BALLOON_S_NR_KNOWN)
			snprintf(name, sizeof(name), "%s", names[t]);
		else
			snprintf(name, sizeof(name), "tag_%u", t);
		json_object_object_add(o, name, json_object_new_int64((int64_t)st.val[t]));
	}
	json_object_object_add(o, "updates", json_object_new_int64((int64_t)st.updates));
	json_object_object_add(o, "age_s", json_object_new_double(
		st.updated_ns ? (double)(vm_now_ns() - st.updated_ns) / 1e9 : -1.0));
	return o;
}

static int verb_stats(void *opaque, struct json_object *args, struct json_object **result,
		      char *err, size_t errlen)
{
	static const char *const exit_names[VCPU_EXIT__COUNT] = {
		[VCPU_EXIT_IO] = "io", [VCPU_EXIT_MMIO] = "mmio", [VCPU_EXIT_HLT] = "hlt",
		[VCPU_EXIT_INTR] = "intr", [VCPU_EXIT_EMULATION] = "emulation_failure",
		[VCPU_EXIT_OTHER] = "other",
	};
	struct vm *vm = opaque;
	struct json_object *r = json_object_new_object(), *ex = json_object_new_object();
	struct json_object *devs = json_object_new_array();
	uint64_t exits[VCPU_EXIT__COUNT] = { 0 };

	for (unsigned int i = 0; i < vm->ncpus; i++)
		for (int k = 0; k < VCPU_EXIT__COUNT; k++)
			exits[k] += __atomic_load_n(&vm->vcpus[i]->exits[k], __ATOMIC_RELAXED);
	for (int k = 0; k < VCPU_EXIT__COUNT; k++)
		json_object_object_add(ex, exit_names[k], json_object_new_int64((int64_t)exits[k]));
	json_object_object_add(r, "exits", ex);
	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		const struct vm_virtio *v = &vm->virtio[i];
		struct json_object *d = json_object_new_object();

		json_object_object_add(d, "type", json_object_new_string(v->vdev->ops->name));
		json_object_object_add(d, "requests",
				       json_object_new_int64((int64_t)v->vdev->stats_requests));
		json_object_object_add(d, "errors",
				       json_object_new_int64((int64_t)v->vdev->stats_errors));
		json_object_object_add(d, "msix_interrupts",
				       json_object_new_int64((int64_t)v->pci->msix_irqs));
		if (v->vdev->ops->device_id == VIRTIO_ID_BLOCK) {
			const struct virtio_blk *b = (const struct virtio_blk *)v->vdev;

			json_object_object_add(d, "path", json_object_new_string(b->path));
			json_object_object_add(d, "read_bytes",
					       json_object_new_int64((int64_t)b->stats_read_bytes));
			json_object_object_add(d, "write_bytes",
					       json_object_new_int64((int64_t)b->stats_write_bytes));
		}
		json_object_array_add(devs, d);
	}
	json_object_object_add(r, "devices", devs);
	json_object_object_add(r, "guest_ram_bytes", json_object_new_int64((int64_t)vm->mem.ram_size));
	json_object_object_add(r, "guest_ram_resident_bytes",
			       json_object_new_int64((int64_t)guest_ram_resident(vm)));
	if (vm->balloon) {
		json_object_object_add(r, "balloon", balloon_json(vm));
		json_object_object_add(r, "balloon_stats", balloon_stats_json(vm->balloon));
	}
	*result = r;
	return 0;
}

static int verb_balloon_set(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	struct vm *vm = opaque;
	int64_t target;
	int ret;

	if (!vm->balloon) {
		snprintf(err, errlen, "no balloon device (start kumo with --balloon)");
		return -ENODEV;
	}
	ret = control_arg_int64(args, "target", &target, err, errlen);
	if (ret < 0)
		return ret;
	if (target < 0 || (uint64_t)target > vm->mem.ram_size) {
		snprintf(err, errlen, "target %lld outside 0..%llu bytes", (long long)target,
			 (unsigned long long)vm->mem.ram_size);
		return -EINVAL;
	}
	ret = virtio_balloon_set_target(vm->balloon, vm->mem.ram_size - (uint64_t)target);
	if (ret < 0) {
		snprintf(err, errlen, "balloon: %s", strerror(-ret));
		return ret;
	}
	vm_control_event(vm, "balloon-target", balloon_json(vm));
	*result = balloon_json(vm);
	return 0;
}

static int verb_balloon_get(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	struct vm *vm = opaque;

	if (!vm->balloon) {
		snprintf(err, errlen, "no balloon device (start kumo with --balloon)");
		return -ENODEV;
	}
	*result = balloon_json(vm);
	return 0;
}

/* "0-1,3" for a cpu_set_t. */
static void cpuset_to_list(const cpu_set_t *set, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	for (int c = 0; c < CPU_SETSIZE && used < len; c++) {
		int e = c;

		if (!CPU_ISSET(c, set))
			continue;
		while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set))
			e++;
		used += (size_t)snprintf(buf + used, len - used, e > c ? "%s%d-%d" : "%s%d",
					 used ? "," : "", c, e);
		c = e;
	}
}

static struct json_object *vcpu_affinity_json(struct vm *vm, unsigned int id)
{
	struct json_object *o = json_object_new_object();
	cpu_set_t set;
	char list[512];

	json_object_object_add(o, "vcpu", json_object_new_int((int)id));
	json_object_object_add(o, "apic_id", json_object_new_int((int)vm->vcpus[id]->apic_id));
	if (vm->cfg.numa.nnodes)
		json_object_object_add(o, "node", json_object_new_int(vm->cfg.numa.vcpu_node[id]));
	if (vm->vcpus[id]->started &&
	    pthread_getaffinity_np(vm->vcpus[id]->thread, sizeof(set), &set) == 0) {
		cpuset_to_list(&set, list, sizeof(list));
		json_object_object_add(o, "host_cpus", json_object_new_string(list));
	}
	return o;
}

/* vcpu-pin vcpu=N [cpus=LIST]: pin one vCPU thread at run time; without cpus, report it. */
static int verb_vcpu_pin(void *opaque, struct json_object *args, struct json_object **result,
			 char *err, size_t errlen)
{
	struct vm *vm = opaque;
	uint64_t mask[CPU_SETSIZE / 64];
	struct json_object *v;
	const char *list = NULL;
	char one[32];
	cpu_set_t set;
	int64_t id;
	int ret;

	ret = control_arg_int64(args, "vcpu", &id, err, errlen);
	if (ret < 0)
		return ret;
	if (id < 0 || id >= (int64_t)vm->ncpus) {
		snprintf(err, errlen, "vcpu %lld: the VM has vCPUs 0 to %u", (long long)id,
			 vm->ncpus - 1);
		return -EINVAL;
	}
	if (json_object_object_get_ex(args, "cpus", &v)) {
		/* `kumo ctl ... cpus=1` sends a number: one CPU. */
		if (json_object_is_type(v, json_type_int)) {
			snprintf(one, sizeof(one), "%lld", (long long)json_object_get_int64(v));
			list = one;
		} else {
			ret = control_arg_string(args, "cpus", &list, err, errlen);
			if (ret < 0)
				return ret;
		}
		if (numa_parse_cpulist(list, mask, CPU_SETSIZE) < 0) {
			snprintf(err, errlen, "cpus '%s': a host CPU list such as 0-1,3", list);
			return -EINVAL;
		}
		CPU_ZERO(&set);
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (mask[c / 64] & (1ULL << (c % 64)))
				CPU_SET(c, &set);
		ret = vm_pin_vcpu(vm, (unsigned int)id, &set, sizeof(set));
		if (ret < 0) {
			snprintf(err, errlen, "pinning vCPU %lld to %s: %s", (long long)id, list,
				 strerror(-ret));
			return ret;
		}
	}
	*result = vcpu_affinity_json(vm, (unsigned int)id);
	return 0;
}

/* The virtual NUMA layout and where each vCPU thread may run. */
static int verb_topology(void *opaque, struct json_object *args, struct json_object **result,
			 char *err, size_t errlen)
{
	struct vm *vm = opaque;
	const struct numa_config *n = &vm->cfg.numa;
	struct json_object *r = json_object_new_object(), *nodes = json_object_new_array();
	struct json_object *vcpus = json_object_new_array();

	for (unsigned int i = 0; i < n->nnodes; i++) {
		struct json_object *o = json_object_new_object(), *d = json_object_new_array();
		char list[256];

		numa_node_cpulist(n, i, list, sizeof(list));
		json_object_object_add(o, "node", json_object_new_int((int)i));
		json_object_object_add(o, "vcpus", json_object_new_string(list));
		json_object_object_add(o, "memory_bytes", json_object_new_int64((int64_t)n->nodes[i].mem));
		json_object_object_add(o, "host_node", json_object_new_int(n->nodes[i].host_node));
		for (unsigned int j = 0; j < n->nnodes; j++)
			json_object_array_add(d, json_object_new_int(n->dist[i][j]));
		json_object_object_add(o, "distances", d);
		json_object_array_add(nodes, o);
	}
	for (unsigned int i = 0; i < vm->ncpus; i++)
		json_object_array_add(vcpus, vcpu_affinity_json(vm, i));
	json_object_object_add(r, "nodes", nodes);
	json_object_object_add(r, "vcpus", vcpus);
	json_object_object_add(r, "hugepages", json_object_new_boolean(vm->mem.hugepages));
	json_object_object_add(r, "kvm_pv_features", json_object_new_int64(vm_pv_features(vm)));
	json_object_object_add(r, "halt_poll_ns", vm->cfg.halt_poll_set ?
			       json_object_new_int64((int64_t)vm->cfg.halt_poll_ns) : NULL);
	*result = r;
	return 0;
}

/* The agent verbs answer through the relay (vmm/agent-relay.c); kumo relay serves them too. */
static int verb_agent(void *opaque, struct json_object *args, struct json_object **result,
		      char *err, size_t errlen)
{
	return agent_relay_verb_agent(__atomic_load_n(&((struct vm *)opaque)->relay,
						      __ATOMIC_ACQUIRE), args, result, err, errlen);
}

static int verb_agent_stats(void *opaque, struct json_object *args,
			    struct json_object **result, char *err, size_t errlen)
{
	return agent_relay_verb_stats(__atomic_load_n(&((struct vm *)opaque)->relay,
						      __ATOMIC_ACQUIRE), args, result, err, errlen);
}

static int verb_snapshot(void *opaque, struct json_object *args, struct json_object **result,
			 char *err, size_t errlen)
{
	struct vm *vm = opaque;
	struct vm_snapshot_info info;
	struct json_object *r;
	const char *dir = NULL;
	int stop = 0, ret;

	ret = control_arg_string(args, "dir", &dir, err, errlen);
	if (ret < 0)
		return ret;
	ret = control_arg_bool(args, "stop", &stop, err, errlen);
	if (ret < 0 && ret != -ENOENT)
		return ret;
	ret = vm_snapshot(vm, dir, stop, &info, err, errlen);
	if (ret < 0)
		return ret;
	r = json_object_new_object();
	json_object_object_add(r, "dir", json_object_new_string(dir));
	json_object_object_add(r, "state_bytes", json_object_new_int64((int64_t)info.state_bytes));
	json_object_object_add(r, "memory_bytes",
			       json_object_new_int64((int64_t)info.memory_bytes));
	json_object_object_add(r, "ram_bytes", json_object_new_int64((int64_t)info.ram_bytes));
	json_object_object_add(r, "paused_ms", json_object_new_double((double)info.paused_ns / 1e6));
	json_object_object_add(r, "total_ms", json_object_new_double((double)info.total_ns / 1e6));
	json_object_object_add(r, "stopped", json_object_new_boolean(stop));
	vm_control_event(vm, "snapshot", json_object_get(r));
	*result = r;
	return 0;
}

/*
 * Split migration: sub=ADDR[,ADDR...] main-mem=SIZE [tracking=on|off] [replicas=1|2]
 * [pageout=on|off].
 */
static int verb_migrate_split_args(struct json_object *args, struct vm_migrate_args *a,
				   char *err, size_t errlen)
{
	const char *mm = NULL, *tr = NULL, *po = NULL;
	int64_t r = 1;
	int ret = control_arg_string(args, "sub", &a->sub, err, errlen);

	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	ret = control_arg_string(args, "main-mem", &mm, err, errlen);
	if (ret < 0 || mm_parse_size(mm, &a->main_mem) < 0) {
		snprintf(err, errlen, "a split migration (sub=) needs main-mem=SIZE");
		return -EINVAL;
	}
	ret = control_arg_string(args, "tracking", &tr, err, errlen);
	if (ret == 0 && strcmp(tr, "on") && strcmp(tr, "off")) {
		snprintf(err, errlen, "tracking=%s: not on or off", tr);
		return -EINVAL;
	}
	if (ret < 0 && ret != -ENOENT)
		return ret;
	a->no_tracking = ret == 0 && !strcmp(tr, "off");
	ret = control_arg_int64(args, "replicas", &r, err, errlen);
	if (ret == 0 && r != 1 && r != 2) {
		snprintf(err, errlen, "replicas=%lld: 1 or 2", (long long)r);
		return -EINVAL;
	}
	a->replicas = ret == 0 ? (unsigned int)r : 1;
	if (ret < 0 && ret != -ENOENT)
		return ret;
	ret = control_arg_string(args, "pageout", &po, err, errlen);
	if (ret == 0 && strcmp(po, "on") && strcmp(po, "off")) {
		snprintf(err, errlen, "pageout=%s: not on or off", po);
		return -EINVAL;
	}
	a->pageout = ret == 0 && !strcmp(po, "on");
	return ret < 0 && ret != -ENOENT ? ret : 0;
}

static int verb_split_stats(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	return vm_split_stats(opaque, result, err, errlen);
}

static int verb_migrate(void *opaque, struct json_object *args, struct json_object **result,
			char *err, size_t errlen)
{
	struct vm *vm = opaque;
	struct vm_migrate_args a = { 0 };
	const char *bw = NULL;
	int64_t v;
	int ret;

	ret = control_arg_string(args, "to", &a.to, err, errlen);
	if (ret < 0)
		return ret;
	ret = control_arg_int64(args, "downtime-ms", &v, err, errlen);
	if (ret == 0 && (v < 1 || v > 3600000)) {
		snprintf(err, errlen, "downtime-ms %lld outside 1..3600000", (long long)v);
		return -EINVAL;
	}
	if (ret < 0 && ret != -ENOENT)
		return ret;
	a.downtime_ms = ret ? 0 : (uint64_t)v;
	ret = control_arg_int64(args, "bandwidth", &v, err, errlen);
	if (ret == -EINVAL) {	/* a size with a suffix: 100M (bytes per second) */
		ret = control_arg_string(args, "bandwidth", &bw, err, errlen);
		if (!ret && mm_parse_size(bw, &a.bandwidth) < 0) {
			snprintf(err, errlen, "bandwidth %s: not a rate in bytes/s (e.g. 100M)", bw);
			return -EINVAL;
		}
	} else if (ret == 0) {
		if (v < 0) {
			snprintf(err, errlen, "bandwidth must not be negative");
			return -EINVAL;
		}
		a.bandwidth = (uint64_t)v;
	}
	if (ret < 0 && ret != -ENOENT)
		return ret;
	ret = control_arg_string(args, "postcopy", &a.postcopy, err, errlen);
	if (ret < 0 && ret != -ENOENT)
		return ret;
	ret = verb_migrate_split_args(args, &a, err, errlen);
	if (ret < 0)
		return ret;
	ret = vm_migrate_start(vm, &a, err, errlen);
	if (ret < 0)
		return ret;
	*result = json_object_new_object();
	json_object_object_add(*result, "to", json_object_new_string(a.to));
	return 0;
}

static int verb_migrate_cancel(void *opaque, struct json_object *args,
			       struct json_object **result, char *err, size_t errlen)
{
	int ret = vm_migrate_cancel(opaque);

	if (ret)
		snprintf(err, errlen, "no migration is running");
	return ret;
}

static const struct control_verb vm_verbs[] = {
	{ "status", verb_status, "state, vCPUs, memory, devices, uptime" },
	{ "pause", verb_pause, "stop all vCPUs (devices keep running)" },
	{ "resume", verb_resume, "let paused vCPUs run again" },
	{ "quit", verb_quit, "stop the VM; kumo run exits 0" },
	{ "stats", verb_stats, "exits by reason, per-device counters, resident guest RAM, balloon" },
	{ "balloon-set", verb_balloon_set, "target=BYTES: the memory the guest should keep" },
	{ "balloon-get", verb_balloon_get, "the balloon's target and actual size" },
	{ "vcpu-pin", verb_vcpu_pin, "vcpu=N [cpus=LIST]: pin a vCPU thread to host CPUs" },
	{ "topology", verb_topology, "virtual NUMA nodes, distances, vCPU placement" },
	{ "agent", verb_agent, "verb=NAME [args={...}] [timeout_ms=N]: ask the guest agent" },
	{ "agent-stats", verb_agent_stats, "the guest agent's latest statistics" },
	{ "migrate", verb_migrate, "to=tcp:HOST:PORT|unix:PATH [downtime-ms=N] [bandwidth=RATE] "
	  "[postcopy=off|auto|now|after-rounds:N] [sub=ADDR[,ADDR...] main-mem=SIZE "
	  "[tracking=on|off] [replicas=1|2] [pageout=on|off]]: live migration, or a split one (events migrate-*)" },
	{ "split-stats", verb_split_stats, "a split migration's page-location map: pages on the "
	  "main host, on each sub-host, free; page-ins, zero-served faults" },
	{ "migrate-cancel", verb_migrate_cancel, "stop a running migration; the VM runs on here" },
	{ "snapshot", verb_snapshot, "dir=DIR [stop=true]: save the VM (kumo run --restore DIR)" },
};

static void relay_emit(void *opaque, const char *name, struct json_object *data)
{
	vm_control_event(opaque, name, data);
}

int vm_control_start(struct vm *vm, const char *path)
{
	return vm_control_start_auth(vm, path, NULL);
}

int vm_control_start_auth(struct vm *vm, const char *path, const char *token_file)
{
	int ret = control_start_auth(&vm->ctl, path, token_file, vm_verbs,
				     sizeof(vm_verbs) / sizeof(vm_verbs[0]), vm);

	if (ret < 0) {
		pr_err("control socket %s: %s", path, strerror(-ret));
		return ret;
	}
	if (vm->cfg.agent_relay) {
		struct agent_relay *r;

		ret = agent_relay_start(&r, vm->cfg.agent_socket, relay_emit, vm);
		if (ret == 0)	/* the control thread may be reading it already */
			__atomic_store_n(&vm->relay, r, __ATOMIC_RELEASE);
		if (ret < 0) {
			pr_err("agent relay on %s: %s", vm->cfg.agent_socket, strerror(-ret));
			vm_control_stop(vm);
		}
	}
	return ret;
}

void vm_control_stop(struct vm *vm)
{
	/* Relay first (it answers the agent replies still owed), control next, then free the
	 * relay, which the control thread could use until it stopped. */
	agent_relay_shutdown(vm->relay);
	if (vm->ctl)
		control_stop(vm->ctl);
	vm->ctl = NULL;
	agent_relay_stop(vm->relay);
	vm->relay = NULL;
}

void vm_control_event(struct vm *vm, const char *name, struct json_object *data)
{
	if (vm->ctl)
		control_emit_event(vm->ctl, name, data);
	else if (data)
		json_object_put(data);
}
