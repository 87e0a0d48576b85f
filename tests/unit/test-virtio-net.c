/*
 * virtio-net without KVM, PCI or a tap: the test plays the Linux driver (rings in a guest_mem,
 * kicks through vdev->kick_fd[], a fake transport counting interrupts) and the network (the
 * other end of a SOCK_SEQPACKET socketpair per queue pair, carrying the 12-byte virtio-net
 * header before each frame as a tap with IFF_VNET_HDR does). Packets both ways, mergeable
 * receive buffers, the receive filter, the control queue, hostile chains and headers, link
 * down, save/load with the announce. A real tap needs CAP_NET_ADMIN: tests/integration/test-net.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/virtio-net.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "tests/state-store.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define QSZ 64
#define MAXQ (2 * 2 + 1)
#define F_NEXT 1
#define F_WRITE 2
#define BUFSZ 1000

struct tq {
	unsigned int q;
	uint64_t desc, avail, used, bufs;
	uint16_t avail_idx, last_used;
	uint16_t next_free;
};

struct tdrv {
	struct guest_mem mem;
	struct dev_env env;
	struct virtio_dev *vdev;
	unsigned int pairs, nq;
	struct tq tq[MAXQ];
	int irq_fd[MAXQ], cfg_fd;
	int net[2];			/* our ends of the socketpairs (the network) */
	uint64_t features;
};

static struct tdrv *cur;

static void fake_notify_queue(struct virtio_dev *vdev, unsigned int q)
{
	if (q < MAXQ && eventfd_write(cur->irq_fd[q], 1) < 0)
		abort();
}

static void fake_notify_config(struct virtio_dev *vdev)
{
	if (eventfd_write(cur->cfg_fd, 1) < 0)
		abort();
}

static const struct virtio_transport_ops fake_tops = {
	.notify_queue = fake_notify_queue,
	.notify_config = fake_notify_config,
};

static void *hva(struct tdrv *d, uint64_t gpa, uint64_t len)
{
	void *p = mm_gpa_to_hva(&d->mem, gpa, len);

	if (!p)
		abort();
	return p;
}

