/*
 * mm/pagestate: states and counts over ranges, range checks, and mm_release_range() really
 * giving memory back: the memfd behind a 64 MiB guest_mem shows holes (SEEK_DATA) and fewer
 * blocks exactly where asked, and nowhere else.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mm/mem.h"
#include "mm/pagestate.h"
#include "tests/harness.h"

#define MEM_SIZE (64ULL << 20)
#define P MM_PAGE_SIZE

static int is_data(const struct guest_mem *m, uint64_t gpa)
{
	off_t o = lseek(mm_region(m, 0)->memfd, (off_t)gpa, SEEK_DATA);

	return o == (off_t)gpa;
}

static long long blocks(const struct guest_mem *m)
{
	struct stat st;

	return fstat(mm_region(m, 0)->memfd, &st) ? -1 : (long long)st.st_blocks;
}

static void touch(const struct guest_mem *m, uint64_t gpa, uint64_t len, uint8_t v)
{
	memset(mm_gpa_to_hva(m, gpa, len), v, len);
}

static void test_states_and_counts(void)
{
	struct guest_mem m;
	struct mm_pagestate *ps;
	uint64_t n = MEM_SIZE / P;

	CHECK(!mm_init(&m, MEM_SIZE));
	CHECK(!mm_pagestate_create(&m, &ps));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_PRESENT), n);
	CHECK_EQ(mm_pagestate_get(ps, 0), MM_PAGE_PRESENT);
	CHECK(!mm_pagestate_set(ps, 0x100000, 16 * P, MM_PAGE_BALLOONED));
	CHECK(!mm_pagestate_set(ps, 0x108000, 4 * P, MM_PAGE_REPORTED));	/* overlaps */
	CHECK(!mm_pagestate_set(ps, MEM_SIZE - P, P, MM_PAGE_HINTED));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_BALLOONED), 12);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_REPORTED), 4);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_HINTED), 1);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_PRESENT), n - 17);
	CHECK_EQ(mm_pagestate_get(ps, 0x100000), MM_PAGE_BALLOONED);
	CHECK_EQ(mm_pagestate_get(ps, 0x108fff), MM_PAGE_REPORTED);	/* any byte of the page */
	CHECK_EQ(mm_pagestate_get(ps, 0x110000), MM_PAGE_PRESENT);
	CHECK_EQ(mm_pagestate_get(ps, MEM_SIZE - 1), MM_PAGE_HINTED);
	/* xchg is a test-and-set */
	CHECK_EQ(mm_pagestate_xchg(ps, 0x100000, MM_PAGE_BALLOONED), MM_PAGE_BALLOONED);
	CHECK_EQ(mm_pagestate_xchg(ps, 0x200000, MM_PAGE_BALLOONED), MM_PAGE_PRESENT);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_BALLOONED), 13);
	/* change only moves pages in from_mask */
	CHECK_EQ(mm_pagestate_change(ps, 0x100000, 16 * P, 1u << MM_PAGE_REPORTED,
				     MM_PAGE_PRESENT), 4);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_REPORTED), 0);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_BALLOONED), 13);
	/* setting the same state twice does not double count */
	CHECK(!mm_pagestate_set(ps, 0x100000, 8 * P, MM_PAGE_BALLOONED));
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_BALLOONED), 13);
	mm_pagestate_destroy(ps);
	mm_free(&m);
}

struct runs {
	int n;
	uint64_t gpa[8], len[8];
};

static int collect(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *r = opaque;

	if (r->n == 8)
		return 1;
	r->gpa[r->n] = gpa;
	r->len[r->n++] = len;
	return 0;
}

