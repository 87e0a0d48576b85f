/*
 * virtio-pci against a host-side test driver that does what Linux's virtio_pci_modern does:
 * find the function and its capabilities through config space, size and place the BARs,
 * reset, negotiate features, set up queues and MSI-X, ring doorbells and take interrupts.
 * The KVM side (MSI routes, irqfds, ioeventfds) is a fake that records what it was asked.
 */
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/pci.h"
#include "devices/virtio-pci.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "vmm/bus.h"
#include "vmm/devenv.h"
#include "vmm/layout.h"
#include "vmm/log.h"

/* ---- the fake VMM ---- */

#define MAX_REC 64

struct fake_vmm {
	struct { uint32_t gsi; uint64_t addr; uint32_t data; } routes[MAX_REC];
	int nroutes, route_calls;
	uint32_t next_gsi;
	struct { int fd; uint32_t gsi; int on; } irqfds[MAX_REC];
	int nirqfds;
	struct { int fd; uint64_t addr; uint32_t len; int on; } ioev[MAX_REC];
	int nioev;
};

static int fake_msi_route(void *vmm, uint32_t *gsi, uint64_t addr, uint32_t data)
{
	struct fake_vmm *f = vmm;
	int i;

	f->route_calls++;
	if (!*gsi) {
		if (f->nroutes == MAX_REC)
			return -ENOSPC;
		*gsi = ++f->next_gsi + 23;	/* above the IOAPIC pins */
		f->routes[f->nroutes++].gsi = *gsi;
	}
	for (i = 0; i < f->nroutes && f->routes[i].gsi != *gsi; i++)
		;
	if (i == f->nroutes)
		return -EINVAL;
	f->routes[i].addr = addr;
	f->routes[i].data = data;
	return 0;
}

static int fake_irqfd(void *vmm, int fd, uint32_t gsi, int assign)
{
	struct fake_vmm *f = vmm;

	for (int i = 0; i < f->nirqfds; i++)
		if (f->irqfds[i].fd == fd && f->irqfds[i].on) {
			if (assign)
				return -EEXIST;
			f->irqfds[i].on = 0;
			return 0;
		}
	if (!assign || f->nirqfds == MAX_REC)
		return -ENOENT;
	f->irqfds[f->nirqfds].fd = fd;
	f->irqfds[f->nirqfds].gsi = gsi;
	f->irqfds[f->nirqfds++].on = 1;
	return 0;
}

static int fake_ioeventfd(void *vmm, int fd, uint64_t addr, uint32_t len, int assign)
{
	struct fake_vmm *f = vmm;

	for (int i = 0; i < f->nioev; i++)
		if (f->ioev[i].on && f->ioev[i].addr == addr) {
			if (assign)
				return -EEXIST;
			if (f->ioev[i].fd != fd)
				return -ENOENT;
			f->ioev[i].on = 0;
			return 0;
		}
	if (!assign || f->nioev == MAX_REC)
		return -ENOENT;
	f->ioev[f->nioev].fd = fd;
	f->ioev[f->nioev].addr = addr;
	f->ioev[f->nioev].len = len;
	f->ioev[f->nioev++].on = 1;
	return 0;
}

static uint32_t route_gsi_for(struct fake_vmm *f, uint64_t addr, uint32_t data)
{
	for (int i = 0; i < f->nroutes; i++)
		if (f->routes[i].addr == addr && f->routes[i].data == data)
			return f->routes[i].gsi;
	return 0;
}

static int irqfd_gsi(struct fake_vmm *f, int fd)
{
	for (int i = 0; i < f->nirqfds; i++)
		if (f->irqfds[i].fd == fd && f->irqfds[i].on)
			return (int)f->irqfds[i].gsi;
	return -1;
}

static int ioev_at(struct fake_vmm *f, uint64_t addr)
{
	for (int i = 0; i < f->nioev; i++)
		if (f->ioev[i].on && f->ioev[i].addr == addr)
			return f->ioev[i].fd;
	return -1;
}

static int ioev_active(struct fake_vmm *f)
{
	int n = 0;

	for (int i = 0; i < f->nioev; i++)
		n += f->ioev[i].on;
	return n;
}

/* ---- a dummy device: 2 queues, 8 bytes of config ---- */

#define DUMMY_FEATURE 5

struct dummy {
	uint8_t config[8];
	int activated, resets, config_writes, fail_activate;
};

static unsigned int dummy_num_queues(struct virtio_dev *vdev)
{
	return 2;
}

static uint64_t dummy_features(struct virtio_dev *vdev)
{
	return 1ULL << DUMMY_FEATURE | 1ULL << VIRTIO_F_EVENT_IDX | 1ULL << VIRTIO_F_INDIRECT_DESC;
}

