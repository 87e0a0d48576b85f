/*
 * Lazy memory under a running VM: a tiny guest's RAM (its code, page tables and a data range
 * with zero and never-touched pages) is saved to a memory file, released to the host, and served
 * back through migrate/lazy.c while the guest runs. The guest checksums the data range top down
 * (the background push goes bottom up, slowed down here), so its accesses are faults KVM takes
 * through get_user_pages on the userfaultfd-registered region; the checksum must be the saved
 * one and the serving must count those faults.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "migrate/lazy.h"
#include "migrate/memfile.h"
#include "tests/harness.h"
#include "tests/kvm/tvm.h"

#define NEED_KVM() do { if (!kvm_available()) SKIP("no /dev/kvm"); } while (0)
#define P 4096ULL
#define MEM (32ULL << 20)
#define DATA 0x800000ULL
#define DATA_LEN (1ULL << 20)

/* Sum the qwords of [DATA, DATA + DATA_LEN) from the top; log the sum's low and high halves. */
GUEST_CODE(g_sum,
	"mov $0x900000, %rsi\n"
	"xor %eax, %eax\n"
	"1: sub $8, %rsi\n add (%rsi), %rax\n cmp $0x800000, %rsi\n ja 1b\n"
	"out %eax, $0xe0\n shr $32, %rax\n out %eax, $0xe0\n"
	"xor %eax, %eax\n out %eax, $0xe4\n"
	"2: hlt\n jmp 2b\n");

/* The memory file, a little slow, so that the guest's accesses come before the push. */
struct slow_file {
	struct mig_page_source file;
	useconds_t delay_us;
};

static int slow_read(void *opaque, uint64_t off, void *buf, uint64_t len)
{
	struct slow_file *s = opaque;

	usleep(s->delay_us);
	return s->file.ops->read(s->file.opaque, off, buf, len);
}

static int slow_is_hole(void *opaque, uint64_t off, uint64_t len, uint64_t *run)
{
	struct slow_file *s = opaque;

	return s->file.ops->is_hole(s->file.opaque, off, len, run);
}

static const struct mig_page_source_ops slow_ops = { .read = slow_read, .is_hole = slow_is_hole };

/* Data on pages 0 and 1 of every 4, zeros written on page 2 (a file hole), page 3 untouched. */
static int fill(struct tvm *t, uint64_t *sum)
{
	uint64_t page[P / 8];
	int ret;

	*sum = 0;
	for (uint64_t i = 0; i < DATA_LEN / P; i++) {
		if (i % 4 == 3)
			continue;
		for (uint64_t w = 0; w < P / 8; w++) {
			page[w] = i % 4 == 2 ? 0 : (DATA + i * P + w * 8) * 0x9e3779b97f4a7c15ULL;
			*sum += page[w];
		}
		if ((ret = mm_write(&t->vm.mem, DATA + i * P, page, P)))
			return ret;
	}
	return 0;
}

static void test_guest_reads_lazy_memory(void)
{
	struct mig_lazy_params params = { .prefetch = 4, .batch = 1 };
	struct slow_file sf = { .delay_us = 1000 };
	struct mig_page_source src = { .ops = &slow_ops, .opaque = &sf, .size = MEM };
	const struct mm_region *r;
	struct mig_lazy_stats st;
	struct mig_lazy *l;
	uint64_t sum, got;
	struct stat sb;
	struct tvm t;
	int fd, status;

	NEED_KVM();
	CHECK_EQ(tvm_create(&t, MEM, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_sum_start, g_sum_end), 0);
	CHECK_EQ(fill(&t, &sum), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);
	fd = memfd_create("memfile", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(mig_memfile_write(&t.vm.mem, fd), 0);
	/* Give all of RAM back: as fresh as a restore's new memory. */
	mm_for_each_region(&t.vm.mem, r)
		CHECK_EQ(mm_release_range(&t.vm.mem, r->gpa, r->size), 0);
	CHECK_EQ(mig_page_source_file(&sf.file, fd), 0);
	CHECK_EQ(mig_lazy_start(&t.vm.mem, &src, &params, &l), 0);
	status = tvm_run(&t);
	mig_lazy_stats(l, &st);
	fprintf(stderr, "  faults %llu, pages: by fault %llu, background %llu, zero %llu; "
		"median %llu ns, max %llu ns\n", (unsigned long long)st.faults,
		(unsigned long long)st.pages_fault, (unsigned long long)st.pages_background,
		(unsigned long long)st.pages_zero,
		(unsigned long long)mig_lazy_latency_median_ns(&st),
		(unsigned long long)st.latency_max_ns);
	CHECK_EQ(status, 0);
	CHECK_EQ(t.nlog, 2);
	got = t.log[0] | (uint64_t)t.log[1] << 32;
	CHECK_EQ(got, sum);
	CHECK_EQ(st.error, 0);
	CHECK(st.faults >= 2);		/* at least the code page and the top of the data */
	CHECK(st.pages_fault >= 1);
	CHECK(st.pages_zero >= 1);	/* the guest read holes before the push ended */
	CHECK_EQ(mig_lazy_wait(l, 60000), 0);
	/* Every data page of the file exactly once, nothing else read. */
	mig_lazy_stats(l, &st);
	CHECK(fstat(fd, &sb) == 0);
	CHECK_EQ((st.pages_fault + st.pages_background) * P, (uint64_t)sb.st_blocks * 512);
	CHECK_EQ(st.bytes_read, (uint64_t)sb.st_blocks * 512);
	mig_lazy_stop(l);
	tvm_destroy(&t);
	close(fd);
}

TEST_MAIN(TEST(test_guest_reads_lazy_memory))
