/*
 * virtio core: split virtqueues (virtio 1.2, 2.7) over guest memory the guest may rewrite at
 * any moment. Every shared field is loaded exactly once into a local before it is checked and
 * used; ring indices are published with release stores and read with acquire loads.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio.h"
#include "mm/mem.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

_Static_assert(sizeof(struct vring_desc) == 16, "virtq descriptor layout");

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

/* Byte sizes of the three areas, including the event idx fields. */
static uint64_t avail_bytes(uint16_t size) { return 6 + 2ULL * size; }
static uint64_t used_bytes(uint16_t size) { return 6 + 8ULL * size; }

static int size_ok(uint16_t size)
{
	return size && size <= VIRTQ_MAX_SIZE && !(size & (size - 1));
}

/*
 * The transport owns size and the addresses; a function reads vq->size once (qsize()) and
 * uses that copy throughout, so a concurrent change cannot desync a bound from an index.
 */
static uint16_t qsize(const struct virtq *vq)
{
	return __atomic_load_n(&vq->size, __ATOMIC_RELAXED);
}

/* avail->flags, avail->idx, avail->ring[], used_event as one u16 array. */
static uint16_t *avail_ring(const struct guest_mem *m, const struct virtq *vq, uint16_t size)
{
	uint64_t gpa = vq->avail_gpa;

	if (!size_ok(size) || (gpa & 1))
		return NULL;
	return mm_gpa_to_hva(m, gpa, avail_bytes(size));
}

static uint16_t *used_ring(const struct guest_mem *m, const struct virtq *vq, uint16_t size)
{
	uint64_t gpa = vq->used_gpa;

	if (!size_ok(size) || (gpa & 3))
		return NULL;
	return mm_gpa_to_hva(m, gpa, used_bytes(size));
}

void virtq_reset(struct virtq *vq)
{
	vq->last_avail = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_valid = 0;
	vq->broken = 0;
}

/* One snapshot of a descriptor: later guest writes cannot change what we checked. */
static void read_desc(const void *table, unsigned int i, struct vring_desc *d)
{
	memcpy(d, (const uint8_t *)table + 16ULL * i, sizeof(*d));
	__asm__ __volatile__("" ::: "memory");
}

static int pop_fail(struct virtq *vq, int err)
{
	vq->broken = 1;
	return err;
}

int virtq_pop(const struct guest_mem *m, struct virtq *vq, struct virtq_elem *e)
{
	const void *table;
	uint16_t *avail, aidx, head, pending;
	unsigned int tsize, idx, count = 0;
	int indirect = 0, seen_write = 0;
	uint16_t size = qsize(vq);
	uint64_t desc_gpa = vq->desc_gpa;

	if (vq->broken)
		return -EIO;
	if (!vq->ready)
		return 0;
	avail = avail_ring(m, vq, size);
	if (!avail)
		return pop_fail(vq, -EFAULT);
	aidx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE);
	pending = (uint16_t)(aidx - vq->last_avail);
	if (!pending)
		return 0;
	if (pending > size)
		return pop_fail(vq, -EINVAL);
	head = __atomic_load_n(&avail[2 + (vq->last_avail & (size - 1))], __ATOMIC_RELAXED);
	if (head >= size)
		return pop_fail(vq, -EINVAL);
	if (desc_gpa & 15)
		return pop_fail(vq, -EFAULT);
	table = mm_gpa_to_hva(m, desc_gpa, 16ULL * size);
	if (!table)
		return pop_fail(vq, -EFAULT);

	e->head = head;
	e->nout = e->nin = 0;
	e->out_len = e->in_len = 0;
	tsize = size;
	idx = head;
	for (;;) {
		struct vring_desc d;
		void *hva;

		read_desc(table, idx, &d);
		if (++count > tsize)
			return pop_fail(vq, -ELOOP);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect || indirect || (d.flags & VIRTQ_DESC_F_NEXT))
				return pop_fail(vq, -EINVAL);
			if (!d.len || (d.len & 15) || d.len / 16 > VIRTQ_MAX_SIZE)
				return pop_fail(vq, -EINVAL);
			table = mm_gpa_to_hva(m, d.addr, d.len);
			if (!table)
				return pop_fail(vq, -EFAULT);
			/* The table replaces the rest of the chain; its WRITE flag is ignored. */
			tsize = d.len / 16;
			idx = 0;
			count = 0;
			indirect = 1;
			continue;
		}
		if (d.flags & VIRTQ_DESC_F_WRITE)
			seen_write = 1;
		else if (seen_write)
			return pop_fail(vq, -EINVAL);	/* readable after writable */
		if (d.len) {
			hva = mm_gpa_to_hva(m, d.addr, d.len);
			if (!hva)
				return pop_fail(vq, -EFAULT);
			if (e->nout + e->nin >= VIRTQ_MAX_SEGS)
				return pop_fail(vq, -E2BIG);
			if (d.flags & VIRTQ_DESC_F_WRITE) {
				e->in[e->nin++] = (struct iovec){ hva, d.len };
				e->in_len += d.len;
			} else {
				e->out[e->nout++] = (struct iovec){ hva, d.len };
				e->out_len += d.len;
			}
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= tsize)
			return pop_fail(vq, -EINVAL);
		idx = d.next;
	}
	vq->last_avail++;
	return 1;
}