static void dummy_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
	struct dummy *d = vdev->priv;

	memcpy(data, d->config + off, len);
}

static void dummy_config_write(struct virtio_dev *vdev, uint32_t off, const void *data,
			       uint32_t len)
{
	struct dummy *d = vdev->priv;

	memcpy(d->config + off, data, len);
	d->config_writes++;
}

static int dummy_activate(struct virtio_dev *vdev)
{
	struct dummy *d = vdev->priv;

	if (d->fail_activate)
		return -EIO;
	d->activated++;
	return 0;
}

static void dummy_reset(struct virtio_dev *vdev)
{
	struct dummy *d = vdev->priv;

	d->resets++;
}

static const struct virtio_dev_ops dummy_ops = {
	.name = "dummy", .device_id = 42, .pci_class = 0xff0000, .queue_max_size = 256,
	.config_size = 8, .num_queues = dummy_num_queues, .features = dummy_features,
	.config_read = dummy_config_read, .config_write = dummy_config_write,
	.activate = dummy_activate, .reset = dummy_reset,
};

/* ---- the test driver ---- */

struct vcap { int found; uint8_t bar; uint32_t offset, length, mult; uint8_t at; };

struct tb {
	struct guest_mem mem;
	struct bus pio, mmio;
	struct pci_host host;
	struct fake_vmm fake;
	struct dev_env env;
	struct dummy dummy;
	struct virtio_dev vdev;
	struct virtio_pci *vp;
	int slot;
	uint64_t bar_addr[PCI_NUM_BARS], bar_size[PCI_NUM_BARS];
	struct vcap caps[6];	/* by cfg_type */
	uint8_t msix_cap;
	uint32_t msix_table, msix_pba;	/* offset | BIR */
	uint16_t msix_n;
};

static struct tb tb;

static uint32_t cfgr(uint32_t reg, uint32_t len)
{
	uint32_t a = 0x80000000u | (uint32_t)tb.slot << 11 | (reg & 0xfc), v = 0;

	bus_access(&tb.pio, 0xcf8, &a, 4, 1);
	bus_access(&tb.pio, 0xcfc + (reg & 3), &v, len, 0);
	return v;
}

static void cfgw(uint32_t reg, uint32_t len, uint32_t v)
{
	uint32_t a = 0x80000000u | (uint32_t)tb.slot << 11 | (reg & 0xfc);

	bus_access(&tb.pio, 0xcf8, &a, 4, 1);
	bus_access(&tb.pio, 0xcfc + (reg & 3), &v, len, 1);
}

static uint64_t cap_addr(int type, uint32_t off)
{
	return tb.bar_addr[tb.caps[type].bar] + tb.caps[type].offset + off;
}

static uint64_t mr(uint64_t addr, uint32_t len)
{
	uint64_t v = 0;

	bus_access(&tb.mmio, addr, &v, len, 0);
	return v;
}

static void mw(uint64_t addr, uint32_t len, uint64_t v)
{
	bus_access(&tb.mmio, addr, &v, len, 1);
}

/* virtio_pci_common_cfg offsets */
#define DFSELECT 0x00
#define DF 0x04
#define GFSELECT 0x08
#define GF 0x0c
#define MSIX_CONFIG 0x10
#define NUM_QUEUES 0x12
#define STATUS 0x14
#define Q_SELECT 0x16
#define Q_SIZE 0x18
#define Q_MSIX 0x1a
#define Q_ENABLE 0x1c
#define Q_NOFF 0x1e
#define Q_DESC 0x20
#define Q_AVAIL 0x28
#define Q_USED 0x30

static uint64_t cc_r(uint32_t off, uint32_t len)
{
	return mr(cap_addr(1, off), len);
}

static void cc_w(uint32_t off, uint32_t len, uint64_t v)
{
	mw(cap_addr(1, off), len, v);
}

static int fd_count(int fd)
{
	eventfd_t v = 0;

	return eventfd_read(fd, &v) == 0 ? (int)v : 0;
}

static int tb_setup(void)
{
	memset(&tb, 0, sizeof(tb));
	if (mm_init(&tb.mem, 64ULL << 20))
		return -1;
	bus_init(&tb.pio, "pio");
	bus_init(&tb.mmio, "mmio");
	if (pci_host_init(&tb.host, &tb.pio, &tb.mmio))
		return -1;
	tb.env = (struct dev_env){
		.mem = &tb.mem, .pio = &tb.pio, .mmio = &tb.mmio, .vmm = &tb.fake,
		.msi_route = fake_msi_route, .irqfd = fake_irqfd, .ioeventfd = fake_ioeventfd,
	};
	if (virtio_dev_init(&tb.vdev, &dummy_ops, &tb.env, &tb.dummy))
		return -1;
	memcpy(tb.dummy.config, "kumo-cfg", 8);
	return virtio_pci_create(&tb.host, &tb.env, &tb.vdev, &tb.vp);
}

