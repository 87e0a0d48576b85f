/* Unit tests for the PCI host: config mechanism #1, ECAM, BARs, capabilities, hostile input. */
#include <errno.h>
#include <pthread.h>

#include "devices/pci.h"
#include "tests/harness.h"
#include "vmm/bus.h"
#include "vmm/layout.h"
#include "vmm/log.h"

struct rec {
	uint64_t off;
	uint32_t len, val;
	int reads, writes;
};

static void rec_read(void *o, uint64_t off, void *data, uint32_t len)
{
	struct rec *r = o;

	r->reads++;
	r->off = off;
	memset(data, 0x5a, len);
}

static void rec_write(void *o, uint64_t off, const void *data, uint32_t len)
{
	struct rec *r = o;

	r->writes++;
	r->off = off;
	r->len = len;
	r->val = 0;
	memcpy(&r->val, data, len > 4 ? 4 : len);
}

static const struct io_ops rec_ops = { .read = rec_read, .write = rec_write };

struct fixture {
	struct bus pio, mmio;
	struct pci_host h;
	struct pci_device d;
	struct rec r32, r64, rio;
	int slot;
	uint64_t mapped_addr[PCI_NUM_BARS];
	int map_events;
};

static void fx_bar_mapped(struct pci_device *d, int idx, uint64_t addr, int mapped)
{
	struct fixture *f = d->owner;

	f->map_events++;
	f->mapped_addr[idx] = mapped ? addr : 0;
}

/* A device with a 32-bit BAR 0 (4 KiB), a 64-bit BAR 2 (16 KiB), an I/O BAR 5 (32 bytes). */
static int fx_init(struct fixture *f)
{
	uint8_t cap_a[8] = { 0x09, 0, 8, 1, 2, 3, 4, 5 }, cap_b[4] = { 0x05, 0, 0, 0 };

	memset(f, 0, sizeof(*f));
	bus_init(&f->pio, "pio");
	bus_init(&f->mmio, "mmio");
	if (pci_host_init(&f->h, &f->pio, &f->mmio))
		return -1;
	pci_device_init(&f->d, "dummy", 0x1234, 0x5678, 0x020000, 7, 0xabcd, 0xef01);
	f->d.owner = f;
	f->d.bar_mapped = fx_bar_mapped;
	if (pci_device_add_bar(&f->d, 0, PCI_BAR_MEM32, 4096, &rec_ops, &f->r32) ||
	    pci_device_add_bar(&f->d, 2, PCI_BAR_MEM64, 0x3000, &rec_ops, &f->r64) ||
	    pci_device_add_bar(&f->d, 5, PCI_BAR_IO, 32, &rec_ops, &f->rio))
		return -1;
	if (pci_device_add_cap(&f->d, cap_a, sizeof(cap_a)) != 0x40 ||
	    pci_device_add_cap(&f->d, cap_b, sizeof(cap_b)) != 0x48)
		return -1;
	f->slot = pci_host_add(&f->h, &f->d);
	return f->slot == 1 ? 0 : -1;
}

static void fx_destroy(struct fixture *f)
{
	pci_host_destroy(&f->h);
	bus_destroy(&f->pio);
	bus_destroy(&f->mmio);
}

static uint32_t conf1(struct fixture *f, int bus, int dev, int fn, uint32_t reg, uint32_t len,
		      uint32_t val, int is_write)
{
	uint32_t a = 0x80000000u | (uint32_t)bus << 16 | (uint32_t)dev << 11 |
		     (uint32_t)fn << 8 | (reg & 0xfc);
	uint32_t v = val;

	if (bus_access(&f->pio, 0xcf8, &a, 4, 1))
		return 0xdeadbeef;
	if (bus_access(&f->pio, 0xcfc + (reg & 3), &v, len, is_write))
		return 0xdeadbeef;
	return v;
}

static uint32_t c1r(struct fixture *f, int dev, uint32_t reg, uint32_t len)
{
	return conf1(f, 0, dev, 0, reg, len, 0, 0);
}

static void c1w(struct fixture *f, int dev, uint32_t reg, uint32_t len, uint32_t val)
{
	conf1(f, 0, dev, 0, reg, len, val, 1);
}

static uint64_t ecam_addr(int bus, int dev, int fn, uint32_t reg)
{
	return PCI_ECAM_GPA + ((uint64_t)bus << 20) + ((uint64_t)dev << 15) +
	       ((uint64_t)fn << 12) + reg;
}

