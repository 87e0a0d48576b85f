/*
 * KVM tests with tiny guests: exits reach the right handler, serial output, #BP delivery,
 * the instructions kumo completes for PVM, a user-mode hot loop, memory above 4 GiB, 2 vCPUs.
 * On a VMX host these run natively; on PVM the CPL0 parts run in KVM's emulator and the
 * failures it cannot handle come through kumo's completion path. Same assertions either way.
 */
#include <stdio.h>

#include "tests/harness.h"
#include "tests/kvm/tvm.h"
#include "vmm/cpuid.h"

#define NEED_KVM() do { if (!kvm_available()) SKIP("no /dev/kvm"); } while (0)
#define MEM (64ULL << 20)

GUEST_CODE(g_pio,
	"mov $0x11, %al\n out %al, $0xe0\n"
	"mov $0x2233, %ax\n out %ax, $0xe0\n"
	"mov $0x44556677, %eax\n out %eax, $0xe0\n"
	"in $0xe0, %eax\n out %eax, $0xe0\n"
	"lea 3f(%rip), %rsi\n mov $3, %ecx\n mov $0xe0, %dx\n rep outsb\n"
	"mov $0xe2, %dx\n in (%dx), %eax\n out %eax, $0xe0\n"	/* straddles the log range */
	"mov $42, %eax\n out %eax, $0xe4\n"
	"1: hlt\n jmp 1b\n"
	"3: .byte 0xa1, 0xa2, 0xa3\n");

static void test_pio_exits(void)
{
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_pio_start, g_pio_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), 42);
	CHECK_EQ(t.nlog, 8);
	CHECK_EQ(t.log[0], 0x11);
	CHECK_EQ(t.log[1], 0x2233);
	CHECK_EQ(t.log[2], 0x44556677);
	CHECK_EQ(t.log[3], 0xC0FFEE03);
	CHECK_EQ(t.log[4], 0xa1);
	CHECK_EQ(t.log[5], 0xa2);
	CHECK_EQ(t.log[6], 0xa3);
	CHECK_EQ(t.log[7], 0xffffffff);	/* unhandled read: all ones */
	CHECK(t.vm.pio.unhandled >= 1);
	tvm_destroy(&t);
}

struct mmio_dev {
	uint64_t last_off, last_val;
	uint32_t last_len;
	int writes, reads;
};

static void mmio_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct mmio_dev *d = opaque;
	uint64_t v = 0x0123456789abcdefULL + off;

	d->reads++;
	memcpy(data, &v, len);
}

static void mmio_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct mmio_dev *d = opaque;

	d->writes++;
	d->last_off = off;
	d->last_len = len;
	d->last_val = 0;
	memcpy(&d->last_val, data, len);
}

static const struct io_ops mmio_test_ops = { .read = mmio_read, .write = mmio_write };

GUEST_CODE(g_mmio,
	"mov $0xd0000000, %rbx\n"
	"movl $0xdeadbeef, 0x10(%rbx)\n"
	"movq 8(%rbx), %rax\n out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"mov $0xd0100000, %rbx\n mov (%rbx), %eax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");

static void test_mmio_exits(void)
{
	struct mmio_dev dev = { 0 };
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(bus_register(&t.vm.mmio, 0xd0000000, 0x1000, &mmio_test_ops, &dev, "test"), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_mmio_start, g_mmio_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(dev.writes, 1);
	CHECK_EQ(dev.last_off, 0x10);
	CHECK_EQ(dev.last_len, 4);
	CHECK_EQ(dev.last_val, 0xdeadbeef);
	CHECK_EQ(dev.reads, 1);
	CHECK_EQ(t.nlog, 3);
	CHECK_EQ(t.log[0], 0x89abcdef + 8);
	CHECK_EQ(t.log[1], 0x01234567);
	CHECK_EQ(t.log[2], 0xffffffff);
	tvm_destroy(&t);
}

GUEST_CODE(g_serial,
	"lea 3f(%rip), %rsi\n mov $0x3f8, %dx\n"
	"1: lodsb\n test %al, %al\n jz 2f\n out %al, (%dx)\n jmp 1b\n"
	"2: mov $0x3fd, %dx\n in (%dx), %al\n movzbl %al, %eax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n"
	"3: .asciz \"hello from the guest\\n\"\n");

static void test_serial_output(void)
{
	char buf[256];
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_serial_start, g_serial_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), 0);
	tvm_console(&t, buf, sizeof(buf));
	CHECK(!strcmp(buf, "hello from the guest\n"));
	CHECK_EQ(t.nlog, 1);
	CHECK_EQ(t.log[0] & 0x60, 0x60);	/* LSR: THR empty, transmitter empty */
	CHECK(t.vm.com1.first_tx_ns != 0);
	tvm_destroy(&t);
}

