/*
 * virtio-pci, modern only (virtio 1.x 4.1): common/notify/ISR/device-config capabilities in a
 * 64-bit memory BAR, MSI-X table and PBA in their own BAR. Queue notifications arrive on
 * ioeventfds (one per queue, at its notify address) and MSI-X vectors are raised through
 * irqfds on KVM MSI routes, so the data path does not go through a vCPU exit.
 */
#ifndef KUMO_VIRTIO_PCI_H
#define KUMO_VIRTIO_PCI_H

#include "devices/pci.h"
#include "devices/virtio.h"

#define VIRTIO_PCI_MAX_VECTORS 65	/* one per queue + config */

struct msix_entry {
	uint64_t addr;
	uint32_t data;
	uint32_t ctrl;			/* bit 0: masked */
	uint32_t gsi;			/* KVM GSI routed to (addr, data); 0 = none yet */
	int irqfd;			/* eventfd bound to gsi */
	int pending;			/* fired while masked: in the PBA */
	int routed;			/* gsi's route holds the current (addr, data) */
	int bound;			/* irqfd is assigned to gsi */
};

struct virtio_pci {
	struct pci_device pci;
	struct virtio_dev *vdev;
	const struct dev_env *env;
	pthread_mutex_t lock;
	uint32_t device_feature_select, driver_feature_select;
	uint16_t queue_select;
	uint16_t msix_config;		/* vector for config changes */
	uint8_t isr;
	unsigned int nvectors;
	struct msix_entry msix[VIRTIO_PCI_MAX_VECTORS];
	int msix_enabled, msix_masked;	/* MSI-X enable / function mask */
	uint64_t notify_base;		/* guest-physical notify area (ioeventfds live here) */
	int ioeventfds_on;
	uint64_t msix_irqs;		/* interrupts sent through MSI-X irqfds */
	uint8_t msix_cap, cfg_cap;	/* config-space offsets of the MSI-X and pci_cfg caps */
	int loaded;			/* state loaded, not yet resumed */
};

/* The state contract (devices/dev.h) of the function, its transport and its virtio device;
 * the device pointer is the struct virtio_pci. */
extern const struct dev_ops virtio_pci_dev_ops;

/*
 * Wrap vdev in a virtio-pci function and add it to the host bridge. 0 or -errno.
 * vdev->ops and ->priv must be set; this fills in the rest of vdev (lock, env, tops,
 * transport, nqueues, device_features, vqs, kick_fd[]).
 */
int virtio_pci_create(struct pci_host *h, const struct dev_env *env, struct virtio_dev *vdev,
		      struct virtio_pci **out) __attribute__((warn_unused_result));
void virtio_pci_destroy(struct virtio_pci *vp);

#endif
