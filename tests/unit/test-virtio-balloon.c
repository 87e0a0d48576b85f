/*
 * virtio-balloon without KVM: the test plays the guest driver over a fake transport (rings in
 * a 64 MiB guest_mem backed by a real memfd, doorbell = write to vdev->kick_fd[q]) and checks
 * what the host gave back through the memfd itself (SEEK_DATA, st_blocks).
 */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio-balloon.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "tests/harness.h"
#include "vmm/devenv.h"

#define MEM_SIZE (64ULL << 20)
#define QSIZE VIRTIO_BALLOON_QUEUE_SIZE
#define P 4096ULL
#define DESC_GPA(q) (0x100000ULL + (q) * 0x10000ULL)
#define AVAIL_GPA(q) (DESC_GPA(q) + 0x4000)
#define USED_GPA(q) (DESC_GPA(q) + 0x8000)
#define BUF_GPA(q) (0x200000ULL + (q) * 0x10000ULL)	/* per-queue driver buffers */
#define POOL 0x1000000ULL				/* the pages we balloon: 16 MiB on */
#define POOL_PAGES 1024

#define F_NEXT 1
#define F_WRITE 2

#define BIT(f) (1ULL << (f))

struct tb {
	struct guest_mem m;
	struct dev_env env;
	struct virtio_dev *vdev;
	uint16_t avail_idx[8], used_seen[8];
};

static int irq_fd = -1;
static int cfg_irqs;

static void fake_notify_queue(struct virtio_dev *vdev, unsigned int q)
{
	uint64_t one = 1;

	if (write(irq_fd, &one, 8) != 8)
		abort();
}

static void fake_notify_config(struct virtio_dev *vdev)
{
	__atomic_fetch_add(&cfg_irqs, 1, __ATOMIC_SEQ_CST);
	fake_notify_queue(vdev, 0);
}

static const struct virtio_transport_ops fake_tops = {
	.notify_queue = fake_notify_queue, .notify_config = fake_notify_config,
};

static void *g(struct tb *t, uint64_t gpa, uint64_t len)
{
	void *p = mm_gpa_to_hva(&t->m, gpa, len);

	if (!p)
		abort();
	return p;
}

static uint16_t *avail(struct tb *t, int q) { return g(t, AVAIL_GPA(q), 6 + 2 * QSIZE); }
static uint16_t *used16(struct tb *t, int q) { return g(t, USED_GPA(q), 6 + 8 * QSIZE); }

static int nq_for(uint64_t f)
{
	return 2 + !!(f & BIT(VIRTIO_BALLOON_F_STATS_VQ)) +
	       !!(f & BIT(VIRTIO_BALLOON_F_FREE_PAGE_HINT)) +
	       !!(f & BIT(VIRTIO_BALLOON_F_REPORTING));
}

/* Offer everything o asks for, accept only `accept`, set up the queues, DRIVER_OK. */
static int tb_open(struct tb *t, const struct balloon_options *o, uint64_t accept)
{
	uint64_t drain;
	int nq;

	memset(t, 0, sizeof(*t));
	if (irq_fd < 0)
		irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (read(irq_fd, &drain, 8) < 0)
		drain = 0;
	cfg_irqs = 0;
	if (mm_init(&t->m, MEM_SIZE))
		return -1;
	t->env.mem = &t->m;
	if (virtio_balloon_create(&t->env, &t->m, o, &t->vdev))
		return -1;
	t->vdev->tops = &fake_tops;
	t->vdev->driver_features = t->vdev->device_features & (accept | BIT(VIRTIO_F_VERSION_1));
	nq = nq_for(t->vdev->driver_features);
	for (int q = 0; q < nq; q++) {
		struct virtq *vq = &t->vdev->vqs[q];

		memset(g(t, DESC_GPA(q), 0x10000), 0, 0x10000);
		vq->size = QSIZE;
		vq->desc_gpa = DESC_GPA(q);
		vq->avail_gpa = AVAIL_GPA(q);
		vq->used_gpa = USED_GPA(q);
		vq->ready = 1;
	}
	memset(g(t, BUF_GPA(0), 8 * 0x10000), 0, 8 * 0x10000);	/* allocated before we count */
	/* The pool pages hold data the guest wrote: releasing them is observable. */
	memset(g(t, POOL, POOL_PAGES * P), 0x5a, POOL_PAGES * P);
	t->vdev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			  VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	return virtio_dev_activate(t->vdev);
}

