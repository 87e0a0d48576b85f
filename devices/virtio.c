/*
 * virtio core: split virtqueues (virtio 1.2, 2.7) over guest memory the guest may rewrite at
 * any moment. Every shared field is loaded exactly once into a local before it is checked and
 * used; ring indices are published with release stores and read with acquire loads.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/virtio.h"
#include "mm/dirty.h"
#include "mm/mem.h"
#include "vmm/devenv.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"

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

int virtq_rings_ok(const struct guest_mem *m, const struct virtq *vq)
{
	uint16_t n = qsize(vq);

	return m && size_ok(n) && !(vq->desc_gpa & 15) && (vq->avail_gpa & 1) == 0 &&
	       (vq->used_gpa & 3) == 0 && mm_gpa_to_hva(m, vq->desc_gpa, 16ULL * n) &&
	       mm_gpa_to_hva(m, vq->avail_gpa, avail_bytes(n)) &&
	       mm_gpa_to_hva(m, vq->used_gpa, used_bytes(n));
}

void virtq_unpop(struct virtq *vq)
{
	vq->last_avail--;
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
	if (m->dirty) {		/* the used ring's index and this entry, for a migration */
		mm_dirty_mark(m, vq->used_gpa, 4);
		mm_dirty_mark(m, vq->used_gpa + 4 + 8ULL * (uint16_t)((vq->used_idx - 1) & (size - 1)),
			      8);
	}
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

void virtio_mark_written(const struct guest_mem *m, const struct iovec *iov, unsigned int n,
			 size_t len)
{
	uint64_t gpa;

	if (!m->dirty)
		return;
	for (unsigned int i = 0; i < n && len; i++) {
		size_t l = iov[i].iov_len < len ? iov[i].iov_len : len;

		if (l && !mm_hva_to_gpa(m, iov[i].iov_base, l, &gpa))
			mm_dirty_mark(m, gpa, l);
		len -= l;
	}
}

/* ---- the I/O worker ---- */

/* epoll tags: the kind in the high half, queue index or the device's tag in the low. */
enum { WK_CTL = 1, WK_KICK, WK_DEV };

