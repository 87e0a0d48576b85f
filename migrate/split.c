/*
 * Split migration, both ends (migrate/split.h, docs/split-migration.md).
 *
 * Source: hello, stop the VM, walk its pages -- with tracking only the memfds' data extents,
 * all-zero pages left out; without, every page -- and send each to the main host while its
 * share (main_mem) lasts, else to the sub-hosts, MIG_SPLIT_STRIPE pages to one before the next
 * (with replicas=2 also to the next one after it: two distinct owners per page).
 * Then wait until every sub-host stored its pages (SYNC), send the location map of the
 * sub-hosts' pages, the state and END, and wait for the main host's ack.
 *
 * Main host: the pages come as on a pre-copy stream; the map says which of the missing pages
 * a sub-host holds. The guest memory is served on demand (no background push: the pages stay
 * on the sub-hosts until the guest touches them) from a page source whose data is exactly the
 * sub-hosts' pages; every other missing page is a hole, so a fault on it is a zero page.
 * A page-in asks the page's first owner, then its replica's (a sub-host that is closed, silent
 * for MIG_SPLIT_GET_TIMEOUT_S or answers wrongly is dropped for good; a page it lacks is asked
 * of the other); only when no owner gives it are the frames lost: never zeros.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/memserver.h"
#include "migrate/migration.h"
#include "migrate/split.h"
#include "migrate/stream.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/log.h"

#define PAGE ((uint64_t)MM_PAGE_SIZE)
#define ACK_TIMEOUT_S 120

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Pages in the guest-physical span of m (the location map's length). */
static uint64_t span_pages(const struct guest_mem *m)
{
	const struct mm_region *r;
	uint64_t end = 0;

	mm_for_each_region(m, r)
		if (r->gpa + r->size > end)
			end = r->gpa + r->size;
	return end / PAGE;
}

/* loc2: the replicas' owners (index + 1, 0 none), or NULL. */
static void count_locs(const uint8_t *loc, const uint8_t *loc2, uint64_t n,
		       const struct guest_mem *m, struct mig_split_counts *c)
{
	const struct mm_region *r;

	memset(c->pages_sub, 0, sizeof(c->pages_sub));
	c->pages_free = c->pages_main = c->pages_remote = 0;
	mm_for_each_region(m, r)
		for (uint64_t i = r->gpa / PAGE; i < (r->gpa + r->size) / PAGE && i < n; i++) {
			if (loc[i] == MIG_LOC_FREE) {
				c->pages_free++;
			} else if (loc[i] == MIG_LOC_MAIN) {
				c->pages_main++;
			} else {
				c->pages_remote++;
				c->pages_sub[loc[i] - MIG_LOC_SUB]++;
				if (loc2 && loc2[i])
					c->pages_sub[loc2[i] - 1]++;
			}
		}
}

int mig_split_params_check(const struct mig_split_params *p, char *err, size_t errlen)
{
	if (!p->nr_subs || p->nr_subs > MIG_SPLIT_SUBS_MAX || !p->vm_id) {
		snprintf(err, errlen, "split migration: 1 to %d sub-hosts and a VM id",
			 MIG_SPLIT_SUBS_MAX);
		return -EINVAL;
	}
	if (p->replicas > MIG_SPLIT_REPLICAS_MAX) {
		snprintf(err, errlen, "split migration: replicas=%u: 1 or 2", p->replicas);
		return -EINVAL;
	}
	if (p->replicas == 2 && p->nr_subs < 2) {
		snprintf(err, errlen, "split migration: replicas=2 needs at least 2 sub-hosts "
			 "(sub=A,B[,...]), %u given", p->nr_subs);
		return -EINVAL;
	}
	return 0;
}

/* ---- source ---- */

/* Runs of pages gathered for one destination: the main link (PAGES) or a sub-host (PUT). */
struct gather {
	uint64_t gpa;
	unsigned int n;
	uint8_t *buf;
};

struct splitter {
	struct guest_mem *m;
	const struct mig_split_params *p;
	int fd;
	uint8_t *loc, *loc2;		/* loc2: with replicas, the second owner + 1 */
	uint64_t main_left, sub_pages;
	struct gather g[1 + MIG_SPLIT_SUBS_MAX];	/* 0: main */
	struct mig_split_result res;
};

static int flush_gather(struct splitter *s, unsigned int i)
{
	struct gather *g = &s->g[i];
	uint64_t len = g->n * PAGE;
	int ret;

	if (!g->n)
		return 0;
	if (!i) {
		ret = mig_send(s->fd, MIG_PAGES, g->gpa, g->buf, (uint32_t)len);
		s->res.bytes_main += sizeof(struct mig_chunk_hdr) + len;
	} else {
		ret = ms_put(s->p->sub[i - 1], g->gpa, g->buf, len);
	}
	g->n = 0;
	return ret;
}

/* Add the page at gpa to destination i's gather (0 main, 1 + sub-host index). */
static int gather_page(struct splitter *s, unsigned int i, uint64_t gpa, const uint8_t *hva)
{
	struct gather *g = &s->g[i];
	int ret;

	if (g->n && (g->gpa + g->n * PAGE != gpa || g->n == MIG_PAGES_MAX))
		if ((ret = flush_gather(s, i)))
			return ret;
	if (!g->n)
		g->gpa = gpa;
	memcpy(g->buf + g->n * PAGE, hva, PAGE);
	g->n++;
	return 0;
}

