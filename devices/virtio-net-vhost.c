/*
 * virtio-net's data path through vhost-net: one /dev/vhost-net per queue pair. kumo gives the
 * kernel guest RAM (the mm/ regions as its memory table), each ring's size, base index and
 * host addresses, the queue's kick eventfd (the transport's ioeventfd, so a guest kick goes
 * from KVM to vhost without kumo), as call eventfd the irqfd of the queue's MSI-X vector (so
 * vhost interrupts the guest without kumo) or, when the vector is not deliverable at
 * DRIVER_OK, an eventfd the device's worker relays to the transport, and the tap as backend. Stopping takes the ring indices back into the core's queue state.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vhost.h>

#include "devices/virtio-net.h"
#include "mm/mem.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define VHOST_IOCTL(fd, req, arg, what) vhost_ioctl(fd, req, arg, #req, what)

static int vhost_ioctl(int fd, unsigned long req, void *arg, const char *name, const char *tap)
{
	if (ioctl(fd, req, arg) < 0) {
		int err = errno;

		pr_err("tap %s: %s: %s", tap, name, strerror(err));
		return -err;
	}
	return 0;
}

int net_vhost_open(struct virtio_net *n)
{
	uint64_t f;
	int ret;

	for (unsigned int p = 0; p < n->pairs; p++) {
		n->vhost_fd[p] = open("/dev/vhost-net", O_RDWR | O_CLOEXEC);
		if (n->vhost_fd[p] < 0) {
			ret = -errno;
			goto err;
		}
		ret = VHOST_IOCTL(n->vhost_fd[p], VHOST_SET_OWNER, NULL, n->opts.tap);
		if (!ret)
			ret = VHOST_IOCTL(n->vhost_fd[p], VHOST_GET_FEATURES, &f, n->opts.tap);
		if (ret)
			goto err;
		if ((f & NET_VHOST_NEEDED) != NET_VHOST_NEEDED) {
			pr_info("tap %s: vhost-net lacks features %#llx", n->opts.tap,
				(unsigned long long)(NET_VHOST_NEEDED & ~f));
			ret = -EOPNOTSUPP;
			goto err;
		}
		n->vhost_features = f;
	}
	return 0;
err:
	net_vhost_close(n);
	return ret;
}

void net_vhost_close(struct virtio_net *n)
{
	for (unsigned int p = 0; p < NET_MAX_PAIRS; p++) {
		if (n->vhost_fd[p] >= 0)
			close(n->vhost_fd[p]);
		n->vhost_fd[p] = -1;
	}
}

static int set_mem_table(struct virtio_net *n, int fd)
{
	const struct guest_mem *m = n->vdev.env->mem;
	const struct mm_region *r;
	struct vhost_memory *vm;
	unsigned int i = 0;
	int ret;

	vm = calloc(1, sizeof(*vm) + MM_MAX_REGIONS * sizeof(vm->regions[0]));
	if (!vm)
		return -ENOMEM;
	mm_for_each_region(m, r) {
		vm->regions[i].guest_phys_addr = r->gpa;
		vm->regions[i].memory_size = r->size;
		vm->regions[i].userspace_addr = (uint64_t)(uintptr_t)r->hva;
		i++;
	}
	vm->nregions = i;
	ret = VHOST_IOCTL(fd, VHOST_SET_MEM_TABLE, vm, n->opts.tap);
	free(vm);
	return ret;
}

/* One ring of pair p (index 0 receive, 1 transmit) from the core's queue q. */
static int set_vring(struct virtio_net *n, int fd, unsigned int idx, unsigned int q)
{
	const struct guest_mem *m = n->vdev.env->mem;
	struct virtq *vq = &n->vdev.vqs[q];
	struct vhost_vring_state num = { .index = idx, .num = vq->size };
	struct vhost_vring_state base = { .index = idx, .num = vq->last_avail };
	struct vhost_vring_file kick = { .index = idx, .fd = n->vdev.kick_fd[q] };
	struct vhost_vring_file call = { .index = idx, .fd = n->call_fd[q] };
	int irqfd = n->vdev.tops && n->vdev.tops->queue_irqfd ?
		    n->vdev.tops->queue_irqfd(&n->vdev, q) : -1;
	void *desc = mm_gpa_to_hva(m, vq->desc_gpa, 16ULL * vq->size);
	void *avail = mm_gpa_to_hva(m, vq->avail_gpa, 6 + 2ULL * vq->size);
	void *used = mm_gpa_to_hva(m, vq->used_gpa, 6 + 8ULL * vq->size);
	struct vhost_vring_addr addr = {
		.index = idx,
		.desc_user_addr = (uint64_t)(uintptr_t)desc,
		.avail_user_addr = (uint64_t)(uintptr_t)avail,
		.used_user_addr = (uint64_t)(uintptr_t)used,
	};
	int ret;

	if (!desc || !avail || !used)
		return -EFAULT;		/* enable_queue checked them: not reached */
	/* Straight into KVM when the transport has the vector's irqfd, else through the worker. */
	if (irqfd >= 0)
		call.fd = irqfd;
	if ((ret = VHOST_IOCTL(fd, VHOST_SET_VRING_NUM, &num, n->opts.tap)) ||
	    (ret = VHOST_IOCTL(fd, VHOST_SET_VRING_BASE, &base, n->opts.tap)) ||
	    (ret = VHOST_IOCTL(fd, VHOST_SET_VRING_ADDR, &addr, n->opts.tap)) ||
	    (ret = VHOST_IOCTL(fd, VHOST_SET_VRING_KICK, &kick, n->opts.tap)) ||
	    (ret = VHOST_IOCTL(fd, VHOST_SET_VRING_CALL, &call, n->opts.tap)))
		return ret;
	return 0;
}

