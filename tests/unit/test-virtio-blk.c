/*
 * virtio-blk on a temporary file, without KVM: the test plays the guest driver (rings in a
 * guest_mem, doorbell = write to vdev->kick_fd[0], interrupt = the fake transport's eventfd)
 * and checks the used ring, status bytes and the file's bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio-blk.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "tests/state-store.h"
#include "vmm/devenv.h"

#define MEM_SIZE (64ULL << 20)
#define QSIZE VIRTIO_BLK_QUEUE_SIZE
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define HDR_GPA(s) (0x80000ULL + (s) * 64ULL)	/* header; status byte at +32 */
#define ST_GPA(s) (HDR_GPA(s) + 32)
#define TABLE_GPA(s) (0x100000ULL + (s) * 0x1000ULL)
#define DATA_GPA(s) (0x200000ULL + (s) * 0x100000ULL)	/* 1 MiB per slot, slots < 48 */
#define DISK_SIZE (16ULL << 20)

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

struct tb {
	struct guest_mem m;
	struct dev_env env;
	struct virtio_dev *vdev;
	char path[64];
	int fd;			/* the test's own view of the disk file */
	int event_idx;
	uint16_t avail_idx, used_seen, kicked_at;
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

static uint16_t *avail(struct tb *t) { return g(t, AVAIL_GPA, 6 + 2 * QSIZE); }
static uint16_t *used16(struct tb *t) { return g(t, USED_GPA, 6 + 8 * QSIZE); }

/* Guest side of activation: rings zeroed, features accepted, DRIVER_OK, device activated. */
static int tb_start(struct tb *t)
{
	struct virtio_dev *v = t->vdev;
	struct virtq *vq = &v->vqs[0];

	memset(g(t, DESC_GPA, 16 * QSIZE), 0, 16 * QSIZE);
	memset(avail(t), 0, 6 + 2 * QSIZE);
	memset(used16(t), 0, 6 + 8 * QSIZE);
	t->avail_idx = t->used_seen = t->kicked_at = 0;
	v->driver_features = v->device_features;
	if (!t->event_idx)
		v->driver_features &= ~(1ULL << VIRTIO_F_EVENT_IDX);
	vq->size = QSIZE;
	vq->desc_gpa = DESC_GPA;
	vq->avail_gpa = AVAIL_GPA;
	vq->used_gpa = USED_GPA;
	vq->ready = 1;
	v->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		    VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	return virtio_dev_activate(v);
}

static int tb_open(struct tb *t, const struct blk_options *o, int event_idx)
{
	struct blk_options def = { 0 };
	uint64_t drain;

	memset(t, 0, sizeof(*t));
	t->event_idx = event_idx;
	if (irq_fd < 0)
		irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (read(irq_fd, &drain, 8) < 0)
		drain = 0;
	cfg_irqs = 0;
	if (mm_init(&t->m, MEM_SIZE))
		return -1;
	t->env.mem = &t->m;
	strcpy(t->path, "/var/tmp/kumo-test-blk-XXXXXX");
	t->fd = mkstemp(t->path);
	if (t->fd < 0 || ftruncate(t->fd, DISK_SIZE))
		return -1;
	if (virtio_blk_create(&t->env, t->path, o ? o : &def, &t->vdev))
		return -1;
	t->vdev->tops = &fake_tops;
	return tb_start(t);
}

static void tb_close(struct tb *t)
{
	if (t->vdev)
		virtio_blk_destroy(t->vdev);
	close(t->fd);
	unlink(t->path);
	mm_free(&t->m);
}

static void desc(struct tb *t, unsigned int i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	uint8_t *d = g(t, DESC_GPA + 16ULL * i, 16);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void publish(struct tb *t, uint16_t head)
{
	uint16_t *a = avail(t);

	a[2 + (t->avail_idx & (QSIZE - 1))] = head;
	t->avail_idx++;
	__atomic_store_n(&a[1], t->avail_idx, __ATOMIC_RELEASE);
}

/* Ring the doorbell, honouring avail_event like a real driver when event idx is on. */
static void kick(struct tb *t)
{
	uint64_t one = 1;
	uint16_t old = t->kicked_at, new_idx = t->avail_idx, ev;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	t->kicked_at = new_idx;
	if (t->event_idx) {
		ev = __atomic_load_n(&used16(t)[2 + 4 * QSIZE], __ATOMIC_RELAXED);
		if ((uint16_t)(new_idx - ev - 1) >= (uint16_t)(new_idx - old))
			return;
	}
	if (write(t->vdev->kick_fd[0], &one, 8) != 8)
		abort();
}

/* Next used entry; waits for the interrupt (a lost one shows up as a timeout). */
static int wait_used(struct tb *t, uint32_t *id, uint32_t *len, int timeout_ms)
{
	uint16_t *u = used16(t);
	struct pollfd p = { .fd = irq_fd, .events = POLLIN };
	uint64_t v;

	for (;;) {
		avail(t)[2 + QSIZE] = t->used_seen;	/* used_event: interrupt me for the next */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&u[1], __ATOMIC_ACQUIRE) != t->used_seen) {
			uint32_t e[2];

			memcpy(e, &u[2 + 4 * (t->used_seen & (QSIZE - 1))], 8);
			t->used_seen++;
			*id = e[0];
			*len = e[1];
			return 0;
		}
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		if (read(irq_fd, &v, 8) < 0)
			v = 0;
	}
}

