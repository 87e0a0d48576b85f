/*
 * Guest RAM to and from a sparse raw file. Both directions walk data extents with
 * SEEK_DATA/SEEK_HOLE (the memfd's when writing, the file's when reading), so untouched memory
 * costs neither a read nor a write; within an extent, all-zero pages are skipped too.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate/memfile.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/log.h"

static int page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < MM_PAGE_SIZE / sizeof(*w); i++)
		if (w[i])
			return 0;
	return 1;
}

/* Write or read all len bytes at off; returns 0 or -errno. */
static int io_all(int fd, uint8_t *buf, uint64_t len, uint64_t off, int write)
{
	while (len) {
		size_t chunk = len > (1U << 30) ? (1U << 30) : (size_t)len;
		ssize_t n = write ? pwrite(fd, buf, chunk, (off_t)off)
				  : pread(fd, buf, chunk, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;	/* the file shrank under us */
		buf += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/*
 * The next data extent of fd in [*pos, end): 1 with [*pos, *stop), 0 when none is left, or
 * -errno. A file system without SEEK_DATA reports all of it as data, which is still correct.
 */
static int next_extent(int fd, uint64_t *pos, uint64_t end, uint64_t *stop)
{
	off_t data, hole;

	if (*pos >= end)
		return 0;
	data = lseek(fd, (off_t)*pos, SEEK_DATA);
	if (data < 0)
		return errno == ENXIO ? 0 : -errno;
	if ((uint64_t)data >= end)
		return 0;
	hole = lseek(fd, data, SEEK_HOLE);
	if (hole < 0)
		return -errno;
	*pos = (uint64_t)data;
	*stop = (uint64_t)hole < end ? (uint64_t)hole : end;
	return 1;
}

/* Write the non-zero pages of region bytes [from, to) at file offset base + from. */
static int write_extent(int fd, const struct mm_region *r, uint64_t base, uint64_t from,
			uint64_t to)
{
	uint64_t run = from;

	for (uint64_t p = from; p < to; p += MM_PAGE_SIZE) {
		uint64_t n = to - p < MM_PAGE_SIZE ? to - p : MM_PAGE_SIZE;
		int zero = n == MM_PAGE_SIZE && page_is_zero(r->hva + p);
		int ret;

		if (!zero)
			continue;
		if (run < p && (ret = io_all(fd, r->hva + run, p - run, base + run, 1)))
			return ret;
		run = p + MM_PAGE_SIZE;
	}
	return run < to ? io_all(fd, r->hva + run, to - run, base + run, 1) : 0;
}

/*
 * Copy region r to (write) or from the file at offset base, extent by extent of the side
 * read: the region's memfd when writing, the file when reading.
 */
static int copy_region(const struct guest_mem *m, const struct mm_region *r, int fd,
		       uint64_t base, int write)
{
	int src = write ? r->memfd : fd;
	uint64_t start = write ? r->fd_offset : base, pos = start, end = start + r->size;
	uint64_t stop = end;
	int ret;

	while ((ret = next_extent(src, &pos, end, &stop)) > 0) {
		uint64_t from = pos - start, to = stop - start;

		ret = write ? write_extent(fd, r, base, from, to)
			    : io_all(fd, r->hva + from, to - from, base + from, 0);
		if (ret) {
			pr_err("memory file: %s region %d: %s", write ? "writing" : "reading",
			       mm_region_index(m, r), strerror(-ret));
			return ret;
		}
		pos = stop;
	}
	if (ret < 0)
		pr_err("memory file: SEEK_DATA on %s: %s", write ? "a memfd" : "the file",
		       strerror(-ret));
	return ret;
}

int mig_memfile_write(const struct guest_mem *m, int fd)
{
	const struct mm_region *r;
	uint64_t base = 0;
	int ret;

	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)m->ram_size) < 0) {
		ret = -errno;
		pr_err("memory file: truncating to %llu bytes: %s",
		       (unsigned long long)m->ram_size, strerror(-ret));
		return ret;
	}
	mm_for_each_region(m, r) {
		if ((ret = copy_region(m, r, fd, base, 1)))
			return ret;
		base += r->size;
	}
	return 0;
}

int mig_memfile_read(const struct guest_mem *m, int fd)
{
	const struct mm_region *r;
	uint64_t base = 0;
	struct stat st;
	int ret;

	if (fstat(fd, &st) < 0) {
		ret = -errno;
		pr_err("memory file: %s", strerror(-ret));
		return ret;
	}
	if ((uint64_t)st.st_size != m->ram_size) {
		pr_err("memory file: %lld bytes, the memory layout has %llu", (long long)st.st_size,
		       (unsigned long long)m->ram_size);
		return -EINVAL;
	}
	mm_for_each_region(m, r) {
		if ((ret = copy_region(m, r, fd, base, 0)))
			return ret;
		base += r->size;
	}
	return 0;
}
