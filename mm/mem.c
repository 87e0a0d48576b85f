#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numaif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mm/dirty.h"
#include "mm/mem.h"
#include "mm/pagestate.h"

int mm_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;
	int shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	case '\0': break;
	default: return -EINVAL;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		return -EINVAL;
	if (shift && v > (ULLONG_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static void add_region(struct guest_mem *m, uint64_t gpa, uint64_t size, uint8_t *hva,
		       int fd, uint64_t off, int node)
{
	struct mm_region *r = &m->regions[m->nr_regions++];

	r->gpa = gpa;
	r->size = size;
	r->hva = hva;
	r->memfd = fd;
	r->fd_offset = off;
	r->node = node;
}

static int bind_to_host_node(void *hva, uint64_t size, int host_node)
{
	unsigned long mask[1024 / (8 * sizeof(unsigned long))] = { 0 };
	const unsigned long bits = 8 * sizeof(unsigned long);

	if (host_node < 0 || host_node >= 1024)
		return host_node < 0 ? 0 : -EINVAL;
	mask[host_node / bits] |= 1UL << (host_node % bits);
	if (mbind(hva, size, MPOL_BIND, mask, 1024, MPOL_MF_STRICT | MPOL_MF_MOVE) < 0)
		return -errno;
	return 0;
}

static int map_node(struct mm_node *n, int index, int hugepages)
{
	char name[32];
	int flags = MAP_SHARED, ret;

	snprintf(name, sizeof(name), "kumo-ram-node%d", index);
	n->memfd = memfd_create(name, MFD_CLOEXEC | (hugepages ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
	if (n->memfd < 0)
		return -errno;
	if (ftruncate(n->memfd, (off_t)n->size) < 0)
		return -errno;
	/* Huge pages are reserved at mmap time, so a shortage fails here and not at a fault. */
	if (!hugepages)
		flags |= MAP_NORESERVE;
	n->hva = mmap(NULL, n->size, PROT_READ | PROT_WRITE, flags, n->memfd, 0);
	if (n->hva == MAP_FAILED) {
		n->hva = NULL;
		return -errno;
	}
	madvise(n->hva, n->size, MADV_DONTDUMP);
	ret = bind_to_host_node(n->hva, n->size, n->host_node);
	return ret;
}

int mm_layout_nodes(struct guest_mem *m, const struct mm_node_spec *spec, int nr, int hugepages)
{
	uint64_t gpa = 0, align = hugepages ? 2ULL << 20 : 1ULL << 20;

	memset(m, 0, sizeof(*m));
	if (nr < 1 || nr > MM_MAX_NODES)
		return -EINVAL;
	for (int i = 0; i < nr; i++) {
		m->nodes[i].memfd = -1;
		m->nodes[i].host_node = spec[i].host_node;
		m->nodes[i].size = spec[i].size;
		if (spec[i].size & (align - 1))
			return -EINVAL;
		m->ram_size += spec[i].size;
	}
	m->nr_nodes = nr;
	m->hugepages = hugepages;
	if (m->ram_size < (16ULL << 20))
		return -EINVAL;
	for (int i = 0; i < nr; i++) {
		uint64_t off = 0;

		/* Place the node's RAM from gpa on, skipping the 32-bit hole. */
		while (off < spec[i].size) {
			uint64_t len = spec[i].size - off;

			if (gpa >= MM_HOLE_START && gpa < MM_HOLE_END)
				gpa = MM_HOLE_END;
			if (gpa < MM_HOLE_START && len > MM_HOLE_START - gpa)
				len = MM_HOLE_START - gpa;
			add_region(m, gpa, len, NULL, -1, off, i);
			gpa += len;
			off += len;
		}
	}
	return 0;
}

int mm_init_nodes(struct guest_mem *m, const struct mm_node_spec *spec, int nr, int hugepages)
{
	int ret = mm_layout_nodes(m, spec, nr, hugepages);

	if (ret < 0)
		goto err;
	for (int i = 0; i < nr; i++) {
		if (!m->nodes[i].size)
			continue;
		ret = map_node(&m->nodes[i], i, hugepages);
		if (ret < 0)
			goto err;
	}
	for (int i = 0; i < m->nr_regions; i++) {
		struct mm_region *r = &m->regions[i];

		r->hva = m->nodes[r->node].hva + r->fd_offset;
		r->memfd = m->nodes[r->node].memfd;
	}
	ret = mm_pagestate_create(m, &m->pagestate);
	if (ret < 0)
		goto err;
	return 0;
err:
	mm_free(m);
	return ret;
}

int mm_init(struct guest_mem *m, uint64_t ram_size)
{
	struct mm_node_spec one = { .size = ram_size, .host_node = -1 };

	return mm_init_nodes(m, &one, 1, 0);
}

void mm_free(struct guest_mem *m)
{
	mm_dirty_stop(m);
	mm_pagestate_destroy(m->pagestate);
	for (int i = 0; i < m->nr_nodes; i++) {
		if (m->nodes[i].hva)
			munmap(m->nodes[i].hva, m->nodes[i].size);
		if (m->nodes[i].memfd >= 0)
			close(m->nodes[i].memfd);
	}
	memset(m, 0, sizeof(*m));
}

const struct mm_region *mm_region(const struct guest_mem *m, int i)
{
	return i >= 0 && i < m->nr_regions ? &m->regions[i] : NULL;
}

const struct mm_region *mm_find_region(const struct guest_mem *m, uint64_t gpa)
{
	const struct mm_region *r;

	mm_for_each_region(m, r)
		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r;
	return NULL;
}

void *mm_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	const struct mm_region *r = mm_find_region(m, gpa);

	/* Written to not overflow: len must fit in what is left of the region. */
	if (!r || len > r->size - (gpa - r->gpa))
		return NULL;
	return r->hva + (gpa - r->gpa);
}

/*
 * Call fn(r, off, n, opaque) for each piece of [gpa, gpa+len) in region r at offset off, in
 * address order, after checking that all of it is RAM (-EFAULT, and no call, otherwise).
 */
static int for_each_piece(const struct guest_mem *m, uint64_t gpa, uint64_t len,
			  void (*fn)(const struct mm_region *r, uint64_t off, uint64_t n, void *opaque),
			  void *opaque)
{
	for (int pass = 0; pass < 2; pass++) {
		uint64_t a = gpa, left = len;

		while (left) {
			const struct mm_region *r = mm_find_region(m, a);
			uint64_t off, n;

			if (!r)
				return -EFAULT;
			off = a - r->gpa;
			n = r->size - off < left ? r->size - off : left;
			if (pass)
				fn(r, off, n, opaque);
			a += n;		/* cannot wrap: a + n is at most the region's end */
			left -= n;
		}
	}
	return 0;
}

struct copy {
	uint8_t *to;		/* mm_read() */
	const uint8_t *from;	/* mm_write(), mm_load(); neither: mm_zero(), mm_load() */
	int load;		/* mm_load(): through the memfd, not the mapping */
	int err;		/* mm_load(): the first -errno */
};

/* Bytes at [off, off+n) of r through its mapping: src's, or zeros when src is NULL. */
static void map_fill(const struct mm_region *r, uint64_t off, const uint8_t *src, uint64_t n)
{
	if (src)
		memcpy(r->hva + off, src, n);
	else
		memset(r->hva + off, 0, n);
}

/* mm_load()'s piece: whole pages through the memfd, a partial page at either end mapped. */
static void load_piece(const struct mm_region *r, uint64_t off, uint64_t n, struct copy *c)
{
	uint64_t a = (off + MM_PAGE_SIZE - 1) & ~(MM_PAGE_SIZE - 1), b = (off + n) & ~(MM_PAGE_SIZE - 1);
	const uint8_t *src = c->from;

	if (a >= b) {			/* no whole page */
		map_fill(r, off, src, n);
	} else {
		map_fill(r, off, src, a - off);
		map_fill(r, b, src ? src + (b - off) : NULL, off + n - b);
		if (!src) {		/* zeros: a hole, no page allocated until the guest touches it */
			if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      (off_t)(r->fd_offset + a), (off_t)(b - a)) < 0)
				c->err = -errno;
		}
		for (uint64_t done = 0; src && done < b - a && !c->err;) {
			ssize_t w = pwrite(r->memfd, src + (a - off) + done, b - a - done,
					   (off_t)(r->fd_offset + a + done));

			if (w < 0 && errno != EINTR)
				c->err = -errno;
			else if (w > 0)
				done += (uint64_t)w;
		}
	}
	if (src)
		c->from += n;
}

static void copy_piece(const struct mm_region *r, uint64_t off, uint64_t n, void *opaque)
{
	struct copy *c = opaque;

	if (c->load) {
		load_piece(r, off, n, c);
	} else if (c->to) {
		memcpy(c->to, r->hva + off, n);
		c->to += n;
	} else if (c->from) {
		memcpy(r->hva + off, c->from, n);
		c->from += n;
	} else {
		memset(r->hva + off, 0, n);
	}
}

static int copy(const struct guest_mem *m, uint64_t gpa, uint64_t len, struct copy *c)
{
	int ret;

	if (!len)
		return mm_gpa_to_hva(m, gpa, 0) ? 0 : -EFAULT;
	if (len - 1 > UINT64_MAX - gpa)		/* the last byte past 2^64 */
		return -EFAULT;
	ret = for_each_piece(m, gpa, len, copy_piece, c);
	return ret ? ret : c->err;
}

int mm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	struct copy c = { .from = src };
	int ret = copy(m, gpa, len, &c);

	if (!ret && m->dirty)	/* a migration sends what the VMM wrote, too */
		mm_dirty_mark(m, gpa, len);
	return ret;
}