static void tb_teardown(void)
{
	virtio_pci_destroy(tb.vp);
	virtio_dev_exit(&tb.vdev);
	pci_host_destroy(&tb.host);
	bus_destroy(&tb.pio);
	bus_destroy(&tb.mmio);
	mm_free(&tb.mem);
}

/* Probe: find the function, walk its capabilities, size its BARs, turn decode on. */
static int tb_probe(void)
{
	uint8_t p;
	int hops = 0;

	memset(tb.caps, 0, sizeof(tb.caps));
	for (tb.slot = 0; tb.slot < 32; tb.slot++)
		if (cfgr(0, 2) == 0x1af4)
			break;
	if (tb.slot == 32 || cfgr(2, 2) != 0x1040 + 42 || cfgr(8, 1) != 1 ||
	    cfgr(0x2c, 4) != (42u << 16 | 0x1af4) || cfgr(9, 3) != 0xff0000 ||
	    !(cfgr(6, 2) & 0x10) || cfgr(0x3d, 1) != 0)
		return -1;
	for (p = (uint8_t)cfgr(0x34, 1); p && hops < 48; p = (uint8_t)cfgr(p + 1u, 1), hops++) {
		uint8_t id = (uint8_t)cfgr(p, 1), type;

		if (id == 0x11) {
			tb.msix_cap = p;
			tb.msix_n = (uint16_t)((cfgr(p + 2u, 2) & 0x7ff) + 1);
			tb.msix_table = cfgr(p + 4u, 4);
			tb.msix_pba = cfgr(p + 8u, 4);
			continue;
		}
		if (id != 0x09)
			continue;
		type = (uint8_t)cfgr(p + 3u, 1);
		if (type < 1 || type > 5 || tb.caps[type].found || cfgr(p + 2u, 1) < 16)
			return -1;
		tb.caps[type] = (struct vcap){ 1, (uint8_t)cfgr(p + 4u, 1), cfgr(p + 8u, 4),
					       cfgr(p + 12u, 4), 0, p };
		if (type == 2)
			tb.caps[type].mult = cfgr(p + 16u, 4);
	}
	/* Size every BAR the way the PCI core does (decode off), keep their addresses. */
	cfgw(4, 2, 0);
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		uint32_t reg = 0x10 + 4 * (uint32_t)i, lo = cfgr(reg, 4), hi = 0, mlo, mhi = ~0u;
		int is64 = (lo & 7) == 4;

		cfgw(reg, 4, 0xffffffff);
		mlo = cfgr(reg, 4);
		cfgw(reg, 4, lo);
		if (is64) {
			hi = cfgr(reg + 4, 4);
			cfgw(reg + 4, 4, 0xffffffff);
			mhi = cfgr(reg + 4, 4);
			cfgw(reg + 4, 4, hi);
		}
		if (!mlo)
			continue;
		tb.bar_addr[i] = ((uint64_t)hi << 32) | (lo & ~0xfu);
		tb.bar_size[i] = ~(((uint64_t)mhi << 32) | (mlo & ~0xfu)) + 1;
		if (is64)
			i++;
	}
	cfgw(4, 2, 0x6);	/* memory + bus master */
	return 0;
}

static void tb_reset(void)
{
	cc_w(STATUS, 1, 0);
}

static int tb_negotiate(uint64_t accept)
{
	uint64_t offered;

	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	cc_w(DFSELECT, 4, 0);
	offered = cc_r(DF, 4);
	cc_w(DFSELECT, 4, 1);
	offered |= cc_r(DF, 4) << 32;
	(void)offered;
	cc_w(GFSELECT, 4, 0);
	cc_w(GF, 4, (uint32_t)accept);
	cc_w(GFSELECT, 4, 1);
	cc_w(GF, 4, accept >> 32);
	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	     VIRTIO_STATUS_FEATURES_OK);
	return !!(cc_r(STATUS, 1) & VIRTIO_STATUS_FEATURES_OK);
}

#define GOOD_FEATURES (1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_EVENT_IDX | \
		       1ULL << DUMMY_FEATURE)
#define MSI_ADDR(cpu) (0xfee00000ULL | (uint64_t)(cpu) << 12)