int virtq_push(const struct guest_mem *m, struct virtq *vq, uint16_t head, uint32_t len)
{
	uint16_t size = qsize(vq);
	uint16_t *used = used_ring(m, vq, size);
	struct vring_used_elem *ring;

	if (!used)
		return -EFAULT;
	ring = (struct vring_used_elem *)(used + 2);
	ring += vq->used_idx & (size - 1);
	__atomic_store_n(&ring->id, (uint32_t)head, __ATOMIC_RELAXED);
	__atomic_store_n(&ring->len, len, __ATOMIC_RELAXED);
	vq->used_idx++;
	__atomic_store_n(&used[1], vq->used_idx, __ATOMIC_RELEASE);
	return 0;
}

int virtq_should_notify(const struct guest_mem *m, struct virtq *vq)
{
	uint16_t size = qsize(vq);
	uint16_t *avail = avail_ring(m, vq, size);
	uint16_t ev, new_idx, old_idx;
	int valid;

	if (!avail)
		return 0;
	/* Our used->idx store must be visible before we read what the driver asked for. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(__atomic_load_n(&avail[0], __ATOMIC_RELAXED) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	ev = __atomic_load_n(&avail[2 + size], __ATOMIC_RELAXED);
	new_idx = vq->used_idx;
	old_idx = vq->signalled_used;
	valid = vq->signalled_valid;
	vq->signalled_used = new_idx;
	vq->signalled_valid = 1;
	if (!valid)
		return 1;
	/* Interrupt iff used_event lies in [old, new): it was crossed by this batch. */
	return (uint16_t)(new_idx - ev - 1) < (uint16_t)(new_idx - old_idx);
}