static uint32_t ecr(struct fixture *f, int bus, int dev, int fn, uint32_t reg, uint32_t len)
{
	uint32_t v = 0;

	bus_access(&f->mmio, ecam_addr(bus, dev, fn, reg), &v, len, 0);
	return v;
}

static void ecw(struct fixture *f, int dev, uint32_t reg, uint32_t len, uint32_t val)
{
	bus_access(&f->mmio, ecam_addr(0, dev, 0, reg), &val, len, 1);
}

static void test_conf1_and_ecam_agree(void)
{
	struct fixture f;

	CHECK_EQ(fx_init(&f), 0);
	for (int dev = 0; dev < 3; dev++)
		for (uint32_t reg = 0; reg < 256; reg += 4) {
			CHECK_EQ(c1r(&f, dev, reg, 4), ecr(&f, 0, dev, 0, reg, 4));
			CHECK_EQ(c1r(&f, dev, reg + 1, 2), ecr(&f, 0, dev, 0, reg + 1, 2));
			CHECK_EQ(c1r(&f, dev, reg + 3, 1), ecr(&f, 0, dev, 0, reg + 3, 1));
		}
	/* The host bridge at slot 0, our device at slot 1. */
	CHECK_EQ(c1r(&f, 0, 0, 4), 0x29c08086);
	CHECK_EQ(c1r(&f, 0, 8, 4) >> 8, 0x060000);
	CHECK_EQ(c1r(&f, 1, 0, 4), 0x56781234);
	CHECK_EQ(c1r(&f, 1, 8, 4), 0x02000007);
	CHECK_EQ(c1r(&f, 1, 0x2c, 4), 0xef01abcd);
	CHECK_EQ(c1r(&f, 1, 0x0e, 1), 0);	/* header type 0, single function */
	CHECK_EQ(c1r(&f, 1, 0x3d, 1), 0);	/* no INTx pin */
	/* BARs were allocated in the window, naturally aligned, I/O from 0x1000. */
	CHECK_EQ(c1r(&f, 1, 0x10, 4), PCI_MMIO_START);
	CHECK_EQ(c1r(&f, 1, 0x18, 4), PCI_MMIO_START + 0x4000 + 0xc);
	CHECK_EQ(c1r(&f, 1, 0x1c, 4), 0);
	CHECK_EQ(c1r(&f, 1, 0x24, 4), 0x1001);
	CHECK_EQ(c1r(&f, 1, 0x14, 4), 0);	/* upper half of... nothing: BAR 1 unused */
	fx_destroy(&f);
}

static void test_absent_reads_all_ones(void)
{
	struct fixture f;
	uint32_t a = 0x00000800, v;

	CHECK_EQ(fx_init(&f), 0);
	CHECK_EQ(c1r(&f, 2, 0, 4), 0xffffffff);
	CHECK_EQ(c1r(&f, 31, 0, 2), 0xffff);
	CHECK_EQ(conf1(&f, 0, 1, 1, 0, 4, 0, 0), 0xffffffff);	/* function 1 */
	CHECK_EQ(conf1(&f, 1, 1, 0, 0, 4, 0, 0), 0xffffffff);	/* bus 1 */
	CHECK_EQ(ecr(&f, 0, 7, 0, 0, 4), 0xffffffff);
	CHECK_EQ(ecr(&f, 0, 1, 3, 0, 4), 0xffffffff);
	CHECK_EQ(ecr(&f, 1, 1, 0, 0, 4), 0xffffffff);
	CHECK_EQ(ecr(&f, 255, 31, 7, 0xffc, 4), 0xffffffff);
	/* Enable bit clear: nothing answers. */
	CHECK_EQ(bus_access(&f.pio, 0xcf8, &a, 4, 1), 0);
	v = 0;
	CHECK_EQ(bus_access(&f.pio, 0xcfc, &v, 4, 0), 0);
	CHECK_EQ(v, 0xffffffff);
	/* Writes to absent functions go nowhere. */
	conf1(&f, 0, 1, 1, 4, 2, 0xffff, 1);
	CHECK_EQ(c1r(&f, 1, 4, 2), 0);
	fx_destroy(&f);
}

