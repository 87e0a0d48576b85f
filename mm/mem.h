/*
 * Guest RAM. Each region is a contiguous guest-physical range backed by a shared mapping of a
 * memfd; mm_gpa_to_hva() is the only way the rest of kumo turns a guest address into a pointer.
 */
#ifndef KUMO_MM_MEM_H
#define KUMO_MM_MEM_H

#include <stddef.h>
#include <stdint.h>

#define MM_MAX_REGIONS 16

struct mm_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	int memfd;		/* backing memfd, shared by the regions of one node */
	uint64_t fd_offset;	/* offset of this region inside memfd */
};

struct guest_mem {
	struct mm_region regions[MM_MAX_REGIONS];
	int nr_regions;
	uint64_t ram_size;	/* total RAM bytes over all regions */
};

/*
 * Lay out ram_size bytes of RAM around the 32-bit hole (below 3 GiB, the rest from 4 GiB)
 * and back it with one memfd. Returns 0 or -errno.
 */
int mm_init(struct guest_mem *m, uint64_t ram_size) __attribute__((warn_unused_result));
void mm_free(struct guest_mem *m);

/* Host pointer for [gpa, gpa+len) if the whole range is RAM inside one region, else NULL. */
void *mm_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy helpers built on mm_gpa_to_hva(); return 0 or -EFAULT. */
int mm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
int mm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);

/* Parse a size such as "256M", "6G", "4096K" or "1048576". Returns 0 or -EINVAL. */
int mm_parse_size(const char *s, uint64_t *out);

#endif
