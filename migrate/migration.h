/*
 * Live migration, both ends (docs/migration.md): pre-copy rounds driven by the dirty map, a
 * stop-and-copy when the expected downtime is under the target, or a switch to post-copy
 * where the destination runs at once and pulls what it still lacks through userfaultfd
 * (migrate/lazy.h) from the paused source. The VM itself is reached through ops, so this
 * module issues no KVM ioctl and knows no struct vm.
 */
#ifndef KUMO_MIGRATE_MIGRATION_H
#define KUMO_MIGRATE_MIGRATION_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct mig_page_source;
struct mig_progress;

/* What the source needs of its VM. All return 0 or -errno. */
struct mig_source_ops {
	int (*dirty_start)(void *vm);	/* KVM's dirty log + mm/'s map, every page clean */
	int (*dirty_sync)(void *vm);	/* KVM's log since the last sync into mm/'s map */
	void (*dirty_stop)(void *vm);
	int (*stop)(void *vm);		/* pause the vCPUs, quiesce the devices */
	int (*state)(void *vm, void **blob, size_t *size);	/* stopped: the state FDT */
	void (*resume)(void *vm);	/* undo stop: the migration failed before switch-over */
	void (*progress)(void *vm, const struct mig_progress *p);	/* an event (optional) */
};

enum { MIG_POSTCOPY_OFF = 0, MIG_POSTCOPY_AUTO = -1 };

struct mig_params {
	uint64_t downtime_ns;		/* stop-and-copy once the expected downtime is under it */
	uint64_t bandwidth;		/* bytes/s, 0 = as fast as the link goes */
	int postcopy;			/* OFF, AUTO (when rounds stop converging), or after N
					   rounds (N >= 1; 0 rounds = MIG_POSTCOPY_NOW) */
	int postcopy_now;		/* switch before the first round */
	unsigned int max_rounds;	/* then stop-and-copy (or post-copy when allowed) anyway */
	int *cancel;			/* set (atomically) by migrate-cancel */
};

struct mig_progress {
	const char *phase;		/* "round", "stop-and-copy", "postcopy", "done", ... */
	unsigned int round;
	uint64_t pages_sent, zero_pages, bytes_sent;
	uint64_t dirty_pages;		/* dirty at the end of the round */
	uint64_t dirty_rate;		/* pages/s the guest dirtied during the round */
	uint64_t bandwidth;		/* bytes/s achieved in the round */
	uint64_t expected_downtime_ns;
	uint64_t downtime_ns;		/* phase "done": source stop to destination ack */
	uint64_t total_ns;
	uint64_t postcopy_reads;	/* pages the destination pulled after the switch */
};

/*
 * Migrate over fd (connected): hello, rounds, switch-over. Returns 0 once the destination
 * runs the VM and (post-copy) has every page: the caller stops its VM (exit 0). Before the
 * switch-over any failure, a cancel or a refusal resumes the VM through ops->resume and
 * returns -errno with one line in err. After a post-copy switch-over a failure returns
 * -ENOTRECOVERABLE: the destination may have run the guest, the source must not resume it.
 */
int mig_source_run(struct guest_mem *m, uint32_t nr_vcpus, int fd,
		   const struct mig_source_ops *ops, void *vm, const struct mig_params *p,
		   struct mig_progress *result, char *err, size_t errlen);

/* What the destination needs of its VM (built from the same config, not started). */
struct mig_dest_ops {
	/* Load a state FDT (decode, check against the config, vCPUs, VM, devices). */
	int (*load)(void *vm, const void *blob, size_t size);
	/* Post-copy: serve the missing guest memory lazily from src (migrate/lazy.h). */
	int (*lazy)(void *vm, const struct mig_page_source *src);
	/* Start the vCPUs. */
	int (*start)(void *vm);
};

struct mig_remote;

/*
 * Every data extent of every region's memfd (SEEK_DATA/SEEK_HOLE, whole pages): fn(opaque,
 * gpa, len), stopping at its first non-zero return. Holes (never touched, punched by the
 * balloon or free page reporting) are skipped. 0 or fn's return.
 */
int mig_for_each_data(const struct guest_mem *m, int (*fn)(void *, uint64_t, uint64_t),
		      void *opaque);
/* Is the page at p all zeros? */
int mig_page_is_zero(const uint8_t *p);
/* The gpa at offset off in the memory file's order (regions one after another) and the bytes
 * from there to its region's end. 0 or -EINVAL (off beyond RAM). */
int mig_flat_to_gpa(const struct guest_mem *m, uint64_t off, uint64_t *gpa, uint64_t *left);

/*
 * Receive a VM over fd into m. Returns 0 once the VM runs. Pre-copy: all memory is here and
 * *remote is NULL. Post-copy: *remote is the page source the destination's lazy memory pulls
 * from over fd (its requests wait for the switch-over's ack); keep it (and fd) until the memory
 * is complete, then mig_dest_finish(). -errno with one line in err on anything wrong (the VM
 * must not run; the source resumes it) -- and *remote may still be set: stop the lazy memory,
 * then mig_dest_finish(remote, 0).
 */
int mig_dest_run(struct guest_mem *m, uint32_t nr_vcpus, int fd, const struct mig_dest_ops *ops,
		 void *vm, struct mig_remote **remote, char *err, size_t errlen);

/* Post-copy: tell the source every page arrived (ok) and free the page source. */
void mig_dest_finish(struct mig_remote *r, int ok);

#endif
