#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devices/dev.h"
#include "devices/pci.h"
#include "vmm/bus.h"
#include "vmm/layout.h"
#include "vmm/log.h"

/* Type-0 header offsets (PCI Local Bus 3.0, 6.1). */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CACHE_LINE_SIZE 0x0c
#define PCI_LATENCY_TIMER 0x0d
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_CAP_START 0x40
#define PCI_STD_CFG_SIZE 256

#define PCI_COMMAND_IO 0x0001
#define PCI_COMMAND_MEMORY 0x0002
#define PCI_COMMAND_MASTER 0x0004
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_CAP_LIST 0x0010
/* Parity, target/master abort, system error: write 1 to clear. */
#define PCI_STATUS_W1C 0xf900

#define PCI_BAR_IO_FLAG 0x1
#define PCI_BAR_MEM_64 0x4
#define PCI_BAR_MEM_PREFETCH 0x8

#define CF8_ENABLE 0x80000000u
#define CF8_WRITABLE 0x80fffffcu	/* reserved bits and bits 1:0 read as 0 */
#define IO_SPACE_END 0x10000ULL

static uint32_t cfg_get(const struct pci_device *d, uint32_t off, uint32_t len)
{
	uint32_t v = 0;

	memcpy(&v, &d->cfg[off], len);
	return v;
}

static void cfg_put(uint8_t *arr, uint32_t off, uint32_t len, uint32_t v)
{
	memcpy(&arr[off], &v, len);
}

void pci_device_init(struct pci_device *d, const char *name, uint16_t vendor, uint16_t device,
		     uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
		     uint16_t subsys_id)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->slot = -1;
	d->next_cap = PCI_CAP_START;
	cfg_put(d->cfg, PCI_VENDOR_ID, 2, vendor);
	cfg_put(d->cfg, PCI_DEVICE_ID, 2, device);
	d->cfg[PCI_REVISION_ID] = revision;
	cfg_put(d->cfg, PCI_CLASS_PROG, 3, class_code & 0xffffff);
	d->cfg[PCI_HEADER_TYPE] = 0;	/* type 0, single function */
	cfg_put(d->cfg, PCI_SUBSYSTEM_VENDOR_ID, 2, subsys_vendor);
	cfg_put(d->cfg, PCI_SUBSYSTEM_ID, 2, subsys_id);
	/* Interrupt pin stays 0: kumo's PCI functions interrupt through MSI-X only. */
	cfg_put(d->wmask, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY |
		PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
	cfg_put(d->w1cmask, PCI_STATUS, 2, PCI_STATUS_W1C);
	d->wmask[PCI_CACHE_LINE_SIZE] = 0xff;
	d->wmask[PCI_LATENCY_TIMER] = 0xff;
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
}

static int bar_in_use(const struct pci_device *d, int idx)
{
	if (d->bars[idx].type != PCI_BAR_NONE)
		return 1;
	return idx > 0 && d->bars[idx - 1].type == PCI_BAR_MEM64;
}

