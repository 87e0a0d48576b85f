/*
 * libFuzzer target for the device state loads of the legacy devices and PCI (serial, RTC,
 * ACPI PM, a PCI function, the host bridge): a state file is hostile input.
 *
 *   clang -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
 *         tests/fuzz/fuzz-devstate.c devices/serial.c devices/rtc.c devices/acpi-pm.c \
 *         devices/pci.c vmm/bus.c vmm/log.c -lpthread -o /tmp/fuzz-devstate && /tmp/fuzz-devstate -runs=50000
 *
 * Input: byte 0 picks the device (bits 0-2) and the mode (bit 7). Raw mode: the rest is the
 * property's bytes (the host bridge: 4 bytes of cf8, then its config). Patch mode: the rest is
 * 3-byte records (offset le16, xor byte) applied to a valid saved state, so loads get past the
 * read-only checks and reach the BAR mapping. Checks: no crash or sanitizer report; a refused
 * load leaves the device saving what it saved before; an accepted one saves exactly what was
 * loaded, the serial line is at the level the device reports, every mapped BAR answers on its
 * bus.
 */
// fuzz-sources: devices/serial.c devices/rtc.c devices/acpi-pm.c devices/pci.c vmm/bus.c vmm/log.c
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/acpi-pm.h"
#include "devices/dev.h"
#include "devices/pci.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "vmm/bus.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NPROP 2

struct store {
	const char *name[NPROP];
	uint8_t buf[NPROP][PCI_CFG_SIZE];
	size_t len[NPROP];
	int n;
};

static int st_put(void *opaque, const char *name, const void *data, size_t len)
{
	struct store *st = opaque;

	if (st->n == NPROP || len > PCI_CFG_SIZE)
		abort();	/* the devices here save at most two properties of 4 KiB */
	st->name[st->n] = name;
	memcpy(st->buf[st->n], data, len);
	st->len[st->n++] = len;
	return 0;
}

static int st_find(struct store *st, const char *name)
{
	for (int i = 0; i < st->n; i++)
		if (!strcmp(st->name[i], name))
			return i;
	return -1;
}

static int st_get(void *opaque, const char *name, void *data, size_t len)
{
	int i = st_find(opaque, name);
	struct store *st = opaque;

	if (i < 0 || st->len[i] != len)
		return -EINVAL;
	memcpy(data, st->buf[i], len);
	return 0;
}

static int st_get_var(void *opaque, const char *name, const void **data, size_t *len,
		      size_t max)
{
	int i = st_find(opaque, name);
	struct store *st = opaque;

	if (i < 0 || st->len[i] > max)
		return -EINVAL;
	*data = st->buf[i];
	*len = st->len[i];
	return 0;
}

static int line_level = -1;

static int line_set(void *opaque, uint32_t gsi, int level)
{
	line_level = level;
	return 0;
}

static void rec_read(void *o, uint64_t off, void *data, uint32_t len)
{
	memset(data, 0x5a, len);
	(*(int *)o)++;
}

static void rec_write(void *o, uint64_t off, const void *data, uint32_t len)
{
}

static const struct io_ops rec_ops = { .read = rec_read, .write = rec_write };

enum { T_SERIAL, T_RTC, T_PM, T_PCI, T_HOST, T_NR };

static struct serial ser;
static struct rtc rtc;
static struct acpi_pm pm;
static struct bus pio, mmio;
static struct pci_host host;
static struct pci_device dev;
static int hits[PCI_NUM_BARS];

static void pci_build(void)
{
	bus_init(&pio, "pio");
	bus_init(&mmio, "mmio");
	if (pci_host_init(&host, &pio, &mmio))
		abort();
	pci_device_init(&dev, "fuzz", 0x1234, 0x5678, 0x020000, 1, 0, 0);
	if (pci_device_add_bar(&dev, 0, PCI_BAR_MEM32, 4096, &rec_ops, &hits[0]) ||
	    pci_device_add_bar(&dev, 2, PCI_BAR_MEM64, 0x4000, &rec_ops, &hits[2]) ||
	    pci_device_add_bar(&dev, 5, PCI_BAR_IO, 32, &rec_ops, &hits[5]) ||
	    pci_host_add(&host, &dev) != 1)
		abort();
}

static void pci_teardown(void)
{
	pci_host_destroy(&host);
	bus_destroy(&pio);
	bus_destroy(&mmio);
}