static void tb_close(struct tb *t)
{
	if (t->vdev)
		virtio_balloon_destroy(t->vdev);
	mm_free(&t->m);
}

static void desc(struct tb *t, int q, unsigned int i, uint64_t addr, uint32_t len,
		 uint16_t flags, uint16_t next)
{
	uint8_t *d = g(t, DESC_GPA(q) + 16ULL * i, 16);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void publish(struct tb *t, int q, uint16_t head)
{
	uint16_t *a = avail(t, q);

	a[2 + (t->avail_idx[q] & (QSIZE - 1))] = head;
	t->avail_idx[q]++;
	__atomic_store_n(&a[1], t->avail_idx[q], __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static void kick(struct tb *t, int q)
{
	uint64_t one = 1;

	if (write(t->vdev->kick_fd[q], &one, 8) != 8)
		abort();
}

/* Wait for the next used entry of q; -ETIMEDOUT if it does not come. */
static int wait_used(struct tb *t, int q, uint32_t *id, int timeout_ms)
{
	uint16_t *u = used16(t, q);
	struct pollfd p = { .fd = irq_fd, .events = POLLIN };
	uint64_t v;

	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		if (__atomic_load_n(&u[1], __ATOMIC_ACQUIRE) != t->used_seen[q]) {
			uint32_t e[2];

			memcpy(e, &u[2 + 4 * (t->used_seen[q] & (QSIZE - 1))], 8);
			t->used_seen[q]++;
			if (id)
				*id = e[0];
			return 0;
		}
		if (poll(&p, 1, 10) > 0 && read(irq_fd, &v, 8) < 0)
			v = 0;
	}
	return -ETIMEDOUT;
}

/* One device-readable buffer on queue q, processed to completion. */
static int send_out(struct tb *t, int q, const void *buf, uint32_t len)
{
	memcpy(g(t, BUF_GPA(q), len ? len : 1), buf, len);
	desc(t, q, 0, BUF_GPA(q), len, 0, 0);
	publish(t, q, 0);
	kick(t, q);
	return wait_used(t, q, NULL, 5000);
}

static int send_pfns(struct tb *t, int q, const uint32_t *pfns, unsigned int n)
{
	return send_out(t, q, pfns, n * 4);
}

static uint32_t pool_pfn(unsigned int i)
{
	return (uint32_t)((POOL >> 12) + i);
}

static int is_data(struct tb *t, uint64_t gpa)
{
	return lseek(mm_region(&t->m, 0)->memfd, (off_t)gpa, SEEK_DATA) == (off_t)gpa;
}

/* Pool pages that are holes in the memfd. */
static unsigned int pool_holes(struct tb *t)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < POOL_PAGES; i++)
		n += !is_data(t, POOL + i * P);
	return n;
}

static long long blocks(struct tb *t)
{
	struct stat st;

	return fstat(mm_region(&t->m, 0)->memfd, &st) ? -1 : (long long)st.st_blocks;
}

static uint32_t cfg32(struct tb *t, uint32_t off)
{
	uint32_t v;

	t->vdev->ops->config_read(t->vdev, off, &v, 4);
	return v;
}

static void drv_set_actual(struct tb *t, uint32_t pages)
{
	t->vdev->ops->config_write(t->vdev, 4, &pages, 4);
}