int pci_device_add_bar(struct pci_device *d, int idx, enum pci_bar_type type, uint64_t size,
		       const struct io_ops *ops, void *opaque)
{
	uint32_t reg = PCI_BAR0 + 4 * (uint32_t)idx;
	uint64_t mask;
	uint32_t flags;

	if (idx < 0 || idx >= PCI_NUM_BARS || bar_in_use(d, idx) || !ops)
		return -EINVAL;
	if (type == PCI_BAR_MEM64 && (idx == PCI_NUM_BARS - 1 || bar_in_use(d, idx + 1)))
		return -EINVAL;
	if (type == PCI_BAR_IO) {
		if (size < 4)
			size = 4;
		if (size > 256)	/* PCI 3.0: an I/O BAR decodes at most 256 bytes */
			return -EINVAL;
	} else if (type == PCI_BAR_MEM32 || type == PCI_BAR_MEM64) {
		if (size < 16)
			size = 16;
		if (size > (type == PCI_BAR_MEM32 ? 1ULL << 31 : 1ULL << 62))
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	if (size & (size - 1))
		size = 1ULL << (64 - __builtin_clzll(size));

	mask = ~(size - 1);
	switch (type) {
	case PCI_BAR_IO:
		flags = PCI_BAR_IO_FLAG;
		cfg_put(d->wmask, reg, 4, (uint32_t)mask & ~3u);
		break;
	case PCI_BAR_MEM64:
		flags = PCI_BAR_MEM_64 | PCI_BAR_MEM_PREFETCH;
		cfg_put(d->wmask, reg, 4, (uint32_t)mask & ~0xfu);
		cfg_put(d->wmask, reg + 4, 4, (uint32_t)(mask >> 32));
		break;
	default:
		flags = 0;
		cfg_put(d->wmask, reg, 4, (uint32_t)mask & ~0xfu);
		break;
	}
	cfg_put(d->cfg, reg, 4, flags);
	d->bars[idx] = (struct pci_bar){ .type = type, .size = size, .ops = ops, .opaque = opaque };
	return 0;
}

int pci_device_add_cap(struct pci_device *d, const void *cap, uint8_t len)
{
	uint32_t off = (d->next_cap + 3u) & ~3u;
	uint32_t prev, hops = 0;

	if (len < 2 || off < PCI_CAP_START || off + len > PCI_STD_CFG_SIZE)
		return -E2BIG;
	memcpy(&d->cfg[off], cap, len);
	d->cfg[off + 1] = 0;
	if (!d->cfg[PCI_CAPABILITY_LIST]) {
		d->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	} else {
		/* We built this list ourselves; the bound only guards against a bug. */
		prev = d->cfg[PCI_CAPABILITY_LIST];
		while (d->cfg[prev + 1] && hops++ < 64)
			prev = d->cfg[prev + 1];
		d->cfg[prev + 1] = (uint8_t)off;
	}
	d->cfg[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
	d->next_cap = (uint8_t)(off + len < PCI_STD_CFG_SIZE ? off + len : 0xff);
	return (int)off;
}

/* ---- BAR decoding ---- */

static uint64_t bar_addr(const struct pci_device *d, int idx)
{
	uint32_t reg = PCI_BAR0 + 4 * (uint32_t)idx;
	uint64_t lo = cfg_get(d, reg, 4);

	switch (d->bars[idx].type) {
	case PCI_BAR_IO:
		return lo & ~3ULL;
	case PCI_BAR_MEM64:
		return (lo & ~0xfULL) | ((uint64_t)cfg_get(d, reg + 4, 4) << 32);
	default:
		return lo & ~0xfULL;
	}
}

static int bar_addr_valid(const struct pci_bar *b, uint64_t addr)
{
	uint64_t end = addr + b->size;

	if (!addr || end < addr)
		return 0;
	switch (b->type) {
	case PCI_BAR_IO:
		return end <= IO_SPACE_END;
	case PCI_BAR_MEM32:
		/* All address bits set is the sizing pattern, not an address. */
		return end <= MEM_4G && addr != (~(b->size - 1) & 0xffffffffULL);
	case PCI_BAR_MEM64:
		return addr != ~(b->size - 1);
	default:
		return 0;
	}
}

static struct bus *bar_bus(const struct pci_device *d, int idx)
{
	return d->bars[idx].type == PCI_BAR_IO ? d->host->pio : d->host->mmio;
}

static void bar_unmap(struct pci_device *d, int idx)
{
	struct pci_bar *b = &d->bars[idx];

	if (!b->mapped)
		return;
	if (d->bar_mapped)
		d->bar_mapped(d, idx, b->addr, 0);
	bus_unregister(bar_bus(d, idx), b->addr);
	b->mapped = 0;
}

/*
 * Make the bus match the BARs and the command register. Called with the host lock held, from
 * the vCPU thread that wrote config space (or from load). A BAR the bus refuses stays unmapped;
 * the first refusal is returned (-errno) with its BAR in *bad_bar, or, without bad_bar, each one
 * is logged as a guest's doing.
 */
static int update_mappings(struct pci_device *d, int *bad_bar)
{
	uint16_t cmd = (uint16_t)cfg_get(d, PCI_COMMAND, 2);
	int first = 0;

	if (!d->host)
		return 0;
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		struct pci_bar *b = &d->bars[i];
		uint64_t addr;
		int enabled, ret;

		if (b->type == PCI_BAR_NONE)
			continue;
		addr = bar_addr(d, i);
		enabled = (cmd & (b->type == PCI_BAR_IO ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)) &&
			  bar_addr_valid(b, addr);
		if (b->mapped && (!enabled || addr != b->addr))
			bar_unmap(d, i);
		b->addr = addr;
		if (b->mapped || !enabled)
			continue;
		ret = bus_register(bar_bus(d, i), addr, b->size, b->ops, b->opaque, d->name);
		if (ret) {
			if (!bad_bar)
				pr_warn_ratelimited("pci %s: BAR %d at 0x%llx (size 0x%llx) not mapped: %s",
						    d->name, i, (unsigned long long)addr,
						    (unsigned long long)b->size, strerror(-ret));
			else if (!first)
				*bad_bar = i;
			if (!first)
				first = ret;
			continue;
		}
		b->mapped = 1;
		if (d->bar_mapped)
			d->bar_mapped(d, i, addr, 1);
	}
	return first;
}

/* ---- config space accesses ---- */

static int cfg_access_ok(uint32_t off, uint32_t len)
{
	return len >= 1 && len <= 4 && off < PCI_CFG_SIZE && len <= PCI_CFG_SIZE - off;
}

static void __pci_cfg_read(struct pci_device *d, uint32_t off, void *data, uint32_t len)
{
	if (!cfg_access_ok(off, len)) {
		memset(data, 0xff, len);
		return;
	}
	if (d->cfg_before_read)
		d->cfg_before_read(d, off, len);
	memcpy(data, &d->cfg[off], len);
}

static int overlaps(uint32_t off, uint32_t len, uint32_t start, uint32_t end)
{
	return off < end && off + len > start;
}

static void __pci_cfg_write(struct pci_device *d, uint32_t off, const void *data, uint32_t len)
{
	const uint8_t *p = data;

	if (!cfg_access_ok(off, len))
		return;
	for (uint32_t i = 0; i < len; i++) {
		uint32_t o = off + i;
		uint8_t v = (uint8_t)((d->cfg[o] & ~d->wmask[o]) | (p[i] & d->wmask[o]));

		d->cfg[o] = (uint8_t)(v & ~(p[i] & d->w1cmask[o]));
	}
	if (overlaps(off, len, PCI_COMMAND, PCI_COMMAND + 2) ||
	    overlaps(off, len, PCI_BAR0, PCI_BAR0 + 4 * PCI_NUM_BARS))
		update_mappings(d, NULL);
	if (d->cfg_written)
		d->cfg_written(d, off, len);
}

void pci_cfg_read(struct pci_device *d, uint32_t off, void *data, uint32_t len)
{
	if (d->host)
		pthread_mutex_lock(&d->host->lock);
	__pci_cfg_read(d, off, data, len);
	if (d->host)
		pthread_mutex_unlock(&d->host->lock);
}

void pci_cfg_write(struct pci_device *d, uint32_t off, const void *data, uint32_t len)
{
	if (d->host)
		pthread_mutex_lock(&d->host->lock);
	__pci_cfg_write(d, off, data, len);
	if (d->host)
		pthread_mutex_unlock(&d->host->lock);
}

/* ---- state ---- */

int pci_device_save(struct pci_device *d, const struct dev_state_out *o)
{
	uint8_t cfg[PCI_CFG_SIZE];

	if (d->host)
		pthread_mutex_lock(&d->host->lock);
	memcpy(cfg, d->cfg, sizeof(cfg));
	if (d->host)
		pthread_mutex_unlock(&d->host->lock);
	return dev_put(o, "config", cfg, sizeof(cfg));
}

static void unmap_all(struct pci_device *d)
{
	for (int i = 0; i < PCI_NUM_BARS; i++)
		bar_unmap(d, i);
}

int pci_device_load(struct pci_device *d, const struct dev_state_in *in)
{
	uint8_t cfg[PCI_CFG_SIZE], old[PCI_CFG_SIZE];
	int ret, bad_bar = -1;

	ret = dev_get(in, "config", cfg, sizeof(cfg));
	if (ret)
		return ret;
	if (d->host)
		pthread_mutex_lock(&d->host->lock);
	/* What the guest cannot write is what this build of the device says, byte for byte. */
	for (uint32_t off = 0; off < PCI_CFG_SIZE; off++) {
		uint8_t ro = (uint8_t)~(d->wmask[off] | d->w1cmask[off]);

		if ((cfg[off] ^ d->cfg[off]) & ro) {
			pr_err("pci %s: state: config byte 0x%x is 0x%02x, read-only bits 0x%02x "
			       "must be as built (0x%02x)", d->name, off, cfg[off], ro,
			       d->cfg[off] & ro);
			ret = -EINVAL;
			goto out;
		}
	}
	/*
	 * Map from nothing, so BARs that trade places do not collide with their own old ranges;
	 * if the bus refuses one, put the old config and mappings back as they were.
	 */
	memcpy(old, d->cfg, sizeof(old));
	unmap_all(d);
	memcpy(d->cfg, cfg, sizeof(cfg));
	ret = update_mappings(d, &bad_bar);
	if (ret) {
		pr_err("pci %s: state: BAR %d at 0x%llx (size 0x%llx) overlaps another range: %s",
		       d->name, bad_bar, (unsigned long long)d->bars[bad_bar].addr,
		       (unsigned long long)d->bars[bad_bar].size, strerror(-ret));
		unmap_all(d);
		memcpy(d->cfg, old, sizeof(old));
		update_mappings(d, NULL);
		ret = -EINVAL;
	}
out:
	if (d->host)
		pthread_mutex_unlock(&d->host->lock);
	return ret;
}

/* Only bus 0, function 0 of each slot exists. */
static struct pci_device *lookup(struct pci_host *h, uint32_t bus, uint32_t dev, uint32_t fn)
{
	if (bus != 0 || fn != 0 || dev >= PCI_MAX_SLOTS)
		return NULL;
	return h->slots[dev];
}

static void host_access(struct pci_host *h, uint32_t bus, uint32_t dev, uint32_t fn,
			uint32_t reg, void *data, uint32_t len, int is_write)
{
	struct pci_device *d = lookup(h, bus, dev, fn);

	if (!d) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (is_write)
		__pci_cfg_write(d, reg, data, len);
	else
		__pci_cfg_read(d, reg, data, len);
}

/* 0xCF8: CONFIG_ADDRESS, only as a dword; 0xCF9 alone is the reset register. */
static void cf8_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct pci_host *h = opaque;

	if (off == 0 && len == 4) {
		pthread_mutex_lock(&h->lock);
		memcpy(data, &h->cf8, 4);
		pthread_mutex_unlock(&h->lock);
	} else if (off == 1 && len == 1 && h->cf9_ops && h->cf9_ops->read) {
		h->cf9_ops->read(h->cf9_opaque, 0, data, 1);
	} else {
		memset(data, 0xff, len);
	}
}