static uint64_t msix_entry(unsigned int v, uint32_t field)
{
	return tb.bar_addr[tb.msix_table & 7] + (tb.msix_table & ~7u) + 16 * v + field;
}

static uint64_t pba_qword(void)
{
	return mr(tb.bar_addr[tb.msix_pba & 7] + (tb.msix_pba & ~7u), 8);
}

static void tb_msix_program(void)
{
	/* Like Linux: enable with the function masked, fill entries, unmask. */
	cfgw(tb.msix_cap + 2u, 2, 0xc000);
	for (unsigned int v = 0; v < tb.msix_n; v++) {
		mw(msix_entry(v, 0), 4, (uint32_t)MSI_ADDR(v));
		mw(msix_entry(v, 4), 4, 0);
		mw(msix_entry(v, 8), 4, 0x20 + v);
		mw(msix_entry(v, 12), 4, 0);
	}
	cfgw(tb.msix_cap + 2u, 2, 0x8000);
}

static uint64_t ring_base(unsigned int q)
{
	return 0x200000 + 0x10000ULL * q;
}

static void tb_queue(unsigned int q, uint16_t size, uint16_t vector)
{
	uint64_t b = ring_base(q);

	cc_w(Q_SELECT, 2, q);
	cc_w(Q_SIZE, 2, size);
	cc_w(Q_MSIX, 2, vector);
	/* 64-bit fields as two 32-bit halves, as vp_iowrite64_twopart does. */
	cc_w(Q_DESC, 4, (uint32_t)b);
	cc_w(Q_DESC + 4, 4, b >> 32);
	cc_w(Q_AVAIL, 4, (uint32_t)(b + 0x4000));
	cc_w(Q_AVAIL + 4, 4, 0);
	cc_w(Q_USED, 8, b + 0x8000);	/* and once as a 64-bit access */
	cc_w(Q_ENABLE, 2, 1);
}

static void tb_driver_ok(void)
{
	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	     VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

/* Everything the Linux driver does up to DRIVER_OK. */
static int tb_bring_up(void)
{
	if (tb_probe())
		return -1;
	tb_reset();
	if (!tb_negotiate(GOOD_FEATURES))
		return -2;
	tb_msix_program();
	cc_w(MSIX_CONFIG, 2, 0);
	tb_queue(0, 128, 1);
	tb_queue(1, 256, 2);
	tb_driver_ok();
	return 0;
}

/* ---- tests ---- */

static void test_probe_caps_and_bars(void)
{
	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_probe(), 0);
	for (int t = 1; t <= 5; t++)
		CHECK(tb.caps[t].found);
	CHECK_EQ(tb.caps[1].bar, 4);
	CHECK(tb.caps[1].length >= 0x38);
	CHECK_EQ(tb.caps[2].mult, 4);
	CHECK_EQ(tb.caps[4].length, 8);
	CHECK_EQ(tb.msix_n, 3);
	CHECK_EQ(tb.bar_size[4], 0x4000);
	CHECK_EQ(tb.bar_size[1], 0x1000);
	CHECK_EQ(cfgr(0x20, 4) & 0xf, 0xc);	/* 64-bit prefetchable */
	CHECK_EQ(cfgr(0x14, 4) & 0xf, 0x0);	/* 32-bit */
	CHECK(tb.bar_addr[4] >= PCI_MMIO_START && tb.bar_addr[4] + 0x4000 <= PCI_ECAM_GPA);
	CHECK_EQ(tb.bar_addr[4] % 0x4000, 0);
	/* Every virtio structure lies inside its BAR. */
	for (int t = 1; t <= 4; t++)
		CHECK(tb.caps[t].offset + tb.caps[t].length <= tb.bar_size[tb.caps[t].bar]);
	CHECK_EQ(tb.msix_table & 7, 1);
	CHECK_EQ(tb.msix_pba & 7, 1);
	CHECK_EQ(cc_r(NUM_QUEUES, 2), 2);
	/* Decode on: ioeventfds for both queues at notify_base + 4 * queue_notify_off. */
	CHECK_EQ(ioev_active(&tb.fake), 2);
	for (unsigned int q = 0; q < 2; q++) {
		cc_w(Q_SELECT, 2, q);
		CHECK_EQ(ioev_at(&tb.fake, cap_addr(2, (uint32_t)cc_r(Q_NOFF, 2) * 4)),
			 tb.vdev.kick_fd[q]);
	}
	tb_teardown();
	CHECK_EQ(ioev_active(&tb.fake), 0);
}

