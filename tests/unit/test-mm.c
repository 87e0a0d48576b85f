/*
 * mm/: region iteration and lookup, reads/writes/zeroing that span adjacent regions (two
 * virtual nodes meet without a gap), reverse lookup, refusal of ranges off RAM or wrapping past
 * 2^64, loading through the memfd (mm_load), the VM's page-state map, and the dirty map (mark,
 * merge, runs, take).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "mm/dirty.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "tests/harness.h"

#define M (1ULL << 20)
#define P 4096ULL
#define NODE (16 * M)

/* Two nodes of 16 MiB: regions [0, 16M) and [16M, 32M), each in its own memfd. */
static int two_nodes(struct guest_mem *m)
{
	const struct mm_node_spec spec[2] = { { NODE, -1 }, { NODE, -1 } };

	return mm_init_nodes(m, spec, 2, 0);
}

static void test_iteration(void)
{
	const struct mm_node_spec spec[2] = { { 3072 * M, -1 }, { 64 * M, -1 } };
	const struct mm_region *r;
	struct guest_mem m;
	uint64_t total = 0;
	int n = 0;

	CHECK_EQ(mm_layout_nodes(&m, spec, 2, 0), 0);	/* no memory behind it */
	CHECK(!mm_pagestate(&m));
	mm_for_each_region(&m, r) {
		CHECK_EQ(mm_region_index(&m, r), n);
		CHECK(mm_region(&m, n) == r);
		total += r->size;
		n++;
	}
	CHECK_EQ(n, 2);
	CHECK_EQ(mm_nr_regions(&m), 2);
	CHECK_EQ(total, m.ram_size);
	CHECK(!mm_region(&m, 2));
	CHECK(!mm_region(&m, -1));
	CHECK_EQ(mm_region(&m, 1)->gpa, MM_HOLE_END);
	CHECK_EQ(mm_region(&m, 1)->node, 1);
	CHECK(mm_find_region(&m, MM_HOLE_START - 1) == mm_region(&m, 0));
	CHECK(!mm_find_region(&m, MM_HOLE_START));
	CHECK(!mm_find_region(&m, MM_HOLE_END - 1));
	CHECK(mm_find_region(&m, MM_HOLE_END + 64 * M - 1) == mm_region(&m, 1));
	CHECK(!mm_find_region(&m, MM_HOLE_END + 64 * M));
	CHECK(!mm_find_region(&m, UINT64_MAX));
	/* Spans are checked on a layout too: RAM up to the hole, none across it. */
	CHECK(mm_range_is_ram(&m, 0, MM_HOLE_START));
	CHECK(!mm_range_is_ram(&m, MM_HOLE_START - P, 2 * P));
	CHECK(!mm_range_is_ram(&m, 0, 0));
	mm_free(&m);
}

static void test_spanning_copies(void)
{
	uint8_t buf[3 * P], back[3 * P];
	const uint64_t gpa = NODE - P - 100;	/* 100 bytes into node 0's last page, on into 1 */
	struct guest_mem m;
	uint8_t *a, *b;

	CHECK_EQ(two_nodes(&m), 0);
	CHECK_EQ(mm_nr_regions(&m), 2);
	CHECK(mm_region(&m, 0)->memfd != mm_region(&m, 1)->memfd);
	CHECK(mm_pagestate(&m));		/* the VM's page-state map comes with its memory */
	CHECK_EQ(mm_pagestate_count(mm_pagestate(&m), MM_PAGE_PRESENT), 2 * NODE / P);
	for (unsigned int i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 1);
	CHECK(!mm_gpa_to_hva(&m, gpa, sizeof(buf)));	/* one pointer cannot cover two mappings */
	CHECK_EQ(mm_write(&m, gpa, buf, sizeof(buf)), 0);
	a = mm_gpa_to_hva(&m, gpa, P + 100);
	b = mm_gpa_to_hva(&m, NODE, sizeof(buf) - P - 100);
	CHECK(a && b);
	CHECK(!memcmp(a, buf, P + 100));
	CHECK(!memcmp(b, buf + P + 100, sizeof(buf) - P - 100));
	memset(back, 0, sizeof(back));
	CHECK_EQ(mm_read(&m, gpa, back, sizeof(back)), 0);
	CHECK(!memcmp(back, buf, sizeof(buf)));
	CHECK_EQ(mm_zero(&m, gpa + 10, sizeof(buf) - 20), 0);
	CHECK_EQ(mm_read(&m, gpa, back, sizeof(back)), 0);
	CHECK(!memcmp(back, buf, 10));
	CHECK(!memcmp(back + sizeof(buf) - 10, buf + sizeof(buf) - 10, 10));
	for (unsigned int i = 10; i < sizeof(buf) - 10; i++)
		CHECK_EQ(back[i], 0);
	CHECK(mm_range_is_ram(&m, 0, 2 * NODE));
	mm_free(&m);
}

