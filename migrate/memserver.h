/*
 * A sub-host's page store for split migration and remote paging (`kumo memserver`,
 * docs/split-migration.md): pages by VM id and guest frame, held in memory up to a limit,
 * served over the migration stream's chunk framing (migrate/stream.h): OPEN (which VM), PUT
 * (page-out, up to MIG_PAGES_MAX pages: bulk transfer is a train of them, not acked one by
 * one), GET (page-in, answered with DATA), DROP, SYNC (acked with the first error since the
 * last SYNC). Nothing a client sends is trusted: every chunk is checked before it is used.
 */
#ifndef KUMO_MIGRATE_MEMSERVER_H
#define KUMO_MIGRATE_MEMSERVER_H

#include <stddef.h>
#include <stdint.h>

struct memserver;
struct ms_client;

struct ms_stats {
	uint64_t pages;			/* stored now */
	uint64_t limit_pages;
	uint64_t puts, gets, drops;	/* pages */
	uint64_t refused;		/* pages a PUT could not store (over the limit) */
	uint64_t bad_chunks;		/* connections ended for a malformed or unexpected chunk */
};

/* A store of at most limit bytes (whole pages; at least one). 0 or -errno. */
int ms_create(uint64_t limit, struct memserver **out) __attribute__((warn_unused_result));
void ms_destroy(struct memserver *ms);
void ms_stats(struct memserver *ms, struct ms_stats *st);

/*
 * Serve one connection until the peer closes it (0) or sends something wrong (-EPROTO, logged
 * with one line); fd stays the caller's.
 */
int ms_serve(struct memserver *ms, int fd);

/* `kumo memserver --listen ADDR --mem LIMIT`: accept and serve, a thread per connection. */
int ms_main(int argc, char **argv);

/* ---- client ---- */

/* On a connected fd (the client owns it from here on): OPEN vm_id and its ack. 0 or -errno. */
int ms_client_open(int fd, uint64_t vm_id, struct ms_client **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void ms_client_close(struct ms_client *c);

/* Page-out: whole pages at gpa, any length (sent in MIG_PAGES_MAX chunks, not acked). */
int ms_put(struct ms_client *c, uint64_t gpa, const void *pages, uint64_t len);
/* Wait until every PUT so far is stored: 0, or the store's refusal (-ENOSPC, err). */
int ms_sync(struct ms_client *c, char *err, size_t errlen);
/* Page-in: whole pages at gpa (any length). 0, -ENOENT for a page not stored, or -errno. */
int ms_get(struct ms_client *c, uint64_t gpa, void *buf, uint64_t len, char *err,
	   size_t errlen);
int ms_drop(struct ms_client *c, uint64_t gpa, uint64_t len);
/* Bytes this client sent and received, chunk headers included. */
uint64_t ms_client_bytes(const struct ms_client *c);

#endif