void virtq_set_avail_event(const struct guest_mem *m, struct virtq *vq)
{
	uint16_t size = qsize(vq);
	uint16_t *used = used_ring(m, vq, size);

	if (!used || !vq->event_idx)
		return;
	__atomic_store_n(&used[2 + 4 * size], vq->last_avail, __ATOMIC_RELAXED);
	/* Publish avail_event before the caller re-reads avail->idx (else a kick can be lost). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Copy between a flat buffer and the bytes of an iovec array from offset off. */
static size_t iov_copy(const struct iovec *iov, unsigned int n, size_t off, uint8_t *buf,
		       size_t len, int to_iov)
{
	size_t done = 0;

	for (unsigned int i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len, c;

		if (off >= l) {
			off -= l;
			continue;
		}
		c = l - off < len - done ? l - off : len - done;
		if (to_iov)
			memcpy((uint8_t *)iov[i].iov_base + off, buf + done, c);
		else
			memcpy(buf + done, (uint8_t *)iov[i].iov_base + off, c);
		done += c;
		off = 0;
	}
	return done;
}

size_t iov_to_buf(const struct iovec *iov, unsigned int n, size_t off, void *buf, size_t len)
{
	return iov_copy(iov, n, off, buf, len, 0);
}

size_t iov_from_buf(const struct iovec *iov, unsigned int n, size_t off, const void *buf,
		    size_t len)
{
	return iov_copy(iov, n, off, (uint8_t *)buf, len, 1);
}

/* ---- devices ---- */

int virtio_dev_init(struct virtio_dev *vdev, const struct virtio_dev_ops *ops,
		    const struct dev_env *env, void *priv)
{
	unsigned int n;
	int ret;

	vdev->ops = ops;
	vdev->env = env;
	vdev->priv = priv;
	vdev->status = 0;
	vdev->driver_features = 0;
	vdev->device_features = ops->features ? ops->features(vdev) : 0;
	n = ops->num_queues ? ops->num_queues(vdev) : 1;
	if (!n || n > VIRTIO_MAX_QUEUES)
		return -EINVAL;
	vdev->nqueues = n;
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		memset(&vdev->vqs[i], 0, sizeof(vdev->vqs[i]));
		vdev->vqs[i].msix_vector = 0xffff;
		vdev->kick_fd[i] = -1;
	}
	for (unsigned int i = 0; i < n; i++) {
		vdev->kick_fd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (vdev->kick_fd[i] < 0) {
			ret = -errno;
			goto err_fds;
		}
	}
	ret = pthread_mutex_init(&vdev->lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_fds;
	}
	return 0;

err_fds:
	for (unsigned int i = 0; i < n; i++) {
		if (vdev->kick_fd[i] >= 0)
			close(vdev->kick_fd[i]);
		vdev->kick_fd[i] = -1;
	}
	return ret;
}

void virtio_dev_exit(struct virtio_dev *vdev)
{
	for (unsigned int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		if (vdev->kick_fd[i] >= 0)
			close(vdev->kick_fd[i]);
		vdev->kick_fd[i] = -1;
	}
	pthread_mutex_destroy(&vdev->lock);
}

void virtio_notify(struct virtio_dev *vdev, unsigned int q)
{
	if (q >= vdev->nqueues)
		return;
	if (virtq_should_notify(vdev->env->mem, &vdev->vqs[q]) && vdev->tops &&
	    vdev->tops->notify_queue)
		vdev->tops->notify_queue(vdev, q);
}

/*
 * The queue's owner (its device I/O thread) is the only caller, so the ring indices need no
 * lock; reset stops that thread before the queue is reset.
 */
void virtio_complete(struct virtio_dev *vdev, unsigned int q, uint16_t head, uint32_t len)
{
	if (q >= vdev->nqueues)
		return;
	if (virtq_push(vdev->env->mem, &vdev->vqs[q], head, len)) {
		virtio_set_needs_reset(vdev, q);
		return;
	}
	virtio_notify(vdev, q);
}

void virtio_set_needs_reset(struct virtio_dev *vdev, unsigned int q)
{
	if (q < vdev->nqueues)
		vdev->vqs[q].broken = 1;
	/* Atomic, not vdev->lock: the transport may hold the lock while it joins our thread. */
	__atomic_fetch_or(&vdev->status, VIRTIO_STATUS_NEEDS_RESET, __ATOMIC_SEQ_CST);
	pr_warn_ratelimited("%s: malformed virtqueue %u, device needs reset",
			    vdev->ops && vdev->ops->name ? vdev->ops->name : "virtio", q);
	if (vdev->tops && vdev->tops->notify_config)
		vdev->tops->notify_config(vdev);
}

void virtio_dev_reset(struct virtio_dev *vdev)
{
	uint64_t v;

	if (vdev->ops && vdev->ops->reset)
		vdev->ops->reset(vdev);
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		struct virtq *vq = &vdev->vqs[i];

		virtq_reset(vq);
		vq->ready = 0;
		vq->event_idx = 0;
		vq->indirect = 0;
		/* A stale doorbell must not wake the next activation. */
		if (vdev->kick_fd[i] >= 0 && read(vdev->kick_fd[i], &v, sizeof(v)) < 0)
			v = 0;
	}
	vdev->driver_features = 0;
	__atomic_store_n(&vdev->status, 0, __ATOMIC_SEQ_CST);
}
