#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <linux/kvm.h>

#include "vmm/cpuid.h"
#include "vmm/kvm.h"

#define CPUID_MAX_ENTRIES 256

int cpuid_get_supported(struct kvm *kvm, struct kvm_cpuid2 **out)
{
	struct kvm_cpuid2 *c;
	long ret;

	c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(c->entries[0]));
	if (!c)
		return -ENOMEM;
	c->nent = CPUID_MAX_ENTRIES;
	ret = kvm_ioctl(kvm->sys_fd, KVM_GET_SUPPORTED_CPUID, c);
	if (ret < 0) {
		free(c);
		return (int)ret;
	}
	*out = c;
	return 0;
}

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == function &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
			return e;
	}
	return NULL;
}

unsigned int cpuid_order_base_2(unsigned int n)
{
	unsigned int s = 0;

	while ((1u << s) < n)
		s++;
	return s;
}

static void drop_leaf(struct kvm_cpuid2 *c, uint32_t function)
{
	uint32_t j = 0;

	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function != function)
			c->entries[j++] = c->entries[i];
	c->nent = j;
}

static void add_entry(struct kvm_cpuid2 *c, uint32_t function, uint32_t index, uint32_t eax,
		      uint32_t ebx, uint32_t ecx, uint32_t edx)
{
	c->entries[c->nent++] = (struct kvm_cpuid_entry2){
		.function = function, .index = index, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
		.eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx,
	};
}

/* Leaf 0xB / 0x1F: level 0 = SMT (1 thread per core), level 1 = cores of the package. */
static void set_topology_leaf(struct kvm_cpuid2 *c, uint32_t leaf, const struct cpu_topo *t)
{
	uint32_t apic_id = cpu_topo_apic_id(t);

	drop_leaf(c, leaf);
	add_entry(c, leaf, 0, 0, 1, (1 << 8) | 0, apic_id);
	add_entry(c, leaf, 1, t->pkg_shift, t->pkg_cpus & 0xffff, (2 << 8) | 1, apic_id);
	add_entry(c, leaf, 2, 0, 0, 2, apic_id);
}

/* Deterministic cache leaves (4, 0x8000001D): L1/L2 per core, L3 shared by one package. */
static void set_cache_sharing(struct kvm_cpuid2 *c, uint32_t leaf, const struct cpu_topo *t)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		uint32_t level = (e->eax >> 5) & 7, share;

		if (e->function != leaf || !(e->eax & 0x1f))
			continue;
		share = level >= 3 ? (1u << t->pkg_shift) - 1 : 0;
		e->eax = (e->eax & ~(0xfffu << 14)) | (share << 14);
		if (leaf == 4)	/* EAX[31:26]: cores per package - 1 */
			e->eax = (e->eax & 0x03ffffffu) | (((1u << t->pkg_shift) - 1) << 26);
	}
}

struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *tmpl, const struct cpu_topo *t,
				  const struct cpuid_pv *pv, int pvm)
{
	size_t room = tmpl->nent + 8;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + room * sizeof(c->entries[0]));
	struct kvm_cpuid_entry2 *e;
	uint32_t max_basic = 0, apic_id = cpu_topo_apic_id(t);

	if (!c)
		return NULL;
	c->nent = tmpl->nent;
	memcpy(c->entries, tmpl->entries, tmpl->nent * sizeof(c->entries[0]));

	if ((e = cpuid_find(c, 0, 0)))
		max_basic = e->eax;
	if ((e = cpuid_find(c, 1, 0))) {
		uint32_t logical = 1u << t->pkg_shift;

		if (logical > 255)
			logical = 255;
		e->ebx = (e->ebx & 0xffff) | (logical << 16) | ((apic_id < 255 ? apic_id : 0xff) << 24);
		e->ecx |= 1u << 31;		/* hypervisor present */
		if (t->ncpus > 1)
			e->edx |= 1u << 28;	/* HTT: EBX[23:16] is meaningful */
		if (pvm)
			e->ecx &= ~(1u << 13);	/* CX16: PVM's emulator cannot run cmpxchg16b */
	}
	if (max_basic >= 4)
		set_cache_sharing(c, 4, t);
	if (max_basic >= 0xb)
		set_topology_leaf(c, 0xb, t);
	if (max_basic >= 0x1f)
		set_topology_leaf(c, 0x1f, t);
	/* AMD: cores per package and the APIC id bits they take. */
	if ((e = cpuid_find(c, 0x80000008, 0)))
		e->ecx = (e->ecx & ~0xf0ffu) | ((t->pkg_cpus - 1) & 0xff) | (t->pkg_shift << 12);
	if ((e = cpuid_find(c, 0x8000001e, 0))) {
		e->eax = apic_id;
		e->ebx = t->core & 0xff;	/* core id; one thread per core */
		e->ecx = t->node & 0xff;	/* node id; one node per package */
	}
	set_cache_sharing(c, 0x8000001d, t);
	if (pv && (e = cpuid_find(c, 0x40000001, 0)))
		e->eax &= ~pv->clear;
	return c;
}
