/* Unit tests without KVM: the I/O bus, the exit dispatcher, option parsing, CPUID, the UART. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "devices/acpi-pm.h"
#include "devices/serial.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "vmm/bus.h"
#include "vmm/config.h"
#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

struct rec {
	uint64_t off;
	uint32_t len, val;
	int writes, reads;
};

static void rec_read(void *o, uint64_t off, void *data, uint32_t len)
{
	struct rec *r = o;

	r->reads++;
	r->off = off;
	memset(data, 0x5a, len);
}

static void rec_write(void *o, uint64_t off, const void *data, uint32_t len)
{
	struct rec *r = o;

	r->writes++;
	r->off = off;
	r->len = len;
	r->val = 0;
	memcpy(&r->val, data, len > 4 ? 4 : len);
}

static const struct io_ops rec_ops = { .read = rec_read, .write = rec_write };

static void test_bus_overlaps(void)
{
	struct bus b;
	struct rec r = { 0 };

	bus_init(&b, "t");
	CHECK_EQ(bus_register(&b, 0x100, 0x10, &rec_ops, &r, "a"), 0);
	CHECK_EQ(bus_register(&b, 0x200, 0x10, &rec_ops, &r, "b"), 0);
	CHECK_EQ(bus_register(&b, 0x10f, 1, &rec_ops, &r, "x"), -EEXIST);
	CHECK_EQ(bus_register(&b, 0xf8, 0x10, &rec_ops, &r, "x"), -EEXIST);
	CHECK_EQ(bus_register(&b, 0x0, 0x1000, &rec_ops, &r, "x"), -EEXIST);
	CHECK_EQ(bus_register(&b, 0x1f8, 8, &rec_ops, &r, "c"), 0);	/* touching is fine */
	CHECK_EQ(bus_register(&b, 0x110, 0xe8, &rec_ops, &r, "d"), 0);
	CHECK_EQ(bus_register(&b, 0x50, 0, &rec_ops, &r, "x"), -EINVAL);
	CHECK_EQ(bus_register(&b, UINT64_MAX - 4, 16, &rec_ops, &r, "x"), -EINVAL);
	CHECK_EQ(b.nr, 4);
	for (int i = 1; i < b.nr; i++)
		CHECK(b.ranges[i - 1].base + b.ranges[i - 1].len <= b.ranges[i].base);
	CHECK_EQ(bus_unregister(&b, 0x110), 0);
	CHECK_EQ(bus_unregister(&b, 0x110), -ENOENT);
	CHECK_EQ(bus_register(&b, 0x120, 0x10, &rec_ops, &r, "e"), 0);
	bus_destroy(&b);
}

static void test_bus_dispatch(void)
{
	struct bus b;
	struct rec r = { 0 };
	uint32_t v = 0xabcd;

	bus_init(&b, "t");
	CHECK_EQ(bus_register(&b, 0x3f8, 8, &rec_ops, &r, "a"), 0);
	CHECK_EQ(bus_access(&b, 0x3fa, &v, 2, 1), 0);
	CHECK_EQ(r.writes, 1);
	CHECK_EQ(r.off, 2);
	CHECK_EQ(r.len, 2);
	CHECK_EQ(r.val, 0xabcd);
	CHECK_EQ(bus_access(&b, 0x3ff, &v, 1, 0), 0);
	CHECK_EQ(r.off, 7);
	CHECK_EQ(v & 0xff, 0x5a);
	/* Straddling the end, or outside: unhandled, reads as ones, writes dropped. */
	CHECK_EQ(bus_access(&b, 0x3fe, &v, 4, 0), -ENOENT);
	CHECK_EQ(v, 0xffffffff);
	CHECK_EQ(bus_access(&b, 0x400, &v, 1, 1), -ENOENT);
	CHECK_EQ(r.writes, 1);
	CHECK_EQ(b.unhandled, 2);
	bus_destroy(&b);
}