static void cf8_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct pci_host *h = opaque;
	uint32_t v;

	if (off == 0 && len == 4) {
		memcpy(&v, data, 4);
		pthread_mutex_lock(&h->lock);
		h->cf8 = v & CF8_WRITABLE;
		pthread_mutex_unlock(&h->lock);
	} else if (off == 1 && len == 1 && h->cf9_ops && h->cf9_ops->write) {
		h->cf9_ops->write(h->cf9_opaque, 0, data, 1);
	}
}

static void cfc_access(struct pci_host *h, uint64_t off, void *data, uint32_t len, int is_write)
{
	uint32_t a;

	/* The bus only hands us accesses inside 0xCFC-0xCFF; keep it so if that changes. */
	if (off >= 4 || len < 1 || len > 4 - off) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&h->lock);
	a = h->cf8;
	if (!(a & CF8_ENABLE)) {
		if (!is_write)
			memset(data, 0xff, len);
	} else {
		host_access(h, (a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7,
			    (a & 0xfc) + (uint32_t)off, data, len, is_write);
	}
	pthread_mutex_unlock(&h->lock);
}

static void cfc_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	cfc_access(opaque, off, data, len, 0);
}

static void cfc_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	cfc_access(opaque, off, (void *)data, len, 1);
}

/* ECAM: bus in bits 27:20, device 19:15, function 14:12, register 11:0. */
static void ecam_access(struct pci_host *h, uint64_t off, void *data, uint32_t len, int is_write)
{
	uint32_t reg = (uint32_t)(off & 0xfff);

	if (off >= PCI_ECAM_SIZE || !cfg_access_ok(reg, len)) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&h->lock);
	host_access(h, (uint32_t)(off >> 20) & 0xff, (uint32_t)(off >> 15) & 0x1f,
		    (uint32_t)(off >> 12) & 7, reg, data, len, is_write);
	pthread_mutex_unlock(&h->lock);
}

