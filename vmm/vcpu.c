#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_IA32_TSC 0x10
#define MSR_K7_HWCR 0xc0010015

int vcpu_get_regs(struct vcpu *vcpu, struct kvm_regs *regs)
{
	return (int)kvm_ioctl(vcpu->fd, KVM_GET_REGS, regs);
}

int vcpu_set_regs(struct vcpu *vcpu, const struct kvm_regs *regs)
{
	return (int)kvm_ioctl(vcpu->fd, KVM_SET_REGS, regs);
}

int vcpu_get_sregs(struct vcpu *vcpu, struct kvm_sregs *sregs)
{
	return (int)kvm_ioctl(vcpu->fd, KVM_GET_SREGS, sregs);
}

int vcpu_set_sregs(struct vcpu *vcpu, const struct kvm_sregs *sregs)
{
	return (int)kvm_ioctl(vcpu->fd, KVM_SET_SREGS, sregs);
}

struct msr_list {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[16];
};

static int msrs_io(struct vcpu *vcpu, struct msr_list *l, int set)
{
	long ret = set ? kvm_ioctl(vcpu->fd, KVM_SET_MSRS, l) : kvm_ioctl(vcpu->fd, KVM_GET_MSRS, l);

	if (ret < 0)
		return (int)ret;
	if ((uint32_t)ret != l->hdr.nmsrs) {
		pr_err("vCPU %u: %s MSR 0x%x refused", vcpu->id, set ? "KVM_SET_MSRS" : "KVM_GET_MSRS",
		       l->e[ret].index);
		return -EINVAL;
	}
	return 0;
}

static int setup_msrs(struct vcpu *vcpu)
{
	static const uint32_t zeroed[] = {
		MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, MSR_STAR,
		MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE, MSR_IA32_TSC,
	};
	struct msr_list l = { 0 };
	unsigned int n = 0;
	int ret;

	for (size_t i = 0; i < sizeof(zeroed) / sizeof(zeroed[0]); i++)
		l.e[n++].index = zeroed[i];
	l.e[n].index = MSR_IA32_MISC_ENABLE;
	l.e[n++].data = 1;			/* fast strings */
	l.e[n].index = MSR_MTRR_DEF_TYPE;
	l.e[n++].data = (1 << 11) | 6;		/* MTRRs on, default write-back */
	l.hdr.nmsrs = n;
	ret = msrs_io(vcpu, &l, 1);
	if (ret < 0)
		return ret;
	/*
	 * AMD: firmware sets HWCR.TscFreqSel (the TSC counts at P0 frequency); without it Linux
	 * reports a firmware bug. Not every KVM lets us set it, and on Intel it does not exist.
	 */
	l.hdr.nmsrs = 1;
	l.e[0] = (struct kvm_msr_entry){ .index = MSR_K7_HWCR, .data = 1ULL << 24 };
	if (ioctl(vcpu->fd, KVM_SET_MSRS, &l) != 1)
		pr_debug("vCPU %u: MSR_K7_HWCR.TscFreqSel not settable", vcpu->id);
	return 0;
}

int vcpu_create(struct vm *vm, unsigned int id, struct vcpu **out)
{
	struct kvm_cpuid2 *cpuid;
	struct cpu_topo topo;
	struct vcpu *vcpu;
	long ret;

	vcpu = calloc(1, sizeof(*vcpu));
	if (!vcpu)
		return -ENOMEM;
	vcpu->vm = vm;
	vcpu->id = id;
	vm_cpu_topo(vm, id, &topo);
	vcpu->apic_id = cpu_topo_apic_id(&topo);
	/* KVM's vCPU id is the local APIC id, so it must be the id ACPI and CPUID give. */
	ret = kvm_ioctl(vm->kvm.vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->apic_id);
	if (ret < 0)
		goto err_free;
	vcpu->fd = (int)ret;
	vcpu->run = mmap(NULL, (size_t)vm->kvm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		ret = -errno;
		pr_err("mmap kvm_run: %s", strerror(errno));
		goto err_fd;
	}
	cpuid = cpuid_for_vcpu(vm->cpuid, &topo, &vm->cfg.pv, vm->pvm);
	if (!cpuid) {
		ret = -ENOMEM;
		goto err_run;
	}
	ret = kvm_ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (ret < 0)
		goto err_run;
	ret = setup_msrs(vcpu);
	if (ret < 0)
		goto err_run;
	*out = vcpu;
	return 0;

err_run:
	munmap(vcpu->run, (size_t)vm->kvm.run_size);
err_fd:
	close(vcpu->fd);
err_free:
	free(vcpu);
	return (int)ret;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (!vcpu)
		return;
	munmap(vcpu->run, (size_t)vcpu->vm->kvm.run_size);
	close(vcpu->fd);
	free(vcpu);
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, int code)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
		.dpl = 0, .db = !code, .s = 1, .l = !!code, .g = 1,
	};
}