/* Lay out request `slot` (header, one data buffer, status) and publish it. */
static void put_req(struct tb *t, unsigned int slot, uint32_t type, uint64_t sector,
		    uint64_t data_gpa, uint32_t len)
{
	uint32_t hdr[4] = { type, 0, (uint32_t)sector, (uint32_t)(sector >> 32) };
	uint16_t d0 = (uint16_t)(slot * 4);
	int wr = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;

	memcpy(g(t, HDR_GPA(slot), 16), hdr, 16);
	*(uint8_t *)g(t, ST_GPA(slot), 1) = 0xee;
	desc(t, d0, HDR_GPA(slot), 16, F_NEXT, d0 + 1);
	if (len) {
		desc(t, d0 + 1, data_gpa, len, F_NEXT | (wr ? F_WRITE : 0), d0 + 2);
		desc(t, d0 + 2, ST_GPA(slot), 1, F_WRITE, 0);
	} else {
		desc(t, d0 + 1, ST_GPA(slot), 1, F_WRITE, 0);
	}
	publish(t, d0);
}

/* One request start to finish; returns the status byte (or -1 on a protocol problem). */
static int do_req(struct tb *t, uint32_t type, uint64_t sector, uint64_t data_gpa, uint32_t len,
		  uint32_t *used_len)
{
	uint32_t id, l;

	put_req(t, 0, type, sector, data_gpa, len);
	kick(t);
	if (wait_used(t, &id, &l, 5000) || id != 0) {
		fprintf(stderr, "  no completion (id %u)\n", id);
		return -1;
	}
	if (used_len)
		*used_len = l;
	return *(uint8_t *)g(t, ST_GPA(0), 1);
}

static void fill(uint8_t *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
}

static int file_equals(struct tb *t, uint64_t off, const void *data, size_t n)
{
	uint8_t *buf = malloc(n);
	int ok = buf && pread(t->fd, buf, n, (off_t)off) == (ssize_t)n && !memcmp(buf, data, n);

	free(buf);
	return ok;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static void test_config(void)
{
	struct tb t;
	struct virtio_blk_config c;
	uint8_t tail[8];
	uint64_t f;

	CHECK(!tb_open(&t, NULL, 1));
	t.vdev->ops->config_read(t.vdev, 0, &c, sizeof(c));
	CHECK_EQ(c.capacity, DISK_SIZE / 512);
	CHECK(c.blk_size >= 512 && !(c.blk_size & (c.blk_size - 1)));
	CHECK_EQ(c.seg_max, VIRTQ_MAX_SEGS - 2);
	CHECK_EQ(c.max_discard_seg, VIRTIO_BLK_MAX_DWZ_SEGS);
	CHECK_EQ(c.num_queues, 1);
	memset(tail, 0xff, sizeof(tail));
	t.vdev->ops->config_read(t.vdev, sizeof(c) - 4, tail, sizeof(tail));	/* past the end */
	CHECK(all_zero(tail + 4, 4));
	f = t.vdev->device_features;
	CHECK(f & (1ULL << VIRTIO_BLK_F_FLUSH));
	CHECK(f & (1ULL << VIRTIO_BLK_F_DISCARD));
	CHECK(f & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES));
	CHECK(f & (1ULL << VIRTIO_F_EVENT_IDX));
	CHECK(f & (1ULL << VIRTIO_F_INDIRECT_DESC));
	CHECK(!(f & (1ULL << VIRTIO_BLK_F_RO)));
	CHECK_EQ(t.vdev->ops->device_id, 2);
	CHECK_EQ(t.vdev->ops->pci_class, 0x018000);
	tb_close(&t);
}

static void rw_roundtrip(int cache_host, int event_idx)
{
	struct blk_options o = { .cache_host = cache_host };
	const uint32_t n = 64 << 10;
	struct tb t;
	uint8_t *src, *dst;
	uint32_t ul;

	CHECK(!tb_open(&t, &o, event_idx));
	src = g(&t, DATA_GPA(0), n);
	dst = g(&t, DATA_GPA(1), n);
	for (unsigned int round = 0; round < 4; round++) {
		uint64_t sector = 8 + round * 1000;

		fill(src, n, round + 1);
		CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, sector, DATA_GPA(0), n, &ul),
			 VIRTIO_BLK_S_OK);
		CHECK_EQ(ul, 1);
		CHECK(file_equals(&t, sector * 512, src, n));
		memset(dst, 0, n);
		CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, sector, DATA_GPA(1), n, &ul),
			 VIRTIO_BLK_S_OK);
		CHECK_EQ(ul, n + 1);
		CHECK(!memcmp(src, dst, n));
	}
	CHECK(((struct virtio_blk *)t.vdev->priv)->stats_write_bytes == 4ULL * n);
	tb_close(&t);
}