static void ecam_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	ecam_access(opaque, off, data, len, 0);
}

static void ecam_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	ecam_access(opaque, off, (void *)data, len, 1);
}

static const struct io_ops cf8_ops = { .read = cf8_read, .write = cf8_write };
static const struct io_ops cfc_ops = { .read = cfc_read, .write = cfc_write };
static const struct io_ops ecam_ops = { .read = ecam_read, .write = ecam_write };

/* ---- the host bridge ---- */

int pci_host_init(struct pci_host *h, struct bus *pio, struct bus *mmio)
{
	struct pci_device *bridge;
	int ret;

	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
	h->pio = pio;
	h->mmio = mmio;
	/* The windows the DSDT gives the root bridge. */
	h->mmio_next = PCI_MMIO_START;
	h->mmio_end = PCI_MMIO_START + PCI_MMIO_SIZE;
	h->io_next = 0x1000;
	h->io_end = (uint32_t)IO_SPACE_END;

	bridge = calloc(1, sizeof(*bridge));
	if (!bridge) {
		ret = -ENOMEM;
		goto err_lock;
	}
	pci_device_init(bridge, "host-bridge", 0x8086, 0x29c0, 0x060000, 0, 0, 0);
	bridge->slot = 0;
	bridge->host = h;
	h->slots[0] = bridge;

	ret = bus_register(pio, 0xcf8, 4, &cf8_ops, h, "pci-cf8");
	if (ret)
		goto err_bridge;
	ret = bus_register(pio, 0xcfc, 4, &cfc_ops, h, "pci-cfc");
	if (ret)
		goto err_cf8;
	ret = bus_register(mmio, PCI_ECAM_GPA, PCI_ECAM_SIZE, &ecam_ops, h, "pci-ecam");
	if (ret)
		goto err_cfc;
	return 0;

err_cfc:
	bus_unregister(pio, 0xcfc);
err_cf8:
	bus_unregister(pio, 0xcf8);
err_bridge:
	free(bridge);
	h->slots[0] = NULL;
err_lock:
	pthread_mutex_destroy(&h->lock);
	return ret;
}

