/*
 * virtio-net: the device model (features, config space, control queue, the state contract)
 * and kumo's own data path on the device's I/O worker: TX chains are written to the tap with
 * writev (a checked copy of the header, then the guest's buffers), RX is read with readv
 * straight into the guest's buffers (with MRG_RXBUF, as many chains as the largest frame
 * needs, the unused ones given back). With vhost-net (virtio-net-vhost.c) the kernel serves
 * the data queues and the worker keeps the control queue, the interrupts vhost raises and
 * the tap's link state.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <linux/if.h>
#include <linux/if_tun.h>

#include "devices/dev.h"
#include "devices/virtio-net.h"
#include "mm/mem.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define VIRTIO_ID_NET 1
#define NET_PCI_CLASS 0x020000
#define NET_QUEUE_SIZE 256
#define NET_BUDGET 64			/* packets per queue per round: others get their turn */
#define NET_MAX_FRAME (65550 + 4)	/* a GSO frame with a VLAN tag */
#define NET_SMALL_FRAME (1514 + 4)
#define TAG_CALL 0x100			/* fd_ready tags: tap p is p, vhost call fd q is TAG_CALL+q */

/* ---- pure parts: control commands, headers, the receive filter ---- */

static int has(uint64_t f, unsigned int bit)
{
	return !!(f & (1ULL << bit));
}

void virtio_net_ctrl_reset(struct net_ctrl_state *st, const uint8_t mac[6])
{
	memset(st, 0, sizeof(*st));
	memcpy(st->mac, mac, 6);
	st->promisc = 1;	/* until the driver sets its RX mode, as QEMU does */
	st->curr_pairs = 1;
}

static uint32_t le32_at(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One MAC table (le32 entries, then 6 bytes each) at *off; advances *off. 0 or -1. */
static int mac_table(const uint8_t *d, size_t dlen, size_t *off, uint32_t *n, uint8_t *ovf,
		     uint8_t (*tab)[6])
{
	uint64_t entries, bytes;

	if (dlen - *off < 4)
		return -1;
	entries = le32_at(d + *off);
	*off += 4;
	bytes = entries * 6;
	if (bytes > dlen - *off)
		return -1;
	if (entries > NET_MAC_TABLE) {
		*ovf = 1;
		*n = 0;
	} else {
		*ovf = 0;
		*n = (uint32_t)entries;
		memcpy(tab, d + *off, bytes);
	}
	*off += bytes;
	return 0;
}

int virtio_net_ctrl_apply(struct net_ctrl_state *st, uint64_t features, unsigned int max_pairs,
			  const uint8_t *buf, size_t len)
{
	struct net_ctrl_state t;
	const uint8_t *d = buf + 2;
	size_t dlen, off = 0;

	if (len < 2)
		return VIRTIO_NET_ERR;
	dlen = len - 2;
	t = *st;
	switch (buf[0] << 8 | buf[1]) {
	case VIRTIO_NET_CTRL_RX << 8 | VIRTIO_NET_CTRL_RX_PROMISC:
	case VIRTIO_NET_CTRL_RX << 8 | VIRTIO_NET_CTRL_RX_ALLMULTI:
		if (!has(features, VIRTIO_NET_F_CTRL_RX) || dlen != 1 || d[0] > 1)
			return VIRTIO_NET_ERR;
		if (buf[1] == VIRTIO_NET_CTRL_RX_PROMISC)
			t.promisc = d[0];
		else
			t.allmulti = d[0];
		break;
	case VIRTIO_NET_CTRL_MAC << 8 | VIRTIO_NET_CTRL_MAC_TABLE_SET:
		if (!has(features, VIRTIO_NET_F_CTRL_RX) ||
		    mac_table(d, dlen, &off, &t.n_uni, &t.uni_overflow, t.uni) ||
		    mac_table(d, dlen, &off, &t.n_multi, &t.multi_overflow, t.multi) ||
		    off != dlen)
			return VIRTIO_NET_ERR;
		break;
	case VIRTIO_NET_CTRL_MAC << 8 | VIRTIO_NET_CTRL_MAC_ADDR_SET:
		if (!has(features, VIRTIO_NET_F_CTRL_MAC_ADDR) || dlen != 6)
			return VIRTIO_NET_ERR;
		memcpy(t.mac, d, 6);
		break;
	case VIRTIO_NET_CTRL_ANNOUNCE << 8 | VIRTIO_NET_CTRL_ANNOUNCE_ACK:
		if (!has(features, VIRTIO_NET_F_GUEST_ANNOUNCE) || dlen)
			return VIRTIO_NET_ERR;
		t.announce_acked = 1;
		break;
	case VIRTIO_NET_CTRL_MQ << 8 | VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: {
		uint16_t n;

		if (!has(features, VIRTIO_NET_F_MQ) || dlen != 2)
			return VIRTIO_NET_ERR;
		n = (uint16_t)(d[0] | d[1] << 8);
		if (!n || n > max_pairs)
			return VIRTIO_NET_ERR;
		t.curr_pairs = n;
		break;
	}
	default:
		return VIRTIO_NET_ERR;
	}
	*st = t;
	return VIRTIO_NET_OK;
}

int virtio_net_hdr_check(const struct virtio_net_hdr *h, uint64_t features, size_t frame_len,
			 const char **why)
{
	unsigned int gso = h->gso_type & ~VIRTIO_NET_HDR_GSO_ECN;

	*why = NULL;
	if (frame_len < 14)
		*why = "frame shorter than an Ethernet header";
	else if (frame_len > NET_MAX_FRAME)
		*why = "frame longer than 64 KiB";
	else if (h->flags & ~(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID))
		*why = "unknown header flags";
	else if ((h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !has(features, VIRTIO_NET_F_CSUM))
		*why = "checksum offload not negotiated";
	else if ((h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
		 (uint32_t)h->csum_start + h->csum_offset + 2 > frame_len)
		*why = "checksum field outside the frame";
	else if (gso == VIRTIO_NET_HDR_GSO_TCPV4 && !has(features, VIRTIO_NET_F_HOST_TSO4))
		*why = "TSO4 not negotiated";
	else if (gso == VIRTIO_NET_HDR_GSO_TCPV6 && !has(features, VIRTIO_NET_F_HOST_TSO6))
		*why = "TSO6 not negotiated";
	else if (gso != VIRTIO_NET_HDR_GSO_NONE && gso != VIRTIO_NET_HDR_GSO_TCPV4 &&
		 gso != VIRTIO_NET_HDR_GSO_TCPV6)
		*why = "unsupported GSO type";
	else if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) &&
		 (gso == VIRTIO_NET_HDR_GSO_NONE || !has(features, VIRTIO_NET_F_HOST_ECN)))
		*why = "ECN without TSO or not negotiated";
	else if (gso != VIRTIO_NET_HDR_GSO_NONE &&
		 (!h->gso_size || !(h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) ||
		  h->hdr_len > frame_len))
		*why = "GSO without a segment size, a checksum or with a header past the frame";
	return *why ? -EINVAL : 0;
}

static int mac_in(const uint8_t (*tab)[6], uint32_t n, const uint8_t *dst)
{
	for (uint32_t i = 0; i < n && i < NET_MAC_TABLE; i++)
		if (!memcmp(tab[i], dst, 6))
			return 1;
	return 0;
}

int virtio_net_rx_accept(const struct net_ctrl_state *st, const uint8_t *dst)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	if (st->promisc)
		return 1;
	if (dst[0] & 1) {
		if (!memcmp(dst, bcast, 6) || st->allmulti || st->multi_overflow)
			return 1;
		return mac_in(st->multi, st->n_multi, dst);
	}
	if (!memcmp(dst, st->mac, 6) || st->uni_overflow)
		return 1;
	return mac_in(st->uni, st->n_uni, dst);
}