static void test_rw_cache_none(void) { rw_roundtrip(0, 1); }
static void test_rw_cache_host(void) { rw_roundtrip(1, 1); }
static void test_rw_no_event_idx(void) { rw_roundtrip(0, 0); }

static void test_read_file_pattern(void)
{
	const uint32_t n = 128 << 10;
	uint8_t *pat = malloc(n);
	struct tb t;

	CHECK(pat);
	for (int cache = 0; cache < 2; cache++) {
		struct blk_options o = { .cache_host = cache };

		CHECK(!tb_open(&t, &o, 1));
		fill(pat, n, 77 + cache);
		CHECK_EQ(pwrite(t.fd, pat, n, 1 << 20), (ssize_t)n);
		CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, (1 << 20) / 512, DATA_GPA(2), n, NULL),
			 VIRTIO_BLK_S_OK);
		CHECK(!memcmp(g(&t, DATA_GPA(2), n), pat, n));
		/* The last sector of the disk. */
		CHECK_EQ(pwrite(t.fd, pat, 512, DISK_SIZE - 512), 512);
		CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, DATA_GPA(2), 512, NULL),
			 VIRTIO_BLK_S_OK);
		CHECK(!memcmp(g(&t, DATA_GPA(2), 512), pat, 512));
		tb_close(&t);
	}
	free(pat);
}

/* O_DIRECT with buffers the host cannot DMA to directly: still correct. */
static void test_unaligned_buffers(void)
{
	struct blk_options o = { 0 };
	const uint32_t n = 8192;
	uint8_t *pat = malloc(n);
	struct tb t;
	uint32_t id, l;

	CHECK(pat);
	CHECK(!tb_open(&t, &o, 1));
	fill(pat, n, 5);
	memcpy(g(&t, DATA_GPA(0) + 3, n), pat, n);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, 64, DATA_GPA(0) + 3, n, NULL), VIRTIO_BLK_S_OK);
	CHECK(file_equals(&t, 64 * 512, pat, n));
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, 64, DATA_GPA(1) + 7, n, NULL), VIRTIO_BLK_S_OK);
	CHECK(!memcmp(g(&t, DATA_GPA(1) + 7, n), pat, n));
	/* Header split in two, data in odd pieces, status as the last byte of the data. */
	{
		uint32_t type = VIRTIO_BLK_T_IN, ioprio = 0;
		uint64_t sector = 64;

		memcpy(g(&t, HDR_GPA(0), 4), &type, 4);
		memcpy(g(&t, HDR_GPA(1), 4), &ioprio, 4);
		memcpy(g(&t, HDR_GPA(1) + 4, 8), &sector, 8);
	}
	desc(&t, 0, HDR_GPA(0), 4, F_NEXT, 1);
	desc(&t, 1, HDR_GPA(1), 12, F_NEXT, 2);
	desc(&t, 2, DATA_GPA(2), 100, F_NEXT | F_WRITE, 3);
	desc(&t, 3, DATA_GPA(2) + 100, 924 + 1, F_WRITE, 0);
	*(uint8_t *)g(&t, DATA_GPA(2) + 1024, 1) = 0xee;
	publish(&t, 0);
	kick(&t);
	CHECK(!wait_used(&t, &id, &l, 5000));
	CHECK_EQ(id, 0);
	CHECK_EQ(l, 1025);
	CHECK_EQ(*(uint8_t *)g(&t, DATA_GPA(2) + 1024, 1), VIRTIO_BLK_S_OK);
	CHECK(!memcmp(g(&t, DATA_GPA(2), 1024), pat, 1024));
	tb_close(&t);
	free(pat);
}

static void test_flush_and_get_id(void)
{
	struct blk_options o = { 0 };
	struct tb t;
	uint32_t ul;
	uint8_t *id;

	strcpy(o.serial, "kumo-serial-1");
	CHECK(!tb_open(&t, &o, 1));
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, &ul), VIRTIO_BLK_S_OK);
	CHECK_EQ(ul, 1);
	id = g(&t, DATA_GPA(0), 32);
	memset(id, 0xaa, 32);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_GET_ID, 0, DATA_GPA(0), 20, &ul), VIRTIO_BLK_S_OK);
	CHECK_EQ(ul, 21);
	CHECK(!memcmp(id, "kumo-serial-1", 13));
	CHECK(all_zero(id + 13, 7));
	CHECK_EQ(id[20], 0xaa);
	tb_close(&t);
	/* A 20-byte serial fills the field without a terminator. */
	strcpy(o.serial, "ABCDEFGHIJKLMNOPQRST");
	CHECK(!tb_open(&t, &o, 1));
	id = g(&t, DATA_GPA(0), 32);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_GET_ID, 0, DATA_GPA(0), 20, NULL), VIRTIO_BLK_S_OK);
	CHECK(!memcmp(id, "ABCDEFGHIJKLMNOPQRST", 20));
	tb_close(&t);
}

