/*
 * The state FDT (docs/snapshot.md). KVM structs travel as their x86_64 bytes and must have
 * exactly their size; counts, sizes, MSRs and scalars are big-endian cells as FDT has them.
 * Decoding trusts nothing: fdt_check_full, then the version, then each property's presence
 * and length before a byte of it is copied.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "devices/dev.h"
#include "migrate/state.h"
#include "vmm/log.h"

#define COMPATIBLE "kumo,vm-state"
#define MSR_PAIR 12		/* be32 index, be64 value */
#define REGION_CELLS 24		/* be64 gpa, be64 size, be64 node */

/* Bytes in s->xsave (KVM's XSAVE area, or none) and the xcrs count must fit the struct. */
static const char *vcpu_bad(const struct kvm_vcpu_state *s)
{
	if (s->ncpuid > KVM_STATE_MAX_CPUID)
		return "cpuid";
	if (s->nmsrs > KVM_STATE_MAX_MSRS)
		return "msrs";
	if (s->xsave_size > KVM_STATE_XSAVE_MAX)
		return "xsave";
	if (s->xcrs.nr_xcrs > KVM_MAX_XCRS)
		return "xcrs";
	if (s->has_sregs2 > 1)
		return "sregs";
	return NULL;
}

/* The layout must be one mm/ could make: regions in order, inside their node, sizes adding up. */
static const char *machine_bad(const struct mig_machine *m)
{
	uint64_t nodes = 0, regions = 0, end = 0;

	if (m->nr_vcpus < 1 || m->nr_vcpus > MIG_MAX_VCPUS)
		return "vcpus";
	if (m->nr_nodes < 1 || m->nr_nodes > MM_MAX_NODES)
		return "node-sizes";
	for (uint32_t i = 0; i < m->nr_nodes; i++) {
		if (m->node_size[i] > UINT64_MAX - nodes)
			return "node-sizes";
		nodes += m->node_size[i];
	}
	if (m->nr_regions < 1 || m->nr_regions > MM_MAX_REGIONS)
		return "regions";
	for (uint32_t i = 0; i < m->nr_regions; i++) {
		const struct mig_region *r = &m->regions[i];

		if (!r->size || r->node >= m->nr_nodes || r->gpa < end ||
		    r->size > UINT64_MAX - r->gpa || r->size > UINT64_MAX - regions)
			return "regions";
		end = r->gpa + r->size;
		regions += r->size;
	}
	if (nodes != m->ram_size || regions != m->ram_size)
		return "ram-size";
	return NULL;
}

void mig_machine_describe(struct mig_machine *d, const struct guest_mem *m, uint32_t nr_vcpus)
{
	const struct mm_region *r;

	memset(d, 0, sizeof(*d));
	d->nr_vcpus = nr_vcpus;
	d->ram_size = m->ram_size;
	d->nr_nodes = (uint32_t)m->nr_nodes;
	for (int i = 0; i < m->nr_nodes; i++)
		d->node_size[i] = m->nodes[i].size;
	mm_for_each_region(m, r)
		d->regions[d->nr_regions++] =
			(struct mig_region){ r->gpa, r->size, (uint32_t)r->node };
}

int mig_machine_check(const struct mig_machine *saved, const struct mig_machine *config)
{
	const char *why = "state";

	if (saved->nr_vcpus != config->nr_vcpus) {
		pr_err("state: vCPUs: the state has %u, the config %u", saved->nr_vcpus,
		       config->nr_vcpus);
		return -EINVAL;
	}
	if (saved->ram_size != config->ram_size) {
		pr_err("state: memory: the state has %llu bytes, the config %llu",
		       (unsigned long long)saved->ram_size, (unsigned long long)config->ram_size);
		return -EINVAL;
	}
	if (saved->nr_nodes != config->nr_nodes) {
		pr_err("state: NUMA nodes: the state has %u, the config %u", saved->nr_nodes,
		       config->nr_nodes);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < saved->nr_nodes && i < MM_MAX_NODES; i++) {
		if (saved->node_size[i] != config->node_size[i]) {
			pr_err("state: node %u memory: the state has %llu bytes, the config %llu",
			       i, (unsigned long long)saved->node_size[i],
			       (unsigned long long)config->node_size[i]);
			return -EINVAL;
		}
	}
	if (saved->nr_regions != config->nr_regions)
		goto layout;
	for (uint32_t i = 0; i < saved->nr_regions && i < MM_MAX_REGIONS; i++) {
		const struct mig_region *a = &saved->regions[i], *b = &config->regions[i];

		if (a->gpa != b->gpa || a->size != b->size || a->node != b->node) {
			why = "region";
			goto layout;
		}
	}
	return 0;
layout:
	pr_err("state: memory layout: the state's %s differs from the config's (%u regions, %u)",
	       why, saved->nr_regions, config->nr_regions);
	return -EINVAL;
}

