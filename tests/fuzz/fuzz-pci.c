/*
 * libFuzzer target for PCI config space (0xCF8/0xCFC, ECAM) and the virtio-pci BARs: all of it
 * is written by the guest.
 *
 *   clang -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
 *         tests/fuzz/fuzz-pci.c devices/pci.c devices/virtio-pci.c devices/virtio.c \
 *         mm/mem.c mm/pagestate.c mm/dirty.c vmm/bus.c vmm/log.c -lpthread -o /tmp/fuzz-pci && /tmp/fuzz-pci -runs=50000
 *
 * Input: a sequence of 14-byte operations (space, flags, offset le32, value le64); flags bit 0
 * is "write", bits 1-3 the length - 1. Each input starts from a fresh host with one dummy
 * virtio device (2 queues). Checks: no crash or sanitizer report, queue sizes stay powers of
 * two within the maximum, and a ready queue's rings lie in guest RAM.
 */
// fuzz-sources: devices/pci.c devices/virtio-pci.c devices/virtio.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/bus.c vmm/log.c vmm/seccomp.c
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "devices/pci.h"
#include "devices/virtio-pci.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "vmm/bus.h"
#include "vmm/devenv.h"
#include "vmm/layout.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static int mem_ok = -1;
static uint32_t next_gsi;
static uint8_t config[16];
static int bus_drops_lock = -1;

static int f_msi_route(void *vmm, uint32_t *gsi, uint64_t addr, uint32_t d)
{
	if (!*gsi)
		*gsi = ++next_gsi;
	return 0;
}

static int f_irqfd(void *vmm, int fd, uint32_t gsi, int assign)
{
	return 0;
}

static int f_ioeventfd(void *vmm, int fd, uint64_t addr, uint32_t len, int assign)
{
	return 0;
}

static unsigned int d_num_queues(struct virtio_dev *vdev)
{
	return 2;
}

static uint64_t d_features(struct virtio_dev *vdev)
{
	return 1ULL << VIRTIO_F_EVENT_IDX | 1ULL << VIRTIO_F_INDIRECT_DESC | 1;
}

static void d_config_read(struct virtio_dev *vdev, uint32_t off, void *d, uint32_t len)
{
	if (off + len > sizeof(config))
		abort();
	memcpy(d, config + off, len);
}

static void d_config_write(struct virtio_dev *vdev, uint32_t off, const void *d, uint32_t len)
{
	if (off + len > sizeof(config))
		abort();
	memcpy(config + off, d, len);
}

static int d_activate(struct virtio_dev *vdev)
{
	return 0;
}

static const struct virtio_dev_ops d_ops = {
	.name = "fuzz", .device_id = 1, .pci_class = 0x020000, .queue_max_size = 256,
	.config_size = sizeof(config), .num_queues = d_num_queues, .features = d_features,
	.config_read = d_config_read, .config_write = d_config_write, .activate = d_activate,
};

/* Does bus_access release the bus lock before calling a handler? */
static void probe_write(void *o, uint64_t off, const void *data, uint32_t len)
{
	struct bus *b = o;

	bus_drops_lock = pthread_rwlock_trywrlock(&b->lock) == 0;
	if (bus_drops_lock)
		pthread_rwlock_unlock(&b->lock);
}

static const struct io_ops probe_ops = { .write = probe_write };

static void probe_bus(void)
{
	struct bus b;
	uint32_t v = 0;

	bus_init(&b, "probe");
	if (!bus_register(&b, 0, 4, &probe_ops, &b, "probe"))
		bus_access(&b, 0, &v, 4, 1);
	bus_destroy(&b);
}

static uint64_t get(const uint8_t *p, unsigned int n)
{
	uint64_t v = 0;

	memcpy(&v, p, n);
	return v;
}

/*
 * A config write through a bus that holds its lock while dispatching would deadlock when it
 * remaps a BAR on that same bus (see test_bar_move_same_bus); such writes then go through
 * pci_cfg_write, which is what the ECAM handler calls.
 */
