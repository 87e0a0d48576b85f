/* The CPUID a vCPU sees: KVM's supported set, with APIC ids and a topology that match the MADT. */
#ifndef KUMO_CPUID_H
#define KUMO_CPUID_H

#include <stdint.h>

struct kvm_cpuid2;
struct kvm;

/* KVM_GET_SUPPORTED_CPUID into a newly allocated table (free() it). Returns 0 or -errno. */
int cpuid_get_supported(struct kvm *kvm, struct kvm_cpuid2 **out);

/*
 * Copy tmpl into out (allocated with room for the extra topology leaves) and patch it for one
 * vCPU: initial APIC id, logical count, hypervisor bit, leaf 0xB/0x8000001E topology
 * (one thread per core, all cores in one package), CX16 cleared on PVM hosts.
 */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *tmpl, uint32_t apic_id,
				  unsigned int ncpus, int pvm);

/* Find an entry (NULL if absent). */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index);

#endif
