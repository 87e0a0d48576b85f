/*
 * Unit tests for the split virtqueue core (devices/virtio.c) over fake guest memory: the test
 * plays the driver, writing descriptors and ring indices where a guest would.
 */
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "vmm/devenv.h"

#define MEM_SIZE (64ULL << 20)
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define TABLE_GPA 0x40000ULL	/* indirect tables */
#define BUF_GPA 0x100000ULL

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

struct drv {
	struct guest_mem m;
	struct virtq vq;
	uint16_t avail_idx;
};

static struct virtq_elem elem;

static int drv_init(struct drv *d, uint16_t size)
{
	if (mm_init(&d->m, MEM_SIZE))
		return -1;
	memset(&d->vq, 0, sizeof(d->vq));
	d->vq.size = size;
	d->vq.ready = 1;
	d->vq.desc_gpa = DESC_GPA;
	d->vq.avail_gpa = AVAIL_GPA;
	d->vq.used_gpa = USED_GPA;
	d->avail_idx = 0;
	return 0;
}

static void put_desc(struct drv *d, uint64_t table, unsigned int i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	uint8_t raw[16];

	memcpy(raw, &addr, 8);
	memcpy(raw + 8, &len, 4);
	memcpy(raw + 12, &flags, 2);
	memcpy(raw + 14, &next, 2);
	if (mm_write(&d->m, table + 16ULL * i, raw, 16))
		abort();
}

static void desc(struct drv *d, unsigned int i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	put_desc(d, DESC_GPA, i, addr, len, flags, next);
}

static uint16_t *avail(struct drv *d)
{
	return mm_gpa_to_hva(&d->m, AVAIL_GPA, 6 + 2ULL * d->vq.size);
}

static uint16_t *used16(struct drv *d)
{
	return mm_gpa_to_hva(&d->m, USED_GPA, 6 + 8ULL * d->vq.size);
}

static void publish(struct drv *d, uint16_t head)
{
	uint16_t *a = avail(d);

	a[2 + (d->avail_idx & (d->vq.size - 1))] = head;
	d->avail_idx++;
	__atomic_store_n(&a[1], d->avail_idx, __ATOMIC_RELEASE);
}

static void *hva(struct drv *d, uint64_t gpa)
{
	return mm_gpa_to_hva(&d->m, gpa, 1);
}

static void test_direct_chain(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 16));
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 0);	/* empty */
	desc(&d, 3, BUF_GPA, 16, F_NEXT, 7);
	desc(&d, 7, BUF_GPA + 0x1000, 4096, F_NEXT, 1);
	desc(&d, 1, BUF_GPA + 0x3000, 1, F_WRITE, 0);
	publish(&d, 3);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(elem.head, 3);
	CHECK_EQ(elem.nout, 2);
	CHECK_EQ(elem.nin, 1);
	CHECK_EQ(elem.out_len, 16 + 4096);
	CHECK_EQ(elem.in_len, 1);
	CHECK(elem.out[0].iov_base == hva(&d, BUF_GPA));
	CHECK(elem.out[1].iov_base == hva(&d, BUF_GPA + 0x1000));
	CHECK(elem.in[0].iov_base == hva(&d, BUF_GPA + 0x3000));
	CHECK_EQ(d.vq.last_avail, 1);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 0);
	CHECK(!d.vq.broken);
	/* A chain of exactly queue-size descriptors is fine. */
	for (unsigned int i = 0; i < 16; i++)
		desc(&d, i, BUF_GPA + i, 1, i < 15 ? F_NEXT : 0, (uint16_t)(i + 1));
	publish(&d, 0);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(elem.nout, 16);
	mm_free(&d.m);
}

static void test_indirect_chain(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 16));
	d.vq.indirect = 1;
	put_desc(&d, TABLE_GPA, 0, BUF_GPA, 16, F_NEXT, 2);
	put_desc(&d, TABLE_GPA, 2, BUF_GPA + 0x1000, 512, F_NEXT | F_WRITE, 1);
	put_desc(&d, TABLE_GPA, 1, BUF_GPA + 0x2000, 1, F_WRITE, 0);
	desc(&d, 5, TABLE_GPA, 3 * 16, F_INDIRECT | F_WRITE, 0);	/* WRITE ignored */
	publish(&d, 5);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(elem.head, 5);
	CHECK_EQ(elem.nout, 1);
	CHECK_EQ(elem.nin, 2);
	CHECK_EQ(elem.in_len, 513);
	CHECK(elem.in[1].iov_base == hva(&d, BUF_GPA + 0x2000));
	/* Direct descriptors, then an indirect table ending the chain. */
	desc(&d, 0, BUF_GPA, 8, F_NEXT, 1);
	desc(&d, 1, TABLE_GPA + 0x100, 16, F_INDIRECT, 0);
	put_desc(&d, TABLE_GPA + 0x100, 0, BUF_GPA + 8, 8, 0, 0);
	publish(&d, 0);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(elem.nout, 2);
	CHECK_EQ(elem.out_len, 16);
	CHECK(!d.vq.broken);
	mm_free(&d.m);
}

