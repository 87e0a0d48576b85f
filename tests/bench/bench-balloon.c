/*
 * virtio-balloon inflate/deflate throughput without a guest kernel, side by side with the raw
 * floor in the same process. A test driver plays Linux's virtio_balloon driver over a fake
 * transport (rings in guest memory, doorbell = write to vdev->kick_fd[q], interrupt = an
 * eventfd written by notify_queue): it negotiates features as Linux does, sets up the inflate
 * and deflate queues, and once the host has set the target it sends arrays of 256 le32 PFNs
 * per buffer (VIRTIO_BALLOON_ARRAY_PFNS_MAX), keeping up to the queue size of buffers in
 * flight. Linux itself waits for each buffer before sending the next; keeping the ring full
 * measures what the device can take, not the guest's pace.
 *
 * The raw floor: a fresh memfd of the same size, mapped shared and touched, then
 * fallocate(PUNCH_HOLE|KEEP_SIZE) on the same pages in the same order, one call per page
 * ("inflate") or one per contiguous run inside each 256-PFN array ("inflate-batched", what
 * the device can merge); "deflate" is a bare loop over the same PFN arrays clearing bits of a
 * bitmap (the minimal bookkeeping: deflate gives nothing back to the host).
 *
 *   bench-balloon [GiB (1)] [runs (1)] [order: seq|shuffle (seq)]
 *
 * seq: ascending PFNs, as a freshly booted guest's allocator mostly hands them out;
 * shuffle: a random permutation (a fragmented guest). Prints "kumo <test> <MiB/s> MiB/s" and
 * "raw <test> <MiB/s> MiB/s" per run; exits non-zero on any failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio-balloon.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/devenv.h"

#define QSIZE VIRTIO_BALLOON_QUEUE_SIZE
#define P 4096ULL
#define PFNS_PER_BUF 256				/* VIRTIO_BALLOON_ARRAY_PFNS_MAX */
#define RESERVE (256ULL << 20)				/* RAM the balloon leaves alone */
#define DESC_GPA(q) (0x100000ULL + (q) * 0x10000ULL)
#define AVAIL_GPA(q) (DESC_GPA(q) + 0x4000)
#define USED_GPA(q) (DESC_GPA(q) + 0x8000)
#define BUF_GPA(q, s) (0x200000ULL + (q) * 0x40000ULL + (s) * (PFNS_PER_BUF * 4ULL))

#define VRING_USED_F_NO_NOTIFY 1
#define BIT(f) (1ULL << (f))

/* What Linux's virtio_balloon accepts: its feature table plus the ring/transport bits. */
#define LINUX_BALLOON_FEATURES                                                                 \
	(BIT(VIRTIO_BALLOON_F_MUST_TELL_HOST) | BIT(VIRTIO_BALLOON_F_STATS_VQ) |               \
	 BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM) | BIT(VIRTIO_BALLOON_F_FREE_PAGE_HINT) |         \
	 BIT(VIRTIO_BALLOON_F_PAGE_POISON) | BIT(VIRTIO_BALLOON_F_REPORTING) |                 \
	 BIT(VIRTIO_F_INDIRECT_DESC) | BIT(VIRTIO_F_EVENT_IDX) | BIT(VIRTIO_F_VERSION_1) |     \
	 BIT(VIRTIO_F_ACCESS_PLATFORM))

static int irq_fd = -1;
static int config_irqs;

