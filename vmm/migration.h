/* Live migration of this VM: the source's verbs and the destination's --incoming. */
#ifndef KUMO_VMM_MIGRATION_H
#define KUMO_VMM_MIGRATION_H

#include <stddef.h>
#include <stdint.h>

struct vm;

struct vm_migrate_args {
	const char *to;			/* tcp:HOST:PORT or unix:PATH */
	uint64_t downtime_ms;		/* target (0: 300 ms) */
	uint64_t bandwidth;		/* bytes/s, 0: unlimited */
	const char *postcopy;		/* auto, off (default), now, after-rounds:N */
	const char *sub;		/* split migration: sub-hosts ADDR[,ADDR...] (memservers) */
	uint64_t main_mem;		/* split: data bytes at most for the main host */
	int no_tracking;		/* split: send free pages too (tracking=off, to compare) */
	unsigned int replicas;		/* split: copies of each sub-host page (0, 1 or 2) */
	int pageout;			/* split: the main host keeps its resident guest RAM within
					   main_mem, paging cold pages out to the sub-hosts (pageout=on) */
};

/*
 * Connect to the destination and migrate on a thread of its own (events migrate-progress,
 * migrate-done -- then the VM stops, kumo run exits 0 -- or migrate-failed, the VM running on
 * here unless it failed after a post-copy switch-over). 0 or -errno with one line in err.
 */
int vm_migrate_start(struct vm *vm, const struct vm_migrate_args *a, char *err, size_t errlen);
/* Ask a running migration to stop (-ENOENT when none runs): the VM runs on here. */
int vm_migrate_cancel(struct vm *vm);
/* The VM is going away: cancel and join a migration, let a post-copy source go. */
void vm_migration_end(struct vm *vm);

/*
 * Listen on addr, take one migration into vm (built from the config, not started) and start
 * its vCPUs. 0, or -errno with one line in err (the VM never ran).
 */
int vm_incoming(struct vm *vm, const char *addr, char *err, size_t errlen);

struct json_object;
/* The split migration's page-location map counters (main host or source). 0 or -ENOENT. */
int vm_split_stats(struct vm *vm, struct json_object **result, char *err, size_t errlen);

#endif