static void test_inflate_deflate(void)
{
	struct balloon_options o = { 0 };
	struct tb t;
	uint32_t pfns[64];
	uint64_t actual, target;
	long long before;
	uint8_t *p;

	CHECK(!tb_open(&t, &o, 0));
	CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_INFLATE), 0);
	CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_DEFLATE), 1);
	CHECK(!virtio_balloon_set_target(t.vdev, 64 * P));
	CHECK_EQ(cfg_irqs, 1);
	CHECK_EQ(cfg32(&t, 0), 64);			/* num_pages */
	before = blocks(&t);
	for (int i = 0; i < 64; i++)
		pfns[i] = pool_pfn(i * 2);		/* every other page: 64 runs */
	CHECK(!send_pfns(&t, 0, pfns, 64));
	CHECK_EQ(pool_holes(&t), 64);
	for (int i = 0; i < 128; i++)
		CHECK_EQ(is_data(&t, POOL + i * P), i & 1);
	CHECK_EQ(before - blocks(&t), 64 * P / 512);
	CHECK_EQ(mm_pagestate_count(virtio_balloon_pagestate(t.vdev), MM_PAGE_BALLOONED), 64);
	drv_set_actual(&t, 64);
	virtio_balloon_get(t.vdev, &actual, &target);
	CHECK_EQ(actual, 64 * P);
	CHECK_EQ(target, 64 * P);
	CHECK_EQ(cfg32(&t, 4), 64);

	/* Deflate half: back to PRESENT, and they fault in as zero pages. */
	CHECK(!virtio_balloon_set_target(t.vdev, 32 * P));
	CHECK(!send_pfns(&t, 1, pfns, 32));
	CHECK_EQ(mm_pagestate_count(virtio_balloon_pagestate(t.vdev), MM_PAGE_BALLOONED), 32);
	CHECK_EQ(mm_pagestate_get(virtio_balloon_pagestate(t.vdev), POOL), MM_PAGE_PRESENT);
	p = g(&t, POOL, P);
	CHECK_EQ(p[0], 0);
	p[0] = 1;
	CHECK(is_data(&t, POOL));
	drv_set_actual(&t, 32);
	virtio_balloon_get(t.vdev, &actual, &target);
	CHECK_EQ(actual, 32 * P);
	CHECK_EQ(target, 32 * P);
	CHECK_EQ(virtio_balloon_set_target(t.vdev, MEM_SIZE + P), -ERANGE);

	/* Contiguous PFNs: one run, same result. */
	CHECK(!virtio_balloon_set_target(t.vdev, 32 * P + 200 * P));
	for (int i = 0; i < 64; i++)
		pfns[i] = pool_pfn(512 + i);
	CHECK(!send_pfns(&t, 0, pfns, 64));
	/* 64 still ballooned + 31 deflated but never touched again + these 64. */
	CHECK_EQ(pool_holes(&t), 32 + 31 + 64);
	CHECK_EQ(mm_pagestate_count(virtio_balloon_pagestate(t.vdev), MM_PAGE_BALLOONED), 96);
	tb_close(&t);
}

static void test_hostile_pfns(void)
{
	struct balloon_options o = { 0 };
	struct balloon_counters c;
	struct tb t;
	uint32_t pfns[32];
	unsigned int n = 0;
	long long before;

	CHECK(!tb_open(&t, &o, 0));
	CHECK(!virtio_balloon_set_target(&t.vdev[0], 10 * P));
	before = blocks(&t);
	pfns[n++] = 0xffffffff;				/* far outside RAM */
	pfns[n++] = (uint32_t)(MEM_SIZE >> 12);		/* first page past the end */
	pfns[n++] = (uint32_t)((3ULL << 30) >> 12);	/* the 32-bit hole */
	pfns[n++] = pool_pfn(0);
	pfns[n++] = pool_pfn(0);			/* duplicate in one buffer */
	for (unsigned int i = 1; i <= 12; i++)
		pfns[n++] = pool_pfn(i);		/* 12 more: 3 past the target */
	CHECK(!send_pfns(&t, 0, pfns, n));
	CHECK_EQ(pool_holes(&t), 10);
	for (unsigned int i = 0; i < 10; i++)
		CHECK(!is_data(&t, POOL + i * P));
	CHECK(is_data(&t, POOL + 10 * P));
	CHECK_EQ(before - blocks(&t), 10 * P / 512);	/* nothing anywhere else */
	virtio_balloon_counters(t.vdev, &c);
	CHECK_EQ(c.inflated, 10);
	CHECK_EQ(c.bad_pfn, 3);
	CHECK_EQ(c.duplicate, 1);
	CHECK_EQ(c.past_target, 3);

	/* The same pages again in a new buffer (with a partial trailing PFN): duplicates. */
	CHECK(!virtio_balloon_set_target(t.vdev, 100 * P));
	memcpy(pfns, &pfns[3], 4);
	pfns[1] = pool_pfn(0);
	pfns[2] = pool_pfn(20);
	CHECK(!send_out(&t, 0, pfns, 3 * 4 + 2));
	virtio_balloon_counters(t.vdev, &c);
	CHECK_EQ(c.duplicate, 3);
	CHECK_EQ(c.inflated, 11);
	CHECK_EQ(pool_holes(&t), 11);

	/* Deflating pages that are not in the balloon, or not RAM, changes nothing. */
	pfns[0] = pool_pfn(500);
	pfns[1] = 0xfffffff0;
	CHECK(!send_pfns(&t, 1, pfns, 2));
	virtio_balloon_counters(t.vdev, &c);
	CHECK_EQ(c.not_ballooned, 1);
	CHECK_EQ(c.deflated, 0);
	CHECK_EQ(mm_pagestate_count(virtio_balloon_pagestate(t.vdev), MM_PAGE_BALLOONED), 11);

	/* A zero-length buffer and a device-writable one are just returned. */
	CHECK(!send_out(&t, 0, pfns, 0));
	desc(&t, 0, 0, BUF_GPA(0), 64, F_WRITE, 0);
	publish(&t, 0, 0);
	kick(&t, 0);
	CHECK(!wait_used(&t, 0, NULL, 5000));
	CHECK_EQ(pool_holes(&t), 11);
	tb_close(&t);
}