/* Resident pages of a region's memfd mapping in [off, off+len) (mincore); -1 on error. */
static uint64_t resident(const struct mm_region *r, uint64_t off, uint64_t len)
{
	unsigned char v[64];
	uint64_t n = 0;

	if (len / P > sizeof(v) || mincore(r->hva + off, len, v))
		return UINT64_MAX;
	for (uint64_t i = 0; i < len / P; i++)
		n += v[i] & 1;
	return n;
}

/*
 * mm_load: the same bytes as mm_write / mm_zero, across the two nodes' memfds and with partial
 * pages at both ends, while whole zero pages become holes (freed, not zero-filled), and the
 * dirty map hears of all of it.
 */
static void test_load(void)
{
	static uint8_t buf[5 * P + 300], back[5 * P + 300];
	const uint64_t gpa = NODE - 2 * P - 100;	/* two pages and 100 bytes before node 1 */
	const struct mm_region *r0;
	struct guest_mem m;

	CHECK_EQ(two_nodes(&m), 0);
	r0 = mm_region(&m, 0);
	for (unsigned int i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 13 + 5);
	CHECK_EQ(mm_dirty_start(&m), 0);
	CHECK_EQ(mm_load(&m, gpa, buf, sizeof(buf)), 0);
	CHECK_EQ(mm_read(&m, gpa, back, sizeof(back)), 0);
	CHECK(!memcmp(back, buf, sizeof(buf)));
	CHECK_EQ(mm_dirty_test(&m, gpa), 1);
	CHECK_EQ(mm_dirty_test(&m, NODE + 3 * P), 1);
	mm_dirty_stop(&m);
	/* Zeros over 4 MiB of written RAM in node 0, 10 bytes in from a page on each side. */
	memset(r0->hva + M - P, 0xab, 4 * M + 2 * P);
	CHECK_EQ(resident(r0, 2 * M, 64 * P), 64);
	CHECK_EQ(mm_load(&m, M - 10, NULL, 4 * M + 20), 0);
	CHECK_EQ(resident(r0, 2 * M, 64 * P), 0);		/* holes now */
	CHECK_EQ(mm_read(&m, M - 10, back, 3 * P), 0);
	for (unsigned int i = 0; i < 3 * P; i++)
		CHECK_EQ(back[i], 0);
	CHECK_EQ(r0->hva[5 * M + 9], 0);
	CHECK_EQ(r0->hva[5 * M + 10], 0xab);			/* the range ends there */
	CHECK_EQ(r0->hva[M - 11], 0xab);			/* and starts there */
	/* A short load inside one page, and a range off RAM, refused untouched. */
	CHECK_EQ(mm_load(&m, 8 * M + 5, buf, 7), 0);
	CHECK(!memcmp(r0->hva + 8 * M + 5, buf, 7));
	CHECK_EQ(mm_load(&m, 2 * NODE - P, buf, 2 * P), -EFAULT);
	CHECK_EQ(mm_region(&m, 1)->hva[NODE - P], 0);
	mm_free(&m);
}

