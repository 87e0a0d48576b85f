/*
 * migrate/lazy.c without KVM: a memory file with data, all-zero and never-touched pages is served
 * through userfaultfd into fresh memory while two threads read it in random order. Every page
 * reads as saved; data pages are copied exactly once (by a fault or by the background push),
 * holes are never copied and only the hole pages someone read exist in the new memfd. A source
 * of the wrong size is refused before anything is registered, a stop in the middle is clean, and
 * a source whose read fails makes the wait return the error while the faulting thread stays
 * blocked instead of seeing zeros.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "migrate/lazy.h"
#include "migrate/memfile.h"
#include "mm/mem.h"
#include "tests/harness.h"

#define M (1ULL << 20)
#define P 4096ULL
#define NODE (16 * M)
#define RAM (2 * NODE)
#define NPAGES (RAM / P)

/* Page kinds by index: data, data, all zeros (a hole in the file), never touched. */
enum { DATA0, DATA1, ZERO, UNTOUCHED, KINDS };
#define KIND(i) ((i) % KINDS)
#define IS_DATA(i) (KIND(i) == DATA0 || KIND(i) == DATA1)

/* The reason userfaultfd cannot be used here, NULL when it can. */
static const char *no_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == EPERM) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		fd = dev < 0 ? -1 : ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
		if (dev >= 0)
			close(dev);
	}
	if (fd < 0)
		return errno == ENOSYS ? "the kernel has no userfaultfd"
				       : "userfaultfd: not permitted here";
	close(fd);
	return NULL;
}

#define NEED_UFFD() do { const char *why = no_uffd(); if (why) SKIP(why); } while (0)

static int two_nodes(struct guest_mem *m)
{
	const struct mm_node_spec spec[2] = { { NODE, -1 }, { NODE, -1 } };

	return mm_init_nodes(m, spec, 2, 0);
}

/* Saved memory: the pattern on data pages, zeros written on ZERO pages; and its file. */
static int saved(struct guest_mem *m, int *fd)
{
	uint8_t page[P];
	int ret;

	if ((ret = two_nodes(m)))
		return ret;
	for (uint64_t i = 0; i < NPAGES; i++) {
		for (uint64_t b = 0; b < P; b++)
			page[b] = (uint8_t)((i * P + b) * 7 + 1 + (b == 0));	/* no zero page */
		if (IS_DATA(i) && (ret = mm_write(m, i * P, page, P)))
			return ret;
		if (KIND(i) == ZERO && (ret = mm_zero(m, i * P, P)))
			return ret;
	}
	*fd = memfd_create("memfile", MFD_CLOEXEC);
	if (*fd < 0)
		return -errno;
	return mig_memfile_write(m, *fd);
}

static uint64_t data_pages(void)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < NPAGES; i++)
		n += IS_DATA(i);
	return n;
}

/* Is page i of m's RAM a hole of its memfd? */
static int page_is_hole(const struct guest_mem *m, uint64_t i)
{
	const struct mm_region *r = mm_find_region(m, i * P);
	off_t at = (off_t)(r->fd_offset + i * P - r->gpa);
	off_t data = lseek(r->memfd, at, SEEK_DATA);

	return data < 0 || data > at;
}

struct reader {
	pthread_t thread;
	const struct guest_mem *fresh, *orig;
	unsigned int seed;
	int holes;		/* also read the ZERO pages of the first node */
	int bad;		/* pages that read wrong */
};

static void *read_random(void *arg)
{
	struct reader *rd = arg;
	uint64_t *order = malloc(NPAGES * sizeof(*order)), n = 0;

	for (uint64_t i = 0; i < NPAGES && order; i++)
		if (IS_DATA(i) || (rd->holes && KIND(i) == ZERO && i * P < NODE))
			order[n++] = i;
	for (uint64_t i = n; i > 1 && order; i--) {
		uint64_t j = (uint64_t)rand_r(&rd->seed) % i, t = order[i - 1];

		order[i - 1] = order[j];
		order[j] = t;
	}
	for (uint64_t k = 0; k < n; k++) {
		const uint8_t *a = mm_gpa_to_hva(rd->fresh, order[k] * P, P);
		const uint8_t *b = mm_gpa_to_hva(rd->orig, order[k] * P, P);

		rd->bad += memcmp(a, b, P) != 0;
	}
	if (!order)
		rd->bad = -1;
	free(order);
	return NULL;
}