static void test_feature_negotiation(void)
{
	uint64_t offered;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_probe(), 0);
	tb_reset();
	CHECK_EQ(cc_r(STATUS, 1), 0);
	cc_w(DFSELECT, 4, 0);
	offered = cc_r(DF, 4);
	cc_w(DFSELECT, 4, 1);
	offered |= cc_r(DF, 4) << 32;
	CHECK_EQ(offered, dummy_features(NULL) | 1ULL << VIRTIO_F_VERSION_1);
	cc_w(DFSELECT, 4, 2);
	CHECK_EQ(cc_r(DF, 4), 0);
	cc_w(DFSELECT, 4, 0xffffffff);
	CHECK_EQ(cc_r(DF, 4), 0);

	/* An unoffered bit: FEATURES_OK does not stick. */
	CHECK_EQ(tb_negotiate(GOOD_FEATURES | 1ULL << 7), 0);
	CHECK(cc_r(STATUS, 1) & VIRTIO_STATUS_DRIVER);
	tb_reset();
	/* No VERSION_1: refused too (we are modern-only). */
	CHECK_EQ(tb_negotiate(1ULL << DUMMY_FEATURE), 0);
	tb_reset();
	CHECK_EQ(tb.dummy.resets, 3);
	/* Good set; afterwards the driver features are frozen. */
	CHECK_EQ(tb_negotiate(GOOD_FEATURES), 1);
	CHECK_EQ(tb.vdev.driver_features, GOOD_FEATURES);
	cc_w(GFSELECT, 4, 0);
	cc_w(GF, 4, 0);
	CHECK_EQ(tb.vdev.driver_features, GOOD_FEATURES);
	cc_w(GFSELECT, 4, 1);
	CHECK_EQ(cc_r(GF, 4), 1);
	/* DRIVER_OK activates the device. */
	tb_driver_ok();
	CHECK_EQ(tb.dummy.activated, 1);
	CHECK_EQ(cc_r(STATUS, 1), 0xf);
	tb_teardown();
}

static void test_queue_setup_and_msix(void)
{
	uint32_t gsi;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_bring_up(), 0);
	CHECK_EQ(tb.dummy.activated, 1);
	/* Queue registers read back. */
	cc_w(Q_SELECT, 2, 0);
	CHECK_EQ(cc_r(Q_SIZE, 2), 128);
	CHECK_EQ(cc_r(Q_MSIX, 2), 1);
	CHECK_EQ(cc_r(Q_ENABLE, 2), 1);
	CHECK_EQ(cc_r(Q_DESC, 8), ring_base(0));
	CHECK_EQ(cc_r(Q_AVAIL, 4), ring_base(0) + 0x4000);
	CHECK_EQ(cc_r(Q_USED + 4, 4), 0);
	CHECK_EQ(cc_r(Q_USED, 8), ring_base(0) + 0x8000);
	CHECK_EQ(tb.vdev.vqs[0].size, 128);
	CHECK(tb.vdev.vqs[0].ready);
	CHECK(tb.vdev.vqs[0].event_idx);
	CHECK(!tb.vdev.vqs[0].indirect);	/* offered, not accepted */
	CHECK_EQ(tb.vdev.vqs[1].msix_vector, 2);
	/* Enabled queues are frozen; bad sizes are ignored. */
	cc_w(Q_SIZE, 2, 64);
	CHECK_EQ(cc_r(Q_SIZE, 2), 128);
	cc_w(Q_SELECT, 2, 1);
	CHECK_EQ(cc_r(Q_SIZE, 2), 256);
	cc_w(Q_SELECT, 2, 7);	/* no such queue */
	CHECK_EQ(cc_r(Q_SIZE, 2), 0);
	cc_w(Q_SIZE, 2, 16);
	cc_w(Q_ENABLE, 2, 1);
	CHECK_EQ(cc_r(Q_ENABLE, 2), 0);
	/* A vector beyond the table reads back as NO_VECTOR. */
	cc_w(MSIX_CONFIG, 2, 3);
	CHECK_EQ(cc_r(MSIX_CONFIG, 2), 0xffff);
	cc_w(MSIX_CONFIG, 2, 0);

	/* Each vector got a route with its (addr, data) and its eventfd bound to it. */
	for (unsigned int v = 0; v < 3; v++) {
		gsi = route_gsi_for(&tb.fake, MSI_ADDR(v), 0x20 + v);
		CHECK(gsi != 0);
		CHECK_EQ(irqfd_gsi(&tb.fake, tb.vp->msix[v].irqfd), gsi);
	}
	CHECK_EQ(tb.fake.nroutes, 3);
	CHECK_EQ(tb.fake.nirqfds, 3);
	/* Re-targeting a vector updates its route in place, no new GSI or irqfd. */
	gsi = tb.vp->msix[2].gsi;
	mw(msix_entry(2, 8), 4, 0x41);
	CHECK_EQ(route_gsi_for(&tb.fake, MSI_ADDR(2), 0x41), gsi);
	CHECK_EQ(tb.fake.nroutes, 3);
	CHECK_EQ(tb.fake.nirqfds, 3);
	CHECK_EQ(mr(msix_entry(2, 8), 4), 0x41);
	CHECK_EQ(mr(msix_entry(2, 0), 8), MSI_ADDR(2));
	tb_teardown();
	CHECK_EQ(tb.fake.irqfds[0].on + tb.fake.irqfds[1].on + tb.fake.irqfds[2].on, 0);
}

