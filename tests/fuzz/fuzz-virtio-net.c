/*
 * libFuzzer target for virtio-net's guest-facing parsers: control commands
 * (virtio_net_ctrl_apply), transmit headers (virtio_net_hdr_check), the receive filter fed
 * with what the commands set, and the --net option parser.
 *
 * Input: byte 0 picks the negotiated features (each bit one feature that gates commands or
 * offloads) and bits for max pairs; the rest is a sequence of commands, each a length byte and
 * that many bytes (class, command, data), applied one after the other to one state. After
 * every command the state must be one a device could hold (tables within bounds, pairs within
 * the device's), a refused command must change nothing, and the same bytes read as a header
 * plus frame length must be accepted only when the checksum and GSO fields fit the frame.
 */
// fuzz-sources: devices/virtio-net.c devices/virtio-net-vhost.c devices/virtio.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio-net.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The core's worker enters the seccomp filter (vmm/seccomp.c, libseccomp); the fuzzer never
 * starts a worker, so no filter here. */
void seccomp_enter(enum kumo_thread kind) { }
enum kumo_thread seccomp_device_kind(const char *devname) { return (enum kumo_thread)0; }

static const unsigned int feature_bits[8] = {
	VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_MQ,
	VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4,
	VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_ECN,
};

static void check_hdr(const uint8_t *d, size_t len, uint64_t f)
{
	struct virtio_net_hdr h;
	const char *why;
	size_t frame;

	if (len < sizeof(h) + 2)
		return;
	memcpy(&h, d, sizeof(h));
	frame = (size_t)(d[sizeof(h)] | d[sizeof(h) + 1] << 8) * 2;
	if (virtio_net_hdr_check(&h, f, frame, &why)) {
		if (!why)
			abort();
		return;
	}
	if (frame < 14 || frame > 65554)
		abort();
	if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
	    (!(f & 1ULL << VIRTIO_NET_F_CSUM) || (size_t)h.csum_start + h.csum_offset + 2 > frame))
		abort();
	if ((h.gso_type & 0x7f) && (!h.gso_size || h.hdr_len > frame))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t mac[6] = { 0x52, 0x54, 0, 1, 2, 3 };
	struct net_ctrl_state st, before;
	uint64_t f = 0;
	unsigned int max_pairs;
	size_t off = 2;

	log_level = LOG_ERR;
	if (size < 2)
		return 0;
	for (int i = 0; i < 8; i++)
		if (data[0] & (1u << i))
			f |= 1ULL << feature_bits[i];
	max_pairs = 1 + data[1] % NET_MAX_PAIRS;
	virtio_net_ctrl_reset(&st, mac);
	while (off < size) {
		size_t len = data[off++];

		if (len > size - off)
			len = size - off;
		before = st;
		if (virtio_net_ctrl_apply(&st, f, max_pairs, data + off, len) == VIRTIO_NET_OK) {
			if (st.n_uni > NET_MAC_TABLE || st.n_multi > NET_MAC_TABLE ||
			    !st.curr_pairs || st.curr_pairs > max_pairs || st.promisc > 1 ||
			    st.allmulti > 1 || (memcmp(st.mac, before.mac, 6) &&
						 !(f & 1ULL << VIRTIO_NET_F_CTRL_MAC_ADDR)))
				abort();
		} else if (memcmp(&st, &before, sizeof(st))) {
			abort();
		}
		if (len >= 6)
			(void)virtio_net_rx_accept(&st, data + off);
		check_hdr(data + off, len, f);
		off += len;
	}
	/* The option parser on the same bytes as a string. */
	{
		char arg[300], err[200];
		struct net_options o;
		size_t n = size < sizeof(arg) - 1 ? size : sizeof(arg) - 1;

		memcpy(arg, data, n);
		arg[n] = 0;
		if (!virtio_net_parse_option(arg, &o, err, sizeof(err)) &&
		    (!o.tap[0] || !o.queues || o.queues > NET_MAX_PAIRS || (o.mac[0] & 1)))
			abort();
	}
	return 0;
}
