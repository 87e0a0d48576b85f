#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/virtio-pci.h"
#include "mm/mem.h"
#include "vmm/bus.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

/*
 * BAR 4 (64-bit, prefetchable, as QEMU and Linux expect): the four virtio structures, each on
 * its own page. BAR 1 (32-bit): MSI-X table and PBA.
 */
#define VP_BAR 4
#define VP_BAR_SIZE 0x4000
#define VP_COMMON 0x0000
#define VP_ISR 0x1000
#define VP_DEVICE 0x2000
#define VP_NOTIFY 0x3000
#define VP_REGION 0x1000
#define VP_NOTIFY_MULT 4
/* Linux notifies with a 16-bit write; other widths still reach the MMIO fallback. */
#define VP_NOTIFY_LEN 2

#define MSIX_BAR 1
#define MSIX_BAR_SIZE 0x1000
#define MSIX_TABLE 0x000
#define MSIX_PBA 0x800
#define MSIX_ENTRY_SIZE 16
#define MSIX_CTRL_MASKED 1u
#define MSIX_FLAGS_MASKALL 0x4000
#define MSIX_FLAGS_ENABLE 0x8000

#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define ISR_QUEUE 1
#define ISR_CONFIG 2

/* struct virtio_pci_common_cfg (virtio 1.2, 4.1.4.3), offsets in the common region. */
enum {
	CC_DFSELECT = 0x00, CC_DF = 0x04, CC_GFSELECT = 0x08, CC_GF = 0x0c, CC_MSIX = 0x10,
	CC_NUMQ = 0x12, CC_STATUS = 0x14, CC_CFGGEN = 0x15, CC_Q_SELECT = 0x16,
	CC_Q_SIZE = 0x18, CC_Q_MSIX = 0x1a, CC_Q_ENABLE = 0x1c, CC_Q_NOFF = 0x1e,
	CC_Q_DESC = 0x20, CC_Q_AVAIL = 0x28, CC_Q_USED = 0x30, CC_Q_NDATA = 0x38,
	CC_Q_RESET = 0x3a, CC_SIZE = 0x3c,
};

static const struct { uint8_t off, size; } cc_fields[] = {
	{ CC_DFSELECT, 4 }, { CC_DF, 4 }, { CC_GFSELECT, 4 }, { CC_GF, 4 }, { CC_MSIX, 2 },
	{ CC_NUMQ, 2 }, { CC_STATUS, 1 }, { CC_CFGGEN, 1 }, { CC_Q_SELECT, 2 },
	{ CC_Q_SIZE, 2 }, { CC_Q_MSIX, 2 }, { CC_Q_ENABLE, 2 }, { CC_Q_NOFF, 2 },
	{ CC_Q_DESC, 8 }, { CC_Q_AVAIL, 8 }, { CC_Q_USED, 8 }, { CC_Q_NDATA, 2 },
	{ CC_Q_RESET, 2 },
};

struct virtio_pci_cap {
	uint8_t cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
	uint32_t offset, length;
};

struct virtio_pci_notify_cap {
	struct virtio_pci_cap cap;
	uint32_t notify_off_multiplier;
};

struct virtio_pci_cfg_cap {
	struct virtio_pci_cap cap;
	uint8_t pci_cfg_data[4];
};

#define CFG_CAP_BAR 4
#define CFG_CAP_OFFSET 8
#define CFG_CAP_LENGTH 12
#define CFG_CAP_DATA 16


static void signal_fd(int fd)
{
	if (fd >= 0 && eventfd_write(fd, 1) < 0)
		pr_warn_ratelimited("virtio-pci: eventfd write: %s", strerror(errno));
}

/* ---- MSI-X ---- */

static int vector_deliverable(const struct virtio_pci *vp, unsigned int v)
{
	return vp->msix_enabled && !vp->msix_masked && !(vp->msix[v].ctrl & MSIX_CTRL_MASKED);
}

/*
 * Bring vector v's route up to date and deliver what is pending, if it may be delivered now.
 * The route is (re)written lazily: Linux programs an entry while it is masked.
 */
static void msix_update(struct virtio_pci *vp, unsigned int v)
{
	struct msix_entry *e = &vp->msix[v];
	const struct dev_env *env = vp->env;
	int ret;

	if (!vector_deliverable(vp, v))
		return;
	if (!e->routed) {
		if (!env->msi_route)
			return;
		ret = env->msi_route(env->vmm, &e->gsi, e->addr, e->data);
		if (ret) {
			pr_warn_ratelimited("%s: MSI-X vector %u route: %s", vp->pci.name, v,
					    strerror(-ret));
			return;
		}
		if (!e->bound && env->irqfd) {
			ret = env->irqfd(env->vmm, e->irqfd, e->gsi, 1);
			if (ret) {
				pr_warn_ratelimited("%s: MSI-X vector %u irqfd: %s", vp->pci.name,
						    v, strerror(-ret));
				return;
			}
			e->bound = 1;
		}
		e->routed = 1;
	}
	if (e->pending) {
		e->pending = 0;
		signal_fd(e->irqfd);
		__atomic_add_fetch(&vp->msix_irqs, 1, __ATOMIC_RELAXED);
	}
}