/* int3 at CPL0: the #BP handler must see the address after the int3 as its return RIP. */
GUEST_CODE(g_int3,
	"int3\n"
	"g_int3_after: mov $1, %eax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n"
	"g_int3_handler: mov (%rsp), %rax\n out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"iretq\n");
extern const uint8_t g_int3_after[], g_int3_handler[];

static void test_int3_reaches_handler(void)
{
	uint64_t after = TVM_CODE_GPA + GUEST_LABEL_OFF(g_int3, g_int3_after);
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_int3_start, g_int3_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_set_idt_gate(&t, 3, TVM_CODE_GPA + GUEST_LABEL_OFF(g_int3, g_int3_handler)), 0);
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(t.nlog, 3);
	CHECK_EQ(t.log[0], (uint32_t)after);
	CHECK_EQ(t.log[1], (uint32_t)(after >> 32));
	CHECK_EQ(t.log[2], 1);
	tvm_destroy(&t);
}

/* Instructions PVM's emulator fails on and kumo completes: each must leave the right state. */
GUEST_CODE(g_insns,
	"test %edi, %edi\n jz 5f\n"	/* rdi = 1: the CPU has SMAP, try stac/clac */
	"stac\n pushfq\n pop %rax\n shr $18, %eax\n and $1, %eax\n out %eax, $0xe0\n"
	"clac\n pushfq\n pop %rax\n shr $18, %eax\n and $1, %eax\n out %eax, $0xe0\n"
	"5: mov $0xc0000101, %ecx\n mov $0x1111, %eax\n xor %edx, %edx\n wrmsr\n"
	"mov $0xc0000102, %ecx\n mov $0x2222, %eax\n wrmsr\n"
	"swapgs\n"
	"mov $0xc0000101, %ecx\n rdmsr\n out %eax, $0xe0\n"
	"mov $0xc0000102, %ecx\n rdmsr\n out %eax, $0xe0\n"
	"mov $0xf0f0f0f0f0f0f0f1, %rax\n popcnt %rax, %rbx\n mov %ebx, %eax\n out %eax, $0xe0\n"
	"mov $-1, %rdx\n mov $0xffffffff00000003, %rcx\n popcnt %ecx, %edx\n"
	"mov %edx, %eax\n out %eax, $0xe0\n shr $32, %rdx\n mov %edx, %eax\n out %eax, $0xe0\n"
	"xor %ecx, %ecx\n popcnt %rcx, %rax\n pushfq\n pop %rax\n shr $6, %eax\n and $1, %eax\n"
	"out %eax, $0xe0\n"
	"fnclex\n fwait\n mov $7, %eax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");

static int host_has_smap(struct tvm *t)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(t->vm.cpuid, 7, 0);

	return e && (e->ebx & (1u << 20));
}

static void test_completed_instructions(void)
{
	struct kvm_regs regs;
	struct tvm t;
	int smap, i = 0;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_insns_start, g_insns_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	smap = host_has_smap(&t);
	CHECK_EQ(vcpu_get_regs(t.vm.vcpus[0], &regs), 0);
	regs.rdi = (uint64_t)smap;
	CHECK_EQ(vcpu_set_regs(t.vm.vcpus[0], &regs), 0);
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(t.nlog, 7 + 2 * smap);
	if (smap) {
		CHECK_EQ(t.log[i++], 1);	/* stac set AC */
		CHECK_EQ(t.log[i++], 0);	/* clac cleared it */
	}
	CHECK_EQ(t.log[i++], 0x2222);		/* swapgs: GS base <-> KERNEL_GS_BASE */
	CHECK_EQ(t.log[i++], 0x1111);
	CHECK_EQ(t.log[i++], 33);		/* popcnt 64-bit */
	CHECK_EQ(t.log[i++], 2);		/* popcnt 32-bit: low half only ... */
	CHECK_EQ(t.log[i++], 0);		/* ... and the upper half of rdx zeroed */
	CHECK_EQ(t.log[i++], 1);		/* popcnt of 0 sets ZF */
	CHECK_EQ(t.log[i++], 7);		/* fnclex; fwait fell through */
	tvm_destroy(&t);
}

