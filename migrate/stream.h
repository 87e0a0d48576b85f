/*
 * The live-migration stream (docs/migration.md): a hello, then chunks, each a fixed header
 * (type, payload length, an argument, CRC32 of header and payload) and its payload. Both
 * directions use the same framing on the same connection. The receiver trusts nothing: every
 * header is checked (known type, length within that type's bound, checksum) before its payload
 * is used, and every page address against guest RAM.
 */
#ifndef KUMO_MIGRATE_STREAM_H
#define KUMO_MIGRATE_STREAM_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define MIG_STREAM_MAGIC 0x3147494d4f4d554bULL	/* "KUMOMIG1" little-endian */
#define MIG_STREAM_VERSION 1
#define MIG_PAGES_MAX 64			/* pages in one PAGES/DATA chunk */
#define MIG_STATE_MAX (64u << 20)		/* a state FDT */
#define MIG_RUNS_MAX (1u << 20)			/* (gpa, len) runs in one PENDING chunk */
#define MIG_ACK_TEXT_MAX 256			/* a refusal's one line */
#define MIG_SPLIT_MAX (16u << 20)		/* a page-location map */

enum mig_chunk_type {
	MIG_HELLO = 1,	/* src->dst: struct mig_hello */
	MIG_PAGES,	/* src->dst: arg = gpa, payload = whole pages of data */
	MIG_ZERO,	/* src->dst: arg = gpa, payload = u64 bytes: these pages are zero now */
	MIG_STATE,	/* src->dst: the state FDT (migrate/state.h) */
	MIG_PENDING,	/* src->dst, post-copy: runs (u64 gpa, u64 len) the destination fetches */
	MIG_END,	/* src->dst: arg = 0 pre-copy complete, 1 post-copy: run now */
	MIG_ACK,	/* dst->src: arg = 0 ok (hello accepted, or running), else -errno and
			   the reason as text */
	MIG_READ,	/* dst->src, post-copy: arg = gpa, payload = u64 bytes wanted */
	MIG_DATA,	/* src->dst, post-copy: the reply, arg = gpa, payload = the pages */
	MIG_DONE,	/* dst->src, post-copy: every page arrived; the source may go */
	MIG_CANCEL,	/* src->dst: the source gave up; drop everything */
	/* Split migration (migrate/split.h) and the sub-host page store (migrate/memserver.h). */
	MIG_SPLIT,	/* src->main: the page-location map (struct mig_split_hdr, addresses,
			   runs); the main host serves those pages from the sub-hosts */
	MIG_MS_OPEN,	/* client->memserver: arg = VM id; answered by ACK */
	MIG_MS_PUT,	/* client->memserver: page-out, arg = gpa, payload = whole pages */
	MIG_MS_GET,	/* client->memserver: page-in, arg = gpa, payload = u64 bytes; answered
			   by DATA, or ACK -errno when a page is not stored */
	MIG_MS_DROP,	/* client->memserver: arg = gpa, payload = u64 bytes: forget them */
	MIG_MS_SYNC,	/* client->memserver: answered by ACK 0, or the first PUT's error */
	MIG_NR_TYPES
};

struct mig_chunk_hdr {
	uint32_t type;
	uint32_t len;		/* payload bytes */
	uint64_t arg;
	uint32_t crc;		/* CRC32 of the 16 bytes above, then of the payload */
	uint32_t pad;		/* zero */
};
_Static_assert(sizeof(struct mig_chunk_hdr) == 24, "migration chunk header layout");

struct mig_hello {
	uint64_t magic;
	uint32_t version;
	uint32_t page_size;
	uint64_t ram_size;
	uint32_t nr_vcpus;
	uint32_t flags;		/* zero */
};
_Static_assert(sizeof(struct mig_hello) == 32, "migration hello layout");

/* The largest payload chunk type t may carry (0 for an unknown type). */
uint32_t mig_chunk_max(uint32_t type);

/* Fill h for a chunk and compute its checksum over payload. */
void mig_chunk_make(struct mig_chunk_hdr *h, uint32_t type, uint64_t arg, const void *payload,
		    uint32_t len);

/*
 * Check a header and its payload (type known, length within the type's bound, pad zero,
 * checksum). 0, or -EPROTO with one line in err.
 */
int mig_chunk_check(const struct mig_chunk_hdr *h, const void *payload, char *err,
		    size_t errlen);

/*
 * Parse one chunk at the start of buf: 1 with *h and *payload (inside buf) and *used bytes,
 * 0 when buf holds only part of one, -EPROTO (one line in err) for a bad one.
 */
int mig_chunk_parse(const uint8_t *buf, size_t len, struct mig_chunk_hdr *h,
		    const uint8_t **payload, size_t *used, char *err, size_t errlen);

/* Send one chunk on fd (all of it; EINTR retried). 0 or -errno. */
int mig_send(int fd, uint32_t type, uint64_t arg, const void *payload, uint32_t len);

/*
 * Receive one chunk from fd into *buf (grown as needed, up to the type's bound), checked.
 * 0; -EPIPE at a clean end of stream before a header; -EPROTO for a bad chunk (one line in
 * err); -errno from the socket (a receive timeout is -EAGAIN).
 */
int mig_recv(int fd, struct mig_chunk_hdr *h, uint8_t **buf, size_t *cap, char *err,
	     size_t errlen);

/*
 * Apply a PAGES or ZERO chunk to guest memory: whole pages, inside RAM. 0, or -EPROTO with one
 * line in err (nothing written for a bad one).
 */
int mig_apply_pages(const struct guest_mem *m, const struct mig_chunk_hdr *h,
		    const void *payload, char *err, size_t errlen);

/* A hello for m with nr_vcpus, and its check on the other side (-EPROTO, one line). */
void mig_hello_make(struct mig_hello *hi, const struct guest_mem *m, uint32_t nr_vcpus);
int mig_hello_check(const struct mig_hello *hi, const struct guest_mem *m, uint32_t nr_vcpus,
		    char *err, size_t errlen);

/* Parse "tcp:HOST:PORT" or "unix:PATH" and connect / listen+accept. fd or -errno (err). */
int mig_connect(const char *addr, char *err, size_t errlen);
int mig_listen(const char *addr, char *err, size_t errlen);
int mig_accept(int lfd, char *err, size_t errlen);

#endif