static void test_cf8_latch_and_reset_port(void)
{
	struct fixture f;
	struct rec reset = { 0 };
	uint32_t v = 0xffffffff;
	uint8_t b = 0x06;

	CHECK_EQ(fx_init(&f), 0);
	pci_host_set_reset_port(&f.h, &rec_ops, &reset);
	CHECK_EQ(bus_access(&f.pio, 0xcf8, &v, 4, 1), 0);
	v = 0;
	CHECK_EQ(bus_access(&f.pio, 0xcf8, &v, 4, 0), 0);
	CHECK_EQ(v, 0x80fffffc);	/* reserved bits and bits 1:0 read as 0 */
	/* Linux's type-1 probe pokes 0xCFB with a byte: ignored. */
	b = 0x01;
	CHECK_EQ(bus_access(&f.pio, 0xcfb, &b, 1, 1), 0);
	CHECK_EQ(bus_access(&f.pio, 0xcf8, &v, 4, 0), 0);
	CHECK_EQ(v, 0x80fffffc);
	/* A byte at 0xCF9 is the reset register. */
	b = 0x06;
	CHECK_EQ(bus_access(&f.pio, 0xcf9, &b, 1, 1), 0);
	CHECK_EQ(reset.writes, 1);
	CHECK_EQ(reset.val, 0x06);
	CHECK_EQ(bus_access(&f.pio, 0xcf9, &b, 1, 0), 0);
	CHECK_EQ(reset.reads, 1);
	fx_destroy(&f);
}

static void test_bar_sizing(void)
{
	struct fixture f;

	CHECK_EQ(fx_init(&f), 0);
	c1w(&f, 1, 0x10, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x10, 4), 0xfffff000);
	/* 0x3000 was rounded up to 16 KiB; 64-bit prefetchable. */
	c1w(&f, 1, 0x18, 4, 0xffffffff);
	c1w(&f, 1, 0x1c, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x18, 4), 0xffffc00c);
	CHECK_EQ(c1r(&f, 1, 0x1c, 4), 0xffffffff);
	c1w(&f, 1, 0x24, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x24, 4), 0xffffffe1);
	/* Unused BARs and the expansion ROM read 0 whatever is written. */
	c1w(&f, 1, 0x14, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x14, 4), 0);
	c1w(&f, 1, 0x20, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x20, 4), 0);
	c1w(&f, 1, 0x30, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x30, 4), 0);
	/* Sizing patterns are never decoded, even with decode on. */
	c1w(&f, 1, 0x04, 2, 0x3);
	CHECK_EQ(f.pio.nr, 2);
	CHECK_EQ(f.mmio.nr, 1);
	fx_destroy(&f);
}

static int reaches(struct bus *b, struct rec *r, uint64_t addr, uint64_t want_off)
{
	uint32_t v = 0x11223344;
	int before = r->writes;

	if (bus_access(b, addr, &v, 4, 1))
		return 0;
	return r->writes == before + 1 && r->off == want_off && r->val == 0x11223344;
}