/* Raise vector v (vp->lock held); a masked vector keeps it pending in the PBA. */
static void msix_fire(struct virtio_pci *vp, unsigned int v)
{
	if (v >= vp->nvectors)
		return;
	vp->msix[v].pending = 1;
	msix_update(vp, v);
}

static void msix_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct virtio_pci *vp = opaque;
	uint8_t img[MSIX_ENTRY_SIZE];

	memset(data, 0, len);
	pthread_mutex_lock(&vp->lock);
	if (off < MSIX_TABLE + (uint64_t)vp->nvectors * MSIX_ENTRY_SIZE) {
		const struct msix_entry *e = &vp->msix[off / MSIX_ENTRY_SIZE];
		uint32_t eo = (uint32_t)(off % MSIX_ENTRY_SIZE);

		if (len <= MSIX_ENTRY_SIZE - eo) {
			io_put_le(img, 8, e->addr);
			io_put_le(img + 8, 4, e->data);
			io_put_le(img + 12, 4, e->ctrl);
			memcpy(data, img + eo, len);
		}
	} else if (off >= MSIX_PBA && off - MSIX_PBA < 8 * ((vp->nvectors + 63) / 64)) {
		for (uint32_t i = 0; i < len && off + i < MSIX_BAR_SIZE; i++) {
			uint64_t bit0 = (off + i - MSIX_PBA) * 8;
			uint8_t b = 0;

			for (unsigned int k = 0; k < 8; k++)
				if (bit0 + k < vp->nvectors && vp->msix[bit0 + k].pending)
					b |= (uint8_t)(1u << k);
			((uint8_t *)data)[i] = b;
		}
	}
	pthread_mutex_unlock(&vp->lock);
}

static void msix_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct virtio_pci *vp = opaque;
	uint8_t img[MSIX_ENTRY_SIZE];
	struct msix_entry *e;
	uint32_t eo = (uint32_t)(off % MSIX_ENTRY_SIZE);
	uint64_t addr;
	uint32_t val;

	pthread_mutex_lock(&vp->lock);
	/* The PBA is read-only; the table takes accesses that stay inside one entry. */
	if (off >= MSIX_TABLE + (uint64_t)vp->nvectors * MSIX_ENTRY_SIZE ||
	    len > MSIX_ENTRY_SIZE - eo)
		goto out;
	e = &vp->msix[off / MSIX_ENTRY_SIZE];
	io_put_le(img, 8, e->addr);
	io_put_le(img + 8, 4, e->data);
	io_put_le(img + 12, 4, e->ctrl);
	memcpy(img + eo, data, len);
	addr = io_get_le(img, 8);
	val = (uint32_t)io_get_le(img + 8, 4);
	if (addr != e->addr || val != e->data) {
		e->addr = addr;
		e->data = val;
		e->routed = 0;
	}
	e->ctrl = (uint32_t)io_get_le(img + 12, 4) & MSIX_CTRL_MASKED;
	msix_update(vp, (unsigned int)(off / MSIX_ENTRY_SIZE));
out:
	pthread_mutex_unlock(&vp->lock);
}

static const struct io_ops msix_ops = { .read = msix_read, .write = msix_write };

/* ---- the transport ops the core calls (from device I/O threads) ---- */

static void vp_notify_queue(struct virtio_dev *vdev, unsigned int q)
{
	struct virtio_pci *vp = vdev->transport;
	uint16_t v;

	if (q >= vdev->nqueues)
		return;
	v = __atomic_load_n(&vdev->vqs[q].msix_vector, __ATOMIC_RELAXED);
	pthread_mutex_lock(&vp->lock);
	if (!vp->msix_enabled)
		vp->isr |= ISR_QUEUE;	/* no INTx line: the driver can only poll */
	else
		msix_fire(vp, v);
	pthread_mutex_unlock(&vp->lock);
}

static void vp_notify_config(struct virtio_dev *vdev)
{
	struct virtio_pci *vp = vdev->transport;

	pthread_mutex_lock(&vp->lock);
	vp->isr |= ISR_CONFIG;
	if (vp->msix_enabled)
		msix_fire(vp, vp->msix_config);
	pthread_mutex_unlock(&vp->lock);
}

