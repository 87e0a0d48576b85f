/*
 * Tiny test VMs, selftests style: guest code lives in the test file (assembled into .rodata),
 * is copied into guest RAM and entered in 64-bit mode with kumo's boot GDT and page tables.
 * The guest reports through a test port:
 *   out to TVM_PORT_LOG (4 bytes)   appends a value to tvm->log
 *   in from TVM_PORT_LOG            reads 0xC0FFEE00 + number of values logged so far
 *   out to TVM_PORT_EXIT            stops the VM (status = value written)
 */
#ifndef KUMO_TVM_H
#define KUMO_TVM_H

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mm/mem.h"
#include "vmm/boot.h"
#include "vmm/layout.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define TVM_PORT_LOG 0xe0
#define TVM_PORT_EXIT 0xe4
#define TVM_CODE_GPA 0x100000ULL
#define TVM_STACK_TOP 0x80000ULL
#define TVM_IDT_GPA 0x3000ULL
#define TVM_MAX_LOG 4096

struct tvm {
	struct vm vm;
	int out_pipe[2];
	pthread_mutex_t lock;
	uint32_t log[TVM_MAX_LOG];
	int nlog;
	int exit_value;
};

static void tvm_log_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct tvm *t = opaque;
	uint32_t v = 0;

	memcpy(&v, data, len > 4 ? 4 : len);
	pthread_mutex_lock(&t->lock);
	if (t->nlog < TVM_MAX_LOG)
		t->log[t->nlog++] = v;
	pthread_mutex_unlock(&t->lock);
}

static void tvm_log_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct tvm *t = opaque;
	uint32_t v = 0xC0FFEE00u + (uint32_t)t->nlog;

	memcpy(data, &v, len > 4 ? 4 : len);
}

static void tvm_exit_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct tvm *t = opaque;
	uint32_t v = 0;

	memcpy(&v, data, len > 4 ? 4 : len);
	t->exit_value = (int)v;
	vm_request_stop(&t->vm, VM_STOP_POWEROFF, (int)v);
}

static const struct io_ops tvm_log_ops = { .read = tvm_log_read, .write = tvm_log_write };
static const struct io_ops tvm_exit_ops = { .write = tvm_exit_write };

