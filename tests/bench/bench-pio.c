/*
 * PIO exit round trip: the same guest loop (user mode, IOPL 3, `out` to a port N times) run
 * (a) by a bare KVM_RUN loop written here with raw ioctls, the floor, and (b) by kumo's vCPU
 * loop and bus dispatch. Prints one line per run: "raw NS_PER_EXIT" / "kumo NS_PER_EXIT".
 *   bench-pio [iterations] [runs]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "tests/kvm/tvm.h"

GUEST_CODE(g_bench,
	"mov $0xc0000081, %ecx\n xor %eax, %eax\n mov $0x00180000, %edx\n wrmsr\n"
	"lea 1f(%rip), %rcx\n mov $0x3002, %r11\n sysretq\n"
	"1: mov %r12d, %ecx\n"	/* iterations */
	"2: out %eax, $0xe0\n dec %ecx\n jnz 2b\n"
	"xor %eax, %eax\n out %eax, $0xe4\n");

static uint64_t ns(void)
{
	return vm_now_ns();
}

static int prepare(struct tvm *t, struct vcpu *v, uint64_t iters)
{
	struct kvm_regs regs;

	if (tvm_load(t, TVM_CODE_GPA, g_bench_start, g_bench_end) ||
	    tvm_start_user(t, TVM_CODE_GPA) || vcpu_get_regs(v, &regs))
		return -1;
	regs.r12 = iters;
	return vcpu_set_regs(v, &regs) ? -1 : 0;
}

/* The floor: KVM_RUN and a switch on the port, nothing else. */
static double run_raw(uint64_t iters)
{
	struct tvm t;
	struct vcpu *v;
	uint64_t n = 0, t0, t1;

	if (tvm_create(&t, 64ULL << 20, 1))
		return -1;
	v = t.vm.vcpus[0];
	if (prepare(&t, v, iters))
		return -1;
	t0 = ns();
	for (;;) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0)
			return -1;
		if (v->run->exit_reason != KVM_EXIT_IO)
			continue;
		if (v->run->io.port == 0xe0)
			n++;
		else if (v->run->io.port == 0xe4)
			break;
	}
	t1 = ns();
	tvm_destroy(&t);
	return n == iters ? (double)(t1 - t0) / (double)iters : -1;
}

/* kumo: its vCPU thread, exit dispatcher and PIO bus. */
static double run_kumo(uint64_t iters)
{
	struct tvm t;
	uint64_t t0, t1;
	int n;

	if (tvm_create(&t, 64ULL << 20, 1) || prepare(&t, t.vm.vcpus[0], iters))
		return -1;
	t0 = ns();
	tvm_run(&t);
	t1 = ns();
	n = t.nlog;
	tvm_destroy(&t);
	return (uint64_t)n == (iters < TVM_MAX_LOG ? iters : TVM_MAX_LOG) ?
		       (double)(t1 - t0) / (double)iters : -1;
}

int main(int argc, char **argv)
{
	uint64_t iters = argc > 1 ? strtoull(argv[1], NULL, 0) : 100000;
	int runs = argc > 2 ? atoi(argv[2]) : 5;

	if (!kvm_available()) {
		fprintf(stderr, "bench-pio: no /dev/kvm\n");
		return 1;
	}
	for (int i = 0; i < runs; i++) {
		double raw = run_raw(iters), kumo = run_kumo(iters);

		if (raw < 0 || kumo < 0) {
			fprintf(stderr, "bench-pio: a run failed\n");
			return 1;
		}
		printf("raw %.0f\nkumo %.0f\n", raw, kumo);
	}
	return 0;
}
