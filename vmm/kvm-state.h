/*
 * The whole KVM-side state of a vCPU and of a VM as plain data: no pointers or fds, so a
 * state can be copied, compared and written out field by field (the snapshot format will
 * put it into an FDT). Filled and applied only by vmm/kvm.c (kvm_vcpu_state_get/set,
 * kvm_vm_state_get/set); a vCPU is saved through vcpu_save_state() so that an exit it
 * stopped in is completed first.
 */
#ifndef KUMO_KVM_STATE_H
#define KUMO_KVM_STATE_H

#include <stdint.h>

#include <linux/kvm.h>

#define KVM_STATE_MAX_MSRS 256		/* KVM's MAX_IO_MSRS: one KVM_GET_MSRS call */
#define KVM_STATE_MAX_CPUID 256		/* KVM_MAX_CPUID_ENTRIES */
#define KVM_STATE_XSAVE_MAX 16384	/* KVM_CAP_XSAVE2's size; AMX needs about 11 KiB */

struct kvm_vcpu_state {
	struct kvm_cpuid_entry2 cpuid[KVM_STATE_MAX_CPUID];	/* as set (KVM_GET_CPUID2) */
	uint32_t ncpuid;
	uint32_t tsc_khz;			/* KVM_GET_TSC_KHZ */
	uint32_t has_sregs2;			/* sregs2 is valid, else sregs */
	union {
		struct kvm_sregs sregs;
		struct kvm_sregs2 sregs2;
	};
	struct kvm_regs regs;
	struct kvm_fpu fpu;			/* also inside xsave when xsave_size != 0 */
	uint32_t xsave_size;			/* bytes of xsave; 0: no KVM_CAP_XSAVE */
	uint32_t nmsrs;
	struct kvm_xcrs xcrs;			/* nr_xcrs 0: the host has no XSAVE */
	uint8_t xsave[KVM_STATE_XSAVE_MAX] __attribute__((aligned(64)));
	/* KVM_GET_MSR_INDEX_LIST, less what KVM_GET_MSRS refuses and Hyper-V's range. */
	struct kvm_msr_entry msrs[KVM_STATE_MAX_MSRS];
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp_state;
	struct kvm_lapic_state lapic;
	struct kvm_debugregs debugregs;
};

/* What the in-kernel irqchip and PIT hold, and kvmclock. */
struct kvm_vm_state {
	struct kvm_irqchip pic_master;		/* chip_id KVM_IRQCHIP_PIC_MASTER */
	struct kvm_irqchip pic_slave;		/* KVM_IRQCHIP_PIC_SLAVE */
	struct kvm_irqchip ioapic;		/* KVM_IRQCHIP_IOAPIC */
	struct kvm_pit_state2 pit;		/* count_load_time is KVM's: set restarts counts */
	struct kvm_clock_data clock;		/* only .clock is loaded (no downtime added) */
};

/*
 * The first piece in which a and b differ ("regs", "msrs", ...), or NULL when equal. The PIT's
 * count_load_time is left out: KVM sets it to its own "now" on load.
 */
const char *kvm_vcpu_state_diff(const struct kvm_vcpu_state *a, const struct kvm_vcpu_state *b);
const char *kvm_vm_state_diff(const struct kvm_vm_state *a, const struct kvm_vm_state *b);

/* Where MSR index sits in s->msrs, or NULL. */
struct kvm_msr_entry *kvm_vcpu_state_msr(struct kvm_vcpu_state *s, uint32_t index);

/* Whether an MSR from KVM's index list is saved: not Hyper-V's (kumo offers no Hyper-V
 * leaves, so the guest cannot have set them, and KVM refuses to load the read-only ones). */
int kvm_state_msr_saved(uint32_t index);

#endif