void pci_host_destroy(struct pci_host *h)
{
	pthread_mutex_lock(&h->lock);
	for (int s = 1; s < PCI_MAX_SLOTS; s++) {
		struct pci_device *d = h->slots[s];

		if (!d)
			continue;
		for (int i = 0; i < PCI_NUM_BARS; i++)
			bar_unmap(d, i);
		d->host = NULL;
		h->slots[s] = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	bus_unregister(h->mmio, PCI_ECAM_GPA);
	bus_unregister(h->pio, 0xcfc);
	bus_unregister(h->pio, 0xcf8);
	free(h->slots[0]);
	h->slots[0] = NULL;
	pthread_mutex_destroy(&h->lock);
}

void pci_host_set_reset_port(struct pci_host *h, const struct io_ops *ops, void *opaque)
{
	pthread_mutex_lock(&h->lock);
	h->cf9_ops = ops;
	h->cf9_opaque = opaque;
	pthread_mutex_unlock(&h->lock);
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

int pci_host_add(struct pci_host *h, struct pci_device *d)
{
	uint64_t mmio_next, io_next, addr[PCI_NUM_BARS] = { 0 };
	int slot;

	pthread_mutex_lock(&h->lock);
	for (slot = 1; slot < PCI_MAX_SLOTS && h->slots[slot]; slot++)
		;
	if (slot == PCI_MAX_SLOTS) {
		pthread_mutex_unlock(&h->lock);
		return -ENOSPC;
	}
	/* Natural alignment for every BAR; all of them in the 32-bit window. */
	mmio_next = h->mmio_next;
	io_next = h->io_next;
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		const struct pci_bar *b = &d->bars[i];
		uint64_t *next = b->type == PCI_BAR_IO ? &io_next : &mmio_next;
		uint64_t end = b->type == PCI_BAR_IO ? h->io_end : h->mmio_end;

		if (b->type == PCI_BAR_NONE)
			continue;
		addr[i] = align_up(*next, b->size);
		if (addr[i] < *next || addr[i] + b->size > end || addr[i] + b->size < addr[i]) {
			pthread_mutex_unlock(&h->lock);
			return -ENOSPC;
		}
		*next = addr[i] + b->size;
	}
	h->mmio_next = mmio_next;
	h->io_next = (uint32_t)io_next;
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		uint32_t reg = PCI_BAR0 + 4 * (uint32_t)i;

		if (d->bars[i].type == PCI_BAR_NONE)
			continue;
		cfg_put(d->cfg, reg, 4, (cfg_get(d, reg, 4) & (d->bars[i].type == PCI_BAR_IO ?
					3u : 0xfu)) | (uint32_t)addr[i]);
		if (d->bars[i].type == PCI_BAR_MEM64)
			cfg_put(d->cfg, reg + 4, 4, (uint32_t)(addr[i] >> 32));
		d->bars[i].addr = addr[i];
	}
	d->slot = slot;
	d->host = h;
	h->slots[slot] = d;
	/* Decode stays off until the guest sets the command register. */
	update_mappings(d, NULL);
	pthread_mutex_unlock(&h->lock);
	return slot;
}

