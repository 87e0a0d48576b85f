/*
 * One virtual machine: KVM VM, guest memory, buses, fixed devices, vCPUs, and how it stops.
 * Built by vmm/vm.c, run by vmm/vm-run.c, loaded with Linux by vmm/linux-loader.c.
 */
#ifndef KUMO_VM_H
#define KUMO_VM_H

#include <pthread.h>
#include <stdint.h>

#include "devices/acpi-pm.h"
#include "devices/dev.h"
#include "devices/pci.h"
#include "devices/virtio-balloon.h"
#include "devices/virtio-blk.h"
#include "devices/virtio-net.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "mm/mem.h"
#include "vmm/boot.h"
#include "vmm/bus.h"
#include "vmm/cpuid.h"
#include "vmm/numa.h"
#include "vmm/devenv.h"
#include "vmm/kvm.h"

struct vcpu;
struct kvm_cpuid2;
struct virtio_dev;
struct virtio_pci;
struct control_server;
struct agent_relay;
struct mig_lazy;
struct vm_migration;

#define VM_MAX_DISKS 8
#define VM_MAX_NETS 4
#define VM_MAX_DEVS (VM_MAX_DISKS + VM_MAX_NETS + 8)

struct disk_config {
	char *path;
	struct blk_options opts;
};

/* Exit statuses of `kumo run` (documented in docs/usage.md). */
enum {
	KUMO_EXIT_POWEROFF = 0,	/* guest powered off (ACPI S5) or the user quit */
	KUMO_EXIT_ERROR = 1,	/* internal or KVM error while running */
	KUMO_EXIT_USAGE = 2,	/* bad command line or input files */
	KUMO_EXIT_REBOOT = 3,	/* guest reset (reboot, or a panic with panic=-1) */
	KUMO_EXIT_EMULATION = 4, /* an instruction KVM could not emulate and kumo cannot complete */
};

enum vm_stop_reason {
	VM_RUNNING = 0,
	VM_STOP_POWEROFF,
	VM_STOP_RESET,
	VM_STOP_USER,
	VM_STOP_ERROR,
	VM_STOP_EMULATION,
};

struct vm_config {
	uint64_t mem_size;
	unsigned int ncpus;
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	const char *restore;		/* --restore DIR: a saved VM instead of a kernel */
	int restore_lazy;		/* --restore-lazy: its memory through userfaultfd */
	const char *incoming;		/* --incoming ADDR: a live migration instead */
	int pvm_quirks;		/* apply the PVM handling when PVM is detected (default on) */
	int restart_on_reboot;	/* --on-reboot=restart */
	int console_out_fd;	/* where the serial console goes (stdout) */
	struct disk_config disks[VM_MAX_DISKS];
	unsigned int ndisks;
	struct net_options nets[VM_MAX_NETS];	/* --net, in order */
	unsigned int nnets;
	const char *agent_socket;	/* virtio-console port org.kumo.agent */
	const char *console_socket;	/* virtio-console port 0 (hvc0) */
	const char *control;		/* control socket path */
	int agent_relay;		/* --agent: kumo relays the agent port over the control
					   socket (agent_socket defaults to CONTROL.agent) */
	char agent_socket_buf[108];
	int balloon;			/* --balloon given */
	struct balloon_options balloon_opts;
	struct numa_config numa;	/* --numa, --numa-distance (nnodes 0: none) */
	int hugepages;			/* --hugepages: guest RAM on 2 MiB huge pages */
	int guest_decompress;		/* --decompress guest: the bzImage decompresses itself */
	int pin_numa;			/* --cpu-pin numa: each vCPU to its node's host CPUs */
	uint16_t pin_cpu[NUMA_MAX_VCPUS];	/* --cpu-pin V=P: P + 1 for vCPU V; 0 = not pinned */
	struct cpuid_pv pv;		/* --pv: KVM PV features turned off */
	int halt_poll_set;		/* --pv halt-poll-ns=N given (else KVM's default) */
	uint64_t halt_poll_ns;
};

/* A virtio device and its PCI function. */
struct vm_virtio {
	struct virtio_dev *vdev;
	struct virtio_pci *pci;
	void (*destroy)(struct virtio_dev *vdev);
};

