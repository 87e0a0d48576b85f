/*
 * Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst, zero-page.rst). The kernel
 * is entered at the 64-bit entry of the decompressed vmlinux, so the bzImage's own setup code
 * and decompressor never run: we decompress on the host and load the ELF ourselves.
 *
 * Images are hostile input: every offset and size read from them is checked against the file
 * and, through mm_gpa_to_hva(), against guest RAM, with arithmetic that cannot overflow.
 */
#include <elf.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <asm/bootparam.h>

#include "mm/mem.h"
#include "vmm/boot-decompress.h"
#include "vmm/boot.h"
#include "vmm/layout.h"
#include "vmm/log.h"

/* The documented offsets (zero-page.rst, boot.rst) the uapi struct must agree with. */
#define BP_OFF(field) offsetof(struct boot_params, field)
#define HDR_OFF(field) (0x1f1 + offsetof(struct setup_header, field))
_Static_assert(sizeof(struct boot_params) == 4096, "zero page size");
_Static_assert(BP_OFF(acpi_rsdp_addr) == 0x070, "acpi_rsdp_addr");
_Static_assert(BP_OFF(ext_ramdisk_image) == 0x0c0, "ext_ramdisk_image");
_Static_assert(BP_OFF(ext_ramdisk_size) == 0x0c4, "ext_ramdisk_size");
_Static_assert(BP_OFF(ext_cmd_line_ptr) == 0x0c8, "ext_cmd_line_ptr");
_Static_assert(BP_OFF(e820_entries) == 0x1e8, "e820_entries");
_Static_assert(BP_OFF(sentinel) == 0x1ef, "sentinel");
_Static_assert(BP_OFF(hdr) == 0x1f1, "hdr");
_Static_assert(BP_OFF(e820_table) == 0x2d0, "e820_table");
_Static_assert(HDR_OFF(setup_sects) == 0x1f1, "setup_sects");
_Static_assert(HDR_OFF(vid_mode) == 0x1fa, "vid_mode");
_Static_assert(HDR_OFF(boot_flag) == 0x1fe, "boot_flag");
_Static_assert(HDR_OFF(jump) == 0x200, "jump");
_Static_assert(HDR_OFF(header) == 0x202, "header");
_Static_assert(HDR_OFF(version) == 0x206, "version");
_Static_assert(HDR_OFF(type_of_loader) == 0x210, "type_of_loader");
_Static_assert(HDR_OFF(loadflags) == 0x211, "loadflags");
_Static_assert(HDR_OFF(code32_start) == 0x214, "code32_start");
_Static_assert(HDR_OFF(ramdisk_image) == 0x218, "ramdisk_image");
_Static_assert(HDR_OFF(ramdisk_size) == 0x21c, "ramdisk_size");
_Static_assert(HDR_OFF(heap_end_ptr) == 0x224, "heap_end_ptr");
_Static_assert(HDR_OFF(cmd_line_ptr) == 0x228, "cmd_line_ptr");
_Static_assert(HDR_OFF(initrd_addr_max) == 0x22c, "initrd_addr_max");
_Static_assert(HDR_OFF(kernel_alignment) == 0x230, "kernel_alignment");
_Static_assert(HDR_OFF(xloadflags) == 0x236, "xloadflags");
_Static_assert(HDR_OFF(cmdline_size) == 0x238, "cmdline_size");
_Static_assert(HDR_OFF(payload_offset) == 0x248, "payload_offset");
_Static_assert(HDR_OFF(payload_length) == 0x24c, "payload_length");
_Static_assert(HDR_OFF(setup_data) == 0x250, "setup_data");
_Static_assert(HDR_OFF(pref_address) == 0x258, "pref_address");
_Static_assert(HDR_OFF(init_size) == 0x260, "init_size");
_Static_assert(sizeof(struct boot_e820_entry) == sizeof(struct e820_entry), "e820 entry");
_Static_assert(sizeof(((struct boot_kernel *)0)->hdr) == 0x290 - 0x1f1, "hdr copy size");

