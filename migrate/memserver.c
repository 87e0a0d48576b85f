/*
 * The sub-host page store (migrate/memserver.h, docs/split-migration.md). Pages live in a hash
 * table keyed by (VM id, guest frame), one malloc'd page each, under one lock; the limit counts
 * stored pages, so a PUT over an existing page never fails. A PUT beyond the limit stores the
 * pages that fit, counts the rest as refused and makes the connection's next SYNC answer
 * -ENOSPC with a line naming the first frame refused.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/memserver.h"
#include "migrate/stream.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/log.h"

#define PAGE ((uint64_t)MM_PAGE_SIZE)

struct ms_page {
	struct ms_page *next;
	uint64_t vm_id, gfn;
	uint8_t data[PAGE];
};

struct memserver {
	pthread_mutex_t lock;
	struct ms_page **bucket;
	uint64_t nbuckets;		/* a power of two */
	struct ms_stats st;
};

static uint64_t hash(uint64_t vm_id, uint64_t gfn)
{
	uint64_t x = vm_id * 0x9e3779b97f4a7c15ULL ^ gfn;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	return x ^ (x >> 33);
}

int ms_create(uint64_t limit, struct memserver **out)
{
	struct memserver *ms;

	if (limit < PAGE)
		return -EINVAL;
	ms = calloc(1, sizeof(*ms));
	if (!ms)
		return -ENOMEM;
	ms->st.limit_pages = limit / PAGE;
	ms->nbuckets = 1024;
	while (ms->nbuckets < ms->st.limit_pages / 2 && ms->nbuckets < (1ULL << 24))
		ms->nbuckets *= 2;
	ms->bucket = calloc(ms->nbuckets, sizeof(*ms->bucket));
	if (!ms->bucket) {
		free(ms);
		return -ENOMEM;
	}
	pthread_mutex_init(&ms->lock, NULL);
	*out = ms;
	return 0;
}

void ms_destroy(struct memserver *ms)
{
	if (!ms)
		return;
	for (uint64_t i = 0; i < ms->nbuckets; i++)
		for (struct ms_page *p = ms->bucket[i], *n; p; p = n) {
			n = p->next;
			free(p);
		}
	pthread_mutex_destroy(&ms->lock);
	free(ms->bucket);
	free(ms);
}

void ms_stats(struct memserver *ms, struct ms_stats *st)
{
	pthread_mutex_lock(&ms->lock);
	*st = ms->st;
	pthread_mutex_unlock(&ms->lock);
}

/* The slot that holds (vm_id, gfn), or the empty slot at its chain's end. Locked. */
static struct ms_page **slot(struct memserver *ms, uint64_t vm_id, uint64_t gfn)
{
	struct ms_page **pp = &ms->bucket[hash(vm_id, gfn) & (ms->nbuckets - 1)];

	while (*pp && ((*pp)->vm_id != vm_id || (*pp)->gfn != gfn))
		pp = &(*pp)->next;
	return pp;
}

/* Store n pages; the number stored (fewer only when the store is full). */
static uint64_t store(struct memserver *ms, uint64_t vm_id, uint64_t gfn, const uint8_t *data,
		      uint64_t n)
{
	uint64_t i;

	pthread_mutex_lock(&ms->lock);
	for (i = 0; i < n; i++) {
		struct ms_page **pp = slot(ms, vm_id, gfn + i);

		if (!*pp) {
			if (ms->st.pages >= ms->st.limit_pages || !(*pp = malloc(sizeof(**pp))))
				break;
			(*pp)->next = NULL;
			(*pp)->vm_id = vm_id;
			(*pp)->gfn = gfn + i;
			ms->st.pages++;
		}
		memcpy((*pp)->data, data + i * PAGE, PAGE);
	}
	ms->st.puts += i;
	ms->st.refused += n - i;
	pthread_mutex_unlock(&ms->lock);
	return i;
}

