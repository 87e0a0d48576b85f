/*
 * Lazy guest memory (`kumo run --restore-lazy`): fresh guest RAM is registered with a
 * userfaultfd and filled on demand from a page source, so the VM runs at once. One thread
 * answers faults first (the page, a few data neighbours) and pushes the source's remaining data
 * in between; holes of the source are never filled by that push and stay holes in the memfd.
 * KVM's own accesses (a vCPU's stage-2 fault takes get_user_pages on the region) block on the
 * same userfaultfd, so this serves a running VM.
 */
#ifndef KUMO_MIGRATE_LAZY_H
#define KUMO_MIGRATE_LAZY_H

#include <stdint.h>

struct guest_mem;
struct mig_lazy;

/*
 * Where pages come from. Offsets are in the memory file's order (docs/snapshot.md: regions one
 * after another in mm_for_each_region() order), so a source is ram_size bytes long.
 */
struct mig_page_source_ops {
	/* Read all len bytes at off into buf (holes read as zeros). 0 or -errno. */
	int (*read)(void *opaque, uint64_t off, void *buf, uint64_t len);
	/*
	 * Is off the start of a hole? 1 (hole) or 0 (data), with *run the bytes from off up to len
	 * that are the same kind; or -errno.
	 */
	int (*is_hole)(void *opaque, uint64_t off, uint64_t len, uint64_t *run);
	/*
	 * Optional: read a fault's data neighbours (prefetch), apart from the faulting unit. With
	 * it a fault's own unit is read (read) and placed -- its thread woken -- before the
	 * neighbours are asked for, and a neighbours' read that fails is no error: they are
	 * left missing and served when faulted. A remote source gives it its own connection,
	 * so bulk traffic never delays a fault's page (split.c's urgent channel). 0 or -errno.
	 */
	int (*read_ahead)(void *opaque, uint64_t off, void *buf, uint64_t len);
	/*
	 * Page-out (with a budget, on_demand sources only): store the n units at offs[] (their
	 * bytes one unit after another in buf) where read will find them again, and confirm each
	 * is stored (ok[i] = 1; 0: not stored for sure, the unit stays resident). Returns 0 or
	 * -errno (then no unit counts as stored). The units are write-protected meanwhile.
	 */
	int (*page_out)(void *opaque, const uint64_t *offs, unsigned int n, const uint8_t *buf,
			uint8_t *ok);
	/* Page-out: these units left memory (punched out): from now on they are the source's data. */
	void (*paged_out)(void *opaque, const uint64_t *offs, unsigned int n);
};

struct mig_page_source {
	const struct mig_page_source_ops *ops;
	void *opaque;
	uint64_t size;		/* bytes; must be the layout's RAM size */
	int on_demand;		/* no background push: data comes only when faulted (remote
				   paging, migrate/split.h); the serving never completes */
	uint64_t budget;	/* on_demand with page_out: resident guest RAM at most, bytes (0:
				   no page-out). Cold units are paged out before a fault would take
				   the resident units above it (docs/split-migration.md) */
};

/* A memory file (mig_memfile_write()) as a page source; fd stays the caller's. 0 or -errno. */
int mig_page_source_file(struct mig_page_source *src, int fd)
	__attribute__((warn_unused_result));

#define MIG_LAZY_HIST 24	/* log2 buckets of fault service time in us: 0: [0, 1), i: [2^(i-1),
			   2^i), the last one [2^22, unbounded) (mig_lazy_hist_bounds()) */

struct mig_lazy_stats {
	uint64_t faults;		/* fault messages served (a page two threads fault is two) */
	uint64_t pages_fault;		/* data pages copied for faults, neighbours included */
	uint64_t pages_background;	/* data pages copied by the background push */
	uint64_t pages_zero;		/* hole pages a fault zero-filled */
	uint64_t pages_ahead;		/* of pages_fault, neighbours read by read_ahead */
	uint64_t ahead_failed;		/* read_ahead calls that failed (neighbours left out) */
	uint64_t bytes_read;		/* from the source */
	uint64_t errors;		/* source reads or uffd ioctls that failed */
	/* Page-out (a source with a budget; resident counts every page of guest RAM in memory:
	   the memfds' data at the start + placed - paged out). */
	uint64_t budget_pages;		/* 0: no page-out */
	uint64_t pages_resident, resident_max;
	uint64_t pages_out;		/* paged out (punched after the source stored them) */
	uint64_t bytes_out;		/* of guest data handed to page_out for those */
	uint64_t evictions_failed;	/* units page_out did not store (they stayed resident) */
	uint64_t over_budget;		/* faults served above the budget (evictions failed) */
	uint64_t wp_faults;		/* write-protect faults: writes that waited on a page-out */
	uint64_t latency_hist[MIG_LAZY_HIST];
	uint64_t latency_max_ns;	/* from reading the fault to waking the faulting thread */
	int complete;			/* all data present, userfaultfd unregistered */
	int error;			/* the first error (-errno), 0 if none */
};

struct mig_lazy_params {
	unsigned int prefetch;		/* data pages (huge pages with hugepages) after the faulting one */
	unsigned int batch;		/* background push per step, in the same units (0: default) */
};

/*
 * Serve m, which must be fresh (made and never touched: every page missing), from src: opens
 * the userfaultfd (checks the features m's backing needs and names a missing one), registers
 * every region for missing faults and starts the serving thread. A source whose size is not
 * m's RAM size is refused with -EINVAL and one line before anything is registered. src (and its
 * opaque) must outlive the serving. 0 with *out set, or -errno.
 */
int mig_lazy_start(struct guest_mem *m, const struct mig_page_source *src,
		   const struct mig_lazy_params *params, struct mig_lazy **out)
	__attribute__((warn_unused_result));

/*
 * Wait until all data is present (0), the serving failed (its first -errno: the VMM must stop
 * the VM, a faulting vCPU stays blocked and is never given zeros), or timeout_ms passed
 * (-ETIMEDOUT; a negative timeout waits without bound).
 */
int mig_lazy_wait(struct mig_lazy *l, int timeout_ms);

void mig_lazy_stats(struct mig_lazy *l, struct mig_lazy_stats *st);
/* Bucket i's bounds in ns: [*lo, *hi); *hi is UINT64_MAX for the last (unbounded) one. */
void mig_lazy_hist_bounds(int i, uint64_t *lo, uint64_t *hi);
/*
 * The fault service time in ns below which permille/1000 of the faults fall: the upper bound
 * of the log2 bucket where that fault is, never above latency_max_ns (so the last bucket's
 * quantiles are the maximum); 0 without faults.
 */
uint64_t mig_lazy_latency_quantile_ns(const struct mig_lazy_stats *st, unsigned int permille);
/* The median: mig_lazy_latency_quantile_ns(st, 500). */
uint64_t mig_lazy_latency_median_ns(const struct mig_lazy_stats *st);

/*
 * Stop serving at any time: ends and joins the thread, closes the userfaultfd. Stop only after
 * the VM's vCPUs are gone: closing the userfaultfd lets a fault still blocked on it through to
 * an ordinary (zero-filled) page. NULL is fine.
 */
void mig_lazy_stop(struct mig_lazy *l);

#endif