static int vp_queue_irqfd(struct virtio_dev *vdev, unsigned int q)
{
	struct virtio_pci *vp = vdev->transport;
	int fd = -1;
	uint16_t v;

	if (q >= vdev->nqueues)
		return -1;
	v = __atomic_load_n(&vdev->vqs[q].msix_vector, __ATOMIC_RELAXED);
	pthread_mutex_lock(&vp->lock);
	if (v < vp->nvectors && vector_deliverable(vp, v)) {
		msix_update(vp, v);	/* routes and binds it if it was not yet */
		if (vp->msix[v].routed && vp->msix[v].bound)
			fd = vp->msix[v].irqfd;
	}
	pthread_mutex_unlock(&vp->lock);
	return fd;
}

static const struct virtio_transport_ops virtio_pci_tops = {
	.notify_queue = vp_notify_queue,
	.notify_config = vp_notify_config,
	.queue_irqfd = vp_queue_irqfd,
};

/* ---- common configuration ---- */

static struct virtq *selected_vq(struct virtio_pci *vp)
{
	return vp->queue_select < vp->vdev->nqueues ? &vp->vdev->vqs[vp->queue_select] : NULL;
}

/* vdev->lock held. */
static uint64_t cc_get(struct virtio_pci *vp, unsigned int off)
{
	struct virtio_dev *vdev = vp->vdev;
	struct virtq *vq = selected_vq(vp);

	switch (off) {
	case CC_DFSELECT:
		return vp->device_feature_select;
	case CC_DF:
		return vp->device_feature_select < 2 ?
		       (uint32_t)(vdev->device_features >> (32 * vp->device_feature_select)) : 0;
	case CC_GFSELECT:
		return vp->driver_feature_select;
	case CC_GF:
		return vp->driver_feature_select < 2 ?
		       (uint32_t)(vdev->driver_features >> (32 * vp->driver_feature_select)) : 0;
	case CC_MSIX:
		return __atomic_load_n(&vp->msix_config, __ATOMIC_RELAXED);
	case CC_NUMQ:
		return vdev->nqueues;
	case CC_STATUS:
		return __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
	case CC_CFGGEN:
		return vdev->config_generation;
	case CC_Q_SELECT:
		return vp->queue_select;
	}
	if (!vq)
		return 0;	/* a queue that does not exist reads as size 0 */
	switch (off) {
	case CC_Q_SIZE:
		return vq->size;
	case CC_Q_MSIX:
		return vq->msix_vector;
	case CC_Q_ENABLE:
		return vq->ready;
	case CC_Q_NOFF:
		return vp->queue_select;	/* queue i notifies at notify_base + 4 * i */
	case CC_Q_DESC:
		return vq->desc_gpa;
	case CC_Q_AVAIL:
		return vq->avail_gpa;
	case CC_Q_USED:
		return vq->used_gpa;
	}
	return 0;
}

static int features_ok(const struct virtio_dev *vdev)
{
	return !(vdev->driver_features & ~vdev->device_features) &&
	       (vdev->driver_features & (1ULL << VIRTIO_F_VERSION_1));
}

/*
 * Driver reset (status 0), vdev->lock held. The core's reset joins the device's I/O threads;
 * they only ever take vp->lock (through the transport ops), which we do not hold here.
 */
static void vp_reset(struct virtio_pci *vp)
{
	struct virtio_dev *vdev = vp->vdev;

	virtio_dev_reset(vdev);
	vp->device_feature_select = 0;
	vp->driver_feature_select = 0;
	vp->queue_select = 0;
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		struct virtq *vq = &vdev->vqs[i];

		vq->ready = 0;
		__atomic_store_n(&vq->size, vdev->ops->queue_max_size, __ATOMIC_RELAXED);
		vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
		__atomic_store_n(&vq->msix_vector, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELAXED);
	}
	pthread_mutex_lock(&vp->lock);
	vp->msix_config = VIRTIO_MSI_NO_VECTOR;
	vp->isr = 0;
	pthread_mutex_unlock(&vp->lock);
}

