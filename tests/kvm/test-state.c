/*
 * vCPU and VM state through kvm_vcpu_state_* / kvm_vm_state_* (vmm/kvm-state.h): known values
 * survive a save into a fresh vCPU of a fresh VM, and a vCPU stopped in the middle of a PIO or
 * MMIO read goes on in another VM with the read's value in its register; kvmclock and the TSC
 * carry over without a jump.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tests/harness.h"
#include "tests/kvm/tvm.h"
#include "vmm/kvm-state.h"

#define NEED_KVM() do { if (!kvm_available()) SKIP("no /dev/kvm"); } while (0)
#define MEM (16ULL << 20)
#define PORT_STOP 0xe8		/* a read here returns STOP_VALUE and stops the VM */
#define STOP_VALUE 0x5a5a1234u
#define STOP_STATUS 77
#define MMIO_STOP 0xd0000000ULL
#define PVCLOCK_GPA 0x4000ULL

#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_IA32_CR_PAT 0x277
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

/* A device whose reads stop the VM in the middle of the exit they cause. */
struct stopper {
	struct tvm *t;
	int reads;
};

static void stop_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct stopper *s = opaque;
	uint64_t v = STOP_VALUE;

	s->reads++;
	memcpy(data, &v, len > 8 ? 8 : len);
	vm_request_stop(&s->t->vm, VM_STOP_POWEROFF, STOP_STATUS);
}

static const struct io_ops stop_ops = { .read = stop_read };

static int add_stoppers(struct tvm *t, struct stopper *s)
{
	*s = (struct stopper){ .t = t };
	return bus_register(&t->vm.pio, PORT_STOP, 4, &stop_ops, s, "stop-pio") ?:
	       bus_register(&t->vm.mmio, MMIO_STOP, 0x1000, &stop_ops, s, "stop-mmio");
}

struct saved {
	struct kvm_vcpu_state cpu[2];
	struct kvm_vm_state vm;
};

/* Everything of a stopped VM: vCPUs, irqchip/PIT/clock; RAM stays where it is. */
static int save_vm(struct tvm *from, struct saved *sv)
{
	int ret;

	for (unsigned int i = 0; i < from->vm.ncpus; i++)
		if ((ret = vcpu_save_state(from->vm.vcpus[i], &sv->cpu[i])))
			return ret;
	return kvm_vm_state_get(&from->vm.kvm, &sv->vm);
}

/* Load sv into a VM that never ran, with from's RAM. */
static int load_vm(struct tvm *to, struct tvm *from, const struct saved *sv)
{
	void *src = mm_gpa_to_hva(&from->vm.mem, 0, MEM), *dst = mm_gpa_to_hva(&to->vm.mem, 0, MEM);
	int ret;

	if (!src || !dst || from->vm.ncpus != to->vm.ncpus)
		return -EINVAL;
	memcpy(dst, src, MEM);
	for (unsigned int i = 0; i < to->vm.ncpus; i++)
		if ((ret = vcpu_load_state(to->vm.vcpus[i], &sv->cpu[i])))
			return ret;
	return kvm_vm_state_set(&to->vm.kvm, &sv->vm);
}

static uint32_t lapic_reg(const struct kvm_lapic_state *l, unsigned int off)
{
	uint32_t v;

	memcpy(&v, l->regs + off, 4);
	return v;
}

static void set_lapic_reg(struct kvm_lapic_state *l, unsigned int off, uint32_t v)
{
	memcpy(l->regs + off, &v, 4);
}

static uint64_t msr_value(struct kvm_vcpu_state *s, uint32_t index)
{
	struct kvm_msr_entry *e = kvm_vcpu_state_msr(s, index);

	return e ? e->data : ~0ULL;
}

