/*
 * libFuzzer target for virtio-console's guest-facing input: the control-message parser, and
 * whole transmit / control queues (descriptor tables, avail rings, buffer contents) in guest
 * memory served by virtio_console_poll().
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz-console.c \
 *         devices/virtio-console.c devices/virtio.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c -lpthread \
 *         -o /tmp/fuzz-console && /tmp/fuzz-console -runs=50000
 *
 * Input: byte 0 picks features and max_nr_ports for the parser; the rest is the parser's
 * input, and also, cut in slices, the descriptor tables and avail rings of queues 0-5 and the
 * bytes of the buffers they point at. Checks: the parser's result is consistent, and after a
 * poll every transmit-side queue is either all consumed and returned, or marked broken.
 */
// fuzz-sources: devices/virtio-console.c devices/virtio.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c vmm/seccomp.c
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/virtio-console.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define QSZ 16
#define NQ 6
#define RINGS 0x10000ULL	/* queue q: desc at +q*0x1000, avail +0x400, used +0x800 */
#define DATA 0x100000ULL
#define DATA_SIZE 0x4000ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static struct dev_env env;
static struct virtio_dev *vdev;

static void nop_queue(struct virtio_dev *v, unsigned int q) {}
static void nop_config(struct virtio_dev *v) {}

static const struct virtio_transport_ops tops = {
	.notify_queue = nop_queue,
	.notify_config = nop_config,
};

static int init(void)
{
	struct console_options o = { .buf_limit = 4096 };
	int p[2];

	log_level = -1;		/* the guest-triggered warnings would drown the output */
	/* Console output into a pipe nobody reads: it fills, then the bound and drops are hit. */
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK))
		return -1;
	o.console_out_fd = p[1];
	if (mm_init(&mem, 16 << 20))
		return -1;
	env.mem = &mem;
	if (virtio_console_create(&env, &o, &vdev))
		return -1;
	vdev->tops = &tops;
	return 0;
}

static void check_parser(const uint8_t *data, size_t size)
{
	struct virtio_console_ctrl m;
	unsigned int nr = size ? 1 + data[0] % VIRTIO_CONSOLE_MAX_PORTS : 2;
	uint8_t *copy = malloc(size ? size : 1);	/* exact size: ASan sees overreads */
	int r;

	if (!copy)
		return;
	memcpy(copy, data, size);
	r = virtio_console_parse_ctrl(copy, size, nr, &m);
	if (r == 0 && m.event != VIRTIO_CONSOLE_DEVICE_READY &&
	    ((m.event != VIRTIO_CONSOLE_PORT_READY && m.event != VIRTIO_CONSOLE_PORT_OPEN) ||
	     m.id >= nr))
		abort();
	if (r && r != -EINVAL && r != -ERANGE && r != -EOPNOTSUPP)
		abort();
	if ((r == -EINVAL) != (size < VIRTIO_CONSOLE_CTRL_SIZE))
		abort();
	free(copy);
}

/* Bytes of the input from *pos, wrapping, so short inputs still fill every field. */
static uint64_t take(const uint8_t *data, size_t size, size_t *pos, unsigned int n)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < n; i++)
		v |= (uint64_t)(size ? data[(*pos)++ % size] : 0) << (8 * i);
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *d;
	uint16_t avail_idx[NQ];
	size_t pos = 1;

	if (!vdev && init())
		abort();
	check_parser(data, size);
	d = mm_gpa_to_hva(&mem, DATA, DATA_SIZE);

	virtio_dev_reset(vdev);
	vdev->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	if (!size || !(data[0] & 1))
		vdev->driver_features |= 1ULL << VIRTIO_CONSOLE_F_MULTIPORT;
	if (size && (data[0] & 2))
		vdev->driver_features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	memset(mm_gpa_to_hva(&mem, RINGS, NQ * 0x1000), 0, NQ * 0x1000);
	memset(d, 0, DATA_SIZE);
	for (size_t off = 0; size && off < DATA_SIZE; off += size)
		memcpy(d + off, data, size < DATA_SIZE - off ? size : DATA_SIZE - off);

	for (unsigned int q = 0; q < NQ; q++) {
		struct virtq *vq = &vdev->vqs[q];
		uint64_t base = RINGS + q * 0x1000ULL;
		uint8_t *desc = mm_gpa_to_hva(&mem, base, 16 * QSZ);
		uint16_t *avail = mm_gpa_to_hva(&mem, base + 0x400, 6 + 2 * QSZ);
		uint16_t n;

		for (unsigned int i = 0; i < QSZ; i++) {
			uint64_t addr = take(data, size, &pos, 4);
			uint32_t len = (uint32_t)take(data, size, &pos, 2);
			uint16_t flags = (uint16_t)take(data, size, &pos, 1);
			uint16_t next = (uint16_t)take(data, size, &pos, 1) % (QSZ + 2);

			/* Mostly inside the data area; bit 31 keeps a hostile address. */
			if (!(addr & 0x80000000u))
				addr = DATA + (addr & (DATA_SIZE - 1));
			if (flags & 0x80)
				len |= (uint32_t)take(data, size, &pos, 1) << 16;
			flags &= 7;
			memcpy(desc + 16 * i, &addr, 8);
			memcpy(desc + 16 * i + 8, &len, 4);
			memcpy(desc + 16 * i + 12, &flags, 2);
			memcpy(desc + 16 * i + 14, &next, 2);
		}
		n = (uint16_t)take(data, size, &pos, 1) % (QSZ + 2);
		for (unsigned int i = 0; i < QSZ; i++)
			avail[2 + i] = (uint16_t)take(data, size, &pos, 1) % (QSZ + 1);
		avail[1] = n;
		avail_idx[q] = n;
		vq->size = QSZ;
		vq->desc_gpa = base;
		vq->avail_gpa = base + 0x400;
		vq->used_gpa = base + 0x800;
		virtq_reset(vq);
		vq->indirect = virtio_has_feature(vdev, VIRTIO_F_INDIRECT_DESC);
		vq->event_idx = 0;
		vq->ready = 1;
	}
	vdev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;

	virtio_console_poll(vdev);
	virtio_console_poll(vdev);

	/* Transmit-side queues are consumed and returned at once, unless malformed. */
	for (unsigned int q = 1; q < NQ; q += 2) {
		const struct virtq *vq = &vdev->vqs[q];
		int used = q == 1 || virtio_has_feature(vdev, VIRTIO_CONSOLE_F_MULTIPORT);

		if (!vq->broken && used && (vq->last_avail != avail_idx[q] ||
					    vq->used_idx != avail_idx[q]))
			abort();
		if (!used && vq->last_avail)
			abort();
	}
	return 0;
}
