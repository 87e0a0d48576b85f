/*
 * virtio-blk (virtio 1.2, 5.2) on a raw file or block device, one request queue served by an
 * io_uring I/O thread (virtio-blk-uring.c). The request parser is a pure function so that
 * tests and the fuzzer can call it without doing I/O.
 */
#ifndef KUMO_VIRTIO_BLK_H
#define KUMO_VIRTIO_BLK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "devices/virtio.h"

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_BLK_PCI_CLASS 0x018000

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status (5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_S_EXEC 256		/* virtio_blk_parse(): valid, go and do it */

#define VIRTIO_BLK_DWZ_F_UNMAP 1	/* write zeroes may deallocate */
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR 512
#define VIRTIO_BLK_QUEUE_SIZE 256
#define VIRTIO_BLK_MAX_DWZ_SEGS 16	/* max_discard_seg / max_write_zeroes_seg */
#define VIRTIO_BLK_MAX_DWZ_SECTORS (1U << 22)	/* 2 GiB per segment */

/* Device configuration layout (5.2.4), little-endian like the host. */
struct virtio_blk_config {
	uint64_t capacity;		/* 512-byte sectors */
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap, unused1[3];
	uint32_t max_secure_erase_sectors, max_secure_erase_seg, secure_erase_sector_alignment;
} __attribute__((packed));

struct blk_options {
	int read_only;
	int cache_host;			/* 0: cache=none (O_DIRECT, default), 1: cache=host */
	char serial[VIRTIO_BLK_ID_BYTES + 1];
};

/* What the parser checks a request against. */
struct blk_limits {
	uint64_t capacity;		/* sectors */
	int read_only;
	int discard, write_zeroes;	/* offered */
};

struct blk_dwz_seg {			/* discard / write zeroes segment, as on the wire */
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* A parsed request: the data buffers (header and status byte cut off) and what to do. */
struct blk_req {
	uint32_t type;
	uint64_t sector;
	uint8_t *status;		/* last writable byte; NULL if the chain has none */
	struct iovec iov[VIRTQ_MAX_SEGS];
	unsigned int niov;
	uint64_t len;			/* data bytes in iov */
	unsigned int nseg;		/* DISCARD / WRITE_ZEROES */
	struct blk_dwz_seg seg[VIRTIO_BLK_MAX_DWZ_SEGS];
};

/*
 * Check one popped chain. Returns VIRTIO_BLK_S_EXEC when *r is a valid request to carry out,
 * else the status to complete it with right away (IOERR/UNSUPP; r->status may be NULL).
 * Does no I/O and reads each guest byte once (header and segments are copied into *r).
 */
int virtio_blk_parse(const struct virtq_elem *e, const struct blk_limits *l, struct blk_req *r);

/* Bytes written into the guest's buffers by a request completed with status. */
uint32_t virtio_blk_used_len(const struct blk_req *r, int status);

/* "path[,ro][,cache=host|none][,serial=X]" → *path (malloc'd) and *o. 0 or -EINVAL + err. */
int virtio_blk_parse_option(const char *arg, char **path, struct blk_options *o, char *err,
			    size_t errlen);

/* Open path and build the device (not yet on any transport). 0 or -errno. */
int virtio_blk_create(const struct dev_env *env, const char *path, const struct blk_options *o,
		      struct virtio_dev **out) __attribute__((warn_unused_result));
/* Stop the I/O thread (if running) and free the device. */
void virtio_blk_destroy(struct virtio_dev *vdev);

/* ---- shared by virtio-blk.c and virtio-blk-uring.c only ---- */

struct blk_uring;

struct virtio_blk {
	struct virtio_dev vdev;
	char *path;
	int fd;				/* O_DIRECT with cache=none */
	int fd_buffered;		/* same file without O_DIRECT (== fd with cache=host) */
	int is_blkdev;
	uint32_t dio_mem_align, dio_off_align;	/* 1 when not O_DIRECT */
	struct blk_options opts;
	struct blk_limits lim;
	struct virtio_blk_config cfg;
	struct blk_uring *io;		/* the io_uring while active, NULL when stopped */
	uint64_t stats_read_bytes, stats_write_bytes;
};

/*
 * b's io_uring: start sets it up (activate), stop waits for all in-flight I/O and frees it
 * (reset). On the device's worker: kick takes new requests, complete reaps completions;
 * drain (quiesce, the worker stopped) finishes what is in flight and hands it to the guest.
 */
int blk_uring_start(struct virtio_blk *b);
void blk_uring_stop(struct virtio_blk *b);
void blk_uring_kick(struct virtio_blk *b);
void blk_uring_complete(struct virtio_blk *b);
void blk_uring_drain(struct virtio_blk *b);

#endif
