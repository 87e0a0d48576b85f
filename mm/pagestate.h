/*
 * Per-4KiB-page state of guest RAM (present, given back by the balloon, reported free, hinted
 * free) and the one call that gives guest pages back to the host: mm_release_range() punches
 * them out of the backing memfd, so they read back as zeros on the next touch.
 *
 * One writer at a time (a mutex serialises the set/xchg calls); readers (get, count, runs) may
 * run concurrently and see each page's state atomically, though a run of pages may be torn.
 */
#ifndef KUMO_MM_PAGESTATE_H
#define KUMO_MM_PAGESTATE_H

#include <stdint.h>


struct guest_mem;
struct mm_pagestate;

#define MM_PAGE_SIZE 4096ULL
#define MM_PAGE_SHIFT 12

enum mm_page_state {
	MM_PAGE_PRESENT = 0,	/* the guest owns it (whatever the host has behind it) */
	MM_PAGE_BALLOONED,	/* inflated into the balloon and released */
	MM_PAGE_REPORTED,	/* reported free (free page reporting) and released */
	MM_PAGE_HINTED,		/* hinted free (free page hinting), not released */
	MM_PAGE_NR_STATES,
};

/*
 * A map for every page of m's regions, all MM_PAGE_PRESENT. 0 or -errno. mm_init_nodes() makes
 * the VM's own (mm_pagestate(m)); a separate one is for tests.
 */
int mm_pagestate_create(const struct guest_mem *m, struct mm_pagestate **out)
	__attribute__((warn_unused_result));
void mm_pagestate_destroy(struct mm_pagestate *ps);

/*
 * Set [gpa, gpa+len) to st. The range must be whole pages inside one RAM region (-EINVAL for
 * misalignment or len 0, -EFAULT outside RAM). 0 or -errno; nothing changes on an error.
 */
int mm_pagestate_set(struct mm_pagestate *ps, uint64_t gpa, uint64_t len, enum mm_page_state st);
/* Set one page and return its previous state (or -errno): a test-and-set for duplicates. */
int mm_pagestate_xchg(struct mm_pagestate *ps, uint64_t gpa, enum mm_page_state st);
/*
 * Move the pages of [gpa, gpa+len) whose state is in from_mask (bit 1 << state) to st.
 * Same range rules as mm_pagestate_set(). Returns the pages changed or -errno.
 */
int64_t mm_pagestate_change(struct mm_pagestate *ps, uint64_t gpa, uint64_t len,
			    unsigned int from_mask, enum mm_page_state st);
/* State of the page holding gpa, or -EFAULT outside RAM. */
int mm_pagestate_get(const struct mm_pagestate *ps, uint64_t gpa);
/* Pages in state st. */
uint64_t mm_pagestate_count(const struct mm_pagestate *ps, enum mm_page_state st);

/*
 * Call fn(opaque, gpa, len) for each maximal run of pages in state st, in address order
 * (runs do not cross regions). Stops early and returns fn's value if it returns non-zero.
 */
int mm_pagestate_for_each_run(const struct mm_pagestate *ps, enum mm_page_state st,
			      int (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque);

#endif