static void test_doorbell(void)
{
	uint64_t n1;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_bring_up(), 0);
	cc_w(Q_SELECT, 2, 1);
	n1 = cap_addr(2, (uint32_t)cc_r(Q_NOFF, 2) * tb.caps[2].mult);
	/* With KVM, this address is an ioeventfd on kick_fd[1]... */
	CHECK_EQ(ioev_at(&tb.fake, n1), tb.vdev.kick_fd[1]);
	CHECK_EQ(tb.fake.ioev[1].len, 2);
	/* ...and a write that exits anyway (here: all of them) still kicks the queue. */
	mw(n1, 2, 1);
	CHECK_EQ(fd_count(tb.vdev.kick_fd[1]), 1);
	CHECK_EQ(fd_count(tb.vdev.kick_fd[0]), 0);
	mw(n1 - 4, 4, 0);
	CHECK_EQ(fd_count(tb.vdev.kick_fd[0]), 1);
	mw(n1 + 4, 2, 2);	/* past the last queue: nothing */
	CHECK_EQ(fd_count(tb.vdev.kick_fd[0]) + fd_count(tb.vdev.kick_fd[1]), 0);
	CHECK_EQ(mr(n1, 2), 0);
	tb_teardown();
}

static void test_interrupts_and_pba(void)
{
	int fd1, fd2, fd0;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_bring_up(), 0);
	fd0 = tb.vp->msix[0].irqfd;
	fd1 = tb.vp->msix[1].irqfd;
	fd2 = tb.vp->msix[2].irqfd;
	tb.vdev.tops->notify_queue(&tb.vdev, 1);
	CHECK_EQ(fd_count(fd2), 1);
	CHECK_EQ(fd_count(fd1), 0);
	tb.vdev.tops->notify_queue(&tb.vdev, 0);
	CHECK_EQ(fd_count(fd1), 1);
	CHECK_EQ(pba_qword(), 0);

	/* Masked vector: pending in the PBA, delivered on unmask. */
	mw(msix_entry(2, 12), 4, 1);
	tb.vdev.tops->notify_queue(&tb.vdev, 1);
	tb.vdev.tops->notify_queue(&tb.vdev, 1);
	CHECK_EQ(fd_count(fd2), 0);
	CHECK_EQ(pba_qword(), 1 << 2);
	mw(msix_entry(2, 12), 4, 0);
	CHECK_EQ(fd_count(fd2), 1);
	CHECK_EQ(pba_qword(), 0);

	/* Function mask: same for every vector. */
	cfgw(tb.msix_cap + 2u, 2, 0xc000);
	tb.vdev.tops->notify_queue(&tb.vdev, 0);
	tb.vdev.tops->notify_config(&tb.vdev);
	CHECK_EQ(fd_count(fd1) + fd_count(fd0), 0);
	CHECK_EQ(pba_qword(), 3);
	CHECK_EQ(mr(cap_addr(3, 0), 1), 2);	/* ISR: config bit, cleared by the read */
	CHECK_EQ(mr(cap_addr(3, 0), 1), 0);
	cfgw(tb.msix_cap + 2u, 2, 0x8000);
	CHECK_EQ(fd_count(fd1), 1);
	CHECK_EQ(fd_count(fd0), 1);
	CHECK_EQ(pba_qword(), 0);

	/* NO_VECTOR: nothing fires. */
	cc_w(Q_SELECT, 2, 0);
	cc_w(Q_MSIX, 2, 0xffff);
	tb.vdev.tops->notify_queue(&tb.vdev, 0);
	CHECK_EQ(fd_count(fd0) + fd_count(fd1) + fd_count(fd2), 0);
	CHECK_EQ(pba_qword(), 0);

	/* A vector used before it was ever routed gets its route on unmask. */
	mw(msix_entry(1, 12), 4, 1);
	mw(msix_entry(1, 8), 4, 0x77);
	CHECK_EQ(route_gsi_for(&tb.fake, MSI_ADDR(1), 0x77), 0);
	cc_w(Q_MSIX, 2, 1);
	tb.vdev.tops->notify_queue(&tb.vdev, 0);
	mw(msix_entry(1, 12), 4, 0);
	CHECK(route_gsi_for(&tb.fake, MSI_ADDR(1), 0x77) != 0);
	CHECK_EQ(fd_count(fd1), 1);
	tb_teardown();
}

