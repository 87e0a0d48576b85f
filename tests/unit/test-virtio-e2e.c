/*
 * End to end, without KVM: a host-side test driver plays Linux's virtio_pci_modern +
 * virtio_blk against the real virtio-blk device on the real virtio-pci transport and PCI host.
 * It finds the function through 0xCF8/0xCFC, walks its capabilities, programs MSI-X, brings
 * the device up, and then does I/O the way a guest under KVM does: the doorbell is a write of
 * 1 to the eventfd that the (fake) KVM ioeventfd registered for queue 0's notify address, and
 * interrupts are the irqfd bound to the GSI that MSI-X vector 1's (addr, data) was routed to.
 * Polls with a timeout are hang guards, not timing assertions.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "devices/pci.h"
#include "devices/virtio-blk.h"
#include "devices/virtio-pci.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "vmm/bus.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define MEM_SIZE (64ULL << 20)
#define DISK_SIZE (16ULL << 20)
#define QSIZE VIRTIO_BLK_QUEUE_SIZE
#define TIMEOUT_MS 5000

/* Guest-physical layout of the test driver's rings and buffers. */
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define DPS 8					/* descriptors per request slot */
#define NSLOTS (QSIZE / DPS)			/* 32 */
#define HDR_GPA(s) (0x80000ULL + (s) * 64ULL)	/* header; status byte at +32 */
#define ST_GPA(s) (HDR_GPA(s) + 32)
#define DATA_GPA(s) (0x200000ULL + (s) * 0x100000ULL)	/* 1 MiB per slot */

#define F_NEXT 1
#define F_WRITE 2

#define MSI_ADDR(v) (0xfee00000ULL | (uint64_t)(v) << 12)
#define MSI_DATA(v) (0x4100u + 0x11u * (v))

/* ---- the fake KVM: records routes, irqfds and ioeventfds ---- */

#define MAX_REC 64

struct fake_vmm {
	pthread_mutex_t lock;	/* routes may be (re)written from the device's I/O thread */
	struct { uint32_t gsi; uint64_t addr; uint32_t data; } routes[MAX_REC];
	int nroutes;
	uint32_t next_gsi;
	struct { int fd; uint32_t gsi; int on; } irqfds[MAX_REC];
	int nirqfds;
	struct { int fd; uint64_t addr; uint32_t len; int on; } ioev[MAX_REC];
	int nioev;
};

static int fake_msi_route(void *vmm, uint32_t *gsi, uint64_t addr, uint32_t data)
{
	struct fake_vmm *f = vmm;
	int i, ret = 0;

	pthread_mutex_lock(&f->lock);
	if (!*gsi) {
		if (f->nroutes == MAX_REC) {
			ret = -ENOSPC;
			goto out;
		}
		*gsi = ++f->next_gsi + 23;	/* above the IOAPIC pins */
		f->routes[f->nroutes++].gsi = *gsi;
	}
	for (i = 0; i < f->nroutes && f->routes[i].gsi != *gsi; i++)
		;
	if (i == f->nroutes) {
		ret = -EINVAL;
		goto out;
	}
	f->routes[i].addr = addr;
	f->routes[i].data = data;
out:
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static int fake_irqfd(void *vmm, int fd, uint32_t gsi, int assign)
{
	struct fake_vmm *f = vmm;
	int ret = 0;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nirqfds; i++)
		if (f->irqfds[i].fd == fd && f->irqfds[i].on) {
			if (assign)
				ret = -EEXIST;
			else
				f->irqfds[i].on = 0;
			goto out;
		}
	if (!assign || f->nirqfds == MAX_REC) {
		ret = -ENOENT;
		goto out;
	}
	f->irqfds[f->nirqfds].fd = fd;
	f->irqfds[f->nirqfds].gsi = gsi;
	f->irqfds[f->nirqfds++].on = 1;
out:
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static int fake_ioeventfd(void *vmm, int fd, uint64_t addr, uint32_t len, int assign)
{
	struct fake_vmm *f = vmm;
	int ret = 0;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nioev; i++)
		if (f->ioev[i].on && f->ioev[i].addr == addr) {
			if (assign)
				ret = -EEXIST;
			else if (f->ioev[i].fd != fd)
				ret = -ENOENT;
			else
				f->ioev[i].on = 0;
			goto out;
		}
	if (!assign || f->nioev == MAX_REC) {
		ret = -ENOENT;
		goto out;
	}
	f->ioev[f->nioev].fd = fd;
	f->ioev[f->nioev].addr = addr;
	f->ioev[f->nioev].len = len;
	f->ioev[f->nioev++].on = 1;
out:
	pthread_mutex_unlock(&f->lock);
	return ret;
}

/* GSI that (addr, data) is routed to, 0 if none. */
static uint32_t route_gsi_for(struct fake_vmm *f, uint64_t addr, uint32_t data)
{
	uint32_t gsi = 0;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nroutes && !gsi; i++)
		if (f->routes[i].addr == addr && f->routes[i].data == data)
			gsi = f->routes[i].gsi;
	pthread_mutex_unlock(&f->lock);
	return gsi;
}