static void put_seg(struct tb *t, uint64_t gpa, uint64_t sector, uint32_t num, uint32_t flags)
{
	struct blk_dwz_seg s = { sector, num, flags };

	memcpy(g(t, gpa, 16), &s, 16);
}

static void test_discard(void)
{
	const uint32_t n = 4 << 20;
	uint8_t *buf = malloc(n);
	struct tb t;
	struct stat st0, st1;

	CHECK(buf);
	CHECK(!tb_open(&t, NULL, 1));
	fill(buf, n, 9);
	CHECK_EQ(pwrite(t.fd, buf, n, 0), (ssize_t)n);
	CHECK(!fsync(t.fd));
	CHECK(!fstat(t.fd, &st0));
	put_seg(&t, DATA_GPA(0), 2048, 2048, 0);	/* 1 MiB at 1 MiB */
	put_seg(&t, DATA_GPA(0) + 16, 6144, 0, 0);	/* empty segment */
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(0), 32, NULL), VIRTIO_BLK_S_OK);
	CHECK(!fstat(t.fd, &st1));
	CHECK(st1.st_blocks < st0.st_blocks);
	CHECK_EQ(lseek(t.fd, 1 << 20, SEEK_HOLE), 1 << 20);
	CHECK_EQ(st1.st_size, DISK_SIZE);
	CHECK_EQ(pread(t.fd, buf, 1 << 20, 1 << 20), 1 << 20);
	CHECK(all_zero(buf, 1 << 20));
	/* The unmap flag is not for discard; unknown flags are unsupported. */
	put_seg(&t, DATA_GPA(0), 0, 8, VIRTIO_BLK_DWZ_F_UNMAP);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(0), 16, NULL),
		 VIRTIO_BLK_S_UNSUPP);
	put_seg(&t, DATA_GPA(0), 0, 8, 4);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA_GPA(0), 16, NULL),
		 VIRTIO_BLK_S_UNSUPP);
	/* Out of range, too many sectors, bad payload sizes. */
	put_seg(&t, DATA_GPA(0), DISK_SIZE / 512 - 4, 8, 0);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(0), 16, NULL), VIRTIO_BLK_S_IOERR);
	put_seg(&t, DATA_GPA(0), 0, VIRTIO_BLK_MAX_DWZ_SECTORS + 1, 0);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(0), 16, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(0), 15, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, 0, 0, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(0),
			16 * (VIRTIO_BLK_MAX_DWZ_SEGS + 1), NULL), VIRTIO_BLK_S_IOERR);
	tb_close(&t);
	free(buf);
}

static void test_write_zeroes(void)
{
	const uint32_t n = 1 << 20;
	uint8_t *buf = malloc(n);
	struct tb t;

	CHECK(buf);
	for (int cache = 0; cache < 2; cache++) {
		struct blk_options o = { .cache_host = cache };

		CHECK(!tb_open(&t, &o, 1));
		fill(buf, n, 3);
		CHECK_EQ(pwrite(t.fd, buf, n, 0), (ssize_t)n);
		put_seg(&t, DATA_GPA(0), 1, 7, 0);
		put_seg(&t, DATA_GPA(0) + 16, 100, 300, VIRTIO_BLK_DWZ_F_UNMAP);
		CHECK_EQ(do_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA_GPA(0), 32, NULL),
			 VIRTIO_BLK_S_OK);
		CHECK_EQ(pread(t.fd, buf, n, 0), (ssize_t)n);
		CHECK(!all_zero(buf, 512));
		CHECK(all_zero(buf + 512, 7 * 512));
		CHECK(!all_zero(buf + 8 * 512, 512));
		CHECK(all_zero(buf + 100 * 512, 300 * 512));
		CHECK(!all_zero(buf + 400 * 512, 512));
		tb_close(&t);
	}
	free(buf);
}

static void test_read_only(void)
{
	struct blk_options o = { .read_only = 1 };
	const uint32_t n = 4096;
	uint8_t *pat = malloc(n), *src;
	struct tb t;

	CHECK(pat);
	CHECK(!tb_open(&t, &o, 1));
	CHECK(t.vdev->device_features & (1ULL << VIRTIO_BLK_F_RO));
	CHECK(!(t.vdev->device_features & (1ULL << VIRTIO_BLK_F_DISCARD)));
	fill(pat, n, 11);
	CHECK_EQ(pwrite(t.fd, pat, n, 0), (ssize_t)n);
	src = g(&t, DATA_GPA(0), n);
	memset(src, 0x55, n);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, 0, DATA_GPA(0), n, NULL), VIRTIO_BLK_S_IOERR);
	put_seg(&t, DATA_GPA(1), 0, 8, 0);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_DISCARD, 0, DATA_GPA(1), 16, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA_GPA(1), 16, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK(file_equals(&t, 0, pat, n));
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, 0, DATA_GPA(2), n, NULL), VIRTIO_BLK_S_OK);
	CHECK(!memcmp(g(&t, DATA_GPA(2), n), pat, n));
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_FLUSH, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
	tb_close(&t);
	free(pat);
}