/* ---- options ---- */

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	char end;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &end) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return (mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) ? -1 : 0;
}

int virtio_net_parse_option(const char *arg, struct net_options *o, char *err, size_t errlen)
{
	char buf[256], *save = NULL, *tok;
	int have_mac = 0;
	uint32_t h = 2166136261u;

	memset(o, 0, sizeof(*o));
	o->queues = 1;
	o->vhost = -1;
	if (strlen(arg) >= sizeof(buf)) {
		snprintf(err, errlen, "too long");
		return -EINVAL;
	}
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *v = strchr(tok, '=');

		if (!v) {
			snprintf(err, errlen, "'%s': expected key=value", tok);
			return -EINVAL;
		}
		*v++ = 0;
		if (!strcmp(tok, "tap")) {
			if (!*v || strlen(v) >= sizeof(o->tap) || strchr(v, '/') ||
			    strchr(v, ' ')) {
				snprintf(err, errlen, "tap name '%s': 1..15 characters, no '/'", v);
				return -EINVAL;
			}
			strcpy(o->tap, v);
		} else if (!strcmp(tok, "mac")) {
			if (parse_mac(v, o->mac)) {
				snprintf(err, errlen, "mac '%s': want a unicast xx:xx:xx:xx:xx:xx", v);
				return -EINVAL;
			}
			have_mac = 1;
		} else if (!strcmp(tok, "queues")) {
			char *end;
			unsigned long n = strtoul(v, &end, 10);

			if (*end || !*v || !n || n > NET_MAX_PAIRS) {
				snprintf(err, errlen, "queues '%s': 1..%d", v, NET_MAX_PAIRS);
				return -EINVAL;
			}
			o->queues = (unsigned int)n;
		} else if (!strcmp(tok, "vhost")) {
			if (!strcmp(v, "on"))
				o->vhost = 1;
			else if (!strcmp(v, "off"))
				o->vhost = 0;
			else {
				snprintf(err, errlen, "vhost '%s': on or off", v);
				return -EINVAL;
			}
		} else {
			snprintf(err, errlen, "unknown key '%s' (tap, mac, queues, vhost)", tok);
			return -EINVAL;
		}
	}
	if (!o->tap[0]) {
		snprintf(err, errlen, "tap=NAME is required");
		return -EINVAL;
	}
	if (!have_mac) {
		/* Stable per tap name: the same config gives the same machine. */
		for (const char *p = o->tap; *p; p++)
			h = (h ^ (uint8_t)*p) * 16777619u;
		o->mac[0] = 0x52;
		o->mac[1] = 0x54;
		o->mac[2] = 0x00;
		o->mac[3] = (uint8_t)(h >> 16);
		o->mac[4] = (uint8_t)(h >> 8);
		o->mac[5] = (uint8_t)h;
	}
	return 0;
}

/* ---- the device ---- */

static struct virtio_net *to_net(struct virtio_dev *vdev)
{
	return vdev->priv;
}