/* The eventfd that raises gsi, -1 if none (or more than one: that would be ambiguous). */
static int irqfd_for_gsi(struct fake_vmm *f, uint32_t gsi)
{
	int fd = -1, n = 0;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nirqfds; i++)
		if (f->irqfds[i].on && f->irqfds[i].gsi == gsi) {
			fd = f->irqfds[i].fd;
			n++;
		}
	pthread_mutex_unlock(&f->lock);
	return n == 1 ? fd : -1;
}

/* The eventfd KVM would signal for a guest write at addr (and the length it matches). */
static int ioev_at(struct fake_vmm *f, uint64_t addr, uint32_t *len)
{
	int fd = -1;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->nioev && fd < 0; i++)
		if (f->ioev[i].on && f->ioev[i].addr == addr) {
			fd = f->ioev[i].fd;
			if (len)
				*len = f->ioev[i].len;
		}
	pthread_mutex_unlock(&f->lock);
	return fd;
}

/* ---- the test bench: guest memory, buses, PCI host, disk file, device, transport ---- */

struct vcap { int found; uint8_t bar; uint32_t offset, length, mult; };

struct tb {
	struct guest_mem mem;
	struct bus pio, mmio;
	struct pci_host host;
	struct fake_vmm fake;
	struct dev_env env;
	struct virtio_dev *vdev;
	struct virtio_pci *vp;
	char path[64];
	int fd;			/* the test's own view of the disk file */
	int stage;		/* how far setup got, for teardown */
	/* What the driver learnt by probing. */
	int slot, probed;
	uint64_t bar_addr[PCI_NUM_BARS], bar_size[PCI_NUM_BARS];
	struct vcap caps[6];	/* by cfg_type */
	uint8_t msix_cap;
	uint32_t msix_table, msix_pba;	/* offset | BIR */
	uint16_t msix_n;
	uint64_t features;	/* negotiated */
	int event_idx;
	uint64_t notify_addr;	/* queue 0's doorbell */
	int kick_fd;		/* what the ioeventfd at notify_addr signals */
	int irq_fd[2];		/* irqfds of MSI-X vectors 0 (config) and 1 (queue 0) */
	uint32_t gsi[2];
	/* Ring state. */
	uint16_t avail_idx, used_seen, kicked_at;
	unsigned int irqs;	/* queue interrupts taken */
};

static struct tb tb;
static int saved_log_level = -1;

static void *g(uint64_t gpa, uint64_t len)
{
	void *p = mm_gpa_to_hva(&tb.mem, gpa, len);

	if (!p)
		abort();
	return p;
}

static uint16_t *avail(void) { return g(AVAIL_GPA, 6 + 2 * QSIZE); }
static uint16_t *used16(void) { return g(USED_GPA, 6 + 8 * QSIZE); }

static int tb_setup(const struct blk_options *o)
{
	memset(&tb, 0, sizeof(tb));
	saved_log_level = log_level;
	tb.fd = -1;
	tb.kick_fd = tb.irq_fd[0] = tb.irq_fd[1] = -1;
	pthread_mutex_init(&tb.fake.lock, NULL);
	if (mm_init(&tb.mem, MEM_SIZE))
		return -1;
	tb.stage = 1;
	bus_init(&tb.pio, "pio");
	bus_init(&tb.mmio, "mmio");
	if (pci_host_init(&tb.host, &tb.pio, &tb.mmio))
		return -1;
	tb.stage = 2;
	tb.env = (struct dev_env){
		.mem = &tb.mem, .pio = &tb.pio, .mmio = &tb.mmio, .vmm = &tb.fake,
		.msi_route = fake_msi_route, .irqfd = fake_irqfd, .ioeventfd = fake_ioeventfd,
	};
	strcpy(tb.path, "/var/tmp/kumo-test-e2e-XXXXXX");
	tb.fd = mkstemp(tb.path);
	if (tb.fd < 0)
		return -1;
	tb.stage = 3;
	if (ftruncate(tb.fd, DISK_SIZE))
		return -1;
	if (virtio_blk_create(&tb.env, tb.path, o, &tb.vdev))
		return -1;
	tb.stage = 4;
	if (virtio_pci_create(&tb.host, &tb.env, tb.vdev, &tb.vp))
		return -1;
	tb.stage = 5;
	return 0;
}

static void cc_w(uint32_t off, uint32_t len, uint64_t v);

static void tb_teardown(void)
{
	if (saved_log_level >= 0)
		log_level = saved_log_level;
	if (tb.stage >= 5) {
		if (tb.probed)
			cc_w(0x14, 1, 0);	/* the driver resets the device on its way out */
		virtio_pci_destroy(tb.vp);
	}
	if (tb.stage >= 4)
		virtio_blk_destroy(tb.vdev);
	if (tb.stage >= 3) {
		close(tb.fd);
		unlink(tb.path);
	}
	if (tb.stage >= 2)
		pci_host_destroy(&tb.host);
	if (tb.stage >= 1) {
		bus_destroy(&tb.pio);
		bus_destroy(&tb.mmio);
		mm_free(&tb.mem);
	}
	pthread_mutex_destroy(&tb.fake.lock);
	tb.stage = 0;
}