/* A fresh device of type t; returns the object its ops take. */
static void *fresh(int t)
{
	struct irq_line irq = { line_set, NULL, 4 };
	uint16_t cmd = 0x0003;

	switch (t) {
	case T_SERIAL:
		serial_init(&ser, &irq, -1);
		line_level = -1;
		return &ser;
	case T_RTC:
		rtc_init(&rtc);
		return &rtc;
	case T_PM:
		acpi_pm_init(&pm, NULL, NULL);
		return &pm;
	case T_PCI:
		pci_build();
		pci_cfg_write(&dev, 0x04, &cmd, 2);	/* decode on at the allocated addresses */
		return &dev;
	default:
		pci_build();
		return &host;
	}
}

static int do_save(int t, void *d, struct store *st)
{
	static const struct dev_ops *ops[] = {
		[T_SERIAL] = &serial_dev_ops, [T_RTC] = &rtc_dev_ops, [T_PM] = &acpi_pm_dev_ops,
		[T_HOST] = &pci_host_dev_ops,
	};
	struct dev_state_out o = { .put = st_put, .opaque = st };

	memset(st, 0, sizeof(*st));
	return t == T_PCI ? pci_device_save(d, &o) : ops[t]->save(d, &o);
}

static int do_load(int t, void *d, struct store *st)
{
	static const struct dev_ops *ops[] = {
		[T_SERIAL] = &serial_dev_ops, [T_RTC] = &rtc_dev_ops, [T_PM] = &acpi_pm_dev_ops,
		[T_HOST] = &pci_host_dev_ops,
	};
	struct dev_state_in in = { .get = st_get, .get_var = st_get_var, .opaque = st };

	return t == T_PCI ? pci_device_load(d, &in) : ops[t]->load(d, &in);
}

static int same(const struct store *a, const struct store *b)
{
	if (a->n != b->n)
		return 0;
	for (int i = 0; i < a->n; i++)
		if (strcmp(a->name[i], b->name[i]) || a->len[i] != b->len[i] ||
		    memcmp(a->buf[i], b->buf[i], a->len[i]))
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct store in, before, after;
	int t, ret;
	void *d;

	log_level = -1;
	if (size < 1)
		return 0;
	t = (data[0] & 7) % T_NR;
	d = fresh(t);
	if (do_save(t, d, &before))
		abort();
	in = before;
	if (data[0] & 0x80) {
		for (size_t i = 1; i + 3 <= size; i += 3) {
			int p = in.n > 1 && (data[i + 1] & 0x80) ? 1 : 0;
			size_t off = (size_t)(data[i] | (data[i + 1] & 0x7f) << 8) % in.len[p];

			in.buf[p][off] ^= data[i + 2];
		}
	} else if (t == T_HOST) {
		size_t n = size - 1 < 4 ? size - 1 : 4;

		in.len[0] = n;
		memcpy(in.buf[0], data + 1, n);
		in.len[1] = size - 1 - n > PCI_CFG_SIZE ? PCI_CFG_SIZE : size - 1 - n;
		memcpy(in.buf[1], data + 1 + n, in.len[1]);
	} else {
		in.len[0] = size - 1 > PCI_CFG_SIZE ? PCI_CFG_SIZE : size - 1;
		memcpy(in.buf[0], data + 1, in.len[0]);
	}

	ret = do_load(t, d, &in);
	if (do_save(t, d, &after))
		abort();
	if (ret && ret != -EINVAL)
		abort();
	if (!same(ret ? &before : &in, &after))
		abort();
	if (!ret && t == T_SERIAL && line_level != ser.irq_level)
		abort();
	if (!ret && t == T_PCI) {
		for (int i = 0; i < PCI_NUM_BARS; i++) {
			const struct pci_bar *b = &dev.bars[i];
			uint32_t v;
			int before_hits = hits[i];

			if (!b->mapped)
				continue;
			if (bus_access(b->type == PCI_BAR_IO ? &pio : &mmio, b->addr, &v, 4, 0) ||
			    hits[i] != before_hits + 1)
				abort();
		}
	}
	/* And the guest goes on from there. */
	if (!ret && t == T_SERIAL) {
		uint8_t v;

		for (int i = 0; i < 80; i++)
			serial_ops.read(&ser, (uint64_t)(i & 7), &v, 1);
	}
	if (t == T_PCI || t == T_HOST)
		pci_teardown();
	return 0;
}
