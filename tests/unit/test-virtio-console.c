/*
 * virtio-console without KVM or PCI: the test plays the Linux driver. Its rings live in a
 * guest_mem, it kicks through vdev->kick_fd[], a fake transport records interrupts, and the
 * host side is a real client on the agent socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "devices/virtio-console.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "tests/harness.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define QSZ 64
#define NQ 6
#define F_NEXT 1
#define F_WRITE 2

struct tq {
	unsigned int q;
	uint64_t desc, avail, used, bufs;
	uint32_t bufsz;
	uint16_t avail_idx, last_used;
	uint8_t inuse[QSZ];
};

struct tdrv {
	struct guest_mem mem;
	struct dev_env env;
	struct virtio_dev *vdev;
	struct tq tq[NQ];
	int irq_fd[NQ], cfg_fd;
	int sink[2];			/* console output pipe: [0] is ours to read */
	char path[108];
	uint64_t features;
};

static struct tdrv *cur;

static void fake_notify_queue(struct virtio_dev *vdev, unsigned int q)
{
	uint64_t one = 1;

	if (q < NQ && write(cur->irq_fd[q], &one, sizeof(one)) < 0)
		abort();
}

static void fake_notify_config(struct virtio_dev *vdev)
{
	uint64_t one = 1;

	if (write(cur->cfg_fd, &one, sizeof(one)) < 0)
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

static uint16_t *avail_of(struct tdrv *d, struct tq *t)
{
	return hva(d, t->avail, 6 + 2 * QSZ);
}

static uint16_t *used_of(struct tdrv *d, struct tq *t)
{
	return hva(d, t->used, 6 + 8 * QSZ);
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
	uint64_t one = 1;

	if (write(d->vdev->kick_fd[q], &one, sizeof(one)) < 0)
		abort();
}

static void publish(struct tdrv *d, struct tq *t, uint16_t head)
{
	uint16_t *a = avail_of(d, t);

	a[2 + (t->avail_idx % QSZ)] = head;
	t->avail_idx++;
	__atomic_store_n(&a[1], t->avail_idx, __ATOMIC_RELEASE);
	kick(d, t->q);
}

/* One used entry if there is one: 1, else 0. */
static int take_used(struct tdrv *d, struct tq *t, uint32_t *id, uint32_t *len)
{
	uint16_t *u = used_of(d, t);
	uint32_t *e;

	if (__atomic_load_n(&u[1], __ATOMIC_ACQUIRE) == t->last_used)
		return 0;
	e = (uint32_t *)(u + 2) + 2 * (t->last_used % QSZ);
	*id = e[0];
	*len = e[1];
	t->last_used++;
	/* Free the whole chain. */
	for (unsigned int i = *id; i < QSZ && t->inuse[i];) {
		uint8_t *dp = hva(d, t->desc + 16 * i, 16);
		uint16_t fl, nx;

		memcpy(&fl, dp + 12, 2);
		memcpy(&nx, dp + 14, 2);
		t->inuse[i] = 0;
		if (!(fl & F_NEXT))
			break;
		i = nx;
	}
	return 1;
}

static int wait_used(struct tdrv *d, struct tq *t, uint32_t *id, uint32_t *len, int ms)
{
	struct pollfd pfd = { .fd = d->irq_fd[t->q], .events = POLLIN };
	uint64_t v;

	for (int waited = 0; waited <= ms; waited += 5) {
		if (take_used(d, t, id, len))
			return 1;
		if (poll(&pfd, 1, 5) > 0 && read(pfd.fd, &v, sizeof(v)) < 0)
			abort();
	}
	return take_used(d, t, id, len);
}

/* A chain of n segments (each at most bufsz bytes), all readable or all writable. */
static int add_chain(struct tdrv *d, struct tq *t, const uint32_t *lens, const void *const *data,
		     unsigned int n, int writable)
{
	unsigned int idx[16], got = 0;
	uint32_t id, len;

	for (int tries = 0; got < n && tries < 2000; tries++) {
		got = 0;
		for (unsigned int i = 0; i < QSZ && got < n; i++)
			if (!t->inuse[i])
				idx[got++] = i;
		if (got < n) {
			/* Reclaim transmitted buffers (only used on device-readable queues). */
			if (!writable && wait_used(d, t, &id, &len, 5))
				continue;
			if (writable)
				return -1;
		}
	}
	if (got < n)
		return -1;
	for (unsigned int k = 0; k < n; k++) {
		uint64_t buf = t->bufs + (uint64_t)idx[k] * t->bufsz;

		if (lens[k] > t->bufsz)
			abort();
		if (data && data[k])
			memcpy(hva(d, buf, lens[k]), data[k], lens[k]);
		t->inuse[idx[k]] = 1;
		write_desc(d, t, idx[k], buf, lens[k], (writable ? F_WRITE : 0) |
			   (k + 1 < n ? F_NEXT : 0), k + 1 < n ? idx[k + 1] : 0);
	}
	publish(d, t, idx[0]);
	return 0;
}

static int add_buf(struct tdrv *d, struct tq *t, const void *data, uint32_t len, int writable)
{
	const void *dp[1] = { data };

	return add_chain(d, t, &len, dp, 1, writable);
}

/* A receive buffer of 1000 bytes: every other one a chain of two segments. */
static int add_rx(struct tdrv *d, struct tq *t)
{
	static const uint32_t two[2] = { 300, 700 };
	static const uint32_t one[1] = { 1000 };

	return (t->avail_idx & 1) ? add_chain(d, t, two, NULL, 2, 1) :
				    add_chain(d, t, one, NULL, 1, 1);
}

/* Copy len bytes the device wrote into the chain at head (before it is reused). */
static int copy_chain(struct tdrv *d, struct tq *t, uint32_t head, uint32_t len, uint8_t *out)
{
	unsigned int i = head;

	for (int n = 0; len && n < QSZ && i < QSZ; n++) {
		uint8_t *dp = hva(d, t->desc + 16 * i, 16);
		uint64_t addr;
		uint32_t dl, c;
		uint16_t fl, nx;

		memcpy(&addr, dp, 8);
		memcpy(&dl, dp + 8, 4);
		memcpy(&fl, dp + 12, 2);
		memcpy(&nx, dp + 14, 2);
		c = dl < len ? dl : len;
		memcpy(out, hva(d, addr, c), c);
		out += c;
		len -= c;
		if (!(fl & F_NEXT))
			break;
		i = nx;
	}
	return len ? -1 : 0;
}

static void setup_rings(struct tdrv *d)
{
	for (unsigned int q = 0; q < NQ; q++) {
		struct tq *t = &d->tq[q];
		struct virtq *vq = &d->vdev->vqs[q];
		uint64_t base = 0x100000 + (uint64_t)q * 0x100000;

		memset(t, 0, sizeof(*t));
		t->q = q;
		t->desc = base;
		t->avail = base + 0x1000;
		t->used = base + 0x2000;
		t->bufs = base + 0x10000;
		t->bufsz = q == 2 ? 4096 : q == 0 || q == 4 ? 1000 : 8192;
		memset(hva(d, base, 0x10000), 0, 0x10000);
		vq->size = QSZ;
		vq->desc_gpa = t->desc;
		vq->avail_gpa = t->avail;
		vq->used_gpa = t->used;
		virtq_reset(vq);
		vq->event_idx = 0;
		vq->indirect = 0;
		vq->ready = 1;
	}
}

/* Driver init as Linux does it: features, queues, receive buffers, DRIVER_OK. */
static int start_driver(struct tdrv *d)
{
	d->vdev->driver_features = d->features;
	setup_rings(d);
	for (int i = 0; i < 16; i++)
		if (add_buf(d, &d->tq[2], NULL, 4096, 1))
			return -1;
	for (int i = 0; i < 32; i++)
		if (add_rx(d, &d->tq[0]) || add_rx(d, &d->tq[4]))
			return -1;
	d->vdev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			  VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	return virtio_dev_activate(d->vdev);
}

static int setup(struct tdrv *d, size_t buf_limit, int with_sink)
{
	struct console_options o = { 0 };

	memset(d, 0, sizeof(*d));
	cur = d;
	log_level = LOG_ERR;
	d->sink[0] = d->sink[1] = -1;
	if (mm_init(&d->mem, 64 << 20))
		return -1;
	d->env.mem = &d->mem;
	for (int q = 0; q < NQ; q++)
		d->irq_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	d->cfg_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (with_sink && pipe2(d->sink, O_CLOEXEC | O_NONBLOCK))
		return -1;
	snprintf(d->path, sizeof(d->path), "/tmp/kumo-vcon-test-%d.sock", (int)getpid());
	o.agent_socket = d->path;
	o.console_out_fd = d->sink[1];
	o.buf_limit = buf_limit;
	if (virtio_console_create(&d->env, &o, &d->vdev))
		return -1;
	d->vdev->tops = &fake_tops;
	d->features = 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_CONSOLE_F_MULTIPORT;
	return start_driver(d);
}

static void teardown(struct tdrv *d)
{
	if (d->vdev)
		virtio_console_destroy(d->vdev);
	for (int q = 0; q < NQ; q++)
		close(d->irq_fd[q]);
	close(d->cfg_fd);
	if (d->sink[0] >= 0) {
		close(d->sink[0]);
		close(d->sink[1]);
	}
	mm_free(&d->mem);
}

static int send_ctrl(struct tdrv *d, uint32_t id, uint16_t event, uint16_t value)
{
	uint8_t m[8];

	memcpy(m, &id, 4);
	memcpy(m + 4, &event, 2);
	memcpy(m + 6, &value, 2);
	return add_buf(d, &d->tq[3], m, 8, 0);
}

struct cmsg {
	uint32_t id;
	uint16_t event, value;
	char name[64];
	uint32_t len;
};

/* The next host-to-guest control message; the buffer goes back to the ring. 0 or -1. */
static int recv_ctrl(struct tdrv *d, struct cmsg *m, int ms)
{
	struct tq *t = &d->tq[2];
	uint32_t id, len;
	uint8_t *b;

	memset(m, 0, sizeof(*m));
	if (!wait_used(d, t, &id, &len, ms))
		return -1;
	b = hva(d, t->bufs + (uint64_t)id * t->bufsz, t->bufsz);
	m->len = len;
	if (len >= 8) {
		memcpy(&m->id, b, 4);
		memcpy(&m->event, b + 4, 2);
		memcpy(&m->value, b + 6, 2);
		memcpy(m->name, b + 8, len - 8 < 63 ? len - 8 : 63);
	}
	return add_buf(d, t, NULL, 4096, 1);
}

static int expect_ctrl(struct tdrv *d, uint32_t id, uint16_t event, uint16_t value)
{
	struct cmsg m;

	if (recv_ctrl(d, &m, 2000)) {
		fprintf(stderr, "  no control message (wanted event %u port %u)\n", event, id);
		return -1;
	}
	if (m.id != id || m.event != event || m.value != value) {
		fprintf(stderr, "  control message %u/%u/%u, wanted %u/%u/%u\n", m.id, m.event,
			m.value, id, event, value);
		return -1;
	}
	return 0;
}

static int no_ctrl(struct tdrv *d, int ms)
{
	struct cmsg m;

	if (recv_ctrl(d, &m, ms) == 0) {
		fprintf(stderr, "  unexpected control message %u/%u/%u\n", m.id, m.event, m.value);
		return -1;
	}
	return 0;
}

/* DEVICE_READY .. PORT_OPEN from the guest, as Linux's driver does it. */
static int handshake(struct tdrv *d, int client)
{
	struct cmsg m;

	if (send_ctrl(d, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1) ||
	    expect_ctrl(d, 0, VIRTIO_CONSOLE_PORT_ADD, 1) ||
	    expect_ctrl(d, 1, VIRTIO_CONSOLE_PORT_ADD, 1))
		return -1;
	if (send_ctrl(d, 0, VIRTIO_CONSOLE_PORT_READY, 1) ||
	    expect_ctrl(d, 0, VIRTIO_CONSOLE_CONSOLE_PORT, 1))
		return -1;
	if (d->sink[1] >= 0 && expect_ctrl(d, 0, VIRTIO_CONSOLE_PORT_OPEN, 1))
		return -1;
	if (send_ctrl(d, 1, VIRTIO_CONSOLE_PORT_READY, 1) || recv_ctrl(d, &m, 2000))
		return -1;
	if (m.id != 1 || m.event != VIRTIO_CONSOLE_PORT_NAME ||
	    strcmp(m.name, VIRTIO_CONSOLE_AGENT_NAME) || m.len < 8 + strlen(m.name)) {
		fprintf(stderr, "  bad PORT_NAME %u/%u '%s'\n", m.id, m.event, m.name);
		return -1;
	}
	if (client && expect_ctrl(d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1))
		return -1;
	/* init_port_console() opens port 0; the agent opens /dev/vport0p1. */
	if (send_ctrl(d, 0, VIRTIO_CONSOLE_PORT_OPEN, 1) ||
	    send_ctrl(d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1))
		return -1;
	return no_ctrl(d, 50);
}

static int connect_client(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Collect want bytes from a port's receiveq (reposting the buffers). Bytes got. */
static size_t guest_read(struct tdrv *d, unsigned int q, uint8_t *out, size_t want, int ms)
{
	struct tq *t = &d->tq[q];
	size_t got = 0;
	uint32_t id, len;

	while (got < want && wait_used(d, t, &id, &len, ms)) {
		if (len > 1000 || got + len > want || copy_chain(d, t, id, len, out + got)) {
			fprintf(stderr, "  receive used len %u (have %zu of %zu)\n", len, got, want);
			return got;
		}
		got += len;
		if (add_rx(d, t))
			return got;
	}
	return got;
}

static int read_full(int fd, void *buf, size_t len, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;

	while (got < len) {
		ssize_t n;

		if (poll(&pfd, 1, ms) <= 0)
			return -1;
		n = read(fd, (uint8_t *)buf + got, len - got);
		if (n <= 0)
			return -1;
		got += n;
	}
	return 0;
}

static uint8_t pattern(uint32_t seed, size_t i)
{
	uint32_t x = seed ^ (uint32_t)(i * 2654435761u);

	x ^= x >> 13;
	x *= 0x5bd1e995;
	return (uint8_t)(x ^ (x >> 15));
}

static uint64_t fnv(const uint8_t *b, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

/* Set by the device thread while the test polls. */
static int needs_reset(struct tdrv *d)
{
	return __atomic_load_n(&d->vdev->status, __ATOMIC_SEQ_CST) & VIRTIO_STATUS_NEEDS_RESET;
}

static int broken(struct tdrv *d, unsigned int q)
{
	return __atomic_load_n(&d->vdev->vqs[q].broken, __ATOMIC_SEQ_CST);
}

/* ---- tests ---- */

static void test_parse_ctrl(void)
{
	struct virtio_console_ctrl m;
	uint8_t b[8] = { 1, 0, 0, 0, VIRTIO_CONSOLE_PORT_OPEN, 0, 1, 0 };

	CHECK_EQ(virtio_console_parse_ctrl(b, 8, 2, &m), 0);
	CHECK_EQ(m.id, 1);
	CHECK_EQ(m.event, VIRTIO_CONSOLE_PORT_OPEN);
	CHECK_EQ(m.value, 1);
	CHECK_EQ(virtio_console_parse_ctrl(b, 7, 2, &m), -EINVAL);
	CHECK_EQ(virtio_console_parse_ctrl(b, 0, 2, &m), -EINVAL);
	CHECK_EQ(virtio_console_parse_ctrl(b, 8, 1, &m), -ERANGE);
	b[0] = 0xff; b[1] = 0xff; b[2] = 0xff; b[3] = 0xff;
	CHECK_EQ(virtio_console_parse_ctrl(b, 8, 2, &m), -ERANGE);
	b[4] = VIRTIO_CONSOLE_DEVICE_READY;
	CHECK_EQ(virtio_console_parse_ctrl(b, 8, 2, &m), 0);
	b[4] = VIRTIO_CONSOLE_PORT_NAME;	/* host-to-guest only */
	CHECK_EQ(virtio_console_parse_ctrl(b, 8, 2, &m), -EOPNOTSUPP);
	b[4] = 0x34; b[5] = 0x12;
	CHECK_EQ(virtio_console_parse_ctrl(b, 8, 2, &m), -EOPNOTSUPP);
}

static void test_handshake(void)
{
	struct tdrv d;
	uint32_t max = 0;
	uint8_t cfg[12];
	int ok;

	ok = setup(&d, 0, 1) == 0;
	if (ok) {
		d.vdev->ops->config_read(d.vdev, 0, cfg, sizeof(cfg));
		memcpy(&max, cfg + 4, 4);
	}
	ok = ok && max == 2 && d.vdev->nqueues == 6 && d.vdev->ops->device_id == 3 &&
	     d.vdev->ops->pci_class == 0x078000 &&
	     (d.vdev->device_features & (1ULL << VIRTIO_CONSOLE_F_MULTIPORT)) &&
	     handshake(&d, 0) == 0;
	teardown(&d);
	CHECK(ok);
}

static void test_console_sink(void)
{
	struct tdrv d;
	char msg[] = "Linux version 6.1.0 (debian-kernel@lists.debian.org)\n", out[64] = "";
	int ok;

	ok = setup(&d, 0, 1) == 0 && handshake(&d, 0) == 0 &&
	     add_buf(&d, &d.tq[1], msg, sizeof(msg) - 1, 0) == 0 &&
	     read_full(d.sink[0], out, sizeof(msg) - 1, 2000) == 0 && !strcmp(out, msg);
	teardown(&d);
	CHECK(ok);
}

static void test_agent_connect_cycle(void)
{
	struct tdrv d;
	struct console_port_stats st;
	uint8_t buf[64];
	int fd = -1, fd2 = -1, ok;

	ok = setup(&d, 0, 0) == 0 && handshake(&d, 0) == 0;
	for (int round = 0; ok && round < 3; round++) {
		char hello[32];
		int n = snprintf(hello, sizeof(hello), "hello %d", round);

		fd = connect_client(d.path);
		ok = fd >= 0 && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0;
		/* A second client is accepted and closed with no data. */
		fd2 = ok ? connect_client(d.path) : -1;
		ok = ok && fd2 >= 0 && read_full(fd2, buf, 1, 2000) < 0 && no_ctrl(&d, 50) == 0;
		if (fd2 >= 0)
			close(fd2);
		ok = ok && write(fd, hello, n) == n &&
		     guest_read(&d, 4, buf, n, 2000) == (size_t)n && !memcmp(buf, hello, n);
		ok = ok && add_buf(&d, &d.tq[5], "pong", 4, 0) == 0 &&
		     read_full(fd, buf, 4, 2000) == 0 && !memcmp(buf, "pong", 4);
		if (fd >= 0)
			close(fd);
		ok = ok && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 0) == 0;
	}
	ok = ok && virtio_console_port_stats(d.vdev, 1, &st) == 0 && st.clients == 3 &&
	     !st.client_connected && st.guest_connected && st.dropped == 0;
	teardown(&d);
	CHECK(ok);
}

#define BULK (300 * 1024 + 123)

struct bulk_client {
	int fd;
	int ok;
	uint64_t sum;
};

static void *bulk_client_fn(void *arg)
{
	struct bulk_client *b = arg;
	uint8_t *in = malloc(BULK), *out = malloc(BULK);
	size_t sent = 0, got = 0;

	for (size_t i = 0; i < BULK; i++)
		out[i] = pattern(1, i);
	fcntl(b->fd, F_SETFL, O_NONBLOCK);
	while (sent < BULK || got < BULK) {
		struct pollfd pfd = { .fd = b->fd,
				      .events = POLLIN | (sent < BULK ? POLLOUT : 0) };
		ssize_t n;

		if (poll(&pfd, 1, 5000) <= 0)
			break;
		if (sent < BULK && (pfd.revents & POLLOUT)) {
			n = write(b->fd, out + sent, BULK - sent < 7000 ? BULK - sent : 7000);
			if (n > 0)
				sent += n;
		}
		if (pfd.revents & POLLIN) {
			n = read(b->fd, in + got, BULK - got);
			if (n <= 0)
				break;
			got += n;
		}
	}
	b->ok = sent == BULK && got == BULK;
	b->sum = fnv(in, got);
	for (size_t i = 0; b->ok && i < BULK; i++)
		if (in[i] != pattern(2, i)) {
			fprintf(stderr, "  client got a wrong byte at %zu\n", i);
			b->ok = 0;
		}
	free(in);
	free(out);
	return NULL;
}

static void test_agent_bulk(void)
{
	struct tdrv d;
	struct bulk_client b = { .fd = -1 };
	uint8_t *tx = malloc(BULK), *rx = calloc(1, BULK);
	pthread_t th;
	size_t sent = 0, got = 0;
	int ok, started = 0;

	for (size_t i = 0; i < BULK; i++)
		tx[i] = pattern(2, i);
	ok = setup(&d, 0, 0) == 0 && handshake(&d, 0) == 0;
	b.fd = ok ? connect_client(d.path) : -1;
	ok = ok && b.fd >= 0 && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0;
	if (ok)
		started = pthread_create(&th, NULL, bulk_client_fn, &b) == 0;
	ok = ok && started;
	/* The guest: transmit in chains of 1..3 segments of varying sizes, receive as it comes. */
	for (int iter = 0; ok && (sent < BULK || got < BULK) && iter < 100000; iter++) {
		uint32_t lens[3];
		const void *dp[3];
		unsigned int n = 1 + iter % 3;
		uint32_t id, len;

		if (sent < BULK) {
			for (unsigned int k = 0; k < n; k++) {
				size_t want = 1 + (iter * 977 + k * 131) % 8192;

				lens[k] = sent < BULK ? (uint32_t)(BULK - sent < want ? BULK - sent : want) : 0;
				dp[k] = tx + sent;
				sent += lens[k];
				if (!lens[k]) {
					n = k;
					break;
				}
			}
			if (n && add_chain(&d, &d.tq[5], lens, dp, n, 0))
				ok = 0;
		}
		while (ok && take_used(&d, &d.tq[4], &id, &len)) {
			if (got + len > BULK || len > 1000 ||
			    copy_chain(&d, &d.tq[4], id, len, rx + got)) {
				ok = 0;
				break;
			}
			got += len;
			ok = add_rx(&d, &d.tq[4]) == 0;
		}
		if (sent >= BULK && got < BULK)
			got += guest_read(&d, 4, rx + got, BULK - got, 5000);
	}
	if (started)
		pthread_join(th, NULL);
	ok = ok && b.ok && got == BULK && b.sum == fnv(tx, BULK);
	for (size_t i = 0; ok && i < BULK; i++)
		if (rx[i] != pattern(1, i)) {
			fprintf(stderr, "  guest got a wrong byte at %zu\n", i);
			ok = 0;
		}
	if (b.fd >= 0)
		close(b.fd);
	teardown(&d);
	free(tx);
	free(rx);
	CHECK(ok);
}

/* Client bytes sent just before a hang-up still arrive, then PORT_OPEN(0). */
static void test_client_eof_and_guest_closed(void)
{
	struct tdrv d;
	uint8_t buf[4000], big[3000];
	int fd = -1, ok;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = pattern(3, i);
	ok = setup(&d, 0, 0) == 0 && handshake(&d, 0) == 0;
	/* The guest closes the port: nothing is delivered until it opens it again. */
	ok = ok && send_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 0) == 0;
	/* A client that leaves without sending is gone at once, even so. */
	fd = ok ? connect_client(d.path) : -1;
	ok = ok && fd >= 0 && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0;
	if (fd >= 0)
		close(fd);
	ok = ok && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 0) == 0;
	fd = ok ? connect_client(d.path) : -1;
	ok = ok && fd >= 0 && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0 &&
	     write(fd, big, sizeof(big)) == sizeof(big) && guest_read(&d, 4, buf, 1, 200) == 0;
	if (fd >= 0)
		close(fd);
	usleep(50000);
	ok = ok && no_ctrl(&d, 50) == 0 && send_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0 &&
	     guest_read(&d, 4, buf, sizeof(big), 2000) == sizeof(big) &&
	     !memcmp(buf, big, sizeof(big)) &&
	     expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 0) == 0;
	teardown(&d);
	CHECK(ok);
}