/* XCR0 the vCPU's CPUID allows: x87 and SSE, plus AVX when leaf 0xD offers it. */
static uint64_t wanted_xcr0(const struct kvm_vcpu_state *s)
{
	for (uint32_t i = 0; i < s->ncpuid; i++)
		if (s->cpuid[i].function == 0xd && s->cpuid[i].index == 0)
			return 3 | (s->cpuid[i].eax & 4);
	return 3;
}

static const struct { uint32_t index; uint64_t value; } known_msrs[] = {
	/* 32-bit SYSENTER values: AMD keeps only the low half. */
	{ MSR_IA32_SYSENTER_CS, 0x10 }, { MSR_IA32_SYSENTER_ESP, 0x81001000 },
	{ MSR_IA32_SYSENTER_EIP, 0x81000000 }, { MSR_STAR, 0x0023001000000000ULL },
	{ MSR_LSTAR, 0xffffffff81a00000ULL }, { MSR_CSTAR, 0xffffffff81b00000ULL },
	{ MSR_SYSCALL_MASK, 0x47700 }, { MSR_KERNEL_GS_BASE, 0xffff88807fc00000ULL },
	{ MSR_IA32_CR_PAT, 0x0007050600070106ULL },
};

#define KNOWN_TSC (1ULL << 40)
#define KNOWN_DEADLINE (KNOWN_TSC << 4)	/* hours away: the timer never fires here */

/* Put a recognisable value into every piece of s (a long-mode vCPU's state). */
static void set_known_values(struct kvm_vcpu_state *s)
{
	__u64 *gpr = &s->regs.rax;

	for (int i = 0; i < 16; i++)	/* rax .. r15 */
		gpr[i] = 0x1111111111111111ULL * (uint64_t)(i + 1);
	s->regs.rip = TVM_CODE_GPA + 0x40;
	s->regs.rflags = 0x246;
	s->sregs2.fs.base = 0x7f0000001000ULL;	/* sregs and sregs2 start alike */
	s->sregs2.gs.base = 0xffff88807fc00000ULL;
	s->sregs2.cr2 = 0xdead000;
	if (s->xsave_size) {
		uint64_t bv;

		memcpy(&bv, s->xsave + 512, 8);	/* XSTATE_BV: x87 and SSE in use */
		bv |= 3;
		memcpy(s->xsave + 512, &bv, 8);
		for (int i = 0; i < 16; i++)	/* XMM0..15 */
			memset(s->xsave + 160 + 16 * i, 0xa0 + i, 16);
	} else {
		for (int i = 0; i < 16; i++)
			memset(s->fpu.xmm[i], 0xa0 + i, 16);
	}
	if (s->xcrs.nr_xcrs)			/* the host has XSAVE */
		s->xcrs.xcrs[0].value = wanted_xcr0(s);
	for (size_t i = 0; i < sizeof(known_msrs) / sizeof(known_msrs[0]); i++) {
		struct kvm_msr_entry *e = kvm_vcpu_state_msr(s, known_msrs[i].index);

		if (e)
			e->data = known_msrs[i].value;
	}
	if (kvm_vcpu_state_msr(s, MSR_IA32_TSC))
		kvm_vcpu_state_msr(s, MSR_IA32_TSC)->data = KNOWN_TSC;
	set_lapic_reg(&s->lapic, 0x80, 0x20);		/* TPR */
	set_lapic_reg(&s->lapic, 0xf0, 0x1ff);		/* SVR: enabled, vector 0xff */
	set_lapic_reg(&s->lapic, 0xd0, 0x01000000);	/* LDR */
	/* The LAPIC timer in TSC-deadline mode, which needs the CPUID bit, with a deadline. */
	for (uint32_t i = 0; i < s->ncpuid; i++)
		if (s->cpuid[i].function == 1)
			s->cpuid[i].ecx |= 1u << 24;
	set_lapic_reg(&s->lapic, 0x320, 0x50030);	/* LVT timer: deadline, masked, 0x30 */
	if (kvm_vcpu_state_msr(s, MSR_IA32_TSC_DEADLINE))
		kvm_vcpu_state_msr(s, MSR_IA32_TSC_DEADLINE)->data = KNOWN_DEADLINE;
	set_lapic_reg(&s->lapic, 0x350, 0x700);		/* LINT0: ExtINT */
	set_lapic_reg(&s->lapic, 0x360, 0x400);		/* LINT1: NMI */
	set_lapic_reg(&s->lapic, 0x3e0, 0xb);		/* timer divide by 1 */
	s->events.exception.injected = 1;
	s->events.exception.nr = 13;
	s->events.exception.has_error_code = 1;
	s->events.exception.error_code = 0x18;
	s->events.nmi.pending = 1;
	s->events.nmi.masked = 1;
	s->events.interrupt.shadow = KVM_X86_SHADOW_INT_MOV_SS;
	s->mp_state.mp_state = KVM_MP_STATE_HALTED;
	for (int i = 0; i < 4; i++)
		s->debugregs.db[i] = 0x1000ULL * (uint64_t)(i + 1);
	s->debugregs.dr6 = 0xffff0ff1;
	s->debugregs.dr7 = 0x401;
}

