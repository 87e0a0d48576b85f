/* The CPUID a vCPU sees: KVM's supported set, with APIC ids and a topology that match the MADT. */
#ifndef KUMO_CPUID_H
#define KUMO_CPUID_H

#include <stdint.h>

struct kvm_cpuid2;
struct kvm;

/* KVM_GET_SUPPORTED_CPUID into a newly allocated table (free() it). Returns 0 or -errno. */
int cpuid_get_supported(struct kvm *kvm, struct kvm_cpuid2 **out);

/* Where one vCPU sits: packages are the virtual NUMA nodes (one package without --numa). */
struct cpu_topo {
	unsigned int ncpus;		/* vCPUs in the VM */
	unsigned int pkg_cpus;		/* vCPUs in this vCPU's package */
	unsigned int pkg_shift;		/* APIC id bits of the core inside a package */
	unsigned int node;		/* package / virtual node number */
	unsigned int core;		/* index inside the package */
};

/* The KVM paravirtual features the user can turn off (CPUID 0x40000001 EAX bit numbers). */
struct cpuid_pv {
	uint32_t clear;			/* KVM_FEATURE_* bits removed from 0x40000001 EAX */
	uint32_t on;			/* bits asked for explicitly (KVM must support them) */
};

/* APIC id of a vCPU: package in the high bits, core in the low pkg_shift bits. */
static inline uint32_t cpu_topo_apic_id(const struct cpu_topo *t)
{
	return (t->node << t->pkg_shift) | t->core;
}

unsigned int cpuid_order_base_2(unsigned int n);

/*
 * Copy tmpl into a new table (with room for the extra topology leaves) and patch it for one
 * vCPU: initial APIC id, logical counts, hypervisor bit, leaf 0xB/0x1F and AMD topology
 * (one thread per core, one package per node), cache sharing so the last-level cache stays
 * inside a node, PV feature bits, CX16 cleared on PVM hosts.
 */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *tmpl, const struct cpu_topo *t,
				  const struct cpuid_pv *pv, int pvm);

/* Find an entry (NULL if absent). */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index);

#endif