int mm_load(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	/* hugetlbfs has no write, and punches whole huge pages only: the mapping there */
	struct copy c = { .from = src, .load = !m->hugepages };
	int ret = copy(m, gpa, len, &c);

	if (!ret && m->dirty)
		mm_dirty_mark(m, gpa, len);
	return ret;
}

int mm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	struct copy c = { .to = dst };

	return copy(m, gpa, len, &c);
}

int mm_zero(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	struct copy c = { 0 };
	int ret = copy(m, gpa, len, &c);

	if (!ret && m->dirty)
		mm_dirty_mark(m, gpa, len);
	return ret;
}

static void no_piece(const struct mm_region *r, uint64_t off, uint64_t n, void *opaque)
{
}

int mm_range_is_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	if (!len || len - 1 > UINT64_MAX - gpa)
		return 0;
	return for_each_piece(m, gpa, len, no_piece, NULL) == 0;
}

int mm_release_range(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	const struct mm_region *r = mm_find_region(m, gpa);
	uint64_t off;

	if (!len || ((gpa | len) & (MM_PAGE_SIZE - 1)))
		return -EINVAL;
	if (!r)
		return -EFAULT;
	off = gpa - r->gpa;
	if (len > r->size - off)
		return -EFAULT;
	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(r->fd_offset + off), (off_t)len) < 0)
		return -errno;
	/* The pages changed (they read as zeros now): a migration must send that too. */
	if (m->dirty)
		mm_dirty_mark(m, gpa, len);
	return 0;
}

int mm_hva_to_gpa(const struct guest_mem *m, const void *hva, uint64_t len, uint64_t *gpa)
{
	const struct mm_region *r;
	uintptr_t p = (uintptr_t)hva;

	mm_for_each_region(m, r) {
		uintptr_t base = (uintptr_t)r->hva;

		if (!r->hva || p < base || p - base >= r->size)
			continue;
		if (len > r->size - (p - base))
			return -EFAULT;
		*gpa = r->gpa + (p - base);
		return 0;
	}
	return -EFAULT;
}