static void test_split_header_and_iov_copy(void)
{
	struct drv d;
	uint8_t hdr[16], got[16], big[64];

	CHECK(!drv_init(&d, 8));
	for (int i = 0; i < 16; i++)
		hdr[i] = (uint8_t)(0xa0 + i);
	CHECK(!mm_write(&d.m, BUF_GPA, hdr, 5));
	CHECK(!mm_write(&d.m, BUF_GPA + 0x100, hdr + 5, 11));
	desc(&d, 0, BUF_GPA, 5, F_NEXT, 1);
	desc(&d, 1, BUF_GPA + 0x100, 11, F_NEXT, 2);
	desc(&d, 2, BUF_GPA + 0x200, 4, F_WRITE, 0);
	publish(&d, 0);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(iov_to_buf(elem.out, elem.nout, 0, got, 16), 16);
	CHECK(!memcmp(got, hdr, 16));
	CHECK_EQ(iov_to_buf(elem.out, elem.nout, 3, got, 4), 4);
	CHECK(!memcmp(got, hdr + 3, 4));
	/* Bounded by the iovecs. */
	CHECK_EQ(iov_to_buf(elem.out, elem.nout, 0, big, sizeof(big)), 16);
	CHECK_EQ(iov_to_buf(elem.out, elem.nout, 20, big, sizeof(big)), 0);
	CHECK_EQ(iov_from_buf(elem.in, elem.nin, 2, hdr, 16), 2);
	CHECK_EQ(*(uint8_t *)hva(&d, BUF_GPA + 0x202), 0xa0);
	CHECK_EQ(*(uint8_t *)hva(&d, BUF_GPA + 0x203), 0xa1);
	mm_free(&d.m);
}

static void test_zero_length_descs(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 8));
	desc(&d, 0, BUF_GPA, 0, F_NEXT, 1);
	desc(&d, 1, BUF_GPA, 16, F_NEXT, 2);
	desc(&d, 2, 0xdead0000000ULL, 0, F_NEXT | F_WRITE, 3);	/* no address check for 0 */
	desc(&d, 3, BUF_GPA + 0x100, 1, F_WRITE, 0);
	publish(&d, 0);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(elem.nout, 1);
	CHECK_EQ(elem.nin, 1);
	CHECK_EQ(elem.out_len, 16);
	mm_free(&d.m);
}

/* Expect the next pop to fail with err, the queue to be broken and stay so. */
static int expect_broken(struct drv *d, int err)
{
	int ret = virtq_pop(&d->m, &d->vq, &elem);

	if (ret != err) {
		fprintf(stderr, "  pop returned %d, expected %d\n", ret, err);
		return 0;
	}
	return d->vq.broken && virtq_pop(&d->m, &d->vq, &elem) < 0;
}

static void test_loops(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 8));
	desc(&d, 0, BUF_GPA, 1, F_NEXT, 1);
	desc(&d, 1, BUF_GPA, 1, F_NEXT, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -ELOOP));
	mm_free(&d.m);
	/* A descriptor pointing to itself. */
	CHECK(!drv_init(&d, 8));
	desc(&d, 4, BUF_GPA, 1, F_NEXT, 4);
	publish(&d, 4);
	CHECK(expect_broken(&d, -ELOOP));
	mm_free(&d.m);
	/* A loop inside an indirect table. */
	CHECK(!drv_init(&d, 8));
	d.vq.indirect = 1;
	put_desc(&d, TABLE_GPA, 0, BUF_GPA, 1, F_NEXT, 1);
	put_desc(&d, TABLE_GPA, 1, BUF_GPA, 1, F_NEXT, 0);
	desc(&d, 0, TABLE_GPA, 32, F_INDIRECT, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -ELOOP));
	mm_free(&d.m);
}