static void set_status(struct virtio_pci *vp, uint8_t v)
{
	struct virtio_dev *vdev = vp->vdev;
	uint8_t old = __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
	int activate = 0, ret;

	if (!v) {
		vp_reset(vp);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
	    !features_ok(vdev))
		v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;	/* the driver reads it back */
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
		if (v & VIRTIO_STATUS_FEATURES_OK)
			activate = 1;
		else
			v = (uint8_t)((v & ~VIRTIO_STATUS_DRIVER_OK) | VIRTIO_STATUS_NEEDS_RESET);
	}
	/* NEEDS_RESET is the device's; an I/O thread may set it concurrently. */
	while (!__atomic_compare_exchange_n(&vdev->status, &old,
					    (uint8_t)(v | (old & VIRTIO_STATUS_NEEDS_RESET)), 0,
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		;
	if (activate) {
		ret = virtio_dev_activate(vdev);
		if (ret) {
			pr_warn_ratelimited("%s: activation failed: %s", vdev->ops->name,
					    strerror(-ret));
			__atomic_fetch_or(&vdev->status, VIRTIO_STATUS_NEEDS_RESET,
					  __ATOMIC_SEQ_CST);
		}
	}
}

static void enable_queue(struct virtio_pci *vp, unsigned int q)
{
	struct virtio_dev *vdev = vp->vdev;
	const struct guest_mem *m = vp->env->mem;
	struct virtq *vq = &vdev->vqs[q];

	if (vq->ready)
		return;
	if (!virtq_rings_ok(m, vq)) {
		pr_warn_ratelimited("%s: queue %u rings outside guest RAM", vdev->ops->name, q);
		virtio_set_needs_reset(vdev, q);
		return;
	}
	virtq_reset(vq);
	vq->event_idx = virtio_has_feature(vdev, VIRTIO_F_EVENT_IDX);
	vq->indirect = virtio_has_feature(vdev, VIRTIO_F_INDIRECT_DESC);
	__atomic_store_n(&vq->ready, 1, __ATOMIC_RELEASE);
}

/* vdev->lock held. Writes to read-only fields and to absent queues are dropped. */
static void cc_set(struct virtio_pci *vp, unsigned int off, uint64_t val)
{
	struct virtio_dev *vdev = vp->vdev;
	struct virtq *vq = selected_vq(vp);
	uint8_t status = __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
	uint64_t mask;

	switch (off) {
	case CC_DFSELECT:
		vp->device_feature_select = (uint32_t)val;
		return;
	case CC_GFSELECT:
		vp->driver_feature_select = (uint32_t)val;
		return;
	case CC_GF:
		if (vp->driver_feature_select >= 2 || (status & VIRTIO_STATUS_FEATURES_OK))
			return;
		mask = 0xffffffffULL << (32 * vp->driver_feature_select);
		vdev->driver_features = (vdev->driver_features & ~mask) |
					((val << (32 * vp->driver_feature_select)) & mask);
		return;
	case CC_MSIX:
		pthread_mutex_lock(&vp->lock);
		vp->msix_config = val < vp->nvectors ? (uint16_t)val : VIRTIO_MSI_NO_VECTOR;
		pthread_mutex_unlock(&vp->lock);
		return;
	case CC_STATUS:
		set_status(vp, (uint8_t)val);
		return;
	case CC_Q_SELECT:
		vp->queue_select = (uint16_t)val;
		return;
	}
	if (!vq)
		return;
	switch (off) {
	case CC_Q_SIZE:
		/* Power of two up to the device's maximum, else ignored. */
		if (!vq->ready && val && !(val & (val - 1)) && val <= vdev->ops->queue_max_size)
			__atomic_store_n(&vq->size, (uint16_t)val, __ATOMIC_RELAXED);
		return;
	case CC_Q_MSIX:
		__atomic_store_n(&vq->msix_vector,
				 val < vp->nvectors ? (uint16_t)val : VIRTIO_MSI_NO_VECTOR,
				 __ATOMIC_RELAXED);
		return;
	case CC_Q_ENABLE:
		if (val == 1)
			enable_queue(vp, vp->queue_select);
		return;
	case CC_Q_DESC:
	case CC_Q_AVAIL:
	case CC_Q_USED:
		if (vq->ready)
			return;
		if (off == CC_Q_DESC)
			vq->desc_gpa = val;
		else if (off == CC_Q_AVAIL)
			vq->avail_gpa = val;
		else
			vq->used_gpa = val;
		return;
	}
}

/*
 * Any width at any offset: the access is applied to an image of the structure, then each
 * field it touched is set from the image (so a 32-bit write to half of queue_desc works).
 */
static void common_access(struct virtio_pci *vp, uint32_t off, void *data, uint32_t len,
			  int is_write)
{
	uint8_t img[CC_SIZE + 8];
	uint32_t n;

	if (!is_write)
		memset(data, 0, len);
	if (off >= CC_SIZE)
		return;
	n = len < CC_SIZE - off ? len : CC_SIZE - off;
	pthread_mutex_lock(&vp->vdev->lock);
	for (size_t i = 0; i < sizeof(cc_fields) / sizeof(cc_fields[0]); i++)
		io_put_le(img + cc_fields[i].off, cc_fields[i].size, cc_get(vp, cc_fields[i].off));
	if (!is_write) {
		memcpy(data, img + off, n);
	} else {
		memcpy(img + off, data, n);
		for (size_t i = 0; i < sizeof(cc_fields) / sizeof(cc_fields[0]); i++) {
			unsigned int fo = cc_fields[i].off, fs = cc_fields[i].size;

			if (fo < off + n && fo + fs > off)
				cc_set(vp, fo, io_get_le(img + fo, fs));
		}
	}
	pthread_mutex_unlock(&vp->vdev->lock);
}

/* ---- BAR 4 ---- */

static void bar_access(struct virtio_pci *vp, uint64_t off, void *data, uint32_t len,
		       int is_write)
{
	struct virtio_dev *vdev = vp->vdev;
	uint32_t o;

	if (off >= VP_BAR_SIZE || len > VP_BAR_SIZE - off || !len) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	o = (uint32_t)(off % VP_REGION);
	switch (off / VP_REGION * VP_REGION) {
	case VP_COMMON:
		common_access(vp, o, data, len, is_write);
		break;
	case VP_ISR:
		if (is_write)
			break;
		memset(data, 0, len);
		if (o == 0) {	/* reading clears it */
			pthread_mutex_lock(&vp->lock);
			*(uint8_t *)data = vp->isr;
			vp->isr = 0;
			pthread_mutex_unlock(&vp->lock);
		}
		break;
	case VP_DEVICE:
		if (o >= vdev->ops->config_size || len > vdev->ops->config_size - o) {
			if (!is_write)
				memset(data, 0, len);
		} else if (is_write) {
			if (vdev->ops->config_write)
				vdev->ops->config_write(vdev, o, data, len);
		} else if (vdev->ops->config_read) {
			vdev->ops->config_read(vdev, o, data, len);
		} else {
			memset(data, 0, len);
		}
		break;
	case VP_NOTIFY:
		if (!is_write) {
			memset(data, 0, len);
			break;
		}
		/* No ioeventfd caught this write (not registered yet, or another width). */
		if (o / VP_NOTIFY_MULT < vdev->nqueues)
			signal_fd(vdev->kick_fd[o / VP_NOTIFY_MULT]);
		break;
	}
}

static void vp_bar_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	bar_access(opaque, off, data, len, 0);
}