static void put_stat(uint8_t *b, unsigned int i, uint16_t tag, uint64_t v)
{
	memcpy(b + 10 * i, &tag, 2);
	memcpy(b + 10 * i + 2, &v, 8);
}

static int wait_updates(struct tb *t, uint64_t n, struct balloon_stats *st)
{
	for (int i = 0; i < 500; i++) {
		if (!virtio_balloon_stats(t->vdev, st) && st->updates >= n)
			return 0;
		usleep(10000);
	}
	return -1;
}

static void test_stats(void)
{
	struct balloon_options o = { .stats = 1 };
	struct balloon_stats st;
	struct tb t;
	uint8_t buf[256];
	uint64_t t1;

	CHECK(!tb_open(&t, &o, BIT(VIRTIO_BALLOON_F_STATS_VQ)));
	CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_STATS), 2);
	CHECK(!virtio_balloon_stats(t.vdev, &st));
	CHECK_EQ(st.updated_ns, 0);
	put_stat(buf, 0, VIRTIO_BALLOON_S_MEMFREE, 1000);
	put_stat(buf, 1, VIRTIO_BALLOON_S_MEMTOT, 5000);
	put_stat(buf, 2, 20, 77);			/* unknown, kept */
	put_stat(buf, 3, 1000, 88);			/* beyond the table, dropped */
	memcpy(g(&t, BUF_GPA(2), 40), buf, 40);
	desc(&t, 2, 0, BUF_GPA(2), 40, 0, 0);
	publish(&t, 2, 0);
	kick(&t, 2);
	CHECK(!wait_updates(&t, 1, &st));
	CHECK_EQ(st.val[VIRTIO_BALLOON_S_MEMFREE], 1000);
	CHECK_EQ(st.val[VIRTIO_BALLOON_S_MEMTOT], 5000);
	CHECK_EQ(st.val[20], 77);
	CHECK_EQ(st.valid, BIT(4) | BIT(5) | BIT(20));
	CHECK_EQ(st.dropped_tags, 1);
	CHECK_EQ(st.malformed, 0);
	CHECK(st.updated_ns);
	t1 = st.updated_ns;
	/* The device holds the buffer until it wants fresh numbers. */
	CHECK_EQ(wait_used(&t, 2, NULL, 50), -ETIMEDOUT);
	CHECK(!virtio_balloon_request_stats(t.vdev));
	CHECK(!wait_used(&t, 2, NULL, 5000));
	/* The driver refills it: a truncated buffer (2 entries + 5 bytes). */
	put_stat(buf, 0, VIRTIO_BALLOON_S_MEMFREE, 900);
	put_stat(buf, 1, VIRTIO_BALLOON_S_AVAIL, 1200);
	memcpy(g(&t, BUF_GPA(2), 25), buf, 25);
	desc(&t, 2, 0, BUF_GPA(2), 25, 0, 0);
	publish(&t, 2, 0);
	kick(&t, 2);
	CHECK(!wait_updates(&t, 2, &st));
	CHECK_EQ(st.val[VIRTIO_BALLOON_S_MEMFREE], 900);
	CHECK_EQ(st.val[VIRTIO_BALLOON_S_AVAIL], 1200);
	CHECK_EQ(st.val[VIRTIO_BALLOON_S_MEMTOT], 5000);	/* latest value by tag */
	CHECK_EQ(st.malformed, 1);
	CHECK(st.updated_ns >= t1);
	/* A second buffer while we hold one: the old one comes back. */
	desc(&t, 2, 1, BUF_GPA(2), 3, 0, 0);	/* odd: 3 bytes, no whole entry */
	publish(&t, 2, 1);
	kick(&t, 2);
	CHECK(!wait_updates(&t, 3, &st));
	CHECK(!wait_used(&t, 2, NULL, 5000));
	CHECK_EQ(st.malformed, 2);
	CHECK_EQ(st.val[VIRTIO_BALLOON_S_MEMFREE], 900);
	tb_close(&t);

	/* Not negotiated: no stats. */
	CHECK(!tb_open(&t, &o, 0));
	CHECK_EQ(virtio_balloon_stats(t.vdev, &st), -ENODEV);
	CHECK_EQ(virtio_balloon_request_stats(t.vdev), -ENODEV);
	CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_STATS), -1);
	tb_close(&t);
}