static void test_bad_addresses(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 8));
	desc(&d, 0, MEM_SIZE - 10, 100, 0, 0);	/* runs off the end of RAM */
	publish(&d, 0);
	CHECK(expect_broken(&d, -EFAULT));
	mm_free(&d.m);

	CHECK(!drv_init(&d, 8));
	desc(&d, 0, UINT64_MAX - 15, 0x20, 0, 0);	/* wraps */
	publish(&d, 0);
	CHECK(expect_broken(&d, -EFAULT));
	mm_free(&d.m);

	CHECK(!drv_init(&d, 8));
	d.vq.desc_gpa = MEM_SIZE - 64;	/* table runs off RAM */
	publish(&d, 0);
	CHECK(expect_broken(&d, -EFAULT));
	mm_free(&d.m);

	CHECK(!drv_init(&d, 8));
	d.vq.avail_gpa = AVAIL_GPA + 1;	/* misaligned ring */
	CHECK(expect_broken(&d, -EFAULT));
	mm_free(&d.m);

	CHECK(!drv_init(&d, 8));
	d.vq.indirect = 1;
	desc(&d, 0, MEM_SIZE - 16, 32, F_INDIRECT, 0);	/* table off RAM */
	publish(&d, 0);
	CHECK(expect_broken(&d, -EFAULT));
	mm_free(&d.m);

	CHECK(!drv_init(&d, 8));
	d.vq.used_gpa = MEM_SIZE - 8;
	CHECK_EQ(virtq_push(&d.m, &d.vq, 0, 0), -EFAULT);
	mm_free(&d.m);
}

static void test_bad_indices(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 8));
	publish(&d, 8);	/* head out of range */
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);

	CHECK(!drv_init(&d, 8));
	desc(&d, 0, BUF_GPA, 1, F_NEXT, 9);	/* next out of range */
	publish(&d, 0);
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);

	/* avail->idx may run at most size entries ahead. */
	CHECK(!drv_init(&d, 8));
	for (int i = 0; i < 8; i++)
		desc(&d, i, BUF_GPA, 1, 0, 0);
	for (int i = 0; i < 8; i++)
		publish(&d, (uint16_t)i);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	avail(&d)[1] = (uint16_t)(d.vq.last_avail + 9);
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);

	/* Far behind (idx went backwards) looks like a huge jump too. */
	CHECK(!drv_init(&d, 8));
	avail(&d)[1] = 0xffff;
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);

	/* A queue that is not ready is simply empty. */
	CHECK(!drv_init(&d, 8));
	d.vq.ready = 0;
	publish(&d, 0);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 0);
	CHECK(!d.vq.broken);
	mm_free(&d.m);

	/* A queue size that is not a power of two. */
	CHECK(!drv_init(&d, 8));
	d.vq.size = 6;
	CHECK(expect_broken(&d, -EFAULT));
	mm_free(&d.m);
}

static void test_too_many_segments(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 16));
	d.vq.indirect = 1;
	for (unsigned int i = 0; i < VIRTQ_MAX_SEGS + 1; i++)
		put_desc(&d, TABLE_GPA, i, BUF_GPA + i, 1, i < VIRTQ_MAX_SEGS ? F_NEXT : 0,
			 (uint16_t)(i + 1));
	desc(&d, 0, TABLE_GPA, (VIRTQ_MAX_SEGS + 1) * 16, F_INDIRECT, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -E2BIG));
	mm_free(&d.m);

	/* Exactly VIRTQ_MAX_SEGS is fine. */
	CHECK(!drv_init(&d, 16));
	d.vq.indirect = 1;
	for (unsigned int i = 0; i < VIRTQ_MAX_SEGS; i++)
		put_desc(&d, TABLE_GPA, i, BUF_GPA + i, 1, i < VIRTQ_MAX_SEGS - 1 ? F_NEXT : 0,
			 (uint16_t)(i + 1));
	desc(&d, 0, TABLE_GPA, VIRTQ_MAX_SEGS * 16, F_INDIRECT, 0);
	publish(&d, 0);
	CHECK_EQ(virtq_pop(&d.m, &d.vq, &elem), 1);
	CHECK_EQ(elem.nout, VIRTQ_MAX_SEGS);
	mm_free(&d.m);
}

