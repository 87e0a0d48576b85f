/*
 * virtio-net (virtio 1.2, 5.1) over a tap: the data path through vhost-net when the host has
 * it (the kernel moves packets; kumo hands it the memory table, rings, kick and call
 * eventfds and the tap), else on the device's I/O worker with readv/writev straight between
 * the tap and guest buffers. Multiqueue (one tap queue per pair), checksum/TSO offloads as
 * the guest negotiates them, MAC and link status in config space, the control queue (RX
 * mode, MAC tables, queue pairs, announce acks). docs/net.md.
 */
#ifndef KUMO_VIRTIO_NET_H
#define KUMO_VIRTIO_NET_H

#include <stddef.h>
#include <stdint.h>

#include "devices/virtio.h"

#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_HOST_UFO 14
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_CTRL_RX 18
#define VIRTIO_NET_F_CTRL_VLAN 19
#define VIRTIO_NET_F_GUEST_ANNOUNCE 21
#define VIRTIO_NET_F_MQ 22
#define VIRTIO_NET_F_CTRL_MAC_ADDR 23

#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_S_ANNOUNCE 2

#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1

/* Control classes and commands (5.1.6.5). */
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_RX_PROMISC 0
#define VIRTIO_NET_CTRL_RX_ALLMULTI 1
#define VIRTIO_NET_CTRL_MAC 1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET 0
#define VIRTIO_NET_CTRL_MAC_ADDR_SET 1
#define VIRTIO_NET_CTRL_ANNOUNCE 3
#define VIRTIO_NET_CTRL_ANNOUNCE_ACK 0
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0

/* virtio_net_hdr_v1 flags and gso types. */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_HDR_GSO_UDP 3
#define VIRTIO_NET_HDR_GSO_TCPV6 4
#define VIRTIO_NET_HDR_GSO_ECN 0x80

#define NET_MAX_PAIRS 16
#define NET_MAC_TABLE 64	/* entries per table (unicast, multicast); more: overflow mode */
#define NET_HDR_LEN 12		/* virtio 1.x: the header always carries num_buffers */
#define NET_CTRL_MAX 16384	/* a control command's device-readable bytes, at most */

struct virtio_net_hdr {
	uint8_t flags, gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_net_hdr) == NET_HDR_LEN, "virtio_net_hdr_v1 layout");

struct virtio_net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
} __attribute__((packed));

/* --net tap=NAME[,mac=MAC][,queues=N][,vhost=on|off] */
struct net_options {
	char tap[16];			/* IFNAMSIZ */
	uint8_t mac[6];			/* default: 52:54:00 + a hash of the tap name */
	unsigned int queues;		/* queue pairs, 1..NET_MAX_PAIRS */
	int vhost;			/* -1 auto (default), 0 off, 1 on (an error if unavailable) */
};

/*
 * What the driver set through the control queue, as saved. Pure data so that the control
 * parser and the receive filter are testable and fuzzable without a device.
 */
struct net_ctrl_state {
	uint8_t mac[6];
	uint8_t promisc, allmulti;
	uint8_t uni_overflow, multi_overflow;	/* more entries than NET_MAC_TABLE: accept all */
	uint16_t curr_pairs;
	uint32_t n_uni, n_multi;
	uint8_t uni[NET_MAC_TABLE][6], multi[NET_MAC_TABLE][6];
	uint8_t announce_acked;		/* the driver acked the last announce */
	uint8_t pad[7];
};

/* Initial state after a device reset: the configured MAC, promiscuous, one pair. */
void virtio_net_ctrl_reset(struct net_ctrl_state *st, const uint8_t mac[6]);

/*
 * Apply one control command (class, cmd, data: the device-readable bytes of the chain) to
 * st. Returns VIRTIO_NET_OK or VIRTIO_NET_ERR (unknown or malformed commands change
 * nothing). features are the negotiated ones, max_pairs the device's. Reads each byte once.
 */
int virtio_net_ctrl_apply(struct net_ctrl_state *st, uint64_t features, unsigned int max_pairs,
			  const uint8_t *buf, size_t len);