static void test_bad_requests(void)
{
	const uint64_t cap = DISK_SIZE / 512;
	struct tb t;
	uint32_t id, l;

	CHECK(!tb_open(&t, NULL, 1));
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, cap, DATA_GPA(0), 512, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, cap - 1, DATA_GPA(0), 1024, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, cap + 1, DATA_GPA(0), 512, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, UINT64_MAX - 1, DATA_GPA(0), 1024, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, 1ULL << 55, DATA_GPA(0), 512, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, 0, DATA_GPA(0), 1000, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, 0, DATA_GPA(0), 513, NULL), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(&t, 99, 0, DATA_GPA(0), 512, NULL), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);	/* empty read */
	/* Short header: IOERR in the status byte. */
	desc(&t, 0, HDR_GPA(0), 8, F_NEXT, 1);
	desc(&t, 1, ST_GPA(0), 1, F_WRITE, 0);
	*(uint8_t *)g(&t, ST_GPA(0), 1) = 0xee;
	publish(&t, 0);
	kick(&t);
	CHECK(!wait_used(&t, &id, &l, 5000));
	CHECK_EQ(l, 1);
	CHECK_EQ(*(uint8_t *)g(&t, ST_GPA(0), 1), VIRTIO_BLK_S_IOERR);
	/* No writable byte at all: handed back with len 0, nothing written. */
	desc(&t, 0, HDR_GPA(0), 16, F_NEXT, 1);
	desc(&t, 1, DATA_GPA(0), 512, 0, 0);
	publish(&t, 0);
	kick(&t);
	CHECK(!wait_used(&t, &id, &l, 5000));
	CHECK_EQ(id, 0);
	CHECK_EQ(l, 0);
	/* The device still works and is not marked broken. */
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, 0, DATA_GPA(0), 512, NULL), VIRTIO_BLK_S_OK);
	CHECK(!(t.vdev->status & VIRTIO_STATUS_NEEDS_RESET));
	CHECK(t.vdev->stats_errors >= 10);
	tb_close(&t);
}

/* 32 requests published at once behind a single doorbell, some through an indirect table. */
static void test_many_in_flight(void)
{
	const unsigned int nreq = 32, n = 16384;
	int seen[32] = { 0 };
	struct tb t;
	uint32_t id, l;

	CHECK(!tb_open(&t, NULL, 1));
	for (unsigned int s = 0; s < nreq; s++) {
		fill(g(&t, DATA_GPA(s), n), n, 100 + s);
		put_req(&t, s, VIRTIO_BLK_T_OUT, s * 64, DATA_GPA(s), n);
	}
	kick(&t);
	for (unsigned int i = 0; i < nreq; i++) {
		CHECK(!wait_used(&t, &id, &l, 5000));
		CHECK(id % 4 == 0 && id / 4 < nreq && !seen[id / 4]);
		seen[id / 4] = 1;
		CHECK_EQ(*(uint8_t *)g(&t, ST_GPA(id / 4), 1), VIRTIO_BLK_S_OK);
	}
	for (unsigned int s = 0; s < nreq; s++)
		CHECK(file_equals(&t, s * 64 * 512, g(&t, DATA_GPA(s), n), n));
	/* Read them back into other buffers (odd slots through indirect tables). */
	for (unsigned int s = 0; s < nreq; s++) {
		uint64_t dst = DATA_GPA(s) + 0x40000;

		memset(g(&t, dst, n), 0, n);
		if (s & 1) {
			uint32_t hdr[4] = { VIRTIO_BLK_T_IN, 0, s * 64, 0 };
			uint8_t *tab = g(&t, TABLE_GPA(s), 48);
			uint64_t a[3] = { HDR_GPA(s), dst, ST_GPA(s) };
			uint32_t len[3] = { 16, n, 1 };
			uint16_t fl[3] = { F_NEXT, F_NEXT | F_WRITE, F_WRITE }, nx[3] = { 1, 2, 0 };

			memcpy(g(&t, HDR_GPA(s), 16), hdr, 16);
			for (int k = 0; k < 3; k++) {
				memcpy(tab + 16 * k, &a[k], 8);
				memcpy(tab + 16 * k + 8, &len[k], 4);
				memcpy(tab + 16 * k + 12, &fl[k], 2);
				memcpy(tab + 16 * k + 14, &nx[k], 2);
			}
			desc(&t, s * 4, TABLE_GPA(s), 48, F_INDIRECT, 0);
			publish(&t, (uint16_t)(s * 4));
		} else {
			put_req(&t, s, VIRTIO_BLK_T_IN, s * 64, dst, n);
		}
	}
	kick(&t);
	memset(seen, 0, sizeof(seen));
	for (unsigned int i = 0; i < nreq; i++) {
		CHECK(!wait_used(&t, &id, &l, 5000));
		CHECK(!seen[id / 4]);
		seen[id / 4] = 1;
		CHECK_EQ(l, n + 1);
	}
	for (unsigned int s = 0; s < nreq; s++)
		CHECK(!memcmp(g(&t, DATA_GPA(s) + 0x40000, n), g(&t, DATA_GPA(s), n), n));
	tb_close(&t);
}