/* vcpu_handle_exit() with a fake kvm_run, as Firecracker tests handle_kvm_exit. */
static void test_exit_dispatch(void)
{
	static uint8_t runbuf[4096] __attribute__((aligned(64)));
	struct kvm_run *run = (struct kvm_run *)runbuf;
	struct rec r = { 0 };
	struct vm vm;
	struct vcpu vcpu = { .vm = &vm };

	memset(&vm, 0, sizeof(vm));
	pthread_mutex_init(&vm.lock, NULL);
	pthread_cond_init(&vm.cond, NULL);
	vm.kvm.run_size = sizeof(runbuf);
	bus_init(&vm.pio, "pio");
	bus_init(&vm.mmio, "mmio");
	CHECK_EQ(bus_register(&vm.pio, 0xe0, 4, &rec_ops, &r, "t"), 0);
	CHECK_EQ(bus_register(&vm.mmio, 0xd0000000, 0x1000, &rec_ops, &r, "m"), 0);

	memset(runbuf, 0, sizeof(runbuf));
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = KVM_EXIT_IO_OUT;
	run->io.port = 0xe0;
	run->io.size = 2;
	run->io.count = 3;
	run->io.data_offset = 1024;
	memcpy(runbuf + 1024, "\x01\x00\x02\x00\x03\x00", 6);
	CHECK_EQ(vcpu_handle_exit(&vcpu, run), VCPU_CONTINUE);
	CHECK_EQ(r.writes, 3);
	CHECK_EQ(r.val, 3);
	CHECK_EQ(vcpu.exits[VCPU_EXIT_IO], 1);

	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = 0xd0000010;
	run->mmio.len = 4;
	run->mmio.is_write = 1;
	memcpy(run->mmio.data, "\x44\x33\x22\x11", 4);
	CHECK_EQ(vcpu_handle_exit(&vcpu, run), VCPU_CONTINUE);
	CHECK_EQ(r.off, 0x10);
	CHECK_EQ(r.val, 0x11223344);
	run->mmio.len = 200;	/* hostile length: ignored */
	CHECK_EQ(vcpu_handle_exit(&vcpu, run), VCPU_CONTINUE);
	CHECK_EQ(r.writes, 4);

	/* An I/O exit whose data would run past the kvm_run page stops the VM, no overread. */
	run->exit_reason = KVM_EXIT_IO;
	run->io.data_offset = 4000;
	run->io.count = 100;
	CHECK_EQ(vcpu_handle_exit(&vcpu, run), VCPU_STOP);
	CHECK_EQ(vm.stop, VM_STOP_ERROR);
	CHECK_EQ(r.writes, 4);

	vm.stop = VM_RUNNING;
	run->exit_reason = KVM_EXIT_SHUTDOWN;
	CHECK_EQ(vcpu_handle_exit(&vcpu, run), VCPU_STOP);
	CHECK_EQ(vm.stop, VM_STOP_RESET);
	CHECK_EQ(vm.stop_status, KUMO_EXIT_REBOOT);
	bus_destroy(&vm.pio);
	bus_destroy(&vm.mmio);
}