static void test_bar_decode_and_move(void)
{
	struct fixture f;
	uint64_t b0 = PCI_MMIO_START, b2 = PCI_MMIO_START + 0x4000;

	CHECK_EQ(fx_init(&f), 0);
	/* Decode off after pci_host_add. */
	CHECK(!reaches(&f.mmio, &f.r32, b0, 0));
	CHECK(!f.d.bars[0].mapped);
	c1w(&f, 1, 0x04, 2, 0x2);	/* memory space only */
	CHECK(reaches(&f.mmio, &f.r32, b0 + 0x10, 0x10));
	CHECK(reaches(&f.mmio, &f.r64, b2 + 0x3ffc, 0x3ffc));
	CHECK(!reaches(&f.pio, &f.rio, 0x1000, 0));
	CHECK_EQ(f.mapped_addr[2], b2);
	/*
	 * Registering an I/O BAR from a 0xCFC access (same bus) needs bus_access to drop its
	 * lock before dispatching (test_bar_move_same_bus); here I/O goes through ECAM.
	 */
	ecw(&f, 1, 0x04, 2, 0x3);
	CHECK(reaches(&f.pio, &f.rio, 0x1004, 4));

	/* Move BAR 0 (through 0xCFC): the old address goes dead, the new one answers. */
	c1w(&f, 1, 0x10, 4, 0xd0000000);
	CHECK(!reaches(&f.mmio, &f.r32, b0, 0));
	CHECK(reaches(&f.mmio, &f.r32, 0xd0000008, 8));
	CHECK_EQ(f.d.bars[0].addr, 0xd0000000);
	/* Move the 64-bit BAR above 4 GiB, one half at a time. */
	c1w(&f, 1, 0x1c, 4, 0x8);
	CHECK(reaches(&f.mmio, &f.r64, 0x8c0004000ULL + 4, 4));
	c1w(&f, 1, 0x18, 4, 0x0);
	CHECK(reaches(&f.mmio, &f.r64, 0x800000000ULL + 4, 4));
	CHECK_EQ(f.mapped_addr[2], 0x800000000ULL);
	/* Move the I/O BAR through ECAM (on the other bus). */
	ecw(&f, 1, 0x24, 4, 0x2000);
	CHECK(!reaches(&f.pio, &f.rio, 0x1000, 0));
	CHECK(reaches(&f.pio, &f.rio, 0x2010, 0x10));
	CHECK_EQ(c1r(&f, 1, 0x24, 4), 0x2001);
	/* An I/O BAR beyond 64 KiB is not decoded. */
	ecw(&f, 1, 0x24, 4, 0x10000);
	CHECK(!f.d.bars[5].mapped);
	ecw(&f, 1, 0x24, 4, 0x3000);
	CHECK(f.d.bars[5].mapped);

	/* Decode disable unregisters everything; enable brings it back. */
	ecw(&f, 1, 0x04, 2, 0x2);
	c1w(&f, 1, 0x04, 2, 0x0);
	CHECK(!reaches(&f.mmio, &f.r32, 0xd0000000, 0));
	CHECK(!reaches(&f.pio, &f.rio, 0x3000, 0));
	CHECK_EQ(f.mapped_addr[2], 0);
	CHECK_EQ(f.mmio.nr, 1);
	CHECK_EQ(f.pio.nr, 2);
	ecw(&f, 1, 0x04, 2, 0x1);
	c1w(&f, 1, 0x04, 2, 0x3);
	CHECK(reaches(&f.mmio, &f.r32, 0xd0000000, 0));
	CHECK(reaches(&f.pio, &f.rio, 0x3000, 0));
	/* Address 0 is not decoded. */
	c1w(&f, 1, 0x10, 4, 0);
	CHECK(!f.d.bars[0].mapped);
	fx_destroy(&f);
}

static void test_bar_overlap_left_unmapped(void)
{
	struct fixture f;
	struct rec other = { 0 };
	int saved = log_level;

	CHECK_EQ(fx_init(&f), 0);
	CHECK_EQ(bus_register(&f.mmio, 0xd0000000, 0x1000, &rec_ops, &other, "other"), 0);
	c1w(&f, 1, 0x04, 2, 0x2);
	log_level = LOG_ERR;	/* the warning is expected */
	c1w(&f, 1, 0x10, 4, 0xd0000000);
	CHECK(!f.d.bars[0].mapped);
	CHECK(reaches(&f.mmio, &other, 0xd0000000, 0));
	/* Onto ECAM. */
	c1w(&f, 1, 0x10, 4, (uint32_t)PCI_ECAM_GPA);
	CHECK(!f.d.bars[0].mapped);
	CHECK_EQ(c1r(&f, 1, 0, 4), 0x56781234);	/* ECAM and the device still fine */
	CHECK_EQ(ecr(&f, 0, 1, 0, 0, 4), 0x56781234);
	log_level = saved;
	/* Moving away maps it again. */
	c1w(&f, 1, 0x10, 4, 0xd0001000);
	CHECK(reaches(&f.mmio, &f.r32, 0xd0001000, 0));
	fx_destroy(&f);
}