static int watch(struct virtio_dev *vdev, int fd, uint32_t events, uint32_t kind, uint32_t idx)
{
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)kind << 32 | idx };

	return epoll_ctl(vdev->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int virtio_dev_watch(struct virtio_dev *vdev, int fd, uint32_t events, uint32_t tag)
{
	return watch(vdev, fd, events, WK_DEV, tag);
}

void virtio_dev_unwatch(struct virtio_dev *vdev, int fd)
{
	if (vdev->epfd >= 0)
		epoll_ctl(vdev->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int virtio_dev_running(const struct virtio_dev *vdev)
{
	return __atomic_load_n(&vdev->running, __ATOMIC_ACQUIRE);
}

static void drain_fd(int fd)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0)
		v = 0;
}

static void *worker(void *arg)
{
	struct virtio_dev *vdev = arg;
	const struct virtio_dev_ops *ops = vdev->ops;
	struct epoll_event evs[16];
	char name[16];
	int timeout;

	/* Named here, not by its starter: a vCPU thread's filter has no open() for /proc. */
	snprintf(name, sizeof(name), "kumo-%s", ops->name + (strncmp(ops->name, "virtio-", 7) ?
		 0 : 7));
	pthread_setname_np(pthread_self(), name);
	seccomp_enter(seccomp_device_kind(ops->name));
	if (ops->start) {
		ops->start(vdev);
	} else if (ops->queue_notify) {
		for (unsigned int q = 0; q < vdev->nqueues; q++)
			ops->queue_notify(vdev, q);
	}
	timeout = ops->idle ? ops->idle(vdev) : -1;
	for (;;) {
		int n = epoll_wait(vdev->epfd, evs, 16, timeout);

		if (n < 0 && errno != EINTR) {
			pr_err("%s: epoll_wait: %s", ops->name, strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			uint32_t kind = evs[i].data.u64 >> 32, idx = (uint32_t)evs[i].data.u64;

			if (kind == WK_CTL) {
				drain_fd(vdev->ctl_fd);
				return NULL;
			}
			if (kind == WK_KICK && idx < vdev->nqueues) {
				drain_fd(vdev->kick_fd[idx]);
				if (ops->queue_notify)
					ops->queue_notify(vdev, idx);
			} else if (kind == WK_DEV && ops->fd_ready) {
				ops->fd_ready(vdev, idx, evs[i].events);
			}
		}
		timeout = ops->idle ? ops->idle(vdev) : -1;
	}
}

static int worker_start(struct virtio_dev *vdev)
{
	sigset_t all, old;
	int ret;

	if (vdev->running)
		return 0;
	/* Signals belong to kumo's main thread; a write to a closed pipe gives EPIPE here. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&vdev->worker, NULL, worker, vdev);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		pr_err("%s: cannot start its I/O thread: %s", vdev->ops->name, strerror(ret));
		return -ret;
	}
	__atomic_store_n(&vdev->running, 1, __ATOMIC_RELEASE);
	return 0;
}

/* Stop the worker after the events it is handling; nothing runs on it afterwards. */
static void worker_stop(struct virtio_dev *vdev)
{
	uint64_t one = 1;

	if (!vdev->running)
		return;
	if (write(vdev->ctl_fd, &one, sizeof(one)) < 0)
		pr_err("%s: cannot stop its I/O thread: %s", vdev->ops->name, strerror(errno));
	pthread_join(vdev->worker, NULL);
	drain_fd(vdev->ctl_fd);
	__atomic_store_n(&vdev->running, 0, __ATOMIC_RELEASE);
}

int virtio_dev_activate(struct virtio_dev *vdev)
{
	int ret = vdev->ops->activate ? vdev->ops->activate(vdev) : 0;

	return ret ? ret : worker_start(vdev);
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
	vdev->running = vdev->quiesced = 0;
	vdev->epfd = epoll_create1(EPOLL_CLOEXEC);
	vdev->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (vdev->epfd < 0 || vdev->ctl_fd < 0) {
		ret = -errno;
		goto err_fds;
	}
	ret = watch(vdev, vdev->ctl_fd, EPOLLIN, WK_CTL, 0);
	for (unsigned int i = 0; !ret && i < n; i++)
		ret = watch(vdev, vdev->kick_fd[i], EPOLLIN, WK_KICK, i);
	if (ret)
		goto err_fds;
	ret = pthread_mutex_init(&vdev->lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_fds;
	}
	return 0;

err_fds:
	if (vdev->epfd >= 0)
		close(vdev->epfd);
	if (vdev->ctl_fd >= 0)
		close(vdev->ctl_fd);
	vdev->epfd = vdev->ctl_fd = -1;
	for (unsigned int i = 0; i < n; i++) {
		if (vdev->kick_fd[i] >= 0)
			close(vdev->kick_fd[i]);
		vdev->kick_fd[i] = -1;
	}
	return ret;
}

void virtio_dev_exit(struct virtio_dev *vdev)
{
	worker_stop(vdev);
	if (vdev->epfd >= 0)
		close(vdev->epfd);
	if (vdev->ctl_fd >= 0)
		close(vdev->ctl_fd);
	vdev->epfd = vdev->ctl_fd = -1;
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

	worker_stop(vdev);
	vdev->quiesced = 0;
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

/* ---- the state contract ---- */

int virtio_dev_quiesce(struct virtio_dev *vdev)
{
	int was = vdev->running;

	if (vdev->quiesced)
		return 0;
	worker_stop(vdev);
	if (was && vdev->ops->drain)
		vdev->ops->drain(vdev);
	vdev->quiesced = 1;
	return 0;
}

int virtio_dev_resume(struct virtio_dev *vdev)
{
	uint8_t st = __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
	int ret = 0;

	if (!vdev->quiesced)
		return 0;
	vdev->quiesced = 0;
	if ((st & VIRTIO_STATUS_DRIVER_OK) && !(st & VIRTIO_STATUS_NEEDS_RESET)) {
		ret = virtio_dev_activate(vdev);
		if (ret)
			pr_err("%s: cannot resume: %s", vdev->ops->name, strerror(-ret));
	}
	return ret;
}

/* Saved as "virtio": what was negotiated. */
struct virtio_state {
	uint64_t device_features, driver_features;
	uint8_t status, config_generation;
	uint16_t nqueues;
	uint32_t pad;
};
_Static_assert(sizeof(struct virtio_state) == 24, "virtio state layout");

/* Saved as "queues", one per queue: the transport's set-up and our ring indices. */
struct virtq_state {
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t size, last_avail, used_idx, signalled_used, msix_vector;
	uint8_t ready, signalled_valid, event_idx, indirect, broken, pad;
};
_Static_assert(sizeof(struct virtq_state) == 40, "virtq state layout");

#define VIRTIO_STATUS_ALL (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | \
			   VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK | \
			   VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)

int virtio_dev_save(struct virtio_dev *vdev, const struct dev_state_out *out)
{
	struct virtio_state vs = {
		.device_features = vdev->device_features,
		.driver_features = vdev->driver_features,
		.status = __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST),
		.config_generation = vdev->config_generation,
		.nqueues = (uint16_t)vdev->nqueues,
	};
	struct virtq_state qs[VIRTIO_MAX_QUEUES];
	int ret;

	memset(qs, 0, sizeof(qs));
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		const struct virtq *vq = &vdev->vqs[i];

		qs[i] = (struct virtq_state){
			.desc_gpa = vq->desc_gpa, .avail_gpa = vq->avail_gpa,
			.used_gpa = vq->used_gpa, .size = vq->size, .last_avail = vq->last_avail,
			.used_idx = vq->used_idx, .signalled_used = vq->signalled_used,
			.msix_vector = vq->msix_vector, .ready = !!vq->ready,
			.signalled_valid = !!vq->signalled_valid, .event_idx = !!vq->event_idx,
			.indirect = !!vq->indirect, .broken = !!vq->broken,
		};
	}
	ret = dev_put(out, "virtio", &vs, sizeof(vs));
	if (!ret)
		ret = dev_put(out, "queues", qs, vdev->nqueues * sizeof(qs[0]));
	if (!ret && vdev->ops->save)
		ret = vdev->ops->save(vdev, out);
	return ret;
}

static int bad(const struct virtio_dev *vdev, const char *what, uint64_t v)
{
	pr_err("state: %s: %s %#" PRIx64 " is not possible here", vdev->ops->name, what, v);
	return -EINVAL;
}

/* One queue's saved state, checked against the device and guest RAM. */
static int queue_check(const struct virtio_dev *vdev, const struct virtq_state *q,
		       unsigned int nvectors)
{
	struct virtq tmp = { .size = q->size, .desc_gpa = q->desc_gpa,
			     .avail_gpa = q->avail_gpa, .used_gpa = q->used_gpa };

	if (!q->size || q->size > vdev->ops->queue_max_size || (q->size & (q->size - 1)))
		return bad(vdev, "queue size", q->size);
	if ((q->ready | q->signalled_valid | q->event_idx | q->indirect | q->broken) > 1)
		return bad(vdev, "queue flag", 2);
	if (q->event_idx != virtio_has_feature(vdev, VIRTIO_F_EVENT_IDX) ||
	    q->indirect != virtio_has_feature(vdev, VIRTIO_F_INDIRECT_DESC))
		if (q->ready)
			return bad(vdev, "queue feature flags", q->event_idx << 1 | q->indirect);
	if (q->ready && !virtq_rings_ok(vdev->env->mem, &tmp))
		return bad(vdev, "queue rings at", q->desc_gpa);
	/* In flight on the guest's side: at most a ring's worth popped and not yet used. */
	if ((uint16_t)(q->last_avail - q->used_idx) > q->size)
		return bad(vdev, "queue indices", (uint64_t)q->last_avail << 16 | q->used_idx);
	if (q->msix_vector >= nvectors && q->msix_vector != 0xffff)
		return bad(vdev, "queue vector", q->msix_vector);
	return 0;
}

int virtio_dev_load(struct virtio_dev *vdev, const struct dev_state_in *in, unsigned int nvectors)
{
	struct virtio_state vs;
	struct virtq_state qs[VIRTIO_MAX_QUEUES];
	int ret;

	ret = dev_get(in, "virtio", &vs, sizeof(vs));
	if (ret)
		return ret;
	if (vs.device_features != vdev->device_features)
		return bad(vdev, "offered features", vs.device_features);
	if (vs.driver_features & ~vs.device_features)
		return bad(vdev, "accepted features", vs.driver_features);
	if (vs.nqueues != vdev->nqueues)
		return bad(vdev, "queue count", vs.nqueues);
	if (vs.status & ~VIRTIO_STATUS_ALL)
		return bad(vdev, "status", vs.status);
	ret = dev_get(in, "queues", qs, vdev->nqueues * sizeof(qs[0]));
	if (ret)
		return ret;
	vdev->driver_features = vs.driver_features;	/* queue_check reads them */
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		ret = queue_check(vdev, &qs[i], nvectors);
		if (ret) {
			vdev->driver_features = 0;
			return ret;
		}
	}
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		struct virtq *vq = &vdev->vqs[i];
		const struct virtq_state *q = &qs[i];

		vq->desc_gpa = q->desc_gpa;
		vq->avail_gpa = q->avail_gpa;
		vq->used_gpa = q->used_gpa;
		vq->size = q->size;
		vq->last_avail = q->last_avail;
		vq->used_idx = q->used_idx;
		vq->signalled_used = q->signalled_used;
		vq->signalled_valid = q->signalled_valid;
		vq->msix_vector = q->msix_vector;
		vq->event_idx = q->event_idx;
		vq->indirect = q->indirect;
		vq->broken = q->broken;
		vq->ready = q->ready;
	}
	vdev->config_generation = vs.config_generation;
	__atomic_store_n(&vdev->status, vs.status, __ATOMIC_SEQ_CST);
	vdev->quiesced = 1;	/* resume starts the worker if the driver had the device running */
	return vdev->ops->load ? vdev->ops->load(vdev, in) : 0;
}