static void test_bad_indirect(void)
{
	struct drv d;
	/* { table length, flags of the main descriptor, negotiated } */
	static const struct { uint32_t len; uint16_t flags; int neg; } cases[] = {
		{ 32, F_INDIRECT, 0 },			/* not negotiated */
		{ 20, F_INDIRECT, 1 },			/* not a multiple of 16 */
		{ 0, F_INDIRECT, 1 },			/* empty */
		{ (VIRTQ_MAX_SIZE + 1) * 16, F_INDIRECT, 1 },	/* too big */
		{ 32, F_INDIRECT | F_NEXT, 1 },	/* NEXT together with INDIRECT */
	};

	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK(!drv_init(&d, 8));
		d.vq.indirect = cases[i].neg;
		put_desc(&d, TABLE_GPA, 0, BUF_GPA, 1, 0, 0);
		put_desc(&d, TABLE_GPA, 1, BUF_GPA, 1, 0, 0);
		desc(&d, 0, TABLE_GPA, cases[i].len, cases[i].flags, 1);
		desc(&d, 1, BUF_GPA, 1, 0, 0);
		publish(&d, 0);
		if (!expect_broken(&d, -EINVAL)) {
			fprintf(stderr, "  case %u\n", i);
			CHECK(0);
		}
		mm_free(&d.m);
	}
	/* Nested indirect. */
	CHECK(!drv_init(&d, 8));
	d.vq.indirect = 1;
	put_desc(&d, TABLE_GPA, 0, BUF_GPA, 1, F_NEXT, 1);
	put_desc(&d, TABLE_GPA, 1, TABLE_GPA + 0x100, 16, F_INDIRECT, 0);
	put_desc(&d, TABLE_GPA + 0x100, 0, BUF_GPA, 1, 0, 0);
	desc(&d, 0, TABLE_GPA, 32, F_INDIRECT, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);
	/* next outside the table. */
	CHECK(!drv_init(&d, 8));
	d.vq.indirect = 1;
	put_desc(&d, TABLE_GPA, 0, BUF_GPA, 1, F_NEXT, 2);
	put_desc(&d, TABLE_GPA, 1, BUF_GPA, 1, 0, 0);
	desc(&d, 0, TABLE_GPA, 32, F_INDIRECT, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);
}

static void test_write_then_read(void)
{
	struct drv d;

	CHECK(!drv_init(&d, 8));
	desc(&d, 0, BUF_GPA, 16, F_NEXT, 1);
	desc(&d, 1, BUF_GPA + 0x100, 1, F_NEXT | F_WRITE, 2);
	desc(&d, 2, BUF_GPA + 0x200, 16, 0, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);
	/* Even a zero-length writable descriptor sets the direction. */
	CHECK(!drv_init(&d, 8));
	desc(&d, 0, BUF_GPA, 0, F_NEXT | F_WRITE, 1);
	desc(&d, 1, BUF_GPA, 16, 0, 0);
	publish(&d, 0);
	CHECK(expect_broken(&d, -EINVAL));
	mm_free(&d.m);
}

static void test_push_and_avail_event(void)
{
	struct drv d;
	uint16_t *u;
	uint32_t e[2];

	CHECK(!drv_init(&d, 8));
	d.vq.event_idx = 1;
	u = used16(&d);
	for (int i = 0; i < 10; i++) {
		CHECK_EQ(virtq_push(&d.m, &d.vq, (uint16_t)(i % 8), 100 + i), 0);
		CHECK_EQ(u[1], i + 1);
	}
	memcpy(e, &u[2 + 4 * (9 % 8)], 8);
	CHECK_EQ(e[0], 1);
	CHECK_EQ(e[1], 109);
	d.vq.last_avail = 0x1234;
	virtq_set_avail_event(&d.m, &d.vq);
	CHECK_EQ(u[2 + 4 * 8], 0x1234);
	mm_free(&d.m);
}

static void test_event_idx_math(void)
{
	struct drv d;
	uint16_t *a;

	CHECK(!drv_init(&d, 8));
	d.vq.event_idx = 1;
	a = avail(&d);
#define USED_EVENT(v) (a[2 + 8] = (uint16_t)(v))
#define PUSH() CHECK_EQ(virtq_push(&d.m, &d.vq, 0, 0), 0)
	USED_EVENT(100);
	PUSH();
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);	/* first after reset: always */
	USED_EVENT(1);
	PUSH();						/* used 1 -> 2 crosses 1 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);	/* nothing new */
	USED_EVENT(5);
	PUSH();						/* 3 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);
	PUSH();						/* 4 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);
	PUSH();						/* 5 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);
	PUSH();						/* 6: entry 5 written */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);
	USED_EVENT(6);
	PUSH();
	PUSH();						/* a batch 6 -> 8 crosses 6 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);
	USED_EVENT(7);					/* already behind: no interrupt */
	PUSH();
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);
	/* Wrap-around of the 16-bit indices. */
	d.vq.used_idx = 65534;
	d.vq.signalled_used = 65534;
	USED_EVENT(65535);
	PUSH();						/* 65535 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);
	PUSH();						/* 0 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);
	d.vq.used_idx = 65534;
	d.vq.signalled_used = 65534;
	USED_EVENT(0);
	PUSH();
	PUSH();
	PUSH();						/* 65534 -> 1 crosses 0 */
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);
	/* Reset forgets what was signalled. */
	virtq_reset(&d.vq);
	CHECK_EQ(d.vq.signalled_valid, 0);
	CHECK_EQ(d.vq.used_idx, 0);
