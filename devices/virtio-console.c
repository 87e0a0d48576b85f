/*
 * virtio-console with multiport (virtio 1.x 5.3). Queues: receiveq0, transmitq0, control
 * receiveq, control transmitq, then receiveqN/transmitqN for port N >= 1.
 *
 * Everything below the create/destroy/activate/reset entry points runs on the device's one
 * I/O thread (or in virtio_console_poll() when that thread is not running), so the port state
 * needs no lock; the counters read by virtio_console_port_stats() are atomics.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/virtio-console.h"
#include "devices/virtio.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define CTRL_RXQ 2
#define CTRL_TXQ 3
#define CONFIG_SIZE 12		/* le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr */
#define SINK_CHUNK 512		/* below PIPE_BUF: a write after POLLOUT does not block */
#define SINK_RETRY_MS 20

enum { EV_LISTEN = 1, EV_CLIENT };	/* the console's own fds on its worker */
_Static_assert(sizeof(VIRTIO_CONSOLE_AGENT_NAME) <= 256, "PORT_NAME fits ctrl_flush's buffer");

#define EV_TAG(kind, idx) ((uint32_t)(kind) << 16 | (uint32_t)(idx))

struct ctrl_msg {
	uint32_t id;
	uint16_t event, value;
};

struct cport {
	unsigned int id;
	const char *name;		/* sent as PORT_NAME, or NULL */
	int is_console;
	char *path;			/* the socket we listen on (ours to unlink), or NULL */
	int listen_fd, client_fd;
	int client_eof;			/* the client hung up: drain what is left, then close */
	int sink_fd;			/* port 0 output without a socket (not ours), or -1 */
	int guest_ready;		/* PORT_READY(1) seen: the guest knows the port */
	int guest_connected;		/* the guest has the port open */
	struct virtq_elem *rx_elem;	/* a receive buffer taken from the ring, not yet filled */
	int rx_held;
	uint8_t *out;			/* guest output not yet written: out[out_head, out_len) */
	size_t out_head, out_len, out_cap;
	uint64_t to_guest, from_guest, dropped, buffered, clients;	/* atomics */
	int stat_client;						/* atomic */
};

struct console {
	struct virtio_dev vdev;
	unsigned int nr_ports;
	size_t buf_limit;
	int multiport;
	int session;			/* guest-side state was set up for this driver instance */
	struct virtq_elem tx_elem;	/* scratch for transmitq and control transmitq chains */
	struct virtq_elem ctrl_elem;	/* scratch for control receiveq chains */
	struct ctrl_msg *ctrl;		/* control messages waiting for a control receive buffer */
	unsigned int ctrl_head, ctrl_count, ctrl_max;
	uint8_t config[CONFIG_SIZE];
	struct cport ports[];
};

static struct console *to_console(struct virtio_dev *vdev)
{
	return (struct console *)((char *)vdev - offsetof(struct console, vdev));
}

static void stat_add(uint64_t *ctr, uint64_t n)
{
	__atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

static void stat_set(uint64_t *ctr, uint64_t v)
{
	__atomic_store_n(ctr, v, __ATOMIC_RELAXED);
}

static unsigned int rxq_of(unsigned int port)
{
	return port ? 2 + 2 * port : 0;
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = v;
	p[1] = v >> 8;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, v);
	put_le16(p + 2, v >> 16);
}

int virtio_console_parse_ctrl(const void *buf, size_t len, unsigned int nr_ports,
			      struct virtio_console_ctrl *out)
{
	const uint8_t *b = buf;

	if (len < VIRTIO_CONSOLE_CTRL_SIZE)
		return -EINVAL;
	out->id = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
		  (uint32_t)b[3] << 24;
	out->event = (uint16_t)(b[4] | b[5] << 8);
	out->value = (uint16_t)(b[6] | b[7] << 8);
	switch (out->event) {
	case VIRTIO_CONSOLE_DEVICE_READY:
		return 0;	/* the id is VIRTIO_CONSOLE_BAD_ID: not a port */
	case VIRTIO_CONSOLE_PORT_READY:
	case VIRTIO_CONSOLE_PORT_OPEN:
		return out->id < nr_ports ? 0 : -ERANGE;
	default:
		return -EOPNOTSUPP;
	}
}