struct vm {
	struct vm_config cfg;
	struct kvm kvm;
	struct guest_mem mem;
	struct bus pio, mmio;
	struct serial com1;
	struct acpi_pm pm;
	struct rtc rtc;
	struct pci_host pci;
	struct dev_env env;		/* what devices get from us */
	struct vm_virtio virtio[VM_MAX_DISKS + VM_MAX_NETS + 2];
	struct virtio_dev *balloon;	/* also in virtio[] when present */
	struct control_server *ctl;
	struct agent_relay *relay;	/* --agent: the guest agent through the control socket */
	unsigned int nvirtio;
	/* Every device with guest-visible state, in the order its state is loaded (legacy,
	 * the PCI host, then the virtio functions by slot): devices/dev.h's contract. */
	struct dev devs[VM_MAX_DEVS];
	unsigned int ndevs;
	struct mig_lazy *lazy;		/* --restore-lazy: memory still arriving, else NULL */
	int lazy_fd;			/* the memory file it serves from (ours to close) */
	pthread_t lazy_watcher;		/* stops the VM if the memory cannot be served */
	int lazy_watching;
	void (*lazy_done)(struct vm *vm, int ok);	/* all memory arrived (ok) or lost */
	void *lazy_done_arg;
	struct vm_migration *mig;	/* live migration state (vmm/migration.c), or NULL */
	struct kvm_cpuid2 *cpuid;	/* KVM's supported CPUID, patched per vCPU */
	struct vcpu **vcpus;
	unsigned int ncpus;
	int pvm;			/* PVM detected and its handling enabled */
	uint64_t start_ns;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vm_stop_reason stop;	/* first reason wins */
	int stop_status;		/* exit status that goes with it */
	int pause_req;			/* vCPUs park until it is cleared */
	unsigned int nparked;		/* vCPU threads parked right now */
	unsigned int nstarted;		/* vCPU threads running (or parked) */
};

/* ---- vmm/vm.c: the machine from its config ---- */

/* Create the VM: KVM, memory, buses, fixed devices, vCPUs (not yet running). 0 or -errno. */
int vm_create(struct vm *vm, const struct vm_config *cfg) __attribute__((warn_unused_result));
void vm_destroy(struct vm *vm);

/* The guest RAM the config asks for, node by node, into spec[MM_MAX_NODES]; returns the
 * number of nodes. */
int vm_ram_spec(const struct vm_config *cfg, struct mm_node_spec *spec);

/* PVM handling: on a PVM host unless --no-pvm-quirks. */
int vm_pvm_on(const struct vm_config *cfg);

/* CPUID 0x40000001 EAX as the guest sees it: KVM's PV features less those turned off. */
uint32_t vm_pv_features(struct vm *vm);

/* Where vCPU id sits in the virtual topology (package = NUMA node). */
void vm_cpu_topo(const struct vm *vm, unsigned int id, struct cpu_topo *t);

/* ---- vmm/linux-loader.c: Linux for a fresh boot (a restore does not use it) ---- */

/* What the guest boots, read and checked before any KVM object exists; kept for restarts. */
struct vm_boot {
	uint8_t *kernel_file;	/* --kernel's bytes (a vmlinux's ELF is in them) */
	size_t kernel_len;
	struct boot_image kernel;
	uint8_t *initrd;	/* --initrd's bytes, NULL without one */
	size_t initrd_len;
	char *cmdline;		/* the kernel command line, kumo's additions included */
};

/*
 * Read --kernel and --initrd, parse the kernel, build the command line, and check that they
 * fit the guest RAM the config lays out and the kernel's limits. No KVM, no guest memory.
 * Returns 0, or -errno (-ENOMEM: a host problem, else bad input) with a one-line reason in err.
 */
int vm_boot_load(struct vm_boot *b, const struct vm_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void vm_boot_free(struct vm_boot *b);

/* Put kernel, initrd and command line in guest RAM, build ACPI and boot structures, set the
 * boot vCPU's registers. */
int vm_load_linux(struct vm *vm, const struct vm_boot *b) __attribute__((warn_unused_result));

/* The guest-physical address the boot vCPU starts at and what it finds in RSI. */
int vm_setup_boot_cpu(struct vm *vm, uint64_t entry, uint64_t rsi)
	__attribute__((warn_unused_result));

/* ---- vmm/vm-run.c: running it ---- */

/* Start all vCPU threads. */
int vm_start(struct vm *vm) __attribute__((warn_unused_result));

/* Ask the VM to stop; safe from any thread (not from signal handlers). */
void vm_request_stop(struct vm *vm, enum vm_stop_reason why, int status);

/* Wait until a stop is requested, then join the vCPU threads. Returns the exit status. */
int vm_wait(struct vm *vm);

uint64_t vm_now_ns(void);

/* Stop every vCPU outside KVM_RUN and wait until they are parked; resume lets them go on.
 * Both return 0, or -ESHUTDOWN when the VM is stopping. */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
int vm_is_paused(struct vm *vm);

/* Pin vCPU id's thread to the host CPUs in set (a cpu_set_t of setsize bytes). 0 or -errno. */
int vm_pin_vcpu(struct vm *vm, unsigned int id, const void *set, size_t setsize);

/* Called by a vCPU thread between runs: parks it while a pause is requested. */
void vm_vcpu_park_point(struct vm *vm, struct vcpu *vcpu);

#endif