/* Requests trickling in one by one with event idx: no doorbell or interrupt may get lost. */
static void test_stream(void)
{
	struct tb t;
	uint32_t id, l;

	for (int ev = 0; ev < 2; ev++) {
		CHECK(!tb_open(&t, NULL, ev));
		for (unsigned int i = 0; i < 2000; i++) {
			unsigned int s = i % 8;

			put_req(&t, s, VIRTIO_BLK_T_IN, i % 1000, DATA_GPA(s), 4096);
			kick(&t);
			if (i % 8 == 7) {
				for (int k = 0; k < 8; k++)
					CHECK(!wait_used(&t, &id, &l, 5000));
			}
		}
		CHECK_EQ(__atomic_load_n(&used16(&t)[1], __ATOMIC_ACQUIRE), 2000);
		tb_close(&t);
	}
}

static void test_hostile_chains(void)
{
	struct tb t;
	uint64_t v;

	/* A descriptor loop. */
	CHECK(!tb_open(&t, NULL, 1));
	desc(&t, 0, HDR_GPA(0), 16, F_NEXT, 1);
	desc(&t, 1, ST_GPA(0), 1, F_NEXT | F_WRITE, 0);
	publish(&t, 0);
	kick(&t);
	/* The status bit comes first, the config interrupt right after it. */
	for (int i = 0; i < 500 && (!(t.vdev->status & VIRTIO_STATUS_NEEDS_RESET) ||
				    !__atomic_load_n(&cfg_irqs, __ATOMIC_SEQ_CST)); i++)
		usleep(1000);
	CHECK(t.vdev->status & VIRTIO_STATUS_NEEDS_RESET);
	CHECK(__atomic_load_n(&cfg_irqs, __ATOMIC_SEQ_CST) >= 1);
	CHECK_EQ(used16(&t)[1], 0);
	/* More garbage after that is ignored. */
	publish(&t, 0xffff);
	kick(&t);
	usleep(10000);
	/* The driver resets and starts over: the device works again. */
	virtio_dev_reset(t.vdev);
	CHECK_EQ(t.vdev->status, 0);
	if (read(irq_fd, &v, 8) < 0)
		v = 0;
	CHECK(!tb_start(&t));
	CHECK_EQ(do_req(&t, VIRTIO_BLK_T_IN, 0, DATA_GPA(0), 512, NULL), VIRTIO_BLK_S_OK);
	tb_close(&t);

	/* Buffers outside guest RAM, head out of range, avail idx far ahead. */
	for (int kind = 0; kind < 3; kind++) {
		CHECK(!tb_open(&t, NULL, 1));
		if (kind == 0) {
			put_req(&t, 0, VIRTIO_BLK_T_IN, 0, MEM_SIZE - 256, 512);
		} else if (kind == 1) {
			publish(&t, QSIZE + 3);
		} else {
			avail(&t)[1] = QSIZE + 1;
			t.avail_idx = QSIZE + 1;
		}
		kick(&t);
		for (int i = 0; i < 500 && !(t.vdev->status & VIRTIO_STATUS_NEEDS_RESET); i++)
			usleep(1000);
		CHECK(t.vdev->status & VIRTIO_STATUS_NEEDS_RESET);
		tb_close(&t);
	}
}

/* Reset while large reads are in flight: nothing reaches guest memory afterwards. */
static void test_reset_in_flight(void)
{
	const unsigned int nreq = 32, n = 1 << 20;
	uint8_t st[32];
	uint16_t used_after;
	struct tb t;
	uint64_t v;

	static const int delay_us[] = { 0, 300, 1000, 3000 };

	for (int round = 0; round < 4; round++) {
		CHECK(!tb_open(&t, NULL, 1));
		/* Real data, so O_DIRECT reads reach the disk and take a while. */
		for (uint64_t off = 0; off < DISK_SIZE; off += n) {
			fill(g(&t, DATA_GPA(40), n), n, (unsigned int)(off >> 20));
			CHECK_EQ(pwrite(t.fd, g(&t, DATA_GPA(40), n), n, (off_t)off), (ssize_t)n);
		}
		CHECK(!fdatasync(t.fd));
		for (unsigned int s = 0; s < nreq; s++)
			put_req(&t, s, VIRTIO_BLK_T_IN, (s * 2048) % (DISK_SIZE / 512 - 2048),
				DATA_GPA(s % 40), n);
		kick(&t);
		if (delay_us[round])
			usleep(delay_us[round]);
		virtio_dev_reset(t.vdev);
		used_after = __atomic_load_n(&used16(&t)[1], __ATOMIC_ACQUIRE);
		for (unsigned int s = 0; s < nreq; s++)
			st[s] = *(uint8_t *)g(&t, ST_GPA(s), 1);
		usleep(50000);
		CHECK_EQ(__atomic_load_n(&used16(&t)[1], __ATOMIC_ACQUIRE), used_after);
		for (unsigned int s = 0; s < nreq; s++)
			CHECK_EQ(*(uint8_t *)g(&t, ST_GPA(s), 1), st[s]);
		CHECK(used_after <= nreq);
		/* Re-initialise and use it. */
		if (read(irq_fd, &v, 8) < 0)
			v = 0;
		CHECK(!tb_start(&t));
		fill(g(&t, DATA_GPA(0), 4096), 4096, 42);
		CHECK_EQ(do_req(&t, VIRTIO_BLK_T_OUT, 16, DATA_GPA(0), 4096, NULL),
			 VIRTIO_BLK_S_OK);
		CHECK(file_equals(&t, 16 * 512, g(&t, DATA_GPA(0), 4096), 4096));
		tb_close(&t);
	}
}