static void vp_bar_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	bar_access(opaque, off, (void *)data, len, 1);
}

static const struct io_ops vp_bar_ops = { .read = vp_bar_read, .write = vp_bar_write };

/* ---- PCI hooks (host lock held) ---- */

static void set_ioeventfds(struct virtio_pci *vp, int assign)
{
	const struct dev_env *env = vp->env;
	struct virtio_dev *vdev = vp->vdev;
	int ret;

	if (!env->ioeventfd || vp->ioeventfds_on == assign)
		return;
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		ret = env->ioeventfd(env->vmm, vdev->kick_fd[i],
				     vp->notify_base + VP_NOTIFY_MULT * i, VP_NOTIFY_LEN, assign);
		if (ret && assign)
			pr_warn_ratelimited("%s: ioeventfd for queue %u: %s (notifications "
					    "will exit)", vp->pci.name, i, strerror(-ret));
	}
	vp->ioeventfds_on = assign;
}

static void vp_bar_mapped(struct pci_device *d, int idx, uint64_t addr, int mapped)
{
	struct virtio_pci *vp = d->owner;

	if (idx != VP_BAR)
		return;
	pthread_mutex_lock(&vp->lock);
	if (mapped) {
		vp->notify_base = addr + VP_NOTIFY;
		set_ioeventfds(vp, 1);
	} else {
		set_ioeventfds(vp, 0);
	}
	pthread_mutex_unlock(&vp->lock);
}

static int overlaps(uint32_t off, uint32_t len, uint32_t start, uint32_t end)
{
	return off < end && off + len > start;
}

/* The pci_cfg capability's window: an access of cap.length at cap.offset in BAR cap.bar. */
static int cfg_cap_target(struct virtio_pci *vp, uint64_t *off, uint32_t *len, int *bar)
{
	const uint8_t *c = &vp->pci.cfg[vp->cfg_cap];
	uint32_t o = (uint32_t)io_get_le(c + CFG_CAP_OFFSET, 4);
	uint32_t l = (uint32_t)io_get_le(c + CFG_CAP_LENGTH, 4);

	*bar = c[CFG_CAP_BAR];
	if ((*bar != VP_BAR && *bar != MSIX_BAR) || (l != 1 && l != 2 && l != 4) || o % l)
		return 0;
	*off = o;
	*len = l;
	return 1;
}