/* ---- queues ---- */

static int vq_usable(struct console *c, unsigned int q)
{
	const struct virtq *vq = &c->vdev.vqs[q];

	if (q >= c->vdev.nqueues || (q >= 2 && !c->multiport))
		return 0;
	return __atomic_load_n(&vq->ready, __ATOMIC_ACQUIRE) && !vq->broken;
}

static void vq_broken(struct console *c, unsigned int q)
{
	c->vdev.stats_errors++;
	virtio_set_needs_reset(&c->vdev, q);	/* logs it */
}

/* 1 with a chain in *e, 0 when there is none (or the queue is not usable). */
static int vq_pop(struct console *c, unsigned int q, struct virtq_elem *e)
{
	int r;

	if (!vq_usable(c, q))
		return 0;
	r = virtq_pop(c->vdev.env->mem, &c->vdev.vqs[q], e);
	if (!r && c->vdev.vqs[q].event_idx) {
		/* Empty: ask for a kick at the next buffer, then look again (no lost kick). */
		virtq_set_avail_event(c->vdev.env->mem, &c->vdev.vqs[q]);
		r = virtq_pop(c->vdev.env->mem, &c->vdev.vqs[q], e);
	}
	if (r < 0) {
		vq_broken(c, q);
		return 0;
	}
	return r;
}

static int vq_push(struct console *c, unsigned int q, uint16_t head, uint32_t len)
{
	int r = virtq_push(c->vdev.env->mem, &c->vdev.vqs[q], head, len);

	if (r < 0)
		vq_broken(c, q);
	return r;
}

/* ---- control receiveq: host-to-guest messages ---- */

static void ctrl_flush(struct console *c)
{
	uint8_t msg[VIRTIO_CONSOLE_CTRL_SIZE + 256];
	struct virtq_elem *e = &c->ctrl_elem;
	int pushed = 0;

	while (c->ctrl_count && vq_pop(c, CTRL_RXQ, e) > 0) {
		const struct ctrl_msg *m = &c->ctrl[c->ctrl_head];
		size_t len = VIRTIO_CONSOLE_CTRL_SIZE, done;

		put_le32(msg, m->id);
		put_le16(msg + 4, m->event);
		put_le16(msg + 6, m->value);
		if (m->event == VIRTIO_CONSOLE_PORT_NAME && m->id < c->nr_ports &&
		    c->ports[m->id].name) {
			/* With its NUL, which Linux does not need but tolerates. */
			size_t n = strlen(c->ports[m->id].name) + 1;

			memcpy(msg + len, c->ports[m->id].name, n);
			len += n;
		}
		done = iov_from_buf(e->in, e->nin, 0, msg, len);
		virtio_mark_written(c->vdev.env->mem, e->in, e->nin, done);
		if (done < len)
			pr_warn_ratelimited("virtio-console: control buffer of %" PRIu64
					    " bytes is too small for a %zu-byte message",
					    e->in_len, len);
		c->ctrl_head = (c->ctrl_head + 1) % c->ctrl_max;
		c->ctrl_count--;
		if (vq_push(c, CTRL_RXQ, e->head, (uint32_t)done))
			return;
		pushed = 1;
	}
	if (pushed)
		virtio_notify(&c->vdev, CTRL_RXQ);
}

static void ctrl_send(struct console *c, uint32_t id, uint16_t event, uint16_t value)
{
	struct ctrl_msg *m;

	if (!c->multiport)
		return;
	if (c->ctrl_count == c->ctrl_max) {
		/* Only a guest that stops reading its control queue gets here. */
		pr_warn_ratelimited("virtio-console: control queue full, message %u for port %u "
				    "dropped", event, id);
		return;
	}
	m = &c->ctrl[(c->ctrl_head + c->ctrl_count) % c->ctrl_max];
	m->id = id;
	m->event = event;
	m->value = value;
	c->ctrl_count++;
	ctrl_flush(c);
}

/* ---- ports: host side ---- */