static void test_stats_parser(void)
{
	struct balloon_stats st = { 0 };
	uint8_t b[64];

	put_stat(b, 0, 7, 0x1122334455667788ULL);
	put_stat(b, 1, 63, 1);
	put_stat(b, 2, 64, 2);
	CHECK_EQ(balloon_parse_stats(b, 30, &st), 2);
	CHECK_EQ(st.val[7], 0x1122334455667788ULL);
	CHECK_EQ(st.val[63], 1);
	CHECK_EQ(st.dropped_tags, 1);
	CHECK_EQ(st.malformed, 0);
	CHECK_EQ(balloon_parse_stats(b, 9, &st), 0);
	CHECK_EQ(st.malformed, 1);
	CHECK_EQ(balloon_parse_stats(b, 0, &st), 0);
	CHECK_EQ(st.malformed, 1);
	CHECK_EQ(balloon_parse_stats(b, 11, &st), 1);
	CHECK_EQ(st.malformed, 2);
}

static void test_reporting(void)
{
	struct balloon_options o = { .free_page_reporting = 1, .stats = 1 };
	struct mm_pagestate *ps;
	struct tb t;
	long long before;

	/* STATS_VQ offered but declined: the reporting queue moves down to 2. */
	CHECK(!tb_open(&t, &o, BIT(VIRTIO_BALLOON_F_REPORTING)));
	CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_REPORTING), 2);
	ps = virtio_balloon_pagestate(t.vdev);
	before = blocks(&t);
	/* One 2 MiB block and one unaligned buffer with a single whole page inside. */
	desc(&t, 2, 0, POOL, 512 * P, F_WRITE | F_NEXT, 1);
	desc(&t, 2, 1, POOL + 600 * P + 0x800, 0x2000, F_WRITE, 0);
	publish(&t, 2, 0);
	kick(&t, 2);
	CHECK(!wait_used(&t, 2, NULL, 5000));
	CHECK_EQ(pool_holes(&t), 513);
	CHECK(!is_data(&t, POOL + 601 * P));
	CHECK(is_data(&t, POOL + 600 * P));
	CHECK(is_data(&t, POOL + 602 * P));
	CHECK_EQ(before - blocks(&t), 513 * P / 512);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_REPORTED), 513);
	CHECK_EQ(mm_pagestate_get(ps, POOL + 601 * P), MM_PAGE_REPORTED);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_BALLOONED), 0);
	tb_close(&t);
}

