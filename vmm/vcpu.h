/* A vCPU: its KVM fd, its kvm_run page, its thread and the exit loop. */
#ifndef KUMO_VCPU_H
#define KUMO_VCPU_H

#include <pthread.h>
#include <stdint.h>

#include "vmm/pvm.h"

struct vm;
struct kvm_run;
struct kvm_regs;
struct kvm_sregs;
struct kvm_vcpu_state;

/* Exit reasons we count (index into vcpu->exits). */
enum vcpu_exit_kind { VCPU_EXIT_IO, VCPU_EXIT_MMIO, VCPU_EXIT_HLT, VCPU_EXIT_INTR,
		      VCPU_EXIT_EMULATION, VCPU_EXIT_OTHER, VCPU_EXIT__COUNT };

struct vcpu {
	struct vm *vm;
	unsigned int id;
	uint32_t apic_id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	int started;
	uint64_t exits[VCPU_EXIT__COUNT];
	uint64_t pvm_fixups[PVM_INSN__COUNT];	/* emulation failures completed, by kind */
};

/* Return values of vcpu_handle_exit(). */
#define VCPU_CONTINUE 0
#define VCPU_STOP 1

int vcpu_create(struct vm *vm, unsigned int id, struct vcpu **out) __attribute__((warn_unused_result));
void vcpu_destroy(struct vcpu *vcpu);

/* Registers for entering a 64-bit kernel at rip with the boot GDT and page tables. */
int vcpu_setup_long_mode(struct vcpu *vcpu, uint64_t rip, uint64_t rsi)
	__attribute__((warn_unused_result));

/* Handle one exit; VCPU_CONTINUE or VCPU_STOP (having called vm_request_stop). */
int vcpu_handle_exit(struct vcpu *vcpu, struct kvm_run *run);

/* Thread body: KVM_RUN until the VM stops. */
void *vcpu_thread(void *arg);

/* Make KVM_RUN return on this vCPU soon (used to stop the VM). */
void vcpu_kick(struct vcpu *vcpu);

int vcpu_get_regs(struct vcpu *vcpu, struct kvm_regs *regs);
int vcpu_set_regs(struct vcpu *vcpu, const struct kvm_regs *regs);
int vcpu_get_sregs(struct vcpu *vcpu, struct kvm_sregs *sregs);
int vcpu_set_sregs(struct vcpu *vcpu, const struct kvm_sregs *sregs);

/*
 * All of the vCPU's state (vmm/kvm-state.h). The vCPU must not be running (parked by
 * vm_pause() or its thread ended). Saving first completes the exit the vCPU stopped in, so a
 * PIO or MMIO read lands in its register and RIP is past the instruction. 0 or -errno.
 */
int vcpu_save_state(struct vcpu *vcpu, struct kvm_vcpu_state *s) __attribute__((warn_unused_result));
int vcpu_load_state(struct vcpu *vcpu, const struct kvm_vcpu_state *s)
	__attribute__((warn_unused_result));

/* Make a non-boot vCPU runnable without INIT/SIPI (tests start APs straight in long mode). */
int vcpu_set_runnable(struct vcpu *vcpu);

#endif