/* The pure parser on hand-made elements. */
static void test_parse(void)
{
	static struct virtq_elem e;
	static struct blk_req r;
	struct blk_limits l = { .capacity = 100, .discard = 1, .write_zeroes = 1 };
	uint8_t hdr[16] = { 0 }, data[1024], st[2];

	hdr[0] = VIRTIO_BLK_T_OUT;
	hdr[8] = 10;
	e.nout = 3;
	e.out[0] = (struct iovec){ hdr, 3 };
	e.out[1] = (struct iovec){ hdr + 3, 13 };
	e.out[2] = (struct iovec){ data, 1024 };
	e.out_len = 16 + 1024;
	e.nin = 1;
	e.in[0] = (struct iovec){ st, 2 };
	e.in_len = 2;
	CHECK_EQ(virtio_blk_parse(&e, &l, &r), VIRTIO_BLK_S_EXEC);
	CHECK_EQ(r.type, VIRTIO_BLK_T_OUT);
	CHECK_EQ(r.sector, 10);
	CHECK(r.status == st + 1);
	CHECK_EQ(r.len, 1024);
	CHECK_EQ(r.niov, 1);
	CHECK(r.iov[0].iov_base == data);
	l.capacity = 11;
	CHECK_EQ(virtio_blk_parse(&e, &l, &r), VIRTIO_BLK_S_IOERR);
	l.capacity = 12;
	CHECK_EQ(virtio_blk_parse(&e, &l, &r), VIRTIO_BLK_S_EXEC);
	l.read_only = 1;
	CHECK_EQ(virtio_blk_parse(&e, &l, &r), VIRTIO_BLK_S_IOERR);
	l.read_only = 0;
	e.nin = 0;
	e.in_len = 0;
	CHECK_EQ(virtio_blk_parse(&e, &l, &r), VIRTIO_BLK_S_IOERR);
	CHECK(!r.status);
	CHECK_EQ(virtio_blk_used_len(&r, VIRTIO_BLK_S_IOERR), 0);
}