/* Guest output with no client is kept up to the bound, the rest is counted and dropped. */
static void test_buffer_bound(void)
{
	struct tdrv d;
	struct console_port_stats st = { 0 };
	uint8_t *data = malloc(100000), *got = malloc(100000);
	int fd = -1, ok;

	for (size_t i = 0; i < 100000; i++)
		data[i] = pattern(4, i);
	ok = setup(&d, 65536, 0) == 0 && handshake(&d, 0) == 0;
	for (size_t off = 0; ok && off < 100000; off += 5000)
		ok = add_buf(&d, &d.tq[5], data + off, 5000, 0) == 0;
	for (int i = 0; ok && i < 200; i++) {
		usleep(10000);
		virtio_console_port_stats(d.vdev, 1, &st);
		if (st.from_guest == 100000)
			break;
	}
	ok = ok && st.from_guest == 100000 && st.buffered == 65536 && st.dropped == 100000 - 65536;
	fd = ok ? connect_client(d.path) : -1;
	ok = ok && fd >= 0 && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0 &&
	     read_full(fd, got, 65536, 2000) == 0 && !memcmp(got, data, 65536) &&
	     add_buf(&d, &d.tq[5], "tail", 4, 0) == 0 && read_full(fd, got, 4, 2000) == 0 &&
	     !memcmp(got, "tail", 4);
	if (fd >= 0)
		close(fd);
	teardown(&d);
	free(data);
	free(got);
	CHECK(ok);
}