static void die(const char *what)
{
	fprintf(stderr, "bench-balloon: FAILED: %s\n", what);
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fake_notify_queue(struct virtio_dev *vdev, unsigned int q)
{
	uint64_t one = 1;

	(void)vdev;
	(void)q;
	if (write(irq_fd, &one, 8) != 8)
		abort();
}

static void fake_notify_config(struct virtio_dev *vdev)
{
	(void)vdev;
	__atomic_fetch_add(&config_irqs, 1, __ATOMIC_SEQ_CST);
}

static const struct virtio_transport_ops fake_tops = {
	.notify_queue = fake_notify_queue, .notify_config = fake_notify_config,
};

/* ---- the pages the balloon takes ---- */

struct pool {
	uint64_t npages;
	uint32_t *pfns;		/* in the order the driver sends them */
	uint64_t *offs;		/* memfd offset of each (for the raw side) */
	uint32_t max_pfn;
};

/* GiB worth of pages of m, after the first RESERVE bytes of RAM. */
static void pool_build(struct pool *pl, const struct guest_mem *m, uint64_t bytes, int shuffle)
{
	uint64_t skip = RESERVE, n = 0;

	pl->npages = bytes / P;
	pl->pfns = malloc(pl->npages * sizeof(*pl->pfns));
	pl->offs = malloc(pl->npages * sizeof(*pl->offs));
	if (!pl->pfns || !pl->offs)
		die("out of memory");
	for (int i = 0; i < m->nr_regions && n < pl->npages; i++) {
		const struct mm_region *r = &m->regions[i];

		for (uint64_t off = 0; off < r->size && n < pl->npages; off += P) {
			if (skip) {
				skip -= P;
				continue;
			}
			if ((r->gpa + off) >> 12 > UINT32_MAX)
				die("PFN does not fit in 32 bits");
			pl->pfns[n] = (uint32_t)((r->gpa + off) >> 12);
			pl->offs[n] = r->fd_offset + off;
			n++;
		}
	}
	if (n != pl->npages)
		die("guest RAM too small for the pool");
	if (shuffle) {
		uint64_t x = 88172645463325252ULL;

		for (uint64_t i = n - 1; i > 0; i--) {
			uint64_t j, t;
			uint32_t tp;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			j = x % (i + 1);
			tp = pl->pfns[i];
			pl->pfns[i] = pl->pfns[j];
			pl->pfns[j] = tp;
			t = pl->offs[i];
			pl->offs[i] = pl->offs[j];
			pl->offs[j] = t;
		}
	}
	pl->max_pfn = 0;
	for (uint64_t i = 0; i < n; i++)
		if (pl->pfns[i] > pl->max_pfn)
			pl->max_pfn = pl->pfns[i];
}

static void pool_free(struct pool *pl)
{
	free(pl->pfns);
	free(pl->offs);
}

/* Contiguous runs inside each 256-PFN array: the fallocate calls a merging device makes. */
static uint64_t pool_runs(const struct pool *pl)
{
	uint64_t runs = 0;

	for (uint64_t i = 0; i < pl->npages; i++)
		runs += i % PFNS_PER_BUF == 0 || pl->offs[i] != pl->offs[i - 1] + P;
	return runs;
}

static long long fd_blocks(int fd)
{
	struct stat st;

	if (fstat(fd, &st))
		die("fstat");
	return (long long)st.st_blocks;
}

static long long mem_blocks(const struct guest_mem *m)
{
	return fd_blocks(m->regions[0].memfd);	/* one memfd for all regions */
}

/* ---- kumo: the driver in this process, the device on its I/O thread ---- */

struct drv {
	struct guest_mem m;
	struct dev_env env;
	struct virtio_dev *vdev;
	uint16_t avail_idx[2], used_seen[2];
	uint32_t actual;	/* pages the driver holds (config `actual`) */
};

static void *g(struct drv *d, uint64_t gpa, uint64_t len)
{
	void *p = mm_gpa_to_hva(&d->m, gpa, len);

	if (!p)
		die("ring or buffer outside guest RAM");
	return p;
}

static void desc(struct drv *d, int q, unsigned int i, uint64_t addr, uint32_t len)
{
	uint8_t *p = g(d, DESC_GPA(q) + 16ULL * i, 16);
	uint16_t flags = 0, next = 0;	/* one device-readable buffer, as sg_init_one() */

	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* Linux's probe path: reset, ACK, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. */
static void drv_open(struct drv *d, uint64_t ram)
{
	struct balloon_options o = { 0 };	/* defaults: no stats, no poison, no hinting */
	uint64_t offered;

	memset(d, 0, sizeof(*d));
	if (mm_init(&d->m, ram))
		die("mm_init");
	/* Every page touched, so the memfd really holds the memory. */
	for (int i = 0; i < d->m.nr_regions; i++)
		for (uint64_t off = 0; off < d->m.regions[i].size; off += P)
			d->m.regions[i].hva[off] = 0x5a;
	d->env.mem = &d->m;
	if (virtio_balloon_create(&d->env, &d->m, &o, &d->vdev))
		die("virtio_balloon_create");
	d->vdev->tops = &fake_tops;
	d->vdev->status = VIRTIO_STATUS_ACKNOWLEDGE;
	d->vdev->status |= VIRTIO_STATUS_DRIVER;
	/* The transport offers VERSION_1 (virtio-pci adds it); Linux takes what it knows. */
	offered = d->vdev->device_features | BIT(VIRTIO_F_VERSION_1);
	d->vdev->driver_features = offered & LINUX_BALLOON_FEATURES;
	/* virtballoon_validate(): PAGE_POISON only with init_on_free/page poisoning (off). */
	d->vdev->driver_features &= ~BIT(VIRTIO_BALLOON_F_PAGE_POISON);
	if (d->vdev->driver_features & ~offered ||
	    !(d->vdev->driver_features & BIT(VIRTIO_F_VERSION_1)))
		die("feature negotiation");
	d->vdev->status |= VIRTIO_STATUS_FEATURES_OK;
	if (virtio_balloon_queue(d->vdev, BALLOON_Q_INFLATE) != 0 ||
	    virtio_balloon_queue(d->vdev, BALLOON_Q_DEFLATE) != 1)
		die("queue numbering");
	for (int q = 0; q < 2; q++) {
		struct virtq *vq = &d->vdev->vqs[q];

		memset(g(d, DESC_GPA(q), 0x10000), 0, 0x10000);
		vq->size = QSIZE;
		vq->desc_gpa = DESC_GPA(q);
		vq->avail_gpa = AVAIL_GPA(q);
		vq->used_gpa = USED_GPA(q);
		virtq_reset(vq);
		vq->event_idx = virtio_has_feature(d->vdev, VIRTIO_F_EVENT_IDX);
		vq->indirect = virtio_has_feature(d->vdev, VIRTIO_F_INDIRECT_DESC);
		__atomic_store_n(&vq->ready, 1, __ATOMIC_RELEASE);
	}
	d->vdev->status |= VIRTIO_STATUS_DRIVER_OK;
	if (virtio_dev_activate(d->vdev))
		die("activate");
}

static void drv_close(struct drv *d)
{
	virtio_balloon_destroy(d->vdev);
	mm_free(&d->m);
}

static void fill(struct drv *d, int q, unsigned int slot, const struct pool *pl, uint64_t buf)
{
	uint64_t first = buf * PFNS_PER_BUF;
	uint64_t n = pl->npages - first < PFNS_PER_BUF ? pl->npages - first : PFNS_PER_BUF;
	uint16_t *avail = g(d, AVAIL_GPA(q), 6 + 2 * QSIZE);

	/* le32 PFNs (x86 is little-endian). */
	memcpy(g(d, BUF_GPA(q, slot), n * 4), &pl->pfns[first], n * 4);
	desc(d, q, slot, BUF_GPA(q, slot), (uint32_t)(n * 4));
	avail[2 + (d->avail_idx[q] & (QSIZE - 1))] = (uint16_t)slot;
	d->avail_idx[q]++;
}

static void kick(struct drv *d, int q)
{
	uint16_t *avail = g(d, AVAIL_GPA(q), 6 + 2 * QSIZE);
	uint16_t *used = g(d, USED_GPA(q), 6 + 8 * QSIZE);
	uint64_t one = 1;

	__atomic_store_n(&avail[1], d->avail_idx[q], __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* No EVENT_IDX offered: virtqueue_kick_prepare() looks at VRING_USED_F_NO_NOTIFY. */
	if (__atomic_load_n(&used[0], __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY)
		return;
	if (write(d->vdev->kick_fd[q], &one, 8) != 8)
		die("kick");
}

/*
 * Send every PFN of pl on queue q, up to QSIZE buffers in flight; seconds from the first kick
 * to the last completion.
 */
static double run_queue(struct drv *d, int q, const struct pool *pl)
{
	uint64_t nbufs = (pl->npages + PFNS_PER_BUF - 1) / PFNS_PER_BUF, next = 0, done = 0;
	uint16_t *used = g(d, USED_GPA(q), 6 + 8 * QSIZE);
	struct pollfd p = { .fd = irq_fd, .events = POLLIN };
	double t0;

	for (unsigned int s = 0; s < QSIZE && next < nbufs; s++)
		fill(d, q, s, pl, next++);
	t0 = now();
	kick(d, q);
	while (done < nbufs) {
		uint16_t idx = __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
		uint64_t v, pages = 0;
		int added = 0;

		if (idx == d->used_seen[q]) {
			if (poll(&p, 1, 10000) <= 0)
				die("no completion within 10 s");
			if (read(irq_fd, &v, 8) < 0)
				v = 0;
			continue;
		}
		while (d->used_seen[q] != idx) {
			uint32_t e[2];

			memcpy(e, &used[2 + 4 * (d->used_seen[q] & (QSIZE - 1))], 8);
			d->used_seen[q]++;
			if (e[0] >= QSIZE)
				die("bad used id");
			done++;
			pages += PFNS_PER_BUF;
			if (next < nbufs) {
				fill(d, q, e[0], pl, next++);
				added = 1;
			}
		}
		if (added)
			kick(d, q);
		/* update_balloon_size(): the driver tells the host what it now holds. */
		if (q == 0)
			d->actual = (uint32_t)(d->actual + pages > pl->npages ? pl->npages
									: d->actual + pages);
		else
			d->actual = d->actual > pages ? (uint32_t)(d->actual - pages) : 0;
		d->vdev->ops->config_write(d->vdev, 4, &d->actual, 4);
	}
	return now() - t0;
}

static void check_dev(struct drv *d, const char *when)
{
	if (d->vdev->status & VIRTIO_STATUS_NEEDS_RESET) {
		fprintf(stderr, "bench-balloon: device needs reset %s\n", when);
		die("device state");
	}
}

static void run_kumo(uint64_t bytes, unsigned int gib, int shuffle)
{
	uint64_t ram = bytes + RESERVE, actual, target;
	struct balloon_counters c;
	struct mm_pagestate *ps;
	struct pool pl;
	struct drv d;
	long long before, after;
	double t;

	drv_open(&d, ram);
	ps = virtio_balloon_pagestate(d.vdev);
	pool_build(&pl, &d.m, bytes, shuffle);
	fprintf(stderr, "bench-balloon: %u GiB, %llu pages in %llu buffers, %llu runs (%s)\n",
		gib, (unsigned long long)pl.npages,
		(unsigned long long)((pl.npages + PFNS_PER_BUF - 1) / PFNS_PER_BUF),
		(unsigned long long)pool_runs(&pl), shuffle ? "shuffled" : "ascending");

	/* Inflate. */
	if (virtio_balloon_set_target(d.vdev, bytes))
		die("set_target");
	virtio_balloon_get(d.vdev, NULL, &target);
	if (target != bytes || !__atomic_load_n(&config_irqs, __ATOMIC_SEQ_CST))
		die("target / config interrupt");
	before = mem_blocks(&d.m);
	t = run_queue(&d, 0, &pl);
	after = mem_blocks(&d.m);
	check_dev(&d, "after inflate");
	virtio_balloon_counters(d.vdev, &c);
	if (c.inflated != pl.npages || c.bad_pfn || c.duplicate || c.past_target ||
	    c.release_errors || mm_pagestate_count(ps, MM_PAGE_BALLOONED) != pl.npages) {
		fprintf(stderr, "bench-balloon: inflated %llu of %llu (bad %llu dup %llu past "
			"%llu release errors %llu)\n", (unsigned long long)c.inflated,
			(unsigned long long)pl.npages, (unsigned long long)c.bad_pfn,
			(unsigned long long)c.duplicate, (unsigned long long)c.past_target,
			(unsigned long long)c.release_errors);
		die("inflate counters");
	}
	fprintf(stderr, "bench-balloon: memfd %lld -> %lld KiB (released %lld KiB, expected %llu)\n",
		before / 2, after / 2, (before - after) / 2, (unsigned long long)(bytes >> 10));
	if (before - after != (long long)(bytes >> 9))
		die("memfd st_blocks: the inflated memory was not given back");
	virtio_balloon_get(d.vdev, &actual, NULL);
	if (actual != bytes)
		die("config actual after inflate");
	printf("kumo inflate-%uGiB %.1f MiB/s\n", gib, (double)(bytes >> 20) / t);
	fflush(stdout);

	/* Deflate the same pages, the same way. */
	if (virtio_balloon_set_target(d.vdev, 0))
		die("set_target 0");
	t = run_queue(&d, 1, &pl);
	check_dev(&d, "after deflate");
	virtio_balloon_counters(d.vdev, &c);
	if (c.deflated != pl.npages || c.not_ballooned || c.bad_pfn ||
	    mm_pagestate_count(ps, MM_PAGE_BALLOONED) != 0)
		die("deflate counters");
	virtio_balloon_get(d.vdev, &actual, NULL);
	if (actual != 0)
		die("config actual after deflate");
	if (mem_blocks(&d.m) != after)
		die("deflate changed the memfd");	/* nothing touched the pages yet */
	printf("kumo deflate-%uGiB %.1f MiB/s\n", gib, (double)(bytes >> 20) / t);
	fflush(stdout);
	pool_free(&pl);
	drv_close(&d);
}

/* ---- raw floor ---- */

static void raw_touch(uint8_t *hva, uint64_t size)
{
	for (uint64_t off = 0; off < size; off += P)
		hva[off] = 0x5a;
}

static double raw_punch(int fd, const struct pool *pl, int batched)
{
	double t0 = now();

	for (uint64_t i = 0; i < pl->npages;) {
		uint64_t off = pl->offs[i], len = P;

		i++;
		if (batched)
			while (i < pl->npages && i % PFNS_PER_BUF && pl->offs[i] == off + len) {
				len += P;
				i++;
			}
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) < 0)
			die("fallocate");
	}
	return now() - t0;
}

static void run_raw(uint64_t bytes, unsigned int gib, int shuffle)
{
	uint64_t ram = bytes + RESERVE;
	struct guest_mem layout;
	struct pool pl;
	uint64_t *bitmap, words, cleared = 0;
	uint8_t *hva;
	long long before, after;
	double t;
	int fd;

	/* The same pages (memfd offsets) in the same order as the kumo run. */
	if (mm_init(&layout, ram))
		die("mm_init");
	pool_build(&pl, &layout, bytes, shuffle);
	mm_free(&layout);

	fd = memfd_create("bench-balloon-raw", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)ram))
		die("memfd");
	hva = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (hva == MAP_FAILED)
		die("mmap");
	for (int batched = 0; batched < 2; batched++) {
		raw_touch(hva, ram);
		before = fd_blocks(fd);
		t = raw_punch(fd, &pl, batched);
		after = fd_blocks(fd);
		if (before - after != (long long)(bytes >> 9))
			die("raw memfd st_blocks");
		printf("raw inflate-%s%uGiB %.1f MiB/s\n", batched ? "batched-" : "", gib,
		       (double)(bytes >> 20) / t);
		fflush(stdout);
	}
	munmap(hva, ram);
	close(fd);

	/* Deflate: the bare bookkeeping, a bitmap bit per page cleared. */
	words = ((uint64_t)pl.max_pfn >> 6) + 1;
	bitmap = calloc(words, 8);
	if (!bitmap)
		die("out of memory");
	for (uint64_t i = 0; i < pl.npages; i++)
		bitmap[pl.pfns[i] >> 6] |= 1ULL << (pl.pfns[i] & 63);
	t = now();
	for (uint64_t b = 0; b < pl.npages; b += PFNS_PER_BUF) {
		const uint32_t *a = &pl.pfns[b];
		uint64_t n = pl.npages - b < PFNS_PER_BUF ? pl.npages - b : PFNS_PER_BUF;

		for (uint64_t i = 0; i < n; i++) {
			uint32_t pfn = a[i];
			uint64_t bit = 1ULL << (pfn & 63);

			if (pfn > pl.max_pfn || !(bitmap[pfn >> 6] & bit))
				continue;
			bitmap[pfn >> 6] &= ~bit;
			cleared++;
		}
		__asm__ volatile("" ::: "memory");
	}
	t = now() - t;
	if (cleared != pl.npages)
		die("raw deflate bookkeeping");
	printf("raw deflate-%uGiB %.1f MiB/s\n", gib, (double)(bytes >> 20) / t);
	fflush(stdout);
	free(bitmap);
	pool_free(&pl);
}

int main(int argc, char **argv)
{
	long gib = argc > 1 ? atol(argv[1]) : 1;
	int runs = argc > 2 ? atoi(argv[2]) : 1;
	int shuffle = argc > 3 && !strcmp(argv[3], "shuffle");

	if (gib < 1 || gib > 64 || runs < 1 ||
	    (argc > 3 && strcmp(argv[3], "seq") && strcmp(argv[3], "shuffle"))) {
		fprintf(stderr, "usage: bench-balloon [GiB (1)] [runs (1)] [seq|shuffle]\n");
		return 2;
	}
	irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (irq_fd < 0)
		die("eventfd");
	for (int r = 0; r < runs; r++) {
		run_kumo((uint64_t)gib << 30, (unsigned int)gib, shuffle);
		run_raw((uint64_t)gib << 30, (unsigned int)gib, shuffle);
	}
	return 0;
}