static void test_capability_walk(void)
{
	struct fixture f;
	uint8_t ptr, ids[8];
	int n = 0;

	CHECK_EQ(fx_init(&f), 0);
	CHECK(c1r(&f, 1, 0x06, 2) & 0x10);
	CHECK(!(c1r(&f, 0, 0x06, 2) & 0x10));	/* the bridge has none */
	CHECK_EQ(c1r(&f, 0, 0x34, 1), 0);
	ptr = (uint8_t)c1r(&f, 1, 0x34, 1);
	while (ptr && n < 8) {
		CHECK(ptr >= 0x40 && !(ptr & 3));
		ids[n++] = (uint8_t)ecr(&f, 0, 1, 0, ptr, 1);
		ptr = (uint8_t)ecr(&f, 0, 1, 0, ptr + 1u, 1);
	}
	CHECK_EQ(n, 2);
	CHECK_EQ(ids[0], 0x09);
	CHECK_EQ(ids[1], 0x05);
	CHECK_EQ(c1r(&f, 1, 0x42, 2), 0x0108);	/* the body is kept */
	/* Capabilities are read-only unless the owner opens them up. */
	c1w(&f, 1, 0x40, 4, 0);
	CHECK_EQ(c1r(&f, 1, 0x40, 1), 0x09);
	CHECK_EQ(c1r(&f, 1, 0x41, 1), 0x48);
	fx_destroy(&f);
}

static void test_write_masks(void)
{
	struct fixture f;

	CHECK_EQ(fx_init(&f), 0);
	c1w(&f, 1, 0x00, 4, 0);
	CHECK_EQ(c1r(&f, 1, 0, 4), 0x56781234);
	c1w(&f, 1, 0x08, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x08, 4), 0x02000007);
	c1w(&f, 1, 0x2c, 4, 0);
	CHECK_EQ(c1r(&f, 1, 0x2c, 4), 0xef01abcd);
	c1w(&f, 1, 0x3c, 2, 0xffff);
	CHECK_EQ(c1r(&f, 1, 0x3c, 2), 0x00ff);	/* line writable, pin read-only 0 */
	c1w(&f, 1, 0x0c, 4, 0xffffffff);
	CHECK_EQ(c1r(&f, 1, 0x0c, 4), 0x0000ffff);	/* header type, BIST read-only */
	/* Command: I/O, memory, bus master, INTx disable. Status is not touched by it. */
	/* Direct calls: no bus lock is held, so both buses can change (see same_bus). */
	pci_cfg_write(&f.d, 0x04, "\xff\xff\xff\xff", 4);
	CHECK_EQ(c1r(&f, 1, 0x04, 2), 0x0407);
	CHECK_EQ(c1r(&f, 1, 0x06, 2), 0x0010);
	/* Status: error bits are write-1-to-clear, writing 0 keeps them. */
	f.d.cfg[7] |= 0xa1;	/* detected parity error, received master abort, and bit 8 */
	c1w(&f, 1, 0x06, 2, 0x0000);
	CHECK_EQ(c1r(&f, 1, 0x06, 2), 0xa110);
	c1w(&f, 1, 0x06, 2, 0x2000);
	CHECK_EQ(c1r(&f, 1, 0x06, 2), 0x8110);
	c1w(&f, 1, 0x06, 2, 0xffff);
	CHECK_EQ(c1r(&f, 1, 0x06, 2), 0x0010);	/* the capability bit stays */
	/* Writing the command dword with status bits set clears them too (same dword). */
	f.d.cfg[7] |= 0x80;
	pci_cfg_write(&f.d, 0x04, "\x02\x00\x00\x80", 4);
	CHECK_EQ(c1r(&f, 1, 0x04, 4), 0x00100002);
	fx_destroy(&f);
}

