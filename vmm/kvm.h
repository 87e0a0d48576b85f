/*
 * The KVM system and VM file descriptors. Only this module and the vCPU loop (vmm/vcpu.c)
 * issue ioctls on KVM fds; devices get an irq handle (vmm/irq.h) and guest memory (mm/).
 */
#ifndef KUMO_KVM_H
#define KUMO_KVM_H

#include <pthread.h>
#include <stdint.h>

struct guest_mem;
struct kvm_irq_routing;
struct kvm_vcpu_state;
struct kvm_vm_state;

struct kvm {
	int sys_fd;
	int vm_fd;
	int run_size;		/* mmap size of struct kvm_run */
	int max_vcpus;
	int nr_slots;
	int ram_slot0;		/* slot of guest RAM region 0; region i is slot ram_slot0 + i */
	int dirty_manual;	/* 1: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled; -1: not wanted */
	int emul_failure_exits;	/* KVM_CAP_EXIT_ON_EMULATION_FAILURE enabled */
	int x2apic_api;		/* KVM_CAP_X2APIC_API enabled (32-bit APIC ids) */
	/* GSI routing: KVM_SET_GSI_ROUTING replaces the whole table, so we keep all of it. */
	pthread_mutex_t routes_lock;
	struct kvm_irq_routing *routes;
	uint32_t next_gsi;
};

/* ioctl(), logging "NAME: strerror" on failure; returns the result or -errno. */
long __kvm_ioctl(int fd, unsigned long req, void *arg, const char *name);
#define kvm_ioctl(fd, req, arg) __kvm_ioctl(fd, req, (void *)(arg), #req)

/* Open /dev/kvm, check the capabilities kumo needs (naming any that is missing), create the VM,
 * its in-kernel irqchip and PIT. Returns 0 or -errno (already reported). */
int kvm_init(struct kvm *kvm, unsigned int ncpus) __attribute__((warn_unused_result));
void kvm_exit(struct kvm *kvm);

/* Register every region of m as a KVM memory slot. */
int kvm_map_memory(struct kvm *kvm, const struct guest_mem *m) __attribute__((warn_unused_result));

/*
 * Dirty logging on every RAM slot (KVM_MEM_LOG_DIRTY_PAGES), into m's dirty map (mm/dirty.h),
 * all pages clean at the start. With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (enabled when KVM has
 * it, unless dirty_manual is -1) pages stay writable after KVM_GET_DIRTY_LOG until KVM_CLEAR_DIRTY_LOG re-arms them.
 * kvm_dirty_log_sync() ORs what KVM logged since the last sync into m's map and re-arms those
 * pages (cleared in KVM by the get itself, or by KVM_CLEAR_DIRTY_LOG): read a page after the
 * sync that reported it and no write is lost. vCPUs may run meanwhile. 0 or -errno.
 */
int kvm_dirty_log_start(struct kvm *kvm, struct guest_mem *m) __attribute__((warn_unused_result));
int kvm_dirty_log_sync(struct kvm *kvm, struct guest_mem *m) __attribute__((warn_unused_result));
int kvm_dirty_log_stop(struct kvm *kvm, struct guest_mem *m);

/* Assert (level=1) or deassert an interrupt line of the in-kernel PIC/IOAPIC. */
int kvm_irq_line(struct kvm *kvm, uint32_t gsi, int level);

int kvm_check_extension(struct kvm *kvm, long cap);

/* KVM_CAP_HALT_POLL: how long a halted vCPU polls before it sleeps. 0 or -errno. */
int kvm_set_halt_poll(struct kvm *kvm, uint64_t ns);

/* MSI routing: *gsi == 0 allocates a GSI (>= 24) for (addr, data), else updates it. */
int kvm_msi_route(struct kvm *kvm, uint32_t *gsi, uint64_t addr, uint32_t data);
/* Bind (assign=1) or unbind an eventfd to a GSI. */
int kvm_irqfd(struct kvm *kvm, int fd, uint32_t gsi, int assign);
/* Make a guest MMIO write at addr (len 0 = any) signal fd without an exit. */
int kvm_ioeventfd(struct kvm *kvm, int fd, uint64_t addr, uint32_t len, int assign);

/*
 * The whole state of the vCPU whose fd is given (vmm/kvm-state.h), read or loaded in the order
 * KVM needs. The vCPU must be outside KVM_RUN, and an exit it stopped in completed: save a vCPU
 * with vcpu_save_state(). 0 or -errno; the message names the failing ioctl, the missing
 * capability or the refused MSR.
 */
int kvm_vcpu_state_get(struct kvm *kvm, int vcpu_fd, struct kvm_vcpu_state *s)
	__attribute__((warn_unused_result));
int kvm_vcpu_state_set(struct kvm *kvm, int vcpu_fd, const struct kvm_vcpu_state *s)
	__attribute__((warn_unused_result));

/* The in-kernel PICs, IOAPIC and PIT, and kvmclock. Loaded last, once the vCPUs are, so the
 * clock goes on close to when they run. 0 or -errno. */
int kvm_vm_state_get(struct kvm *kvm, struct kvm_vm_state *s) __attribute__((warn_unused_result));
int kvm_vm_state_set(struct kvm *kvm, const struct kvm_vm_state *s)
	__attribute__((warn_unused_result));

#endif