static int parse(const char *line, struct vm_config *cfg, char *err)
{
	char buf[512], *argv[32];
	int argc = 0;
	struct run_options o;

	snprintf(buf, sizeof(buf), "run %s", line);
	for (char *tok = strtok(buf, " "); tok && argc < 31; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	argv[argc] = NULL;
	return config_parse_run(argc, argv, cfg, &o, err, 256);
}

static void test_cmdline_parsing(void)
{
	struct vm_config c;
	char err[256];

	CHECK_EQ(parse("--kernel k --mem 6G --cpus 64 --initrd i", &c, err), 0);
	CHECK_EQ(c.mem_size, 6ULL << 30);
	CHECK_EQ(c.ncpus, 64);
	CHECK(!strcmp(c.kernel, "k") && !strcmp(c.initrd, "i"));
	CHECK_EQ(c.pvm_quirks, 1);
	CHECK_EQ(parse("--kernel k", &c, err), 0);
	CHECK_EQ(c.mem_size, 256ULL << 20);
	CHECK_EQ(c.ncpus, 1);
	CHECK_EQ(parse("--kernel=k --mem=256M --no-pvm-quirks --on-reboot=restart", &c, err), 0);
	CHECK_EQ(c.pvm_quirks, 0);
	CHECK_EQ(c.restart_on_reboot, 1);
	CHECK_EQ(parse("--mem 256M", &c, err), -EINVAL);
	CHECK(strstr(err, "--kernel"));
	CHECK_EQ(parse("--kernel k --mem lots", &c, err), -EINVAL);
	CHECK(strstr(err, "--mem lots"));
	CHECK_EQ(parse("--kernel k --mem 1K", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k --mem 100000000000000T", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k --mem -1G", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k --cpus 0", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k --cpus 2x", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k --cpus 100000", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k --bogus", &c, err), -EINVAL);
	CHECK(strstr(err, "--bogus"));
	CHECK_EQ(parse("--kernel k --on-reboot=maybe", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel k stray", &c, err), -EINVAL);
	CHECK_EQ(parse("--kernel", &c, err), -EINVAL);
	CHECK_EQ(parse("--help", &c, err), 1);
}

static void test_size_parsing(void)
{
	uint64_t v;

	CHECK_EQ(mm_parse_size("256M", &v), 0);
	CHECK_EQ(v, 256ULL << 20);
	CHECK_EQ(mm_parse_size("3G", &v), 0);
	CHECK_EQ(v, 3ULL << 30);
	CHECK_EQ(mm_parse_size("4096K", &v), 0);
	CHECK_EQ(v, 4ULL << 20);
	CHECK_EQ(mm_parse_size("1GiB", &v), 0);
	CHECK_EQ(v, 1ULL << 30);
	CHECK_EQ(mm_parse_size("1048576", &v), 0);
	CHECK_EQ(v, 1048576);
	CHECK_EQ(mm_parse_size("", &v), -EINVAL);
	CHECK_EQ(mm_parse_size("G", &v), -EINVAL);
	CHECK_EQ(mm_parse_size("1Q", &v), -EINVAL);
	CHECK_EQ(mm_parse_size("18446744073709551615G", &v), -EINVAL);
}

static void test_guest_memory_layout(void)
{
	struct guest_mem m;
	uint8_t *p;

	CHECK_EQ(mm_init(&m, 256ULL << 20), 0);
	CHECK_EQ(mm_nr_regions(&m), 1);
	CHECK(mm_gpa_to_hva(&m, 0, 256ULL << 20) != NULL);
	CHECK(mm_gpa_to_hva(&m, 1, 256ULL << 20) == NULL);
	CHECK(mm_gpa_to_hva(&m, (256ULL << 20) - 1, 1) != NULL);
	CHECK(mm_gpa_to_hva(&m, 256ULL << 20, 1) == NULL);
	CHECK(mm_gpa_to_hva(&m, UINT64_MAX, 2) == NULL);
	CHECK(mm_gpa_to_hva(&m, 4096, UINT64_MAX) == NULL);
	p = mm_gpa_to_hva(&m, 0x1000, 4);
	memcpy(p, "kumo", 4);
	CHECK_EQ(mm_read(&m, 0x1000, &p, 0), 0);
	CHECK_EQ(mm_write(&m, (256ULL << 20) - 2, "abc", 3), -EFAULT);
	mm_free(&m);

	CHECK_EQ(mm_init(&m, 6ULL << 30), 0);
	CHECK_EQ(mm_nr_regions(&m), 2);
	CHECK_EQ(mm_region(&m, 0)->size, MEM_32BIT_HOLE_START);
	CHECK_EQ(mm_region(&m, 1)->gpa, MEM_4G);
	CHECK_EQ(mm_region(&m, 1)->size, (6ULL << 30) - MEM_32BIT_HOLE_START);
	CHECK(mm_gpa_to_hva(&m, MEM_32BIT_HOLE_START, 1) == NULL);	/* the hole */
	CHECK(mm_gpa_to_hva(&m, MEM_32BIT_HOLE_START - 4, 8) == NULL);	/* straddles it */
	CHECK(mm_gpa_to_hva(&m, MEM_4G, 8) != NULL);
	mm_free(&m);
	CHECK_EQ(mm_init(&m, 1ULL << 20), -EINVAL);
}

static void test_cpuid_topology(void)
{
	struct kvm_cpuid2 *tmpl = calloc(1, sizeof(*tmpl) + 8 * sizeof(tmpl->entries[0]));
	struct kvm_cpuid2 *c;
	struct kvm_cpuid_entry2 *e;

	tmpl->nent = 3;
	tmpl->entries[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 0xd };
	tmpl->entries[1] = (struct kvm_cpuid_entry2){ .function = 1, .ebx = 0x12340800,
						      .ecx = 1u << 13 };
	tmpl->entries[2] = (struct kvm_cpuid_entry2){ .function = 0x80000008, .ecx = 0xffff };
	struct cpu_topo t = { .ncpus = 8, .pkg_cpus = 8, .pkg_shift = 3, .core = 5 };

	c = cpuid_for_vcpu(tmpl, &t, NULL, 1);
	CHECK(c);
	e = cpuid_find(c, 1, 0);
	CHECK_EQ(e->ebx >> 24, 5);
	CHECK_EQ((e->ebx >> 16) & 0xff, 8);
	CHECK_EQ(e->ebx & 0xffff, 0x0800);
	CHECK(e->ecx & (1u << 31));
	CHECK_EQ(e->ecx & (1u << 13), 0);	/* CX16 cleared on PVM */
	CHECK(e->edx & (1u << 28));
	e = cpuid_find(c, 0xb, 1);
	CHECK(e);
	CHECK_EQ(e->eax, 3);
	CHECK_EQ(e->ebx, 8);
	CHECK_EQ(e->edx, 5);
	CHECK_EQ((e->ecx >> 8) & 0xff, 2);
	e = cpuid_find(c, 0xb, 0);
	CHECK_EQ(e->ebx, 1);
	CHECK_EQ(cpuid_find(c, 0x80000008, 0)->ecx & 0xf0ff, 7 | (3 << 12));
	free(c);
	t = (struct cpu_topo){ .ncpus = 300, .pkg_cpus = 300, .pkg_shift = 9, .core = 300 };
	c = cpuid_for_vcpu(tmpl, &t, NULL, 0);
	e = cpuid_find(c, 1, 0);
	CHECK_EQ(e->ebx >> 24, 0xff);		/* x2APIC id does not fit: leaf 0xB has it */
	CHECK(e->ecx & (1u << 13));		/* CX16 kept off PVM */
	CHECK_EQ(cpuid_find(c, 0xb, 0)->edx, 300);
	free(c);
	free(tmpl);
}

static int irq_levels[8], nirq;

static int fake_irq(void *opaque, uint32_t gsi, int level)
{
	if (nirq < 8)
		irq_levels[nirq++] = level;
	return 0;
}

static void uart_out(struct serial *s, int reg, uint8_t v)
{
	serial_ops.write(s, (uint64_t)reg, &v, 1);
}

static uint8_t uart_in(struct serial *s, int reg)
{
	uint8_t v;

	serial_ops.read(s, (uint64_t)reg, &v, 1);
	return v;
}

static void test_uart(void)
{
	struct irq_line irq = { fake_irq, NULL, 4 };
	struct serial s;
	int p[2];
	char buf[16] = { 0 };

	CHECK_EQ(pipe(p), 0);
	serial_init(&s, &irq, p[1]);
	/* What Linux's 8250 autoconfig checks: scratch, IER, loopback MSR. */
	uart_out(&s, 7, 0xa5);
	CHECK_EQ(uart_in(&s, 7), 0xa5);
	uart_out(&s, 1, 0x0f);
	CHECK_EQ(uart_in(&s, 1), 0x0f);
	uart_out(&s, 1, 0);
	uart_out(&s, 4, 0x10 | 0x0a);
	CHECK_EQ(uart_in(&s, 6) & 0xf0, 0x90);
	uart_out(&s, 0, 'L');			/* loopback: comes back as input */
	CHECK_EQ(uart_in(&s, 5) & 1, 1);
	CHECK_EQ(uart_in(&s, 0), 'L');
	uart_out(&s, 4, 0x0b);			/* DTR RTS OUT2, loopback off */
	/* Divisor latch does not transmit. */
	uart_out(&s, 3, 0x80);
	uart_out(&s, 0, 0x01);
	CHECK_EQ(uart_in(&s, 0), 0x01);
	uart_out(&s, 3, 0x03);
	uart_out(&s, 0, 'h');
	uart_out(&s, 0, 'i');
	CHECK_EQ(read(p[0], buf, sizeof(buf)), 2);
	CHECK(!memcmp(buf, "hi", 2));
	CHECK_EQ(s.tx_bytes, 2);
	/* Receive interrupt: raised when data arrives with RDI on, dropped once read. */
	nirq = 0;
	uart_out(&s, 1, 0x01);
	CHECK_EQ(serial_push_input(&s, (const uint8_t *)"ab", 2), 2);
	CHECK_EQ(nirq, 1);
	CHECK_EQ(irq_levels[0], 1);
	CHECK_EQ(uart_in(&s, 2) & 0x0f, 0x04);
	CHECK_EQ(uart_in(&s, 0), 'a');
	CHECK_EQ(uart_in(&s, 0), 'b');
	CHECK_EQ(irq_levels[nirq - 1], 0);
	CHECK_EQ(uart_in(&s, 2) & 0x01, 1);
	/* A full FIFO takes no more. */
	uint8_t lots[100];
	memset(lots, 'x', sizeof(lots));
	CHECK_EQ(serial_push_input(&s, lots, sizeof(lots)), SERIAL_FIFO_SIZE);
	CHECK_EQ(serial_push_input(&s, lots, 1), 0);
	close(p[0]);
	close(p[1]);
}

static int pm_events[4], npm;

static void pm_event(void *opaque, enum pm_event ev)
{
	if (npm < 4)
		pm_events[npm++] = ev;
}

static void test_acpi_pm(void)
{
	struct acpi_pm pm;
	uint16_t v;
	uint8_t b;

	acpi_pm_init(&pm, pm_event, NULL);
	acpi_pm_cnt_ops.read(&pm, 0, &v, 2);
	CHECK_EQ(v & 1, 1);			/* SCI_EN: always in ACPI mode */
	v = (uint16_t)((3 << 10) | 0x2000);	/* S3 is not offered: ignored */
	acpi_pm_cnt_ops.write(&pm, 0, &v, 2);
	CHECK_EQ(npm, 0);
	v = (uint16_t)((ACPI_S5_SLP_TYP << 10) | 0x2000);
	acpi_pm_cnt_ops.write(&pm, 0, &v, 2);
	CHECK_EQ(npm, 1);
	CHECK_EQ(pm_events[0], PM_POWEROFF);
	b = 0x02;				/* 0xcf9 without the reset bit */
	acpi_reset_ops.write(&pm, 0, &b, 1);
	CHECK_EQ(npm, 1);
	b = 0x06;
	acpi_reset_ops.write(&pm, 0, &b, 1);
	CHECK_EQ(pm_events[1], PM_RESET);
	b = 0xfe;
	kbd_reset_ops.write(&pm, 0, &b, 1);
	CHECK_EQ(pm_events[2], PM_RESET);
	/* PM1 status is write-one-to-clear; enable is plain. */
	pm.pm1_sts = 0x0101;
	v = 0x0100;
	acpi_pm_evt_ops.write(&pm, 0, &v, 2);
	CHECK_EQ(pm.pm1_sts, 0x0001);
	v = 0x0120;
	acpi_pm_evt_ops.write(&pm, 2, &v, 2);
	CHECK_EQ(pm.pm1_en, 0x0120);
}

TEST_MAIN(TEST(test_bus_overlaps), TEST(test_bus_dispatch), TEST(test_exit_dispatch),
	  TEST(test_cmdline_parsing), TEST(test_size_parsing), TEST(test_guest_memory_layout),
	  TEST(test_cpuid_topology), TEST(test_uart), TEST(test_acpi_pm))