static void test_hostile_accesses(void)
{
	struct fixture f;
	static struct pci_device snap;
	uint8_t buf[16];
	uint64_t v;

	CHECK_EQ(fx_init(&f), 0);
	memcpy(&snap, &f.d, sizeof(snap));
	/* Direct API: out of range, straddling, zero and oversized lengths. */
	pci_cfg_write(&f.d, 4095, "\xff\xff\xff\xff", 4);
	pci_cfg_write(&f.d, 4096, "\xff", 1);
	pci_cfg_write(&f.d, 0xffffffffu, "\xff\xff", 2);
	pci_cfg_write(&f.d, 0, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
	pci_cfg_write(&f.d, 0x10, "", 0);
	CHECK(!memcmp(&snap, &f.d, sizeof(snap)));
	memset(buf, 0, sizeof(buf));
	pci_cfg_read(&f.d, 4094, buf, 4);
	CHECK_EQ(buf[0] & buf[1] & buf[2] & buf[3], 0xff);
	pci_cfg_read(&f.d, 0xfffffffeu, buf, 4);
	pci_cfg_read(&f.d, 0, buf, 16);
	CHECK_EQ(buf[15], 0xff);
	pci_cfg_read(&f.d, 4095, buf, 1);
	CHECK_EQ(buf[0], 0);	/* the last byte is fine */
	pci_cfg_read(&f.d, 0, buf, 3);
	CHECK_EQ(buf[0], 0x34);
	CHECK_EQ(buf[2], 0x78);
	/* ECAM: straddling the end of a function's space, 3 and 8 bytes, beyond the window. */
	v = 0;
	CHECK_EQ(bus_access(&f.mmio, ecam_addr(0, 1, 0, 0xffe), &v, 4, 0), 0);
	CHECK_EQ(v, 0xffffffff);
	v = ~0ULL;
	CHECK_EQ(bus_access(&f.mmio, ecam_addr(0, 1, 0, 0xffe), &v, 4, 1), 0);
	CHECK_EQ(bus_access(&f.mmio, ecam_addr(0, 1, 0, 0), &v, 8, 1), 0);
	CHECK(!memcmp(&snap, &f.d, sizeof(snap)));
	v = 0;
	CHECK_EQ(bus_access(&f.mmio, ecam_addr(0, 1, 0, 0), &v, 3, 0), 0);
	CHECK_EQ(v, 0x781234);
	CHECK_EQ(bus_access(&f.mmio, ecam_addr(0, 1, 0, 0), &v, 8, 0), 0);
	CHECK_EQ(v, ~0ULL);
	CHECK_EQ(bus_access(&f.mmio, PCI_ECAM_GPA + PCI_ECAM_SIZE - 2, &v, 4, 0), -ENOENT);
	/* 0xCFC: an access straddling 0xCFF is not ours; odd sizes inside are. */
	CHECK_EQ(bus_access(&f.pio, 0xcfe, &v, 4, 0), -ENOENT);
	v = 0;
	c1r(&f, 1, 0, 4);
	CHECK_EQ(bus_access(&f.pio, 0xcfd, &v, 3, 0), 0);
	CHECK_EQ(v, 0x567812);
	/* A pseudo-random storm must neither crash nor write outside writable bits. */
	uint32_t seed = 12345;
	int saved = log_level;

	log_level = LOG_ERR;	/* BARs land on each other: expected warnings */
	for (int i = 0; i < 200000; i++) {
		uint32_t off, len, val;
		int w;

		seed = seed * 1103515245u + 12345u;
		off = (seed >> 4) % 4200;
		len = (seed >> 20) % 9;
		w = (seed >> 30) & 1;
		val = seed ^ 0x5a5a5a5a;
		if (w && (off < 0x10 || off >= 0x28))	/* keep BARs and command as they are */
			pci_cfg_write(&f.d, off, &val, len);
		else
			pci_cfg_read(&f.d, off, buf, len);
		if (i % 2 == 0)
			bus_access(&f.mmio, PCI_ECAM_GPA + ((uint64_t)seed & 0xfffffff), buf,
				   1 + seed % 8, 0);
	}
	log_level = saved;
	for (int i = 0; i < PCI_CFG_SIZE; i++)
		CHECK_EQ(f.d.cfg[i] & ~f.d.wmask[i], snap.cfg[i] & ~snap.wmask[i] &
			 ~snap.w1cmask[i]);
	fx_destroy(&f);
}

static void test_add_bar_and_cap_limits(void)
{
	struct pci_device d;
	uint8_t big[176] = { 0x09 };
	struct rec r;
	int n = 0;

	pci_device_init(&d, "x", 1, 2, 0, 0, 0, 0);
	CHECK_EQ(pci_device_add_bar(&d, 5, PCI_BAR_MEM64, 4096, &rec_ops, &r), -EINVAL);
	CHECK_EQ(pci_device_add_bar(&d, 6, PCI_BAR_MEM32, 4096, &rec_ops, &r), -EINVAL);
	CHECK_EQ(pci_device_add_bar(&d, 0, PCI_BAR_MEM64, 4096, &rec_ops, &r), 0);
	CHECK_EQ(pci_device_add_bar(&d, 1, PCI_BAR_MEM32, 4096, &rec_ops, &r), -EINVAL);
	CHECK_EQ(pci_device_add_bar(&d, 2, PCI_BAR_IO, 1024, &rec_ops, &r), -EINVAL);
	CHECK_EQ(pci_device_add_bar(&d, 2, PCI_BAR_IO, 3, &rec_ops, &r), 0);
	CHECK_EQ(d.bars[2].size, 4);
	CHECK_EQ(pci_device_add_cap(&d, big, sizeof(big)), 0x40);
	while (pci_device_add_cap(&d, big, 8) > 0)
		n++;
	CHECK_EQ(n, 2);	/* at 0xf0 and 0xf8, then nothing fits */
	CHECK_EQ(pci_device_add_cap(&d, big, 8), -E2BIG);
}

static void test_bar_window_exhaustion(void)
{
	struct bus pio, mmio;
	struct pci_host h;
	static struct pci_device d[PCI_MAX_SLOTS + 1];
	struct rec r;
	int ok = 0, ret = 0;

	bus_init(&pio, "pio");
	bus_init(&mmio, "mmio");
	CHECK_EQ(pci_host_init(&h, &pio, &mmio), 0);
	for (int i = 0; i < PCI_MAX_SLOTS; i++) {
		pci_device_init(&d[i], "big", 1, 2, 0, 0, 0, 0);
		CHECK_EQ(pci_device_add_bar(&d[i], 0, PCI_BAR_MEM64, 128ULL << 20, &rec_ops, &r),
			 0);
		ret = pci_host_add(&h, &d[i]);
		if (ret < 0)
			break;
		ok++;
	}
	CHECK_EQ(ok, 4);	/* 512 MiB window */
	CHECK_EQ(ret, -ENOSPC);
	pci_device_init(&d[PCI_MAX_SLOTS], "small", 1, 2, 0, 0, 0, 0);
	for (ok = 0; ok < PCI_MAX_SLOTS; ok++)
		if ((ret = pci_host_add(&h, &d[PCI_MAX_SLOTS])) < 0)
			break;
	CHECK_EQ(ret, -ENOSPC);	/* slots run out */
	CHECK_EQ(ok, PCI_MAX_SLOTS - 1 - 4);
	pci_host_destroy(&h);
	bus_destroy(&pio);
	bus_destroy(&mmio);
}

/* Does bus_access let go of the bus lock before calling the handler? */
struct probe {
	struct bus *bus;
	int free;
};

static void probe_write(void *o, uint64_t off, const void *data, uint32_t len)
{
	struct probe *p = o;

	p->free = pthread_rwlock_trywrlock(&p->bus->lock) == 0;
	if (p->free)
		pthread_rwlock_unlock(&p->bus->lock);
}

static const struct io_ops probe_ops = { .write = probe_write };

/* A memory BAR moved through ECAM: the remap happens on the bus that is dispatching. */
static void test_bar_move_same_bus(void)
{
	struct fixture f;
	struct probe p;
	uint32_t v = 0;

	CHECK_EQ(fx_init(&f), 0);
	p.bus = &f.mmio;
	p.free = 0;
	CHECK_EQ(bus_register(&f.mmio, 0x1000, 4, &probe_ops, &p, "probe"), 0);
	bus_access(&f.mmio, 0x1000, &v, 4, 1);
	if (!p.free) {
		fx_destroy(&f);
		SKIP("bus_access holds the bus lock while dispatching (would deadlock)");
	}
	ecw(&f, 1, 0x04, 2, 0x2);
	CHECK(reaches(&f.mmio, &f.r32, PCI_MMIO_START, 0));
	ecw(&f, 1, 0x10, 4, 0xd8000000);
	CHECK(!reaches(&f.mmio, &f.r32, PCI_MMIO_START, 0));
	CHECK(reaches(&f.mmio, &f.r32, 0xd8000000, 0));
	c1w(&f, 1, 0x04, 2, 0x1);
	c1w(&f, 1, 0x24, 4, 0x4000);	/* I/O BAR through 0xCFC, on the pio bus */
	CHECK(reaches(&f.pio, &f.rio, 0x4000, 0));
	fx_destroy(&f);
}

TEST_MAIN(TEST(test_conf1_and_ecam_agree), TEST(test_absent_reads_all_ones),
	  TEST(test_cf8_latch_and_reset_port), TEST(test_bar_sizing),
	  TEST(test_bar_decode_and_move), TEST(test_bar_overlap_left_unmapped),
	  TEST(test_capability_walk), TEST(test_write_masks), TEST(test_hostile_accesses),
	  TEST(test_add_bar_and_cap_limits), TEST(test_bar_window_exhaustion),
	  TEST(test_bar_move_same_bus))