static unsigned int ctrl_q(const struct virtio_net *n)
{
	return 2 * n->pairs;
}

static unsigned int net_num_queues(struct virtio_dev *vdev)
{
	return 2 * to_net(vdev)->pairs + 1;
}

static uint64_t net_features(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);
	uint64_t f = 1ULL << VIRTIO_NET_F_CSUM | 1ULL << VIRTIO_NET_F_GUEST_CSUM |
		     1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_NET_F_GUEST_TSO4 |
		     1ULL << VIRTIO_NET_F_GUEST_TSO6 | 1ULL << VIRTIO_NET_F_GUEST_ECN |
		     1ULL << VIRTIO_NET_F_HOST_TSO4 | 1ULL << VIRTIO_NET_F_HOST_TSO6 |
		     1ULL << VIRTIO_NET_F_HOST_ECN | 1ULL << VIRTIO_NET_F_MRG_RXBUF |
		     1ULL << VIRTIO_NET_F_STATUS | 1ULL << VIRTIO_NET_F_CTRL_VQ |
		     1ULL << VIRTIO_NET_F_CTRL_RX | 1ULL << VIRTIO_NET_F_GUEST_ANNOUNCE |
		     1ULL << VIRTIO_NET_F_CTRL_MAC_ADDR | 1ULL << VIRTIO_F_EVENT_IDX |
		     1ULL << VIRTIO_F_INDIRECT_DESC;

	if (n->pairs > 1)
		f |= 1ULL << VIRTIO_NET_F_MQ;
	return f;
}

static void net_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
	struct virtio_net *n = to_net(vdev);
	struct virtio_net_config c;

	memset(data, 0, len);
	pthread_mutex_lock(&n->cfg_lock);
	memcpy(c.mac, n->ctrl.mac, 6);
	c.status = n->status;
	pthread_mutex_unlock(&n->cfg_lock);
	c.max_virtqueue_pairs = (uint16_t)n->pairs;
	if (off < sizeof(c))
		memcpy(data, (uint8_t *)&c + off, len < sizeof(c) - off ? len : sizeof(c) - off);
}

static void net_config_write(struct virtio_dev *vdev, uint32_t off, const void *data,
			     uint32_t len)
{
	/* Read-only in virtio 1.x: the MAC changes through the control queue. */
}

static void set_status_bits(struct virtio_net *n, uint16_t set, uint16_t clear, int notify)
{
	uint16_t old;

	pthread_mutex_lock(&n->cfg_lock);
	old = n->status;
	n->status = (uint16_t)((old & ~clear) | set);
	if (n->status != old)
		n->vdev.config_generation++;
	pthread_mutex_unlock(&n->cfg_lock);
	if (notify && n->status != old && virtio_has_feature(&n->vdev, VIRTIO_NET_F_STATUS) &&
	    n->vdev.tops && n->vdev.tops->notify_config)
		n->vdev.tops->notify_config(&n->vdev);
}

void virtio_net_set_link(struct virtio_dev *vdev, int up)
{
	struct virtio_net *n = to_net(vdev);

	if (up)
		set_status_bits(n, VIRTIO_NET_S_LINK_UP, 0, 1);
	else
		set_status_bits(n, 0, VIRTIO_NET_S_LINK_UP, 1);
}

/* The tap's offloads: what the guest said it can receive. */
static void tap_set_offload(struct virtio_net *n)
{
	struct virtio_dev *vdev = &n->vdev;
	unsigned int off = 0;

	if (!n->is_tap)
		return;
	if (virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_CSUM)) {
		off |= TUN_F_CSUM;
		if (virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO4))
			off |= TUN_F_TSO4;
		if (virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO6))
			off |= TUN_F_TSO6;
		if ((off & (TUN_F_TSO4 | TUN_F_TSO6)) &&
		    virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_ECN))
			off |= TUN_F_TSO_ECN;
	}
	for (unsigned int p = 0; p < n->pairs; p++)
		if (n->tap_fd[p] >= 0 && ioctl(n->tap_fd[p], TUNSETOFFLOAD, off) < 0)
			pr_warn_ratelimited("%s: TUNSETOFFLOAD %#x: %s", n->opts.tap, off,
					    strerror(errno));
}

/* Only the pairs the driver uses get traffic from the tap (multiqueue taps). */
static void tap_set_queues(struct virtio_net *n)
{
	struct ifreq ifr;

	if (!n->is_tap || n->pairs < 2)
		return;
	for (unsigned int p = 0; p < n->pairs; p++) {
		memset(&ifr, 0, sizeof(ifr));
		ifr.ifr_flags = p < n->ctrl.curr_pairs ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
		/* EINVAL: already in that state. */
		if (n->tap_fd[p] >= 0 && ioctl(n->tap_fd[p], TUNSETQUEUE, &ifr) < 0 &&
		    errno != EINVAL)
			pr_warn_ratelimited("%s: TUNSETQUEUE on queue %u: %s", n->opts.tap, p,
					    strerror(errno));
	}
}

static void tap_watch(struct virtio_net *n, unsigned int p, int on)
{
	uint32_t ev = n->use_vhost ? 0 : EPOLLIN;	/* vhost: only errors (the tap went away) */

	if (n->tap_fd[p] < 0 || n->watching[p] == on || (on && n->tap_gone))
		return;
	if (on) {
		if (virtio_dev_watch(&n->vdev, n->tap_fd[p], ev, p))
			return;
	} else {
		virtio_dev_unwatch(&n->vdev, n->tap_fd[p]);
	}
	n->watching[p] = on;
}