static int host_connected(const struct cport *p)
{
	return p->client_fd >= 0 || p->sink_fd >= 0;
}

static void close_client(struct console *c, struct cport *p)
{
	int avail = 0;

	if (p->client_fd < 0)
		return;
	if (ioctl(p->client_fd, FIONREAD, &avail) == 0 && avail > 0)
		pr_info("virtio-console: port %u: client gone, %d bytes it sent not delivered",
			p->id, avail);
	virtio_dev_unwatch(&c->vdev, p->client_fd);
	close(p->client_fd);
	p->client_fd = -1;
	p->client_eof = 0;
	__atomic_store_n(&p->stat_client, 0, __ATOMIC_RELAXED);
	if (p->guest_ready && !host_connected(p))
		ctrl_send(c, p->id, VIRTIO_CONSOLE_PORT_OPEN, 0);
}

/* Bytes written (possibly 0), or -1 when the writer is gone (it has been closed). */
static ssize_t port_write(struct console *c, struct cport *p, const uint8_t *buf, size_t len)
{
	size_t done = 0;
	ssize_t n;

	if (p->client_fd >= 0) {
		while (done < len) {
			n = send(p->client_fd, buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				done += n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			close_client(c, p);
			return done ? (ssize_t)done : -1;
		}
		return done;
	}
	if (p->sink_fd >= 0) {
		/* Not our fd, maybe blocking (kumo's stdout): write only what fits now. */
		while (done < len) {
			struct pollfd pfd = { .fd = p->sink_fd, .events = POLLOUT };
			size_t chunk = len - done < SINK_CHUNK ? len - done : SINK_CHUNK;

			if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLOUT))
				break;
			n = write(p->sink_fd, buf + done, chunk);
			if (n > 0) {
				done += n;
				continue;
			}
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			pr_warn("virtio-console: port %u: console output fd failed (%s), output "
				"dropped from now on", p->id, n < 0 ? strerror(errno) : "EOF");
			p->sink_fd = -1;
			return done ? (ssize_t)done : -1;
		}
		return done;
	}
	return 0;
}

static void flush_out(struct console *c, struct cport *p)
{
	ssize_t n;

	if (p->out_len == p->out_head || !host_connected(p))
		return;
	n = port_write(c, p, p->out + p->out_head, p->out_len - p->out_head);
	if (n > 0)
		p->out_head += n;
	if (p->out_head == p->out_len)
		p->out_head = p->out_len = 0;
	stat_set(&p->buffered, p->out_len - p->out_head);
}

/* Keep what fits under buf_limit, count the rest. */
static void out_append(struct console *c, struct cport *p, const uint8_t *buf, size_t len)
{
	size_t pending = p->out_len - p->out_head, take, need;

	take = c->buf_limit - pending < len ? c->buf_limit - pending : len;
	if (take < len) {
		stat_add(&p->dropped, len - take);
		pr_warn_ratelimited("virtio-console: port %u: %zu bytes of output waiting, "
				    "%zu dropped (%" PRIu64 " in all)", p->id, pending,
				    len - take, __atomic_load_n(&p->dropped, __ATOMIC_RELAXED));
	}
	if (!take)
		return;
	if (p->out_head) {
		memmove(p->out, p->out + p->out_head, pending);
		p->out_len = pending;
		p->out_head = 0;
	}
	need = pending + take;
	if (need > p->out_cap) {
		size_t cap = p->out_cap ? p->out_cap : 4096;
		uint8_t *n;

		while (cap < need)
			cap *= 2;
		if (cap > c->buf_limit)
			cap = c->buf_limit;
		n = realloc(p->out, cap);
		if (!n) {
			stat_add(&p->dropped, take);
			pr_warn_ratelimited("virtio-console: port %u: out of memory, output dropped",
					    p->id);
			return;
		}
		p->out = n;
		p->out_cap = cap;
	}
	memcpy(p->out + p->out_len, buf, take);
	p->out_len += take;
	stat_set(&p->buffered, p->out_len);
}

