/*
 * The simulator's model pieces (sched/sim.h): the file LRU as mm/vmscan.c and mm/workingset.c
 * keep it, CFS-like CPU sharing, and a seeded generator.
 *
 * The LRU: a page read for the first time goes to the head of the inactive list with
 * PG_referenced set (filemap_read marks it accessed); a read of an inactive page that is
 * referenced activates it (folio_mark_accessed), which ages the lruvec; a read of an active page
 * only sets PG_referenced. Reclaim takes pages from the inactive tail (unmapped file pages are
 * not rotated), leaving a shadow entry stamped with the lruvec's nonresident age, and moves
 * pages from the active tail to the inactive head while the inactive list is "low" (inactive *
 * int_sqrt(10 * GiB) < active). A read of a page with a shadow entry is a refault; if its
 * refault distance (age now - age at eviction) is at most the active file list, the page comes
 * back active: a workingset activation (workingset_refault).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sim.h"

#define RECLAIM_BATCH	32	/* SWAP_CLUSTER_MAX */

static void *grow_array(void *p, size_t n, size_t old, size_t size)
{
	char *q = realloc(p, n * size);

	if (q && n > old)
		memset(q + old * size, 0, (n - old) * size);
	return q;
}

int sim_lru_grow(struct sim_lru *l, uint32_t npages)
{
	void *p;

	if (npages <= l->npages)
		return 0;
	if (npages > INT32_MAX)
		return -ENOMEM;
	if (!(p = grow_array(l->prev, npages, l->npages, sizeof(*l->prev))))
		return -ENOMEM;
	l->prev = p;
	if (!(p = grow_array(l->next, npages, l->npages, sizeof(*l->next))))
		return -ENOMEM;
	l->next = p;
	if (!(p = grow_array(l->state, npages, l->npages, sizeof(*l->state))))
		return -ENOMEM;
	l->state = p;
	if (!(p = grow_array(l->referenced, npages, l->npages, sizeof(*l->referenced))))
		return -ENOMEM;
	l->referenced = p;
	if (!(p = grow_array(l->shadow, npages, l->npages, sizeof(*l->shadow))))
		return -ENOMEM;
	l->shadow = p;
	l->npages = npages;
	return 0;
}

int sim_lru_init(struct sim_lru *l, uint32_t npages, uint32_t page_bytes)
{
	memset(l, 0, sizeof(*l));
	l->page_bytes = page_bytes ? page_bytes : 4096;
	for (int i = 0; i < 3; i++)
		l->head[i] = l->tail[i] = -1;
	return sim_lru_grow(l, npages ? npages : 1);
}

void sim_lru_free(struct sim_lru *l)
{
	free(l->prev);
	free(l->next);
	free(l->state);
	free(l->referenced);
	free(l->shadow);
	memset(l, 0, sizeof(*l));
}

static void unlink_page(struct sim_lru *l, int32_t p)
{
	int s = l->state[p];

	if (l->prev[p] >= 0)
		l->next[l->prev[p]] = l->next[p];
	else
		l->head[s] = l->next[p];
	if (l->next[p] >= 0)
		l->prev[l->next[p]] = l->prev[p];
	else
		l->tail[s] = l->prev[p];
	l->nr[s]--;
	l->state[p] = SIM_PAGE_NONE;
}

static void add_head(struct sim_lru *l, int32_t p, int s)
{
	l->state[p] = (uint8_t)s;
	l->prev[p] = -1;
	l->next[p] = l->head[s];
	if (l->head[s] >= 0)
		l->prev[l->head[s]] = p;
	else
		l->tail[s] = p;
	l->head[s] = p;
	l->nr[s]++;
}

/* The integer square root, rounded down (the kernel's int_sqrt). */
static uint64_t int_sqrt(uint64_t x)
{
	uint64_t r = 0;

	for (uint64_t bit = 1ULL << 62; bit; bit >>= 2) {
		if (x >= r + bit) {
			x -= r + bit;
			r = (r >> 1) + bit;
		} else {
			r >>= 1;
		}
	}
	return r;
}

bool sim_lru_inactive_low(const struct sim_lru *l)
{
	uint64_t gb = ((l->nr[SIM_PAGE_INACTIVE] + l->nr[SIM_PAGE_ACTIVE]) * l->page_bytes) >> 30;
	uint64_t ratio = gb ? int_sqrt(10 * gb) : 1;

	return l->nr[SIM_PAGE_INACTIVE] * ratio < l->nr[SIM_PAGE_ACTIVE];
}