static void test_parse_option(void)
{
	struct blk_options o;
	char *path = NULL, err[128];

	CHECK_EQ(virtio_blk_parse_option("/dev/vdb", &path, &o, err, sizeof(err)), 0);
	CHECK(!strcmp(path, "/dev/vdb") && !o.read_only && !o.cache_host && !o.serial[0]);
	free(path);
	CHECK_EQ(virtio_blk_parse_option("d.img,ro,cache=host,serial=abc", &path, &o, err,
					 sizeof(err)), 0);
	CHECK(!strcmp(path, "d.img") && o.read_only && o.cache_host && !strcmp(o.serial, "abc"));
	free(path);
	CHECK_EQ(virtio_blk_parse_option("d.img,cache=none", &path, &o, err, sizeof(err)), 0);
	CHECK(!o.cache_host);
	free(path);
	CHECK_EQ(virtio_blk_parse_option("d.img,cache=fast", &path, &o, err, sizeof(err)),
		 -EINVAL);
	CHECK(!path && strstr(err, "cache=fast"));
	CHECK_EQ(virtio_blk_parse_option("d.img,serial=123456789012345678901", &path, &o, err,
					 sizeof(err)), -EINVAL);
	CHECK_EQ(virtio_blk_parse_option("", &path, &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(virtio_blk_parse_option(",ro", &path, &o, err, sizeof(err)), -EINVAL);
}

static void test_create_errors(void)
{
	struct dev_env env = { 0 };
	struct blk_options o = { 0 };
	struct virtio_dev *v;

	CHECK_EQ(virtio_blk_create(&env, "/nonexistent/disk.img", &o, &v), -ENOENT);
	CHECK_EQ(virtio_blk_create(&env, "/var/tmp", &o, &v) < 0, 1);	/* a directory */
}

/*
 * Quiesce with writes in flight, save, and load into a new device on the same disk and guest
 * memory (as a restore does): every request is used exactly once and its bytes are on disk.
 */
static void test_quiesce_save_load(void)
{
	static struct store st;
	const struct dev_state_out out = store_out(&st);
	const struct dev_state_in in = store_in(&st);
	const unsigned int nreq = 32, len = 64 << 10;
	struct blk_options def = { 0 };
	int seen[32] = { 0 };
	uint8_t *buf = malloc(len);
	struct virtq *vq;
	struct tb t;
	uint32_t id, l;

	CHECK(buf && !tb_open(&t, NULL, 1));
	for (unsigned int s = 0; s < nreq; s++) {
		memset(g(&t, DATA_GPA(s), len), 0x40 + (int)s, len);
		put_req(&t, s, VIRTIO_BLK_T_OUT, s * (len / 512), DATA_GPA(s), len);
	}
	kick(&t);
	CHECK_EQ(virtio_dev_quiesce(t.vdev), 0);
	vq = &t.vdev->vqs[0];
	/* Quiesced: nothing taken from the ring is left unanswered. */
	CHECK_EQ(vq->last_avail, vq->used_idx);
	CHECK_EQ(__atomic_load_n(&used16(&t)[1], __ATOMIC_ACQUIRE), vq->used_idx);
	memset(&st, 0, sizeof(st));
	CHECK_EQ(virtio_dev_save(t.vdev, &out), 0);

	virtio_blk_destroy(t.vdev);
	CHECK_EQ(virtio_blk_create(&t.env, t.path, &def, &t.vdev), 0);
	t.vdev->tops = &fake_tops;
	CHECK_EQ(virtio_dev_load(t.vdev, &in, 0xffff), 0);
	CHECK_EQ(virtio_dev_resume(t.vdev), 0);
	kick(&t);	/* what the guest would do for requests it still waits for */
	for (unsigned int i = 0; i < nreq; i++) {
		CHECK(!wait_used(&t, &id, &l, 5000));
		CHECK(id / 4 < nreq && !seen[id / 4]);
		if (id / 4 < nreq)
			seen[id / 4] = 1;
		CHECK_EQ(*(uint8_t *)g(&t, ST_GPA(id / 4), 1), VIRTIO_BLK_S_OK);
	}
	CHECK_EQ(__atomic_load_n(&used16(&t)[1], __ATOMIC_ACQUIRE), nreq);
	for (unsigned int s = 0; s < nreq; s++) {
		CHECK_EQ(pread(t.fd, buf, len, (off_t)s * len), (ssize_t)len);
		CHECK(buf[0] == 0x40 + s && buf[len - 1] == 0x40 + s);
	}
	tb_close(&t);
	free(buf);
}

/* A saved queue the new device cannot use is refused, and the device stays as built. */
static void test_load_refusals(void)
{
	static struct store st;
	const struct dev_state_out out = store_out(&st);
	const struct dev_state_in in = store_in(&st);
	struct prop *q;
	struct tb t;

	CHECK(!tb_open(&t, NULL, 1));
	CHECK_EQ(virtio_dev_quiesce(t.vdev), 0);
	memset(&st, 0, sizeof(st));
	CHECK_EQ(virtio_dev_save(t.vdev, &out), 0);
	q = store_find(&st, "queues");
	CHECK(q && q->len == 40);
	if (q) {
		uint64_t far = MEM_SIZE + 0x1000, desc_gpa;
		uint16_t size = 3, orig;

		memcpy(&desc_gpa, q->data, 8);
		memcpy(q->data, &far, 8);	/* rings outside guest RAM */
		CHECK_EQ(virtio_dev_load(t.vdev, &in, 0xffff), -EINVAL);
		memcpy(q->data, &desc_gpa, 8);
		memcpy(&orig, q->data + 24, 2);
		memcpy(q->data + 24, &size, 2);	/* not a power of two */
		CHECK_EQ(virtio_dev_load(t.vdev, &in, 0xffff), -EINVAL);
		memcpy(q->data + 24, &orig, 2);
		q->len = 39;
		CHECK_EQ(virtio_dev_load(t.vdev, &in, 0xffff), -EINVAL);
		q->len = 40;
		/* A vector the transport lacks (2 here): refused before anything is applied. */
		uint16_t vec = 5, was = t.vdev->vqs[0].msix_vector, none = 0xffff;

		memcpy(&orig, q->data + 32, 2);
		memcpy(q->data + 32, &vec, 2);
		CHECK_EQ(virtio_dev_load(t.vdev, &in, 2), -EINVAL);
		CHECK_EQ(t.vdev->vqs[0].msix_vector, was);
		memcpy(q->data + 32, &none, 2);
		CHECK_EQ(virtio_dev_load(t.vdev, &in, 2), 0);
		memcpy(q->data + 32, &orig, 2);
		CHECK_EQ(virtio_dev_load(t.vdev, &in, 0xffff), 0);
	}
	CHECK_EQ(virtio_dev_resume(t.vdev), 0);
	tb_close(&t);
}

TEST_MAIN(TEST(test_config), TEST(test_rw_cache_none), TEST(test_rw_cache_host),
	  TEST(test_rw_no_event_idx), TEST(test_read_file_pattern), TEST(test_unaligned_buffers),
	  TEST(test_flush_and_get_id), TEST(test_discard), TEST(test_write_zeroes),
	  TEST(test_read_only), TEST(test_bad_requests), TEST(test_many_in_flight),
	  TEST(test_stream), TEST(test_hostile_chains), TEST(test_reset_in_flight),
	  TEST(test_parse), TEST(test_parse_option), TEST(test_create_errors),
	  TEST(test_quiesce_save_load), TEST(test_load_refusals))