static inline int tvm_create(struct tvm *t, uint64_t mem, unsigned int ncpus)
{
	struct vm_config cfg = { .mem_size = mem, .ncpus = ncpus, .pvm_quirks = 1 };
	int ret;

	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	if (pipe2(t->out_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	cfg.console_out_fd = t->out_pipe[1];
	ret = vm_create(&t->vm, &cfg);
	if (ret < 0)
		return ret;
	if ((ret = bus_register(&t->vm.pio, TVM_PORT_LOG, 4, &tvm_log_ops, t, "test-log")) ||
	    (ret = bus_register(&t->vm.pio, TVM_PORT_EXIT, 4, &tvm_exit_ops, t, "test-exit")))
		return ret;
	return boot_setup_pagetables(&t->vm.mem);
}

static inline void tvm_destroy(struct tvm *t)
{
	vm_destroy(&t->vm);
	close(t->out_pipe[0]);
	close(t->out_pipe[1]);
}

static inline int tvm_load(struct tvm *t, uint64_t gpa, const void *start, const void *end)
{
	return mm_write(&t->vm.mem, gpa, start, (uint64_t)((const uint8_t *)end -
							    (const uint8_t *)start));
}

/* Point vCPU id at entry in 64-bit mode with its own stack; APs are made runnable directly. */
static inline int tvm_start_cpu(struct tvm *t, unsigned int id, uint64_t entry)
{
	struct vcpu *v = t->vm.vcpus[id];
	struct kvm_regs regs;
	int ret = vcpu_setup_long_mode(v, entry, 0);

	if (ret)
		return ret;
	if ((ret = vcpu_get_regs(v, &regs)))
		return ret;
	regs.rsp = TVM_STACK_TOP - id * 0x4000;
	regs.rdi = id;
	if ((ret = vcpu_set_regs(v, &regs)))
		return ret;
	return id ? vcpu_set_runnable(v) : 0;
}

/* Give user mode access to the identity map (U bit at every level of kumo's boot tables). */
static inline void tvm_allow_user(struct tvm *t)
{
	uint64_t *pml4 = mm_gpa_to_hva(&t->vm.mem, BOOT_PML4_GPA, 4096);
	uint64_t *pdpt = mm_gpa_to_hva(&t->vm.mem, BOOT_PDPT_GPA, 4096);
	uint64_t *pd = mm_gpa_to_hva(&t->vm.mem, BOOT_PD_GPA, 4 * 4096);

	pml4[0] |= 4;
	for (int i = 0; i < 4; i++)
		pdpt[i] |= 4;
	for (int i = 0; i < 4 * 512; i++)
		pd[i] |= 4;
}

/*
 * Start vCPU 0 at entry (code already loaded) able to drop to user mode with sysretq: the
 * identity map gets the U bit, the GDT gains user data (0x20) and user code (0x28) so that
 * STAR base 0x18 fits sysret, and EFER.SCE is set. The guest sets STAR itself.
 */
static inline int tvm_start_user(struct tvm *t, uint64_t entry)
{
	static const uint64_t gdt[6] = { 0, 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL,
					 0x00cff3000000ffffULL, 0x00affb000000ffffULL };
	struct kvm_sregs sregs;
	int ret;

	tvm_allow_user(t);
	if ((ret = mm_write(&t->vm.mem, BOOT_GDT_GPA, gdt, sizeof(gdt))) ||
	    (ret = tvm_start_cpu(t, 0, entry)) ||
	    (ret = vcpu_get_sregs(t->vm.vcpus[0], &sregs)))
		return ret;
	sregs.gdt.limit = sizeof(gdt) - 1;
	sregs.efer |= 1;	/* SCE: syscall/sysret enabled */
	return vcpu_set_sregs(t->vm.vcpus[0], &sregs);
}

/* Install a 64-bit interrupt gate for vector at handler, in an IDT at TVM_IDT_GPA. */
static inline int tvm_set_idt_gate(struct tvm *t, unsigned int vector, uint64_t handler)
{
	uint8_t *g = mm_gpa_to_hva(&t->vm.mem, TVM_IDT_GPA + vector * 16, 16);
	struct kvm_sregs sregs;
	int ret;

	memset(g, 0, 16);
	g[0] = handler & 0xff; g[1] = (handler >> 8) & 0xff;
	g[2] = 0x10; g[3] = 0;			/* __BOOT_CS */
	g[5] = 0x8e;				/* present, DPL 0, 64-bit interrupt gate */
	g[6] = (handler >> 16) & 0xff; g[7] = (handler >> 24) & 0xff;
	g[8] = (handler >> 32) & 0xff; g[9] = (handler >> 40) & 0xff;
	g[10] = (handler >> 48) & 0xff; g[11] = (handler >> 56) & 0xff;
	if ((ret = vcpu_get_sregs(t->vm.vcpus[0], &sregs)))
		return ret;
	sregs.idt.base = TVM_IDT_GPA;
	sregs.idt.limit = 256 * 16 - 1;
	return vcpu_set_sregs(t->vm.vcpus[0], &sregs);
}

static void *tvm_watchdog(void *arg)
{
	struct tvm *t = arg;
	int waited_ms = 0;

	/* Generous: guest CPL0 code may run in KVM's emulator (PVM). Never asserted on. */
	while (!__atomic_load_n(&t->vm.stop, __ATOMIC_ACQUIRE) && waited_ms < 60000) {
		usleep(10000);
		waited_ms += 10;
	}
	if (!__atomic_load_n(&t->vm.stop, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "  test VM did not stop within 60 s\n");
		vm_request_stop(&t->vm, VM_STOP_ERROR, -1);
	}
	return NULL;
}

/* Run until the guest writes TVM_PORT_EXIT (or fails). Returns the VM's exit status. */
static inline int tvm_run(struct tvm *t)
{
	pthread_t wd;
	int status;

	if (vm_start(&t->vm))
		return -1;
	pthread_create(&wd, NULL, tvm_watchdog, t);
	status = vm_wait(&t->vm);
	pthread_join(wd, NULL);
	return status;
}

static inline size_t tvm_console(struct tvm *t, char *buf, size_t size)
{
	ssize_t n = read(t->out_pipe[0], buf, size - 1);

	buf[n > 0 ? n : 0] = 0;
	return n > 0 ? (size_t)n : 0;
}

static inline int kvm_available(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

#define GUEST_CODE(name, body)                                                       \
	extern const uint8_t name##_start[], name##_end[];                           \
	__asm__(".pushsection .rodata\n" #name "_start:\n" body "\n" #name "_end:\n" \
		".popsection\n")

#define GUEST_LABEL_OFF(name, label) ((uint64_t)(label - name##_start))

#endif
