/*
 * Guest RAM. Each region is a contiguous guest-physical range backed by a shared mapping of a
 * memfd; mm_gpa_to_hva() is the only way the rest of kumo turns a guest address into a pointer.
 */
#ifndef KUMO_MM_MEM_H
#define KUMO_MM_MEM_H

#include <stddef.h>
#include <stdint.h>

#define MM_MAX_NODES 16
/* RAM stops at the 32-bit PCI hole and goes on from 4 GiB (vmm/layout.h draws the same map). */
#define MM_HOLE_START 0xC0000000ULL
#define MM_HOLE_END 0x100000000ULL
#define MM_MAX_REGIONS (2 * MM_MAX_NODES)	/* a node's RAM may be split by the 32-bit hole */

struct mm_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	int memfd;		/* backing memfd, shared by the regions of one node */
	uint64_t fd_offset;	/* offset of this region inside memfd */
	int node;		/* virtual NUMA node */
};

/* One virtual node's RAM: one memfd, mapped once, bound to host_node when that is >= 0. */
struct mm_node {
	uint64_t size;
	uint8_t *hva;
	int memfd;
	int host_node;
};

/* What mm_init_nodes() is asked for, node by node (size 0: a memory-less node). */
struct mm_node_spec {
	uint64_t size;
	int host_node;
};

struct mm_dirty;
struct mm_pagestate;

/* Walk the regions through mm_for_each_region() / mm_region(), not through regions[]. */
struct guest_mem {
	struct mm_region regions[MM_MAX_REGIONS];
	int nr_regions;
	uint64_t ram_size;	/* total RAM bytes over all regions */
	struct mm_node nodes[MM_MAX_NODES];
	int nr_nodes;
	int hugepages;		/* backed by 2 MiB huge pages */
	struct mm_pagestate *pagestate;	/* per-page state (mm/pagestate.h); NULL for a layout */
	struct mm_dirty *dirty;		/* dirty pages while logging (mm/dirty.h), else NULL */
};

/* Every region, in slot order: const struct mm_region *r; mm_for_each_region(m, r) ... */
#define mm_for_each_region(m, r) \
	for ((r) = (m)->regions; (r) < (m)->regions + (m)->nr_regions; (r)++)

/* Region i (its KVM slot order), NULL when out of range. */
const struct mm_region *mm_region(const struct guest_mem *m, int i);
static inline int mm_nr_regions(const struct guest_mem *m) { return m->nr_regions; }
/* Index of region r of m (mm_region(m, mm_region_index(m, r)) == r). */
static inline int mm_region_index(const struct guest_mem *m, const struct mm_region *r)
{
	return (int)(r - m->regions);
}
/* The region holding gpa, or NULL. */
const struct mm_region *mm_find_region(const struct guest_mem *m, uint64_t gpa);
/* The page-state map of m's RAM (created with the memory), NULL for a layout without memory. */
static inline struct mm_pagestate *mm_pagestate(const struct guest_mem *m) { return m->pagestate; }

/*
 * Lay out ram_size bytes of RAM around the 32-bit hole (below 3 GiB, the rest from 4 GiB)
 * and back it with one memfd. Returns 0 or -errno.
 */
int mm_init(struct guest_mem *m, uint64_t ram_size) __attribute__((warn_unused_result));

/*
 * The same for nr virtual nodes: node 0's RAM first, then node 1's, ..., each node in its own
 * memfd, bound (MPOL_BIND, strict) to its host node. With hugepages, the memfds use 2 MiB huge
 * pages reserved when mapped: -ENOMEM then means the host has too few free. Returns 0 or -errno.
 */
int mm_init_nodes(struct guest_mem *m, const struct mm_node_spec *nodes, int nr, int hugepages)
	__attribute__((warn_unused_result));
/*
 * Only the layout mm_init_nodes() would make (regions and nodes, no memory behind them: hva
 * NULL, memfd -1), for checking what goes where before the memory exists. 0 or -EINVAL.
 */
int mm_layout_nodes(struct guest_mem *m, const struct mm_node_spec *nodes, int nr, int hugepages)
	__attribute__((warn_unused_result));
void mm_free(struct guest_mem *m);

/* Host pointer for [gpa, gpa+len) if the whole range is RAM inside one region, else NULL. */
void *mm_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/*
 * Copy to / from / zero [gpa, gpa+len), which may span adjacent regions (nodes meet without a
 * gap). Return 0, or -EFAULT (nothing copied) unless all of it is RAM; len 0 needs gpa in RAM.
 */
int mm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
int mm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);
int mm_zero(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/*
 * mm_write (src) or mm_zero (src NULL) for loading RAM no vCPU runs on yet (the kernel, the
 * initrd): whole pages go through the memfd (pwrite; zeros punch a hole), so none is faulted
 * in page by page and zeroed pages are not allocated at all. Not for RAM under a lazy restore:
 * userfaultfd sees the mapping's faults, not the memfd's writes. With hugepages it is mm_write
 * or mm_zero. 0, -EFAULT or -errno.
 */
int mm_load(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
/* 1 when [gpa, gpa+len) (len > 0) is all RAM, possibly over adjacent regions; works on a layout. */
int mm_range_is_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/*
 * Give [gpa, gpa+len) back to the host: FALLOC_FL_PUNCH_HOLE|KEEP_SIZE on the region's memfd
 * (the shared mapping is zapped with it; a later touch faults in a zero page). Whole pages
 * inside one RAM region only: -EINVAL / -EFAULT otherwise, and nothing is released. 0 or -errno.
 */
int mm_release_range(const struct guest_mem *m, uint64_t gpa, uint64_t len)
	__attribute__((warn_unused_result));

/* The guest-physical address of a host pointer into guest RAM ([hva, hva+len) in one region). */
int mm_hva_to_gpa(const struct guest_mem *m, const void *hva, uint64_t len, uint64_t *gpa);

/* Parse a size such as "256M", "6G", "4096K" or "1048576". Returns 0 or -EINVAL. */
int mm_parse_size(const char *s, uint64_t *out);

#endif