/* Copy n pages out: 0, or -ENOENT with *missing the first frame not stored. */
static int fetch(struct memserver *ms, uint64_t vm_id, uint64_t gfn, uint8_t *out, uint64_t n,
		 uint64_t *missing)
{
	int ret = 0;

	pthread_mutex_lock(&ms->lock);
	for (uint64_t i = 0; i < n; i++) {
		struct ms_page *p = *slot(ms, vm_id, gfn + i);

		if (!p) {
			*missing = gfn + i;
			ret = -ENOENT;
			break;
		}
		memcpy(out + i * PAGE, p->data, PAGE);
	}
	if (!ret)
		ms->st.gets += n;
	pthread_mutex_unlock(&ms->lock);
	return ret;
}

static void drop(struct memserver *ms, uint64_t vm_id, uint64_t gfn, uint64_t n)
{
	pthread_mutex_lock(&ms->lock);
	for (uint64_t i = 0; i < n; i++) {
		struct ms_page **pp = slot(ms, vm_id, gfn + i), *p = *pp;

		if (p) {
			*pp = p->next;
			free(p);
			ms->st.pages--;
			ms->st.drops++;
		}
	}
	pthread_mutex_unlock(&ms->lock);
}

static int send_ack(int fd, int ret, const char *why)
{
	return mig_send(fd, MIG_ACK, (uint64_t)(int64_t)ret, why,
			ret ? (uint32_t)strnlen(why, MIG_ACK_TEXT_MAX) : 0);
}

/* A (gpa, u64 len) request: whole pages, at most one chunk of data, no overflow. */
static int page_request(const struct mig_chunk_hdr *h, const uint8_t *buf, uint64_t *len)
{
	if (h->len != sizeof(*len))
		return -EPROTO;
	memcpy(len, buf, sizeof(*len));
	if (!*len || *len > MIG_PAGES_MAX * PAGE || (h->arg | *len) & (PAGE - 1) ||
	    h->arg + *len < h->arg)
		return -EPROTO;
	return 0;
}

int ms_serve(struct memserver *ms, int fd)
{
	struct mig_chunk_hdr h;
	uint8_t *buf = NULL, *out = malloc(MIG_PAGES_MAX * PAGE);
	size_t cap = 0;
	uint64_t vm_id = 0, len, missing = 0;
	char err[256] = "", why[MIG_ACK_TEXT_MAX] = "";
	int ret, open = 0, full = 0;

	if (!out)
		return -ENOMEM;
	for (;;) {
		ret = mig_recv(fd, &h, &buf, &cap, err, sizeof(err));
		if (ret == -EPIPE) {
			ret = 0;	/* the client closed: done */
			break;
		}
		if (ret)
			break;
		if (!open && h.type != MIG_MS_OPEN) {
			snprintf(err, sizeof(err), "memserver: chunk type %u before OPEN", h.type);
			ret = -EPROTO;
			break;
		}
		switch (h.type) {
		case MIG_MS_OPEN:
			if (open || !h.arg) {
				snprintf(err, sizeof(err), "memserver: OPEN %s", open ?
					 "twice" : "of VM id 0");
				ret = -EPROTO;
				break;
			}
			vm_id = h.arg;
			open = 1;
			ret = send_ack(fd, 0, NULL);
			break;
		case MIG_MS_PUT: {
			uint64_t n = h.len / PAGE, stored;

			if (!h.len || h.len % PAGE || h.arg & (PAGE - 1) || h.arg + h.len < h.arg) {
				snprintf(err, sizeof(err), "memserver: PUT of %u bytes at %#" PRIx64
					 " is not whole pages", h.len, h.arg);
				ret = -EPROTO;
				break;
			}
			stored = full ? 0 : store(ms, vm_id, h.arg / PAGE, buf, n);
			if (full) {
				pthread_mutex_lock(&ms->lock);
				ms->st.refused += n;
				pthread_mutex_unlock(&ms->lock);
			}
			if (stored < n && !full) {
				full = 1;
				snprintf(why, sizeof(why), "memserver: full (%" PRIu64 " pages, the "
					 "--mem limit): frame %#" PRIx64 " of VM %#" PRIx64
					 " and later ones not stored", ms->st.limit_pages,
					 h.arg / PAGE + stored, vm_id);
				pr_warn("%s", why);
			}
			break;
		}
		case MIG_MS_GET:
			if (page_request(&h, buf, &len)) {
				snprintf(err, sizeof(err), "memserver: a bad GET");
				ret = -EPROTO;
				break;
			}
			if (fetch(ms, vm_id, h.arg / PAGE, out, len / PAGE, &missing)) {
				snprintf(why, sizeof(why), "memserver: frame %#" PRIx64 " of VM %#"
					 PRIx64 " is not stored here", missing, vm_id);
				ret = send_ack(fd, -ENOENT, why);
				break;
			}
			ret = mig_send(fd, MIG_DATA, h.arg, out, (uint32_t)len);
			break;
		case MIG_MS_DROP:
			if (page_request(&h, buf, &len)) {
				snprintf(err, sizeof(err), "memserver: a bad DROP");
				ret = -EPROTO;
				break;
			}
			drop(ms, vm_id, h.arg / PAGE, len / PAGE);
			break;
		case MIG_MS_SYNC:
			ret = send_ack(fd, full ? -ENOSPC : 0, why);
			full = 0;
			break;
		default:
			snprintf(err, sizeof(err), "memserver: unexpected chunk type %u", h.type);
			ret = -EPROTO;
		}
		if (ret)
			break;
	}
	if (ret == -EPROTO) {
		pthread_mutex_lock(&ms->lock);
		ms->st.bad_chunks++;
		pthread_mutex_unlock(&ms->lock);
		pr_warn("%s; connection closed", err);
	} else if (ret) {
		pr_warn("memserver: connection: %s", err[0] ? err : strerror(-ret));
	}
	free(out);
	free(buf);
	return ret;
}