static void write_desc(struct tdrv *d, struct tq *t, unsigned int i, uint64_t addr, uint32_t len,
		       uint16_t flags, uint16_t next)
{
	uint8_t *p = hva(d, t->desc + 16 * i, 16);

	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void kick(struct tdrv *d, unsigned int q)
{
	if (eventfd_write(d->vdev->kick_fd[q], 1) < 0)
		abort();
}

/* Publish a chain; kick as Linux does: with event idx only when avail_event was crossed. */
static void publish(struct tdrv *d, struct tq *t, uint16_t head, int do_kick)
{
	uint16_t *a = hva(d, t->avail, 6 + 2 * QSZ);
	uint16_t *u = hva(d, t->used, 6 + 8 * QSZ);
	uint16_t old = t->avail_idx, ev;

	a[2 + (t->avail_idx % QSZ)] = head;
	t->avail_idx++;
	__atomic_store_n(&a[1], t->avail_idx, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	ev = __atomic_load_n(&u[2 + 4 * QSZ], __ATOMIC_RELAXED);
	if (do_kick && (!(d->features & 1ULL << VIRTIO_F_EVENT_IDX) ||
			(uint16_t)(t->avail_idx - ev - 1) < (uint16_t)(t->avail_idx - old)))
		kick(d, t->q);
}

/* A chain of n segments of the given lengths from free descriptors (round robin). */
static uint16_t add_chain(struct tdrv *d, struct tq *t, const uint32_t *lens,
			  const void *const *data, unsigned int n, int writable, int do_kick)
{
	uint16_t head = t->next_free;

	for (unsigned int k = 0; k < n; k++) {
		unsigned int i = (head + k) % QSZ;
		uint64_t buf = t->bufs + (uint64_t)i * 4096;

		if (data && data[k])
			memcpy(hva(d, buf, lens[k]), data[k], lens[k]);
		write_desc(d, t, i, buf, lens[k], (writable ? F_WRITE : 0) |
			   (k + 1 < n ? F_NEXT : 0), k + 1 < n ? (i + 1) % QSZ : 0);
	}
	t->next_free = (uint16_t)((head + n) % QSZ);
	publish(d, t, head, do_kick);
	return head;
}

static int take_used(struct tdrv *d, struct tq *t, uint32_t *id, uint32_t *len)
{
	uint16_t *u = hva(d, t->used, 6 + 8 * QSZ);
	uint32_t *e;

	if (__atomic_load_n(&u[1], __ATOMIC_ACQUIRE) == t->last_used)
		return 0;
	e = (uint32_t *)(u + 2) + 2 * (t->last_used % QSZ);
	*id = e[0];
	*len = e[1];
	t->last_used++;
	return 1;
}

static int wait_used(struct tdrv *d, struct tq *t, uint32_t *id, uint32_t *len, int ms)
{
	for (int waited = 0; waited <= ms; waited += 5) {
		if (take_used(d, t, id, len))
			return 1;
		usleep(5000);
	}
	return take_used(d, t, id, len);
}

static uint8_t *buf_of(struct tdrv *d, struct tq *t, uint32_t desc)
{
	return hva(d, t->bufs + (uint64_t)desc * 4096, 4096);
}

static void setup_rings(struct tdrv *d)
{
	for (unsigned int q = 0; q < d->nq; q++) {
		struct tq *t = &d->tq[q];
		struct virtq *vq = &d->vdev->vqs[q];
		uint64_t base = 0x100000 + (uint64_t)q * 0x100000;

		memset(t, 0, sizeof(*t));
		t->q = q;
		t->desc = base;
		t->avail = base + 0x1000;
		t->used = base + 0x2000;
		t->bufs = base + 0x10000;
		memset(hva(d, base, 0x3000), 0, 0x3000);
		vq->size = QSZ;
		vq->desc_gpa = t->desc;
		vq->avail_gpa = t->avail;
		vq->used_gpa = t->used;
		virtq_reset(vq);
		vq->event_idx = !!(d->features & 1ULL << VIRTIO_F_EVENT_IDX);
		vq->indirect = 0;
		vq->ready = 1;
	}
}

static uint64_t base_features(void)
{
	return 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_NET_F_STATUS |
	       1ULL << VIRTIO_NET_F_CTRL_VQ | 1ULL << VIRTIO_NET_F_CTRL_RX |
	       1ULL << VIRTIO_NET_F_CTRL_MAC_ADDR | 1ULL << VIRTIO_NET_F_GUEST_ANNOUNCE |
	       1ULL << VIRTIO_NET_F_CSUM | 1ULL << VIRTIO_NET_F_GUEST_CSUM |
	       1ULL << VIRTIO_NET_F_HOST_TSO4;
}

static int driver_start(struct tdrv *d)
{
	d->vdev->driver_features = d->features;
	setup_rings(d);
	d->vdev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			  VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	return virtio_dev_activate(d->vdev);
}

/* A device on new socketpairs (the driver has not touched it). */
static int new_device(struct tdrv *d)
{
	struct net_options o;
	char err[100];
	int fds[2];

	if (virtio_net_parse_option(d->pairs > 1 ? "tap=t0,mac=52:54:00:12:34:56,queues=2" :
				    "tap=t0,mac=52:54:00:12:34:56", &o, err, sizeof(err)))
		return -1;
	for (unsigned int p = 0; p < d->pairs; p++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
			return -1;
		d->net[p] = sv[0];
		fds[p] = sv[1];
	}
	if (virtio_net_create_fds(&d->env, &o, fds, d->pairs, &d->vdev))
		return -1;
	d->vdev->tops = &fake_tops;
	d->vdev->device_features |= 1ULL << VIRTIO_F_VERSION_1;	/* as the transport does */
	return 0;
}

static int setup(struct tdrv *d, unsigned int pairs, uint64_t features)
{
	memset(d, 0, sizeof(*d));
	cur = d;
	log_level = LOG_ERR;
	d->net[0] = d->net[1] = -1;
	d->pairs = pairs;
	d->nq = 2 * pairs + 1;
	if (mm_init(&d->mem, 64 << 20))
		return -1;
	d->env.mem = &d->mem;
	for (unsigned int q = 0; q < MAXQ; q++)
		d->irq_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	d->cfg_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (new_device(d))
		return -1;
	d->features = features;
	return driver_start(d);
}

static void teardown(struct tdrv *d)
{
	if (d->vdev)
		virtio_net_destroy(d->vdev);
	for (unsigned int q = 0; q < MAXQ; q++)
		close(d->irq_fd[q]);
	close(d->cfg_fd);
	for (int p = 0; p < 2; p++)
		if (d->net[p] >= 0)
			close(d->net[p]);
	mm_free(&d->mem);
}

static const uint8_t our_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

/* An Ethernet frame to dst of len bytes with a recognisable payload. */
static void make_frame(uint8_t *f, size_t len, const uint8_t *dst, uint8_t seed)
{
	memcpy(f, dst, 6);
	memset(f + 6, 0xaa, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(seed + i * 7);
}

/* The network sends one frame with a header to pair p. */
static int net_send(struct tdrv *d, unsigned int p, const struct virtio_net_hdr *h,
		    const uint8_t *f, size_t len)
{
	struct iovec iov[2] = { { (void *)h, NET_HDR_LEN }, { (void *)f, len } };

	return writev(d->net[p], iov, 2) == (ssize_t)(NET_HDR_LEN + len) ? 0 : -1;
}

/* One packet from the device on pair p: its length, or -1 after ms. */
static ssize_t net_recv(struct tdrv *d, unsigned int p, uint8_t *buf, size_t len, int ms)
{
	struct pollfd pfd = { .fd = d->net[p], .events = POLLIN };

	if (poll(&pfd, 1, ms) <= 0)
		return -1;
	return read(d->net[p], buf, len);
}

static void add_rx_bufs(struct tdrv *d, unsigned int q, int n, uint32_t sz)
{
	for (int i = 0; i < n; i++)
		add_chain(d, &d->tq[q], &sz, NULL, 1, 1, i == n - 1);
}

/* One control command (the command, then the ack byte); the ack, or -1 if not used. */
static int ctrl(struct tdrv *d, const uint8_t *cmd, uint32_t len)
{
	struct tq *t = &d->tq[d->nq - 1];
	unsigned int i0 = t->next_free, i1 = (i0 + 1) % QSZ;
	uint64_t b0 = t->bufs + (uint64_t)i0 * 4096, b1 = t->bufs + (uint64_t)i1 * 4096;
	uint32_t id, ulen;

	t->next_free = (uint16_t)((i0 + 2) % QSZ);
	memcpy(hva(d, b0, len), cmd, len);
	*(uint8_t *)hva(d, b1, 1) = 0xee;
	write_desc(d, t, i0, b0, len, F_NEXT, (uint16_t)i1);
	write_desc(d, t, i1, b1, 1, F_WRITE, 0);
	publish(d, t, (uint16_t)i0, 1);
	if (!wait_used(d, t, &id, &ulen, 2000) || id != i0 || ulen != 1)
		return -1;
	return *(uint8_t *)hva(d, b1, 1);
}

static uint16_t cfg_status(struct tdrv *d)
{
	struct virtio_net_config c;

	d->vdev->ops->config_read(d->vdev, 0, &c, sizeof(c));
	return c.status;
}

static int wait_cfg_irq(struct tdrv *d, int ms)
{
	struct pollfd pfd = { .fd = d->cfg_fd, .events = POLLIN };
	eventfd_t v;

	if (poll(&pfd, 1, ms) <= 0)
		return 0;
	return eventfd_read(d->cfg_fd, &v) == 0;
}

static int needs_reset(struct tdrv *d)
{
	for (int i = 0; i < 200; i++) {
		if (__atomic_load_n(&d->vdev->status, __ATOMIC_SEQ_CST) & VIRTIO_STATUS_NEEDS_RESET)
			return 1;
		usleep(5000);
	}
	return 0;
}

/* ---- tests ---- */

static void test_options(void)
{
	static const struct { const char *arg; int ok; } cases[] = {
		{ "tap=kt0", 1 }, { "tap=kt0,queues=16,vhost=off", 1 },
		{ "tap=kt0,mac=02:00:00:00:00:01,vhost=on", 1 },
		{ "", 0 }, { "mac=02:00:00:00:00:01", 0 }, { "tap=", 0 },
		{ "tap=a/b", 0 }, { "tap=0123456789abcdef", 0 }, { "tap=k,queues=0", 0 },
		{ "tap=k,queues=17", 0 }, { "tap=k,queues=2x", 0 }, { "tap=k,vhost=maybe", 0 },
		{ "tap=k,mac=01:00:00:00:00:01", 0 }, { "tap=k,mac=00:00:00:00:00:00", 0 },
		{ "tap=k,mac=02:00:00:00:00", 0 }, { "tap=k,mac=02:00:00:00:00:01:02", 0 },
		{ "tap=k,colour=blue", 0 }, { "tap=k,queues", 0 },
	};
	struct net_options o, o2;
	char err[200];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = virtio_net_parse_option(cases[i].arg, &o, err, sizeof(err));

		if ((ret == 0) != cases[i].ok)
			fprintf(stderr, "  '%s': %s\n", cases[i].arg, ret ? err : "accepted");
		CHECK((ret == 0) == cases[i].ok);
	}
	/* The default MAC is locally administered, unicast and stable per tap name. */
	CHECK(!virtio_net_parse_option("tap=kt0", &o, err, sizeof(err)));
	CHECK(!virtio_net_parse_option("tap=kt0,queues=2", &o2, err, sizeof(err)));
	CHECK(!memcmp(o.mac, o2.mac, 6));
	CHECK(!(o.mac[0] & 1));
	CHECK_EQ(o.queues, 1);
	CHECK_EQ(o.vhost, -1);
	CHECK_EQ(o2.queues, 2);
}

static void test_hdr_check(void)
{
	const uint64_t f = 1ULL << VIRTIO_NET_F_CSUM | 1ULL << VIRTIO_NET_F_HOST_TSO4;
	static const struct {
		struct virtio_net_hdr h;
		uint64_t features;
		size_t len;
		int ok;
	} cases[] = {
		{ { 0 }, 0, 60, 1 },
		{ { 0 }, 0, 13, 0 },				/* shorter than Ethernet */
		{ { 0 }, 0, 70000, 0 },
		{ { .flags = 1, .csum_start = 34, .csum_offset = 16 }, f, 60, 1 },
		{ { .flags = 1, .csum_start = 34, .csum_offset = 16 }, 0, 60, 0 },
		{ { .flags = 1, .csum_start = 50, .csum_offset = 16 }, f, 60, 0 },
		{ { .flags = 1, .csum_start = 0xffff, .csum_offset = 0xffff }, f, 60, 0 },
		{ { .flags = 8 }, f, 60, 0 },
		{ { .flags = 1, .gso_type = 1, .gso_size = 1448, .hdr_len = 54, .csum_start = 34,
		    .csum_offset = 16 }, f, 9000, 1 },
		{ { .flags = 1, .gso_type = 4, .gso_size = 1448, .hdr_len = 54, .csum_start = 34,
		    .csum_offset = 16 }, f, 9000, 0 },		/* TSO6 not negotiated */
		{ { .flags = 1, .gso_type = 3, .gso_size = 1448, .csum_start = 34 }, f, 9000, 0 },
		{ { .flags = 1, .gso_type = 1, .gso_size = 0, .csum_start = 34 }, f, 9000, 0 },
		{ { .gso_type = 1, .gso_size = 1448 }, f, 9000, 0 },	/* GSO without csum */
		{ { .flags = 1, .gso_type = 0x81, .gso_size = 1448, .csum_start = 34 }, f, 9000, 0 },
		{ { .gso_type = 0x80 }, f, 60, 0 },
		{ { .flags = 1, .gso_type = 1, .gso_size = 1448, .hdr_len = 9001,
		    .csum_start = 34 }, f, 9000, 0 },
		{ { .gso_type = 7 }, f, 60, 0 },
	};
	const char *why;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = virtio_net_hdr_check(&cases[i].h, cases[i].features, cases[i].len, &why);

		if ((ret == 0) != cases[i].ok)
			fprintf(stderr, "  case %zu: %s\n", i, why ? why : "accepted");
		CHECK((ret == 0) == cases[i].ok);
		CHECK(ret == 0 || why);
	}
}

static void test_ctrl_parse(void)
{
	const uint64_t f = 1ULL << VIRTIO_NET_F_CTRL_RX | 1ULL << VIRTIO_NET_F_CTRL_MAC_ADDR |
			   1ULL << VIRTIO_NET_F_MQ | 1ULL << VIRTIO_NET_F_GUEST_ANNOUNCE;
	struct net_ctrl_state st, before;
	uint8_t tab[2 + 4 + 12 + 4 + 6] = { 1, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8,
					    1, 0, 0, 0, 0x33, 0x33, 0, 0, 0, 1 };
	static const uint8_t promisc_off[] = { 0, 0, 0 }, allmulti_on[] = { 0, 1, 1 };
	static const uint8_t pairs2[] = { 4, 0, 2, 0 }, pairs3[] = { 4, 0, 3, 0 },
			     pairs0[] = { 4, 0, 0, 0 };
	static const uint8_t addr[] = { 1, 1, 2, 0, 0, 0, 0, 7 }, ack[] = { 3, 0 };
	static const uint8_t bad_class[] = { 9, 0 }, bad_len[] = { 0, 0, 1, 1 },
			     bad_val[] = { 0, 0, 2 }, vlan[] = { 2, 0, 1, 0 };
	uint8_t big_table[2 + 4 + 65 * 6 + 4] = { 1, 0, 65 };
	uint8_t lying[2 + 4 + 4] = { 1, 0, 0xff, 0xff, 0xff, 0xff };

	virtio_net_ctrl_reset(&st, our_mac);
	CHECK_EQ(st.promisc, 1);
	CHECK_EQ(st.curr_pairs, 1);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, promisc_off, 3), VIRTIO_NET_OK);
	CHECK_EQ(st.promisc, 0);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, allmulti_on, 3), VIRTIO_NET_OK);
	CHECK_EQ(st.allmulti, 1);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, tab, sizeof(tab)), VIRTIO_NET_OK);
	CHECK_EQ(st.n_uni, 2);
	CHECK_EQ(st.n_multi, 1);
	CHECK_EQ(st.uni[1][5], 8);
	CHECK_EQ(st.multi[0][0], 0x33);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, pairs2, 4), VIRTIO_NET_OK);
	CHECK_EQ(st.curr_pairs, 2);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, addr, sizeof(addr)), VIRTIO_NET_OK);
	CHECK_EQ(st.mac[5], 7);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, ack, 2), VIRTIO_NET_OK);
	CHECK_EQ(st.announce_acked, 1);
	/* Too many entries: overflow (accept all of that kind), no entries kept. */
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, big_table, sizeof(big_table)), VIRTIO_NET_OK);
	CHECK_EQ(st.uni_overflow, 1);
	CHECK_EQ(st.n_uni, 0);

	/* Refusals change nothing. */
	before = st;
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, pairs3, 4), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, pairs0, 4), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, bad_class, 2), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, bad_len, 4), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, bad_val, 3), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, vlan, 4), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, lying, sizeof(lying)), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, tab, sizeof(tab) - 1), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, f, 2, tab, 1), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, 0, 2, promisc_off, 3), VIRTIO_NET_ERR);
	CHECK_EQ(virtio_net_ctrl_apply(&st, 0, 2, pairs2, 4), VIRTIO_NET_ERR);
	CHECK(!memcmp(&st, &before, sizeof(st)));
}