static void test_device_config(void)
{
	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_probe(), 0);
	CHECK_EQ(mr(cap_addr(4, 0), 4), 0x6f6d756b);	/* "kumo" */
	CHECK_EQ(mr(cap_addr(4, 4), 4), 0x6766632d);
	CHECK_EQ(mr(cap_addr(4, 6), 4), 0);	/* straddles the end */
	CHECK_EQ(mr(cap_addr(4, 0x100), 1), 0);
	mw(cap_addr(4, 2), 2, 0x5858);
	CHECK_EQ(tb.dummy.config_writes, 1);
	CHECK(!memcmp(tb.dummy.config, "kuXX-cfg", 8));
	mw(cap_addr(4, 7), 2, 0);
	mw(cap_addr(4, 0xfff), 1, 0);
	CHECK_EQ(tb.dummy.config_writes, 1);
	/* The whole BAR answers without crashing, any width. */
	for (uint64_t o = 0; o < 0x4000; o += 7)
		(void)mr(tb.bar_addr[4] + o, 1 + (uint32_t)(o % 8));
	tb_teardown();
}

static void test_pci_cfg_window(void)
{
	uint8_t at;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_probe(), 0);
	at = tb.caps[5].at;
	cfgw(at + 4u, 1, 4);	/* BAR 4 */
	cfgw(at + 8u, 4, tb.caps[1].offset + NUM_QUEUES);
	cfgw(at + 12u, 4, 2);
	CHECK_EQ(cfgr(at + 16u, 2), 2);
	/* A write through the window: reset then ACKNOWLEDGE. */
	cfgw(at + 8u, 4, tb.caps[1].offset + STATUS);
	cfgw(at + 12u, 4, 1);
	cfgw(at + 16u, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	CHECK_EQ(cc_r(STATUS, 1), VIRTIO_STATUS_ACKNOWLEDGE);
	/* Bad length or misaligned offset: nothing happens. */
	cfgw(at + 12u, 4, 3);
	cfgw(at + 16u, 1, 0);
	CHECK_EQ(cc_r(STATUS, 1), VIRTIO_STATUS_ACKNOWLEDGE);
	cfgw(at + 12u, 4, 0xffffffff);
	(void)cfgr(at + 16u, 4);
	cfgw(at + 8u, 4, 0xfffffffc);
	cfgw(at + 12u, 4, 4);
	(void)cfgr(at + 16u, 4);
	cfgw(at + 16u, 4, 0);
	tb_teardown();
}