/* --- encoding ------------------------------------------------------------------------- */

#define TRY(call)                              \
	do {                                   \
		if ((ret = (call)) < 0)        \
			return ret;            \
	} while (0)

static int put_machine(void *fdt, const struct mig_machine *m)
{
	fdt64_t nodes[MM_MAX_NODES], regions[MM_MAX_REGIONS * 3];
	int ret;

	for (uint32_t i = 0; i < m->nr_nodes; i++)
		nodes[i] = cpu_to_fdt64(m->node_size[i]);
	for (uint32_t i = 0; i < m->nr_regions; i++) {
		regions[3 * i] = cpu_to_fdt64(m->regions[i].gpa);
		regions[3 * i + 1] = cpu_to_fdt64(m->regions[i].size);
		regions[3 * i + 2] = cpu_to_fdt64(m->regions[i].node);
	}
	TRY(fdt_begin_node(fdt, "machine"));
	TRY(fdt_property_u32(fdt, "vcpus", m->nr_vcpus));
	TRY(fdt_property_u64(fdt, "ram-size", m->ram_size));
	TRY(fdt_property(fdt, "node-sizes", nodes, (int)(m->nr_nodes * sizeof(nodes[0]))));
	TRY(fdt_property(fdt, "regions", regions, (int)(m->nr_regions * REGION_CELLS)));
	return fdt_end_node(fdt);
}

static int put_vcpu(void *fdt, uint32_t n, const struct kvm_vcpu_state *s, uint8_t *msrs)
{
	char name[32];
	int ret;

	for (uint32_t i = 0; i < s->nmsrs; i++) {
		fdt32_t index = cpu_to_fdt32(s->msrs[i].index);
		fdt64_t value = cpu_to_fdt64(s->msrs[i].data);

		memcpy(msrs + i * MSR_PAIR, &index, 4);
		memcpy(msrs + i * MSR_PAIR + 4, &value, 8);
	}
	snprintf(name, sizeof(name), "vcpu@%u", n);
	TRY(fdt_begin_node(fdt, name));
	TRY(fdt_property(fdt, "cpuid", s->cpuid, (int)(s->ncpuid * sizeof(s->cpuid[0]))));
	TRY(fdt_property_u32(fdt, "tsc-khz", s->tsc_khz));
	if (s->has_sregs2)
		TRY(fdt_property(fdt, "sregs2", &s->sregs2, sizeof(s->sregs2)));
	else
		TRY(fdt_property(fdt, "sregs", &s->sregs, sizeof(s->sregs)));
	TRY(fdt_property(fdt, "regs", &s->regs, sizeof(s->regs)));
	TRY(fdt_property(fdt, "fpu", &s->fpu, sizeof(s->fpu)));
	TRY(fdt_property(fdt, "xsave", s->xsave, (int)s->xsave_size));
	TRY(fdt_property(fdt, "xcrs", &s->xcrs, sizeof(s->xcrs)));
	TRY(fdt_property(fdt, "msrs", msrs, (int)(s->nmsrs * MSR_PAIR)));
	TRY(fdt_property(fdt, "events", &s->events, sizeof(s->events)));
	TRY(fdt_property_u32(fdt, "mp-state", s->mp_state.mp_state));
	TRY(fdt_property(fdt, "lapic", &s->lapic, sizeof(s->lapic)));
	TRY(fdt_property(fdt, "debugregs", &s->debugregs, sizeof(s->debugregs)));
	return fdt_end_node(fdt);
}

static int put_vm(void *fdt, const struct kvm_vm_state *vm)
{
	int ret;

	TRY(fdt_begin_node(fdt, "vm"));
	TRY(fdt_property(fdt, "pic-master", &vm->pic_master, sizeof(vm->pic_master)));
	TRY(fdt_property(fdt, "pic-slave", &vm->pic_slave, sizeof(vm->pic_slave)));
	TRY(fdt_property(fdt, "ioapic", &vm->ioapic, sizeof(vm->ioapic)));
	TRY(fdt_property(fdt, "pit", &vm->pit, sizeof(vm->pit)));
	TRY(fdt_property(fdt, "clock", &vm->clock, sizeof(vm->clock)));
	return fdt_end_node(fdt);
}