static void tap_gone(struct virtio_net *n, int err)
{
	if (n->tap_gone)
		return;
	pr_warn("%s: the tap went away (%s): link down", n->opts.tap,
		err ? strerror(err) : "hang-up");
	n->tap_gone = 1;
	for (unsigned int p = 0; p < n->pairs; p++)
		tap_watch(n, p, 0);
	set_status_bits(n, 0, VIRTIO_NET_S_LINK_UP, 1);
}

static void broken(struct virtio_net *n, unsigned int q, const char *what)
{
	pr_warn_ratelimited("%s: queue %u: %s", n->opts.tap, q, what);
	virtio_set_needs_reset(&n->vdev, q);
}

/*
 * The next chain of q: 1, 0 when the ring is empty, -1 when it is broken (reported). With
 * event idx an empty ring first asks for a kick at the next entry and looks once more, so a
 * chain added meanwhile is not left without one.
 */
static int pop(struct virtio_net *n, unsigned int q, const char *what)
{
	const struct guest_mem *m = n->vdev.env->mem;
	struct virtq *vq = &n->vdev.vqs[q];
	int ret = virtq_pop(m, vq, &n->elem);

	if (!ret && vq->event_idx) {
		virtq_set_avail_event(m, vq);
		ret = virtq_pop(m, vq, &n->elem);
	}
	if (ret < 0) {
		broken(n, q, what);
		return -1;
	}
	return ret;
}

/* Return a chain to the guest (no interrupt yet). 0, or -1 with the queue marked broken. */
static int push(struct virtio_net *n, unsigned int q, uint16_t head, uint32_t len)
{
	if (!virtq_push(n->vdev.env->mem, &n->vdev.vqs[q], head, len))
		return 0;
	broken(n, q, "used ring outside guest RAM");
	return -1;
}

/* ---- transmit ---- */

static void tx_queue(struct virtio_net *n, unsigned int p)
{
	struct virtio_dev *vdev = &n->vdev;
	unsigned int q = 2 * p + 1, sent = 0;
	struct virtq *vq = &vdev->vqs[q];
	struct virtq_elem *e = &n->elem;
	struct iovec iov[VIRTQ_MAX_SEGS + 1];
	struct virtio_net_hdr h;
	const char *why;
	int ret;

	while (!vq->broken) {
		unsigned int k = 1;
		size_t skip = NET_HDR_LEN;

		if (sent == NET_BUDGET) {
			/* Come back after the other queues' events. */
			if (eventfd_write(vdev->kick_fd[q], 1) < 0)
				pr_warn_ratelimited("%s: kick: %s", n->opts.tap, strerror(errno));
			break;
		}
		ret = pop(n, q, "malformed transmit chain");
		if (ret < 0)
			return;
		if (!ret)
			break;
		if (e->nin || e->out_len < NET_HDR_LEN) {
			broken(n, q, "transmit chain without a header or with writable buffers");
			return;
		}
		iov_to_buf(e->out, e->nout, 0, &h, sizeof(h));
		if (virtio_net_hdr_check(&h, vdev->driver_features, e->out_len - NET_HDR_LEN,
					 &why)) {
			broken(n, q, why);
			return;
		}
		/* Our checked copy of the header, then the frame from guest memory. */
		iov[0] = (struct iovec){ &h, NET_HDR_LEN };
		for (unsigned int i = 0; i < e->nout; i++) {
			if (skip >= e->out[i].iov_len) {
				skip -= e->out[i].iov_len;
				continue;
			}
			iov[k++] = (struct iovec){ (uint8_t *)e->out[i].iov_base + skip,
						   e->out[i].iov_len - skip };
			skip = 0;
		}
		if (n->tap_gone ||
		    !(__atomic_load_n(&n->status, __ATOMIC_RELAXED) & VIRTIO_NET_S_LINK_UP) ||
		    writev(n->tap_fd[p], iov, (int)k) < 0) {
			n->stats_tx_dropped++;
			vdev->stats_errors++;
		} else {
			n->stats_tx_packets++;
			vdev->stats_requests++;
		}
		if (push(n, q, e->head, 0))
			return;
		sent++;
	}
	if (sent)
		virtio_notify(vdev, q);
}

/* ---- receive ---- */

/* Give back the last k chains popped from vq. */
static void unpop_n(struct virtq *vq, unsigned int k)
{
	while (k--)
		virtq_unpop(vq);
}

/*
 * The receive chains popped and not used yet, in ring order: their iovecs back to back in
 * n->rx_iov. They carry over from one frame to the next within one rx_queue() call (a frame
 * usually fills one of the chains gathered for the largest frame), and go back to the ring
 * (virtq_unpop: they are the last ones popped) before it returns.
 */
struct rx_chains {
	unsigned int nch, niov;
	size_t total;
};

/* Pop chains until they hold need bytes (one chain without MRG_RXBUF). 1 when they do, 0 when
 * the ring ran dry first, -1 when the queue is broken (reported). */
static int rx_gather(struct virtio_net *n, unsigned int q, size_t need, int mrg,
		     struct rx_chains *c)
{
	struct virtq_elem *e = &n->elem;
	int ret;