static void test_hostile_ctrl(void)
{
	struct tdrv d;
	uint8_t junk[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint32_t lens[2] = { 3, 5 };
	const void *dp[2] = { "\1\0\0", "\0\6\0\1\0" };	/* PORT_OPEN(1, 1), split */
	int ok;

	ok = setup(&d, 0, 1) == 0 && handshake(&d, 0) == 0;
	ok = ok && add_buf(&d, &d.tq[3], junk, 4, 0) == 0 &&		/* short */
	     add_buf(&d, &d.tq[3], junk, 0, 0) == 0 &&			/* empty */
	     add_buf(&d, &d.tq[3], junk, 8, 1) == 0 &&			/* writable */
	     send_ctrl(&d, 0, 99, 1) == 0 &&				/* unknown event */
	     send_ctrl(&d, 77, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0 &&	/* no such port */
	     send_ctrl(&d, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_PORT_READY, 1) == 0 &&
	     send_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_NAME, 1) == 0 &&	/* host-to-guest */
	     send_ctrl(&d, 1, VIRTIO_CONSOLE_RESIZE, 1) == 0 &&
	     send_ctrl(&d, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 0) == 0 &&
	     add_chain(&d, &d.tq[3], lens, dp, 2, 0) == 0 &&
	     no_ctrl(&d, 100) == 0;
	/* Still serving: a real DEVICE_READY gets its answers. */
	ok = ok && send_ctrl(&d, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1) == 0 &&
	     expect_ctrl(&d, 0, VIRTIO_CONSOLE_PORT_ADD, 1) == 0 &&
	     expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_ADD, 1) == 0 &&
	     !needs_reset(&d);
	teardown(&d);
	CHECK(ok);
}