static void test_rx_filter(void)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t other[6] = { 0x52, 0x54, 0, 0, 0, 9 };
	static const uint8_t mcast[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	static const uint8_t mcast2[6] = { 0x33, 0x33, 0, 0, 0, 2 };
	struct net_ctrl_state st;

	virtio_net_ctrl_reset(&st, our_mac);
	CHECK(virtio_net_rx_accept(&st, other));	/* promiscuous until the driver says */
	st.promisc = 0;
	CHECK(virtio_net_rx_accept(&st, our_mac));
	CHECK(virtio_net_rx_accept(&st, bcast));
	CHECK(!virtio_net_rx_accept(&st, other));
	CHECK(!virtio_net_rx_accept(&st, mcast));
	memcpy(st.multi[0], mcast, 6);
	st.n_multi = 1;
	memcpy(st.uni[0], other, 6);
	st.n_uni = 1;
	CHECK(virtio_net_rx_accept(&st, mcast));
	CHECK(!virtio_net_rx_accept(&st, mcast2));
	CHECK(virtio_net_rx_accept(&st, other));
	st.allmulti = 1;
	CHECK(virtio_net_rx_accept(&st, mcast2));
}

/* TX: a header and a frame over three descriptors reach the network as one packet. */
static void test_tx(void)
{
	struct tdrv d;
	struct virtio_net_hdr h = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = 34,
				    .csum_offset = 6 };
	uint8_t f[600], got[2000];
	uint32_t lens[3] = { NET_HDR_LEN, 100, 500 }, id, len;
	const void *data[3] = { &h, f, f + 100 };
	ssize_t n;

	CHECK(!setup(&d, 1, base_features()));
	make_frame(f, sizeof(f), our_mac, 1);
	add_chain(&d, &d.tq[1], lens, data, 3, 0, 1);
	n = net_recv(&d, 0, got, sizeof(got), 2000);
	CHECK_EQ(n, NET_HDR_LEN + sizeof(f));
	CHECK(!memcmp(got, &h, NET_HDR_LEN));
	CHECK(!memcmp(got + NET_HDR_LEN, f, sizeof(f)));
	CHECK(wait_used(&d, &d.tq[1], &id, &len, 2000));
	CHECK_EQ(id, 0);
	/* A burst larger than the per-round budget all goes out. */
	for (int i = 0; i < 60; i++) {
		uint32_t l2[2] = { NET_HDR_LEN, 60 };
		const void *d2[2] = { &h, f };

		add_chain(&d, &d.tq[1], l2, d2, 2, 0, 1);
		while (wait_used(&d, &d.tq[1], &id, &len, 0))
			;
	}
	for (int i = 0; i < 60; i++)
		CHECK_EQ(net_recv(&d, 0, got, sizeof(got), 2000), NET_HDR_LEN + 60);
	teardown(&d);
}