/* Ranges that must be refused, and leave memory untouched. */
static void test_refusals(void)
{
	static const struct { uint64_t gpa, len; } bad[] = {
		{ 2 * NODE, 1 },		/* just past RAM */
		{ 2 * NODE - 4, 8 },		/* straddles the end of RAM */
		{ 0, 2 * NODE + 1 },
		{ 8, UINT64_MAX },		/* wraps past 2^64 */
		{ UINT64_MAX, 1 },
		{ UINT64_MAX, 2 },
		{ UINT64_MAX - P + 1, P },
		{ 1ULL << 40, 16 },
	};
	uint8_t buf[64], *first;
	struct guest_mem m;
	uint64_t gpa;

	CHECK_EQ(two_nodes(&m), 0);
	first = mm_gpa_to_hva(&m, 0, 1);
	*first = 0x77;
	memset(buf, 0xee, sizeof(buf));
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t len = bad[i].len > sizeof(buf) ? sizeof(buf) : bad[i].len;

		CHECK(!mm_range_is_ram(&m, bad[i].gpa, bad[i].len));
		CHECK(!mm_gpa_to_hva(&m, bad[i].gpa, bad[i].len));
		/* mm_read/write copy len bytes: only ranges no bigger than buf are tried. */
		if (bad[i].len <= sizeof(buf)) {
			CHECK_EQ(mm_write(&m, bad[i].gpa, buf, len), -EFAULT);
			CHECK_EQ(mm_read(&m, bad[i].gpa, buf, len), -EFAULT);
		}
		CHECK_EQ(mm_zero(&m, bad[i].gpa, bad[i].len), -EFAULT);
	}
	CHECK_EQ(*first, 0x77);		/* nothing written by a refused copy */
	CHECK_EQ(mm_read(&m, 2 * NODE - 8, buf, 8), 0);	/* the last bytes are fine */
	CHECK_EQ(mm_read(&m, 0x1000, buf, 0), 0);		/* len 0 inside RAM */
	CHECK_EQ(mm_read(&m, 2 * NODE, buf, 0), -EFAULT);	/* len 0 outside */
	/* Release: whole pages inside one region only. */
	CHECK_EQ(mm_release_range(&m, NODE - P, 2 * P), -EFAULT);
	CHECK_EQ(mm_release_range(&m, 100, P), -EINVAL);
	CHECK_EQ(mm_release_range(&m, 0, 0), -EINVAL);
	CHECK_EQ(mm_release_range(&m, UINT64_MAX & ~(P - 1), P), -EFAULT);
	CHECK_EQ(mm_release_range(&m, 0, P), 0);
	CHECK_EQ(*first, 0);			/* released: reads back as zero */
	/* Reverse lookup in either region; never across them or off RAM. */
	CHECK_EQ(mm_hva_to_gpa(&m, mm_region(&m, 1)->hva + 0x1234, 10, &gpa), 0);
	CHECK_EQ(gpa, NODE + 0x1234);
	CHECK_EQ(mm_hva_to_gpa(&m, mm_region(&m, 0)->hva + NODE - 4, 4, &gpa), 0);
	CHECK_EQ(gpa, NODE - 4);
	CHECK_EQ(mm_hva_to_gpa(&m, mm_region(&m, 0)->hva + NODE - 4, 8, &gpa), -EFAULT);
	CHECK_EQ(mm_hva_to_gpa(&m, mm_region(&m, 0)->hva + NODE, 1, &gpa), -EFAULT);
	CHECK_EQ(mm_hva_to_gpa(&m, buf, 1, &gpa), -EFAULT);
	CHECK_EQ(mm_hva_to_gpa(&m, mm_region(&m, 1)->hva, UINT64_MAX, &gpa), -EFAULT);
	mm_free(&m);
}

struct runs {
	uint64_t gpa[16], len[16];
	int n, stop_after;
};

static int collect(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *r = opaque;

	r->gpa[r->n] = gpa;
	r->len[r->n] = len;
	return ++r->n == r->stop_after ? 99 : 0;
}