static void test_malformed_chain(void)
{
	struct tdrv d;
	struct tq *t;
	uint64_t v;
	int ok;

	ok = setup(&d, 0, 1) == 0 && handshake(&d, 0) == 0;
	/* A transmit descriptor outside guest RAM. */
	t = &d.tq[5];
	write_desc(&d, t, 0, 1ULL << 40, 100, 0, 0);
	t->inuse[0] = 1;
	if (ok)
		publish(&d, t, 0);
	for (int i = 0; ok && i < 200 && !needs_reset(&d); i++)
		usleep(5000);
	ok = ok && needs_reset(&d) && broken(&d, 5) &&
	     read(d.cfg_fd, &v, sizeof(v)) == sizeof(v);
	/* The other queues go on until the driver resets: a console write still works. */
	ok = ok && add_buf(&d, &d.tq[1], "x", 1, 0) == 0 &&
	     read_full(d.sink[0], &v, 1, 2000) == 0;
	/* A descriptor loop on the console transmitq. */
	t = &d.tq[1];
	write_desc(&d, t, 40, t->bufs, 10, F_NEXT, 41);
	write_desc(&d, t, 41, t->bufs, 10, F_NEXT, 40);
	if (ok)
		publish(&d, t, 40);
	for (int i = 0; ok && i < 200 && !broken(&d, 1); i++)
		usleep(5000);
	ok = ok && broken(&d, 1);
	/* A bad head index on the control transmitq. */
	if (ok)
		publish(&d, &d.tq[3], 999);
	for (int i = 0; ok && i < 200 && !broken(&d, 3); i++)
		usleep(5000);
	ok = ok && broken(&d, 3);
	teardown(&d);
	CHECK(ok);
}

