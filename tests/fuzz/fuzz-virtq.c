/*
 * libFuzzer target for the virtqueue walker and the virtio-blk request parser: the input is
 * what a hostile guest controls, the rings, descriptors, indirect tables and request headers.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE tests/fuzz/fuzz-virtq.c \
 *         devices/virtio.c devices/virtio-blk.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c -o /tmp/fuzz-virtq
 *
 * Input: byte 0 picks the queue size (1 << (b % 9)), byte 1 the negotiated features (and a
 * "tame" bit that keeps descriptor addresses inside the window), bytes 2-3 the starting
 * last_avail; the rest is copied to guest-physical 0 (descriptor table at 0,
 * avail ring at 0x4000, used ring at 0x6000). Every element the core accepts must point inside
 * guest RAM and respect the segment limits; the parser's slices must stay inside it.
 */
// fuzz-sources: devices/virtio.c devices/virtio-blk.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c vmm/seccomp.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio-blk.h"
#include "mm/mem.h"
#include "vmm/log.h"

#define RAM (16ULL << 20)
#define WINDOW 0x10000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* virtio-blk.c's ops table refers to the I/O thread; the fuzzer never activates a device. */
int blk_uring_start(struct virtio_blk *b) { return -1; }
void blk_uring_stop(struct virtio_blk *b) { }
void blk_uring_kick(struct virtio_blk *b) { }
void blk_uring_complete(struct virtio_blk *b) { }
void blk_uring_drain(struct virtio_blk *b) { }

static struct guest_mem mem;
static struct virtq_elem elem;
static struct blk_req req;

static int inside(const void *p, uint64_t len)
{
	const uint8_t *base = mm_region(&mem, 0)->hva;

	return (const uint8_t *)p >= base && len <= RAM &&
	       (uint64_t)((const uint8_t *)p - base) <= RAM - len;
}

static void check_iov(const struct iovec *iov, unsigned int n, uint64_t total)
{
	uint64_t sum = 0;

	for (unsigned int i = 0; i < n; i++) {
		if (!iov[i].iov_len || !inside(iov[i].iov_base, iov[i].iov_len))
			abort();
		sum += iov[i].iov_len;
	}
	if (sum != total)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct blk_limits lim = { .capacity = 1 << 20, .discard = 1, .write_zeroes = 1 };
	struct virtq vq = { 0 };
	size_t n;

	if (!mm_nr_regions(&mem)) {
		log_level = -1;	/* the core warns on every bad chain */
		if (mm_init(&mem, RAM))
			abort();
	}
	if (size < 4)
		return 0;
	memset(mm_region(&mem, 0)->hva, 0, WINDOW);
	n = size - 4 < WINDOW ? size - 4 : WINDOW;
	memcpy(mm_region(&mem, 0)->hva, data + 4, n);
	if (data[1] & 8) {
		/* Tame mode: every 16-byte slot below the avail ring points into the window, so
		 * descriptor tables (direct or indirect) there mostly describe real buffers. */
		for (uint64_t off = 0; off < 0x4000; off += 16) {
			uint64_t a;

			memcpy(&a, mm_region(&mem, 0)->hva + off, 8);
			a %= WINDOW;
			memcpy(mm_region(&mem, 0)->hva + off, &a, 8);
		}
	}

	vq.size = (uint16_t)(1u << (data[0] % 9));
	vq.ready = 1;
	vq.indirect = data[1] & 1;
	vq.event_idx = !!(data[1] & 2);
	lim.read_only = !!(data[1] & 4);
	vq.desc_gpa = 0;
	vq.avail_gpa = 0x4000;
	vq.used_gpa = 0x6000;
	vq.last_avail = (uint16_t)(data[2] | data[3] << 8);

	for (int i = 0; i < 2 * VIRTQ_MAX_SIZE; i++) {
		int ret = virtq_pop(&mem, &vq, &elem), st;

		if (ret <= 0) {
			if (ret < 0 && !vq.broken)
				abort();
			break;
		}
		if (elem.head >= vq.size || elem.nout + elem.nin > VIRTQ_MAX_SEGS)
			abort();
		check_iov(elem.out, elem.nout, elem.out_len);
		check_iov(elem.in, elem.nin, elem.in_len);
		st = virtio_blk_parse(&elem, &lim, &req);
		if (st != VIRTIO_BLK_S_EXEC && (st < 0 || st > VIRTIO_BLK_S_UNSUPP))
			abort();
		if (req.status && !inside(req.status, 1))
			abort();
		if (st == VIRTIO_BLK_S_EXEC) {
			check_iov(req.iov, req.niov, req.len);
			if (req.nseg > VIRTIO_BLK_MAX_DWZ_SEGS)
				abort();
			if ((req.type == VIRTIO_BLK_T_IN || req.type == VIRTIO_BLK_T_OUT) &&
			    (req.len % 512 || req.sector > lim.capacity ||
			     req.len / 512 > lim.capacity - req.sector))
				abort();
			if (lim.read_only && req.type == VIRTIO_BLK_T_OUT)
				abort();
		}
		if (virtio_blk_used_len(&req, st) > elem.in_len)
			abort();
		if (virtq_push(&mem, &vq, elem.head, virtio_blk_used_len(&req, st)))
			abort();	/* the used ring is inside the window */
		(void)virtq_should_notify(&mem, &vq);
		virtq_set_avail_event(&mem, &vq);
	}
	return 0;
}