static void test_dirty_map(void)
{
	uint64_t bits[NODE / P / 64];
	struct runs r = { .n = 0 };
	struct guest_mem m;

	CHECK_EQ(two_nodes(&m), 0);
	CHECK_EQ(mm_dirty_mark(&m, 0, P), -ENODEV);
	CHECK_EQ(mm_dirty_test(&m, 0), -ENODEV);
	CHECK_EQ(mm_dirty_for_each_run(&m, 0, collect, &r), -ENODEV);
	CHECK_EQ(mm_dirty_start(&m), 0);
	CHECK_EQ(mm_dirty_start(&m), -EBUSY);
	CHECK_EQ(mm_dirty_words(&m, 0), NODE / P / 64);
	CHECK_EQ(mm_dirty_words(&m, 2), 0);
	CHECK_EQ(mm_dirty_count(&m), 0);
	/* Byte ranges mark every page they touch, across the regions' meeting point. */
	CHECK_EQ(mm_dirty_mark(&m, NODE - P + 5, P), 0);	/* last page of 0, first of 1 */
	CHECK_EQ(mm_dirty_mark(&m, 63 * P + 4095, 2), 0);	/* pages 63 and 64 */
	CHECK_EQ(mm_dirty_mark(&m, 2 * NODE - 1, 2), -EFAULT);
	CHECK_EQ(mm_dirty_mark(&m, UINT64_MAX, 2), -EFAULT);
	CHECK_EQ(mm_dirty_count(&m), 4);
	CHECK_EQ(mm_dirty_test(&m, 64 * P + 17), 1);
	CHECK_EQ(mm_dirty_test(&m, 65 * P), 0);
	CHECK_EQ(mm_dirty_test(&m, 2 * NODE), -EFAULT);
	/* A KVM-layout bitmap for region 1: pages 0 (already), 1, 2 and 127. */
	memset(bits, 0, sizeof(bits));
	bits[0] = 0x7;
	bits[1] = 1ULL << 63;
	CHECK_EQ(mm_dirty_merge(&m, 1, bits), 0);
	CHECK_EQ(mm_dirty_merge(&m, 5, bits), -EINVAL);
	CHECK_EQ(mm_dirty_count(&m), 7);
	/* Looking does not take; runs are maximal and do not cross regions. */
	CHECK_EQ(mm_dirty_for_each_run(&m, 0, collect, &r), 0);
	CHECK_EQ(r.n, 4);
	CHECK_EQ(r.gpa[0], 63 * P);
	CHECK_EQ(r.len[0], 2 * P);
	CHECK_EQ(r.gpa[1], NODE - P);
	CHECK_EQ(r.len[1], P);
	CHECK_EQ(r.gpa[2], NODE);
	CHECK_EQ(r.len[2], 3 * P);
	CHECK_EQ(r.gpa[3], NODE + 127 * P);
	CHECK_EQ(r.len[3], P);
	CHECK_EQ(mm_dirty_count(&m), 7);
	/* Taking, stopped after the second run: what was not reported stays dirty. */
	r = (struct runs){ .stop_after = 2 };
	CHECK_EQ(mm_dirty_for_each_run(&m, 1, collect, &r), 99);
	CHECK_EQ(mm_dirty_count(&m), 4);
	CHECK_EQ(mm_dirty_test(&m, 63 * P), 0);
	CHECK_EQ(mm_dirty_test(&m, NODE), 1);
	r = (struct runs){ .n = 0 };
	CHECK_EQ(mm_dirty_for_each_run(&m, 1, collect, &r), 0);
	CHECK_EQ(r.n, 2);
	CHECK_EQ(r.gpa[0], NODE);
	CHECK_EQ(mm_dirty_count(&m), 0);
	CHECK_EQ(mm_dirty_mark(&m, 0, 2 * NODE), 0);		/* everything */
	CHECK_EQ(mm_dirty_count(&m), 2 * NODE / P);
	mm_dirty_stop(&m);
	CHECK_EQ(mm_dirty_count(&m), 0);
	CHECK_EQ(mm_dirty_start(&m), 0);			/* again, all clean */
	CHECK_EQ(mm_dirty_count(&m), 0);
	mm_free(&m);						/* frees the map too */
	CHECK(!m.dirty && !m.pagestate);
}

TEST_MAIN(TEST(test_iteration), TEST(test_spanning_copies), TEST(test_load), TEST(test_refusals),
	  TEST(test_dirty_map))