/* ---- config space through 0xCF8/0xCFC, BARs through the MMIO bus ---- */

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

static uint64_t cap_addr(int type, uint32_t off)
{
	return tb.bar_addr[tb.caps[type].bar] + tb.caps[type].offset + off;
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

static uint64_t msix_entry(unsigned int v, uint32_t field)
{
	return tb.bar_addr[tb.msix_table & 7] + (tb.msix_table & ~7u) + 16 * v + field;
}

static uint64_t pba_qword(void)
{
	return mr(tb.bar_addr[tb.msix_pba & 7] + (tb.msix_pba & ~7u), 8);
}

/* Counter of a non-blocking eventfd, consumed (0 if not signalled). */
static uint64_t fd_count(int fd)
{
	eventfd_t v = 0;

	return eventfd_read(fd, &v) == 0 ? v : 0;
}

/* Wait (hang guard) for fd to be signalled; returns its counter, 0 on timeout. */
static uint64_t fd_wait(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	return fd_count(fd);
}

static int fd_signalled(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

/* ---- the driver ---- */

/* Enumerate, walk the capabilities, size the BARs, enable memory decode + bus mastering. */
static int tb_probe(void)
{
	uint8_t p;
	int hops = 0;

	memset(tb.caps, 0, sizeof(tb.caps));
	tb.msix_cap = 0;
	for (tb.slot = 0; tb.slot < 32; tb.slot++)
		if (cfgr(0, 2) == 0x1af4)
			break;
	if (tb.slot == 32) {
		fprintf(stderr, "  no virtio function on bus 0\n");
		return -1;
	}
	if (cfgr(2, 2) != 0x1040 + VIRTIO_ID_BLOCK || cfgr(8, 1) < 1 ||
	    cfgr(0x2c, 4) != ((uint32_t)VIRTIO_ID_BLOCK << 16 | 0x1af4) ||
	    cfgr(9, 3) != VIRTIO_BLK_PCI_CLASS || !(cfgr(6, 2) & 0x10)) {
		fprintf(stderr, "  unexpected ids/class/status\n");
		return -1;
	}
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
					       cfgr(p + 12u, 4), 0 };
		if (type == 2)
			tb.caps[type].mult = cfgr(p + 16u, 4);
	}
	if (!tb.caps[1].found || !tb.caps[2].found || !tb.caps[3].found || !tb.caps[4].found ||
	    !tb.msix_cap) {
		fprintf(stderr, "  missing capability\n");
		return -1;
	}
	/* Size every BAR with decode off, as the PCI core does; keep the assigned addresses. */
	cfgw(4, 2, 0);
	for (int i = 0; i < PCI_NUM_BARS; i++) {
		uint32_t reg = 0x10 + 4 * (uint32_t)i, lo = cfgr(reg, 4), hi = 0, mlo, mhi = ~0u;
		int is64 = (lo & 7) == 4;

		tb.bar_addr[i] = tb.bar_size[i] = 0;
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
	for (int t = 1; t <= 4; t++)
		if (!tb.bar_size[tb.caps[t].bar] ||
		    tb.caps[t].offset + (uint64_t)tb.caps[t].length > tb.bar_size[tb.caps[t].bar])
			return -1;
	cfgw(4, 2, 0x6);	/* memory decode + bus master */
	tb.probed = 1;
	return 0;
}

/*
 * Like Linux: enable MSI-X with the function masked, program vector 0 (config) and 1
 * (queue 0) with distinct (addr, data), unmask them, then unmask the function. Then find,
 * through the fake KVM, the GSI each (addr, data) was routed to and the irqfd bound to it.
 */
static int tb_msix_program(void)
{
	cfgw(tb.msix_cap + 2u, 2, 0xc000);
	for (unsigned int v = 0; v < 2; v++) {
		mw(msix_entry(v, 0), 4, (uint32_t)MSI_ADDR(v));
		mw(msix_entry(v, 4), 4, MSI_ADDR(v) >> 32);
		mw(msix_entry(v, 8), 4, MSI_DATA(v));
		mw(msix_entry(v, 12), 4, 0);
	}
	cfgw(tb.msix_cap + 2u, 2, 0x8000);
	for (unsigned int v = 0; v < 2; v++) {
		tb.gsi[v] = route_gsi_for(&tb.fake, MSI_ADDR(v), MSI_DATA(v));
		tb.irq_fd[v] = tb.gsi[v] ? irqfd_for_gsi(&tb.fake, tb.gsi[v]) : -1;
		if (tb.irq_fd[v] < 0) {
			fprintf(stderr, "  vector %u: no route/irqfd\n", v);
			return -1;
		}
	}
	if (tb.gsi[0] == tb.gsi[1] || tb.irq_fd[0] == tb.irq_fd[1])
		return -1;
	return 0;
}

static int tb_negotiate(void)
{
	uint64_t offered;

	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	cc_w(DFSELECT, 4, 0);
	offered = cc_r(DF, 4);
	cc_w(DFSELECT, 4, 1);
	offered |= cc_r(DF, 4) << 32;
	if (!(offered & (1ULL << VIRTIO_F_VERSION_1)))
		return -1;
	/* VERSION_1 plus everything virtio-blk offers (we implement all of it here). */
	tb.features = offered;
	tb.event_idx = !!(offered & (1ULL << VIRTIO_F_EVENT_IDX));
	cc_w(GFSELECT, 4, 0);
	cc_w(GF, 4, (uint32_t)tb.features);
	cc_w(GFSELECT, 4, 1);
	cc_w(GF, 4, tb.features >> 32);
	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	     VIRTIO_STATUS_FEATURES_OK);
	return cc_r(STATUS, 1) & VIRTIO_STATUS_FEATURES_OK ? 0 : -1;
}

