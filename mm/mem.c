#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mm/mem.h"
#include "vmm/layout.h"

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
		       int fd, uint64_t off)
{
	struct mm_region *r = &m->regions[m->nr_regions++];

	r->gpa = gpa;
	r->size = size;
	r->hva = hva;
	r->memfd = fd;
	r->fd_offset = off;
}

int mm_init(struct guest_mem *m, uint64_t ram_size)
{
	uint64_t low;
	uint8_t *hva;
	int fd, ret;

	memset(m, 0, sizeof(*m));
	if (ram_size < (16ULL << 20) || (ram_size & 0xfffff))
		return -EINVAL;
	fd = memfd_create("kumo-ram", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)ram_size) < 0) {
		ret = -errno;
		goto err_fd;
	}
	hva = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (hva == MAP_FAILED) {
		ret = -errno;
		goto err_fd;
	}
	madvise(hva, ram_size, MADV_DONTDUMP);
	low = ram_size < MEM_32BIT_HOLE_START ? ram_size : MEM_32BIT_HOLE_START;
	add_region(m, 0, low, hva, fd, 0);
	if (ram_size > low)
		add_region(m, MEM_4G, ram_size - low, hva + low, fd, low);
	m->ram_size = ram_size;
	return 0;

err_fd:
	close(fd);
	return ret;
}

void mm_free(struct guest_mem *m)
{
	if (m->nr_regions) {
		munmap(m->regions[0].hva, m->ram_size);
		close(m->regions[0].memfd);
	}
	memset(m, 0, sizeof(*m));
}

void *mm_gpa_to_hva(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < m->nr_regions; i++) {
		const struct mm_region *r = &m->regions[i];

		if (gpa < r->gpa || gpa - r->gpa >= r->size)
			continue;
		/* Written to not overflow: len must fit in what is left of the region. */
		if (len > r->size - (gpa - r->gpa))
			return NULL;
		return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

int mm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *dst = mm_gpa_to_hva(m, gpa, len);

	if (!dst)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

int mm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *src = mm_gpa_to_hva(m, gpa, len);

	if (!src)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}