static void port_output(struct console *c, struct cport *p, const uint8_t *buf, size_t len)
{
	ssize_t n = 0;

	if (!len)
		return;
	if (p->listen_fd < 0 && !host_connected(p)) {
		stat_add(&p->dropped, len);	/* a port with nothing behind it */
		return;
	}
	if (p->out_len == p->out_head && host_connected(p)) {
		n = port_write(c, p, buf, len);
		if (n < 0)
			n = 0;
	}
	out_append(c, p, buf + n, len - n);
}

/* ---- ports: guest side ---- */

/* Client bytes into the guest's receive buffers, as far as there is room. */
static void pump_rx(struct console *c, struct cport *p)
{
	unsigned int q = rxq_of(p->id);
	struct virtq_elem *e = p->rx_elem;
	ssize_t n;

	while (p->client_fd >= 0 && p->guest_connected) {
		if (!p->rx_held) {
			if (vq_pop(c, q, e) <= 0)
				return;
			if (!e->in_len) {
				/* Nothing to write into: hand it back empty. */
				if (vq_push(c, q, e->head, 0))
					return;
				continue;
			}
			p->rx_held = 1;
		}
		if (!vq_usable(c, q))
			return;
		n = readv(p->client_fd, e->in, (int)e->nin);
		if (n > 0) {
			p->rx_held = 0;
			virtio_mark_written(c->vdev.env->mem, e->in, e->nin, (size_t)n);
			stat_add(&p->to_guest, n);
			virtio_complete(&c->vdev, q, e->head, (uint32_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		close_client(c, p);	/* EOF or error, after everything was delivered */
		return;
	}
}

static void port_tx(struct console *c, struct cport *p)
{
	unsigned int q = rxq_of(p->id) + 1;
	struct virtq_elem *e = &c->tx_elem;
	int pushed = 0;

	while (vq_pop(c, q, e) > 0) {
		for (unsigned int i = 0; i < e->nout; i++)
			port_output(c, p, e->out[i].iov_base, e->out[i].iov_len);
		stat_add(&p->from_guest, e->out_len);
		/* Consumed at once: hvc's put_chars spins until the buffer comes back. */
		if (vq_push(c, q, e->head, 0))
			break;
		pushed = 1;
	}
	if (pushed)
		virtio_notify(&c->vdev, q);
}

/* ---- control transmitq: guest-to-host messages ---- */

static void handle_ctrl(struct console *c, const void *buf, size_t len)
{
	struct virtio_console_ctrl m;
	struct cport *p;
	int r;

	r = virtio_console_parse_ctrl(buf, len, c->nr_ports, &m);
	if (r) {
		c->vdev.stats_errors++;
		if (r == -EINVAL)
			pr_warn_ratelimited("virtio-console: short control message (%zu bytes) "
					    "ignored", len);
		else
			pr_warn_ratelimited("virtio-console: control message ignored (%s: event %u, "
					    "id %u)", r == -ERANGE ? "no such port" :
					    "unexpected event", m.event, m.id);
		return;
	}
	switch (m.event) {
	case VIRTIO_CONSOLE_DEVICE_READY:
		if (!m.value) {
			pr_warn_ratelimited("virtio-console: the driver failed to set up the device");
			break;
		}
		for (unsigned int i = 0; i < c->nr_ports; i++)
			ctrl_send(c, i, VIRTIO_CONSOLE_PORT_ADD, 1);
		break;
	case VIRTIO_CONSOLE_PORT_READY:
		p = &c->ports[m.id];
		if (!m.value) {
			pr_warn_ratelimited("virtio-console: the driver failed to add port %u", m.id);
			break;
		}
		p->guest_ready = 1;
		if (p->is_console)
			ctrl_send(c, m.id, VIRTIO_CONSOLE_CONSOLE_PORT, 1);
		if (p->name)
			ctrl_send(c, m.id, VIRTIO_CONSOLE_PORT_NAME, 1);
		if (host_connected(p))
			ctrl_send(c, m.id, VIRTIO_CONSOLE_PORT_OPEN, 1);
		break;
	case VIRTIO_CONSOLE_PORT_OPEN:
		p = &c->ports[m.id];
		__atomic_store_n(&p->guest_connected, !!m.value, __ATOMIC_RELAXED);
		pump_rx(c, p);
		break;
	}
}

static void ctrl_tx(struct console *c)
{
	uint8_t buf[VIRTIO_CONSOLE_CTRL_SIZE];
	struct virtq_elem *e = &c->tx_elem;
	int pushed = 0;

	while (vq_pop(c, CTRL_TXQ, e) > 0) {
		size_t len = iov_to_buf(e->out, e->nout, 0, buf, sizeof(buf));
		uint16_t head = e->head;

		if (vq_push(c, CTRL_TXQ, head, 0))
			break;
		pushed = 1;
		handle_ctrl(c, buf, len);
	}
	if (pushed)
		virtio_notify(&c->vdev, CTRL_TXQ);
}

/* ---- on the device's worker ---- */

static void accept_client(struct console *c, struct cport *p)
{
	int fd, ret;

	fd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			pr_warn_ratelimited("virtio-console: port %u: accept: %s", p->id,
					    strerror(errno));
		return;
	}
	if (p->client_fd >= 0 && !p->client_eof) {
		pr_warn_ratelimited("virtio-console: port %u: already has a client, connection "
				    "refused", p->id);
		close(fd);
		return;
	}
	close_client(c, p);	/* one that hung up and still had undelivered bytes */
	ret = virtio_dev_watch(&c->vdev, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
			       EV_TAG(EV_CLIENT, p->id));
	if (ret) {
		pr_warn_ratelimited("virtio-console: port %u: epoll: %s", p->id, strerror(-ret));
		close(fd);
		return;
	}
	p->client_fd = fd;
	stat_add(&p->clients, 1);
	__atomic_store_n(&p->stat_client, 1, __ATOMIC_RELAXED);
	if (p->guest_ready)
		ctrl_send(c, p->id, VIRTIO_CONSOLE_PORT_OPEN, 1);
	flush_out(c, p);
	pump_rx(c, p);
}

static void client_event(struct console *c, struct cport *p, uint32_t events)
{
	int avail = 0;

	if (p->client_fd < 0)
		return;
	if (events & EPOLLERR) {
		close_client(c, p);
		return;
	}
	if (events & EPOLLOUT)
		flush_out(c, p);
	if (events & (EPOLLHUP | EPOLLRDHUP))
		p->client_eof = 1;
	pump_rx(c, p);
	/* Gone and nothing left to deliver: close now rather than when the guest reads. */
	if (p->client_fd >= 0 && p->client_eof &&
	    (ioctl(p->client_fd, FIONREAD, &avail) < 0 || avail == 0))
		close_client(c, p);
}

static void handle_queue(struct console *c, unsigned int q)
{
	if (q == CTRL_RXQ)
		ctrl_flush(c);
	else if (q == CTRL_TXQ)
		ctrl_tx(c);
	else if (q < 2 || c->multiport) {
		struct cport *p = &c->ports[q < 2 ? 0 : (q - 2) / 2];

		if (q & 1)
			port_tx(c, p);
		else
			pump_rx(c, p);
	}
}

static void begin_session(struct console *c)
{
	if (c->session)
		return;
	c->session = 1;
	c->multiport = virtio_has_feature(&c->vdev, VIRTIO_CONSOLE_F_MULTIPORT);
	if (!c->multiport) {
		/* A single console port the driver opens by itself, no control queues. */
		c->ports[0].guest_ready = 1;
		c->ports[0].guest_connected = 1;
	}
}

static void serve_all(struct console *c)
{
	ctrl_tx(c);
	ctrl_flush(c);
	for (unsigned int i = 0; i < c->nr_ports; i++) {
		struct cport *p = &c->ports[i];

		if (i && !c->multiport)
			break;
		port_tx(c, p);
		flush_out(c, p);
		pump_rx(c, p);
	}
}

static void console_start(struct virtio_dev *vdev)
{
	serve_all(to_console(vdev));	/* whatever the driver queued meanwhile */
}

static void console_queue_notify(struct virtio_dev *vdev, unsigned int q)
{
	handle_queue(to_console(vdev), q);
}

static void console_fd_ready(struct virtio_dev *vdev, uint32_t tag, uint32_t events)
{
	struct console *c = to_console(vdev);
	unsigned int kind = tag >> 16, idx = tag & 0xffff;

	if (idx >= c->nr_ports)
		return;
	if (kind == EV_LISTEN)
		accept_client(c, &c->ports[idx]);
	else if (kind == EV_CLIENT)
		client_event(c, &c->ports[idx], events);
}

/* Port 0's output to a sink that was full: retry every SINK_RETRY_MS while some is left. */
static int console_idle(struct virtio_dev *vdev)
{
	struct console *c = to_console(vdev);
	struct cport *p0 = &c->ports[0];

	if (p0->client_fd >= 0 || p0->sink_fd < 0 || p0->out_len == p0->out_head)
		return -1;
	flush_out(c, p0);
	return p0->out_len != p0->out_head ? SINK_RETRY_MS : -1;
}

/* ---- virtio_dev_ops ---- */

static unsigned int console_num_queues(struct virtio_dev *vdev)
{
	return 2 * (to_console(vdev)->nr_ports + 1);
}

static uint64_t console_features(struct virtio_dev *vdev)
{
	return 1ULL << VIRTIO_CONSOLE_F_MULTIPORT | 1ULL << VIRTIO_F_INDIRECT_DESC |
	       1ULL << VIRTIO_F_EVENT_IDX;
}

static void console_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
	struct console *c = to_console(vdev);

	memset(data, 0, len);
	if (off < CONFIG_SIZE)
		memcpy(data, c->config + off, len < CONFIG_SIZE - off ? len : CONFIG_SIZE - off);
}

static void console_config_write(struct virtio_dev *vdev, uint32_t off, const void *data,
				 uint32_t len)
{
	/* Only emerg_wr is writable, and VIRTIO_CONSOLE_F_EMERG_WRITE is not offered. */
}

static int console_activate(struct virtio_dev *vdev)
{
	begin_session(to_console(vdev));
	return 0;
}

static void console_reset(struct virtio_dev *vdev)
{
	struct console *c = to_console(vdev);

	/* The driver's view goes; sockets, clients and unsent host-bound output stay. */
	c->session = 0;
	c->multiport = 0;
	c->ctrl_head = c->ctrl_count = 0;
	for (unsigned int i = 0; i < c->nr_ports; i++) {
		c->ports[i].guest_ready = 0;
		c->ports[i].guest_connected = 0;
		c->ports[i].rx_held = 0;
	}
}

/* Quiesce: receive buffers held for input that has not come go back to their rings. */
static void console_drain(struct virtio_dev *vdev)
{
	struct console *c = to_console(vdev);

	for (unsigned int i = 0; i < c->nr_ports; i++) {
		if (c->ports[i].rx_held)
			virtq_unpop(&vdev->vqs[rxq_of(i)]);
		c->ports[i].rx_held = 0;
	}
}

/* Saved as "console": the driver's session and what each port looked like to it. */
struct console_state {
	uint8_t session, multiport, nr_ports, pad;
	uint32_t ctrl_count;
	struct {
		uint8_t guest_ready, guest_connected, host_open, pad;
	} ports[VIRTIO_CONSOLE_MAX_PORTS];
};

static int console_save(struct virtio_dev *vdev, const struct dev_state_out *out)
{
	struct console *c = to_console(vdev);
	struct ctrl_msg msgs[64 + 4 * VIRTIO_CONSOLE_MAX_PORTS];
	struct console_state st;
	int ret;

	memset(&st, 0, sizeof(st));
	st.session = (uint8_t)c->session;
	st.multiport = (uint8_t)c->multiport;
	st.nr_ports = (uint8_t)c->nr_ports;
	st.ctrl_count = c->ctrl_count;
	for (unsigned int i = 0; i < c->nr_ports; i++) {
		st.ports[i].guest_ready = (uint8_t)c->ports[i].guest_ready;
		st.ports[i].guest_connected = (uint8_t)c->ports[i].guest_connected;
		st.ports[i].host_open = (uint8_t)host_connected(&c->ports[i]);
	}
	for (unsigned int i = 0; i < c->ctrl_count; i++)
		msgs[i] = c->ctrl[(c->ctrl_head + i) % c->ctrl_max];
	ret = dev_put(out, "console", &st, sizeof(st));
	if (!ret)
		ret = dev_put(out, "console-ctrl", msgs, c->ctrl_count * sizeof(msgs[0]));
	return ret;
}

static int console_load(struct virtio_dev *vdev, const struct dev_state_in *in)
{
	struct console *c = to_console(vdev);
	struct console_state st;
	const void *p;
	size_t len;
	int ret;

	ret = dev_get(in, "console", &st, sizeof(st));
	if (!ret)
		ret = in->get_var(in->opaque, "console-ctrl", &p, &len,
				  c->ctrl_max * sizeof(struct ctrl_msg));
	if (ret)
		return ret;
	if (st.nr_ports != c->nr_ports || st.session > 1 || st.multiport > 1 ||
	    len != st.ctrl_count * sizeof(struct ctrl_msg)) {
		pr_err("state: virtio-console: %u ports and %u control messages do not fit this "
		       "console (%u ports)", st.nr_ports, st.ctrl_count, c->nr_ports);
		return -EINVAL;
	}
	for (unsigned int i = 0; i < st.ctrl_count; i++)
		if (((const struct ctrl_msg *)p)[i].id >= c->nr_ports) {
			pr_err("state: virtio-console: control message for port %u",
			       ((const struct ctrl_msg *)p)[i].id);
			return -EINVAL;
		}
	c->session = st.session;
	c->multiport = st.multiport;
	c->ctrl_head = 0;
	c->ctrl_count = st.ctrl_count;
	memcpy(c->ctrl, p, len);
	for (unsigned int i = 0; i < c->nr_ports; i++) {
		struct cport *port = &c->ports[i];

		port->guest_ready = !!st.ports[i].guest_ready;
		port->guest_connected = !!st.ports[i].guest_connected;
		port->rx_held = 0;
		/* The host end the guest was told about is gone with the old process. */
		if (st.ports[i].host_open && port->guest_ready && !host_connected(port))
			ctrl_send(c, port->id, VIRTIO_CONSOLE_PORT_OPEN, 0);
	}
	return 0;
}

static const struct virtio_dev_ops console_ops = {
	.name = "virtio-console",
	.device_id = VIRTIO_ID_CONSOLE,
	.pci_class = VIRTIO_CONSOLE_PCI_CLASS,
	.queue_max_size = 256,
	.config_size = CONFIG_SIZE,
	.num_queues = console_num_queues,
	.features = console_features,
	.config_read = console_config_read,
	.config_write = console_config_write,
	.activate = console_activate,
	.reset = console_reset,
	.start = console_start,
	.queue_notify = console_queue_notify,
	.fd_ready = console_fd_ready,
	.idle = console_idle,
	.drain = console_drain,
	.save = console_save,
	.load = console_load,
};

/* ---- create / destroy ---- */

static int listen_unix(const char *path, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, probe, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (r != -EADDRINUSE || lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
			goto err_fd;
		/* A socket file: replace it only if nobody is accepting on it. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe < 0 || connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
		    errno != ECONNREFUSED) {
			if (probe >= 0)
				close(probe);
			goto err_fd;
		}
		close(probe);
		if (unlink(path) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			r = -errno;
			goto err_fd;
		}
	}
	if (listen(fd, 4) < 0) {
		r = -errno;
		unlink(path);
		goto err_fd;
	}
	*out = fd;
	return 0;

err_fd:
	close(fd);
	return r;
}

static void free_ports(struct console *c)
{
	for (unsigned int i = 0; i < c->nr_ports; i++) {
		struct cport *p = &c->ports[i];

		if (p->client_fd >= 0)
			close(p->client_fd);
		if (p->listen_fd >= 0) {
			close(p->listen_fd);
			unlink(p->path);
		}
		free(p->path);
		free(p->rx_elem);
		free(p->out);
	}
}

int virtio_console_create(const struct dev_env *env, const struct console_options *o,
			  struct virtio_dev **out)
{
	unsigned int nr = o->nr_ports ? o->nr_ports : 2;
	struct console *c;
	int r;

	if (nr > VIRTIO_CONSOLE_MAX_PORTS || (o->agent_socket && nr < 2))
		return -EINVAL;
	c = calloc(1, sizeof(*c) + nr * sizeof(c->ports[0]));
	if (!c)
		return -ENOMEM;
	c->nr_ports = nr;
	c->buf_limit = o->buf_limit ? o->buf_limit : VIRTIO_CONSOLE_BUF_LIMIT;
	c->ctrl_max = 64 + 4 * nr;
	put_le32(c->config + 4, nr);
	for (unsigned int i = 0; i < nr; i++) {
		struct cport *p = &c->ports[i];

		p->id = i;
		p->listen_fd = p->client_fd = p->sink_fd = -1;
	}
	c->ports[0].is_console = 1;
	c->ports[0].sink_fd = o->console_socket ? -1 : o->console_out_fd;
	if (nr > 1)
		c->ports[1].name = VIRTIO_CONSOLE_AGENT_NAME;

	r = -ENOMEM;
	c->ctrl = calloc(c->ctrl_max, sizeof(*c->ctrl));
	if (!c->ctrl)
		goto err_free;
	for (unsigned int i = 0; i < nr; i++) {
		const char *path = i == 0 ? o->console_socket : i == 1 ? o->agent_socket : NULL;
		struct cport *p = &c->ports[i];

		p->rx_elem = malloc(sizeof(*p->rx_elem));
		if (!p->rx_elem)
			goto err_ports;
		if (!path)
			continue;
		p->path = strdup(path);
		if (!p->path)
			goto err_ports;
		r = listen_unix(path, &p->listen_fd);
		if (r) {
			pr_err("virtio-console: cannot listen on %s: %s", path, strerror(-r));
			goto err_ports;
		}
		r = -ENOMEM;
	}

	r = virtio_dev_init(&c->vdev, &console_ops, env, c);
	if (r)
		goto err_ports;
	for (unsigned int i = 0; !r && i < nr; i++)
		if (c->ports[i].listen_fd >= 0)
			r = virtio_dev_watch(&c->vdev, c->ports[i].listen_fd, EPOLLIN,
					     EV_TAG(EV_LISTEN, i));
	if (r)
		goto err_fds;
	*out = &c->vdev;
	return 0;

err_fds:
	virtio_dev_exit(&c->vdev);
err_ports:
	free_ports(c);
	free(c->ctrl);
err_free:
	free(c);
	return r;
}

void virtio_console_destroy(struct virtio_dev *vdev)
{
	struct console *c;

	if (!vdev)
		return;
	c = to_console(vdev);
	virtio_dev_exit(vdev);	/* stops the worker */
	console_reset(vdev);
	free_ports(c);
	free(c->ctrl);
	free(c);
}

int virtio_console_port_stats(struct virtio_dev *vdev, unsigned int port,
			      struct console_port_stats *st)
{
	struct console *c = to_console(vdev);
	struct cport *p;

	if (port >= c->nr_ports)
		return -EINVAL;
	p = &c->ports[port];
	st->to_guest = __atomic_load_n(&p->to_guest, __ATOMIC_RELAXED);
	st->from_guest = __atomic_load_n(&p->from_guest, __ATOMIC_RELAXED);
	st->dropped = __atomic_load_n(&p->dropped, __ATOMIC_RELAXED);
	st->buffered = __atomic_load_n(&p->buffered, __ATOMIC_RELAXED);
	st->clients = __atomic_load_n(&p->clients, __ATOMIC_RELAXED);
	st->client_connected = __atomic_load_n(&p->stat_client, __ATOMIC_RELAXED);
	st->guest_connected = __atomic_load_n(&p->guest_connected, __ATOMIC_RELAXED);
	return 0;
}

void virtio_console_poll(struct virtio_dev *vdev)
{
	struct console *c = to_console(vdev);

	if (virtio_dev_running(vdev))
		return;
	begin_session(c);
	for (unsigned int i = 0; i < c->nr_ports; i++)
		if (c->ports[i].listen_fd >= 0)
			accept_client(c, &c->ports[i]);
	serve_all(c);
}