static void vp_cfg_before_read(struct pci_device *d, uint32_t off, uint32_t len)
{
	struct virtio_pci *vp = d->owner;
	uint8_t *cd = &d->cfg[vp->cfg_cap + CFG_CAP_DATA];
	uint64_t boff;
	uint32_t blen;
	int bar;

	if (!overlaps(off, len, vp->cfg_cap + CFG_CAP_DATA, vp->cfg_cap + CFG_CAP_DATA + 4) ||
	    !cfg_cap_target(vp, &boff, &blen, &bar))
		return;
	memset(cd, 0, 4);
	if (bar == VP_BAR)
		vp_bar_read(vp, boff, cd, blen);
	else if (boff + blen <= MSIX_BAR_SIZE)
		msix_read(vp, boff, cd, blen);
}

/* The MSI-X message control word in config space changed: enable and function mask. */
static void msix_control_changed(struct virtio_pci *vp)
{
	uint16_t ctrl;

	memcpy(&ctrl, &vp->pci.cfg[vp->msix_cap + 2], 2);
	pthread_mutex_lock(&vp->lock);
	vp->msix_enabled = !!(ctrl & MSIX_FLAGS_ENABLE);
	vp->msix_masked = !!(ctrl & MSIX_FLAGS_MASKALL);
	for (unsigned int v = 0; v < vp->nvectors; v++)
		msix_update(vp, v);
	pthread_mutex_unlock(&vp->lock);
}

static void vp_cfg_written(struct pci_device *d, uint32_t off, uint32_t len)
{
	struct virtio_pci *vp = d->owner;
	uint64_t boff;
	uint32_t blen;
	int bar;

	if (overlaps(off, len, vp->msix_cap + 2, vp->msix_cap + 4))
		msix_control_changed(vp);
	if (overlaps(off, len, vp->cfg_cap + CFG_CAP_DATA, vp->cfg_cap + CFG_CAP_DATA + 4) &&
	    cfg_cap_target(vp, &boff, &blen, &bar)) {
		const uint8_t *cd = &d->cfg[vp->cfg_cap + CFG_CAP_DATA];

		if (bar == VP_BAR)
			vp_bar_write(vp, boff, cd, blen);
		else if (boff + blen <= MSIX_BAR_SIZE)
			msix_write(vp, boff, cd, blen);
	}
}

/* ---- creation ---- */

static int add_vndr_cap(struct virtio_pci *vp, uint8_t type, uint32_t offset, uint32_t length)
{
	struct virtio_pci_cap c = {
		.cap_vndr = PCI_CAP_ID_VNDR, .cap_len = sizeof(c), .cfg_type = type,
		.bar = VP_BAR, .offset = offset, .length = length,
	};

	return pci_device_add_cap(&vp->pci, &c, sizeof(c));
}

static int add_caps(struct virtio_pci *vp)
{
	const struct virtio_dev_ops *ops = vp->vdev->ops;
	struct virtio_pci_notify_cap n = {
		.cap = { .cap_vndr = PCI_CAP_ID_VNDR, .cap_len = sizeof(n),
			 .cfg_type = VIRTIO_PCI_CAP_NOTIFY_CFG, .bar = VP_BAR,
			 .offset = VP_NOTIFY, .length = VP_NOTIFY_MULT * vp->vdev->nqueues },
		.notify_off_multiplier = VP_NOTIFY_MULT,
	};
	struct virtio_pci_cfg_cap pc = {
		.cap = { .cap_vndr = PCI_CAP_ID_VNDR, .cap_len = sizeof(pc),
			 .cfg_type = VIRTIO_PCI_CAP_PCI_CFG },
	};
	uint8_t msix[12] = { PCI_CAP_ID_MSIX, 0 };
	int off;

	if (add_vndr_cap(vp, VIRTIO_PCI_CAP_COMMON_CFG, VP_COMMON, VP_REGION) < 0 ||
	    pci_device_add_cap(&vp->pci, &n, sizeof(n)) < 0 ||
	    add_vndr_cap(vp, VIRTIO_PCI_CAP_ISR_CFG, VP_ISR, VP_REGION) < 0 ||
	    (ops->config_size &&
	     add_vndr_cap(vp, VIRTIO_PCI_CAP_DEVICE_CFG, VP_DEVICE, ops->config_size) < 0))
		return -E2BIG;

	off = pci_device_add_cap(&vp->pci, &pc, sizeof(pc));
	if (off < 0)
		return off;
	vp->cfg_cap = (uint8_t)off;
	vp->pci.wmask[off + CFG_CAP_BAR] = 0xff;
	memset(&vp->pci.wmask[off + CFG_CAP_OFFSET], 0xff, 12);	/* offset, length, data */

	io_put_le(&msix[2], 2, vp->nvectors - 1);
	io_put_le(&msix[4], 4, MSIX_TABLE | MSIX_BAR);
	io_put_le(&msix[8], 4, MSIX_PBA | MSIX_BAR);
	off = pci_device_add_cap(&vp->pci, msix, sizeof(msix));
	if (off < 0)
		return off;
	vp->msix_cap = (uint8_t)off;
	vp->pci.wmask[off + 3] = (MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL) >> 8;
	return 0;
}