static void test_runs(void)
{
	struct guest_mem m;
	struct mm_pagestate *ps;
	struct runs r = { 0 };

	CHECK(!mm_init(&m, MEM_SIZE));
	CHECK(!mm_pagestate_create(&m, &ps));
	CHECK(!mm_pagestate_set(ps, 0, 2 * P, MM_PAGE_HINTED));
	CHECK(!mm_pagestate_set(ps, 0x400000, 0x200000, MM_PAGE_HINTED));
	CHECK(!mm_pagestate_set(ps, MEM_SIZE - 3 * P, 3 * P, MM_PAGE_HINTED));
	CHECK(!mm_pagestate_for_each_run(ps, MM_PAGE_HINTED, collect, &r));
	CHECK_EQ(r.n, 3);
	CHECK_EQ(r.gpa[0], 0);
	CHECK_EQ(r.len[0], 2 * P);
	CHECK_EQ(r.gpa[1], 0x400000);
	CHECK_EQ(r.len[1], 0x200000);
	CHECK_EQ(r.gpa[2], MEM_SIZE - 3 * P);
	CHECK_EQ(r.len[2], 3 * P);
	mm_pagestate_destroy(ps);
	mm_free(&m);
}

static void test_range_checks(void)
{
	struct guest_mem m;
	struct mm_pagestate *ps;
	uint64_t gpa;

	CHECK(!mm_init(&m, MEM_SIZE));
	CHECK(!mm_pagestate_create(&m, &ps));
	CHECK_EQ(mm_pagestate_set(ps, 0x100, P, MM_PAGE_BALLOONED), -EINVAL);
	CHECK_EQ(mm_pagestate_set(ps, 0, 100, MM_PAGE_BALLOONED), -EINVAL);
	CHECK_EQ(mm_pagestate_set(ps, 0, 0, MM_PAGE_BALLOONED), -EINVAL);
	CHECK_EQ(mm_pagestate_set(ps, MEM_SIZE, P, MM_PAGE_BALLOONED), -EFAULT);
	CHECK_EQ(mm_pagestate_set(ps, MEM_SIZE - P, 2 * P, MM_PAGE_BALLOONED), -EFAULT);
	CHECK_EQ(mm_pagestate_set(ps, P, UINT64_MAX & ~(P - 1), MM_PAGE_BALLOONED), -EFAULT);
	CHECK_EQ(mm_pagestate_set(ps, 0, P, MM_PAGE_NR_STATES), -EINVAL);
	CHECK_EQ(mm_pagestate_get(ps, MEM_SIZE), -EFAULT);
	CHECK_EQ(mm_pagestate_get(ps, UINT64_MAX), -EFAULT);
	CHECK_EQ(mm_pagestate_xchg(ps, 1ULL << 40, MM_PAGE_BALLOONED), -EFAULT);
	CHECK_EQ(mm_pagestate_count(ps, MM_PAGE_PRESENT), MEM_SIZE / P);	/* nothing moved */
	CHECK(!mm_hva_to_gpa(&m, mm_region(&m, 0)->hva + 0x1234, 10, &gpa));
	CHECK_EQ(gpa, 0x1234);
	CHECK_EQ(mm_hva_to_gpa(&m, mm_region(&m, 0)->hva + MEM_SIZE - 4, 10, &gpa), -EFAULT);
	CHECK_EQ(mm_hva_to_gpa(&m, &gpa, 8, &gpa), -EFAULT);
	mm_pagestate_destroy(ps);
	mm_free(&m);
}

static void test_release_frees(void)
{
	struct guest_mem m;
	long long before, after;
	uint8_t *p;

	CHECK(!mm_init(&m, MEM_SIZE));
	touch(&m, 0x800000, 64 * P, 0x5a);
	before = blocks(&m);
	CHECK(is_data(&m, 0x800000 + 10 * P));
	CHECK(!mm_release_range(&m, 0x800000 + 10 * P, 20 * P));
	after = blocks(&m);
	CHECK_EQ(before - after, 20 * P / 512);
	for (int i = 0; i < 64; i++)
		CHECK_EQ(is_data(&m, 0x800000 + i * P), i < 10 || i >= 30);
	p = mm_gpa_to_hva(&m, 0x800000, 64 * P);
	CHECK_EQ(p[10 * P - 1], 0x5a);		/* the neighbours keep their bytes */
	CHECK_EQ(p[30 * P], 0x5a);
	CHECK_EQ(p[10 * P], 0);			/* released pages read back as zeros */
	CHECK_EQ(p[30 * P - 1], 0);
	p[15 * P] = 1;				/* and fault back in when touched */
	CHECK(is_data(&m, 0x800000 + 15 * P));
	mm_free(&m);
}