/* ---- kumo memserver ---- */

struct conn {
	struct memserver *ms;
	int fd;
};

static void *conn_thread(void *arg)
{
	struct conn *c = arg;

	ms_serve(c->ms, c->fd);
	close(c->fd);
	free(c);
	return NULL;
}

static const char usage[] = "usage: kumo memserver --listen tcp:ADDR:PORT|unix:PATH --mem SIZE\n";

int ms_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "mem", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *addr = NULL, *mem = NULL;
	struct memserver *ms;
	uint64_t limit = 0;
	char err[256];
	int c, lfd;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': addr = optarg; break;
		case 'm': mem = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (!addr || !mem || optind != argc) {
		fprintf(stderr, "kumo memserver: needs --listen and --mem\n%s", usage);
		return 2;
	}
	if (mm_parse_size(mem, &limit) || limit < PAGE) {
		fprintf(stderr, "kumo memserver: --mem %s is not a size of at least 4K\n", mem);
		return 2;
	}
	if (ms_create(limit, &ms)) {
		fprintf(stderr, "kumo memserver: out of memory\n");
		return 1;
	}
	lfd = mig_listen(addr, err, sizeof(err));
	if (lfd < 0) {
		fprintf(stderr, "kumo memserver: %s\n", err);
		ms_destroy(ms);
		return lfd == -EINVAL ? 2 : 1;
	}
	pr_info("memserver: listening on %s, %" PRIu64 " pages at most", addr, limit / PAGE);
	for (;;) {
		struct conn *cn;
		pthread_t t;
		int fd = mig_accept(lfd, err, sizeof(err));

		if (fd < 0) {
			pr_warn("%s", err);
			continue;
		}
		cn = malloc(sizeof(*cn));
		if (cn)
			*cn = (struct conn){ .ms = ms, .fd = fd };
		if (!cn || pthread_create(&t, NULL, conn_thread, cn)) {
			free(cn);
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}

/* ---- client ---- */

struct ms_client {
	int fd;
	uint8_t *buf;
	size_t cap;
	uint64_t bytes;
};

static int client_send(struct ms_client *c, uint32_t type, uint64_t arg, const void *p,
		       uint32_t len)
{
	int ret = mig_send(c->fd, type, arg, p, len);

	if (!ret)
		c->bytes += sizeof(struct mig_chunk_hdr) + len;
	return ret;
}

static int client_recv(struct ms_client *c, struct mig_chunk_hdr *h, char *err, size_t errlen)
{
	int ret = mig_recv(c->fd, h, &c->buf, &c->cap, err, errlen);

	if (!ret)
		c->bytes += sizeof(*h) + h->len;
	else if (ret == -EPIPE)
		snprintf(err, errlen, "memserver: the connection closed");
	return ret;
}

/* An ACK: 0, or its -errno with its text (printable only) in err. */
static int client_ack(struct ms_client *c, const struct mig_chunk_hdr *h, char *err,
		      size_t errlen)
{
	int e = (int)(int64_t)h->arg;
	size_t n = h->len < errlen ? h->len : errlen - 1;

	if (h->type != MIG_ACK) {
		snprintf(err, errlen, "memserver: expected an ack, got chunk type %u", h->type);
		return -EPROTO;
	}
	if (!h->arg)
		return 0;
	for (size_t i = 0; i < n; i++)
		err[i] = c->buf[i] >= 0x20 && c->buf[i] < 0x7f ? (char)c->buf[i] : '?';
	err[n] = '\0';
	return e < 0 && e > -4096 ? e : -EPROTO;
}

int ms_client_open(int fd, uint64_t vm_id, struct ms_client **out, char *err, size_t errlen)
{
	struct ms_client *c = calloc(1, sizeof(*c));
	struct mig_chunk_hdr h;
	int ret;

	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	ret = client_send(c, MIG_MS_OPEN, vm_id, NULL, 0);
	if (!ret)
		ret = client_recv(c, &h, err, errlen);
	if (!ret)
		ret = client_ack(c, &h, err, errlen);
	if (ret) {
		ms_client_close(c);
		return ret;
	}
	*out = c;
	return 0;
}

void ms_client_close(struct ms_client *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->buf);
	free(c);
}