static void test_hinting(void)
{
	struct balloon_options o = { .free_page_hint = 1 };
	struct balloon_counters c;
	struct mm_pagestate *ps;
	struct tb t;
	uint32_t id, bad, stop = VIRTIO_BALLOON_CMD_ID_STOP;
	int q;

	CHECK(!tb_open(&t, &o, BIT(VIRTIO_BALLOON_F_FREE_PAGE_HINT)));
	q = virtio_balloon_queue(t.vdev, BALLOON_Q_FREE_PAGE);
	CHECK_EQ(q, 2);
	ps = virtio_balloon_pagestate(t.vdev);
	CHECK_EQ(cfg32(&t, 8), VIRTIO_BALLOON_CMD_ID_STOP);
	id = virtio_balloon_start_hinting(t.vdev);
	CHECK(id >= VIRTIO_BALLOON_CMD_ID_MIN);
	CHECK_EQ(cfg32(&t, 8), id);
	CHECK_EQ(cfg_irqs, 1);
	/* Hints before the driver names the session are not recorded. */
	desc(&t, q, 0, POOL, 64 * P, F_WRITE, 0);
	publish(&t, q, 0);
	kick(&t, q);
	CHECK(!wait_used(&t, q, NULL, 5000));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 0);
	/* A wrong id, then hints: ignored. */
	bad = id + 5;
	CHECK(!send_out(&t, q, &bad, 4));
	desc(&t, q, 0, POOL, 64 * P, F_WRITE, 0);
	publish(&t, q, 0);
	kick(&t, q);
	CHECK(!wait_used(&t, q, NULL, 5000));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 0);
	/* The right id, then two hint blocks. */
	CHECK(!send_out(&t, q, &id, 4));
	desc(&t, q, 0, POOL, 64 * P, F_WRITE, 0);
	publish(&t, q, 0);
	desc(&t, q, 1, POOL + 256 * P, 16 * P, F_WRITE, 0);
	publish(&t, q, 1);
	kick(&t, q);
	CHECK(!wait_used(&t, q, NULL, 5000));
	CHECK(!wait_used(&t, q, NULL, 5000));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 80);
	CHECK_EQ(pool_holes(&t), 0);			/* hints are not released */
	CHECK_EQ(*(uint8_t *)g(&t, POOL + 5 * P, 1), 0x5a);
	/* The driver's STOP ends its session: later hints are ignored. */
	CHECK(!send_out(&t, q, &stop, 4));
	desc(&t, q, 0, POOL + 512 * P, 16 * P, F_WRITE, 0);
	publish(&t, q, 0);
	kick(&t, q);
	CHECK(!wait_used(&t, q, NULL, 5000));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 80);
	virtio_balloon_counters(t.vdev, &c);
	CHECK_EQ(c.hinted_bytes, 80 * P);
	virtio_balloon_stop_hinting(t.vdev);
	CHECK_EQ(cfg32(&t, 8), VIRTIO_BALLOON_CMD_ID_STOP);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 80);	/* kept until done */
	virtio_balloon_hinting_done(t.vdev);
	CHECK_EQ(cfg32(&t, 8), VIRTIO_BALLOON_CMD_ID_DONE);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 0);
	/* A new round gets a new id. */
	CHECK(virtio_balloon_start_hinting(t.vdev) == id + 1);
	tb_close(&t);

	CHECK(!tb_open(&t, &o, 0));
	CHECK_EQ(virtio_balloon_start_hinting(t.vdev), 0);
	tb_close(&t);
}

static void test_queue_numbering(void)
{
	static const struct { uint64_t f; int stats, hint, rep; } cases[] = {
		{ 0, -1, -1, -1 },
		{ BIT(VIRTIO_BALLOON_F_STATS_VQ), 2, -1, -1 },
		{ BIT(VIRTIO_BALLOON_F_REPORTING), -1, -1, 2 },
		{ BIT(VIRTIO_BALLOON_F_FREE_PAGE_HINT), -1, 2, -1 },
		{ BIT(VIRTIO_BALLOON_F_STATS_VQ) | BIT(VIRTIO_BALLOON_F_REPORTING), 2, -1, 3 },
		{ BIT(VIRTIO_BALLOON_F_FREE_PAGE_HINT) | BIT(VIRTIO_BALLOON_F_REPORTING), -1, 2, 3 },
		{ BIT(VIRTIO_BALLOON_F_STATS_VQ) | BIT(VIRTIO_BALLOON_F_FREE_PAGE_HINT) |
		  BIT(VIRTIO_BALLOON_F_REPORTING), 2, 3, 4 },
	};
	struct balloon_options o = { .stats_period = 60, .free_page_hint = 1,
				     .free_page_reporting = 1, .deflate_on_oom = 1 };

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tb t;

		CHECK(!tb_open(&t, &o, cases[i].f | BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM)));
		CHECK_EQ(t.vdev->nqueues, 5);
		CHECK(t.vdev->device_features & BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM));
		CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_INFLATE), 0);
		CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_DEFLATE), 1);
		CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_STATS), cases[i].stats);
		CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_FREE_PAGE), cases[i].hint);
		CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_REPORTING), cases[i].rep);
		tb_close(&t);
	}
	/* Options decide what is offered. */
	{
		struct balloon_options none = { 0 };
		struct tb t;

		CHECK(!tb_open(&t, &none, ~0ULL));
		CHECK_EQ(t.vdev->nqueues, 2);
		CHECK_EQ(virtio_balloon_queue(t.vdev, BALLOON_Q_REPORTING), -1);
		CHECK(!(t.vdev->device_features & BIT(VIRTIO_BALLOON_F_PAGE_POISON)));
		tb_close(&t);
	}
}

