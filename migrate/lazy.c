/*
 * Lazy guest memory through userfaultfd. One serving thread owns the userfaultfd: it drains
 * fault messages (non-blocking reads), serves each from the page source, then pushes one batch
 * of the source's remaining data and drains again, so a fault waits at most one batch. Data is
 * placed with UFFDIO_COPY, holes a fault hits with UFFDIO_ZEROPAGE (a copied zero huge page on
 * hugetlbfs, which has no ZEROPAGE); the background push walks only the source's data, so holes
 * stay holes in the memfd. When the push reaches the end everything is present: the regions are
 * unregistered (which wakes any fault still queued, now served by the kernel) and the thread ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"

#define HUGE_UNIT (2ULL << 20)
#define DEFAULT_BATCH_BYTES (256ULL << 10)
#define EVICT_BATCH 64			/* units paged out per page_out call */
#define BUDGET_MIN_UNITS 16		/* a smaller budget is raised to this */
#define EVICT_RETRY_NS (100ULL * 1000000)	/* after a failed page-out round */

struct mig_lazy {
	struct guest_mem *m;
	struct mig_page_source src;
	uint64_t unit;			/* MM_PAGE_SIZE, or 2 MiB on huge pages */
	uint64_t base[MM_MAX_REGIONS];	/* each region's offset in the source */
	unsigned int prefetch, batch;	/* in units */
	int uffd;
	int registered;
	uint64_t *present;		/* one bit per unit, in source order; with on_demand: every
					   unit in memory (the memfds' data at the start too) */
	uint64_t units;
	/* Page-out (budget != 0): CLOCK over the present units, a reference bit each. */
	uint64_t budget;		/* units resident at most; 0: no page-out */
	uint64_t resident;		/* units present (the serving thread's; st mirrors it) */
	uint64_t *ref;
	uint64_t hand;
	uint8_t *obuf;			/* EVICT_BATCH units */
	uint64_t retry_ns;		/* no page-out round before this after one failed */
	struct uffd_msg pend[EVICT_BATCH];	/* faults read during a page-out, served next */
	unsigned int npend;
	uint64_t cursor;		/* background push: everything below is done */
	uint8_t *buf;			/* (max(batch, prefetch + 1)) units */
	uint8_t *zero;			/* a zero huge page (hugetlbfs only) */
	pthread_t thread;
	int thread_started;
	int stopping;			/* atomic */
	uint64_t woken_ns;		/* the fault being served: when its thread was woken
					   (before its neighbours came), 0 until then */
	pthread_mutex_t lock;		/* st */
	pthread_cond_t cond;
	struct mig_lazy_stats st;
};

/* ---- the memory file as a page source ---- */

static int file_read(void *opaque, uint64_t off, void *buf, uint64_t len)
{
	int fd = (int)(intptr_t)opaque;
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len > (1U << 30) ? (1U << 30) : len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;	/* 0: the file shrank under us */
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static int file_is_hole(void *opaque, uint64_t off, uint64_t len, uint64_t *run)
{
	int fd = (int)(intptr_t)opaque;
	off_t data = lseek(fd, (off_t)off, SEEK_DATA), hole;

	if (data < 0 && errno != ENXIO)
		return -errno;
	if (data < 0 || (uint64_t)data > off) {		/* ENXIO: a hole up to the end */
		*run = data < 0 || (uint64_t)data - off > len ? len : (uint64_t)data - off;
		return 1;
	}
	hole = lseek(fd, data, SEEK_HOLE);
	if (hole < 0)
		return -errno;
	*run = (uint64_t)hole - off > len ? len : (uint64_t)hole - off;
	return 0;
}

static const struct mig_page_source_ops file_source_ops = {
	.read = file_read, .is_hole = file_is_hole,
};

int mig_page_source_file(struct mig_page_source *src, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		int ret = -errno;

		pr_err("memory file: %s", strerror(-ret));
		return ret;
	}
	*src = (struct mig_page_source){ .ops = &file_source_ops, .opaque = (void *)(intptr_t)fd,
					 .size = (uint64_t)st.st_size };
	return 0;
}

/* ---- bookkeeping ---- */

static int test_bit(const uint64_t *map, uint64_t u)
{
	return (map[u / 64] >> (u % 64)) & 1;
}

static int is_present(const struct mig_lazy *l, uint64_t off)
{
	return test_bit(l->present, off / l->unit);
}