static void test_lazy_serving(void)
{
	struct mig_lazy_params params = { .prefetch = 4, .batch = 1 };
	struct reader rd[2] = { { .seed = 1, .holes = 1 }, { .seed = 2 } };
	struct guest_mem m, fresh;
	struct mig_page_source src;
	struct mig_lazy_stats st;
	struct mig_lazy *l;
	uint64_t last_data = NPAGES - 3, zero_page = NPAGES - 6, holes_read = 1, blocks = 0;
	struct stat sb;
	int fd;

	NEED_UFFD();
	CHECK(IS_DATA(last_data) && KIND(zero_page) == ZERO && zero_page * P >= NODE);
	CHECK_EQ(saved(&m, &fd), 0);
	CHECK_EQ(two_nodes(&fresh), 0);
	CHECK_EQ(mig_page_source_file(&src, fd), 0);
	CHECK_EQ(mig_lazy_start(&fresh, &src, &params, &l), 0);
	/* The push goes in address order, one page a step: these are faults. */
	CHECK(!memcmp(mm_gpa_to_hva(&fresh, last_data * P, P), mm_gpa_to_hva(&m, last_data * P, P), P));
	CHECK_EQ(*(uint64_t *)mm_gpa_to_hva(&fresh, zero_page * P, 8), 0);	/* a hole */
	for (int i = 0; i < 2; i++) {
		rd[i].fresh = &fresh;
		rd[i].orig = &m;
		CHECK_EQ(pthread_create(&rd[i].thread, NULL, read_random, &rd[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(rd[i].thread, NULL);
	CHECK_EQ(rd[0].bad, 0);
	CHECK_EQ(rd[1].bad, 0);
	CHECK_EQ(mig_lazy_wait(l, 20000), 0);
	mig_lazy_stats(l, &st);
	fprintf(stderr, "  faults %llu, pages: by fault %llu, background %llu, zero %llu; "
		"median %llu ns, max %llu ns\n", (unsigned long long)st.faults,
		(unsigned long long)st.pages_fault, (unsigned long long)st.pages_background,
		(unsigned long long)st.pages_zero,
		(unsigned long long)mig_lazy_latency_median_ns(&st),
		(unsigned long long)st.latency_max_ns);
	CHECK(st.complete);
	CHECK_EQ(st.error, 0);
	CHECK_EQ(st.errors, 0);
	CHECK(st.faults >= 2);
	CHECK(st.pages_fault >= 1);
	CHECK(st.pages_zero >= 1);
	CHECK_EQ(st.pages_fault + st.pages_background, data_pages());	/* each exactly once */
	CHECK_EQ(st.bytes_read, data_pages() * P);			/* holes never read */
	CHECK(st.latency_max_ns > 0 && mig_lazy_latency_median_ns(&st) > 0);
	/* Only what was data or read exists in the new memfds; the rest stayed holes. */
	for (uint64_t i = 0; i < NPAGES; i++)
		holes_read += KIND(i) == ZERO && i * P < NODE;
	CHECK(st.pages_zero <= holes_read);
	for (int n = 0; n < 2; n++) {
		CHECK(fstat(fresh.nodes[n].memfd, &sb) == 0);
		blocks += (uint64_t)sb.st_blocks;
	}
	CHECK_EQ(blocks * 512, (data_pages() + holes_read) * P);
	for (uint64_t i = 0; i < NPAGES; i++)
		if (KIND(i) == UNTOUCHED || (KIND(i) == ZERO && i * P >= NODE && i != zero_page))
			CHECK(page_is_hole(&fresh, i));
	mig_lazy_stop(l);
	/* Unregistered: all of it reads as saved, holes as zeros through ordinary faults. */
	for (int n = 0; n < 2; n++)
		CHECK(!memcmp(fresh.nodes[n].hva, m.nodes[n].hva, NODE));
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

/* Huge pages: whole 2 MiB units, a copied zero huge page for a hole (no ZEROPAGE there). */
static void test_lazy_hugepages(void)
{
	const struct mm_node_spec spec = { NODE, -1 };
	const uint64_t H = 2 * M;
	struct mig_lazy_params params = { .prefetch = 1, .batch = 1 };
	struct mig_page_source src;
	struct guest_mem m, fresh;
	struct mig_lazy_stats st;
	struct mig_lazy *l;
	int fd, ret;

	NEED_UFFD();
	ret = mm_init_nodes(&m, &spec, 1, 1);
	if (ret == -ENOMEM || ret == -EINVAL)
		SKIP("no free 2 MiB huge pages (vm.nr_hugepages)");
	CHECK_EQ(ret, 0);
	/* Units 0 and 1 data, 2 written zeros, 3 one data page then zeros, 4-7 untouched. */
	for (uint64_t a = 0; a < 2 * H; a += 8)
		CHECK_EQ(mm_write(&m, a, &(uint64_t){ a * 0x9e3779b97f4a7c15ULL + 1 }, 8), 0);
	CHECK_EQ(mm_zero(&m, 2 * H, H), 0);
	CHECK_EQ(mm_write(&m, 3 * H + P, "data", 4), 0);
	fd = memfd_create("memfile", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(mig_memfile_write(&m, fd), 0);
	ret = mm_init_nodes(&fresh, &spec, 1, 1);
	if (ret == -ENOMEM) {
		mm_free(&m);
		SKIP("too few free 2 MiB huge pages for two copies");
	}
	CHECK_EQ(ret, 0);
	CHECK_EQ(mig_page_source_file(&src, fd), 0);
	CHECK_EQ(mig_lazy_start(&fresh, &src, &params, &l), 0);
	CHECK(!memcmp(fresh.nodes[0].hva + 3 * H, m.nodes[0].hva + 3 * H, H));	/* a fault */
	CHECK(!memcmp(fresh.nodes[0].hva + 2 * H, m.nodes[0].hva + 2 * H, H));	/* a hole */
	CHECK_EQ(mig_lazy_wait(l, 20000), 0);
	mig_lazy_stats(l, &st);
	CHECK_EQ(st.error, 0);
	CHECK(st.faults >= 1);
	CHECK_EQ(st.pages_fault + st.pages_background, 3 * H / P);	/* whole huge pages */
	CHECK_EQ(st.bytes_read, 3 * H);
	CHECK(st.pages_zero == 0 || st.pages_zero == H / P);
	mig_lazy_stop(l);
	CHECK(!memcmp(fresh.nodes[0].hva, m.nodes[0].hva, NODE));
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

static void test_wrong_size_refused(void)
{
	static const int64_t delta[] = { -(int64_t)P, -1, 1, (int64_t)NODE, -(int64_t)RAM };
	struct guest_mem m, fresh;
	struct mig_page_source src;
	struct mig_lazy *l = NULL;
	int fd;

	NEED_UFFD();
	CHECK_EQ(saved(&m, &fd), 0);
	CHECK_EQ(two_nodes(&fresh), 0);
	for (size_t i = 0; i < sizeof(delta) / sizeof(delta[0]); i++) {
		CHECK(ftruncate(fd, (off_t)(RAM + delta[i])) == 0);
		CHECK_EQ(mig_page_source_file(&src, fd), 0);
		CHECK_EQ(mig_lazy_start(&fresh, &src, NULL, &l), -EINVAL);
		CHECK(l == NULL);
	}
	/* Nothing registered: a touch is an ordinary fault (it would hang otherwise). */
	CHECK_EQ(*(volatile uint8_t *)fresh.nodes[0].hva, 0);
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

/* The file source, slowed down or failing at one offset. */
struct test_source {
	struct mig_page_source file;
	useconds_t delay_us;
	uint64_t fail_off;	/* a read covering it fails with -EIO; ~0: none */
	int reads;		/* atomic */
};

static int test_read(void *opaque, uint64_t off, void *buf, uint64_t len)
{
	struct test_source *s = opaque;

	__atomic_add_fetch(&s->reads, 1, __ATOMIC_RELAXED);
	if (s->delay_us)
		usleep(s->delay_us);
	if (s->fail_off >= off && s->fail_off - off < len)
		return -EIO;
	return s->file.ops->read(s->file.opaque, off, buf, len);
}

static int test_is_hole(void *opaque, uint64_t off, uint64_t len, uint64_t *run)
{
	struct test_source *s = opaque;

	return s->file.ops->is_hole(s->file.opaque, off, len, run);
}

static const struct mig_page_source_ops test_source_ops = {
	.read = test_read, .is_hole = test_is_hole,
};

static void test_stop_in_the_middle(void)
{
	struct mig_lazy_params params = { .batch = 1 };
	struct test_source ts = { .delay_us = 2000, .fail_off = ~0ULL };
	struct mig_page_source src = { .ops = &test_source_ops, .opaque = &ts, .size = RAM };
	struct guest_mem m, fresh;
	struct mig_lazy_stats st;
	struct mig_lazy *l;
	struct timespec a, b;
	int fd;

	NEED_UFFD();
	mig_lazy_stop(NULL);
	CHECK_EQ(saved(&m, &fd), 0);
	CHECK_EQ(mig_page_source_file(&ts.file, fd), 0);
	CHECK_EQ(two_nodes(&fresh), 0);
	CHECK_EQ(mig_lazy_start(&fresh, &src, &params, &l), 0);
	CHECK(!memcmp(fresh.nodes[0].hva, m.nodes[0].hva, P));	/* one fault, served */
	CHECK_EQ(mig_lazy_wait(l, 20), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &a);
	mig_lazy_stop(l);
	clock_gettime(CLOCK_MONOTONIC, &b);
	CHECK((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 1000);
	CHECK(ts.reads >= 1 && (uint64_t)ts.reads < data_pages());
	/* Start and stop at once, with no fault at all. */
	mm_free(&fresh);
	CHECK_EQ(two_nodes(&fresh), 0);
	CHECK_EQ(mig_lazy_start(&fresh, &src, &params, &l), 0);
	mig_lazy_stats(l, &st);
	CHECK(!st.complete);
	mig_lazy_stop(l);
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

static sigjmp_buf reader_jmp;
static int reader_done;		/* atomic: the blocked read returned (with whatever it got) */

static void reader_interrupted(int sig)
{
	siglongjmp(reader_jmp, 1);
}

static void *read_one(void *arg)
{
	const volatile uint8_t *p = arg;
	uint8_t v;

	if (sigsetjmp(reader_jmp, 1))
		return NULL;	/* interrupted while blocked: never saw the page */
	v = *p;
	__atomic_store_n(&reader_done, 1 + v, __ATOMIC_RELEASE);
	return NULL;
}

static void test_source_error_not_zeros(void)
{
	struct mig_lazy_params params = { .batch = 1 };
	struct test_source ts = { .delay_us = 1000 };
	struct mig_page_source src = { .ops = &test_source_ops, .opaque = &ts, .size = RAM };
	struct sigaction sa = { .sa_handler = reader_interrupted };
	struct guest_mem m, fresh;
	struct mig_lazy_stats st;
	struct mig_lazy *l;
	uint64_t bad = (NPAGES - 3) * P;	/* a data page the push reaches last */
	pthread_t t;
	int fd;

	NEED_UFFD();
	CHECK(IS_DATA(bad / P));
	ts.fail_off = bad;
	CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	CHECK_EQ(saved(&m, &fd), 0);
	CHECK_EQ(mig_page_source_file(&ts.file, fd), 0);
	CHECK_EQ(two_nodes(&fresh), 0);
	CHECK_EQ(mig_lazy_start(&fresh, &src, &params, &l), 0);
	reader_done = 0;
	CHECK_EQ(pthread_create(&t, NULL, read_one, mm_gpa_to_hva(&fresh, bad, P)), 0);
	CHECK_EQ(mig_lazy_wait(l, 10000), -EIO);
	mig_lazy_stats(l, &st);
	CHECK(st.errors >= 1);
	CHECK(!st.complete);
	usleep(100000);		/* only to give a wrong wake-up a chance to show */
	CHECK_EQ(__atomic_load_n(&reader_done, __ATOMIC_ACQUIRE), 0);
	/* The faulting thread is still blocked: interrupt it before the uffd goes away. */
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	CHECK_EQ(__atomic_load_n(&reader_done, __ATOMIC_ACQUIRE), 0);
	mig_lazy_stop(l);
	mm_free(&fresh);
	mm_free(&m);
	close(fd);
}

TEST_MAIN(TEST(test_lazy_serving), TEST(test_lazy_hugepages), TEST(test_wrong_size_refused), TEST(test_stop_in_the_middle),
	  TEST(test_source_error_not_zeros))
