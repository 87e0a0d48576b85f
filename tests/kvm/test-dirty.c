/*
 * KVM dirty logging into mm/'s dirty map: a tiny guest writes known pages, stops at a sync
 * port; the host fetches the log (kvm_dirty_log_sync) and takes the dirty runs. Exactly the
 * pages written are reported, and after that only the pages written since (a page written
 * again after being taken is reported again: the sync re-arms what it took). Low RAM and a
 * region above 4 GiB (its own KVM slot).
 */
#include <stdio.h>

#include "mm/dirty.h"
#include "tests/harness.h"
#include "tests/kvm/tvm.h"
#include "vmm/kvm.h"

#define NEED_KVM() do { if (!kvm_available()) SKIP("no /dev/kvm"); } while (0)
#define P 4096ULL
#define PORT_SYNC 0xe8
#define DATA 0x400000ULL		/* 4 MiB, inside the boot identity map */
#define HIGH_DATA (MEM_4G + 0x200000ULL)
#define HIGH_PD_GPA 0x5000ULL		/* the guest's page directory for 4 GiB .. 4 GiB + 64 MiB */
#define MAX_PAGES 64
#define PHASES 4

struct phase {
	uint64_t page[MAX_PAGES];	/* gpa of each dirty page, in order */
	int n;
	int overflow;
	int sync_ret;
};

static struct phase phases[PHASES];
static int nphase;

static int collect(void *opaque, uint64_t gpa, uint64_t len)
{
	struct phase *ph = opaque;

	for (uint64_t a = gpa; a < gpa + len; a += P) {
		if (ph->n == MAX_PAGES) {
			ph->overflow = 1;
			return 0;
		}
		ph->page[ph->n++] = a;
	}
	return 0;
}

/* `in` from PORT_SYNC: fetch KVM's log and take every dirty page into the next phase. */
static void sync_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct tvm *t = opaque;
	uint32_t v = (uint32_t)nphase;

	if (nphase < PHASES) {
		struct phase *ph = &phases[nphase++];

		ph->sync_ret = kvm_dirty_log_sync(&t->vm.kvm, &t->vm.mem);
		if (!ph->sync_ret)
			ph->sync_ret = mm_dirty_for_each_run(&t->vm.mem, 1, collect, ph);
	}
	memcpy(data, &v, len > 4 ? 4 : len);
}

static const struct io_ops sync_ops = { .read = sync_read };

/* Store a byte to base + 4096 * each index of a -1-terminated .long table. */
#define WRITE_PAGES(table, base)                                               \
	"lea " table "(%rip), %rsi\n mov $" base ", %rbx\n"                     \
	"1: movslq (%rsi), %rax\n cmp $-1, %rax\n je 2f\n"                      \
	"shl $12, %rax\n movb $0x5a, (%rbx,%rax)\n add $4, %rsi\n jmp 1b\n 2:\n"

GUEST_CODE(g_dirty,
	"in $0xe8, %eax\n"				/* phase 0: whatever came before */
	WRITE_PAGES("7f", "0x400000")
	WRITE_PAGES("9f", "0x100200000")
	"in $0xe8, %eax\n"				/* phase 1: set A */
	"in $0xe8, %eax\n"				/* phase 2: nothing written */
	WRITE_PAGES("8f", "0x400000")
	"in $0xe8, %eax\n"				/* phase 3: set B */
	"xor %eax, %eax\n out %eax, $0xe4\n"
	"3: hlt\n jmp 3b\n"
	".balign 4\n"
	"7: .long 0, 1, 5, 63, 64, 65, 200, -1\n"	/* A: runs across 64-page words */
	"8: .long 1, 2, 100, 255, -1\n"		/* B: page 1 again, and new ones */
	"9: .long 0, 3, -1\n");				/* A, above 4 GiB */

static const uint64_t set_a[] = { DATA, DATA + 1 * P, DATA + 5 * P, DATA + 63 * P,
				  DATA + 64 * P, DATA + 65 * P, DATA + 200 * P,
				  HIGH_DATA, HIGH_DATA + 3 * P };
static const uint64_t set_b[] = { DATA + 1 * P, DATA + 2 * P, DATA + 100 * P, DATA + 255 * P };

/*
 * Not data: the guest's page tables, which the page walker writes (accessed/dirty bits; under
 * the box's nested paging on every phase), and, on its first touch only, the code page: KVM
 * maps a page writable on a read fault and logs it dirty then.
 */