static int set_backend(struct virtio_net *n, unsigned int p, int tap)
{
	struct vhost_vring_file b = { .fd = tap };
	int ret = 0;

	for (b.index = 0; b.index < 2 && !ret; b.index++)
		ret = VHOST_IOCTL(n->vhost_fd[p], VHOST_NET_SET_BACKEND, &b, n->opts.tap);
	return ret;
}

int net_vhost_start(struct virtio_net *n)
{
	struct virtio_dev *vdev = &n->vdev;
	uint64_t f = vdev->driver_features & n->vhost_features &
		     (NET_VHOST_NEEDED | 1ULL << VIRTIO_F_ACCESS_PLATFORM);
	int ret;

	f &= ~(1ULL << VIRTIO_F_ACCESS_PLATFORM);	/* no IOMMU: guest-physical addresses */
	for (unsigned int p = 0; p < n->pairs; p++) {
		int fd = n->vhost_fd[p];

		/* A pair whose rings the driver did not set up stays idle. */
		if (!vdev->vqs[2 * p].ready || !vdev->vqs[2 * p + 1].ready)
			continue;
		if ((ret = VHOST_IOCTL(fd, VHOST_SET_FEATURES, &f, n->opts.tap)) ||
		    (ret = set_mem_table(n, fd)) || (ret = set_vring(n, fd, 0, 2 * p)) ||
		    (ret = set_vring(n, fd, 1, 2 * p + 1)) ||
		    (ret = set_backend(n, p, n->tap_fd[p]))) {
			n->vhost_running |= 1 << p;	/* stop takes back what was set */
			net_vhost_stop(n);
			return ret;
		}
		n->vhost_running |= 1 << p;
	}
	return 0;
}

void net_vhost_stop(struct virtio_net *n)
{
	const struct guest_mem *m = n->vdev.env->mem;

	for (unsigned int p = 0; p < n->pairs; p++) {
		if (n->vhost_fd[p] < 0 || !(n->vhost_running & (1 << p)))
			continue;
		/* Detaching the backend flushes vhost's work: nothing in flight after it. */
		set_backend(n, p, -1);
		for (unsigned int idx = 0; idx < 2; idx++) {
			struct virtq *vq = &n->vdev.vqs[2 * p + idx];
			struct vhost_vring_state st = { .index = idx };
			uint16_t *used;

			if (!vq->ready)
				continue;
			if (ioctl(n->vhost_fd[p], VHOST_GET_VRING_BASE, &st) < 0)
				continue;	/* never started */
			vq->last_avail = (uint16_t)st.num;
			used = mm_gpa_to_hva(m, vq->used_gpa, 4);
			if (used)
				vq->used_idx = __atomic_load_n(&used[1], __ATOMIC_ACQUIRE);
			vq->signalled_valid = 0;	/* the next completion interrupts */
		}
	}
	n->vhost_running = 0;
}
