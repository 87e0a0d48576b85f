/* vCPU/VM state helpers that need no /dev/kvm: comparison, the MSR choice, refusals. */
#include <errno.h>
#include <stddef.h>

#include "tests/harness.h"
#include "vmm/kvm-state.h"
#include "vmm/kvm.h"

/* Each piece of a vCPU state, by where one of its bytes sits and the name diff gives it. */
static const struct {
	size_t off;
	const char *name;
} vcpu_pieces[] = {
	{ offsetof(struct kvm_vcpu_state, cpuid[3].ecx), "cpuid" },
	{ offsetof(struct kvm_vcpu_state, ncpuid), "cpuid" },
	{ offsetof(struct kvm_vcpu_state, tsc_khz), "tsc_khz" },
	{ offsetof(struct kvm_vcpu_state, sregs2.cr3), "sregs" },
	{ offsetof(struct kvm_vcpu_state, sregs2.pdptrs[3]), "sregs" },
	{ offsetof(struct kvm_vcpu_state, regs.r15), "regs" },
	{ offsetof(struct kvm_vcpu_state, fpu.mxcsr), "fpu" },
	{ offsetof(struct kvm_vcpu_state, xsave[4095]), "xsave" },
	{ offsetof(struct kvm_vcpu_state, xcrs.xcrs[0].value), "xcrs" },
	{ offsetof(struct kvm_vcpu_state, msrs[9].data), "msrs" },
	{ offsetof(struct kvm_vcpu_state, nmsrs), "msrs" },
	{ offsetof(struct kvm_vcpu_state, events.nmi.pending), "events" },
	{ offsetof(struct kvm_vcpu_state, mp_state), "mp_state" },
	{ offsetof(struct kvm_vcpu_state, lapic.regs[0x80]), "lapic" },
	{ offsetof(struct kvm_vcpu_state, debugregs.dr7), "debugregs" },
};

static struct kvm_vcpu_state *vcpu_example(void)
{
	struct kvm_vcpu_state *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->ncpuid = 8;
	s->has_sregs2 = 1;
	s->xsave_size = 4096;
	s->nmsrs = 20;
	for (uint32_t i = 0; i < s->nmsrs; i++)
		s->msrs[i] = (struct kvm_msr_entry){ .index = 0xc0000080 + i, .data = i };
	s->regs.rip = 0x100000;
	return s;
}

static void test_vcpu_diff_names_each_piece(void)
{
	struct kvm_vcpu_state *a = vcpu_example(), *b = vcpu_example();

	CHECK(a && b);
	CHECK(kvm_vcpu_state_diff(a, b) == NULL);
	for (size_t i = 0; i < sizeof(vcpu_pieces) / sizeof(vcpu_pieces[0]); i++) {
		const char *d;

		memcpy(b, a, sizeof(*a));
		((uint8_t *)b)[vcpu_pieces[i].off] ^= 1;
		d = kvm_vcpu_state_diff(a, b);
		if (!d || strcmp(d, vcpu_pieces[i].name))
			fprintf(stderr, "  byte %zu: want %s, got %s\n", vcpu_pieces[i].off,
				vcpu_pieces[i].name, d ? d : "no difference");
		CHECK(d && !strcmp(d, vcpu_pieces[i].name));
	}
	free(a);
	free(b);
}

/* What lies past the used part of an array, or in the other sregs layout, is not compared. */
static void test_vcpu_diff_ignores_unused(void)
{
	struct kvm_vcpu_state *a = vcpu_example(), *b = vcpu_example();

	CHECK(a && b);
	b->cpuid[a->ncpuid].eax = 1;
	b->msrs[a->nmsrs].data = 1;
	b->xsave[a->xsave_size] = 1;
	CHECK(kvm_vcpu_state_diff(a, b) == NULL);
	a->has_sregs2 = b->has_sregs2 = 0;
	b->sregs2.pdptrs[3] = 1;	/* beyond struct kvm_sregs */
	CHECK(kvm_vcpu_state_diff(a, b) == NULL);
	b->xcrs.xcrs[1].value = 7;	/* past nr_xcrs, but XCRs are compared whole */
	CHECK(!strcmp(kvm_vcpu_state_diff(a, b), "xcrs"));
	b->xcrs = a->xcrs;
	b->has_sregs2 = 1;
	CHECK(!strcmp(kvm_vcpu_state_diff(a, b), "sregs"));
	free(a);
	free(b);
}