	while (mrg ? c->total < need : !c->nch) {
		ret = virtq_pop(n->vdev.env->mem, &n->vdev.vqs[q], e);
		if (ret < 0) {
			broken(n, q, "malformed receive chain");
			return -1;
		}
		if (!ret)
			return 0;
		if (e->nout || e->in_len < NET_HDR_LEN || e->in_len > UINT32_MAX) {
			broken(n, q, "receive chain with readable buffers or no room for a header");
			return -1;
		}
		if (c->niov + e->nin > VIRTQ_MAX_SEGS) {
			virtq_unpop(&n->vdev.vqs[q]);
			return c->nch > 0;	/* read what fits; a larger frame is dropped */
		}
		memcpy(&n->rx_iov[c->niov], e->in, e->nin * sizeof(e->in[0]));
		c->niov += e->nin;
		n->rx_head[c->nch] = e->head;
		n->rx_nin[c->nch] = (uint16_t)e->nin;
		n->rx_len[c->nch] = (uint32_t)e->in_len;
		c->total += e->in_len;
		c->nch++;
	}
	return 1;
}

/* Drop the first k chains of c (used by a frame). */
static void rx_consume(struct virtio_net *n, struct rx_chains *c, unsigned int k)
{
	unsigned int iovs = 0;

	for (unsigned int i = 0; i < k; i++) {
		iovs += n->rx_nin[i];
		c->total -= n->rx_len[i];
	}
	memmove(n->rx_iov, n->rx_iov + iovs, (c->niov - iovs) * sizeof(n->rx_iov[0]));
	memmove(n->rx_head, n->rx_head + k, (c->nch - k) * sizeof(n->rx_head[0]));
	memmove(n->rx_nin, n->rx_nin + k, (c->nch - k) * sizeof(n->rx_nin[0]));
	memmove(n->rx_len, n->rx_len + k, (c->nch - k) * sizeof(n->rx_len[0]));
	c->niov -= iovs;
	c->nch -= k;
}

/* Whether the guest has a receive buffer; with event idx, ask for a kick when it adds one. */
static int rx_ring_empty(struct virtio_net *n, unsigned int q)
{
	const struct guest_mem *m = n->vdev.env->mem;
	struct virtq *vq = &n->vdev.vqs[q];
	int ret;

	virtq_set_avail_event(m, vq);
	ret = virtq_pop(m, vq, &n->elem);
	if (ret > 0)
		virtq_unpop(vq);
	return ret == 0;
}

/* Give one frame of len bytes in c's first chains to the guest. 0 or -1 (broken). */
static int rx_deliver(struct virtio_net *n, unsigned int q, struct rx_chains *c, size_t len)
{
	unsigned int used = 0;
	size_t left = len;
	uint16_t nbuf;

	for (; left && used < c->nch; used++)
		left -= left < n->rx_len[used] ? left : n->rx_len[used];
	nbuf = (uint16_t)used;
	iov_from_buf(n->rx_iov, c->niov, 10, &nbuf, sizeof(nbuf));
	virtio_mark_written(n->vdev.env->mem, n->rx_iov, c->niov, len);
	left = len;
	for (unsigned int i = 0; i < used; i++) {
		uint32_t l = left < n->rx_len[i] ? (uint32_t)left : n->rx_len[i];

		if (push(n, q, n->rx_head[i], l))
			return -1;
		left -= l;
	}
	rx_consume(n, c, used);
	return 0;
}

static void rx_queue(struct virtio_net *n, unsigned int p)
{
	struct virtio_dev *vdev = &n->vdev;
	unsigned int q = 2 * p, got = 0, delivered = 0;
	struct virtq *vq = &vdev->vqs[q];
	int mrg = virtio_has_feature(vdev, VIRTIO_NET_F_MRG_RXBUF);
	int big = virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO4) ||
		  virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO6);
	size_t need = NET_HDR_LEN + (big ? NET_MAX_FRAME : NET_SMALL_FRAME);
	struct rx_chains c = { 0 };

	if (n->tap_gone || !vq->ready || p >= n->ctrl.curr_pairs)
		return;
	while (!vq->broken && got < NET_BUDGET) {
		uint8_t dst[6];
		ssize_t len;
		int ret = rx_gather(n, q, need, mrg, &c);

		if (ret < 0)
			return;
		if (!ret) {
			/* No room: stop reading the tap until the guest adds buffers. */
			if (rx_ring_empty(n, q) || mrg)
				tap_watch(n, p, 0);
			break;
		}
		len = readv(n->tap_fd[p], n->rx_iov, (int)c.niov);
		if (len < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (len <= 0 && (!len || errno == EBADFD || errno == EIO || errno == ENXIO)) {
			tap_gone(n, len ? errno : 0);
			break;
		}
		got++;
		if (len < 0 || (size_t)len < NET_HDR_LEN + 6 ||
		    iov_to_buf(n->rx_iov, c.niov, NET_HDR_LEN, dst, 6) != 6 ||
		    !virtio_net_rx_accept(&n->ctrl, dst)) {
			/* Larger than the buffers (the tap dropped it), runt, or filtered out:
			 * the chains take the next frame. */
			n->stats_rx_dropped++;
			vdev->stats_errors++;
			continue;
		}
		if (rx_deliver(n, q, &c, (size_t)len))
			return;
		delivered++;
		n->stats_rx_packets++;
		vdev->stats_requests++;
	}
	unpop_n(vq, c.nch);
	if (delivered)
		virtio_notify(vdev, q);
}