/* Queue 0 with fresh rings in guest memory, on vector 1; find its doorbell eventfd. */
static int tb_queue0(void)
{
	uint32_t len = 0;

	memset(g(DESC_GPA, 16 * QSIZE), 0, 16 * QSIZE);
	memset(avail(), 0, 6 + 2 * QSIZE);
	memset(used16(), 0, 6 + 8 * QSIZE);
	tb.avail_idx = tb.used_seen = tb.kicked_at = 0;
	cc_w(Q_SELECT, 2, 0);
	if (cc_r(Q_SIZE, 2) != QSIZE || cc_r(Q_ENABLE, 2) != 0)
		return -1;
	cc_w(Q_SIZE, 2, QSIZE);
	cc_w(Q_MSIX, 2, 1);
	if (cc_r(Q_MSIX, 2) != 1)
		return -1;
	cc_w(Q_DESC, 4, (uint32_t)DESC_GPA);
	cc_w(Q_DESC + 4, 4, 0);
	cc_w(Q_AVAIL, 4, (uint32_t)AVAIL_GPA);
	cc_w(Q_AVAIL + 4, 4, 0);
	cc_w(Q_USED, 4, (uint32_t)USED_GPA);
	cc_w(Q_USED + 4, 4, 0);
	cc_w(Q_ENABLE, 2, 1);
	if (cc_r(Q_ENABLE, 2) != 1)
		return -1;
	tb.notify_addr = cap_addr(2, (uint32_t)cc_r(Q_NOFF, 2) * tb.caps[2].mult);
	tb.kick_fd = ioev_at(&tb.fake, tb.notify_addr, &len);
	if (tb.kick_fd < 0 || (len != 0 && len != 2)) {
		fprintf(stderr, "  no ioeventfd at the notify address 0x%llx\n",
			(unsigned long long)tb.notify_addr);
		return -1;
	}
	return 0;
}