static void test_vm_diff(void)
{
	struct kvm_vm_state a = { .pit.channels[0].count = 0x10000 }, b = a;

	CHECK(kvm_vm_state_diff(&a, &b) == NULL);
	/* KVM restarts the counts when the PIT is loaded: their start time may differ. */
	b.pit.channels[1].count_load_time = 12345;
	CHECK(kvm_vm_state_diff(&a, &b) == NULL);
	b.pit.channels[1].count = 3;
	CHECK(!strcmp(kvm_vm_state_diff(&a, &b), "pit"));
	b = a;
	b.ioapic.chip.ioapic.redirtbl[23].bits = 1;
	CHECK(!strcmp(kvm_vm_state_diff(&a, &b), "ioapic"));
	b = a;
	b.pic_slave.chip.pic.imr = 0xff;
	CHECK(!strcmp(kvm_vm_state_diff(&a, &b), "pic_slave"));
	b = a;
	b.clock.clock = 1;
	CHECK(!strcmp(kvm_vm_state_diff(&a, &b), "clock"));
}

static void test_msr_choice(void)
{
	struct kvm_vcpu_state *s = vcpu_example();

	CHECK(s);
	CHECK(kvm_state_msr_saved(0x10));		/* TSC */
	CHECK(kvm_state_msr_saved(0x6e0));		/* TSC deadline */
	CHECK(kvm_state_msr_saved(0x4b564d01));	/* kvmclock */
	CHECK(kvm_state_msr_saved(0x3fffffff));
	CHECK(kvm_state_msr_saved(0x40000100));
	CHECK(!kvm_state_msr_saved(0x40000000));	/* Hyper-V guest OS id */
	CHECK(!kvm_state_msr_saved(0x40000022));	/* Hyper-V TSC frequency: read-only */
	CHECK(!kvm_state_msr_saved(0x400000ff));
	CHECK(kvm_vcpu_state_msr(s, 0xc0000083) == &s->msrs[3]);
	CHECK(kvm_vcpu_state_msr(s, 0x10) == NULL);
	s->nmsrs = 3;					/* only the used entries count */
	CHECK(kvm_vcpu_state_msr(s, 0xc0000083) == NULL);
	free(s);
}

/*
 * A state that would make the loader read past its arrays is refused before any ioctl, and
 * without KVM the missing capability is the error; a struct kvm with no fds stands for it.
 */
static void test_refusals_without_kvm(void)
{
	struct kvm kvm = { .sys_fd = -1, .vm_fd = -1 };
	struct kvm_vcpu_state *s = vcpu_example();
	struct kvm_vm_state vs = { 0 };

	CHECK(s);
	s->ncpuid = KVM_STATE_MAX_CPUID + 1;
	CHECK_EQ(kvm_vcpu_state_set(&kvm, -1, s), -EINVAL);
	s->ncpuid = 1;
	s->nmsrs = KVM_STATE_MAX_MSRS + 1;
	CHECK_EQ(kvm_vcpu_state_set(&kvm, -1, s), -EINVAL);
	s->nmsrs = 1;
	s->xsave_size = KVM_STATE_XSAVE_MAX + 1;
	CHECK_EQ(kvm_vcpu_state_set(&kvm, -1, s), -EINVAL);
	s->xsave_size = 4096;
	s->has_sregs2 = 2;
	CHECK_EQ(kvm_vcpu_state_set(&kvm, -1, s), -EINVAL);
	s->has_sregs2 = 1;
	s->xcrs.nr_xcrs = KVM_MAX_XCRS + 1;
	CHECK_EQ(kvm_vcpu_state_set(&kvm, -1, s), -EINVAL);
	s->xcrs.nr_xcrs = 1;
	CHECK_EQ(kvm_vcpu_state_set(&kvm, -1, s), -ENOTSUP);
	CHECK_EQ(kvm_vcpu_state_get(&kvm, -1, s), -ENOTSUP);
	CHECK_EQ(kvm_vm_state_get(&kvm, &vs), -ENOTSUP);
	CHECK_EQ(kvm_vm_state_set(&kvm, &vs), -ENOTSUP);
	free(s);
}

TEST_MAIN(TEST(test_vcpu_diff_names_each_piece), TEST(test_vcpu_diff_ignores_unused),
	  TEST(test_vm_diff), TEST(test_msr_choice), TEST(test_refusals_without_kvm))