/* ---- control queue ---- */

static void ctrl_queue(struct virtio_net *n)
{
	struct virtio_dev *vdev = &n->vdev;
	unsigned int q = ctrl_q(n), done = 0;
	struct virtq *vq = &vdev->vqs[q];
	struct virtq_elem *e = &n->elem;
	uint8_t buf[NET_CTRL_MAX];
	int ret;

	while (!vq->broken) {
		struct net_ctrl_state st;
		uint8_t ack;

		ret = pop(n, q, "malformed control chain");
		if (ret < 0)
			return;
		if (!ret)
			break;
		if (e->out_len < 2 || e->out_len > NET_CTRL_MAX || e->in_len < 1) {
			broken(n, q, "control command without a header or an ack byte, or too long");
			return;
		}
		iov_to_buf(e->out, e->nout, 0, buf, e->out_len);
		pthread_mutex_lock(&n->cfg_lock);
		st = n->ctrl;
		pthread_mutex_unlock(&n->cfg_lock);
		ack = (uint8_t)virtio_net_ctrl_apply(&st, vdev->driver_features, n->pairs, buf,
						     e->out_len);
		if (ack == VIRTIO_NET_OK) {
			unsigned int old_pairs = n->ctrl.curr_pairs;

			pthread_mutex_lock(&n->cfg_lock);
			n->ctrl = st;
			n->ctrl.announce_acked = 0;
			pthread_mutex_unlock(&n->cfg_lock);
			if (st.announce_acked)
				set_status_bits(n, 0, VIRTIO_NET_S_ANNOUNCE, 0);
			if (st.curr_pairs != old_pairs) {
				tap_set_queues(n);
				for (unsigned int p = 0; p < n->pairs && !n->use_vhost; p++)
					tap_watch(n, p, p < st.curr_pairs);
			}
		} else {
			pr_debug("%s: control command %u.%u refused", n->opts.tap, buf[0], buf[1]);
		}
		iov_from_buf(e->in, e->nin, 0, &ack, 1);
		virtio_mark_written(vdev->env->mem, e->in, e->nin, 1);
		if (push(n, q, e->head, 1))
			return;
		done++;
	}
	if (done)
		virtio_notify(vdev, q);
}

/* ---- worker ops ---- */

static void net_queue_notify(struct virtio_dev *vdev, unsigned int q)
{
	struct virtio_net *n = to_net(vdev);

	if (q == ctrl_q(n)) {
		ctrl_queue(n);
	} else if (n->use_vhost) {
		return;		/* vhost owns the data queues */
	} else if (q & 1) {
		tx_queue(n, q / 2);
	} else if (q / 2 < n->ctrl.curr_pairs) {
		tap_watch(n, q / 2, 1);
		rx_queue(n, q / 2);
	}
}

static void net_start(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);

	if (n->announce_pending) {
		n->announce_pending = 0;
		set_status_bits(n, VIRTIO_NET_S_ANNOUNCE, 0, 1);
	}
	for (unsigned int q = 0; q < vdev->nqueues; q++)
		net_queue_notify(vdev, q);
}

static void net_fd_ready(struct virtio_dev *vdev, uint32_t tag, uint32_t events)
{
	struct virtio_net *n = to_net(vdev);
	uint64_t v;

	if (tag >= TAG_CALL) {
		unsigned int q = tag - TAG_CALL;

		/* vhost used the ring and decided the guest wants an interrupt. */
		if (q < 2 * n->pairs && eventfd_read(n->call_fd[q], &v) == 0 && vdev->tops)
			vdev->tops->notify_queue(vdev, q);
		return;
	}
	if (tag >= n->pairs)
		return;
	if (events & (EPOLLERR | EPOLLHUP)) {
		tap_gone(n, 0);
		return;
	}
	rx_queue(n, tag);
}

/*
 * Once a second: is the tap still there? Its deletion wakes a reader only (EPOLLIN), which
 * with vhost-net, or with no receive buffers, kumo is not; queue 0 is always attached, so
 * TUNGETIFF failing with EBADFD there means the device is gone.
 */
static int net_idle(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);
	struct timespec now;
	struct ifreq ifr;

	if (!n->is_tap || n->tap_gone)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec != n->last_check) {
		n->last_check = now.tv_sec;
		if (ioctl(n->tap_fd[0], TUNGETIFF, &ifr) < 0 && errno == EBADFD) {
			tap_gone(n, EBADFD);
			return -1;
		}
	}
	return 1000;
}

static int net_activate(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);
	int ret;

	tap_set_offload(n);
	tap_set_queues(n);
	if (n->use_vhost) {
		ret = net_vhost_start(n);
		if (ret)
			return ret;
		/* Errors only, on queue 0: it is always attached (a detached queue polls as an
		 * error), and the tap going away detaches them all. */
		tap_watch(n, 0, 1);
		return 0;
	}
	for (unsigned int p = 0; p < n->pairs; p++)
		tap_watch(n, p, p < n->ctrl.curr_pairs);
	return 0;
}

/* Hand the guest what vhost used but did not signal yet through the worker. */
static void vhost_flush_calls(struct virtio_net *n)
{
	uint64_t v;

	for (unsigned int q = 0; q < 2 * n->pairs; q++)
		if (n->call_fd[q] >= 0 && eventfd_read(n->call_fd[q], &v) == 0 && n->vdev.tops)
			n->vdev.tops->notify_queue(&n->vdev, q);
}