/* shrink_active_list: the active tail to the inactive head, PG_referenced cleared. */
static void deactivate(struct sim_lru *l, uint64_t n)
{
	while (n-- && l->tail[SIM_PAGE_ACTIVE] >= 0) {
		int32_t p = l->tail[SIM_PAGE_ACTIVE];

		unlink_page(l, p);
		l->referenced[p] = 0;
		add_head(l, p, SIM_PAGE_INACTIVE);
		l->st.scanned++;
		l->st.deactivated++;
	}
}

void sim_lru_shrink(struct sim_lru *l, uint64_t limit)
{
	for (;;) {
		uint64_t total = l->nr[SIM_PAGE_INACTIVE] + l->nr[SIM_PAGE_ACTIVE];
		uint64_t n = total > limit ? total - limit : 0;

		if (!n)
			return;
		if (sim_lru_inactive_low(l) || !l->nr[SIM_PAGE_INACTIVE])
			deactivate(l, RECLAIM_BATCH);
		if (n > RECLAIM_BATCH)
			n = RECLAIM_BATCH;
		while (n-- && l->tail[SIM_PAGE_INACTIVE] >= 0) {
			int32_t p = l->tail[SIM_PAGE_INACTIVE];

			unlink_page(l, p);
			l->referenced[p] = 0;
			l->shadow[p] = ++l->nonresident_age;	/* the stamp, + 1 (0: none) */
			l->st.evicted++;
			l->st.scanned++;
		}
	}
}

int sim_lru_access(struct sim_lru *l, uint32_t page, uint64_t limit)
{
	int32_t p = (int32_t)page;

	if (page >= l->npages)
		return 0;
	switch (l->state[p]) {
	case SIM_PAGE_INACTIVE:
		l->st.hits++;
		if (l->referenced[p]) {
			unlink_page(l, p);
			l->referenced[p] = 0;
			add_head(l, p, SIM_PAGE_ACTIVE);
			l->nonresident_age++;	/* workingset_activation */
		} else {
			l->referenced[p] = 1;
		}
		return 1;
	case SIM_PAGE_ACTIVE:
		l->st.hits++;
		l->referenced[p] = 1;
		return 1;
	}
	l->st.misses++;
	if (!limit)
		return 0;		/* no room for any cache: read and dropped */
	sim_lru_shrink(l, limit - 1);
	if (l->shadow[p]) {
		uint64_t distance = l->nonresident_age - (l->shadow[p] - 1);

		l->shadow[p] = 0;
		l->st.refault++;
		if (distance <= l->nr[SIM_PAGE_ACTIVE]) {
			l->st.activate++;
			l->nonresident_age++;
			l->referenced[p] = 0;
			add_head(l, p, SIM_PAGE_ACTIVE);
			return 0;
		}
	}
	l->referenced[p] = 1;
	add_head(l, p, SIM_PAGE_INACTIVE);
	return 0;
}

/* ---- CPUs ---- */

/* kernel/sched/core.c sched_prio_to_weight[] */
static const int nice_weight[40] = {
	88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
	9548,  7620,  6100,  4904,  3906,  3121,  2501,  1991,  1586,  1277,
	1024,  820,   655,   526,   423,   335,   272,   215,   172,   137,
	110,   87,    70,    56,    45,    36,    29,    23,    18,    15,
};

double sim_nice_weight(int nice)
{
	nice = nice < -20 ? -20 : nice > 19 ? 19 : nice;
	return nice_weight[nice + 20];
}

void sim_cpu_share(struct sim_cpu_ent *e, int n, double cap)
{
	bool *done = calloc(n > 0 ? n : 1, sizeof(*done));
	double left = cap;

	for (int i = 0; i < n; i++)
		e[i].got = 0;
	if (!done)
		return;
	for (int i = 0; i < n; i++)
		done[i] = e[i].threads <= 0 || e[i].weight <= 0;
	/* Water filling: whoever would get more than it can use gets what it can use. */
	for (;;) {
		double wsum = 0;
		bool capped = false;

		for (int i = 0; i < n; i++)
			if (!done[i])
				wsum += e[i].weight * e[i].threads;
		if (wsum <= 0 || left <= 1e-12)
			break;
		for (int i = 0; i < n; i++) {
			if (done[i])
				continue;
			if (left * e[i].weight * e[i].threads / wsum >= e[i].threads) {
				e[i].got = e[i].threads;
				left -= e[i].threads;
				done[i] = true;
				capped = true;
			}
		}
		if (capped)
			continue;
		for (int i = 0; i < n; i++)
			if (!done[i])
				e[i].got = left * e[i].weight * e[i].threads / wsum;
		break;
	}
	free(done);
}

/* ---- randomness: splitmix64 ---- */

uint64_t sim_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

double sim_rand01(uint64_t *s)
{
	return (sim_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}