static int remaps(uint32_t reg, uint32_t len)
{
	return reg < 0x28 && reg + len > 0x04;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bus pio, mmio;
	struct pci_host host;
	struct dev_env env;
	struct virtio_dev vdev;
	struct virtio_pci *vp;
	uint8_t buf[8];

	if (mem_ok < 0) {
		log_level = -1;
		mem_ok = mm_init(&mem, 16ULL << 20) == 0;
		probe_bus();
	}
	if (!mem_ok)
		abort();
	bus_init(&pio, "pio");
	bus_init(&mmio, "mmio");
	if (pci_host_init(&host, &pio, &mmio))
		abort();
	env = (struct dev_env){ .mem = &mem, .pio = &pio, .mmio = &mmio,
				.msi_route = f_msi_route, .irqfd = f_irqfd,
				.ioeventfd = f_ioeventfd };
	memset(&vdev, 0, sizeof(vdev));
	if (virtio_dev_init(&vdev, &d_ops, &env, NULL) || virtio_pci_create(&host, &env, &vdev, &vp))
		abort();

	for (size_t i = 0; i + 14 <= size; i += 14) {
		const uint8_t *op = data + i;
		int w = op[1] & 1;
		uint32_t len = 1 + ((op[1] >> 1) & 7), off = (uint32_t)get(op + 2, 4);
		uint64_t addr;

		memcpy(buf, op + 6, 8);
		switch (op[0] % 8) {
		case 0:	/* CONFIG_ADDRESS, mostly enabled, bus 0 */
			addr = (off & 0x0100fffc) | 0x80000000u;
			if (op[1] & 0x10)
				addr = off;
			bus_access(&pio, 0xcf8, &addr, 4, 1);
			break;
		case 1:	/* the 0xCF8-0xCFF ports, any width (only MMIO BARs: no remap on pio) */
			bus_access(&pio, 0xcf8 + off % 8, buf, len, w);
			break;
		case 2:	/* ECAM, buses 0 and 1 */
			addr = PCI_ECAM_GPA + (off & 0x1fffff);
			if (w && !bus_drops_lock && remaps(off & 0xfff, len) &&
			    (off & 0x1ff000) == 1u << 15) {
				pci_cfg_write(&vp->pci, off & 0xfff, buf, len);
				break;
			}
			bus_access(&mmio, addr, buf, len, w);
			break;
		case 3:	/* the virtio BAR wherever it is now */
		case 4:
			addr = vp->pci.bars[4].addr + off % 0x4100;
			bus_access(&mmio, addr, buf, len, w);
			break;
		case 5:	/* the MSI-X BAR */
			addr = vp->pci.bars[1].addr + off % 0x1100;
			bus_access(&mmio, addr, buf, len, w);
			break;
		case 6:	/* the device side */
			if (off & 1)
				vdev.tops->notify_config(&vdev);
			else
				vdev.tops->notify_queue(&vdev, (off >> 1) % 3);
			break;
		case 7:	/* anywhere in the PCI window */
			addr = PCI_MMIO_START + off % PCI_MMIO_SIZE;
			bus_access(&mmio, addr, buf, len, w);
			break;
		}
		for (unsigned int q = 0; q < vdev.nqueues; q++) {
			const struct virtq *vq = &vdev.vqs[q];

			if (!vq->size || (vq->size & (vq->size - 1)) || vq->size > 256)
				abort();
			if (vq->ready && (!mm_gpa_to_hva(&mem, vq->desc_gpa, 16ULL * vq->size) ||
					  !mm_gpa_to_hva(&mem, vq->avail_gpa, 6 + 2ULL * vq->size) ||
					  !mm_gpa_to_hva(&mem, vq->used_gpa, 6 + 8ULL * vq->size)))
				abort();
		}
	}

	virtio_pci_destroy(vp);
	virtio_dev_exit(&vdev);
	pci_host_destroy(&host);
	bus_destroy(&pio);
	bus_destroy(&mmio);
	return 0;
}