static void set_present(struct mig_lazy *l, uint64_t off, uint64_t len)
{
	uint64_t added = 0;

	for (uint64_t u = off / l->unit; u < (off + len) / l->unit; u++) {
		added += !test_bit(l->present, u);
		l->present[u / 64] |= 1ULL << (u % 64);
	}
	if (!added)
		return;
	l->resident += added;
	pthread_mutex_lock(&l->lock);
	l->st.pages_resident = l->resident * l->unit / MM_PAGE_SIZE;
	if (l->st.pages_resident > l->st.resident_max)
		l->st.resident_max = l->st.pages_resident;
	pthread_mutex_unlock(&l->lock);
}

/* The region holding source offset off: its index, and the end of it in the source. */
static int region_of_off(const struct mig_lazy *l, uint64_t off, uint64_t *end)
{
	for (int i = 0; i < mm_nr_regions(l->m); i++) {
		uint64_t size = mm_region(l->m, i)->size;

		if (off >= l->base[i] && off - l->base[i] < size) {
			*end = l->base[i] + size;
			return i;
		}
	}
	return -1;
}

static uint8_t *off_to_hva(const struct mig_lazy *l, uint64_t off)
{
	uint64_t end;
	int i = region_of_off(l, off, &end);

	return mm_region(l->m, i)->hva + (off - l->base[i]);
}

