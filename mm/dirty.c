#include <errno.h>
#include <stdlib.h>

#include "mm/dirty.h"
#include "mm/mem.h"
#include "mm/pagestate.h"

struct mm_dirty {
	uint64_t *bits[MM_MAX_REGIONS];
};

static uint64_t region_words(const struct mm_region *r)
{
	return ((r->size >> MM_PAGE_SHIFT) + 63) / 64;
}

int mm_dirty_start(struct guest_mem *m)
{
	const struct mm_region *r;
	struct mm_dirty *d;

	if (m->dirty)
		return -EBUSY;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	mm_for_each_region(m, r) {
		int i = mm_region_index(m, r);

		d->bits[i] = calloc(region_words(r) ? region_words(r) : 1, sizeof(uint64_t));
		if (!d->bits[i]) {
			m->dirty = d;
			mm_dirty_stop(m);
			return -ENOMEM;
		}
	}
	m->dirty = d;
	return 0;
}

void mm_dirty_stop(struct guest_mem *m)
{
	if (!m->dirty)
		return;
	for (int i = 0; i < MM_MAX_REGIONS; i++)
		free(m->dirty->bits[i]);
	free(m->dirty);
	m->dirty = NULL;
}

uint64_t mm_dirty_words(const struct guest_mem *m, int region)
{
	const struct mm_region *r = mm_region(m, region);

	return r ? region_words(r) : 0;
}

int mm_dirty_merge(struct guest_mem *m, int region, const uint64_t *bits)
{
	uint64_t n = mm_dirty_words(m, region);

	if (!m->dirty)
		return -ENODEV;
	if (!n)
		return -EINVAL;
	for (uint64_t w = 0; w < n; w++)
		if (bits[w])
			__atomic_fetch_or(&m->dirty->bits[region][w], bits[w], __ATOMIC_RELAXED);
	return 0;
}

int mm_dirty_mark(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint64_t end;

	if (!m->dirty)
		return -ENODEV;
	if (!len)
		return 0;
	if (!mm_range_is_ram(m, gpa, len))
		return -EFAULT;
	end = gpa + (len - 1);
	/* Page by page: each page's region found anew, so the range may cross regions. */
	for (uint64_t p = gpa & ~(MM_PAGE_SIZE - 1); ; p += MM_PAGE_SIZE) {
		const struct mm_region *r = mm_find_region(m, p < gpa ? gpa : p);
		uint64_t n = ((p < gpa ? gpa : p) - r->gpa) >> MM_PAGE_SHIFT;

		__atomic_fetch_or(&m->dirty->bits[mm_region_index(m, r)][n / 64], 1ULL << (n % 64),
				  __ATOMIC_RELAXED);
		if (end - p < MM_PAGE_SIZE)
			break;
	}
	return 0;
}

int mm_dirty_test(const struct guest_mem *m, uint64_t gpa)
{
	const struct mm_region *r;
	uint64_t n;

	if (!m->dirty)
		return -ENODEV;
	r = mm_find_region(m, gpa);
	if (!r)
		return -EFAULT;
	n = (gpa - r->gpa) >> MM_PAGE_SHIFT;
	return (int)((__atomic_load_n(&m->dirty->bits[mm_region_index(m, r)][n / 64],
				      __ATOMIC_RELAXED) >> (n % 64)) & 1);
}

uint64_t mm_dirty_count(const struct guest_mem *m)
{
	const struct mm_region *r;
	uint64_t c = 0;

	if (!m->dirty)
		return 0;
	mm_for_each_region(m, r) {
		const uint64_t *b = m->dirty->bits[mm_region_index(m, r)];

		for (uint64_t w = 0; w < region_words(r); w++)
			c += (uint64_t)__builtin_popcountll(__atomic_load_n(&b[w], __ATOMIC_RELAXED));
	}
	return c;
}

int mm_dirty_for_each_run(struct guest_mem *m, int clear,
			  int (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque)
{
	const struct mm_region *r;

	if (!m->dirty)
		return -ENODEV;
	mm_for_each_region(m, r) {
		uint64_t *b = m->dirty->bits[mm_region_index(m, r)];
		uint64_t pages = r->size >> MM_PAGE_SHIFT, start = 0, run = 0;

		for (uint64_t w = 0; w < region_words(r); w++) {
			uint64_t v = clear ? __atomic_exchange_n(&b[w], 0, __ATOMIC_ACQ_REL)
					   : __atomic_load_n(&b[w], __ATOMIC_ACQUIRE);

			for (uint64_t bit = 0; bit < 64 && 64 * w + bit < pages; bit++) {
				uint64_t page = 64 * w + bit;
				int ret;

				if ((v >> bit) & 1) {
					if (!run++)
						start = page;
					if (page + 1 < pages)
						continue;
				} else if (!run) {
					continue;
				}
				ret = fn(opaque, r->gpa + (start << MM_PAGE_SHIFT),
					 run << MM_PAGE_SHIFT);
				run = 0;
				if (ret) {
					/* Put back what was taken but not yet reported. */
					if (clear && bit + 1 < 64)
						__atomic_fetch_or(&b[w], v & (~0ULL << (bit + 1)),
								  __ATOMIC_RELAXED);
					return ret;
				}
			}
		}
	}
	return 0;
}