static void test_release_rejects(void)
{
	struct guest_mem m;
	long long before;

	CHECK(!mm_init(&m, MEM_SIZE));
	touch(&m, MEM_SIZE - 16 * P, 16 * P, 1);
	touch(&m, 0, 16 * P, 1);
	before = blocks(&m);
	CHECK_EQ(mm_release_range(&m, 0x100, P), -EINVAL);
	CHECK_EQ(mm_release_range(&m, 0, P + 1), -EINVAL);
	CHECK_EQ(mm_release_range(&m, 0, 0), -EINVAL);
	CHECK_EQ(mm_release_range(&m, MEM_SIZE - P, 2 * P), -EFAULT);
	CHECK_EQ(mm_release_range(&m, MEM_SIZE, P), -EFAULT);
	CHECK_EQ(mm_release_range(&m, P, UINT64_MAX & ~(P - 1)), -EFAULT);
	CHECK_EQ(mm_release_range(&m, 1ULL << 32, P), -EFAULT);
	CHECK_EQ(blocks(&m), before);
	mm_free(&m);
}

/* A region that is not at fd offset 0: the hole goes at fd_offset + (gpa - region gpa). */
static void test_release_fd_offset(void)
{
	struct guest_mem m;
	struct mm_region *r;

	CHECK(!mm_init(&m, MEM_SIZE));
	/* Split the one region in two, as the high region above 4 GiB is laid out. */
	r = &m.regions[1];
	*r = m.regions[0];
	m.regions[0].size = MEM_SIZE / 2;
	r->gpa = 1ULL << 32;
	r->size = MEM_SIZE / 2;
	r->hva += MEM_SIZE / 2;
	r->fd_offset = MEM_SIZE / 2;
	m.nr_regions = 2;
	touch(&m, (1ULL << 32), 8 * P, 7);
	CHECK(!mm_release_range(&m, (1ULL << 32) + 2 * P, P));
	CHECK(!is_data(&m, MEM_SIZE / 2 + 2 * P));
	CHECK(is_data(&m, MEM_SIZE / 2 + P));
	CHECK(is_data(&m, MEM_SIZE / 2 + 3 * P));
	CHECK_EQ(mm_release_range(&m, MEM_SIZE / 2 - P, 2 * P), -EFAULT);	/* spans regions */
	m.nr_regions = 1;
	m.regions[0].size = MEM_SIZE;
	mm_free(&m);
}

static struct mm_pagestate *conc_ps;
static int conc_stop;

static void *reader(void *arg)
{
	long bad = 0;

	while (!__atomic_load_n(&conc_stop, __ATOMIC_ACQUIRE)) {
		int s = mm_pagestate_get(conc_ps, 0x100000);

		bad += s != MM_PAGE_PRESENT && s != MM_PAGE_BALLOONED;
	}
	return (void *)bad;
}

static void test_concurrent_reader(void)
{
	struct guest_mem m;
	pthread_t t;
	void *bad;

	CHECK(!mm_init(&m, MEM_SIZE));
	CHECK(!mm_pagestate_create(&m, &conc_ps));
	CHECK(!pthread_create(&t, NULL, reader, NULL));
	for (int i = 0; i < 20000; i++)
		mm_pagestate_set(conc_ps, 0x100000, 4 * P,
				 i & 1 ? MM_PAGE_PRESENT : MM_PAGE_BALLOONED);
	__atomic_store_n(&conc_stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, &bad);
	CHECK_EQ((long)bad, 0);
	CHECK_EQ(mm_pagestate_count(conc_ps, MM_PAGE_PRESENT), MEM_SIZE / P);
	mm_pagestate_destroy(conc_ps);
	mm_free(&m);
}

TEST_MAIN(TEST(test_states_and_counts), TEST(test_runs), TEST(test_range_checks),
	  TEST(test_release_frees), TEST(test_release_rejects), TEST(test_release_fd_offset),
	  TEST(test_concurrent_reader))