/*
 * Check a transmit header against the negotiated features and the frame length that
 * follows it. 0 or -EINVAL with *why set to a static reason.
 */
int virtio_net_hdr_check(const struct virtio_net_hdr *h, uint64_t features, size_t frame_len,
			 const char **why);

/* Whether the receive filter in st lets a frame to dst (its first 6 bytes) through. */
int virtio_net_rx_accept(const struct net_ctrl_state *st, const uint8_t *dst);

/* Parse "tap=NAME[,mac=..][,queues=N][,vhost=on|off]". 0 or -EINVAL with err set. */
int virtio_net_parse_option(const char *arg, struct net_options *o, char *err, size_t errlen);

/* Open the tap (and vhost-net) and build the device (not yet on any transport). 0 or -errno. */
int virtio_net_create(const struct dev_env *env, const struct net_options *o,
		      struct virtio_dev **out) __attribute__((warn_unused_result));

/*
 * For tests: the device over already-open packet fds (one per queue pair), e.g. a
 * SOCK_SEQPACKET socketpair carrying the 12-byte header before each frame as a tap with
 * IFF_VNET_HDR does; no tap ioctls, no vhost. Takes ownership of the fds.
 */
int virtio_net_create_fds(const struct dev_env *env, const struct net_options *o,
			  const int *fds, unsigned int nfds, struct virtio_dev **out)
	__attribute__((warn_unused_result));

void virtio_net_destroy(struct virtio_dev *vdev);

/* The device's control state (tests) and whether it uses vhost-net. */
const struct net_ctrl_state *virtio_net_ctrl_state(struct virtio_dev *vdev);
int virtio_net_uses_vhost(struct virtio_dev *vdev);
/* Tell the guest the link went up or down (config change). */
void virtio_net_set_link(struct virtio_dev *vdev, int up);

/* ---- shared by virtio-net.c and virtio-net-vhost.c only ---- */

#include <pthread.h>

struct virtio_net {
	struct virtio_dev vdev;
	struct net_options opts;
	unsigned int pairs;
	int is_tap;			/* fds are taps (else test sockets: no tap ioctls) */
	int tap_fd[NET_MAX_PAIRS];
	int watching[NET_MAX_PAIRS];	/* tap_fd[p] is in the worker's epoll set */
	int tap_gone;			/* the tap went away: link down for good */
	long last_check;		/* second of the last check that it is there */
	/* vhost-net: one fd per pair, an eventfd per data queue that vhost signals. */
	int use_vhost;
	unsigned int vhost_running;	/* bit p: pair p is served by vhost */
	int vhost_fd[NET_MAX_PAIRS];
	int call_fd[2 * NET_MAX_PAIRS];
	uint64_t vhost_features;
	pthread_mutex_t cfg_lock;	/* ctrl.mac and status, read by config_read on vCPUs */
	uint16_t status;		/* VIRTIO_NET_S_* */
	struct net_ctrl_state ctrl;
	int announce_pending;		/* a loaded state: announce once the worker runs */
	struct virtq_elem elem;
	struct iovec rx_iov[VIRTQ_MAX_SEGS];
	uint16_t rx_head[VIRTQ_MAX_SEGS];
	uint32_t rx_len[VIRTQ_MAX_SEGS];
	uint16_t rx_nin[VIRTQ_MAX_SEGS];
	uint64_t stats_rx_packets, stats_tx_packets, stats_rx_dropped, stats_tx_dropped;
};

/* vhost-net (virtio-net-vhost.c): open checks the kernel's features; start hands it the
 * memory table, rings and eventfds and the taps; stop takes the ring indices back. */
int net_vhost_open(struct virtio_net *n);
int net_vhost_start(struct virtio_net *n);
void net_vhost_stop(struct virtio_net *n);
void net_vhost_close(struct virtio_net *n);
/* The ring bits vhost-net must support for kumo to use it. */
#define NET_VHOST_NEEDED (1ULL << VIRTIO_NET_F_MRG_RXBUF | 1ULL << VIRTIO_F_EVENT_IDX | \
			  1ULL << VIRTIO_F_INDIRECT_DESC | 1ULL << VIRTIO_F_VERSION_1)

#endif
