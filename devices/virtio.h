/*
 * virtio 1.x core, transport-independent: split virtqueues read from guest memory that the
 * guest may scribble over at any time. Every descriptor is validated (addresses through
 * mm_gpa_to_hva, lengths, chain loops and length, indirect tables, direction).
 */
#ifndef KUMO_VIRTIO_H
#define KUMO_VIRTIO_H

#include <stdint.h>
#include <sys/uio.h>

struct guest_mem;

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33

#define VIRTQ_MAX_SIZE 1024
#define VIRTQ_MAX_SEGS 256	/* iovecs one request may have (in + out) */

struct virtq {
	uint16_t size;			/* negotiated queue size (power of two) */
	int ready;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t last_avail;		/* next avail ring entry we will take */
	uint16_t used_idx;		/* our copy of used->idx */
	uint16_t signalled_used;	/* used_idx when we last interrupted (event idx) */
	int signalled_valid;
	int event_idx;			/* VIRTIO_F_EVENT_IDX negotiated */
	int indirect;			/* VIRTIO_F_INDIRECT_DESC negotiated */
	uint16_t msix_vector;		/* 0xffff = none */
	int broken;			/* a malformed chain was seen: the device needs a reset */
};

/* One request: device-readable (out) then device-writable (in) buffers, as host pointers. */
struct virtq_elem {
	uint16_t head;
	unsigned int nout, nin;
	struct iovec out[VIRTQ_MAX_SEGS];
	struct iovec in[VIRTQ_MAX_SEGS];
	uint64_t out_len, in_len;	/* total bytes */
};

/* Reset the ring state (addresses and size are kept by the transport). */
void virtq_reset(struct virtq *vq);

/* Whether vq's size is valid and its three rings lie in guest RAM with the alignments of
 * virtio 2.7 (desc 16, avail 2, used 4). */
int virtq_rings_ok(const struct guest_mem *m, const struct virtq *vq);

/*
 * Take the next available chain. Returns 1 with *e filled, 0 when the ring is empty, or
 * -EINVAL/-EFAULT/-ELOOP/-E2BIG for a malformed ring or chain: then vq->broken is set and the
 * device should be marked NEEDS_RESET (the caller must not touch the ring again).
 */
int virtq_pop(const struct guest_mem *m, struct virtq *vq, struct virtq_elem *e);

/* Return a chain to the guest with len bytes written into its in buffers. 0 or -EFAULT. */
int virtq_push(const struct guest_mem *m, struct virtq *vq, uint16_t head, uint32_t len);

/* Whether the guest wants an interrupt now (VIRTQ_AVAIL_F_NO_INTERRUPT / used_event). */
int virtq_should_notify(const struct guest_mem *m, struct virtq *vq);

/* With event idx: tell the guest which avail index to kick us at (avail_event). */
void virtq_set_avail_event(const struct guest_mem *m, struct virtq *vq);

/*
 * The device wrote the first len bytes of these buffers (host pointers into m): mark their
 * pages dirty for a migration in progress (nothing otherwise). Call after the write, before the
 * chain is pushed: KVM's dirty log does not see what the VMM writes.
 */
void virtio_mark_written(const struct guest_mem *m, const struct iovec *iov, unsigned int n,
			 size_t len);

/* Copy helpers across an iovec array (bounded by the iovecs). Return bytes copied. */
size_t iov_to_buf(const struct iovec *iov, unsigned int n, size_t off, void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, unsigned int n, size_t off, const void *buf,
		    size_t len);

/* ---- a virtio device, whatever its transport ---- */

#include <pthread.h>

struct dev_env;
struct dev_state_in;
struct dev_state_out;
struct virtio_dev;

#define VIRTIO_MAX_QUEUES 64

/* Device status bits (virtio 1.x 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* What a device type implements (static const, designated initializers). */
struct virtio_dev_ops {
	const char *name;
	uint16_t device_id;		/* 2 block, 3 console, 5 balloon */
	uint32_t pci_class;		/* class code for the PCI transport, e.g. 0x018000 */
	uint16_t queue_max_size;
	uint32_t config_size;		/* bytes of device-specific config space */
	/* Number of queues for this instance (may depend on its options). */
	unsigned int (*num_queues)(struct virtio_dev *vdev);
	/* Device feature bits offered (the transport adds VERSION_1 etc.). */
	uint64_t (*features)(struct virtio_dev *vdev);
	void (*config_read)(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len);
	void (*config_write)(struct virtio_dev *vdev, uint32_t off, const void *data, uint32_t len);
	/*
	 * DRIVER_OK was set (or a loaded state has it): set up what serving the queues needs.
	 * Runs before the I/O worker starts. 0 or -errno.
	 */
	int (*activate)(struct virtio_dev *vdev);
	/*
	 * Device reset by the driver, the worker already stopped: drop in-flight state (wait for
	 * host I/O touching guest buffers, hand nothing back); queues are reset after.
	 */
	void (*reset)(struct virtio_dev *vdev);

	/* ---- on the device's one I/O worker (virtio_dev_activate starts it) ---- */
	/* Queue q was kicked (its eventfd already drained). */
	void (*queue_notify)(struct virtio_dev *vdev, unsigned int q);
	/* First thing on every (re)start: serve what was queued meanwhile (default: every
	 * queue's queue_notify). */
	void (*start)(struct virtio_dev *vdev);
	/* A descriptor added with virtio_dev_watch(..., tag) is ready (epoll events). */
	void (*fd_ready)(struct virtio_dev *vdev, uint32_t tag, uint32_t events);
	/* After every round of events: the next wait's timeout in ms, -1 for none (optional). */
	int (*idle)(struct virtio_dev *vdev);