static int not_data(uint64_t gpa, int first)
{
	return (gpa >= BOOT_PML4_GPA && gpa < BOOT_PD_GPA + 4 * P) || gpa == HIGH_PD_GPA ||
	       (first && gpa == TVM_CODE_GPA);
}

/* The data pages of phase i are exactly want[0..n). */
static int data_pages_are(int i, const uint64_t *want, int n)
{
	const struct phase *ph = &phases[i];
	int k = 0;

	if (ph->overflow || ph->sync_ret)
		return 0;
	for (int j = 0; j < ph->n; j++) {
		if (not_data(ph->page[j], i == 0))
			continue;
		if (k == n || ph->page[j] != want[k]) {
			fprintf(stderr, "  phase %d: dirty page 0x%llx not expected (next wanted 0x%llx)\n",
				i, (unsigned long long)ph->page[j],
				k < n ? (unsigned long long)want[k] : 0ULL);
			return 0;
		}
		k++;
	}
	if (k != n)
		fprintf(stderr, "  phase %d: %d of %d written pages reported\n", i, k, n);
	return k == n;
}

/* manual: 1 with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (skip without it), -1 the get clears. */
static void dirty_log(int manual)
{
	uint64_t *pdpt, *pd;
	struct tvm t;

	memset(phases, 0, sizeof(phases));
	nphase = 0;
	CHECK_EQ(tvm_create(&t, MEM_32BIT_HOLE_START + (64ULL << 20), 1), 0);
	CHECK_EQ(mm_nr_regions(&t.vm.mem), 2);
	CHECK_EQ(bus_register(&t.vm.pio, PORT_SYNC, 4, &sync_ops, &t, "test-sync"), 0);
	pdpt = mm_gpa_to_hva(&t.vm.mem, BOOT_PDPT_GPA, P);
	pd = mm_gpa_to_hva(&t.vm.mem, HIGH_PD_GPA, P);
	CHECK(pdpt && pd);
	memset(pd, 0, P);
	for (int i = 0; i < 32; i++)
		pd[i] = (MEM_4G + ((uint64_t)i << 21)) | 0x83;
	pdpt[4] = HIGH_PD_GPA | 3;
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_dirty_start, g_dirty_end), 0);
	CHECK_EQ(tvm_start_cpu(&t, 0, TVM_CODE_GPA), 0);

	CHECK_EQ(kvm_dirty_log_sync(&t.vm.kvm, &t.vm.mem), -ENODEV);	/* not logging yet */
	if (manual < 0)
		t.vm.kvm.dirty_manual = -1;
	CHECK_EQ(kvm_dirty_log_start(&t.vm.kvm, &t.vm.mem), 0);
	if (manual > 0 && t.vm.kvm.dirty_manual != 1) {
		tvm_destroy(&t);
		SKIP("KVM has no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
	}
	CHECK_EQ(t.vm.kvm.dirty_manual, manual);
	CHECK_EQ(mm_dirty_count(&t.vm.mem), 0);		/* what the host wrote is not dirty */
	CHECK_EQ(tvm_run(&t), 0);
	CHECK_EQ(nphase, PHASES);
	fprintf(stderr, "  manual protect %s; dirty pages per phase: %d %d %d %d\n",
		manual > 0 ? "on" : "off", phases[0].n, phases[1].n, phases[2].n,
		phases[3].n);
	CHECK(data_pages_are(0, NULL, 0));
	CHECK(data_pages_are(1, set_a, 9));
	CHECK(data_pages_are(2, NULL, 0));	/* nothing written: nothing reported */
	CHECK(data_pages_are(3, set_b, 4));	/* page 1 again, not the rest of A */
	CHECK_EQ(*(uint8_t *)mm_gpa_to_hva(&t.vm.mem, DATA + 255 * P, 1), 0x5a);
	CHECK_EQ(mm_dirty_count(&t.vm.mem), 0);		/* all taken */
	CHECK_EQ(kvm_dirty_log_stop(&t.vm.kvm, &t.vm.mem), 0);
	CHECK_EQ(mm_dirty_count(&t.vm.mem), 0);
	CHECK_EQ(kvm_dirty_log_sync(&t.vm.kvm, &t.vm.mem), -ENODEV);
	tvm_destroy(&t);
}

static void test_dirty_log_manual_protect(void)
{
	NEED_KVM();
	dirty_log(1);
}

static void test_dirty_log_get_clears(void)
{
	NEED_KVM();
	dirty_log(-1);
}

TEST_MAIN(TEST(test_dirty_log_manual_protect), TEST(test_dirty_log_get_clears))