/* RX with mergeable buffers: a frame over two 1000-byte buffers, num_buffers 2; a small one
 * in one buffer with the other gathered buffer given back. */
static void test_rx_mergeable(void)
{
	struct tdrv d;
	struct virtio_net_hdr h = { .flags = VIRTIO_NET_HDR_F_DATA_VALID };
	struct virtio_net_hdr *gh;
	uint8_t f[1400], got[2 * BUFSZ];
	uint32_t id, len, id2, len2;

	CHECK(!setup(&d, 1, base_features() | 1ULL << VIRTIO_NET_F_MRG_RXBUF));
	make_frame(f, sizeof(f), our_mac, 3);
	add_rx_bufs(&d, 0, 8, BUFSZ);
	CHECK(!net_send(&d, 0, &h, f, sizeof(f)));
	CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	CHECK(wait_used(&d, &d.tq[0], &id2, &len2, 2000));
	CHECK_EQ(len, BUFSZ);
	CHECK_EQ(len2, NET_HDR_LEN + sizeof(f) - BUFSZ);
	gh = (struct virtio_net_hdr *)buf_of(&d, &d.tq[0], id);
	CHECK_EQ(gh->num_buffers, 2);
	CHECK_EQ(gh->flags, VIRTIO_NET_HDR_F_DATA_VALID);
	memcpy(got, buf_of(&d, &d.tq[0], id), BUFSZ);
	memcpy(got + BUFSZ, buf_of(&d, &d.tq[0], id2), len2);
	CHECK(!memcmp(got + NET_HDR_LEN, f, sizeof(f)));

	CHECK(!net_send(&d, 0, &h, f, 100));
	CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	CHECK_EQ(len, NET_HDR_LEN + 100);
	CHECK_EQ(((struct virtio_net_hdr *)buf_of(&d, &d.tq[0], id))->num_buffers, 1);
	CHECK_EQ(id, 2);
	CHECK(!net_send(&d, 0, &h, f, 100));
	CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	CHECK_EQ(id, 3);	/* the buffer gathered and not used came back first */
	teardown(&d);
}