int virtio_pci_create(struct pci_host *h, const struct dev_env *env, struct virtio_dev *vdev,
		      struct virtio_pci **out)
{
	const struct virtio_dev_ops *ops = vdev->ops;
	struct virtio_pci *vp;
	unsigned int v;
	int ret;

	if (!ops || !vdev->nqueues || vdev->nqueues > VIRTIO_MAX_QUEUES ||
	    ops->config_size > VP_REGION || !ops->queue_max_size ||
	    ops->queue_max_size > VIRTQ_MAX_SIZE || (ops->queue_max_size & (ops->queue_max_size - 1)))
		return -EINVAL;
	vp = calloc(1, sizeof(*vp));
	if (!vp)
		return -ENOMEM;
	pthread_mutex_init(&vp->lock, NULL);
	vp->vdev = vdev;
	vp->env = env;
	vp->nvectors = vdev->nqueues + 1;
	vp->msix_config = VIRTIO_MSI_NO_VECTOR;
	for (v = 0; v < VIRTIO_PCI_MAX_VECTORS; v++)
		vp->msix[v].irqfd = -1;
	for (v = 0; v < vp->nvectors; v++) {
		vp->msix[v].ctrl = MSIX_CTRL_MASKED;
		vp->msix[v].irqfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (vp->msix[v].irqfd < 0) {
			ret = -errno;
			goto err_fds;
		}
	}

	pci_device_init(&vp->pci, ops->name, 0x1af4, (uint16_t)(0x1040 + ops->device_id),
			ops->pci_class, 1, 0x1af4, ops->device_id);
	vp->pci.owner = vp;
	vp->pci.cfg_written = vp_cfg_written;
	vp->pci.cfg_before_read = vp_cfg_before_read;
	vp->pci.bar_mapped = vp_bar_mapped;
	if ((ret = pci_device_add_bar(&vp->pci, MSIX_BAR, PCI_BAR_MEM32, MSIX_BAR_SIZE, &msix_ops,
				      vp)) ||
	    (ret = pci_device_add_bar(&vp->pci, VP_BAR, PCI_BAR_MEM64, VP_BAR_SIZE, &vp_bar_ops,
				      vp)) ||
	    (ret = add_caps(vp)))
		goto err_fds;

	vdev->device_features |= 1ULL << VIRTIO_F_VERSION_1;
	vdev->tops = &virtio_pci_tops;
	vdev->transport = vp;
	for (unsigned int i = 0; i < vdev->nqueues; i++) {
		vdev->vqs[i].size = ops->queue_max_size;
		vdev->vqs[i].msix_vector = VIRTIO_MSI_NO_VECTOR;
	}
	ret = pci_host_add(h, &vp->pci);
	if (ret < 0)
		goto err_tops;
	*out = vp;
	return 0;

err_tops:
	vdev->tops = NULL;
	vdev->transport = NULL;
err_fds:
	for (v = 0; v < vp->nvectors; v++)
		if (vp->msix[v].irqfd >= 0)
			close(vp->msix[v].irqfd);
	pthread_mutex_destroy(&vp->lock);
	free(vp);
	return ret;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	const struct dev_env *env = vp->env;

	if (vp->pci.host)
		pci_host_remove(vp->pci.host, &vp->pci);
	for (unsigned int v = 0; v < vp->nvectors; v++) {
		struct msix_entry *e = &vp->msix[v];

		if (e->bound && env->irqfd)
			env->irqfd(env->vmm, e->irqfd, e->gsi, 0);
		if (e->irqfd >= 0)
			close(e->irqfd);
	}
	vp->vdev->tops = NULL;
	vp->vdev->transport = NULL;
	pthread_mutex_destroy(&vp->lock);
	free(vp);
}

/* ---- the state contract (devices/dev.h) ---- */

/* Saved as "virtio-pci": the transport's registers. */
struct vp_state {
	uint32_t device_feature_select, driver_feature_select;
	uint16_t queue_select, msix_config;
	uint8_t isr, pad[3];
	uint32_t nvectors, pad2;
};
_Static_assert(sizeof(struct vp_state) == 24, "virtio-pci state layout");

/* Saved as "msix", one per vector: the table entry as the guest wrote it, and the PBA bit. */
struct vp_vector {
	uint64_t addr;
	uint32_t data, ctrl;
	uint32_t pending, pad;
};
_Static_assert(sizeof(struct vp_vector) == 24, "virtio-pci vector layout");

static int vp_quiesce(void *dev)
{
	struct virtio_pci *vp = dev;

	return virtio_dev_quiesce(vp->vdev);
}

