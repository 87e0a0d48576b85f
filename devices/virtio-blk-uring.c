/*
 * virtio-blk I/O on io_uring, one ring per disk, driven from the device's virtio worker
 * (devices/virtio.c): a kick takes every available request while slots are free and submits
 * them; completions signal an eventfd the worker watches. Reads and writes go straight to the
 * guest's buffers. Quiesce waits for what is in flight and hands it to the guest; reset waits
 * for it and hands nothing back.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio-blk.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

/* One request in flight; it has at most one SQE outstanding at a time. */
struct blk_io {
	struct blk_req r;
	uint16_t head;
	int fd;
	uint64_t off, left;	/* IN/OUT: next byte offset and bytes still to transfer */
	unsigned int iov_i;	/* IN/OUT: first iovec not yet transferred */
	unsigned int seg_i;	/* DISCARD/WRITE_ZEROES: segment in progress */
	struct blk_io *next_free;
};

struct blk_uring {
	struct virtio_blk *b;
	struct io_uring ring;
	int cq_fd;		/* eventfd io_uring signals on every completion */
	int stopping;
	int dirty;		/* used entries pushed since the last notification check */
	unsigned int inflight;
	/*
	 * Free slots: the recycled ones, then ios[fresh..] never used. Each slot is ~4 KiB (the
	 * request's iovecs) and the table is calloc'ed (mmap: untouched pages cost nothing), so
	 * only as many slots as the guest ever had in flight become resident.
	 */
	struct blk_io *free;
	unsigned int fresh;
	struct virtq_elem elem;
	struct blk_io ios[VIRTIO_BLK_QUEUE_SIZE];
};

static struct io_uring_sqe *get_sqe(struct blk_uring *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

	if (!sqe) {
		io_uring_submit(&u->ring);
		sqe = io_uring_get_sqe(&u->ring);
	}
	return sqe;
}

static void io_free(struct blk_uring *u, struct blk_io *io)
{
	io->next_free = u->free;
	u->free = io;
}

static int io_have(const struct blk_uring *u)
{
	return u->free || u->fresh < VIRTIO_BLK_QUEUE_SIZE;
}

/* A free slot; the caller checked io_have(). */
static struct blk_io *io_take(struct blk_uring *u)
{
	struct blk_io *io = u->free;

	if (!io)
		return &u->ios[u->fresh++];
	u->free = io->next_free;
	return io;
}

/* Write the status, hand the chain back, recycle the slot. */
static void io_finish(struct blk_uring *u, struct blk_io *io, int status)
{
	struct virtio_dev *vdev = &u->b->vdev;
	struct virtq *vq = &vdev->vqs[0];

	if (status != VIRTIO_BLK_S_OK)
		vdev->stats_errors++;
	if (!u->stopping && !vq->broken) {
		const struct guest_mem *m = vdev->env->mem;

		if (io->r.type == VIRTIO_BLK_T_IN || io->r.type == VIRTIO_BLK_T_GET_ID)
			virtio_mark_written(m, io->r.iov, io->r.niov, io->r.len);
		if (io->r.status) {
			struct iovec st = { .iov_base = io->r.status, .iov_len = 1 };

			__atomic_store_n(io->r.status, (uint8_t)status, __ATOMIC_RELAXED);
			virtio_mark_written(m, &st, 1, 1);
		}
		if (virtq_push(vdev->env->mem, vq, io->head, virtio_blk_used_len(&io->r, status)))
			virtio_set_needs_reset(vdev, 0);
		else
			u->dirty = 1;
	}
	io_free(u, io);
}

/* O_DIRECT wants aligned memory, offset and lengths; anything else goes through the cache. */
static int dio_ok(const struct virtio_blk *b, const struct blk_req *r, uint64_t off)
{
	if ((off | r->len) & (b->dio_off_align - 1))
		return 0;
	for (unsigned int i = 0; i < r->niov; i++) {
		if (((uintptr_t)r->iov[i].iov_base | r->iov[i].iov_len) & (b->dio_mem_align - 1))
			return 0;
		if (r->iov[i].iov_len & (b->dio_off_align - 1))
			return 0;
	}
	return 1;
}

static int submit_rw(struct blk_uring *u, struct blk_io *io)
{
	struct io_uring_sqe *sqe = get_sqe(u);
	unsigned int n = io->r.niov - io->iov_i;

	if (!sqe)
		return -EBUSY;
	if (io->r.type == VIRTIO_BLK_T_IN)
		io_uring_prep_readv(sqe, io->fd, &io->r.iov[io->iov_i], n, io->off);
	else
		io_uring_prep_writev(sqe, io->fd, &io->r.iov[io->iov_i], n, io->off);
	io_uring_sqe_set_data(sqe, io);
	return 0;
}

