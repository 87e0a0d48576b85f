/*
 * virtio-blk data path without a guest kernel, side by side with raw liburing on the same
 * file: a test driver plays the guest (rings in guest memory, doorbell eventfd, interrupt
 * eventfd) and keeps QD requests in flight through the device (cache=none); the raw side
 * keeps QD O_DIRECT requests in flight with one io_uring.
 *
 *   bench-blk [file MiB (256)] [seconds per test (2)] [runs (1)] [file (/var/tmp/...)]
 *
 * Prints "kumo <test> <value> <IOPS|MB/s>" and "raw <test> <value> <IOPS|MB/s>" per run.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio-blk.h"
#include "mm/mem.h"
#include "vmm/devenv.h"

#define MEM_SIZE (128ULL << 20)
#define QSIZE VIRTIO_BLK_QUEUE_SIZE
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define HDR_GPA(s) (0x80000ULL + (s) * 64ULL)
#define DATA_GPA(s) (0x1000000ULL + (s) * 0x100000ULL)	/* 1 MiB per slot, < 64 slots */
#define MAX_QD 64

struct bench {
	const char *name;
	int write;
	uint32_t bs;
	unsigned int qd;
	int random;
};

static const struct bench benches[] = {
	{ "randread-4k-qd1", 0, 4096, 1, 1 },
	{ "randread-4k-qd32", 0, 4096, 32, 1 },
	{ "seqread-1m-qd4", 0, 1 << 20, 4, 0 },
	{ "seqwrite-1m-qd4", 1, 1 << 20, 4, 0 },
};

static uint64_t file_size;
static double seconds;
static uint64_t rng = 88172645463325252ULL;

static uint64_t next_off(const struct bench *b, uint64_t *seq)
{
	uint64_t off;

	if (!b->random) {
		off = *seq;
		*seq = (*seq + b->bs) % file_size;
		return off;
	}
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (rng % (file_size / b->bs)) * b->bs;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void report(const char *who, const struct bench *b, uint64_t ops, double t)
{
	if (b->bs >= (1 << 20))
		printf("%s %s %.1f MB/s\n", who, b->name, (double)ops * b->bs / t / 1e6);
	else
		printf("%s %s %.0f IOPS\n", who, b->name, (double)ops / t);
	fflush(stdout);
}

/* ---- raw liburing ---- */

static int run_raw(const char *path, const struct bench *b)
{
	struct io_uring ring;
	void *buf[MAX_QD];
	uint64_t seq = 0, ops = 0;
	unsigned int inflight = b->qd;
	double t0, t;
	int fd, ret;

	fd = open(path, O_RDWR | O_DIRECT);
	if (fd < 0 || io_uring_queue_init(2 * MAX_QD, &ring, 0))
		return -1;
	for (unsigned int i = 0; i < b->qd; i++) {
		if (posix_memalign(&buf[i], 4096, b->bs))
			return -1;
		memset(buf[i], 0x5a, b->bs);
	}
	t0 = now();
	for (unsigned int i = 0; i < b->qd; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		if (b->write)
			io_uring_prep_write(sqe, fd, buf[i], b->bs, next_off(b, &seq));
		else
			io_uring_prep_read(sqe, fd, buf[i], b->bs, next_off(b, &seq));
		io_uring_sqe_set_data64(sqe, i);
	}
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;
		int done;

		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR)
			return -1;
		t = now() - t0;
		done = t >= seconds;
		io_uring_for_each_cqe(&ring, head, cqe) {
			unsigned int i = (unsigned int)io_uring_cqe_get_data64(cqe);
			struct io_uring_sqe *sqe;

			n++;
			inflight--;
			if (cqe->res != (int)b->bs)
				return -1;
			ops++;
			if (done)
				continue;
			inflight++;
			sqe = io_uring_get_sqe(&ring);
			if (b->write)
				io_uring_prep_write(sqe, fd, buf[i], b->bs, next_off(b, &seq));
			else
				io_uring_prep_read(sqe, fd, buf[i], b->bs, next_off(b, &seq));
			io_uring_sqe_set_data64(sqe, i);
		}
		io_uring_cq_advance(&ring, n);
		if (done)
			break;
	}
	report("raw", b, ops, now() - t0);
	/*
	 * Reap the stragglers before the ring and the buffers go: closing the ring does not wait
	 * for reads in flight, and a late O_DIRECT read into a freed 4 KiB buffer corrupted the
	 * heap of the next test ("double free or corruption" in mm_free).
	 */
	while (inflight) {
		struct io_uring_cqe *cqe;

		if (io_uring_wait_cqe(&ring, &cqe))
			return -1;
		io_uring_cqe_seen(&ring, cqe);
		inflight--;
	}
	io_uring_queue_exit(&ring);
	for (unsigned int i = 0; i < b->qd; i++)
		free(buf[i]);
	close(fd);
	return 0;
}