/* Everything up to DRIVER_OK, in the order the brief (and Linux, roughly) does it. */
static int tb_bring_up(void)
{
	if (tb_probe())
		return -1;
	if (tb_msix_program())
		return -2;
	cc_w(STATUS, 1, 0);
	if (cc_r(STATUS, 1) != 0)
		return -3;
	if (tb_negotiate())
		return -4;
	cc_w(MSIX_CONFIG, 2, 0);
	if (cc_r(MSIX_CONFIG, 2) != 0)
		return -5;
	if (tb_queue0())
		return -6;
	cc_w(STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	     VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	if (cc_r(STATUS, 1) != 0xf)
		return -7;
	return 0;
}

static int tb_open(const struct blk_options *o)
{
	int ret;

	if (tb_setup(o)) {
		fprintf(stderr, "  setup failed: %s\n", strerror(errno));
		return -1;
	}
	ret = tb_bring_up();
	if (ret)
		fprintf(stderr, "  bring-up failed at step %d\n", -ret);
	return ret;
}

/* ---- requests ---- */

static void desc(unsigned int i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = g(DESC_GPA + 16ULL * i, 16);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void publish(uint16_t head)
{
	uint16_t *a = avail();

	a[2 + (tb.avail_idx & (QSIZE - 1))] = head;
	tb.avail_idx++;
	__atomic_store_n(&a[1], tb.avail_idx, __ATOMIC_RELEASE);
}

/*
 * The doorbell: what KVM does on the guest's 16-bit MMIO write to the notify address is
 * signal the ioeventfd registered there. With event idx, only when avail_event asks for it.
 */
static void kick(void)
{
	uint16_t old = tb.kicked_at, new_idx = tb.avail_idx, ev;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	tb.kicked_at = new_idx;
	if (tb.event_idx) {
		ev = __atomic_load_n(&used16()[2 + 4 * QSIZE], __ATOMIC_RELAXED);
		if ((uint16_t)(new_idx - ev - 1) >= (uint16_t)(new_idx - old))
			return;
	}
	if (eventfd_write(tb.kick_fd, 1))
		abort();
}

static int used_pending(void)
{
	return __atomic_load_n(&used16()[1], __ATOMIC_ACQUIRE) != tb.used_seen;
}

static void take_used(uint32_t *id, uint32_t *len)
{
	uint32_t e[2];

	memcpy(e, &used16()[2 + 4 * (tb.used_seen & (QSIZE - 1))], 8);
	tb.used_seen++;
	*id = e[0];
	*len = e[1];
	/* Like virtqueue_get_buf(): used_event = what we have seen, so the next one interrupts. */
	__atomic_store_n(&avail()[2 + QSIZE], tb.used_seen, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/*
 * A queue interrupt was taken since tb.irqs was `before`, or arrives now (hang guard: it may
 * trail the used entry, the device pushes before it notifies).
 */
static int irq_since(unsigned int before)
{
	uint64_t n;

	if (tb.irqs != before)
		return 1;
	n = fd_wait(tb.irq_fd[1], TIMEOUT_MS);
	tb.irqs += (unsigned int)n;
	return n > 0;
}

/* Next used entry; sleeps on vector 1's irqfd (a lost interrupt shows up as a timeout). */
static int wait_used(uint32_t *id, uint32_t *len)
{
	for (;;) {
		uint64_t n;

		avail()[2 + QSIZE] = tb.used_seen;	/* used_event: interrupt me for the next */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (used_pending()) {
			take_used(id, len);
			return 0;
		}
		n = fd_wait(tb.irq_fd[1], TIMEOUT_MS);
		if (!n) {
			fprintf(stderr, "  no interrupt within %d ms (used idx %u, seen %u)\n",
				TIMEOUT_MS, used16()[1], tb.used_seen);
			return -ETIMEDOUT;
		}
		tb.irqs += (unsigned int)n;
	}
}

/* Lay out request `slot`: header, data in nseg pieces, status byte; then publish it. */
static void put_req(unsigned int slot, uint32_t type, uint64_t sector, uint64_t data_gpa,
		    uint32_t len, unsigned int nseg)
{
	uint32_t hdr[4] = { type, 0, (uint32_t)sector, (uint32_t)(sector >> 32) };
	uint16_t d = (uint16_t)(slot * DPS), head = d;
	int wr = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
	uint32_t done = 0;

	if (!len)
		nseg = 0;
	else if (nseg < 1)
		nseg = 1;
	else if (nseg > DPS - 2)
		nseg = DPS - 2;
	memcpy(g(HDR_GPA(slot), 16), hdr, 16);
	*(uint8_t *)g(ST_GPA(slot), 1) = 0xee;
	desc(d, HDR_GPA(slot), 16, F_NEXT, (uint16_t)(d + 1));
	d++;
	for (unsigned int i = 0; i < nseg; i++) {
		uint32_t piece = i + 1 < nseg ? len / nseg / 512 * 512 : len - done;

		desc(d, data_gpa + done, piece, F_NEXT | (wr ? F_WRITE : 0), (uint16_t)(d + 1));
		done += piece;
		d++;
	}
	desc(d, ST_GPA(slot), 1, F_WRITE, 0);
	publish(head);
}

static uint8_t status_of(unsigned int slot)
{
	return __atomic_load_n((uint8_t *)g(ST_GPA(slot), 1), __ATOMIC_ACQUIRE);
}

/* One request start to finish; the status byte, or -1 on a protocol problem. */
static int do_req(uint32_t type, uint64_t sector, uint64_t data_gpa, uint32_t len,
		  unsigned int nseg, uint32_t *used_len)
{
	unsigned int before = tb.irqs;
	uint32_t id, l;

	put_req(0, type, sector, data_gpa, len, nseg);
	kick();
	if (wait_used(&id, &l))
		return -1;
	if (id != 0) {
		fprintf(stderr, "  completion for head %u, expected 0\n", id);
		return -1;
	}
	/* used_event was at the previous completion: this one must have interrupted. */
	if (!irq_since(before)) {
		fprintf(stderr, "  completion without an interrupt on vector 1\n");
		return -1;
	}
	if (used_len)
		*used_len = l;
	return status_of(0);
}

static void fill(uint8_t *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
}

/* The file holds exactly data at off (byte for byte, through pread). */
static int file_equals(uint64_t off, const void *data, size_t n)
{
	uint8_t *buf = malloc(n);
	int ok = buf && pread(tb.fd, buf, n, (off_t)off) == (ssize_t)n;

	if (ok) {
		for (size_t i = 0; i < n; i++)
			if (buf[i] != ((const uint8_t *)data)[i]) {
				fprintf(stderr, "  file byte %llu: 0x%02x, expected 0x%02x\n",
					(unsigned long long)(off + i), buf[i],
					((const uint8_t *)data)[i]);
				ok = 0;
				break;
			}
	}
	free(buf);
	return ok;
}

/* ---- tests (each body runs between tb_open and tb_teardown) ---- */

static void body_enumerate_and_bring_up(void)
{
	struct virtio_blk_config c;
	uint8_t *cp = (uint8_t *)&c;

	CHECK_EQ(tb_open(&(struct blk_options){ 0 }), 0);
	/* Function and capability layout as Linux sees it. */
	CHECK(tb.slot > 0);	/* slot 0 is the host bridge */
	CHECK_EQ(cfgr(4, 2) & 0x6, 0x6);
	CHECK_EQ(tb.msix_n, 2);	/* one queue + config */
	CHECK(tb.caps[2].mult > 0);
	CHECK_EQ(cc_r(NUM_QUEUES, 2), 1);
	/* Features: VERSION_1 plus what blk offers, all accepted and frozen. */
	CHECK(tb.features & (1ULL << VIRTIO_F_VERSION_1));
	CHECK(tb.features & (1ULL << VIRTIO_BLK_F_FLUSH));
	CHECK(!(tb.features & (1ULL << VIRTIO_BLK_F_RO)));
	CHECK_EQ(tb.vdev->driver_features, tb.features);
	/* The two vectors have distinct routes and distinct irqfds; the doorbell is queue 0's. */
	CHECK(tb.gsi[0] && tb.gsi[1] && tb.gsi[0] != tb.gsi[1]);
	CHECK_EQ(tb.kick_fd, tb.vdev->kick_fd[0]);
	CHECK_EQ(pba_qword(), 0);
	/* Device config through the device cfg structure, 4 bytes at a time. */
	CHECK(tb.caps[4].length >= sizeof(c));
	for (uint32_t o = 0; o < sizeof(c); o += 4) {
		uint32_t v = (uint32_t)mr(cap_addr(4, o), 4);

		memcpy(cp + o, &v, sizeof(c) - o < 4 ? sizeof(c) - o : 4);
	}
	CHECK_EQ(c.capacity, DISK_SIZE / 512);
	CHECK_EQ(c.num_queues, 1);
	CHECK_EQ(c.seg_max, VIRTQ_MAX_SEGS - 2);
	/* The device is live: an empty-queue doorbell does nothing, no interrupt. */
	CHECK(!eventfd_write(tb.kick_fd, 1));
	CHECK_EQ(fd_wait(tb.irq_fd[1], 50), 0);
	CHECK_EQ(cc_r(STATUS, 1), 0xf);
}

/* OUT a pattern, FLUSH, IN it back: compare with the source and with pread() of the file. */
static void body_rw_flush(int cache_host)
{
	static const struct { uint64_t sector; uint32_t len; unsigned int nseg; } io[] = {
		{ 0, 512, 1 }, { 8, 4096, 1 }, { 1000, 64 << 10, 3 }, { 2048, 1 << 20, 6 },
		{ DISK_SIZE / 512 - 8, 4096, 2 },
	};
	struct blk_options o = { .cache_host = cache_host };
	uint32_t ul;

	CHECK_EQ(tb_open(&o), 0);
	for (unsigned int i = 0; i < sizeof(io) / sizeof(io[0]); i++) {
		uint8_t *src = g(DATA_GPA(0), io[i].len), *dst = g(DATA_GPA(1), io[i].len);

		fill(src, io[i].len, 17 + i + 100 * (unsigned int)cache_host);
		CHECK_EQ(do_req(VIRTIO_BLK_T_OUT, io[i].sector, DATA_GPA(0), io[i].len, io[i].nseg,
				&ul), VIRTIO_BLK_S_OK);
		CHECK_EQ(ul, 1);
		CHECK_EQ(do_req(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, &ul), VIRTIO_BLK_S_OK);
		CHECK_EQ(ul, 1);
		CHECK(file_equals(io[i].sector * 512, src, io[i].len));
		memset(dst, 0x5a, io[i].len);
		CHECK_EQ(do_req(VIRTIO_BLK_T_IN, io[i].sector, DATA_GPA(1), io[i].len,
				io[i].nseg + 1, &ul), VIRTIO_BLK_S_OK);
		CHECK_EQ(ul, io[i].len + 1);
		CHECK(!memcmp(dst, src, io[i].len));
		CHECK(file_equals(io[i].sector * 512, dst, io[i].len));
	}
	/* Past the end: IOERR, and the device carries on. */
	CHECK_EQ(do_req(VIRTIO_BLK_T_IN, DISK_SIZE / 512, DATA_GPA(1), 512, 1, NULL),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(do_req(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
	CHECK_EQ(fd_count(tb.irq_fd[0]), 0);	/* and none on the config vector */
	CHECK(!(cc_r(STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET));
}

/* 32 requests published behind a single doorbell: all complete, each once. */
static void body_many_in_flight(int cache_host)
{
	const uint32_t n = 64 << 10;
	struct blk_options o = { .cache_host = cache_host };
	int seen[NSLOTS];
	unsigned int before;
	uint32_t id, l;

	CHECK_EQ(tb_open(&o), 0);
	for (int pass = 0; pass < 2; pass++) {
		uint32_t type = pass ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;

		for (unsigned int s = 0; s < NSLOTS; s++) {
			uint64_t buf = DATA_GPA(s) + (pass ? 0x80000 : 0);

			if (!pass)
				fill(g(buf, n), n, 300 + s);
			else
				memset(g(buf, n), 0, n);
			put_req(s, type, s * 256ULL, buf, n, 1 + s % 4);
		}
		before = tb.irqs;
		kick();
		memset(seen, 0, sizeof(seen));
		for (unsigned int i = 0; i < NSLOTS; i++) {
			CHECK_EQ(wait_used(&id, &l), 0);
			CHECK(id % DPS == 0 && id / DPS < NSLOTS);
			CHECK(!seen[id / DPS]);
			seen[id / DPS] = 1;
			CHECK_EQ(l, pass ? n + 1 : 1);
			CHECK_EQ(status_of(id / DPS), VIRTIO_BLK_S_OK);
		}
		CHECK(!used_pending());
		CHECK(irq_since(before));
	}
	for (unsigned int s = 0; s < NSLOTS; s++) {
		CHECK(file_equals(s * 256ULL * 512, g(DATA_GPA(s), n), n));
		CHECK(!memcmp(g(DATA_GPA(s) + 0x80000, n), g(DATA_GPA(s), n), n));
	}
}

static void body_read_only(void)
{
	struct blk_options o = { .read_only = 1 };
	const uint32_t n = 8192;
	uint8_t *pat = malloc(n);
	int ok;

	CHECK(pat);
	CHECK_EQ(tb_open(&o), 0);
	CHECK(tb.features & (1ULL << VIRTIO_BLK_F_RO));
	fill(pat, n, 11);
	ok = pwrite(tb.fd, pat, n, 4096) == (ssize_t)n && !fsync(tb.fd);
	if (ok) {
		memset(g(DATA_GPA(0), n), 0x55, n);
		ok = do_req(VIRTIO_BLK_T_OUT, 8, DATA_GPA(0), n, 2, NULL) == VIRTIO_BLK_S_IOERR &&
		     file_equals(4096, pat, n) &&
		     do_req(VIRTIO_BLK_T_IN, 8, DATA_GPA(1), n, 1, NULL) == VIRTIO_BLK_S_OK &&
		     !memcmp(g(DATA_GPA(1), n), pat, n) &&
		     do_req(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, NULL) == VIRTIO_BLK_S_OK;
	}
	free(pat);
	CHECK(ok);
	CHECK(!(cc_r(STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET));
}

static void body_get_id(void)
{
	struct blk_options o = { 0 };
	uint32_t ul;
	uint8_t *id;

	strcpy(o.serial, "kumo-e2e-serial");
	CHECK_EQ(tb_open(&o), 0);
	id = g(DATA_GPA(0), 32);
	memset(id, 0xaa, 32);
	CHECK_EQ(do_req(VIRTIO_BLK_T_GET_ID, 0, DATA_GPA(0), VIRTIO_BLK_ID_BYTES, 1, &ul),
		 VIRTIO_BLK_S_OK);
	CHECK_EQ(ul, VIRTIO_BLK_ID_BYTES + 1);
	CHECK(!memcmp(id, "kumo-e2e-serial", 15));
	for (int i = 15; i < VIRTIO_BLK_ID_BYTES; i++)
		CHECK_EQ(id[i], 0);
	CHECK_EQ(id[VIRTIO_BLK_ID_BYTES], 0xaa);	/* nothing past the buffer */
}

/*
 * A chain whose data descriptor points outside guest RAM: the device sets NEEDS_RESET and
 * raises the config vector. The driver resets, re-initialises from scratch, and I/O works.
 */
static void body_malformed_chain_reset(void)
{
	const uint32_t n = 4096;
	uint64_t routes_before;
	uint32_t ul;

	CHECK_EQ(tb_open(&(struct blk_options){ 0 }), 0);
	fill(g(DATA_GPA(0), n), n, 5);
	CHECK_EQ(do_req(VIRTIO_BLK_T_OUT, 0, DATA_GPA(0), n, 1, NULL), VIRTIO_BLK_S_OK);
	CHECK_EQ(fd_count(tb.irq_fd[0]), 0);
	log_level = LOG_ERR;	/* the device warns about the bad ring, as it should */
	put_req(1, VIRTIO_BLK_T_IN, 0, 1ULL << 40, n, 1);
	kick();
	CHECK(fd_wait(tb.irq_fd[0], TIMEOUT_MS) >= 1);	/* config interrupt */
	CHECK(cc_r(STATUS, 1) & VIRTIO_STATUS_NEEDS_RESET);
	CHECK_EQ(cc_r(STATUS, 1) & 0xf, 0xf);
	CHECK_EQ(status_of(1), 0xee);	/* the bad request was not completed */
	CHECK_EQ(__atomic_load_n(&used16()[1], __ATOMIC_ACQUIRE), 1);
	/* Further doorbells are ignored while broken. */
	put_req(2, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0);
	CHECK(!eventfd_write(tb.kick_fd, 1));
	usleep(20000);
	CHECK_EQ(__atomic_load_n(&used16()[1], __ATOMIC_ACQUIRE), 1);

	/* Reset: device_status reads 0 and the queue is gone. */
	cc_w(STATUS, 1, 0);
	CHECK_EQ(cc_r(STATUS, 1), 0);
	cc_w(Q_SELECT, 2, 0);
	CHECK_EQ(cc_r(Q_ENABLE, 2), 0);
	CHECK_EQ(cc_r(MSIX_CONFIG, 2), 0xffff);
	(void)fd_count(tb.irq_fd[1]);
	routes_before = (uint64_t)tb.fake.nroutes;
	/* Full re-initialisation, as after a driver reload. */
	CHECK_EQ(tb_bring_up(), 0);
	CHECK_EQ(tb.fake.nroutes, routes_before);	/* same GSIs, re-used */
	fill(g(DATA_GPA(0), n), n, 6);
	CHECK_EQ(do_req(VIRTIO_BLK_T_OUT, 16, DATA_GPA(0), n, 1, &ul), VIRTIO_BLK_S_OK);
	CHECK_EQ(do_req(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
	CHECK(file_equals(16 * 512, g(DATA_GPA(0), n), n));
	memset(g(DATA_GPA(1), n), 0, n);
	CHECK_EQ(do_req(VIRTIO_BLK_T_IN, 16, DATA_GPA(1), n, 1, &ul), VIRTIO_BLK_S_OK);
	CHECK_EQ(ul, n + 1);
	CHECK(!memcmp(g(DATA_GPA(1), n), g(DATA_GPA(0), n), n));
	CHECK_EQ(cc_r(STATUS, 1), 0xf);
	CHECK_EQ(fd_count(tb.irq_fd[0]), 0);
}

/* Masking vector 1 holds its interrupt in the PBA; unmasking delivers it. */
static void body_msix_mask(void)
{
	const uint32_t n = 4096;
	struct timespec t0, t;
	uint32_t id, l;

	CHECK_EQ(tb_open(&(struct blk_options){ 0 }), 0);
	CHECK_EQ(pba_qword(), 0);
	mw(msix_entry(1, 12), 4, 1);
	CHECK_EQ(mr(msix_entry(1, 12), 4), 1);
	put_req(0, VIRTIO_BLK_T_IN, 0, DATA_GPA(0), n, 1);
	kick();
	/* No interrupt can come: watch the used ring and the PBA (hang guard only). */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (used_pending() && (pba_qword() & 2))
			break;
		clock_gettime(CLOCK_MONOTONIC, &t);
		CHECK((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 <
		      TIMEOUT_MS);
		usleep(200);
	}
	CHECK_EQ(pba_qword(), 2);
	CHECK(!fd_signalled(tb.irq_fd[1]));
	CHECK_EQ(fd_wait(tb.irq_fd[1], 50), 0);
	CHECK(!fd_signalled(tb.irq_fd[0]));
	take_used(&id, &l);
	CHECK_EQ(id, 0);
	CHECK_EQ(l, n + 1);
	CHECK_EQ(status_of(0), VIRTIO_BLK_S_OK);
	/* Unmask: the pending interrupt arrives on vector 1's irqfd, the PBA bit clears. */
	mw(msix_entry(1, 12), 4, 0);
	CHECK_EQ(fd_wait(tb.irq_fd[1], TIMEOUT_MS), 1);
	CHECK_EQ(pba_qword(), 0);
	/* And normal delivery resumes (do_req insists on the interrupt). */
	CHECK_EQ(do_req(VIRTIO_BLK_T_IN, 8, DATA_GPA(0), n, 1, NULL), VIRTIO_BLK_S_OK);
	CHECK_EQ(pba_qword(), 0);
	CHECK_EQ(fd_count(tb.irq_fd[0]), 0);
}

#define E2E(name, call)                                                               \
	static void name(void)                                                        \
	{                                                                             \
		call;                                                                 \
		tb_teardown();                                                        \
	}

E2E(test_e2e_enumerate_and_bring_up, body_enumerate_and_bring_up())
E2E(test_e2e_rw_flush_cache_none, body_rw_flush(0))
E2E(test_e2e_rw_flush_cache_host, body_rw_flush(1))
E2E(test_e2e_32_in_flight_cache_none, body_many_in_flight(0))
E2E(test_e2e_32_in_flight_cache_host, body_many_in_flight(1))
E2E(test_e2e_read_only_ioerr, body_read_only())
E2E(test_e2e_get_id_serial, body_get_id())
E2E(test_e2e_malformed_chain_needs_reset_then_reinit, body_malformed_chain_reset())
E2E(test_e2e_msix_mask_holds_interrupt, body_msix_mask())

TEST_MAIN(TEST(test_e2e_enumerate_and_bring_up), TEST(test_e2e_rw_flush_cache_none),
	  TEST(test_e2e_rw_flush_cache_host), TEST(test_e2e_32_in_flight_cache_none),
	  TEST(test_e2e_32_in_flight_cache_host), TEST(test_e2e_read_only_ioerr),
	  TEST(test_e2e_get_id_serial), TEST(test_e2e_malformed_chain_needs_reset_then_reinit),
	  TEST(test_e2e_msix_mask_holds_interrupt))