/* Frames wait in the network until the guest gives buffers; the filter drops others' frames. */
static void test_rx_wait_and_filter(void)
{
	static const uint8_t other[6] = { 0x52, 0x54, 0, 0, 0, 9 };
	static const uint8_t promisc_off[] = { 0, 0, 0 };
	struct tdrv d;
	struct virtio_net_hdr h = { 0 };
	uint8_t f[200];
	uint32_t id, len;

	CHECK(!setup(&d, 1, base_features()));
	make_frame(f, sizeof(f), our_mac, 5);
	CHECK(!net_send(&d, 0, &h, f, sizeof(f)));
	usleep(50000);
	CHECK(!take_used(&d, &d.tq[0], &id, &len));
	add_rx_bufs(&d, 0, 4, 2048);
	CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	CHECK_EQ(len, NET_HDR_LEN + sizeof(f));
	CHECK(!memcmp(buf_of(&d, &d.tq[0], id) + NET_HDR_LEN, f, sizeof(f)));
	CHECK_EQ(((struct virtio_net_hdr *)buf_of(&d, &d.tq[0], id))->num_buffers, 1);

	CHECK_EQ(ctrl(&d, promisc_off, 3), VIRTIO_NET_OK);
	make_frame(f, sizeof(f), other, 6);
	CHECK(!net_send(&d, 0, &h, f, sizeof(f)));
	make_frame(f, sizeof(f), our_mac, 7);
	CHECK(!net_send(&d, 0, &h, f, sizeof(f)));
	CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	CHECK_EQ(buf_of(&d, &d.tq[0], id)[NET_HDR_LEN + 20], (uint8_t)(7 + 20 * 7));
	CHECK(!wait_used(&d, &d.tq[0], &id, &len, 50));
	teardown(&d);
}