static void net_reset(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);

	if (n->use_vhost) {
		net_vhost_stop(n);
		vhost_flush_calls(n);
	}
	for (unsigned int p = 0; p < n->pairs; p++)
		tap_watch(n, p, 0);
	pthread_mutex_lock(&n->cfg_lock);
	virtio_net_ctrl_reset(&n->ctrl, n->opts.mac);
	n->status = n->tap_gone ? 0 : VIRTIO_NET_S_LINK_UP;
	pthread_mutex_unlock(&n->cfg_lock);
	n->announce_pending = 0;
	tap_set_queues(n);
}

static void net_drain(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);

	/* kumo's own path holds nothing between events; vhost gives back its ring indices. */
	if (n->use_vhost) {
		net_vhost_stop(n);
		vhost_flush_calls(n);
	}
	for (unsigned int p = 0; p < n->pairs; p++)
		tap_watch(n, p, 0);
}

/* Saved as "net": the control state and the status the guest reads. */
struct net_saved {
	struct net_ctrl_state ctrl;
	uint16_t status;
	uint8_t pad[2];
	uint32_t pairs;
};
_Static_assert(sizeof(struct net_ctrl_state) == 796, "net control state layout");
_Static_assert(sizeof(struct net_saved) == 804, "net state layout");

static int net_save(struct virtio_dev *vdev, const struct dev_state_out *out)
{
	struct virtio_net *n = to_net(vdev);
	struct net_saved s;

	memset(&s, 0, sizeof(s));
	pthread_mutex_lock(&n->cfg_lock);
	s.ctrl = n->ctrl;
	s.status = n->status;
	pthread_mutex_unlock(&n->cfg_lock);
	s.pairs = n->pairs;
	return dev_put(out, "net", &s, sizeof(s));
}

static int net_bad(struct virtio_net *n, const char *what, uint64_t v)
{
	pr_err("state: virtio-net %s: %s %#" PRIx64 " is not possible here", n->opts.tap, what, v);
	return -EINVAL;
}

static int net_load(struct virtio_dev *vdev, const struct dev_state_in *in)
{
	struct virtio_net *n = to_net(vdev);
	struct net_saved s;
	uint8_t st = __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
	int ret = dev_get(in, "net", &s, sizeof(s));

	if (ret)
		return ret;
	if (s.pairs != n->pairs)
		return net_bad(n, "queue pairs", s.pairs);
	if (!s.ctrl.curr_pairs || s.ctrl.curr_pairs > n->pairs)
		return net_bad(n, "queue pairs in use", s.ctrl.curr_pairs);
	if (s.ctrl.n_uni > NET_MAC_TABLE || s.ctrl.n_multi > NET_MAC_TABLE)
		return net_bad(n, "MAC table entries", (uint64_t)s.ctrl.n_uni << 32 | s.ctrl.n_multi);
	if ((s.ctrl.promisc | s.ctrl.allmulti | s.ctrl.uni_overflow | s.ctrl.multi_overflow |
	     s.ctrl.announce_acked) > 1)
		return net_bad(n, "RX mode flag", 2);
	if (s.status & ~(VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE))
		return net_bad(n, "status", s.status);
	pthread_mutex_lock(&n->cfg_lock);
	n->ctrl = s.ctrl;
	/* The link is this host's tap's; the announce is still owed if it was not acked. */
	n->status = (uint16_t)((s.status & VIRTIO_NET_S_ANNOUNCE) |
			       (n->tap_gone ? 0 : VIRTIO_NET_S_LINK_UP));
	pthread_mutex_unlock(&n->cfg_lock);
	/* Moved (or restored): tell the network where the guest now is. */
	n->announce_pending = virtio_has_feature(vdev, VIRTIO_NET_F_GUEST_ANNOUNCE) &&
			      virtio_has_feature(vdev, VIRTIO_NET_F_STATUS) &&
			      (st & VIRTIO_STATUS_DRIVER_OK);
	return 0;
}

static const struct virtio_dev_ops net_ops = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.pci_class = NET_PCI_CLASS,
	.queue_max_size = NET_QUEUE_SIZE,
	.config_size = sizeof(struct virtio_net_config),
	.num_queues = net_num_queues,
	.features = net_features,
	.config_read = net_config_read,
	.config_write = net_config_write,
	.activate = net_activate,
	.reset = net_reset,
	.queue_notify = net_queue_notify,
	.start = net_start,
	.fd_ready = net_fd_ready,
	.idle = net_idle,
	.drain = net_drain,
	.save = net_save,
	.load = net_load,
};

/* ---- creation ---- */

static int tap_open(const char *name, int multi, int *fd)
{
	struct ifreq ifr;
	int hdr = NET_HDR_LEN;

	*fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (*fd < 0) {
		pr_err("tap %s: /dev/net/tun: %s", name, strerror(errno));
		return -errno;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi ? IFF_MULTI_QUEUE : 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(*fd, TUNSETIFF, &ifr) < 0) {
		int err = errno;

		pr_err("tap %s: TUNSETIFF: %s%s", name, strerror(err),
		       err == EPERM ? " (needs CAP_NET_ADMIN or a tap owned by this user)" :
		       err == EINVAL ? " (an existing tap with other flags, e.g. not multiqueue)" :
		       "");
		close(*fd);
		*fd = -1;
		return -err;
	}
	if (ioctl(*fd, TUNSETVNETHDRSZ, &hdr) < 0 || ioctl(*fd, TUNSETOFFLOAD, 0) < 0) {
		int err = errno;

		pr_err("tap %s: TUNSETVNETHDRSZ/TUNSETOFFLOAD: %s", name, strerror(err));
		close(*fd);
		*fd = -1;
		return -err;
	}
	return 0;
}