static void test_bad_rings_need_reset(void)
{
	int fd0;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_probe(), 0);
	tb_reset();
	CHECK_EQ(tb_negotiate(GOOD_FEATURES), 1);
	tb_msix_program();
	cc_w(MSIX_CONFIG, 2, 0);
	fd0 = tb.vp->msix[0].irqfd;
	cc_w(Q_SELECT, 2, 0);
	cc_w(Q_SIZE, 2, 256);
	cc_w(Q_DESC, 8, (64ULL << 20) - 16 * 128);	/* runs off the end of RAM */
	cc_w(Q_AVAIL, 8, 0x4000);
	cc_w(Q_USED, 8, 0x8000);
	cc_w(Q_ENABLE, 2, 1);
	CHECK_EQ(cc_r(Q_ENABLE, 2), 0);
	CHECK(cc_r(STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET);
	CHECK_EQ(fd_count(fd0), 1);	/* config interrupt */
	/* Misaligned used ring. */
	tb_reset();
	CHECK_EQ(cc_r(STATUS, 1), 0);
	CHECK_EQ(tb_negotiate(GOOD_FEATURES), 1);
	cc_w(Q_SELECT, 2, 1);
	cc_w(Q_DESC, 8, 0x10000);
	cc_w(Q_AVAIL, 8, 0x14000);
	cc_w(Q_USED, 8, 0x18002);
	cc_w(Q_ENABLE, 2, 1);
	CHECK_EQ(cc_r(Q_ENABLE, 2), 0);
	CHECK(cc_r(STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET);
	/* Activation failure also asks for a reset. */
	tb_reset();
	tb.dummy.fail_activate = 1;
	CHECK_EQ(tb_negotiate(GOOD_FEATURES), 1);
	tb_driver_ok();
	CHECK(cc_r(STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET);
	tb_teardown();
}

static void test_reset_and_reinit(void)
{
	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_bring_up(), 0);
	mw(cap_addr(2, 0), 2, 0);	/* a stale kick */
	tb_reset();
	CHECK_EQ(cc_r(STATUS, 1), 0);
	CHECK_EQ(tb.dummy.resets, 2);
	CHECK_EQ(fd_count(tb.vdev.kick_fd[0]), 0);	/* drained */
	CHECK_EQ(cc_r(MSIX_CONFIG, 2), 0xffff);
	CHECK_EQ(cc_r(Q_SELECT, 2), 0);
	for (unsigned int q = 0; q < 2; q++) {
		cc_w(Q_SELECT, 2, q);
		CHECK_EQ(cc_r(Q_ENABLE, 2), 0);
		CHECK_EQ(cc_r(Q_SIZE, 2), 256);
		CHECK_EQ(cc_r(Q_MSIX, 2), 0xffff);
		CHECK_EQ(cc_r(Q_DESC, 8), 0);
	}
	CHECK_EQ(tb.vdev.driver_features, 0);
	/* The driver probes again (module reload): the same sequence works. */
	CHECK_EQ(tb_bring_up(), 0);
	CHECK_EQ(tb.dummy.activated, 2);
	CHECK_EQ(cc_r(STATUS, 1), 0xf);
	CHECK_EQ(tb.fake.nroutes, 3);	/* GSIs reused */
	CHECK_EQ(tb.fake.nirqfds, 3);
	tb.vdev.tops->notify_queue(&tb.vdev, 0);
	CHECK_EQ(fd_count(tb.vp->msix[1].irqfd), 1);
	tb_teardown();
}

static void test_bar_move_moves_ioeventfds(void)
{
	uint64_t old, nb = 0xd0000000;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_bring_up(), 0);
	old = cap_addr(2, 0);
	CHECK_EQ(ioev_at(&tb.fake, old), tb.vdev.kick_fd[0]);
	cfgw(0x20, 4, (uint32_t)nb | 0xc);
	cfgw(0x24, 4, 0);
	tb.bar_addr[4] = nb;
	CHECK_EQ(ioev_at(&tb.fake, old), -1);
	CHECK_EQ(ioev_at(&tb.fake, cap_addr(2, 0)), tb.vdev.kick_fd[0]);
	CHECK_EQ(ioev_at(&tb.fake, cap_addr(2, 4)), tb.vdev.kick_fd[1]);
	CHECK_EQ(ioev_active(&tb.fake), 2);
	CHECK_EQ(cc_r(STATUS, 1), 0xf);	/* the BAR answers at its new place */
	CHECK_EQ(mr(old - tb.caps[2].offset + STATUS, 1), 0xff);
	/* Decode off: ioeventfds go away; on: back. */
	cfgw(4, 2, 0x4);
	CHECK_EQ(ioev_active(&tb.fake), 0);
	cfgw(4, 2, 0x6);
	CHECK_EQ(ioev_active(&tb.fake), 2);
	tb_teardown();
}

static void test_hostile_bar_accesses(void)
{
	uint32_t seed = 777;
	uint64_t v;

	CHECK_EQ(tb_setup(), 0);
	CHECK_EQ(tb_bring_up(), 0);
	log_level = LOG_ERR;
	for (int i = 0; i < 100000; i++) {
		uint64_t base;
		uint32_t len, off;

		seed = seed * 1103515245u + 12345u;
		base = (seed & 1) ? tb.bar_addr[4] : tb.bar_addr[1];
		off = (seed >> 8) % 0x4000;
		len = 1 + (seed >> 24) % 8;
		v = (uint64_t)seed * 0x9e3779b97f4a7c15ULL;
		/* Leave status alone (reset storms are fine but slow) and ring addresses sane. */
		if ((seed >> 28) & 1)
			bus_access(&tb.mmio, base + off, &v, len, 0);
		else if (base != tb.bar_addr[4] || off >= 0x40)
			bus_access(&tb.mmio, base + off, &v, len, 1);
	}
	log_level = LOG_INFO;
	tb_teardown();
}

TEST_MAIN(TEST(test_probe_caps_and_bars), TEST(test_feature_negotiation),
	  TEST(test_queue_setup_and_msix), TEST(test_doorbell), TEST(test_interrupts_and_pba),
	  TEST(test_device_config), TEST(test_pci_cfg_window), TEST(test_bad_rings_need_reset),
	  TEST(test_reset_and_reinit), TEST(test_bar_move_moves_ioeventfds),
	  TEST(test_hostile_bar_accesses))