static int split_page(struct splitter *s, uint64_t gpa)
{
	const uint8_t *hva = mm_gpa_to_hva(s->m, gpa, PAGE);
	unsigned int i, i2 = 0;
	int ret;

	if (!hva)
		return -EFAULT;
	if (s->p->tracking && mig_page_is_zero(hva))
		return 0;	/* free: the main host's page reads as zero without asking */
	if (s->main_left >= PAGE) {
		s->main_left -= PAGE;
		i = 0;
	} else {
		i = 1 + (unsigned int)(s->sub_pages++ / MIG_SPLIT_STRIPE % s->p->nr_subs);
		if (s->p->replicas == 2)	/* the next sub-host holds the stripe's copy */
			i2 = 1 + i % s->p->nr_subs;
	}
	s->loc[gpa / PAGE] = i ? (uint8_t)(MIG_LOC_SUB + i - 1) : MIG_LOC_MAIN;
	if (i2)
		s->loc2[gpa / PAGE] = (uint8_t)i2;	/* sub-host index i2 - 1, + 1 */
	if ((ret = gather_page(s, i, gpa, hva)))
		return ret;
	return i2 ? gather_page(s, i2, gpa, hva) : 0;
}

static int split_run(void *opaque, uint64_t gpa, uint64_t len)
{
	int ret = 0;

	for (uint64_t off = 0; off < len && !ret; off += PAGE)
		ret = split_page(opaque, gpa + off);
	return ret;
}

/* The MIG_SPLIT payload: the header, the addresses, the sub-hosts' runs. */
static int build_map(const struct splitter *s, uint64_t n, uint8_t **out, size_t *len)
{
	struct mig_split_hdr h = { .vm_id = s->p->vm_id, .nr_subs = s->p->nr_subs,
				   .budget = s->p->pageout ? s->p->main_mem : 0 };
	size_t head = sizeof(h) + s->p->nr_subs * MIG_SPLIT_ADDR_MAX, cap = 1024, nr = 0;
	struct mig_split_run *runs = malloc(cap * sizeof(*runs));
	uint8_t *buf;

	if (!runs)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		if (s->loc[i] < MIG_LOC_SUB)
			continue;
		uint32_t sub = (uint32_t)(s->loc[i] - MIG_LOC_SUB), rep = s->loc2 ? s->loc2[i] : 0;

		if (nr && runs[nr - 1].gpa + runs[nr - 1].len == i * PAGE && runs[nr - 1].sub == sub &&
		    runs[nr - 1].replica == rep && mm_find_region(s->m, i * PAGE) == mm_find_region(s->m, runs[nr - 1].gpa)) {
			runs[nr - 1].len += PAGE;
			continue;
		}
		if (nr == cap) {
			struct mig_split_run *r = realloc(runs, 2 * cap * sizeof(*runs));

			if (!r) {
				free(runs);
				return -ENOMEM;
			}
			runs = r;
			cap *= 2;
		}
		runs[nr++] = (struct mig_split_run){ i * PAGE, PAGE, sub, rep };
	}
	if (head + nr * sizeof(*runs) > MIG_SPLIT_MAX) {
		free(runs);
		return -E2BIG;
	}
	h.nr_runs = (uint32_t)nr;
	buf = calloc(1, head + nr * sizeof(*runs));
	if (!buf) {
		free(runs);
		return -ENOMEM;
	}
	memcpy(buf, &h, sizeof(h));
	for (unsigned int i = 0; i < s->p->nr_subs; i++)
		strncpy((char *)buf + sizeof(h) + i * MIG_SPLIT_ADDR_MAX, s->p->sub_addr[i],
			MIG_SPLIT_ADDR_MAX - 1);
	memcpy(buf + head, runs, nr * sizeof(*runs));
	free(runs);
	*out = buf;
	*len = head + nr * sizeof(*runs);
	return 0;
}

