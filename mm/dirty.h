/*
 * Dirty pages of guest RAM, one bit per 4 KiB page of each region, for migration: KVM's dirty
 * log sets them (vmm/kvm.c fetches it region by region, kvm_dirty_log_sync()), and so does
 * mm_dirty_mark() for what the VMM itself writes into guest RAM. Setting is lock-free and safe
 * from any thread; a consumer takes the bits with mm_dirty_for_each_run(..., clear = 1).
 */
#ifndef KUMO_MM_DIRTY_H
#define KUMO_MM_DIRTY_H

#include <stdint.h>

struct guest_mem;

/* Start tracking: every page clean. 0, -EBUSY when already tracking, or -ENOMEM. */
int mm_dirty_start(struct guest_mem *m) __attribute__((warn_unused_result));
/* Stop tracking and drop the bits (nothing when not tracking). */
void mm_dirty_stop(struct guest_mem *m);

/* 64-bit words of region i's bitmap (bit n of word w = page 64w + n), 0 when out of range. */
uint64_t mm_dirty_words(const struct guest_mem *m, int region);
/* OR bits (mm_dirty_words() words, KVM_GET_DIRTY_LOG's layout) into region i's. 0 or -errno. */
int mm_dirty_merge(struct guest_mem *m, int region, const uint64_t *bits);
/* Mark the pages of [gpa, gpa+len) dirty (may span regions). 0, -ENODEV untracked, -EFAULT. */
int mm_dirty_mark(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* 1 if the page holding gpa is dirty, 0 if clean, -ENODEV when untracked, -EFAULT off RAM. */
int mm_dirty_test(const struct guest_mem *m, uint64_t gpa);
/* Dirty pages now. */
uint64_t mm_dirty_count(const struct guest_mem *m);
/*
 * Call fn(opaque, gpa, len) for each maximal run of dirty pages, in slot order (runs do not
 * cross regions). With clear, the bits are taken (atomically, 64 pages at a time) before fn sees
 * them, so a page dirtied meanwhile is reported next time. Stops early and returns fn's value
 * if that is non-zero (the pages of the runs not yet seen stay dirty); -ENODEV when untracked.
 */
int mm_dirty_for_each_run(struct guest_mem *m, int clear,
			  int (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque);

#endif