static int vp_save(void *dev, const struct dev_state_out *out)
{
	struct virtio_pci *vp = dev;
	struct vp_vector vec[VIRTIO_PCI_MAX_VECTORS];
	struct vp_state st;
	int ret;

	memset(&st, 0, sizeof(st));
	memset(vec, 0, sizeof(vec));
	pthread_mutex_lock(&vp->lock);
	st.device_feature_select = vp->device_feature_select;
	st.driver_feature_select = vp->driver_feature_select;
	st.queue_select = vp->queue_select;
	st.msix_config = vp->msix_config;
	st.isr = vp->isr;
	st.nvectors = vp->nvectors;
	for (unsigned int v = 0; v < vp->nvectors; v++) {
		vec[v].addr = vp->msix[v].addr;
		vec[v].data = vp->msix[v].data;
		vec[v].ctrl = vp->msix[v].ctrl;
		vec[v].pending = !!vp->msix[v].pending;
	}
	pthread_mutex_unlock(&vp->lock);
	ret = pci_device_save(&vp->pci, out);
	if (!ret)
		ret = dev_put(out, "virtio-pci", &st, sizeof(st));
	if (!ret)
		ret = dev_put(out, "msix", vec, vp->nvectors * sizeof(vec[0]));
	if (!ret)
		ret = virtio_dev_save(vp->vdev, out);
	return ret;
}

static int vp_bad(const struct virtio_pci *vp, const char *what, uint64_t v)
{
	pr_err("state: %s: %s %#" PRIx64 " is not possible here", vp->pci.name, what, v);
	return -EINVAL;
}

static int vp_load(void *dev, const struct dev_state_in *in)
{
	struct virtio_pci *vp = dev;
	struct virtio_dev *vdev = vp->vdev;
	struct vp_vector vec[VIRTIO_PCI_MAX_VECTORS];
	struct vp_state st;
	int ret;

	ret = dev_get(in, "virtio-pci", &st, sizeof(st));
	if (ret)
		return ret;
	if (st.nvectors != vp->nvectors)
		return vp_bad(vp, "MSI-X vectors", st.nvectors);
	if (st.msix_config >= vp->nvectors && st.msix_config != VIRTIO_MSI_NO_VECTOR)
		return vp_bad(vp, "config vector", st.msix_config);
	if (st.isr & ~(ISR_QUEUE | ISR_CONFIG))
		return vp_bad(vp, "ISR", st.isr);
	ret = dev_get(in, "msix", vec, vp->nvectors * sizeof(vec[0]));
	if (ret)
		return ret;
	for (unsigned int v = 0; v < vp->nvectors; v++)
		if ((vec[v].ctrl & ~MSIX_CTRL_MASKED) || vec[v].pending > 1)
			return vp_bad(vp, "MSI-X entry control", vec[v].ctrl);
	ret = virtio_dev_load(vdev, in, vp->nvectors);
	if (ret)
		return ret;
	/* Config space last: mapping BAR 4 registers the ioeventfds, the MSI-X enable bit
	 * routes the vectors just loaded. */
	pthread_mutex_lock(&vp->lock);
	vp->device_feature_select = st.device_feature_select;
	vp->driver_feature_select = st.driver_feature_select;
	vp->queue_select = st.queue_select;
	vp->msix_config = st.msix_config;
	vp->isr = st.isr;
	for (unsigned int v = 0; v < vp->nvectors; v++) {
		struct msix_entry *e = &vp->msix[v];

		e->addr = vec[v].addr;
		e->data = vec[v].data;
		e->ctrl = vec[v].ctrl;
		e->pending = (int)vec[v].pending;
		e->routed = 0;
	}
	pthread_mutex_unlock(&vp->lock);
	ret = pci_device_load(&vp->pci, in);
	if (ret)
		return ret;
	msix_control_changed(vp);
	vp->loaded = 1;
	return 0;
}

static int vp_resume(void *dev)
{
	struct virtio_pci *vp = dev;
	struct virtio_dev *vdev = vp->vdev;
	int ret = virtio_dev_resume(vdev);

	/*
	 * After a load, interrupt every queue the driver uses once: one that fired between the
	 * source's vCPU save and its quiesce would otherwise be lost. A spurious one is harmless
	 * (the driver finds nothing new in the used ring).
	 */
	if (vp->loaded) {
		vp->loaded = 0;
		for (unsigned int q = 0; q < vdev->nqueues; q++)
			if (vdev->vqs[q].ready)
				vp_notify_queue(vdev, q);
	}
	return ret;
}

const struct dev_ops virtio_pci_dev_ops = {
	.quiesce = vp_quiesce,
	.save = vp_save,
	.load = vp_load,
	.resume = vp_resume,
};