/* ---- kumo: a driver in this process, the device on its I/O thread ---- */

struct drv {
	struct guest_mem m;
	struct dev_env env;
	struct virtio_dev *vdev;
	uint16_t avail_idx, used_seen, kicked_at;
};

static int irq_fd;

static void notify_queue(struct virtio_dev *vdev, unsigned int q)
{
	uint64_t one = 1;

	if (write(irq_fd, &one, 8) != 8)
		abort();
}

static void notify_config(struct virtio_dev *vdev)
{
	fprintf(stderr, "bench-blk: device needs reset\n");
	exit(1);
}

static const struct virtio_transport_ops tops = {
	.notify_queue = notify_queue, .notify_config = notify_config,
};

static void *g(struct drv *d, uint64_t gpa, uint64_t len)
{
	return mm_gpa_to_hva(&d->m, gpa, len);
}

static void desc(struct drv *d, unsigned int i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	uint8_t *p = g(d, DESC_GPA + 16ULL * i, 16);

	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void submit(struct drv *d, const struct bench *b, unsigned int slot, uint64_t off)
{
	uint32_t hdr[4] = { b->write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, 0,
			    (uint32_t)(off / 512), (uint32_t)(off / 512 >> 32) };
	uint16_t d0 = (uint16_t)(slot * 3), *avail = g(d, AVAIL_GPA, 6 + 2 * QSIZE);

	memcpy(g(d, HDR_GPA(slot), 16), hdr, 16);
	desc(d, d0, HDR_GPA(slot), 16, 1, d0 + 1);
	desc(d, d0 + 1, DATA_GPA(slot), b->bs, 1 | (b->write ? 0 : 2), d0 + 2);
	desc(d, d0 + 2, HDR_GPA(slot) + 32, 1, 2, 0);
	avail[2 + (d->avail_idx & (QSIZE - 1))] = d0;
	d->avail_idx++;
	__atomic_store_n(&avail[1], d->avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct drv *d)
{
	uint16_t *used = g(d, USED_GPA, 6 + 8 * QSIZE), old = d->kicked_at, ev;
	uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	d->kicked_at = d->avail_idx;
	ev = __atomic_load_n(&used[2 + 4 * QSIZE], __ATOMIC_RELAXED);
	if ((uint16_t)(d->avail_idx - ev - 1) < (uint16_t)(d->avail_idx - old) &&
	    write(d->vdev->kick_fd[0], &one, 8) != 8)
		abort();
}

/* Collect at least one completion: returns how many, their slots in slots[]. */
static int reap(struct drv *d, unsigned int *slots)
{
	uint16_t *used = g(d, USED_GPA, 6 + 8 * QSIZE);
	uint16_t *avail = g(d, AVAIL_GPA, 6 + 2 * QSIZE);
	struct pollfd p = { .fd = irq_fd, .events = POLLIN };
	uint64_t v;
	int n = 0;

	for (;;) {
		uint16_t idx;

		avail[2 + QSIZE] = d->used_seen;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		idx = __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
		while (d->used_seen != idx) {
			uint32_t e[2];

			memcpy(e, &used[2 + 4 * (d->used_seen & (QSIZE - 1))], 8);
			d->used_seen++;
			if (*(uint8_t *)g(d, HDR_GPA(e[0] / 3) + 32, 1) != VIRTIO_BLK_S_OK)
				return -1;
			slots[n++] = e[0] / 3;
		}
		if (n)
			return n;
		if (poll(&p, 1, 10000) <= 0)
			return -1;
		if (read(irq_fd, &v, 8) < 0)
			v = 0;
	}
}

static int run_kumo(const char *path, const struct bench *b)
{
	struct blk_options o = { 0 };
	struct drv d = { 0 };
	struct virtq *vq;
	unsigned int slots[MAX_QD];
	uint64_t seq = 0, ops = 0;
	unsigned int inflight = 0;
	double t0;
	int n;

	if (mm_init(&d.m, MEM_SIZE))
		return -1;
	d.env.mem = &d.m;
	if (virtio_blk_create(&d.env, path, &o, &d.vdev))
		return -1;
	d.vdev->tops = &tops;
	d.vdev->driver_features = d.vdev->device_features;
	vq = &d.vdev->vqs[0];
	vq->size = QSIZE;
	vq->desc_gpa = DESC_GPA;
	vq->avail_gpa = AVAIL_GPA;
	vq->used_gpa = USED_GPA;
	vq->ready = 1;
	for (unsigned int i = 0; i < b->qd; i++)
		memset(g(&d, DATA_GPA(i), b->bs), 0x5a, b->bs);
	if (virtio_dev_activate(d.vdev))
		return -1;
	t0 = now();
	for (unsigned int i = 0; i < b->qd; i++)
		submit(&d, b, i, next_off(b, &seq));
	kick(&d);
	inflight = b->qd;
	while (inflight) {
		int done = now() - t0 >= seconds;

		n = reap(&d, slots);
		if (n < 0)
			return -1;
		ops += (uint64_t)n;
		inflight -= (unsigned int)n;
		if (done)
			continue;
		for (int i = 0; i < n; i++)
			submit(&d, b, slots[i], next_off(b, &seq));
		inflight += (unsigned int)n;
		kick(&d);
	}
	report("kumo", b, ops, now() - t0);
	virtio_blk_destroy(d.vdev);
	mm_free(&d.m);
	return 0;
}

static int prepare_file(const char *path)
{
	struct stat st;
	char *buf;
	int fd;

	if (!stat(path, &st) && (uint64_t)st.st_size == file_size)
		return 0;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	buf = malloc(1 << 20);
	if (fd < 0 || !buf)
		return -1;
	for (uint64_t off = 0; off < file_size; off += 1 << 20) {
		for (int i = 0; i < (1 << 20); i += 8)
			memcpy(buf + i, &off, 8);
		if (pwrite(fd, buf, 1 << 20, (off_t)off) != 1 << 20)
			return -1;
	}
	free(buf);
	if (fsync(fd))
		return -1;
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = argc > 4 ? argv[4] : "/var/tmp/kumo-bench-blk.img";
	int runs = argc > 3 ? atoi(argv[3]) : 1;

	file_size = (argc > 1 ? strtoull(argv[1], NULL, 0) : 256) << 20;
	seconds = argc > 2 ? atof(argv[2]) : 2.0;
	if (file_size < (8 << 20) || seconds <= 0 || runs < 1) {
		fprintf(stderr, "usage: bench-blk [file MiB >= 8] [seconds] [runs] [file]\n");
		return 2;
	}
	irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (prepare_file(path)) {
		fprintf(stderr, "bench-blk: cannot create %s: %s\n", path, strerror(errno));
		return 1;
	}
	for (int r = 0; r < runs; r++) {
		for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++) {
			if (run_kumo(path, &benches[i]) || run_raw(path, &benches[i])) {
				fprintf(stderr, "bench-blk: %s failed\n", benches[i].name);
				return 1;
			}
		}
	}
	if (argc <= 4)
		unlink(path);
	return 0;
}