int vcpu_setup_long_mode(struct vcpu *vcpu, uint64_t rip, uint64_t rsi)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = rip, .rsi = rsi, .rflags = 2 };
	int ret;

	ret = vcpu_get_sregs(vcpu, &sregs);
	if (ret < 0)
		return ret;
	set_seg(&sregs.cs, 0x10, 0xb, 1);
	set_seg(&sregs.ds, 0x18, 0x3, 0);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.tr = (struct kvm_segment){ .limit = 0xffff, .type = 0xb, .present = 1 };
	sregs.ldt = (struct kvm_segment){ .type = 0x2, .present = 1, .limit = 0xffff, .unusable = 1 };
	sregs.gdt.base = BOOT_GDT_GPA;
	sregs.gdt.limit = 4 * 8 - 1;
	sregs.idt.base = BOOT_IDT_GPA;
	sregs.idt.limit = 0;
	sregs.cr0 = 0x80000011 | 0x20;	/* PG, ET, PE, NE */
	sregs.cr3 = BOOT_PML4_GPA;
	sregs.cr4 = 0x20;		/* PAE */
	sregs.efer = 0x500;		/* LME, LMA */
	ret = vcpu_set_sregs(vcpu, &sregs);
	if (ret < 0)
		return ret;
	return vcpu_set_regs(vcpu, &regs);
}

/* ---- emulation failures (PVM) ---- */

static int inject_exception(struct vcpu *vcpu, int vector)
{
	struct kvm_vcpu_events ev;
	long ret = kvm_ioctl(vcpu->fd, KVM_GET_VCPU_EVENTS, &ev);

	if (ret < 0)
		return (int)ret;
	ev.exception.injected = 1;
	ev.exception.nr = (uint8_t)vector;
	/* #GP from sysretq carries error code 0; #BP and #UD carry none. */
	ev.exception.has_error_code = vector == 13;
	ev.exception.error_code = 0;
	ev.flags = 0;
	return (int)kvm_ioctl(vcpu->fd, KVM_SET_VCPU_EVENTS, &ev);
}

/* Read the failing instruction from guest memory when KVM did not hand us its bytes. */
static int fetch_insn(struct vcpu *vcpu, uint64_t rip, uint8_t *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		struct kvm_translation tr = { .linear_address = rip + done };
		size_t chunk = 4096 - ((rip + done) & 4095);

		if (kvm_ioctl(vcpu->fd, KVM_TRANSLATE, &tr) < 0 || !tr.valid)
			return done ? (int)done : -EFAULT;
		if (chunk > n - done)
			chunk = n - done;
		if (mm_read(&vcpu->vm->mem, tr.physical_address, buf + done, chunk) < 0)
			return done ? (int)done : -EFAULT;
		done += chunk;
	}
	return (int)done;
}

static void describe_bytes(char *out, size_t size, const uint8_t *b, size_t n)
{
	size_t used = 0;

	out[0] = 0;
	for (size_t i = 0; i < n && used + 4 < size; i++)
		used += (size_t)snprintf(out + used, size - used, "%s%02x", i ? " " : "", b[i]);
}