	/* ---- the state contract (devices/dev.h), the worker stopped ---- */
	/*
	 * Quiesce: finish the I/O in flight and hand it to the guest, give back every buffer
	 * taken from a ring and not used (virtq_unpop), so the device holds no descriptor.
	 */
	void (*drain)(struct virtio_dev *vdev);
	/* The device type's own guest-visible state (the core saves queues and features). */
	int (*save)(struct virtio_dev *vdev, const struct dev_state_out *out);
	int (*load)(struct virtio_dev *vdev, const struct dev_state_in *in);
};

/*
 * What a transport implements for the core (virtio-pci, or a test's fake). Both are called
 * from device I/O threads: they must not wait for a lock that is held while ops->reset() or
 * ops->activate() runs (reset joins those threads).
 */
struct virtio_transport_ops {
	/* Interrupt the guest for queue q / for a config change. */
	void (*notify_queue)(struct virtio_dev *vdev, unsigned int q);
	void (*notify_config)(struct virtio_dev *vdev);
	/*
	 * Optional: an eventfd that raises queue q's interrupt without the VMM (a KVM irqfd on
	 * the vector's route), for a kernel data path (vhost); -1 when the queue has no vector or
	 * it is not deliverable yet. Writes to it bypass the device's MSI-X mask.
	 */
	int (*queue_irqfd)(struct virtio_dev *vdev, unsigned int q);
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *priv;				/* the device type's own state */
	const struct dev_env *env;
	const struct virtio_transport_ops *tops;
	void *transport;
	pthread_mutex_t lock;			/* status, features, queue set-up */
	uint64_t device_features;		/* offered (device + transport bits) */
	uint64_t driver_features;		/* accepted by the driver */
	uint8_t status;
	uint8_t config_generation;
	unsigned int nqueues;
	struct virtq vqs[VIRTIO_MAX_QUEUES];
	int kick_fd[VIRTIO_MAX_QUEUES];		/* eventfds: the guest notified queue i */
	uint64_t stats_requests, stats_errors;	/* counters for `stats` */
	/* The I/O worker: one thread, epoll on the kick eventfds and the device's own fds. */
	int epfd, ctl_fd;
	pthread_t worker;
	int running;				/* atomic: the worker thread exists */
	int quiesced;				/* stopped by virtio_dev_quiesce() */
};

/*
 * Fill the common part of a device: ops, env, priv, the lock, nqueues (ops->num_queues or 1),
 * device_features (ops->features) and one non-blocking eventfd per queue in kick_fd[] (the
 * transport registers them as ioeventfds). 0 or -errno.
 */
int virtio_dev_init(struct virtio_dev *vdev, const struct virtio_dev_ops *ops,
		    const struct dev_env *env, void *priv) __attribute__((warn_unused_result));
/* Close the kick eventfds and destroy the lock (the device is stopped). */
void virtio_dev_exit(struct virtio_dev *vdev);

/* Negotiated feature test. */
static inline int virtio_has_feature(const struct virtio_dev *vdev, unsigned int bit)
{
	return !!(vdev->driver_features & (1ULL << bit));
}

/*
 * Return a finished chain and interrupt the guest if it wants one (event idx /
 * NO_INTERRUPT honoured). Safe from the device's I/O thread.
 */
void virtio_complete(struct virtio_dev *vdev, unsigned int q, uint16_t head, uint32_t len);

/* Interrupt the guest for queue q if it wants one (after one or more virtq_push()). */
void virtio_notify(struct virtio_dev *vdev, unsigned int q);

/* A malformed ring: set NEEDS_RESET, tell the driver (config interrupt), stop using q. */
void virtio_set_needs_reset(struct virtio_dev *vdev, unsigned int q);

/* Reset the device to its initial state: stop the worker, ops->reset, then every queue. */
void virtio_dev_reset(struct virtio_dev *vdev);

/* DRIVER_OK: ops->activate, then start the I/O worker. 0 or -errno. */
int virtio_dev_activate(struct virtio_dev *vdev) __attribute__((warn_unused_result));

/* Watch fd on the worker (epoll events); ops->fd_ready gets tag. 0 or -errno. */
int virtio_dev_watch(struct virtio_dev *vdev, int fd, uint32_t events, uint32_t tag)
	__attribute__((warn_unused_result));
void virtio_dev_unwatch(struct virtio_dev *vdev, int fd);

/* Whether the worker runs (for callers that serve the device themselves when it does not). */
int virtio_dev_running(const struct virtio_dev *vdev);

/*
 * The state contract (devices/dev.h) for the device and its queues, the transport calling:
 * quiesce stops the worker and drains the device (ops->drain); resume restarts the worker if
 * the driver had the device running (DRIVER_OK, not NEEDS_RESET). save/load write and read
 * features, status and every queue's state, then the device type's own (ops->save/load).
 * load checks every value against what the device offers, guest RAM and the transport's
 * nvectors (a queue's MSI-X vector below it or 0xffff, none) before it applies any.
 */
int virtio_dev_quiesce(struct virtio_dev *vdev);
int virtio_dev_resume(struct virtio_dev *vdev);
int virtio_dev_save(struct virtio_dev *vdev, const struct dev_state_out *out);
int virtio_dev_load(struct virtio_dev *vdev, const struct dev_state_in *in,
		    unsigned int nvectors) __attribute__((warn_unused_result));

/* Give back the last chain taken from vq (a buffer held, not used): it will be popped again. */
void virtq_unpop(struct virtq *vq);

#endif
