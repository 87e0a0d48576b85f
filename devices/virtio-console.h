/*
 * virtio-console (virtio 1.x 5.3) with VIRTIO_CONSOLE_F_MULTIPORT: port 0 is a console port
 * (the guest's hvc0), port 1 is the named port "org.kumo.agent" (/dev/vport*p1 in the guest)
 * for the guest agent; any further ports are unnamed and have no host side.
 *
 * Host side: a port may listen on a Unix stream socket. One client per port at a time: a second
 * connection while one is served is accepted and closed at once, with no data. A client that
 * connects makes the guest see PORT_OPEN(1), its disconnect PORT_OPEN(0). Client bytes go to
 * the guest only while the guest has the port open and has posted buffers (backpressure reaches
 * the client through its socket). Guest output is written to the client; what cannot be written
 * (no client, or the socket is full) is kept, up to buf_limit bytes per port, for the next
 * write or the next client, and beyond that dropped, counted and logged (rate-limited).
 * Port 0 without a socket writes its output to console_out_fd (not closed by the device), or
 * drops it when that is -1.
 *
 * One I/O thread per device (started by activate, stopped by reset); the listening sockets
 * and a connected client outlive a reset.
 */
#ifndef KUMO_VIRTIO_CONSOLE_H
#define KUMO_VIRTIO_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

struct dev_env;
struct virtio_dev;

#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_CONSOLE_PCI_CLASS 0x078000

#define VIRTIO_CONSOLE_F_SIZE 0
#define VIRTIO_CONSOLE_F_MULTIPORT 1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

/* Control events (virtio_console_control.event). */
#define VIRTIO_CONSOLE_DEVICE_READY 0
#define VIRTIO_CONSOLE_PORT_ADD 1
#define VIRTIO_CONSOLE_PORT_REMOVE 2
#define VIRTIO_CONSOLE_PORT_READY 3
#define VIRTIO_CONSOLE_CONSOLE_PORT 4
#define VIRTIO_CONSOLE_RESIZE 5
#define VIRTIO_CONSOLE_PORT_OPEN 6
#define VIRTIO_CONSOLE_PORT_NAME 7

#define VIRTIO_CONSOLE_BAD_ID 0xffffffffu
#define VIRTIO_CONSOLE_CTRL_SIZE 8		/* le32 id, le16 event, le16 value */

#define VIRTIO_CONSOLE_MAX_PORTS 31		/* 2 * (ports + 1) queues <= VIRTIO_MAX_QUEUES */
#define VIRTIO_CONSOLE_AGENT_NAME "org.kumo.agent"
#define VIRTIO_CONSOLE_BUF_LIMIT (1u << 20)

struct console_options {
	const char *agent_socket;	/* port 1: Unix socket path to listen on, or NULL */
	const char *console_socket;	/* port 0: Unix socket path to listen on, or NULL */
	int console_out_fd;		/* port 0 output when there is no console_socket; -1 drops */
	unsigned int nr_ports;		/* max_nr_ports, 0 = 2 (at most VIRTIO_CONSOLE_MAX_PORTS) */
	size_t buf_limit;		/* per-port buffered guest output, 0 = 1 MiB */
};

/*
 * Create the device (not yet on a transport: the caller wraps it, e.g. virtio_pci_create())
 * and start listening on the sockets. A stale socket file (nobody accepting) is replaced;
 * a live one gives -EADDRINUSE. 0 or -errno.
 */
int virtio_console_create(const struct dev_env *env, const struct console_options *o,
			  struct virtio_dev **out) __attribute__((warn_unused_result));
/* Stop the device (reset if active), close its sockets and unlink their paths. */
void virtio_console_destroy(struct virtio_dev *vdev);

struct console_port_stats {
	uint64_t to_guest;		/* bytes delivered into the guest's receiveq */
	uint64_t from_guest;		/* bytes taken from the guest's transmitq */
	uint64_t dropped;		/* guest output dropped because the buffer was full */
	uint64_t buffered;		/* guest output waiting for the client now */
	uint64_t clients;		/* connections served */
	int client_connected, guest_connected;
};

/* Counters of one port (safe from any thread). 0 or -EINVAL. */
int virtio_console_port_stats(struct virtio_dev *vdev, unsigned int port,
			      struct console_port_stats *st);

/*
 * Serve every queue and socket once from the calling thread, without the I/O thread (which
 * must not be running): for tests and fuzzing.
 */
void virtio_console_poll(struct virtio_dev *vdev);

/* A guest-to-host control message, parsed. */
struct virtio_console_ctrl {
	uint32_t id;
	uint16_t event;
	uint16_t value;
};

/*
 * Parse a control message the guest sent on the control transmitq: only DEVICE_READY,
 * PORT_READY and PORT_OPEN travel that way. Returns 0, -EINVAL (shorter than 8 bytes),
 * -EOPNOTSUPP (unknown or host-to-guest event) or -ERANGE (port id >= nr_ports).
 */
int virtio_console_parse_ctrl(const void *buf, size_t len, unsigned int nr_ports,
			      struct virtio_console_ctrl *out);

#endif