static int hva_to_off(const struct mig_lazy *l, uint64_t addr, uint64_t *off)
{
	for (int i = 0; i < mm_nr_regions(l->m); i++) {
		const struct mm_region *r = mm_region(l->m, i);
		uint64_t hva = (uint64_t)(uintptr_t)r->hva;

		if (addr >= hva && addr - hva < r->size) {
			*off = l->base[i] + ((addr - hva) & ~(l->unit - 1));
			return 0;
		}
	}
	return -EFAULT;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Record the first error; the waiter gets it and the faulting thread is never woken with zeros. */
static int fail(struct mig_lazy *l, int ret, const char *what, uint64_t off)
{
	pthread_mutex_lock(&l->lock);
	l->st.errors++;
	if (!l->st.error)
		l->st.error = ret;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	pr_err("lazy memory: %s at offset 0x%llx: %s", what, (unsigned long long)off,
	       strerror(-ret));
	return ret;
}

static void count(struct mig_lazy *l, uint64_t *counter, uint64_t pages, uint64_t bytes_read)
{
	pthread_mutex_lock(&l->lock);
	*counter += pages;
	l->st.bytes_read += bytes_read;
	pthread_mutex_unlock(&l->lock);
}

/* ---- placing pages ---- */

static int uffd_wake(struct mig_lazy *l, uint64_t off, uint64_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)off_to_hva(l, off), .len = len };

	return ioctl(l->uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

/*
 * UFFDIO_COPY src to source offsets [off, off+len) of one region, or UFFDIO_ZEROPAGE when src is
 * NULL. A unit already there (EEXIST) is normal: skipped, and its waiters woken. Returns the
 * bytes placed, or -errno.
 */
static int64_t place(struct mig_lazy *l, uint64_t off, const uint8_t *src, uint64_t len)
{
	uint64_t done = 0, placed = 0;

	while (done < len) {
		uint64_t dst = (uintptr_t)off_to_hva(l, off + done);
		int64_t n;
		int ret = 0;

		if (src) {
			struct uffdio_copy c = { .dst = dst, .src = (uintptr_t)(src + done),
						 .len = len - done };

			if (ioctl(l->uffd, UFFDIO_COPY, &c) < 0)
				ret = -errno;
			n = ret ? c.copy : (int64_t)c.len;
		} else {
			struct uffdio_zeropage z = { .range = { .start = dst, .len = len - done } };

			if (ioctl(l->uffd, UFFDIO_ZEROPAGE, &z) < 0)
				ret = -errno;
			n = ret ? z.zeropage : (int64_t)z.range.len;
		}
		if (n > 0) {		/* a partial copy says how far it got */
			done += (uint64_t)n;
			placed += (uint64_t)n;
			continue;
		}
		if (ret == -EAGAIN)	/* the mappings changed under the copy: retry */
			continue;
		if (ret != -EEXIST)
			return ret ? ret : -EIO;
		if ((ret = uffd_wake(l, off + done, l->unit)) < 0)
			return ret;
		done += l->unit;
	}
	return (int64_t)placed;
}

/* Read [off, off+len) from the source and place it. counter: the stat the pages count in. */
static int copy_run(struct mig_lazy *l, uint64_t off, uint64_t len, uint64_t *counter)
{
	int64_t n;
	int ret = l->src.ops->read(l->src.opaque, off, l->buf, len);

	if (ret < 0)
		return fail(l, ret, "reading the page source", off);
	n = place(l, off, l->buf, len);
	if (n < 0)
		return fail(l, (int)n, "UFFDIO_COPY", off);
	set_present(l, off, len);
	count(l, counter, (uint64_t)n / MM_PAGE_SIZE, len);
	return 0;
}

/*
 * A fault's neighbours through the source's read_ahead: placed when they come, left missing
 * (no error: each is served when faulted) when the read fails. 0 or -errno (placing).
 */
static int ahead_run(struct mig_lazy *l, uint64_t off, uint64_t len)
{
	int64_t n;

	if (l->src.ops->read_ahead(l->src.opaque, off, l->buf, len) < 0) {
		pthread_mutex_lock(&l->lock);
		l->st.ahead_failed++;
		pthread_mutex_unlock(&l->lock);
		return 0;
	}
	n = place(l, off, l->buf, len);
	if (n < 0)
		return fail(l, (int)n, "UFFDIO_COPY", off);
	set_present(l, off, len);
	pthread_mutex_lock(&l->lock);
	l->st.pages_fault += (uint64_t)n / MM_PAGE_SIZE;
	l->st.pages_ahead += (uint64_t)n / MM_PAGE_SIZE;
	l->st.bytes_read += len;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

static int zero_unit(struct mig_lazy *l, uint64_t off)
{
	int64_t n = place(l, off, l->zero, l->unit);

	if (n < 0)
		return fail(l, (int)n, l->zero ? "UFFDIO_COPY of a zero page" : "UFFDIO_ZEROPAGE",
			    off);
	set_present(l, off, l->unit);
	count(l, &l->st.pages_zero, (uint64_t)n / MM_PAGE_SIZE, 0);
	return 0;
}

/* Is the unit at off all hole? 1, 0 (some data) or -errno; *run as the source's is_hole. */
static int unit_is_hole(struct mig_lazy *l, uint64_t off, uint64_t len, uint64_t *run)
{
	int ret = l->src.ops->is_hole(l->src.opaque, off, len, run);

	if (ret < 0)
		return fail(l, ret, "looking for holes in the page source", off);
	return ret == 1 && *run >= l->unit;
}


/* ---- page-out (a budget): CLOCK victims, write-protect, store, punch, un-protect ---- */

static void set_ref(struct mig_lazy *l, uint64_t off)
{
	if (l->ref)
		l->ref[off / l->unit / 64] |= 1ULL << (off / l->unit % 64);
}

/* UFFDIO_WRITEPROTECT one unit: on, or off (which also wakes its write-fault waiters). */
static int write_protect(struct mig_lazy *l, uint64_t off, int on)
{
	struct uffdio_writeprotect w = {
		.range = { .start = (uintptr_t)off_to_hva(l, off), .len = l->unit },
		.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(l->uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

/*
 * Free the unit's memory: a hole in its memfd, so the next access is a missing fault.
 * MADV_REMOVE on our shared mapping is fallocate(PUNCH_HOLE | KEEP_SIZE) on the memfd (and is
 * in every thread's seccomp list); it sends no userfaultfd event (no EVENT_REMOVE asked for).
 */
static int punch(struct mig_lazy *l, uint64_t off)
{
	return madvise(off_to_hva(l, off), l->unit, MADV_REMOVE) < 0 ? -errno : 0;
}

/*
 * CLOCK (second chance) over the present units: a unit whose reference bit is set (placed by a
 * fault, or written to while protected, since the hand last passed) loses the bit and is
 * passed over once; one without it is a victim. Victims leave the present map here (put back
 * when their page-out fails). Up to max offsets into v; how many.
 */
static unsigned int pick_victims(struct mig_lazy *l, uint64_t *v, unsigned int max)
{
	unsigned int n = 0;

	for (uint64_t steps = 0; n < max && steps < 2 * l->units + 64;) {
		uint64_t u = l->hand;

		if (!(l->present[u / 64] >> (u % 64))) {	/* nothing present up the word */
			steps += 64 - u % 64;
			l->hand = u - u % 64 + 64 >= l->units ? 0 : u - u % 64 + 64;
			continue;
		}
		l->hand = u + 1 >= l->units ? 0 : u + 1;
		steps++;
		if (!test_bit(l->present, u))
			continue;
		if (test_bit(l->ref, u)) {
			l->ref[u / 64] &= ~(1ULL << (u % 64));
			continue;
		}
		l->present[u / 64] &= ~(1ULL << (u % 64));
		v[n++] = u * l->unit;
	}
	return n;
}

/*
 * Read the faults queued during a page-out of v[n] (before the un-protect): a write to one of
 * those units waited on its protection and is left to the un-protect, which wakes it (counted
 * in wp_faults); any other fault is kept for drain_faults.
 */
static void collect_faults(struct mig_lazy *l, const uint64_t *v, unsigned int n)
{
	while (l->npend < EVICT_BATCH) {
		struct uffd_msg msg;
		uint64_t off;
		unsigned int i = n;

		if (read(l->uffd, &msg, sizeof(msg)) != sizeof(msg))
			return;		/* EAGAIN: none; an error: drain_faults sees it again */
		if (msg.event == UFFD_EVENT_PAGEFAULT &&
		    (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) &&
		    !hva_to_off(l, msg.arg.pagefault.address, &off))
			for (i = 0; i < n && v[i] != off; i++)
				;
		if (i < n) {	/* a write waiting on one of v[]: the un-protect wakes it */
			pthread_mutex_lock(&l->lock);
			l->st.wp_faults++;
			pthread_mutex_unlock(&l->lock);
			continue;
		}
		l->pend[l->npend++] = msg;
	}
}

/*
 * Page out the n units at v[] (picked: not in the present map). Each one: (1) write-protected,
 * so a write to it from now on waits for us; (2) its bytes copied; (3) the source stores them
 * and confirms (page_out); (4) punched out of its memfd; (5) un-protected, which clears the
 * protection (a marker where the page was) and wakes any writer waiting: it faults again and
 * finds the page missing, so it is paged in with its bytes as stored, never a stale copy. A
 * unit not stored stays: un-protected, its writer woken, its write lands on it. Returns the
 * units paged out, or -errno (an un-protect failed: writers would stay blocked; recorded).
 */
static int evict_batch(struct mig_lazy *l, const uint64_t *v, unsigned int n)
{
	uint8_t ok[EVICT_BATCH] = { 0 };
	uint64_t gone[EVICT_BATCH];
	unsigned int prot = 0, k = 0;
	int ret = 0;

	for (; prot < n; prot++)
		if ((ret = write_protect(l, v[prot], 1)) < 0)
			break;
	if (ret) {
		pr_warn_ratelimited("lazy memory: UFFDIO_WRITEPROTECT at offset 0x%llx: %s; not "
				    "paged out", (unsigned long long)v[prot], strerror(-ret));
	} else {
		for (unsigned int i = 0; i < n; i++)
			memcpy(l->obuf + i * l->unit, off_to_hva(l, v[i]), l->unit);
		if (l->src.ops->page_out(l->src.opaque, v, n, l->obuf, ok) < 0)
			memset(ok, 0, sizeof(ok));
	}
	for (unsigned int i = 0; i < n; i++) {
		if (!ok[i])
			continue;
		if ((ret = punch(l, v[i])) < 0) {
			pr_warn_ratelimited("lazy memory: punching offset 0x%llx out: %s; it stays",
					    (unsigned long long)v[i], strerror(-ret));
			ok[i] = 0;
			continue;
		}
		gone[k++] = v[i];
	}
	if (k && l->src.ops->paged_out)
		l->src.ops->paged_out(l->src.opaque, gone, k);
	collect_faults(l, v, n);
	ret = 0;
	for (unsigned int i = 0; i < prot; i++) {
		int r = write_protect(l, v[i], 0);

		if (r < 0 && !ret)
			ret = fail(l, r, "UFFDIO_WRITEPROTECT (un-protect)", v[i]);
	}
	for (unsigned int i = 0; i < n; i++)
		if (!ok[i])
			l->present[v[i] / l->unit / 64] |= 1ULL << (v[i] / l->unit % 64);
	l->resident -= k;
	pthread_mutex_lock(&l->lock);
	l->st.pages_resident = l->resident * l->unit / MM_PAGE_SIZE;
	l->st.pages_out += k * l->unit / MM_PAGE_SIZE;
	l->st.bytes_out += k * l->unit;
	l->st.evictions_failed += n - k;
	pthread_mutex_unlock(&l->lock);
	return ret ? ret : (int)k;
}

/*
 * Before placing need units: when that would take the resident units above the budget, page
 * out down to the low watermark (budget - max(budget/16, need)), EVICT_BATCH at a time. A
 * round that fails (the source did not store the pages) stops it; the next try waits
 * EVICT_RETRY_NS. 0 or -errno (recorded).
 */
static int make_room(struct mig_lazy *l, uint64_t need)
{
	uint64_t gap, target;

	if (!l->budget || l->resident + need <= l->budget || now_ns() < l->retry_ns)
		return 0;
	gap = l->budget / 16 > need ? l->budget / 16 : need;
	target = l->budget > gap ? l->budget - gap : 0;
	while (l->resident > target) {
		uint64_t v[EVICT_BATCH];
		uint64_t want = l->resident - target < EVICT_BATCH ? l->resident - target : EVICT_BATCH;
		unsigned int n = pick_victims(l, v, (unsigned int)want);
		int ret;

		if (!n)
			break;
		ret = evict_batch(l, v, n);
		if (ret < 0)
			return ret;
		if ((unsigned int)ret < n) {
			l->retry_ns = now_ns() + EVICT_RETRY_NS;
			pr_warn_ratelimited("lazy memory: %u of %u pages not paged out (the reason "
					    "is above); resident guest memory may pass its budget",
					    n - (unsigned int)ret, n);
			break;
		}
	}
	return 0;
}

/* A write to a protected unit: one being paged out is woken by the page-out itself. */
static int serve_wp(struct mig_lazy *l, uint64_t addr)
{
	uint64_t off;
	int ret;

	if (hva_to_off(l, addr, &off) < 0)
		return 0;
	set_ref(l, off);	/* written to: hot */
	ret = is_present(l, off) ? write_protect(l, off, 0) : uffd_wake(l, off, l->unit);
	return ret < 0 ? fail(l, ret, "un-protecting a written page", off) : 0;
}

/* Is there room for one more unit? Counts a fault served over the budget. */
static void check_budget(struct mig_lazy *l, uint64_t need)
{
	if (l->budget && l->resident + need > l->budget) {
		pthread_mutex_lock(&l->lock);
		l->st.over_budget++;
		pthread_mutex_unlock(&l->lock);
	}
}

/*
 * The data unit at off and up to prefetch data units after it, stopping at the region's end, a
 * unit already present or a hole (neighbours are never zero-filled: a hole stays a hole).
 */
static int serve_data(struct mig_lazy *l, uint64_t off, uint64_t rend)
{
	int ret;
	uint64_t lim = off + (1 + (uint64_t)l->prefetch) * l->unit, p = off + l->unit, known = p;

	if (lim > rend)
		lim = rend;
	while (p < lim && !is_present(l, p)) {
		if (p >= known) {
			uint64_t run;
			int hole = unit_is_hole(l, p, lim - p, &run);

			if (hole < 0)
				return hole;
			if (hole)
				break;
			known = p + ((run + l->unit - 1) & ~(l->unit - 1));
		}
		p += l->unit;
	}
	if (l->budget) {
		/* Room first; what page-out could not make is not spent on neighbours. */
		if ((ret = make_room(l, (p - off) / l->unit)))
			return ret;
		while (p > off + l->unit && l->resident + (p - off) / l->unit > l->budget)
			p -= l->unit;
		check_budget(l, 1);
	}
	if (!l->src.ops->read_ahead || p == off + l->unit)
		return copy_run(l, off, p - off, &l->st.pages_fault);
	/* The faulting unit first (its thread runs on), then the neighbours apart. */
	if ((ret = copy_run(l, off, l->unit, &l->st.pages_fault)))
		return ret;
	l->woken_ns = now_ns();
	return ahead_run(l, off + l->unit, p - off - l->unit);
}

static int serve_fault(struct mig_lazy *l, uint64_t addr)
{
	uint64_t off, rend = 0, run, t0 = now_ns(), ns;
	int ret, bucket = 0;

	l->woken_ns = 0;
	if (hva_to_off(l, addr, &off) < 0) {
		pr_warn_ratelimited("lazy memory: fault at 0x%llx outside guest RAM",
				    (unsigned long long)addr);
		return 0;
	}
	region_of_off(l, off, &rend);
	if (is_present(l, off))		/* placed since the fault was queued */
		ret = uffd_wake(l, off, l->unit) < 0 ? fail(l, -errno, "UFFDIO_WAKE", off) : 0;
	else if ((ret = unit_is_hole(l, off, l->unit, &run)) == 1) {
		if (!(ret = make_room(l, 1))) {
			check_budget(l, 1);
			ret = zero_unit(l, off);
		}
	} else if (ret == 0) {
		ret = serve_data(l, off, rend);
	}
	if (ret < 0)
		return ret;
	set_ref(l, off);	/* faulted in: a second chance */
	ns = (l->woken_ns ? l->woken_ns : now_ns()) - t0;
	for (uint64_t us = ns / 1000; us && bucket < MIG_LAZY_HIST - 1; us >>= 1)
		bucket++;
	pthread_mutex_lock(&l->lock);
	l->st.faults++;
	l->st.latency_hist[bucket]++;
	if (ns > l->st.latency_max_ns)
		l->st.latency_max_ns = ns;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

/* Serve every fault queued now. 0 or -errno. */
static int drain_faults(struct mig_lazy *l)
{
	struct uffd_msg msg[16];

	for (;;) {
		ssize_t n;

		if (l->npend) {		/* read while a page-out was under way */
			n = (ssize_t)(l->npend < 16 ? l->npend : 16);
			memcpy(msg, l->pend, (size_t)n * sizeof(msg[0]));
			memmove(l->pend, l->pend + n, (l->npend - (size_t)n) * sizeof(msg[0]));
			l->npend -= (unsigned int)n;
			n *= (ssize_t)sizeof(msg[0]);
		} else {
			n = read(l->uffd, msg, sizeof(msg));
		}

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return fail(l, -errno, "reading the userfaultfd", 0);
		for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++) {
			int ret;

			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (msg[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
				ret = serve_wp(l, msg[i].arg.pagefault.address);
			else
				ret = serve_fault(l, msg[i].arg.pagefault.address);
			if (ret < 0)
				return ret;
		}
	}
}

/* Push up to l->batch units of data from the cursor on, skipping holes and present units. */
static int push_batch(struct mig_lazy *l)
{
	uint64_t budget = l->batch;

	while (budget && l->cursor < l->src.size) {
		uint64_t off = l->cursor, rend = 0, run, p;
		int hole;

		region_of_off(l, off, &rend);
		hole = unit_is_hole(l, off, rend - off, &run);
		if (hole < 0)
			return hole;
		budget--;
		if (hole) {
			l->cursor += run & ~(l->unit - 1);
			continue;
		}
		if (is_present(l, off)) {
			l->cursor += l->unit;
			continue;
		}
		run = (run + l->unit - 1) & ~(l->unit - 1);
		for (p = off + l->unit; p < off + run && p < rend && budget && !is_present(l, p);
		     p += l->unit)
			budget--;
		if (copy_run(l, off, p - off, &l->st.pages_background) < 0)
			return -1;
		l->cursor = p;
	}
	return 0;
}

static void unregister(struct mig_lazy *l)
{
	const struct mm_region *r;

	if (!l->registered)
		return;
	mm_for_each_region(l->m, r) {
		struct uffdio_range range = { .start = (uintptr_t)r->hva, .len = r->size };

		if (ioctl(l->uffd, UFFDIO_UNREGISTER, &range) < 0)
			pr_warn("lazy memory: UFFDIO_UNREGISTER region %d: %s",
				mm_region_index(l->m, r), strerror(errno));
	}
	l->registered = 0;
}

static void *serve_thread(void *arg)
{
	struct mig_lazy *l = arg;

	seccomp_enter(KUMO_THREAD_LAZY);
	while (!__atomic_load_n(&l->stopping, __ATOMIC_ACQUIRE)) {
		if (drain_faults(l) < 0 || (!l->src.on_demand && push_batch(l) < 0))
			return NULL;	/* the error is recorded; faulting threads stay blocked */
		if (l->src.on_demand) {
			/* Remote paging: pages come only when faulted; wait for the next fault. */
			struct pollfd pfd = { .fd = l->uffd, .events = POLLIN };

			poll(&pfd, 1, 100);
			continue;
		}
		if (l->cursor < l->src.size)
			continue;
		if (drain_faults(l) < 0)
			return NULL;
		unregister(l);
		pthread_mutex_lock(&l->lock);
		l->st.complete = 1;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pr_debug("lazy memory: complete");
		break;
	}
	return NULL;
}

/* ---- set-up ---- */

static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

#ifdef USERFAULTFD_IOC_NEW
	/* Without vm.unprivileged_userfaultfd, /dev/userfaultfd's permissions decide. */
	if (fd < 0 && errno == EPERM) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
		if (fd < 0)
			errno = EPERM;
	}
#endif
	return fd < 0 ? -errno : fd;
}

static int setup_uffd(struct mig_lazy *l)
{
	uint64_t need = l->m->hugepages ? UFFD_FEATURE_MISSING_HUGETLBFS : UFFD_FEATURE_MISSING_SHMEM;
	uint64_t ioctls = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_WAKE) |
			  (l->m->hugepages ? 0 : 1ULL << _UFFDIO_ZEROPAGE);
	struct uffdio_api api = { .api = UFFD_API };
	const struct mm_region *r;
	int ret;

	if ((ret = open_uffd()) < 0) {
		pr_err("lazy memory: userfaultfd: %s%s", strerror(-ret), ret == -EPERM ?
		       " (vm.unprivileged_userfaultfd is 0 and /dev/userfaultfd is not ours)" : "");
		return ret;
	}
	l->uffd = ret;
	if (ioctl(l->uffd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		pr_err("lazy memory: UFFDIO_API: %s", strerror(-ret));
		return ret;
	}
	if ((api.features & need) != need) {
		pr_err("lazy memory: the kernel's userfaultfd has no %s",
		       l->m->hugepages ? "UFFD_FEATURE_MISSING_HUGETLBFS" : "UFFD_FEATURE_MISSING_SHMEM");
		return -EOPNOTSUPP;
	}
	if (l->budget && !(api.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) {
		pr_warn("lazy memory: the kernel's userfaultfd has no UFFD_FEATURE_WP_HUGETLBFS_SHMEM "
			"(write-protecting shared memory, CONFIG_PTE_MARKER_UFFD_WP): no page-out, "
			"resident guest memory is not kept within its budget");
		l->budget = 0;
	}
	mm_for_each_region(l->m, r) {
		struct uffdio_register reg = {
			.range = { .start = (uintptr_t)r->hva, .len = r->size },
			.mode = UFFDIO_REGISTER_MODE_MISSING |
				(l->budget ? UFFDIO_REGISTER_MODE_WP : 0),
		};

		if (ioctl(l->uffd, UFFDIO_REGISTER, &reg) < 0) {
			ret = -errno;
			pr_err("lazy memory: UFFDIO_REGISTER region %d: %s",
			       mm_region_index(l->m, r), strerror(-ret));
			return ret;
		}
		l->registered = 1;
		if ((reg.ioctls & ioctls) != ioctls) {
			pr_err("lazy memory: region %d offers no %s", mm_region_index(l->m, r),
			       !(reg.ioctls & (1ULL << _UFFDIO_COPY)) ? "UFFDIO_COPY" :
			       !(reg.ioctls & (1ULL << _UFFDIO_WAKE)) ? "UFFDIO_WAKE" :
			       "UFFDIO_ZEROPAGE");
			return -EOPNOTSUPP;
		}
		if (l->budget && !(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT))) {
			pr_warn("lazy memory: region %d offers no UFFDIO_WRITEPROTECT: no page-out, "
				"resident guest memory is not kept within its budget",
				mm_region_index(l->m, r));
			l->budget = 0;
		}
	}
	return 0;
}

/* The units the memfds hold at the start (what came before the lazy memory): present. */
static int scan_resident(struct mig_lazy *l)
{
	for (int i = 0; i < mm_nr_regions(l->m); i++) {
		const struct mm_region *r = mm_region(l->m, i);
		off_t end = (off_t)(r->fd_offset + r->size), pos = (off_t)r->fd_offset;

		while (pos < end) {
			off_t data = lseek(r->memfd, pos, SEEK_DATA), hole;

			if (data < 0 && errno == ENXIO)
				break;
			if (data < 0)
				return -errno;
			if (data >= end)
				break;
			hole = lseek(r->memfd, data, SEEK_HOLE);
			if (hole < 0)
				return -errno;
			if (hole > end)
				hole = end;
			data &= ~(off_t)(l->unit - 1);
			set_present(l, l->base[i] + (uint64_t)(data - (off_t)r->fd_offset),
				    ((uint64_t)(hole - data) + l->unit - 1) & ~(l->unit - 1));
			pos = hole;
		}
	}
	return 0;
}

int mig_lazy_start(struct guest_mem *m, const struct mig_page_source *src,
		   const struct mig_lazy_params *params, struct mig_lazy **out)
{
	struct mig_lazy *l;
	pthread_condattr_t ca;
	uint64_t units, base = 0, buf_units;
	int ret;

	if (src->size != m->ram_size) {
		pr_err("lazy memory: the page source has %llu bytes, the memory layout %llu",
		       (unsigned long long)src->size, (unsigned long long)m->ram_size);
		return -EINVAL;
	}
	if (!m->nr_regions || !m->regions[0].hva) {
		pr_err("lazy memory: the memory layout has no memory behind it");
		return -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->m = m;
	l->src = *src;
	l->uffd = -1;
	l->unit = m->hugepages ? HUGE_UNIT : MM_PAGE_SIZE;
	l->prefetch = params ? params->prefetch : 0;
	l->batch = params && params->batch ? params->batch : 0;
	if (!l->batch)
		l->batch = DEFAULT_BATCH_BYTES / l->unit ? DEFAULT_BATCH_BYTES / l->unit : 1;
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);	/* mig_lazy_wait's clock */
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	for (int i = 0; i < mm_nr_regions(m); i++) {
		l->base[i] = base;
		base += mm_region(m, i)->size;
	}
	ret = -ENOMEM;
	units = m->ram_size / l->unit;
	buf_units = l->batch > l->prefetch + 1ULL ? l->batch : l->prefetch + 1ULL;
	l->units = units;
	l->present = calloc((units + 63) / 64, sizeof(uint64_t));
	l->buf = malloc(buf_units * l->unit);
	if (!l->present || !l->buf)
		goto err;
	if (src->budget && src->on_demand && src->ops->page_out) {
		if (m->hugepages) {
			pr_warn("lazy memory: no page-out on huge pages (not in this cut): resident "
				"guest memory is not kept within its budget");
		} else {
			l->budget = src->budget / l->unit;
			if (l->budget < BUDGET_MIN_UNITS) {
				pr_warn("lazy memory: a resident budget of %llu pages is raised to %d",
					(unsigned long long)l->budget, BUDGET_MIN_UNITS);
				l->budget = BUDGET_MIN_UNITS;
			}
			l->ref = calloc((units + 63) / 64, sizeof(uint64_t));
			l->obuf = malloc(EVICT_BATCH * l->unit);
			if (!l->ref || !l->obuf)
				goto err;
		}
	}
	if (m->hugepages && !(l->zero = calloc(1, l->unit)))
		goto err;
	if (src->on_demand && (ret = scan_resident(l)) < 0) {
		pr_err("lazy memory: looking for the pages already here: %s", strerror(-ret));
		goto err;
	}
	if ((ret = setup_uffd(l)) < 0)
		goto err;
	pthread_mutex_lock(&l->lock);
	l->st.budget_pages = l->budget * l->unit / MM_PAGE_SIZE;
	pthread_mutex_unlock(&l->lock);
	if (l->budget && l->resident > l->budget)
		pr_warn("lazy memory: %llu pages resident at the start, over the budget of %llu: "
			"paged out at the first faults", (unsigned long long)l->resident,
			(unsigned long long)l->budget);
	ret = -pthread_create(&l->thread, NULL, serve_thread, l);
	if (ret) {
		pr_err("lazy memory: starting the serving thread: %s", strerror(-ret));
		goto err;
	}
	l->thread_started = 1;
	*out = l;
	return 0;
err:
	mig_lazy_stop(l);
	return ret;
}

int mig_lazy_wait(struct mig_lazy *l, int timeout_ms)
{
	uint64_t deadline = now_ns() + (timeout_ms > 0 ? (uint64_t)timeout_ms * 1000000 : 0);
	struct timespec until = { .tv_sec = (time_t)(deadline / 1000000000ULL),
				  .tv_nsec = (long)(deadline % 1000000000ULL) };
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	while (!l->st.complete && !l->st.error && ret != ETIMEDOUT)
		ret = timeout_ms < 0 ? pthread_cond_wait(&l->cond, &l->lock)
				     : pthread_cond_timedwait(&l->cond, &l->lock, &until);
	ret = l->st.error ? l->st.error : l->st.complete ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&l->lock);
	return ret;
}

void mig_lazy_stats(struct mig_lazy *l, struct mig_lazy_stats *st)
{
	pthread_mutex_lock(&l->lock);
	*st = l->st;
	pthread_mutex_unlock(&l->lock);
}

void mig_lazy_hist_bounds(int i, uint64_t *lo, uint64_t *hi)
{
	*lo = i > 0 ? (1ULL << (i - 1)) * 1000 : 0;
	*hi = i < MIG_LAZY_HIST - 1 ? (1ULL << i) * 1000 : UINT64_MAX;
}

uint64_t mig_lazy_latency_quantile_ns(const struct mig_lazy_stats *st, unsigned int permille)
{
	uint64_t total = 0, seen = 0, lo, hi;

	if (permille > 1000)
		permille = 1000;
	for (int i = 0; i < MIG_LAZY_HIST; i++)
		total += st->latency_hist[i];
	for (int i = 0; i < MIG_LAZY_HIST && total; i++) {
		seen += st->latency_hist[i];
		/* the first bucket holding the ceil(total * permille / 1000)-th fault */
		if (st->latency_hist[i] && 1000 * seen >= total * permille) {
			mig_lazy_hist_bounds(i, &lo, &hi);
			return hi < st->latency_max_ns ? hi : st->latency_max_ns;
		}
	}
	return 0;
}

uint64_t mig_lazy_latency_median_ns(const struct mig_lazy_stats *st)
{
	return mig_lazy_latency_quantile_ns(st, 500);
}

void mig_lazy_stop(struct mig_lazy *l)
{
	if (!l)
		return;
	__atomic_store_n(&l->stopping, 1, __ATOMIC_RELEASE);
	if (l->thread_started)
		pthread_join(l->thread, NULL);
	if (l->uffd >= 0)
		close(l->uffd);		/* unregisters whatever is still registered */
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l->zero);
	free(l->ref);
	free(l->obuf);
	free(l->buf);
	free(l->present);
	free(l);
}