/*
 * sysretq into user mode, then a hot loop at CPL3 (native speed even on PVM) and PIO from user
 * mode (IOPL 3). GDT gets user data (0x20) and user code (0x28) so STAR base 0x18 fits sysret.
 */
GUEST_CODE(g_user,
	"mov $0xc0000081, %ecx\n xor %eax, %eax\n mov $0x00180000, %edx\n wrmsr\n"
	"lea 1f(%rip), %rcx\n mov $0x3002, %r11\n sysretq\n"
	"1: mov %cs, %eax\n out %eax, $0xe0\n mov %ss, %eax\n out %eax, $0xe0\n"
	"xor %ecx, %ecx\n 2: inc %ecx\n cmp $10000000, %ecx\n jne 2b\n mov %ecx, %eax\n"
	"out %eax, $0xe0\n pushfq\n pop %rax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");

static void test_sysret_to_user_mode(void)
{
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_user_start, g_user_end), 0);
	CHECK_EQ(tvm_start_user(&t, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(t.nlog, 4);
	fprintf(stderr, "  user mode: cs=0x%x ss=0x%x\n", t.log[0], t.log[1]);
	CHECK_EQ(t.log[0] & 3, 3);		/* CPL 3 */
	CHECK_EQ(t.log[1] & 3, 3);
	/*
	 * On VMX the selectors are STAR's: CS = (0x18 + 16) | 3, SS = (0x18 + 8) | 3. PVM runs
	 * guest user code natively under the host's own user selectors, which is what it reads.
	 */
	if (!t.vm.pvm) {
		CHECK_EQ(t.log[0], 0x2b);
		CHECK_EQ(t.log[1], 0x23);
	}
	fprintf(stderr, "  sysretq completed by kumo: %llu time(s)\n",
		(unsigned long long)t.vm.vcpus[0]->pvm_fixups[PVM_INSN_SYSRETQ]);
	CHECK_EQ(t.log[2], 10000000);
	CHECK_EQ(t.log[3] & 2, 2);
	if (!t.vm.pvm)
		CHECK_EQ(t.log[3] & 0x3000, 0x3000);	/* RFLAGS from r11: IOPL 3 */
	tvm_destroy(&t);
}

/* Memory above 4 GiB: the guest maps 4G..4G+64M with one more page directory. */
GUEST_CODE(g_high,
	"mov $0x100001000, %rbx\n mov $0x1122334455667788, %rax\n mov %rax, (%rbx)\n"
	"mov 0x1000(%rbx), %rax\n out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");

static void test_memory_above_4g(void)
{
	uint64_t *pdpt, *pd, *hi;
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM_32BIT_HOLE_START + (64ULL << 20), 1), 0);
	CHECK_EQ(mm_nr_regions(&t.vm.mem), 2);
	CHECK_EQ(mm_region(&t.vm.mem, 1)->gpa, MEM_4G);
	pdpt = mm_gpa_to_hva(&t.vm.mem, BOOT_PDPT_GPA, 4096);
	pd = mm_gpa_to_hva(&t.vm.mem, 0x5000, 4096);
	CHECK(pdpt && pd);
	memset(pd, 0, 4096);
	for (int i = 0; i < 32; i++)
		pd[i] = (MEM_4G + ((uint64_t)i << 21)) | 0x83;
	pdpt[4] = 0x5000 | 3;
	hi = mm_gpa_to_hva(&t.vm.mem, MEM_4G + 0x2000, 8);
	CHECK(hi);
	*hi = 0xcafef00d8badf00dULL;
	CHECK(mm_gpa_to_hva(&t.vm.mem, MEM_4G + (64ULL << 20) - 8, 16) == NULL);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_high_start, g_high_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(t.nlog, 2);
	CHECK_EQ(t.log[0], 0x8badf00d);
	CHECK_EQ(t.log[1], 0xcafef00d);
	hi = mm_gpa_to_hva(&t.vm.mem, MEM_4G + 0x1000, 8);
	CHECK_EQ(*hi, 0x1122334455667788ULL);
	tvm_destroy(&t);
}

/* Two vCPUs: each reports its id and bumps a shared counter; vCPU 0 waits for both. */
GUEST_CODE(g_smp,
	"lea 9f(%rip), %rbx\n"
	"mov %edi, %eax\n add $0x100, %eax\n out %eax, $0xe0\n"
	"lock incl (%rbx)\n"
	"test %edi, %edi\n jnz 2f\n"
	"1: pause\n cmpl $2, (%rbx)\n jne 1b\n xor %eax, %eax\n out %eax, $0xe4\n"
	"2: hlt\n jmp 2b\n"
	".balign 64\n 9: .long 0\n");