/* The pieces of got that set_known_values() chose, one check each. */
static void check_known_values(struct kvm_vcpu_state *want, struct kvm_vcpu_state *got)
{
	uint64_t tsc = msr_value(got, MSR_IA32_TSC);

	CHECK(!memcmp(&want->regs, &got->regs, sizeof(got->regs)));
	CHECK_EQ(got->has_sregs2, want->has_sregs2);
	CHECK_EQ(got->sregs2.fs.base, 0x7f0000001000ULL);
	CHECK_EQ(got->sregs2.gs.base, 0xffff88807fc00000ULL);
	CHECK_EQ(got->sregs2.cr2, 0xdead000);
	CHECK_EQ(got->sregs2.efer, want->sregs2.efer);
	for (int i = 0; i < 16; i++)	/* the FPU view of XSAVE agrees */
		CHECK_EQ(got->fpu.xmm[i][7], 0xa0 + i);
	if (want->xsave_size)
		CHECK_EQ(got->xsave[160 + 16 * 15], 0xaf);
	CHECK_EQ(got->xcrs.nr_xcrs, want->xcrs.nr_xcrs);
	if (want->xcrs.nr_xcrs)
		CHECK_EQ(got->xcrs.xcrs[0].value, wanted_xcr0(want));
	CHECK(got->nmsrs > sizeof(known_msrs) / sizeof(known_msrs[0]));
	CHECK_EQ(got->nmsrs, want->nmsrs);
	for (size_t i = 0; i < sizeof(known_msrs) / sizeof(known_msrs[0]); i++)
		CHECK_EQ(msr_value(got, known_msrs[i].index), known_msrs[i].value);
	/* The TSC ran on since it was set: by less than a second. */
	CHECK(tsc >= KNOWN_TSC && tsc - KNOWN_TSC < (uint64_t)got->tsc_khz * 1000);
	CHECK_EQ(lapic_reg(&got->lapic, 0x80), 0x20);
	CHECK_EQ(lapic_reg(&got->lapic, 0xf0), 0x1ff);
	CHECK_EQ(lapic_reg(&got->lapic, 0xd0), 0x01000000);
	CHECK_EQ(lapic_reg(&got->lapic, 0x320), 0x50030);
	CHECK_EQ(msr_value(got, MSR_IA32_TSC_DEADLINE), KNOWN_DEADLINE);
	CHECK_EQ(lapic_reg(&got->lapic, 0x350), 0x700);
	CHECK_EQ(lapic_reg(&got->lapic, 0x360), 0x400);
	CHECK_EQ(lapic_reg(&got->lapic, 0x3e0), 0xb);
	CHECK_EQ(got->events.exception.injected, 1);
	CHECK_EQ(got->events.exception.nr, 13);
	CHECK_EQ(got->events.exception.has_error_code, 1);
	CHECK_EQ(got->events.exception.error_code, 0x18);
	CHECK_EQ(got->events.nmi.pending, 1);
	CHECK_EQ(got->events.nmi.masked, 1);
	CHECK(got->events.interrupt.shadow != 0);	/* SVM reports both kinds of shadow */
	CHECK_EQ(got->mp_state.mp_state, KVM_MP_STATE_HALTED);
	CHECK(!memcmp(got->debugregs.db, want->debugregs.db, sizeof(got->debugregs.db)));
	CHECK_EQ(got->debugregs.dr6, 0xffff0ff1);
	CHECK_EQ(got->debugregs.dr7, 0x401);
	CHECK_EQ(got->ncpuid, want->ncpuid);
	CHECK(!memcmp(got->cpuid, want->cpuid, got->ncpuid * sizeof(got->cpuid[0])));
	CHECK_EQ(got->tsc_khz, want->tsc_khz);
}