int ms_put(struct ms_client *c, uint64_t gpa, const void *pages, uint64_t len)
{
	const uint8_t *p = pages;

	if ((gpa | len) & (PAGE - 1))
		return -EINVAL;
	while (len) {
		uint64_t n = len < MIG_PAGES_MAX * PAGE ? len : MIG_PAGES_MAX * PAGE;
		int ret = client_send(c, MIG_MS_PUT, gpa, p, (uint32_t)n);

		if (ret)
			return ret;
		gpa += n;
		p += n;
		len -= n;
	}
	return 0;
}

int ms_sync(struct ms_client *c, char *err, size_t errlen)
{
	struct mig_chunk_hdr h;
	int ret = client_send(c, MIG_MS_SYNC, 0, NULL, 0);

	if (!ret)
		ret = client_recv(c, &h, err, errlen);
	return ret ? ret : client_ack(c, &h, err, errlen);
}

int ms_get(struct ms_client *c, uint64_t gpa, void *buf, uint64_t len, char *err,
	   size_t errlen)
{
	uint8_t *out = buf;

	if ((gpa | len) & (PAGE - 1))
		return -EINVAL;
	while (len) {
		uint64_t n = len < MIG_PAGES_MAX * PAGE ? len : MIG_PAGES_MAX * PAGE;
		struct mig_chunk_hdr h;
		int ret = client_send(c, MIG_MS_GET, gpa, &n, sizeof(n));

		if (!ret)
			ret = client_recv(c, &h, err, errlen);
		if (ret)
			return ret;
		if (h.type != MIG_DATA)
			return client_ack(c, &h, err, errlen) ?: -EPROTO;
		if (h.arg != gpa || h.len != n) {
			snprintf(err, errlen, "memserver: asked for %#" PRIx64 " +%#" PRIx64
				 ", got %#" PRIx64 " +%#x", gpa, n, h.arg, h.len);
			return -EPROTO;
		}
		memcpy(out, c->buf, n);
		gpa += n;
		out += n;
		len -= n;
	}
	return 0;
}

int ms_drop(struct ms_client *c, uint64_t gpa, uint64_t len)
{
	while (len) {
		uint64_t n = len < MIG_PAGES_MAX * PAGE ? len : MIG_PAGES_MAX * PAGE;
		int ret = client_send(c, MIG_MS_DROP, gpa, &n, sizeof(n));

		if (ret)
			return ret;
		gpa += n;
		len -= n;
	}
	return 0;
}

uint64_t ms_client_bytes(const struct ms_client *c)
{
	return c->bytes;
}
