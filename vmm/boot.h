/*
 * Linux x86 64-bit boot protocol: kernel image loading (bzImage with an LZ4/gzip/xz/zstd
 * payload decompressed on the host, or a vmlinux ELF), initrd placement, zero page, e820,
 * and the identity-mapped page tables and GDT the kernel expects at startup_64.
 *
 * Errors (returned as -errno, turned into a message by boot_strerror() at the edge):
 *   -ENOEXEC  not a kernel (no bzImage header, not an x86-64 ELF)
 *   -ENODATA  truncated file (header or payload runs past the end)
 *   -EPROTO   boot protocol too old (< 2.12 for a bzImage)
 *   -EBADMSG  corrupt compressed payload or unknown compression
 *   -E2BIG    kernel, initrd or command line does not fit in guest memory / its limit
 *   -EFAULT   a segment or structure lands outside guest RAM
 */
#ifndef KUMO_BOOT_H
#define KUMO_BOOT_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define E820_RAM 1
#define E820_RESERVED 2
#define E820_ACPI 3
#define E820_MAX_ENTRIES 128 /* what struct boot_params holds */

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

struct boot_kernel {
	uint64_t entry;		/* guest-physical address of startup_64 */
	uint64_t load_start;	/* lowest guest-physical byte of the loaded image */
	uint64_t load_end;	/* one past the highest byte (including bss) */
	uint16_t protocol;	/* boot protocol version, 0x020f style */
	uint64_t initrd_max;	/* highest address the initrd may end at (exclusive) */
	uint32_t cmdline_max;	/* longest command line the kernel accepts (without NUL) */
	int has_setup_header;	/* a bzImage setup header is kept in hdr[] */
	uint8_t hdr[0x290 - 0x1f1]; /* the setup header as found (0x1f1 .. end of boot_params hdr) */
	const char *format;	/* "bzImage/lz4", "bzImage/gzip", ..., "vmlinux" for messages */
};

/*
 * A kernel image checked on the host before any guest memory exists: the setup header read,
 * the payload decompressed, the ELF's segments and entry checked. Placing it needs only RAM.
 */
struct boot_image {
	struct boot_kernel k;	/* all of it, entry and load range included */
	const uint8_t *elf;	/* the vmlinux: inside the caller's image (kept alive) or buf */
	size_t elf_len;
	uint8_t *buf;		/* the decompressed payload, or NULL */
	/* BOOT_DECOMPRESS_GUEST: the bzImage's protected-mode kernel (inside the caller's image),
	 * loaded as it is at k.load_start and entered at its 64-bit entry (+0x200); elf NULL. */
	const uint8_t *pm;
	size_t pm_len;
};

/*
 * Who decompresses a bzImage: kumo on the host, loading the vmlinux ELF and entering its
 * startup_64 (the only way on a PVM host), or the kernel's own decompressor in the guest,
 * entered at the bzImage's 64-bit entry as the boot protocol describes (boot.rst, "64-bit BOOT
 * PROTOCOL"): no decoder library, no copy of the kernel on the host.
 */
enum boot_decompress { BOOT_DECOMPRESS_HOST, BOOT_DECOMPRESS_GUEST };

/*
 * Parse a bzImage or vmlinux in memory; a compressed payload may grow to at most ram_size
 * (and 512 MiB); how says who decompresses a bzImage. Returns 0 or -errno; on failure
 * bi->k.format may still say what it was.
 */
int boot_parse_kernel(const void *img, size_t len, uint64_t ram_size, enum boot_decompress how,
		      struct boot_image *bi) __attribute__((warn_unused_result));
void boot_image_free(struct boot_image *bi);

/*
 * Check that the image's segments (or the protected-mode kernel's init_size) lie in m's RAM;
 * m may be a layout only. 0 or -EFAULT.
 */
int boot_check_kernel(const struct guest_mem *m, const struct boot_image *bi)
	__attribute__((warn_unused_result));

/*
 * The same check, then copy the segments into guest RAM and zero their bss (or the
 * protected-mode kernel to its load address). 0, -EFAULT or -errno.
 */
int boot_place_kernel(const struct guest_mem *m, const struct boot_image *bi)
	__attribute__((warn_unused_result));

/* Parse and place in one go. Returns 0 or -errno (k then zero but for its format). */
int boot_load_kernel(const struct guest_mem *m, const void *img, size_t len,
		     struct boot_kernel *k) __attribute__((warn_unused_result));

/*
 * Where an initrd of len bytes goes: as high as allowed below k->initrd_max, page aligned,
 * above the kernel; m may be a layout only. 0 (gpa 0 for len 0) or -E2BIG.
 */
int boot_initrd_gpa(const struct guest_mem *m, const struct boot_kernel *k, uint64_t len,
		    uint64_t *gpa_out) __attribute__((warn_unused_result));

/* Copy the initrd to where boot_initrd_gpa() puts it. 0 or -errno. */
int boot_load_initrd(const struct guest_mem *m, const struct boot_kernel *k, const void *data,
		     size_t len, uint64_t *gpa_out) __attribute__((warn_unused_result));

/* Fill e820 from the RAM layout of m (low memory, EBDA/BIOS hole, RAM, RAM above 4 GiB). */
int boot_build_e820(const struct guest_mem *m, struct e820_entry *tab, int max);

/* A command line the kernel takes (no longer than k->cmdline_max): 0 or -E2BIG. */
int boot_check_cmdline(const struct boot_kernel *k, const char *cmdline)
	__attribute__((warn_unused_result));

/*
 * Write the zero page at BOOT_ZERO_PAGE_GPA (setup header, e820, cmdline pointer, initrd,
 * RSDP address) and the command line at BOOT_CMDLINE_GPA.
 */
int boot_setup_params(const struct guest_mem *m, const struct boot_kernel *k, const char *cmdline,
		      uint64_t initrd_gpa, uint64_t initrd_size, uint64_t rsdp_gpa)
	__attribute__((warn_unused_result));

/*
 * GDT (null, null, __BOOT_CS=0x10 code64, __BOOT_DS=0x18 data) and 4 GiB identity map.
 * The vCPU then enters the kernel with: RIP = k->entry, RSI = BOOT_ZERO_PAGE_GPA,
 * GDTR = { BOOT_GDT_GPA, BOOT_GDT_LIMIT }, CR3 = BOOT_PML4_GPA, CR4.PAE, EFER.LME|LMA,
 * CR0.PE|PG, CS = BOOT_CS (base 0, limit 0xfffff, G=1, L=1, D=0, type 0xb, S=1, P=1),
 * DS = ES = SS = BOOT_DS (base 0, limit 0xfffff, G=1, D/B=1, type 0x3, S=1, P=1).
 */
#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define BOOT_GDT_LIMIT (4 * 8 - 1)

int boot_setup_pagetables(const struct guest_mem *m) __attribute__((warn_unused_result));

/* A one-line description of a boot_* error code. */
const char *boot_strerror(int err);

#endif
