/*
 * libFuzzer target for virtio-balloon's guest-facing parsers: PFN arrays (inflate/deflate)
 * and stats buffers, as a hostile driver would send them, against a 16 MiB guest_mem whose
 * every page carries a marker byte.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE tests/fuzz/fuzz-balloon.c \
 *         devices/virtio-balloon.c devices/virtio.c mm/pagestate.c mm/mem.c mm/dirty.c vmm/log.c \
 *         -lpthread -o /tmp/fuzz-balloon
 *
 * Input: a sequence of [op][n][n bytes]. op & 3: 0 inflate, 1 deflate, 2 stats, 3 set the
 * target (first two payload bytes, pages). op & 4 tames the PFNs into and around RAM.
 * Checked after every step: the balloon never exceeds the highest target it was given and
 * stats entries stay in their table; after each input: only pages that were in the balloon
 * lost their bytes.
 */
// fuzz-sources: devices/virtio-balloon.c devices/virtio.c mm/pagestate.c mm/mem.c mm/dirty.c vmm/log.c vmm/seccomp.c
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/virtio-balloon.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define RAM (16ULL << 20)
#define PAGES (RAM >> 12)
#define MARK 0xa5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static struct dev_env env;
static struct virtio_dev *vdev;
static struct mm_pagestate *ps;
static uint8_t ever[PAGES];	/* page was in the balloon at some point this run */

static void setup(void)
{
	struct balloon_options o = { .stats = 1 };

	log_level = LOG_ERR;
	if (mm_init(&mem, RAM))
		abort();
	env.mem = &mem;
	if (virtio_balloon_create(&env, &mem, &o, &vdev))
		abort();
	ps = virtio_balloon_pagestate(vdev);
	for (uint64_t p = 0; p < PAGES; p++)
		mm_region(&mem, 0)->hva[p << 12] = MARK;
}

/* Pages of an inflate buffer that are in the balloon now: they may have lost their bytes. */
static void note_inflated(const uint8_t *buf, unsigned int n)
{
	for (unsigned int k = 0; k + 4 <= n; k += 4) {
		uint32_t pfn;

		memcpy(&pfn, buf + k, 4);
		if (pfn < PAGES && mm_pagestate_get(ps, (uint64_t)pfn << 12) == MM_PAGE_BALLOONED)
			ever[pfn] = 1;
	}
}

static void check_memory(void)
{
	for (uint64_t p = 0; p < PAGES; p++)
		if (mm_region(&mem, 0)->hva[p << 12] != MARK && !ever[p])
			abort();	/* released memory the guest never gave */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct balloon_stats st;
	uint8_t buf[256];
	uint64_t max_balloon = 0;
	size_t i = 0;

	if (!vdev)
		setup();
	memset(&st, 0, sizeof(st));
	virtio_balloon_set_target(vdev, 0);
	while (i + 2 <= size) {
		unsigned int op = data[i], n = data[i + 1];
		uint64_t target;

		i += 2;
		if (n > size - i)
			n = (unsigned int)(size - i);
		memcpy(buf, data + i, n);
		i += n;
		if (op & 4) {
			for (unsigned int k = 0; k + 4 <= n; k += 4) {
				uint32_t v;

				memcpy(&v, buf + k, 4);
				v &= 0x1fff;	/* half inside RAM, half just past it */
				memcpy(buf + k, &v, 4);
			}
		}
		switch (op & 3) {
		case 0:
			if (balloon_inflate_pfns(vdev, buf, n) > n / 4)
				abort();
			note_inflated(buf, n);
			break;
		case 1:
			if (balloon_deflate_pfns(vdev, buf, n) > n / 4)
				abort();
			break;
		case 2: {
			unsigned int k = balloon_parse_stats(buf, n, &st);

			if (k > n / BALLOON_STAT_ENTRY_SIZE || (st.valid >> 63 >> 1))
				abort();
			break;
		}
		case 3:
			target = n >= 2 ? (uint64_t)(buf[0] | buf[1] << 8) << 12 : 0;
			if (virtio_balloon_set_target(vdev, target) != (target > RAM ? -ERANGE : 0))
				abort();
			break;
		}
		virtio_balloon_get(vdev, NULL, &target);
		if (target >> 12 > max_balloon)
			max_balloon = target >> 12;
		if (mm_pagestate_count(ps, MM_PAGE_BALLOONED) > max_balloon)
			abort();
	}
	check_memory();
	/* Back to a full, marked RAM for the next input. */
	for (uint64_t p = 0; p < PAGES; p++) {
		if (ever[p]) {
			mm_region(&mem, 0)->hva[p << 12] = MARK;
			ever[p] = 0;
		}
	}
	mm_pagestate_set(ps, 0, RAM, MM_PAGE_PRESENT);
	return 0;
}