/* Next non-empty DISCARD/WRITE_ZEROES segment; 1 if there was none left. */
static int submit_seg(struct blk_uring *u, struct blk_io *io)
{
	struct io_uring_sqe *sqe;
	const struct blk_dwz_seg *s;
	int mode;

	while (io->seg_i < io->r.nseg && !io->r.seg[io->seg_i].num_sectors)
		io->seg_i++;
	if (io->seg_i == io->r.nseg)
		return 1;
	s = &io->r.seg[io->seg_i];
	sqe = get_sqe(u);
	if (!sqe)
		return -EBUSY;
	mode = io->r.type == VIRTIO_BLK_T_DISCARD ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE;
	io_uring_prep_fallocate(sqe, io->fd, mode | FALLOC_FL_KEEP_SIZE,
				(off_t)(s->sector * VIRTIO_BLK_SECTOR),
				(off_t)((uint64_t)s->num_sectors * VIRTIO_BLK_SECTOR));
	io_uring_sqe_set_data(sqe, io);
	return 0;
}

/* ZERO_RANGE unsupported by the file system: write zeroes (rare; blocks this thread). */
static int write_zeroes_slow(struct virtio_blk *b, uint64_t off, uint64_t len)
{
	static const uint8_t zeroes[65536];

	while (len) {
		size_t c = len < sizeof(zeroes) ? len : sizeof(zeroes);
		ssize_t n = pwrite(b->fd_buffered, zeroes, c, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static void io_start(struct blk_uring *u, const struct virtq_elem *e)
{
	struct virtio_blk *b = u->b;
	struct blk_io *io = io_take(u);
	int st, ret = 0;

	io->head = e->head;
	b->vdev.stats_requests++;
	st = virtio_blk_parse(e, &b->lim, &io->r);
	if (st != VIRTIO_BLK_S_EXEC) {
		io_finish(u, io, st);
		return;
	}
	switch (io->r.type) {
	case VIRTIO_BLK_T_GET_ID: {
		char id[VIRTIO_BLK_ID_BYTES] = { 0 };

		memcpy(id, b->opts.serial, strnlen(b->opts.serial, sizeof(id)));
		iov_from_buf(io->r.iov, io->r.niov, 0, id, io->r.len);
		io_finish(u, io, VIRTIO_BLK_S_OK);
		return;
	}
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (!io->r.len) {
			io_finish(u, io, VIRTIO_BLK_S_OK);
			return;
		}
		io->off = io->r.sector * VIRTIO_BLK_SECTOR;
		io->left = io->r.len;
		io->iov_i = 0;
		io->fd = dio_ok(b, &io->r, io->off) ? b->fd : b->fd_buffered;
		ret = submit_rw(u, io);
		break;
	case VIRTIO_BLK_T_FLUSH: {
		struct io_uring_sqe *sqe = get_sqe(u);

		if (!sqe) {
			ret = -EBUSY;
			break;
		}
		io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
		io_uring_sqe_set_data(sqe, io);
		break;
	}
	default:	/* DISCARD, WRITE_ZEROES */
		io->fd = b->fd;
		io->seg_i = 0;
		ret = submit_seg(u, io);
		if (ret == 1) {
			io_finish(u, io, VIRTIO_BLK_S_OK);
			return;
		}
		break;
	}
	if (ret) {
		io_finish(u, io, VIRTIO_BLK_S_IOERR);
		return;
	}
	u->inflight++;
}

/* Step past n transferred bytes of a partly done readv/writev. */
static void io_advance(struct blk_io *io, uint64_t n)
{
	io->off += n;
	io->left -= n;
	while (n && io->iov_i < io->r.niov) {
		struct iovec *v = &io->r.iov[io->iov_i];

		if (n < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= v->iov_len;
		io->iov_i++;
	}
}

static void io_complete(struct blk_uring *u, struct blk_io *io, int res)
{
	struct virtio_blk *b = u->b;
	int ret;

	u->inflight--;
	if (u->stopping) {		/* reset: nothing more goes to the guest */
		io_free(u, io);
		return;
	}
	switch (io->r.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (res == -EINTR || res == -EAGAIN) {
			res = 0;
		} else if (res <= 0) {
			pr_warn_ratelimited("disk %s: %s at %llu: %s", b->path,
					    io->r.type == VIRTIO_BLK_T_IN ? "read" : "write",
					    (unsigned long long)io->off,
					    res ? strerror(-res) : "end of file");
			io_finish(u, io, VIRTIO_BLK_S_IOERR);
			return;
		}
		if (io->r.type == VIRTIO_BLK_T_IN)
			b->stats_read_bytes += (uint64_t)res;
		else
			b->stats_write_bytes += (uint64_t)res;
		if ((uint64_t)res >= io->left) {
			io_finish(u, io, VIRTIO_BLK_S_OK);
			return;
		}
		io_advance(io, (uint64_t)res);
		ret = submit_rw(u, io);
		break;
	case VIRTIO_BLK_T_FLUSH:
		io_finish(u, io, res < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
		return;
	default: {
		const struct blk_dwz_seg *s = &io->r.seg[io->seg_i];

		if (res == -EOPNOTSUPP || res == -EINVAL) {
			/* Discard is a hint; write zeroes must still zero. */
			if (io->r.type == VIRTIO_BLK_T_WRITE_ZEROES)
				res = write_zeroes_slow(b, s->sector * VIRTIO_BLK_SECTOR,
							(uint64_t)s->num_sectors *
								VIRTIO_BLK_SECTOR);
			else
				res = 0;
		}
		if (res < 0) {
			io_finish(u, io, VIRTIO_BLK_S_IOERR);
			return;
		}
		io->seg_i++;
		ret = submit_seg(u, io);
		if (ret == 1) {
			io_finish(u, io, VIRTIO_BLK_S_OK);
			return;
		}
		break;
	}
	}
	if (ret) {
		io_finish(u, io, VIRTIO_BLK_S_IOERR);
		return;
	}
	u->inflight++;
}

/*
 * Take every available request while there are free slots. With event idx, publish
 * avail_event and look once more, so a request added meanwhile is not left without a kick.
 */
static void process_queue(struct blk_uring *u)
{
	struct virtio_dev *vdev = &u->b->vdev;
	const struct guest_mem *m = vdev->env->mem;
	struct virtq *vq = &vdev->vqs[0];
	int ret;

	if (vq->broken)
		return;
	for (;;) {
		while (io_have(u)) {
			ret = virtq_pop(m, vq, &u->elem);
			if (ret < 0) {
				virtio_set_needs_reset(vdev, 0);
				return;
			}
			if (!ret)
				break;
			io_start(u, &u->elem);
		}
		/* No free slot: a completion will bring us back here. */
		if (!io_have(u) || !vq->event_idx)
			return;
		virtq_set_avail_event(m, vq);
		ret = virtq_pop(m, vq, &u->elem);
		if (ret < 0) {
			virtio_set_needs_reset(vdev, 0);
			return;
		}
		if (!ret)
			return;
		io_start(u, &u->elem);
	}
}

static void reap(struct blk_uring *u)
{
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;

	io_uring_for_each_cqe(&u->ring, head, cqe) {
		uint64_t tag = io_uring_cqe_get_data64(cqe);

		n++;
		if (tag)
			io_complete(u, (struct blk_io *)(uintptr_t)tag, cqe->res);
	}
	io_uring_cq_advance(&u->ring, n);
}

/* Submit what was prepared and interrupt the guest for what was used. */
static void flush(struct blk_uring *u)
{
	int ret = io_uring_submit(&u->ring);

	if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		pr_err_ratelimited("disk %s: io_uring: %s", u->b->path, strerror(-ret));
	if (u->dirty) {
		u->dirty = 0;
		virtio_notify(&u->b->vdev, 0);
	}
}

void blk_uring_kick(struct virtio_blk *b)
{
	struct blk_uring *u = b->io;

	if (!u)
		return;
	process_queue(u);
	flush(u);
}

void blk_uring_complete(struct virtio_blk *b)
{
	struct blk_uring *u = b->io;
	uint64_t v;

	if (!u)
		return;
	if (read(u->cq_fd, &v, sizeof(v)) < 0)
		v = 0;
	reap(u);
	process_queue(u);	/* requests that waited for a free slot */
	flush(u);
}

/* Wait until nothing is in flight; with stopping set, nothing goes to the guest. */
static void wait_inflight(struct blk_uring *u)
{
	while (u->inflight) {
		int ret = io_uring_submit_and_wait(&u->ring, 1);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			pr_err("disk %s: io_uring while draining: %s", u->b->path, strerror(-ret));
			break;
		}
		reap(u);
	}
}

void blk_uring_drain(struct virtio_blk *b)
{
	struct blk_uring *u = b->io;

	if (!u)
		return;
	wait_inflight(u);
	flush(u);
}

int blk_uring_start(struct virtio_blk *b)
{
	struct blk_uring *u;
	int ret;

	if (b->io)
		return 0;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->b = b;
	u->cq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (u->cq_fd < 0) {
		ret = -errno;
		goto err_free;
	}
	/* One SQE per request slot. Completions wake the device's worker through cq_fd. */
	ret = io_uring_queue_init(VIRTIO_BLK_QUEUE_SIZE * 2, &u->ring, 0);
	if (ret)
		goto err_efd;
	ret = io_uring_register_eventfd(&u->ring, u->cq_fd);
	if (!ret)
		ret = virtio_dev_watch(&b->vdev, u->cq_fd, EPOLLIN, 0);
	if (ret)
		goto err_ring;
	b->io = u;
	return 0;

err_ring:
	io_uring_queue_exit(&u->ring);
err_efd:
	close(u->cq_fd);
err_free:
	free(u);
	pr_err("disk %s: cannot set up io_uring: %s", b->path, strerror(-ret));
	return ret;
}

void blk_uring_stop(struct virtio_blk *b)
{
	struct blk_uring *u = b->io;

	if (!u)
		return;
	virtio_dev_unwatch(&b->vdev, u->cq_fd);
	/* Reset: wait for the I/O in flight; it may still write guest buffers until then. */
	u->stopping = 1;
	wait_inflight(u);
	io_uring_queue_exit(&u->ring);
	close(u->cq_fd);
	free(u);
	b->io = NULL;
}