/* The main host's ack: 0, or its -errno with its reason (printable only) in err. */
static int recv_ack(int fd, char *err, size_t errlen)
{
	struct timeval tv = { .tv_sec = ACK_TIMEOUT_S };
	struct mig_chunk_hdr h;
	uint8_t *buf = NULL;
	size_t cap = 0;
	int ret;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ret = mig_recv(fd, &h, &buf, &cap, err, errlen);
	if (!ret && h.type != MIG_ACK) {
		snprintf(err, errlen, "split migration: expected an ack, got chunk type %u", h.type);
		ret = -EPROTO;
	}
	if (!ret && h.arg) {
		char why[MIG_ACK_TEXT_MAX + 1];

		for (uint32_t i = 0; i < h.len; i++)
			why[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? (char)buf[i] : '?';
		why[h.len] = '\0';
		snprintf(err, errlen, "split migration: the main host refused: %s", why);
		ret = (int64_t)h.arg < 0 && (int64_t)h.arg > -4096 ? (int)(int64_t)h.arg : -EPROTO;
	}
	free(buf);
	return ret;
}

/*
 * The VM's pages are no longer wanted from sub-host i (addr): a DROP of all of guest RAM, then
 * a SYNC so they are gone when this returns. Best effort: a failure is logged, not returned.
 */
static void forget_pages(struct ms_client *c, unsigned int i, const char *addr,
			 const struct guest_mem *m)
{
	const struct mm_region *r;
	char why[200] = "";
	int ret = 0;

	if (!c)
		return;
	mm_for_each_region(m, r)
		if (!ret)
			ret = ms_drop(c, r->gpa, r->size);
	if (!ret)
		ret = ms_sync(c, why, sizeof(why));
	if (ret)
		pr_warn("split memory: sub-host %u (%s) may still hold the VM's pages: %s", i, addr,
			why[0] ? why : strerror(-ret));
}

int mig_split_source_run(struct guest_mem *m, uint32_t nr_vcpus, int fd,
			 const struct mig_source_ops *ops, void *vm,
			 const struct mig_split_params *p, struct mig_split_result *res, char *err,
			 size_t errlen)
{
	struct splitter s = { .m = m, .p = p, .fd = fd, .main_left = p->main_mem };
	uint64_t t0 = now_ns(), n = span_pages(m), sub_bytes0[MIG_SPLIT_SUBS_MAX];
	struct mig_hello hi;
	uint8_t *map = NULL;
	void *blob = NULL;
	size_t map_len = 0, size = 0;
	int ret, stopped = 0;

	if ((ret = mig_split_params_check(p, err, errlen)))
		return ret;
	for (unsigned int i = 0; i < p->nr_subs; i++) {
		if (!p->sub[i] || strlen(p->sub_addr[i]) >= MIG_SPLIT_ADDR_MAX) {
			snprintf(err, errlen, "split migration: sub-host %u: no connection or an "
				 "address over %d bytes", i, MIG_SPLIT_ADDR_MAX - 1);
			return -EINVAL;
		}
		sub_bytes0[i] = ms_client_bytes(p->sub[i]);
	}
	ret = -ENOMEM;
	s.loc = calloc(n ? n : 1, 1);
	if (!s.loc)
		goto out;
	if (p->replicas == 2 && !(s.loc2 = calloc(n ? n : 1, 1)))
		goto out;
	for (unsigned int i = 0; i <= p->nr_subs; i++)
		if (!(s.g[i].buf = malloc(MIG_PAGES_MAX * PAGE)))
			goto out;
	mig_hello_make(&hi, m, nr_vcpus);
	hi.flags = MIG_HELLO_SPLIT;	/* a plain destination refuses it */
	ret = mig_send(fd, MIG_HELLO, 0, &hi, sizeof(hi));
	s.res.bytes_main += sizeof(struct mig_chunk_hdr) + sizeof(hi);
	if (ret) {
		snprintf(err, errlen, "split migration: sending the hello: %s", strerror(-ret));
		goto out;
	}
	if ((ret = recv_ack(fd, err, errlen)))
		goto out;
	/* This cut is not live: the VM stays paused while its pages move. */
	ret = ops->stop(vm);
	if (ret) {
		snprintf(err, errlen, "split migration: stopping the VM: %s", strerror(-ret));
		goto out;
	}
	stopped = 1;
	if (p->tracking) {
		ret = mig_for_each_data(m, split_run, &s);
	} else {
		const struct mm_region *r;

		ret = 0;
		mm_for_each_region(m, r)
			if (!ret)
				ret = split_run(&s, r->gpa, r->size);
	}
	for (unsigned int i = 0; i <= p->nr_subs && !ret; i++)
		ret = flush_gather(&s, i);
	if (ret) {
		snprintf(err, errlen, "split migration: sending pages: %s", strerror(-ret));
		goto out;
	}
	for (unsigned int i = 0; i < p->nr_subs; i++) {
		char why[200] = "";

		ret = ms_sync(p->sub[i], why, sizeof(why));
		if (ret) {
			snprintf(err, errlen, "split migration: sub-host %u (%s): %s", i,
				 p->sub_addr[i], why[0] ? why : strerror(-ret));
			goto out;
		}
	}
	ret = build_map(&s, n, &map, &map_len);
	if (!ret)
		ret = ops->state(vm, &blob, &size);
	if (!ret)
		ret = mig_send(fd, MIG_SPLIT, 0, map, (uint32_t)map_len);
	if (!ret)
		ret = mig_send(fd, MIG_STATE, 0, blob, (uint32_t)size);
	if (!ret)
		ret = mig_send(fd, MIG_END, 0, NULL, 0);
	s.res.bytes_main += 3 * sizeof(struct mig_chunk_hdr) + map_len + size;
	if (ret) {
		snprintf(err, errlen, "split migration: sending the map and the state: %s",
			 strerror(-ret));
		goto out;
	}
	ret = recv_ack(fd, err, errlen);
	if (!ret)
		stopped = 0;	/* the main host runs it now */
out:
	if (ret && stopped) {
		/* The VM runs here again: what went to the sub-hosts is garbage now. */
		for (unsigned int i = 0; i < p->nr_subs; i++)
			forget_pages(p->sub[i], i, p->sub_addr[i], m);
		ops->resume(vm);
	}
	if (s.loc) {
		count_locs(s.loc, s.loc2, n, m, &s.res.c);
		s.res.c.nr_subs = p->nr_subs;
		s.res.c.replicas = p->replicas == 2 ? 2 : 1;
	}
	for (unsigned int i = 0; i < p->nr_subs; i++)
		s.res.bytes_sub += ms_client_bytes(p->sub[i]) - sub_bytes0[i];
	s.res.total_ns = now_ns() - t0;
	if (res)
		*res = s.res;
	for (unsigned int i = 0; i <= MIG_SPLIT_SUBS_MAX; i++)
		free(s.g[i].buf);
	free(s.loc);
	free(s.loc2);
	free(map);
	free(blob);
	return ret;
}

/* ---- main host ---- */

struct mig_split_dest {
	const struct guest_mem *m;
	pthread_mutex_t lock;		/* loc and the counters (the control thread reads them) */
	uint8_t *loc;
	uint8_t *loc2;			/* the replicas' owners (index + 1; 0 none); kept for a
					   page paged in (its second home), set by a page-out */
	uint8_t *home;			/* the first owner + 1 a page came from or went to last
					   (a page-out goes there: it holds the page's room) */
	uint64_t n;
	/*
	 * The serving thread's alone once it runs; NULL: gone (or never reached). sub: the
	 * urgent channel (a fault's own page), bulk: its neighbours (prefetch), one connection
	 * each per sub-host, so a page-in never waits behind bulk bytes.
	 */
	struct ms_client *sub[MIG_SPLIT_SUBS_MAX];
	struct ms_client *bulk[MIG_SPLIT_SUBS_MAX];
	char addr[MIG_SPLIT_SUBS_MAX][MIG_SPLIT_ADDR_MAX];
	struct mig_split_counts c;
	uint64_t vm_id;
};

/*
 * A channel to sub-host o closed, silent or answering wrongly. The urgent one (bulk 0): the
 * sub-host is dropped, both channels closed, its pages come from their replicas. The bulk one:
 * only it is closed, its pages come on their own faults.
 */
static void drop_channel(struct mig_split_dest *d, unsigned int o, int bulk, const char *why)
{
	if (!bulk) {
		ms_client_close(d->sub[o]);
		d->sub[o] = NULL;
	}
	ms_client_close(d->bulk[o]);
	d->bulk[o] = NULL;
	pthread_mutex_lock(&d->lock);
	if (bulk)
		d->c.bulk_gone++;
	else
		d->c.subs_gone++;
	pthread_mutex_unlock(&d->lock);
	pr_warn("split memory: sub-host %u (%s)%s: %s; its pages %s", o, d->addr[o],
		bulk ? ": the bulk channel closed" : " dropped", why,
		bulk ? "come on faults alone" : "are read from their replicas, where there are any");
}

/*
 * Page in n bytes at gpa from owner o, on its urgent channel (bulk 0) or its bulk one. 0;
 * -ENOENT (not stored there: the connection goes on); another -errno (an urgent channel's
 * sub-host is dropped, a bulk channel alone closed). why: the reason, for the lost-frames line.
 */
static int page_in(struct mig_split_dest *d, unsigned int o, int bulk, uint64_t gpa,
		   uint8_t *out, uint64_t n, char *why, size_t whylen)
{
	struct ms_client *c = bulk ? d->bulk[o] : d->sub[o];
	uint64_t b0;
	int ret;

	if (!c) {
		snprintf(why, whylen, "sub-host %u (%s) is gone", o, d->addr[o]);
		return -ENOTCONN;
	}
	b0 = ms_client_bytes(c);
	why[0] = '\0';
	ret = ms_get(c, gpa, out, n, why, whylen);
	pthread_mutex_lock(&d->lock);
	d->c.bytes_in += ms_client_bytes(c) - b0;
	if (ret && !bulk)
		d->c.owner_failures++;
	pthread_mutex_unlock(&d->lock);
	if (ret && !why[0])
		snprintf(why, whylen, "%s", ret == -EPIPE || ret == -ECONNRESET ?
			 "the connection closed" : strerror(-ret));
	if (ret && ret != -ENOENT)
		drop_channel(d, o, bulk, ret == -EAGAIN || ret == -ETIMEDOUT ?
			     "no answer in time" : why);
	return ret;
}

/*
 * The page source's read: the sub-hosts' pages from their owners (first, then the replica's),
 * the rest zeros. bulk: a fault's neighbours (read_ahead) on the bulk channels, whose failure
 * only leaves them for their own faults; else the urgent channels, whose failure on every
 * owner loses the frames.
 */
static int split_fetch(struct mig_split_dest *d, uint64_t off, uint8_t *out, uint64_t len,
		       int bulk)
{
	while (len) {
		uint64_t gpa, left, n, pg;
		unsigned int kind, rep, owner[2], nown, k;
		char why[2][256];
		int ret = mig_flat_to_gpa(d->m, off, &gpa, &left);

		if (ret)
			return ret;
		pg = gpa / PAGE;
		kind = d->loc[pg];
		rep = d->loc2 ? d->loc2[pg] : 0;
		for (n = PAGE; n < len && n < left && n < MIG_PAGES_MAX * PAGE &&
		     d->loc[pg + n / PAGE] == kind && (!d->loc2 || d->loc2[pg + n / PAGE] == rep);
		     n += PAGE)
			;
		if (kind < MIG_LOC_SUB) {
			memset(out, 0, n);	/* the page source's holes read as zeros */
			goto next;
		}
		owner[0] = kind - MIG_LOC_SUB;
		owner[1] = rep ? rep - 1 : 0;
		nown = rep ? 2 : 1;
		for (k = 0; k < nown; k++)
			if (!(ret = page_in(d, owner[k], bulk, gpa, out, n, why[k], sizeof(why[k]))))
				break;
		if (ret && bulk)
			return ret;	/* neighbours: left for their own faults */
		pthread_mutex_lock(&d->lock);
		if (ret) {
			d->c.errors++;
		} else {
			memset(d->loc + pg, MIG_LOC_MAIN, n / PAGE);
			for (unsigned int j = 0; j < nown; j++)
				d->c.pages_sub[owner[j]] -= n / PAGE;
			d->c.pages_remote -= n / PAGE;
			d->c.pages_main += n / PAGE;
			d->c.pages_in += n / PAGE;
			if (k)
				d->c.pages_in_replica += n / PAGE;
			if (bulk)
				d->c.pages_in_bulk += n / PAGE;
		}
		pthread_mutex_unlock(&d->lock);
		if (ret && nown == 1) {
			pr_err("split memory: guest frames %#" PRIx64 "..%#" PRIx64 " on sub-host %u "
			       "(%s) are lost: %s", pg, pg + n / PAGE - 1, owner[0],
			       d->addr[owner[0]], why[0]);
			return ret;
		}
		if (ret) {
			pr_err("split memory: guest frames %#" PRIx64 "..%#" PRIx64 " on sub-hosts "
			       "%u (%s) and %u (%s) are lost: %s; %s", pg, pg + n / PAGE - 1,
			       owner[0], d->addr[owner[0]], owner[1], d->addr[owner[1]], why[0],
			       why[1]);
			return ret;
		}
next:
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

/*
 * Page-out: where page pg goes. Its first home (the sub-host it came from or went to last:
 * overwriting a page it holds takes no new room there), its replica's, then the sub-hosts in
 * stripe order as the source's (frame / MIG_SPLIT_STRIPE mod N); live ones, distinct, as many
 * as the map's copies (1, or 2 with replicas). How many (0: no sub-host left).
 */
static unsigned int pageout_owners(const struct mig_split_dest *d, uint64_t pg, unsigned int *own)
{
	unsigned int want = d->loc2 ? 2 : 1, n = 0, nr = d->c.nr_subs, cand[2 + MIG_SPLIT_SUBS_MAX];
	unsigned int nc = 0, s0 = (unsigned int)(pg / MIG_SPLIT_STRIPE % nr);

	if (d->home[pg])
		cand[nc++] = d->home[pg] - 1u;
	if (d->loc2 && d->loc2[pg])
		cand[nc++] = d->loc2[pg] - 1u;
	for (unsigned int k = 0; k < nr; k++)
		cand[nc++] = (s0 + k) % nr;
	for (unsigned int k = 0; k < nc && n < want; k++)
		if (cand[k] < nr && d->sub[cand[k]] && (!n || own[0] != cand[k]))
			own[n++] = cand[k];
	return n;
}

/*
 * The page source's page_out: each page PUT to its owners (runs of consecutive frames one
 * chunk), on the bulk channel where there is one, then SYNC on each owner used: a page is
 * stored when every owner's SYNC says so. A sub-host that refuses (full: -ENOSPC) keeps its
 * connection; a channel that fails is closed as for page-ins. The owners of a stored page
 * become its homes (its location changes in split_paged_out, once it left memory).
 */
static int split_page_out(void *opaque, const uint64_t *offs, unsigned int n, const uint8_t *buf,
			  uint8_t *ok)
{
	struct mig_split_dest *d = opaque;
	unsigned int (*own)[2] = calloc(n ? n : 1, sizeof(*own)), *nown = calloc(n ? n : 1,
										     sizeof(*nown));
	uint64_t *gpa = calloc(n ? n : 1, sizeof(*gpa)), bytes = 0, refused = 0;
	int bad[MIG_SPLIT_SUBS_MAX] = { 0 }, used[MIG_SPLIT_SUBS_MAX] = { 0 }, ret = 0;

	if (!own || !nown || !gpa) {
		ret = -ENOMEM;
		goto out;
	}
	for (unsigned int i = 0; i < n; i++) {
		uint64_t left;

		if ((ret = mig_flat_to_gpa(d->m, offs[i], &gpa[i], &left)))
			goto out;
		nown[i] = pageout_owners(d, gpa[i] / PAGE, own[i]);
		for (unsigned int k = 0; k < nown[i]; k++)
			used[own[i][k]] = 1;
	}
	for (unsigned int o = 0; o < d->c.nr_subs; o++) {
		int bulk = d->bulk[o] != NULL;
		struct ms_client *c = bulk ? d->bulk[o] : d->sub[o];
		char why[256] = "";
		uint64_t b0;

		if (!used[o] || !c)
			continue;
		b0 = ms_client_bytes(c);
		for (unsigned int i = 0, j; i < n && !bad[o]; i = j) {
			j = i + 1;
			if (!(own[i][0] == o || (nown[i] > 1 && own[i][1] == o)))
				continue;
			while (j < n && gpa[j] == gpa[j - 1] + PAGE &&
			       (own[j][0] == o || (nown[j] > 1 && own[j][1] == o)))
				j++;
			bad[o] = ms_put(c, gpa[i], buf + (uint64_t)i * PAGE, (uint64_t)(j - i) * PAGE);
		}
		if (!bad[o])
			bad[o] = ms_sync(c, why, sizeof(why));
		bytes += ms_client_bytes(c) - b0;
		if (bad[o] == -ENOSPC)
			pr_warn_ratelimited("split memory: sub-host %u (%s) refused pages paged out: "
					    "%s; they stay on the main host", o, d->addr[o], why);
		else if (bad[o])
			drop_channel(d, o, bulk, why[0] ? why : strerror(-bad[o]));
	}
	for (unsigned int i = 0; i < n; i++) {
		ok[i] = nown[i] > 0;
		for (unsigned int k = 0; k < nown[i]; k++)
			if (bad[own[i][k]])
				ok[i] = 0;
		if (!ok[i]) {
			refused++;
			continue;
		}
		d->home[gpa[i] / PAGE] = (uint8_t)(own[i][0] + 1);
		if (d->loc2)
			d->loc2[gpa[i] / PAGE] = nown[i] > 1 ? (uint8_t)(own[i][1] + 1) : 0;
	}
out:
	pthread_mutex_lock(&d->lock);
	d->c.bytes_out += bytes;
	d->c.pageout_refused += ret ? n : refused;
	pthread_mutex_unlock(&d->lock);
	free(own);
	free(nown);
	free(gpa);
	return ret;
}

/* The page source's paged_out: these pages left the main host for their homes. */
static void split_paged_out(void *opaque, const uint64_t *offs, unsigned int n)
{
	struct mig_split_dest *d = opaque;

	pthread_mutex_lock(&d->lock);
	for (unsigned int i = 0; i < n; i++) {
		uint64_t gpa, left, pg;

		if (mig_flat_to_gpa(d->m, offs[i], &gpa, &left) || !d->home[gpa / PAGE])
			continue;
		pg = gpa / PAGE;
		if (d->loc[pg] == MIG_LOC_MAIN)
			d->c.pages_main--;
		else if (d->loc[pg] == MIG_LOC_FREE)
			d->c.pages_free--;
		else
			continue;	/* not here: cannot be */
		d->loc[pg] = (uint8_t)(MIG_LOC_SUB + d->home[pg] - 1);
		d->c.pages_sub[d->home[pg] - 1]++;
		if (d->loc2 && d->loc2[pg])
			d->c.pages_sub[d->loc2[pg] - 1]++;
		d->c.pages_remote++;
		d->c.pages_out++;
	}
	pthread_mutex_unlock(&d->lock);
}

static int split_read(void *opaque, uint64_t off, void *buf, uint64_t len)
{
	return split_fetch(opaque, off, buf, len, 0);
}

static int split_read_ahead(void *opaque, uint64_t off, void *buf, uint64_t len)
{
	return split_fetch(opaque, off, buf, len, 1);
}

/* Data = a sub-host's page; everything else (here already, or free) is a hole. */
static int split_is_hole(void *opaque, uint64_t off, uint64_t len, uint64_t *run)
{
	struct mig_split_dest *d = opaque;
	uint64_t gpa, left, n, pg;
	int hole;

	if (mig_flat_to_gpa(d->m, off, &gpa, &left))
		return -EINVAL;
	pg = gpa / PAGE;
	pthread_mutex_lock(&d->lock);
	hole = d->loc[pg] < MIG_LOC_SUB;
	for (n = PAGE; n < len && n < left && (d->loc[pg + n / PAGE] < MIG_LOC_SUB) == hole;
	     n += PAGE)
		;
	pthread_mutex_unlock(&d->lock);
	*run = n < len ? n : len;
	return hole;
}

static const struct mig_page_source_ops split_source_ops = {
	.read = split_read,
	.read_ahead = split_read_ahead,
	.is_hole = split_is_hole,
	.page_out = split_page_out,
	.paged_out = split_paged_out,
};

/* Check the MIG_SPLIT payload and mark the sub-hosts' pages in d->loc. */
static int parse_map(struct mig_split_dest *d, const uint8_t *p, uint32_t len, char *err,
		     size_t errlen)
{
	struct mig_split_hdr h;
	size_t head;

	if (len < sizeof(h)) {
		snprintf(err, errlen, "split migration: a map of %u bytes", len);
		return -EPROTO;
	}
	memcpy(&h, p, sizeof(h));
	head = sizeof(h) + (size_t)h.nr_subs * MIG_SPLIT_ADDR_MAX;
	if (!h.vm_id || !h.nr_subs || h.nr_subs > MIG_SPLIT_SUBS_MAX ||
	    len != head + (size_t)h.nr_runs * sizeof(struct mig_split_run)) {
		snprintf(err, errlen, "split migration: a map with VM id %#" PRIx64 ", %u "
			 "sub-hosts, %u runs in %u bytes", h.vm_id, h.nr_subs, h.nr_runs, len);
		return -EPROTO;
	}
	d->vm_id = h.vm_id;
	d->c.nr_subs = h.nr_subs;
	d->c.budget = h.budget & ~(PAGE - 1);
	for (uint32_t i = 0; i < h.nr_subs; i++) {
		const char *a = (const char *)p + sizeof(h) + i * MIG_SPLIT_ADDR_MAX;

		if (!memchr(a, '\0', MIG_SPLIT_ADDR_MAX) || !a[0]) {
			snprintf(err, errlen, "split migration: sub-host %u's address is not a "
				 "string", i);
			return -EPROTO;
		}
		memcpy(d->addr[i], a, MIG_SPLIT_ADDR_MAX);
	}
	for (uint32_t i = 0; i < h.nr_runs; i++) {
		struct mig_split_run r;

		memcpy(&r, p + head + i * sizeof(r), sizeof(r));
		if (!r.len || (r.gpa | r.len) & (PAGE - 1) || r.sub >= h.nr_subs ||
		    r.replica > h.nr_subs || r.replica == r.sub + 1 ||
		    !mm_range_is_ram(d->m, r.gpa, r.len)) {
			snprintf(err, errlen, "split migration: map run [%#" PRIx64 ", +%#" PRIx64
				 ") on sub-host %u (replica's owner + 1: %u) is not whole pages of RAM "
				 "on named, distinct sub-hosts", r.gpa, r.len, r.sub, r.replica);
			return -EPROTO;
		}
		if (r.replica && !d->loc2 && !(d->loc2 = calloc(d->n ? d->n : 1, 1))) {
			snprintf(err, errlen, "split migration: no memory for the replicas' map");
			return -ENOMEM;
		}
		for (uint64_t pg = r.gpa / PAGE; pg < (r.gpa + r.len) / PAGE; pg++) {
			if (d->loc[pg] != MIG_LOC_FREE) {
				snprintf(err, errlen, "split migration: frame %#" PRIx64 " is in the "
					 "map twice, or also came to the main host", pg);
				return -EPROTO;
			}
			d->loc[pg] = (uint8_t)(MIG_LOC_SUB + r.sub);
			d->home[pg] = (uint8_t)(r.sub + 1);
			if (r.replica)
				d->loc2[pg] = (uint8_t)r.replica;
		}
	}
	return 0;
}

/* Pages that came to the main host (mig_apply_pages() checked the range). */
static void mark_main(struct mig_split_dest *d, const struct mig_chunk_hdr *h)
{
	if (h->type == MIG_PAGES)
		memset(d->loc + h->arg / PAGE, MIG_LOC_MAIN, h->len / PAGE);
}

static int send_ack(int fd, int ret, const char *err)
{
	return mig_send(fd, MIG_ACK, (uint64_t)(int64_t)ret, err,
			ret ? (uint32_t)strnlen(err, MIG_ACK_TEXT_MAX) : 0);
}

static int default_connect(void *opaque, const char *addr, char *err, size_t errlen)
{
	return mig_connect(addr, err, errlen);
}

/* One channel to sub-host i (a page-in waits at most MIG_SPLIT_GET_TIMEOUT_S on it). */
static int open_channel(struct mig_split_dest *d, uint32_t i, mig_split_connect_fn connect,
			void *opaque, struct ms_client **out, char *why, size_t whylen)
{
	struct timeval tv = { .tv_sec = MIG_SPLIT_GET_TIMEOUT_S };
	int sfd = connect(opaque, d->addr[i], why, whylen);

	if (sfd < 0)
		return sfd;
	setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return ms_client_open(sfd, d->vm_id, out, why, whylen);
}

/*
 * Connect to every sub-host in the map: its urgent channel, then its bulk one (without which
 * its pages come on faults alone: a warning). Without replicas each must answer; with them
 * one that does not is left out (logged) as long as every sub-host page still has an owner
 * that did.
 */
static int connect_subs(struct mig_split_dest *d, mig_split_connect_fn connect, void *opaque,
			char *err, size_t errlen)
{
	int ret = 0;

	for (uint32_t i = 0; i < d->c.nr_subs; i++) {
		char why[200] = "";

		ret = open_channel(d, i, connect, opaque, &d->sub[i], why, sizeof(why));
		if (!ret) {
			why[0] = '\0';
			if ((ret = open_channel(d, i, connect, opaque, &d->bulk[i], why,
						sizeof(why)))) {
				pr_warn("split migration: sub-host %u (%s): no bulk channel: %s; its "
					"pages come on faults alone", i, d->addr[i],
					why[0] ? why : strerror(-ret));
				d->c.bulk_gone++;
			}
			continue;
		}
		snprintf(err, errlen, "split migration: sub-host %u (%s): %s", i, d->addr[i],
			 why[0] ? why : strerror(-ret));
		if (!d->loc2)
			return ret;
		pr_warn("%s; its pages are read from their replicas", err);
		d->c.subs_gone++;
	}
	if (!d->loc2)
		return 0;
	for (uint64_t pg = 0; pg < d->n; pg++)
		if (d->loc[pg] >= MIG_LOC_SUB && !d->sub[d->loc[pg] - MIG_LOC_SUB] &&
		    !(d->loc2[pg] && d->sub[d->loc2[pg] - 1])) {
			snprintf(err, errlen, "split migration: frame %#" PRIx64 " has no owner that "
				 "answers (sub-hosts %u and %d)", pg, d->loc[pg] - MIG_LOC_SUB,
				 (int)d->loc2[pg] - 1);
			return -ENOTCONN;
		}
	return 0;
}

int mig_split_dest_run(struct guest_mem *m, uint32_t nr_vcpus, int fd,
		       const struct mig_dest_ops *ops, void *vm, mig_split_connect_fn connect,
		       void *opaque, struct mig_split_dest **out, char *err, size_t errlen)
{
	struct timeval tv = { .tv_sec = ACK_TIMEOUT_S };
	struct mig_split_dest *d;
	struct mig_chunk_hdr h;
	struct mig_hello hi;
	uint8_t *buf = NULL, *state = NULL, *map = NULL;
	size_t cap = 0, state_len = 0;
	uint32_t map_len = 0;
	int ret;

	*out = NULL;
	if (!connect)
		connect = default_connect;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->m = m;
	d->n = span_pages(m);
	pthread_mutex_init(&d->lock, NULL);
	d->loc = calloc(d->n ? d->n : 1, 1);
	d->home = calloc(d->n ? d->n : 1, 1);
	if (!d->loc || !d->home) {
		mig_split_dest_free(d);
		return -ENOMEM;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ret = mig_recv(fd, &h, &buf, &cap, err, errlen);
	if (!ret && (h.type != MIG_HELLO || h.len != sizeof(hi))) {
		snprintf(err, errlen, "split migration: the stream does not start with a hello");
		ret = -EPROTO;
	}
	if (!ret) {
		memcpy(&hi, buf, sizeof(hi));
		if (hi.flags != MIG_HELLO_SPLIT) {
			snprintf(err, errlen, "split migration: the source's hello is not a split's");
			ret = -EPROTO;
		}
		hi.flags = 0;
		if (!ret)
			ret = mig_hello_check(&hi, m, nr_vcpus, err, errlen);
		send_ack(fd, ret, err);
	}
	while (!ret) {
		ret = mig_recv(fd, &h, &buf, &cap, err, errlen);
		if (ret)
			break;
		if (h.type == MIG_END)
			break;
		switch (h.type) {
		case MIG_PAGES:
		case MIG_ZERO:
			ret = mig_apply_pages(m, &h, buf, err, errlen);
			if (!ret)
				mark_main(d, &h);
			break;
		case MIG_SPLIT:
		case MIG_STATE: {
			uint8_t *copy = malloc(h.len ? h.len : 1);

			if (!copy) {
				ret = -ENOMEM;
				break;
			}
			memcpy(copy, buf, h.len);
			if (h.type == MIG_SPLIT) {
				free(map);
				map = copy;
				map_len = h.len;
			} else {
				free(state);
				state = copy;
				state_len = h.len;
			}
			break;
		}
		case MIG_CANCEL:
			snprintf(err, errlen, "split migration: the source cancelled it");
			ret = -ECANCELED;
			break;
		default:
			snprintf(err, errlen, "split migration: unexpected chunk type %u", h.type);
			ret = -EPROTO;
		}
	}
	if (ret)
		goto out;
	if (h.arg || !state || !map) {
		snprintf(err, errlen, "split migration: the stream ended without %s",
			 h.arg ? "a pre-copy END" : !state ? "the VM's state" : "the page map");
		ret = -EPROTO;
		goto out_ack;
	}
	ret = parse_map(d, map, map_len, err, errlen);
	if (!ret)
		ret = connect_subs(d, connect, opaque, err, errlen);
	if (ret)
		goto out_ack;
	count_locs(d->loc, d->loc2, d->n, m, &d->c);
	d->c.replicas = d->loc2 ? 2 : 1;
	{
		const struct mig_page_source src = { .ops = &split_source_ops, .opaque = d,
						     .size = m->ram_size, .on_demand = 1,
						     .budget = d->c.budget };

		*out = d;	/* the lazy memory may use it from here on */
		ret = ops->lazy(vm, &src);
	}
	if (ret) {
		snprintf(err, errlen, "split migration: lazy memory: %s", strerror(-ret));
		goto out_ack;
	}
	ret = ops->load(vm, state, state_len);
	if (ret) {
		snprintf(err, errlen, "split migration: the VM's state was not loaded (the reason "
			 "is above)");
		goto out_ack;
	}
	ret = ops->start(vm);
	if (ret)
		snprintf(err, errlen, "split migration: starting the vCPUs: %s", strerror(-ret));
out_ack:
	if (send_ack(fd, ret, err) && !ret) {
		snprintf(err, errlen, "split migration: the source is gone before the switch-over");
		ret = -EPIPE;
	}
out:
	if (!*out)
		mig_split_dest_free(d);
	free(buf);
	free(map);
	free(state);
	return ret;
}

int mig_split_peek(int fd)
{
	struct {
		struct mig_chunk_hdr h;
		struct mig_hello hi;
	} first;
	ssize_t n;

	do
		n = recv(fd, &first, sizeof(first), MSG_PEEK | MSG_WAITALL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == sizeof(first) && first.h.type == MIG_HELLO && first.h.len == sizeof(first.hi) &&
	       first.hi.magic == MIG_STREAM_MAGIC && first.hi.flags == MIG_HELLO_SPLIT;
}

void mig_split_dest_counts(struct mig_split_dest *d, struct mig_split_counts *c)
{
	pthread_mutex_lock(&d->lock);
	*c = d->c;
	pthread_mutex_unlock(&d->lock);
}

void mig_split_dest_forget(struct mig_split_dest *d)
{
	if (!d)
		return;
	for (unsigned int i = 0; i < MIG_SPLIT_SUBS_MAX; i++)
		forget_pages(d->sub[i], i, d->addr[i], d->m);
}

void mig_split_dest_free(struct mig_split_dest *d)
{
	if (!d)
		return;
	for (unsigned int i = 0; i < MIG_SPLIT_SUBS_MAX; i++) {
		ms_client_close(d->sub[i]);
		ms_client_close(d->bulk[i]);
	}
	pthread_mutex_destroy(&d->lock);
	free(d->loc);
	free(d->home);
	free(d->loc2);
	free(d);
}
