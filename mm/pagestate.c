#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mm/mem.h"
#include "mm/pagestate.h"

struct ps_region {
	uint64_t gpa, size;
	uint64_t first;		/* index of this region's first page in state[] */
};

struct mm_pagestate {
	pthread_mutex_t lock;			/* writers */
	int nr_regions;
	struct ps_region regions[MM_MAX_REGIONS];
	uint64_t nr_pages;
	uint64_t count[MM_PAGE_NR_STATES];	/* read with atomics */
	uint8_t *state;				/* one byte per page, read with atomics */
};

int mm_pagestate_create(const struct guest_mem *m, struct mm_pagestate **out)
{
	struct mm_pagestate *ps = calloc(1, sizeof(*ps));
	uint64_t n = 0;

	if (!ps)
		return -ENOMEM;
	for (int i = 0; i < m->nr_regions; i++) {
		const struct mm_region *r = &m->regions[i];

		if ((r->gpa | r->size) & (MM_PAGE_SIZE - 1)) {
			free(ps);
			return -EINVAL;
		}
		ps->regions[i] = (struct ps_region){ .gpa = r->gpa, .size = r->size, .first = n };
		n += r->size >> MM_PAGE_SHIFT;
	}
	ps->nr_regions = m->nr_regions;
	ps->nr_pages = n;
	ps->state = calloc(n ? n : 1, 1);
	if (!ps->state) {
		free(ps);
		return -ENOMEM;
	}
	ps->count[MM_PAGE_PRESENT] = n;
	pthread_mutex_init(&ps->lock, NULL);
	*out = ps;
	return 0;
}

void mm_pagestate_destroy(struct mm_pagestate *ps)
{
	if (!ps)
		return;
	pthread_mutex_destroy(&ps->lock);
	free(ps->state);
	free(ps);
}

/* First page index of [gpa, gpa+len) if it is whole pages in one region; 0 or -errno. */
static int range_index(const struct mm_pagestate *ps, uint64_t gpa, uint64_t len, uint64_t *idx)
{
	if (!len || ((gpa | len) & (MM_PAGE_SIZE - 1)))
		return -EINVAL;
	for (int i = 0; i < ps->nr_regions; i++) {
		const struct ps_region *r = &ps->regions[i];

		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		if (len > r->size - (gpa - r->gpa))
			return -EFAULT;
		*idx = r->first + ((gpa - r->gpa) >> MM_PAGE_SHIFT);
		return 0;
	}
	return -EFAULT;
}

static void set_locked(struct mm_pagestate *ps, uint64_t i, uint8_t st)
{
	uint8_t old = __atomic_load_n(&ps->state[i], __ATOMIC_RELAXED);

	if (old == st)
		return;
	__atomic_store_n(&ps->state[i], st, __ATOMIC_RELEASE);
	__atomic_fetch_sub(&ps->count[old], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&ps->count[st], 1, __ATOMIC_RELAXED);
}

int mm_pagestate_set(struct mm_pagestate *ps, uint64_t gpa, uint64_t len, enum mm_page_state st)
{
	uint64_t idx;
	int r;

	if ((unsigned int)st >= MM_PAGE_NR_STATES)
		return -EINVAL;
	r = range_index(ps, gpa, len, &idx);
	if (r)
		return r;
	pthread_mutex_lock(&ps->lock);
	for (uint64_t i = 0; i < len >> MM_PAGE_SHIFT; i++)
		set_locked(ps, idx + i, st);
	pthread_mutex_unlock(&ps->lock);
	return 0;
}

int64_t mm_pagestate_change(struct mm_pagestate *ps, uint64_t gpa, uint64_t len,
			    unsigned int from_mask, enum mm_page_state st)
{
	uint64_t idx;
	int64_t n = 0;
	int r;

	if ((unsigned int)st >= MM_PAGE_NR_STATES)
		return -EINVAL;
	r = range_index(ps, gpa, len, &idx);
	if (r)
		return r;
	pthread_mutex_lock(&ps->lock);
	for (uint64_t i = idx; i < idx + (len >> MM_PAGE_SHIFT); i++) {
		uint8_t old = __atomic_load_n(&ps->state[i], __ATOMIC_RELAXED);

		if (old != st && (from_mask & (1u << old))) {
			set_locked(ps, i, st);
			n++;
		}
	}
	pthread_mutex_unlock(&ps->lock);
	return n;
}

int mm_pagestate_xchg(struct mm_pagestate *ps, uint64_t gpa, enum mm_page_state st)
{
	uint64_t idx;
	int r;

	if ((unsigned int)st >= MM_PAGE_NR_STATES)
		return -EINVAL;
	r = range_index(ps, gpa & ~(MM_PAGE_SIZE - 1), MM_PAGE_SIZE, &idx);
	if (r)
		return r;
	pthread_mutex_lock(&ps->lock);
	r = __atomic_load_n(&ps->state[idx], __ATOMIC_RELAXED);
	set_locked(ps, idx, st);
	pthread_mutex_unlock(&ps->lock);
	return r;
}

int mm_pagestate_get(const struct mm_pagestate *ps, uint64_t gpa)
{
	uint64_t idx;
	int r = range_index(ps, gpa & ~(MM_PAGE_SIZE - 1), MM_PAGE_SIZE, &idx);

	if (r)
		return r;
	return __atomic_load_n(&ps->state[idx], __ATOMIC_ACQUIRE);
}

uint64_t mm_pagestate_count(const struct mm_pagestate *ps, enum mm_page_state st)
{
	if ((unsigned int)st >= MM_PAGE_NR_STATES)
		return 0;
	return __atomic_load_n(&ps->count[st], __ATOMIC_RELAXED);
}

int mm_pagestate_for_each_run(const struct mm_pagestate *ps, enum mm_page_state st,
			      int (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque)
{
	for (int i = 0; i < ps->nr_regions; i++) {
		const struct ps_region *rg = &ps->regions[i];
		uint64_t n = rg->size >> MM_PAGE_SHIFT, p = 0;

		while (p < n) {
			uint64_t start;
			int r;

			while (p < n && __atomic_load_n(&ps->state[rg->first + p],
							 __ATOMIC_ACQUIRE) != st)
				p++;
			if (p == n)
				break;
			start = p;
			while (p < n && __atomic_load_n(&ps->state[rg->first + p],
							 __ATOMIC_ACQUIRE) == st)
				p++;
			r = fn(opaque, rg->gpa + (start << MM_PAGE_SHIFT),
			       (p - start) << MM_PAGE_SHIFT);
			if (r)
				return r;
		}
	}
	return 0;
}
