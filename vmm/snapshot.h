/* Snapshot a running VM into a directory, and rebuild one from it (docs/snapshot.md). */
#ifndef KUMO_SNAPSHOT_H
#define KUMO_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "migrate/state.h"

struct vm;
struct vm_config;

struct vm_snapshot_info {
	uint64_t state_bytes;	/* state.fdt */
	uint64_t memory_bytes;	/* blocks memory.raw really takes (holes cost none) */
	uint64_t ram_bytes;	/* its apparent size: guest RAM */
	uint64_t paused_ns;	/* vCPUs stopped */
	uint64_t total_ns;
};

/*
 * Pause the vCPUs, quiesce the devices, write DIR/state.fdt and DIR/memory.raw (DIR made if
 * missing), then resume -- or, with stop, ask the VM to stop (kumo run exits 0). On any error
 * the VM runs on as before and no half-written state is left under the final names. 0 or
 * -errno with one line in err.
 */
int vm_snapshot(struct vm *vm, const char *dir, int stop, struct vm_snapshot_info *info,
		char *err, size_t errlen) __attribute__((warn_unused_result));

/* A saved VM read and checked against the config before any KVM object exists. */
struct vm_restore {
	struct mig_state state;
	int mem_fd;
};

/*
 * Read cfg->restore's state, decode and check it, check that the config builds the machine it
 * describes and that the memory file has its RAM size. 0, or -errno with one line in err --
 * or err empty when the state's decoder or the machine check logged that line already. Free
 * with vm_restore_free().
 */
int vm_restore_check(struct vm_restore *r, const struct vm_config *cfg, char *err,
		     size_t errlen) __attribute__((warn_unused_result));
void vm_restore_free(struct vm_restore *r);

/*
 * Load r into vm, just built from the same config and not started: memory (eagerly, or lazily
 * through userfaultfd into vm->lazy), vCPUs, irqchip/PIT/clock, devices, then resume the
 * devices. vm_start() runs it. 0 or -errno (logged).
 */
int vm_restore(struct vm *vm, struct vm_restore *r, int lazy)
	__attribute__((warn_unused_result));

/*
 * The pieces snapshot, restore and live migration share. vm_quiesce_devices: every device,
 * last first (0 or -errno, one line in err); vm_resume_devices: all of them again.
 * vm_state_encode: the state FDT of a paused, quiesced VM. vm_state_load: a decoded state into a
 * VM just built from the same config (vCPUs, irqchip/PIT/clock, devices), devices resumed.
 * vm_lazy_begin: serve guest memory lazily from src (migrate/lazy.h), with a watcher that stops
 * the VM if src fails and calls vm->lazy_done when all has arrived.
 */
int vm_quiesce_devices(struct vm *vm, char *err, size_t errlen);
int vm_resume_devices(struct vm *vm);
int vm_state_encode(struct vm *vm, void **blob, size_t *size, char *err, size_t errlen);
int vm_state_load(struct vm *vm, const struct mig_state *st);
struct mig_page_source;
int vm_lazy_begin(struct vm *vm, const struct mig_page_source *src);

/* After the vCPUs are gone: end a lazy restore's watcher and server, close its file. */
void vm_restore_end(struct vm *vm);

#endif