void pci_host_remove(struct pci_host *h, struct pci_device *d)
{
	pthread_mutex_lock(&h->lock);
	if (d->host == h && d->slot > 0 && d->slot < PCI_MAX_SLOTS && h->slots[d->slot] == d) {
		for (int i = 0; i < PCI_NUM_BARS; i++)
			bar_unmap(d, i);
		h->slots[d->slot] = NULL;
		d->host = NULL;
		d->slot = -1;
	}
	pthread_mutex_unlock(&h->lock);
}

/* The bridge's own state: the CONFIG_ADDRESS latch and its config space (slot 0). */
static int pci_host_save(void *dev, const struct dev_state_out *o)
{
	struct pci_host *h = dev;
	uint32_t cf8;
	int ret;

	pthread_mutex_lock(&h->lock);
	cf8 = h->cf8;
	pthread_mutex_unlock(&h->lock);
	ret = dev_put(o, "cf8", &cf8, sizeof(cf8));
	if (ret)
		return ret;
	return pci_device_save(h->slots[0], o);
}

static int pci_host_load(void *dev, const struct dev_state_in *in)
{
	struct pci_host *h = dev;
	uint32_t cf8;
	int ret;

	ret = dev_get(in, "cf8", &cf8, sizeof(cf8));
	if (ret)
		return ret;
	if (cf8 & ~CF8_WRITABLE) {
		pr_err("pci host: state: cf8 0x%08x has reserved bits set", cf8);
		return -EINVAL;
	}
	ret = pci_device_load(h->slots[0], in);
	if (ret)
		return ret;
	pthread_mutex_lock(&h->lock);
	h->cf8 = cf8;
	pthread_mutex_unlock(&h->lock);
	return 0;
}

/* No quiesce or resume: config space only changes on vCPU exits. */
const struct dev_ops pci_host_dev_ops = {
	.save = pci_host_save,
	.load = pci_host_load,
};