static void test_reset_reactivate(void)
{
	struct tdrv d;
	uint8_t buf[16];
	int fd = -1, ok;

	ok = setup(&d, 0, 1) == 0 && handshake(&d, 0) == 0;
	fd = ok ? connect_client(d.path) : -1;
	ok = ok && fd >= 0 && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0;
	for (int round = 0; ok && round < 3; round++) {
		virtio_dev_reset(d.vdev);
		/* Data sent while the device is down waits for the next driver. */
		ok = write(fd, "abc", 3) == 3 && d.vdev->status == 0;
		ok = ok && start_driver(&d) == 0 && handshake(&d, 1) == 0 &&
		     guest_read(&d, 4, buf, 3, 2000) == 3 && !memcmp(buf, "abc", 3) &&
		     add_buf(&d, &d.tq[5], "xyz", 3, 0) == 0 && read_full(fd, buf, 3, 2000) == 0 &&
		     !memcmp(buf, "xyz", 3);
	}
	/* A connection made while the device is reset is served once it is active again. */
	if (fd >= 0)
		close(fd);
	ok = ok && expect_ctrl(&d, 1, VIRTIO_CONSOLE_PORT_OPEN, 0) == 0;
	if (ok)
		virtio_dev_reset(d.vdev);
	fd = ok ? connect_client(d.path) : -1;
	ok = ok && fd >= 0 && start_driver(&d) == 0 && handshake(&d, 1) == 0;
	if (fd >= 0)
		close(fd);
	teardown(&d);
	CHECK(ok);
}