static int net_new(const struct dev_env *env, const struct net_options *o, const int *fds,
		   int is_tap, struct virtio_dev **out)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	int ret;

	if (!n)
		return -ENOMEM;
	n->opts = *o;
	n->pairs = o->queues;
	n->is_tap = is_tap;
	for (unsigned int p = 0; p < NET_MAX_PAIRS; p++) {
		n->tap_fd[p] = p < n->pairs ? fds[p] : -1;
		n->vhost_fd[p] = -1;
	}
	for (unsigned int q = 0; q < 2 * NET_MAX_PAIRS; q++)
		n->call_fd[q] = -1;
	pthread_mutex_init(&n->cfg_lock, NULL);
	virtio_net_ctrl_reset(&n->ctrl, o->mac);
	n->status = VIRTIO_NET_S_LINK_UP;
	n->vdev.priv = n;	/* num_queues and features read it */
	ret = virtio_dev_init(&n->vdev, &net_ops, env, n);
	if (ret)
		goto err;
	if (is_tap && o->vhost != 0) {
		ret = net_vhost_open(n);
		if (ret && o->vhost == 1) {
			pr_err("tap %s: vhost=on but vhost-net is not usable: %s", o->tap,
			       strerror(-ret));
			goto err_dev;
		}
		if (ret)
			pr_info("tap %s: vhost-net not usable (%s): kumo moves the packets",
				o->tap, strerror(-ret));
		else
			n->use_vhost = 1;
	}
	if (n->use_vhost) {
		for (unsigned int q = 0; q < 2 * n->pairs; q++) {
			n->call_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			if (n->call_fd[q] < 0) {
				ret = -errno;
				goto err_vhost;
			}
			ret = virtio_dev_watch(&n->vdev, n->call_fd[q], EPOLLIN, TAG_CALL + q);
			if (ret)
				goto err_vhost;
			/* vhost takes the data queues' kicks; the worker must not eat them. */
			virtio_dev_unwatch(&n->vdev, n->vdev.kick_fd[q]);
		}
	}
	pr_info("tap %s: virtio-net %02x:%02x:%02x:%02x:%02x:%02x, %u queue pair%s, %s", o->tap,
		o->mac[0], o->mac[1], o->mac[2], o->mac[3], o->mac[4], o->mac[5], n->pairs,
		n->pairs > 1 ? "s" : "", n->use_vhost ? "vhost-net" : "kumo's data path");
	*out = &n->vdev;
	return 0;

err_vhost:
	net_vhost_close(n);
err_dev:
	virtio_dev_exit(&n->vdev);
err:
	for (unsigned int q = 0; q < 2 * NET_MAX_PAIRS; q++)
		if (n->call_fd[q] >= 0)
			close(n->call_fd[q]);
	pthread_mutex_destroy(&n->cfg_lock);
	free(n);
	return ret;
}

int virtio_net_create_fds(const struct dev_env *env, const struct net_options *o,
			  const int *fds, unsigned int nfds, struct virtio_dev **out)
{
	int ret;

	if (nfds != o->queues || !nfds || nfds > NET_MAX_PAIRS) {
		ret = -EINVAL;
	} else {
		ret = net_new(env, o, fds, 0, out);
		if (!ret)
			return 0;
	}
	for (unsigned int i = 0; i < nfds; i++)
		close(fds[i]);
	return ret;
}

int virtio_net_create(const struct dev_env *env, const struct net_options *o,
		      struct virtio_dev **out)
{
	int fds[NET_MAX_PAIRS];
	int ret = 0;
	unsigned int p;

	if (!o->queues || o->queues > NET_MAX_PAIRS)
		return -EINVAL;
	for (p = 0; p < o->queues; p++) {
		ret = tap_open(o->tap, o->queues > 1, &fds[p]);
		if (ret)
			break;
	}
	if (!ret) {
		ret = net_new(env, o, fds, 1, out);
		if (!ret)
			return 0;
	}
	while (p--)
		close(fds[p]);
	return ret;
}

void virtio_net_destroy(struct virtio_dev *vdev)
{
	struct virtio_net *n = to_net(vdev);

	virtio_dev_exit(vdev);
	if (n->use_vhost) {
		net_vhost_stop(n);
		net_vhost_close(n);
	}
	for (unsigned int p = 0; p < n->pairs; p++)
		if (n->tap_fd[p] >= 0)
			close(n->tap_fd[p]);
	for (unsigned int q = 0; q < 2 * NET_MAX_PAIRS; q++)
		if (n->call_fd[q] >= 0)
			close(n->call_fd[q]);
	pthread_mutex_destroy(&n->cfg_lock);
	free(n);
}

const struct net_ctrl_state *virtio_net_ctrl_state(struct virtio_dev *vdev)
{
	return &to_net(vdev)->ctrl;
}

int virtio_net_uses_vhost(struct virtio_dev *vdev)
{
	return to_net(vdev)->use_vhost;
}