/* A device's save op writes its properties into its node through this. */
static int put_prop(void *opaque, const char *name, const void *data, size_t len)
{
	int ret;

	if (len > INT32_MAX)
		return -E2BIG;
	ret = fdt_property(opaque, name, data, (int)len);
	return ret == -FDT_ERR_NOSPACE ? -ENOSPC : ret < 0 ? -EINVAL : 0;
}

static int put_devices(void *fdt, const struct dev *devs, unsigned int ndevs)
{
	const struct dev_state_out out = { .put = put_prop, .opaque = fdt };
	int ret;

	for (unsigned int i = 0; i < ndevs; i++) {
		ret = fdt_begin_node(fdt, devs[i].name);
		if (ret < 0)
			return ret;
		if (devs[i].ops->save) {
			ret = devs[i].ops->save(devs[i].state, &out);
			if (ret == -ENOSPC)
				return -FDT_ERR_NOSPACE;
			if (ret) {
				pr_err("state: device %s: %s", devs[i].name, strerror(-ret));
				return ret;
			}
		}
		ret = fdt_end_node(fdt);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int put_all(void *fdt, int cap, const struct mig_machine *m,
		   const struct kvm_vcpu_state *vcpus, const struct kvm_vm_state *vm,
		   const struct dev *devs, unsigned int ndevs, uint8_t *msrs)
{
	int ret;

	TRY(fdt_create(fdt, cap));
	TRY(fdt_finish_reservemap(fdt));
	TRY(fdt_begin_node(fdt, ""));
	TRY(fdt_property_string(fdt, "compatible", COMPATIBLE));
	TRY(fdt_property_u32(fdt, "kumo,state-version", MIG_STATE_VERSION));
	TRY(put_machine(fdt, m));
	TRY(fdt_begin_node(fdt, "devices"));
	TRY(put_devices(fdt, devs, ndevs));
	TRY(fdt_end_node(fdt));
	TRY(fdt_begin_node(fdt, "vcpus"));
	for (uint32_t i = 0; i < m->nr_vcpus; i++)
		TRY(put_vcpu(fdt, i, &vcpus[i], msrs));
	TRY(fdt_end_node(fdt));
	TRY(put_vm(fdt, vm));
	TRY(fdt_end_node(fdt));
	return fdt_finish(fdt);
}
#undef TRY

int mig_state_encode(const struct mig_machine *m, const struct kvm_vcpu_state *vcpus,
		     const struct kvm_vm_state *vm, const struct dev *devs, unsigned int ndevs,
		     void **blob, size_t *size)
{
	/* Each vCPU's properties fit in its struct; names and node headers in the slack. */
	size_t cap = 65536 + (size_t)m->nr_vcpus * (sizeof(*vcpus) + 4096);
	uint8_t *msrs;
	const char *bad;
	void *fdt;
	int ret;

	if ((bad = machine_bad(m))) {
		pr_err("state: encoding: bad machine description (/machine %s)", bad);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < m->nr_vcpus; i++) {
		if ((bad = vcpu_bad(&vcpus[i]))) {
			pr_err("state: encoding: vCPU %u: bad %s count", i, bad);
			return -EINVAL;
		}
	}
	msrs = malloc(KVM_STATE_MAX_MSRS * MSR_PAIR);
	if (!msrs)
		return -ENOMEM;
	/* Devices' sizes are theirs to know: grow until everything fits. */
	for (;;) {
		if (cap > INT32_MAX) {
			free(msrs);
			return -E2BIG;
		}
		fdt = malloc(cap);
		if (!fdt) {
			free(msrs);
			return -ENOMEM;
		}
		ret = put_all(fdt, (int)cap, m, vcpus, vm, devs, ndevs, msrs);
		if (ret != -FDT_ERR_NOSPACE)
			break;
		free(fdt);
		cap *= 2;
	}
	free(msrs);
	if (ret) {
		if (ret < 0 && ret >= -FDT_ERR_MAX)
			pr_err("state: encoding: %s", fdt_strerror(ret));
		free(fdt);
		return -EINVAL;
	}
	*blob = fdt;
	*size = fdt_totalsize(fdt);
	return 0;
}

/* --- decoding ------------------------------------------------------------------------- */

/* Property name of node (at path) with a length in [unit*min, unit*max], a multiple of unit. */
static const void *get(const void *fdt, int node, const char *path, const char *name,
		       size_t unit, uint32_t min, uint32_t max, uint32_t *count)
{
	int len;
	const void *p = fdt_getprop(fdt, node, name, &len);

	if (!p) {
		pr_err("state: %s: property %s missing", path, name);
		return NULL;
	}
	if ((size_t)len % unit || (size_t)len / unit < min || (size_t)len / unit > max) {
		if (min == max)
			pr_err("state: %s: property %s has %d bytes, not %zu", path, name, len,
			       unit * min);
		else
			pr_err("state: %s: property %s has %d bytes, not %u to %u times %zu",
			       path, name, len, min, max, unit);
		return NULL;
	}
	if (count)
		*count = (uint32_t)((size_t)len / unit);
	return p;
}

/* A fixed-size property copied into dst. */
static int get_bytes(const void *fdt, int node, const char *path, const char *name, void *dst,
		     size_t size)
{
	const void *p = get(fdt, node, path, name, size, 1, 1, NULL);

	if (!p)
		return -EINVAL;
	memcpy(dst, p, size);
	return 0;
}

static int get_u32(const void *fdt, int node, const char *path, const char *name,
		   uint32_t *v)
{
	fdt32_t be = 0;
	int ret = get_bytes(fdt, node, path, name, &be, sizeof(be));

	*v = fdt32_to_cpu(be);
	return ret;
}

static uint64_t be64_at(const void *p, size_t i)
{
	fdt64_t be;

	memcpy(&be, (const uint8_t *)p + i * 8, 8);
	return fdt64_to_cpu(be);
}

static int node_at(const void *fdt, int parent, const char *name, const char *path)
{
	int node = fdt_subnode_offset(fdt, parent, name);

	if (node < 0)
		pr_err("state: node %s missing", path);
	return node < 0 ? -EINVAL : node;
}

static int get_machine(const void *fdt, struct mig_machine *m)
{
	const char *path = "/machine", *bad;
	const void *nodes, *regions;
	fdt64_t ram;
	int node;

	memset(m, 0, sizeof(*m));
	if ((node = node_at(fdt, 0, "machine", path)) < 0 ||
	    get_u32(fdt, node, path, "vcpus", &m->nr_vcpus) ||
	    get_bytes(fdt, node, path, "ram-size", &ram, sizeof(ram)) ||
	    !(nodes = get(fdt, node, path, "node-sizes", 8, 1, MM_MAX_NODES, &m->nr_nodes)) ||
	    !(regions = get(fdt, node, path, "regions", REGION_CELLS, 1, MM_MAX_REGIONS,
			    &m->nr_regions)))
		return -EINVAL;
	m->ram_size = fdt64_to_cpu(ram);
	for (uint32_t i = 0; i < m->nr_nodes; i++)
		m->node_size[i] = be64_at(nodes, i);
	for (uint32_t i = 0; i < m->nr_regions; i++) {
		uint64_t nd = be64_at(regions, 3 * i + 2);

		m->regions[i].gpa = be64_at(regions, 3 * i);
		m->regions[i].size = be64_at(regions, 3 * i + 1);
		m->regions[i].node = nd > UINT32_MAX ? UINT32_MAX : (uint32_t)nd;
	}
	if ((bad = machine_bad(m))) {
		pr_err("state: %s: property %s out of range or inconsistent", path, bad);
		return -EINVAL;
	}
	return 0;
}

static int get_vcpu(const void *fdt, int node, const char *path, struct kvm_vcpu_state *s)
{
	const void *cpuid, *xsave, *msrs;
	uint32_t has_sregs = fdt_getprop(fdt, node, "sregs", NULL) != NULL;

	memset(s, 0, sizeof(*s));
	s->has_sregs2 = fdt_getprop(fdt, node, "sregs2", NULL) != NULL;
	if (has_sregs == s->has_sregs2) {
		pr_err("state: %s: %s", path, has_sregs ? "both sregs and sregs2"
							: "property sregs (or sregs2) missing");
		return -EINVAL;
	}
	if (!(cpuid = get(fdt, node, path, "cpuid", sizeof(s->cpuid[0]), 0, KVM_STATE_MAX_CPUID,
			  &s->ncpuid)) ||
	    get_u32(fdt, node, path, "tsc-khz", &s->tsc_khz) ||
	    (s->has_sregs2 ? get_bytes(fdt, node, path, "sregs2", &s->sregs2, sizeof(s->sregs2))
			   : get_bytes(fdt, node, path, "sregs", &s->sregs, sizeof(s->sregs))) ||
	    get_bytes(fdt, node, path, "regs", &s->regs, sizeof(s->regs)) ||
	    get_bytes(fdt, node, path, "fpu", &s->fpu, sizeof(s->fpu)) ||
	    !(xsave = get(fdt, node, path, "xsave", 1, 0, KVM_STATE_XSAVE_MAX, &s->xsave_size)) ||
	    get_bytes(fdt, node, path, "xcrs", &s->xcrs, sizeof(s->xcrs)) ||
	    !(msrs = get(fdt, node, path, "msrs", MSR_PAIR, 0, KVM_STATE_MAX_MSRS, &s->nmsrs)) ||
	    get_bytes(fdt, node, path, "events", &s->events, sizeof(s->events)) ||
	    get_u32(fdt, node, path, "mp-state", &s->mp_state.mp_state) ||
	    get_bytes(fdt, node, path, "lapic", &s->lapic, sizeof(s->lapic)) ||
	    get_bytes(fdt, node, path, "debugregs", &s->debugregs, sizeof(s->debugregs)))
		return -EINVAL;
	if (s->xcrs.nr_xcrs > KVM_MAX_XCRS) {
		pr_err("state: %s: property xcrs: %u XCRs, at most %d", path, s->xcrs.nr_xcrs,
		       KVM_MAX_XCRS);
		return -EINVAL;
	}
	memcpy(s->cpuid, cpuid, s->ncpuid * sizeof(s->cpuid[0]));
	memcpy(s->xsave, xsave, s->xsave_size);
	for (uint32_t i = 0; i < s->nmsrs; i++) {
		const uint8_t *p = (const uint8_t *)msrs + i * MSR_PAIR;
		fdt32_t index;
		fdt64_t value;

		memcpy(&index, p, 4);
		memcpy(&value, p + 4, 8);
		s->msrs[i].index = fdt32_to_cpu(index);
		s->msrs[i].data = fdt64_to_cpu(value);
	}
	return 0;
}

static int get_vcpus(const void *fdt, struct mig_state *out)
{
	uint32_t n = 0;
	int parent, node;

	if ((parent = node_at(fdt, 0, "vcpus", "/vcpus")) < 0)
		return -EINVAL;
	fdt_for_each_subnode(node, fdt, parent)
		n++;
	if (n != out->machine.nr_vcpus) {
		pr_err("state: /vcpus: %u nodes, /machine says %u vCPUs", n, out->machine.nr_vcpus);
		return -EINVAL;
	}
	out->vcpus = calloc(n, sizeof(*out->vcpus));
	if (!out->vcpus)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		char name[32], path[48];

		snprintf(name, sizeof(name), "vcpu@%u", i);
		snprintf(path, sizeof(path), "/vcpus/%s", name);
		if ((node = node_at(fdt, parent, name, path)) < 0 ||
		    get_vcpu(fdt, node, path, &out->vcpus[i]))
			return -EINVAL;
	}
	return 0;
}

static int get_vm(const void *fdt, struct kvm_vm_state *vm)
{
	static const uint32_t ids[] = { KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
					KVM_IRQCHIP_IOAPIC };
	static const char *const names[] = { "pic-master", "pic-slave", "ioapic" };
	struct kvm_irqchip *chips[] = { &vm->pic_master, &vm->pic_slave, &vm->ioapic };
	const char *path = "/vm";
	int node;

	memset(vm, 0, sizeof(*vm));
	if ((node = node_at(fdt, 0, "vm", path)) < 0)
		return -EINVAL;
	for (int i = 0; i < 3; i++) {
		if (get_bytes(fdt, node, path, names[i], chips[i], sizeof(*chips[i])))
			return -EINVAL;
		if (chips[i]->chip_id != ids[i]) {
			pr_err("state: %s: property %s has chip id %u, not %u", path, names[i],
			       chips[i]->chip_id, ids[i]);
			return -EINVAL;
		}
	}
	if (get_bytes(fdt, node, path, "pit", &vm->pit, sizeof(vm->pit)) ||
	    get_bytes(fdt, node, path, "clock", &vm->clock, sizeof(vm->clock)))
		return -EINVAL;
	return 0;
}

/* Is this a kumo state of a version we read? -EINVAL / -EPROTO with one line. */
static int check_header(const void *fdt, size_t size)
{
	const char *compat;
	uint32_t version;
	int ret, len;

	if (size > INT32_MAX || (ret = fdt_check_full(fdt, size)) < 0) {
		pr_err("state: not a valid FDT (%s)",
		       size > INT32_MAX ? "too large" : fdt_strerror(ret));
		return -EINVAL;
	}
	compat = fdt_getprop(fdt, 0, "compatible", &len);
	if (!compat || len != sizeof(COMPATIBLE) || memcmp(compat, COMPATIBLE, (size_t)len)) {
		pr_err("state: / : compatible is not \"" COMPATIBLE "\"");
		return -EINVAL;
	}
	if (get_u32(fdt, 0, "/", "kumo,state-version", &version))
		return -EINVAL;
	if (version != MIG_STATE_VERSION) {
		pr_err("state: version %u, this kumo reads version %d", version, MIG_STATE_VERSION);
		return -EPROTO;
	}
	return 0;
}

int mig_state_decode(const void *blob, size_t size, struct mig_state *out)
{
	void *copy = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	/* libfdt wants its blob 8-byte aligned. */
	if ((uintptr_t)blob % 8) {
		if (!(copy = malloc(size ? size : 1)))
			return -ENOMEM;
		memcpy(copy, blob, size);
		blob = copy;
	}
	if (!(ret = check_header(blob, size)) && !(ret = get_machine(blob, &out->machine)) &&
	    !(ret = get_vcpus(blob, out)) && !(ret = get_vm(blob, &out->vm)) &&
	    (ret = node_at(blob, 0, "devices", "/devices")) >= 0) {
		ret = 0;
		/* Kept for mig_state_load_devices(): the devices read their own nodes. */
		if (!copy && !(copy = malloc(size ? size : 1)))
			ret = -ENOMEM;
		else if (blob != copy)
			memcpy(copy, blob, size);
		out->fdt = copy;
		copy = NULL;
	} else if (ret > 0) {
		ret = -EINVAL;
	}
	free(copy);
	if (ret)
		mig_state_free(out);
	return ret;
}

void mig_state_free(struct mig_state *s)
{
	free(s->vcpus);
	s->vcpus = NULL;
	free(s->fdt);
	s->fdt = NULL;
}

struct dev_in {
	const void *fdt;
	int node;
	char path[48];
};

static int in_get(void *opaque, const char *name, void *data, size_t len)
{
	const struct dev_in *in = opaque;

	return get_bytes(in->fdt, in->node, in->path, name, data, len);
}

static int in_get_var(void *opaque, const char *name, const void **data, size_t *len,
		      size_t max)
{
	const struct dev_in *in = opaque;
	uint32_t n;
	const void *p = get(in->fdt, in->node, in->path, name, 1, 0,
			    max > UINT32_MAX ? UINT32_MAX : (uint32_t)max, &n);

	if (!p)
		return -EINVAL;
	*data = p;
	*len = n;
	return 0;
}

int mig_state_load_devices(const struct mig_state *s, const struct dev *devs, unsigned int ndevs)
{
	const void *fdt = s->fdt;
	unsigned int n = 0;
	int parent, node, ret;

	if (!fdt || (parent = node_at(fdt, 0, "devices", "/devices")) < 0)
		return -EINVAL;
	/* The same devices, by name: every saved one exists here and nothing more. */
	fdt_for_each_subnode(node, fdt, parent) {
		const char *name = fdt_get_name(fdt, node, NULL);
		unsigned int i;

		for (i = 0; i < ndevs && strcmp(devs[i].name, name ? name : ""); i++)
			;
		if (i == ndevs) {
			pr_err("state: /devices/%s: the config has no such device", name);
			return -EINVAL;
		}
		n++;
	}
	if (n != ndevs) {
		for (unsigned int i = 0; i < ndevs; i++)
			if (fdt_subnode_offset(fdt, parent, devs[i].name) < 0)
				pr_err("state: the config has device %s, the state does not",
				       devs[i].name);
		return -EINVAL;
	}
	for (unsigned int i = 0; i < ndevs; i++) {
		struct dev_in din = { .fdt = fdt };
		const struct dev_state_in in = { .get = in_get, .get_var = in_get_var,
						 .opaque = &din };

		din.node = fdt_subnode_offset(fdt, parent, devs[i].name);
		snprintf(din.path, sizeof(din.path), "/devices/%s", devs[i].name);
		if (!devs[i].ops->load)
			continue;
		ret = devs[i].ops->load(devs[i].state, &in);
		if (ret) {
			pr_err("state: %s: not loaded (%s)", din.path, strerror(-ret));
			return ret;
		}
	}
	return 0;
}