/* The control queue through the device: MQ with two pairs, refusals, a malformed command. */
static void test_ctrl_queue(void)
{
	static const uint8_t pairs2[] = { 4, 0, 2, 0 }, pairs5[] = { 4, 0, 5, 0 };
	static const uint8_t addr[] = { 1, 1, 2, 0, 0, 0, 0, 7 };
	struct tdrv d;
	struct virtio_net_hdr h = { 0 };
	uint8_t f[100], got[300];
	uint32_t id, len;

	CHECK(!setup(&d, 2, base_features() | 1ULL << VIRTIO_NET_F_MQ));
	CHECK_EQ(d.vdev->nqueues, 5);
	CHECK(d.vdev->device_features & (1ULL << VIRTIO_NET_F_MQ));
	/* Pair 1 is not used before VQ_PAIRS_SET. */
	add_rx_bufs(&d, 2, 4, 2048);
	make_frame(f, sizeof(f), our_mac, 9);
	CHECK(!net_send(&d, 1, &h, f, sizeof(f)));
	CHECK(!wait_used(&d, &d.tq[2], &id, &len, 50));
	CHECK_EQ(ctrl(&d, pairs2, 4), VIRTIO_NET_OK);
	CHECK_EQ(virtio_net_ctrl_state(d.vdev)->curr_pairs, 2);
	kick(&d, 2);
	CHECK(wait_used(&d, &d.tq[2], &id, &len, 2000));
	CHECK_EQ(len, NET_HDR_LEN + sizeof(f));
	/* TX on pair 1 goes to its own fd. */
	{
		uint32_t l2[2] = { NET_HDR_LEN, sizeof(f) };
		const void *d2[2] = { &h, f };

		add_chain(&d, &d.tq[3], l2, d2, 2, 0, 1);
		CHECK_EQ(net_recv(&d, 1, got, sizeof(got), 2000), NET_HDR_LEN + sizeof(f));
	}
	CHECK_EQ(ctrl(&d, pairs5, 4), VIRTIO_NET_ERR);
	CHECK_EQ(ctrl(&d, addr, sizeof(addr)), VIRTIO_NET_OK);
	CHECK_EQ(virtio_net_ctrl_state(d.vdev)->mac[5], 7);
	{
		struct virtio_net_config c;

		d.vdev->ops->config_read(d.vdev, 0, &c, sizeof(c));
		CHECK_EQ(c.mac[5], 7);
		CHECK_EQ(c.max_virtqueue_pairs, 2);
		CHECK_EQ(c.status, VIRTIO_NET_S_LINK_UP);
	}
	/* A command without a writable ack byte: the device needs a reset. */
	{
		uint32_t l1 = 4;
		const void *d1 = pairs2;

		add_chain(&d, &d.tq[4], &l1, &d1, 1, 0, 1);
		CHECK(needs_reset(&d));
	}
	teardown(&d);
}

/* Hostile transmit chains: a header the features do not allow, a chain without a header. */
static void test_tx_refusals(void)
{
	struct virtio_net_hdr tso6 = { .flags = 1, .gso_type = VIRTIO_NET_HDR_GSO_TCPV6,
				       .gso_size = 1400, .csum_start = 54, .csum_offset = 16 };
	uint8_t f[200], got[300];
	struct tdrv d;

	make_frame(f, sizeof(f), our_mac, 1);
	CHECK(!setup(&d, 1, base_features()));
	{
		uint32_t l[2] = { NET_HDR_LEN, sizeof(f) };
		const void *dd[2] = { &tso6, f };

		add_chain(&d, &d.tq[1], l, dd, 2, 0, 1);
	}
	CHECK(needs_reset(&d));
	CHECK_EQ(net_recv(&d, 0, got, sizeof(got), 50), -1);
	teardown(&d);

	CHECK(!setup(&d, 1, base_features()));
	{
		uint32_t l = 8;
		const void *dd = f;

		add_chain(&d, &d.tq[1], &l, &dd, 1, 0, 1);
	}
	CHECK(needs_reset(&d));
	teardown(&d);

	/* A receive buffer the device could only read from. */
	CHECK(!setup(&d, 1, base_features()));
	{
		uint32_t l = 2048;

		add_chain(&d, &d.tq[0], &l, NULL, 1, 0, 1);
		CHECK(!net_send(&d, 0, &tso6, f, sizeof(f)));
	}
	CHECK(needs_reset(&d));
	teardown(&d);
}