static int handle_emulation_failure(struct vcpu *vcpu, struct kvm_run *run)
{
	struct pvm_cpu_state st = { .inject_vector = -1 };
	struct pvm_insn_info insn;
	struct msr_list msrs = { .hdr.nmsrs = 2, .e = { { .index = MSR_KERNEL_GS_BASE },
							 { .index = MSR_STAR } } };
	uint8_t bytes[16];
	char hex[64];
	int n = 0, ret;

	vcpu->exits[VCPU_EXIT_EMULATION]++;
	if (vcpu_get_regs(vcpu, &st.regs) < 0 || vcpu_get_sregs(vcpu, &st.sregs) < 0 ||
	    msrs_io(vcpu, &msrs, 0) < 0)
		goto fatal;
	st.kernel_gs_base = msrs.e[0].data;
	st.star = msrs.e[1].data;
	if (run->emulation_failure.ndata >= 3 &&
	    (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
		n = run->emulation_failure.insn_size;
		if (n > (int)sizeof(run->emulation_failure.insn_bytes))
			n = sizeof(run->emulation_failure.insn_bytes);
		memcpy(bytes, run->emulation_failure.insn_bytes, (size_t)n);
	} else {
		n = fetch_insn(vcpu, st.regs.rip + st.sregs.cs.base, bytes, 15);
		if (n < 0)
			n = 0;
	}
	if (pvm_decode(bytes, (size_t)n, &insn) < 0 || pvm_complete(&st, &insn) < 0)
		goto fatal;
	if ((ret = vcpu_set_regs(vcpu, &st.regs)) < 0 || (ret = vcpu_set_sregs(vcpu, &st.sregs)) < 0)
		goto fatal;
	if (insn.kind == PVM_INSN_SWAPGS) {
		struct msr_list w = { .hdr.nmsrs = 1,
				      .e = { { .index = MSR_KERNEL_GS_BASE, .data = st.kernel_gs_base } } };

		if (msrs_io(vcpu, &w, 1) < 0)
			goto fatal;
	}
	if (st.inject_vector >= 0 && inject_exception(vcpu, st.inject_vector) < 0)
		goto fatal;
	vcpu->pvm_fixups[insn.kind]++;
	if (vcpu->pvm_fixups[insn.kind] == 1)
		pr_debug("vCPU %u: completed %s at 0x%llx", vcpu->id, pvm_insn_name(insn.kind),
			 (unsigned long long)st.regs.rip);
	return VCPU_CONTINUE;

fatal:
	describe_bytes(hex, sizeof(hex), bytes, (size_t)n);
	pr_err("vCPU %u: KVM cannot emulate the instruction at RIP 0x%llx (CPL %u): bytes [%s], %s",
	       vcpu->id, (unsigned long long)st.regs.rip, st.sregs.cs.dpl, hex,
	       n ? "not one kumo completes" : "bytes unavailable");
	vm_request_stop(vcpu->vm, VM_STOP_EMULATION, KUMO_EXIT_EMULATION);
	return VCPU_STOP;
}

/* ---- the exit dispatcher ---- */

static int handle_io(struct vcpu *vcpu, struct kvm_run *run)
{
	uint64_t size = run->io.size, count = run->io.count;
	uint64_t run_size = vcpu->vm ? (uint64_t)vcpu->vm->kvm.run_size : 4096;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	if (!size || size > 4 || run->io.data_offset > run_size ||
	    count * size > run_size - run->io.data_offset) {
		pr_err("vCPU %u: malformed KVM_EXIT_IO", vcpu->id);
		vm_request_stop(vcpu->vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
		return VCPU_STOP;
	}
	for (uint64_t i = 0; i < count; i++, data += size) {
		int is_write = run->io.direction == KVM_EXIT_IO_OUT;

		if (bus_access(&vcpu->vm->pio, run->io.port, data, (uint32_t)size, is_write) < 0)
			pr_debug("unhandled %s port 0x%x size %llu", is_write ? "out" : "in",
				 run->io.port, (unsigned long long)size);
	}
	return VCPU_CONTINUE;
}

static int handle_mmio(struct vcpu *vcpu, struct kvm_run *run)
{
	uint32_t len = run->mmio.len;

	if (len == 0 || len > sizeof(run->mmio.data)) {
		pr_warn_ratelimited("vCPU %u: MMIO access of %u bytes ignored", vcpu->id, len);
		return VCPU_CONTINUE;
	}
	if (bus_access(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len,
		       run->mmio.is_write) < 0)
		pr_warn_ratelimited("unhandled MMIO %s at 0x%llx len %u",
				    run->mmio.is_write ? "write" : "read",
				    (unsigned long long)run->mmio.phys_addr, len);
	return VCPU_CONTINUE;
}

int vcpu_handle_exit(struct vcpu *vcpu, struct kvm_run *run)
{
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu->exits[VCPU_EXIT_IO]++;
		return handle_io(vcpu, run);
	case KVM_EXIT_MMIO:
		vcpu->exits[VCPU_EXIT_MMIO]++;
		return handle_mmio(vcpu, run);
	case KVM_EXIT_HLT:
		vcpu->exits[VCPU_EXIT_HLT]++;
		return VCPU_CONTINUE;
	case KVM_EXIT_INTR:
		vcpu->exits[VCPU_EXIT_INTR]++;
		return VCPU_CONTINUE;
	case KVM_EXIT_SHUTDOWN:
		/* A triple fault: what a PC does then is reset. */
		pr_info("vCPU %u: triple fault, treating it as a reset", vcpu->id);
		vm_request_stop(vcpu->vm, VM_STOP_RESET, KUMO_EXIT_REBOOT);
		return VCPU_STOP;
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
			vm_request_stop(vcpu->vm, VM_STOP_POWEROFF, KUMO_EXIT_POWEROFF);
		else
			vm_request_stop(vcpu->vm, VM_STOP_RESET, KUMO_EXIT_REBOOT);
		return VCPU_STOP;
	case KVM_EXIT_INTERNAL_ERROR:
		if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION)
			return handle_emulation_failure(vcpu, run);
		pr_err("vCPU %u: KVM internal error, suberror %u", vcpu->id, run->internal.suberror);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		pr_err("vCPU %u: KVM_RUN entry failed, reason 0x%llx", vcpu->id,
		       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	default:
		pr_err("vCPU %u: unexpected exit reason %u", vcpu->id, run->exit_reason);
		break;
	}
	vcpu->exits[VCPU_EXIT_OTHER]++;
	vm_request_stop(vcpu->vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
	return VCPU_STOP;
}

static void kick_handler(int sig)
{
	(void)sig; /* only here so KVM_RUN returns -EINTR */
}

void vcpu_kick(struct vcpu *vcpu)
{
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (vcpu->started)
		pthread_kill(vcpu->thread, SIGUSR1);
}

void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	struct sigaction sa = { .sa_handler = kick_handler };
	sigset_t set;
	char name[16];

	snprintf(name, sizeof(name), "kumo-vcpu%u", vcpu->id);
	pthread_setname_np(pthread_self(), name);
	sigaction(SIGUSR1, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	seccomp_enter(KUMO_THREAD_VCPU);
	if (vcpu->id == 0)
		log_phase("vCPU 0 thread filtered: first KVM_RUN");

	while (!__atomic_load_n(&vm->stop, __ATOMIC_ACQUIRE)) {
		long ret;

		vm_vcpu_park_point(vm, vcpu);
		ret = ioctl(vcpu->fd, KVM_RUN, 0);

		if (ret < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				vcpu->exits[VCPU_EXIT_INTR]++;
				continue;
			}
			pr_err("vCPU %u: KVM_RUN: %s", vcpu->id, strerror(errno));
			vm_request_stop(vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
			break;
		}
		if (vcpu_handle_exit(vcpu, vcpu->run) != VCPU_CONTINUE)
			break;
	}
	return NULL;
}

int vcpu_set_runnable(struct vcpu *vcpu)
{
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };

	return (int)kvm_ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp);
}