/* Compare two saves of a vCPU taken at different moments: the TSC is allowed to run on. */
static const char *diff_but_tsc(struct kvm_vcpu_state *a, struct kvm_vcpu_state *b)
{
	struct kvm_msr_entry *ta = kvm_vcpu_state_msr(a, MSR_IA32_TSC);
	struct kvm_msr_entry *tb = kvm_vcpu_state_msr(b, MSR_IA32_TSC);

	if (!ta || !tb || tb->data < ta->data || tb->data - ta->data >= (uint64_t)a->tsc_khz * 1000)
		return "TSC";
	tb->data = ta->data;
	return kvm_vcpu_state_diff(a, b);
}

static void test_vcpu_state_roundtrip(void)
{
	struct saved *want = calloc(1, sizeof(*want)), *a = calloc(1, sizeof(*a));
	struct saved *b = calloc(1, sizeof(*b));
	struct tvm ta, tb;
	const char *diff;

	NEED_KVM();
	CHECK(want && a && b);
	CHECK_EQ(tvm_create(&ta, MEM, 2), 0);
	CHECK_EQ(tvm_start_cpu(&ta, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(vcpu_save_state(ta.vm.vcpus[0], &want->cpu[0]), 0);
	fprintf(stderr, "  %u MSRs, %u CPUID entries, XSAVE %u bytes, %u XCRs, %s, TSC %u kHz\n",
		want->cpu[0].nmsrs, want->cpu[0].ncpuid, want->cpu[0].xsave_size,
		want->cpu[0].xcrs.nr_xcrs,
		want->cpu[0].has_sregs2 ? "sregs2" : "sregs", want->cpu[0].tsc_khz);
	set_known_values(&want->cpu[0]);
	CHECK_EQ(vcpu_load_state(ta.vm.vcpus[0], &want->cpu[0]), 0);
	CHECK_EQ(vcpu_save_state(ta.vm.vcpus[0], &a->cpu[0]), 0);
	check_known_values(&want->cpu[0], &a->cpu[0]);
	if (__test_failed)
		return;
	CHECK_EQ(vcpu_save_state(ta.vm.vcpus[1], &a->cpu[1]), 0);
	CHECK_EQ(a->cpu[1].mp_state.mp_state, KVM_MP_STATE_UNINITIALIZED);	/* an AP never started */

	CHECK_EQ(tvm_create(&tb, MEM, 2), 0);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(vcpu_load_state(tb.vm.vcpus[i], &a->cpu[i]), 0);
		CHECK_EQ(vcpu_save_state(tb.vm.vcpus[i], &b->cpu[i]), 0);
		diff = diff_but_tsc(&a->cpu[i], &b->cpu[i]);
		if (diff)
			fprintf(stderr, "  vCPU %d: %s differs after the move\n", i, diff);
		CHECK(!diff);
	}
	tvm_destroy(&tb);
	tvm_destroy(&ta);
	free(want);
	free(a);
	free(b);
}

/*
 * Load s into a VM and read it back into got: the first piece that differs, or NULL. kvmclock
 * runs on from s's value: less than a second later counts as the same.
 */
static const char *vm_state_reloaded(struct kvm *kvm, const struct kvm_vm_state *s,
				     struct kvm_vm_state *got)
{
	if (kvm_vm_state_set(kvm, s) || kvm_vm_state_get(kvm, got))
		return "the whole state (an ioctl failed)";
	if (got->clock.clock < s->clock.clock || got->clock.clock - s->clock.clock >= 1000000000ULL)
		return "clock";
	got->clock = s->clock;
	return kvm_vm_state_diff(s, got);
}

static void test_vm_state_roundtrip(void)
{
	struct kvm_vm_state want, a, b;
	struct kvm_ioapic_state *io = &want.ioapic.chip.ioapic;
	struct tvm ta, tb;
	const char *diff;

	NEED_KVM();
	CHECK_EQ(tvm_create(&ta, MEM, 1), 0);
	CHECK_EQ(kvm_vm_state_get(&ta.vm.kvm, &want), 0);
	CHECK_EQ(want.pic_master.chip_id, KVM_IRQCHIP_PIC_MASTER);
	CHECK_EQ(want.ioapic.chip_id, KVM_IRQCHIP_IOAPIC);
	want.pic_master.chip.pic.imr = 0xfa;
	want.pic_master.chip.pic.irq_base = 0x20;
	want.pic_master.chip.pic.init4 = 1;
	want.pic_master.chip.pic.elcr = 0x08;
	want.pic_slave.chip.pic.imr = 0xbf;
	want.pic_slave.chip.pic.irq_base = 0x28;
	want.pic_slave.chip.pic.special_fully_nested_mode = 1;
	io->ioregsel = 0x10;
	for (int i = 0; i < KVM_IOAPIC_NUM_PINS; i++)
		io->redirtbl[i].bits = (1ULL << 16) | (uint64_t)(0x30 + i) | ((uint64_t)i << 56);
	/* Channels 1 and 2 raise no interrupt whatever they count (channel 0 drives IRQ 0). */
	want.pit.channels[1].count = 0x1234;
	want.pit.channels[1].mode = 2;
	want.pit.channels[1].rw_mode = 3;
	want.pit.channels[2].count = 0x5678;
	want.pit.channels[2].mode = 3;
	want.pit.channels[2].rw_mode = 3;
	want.pit.channels[2].gate = 1;
	want.clock.clock = 1000ULL * 1000000000ULL;
	diff = vm_state_reloaded(&ta.vm.kvm, &want, &a);
	if (diff)
		fprintf(stderr, "  %s differs after loading known values\n", diff);
	CHECK(!diff);

	CHECK_EQ(tvm_create(&tb, MEM, 1), 0);
	diff = vm_state_reloaded(&tb.vm.kvm, &a, &b);
	if (diff)
		fprintf(stderr, "  %s differs after the move\n", diff);
	CHECK(!diff);
	tvm_destroy(&tb);
	tvm_destroy(&ta);
}

/* A 16-bit in stops the VM mid-exit; its value must land in AX of the vCPU that goes on. */
GUEST_CODE(g_pio_stop,
	"mov $-1, %rax\n mov $0x0badcafe, %ebx\n"
	"in $0xe8, %ax\n"
	"g_pio_stop_next: out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"mov %ebx, %eax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");
extern const uint8_t g_pio_stop_next[];

/* A 32-bit MMIO load stops the VM mid-exit. */
GUEST_CODE(g_mmio_stop,
	"mov $-1, %rax\n mov $0x0badcafe, %ebx\n mov $0xd0000000, %rcx\n"
	"mov 4(%rcx), %eax\n"
	"g_mmio_stop_next: out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"mov %ebx, %eax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");
extern const uint8_t g_mmio_stop_next[];

/* Run code in one VM until its read stops it, move the VM, and let it finish in another. */
static void check_exit_carries_over(const uint8_t *start, const uint8_t *end, uint64_t next_rip,
				    uint64_t rax_after)
{
	struct saved *sv = calloc(1, sizeof(*sv));
	struct stopper sa, sb;
	struct tvm ta, tb;

	CHECK(sv);
	CHECK_EQ(tvm_create(&ta, MEM, 1), 0);
	CHECK_EQ(add_stoppers(&ta, &sa), 0);
	CHECK_EQ(tvm_load(&ta, TVM_CODE_GPA, start, end), 0);
	CHECK_EQ(tvm_start_cpu(&ta, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&ta), STOP_STATUS);
	CHECK_EQ(sa.reads, 1);
	CHECK_EQ(ta.nlog, 0);

	CHECK_EQ(tvm_create(&tb, MEM, 1), 0);
	CHECK_EQ(add_stoppers(&tb, &sb), 0);
	CHECK_EQ(save_vm(&ta, sv), 0);
	CHECK_EQ(load_vm(&tb, &ta, sv), 0);
	/* Saving completed the read: the value is in RAX and RIP is past the instruction. */
	CHECK_EQ(sv->cpu[0].regs.rip, next_rip);
	CHECK_EQ(sv->cpu[0].regs.rax, rax_after);
	tvm_destroy(&ta);
	CHECK_EQ(tvm_run(&tb), 0);
	CHECK_EQ(sb.reads, 0);		/* the read is not done again */
	CHECK_EQ(tb.nlog, 3);
	CHECK_EQ(tb.log[0], (uint32_t)rax_after);
	CHECK_EQ(tb.log[1], (uint32_t)(rax_after >> 32));
	CHECK_EQ(tb.log[2], 0x0badcafe);
	tvm_destroy(&tb);
	free(sv);
}

static void test_pio_exit_carries_over(void)
{
	NEED_KVM();
	/* A 16-bit in keeps the upper bits of RAX. */
	check_exit_carries_over(g_pio_stop_start, g_pio_stop_end,
				TVM_CODE_GPA + GUEST_LABEL_OFF(g_pio_stop, g_pio_stop_next),
				0xffffffffffff0000ULL | (STOP_VALUE & 0xffff));
}

static void test_mmio_exit_carries_over(void)
{
	NEED_KVM();
	/* A 32-bit load zero-extends into RAX. */
	check_exit_carries_over(g_mmio_stop_start, g_mmio_stop_end,
				TVM_CODE_GPA + GUEST_LABEL_OFF(g_mmio_stop, g_mmio_stop_next),
				STOP_VALUE);
}

/*
 * The guest reads kvmclock the way Linux does: its per-vCPU page at PVCLOCK_GPA
 * (pvclock_vcpu_time_info: version, tsc_timestamp at 8, system_time at 16, mul at 24, shift at
 * 28), the TSC, the version again; ns = system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32.
 * It logs the time and the TSC, stops mid-PIO, and logs both again wherever it goes on.
 */
GUEST_CODE(g_clock,
	"mov $0x4b564d01, %ecx\n mov $0x4001, %eax\n xor %edx, %edx\n wrmsr\n"
	"call 5f\n"
	"in $0xe8, %eax\n"
	"call 5f\n"
	"xor %eax, %eax\n out %eax, $0xe4\n"
	"5: call 1f\n out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"rdtsc\n out %eax, $0xe0\n mov %edx, %eax\n out %eax, $0xe0\n ret\n"
	"1: mov 0x4000, %r8d\n test $1, %r8d\n jnz 1b\n lfence\n"
	"rdtsc\n shl $32, %rdx\n or %rdx, %rax\n sub 0x4008, %rax\n"
	"movsbl 0x401c, %ecx\n test %ecx, %ecx\n js 3f\n shl %cl, %rax\n jmp 4f\n"
	"3: neg %ecx\n shr %cl, %rax\n"
	"4: mov 0x4018, %r9d\n mul %r9\n shrd $32, %rdx, %rax\n add 0x4010, %rax\n"
	"lfence\n cmp 0x4000, %r8d\n jne 1b\n ret\n");

static uint64_t log64(struct tvm *t, int i)
{
	return t->log[i] | (uint64_t)t->log[i + 1] << 32;
}

static void test_kvmclock_carries_over(void)
{
	struct saved *sv = calloc(1, sizeof(*sv));
	struct kvm_vm_state vs;
	struct stopper sa, sb;
	struct tvm ta, tb;
	uint64_t t1, t2, tsc1, tsc2, khz;

	NEED_KVM();
	CHECK(sv);
	CHECK_EQ(tvm_create(&ta, MEM, 1), 0);
	CHECK_EQ(add_stoppers(&ta, &sa), 0);
	/* A clock far from a new VM's, so that a clock not carried over shows. */
	CHECK_EQ(kvm_vm_state_get(&ta.vm.kvm, &vs), 0);
	vs.clock.clock = 1000ULL * 1000000000ULL;
	CHECK_EQ(kvm_vm_state_set(&ta.vm.kvm, &vs), 0);
	CHECK_EQ(tvm_load(&ta, TVM_CODE_GPA, g_clock_start, g_clock_end), 0);
	CHECK_EQ(tvm_start_cpu(&ta, 0, TVM_CODE_GPA), 0);
	/*
	 * The same for the TSC. (A TSC written within a second of what KVM expects is taken as
	 * an attempt to synchronise vCPUs, which Linux 6.1 also does for the first write into
	 * a new VM: a restored VM younger than a second then keeps the new VM's TSC.)
	 */
	CHECK_EQ(vcpu_save_state(ta.vm.vcpus[0], &sv->cpu[0]), 0);
	CHECK(kvm_vcpu_state_msr(&sv->cpu[0], MSR_IA32_TSC));
	kvm_vcpu_state_msr(&sv->cpu[0], MSR_IA32_TSC)->data = KNOWN_TSC;
	CHECK_EQ(vcpu_load_state(ta.vm.vcpus[0], &sv->cpu[0]), 0);
	CHECK_EQ(tvm_run(&ta), STOP_STATUS);
	CHECK_EQ(ta.nlog, 4);
	t1 = log64(&ta, 0);
	tsc1 = log64(&ta, 2);
	CHECK(t1 >= 1000ULL * 1000000000ULL && t1 < 1010ULL * 1000000000ULL);
	CHECK(tsc1 > KNOWN_TSC);
	CHECK_EQ(save_vm(&ta, sv), 0);
	khz = sv->cpu[0].tsc_khz;

	/* The time a VM spends saved is not added to its clock or its TSC. */
	usleep(1200 * 1000);
	CHECK_EQ(tvm_create(&tb, MEM, 1), 0);
	CHECK_EQ(add_stoppers(&tb, &sb), 0);
	CHECK_EQ(load_vm(&tb, &ta, sv), 0);
	tvm_destroy(&ta);
	CHECK_EQ(tvm_run(&tb), 0);
	CHECK_EQ(tb.nlog, 4);
	t2 = log64(&tb, 0);
	tsc2 = log64(&tb, 2);
	fprintf(stderr, "  guest clock %.6f s -> %.6f s, TSC +%llu (%llu kHz)\n", t1 / 1e9, t2 / 1e9,
		(unsigned long long)(tsc2 - tsc1), (unsigned long long)khz);
	CHECK(t2 > t1 && t2 - t1 < 1000000000ULL);
	CHECK(tsc2 > tsc1 && tsc2 - tsc1 < khz * 1000);
	tvm_destroy(&tb);
	free(sv);
}

TEST_MAIN(TEST(test_vcpu_state_roundtrip), TEST(test_vm_state_roundtrip),
	  TEST(test_pio_exit_carries_over), TEST(test_mmio_exit_carries_over),
	  TEST(test_kvmclock_carries_over))
