/*
 * PVM (shadow-paging KVM without VMX) support. On such hosts guest CPL0 code runs in KVM's
 * instruction emulator, which fails on some instructions the Linux kernel executes; with
 * KVM_CAP_EXIT_ON_EMULATION_FAILURE the instruction bytes reach us and we either complete the
 * instruction here or inject the exception the CPU would raise.
 *
 * The decoder and the completion step are pure functions over a register snapshot so they are
 * tested without KVM; vmm/vcpu.c reads and writes the real vCPU state around them.
 */
#ifndef KUMO_PVM_H
#define KUMO_PVM_H

#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

enum pvm_insn {
	PVM_INSN_UNKNOWN = 0,
	PVM_INSN_INT3,
	PVM_INSN_UD2,
	PVM_INSN_CLAC,
	PVM_INSN_STAC,
	PVM_INSN_SWAPGS,
	PVM_INSN_SYSRETQ,
	PVM_INSN_FWAIT,
	PVM_INSN_FNCLEX,
	PVM_INSN_POPCNT,
	PVM_INSN__COUNT
};

struct pvm_insn_info {
	enum pvm_insn kind;
	unsigned int len;	/* instruction length in bytes, prefixes included */
	/* POPCNT only: register operands (0=rax .. 15=r15) and operand size in bytes (2/4/8). */
	int dst_reg, src_reg;
	unsigned int opsize;
};

/* The vCPU state the completions read and write. */
struct pvm_cpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint64_t kernel_gs_base;	/* MSR_KERNEL_GS_BASE */
	uint64_t star;			/* MSR_STAR */
	/* Set by pvm_complete() when an exception must be injected instead. */
	int inject_vector;		/* -1: none */
};

/* Decode up to n bytes. Returns 0 and fills *out, or -ENOENT for anything not handled. */
int pvm_decode(const uint8_t *bytes, size_t n, struct pvm_insn_info *out);

/*
 * Apply the architectural effect of the decoded instruction to st (RIP advanced past it).
 * For INT3 RIP is advanced and inject_vector = 3 (trap: return address after the int3);
 * for UD2 RIP is unchanged and inject_vector = 6. Returns 0 or -EINVAL.
 */
int pvm_complete(struct pvm_cpu_state *st, const struct pvm_insn_info *insn);

const char *pvm_insn_name(enum pvm_insn kind);

/* Whether /dev/kvm is PVM (the kvm_pvm module is loaded). */
int pvm_detect(void);

/* Kernel parameters PVM hosts need, appended to the guest command line. */
extern const char pvm_cmdline_quirks[];

#endif