/*
 * KVM finishes a PIO or MMIO read (our data into the register, RIP past the instruction) only
 * on the next KVM_RUN, and holds that pending step in no state we can read. With immediate_exit
 * set, KVM_RUN does that step and returns -EINTR before running any guest instruction (KVM API:
 * such an operation is complete "only after userspace has re-entered the kernel with KVM_RUN").
 */
static int complete_exit(struct vcpu *vcpu)
{
	uint8_t old = __atomic_load_n(&vcpu->run->immediate_exit, __ATOMIC_SEQ_CST);
	long ret;

	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	/* An access split in two (across a page) exits once more for its second half. */
	for (int i = 0; i < 4; i++) {
		ret = kvm_ioctl(vcpu->fd, KVM_RUN, 0);
		if (ret != 0 || vcpu_handle_exit(vcpu, vcpu->run) != VCPU_CONTINUE)
			break;
	}
	__atomic_store_n(&vcpu->run->immediate_exit, old, __ATOMIC_SEQ_CST);
	if (ret == -EINTR)
		return 0;
	pr_err("vCPU %u: completing its last exit before saving: %s", vcpu->id,
	       ret < 0 ? strerror((int)-ret) : "KVM exited again");
	return ret < 0 ? (int)ret : -EBUSY;
}

int vcpu_save_state(struct vcpu *vcpu, struct kvm_vcpu_state *s)
{
	int ret = complete_exit(vcpu);

	if (!ret)
		ret = kvm_vcpu_state_get(&vcpu->vm->kvm, vcpu->fd, s);
	if (ret)
		pr_err("vCPU %u: saving its state failed", vcpu->id);
	return ret;
}

int vcpu_load_state(struct vcpu *vcpu, const struct kvm_vcpu_state *s)
{
	int ret = kvm_vcpu_state_set(&vcpu->vm->kvm, vcpu->fd, s);

	if (ret)
		pr_err("vCPU %u: loading its state failed", vcpu->id);
	return ret;
}