/* The network end goes away: link down with a config interrupt, the device keeps going. */
static void test_link_down(void)
{
	struct tdrv d;
	struct virtio_net_hdr h = { 0 };
	uint8_t f[100];
	uint32_t l[2] = { NET_HDR_LEN, sizeof(f) }, id, len;
	const void *dd[2] = { &h, f };

	CHECK(!setup(&d, 1, base_features()));
	add_rx_bufs(&d, 0, 4, 2048);
	CHECK_EQ(cfg_status(&d), VIRTIO_NET_S_LINK_UP);
	close(d.net[0]);
	d.net[0] = -1;
	CHECK(wait_cfg_irq(&d, 2000));
	CHECK_EQ(cfg_status(&d) & VIRTIO_NET_S_LINK_UP, 0);
	/* Transmits are dropped and completed. */
	make_frame(f, sizeof(f), our_mac, 1);
	add_chain(&d, &d.tq[1], l, dd, 2, 0, 1);
	CHECK(wait_used(&d, &d.tq[1], &id, &len, 2000));
	CHECK(!(d.vdev->status & VIRTIO_STATUS_NEEDS_RESET));
	teardown(&d);
}

/*
 * Save, then load into a new device over the same guest memory (what a restore sees): MAC, RX
 * mode, pairs and ring indices carry over; the guest is asked to announce itself.
 */