static void test_page_poison(void)
{
	struct balloon_options o = { .page_poison = 1, .free_page_reporting = 1 };
	uint64_t f = BIT(VIRTIO_BALLOON_F_PAGE_POISON) | BIT(VIRTIO_BALLOON_F_REPORTING);
	uint32_t pfns[4] = { pool_pfn(0), pool_pfn(1), pool_pfn(2), pool_pfn(3) };
	uint32_t poison = 0xaaaaaaaa, zero = 0;
	struct tb t;

	CHECK(!tb_open(&t, &o, f));
	t.vdev->ops->config_write(t.vdev, 12, &poison, 4);
	CHECK_EQ(cfg32(&t, 12), poison);
	CHECK(!virtio_balloon_set_target(t.vdev, 4 * P));
	memset(g(&t, POOL, 4 * P), 0xaa, 4 * P);
	CHECK(!send_pfns(&t, 0, pfns, 4));
	CHECK_EQ(mm_pagestate_count(virtio_balloon_pagestate(t.vdev), MM_PAGE_BALLOONED), 4);
	CHECK_EQ(pool_holes(&t), 0);				/* not punched ... */
	CHECK_EQ(*(uint32_t *)g(&t, POOL + 3 * P + 8, 4), poison);	/* ... poison kept */
	desc(&t, 2, 0, POOL + 512 * P, 512 * P, F_WRITE, 0);
	publish(&t, 2, 0);
	kick(&t, 2);
	CHECK(!wait_used(&t, 2, NULL, 5000));
	CHECK_EQ(pool_holes(&t), 0);
	tb_close(&t);

	/* poison_val 0 (init_on_free): a hole reads as the poison, so release. */
	CHECK(!tb_open(&t, &o, f));
	t.vdev->ops->config_write(t.vdev, 12, &zero, 4);
	CHECK(!virtio_balloon_set_target(t.vdev, 4 * P));
	CHECK(!send_pfns(&t, 0, pfns, 4));
	CHECK_EQ(pool_holes(&t), 4);
	tb_close(&t);
}

static void test_reset(void)
{
	struct balloon_options o = { 0 };
	uint32_t pfns[8];
	struct tb t;

	CHECK(!tb_open(&t, &o, 0));
	CHECK(!virtio_balloon_set_target(t.vdev, 8 * P));
	for (int i = 0; i < 8; i++)
		pfns[i] = pool_pfn(i);
	CHECK(!send_pfns(&t, 0, pfns, 8));
	drv_set_actual(&t, 8);
	virtio_dev_reset(t.vdev);
	CHECK_EQ(mm_pagestate_count(virtio_balloon_pagestate(t.vdev), MM_PAGE_BALLOONED), 0);
	CHECK_EQ(cfg32(&t, 4), 0);
	CHECK_EQ(cfg32(&t, 0), 8);			/* the host's target stays */
	tb_close(&t);
}

TEST_MAIN(TEST(test_inflate_deflate), TEST(test_hostile_pfns), TEST(test_stats),
	  TEST(test_stats_parser), TEST(test_reporting), TEST(test_hinting),
	  TEST(test_queue_numbering), TEST(test_page_poison), TEST(test_reset))