#define HDR_START 0x1f1
#define H(field) (HDR_OFF(field) - HDR_START) /* offset inside boot_kernel.hdr */
#define HDR_END_MAX 0x290
#define HDR_END_2_12 0x268	/* the 2.12 header runs through handover_offset (0x264) */
#define BOOT_FLAG_MAGIC 0xAA55
#define HDRS_MAGIC 0x53726448	/* "HdrS" */
#define PROTO_MIN 0x020c
#define PROTO_VMLINUX 0x020f
#define LOADER_UNDEFINED 0xff
#define HEAP_END_PTR 0xfe00	/* what a loader sets with CAN_USE_HEAP when setup runs at 0x90000 */
#define OLD_CMDLINE_MAX 255
#define VMLINUX_CMDLINE_MAX 2047 /* COMMAND_LINE_SIZE - 1 on x86 */
#define VMLINUX_INITRD_MAX 0x7fffffffULL
#define DEFAULT_INITRD_MAX 0x37ffffffULL /* boot.rst: the value to assume before 2.03 */
#define KERNEL_ALIGN (2ULL << 20)
#define DECOMPRESS_MAX (512ULL << 20)
#define ELF_MAX_PHDRS 256
#define PAGE_SIZE_4K 4096ULL
#define PDE_2M_FLAGS 0x83ULL	/* present | rw | PS */
#define PTE_TABLE_FLAGS 0x03ULL /* present | rw */
#define GDT_CODE64 0x00af9b000000ffffULL
#define GDT_DATA 0x00cf93000000ffffULL

struct range {
	uint64_t start, end; /* [start, end) */
};

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t)v);
	wr16(p + 2, (uint16_t)(v >> 16));
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

/* Guest RAM as sorted, merged ranges: regions of different nodes may be adjacent. */
static int ram_ranges(const struct guest_mem *m, struct range *out)
{
	const struct mm_region *r;
	int n = 0, w = 0;

	mm_for_each_region(m, r) {
		int j;

		if (!r->size || r->size > UINT64_MAX - r->gpa)
			continue;
		for (j = n; j > 0 && out[j - 1].start > r->gpa; j--)
			out[j] = out[j - 1];
		out[j] = (struct range){ r->gpa, r->gpa + r->size };
		n++;
	}
	if (!n)
		return 0;
	for (int i = 1; i < n; i++) {
		if (out[i].start > out[w].end)
			out[++w] = out[i];
		else if (out[i].end > out[w].end)
			out[w].end = out[i].end;
	}
	return w + 1;
}

/*
 * Copy src (or zeros when src is NULL) to [gpa, gpa+len), which may span adjacent regions. When
 * dry, only check that the range is RAM: m may then be a layout without memory
 * (mm_layout_nodes). len 0 is always fine. Returns 0, -EFAULT or -errno (mm_load).
 */
static int guest_put(const struct guest_mem *m, uint64_t gpa, const uint8_t *src, uint64_t len,
		     int dry)
{
	if (!len)
		return 0;
	if (dry)
		return mm_range_is_ram(m, gpa, len) ? 0 : -EFAULT;
	return mm_load(m, gpa, src, len);
}

static int read_phdr(const uint8_t *img, const Elf64_Ehdr *eh, int i, Elf64_Phdr *ph)
{
	memcpy(ph, img + eh->e_phoff + (uint64_t)i * sizeof(*ph), sizeof(*ph));
	return ph->p_type == PT_LOAD && ph->p_memsz;
}