#undef USED_EVENT
#undef PUSH
	mm_free(&d.m);
}

static void test_no_interrupt(void)
{
	struct drv d;
	uint16_t *a;

	CHECK(!drv_init(&d, 8));
	a = avail(&d);
	a[0] = 1;	/* VIRTQ_AVAIL_F_NO_INTERRUPT */
	CHECK_EQ(virtq_push(&d.m, &d.vq, 0, 0), 0);
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 0);
	a[0] = 0;
	CHECK_EQ(virtq_should_notify(&d.m, &d.vq), 1);
	mm_free(&d.m);
}

/* ---- virtio_complete / needs_reset / dev_reset through a fake transport ---- */

struct fake {
	int queue_irqs, config_irqs, resets;
};

static struct fake fk;

static void fake_notify_queue(struct virtio_dev *vdev, unsigned int q) { fk.queue_irqs++; }
static void fake_notify_config(struct virtio_dev *vdev) { fk.config_irqs++; }
static void fake_reset(struct virtio_dev *vdev) { fk.resets++; }
static unsigned int fake_nq(struct virtio_dev *vdev) { return 2; }
static uint64_t fake_features(struct virtio_dev *vdev) { return 1ULL << VIRTIO_F_EVENT_IDX; }

static const struct virtio_transport_ops fake_tops = {
	.notify_queue = fake_notify_queue, .notify_config = fake_notify_config,
};
static const struct virtio_dev_ops fake_ops = {
	.name = "fake", .num_queues = fake_nq, .features = fake_features, .reset = fake_reset,
};

static void test_device_helpers(void)
{
	struct drv d;
	struct dev_env env = { 0 };
	struct virtio_dev vdev;
	uint64_t one = 1;

	CHECK(!drv_init(&d, 8));
	env.mem = &d.m;
	memset(&vdev, 0, sizeof(vdev));
	memset(&fk, 0, sizeof(fk));
	CHECK_EQ(virtio_dev_init(&vdev, &fake_ops, &env, NULL), 0);
	CHECK_EQ(vdev.nqueues, 2);
	CHECK_EQ(vdev.device_features, 1ULL << VIRTIO_F_EVENT_IDX);
	CHECK(vdev.kick_fd[0] >= 0 && vdev.kick_fd[1] >= 0 && vdev.kick_fd[2] == -1);
	vdev.tops = &fake_tops;
	vdev.vqs[0] = d.vq;
	vdev.status = VIRTIO_STATUS_DRIVER_OK;
	virtio_complete(&vdev, 0, 3, 7);
	CHECK_EQ(fk.queue_irqs, 1);
	CHECK_EQ(used16(&d)[1], 1);
	avail(&d)[0] = 1;
	virtio_complete(&vdev, 0, 3, 7);
	CHECK_EQ(fk.queue_irqs, 1);
	virtio_complete(&vdev, 5, 3, 7);	/* no such queue: ignored */
	CHECK_EQ(used16(&d)[1], 2);
	/* A used ring outside RAM: push fails, the device needs a reset. */
	vdev.vqs[1] = d.vq;
	vdev.vqs[1].used_gpa = MEM_SIZE;
	virtio_complete(&vdev, 1, 0, 0);
	CHECK(vdev.status & VIRTIO_STATUS_NEEDS_RESET);
	CHECK(vdev.vqs[1].broken);
	CHECK_EQ(fk.config_irqs, 1);
	CHECK_EQ(write(vdev.kick_fd[0], &one, 8), 8);
	virtio_dev_reset(&vdev);
	CHECK_EQ(fk.resets, 1);
	CHECK_EQ(vdev.status, 0);
	CHECK_EQ(vdev.driver_features, 0);
	CHECK(!vdev.vqs[1].broken && !vdev.vqs[0].ready && vdev.vqs[0].used_idx == 0);
	CHECK(read(vdev.kick_fd[0], &one, 8) < 0);	/* stale kick drained */
	virtio_dev_exit(&vdev);
	mm_free(&d.m);
}

TEST_MAIN(TEST(test_direct_chain), TEST(test_indirect_chain),
	  TEST(test_split_header_and_iov_copy), TEST(test_zero_length_descs), TEST(test_loops),
	  TEST(test_bad_addresses), TEST(test_bad_indices), TEST(test_too_many_segments),
	  TEST(test_bad_indirect), TEST(test_write_then_read), TEST(test_push_and_avail_event),
	  TEST(test_event_idx_math), TEST(test_no_interrupt), TEST(test_device_helpers))
