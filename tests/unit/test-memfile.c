/*
 * migrate/memfile.c on mm/ memory made without KVM: pages written with a pattern become the
 * file's only data extents (untouched, released and all-zero pages are holes, st_blocks
 * counts just those), the file loads into fresh memory equal and as sparse, and a file of any
 * other size than the layout's is refused before a byte is copied.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate/memfile.h"
#include "mm/mem.h"
#include "tests/harness.h"

#define M (1ULL << 20)
#define P 4096ULL
#define NODE (16 * M)

struct extent {
	uint64_t off, len;
};

/* The data extents of fd in [from, to), shifted by -from; their number or -1. */
static int extents(int fd, uint64_t from, uint64_t to, struct extent *e, int max)
{
	off_t pos = (off_t)from;
	int n = 0;

	for (;;) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0 || (uint64_t)data >= to)
			return data < 0 && errno != ENXIO ? -1 : n;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || n == max)
			return -1;
		if ((uint64_t)hole > to)
			hole = (off_t)to;
		e[n++] = (struct extent){ (uint64_t)data - from, (uint64_t)(hole - data) };
		pos = hole;
	}
}

static void pattern(uint8_t *p, uint64_t len, uint64_t gpa)
{
	for (uint64_t i = 0; i < len; i++)
		p[i] = (uint8_t)((gpa + i) * 7 + 1);
}

static int put_pattern(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint8_t *buf = malloc(len);
	int ret;

	if (!buf)
		return -ENOMEM;
	pattern(buf, len, gpa);
	ret = mm_write(m, gpa, buf, len);
	free(buf);
	return ret;
}

static int two_nodes(struct guest_mem *m)
{
	const struct mm_node_spec spec[2] = { { NODE, -1 }, { NODE, -1 } };

	return mm_init_nodes(m, spec, 2, 0);
}

static int same_extents(const struct extent *a, int na, const struct extent *b, int nb)
{
	return na == nb && !memcmp(a, b, (size_t)na * sizeof(*a));
}

static const struct extent want[] = {
	{ 0, P },		/* page 0 */
	{ 10 * P, 3 * P },	/* pages 10-12 */
	{ 40 * P, P },		/* page 40, half zeros */
	{ NODE + 2 * P, P },	/* node 1 */
	{ 2 * NODE - P, P },	/* the last page of RAM */
};

/* Pattern where want[] says, and pages that must end up holes: released, all zeros. */
static int fill_example(struct guest_mem *m)
{
	int ret = 0;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]) && !ret; i++)
		ret = put_pattern(m, want[i].off, want[i].len);
	if (ret || (ret = mm_zero(m, 40 * P, P / 2)) || (ret = put_pattern(m, 20 * P, 2 * P)) ||
	    (ret = mm_release_range(m, 20 * P, 2 * P)) || (ret = mm_zero(m, 30 * P, P)))
		return ret;
	return 0;
}

