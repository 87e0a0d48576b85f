/*
 * libFuzzer target for the kernel loader: the bytes are a "kernel image" (bzImage or vmlinux)
 * loaded into a 64 MiB guest; what loads is then given a zero page and an initrd.
 *
 * Build and run (from the top of the tree; tests/fuzz/run.sh does the same for every target):
 *   clang -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
 *     -fno-sanitize-recover=undefined -o tests/fuzz/out/fuzz-boot tests/fuzz/fuzz-boot.c \
 *     vmm/boot.c vmm/boot-decompress.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c -llz4 -lz -llzma -lzstd
 *   mkdir -p tests/fuzz/out/fuzz-boot.corpus
 *   KUMO_WRITE_SEEDS=tests/fuzz/out/fuzz-boot.corpus tests/unit/test-boot test_write_seeds
 *   tests/fuzz/out/fuzz-boot -max_total_time=20 -max_len=65536 -rss_limit_mb=2048 \
 *     tests/fuzz/out/fuzz-boot.corpus
 * (the seeding step is optional: synthetic vmlinux and gzip/xz/zstd/lz4 bzImages)
 */
// fuzz-sources: vmm/boot.c vmm/boot-decompress.c mm/mem.c mm/pagestate.c mm/dirty.c vmm/log.c
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mm/mem.h"
#include "vmm/boot.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct boot_kernel k;
	uint64_t initrd = 0;

	if (!mm_nr_regions(&mem)) {
		log_level = LOG_ERR - 1; /* quiet */
		if (mm_init(&mem, 64ULL << 20))
			abort();
	}
	if (boot_load_kernel(&mem, data, size, &k))
		return 0;
	if (k.entry < k.load_start || k.entry >= k.load_end || k.load_end > mem.ram_size)
		abort();
	if (boot_load_initrd(&mem, &k, data, size, &initrd))
		initrd = 0;
	(void)!boot_setup_params(&mem, &k, "console=ttyS0", initrd, initrd ? size : 0, 0);
	(void)!boot_setup_pagetables(&mem);
	return 0;
}