static void test_no_multiport(void)
{
	struct tdrv d;
	char out[8] = "";
	int ok;

	ok = setup(&d, 0, 1) == 0;
	if (ok) {
		virtio_dev_reset(d.vdev);
		d.features = 1ULL << VIRTIO_F_VERSION_1;
		ok = start_driver(&d) == 0;
	}
	ok = ok && add_buf(&d, &d.tq[1], "boot", 4, 0) == 0 &&
	     read_full(d.sink[0], out, 4, 2000) == 0 && !memcmp(out, "boot", 4);
	/* The control queues are not in use: a DEVICE_READY there gets no answer. */
	ok = ok && send_ctrl(&d, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1) == 0 &&
	     no_ctrl(&d, 100) == 0;
	teardown(&d);
	CHECK(ok);
}

static void test_socket_in_use(void)
{
	struct tdrv d;
	struct virtio_dev *v2 = NULL;
	struct console_options o = { .console_out_fd = -1 };
	int ok, fd;

	ok = setup(&d, 0, 0) == 0;
	/* A live socket is not stolen... */
	o.agent_socket = d.path;
	ok = ok && virtio_console_create(&d.env, &o, &v2) == -EADDRINUSE;
	/* ...a stale one is replaced. */
	teardown(&d);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		strcpy(sa.sun_path, d.path);
		ok = ok && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
	}
	ok = ok && mm_init(&d.mem, 64 << 20) == 0;
	d.env.mem = &d.mem;
	ok = ok && virtio_console_create(&d.env, &o, &v2) == 0;
	fd = ok ? connect_client(d.path) : -1;
	ok = ok && fd >= 0;
	if (fd >= 0)
		close(fd);
	virtio_console_destroy(v2);
	mm_free(&d.mem);
	ok = ok && access(d.path, F_OK) < 0;	/* unlinked */
	o.nr_ports = 40;
	CHECK(ok);
	CHECK_EQ(virtio_console_create(&d.env, &o, &v2), -EINVAL);
}

TEST_MAIN(TEST(test_parse_ctrl), TEST(test_handshake), TEST(test_console_sink),
	  TEST(test_agent_connect_cycle), TEST(test_agent_bulk),
	  TEST(test_client_eof_and_guest_closed), TEST(test_buffer_bound),
	  TEST(test_hostile_ctrl), TEST(test_malformed_chain), TEST(test_reset_reactivate),
	  TEST(test_no_multiport), TEST(test_socket_in_use))