/* Check the ELF and its PT_LOAD segments and find its entry and extent: no guest RAM needed. */
static int parse_elf(const uint8_t *img, size_t len, struct boot_kernel *k)
{
	uint64_t lo = UINT64_MAX, hi = 0, entry = 0;
	int nloads = 0, have_entry = 0;
	Elf64_Ehdr eh;
	Elf64_Phdr ph, other;

	if (len < sizeof(eh))
		return -ENODATA;
	memcpy(&eh, img, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64 ||
	    eh.e_type != ET_EXEC)
		return -ENOEXEC;
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || !eh.e_phnum || eh.e_phnum > ELF_MAX_PHDRS)
		return -ENOEXEC;
	if (eh.e_phoff > len || (len - eh.e_phoff) / sizeof(Elf64_Phdr) < eh.e_phnum)
		return -ENODATA;

	for (int i = 0; i < eh.e_phnum; i++) {
		if (!read_phdr(img, &eh, i, &ph))
			continue;
		if (ph.p_filesz > ph.p_memsz)
			return -ENOEXEC;
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			return -ENODATA;
		/* Below 1 MiB live the zero page, page tables, command line and ACPI tables. */
		if (ph.p_paddr < HIGH_MEM_START || ph.p_memsz > UINT64_MAX - ph.p_paddr)
			return -EFAULT;
		for (int j = 0; j < i; j++) {
			if (read_phdr(img, &eh, j, &other) && ph.p_paddr < other.p_paddr + other.p_memsz &&
			    other.p_paddr < ph.p_paddr + ph.p_memsz)
				return -ENOEXEC;
		}
		if (ph.p_paddr < lo)
			lo = ph.p_paddr;
		if (ph.p_paddr + ph.p_memsz > hi)
			hi = ph.p_paddr + ph.p_memsz;
		nloads++;
	}
	if (!nloads)
		return -ENOEXEC;

	/* e_entry is physical in a vmlinux (phys_startup_64); accept a virtual one too. */
	for (int pass = 0; pass < 2 && !have_entry; pass++) {
		for (int i = 0; i < eh.e_phnum && !have_entry; i++) {
			uint64_t base;

			if (!read_phdr(img, &eh, i, &ph))
				continue;
			base = pass ? ph.p_vaddr : ph.p_paddr;
			if (eh.e_entry >= base && eh.e_entry - base < ph.p_memsz) {
				entry = ph.p_paddr + (eh.e_entry - base);
				have_entry = 1;
			}
		}
	}
	if (!have_entry)
		return -ENOEXEC;
	k->entry = entry;
	k->load_start = lo;
	k->load_end = hi;
	return 0;
}

/*
 * Check that every PT_LOAD of a parsed ELF lies in guest RAM, then (unless dry) copy it and zero
 * its bss: a bad placement leaves guest RAM untouched.
 */
static int place_elf(const struct guest_mem *m, const uint8_t *img, int dry)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	int ret;

	memcpy(&eh, img, sizeof(eh));
	for (int i = 0; i < eh.e_phnum; i++) {
		if (!read_phdr(img, &eh, i, &ph))
			continue;
		ret = guest_put(m, ph.p_paddr, NULL, ph.p_memsz, 1);
		if (ret)
			return ret;
	}
	for (int i = 0; i < eh.e_phnum && !dry; i++) {
		if (!read_phdr(img, &eh, i, &ph))
			continue;
		ret = guest_put(m, ph.p_paddr, img + ph.p_offset, ph.p_filesz, 0);
		if (!ret)
			ret = guest_put(m, ph.p_paddr + ph.p_filesz, NULL, ph.p_memsz - ph.p_filesz, 0);
		if (ret)
			return ret;
	}
	return 0;
}

/* A setup header for a vmlinux, so boot_setup_params treats both kinds of image alike. */
static void synth_header(struct boot_kernel *k)
{
	uint8_t *h = k->hdr;

	memset(k->hdr, 0, sizeof(k->hdr));
	wr16(h + H(boot_flag), BOOT_FLAG_MAGIC);
	h[H(jump)] = 0xeb; /* jmp short to 0x26c: makes the header's length 2.15's */
	h[H(jump) + 1] = 0x6a;
	wr32(h + H(header), HDRS_MAGIC);
	wr16(h + H(version), PROTO_VMLINUX);
	h[H(type_of_loader)] = LOADER_UNDEFINED;
	h[H(loadflags)] = LOADED_HIGH;
	wr32(h + H(code32_start), (uint32_t)k->load_start);
	wr32(h + H(initrd_addr_max), (uint32_t)VMLINUX_INITRD_MAX);
	wr32(h + H(kernel_alignment), (uint32_t)KERNEL_ALIGN);
	wr16(h + H(xloadflags), XLF_KERNEL_64);
	wr32(h + H(cmdline_size), VMLINUX_CMDLINE_MAX);
	wr64(h + H(pref_address), k->load_start);
	wr32(h + H(init_size), (uint32_t)(k->load_end - k->load_start));
	k->protocol = PROTO_VMLINUX;
	k->initrd_max = VMLINUX_INITRD_MAX + 1;
	k->cmdline_max = VMLINUX_CMDLINE_MAX;
	k->has_setup_header = 0;
}