static void test_two_vcpus(void)
{
	struct tvm t;
	int seen0 = 0, seen1 = 0;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 2), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_smp_start, g_smp_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_start_cpu(&t, 1, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(t.nlog, 2);
	for (int i = 0; i < 2; i++) {
		seen0 |= t.log[i] == 0x100;
		seen1 |= t.log[i] == 0x101;
	}
	CHECK(seen0 && seen1);
	CHECK(t.vm.vcpus[0]->exits[VCPU_EXIT_IO] >= 2);
	CHECK(t.vm.vcpus[1]->exits[VCPU_EXIT_IO] >= 1);
	tvm_destroy(&t);
}

/* ACPI S5 through PM1a_CNT, and the 0xcf9 reset register: how a Linux guest ends a run. */
GUEST_CODE(g_s5,
	"mov $0x604, %dx\n in (%dx), %ax\n movzwl %ax, %eax\n out %eax, $0xe0\n"
	"mov $0x604, %dx\n mov $0x3401, %ax\n out %ax, (%dx)\n"	/* SLP_TYP 5, SLP_EN */
	"1: hlt\n jmp 1b\n");
GUEST_CODE(g_reset,
	"mov $0xcf9, %dx\n mov $0x06, %al\n out %al, (%dx)\n 1: hlt\n jmp 1b\n");

static void test_acpi_poweroff_and_reset(void)
{
	struct tvm t;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_s5_start, g_s5_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), KUMO_EXIT_POWEROFF);
	CHECK_EQ(t.vm.stop, VM_STOP_POWEROFF);
	CHECK_EQ(t.nlog, 1);
	CHECK_EQ(t.log[0] & 1, 1);	/* SCI_EN: the guest finds ACPI enabled */
	tvm_destroy(&t);

	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_reset_start, g_reset_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	CHECK_EQ(tvm_run(&t), KUMO_EXIT_REBOOT);
	CHECK_EQ(t.vm.stop, VM_STOP_RESET);
	tvm_destroy(&t);
}

/* Pause parks every vCPU outside KVM_RUN: guest memory stops changing until resume. */
GUEST_CODE(g_spin,
	"mov $0xc0000081, %ecx\n xor %eax, %eax\n mov $0x00180000, %edx\n wrmsr\n"
	"lea 1f(%rip), %rcx\n mov $0x3002, %r11\n sysretq\n"
	"1: mov $0x200000, %rbx\n 2: incq (%rbx)\n cmpq $0, 8(%rbx)\n je 2b\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");

static void *run_thread(void *arg)
{
	struct tvm *t = arg;

	t->exit_value = tvm_run(t);
	return NULL;
}

static void test_pause_resume(void)
{
	volatile uint64_t *counter;
	static struct tvm t;
	pthread_t th;
	uint64_t a, b, c;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 2), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_spin_start, g_spin_end), 0);
	CHECK_EQ(tvm_start_user(&t, TVM_CODE_GPA), 0);
	counter = mm_gpa_to_hva(&t.vm.mem, 0x200000, 16);
	CHECK(counter);
	pthread_create(&th, NULL, run_thread, &t);
	while (counter[0] == 0)
		usleep(1000);
	CHECK_EQ(vm_pause(&t.vm), 0);
	CHECK(vm_is_paused(&t.vm));
	a = counter[0];
	usleep(50000);
	b = counter[0];
	CHECK_EQ(a, b);			/* nothing ran while paused */
	CHECK_EQ(vm_resume(&t.vm), 0);
	while (counter[0] == b)
		usleep(1000);
	c = counter[0];
	CHECK(c > b);
	CHECK(!vm_is_paused(&t.vm));
	counter[1] = 1;			/* let the guest finish */
	pthread_join(th, NULL);
	CHECK_EQ(t.exit_value, 0);
	tvm_destroy(&t);
}

TEST_MAIN(TEST(test_pause_resume), TEST(test_acpi_poweroff_and_reset), TEST(test_pio_exits), TEST(test_mmio_exits), TEST(test_serial_output),
	  TEST(test_int3_reaches_handler), TEST(test_completed_instructions),
	  TEST(test_sysret_to_user_mode), TEST(test_memory_above_4g), TEST(test_two_vcpus))