static void test_sparse_round_trip(void)
{
	struct guest_mem m, fresh;
	struct extent got[16];
	struct stat st;
	uint8_t *a, *b;
	int fd, n;

	CHECK_EQ(two_nodes(&m), 0);
	CHECK_EQ(fill_example(&m), 0);
	fd = memfd_create("memfile", 0);
	CHECK(fd >= 0);
	CHECK_EQ(mig_memfile_write(&m, fd), 0);
	CHECK(fstat(fd, &st) == 0);
	CHECK_EQ(st.st_size, 2 * NODE);
	n = extents(fd, 0, 2 * NODE, got, 16);
	for (int i = 0; i < n && !same_extents(got, n, want, 5); i++)
		fprintf(stderr, "  extent %d: 0x%llx + 0x%llx\n", i,
			(unsigned long long)got[i].off, (unsigned long long)got[i].len);
	CHECK(same_extents(got, n, want, 5));
	CHECK_EQ((uint64_t)st.st_blocks * 512, 7 * P);

	CHECK_EQ(two_nodes(&fresh), 0);
	CHECK_EQ(mig_memfile_read(&fresh, fd), 0);
	/* Loaded as sparse as it was saved: only the data extents were touched. */
	CHECK_EQ(extents(mm_region(&fresh, 0)->memfd, 0, NODE, got, 16), 3);
	CHECK(same_extents(got, 3, want, 3));
	CHECK_EQ(extents(mm_region(&fresh, 1)->memfd, 0, NODE, got, 16), 2);
	CHECK_EQ(got[0].off, 2 * P);
	CHECK_EQ(got[1].off, NODE - P);
	a = malloc(2 * NODE);
	b = malloc(2 * NODE);
	CHECK(a && b);
	CHECK_EQ(mm_read(&m, 0, a, 2 * NODE), 0);
	CHECK_EQ(mm_read(&fresh, 0, b, 2 * NODE), 0);
	CHECK(!memcmp(a, b, 2 * NODE));
	free(a);
	free(b);
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

/* One node across the 32-bit hole: the second region starts 3 GiB into the memfd. */
static void test_region_above_hole(void)
{
	const uint64_t ram = MM_HOLE_START + 8 * M, above = MM_HOLE_END;
	struct guest_mem m, fresh;
	struct extent got[4];
	uint8_t x[2 * P], y[2 * P];
	int fd;

	CHECK_EQ(mm_init(&m, ram), 0);
	CHECK_EQ(mm_nr_regions(&m), 2);
	CHECK_EQ(put_pattern(&m, MM_HOLE_START - P, P), 0);
	CHECK_EQ(put_pattern(&m, above + P, P), 0);
	fd = memfd_create("memfile", 0);
	CHECK(fd >= 0);
	CHECK_EQ(mig_memfile_write(&m, fd), 0);
	CHECK_EQ(extents(fd, 0, ram, got, 4), 2);
	CHECK_EQ(got[0].off, MM_HOLE_START - P);
	CHECK_EQ(got[1].off, MM_HOLE_START + P);	/* right after region 0 in the file */
	CHECK_EQ(mm_init(&fresh, ram), 0);
	CHECK_EQ(mig_memfile_read(&fresh, fd), 0);
	CHECK_EQ(mm_read(&m, MM_HOLE_START - 2 * P, x, 2 * P), 0);
	CHECK_EQ(mm_read(&fresh, MM_HOLE_START - 2 * P, y, 2 * P), 0);
	CHECK(!memcmp(x, y, sizeof(x)));
	CHECK_EQ(mm_read(&m, above, x, 2 * P), 0);
	CHECK_EQ(mm_read(&fresh, above, y, 2 * P), 0);
	CHECK(!memcmp(x, y, sizeof(x)));
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

static void test_wrong_sizes_refused(void)
{
	static const int64_t delta[] = { -(int64_t)P, -1, 1, (int64_t)NODE };
	struct guest_mem m, fresh;
	struct extent got[4];
	int fd;

	CHECK_EQ(two_nodes(&m), 0);
	CHECK_EQ(fill_example(&m), 0);
	fd = memfd_create("memfile", 0);
	CHECK(fd >= 0);
	CHECK_EQ(mig_memfile_write(&m, fd), 0);
	CHECK_EQ(two_nodes(&fresh), 0);
	for (size_t i = 0; i < sizeof(delta) / sizeof(delta[0]); i++) {
		CHECK(ftruncate(fd, (off_t)(2 * NODE + delta[i])) == 0);
		CHECK_EQ(mig_memfile_read(&fresh, fd), -EINVAL);
	}
	CHECK(ftruncate(fd, 0) == 0);
	CHECK_EQ(mig_memfile_read(&fresh, fd), -EINVAL);
	/* Nothing was copied. */
	CHECK_EQ(extents(mm_region(&fresh, 0)->memfd, 0, NODE, got, 4), 0);
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

/* A file that cannot be written: an error, not a short file taken for a snapshot. */
static void test_unwritable_file(void)
{
	struct guest_mem m;
	char path[64];
	int fd, ro;

	CHECK_EQ(two_nodes(&m), 0);
	CHECK_EQ(fill_example(&m), 0);
	fd = memfd_create("memfile", 0);
	CHECK(fd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY);
	CHECK(ro >= 0);
	CHECK(mig_memfile_write(&m, ro) < 0);
	close(ro);
	close(fd);
	mm_free(&m);
}

TEST_MAIN(TEST(test_sparse_round_trip), TEST(test_region_above_hole),
	  TEST(test_wrong_sizes_refused), TEST(test_unwritable_file))