static const char *bz_format(const char *comp)
{
	static const char *const names[][2] = {
		{ "gzip", "bzImage/gzip" }, { "xz", "bzImage/xz" },
		{ "zstd", "bzImage/zstd" }, { "lz4", "bzImage/lz4" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(comp, names[i][0]))
			return names[i][1];
	return "bzImage";
}

/*
 * The bzImage kept compressed for its own decompressor: the protected-mode kernel (everything
 * after the setup sectors) goes to pref_address, which must be aligned to kernel_alignment
 * and leave init_size bytes (the room decompression needs) in guest RAM; entry +0x200.
 */
static int guest_decompressed(const uint8_t *img, size_t len, uint64_t pm_start,
			      struct boot_image *bi)
{
	struct boot_kernel *k = &bi->k;
	uint64_t pref = rd64(img + HDR_OFF(pref_address));
	uint64_t align = rd32(img + HDR_OFF(kernel_alignment));
	uint64_t init = rd32(img + HDR_OFF(init_size));

	if (pm_start >= len)
		return -ENODATA;
	if (pref < (1ULL << 20) || pref >= (1ULL << 46) || !align || (align & (align - 1)) ||
	    (pref & (align - 1)) || init < len - pm_start)
		return -ENOEXEC;
	bi->pm = img + pm_start;
	bi->pm_len = len - pm_start;
	k->load_start = pref;
	k->load_end = pref + init;
	k->entry = pref + 0x200;
	wr32(k->hdr + H(code32_start), (uint32_t)pref);
	return 0;
}

static int parse_bzimage(const uint8_t *img, size_t len, uint64_t ram_size,
			 enum boot_decompress how, struct boot_image *bi)
{
	struct boot_kernel *k = &bi->k;
	uint64_t hdr_end, pm_start, start, plen, max_out;
	uint32_t initrd_addr_max;
	const uint8_t *payload;
	const char *comp;
	struct timespec t0, t1;
	size_t out_len;
	int ret;

	if (len < 0x208)
		return -ENODATA;
	k->protocol = rd16(img + HDR_OFF(version));
	if (k->protocol < PROTO_MIN)
		return -EPROTO;
	hdr_end = 0x202 + (uint64_t)img[0x201];
	if (len < HDR_END_2_12 || len < hdr_end)
		return -ENODATA;
	if (hdr_end < HDR_END_2_12)
		return -ENOEXEC;
	if (!(rd16(img + HDR_OFF(xloadflags)) & XLF_KERNEL_64))
		return -ENOEXEC;
	if (hdr_end > HDR_END_MAX)
		hdr_end = HDR_END_MAX;
	memset(k->hdr, 0, sizeof(k->hdr));
	memcpy(k->hdr, img + HDR_START, hdr_end - HDR_START);
	k->has_setup_header = 1;

	initrd_addr_max = rd32(img + HDR_OFF(initrd_addr_max));
	k->initrd_max = (initrd_addr_max ? initrd_addr_max : DEFAULT_INITRD_MAX) + 1ULL;
	k->cmdline_max = rd32(img + HDR_OFF(cmdline_size));
	if (k->cmdline_max > BOOT_CMDLINE_MAX - 1)
		k->cmdline_max = BOOT_CMDLINE_MAX - 1;

	pm_start = ((uint64_t)(img[HDR_OFF(setup_sects)] ? img[HDR_OFF(setup_sects)] : 4) + 1) * 512;
	start = pm_start + rd32(img + HDR_OFF(payload_offset));
	plen = rd32(img + HDR_OFF(payload_length));
	if (start > len || plen > len - start)
		return -ENODATA;
	payload = img + start;

	/* CONFIG_KERNEL_UNCOMPRESSED: the payload is the ELF itself. */
	if (plen >= SELFMAG && !memcmp(payload, ELFMAG, SELFMAG)) {
		k->format = "bzImage/none";
		bi->elf = payload;
		bi->elf_len = plen;
		return parse_elf(payload, plen, k);
	}
	comp = boot_compression_name(payload, plen);
	k->format = comp ? bz_format(comp) : "bzImage";
	if (how == BOOT_DECOMPRESS_GUEST) {
		k->format = "bzImage, the guest decompresses";
		return guest_decompressed(img, len, pm_start, bi);
	}
	if (!comp || !strcmp(k->format, "bzImage")) {
		pr_debug("bzImage: unsupported compression %s", comp ? comp : "(unknown)");
		return -EBADMSG;
	}
	max_out = ram_size < DECOMPRESS_MAX ? ram_size : DECOMPRESS_MAX;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = boot_decompress(payload, plen, max_out, &bi->buf, &out_len);
	if (ret) {
		pr_debug("bzImage: %s payload: %s", comp, boot_strerror(ret));
		return ret;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pr_debug("bzImage: %s payload %zu -> %zu bytes in %ld ms", comp, (size_t)plen, out_len,
		 (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
	/* The decompressed vmlinux.bin may be followed by relocation data: ignored. */
	bi->elf = bi->buf;
	bi->elf_len = out_len;
	return parse_elf(bi->buf, out_len, k);
}

int boot_parse_kernel(const void *img, size_t len, uint64_t ram_size, enum boot_decompress how,
		      struct boot_image *bi)
{
	const uint8_t *p = img;
	int ret;

	memset(bi, 0, sizeof(*bi));
	if (!p)
		return -ENOEXEC;
	if (len >= SELFMAG && !memcmp(p, ELFMAG, SELFMAG)) {
		ret = parse_elf(p, len, &bi->k);
		if (ret)
			return ret;
		bi->elf = p;
		bi->elf_len = len;
		bi->k.format = "vmlinux";
		synth_header(&bi->k);
		return 0;
	}
	if (len >= 0x206 && rd16(p + HDR_OFF(boot_flag)) == BOOT_FLAG_MAGIC &&
	    rd32(p + HDR_OFF(header)) == HDRS_MAGIC) {
		ret = parse_bzimage(p, len, ram_size, how, bi);
		if (ret) {
			const char *fmt = bi->k.format;

			boot_image_free(bi);
			bi->k.format = fmt;
		}
		return ret;
	}
	/* Too short to tell: a PE/MZ or boot-sector start means a cut-off bzImage. */
	if (len < 0x206 && ((len >= 2 && p[0] == 'M' && p[1] == 'Z') ||
			    (len >= 0x200 && rd16(p + HDR_OFF(boot_flag)) == BOOT_FLAG_MAGIC)))
		return -ENODATA;
	return -ENOEXEC;
}

void boot_image_free(struct boot_image *bi)
{
	free(bi->buf);
	memset(bi, 0, sizeof(*bi));
}

/* The protected-mode kernel at its load address, init_size of RAM behind it checked first. */
static int place_pm(const struct guest_mem *m, const struct boot_image *bi, int dry)
{
	int ret = guest_put(m, bi->k.load_start, NULL, bi->k.load_end - bi->k.load_start, 1);

	return ret || dry ? ret : guest_put(m, bi->k.load_start, bi->pm, bi->pm_len, 0);
}

int boot_check_kernel(const struct guest_mem *m, const struct boot_image *bi)
{
	return bi->pm ? place_pm(m, bi, 1) : place_elf(m, bi->elf, 1);
}

int boot_place_kernel(const struct guest_mem *m, const struct boot_image *bi)
{
	return bi->pm ? place_pm(m, bi, 0) : place_elf(m, bi->elf, 0);
}

int boot_load_kernel(const struct guest_mem *m, const void *img, size_t len,
		     struct boot_kernel *k)
{
	struct boot_image bi;
	int ret = boot_parse_kernel(img, len, m->ram_size, BOOT_DECOMPRESS_HOST, &bi);

	if (!ret)
		ret = boot_place_kernel(m, &bi);
	*k = ret ? (struct boot_kernel){ .format = bi.k.format } : bi.k;
	boot_image_free(&bi);
	return ret;
}

int boot_initrd_gpa(const struct guest_mem *m, const struct boot_kernel *k, uint64_t len,
		    uint64_t *gpa_out)
{
	struct range r[MM_MAX_REGIONS];
	uint64_t limit, floor;
	int n = ram_ranges(m, r), i;

	*gpa_out = 0;
	if (!len)
		return 0;
	limit = k->initrd_max ? k->initrd_max : DEFAULT_INITRD_MAX + 1;
	if (limit > MEM_32BIT_HOLE_START)
		limit = MEM_32BIT_HOLE_START;
	floor = (k->load_end + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1);
	if (k->load_end > UINT64_MAX - PAGE_SIZE_4K)
		return -E2BIG;
	if (floor < HIGH_MEM_START)
		floor = HIGH_MEM_START;
	/* The RAM range holding the floor bounds the initrd from above too. */
	for (i = 0; i < n && !(floor >= r[i].start && floor < r[i].end); i++)
		;
	if (i == n)
		return -E2BIG;
	if (r[i].end < limit)
		limit = r[i].end;
	if (len > limit || ((limit - len) & ~(PAGE_SIZE_4K - 1)) < floor)
		return -E2BIG;
	*gpa_out = (limit - len) & ~(PAGE_SIZE_4K - 1);
	return 0;
}

int boot_load_initrd(const struct guest_mem *m, const struct boot_kernel *k, const void *data,
		     size_t len, uint64_t *gpa_out)
{
	int ret = boot_initrd_gpa(m, k, len, gpa_out);

	if (ret || !len)
		return ret;
	if (guest_put(m, *gpa_out, data, len, 0)) {
		*gpa_out = 0;
		return -EFAULT;
	}
	return 0;
}

static int e820_add(struct e820_entry *tab, int *n, int max, uint64_t start, uint64_t end,
		    uint32_t type)
{
	if (start >= end)
		return 0;
	if (*n && tab[*n - 1].type == type && tab[*n - 1].addr + tab[*n - 1].size == start) {
		tab[*n - 1].size += end - start;
		return 0;
	}
	if (*n >= max)
		return -E2BIG;
	tab[*n] = (struct e820_entry){ .addr = start, .size = end - start, .type = type };
	(*n)++;
	return 0;
}

int boot_build_e820(const struct guest_mem *m, struct e820_entry *tab, int max)
{
	struct range r[MM_MAX_REGIONS];
	int nr = ram_ranges(m, r), n = 0, ret = 0;

	for (int i = 0; i < nr && !ret; i++)
		if (r[i].start < EBDA_START)
			ret = e820_add(tab, &n, max, r[i].start,
				       r[i].end < EBDA_START ? r[i].end : EBDA_START, E820_RAM);
	if (!ret)
		ret = e820_add(tab, &n, max, EBDA_START, HIGH_MEM_START, E820_RESERVED);
	for (int i = 0; i < nr && !ret; i++)
		if (r[i].end > HIGH_MEM_START)
			ret = e820_add(tab, &n, max,
				       r[i].start > HIGH_MEM_START ? r[i].start : HIGH_MEM_START,
				       r[i].end, E820_RAM);
	return ret ? ret : n;
}

int boot_check_cmdline(const struct boot_kernel *k, const char *cmdline)
{
	size_t len = cmdline ? strlen(cmdline) : 0;

	return len > k->cmdline_max || len >= BOOT_CMDLINE_MAX ? -E2BIG : 0;
}

int boot_setup_params(const struct guest_mem *m, const struct boot_kernel *k, const char *cmdline,
		      uint64_t initrd_gpa, uint64_t initrd_size, uint64_t rsdp_gpa)
{
	struct e820_entry tab[E820_MAX_ENTRIES];
	struct boot_params *bp;
	size_t cmdlen;
	int n, ret;

	if (!cmdline)
		cmdline = "";
	cmdlen = strlen(cmdline);
	ret = boot_check_cmdline(k, cmdline);
	if (ret)
		return ret;
	if (initrd_size && guest_put(m, initrd_gpa, NULL, initrd_size, 1))
		return -EFAULT;
	n = boot_build_e820(m, tab, E820_MAX_ENTRIES);
	if (n < 0)
		return n;
	bp = calloc(1, sizeof(*bp));
	if (!bp)
		return -ENOMEM;

	memcpy((uint8_t *)bp + HDR_START, k->hdr, sizeof(k->hdr));
	bp->hdr.type_of_loader = LOADER_UNDEFINED;
	bp->hdr.loadflags = (uint8_t)((bp->hdr.loadflags | LOADED_HIGH | CAN_USE_HEAP) &
				      ~KEEP_SEGMENTS);
	bp->hdr.heap_end_ptr = HEAP_END_PTR;
	bp->hdr.vid_mode = 0xffff; /* "normal" */
	bp->hdr.setup_data = 0;
	bp->hdr.cmd_line_ptr = (uint32_t)BOOT_CMDLINE_GPA;
	bp->ext_cmd_line_ptr = (uint32_t)(BOOT_CMDLINE_GPA >> 32);
	if (initrd_size) {
		bp->hdr.ramdisk_image = (uint32_t)initrd_gpa;
		bp->ext_ramdisk_image = (uint32_t)(initrd_gpa >> 32);
		bp->hdr.ramdisk_size = (uint32_t)initrd_size;
		bp->ext_ramdisk_size = (uint32_t)(initrd_size >> 32);
	}
	bp->acpi_rsdp_addr = rsdp_gpa;
	bp->e820_entries = (uint8_t)n;
	for (int i = 0; i < n; i++) {
		bp->e820_table[i].addr = tab[i].addr;
		bp->e820_table[i].size = tab[i].size;
		bp->e820_table[i].type = tab[i].type;
	}

	ret = mm_write(m, BOOT_ZERO_PAGE_GPA, bp, sizeof(*bp));
	if (!ret)
		ret = mm_write(m, BOOT_CMDLINE_GPA, cmdline, cmdlen + 1);
	free(bp);
	return ret;
}

int boot_setup_pagetables(const struct guest_mem *m)
{
	const uint64_t gdt[4] = { 0, 0, GDT_CODE64, GDT_DATA };
	uint64_t page[512];
	int ret;

	ret = mm_write(m, BOOT_GDT_GPA, gdt, sizeof(gdt));
	if (ret)
		return ret;
	memset(page, 0, sizeof(page));
	page[0] = BOOT_PDPT_GPA | PTE_TABLE_FLAGS;
	ret = mm_write(m, BOOT_PML4_GPA, page, sizeof(page));
	if (ret)
		return ret;
	memset(page, 0, sizeof(page));
	for (int i = 0; i < 4; i++)
		page[i] = (BOOT_PD_GPA + i * PAGE_SIZE_4K) | PTE_TABLE_FLAGS;
	ret = mm_write(m, BOOT_PDPT_GPA, page, sizeof(page));
	for (int d = 0; d < 4 && !ret; d++) {
		for (int i = 0; i < 512; i++)
			page[i] = (((uint64_t)d * 512 + i) << 21) | PDE_2M_FLAGS;
		ret = mm_write(m, BOOT_PD_GPA + d * PAGE_SIZE_4K, page, sizeof(page));
	}
	return ret;
}

const char *boot_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case -ENOEXEC: return "not an x86-64 Linux kernel (bzImage or vmlinux ELF)";
	case -ENODATA: return "kernel image is truncated";
	case -EPROTO: return "boot protocol too old (need 2.12 or later)";
	case -EBADMSG: return "corrupt or unsupported compressed kernel payload";
	case -E2BIG: return "does not fit in guest memory or exceeds its limit";
	case -EFAULT: return "image lands outside guest RAM";
	case -ENOMEM: return "out of host memory";
	default: return err < 0 ? strerror(-err) : "unknown error";
	}
}