static void test_state(void)
{
	static const uint8_t promisc_off[] = { 0, 0, 0 }, pairs2[] = { 4, 0, 2, 0 };
	static const uint8_t ack[] = { 3, 0 };
	uint64_t f = base_features() | 1ULL << VIRTIO_NET_F_MQ;
	struct store st = { .n = 0 };
	struct dev_state_out out = { .put = store_put, .opaque = &st };
	struct dev_state_in in = { .get = store_get, .get_var = store_get_var, .opaque = &st };
	struct tdrv d;
	struct prop *p;
	struct virtio_net_hdr h = { 0 };
	uint8_t fr[100];
	uint32_t id, len;

	CHECK(!setup(&d, 2, f));
	CHECK_EQ(ctrl(&d, promisc_off, 3), VIRTIO_NET_OK);
	CHECK_EQ(ctrl(&d, pairs2, 4), VIRTIO_NET_OK);
	add_rx_bufs(&d, 0, 4, 2048);
	usleep(20000);
	CHECK(!virtio_dev_quiesce(d.vdev));
	CHECK(!virtio_dev_save(d.vdev, &out));
	virtio_net_destroy(d.vdev);
	for (int i = 0; i < 2; i++)
		close(d.net[i]);

	CHECK(!new_device(&d));
	CHECK(!virtio_dev_quiesce(d.vdev));
	CHECK(!virtio_dev_load(d.vdev, &in, 0xffff));
	CHECK(!virtio_dev_resume(d.vdev));
	CHECK_EQ(virtio_net_ctrl_state(d.vdev)->promisc, 0);
	CHECK_EQ(virtio_net_ctrl_state(d.vdev)->curr_pairs, 2);
	CHECK(wait_cfg_irq(&d, 2000));
	CHECK_EQ(cfg_status(&d), VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
	CHECK_EQ(ctrl(&d, ack, 2), VIRTIO_NET_OK);
	CHECK_EQ(cfg_status(&d), VIRTIO_NET_S_LINK_UP);
	/* The four buffers given before the save are still there. */
	make_frame(fr, sizeof(fr), our_mac, 2);
	CHECK(!net_send(&d, 0, &h, fr, sizeof(fr)));
	CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	CHECK_EQ(id, 0);
	CHECK_EQ(len, NET_HDR_LEN + sizeof(fr));

	/* Refusals: an impossible RX mode, more pairs in use than the device has. */
	CHECK(!virtio_dev_quiesce(d.vdev));
	p = store_find(&st, "net");
	CHECK(p);
	p->data[6] = 7;		/* promisc */
	CHECK(virtio_dev_load(d.vdev, &in, 0xffff) == -EINVAL);
	p->data[6] = 0;
	p->data[10] = 3;	/* curr_pairs */
	CHECK(virtio_dev_load(d.vdev, &in, 0xffff) == -EINVAL);
	teardown(&d);
}

/* With event idx the driver kicks only when the device asked for it (avail_event): every
 * control command, transmit and receive buffer still gets served. */
static void test_event_idx(void)
{
	static const uint8_t promisc_off[] = { 0, 0, 0 }, promisc_on[] = { 0, 0, 1 };
	struct tdrv d;
	struct virtio_net_hdr h = { 0 };
	uint8_t f[100], got[300];
	uint32_t l[2] = { NET_HDR_LEN, sizeof(f) }, id, len;
	const void *dd[2] = { &h, f };

	CHECK(!setup(&d, 1, base_features() | 1ULL << VIRTIO_F_EVENT_IDX));
	make_frame(f, sizeof(f), our_mac, 4);
	for (int i = 0; i < 5; i++) {
		CHECK_EQ(ctrl(&d, i & 1 ? promisc_on : promisc_off, 3), VIRTIO_NET_OK);
		CHECK_EQ(virtio_net_ctrl_state(d.vdev)->promisc, i & 1);
		add_chain(&d, &d.tq[1], l, dd, 2, 0, 1);
		CHECK_EQ(net_recv(&d, 0, got, sizeof(got), 2000), NET_HDR_LEN + sizeof(f));
		CHECK(wait_used(&d, &d.tq[1], &id, &len, 2000));
	}
	for (int i = 0; i < 3; i++) {
		CHECK(!net_send(&d, 0, &h, f, sizeof(f)));
		usleep(20000);
		add_rx_bufs(&d, 0, 1, 2048);
		CHECK(wait_used(&d, &d.tq[0], &id, &len, 2000));
	}
	teardown(&d);
}

/*
 * A real tap, in a network namespace of our own (root only, else skipped): the guest ARPs
 * for the host's address on the tap and must get the kernel's reply, with the tap's vnet
 * header and offloads set up as for a guest that takes TSO and mergeable buffers; then the
 * tap is deleted and the guest must see the link go down.
 */
static int tap_arp_child(void)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	struct tdrv d;
	struct net_options o;
	struct virtio_net_hdr h = { 0 };
	uint8_t arp[60] = { 0 }, *r;
	uint32_t l[2] = { NET_HDR_LEN, sizeof(arp) }, id, len;
	const void *dd[2] = { &h, arp };
	char err[100];

	if (unshare(CLONE_NEWNET))
		return 77;
	memset(&d, 0, sizeof(d));
	cur = &d;
	log_level = LOG_ERR;
	d.pairs = 1;
	d.nq = 3;
	d.net[0] = d.net[1] = -1;
	if (mm_init(&d.mem, 64 << 20))
		return 1;
	d.env.mem = &d.mem;
	for (unsigned int q = 0; q < MAXQ; q++)
		d.irq_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	d.cfg_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (virtio_net_parse_option("tap=kt9,mac=52:54:00:12:34:56,vhost=off", &o, err,
				    sizeof(err)) ||
	    virtio_net_create(&d.env, &o, &d.vdev))
		return 77;
	d.vdev->tops = &fake_tops;
	d.vdev->device_features |= 1ULL << VIRTIO_F_VERSION_1;
	if (system("ip link set lo up && ip addr add 10.0.5.2/24 dev kt9 && ip link set kt9 up"))
		return 77;
	d.features = base_features() | 1ULL << VIRTIO_NET_F_MRG_RXBUF |
		     1ULL << VIRTIO_NET_F_GUEST_TSO4 | 1ULL << VIRTIO_NET_F_GUEST_TSO6 |
		     1ULL << VIRTIO_F_EVENT_IDX;
	if (driver_start(&d))
		return 2;
	add_rx_bufs(&d, 0, 60, 2048);
	/* ARP who-has 10.0.5.2 tell 10.0.5.15 */
	memcpy(arp, bcast, 6);
	memcpy(arp + 6, our_mac, 6);
	memcpy(arp + 12, "\x08\x06\x00\x01\x08\x00\x06\x04\x00\x01", 10);
	memcpy(arp + 22, our_mac, 6);
	memcpy(arp + 28, "\x0a\x00\x05\x0f", 4);
	memcpy(arp + 38, "\x0a\x00\x05\x02", 4);
	add_chain(&d, &d.tq[1], l, dd, 2, 0, 1);
	for (int tries = 0; tries < 40; tries++) {
		if (!wait_used(&d, &d.tq[0], &id, &len, 100))
			continue;
		r = buf_of(&d, &d.tq[0], id) + NET_HDR_LEN;
		if (len >= NET_HDR_LEN + 42 && !memcmp(r, our_mac, 6) && r[12] == 8 &&
		    r[13] == 6 && r[21] == 2)
			break;
		if (tries == 39) {
			fprintf(stderr, "  no ARP reply from the tap\n");
			return 3;
		}
	}
	/* The tap is deleted under us: link down within the periodic check, no crash. */
	if (system("ip link del kt9") || !wait_cfg_irq(&d, 3000) ||
	    (cfg_status(&d) & VIRTIO_NET_S_LINK_UP)) {
		fprintf(stderr, "  no link down after the tap was deleted\n");
		return 4;
	}
	teardown(&d);
	return 0;
}

static void test_tap_arp(void)
{
	int st;
	pid_t pid;

	if (geteuid())
		SKIP("a tap needs root (CAP_NET_ADMIN) in a new network namespace");
	pid = fork();
	CHECK(pid >= 0);
	if (!pid)
		_exit(tap_arp_child());
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		SKIP("cannot make a tap in a new network namespace (unshare, /dev/net/tun or ip)");
	CHECK_EQ(WEXITSTATUS(st), 0);
}

TEST_MAIN(TEST(test_options), TEST(test_hdr_check), TEST(test_ctrl_parse), TEST(test_rx_filter),
	  TEST(test_tx), TEST(test_rx_mergeable), TEST(test_rx_wait_and_filter),
	  TEST(test_ctrl_queue), TEST(test_tx_refusals), TEST(test_link_down), TEST(test_state),
	  TEST(test_event_idx), TEST(test_tap_arp))
