/*
 * Kernel loading: synthetic vmlinux ELFs and bzImages (built here, compressed with each codec
 * the kernel uses), hostile images, initrd placement, e820, zero page and page tables.
 * A real Debian bzImage is loaded too when one is around (KUMO_TEST_BZIMAGE, guest/out).
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "mm/mem.h"
#include "tests/harness.h"
#include "vmm/boot.h"
#include "vmm/config.h"
#include "vmm/layout.h"
#include "vmm/vm.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

#define TEXT_PADDR 0x1000000ULL
#define TEXT_VADDR 0xffffffff81000000ULL
#define ENTRY_OFF 0x40ULL
#define DATA_FILESZ 0x1000ULL
#define DATA_MEMSZ 0x5000ULL /* 0x4000 of bss */
#define ELF_DATA_OFF 0x1000ULL

/* The synthetic vmlinux: text (text_size bytes), data+bss 2 MiB-aligned after it, a note. */
struct elf_img {
	uint8_t *buf;
	size_t len;
	size_t text_size;
	uint64_t data_paddr;
};

static uint8_t pattern(uint64_t i)
{
	/* Compressible but not trivially so. */
	uint64_t x = (i >> 6) * 0x9e3779b97f4a7c15ULL;

	return (uint8_t)((i & 63) < 40 ? i * 7 : x >> 56);
}

static void put_phdr(uint8_t *buf, int idx, const Elf64_Phdr *ph)
{
	memcpy(buf + sizeof(Elf64_Ehdr) + idx * sizeof(*ph), ph, sizeof(*ph));
}

static void get_phdr(const uint8_t *buf, int idx, Elf64_Phdr *ph)
{
	memcpy(ph, buf + sizeof(Elf64_Ehdr) + idx * sizeof(*ph), sizeof(*ph));
}

static void build_elf(struct elf_img *e, size_t text_size)
{
	uint64_t text_off = ELF_DATA_OFF, data_off = text_off + text_size;
	uint64_t data_vaddr_off = (text_size + 2 * MiB - 1) & ~(2 * MiB - 1);
	Elf64_Ehdr eh = { 0 };
	Elf64_Phdr ph = { 0 };

	e->text_size = text_size;
	e->len = data_off + DATA_FILESZ;
	e->buf = calloc(1, e->len);
	e->data_paddr = TEXT_PADDR + data_vaddr_off;

	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = TEXT_VADDR + ENTRY_OFF;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = 3;
	memcpy(e->buf, &eh, sizeof(eh));

	ph.p_type = PT_LOAD;
	ph.p_flags = PF_R | PF_X;
	ph.p_offset = text_off;
	ph.p_vaddr = TEXT_VADDR;
	ph.p_paddr = TEXT_PADDR;
	ph.p_filesz = ph.p_memsz = text_size;
	ph.p_align = 2 * MiB;
	put_phdr(e->buf, 0, &ph);

	ph.p_flags = PF_R | PF_W;
	ph.p_offset = data_off;
	ph.p_vaddr = TEXT_VADDR + data_vaddr_off;
	ph.p_paddr = e->data_paddr;
	ph.p_filesz = DATA_FILESZ;
	ph.p_memsz = DATA_MEMSZ;
	put_phdr(e->buf, 1, &ph);

	memset(&ph, 0, sizeof(ph));
	ph.p_type = PT_NOTE;
	ph.p_offset = text_off;
	ph.p_filesz = 16;
	put_phdr(e->buf, 2, &ph);

	for (uint64_t i = 0; i < text_size; i++)
		e->buf[text_off + i] = pattern(i);
	for (uint64_t i = 0; i < DATA_FILESZ; i++)
		e->buf[data_off + i] = (uint8_t)(0x5a ^ i);
}

/* Dirty the bss so the test sees the loader zero it. */
static void dirty_bss(const struct guest_mem *m, const struct elf_img *e)
{
	uint8_t *p = mm_gpa_to_hva(m, e->data_paddr + DATA_FILESZ, DATA_MEMSZ - DATA_FILESZ);

	if (p)
		memset(p, 0xaa, DATA_MEMSZ - DATA_FILESZ);
}

/* Returns 1 if the ELF's segments are in guest RAM as expected. */
static int elf_loaded(const struct guest_mem *m, const struct boot_kernel *k,
		      const struct elf_img *e)
{
	const uint8_t *text = mm_gpa_to_hva(m, TEXT_PADDR, e->text_size);
	const uint8_t *data = mm_gpa_to_hva(m, e->data_paddr, DATA_MEMSZ);

	if (!text || !data)
		return 0;
	if (memcmp(text, e->buf + ELF_DATA_OFF, e->text_size) ||
	    memcmp(data, e->buf + ELF_DATA_OFF + e->text_size, DATA_FILESZ)) {
		fprintf(stderr, "  segment contents differ\n");
		return 0;
	}
	for (uint64_t i = DATA_FILESZ; i < DATA_MEMSZ; i++) {
		if (data[i]) {
			fprintf(stderr, "  bss not zeroed at +0x%" PRIx64 "\n", i);
			return 0;
		}
	}
	return k->entry == TEXT_PADDR + ENTRY_OFF && k->load_start == TEXT_PADDR &&
	       k->load_end == e->data_paddr + DATA_MEMSZ;
}

/* ---- compressors, producing what the kernel's build produces ---- */

struct blob {
	uint8_t *p;
	size_t len;
};

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void append_size(struct blob *b, size_t orig)
{
	put_le32(b->p + b->len, (uint32_t)orig);
	b->len += 4;
}

static struct blob compress_gzip(const uint8_t *in, size_t len)
{
	struct blob b = { 0 };
	z_stream z = { 0 };

	if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return b;
	b.p = malloc(deflateBound(&z, len) + 8);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = b.p;
	z.avail_out = (uInt)deflateBound(&z, len);
	if (deflate(&z, Z_FINISH) == Z_STREAM_END)
		b.len = z.total_out;
	deflateEnd(&z);
	return b;
}

static struct blob compress_xz(const uint8_t *in, size_t len)
{
	lzma_options_lzma opt;
	lzma_filter filters[3];
	struct blob b = { 0 };
	size_t cap = lzma_stream_buffer_bound(len) + 8, pos = 0;

	lzma_lzma_preset(&opt, 6);
	filters[0] = (lzma_filter){ .id = LZMA_FILTER_X86, .options = NULL };
	filters[1] = (lzma_filter){ .id = LZMA_FILTER_LZMA2, .options = &opt };
	filters[2] = (lzma_filter){ .id = LZMA_VLI_UNKNOWN, .options = NULL };
	b.p = malloc(cap);
	if (lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, NULL, in, len, b.p, &pos,
				      cap - 4) == LZMA_OK) {
		b.len = pos;
		append_size(&b, len);
	}
	return b;
}

static struct blob compress_zstd(const uint8_t *in, size_t len)
{
	struct blob b = { 0 };
	ZSTD_CCtx *c = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(len) + 8, r;

	ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	b.p = malloc(cap);
	r = ZSTD_compress2(c, b.p, cap - 4, in, len);
	if (!ZSTD_isError(r)) {
		b.len = r;
		append_size(&b, len);
	}
	ZSTD_freeCCtx(c);
	return b;
}

/* "lz4 -l": legacy magic, then [le32 size][block] per 8 MiB of input; then the kernel's size. */
static struct blob compress_lz4_legacy(const uint8_t *in, size_t len, int trailer)
{
	const size_t chunk = 8 * MiB;
	struct blob b = { 0 };
	size_t cap = 4 + 8 + (len / chunk + 1) * (4 + (size_t)LZ4_compressBound((int)chunk));

	b.p = malloc(cap);
	put_le32(b.p, 0x184C2102);
	b.len = 4;
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		int c = LZ4_compress_default((const char *)in + off, (char *)b.p + b.len + 4, (int)n,
					     LZ4_compressBound((int)n));

		if (c <= 0) {
			b.len = 0;
			return b;
		}
		put_le32(b.p + b.len, (uint32_t)c);
		b.len += 4 + (size_t)c;
	}
	if (trailer)
		append_size(&b, len);
	return b;
}

enum codec { GZIP, XZ, ZSTD, LZ4 };
static const char *const codec_format[] = { "bzImage/gzip", "bzImage/xz", "bzImage/zstd",
					    "bzImage/lz4" };

static struct blob compress_with(enum codec c, const uint8_t *in, size_t len)
{
	switch (c) {
	case GZIP: return compress_gzip(in, len);
	case XZ: return compress_xz(in, len);
	case ZSTD: return compress_zstd(in, len);
	default: return compress_lz4_legacy(in, len, 1);
	}
}

/* ---- bzImage ---- */

#define BZ_SETUP_SECTS 3
#define BZ_PM_START ((BZ_SETUP_SECTS + 1) * 512)
#define BZ_PAYLOAD_OFF 0x100
#define BZ_PAYLOAD (BZ_PM_START + BZ_PAYLOAD_OFF)

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static struct blob build_bzimage(const struct blob *payload, uint16_t version)
{
	struct blob b;

	b.len = BZ_PAYLOAD + payload->len;
	b.p = calloc(1, b.len);
	b.p[0] = 'M';
	b.p[1] = 'Z';
	b.p[0x1f1] = BZ_SETUP_SECTS;
	put_le16(b.p + 0x1fe, 0xAA55);
	b.p[0x200] = 0xeb;
	b.p[0x201] = 0x6a; /* header ends at 0x26c */
	memcpy(b.p + 0x202, "HdrS", 4);
	put_le16(b.p + 0x206, version);
	b.p[0x211] = 0x01 | 0x20; /* LOADED_HIGH | QUIET_FLAG */
	put_le32(b.p + 0x214, 0x100000);
	put_le32(b.p + 0x22c, 0x7fffffff);
	put_le32(b.p + 0x230, 0x200000);
	b.p[0x234] = 1;
	put_le16(b.p + 0x236, 0x7f); /* XLF_KERNEL_64 | ... */
	put_le32(b.p + 0x238, 2047);
	put_le32(b.p + 0x248, BZ_PAYLOAD_OFF);
	put_le32(b.p + 0x24c, (uint32_t)payload->len);
	put_le32(b.p + 0x258, 0x1000000);
	put_le32(b.p + 0x260, 0x3000000);
	memcpy(b.p + BZ_PAYLOAD, payload->p, payload->len);
	return b;
}

static struct guest_mem g_mem;

static int guest(uint64_t size)
{
	mm_free(&g_mem);
	return mm_init(&g_mem, size);
}

/* ---- tests ---- */

static void test_elf_load(void)
{
	struct boot_kernel k;
	struct elf_img e;

	build_elf(&e, 0x3000);
	CHECK_EQ(guest(256 * MiB), 0);
	dirty_bss(&g_mem, &e);
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), 0);
	CHECK(elf_loaded(&g_mem, &k, &e));
	CHECK(!strcmp(k.format, "vmlinux"));
	CHECK_EQ(k.protocol, 0x020f);
	CHECK_EQ(k.cmdline_max, 2047);
	CHECK_EQ(k.initrd_max, 0x80000000ULL);
	CHECK_EQ(k.hdr[0x1fe - 0x1f1], 0x55);
	CHECK(!memcmp(k.hdr + 0x202 - 0x1f1, "HdrS", 4));

	/* A physical e_entry, as a real vmlinux has, is used as is. */
	((Elf64_Ehdr *)e.buf)->e_entry = TEXT_PADDR + ENTRY_OFF;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), 0);
	CHECK_EQ(k.entry, TEXT_PADDR + ENTRY_OFF);
	/* An entry in neither range is refused. */
	((Elf64_Ehdr *)e.buf)->e_entry = 0x123;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	free(e.buf);
}

static void check_codec(enum codec c, size_t text_size)
{
	struct boot_kernel k;
	struct elf_img e;
	struct blob z, bz;

	build_elf(&e, text_size);
	z = compress_with(c, e.buf, e.len);
	CHECK(z.len > 0);
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(guest(256 * MiB), 0);
	dirty_bss(&g_mem, &e);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), 0);
	CHECK(elf_loaded(&g_mem, &k, &e));
	CHECK(!strcmp(k.format, codec_format[c]));
	CHECK_EQ(k.protocol, 0x020f);
	CHECK(k.has_setup_header);
	CHECK_EQ(k.cmdline_max, 2047);
	CHECK_EQ(k.initrd_max, 0x80000000ULL);
	CHECK(!memcmp(k.hdr, bz.p + 0x1f1, 0x26c - 0x1f1));
	CHECK_EQ(k.hdr[0x26c - 0x1f1], 0); /* nothing past the header's own length */
	free(e.buf);
	free(z.p);
	free(bz.p);
}

static void test_bz_gzip(void) { check_codec(GZIP, 0x20000); }
static void test_bz_xz(void) { check_codec(XZ, 0x20000); }
static void test_bz_zstd(void) { check_codec(ZSTD, 3 * MiB); }
/* 9 MiB of text: two legacy blocks, the second one short. */
static void test_bz_lz4(void) { check_codec(LZ4, 9 * MiB); }

static void test_bz_lz4_variants(void)
{
	struct boot_kernel k;
	struct elf_img e;
	struct blob z, z2, bz;

	build_elf(&e, 0x20000);
	CHECK_EQ(guest(64 * MiB), 0);
	/* No size trailer: the stream simply ends with the input. */
	z = compress_lz4_legacy(e.buf, e.len, 0);
	bz = build_bzimage(&z, 0x020c);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), 0);
	CHECK(elf_loaded(&g_mem, &k, &e));
	free(bz.p);
	/* Two legacy frames back to back (the magic repeats), then the size. */
	z2.len = z.len * 2 + 4;
	z2.p = malloc(z2.len);
	memcpy(z2.p, z.p, z.len);
	memcpy(z2.p + z.len, z.p, z.len);
	put_le32(z2.p + 2 * z.len, (uint32_t)(2 * e.len));
	bz = build_bzimage(&z2, 0x020c);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), 0);
	CHECK(elf_loaded(&g_mem, &k, &e));
	free(bz.p);
	/* A first block size that cannot be: nothing decodes. */
	put_le32(z.p + 4, 0x7fffffff);
	bz = build_bzimage(&z, 0x020c);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -EBADMSG);
	free(bz.p);
	free(z.p);
	free(z2.p);
	free(e.buf);
}

static void test_bz_corrupt(void)
{
	struct elf_img e;

	build_elf(&e, 0x40000);
	CHECK_EQ(guest(64 * MiB), 0);
	for (int c = GZIP; c <= LZ4; c++) {
		struct blob z = compress_with((enum codec)c, e.buf, e.len), bz;
		struct boot_kernel k;
		int ret;

		CHECK(z.len > 16);
		/* Flipped bytes in the middle of the stream (LZ4 has no checksum: skip it). */
		if (c != LZ4) {
			bz = build_bzimage(&z, 0x020f);
			for (size_t i = 0; i < 8; i++)
				bz.p[BZ_PAYLOAD + z.len / 2 + i] ^= 0x55;
			ret = boot_load_kernel(&g_mem, bz.p, bz.len, &k);
			if (ret != -EBADMSG) {
				fprintf(stderr, "  %s flipped: %d\n", codec_format[c], ret);
				CHECK(0);
			}
			free(bz.p);
		}
		/* The stream cut in the middle (header and file agree on the shorter length). */
		z.len = z.len / 2;
		bz = build_bzimage(&z, 0x020f);
		ret = boot_load_kernel(&g_mem, bz.p, bz.len, &k);
		if (ret != -EBADMSG && ret != -ENODATA) {
			fprintf(stderr, "  %s truncated: %d\n", codec_format[c], ret);
			CHECK(0);
		}
		/* Every shorter stream fails cleanly too (sampled). */
		for (size_t l = 0; l < z.len; l += 1 + l / 8) {
			struct blob t = { z.p, l };

			free(bz.p);
			bz = build_bzimage(&t, 0x020f);
			ret = boot_load_kernel(&g_mem, bz.p, bz.len, &k);
			CHECK(ret == -EBADMSG || ret == -ENODATA);
		}
		free(bz.p);
		free(z.p);
	}
	free(e.buf);
}

static void test_bz_unsupported(void)
{
	static const uint8_t magics[][8] = { "BZh91AY&", "\x5d\0\0\x80\0\xff\xff\xff",
					     "\x89LZO\0\r\n\x1a", "\x04\x22\x4d\x18xxxx",
					     "garbage!" };
	struct boot_kernel k;

	CHECK_EQ(guest(64 * MiB), 0);
	for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++) {
		struct blob z = { (uint8_t *)magics[i], sizeof(magics[i]) }, bz = build_bzimage(&z, 0x020f);

		CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -EBADMSG);
		free(bz.p);
	}
}

static void test_bz_truncated(void)
{
	struct boot_kernel k;
	struct elf_img e;
	struct blob z, bz;

	build_elf(&e, 0x3000);
	z = compress_gzip(e.buf, e.len);
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(guest(64 * MiB), 0);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, 0x100, &k), -ENODATA);	/* MZ, no header */
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, 0x200, &k), -ENODATA);	/* boot flag only */
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, 0x207, &k), -ENODATA);	/* HdrS, no version */
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, 0x210, &k), -ENODATA);	/* header cut */
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, BZ_PAYLOAD, &k), -ENODATA); /* no payload */
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len - 1, &k), -ENODATA);
	/* Absurd payload offset / length. */
	put_le32(bz.p + 0x248, 0xffffffff);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -ENODATA);
	put_le32(bz.p + 0x248, BZ_PAYLOAD_OFF);
	put_le32(bz.p + 0x24c, 0xffffffff);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -ENODATA);
	/* Every prefix of the file fails cleanly. */
	for (size_t l = 0; l < bz.len; l++) {
		put_le32(bz.p + 0x24c, (uint32_t)z.len);
		CHECK(boot_load_kernel(&g_mem, bz.p, l, &k) < 0);
	}
	free(e.buf);
	free(z.p);
	free(bz.p);
}

static void test_not_kernel(void)
{
	struct boot_kernel k;
	struct elf_img e;
	uint8_t junk[4096];
	struct blob z, bz;

	CHECK_EQ(guest(64 * MiB), 0);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	CHECK_EQ(boot_load_kernel(&g_mem, junk, sizeof(junk), &k), -ENOEXEC);
	CHECK_EQ(boot_load_kernel(&g_mem, junk, 0, &k), -ENOEXEC);
	CHECK_EQ(boot_load_kernel(&g_mem, NULL, 0, &k), -ENOEXEC);
	CHECK_EQ(boot_load_kernel(&g_mem, "\x7f" "ELF", 4, &k), -ENODATA);

	build_elf(&e, 0x3000);
	((Elf64_Ehdr *)e.buf)->e_machine = EM_386;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	((Elf64_Ehdr *)e.buf)->e_machine = EM_X86_64;
	e.buf[EI_CLASS] = ELFCLASS32;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	e.buf[EI_CLASS] = ELFCLASS64;
	((Elf64_Ehdr *)e.buf)->e_type = ET_REL;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	((Elf64_Ehdr *)e.buf)->e_type = ET_EXEC;

	/* A bzImage that cannot run in 64-bit mode. */
	z = compress_gzip(e.buf, e.len);
	bz = build_bzimage(&z, 0x020f);
	put_le16(bz.p + 0x236, 0);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -ENOEXEC);
	free(bz.p);
	/* Old protocol. */
	bz = build_bzimage(&z, 0x020b);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -EPROTO);
	free(bz.p);
	bz = build_bzimage(&z, 0x0204);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -EPROTO);
	free(bz.p);
	/* The decompressed payload is not an ELF. */
	free(z.p);
	z = compress_gzip(junk, sizeof(junk));
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -ENOEXEC);
	free(bz.p);
	free(z.p);
	free(e.buf);
}

/* Load with phdr idx patched by fn; returns the loader's result. */
static int load_patched(struct elf_img *e, int idx, void (*fn)(Elf64_Phdr *))
{
	struct boot_kernel k;
	Elf64_Phdr ph, saved;
	int ret;

	get_phdr(e->buf, idx, &saved);
	ph = saved;
	fn(&ph);
	put_phdr(e->buf, idx, &ph);
	ret = boot_load_kernel(&g_mem, e->buf, e->len, &k);
	put_phdr(e->buf, idx, &saved);
	return ret;
}

static void ph_outside_ram(Elf64_Phdr *ph) { ph->p_paddr = 0x20000000; }
static void ph_straddles_end(Elf64_Phdr *ph) { ph->p_paddr = 64 * MiB - 0x1000; }
static void ph_wraps(Elf64_Phdr *ph) { ph->p_paddr = UINT64_MAX - 0xfff; }
static void ph_huge_memsz(Elf64_Phdr *ph) { ph->p_memsz = UINT64_MAX; }
static void ph_low(Elf64_Phdr *ph) { ph->p_paddr = 0x7000; }
static void ph_offset_eof(Elf64_Phdr *ph) { ph->p_offset = 0xffffffffffff0000ULL; }
static void ph_filesz_eof(Elf64_Phdr *ph) { ph->p_filesz = ph->p_memsz = 0x1000000; }
static void ph_filesz_gt_memsz(Elf64_Phdr *ph) { ph->p_memsz = ph->p_filesz - 1; }
static void ph_overlap(Elf64_Phdr *ph) { ph->p_paddr = TEXT_PADDR + 0x1000; }
static void ph_not_load(Elf64_Phdr *ph) { ph->p_type = PT_NULL; }

static void test_elf_hostile(void)
{
	struct boot_kernel k;
	struct elf_img e;
	Elf64_Ehdr *eh;
	uint8_t *text;

	build_elf(&e, 0x3000);
	eh = (Elf64_Ehdr *)e.buf;
	CHECK_EQ(guest(64 * MiB), 0);
	text = mm_gpa_to_hva(&g_mem, TEXT_PADDR, 0x3000);
	CHECK_EQ(load_patched(&e, 1, ph_outside_ram), -EFAULT);
	CHECK_EQ(load_patched(&e, 1, ph_straddles_end), -EFAULT);
	CHECK_EQ(load_patched(&e, 1, ph_wraps), -EFAULT);
	CHECK_EQ(load_patched(&e, 1, ph_huge_memsz), -EFAULT);
	CHECK_EQ(load_patched(&e, 1, ph_low), -EFAULT);
	CHECK_EQ(load_patched(&e, 1, ph_offset_eof), -ENODATA);
	CHECK_EQ(load_patched(&e, 1, ph_filesz_eof), -ENODATA);
	CHECK_EQ(load_patched(&e, 1, ph_filesz_gt_memsz), -ENOEXEC);
	CHECK_EQ(load_patched(&e, 1, ph_overlap), -ENOEXEC);
	/* A failed load writes nothing: the text segment (validated first) is not there. */
	CHECK(text[0] == 0 && text[1] == 0 && text[ENTRY_OFF] == 0);
	/* Without the text segment the virtual entry is in no segment. */
	CHECK_EQ(load_patched(&e, 0, ph_not_load), -ENOEXEC);

	eh->e_phoff = e.len;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENODATA);
	eh->e_phoff = UINT64_MAX;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENODATA);
	eh->e_phoff = sizeof(*eh);
	eh->e_phnum = 0xffff;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	eh->e_phnum = 200; /* allowed count, but runs past the end of the file */
	eh->e_phoff = e.len - 100;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENODATA);
	eh->e_phoff = sizeof(*eh);
	eh->e_phnum = 0;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	eh->e_phnum = 3;
	eh->e_phentsize = 32;
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), -ENOEXEC);
	eh->e_phentsize = sizeof(Elf64_Phdr);

	/* Every prefix of the file: an error, never a crash or an overread. */
	for (size_t l = 0; l < e.len; l++) {
		uint8_t *copy = malloc(l ? l : 1);
		int ret;

		memcpy(copy, e.buf, l);
		ret = boot_load_kernel(&g_mem, copy, l, &k);
		free(copy);
		if (ret >= 0) {
			fprintf(stderr, "  prefix %zu loaded\n", l);
			CHECK(0);
		}
	}
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, sizeof(Elf64_Ehdr) - 1, &k), -ENODATA);
	CHECK_EQ(boot_load_kernel(&g_mem, e.buf, e.len, &k), 0);
	free(e.buf);
}

/* A highly compressible payload larger than the guest: refused, not decompressed forever. */
static void test_bz_bomb(void)
{
	static uint8_t zeros[1 << 20];
	struct boot_kernel k;
	struct blob z = { 0 }, bz;
	ZSTD_CCtx *c;
	size_t cap = 1 << 20;
	int n;

	CHECK_EQ(guest(64 * MiB), 0);
	/* zstd: 256 MiB of zeros. */
	c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
	z.p = malloc(cap);
	for (int i = 0; i < 256; i++) {
		ZSTD_inBuffer in = { zeros, sizeof(zeros), 0 };
		ZSTD_outBuffer out = { z.p, cap, z.len };
		size_t r;

		do {
			r = ZSTD_compressStream2(c, &out, &in,
						 i == 255 ? ZSTD_e_end : ZSTD_e_continue);
			CHECK(!ZSTD_isError(r));
		} while (i == 255 ? r != 0 : in.pos < in.size);
		z.len = out.pos;
	}
	ZSTD_freeCCtx(c);
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -E2BIG);
	free(bz.p);

	/* lz4: the same 8 MiB block of zeros 100 times. */
	free(z.p);
	z.p = malloc(4 + 100 * (4 + 64 * 1024) + 4);
	put_le32(z.p, 0x184C2102);
	{
		uint8_t *big = calloc(1, 8 * MiB), *blk = malloc(64 * 1024);

		n = LZ4_compress_default((const char *)big, (char *)blk, 8 * MiB, 64 * 1024);
		free(big);
		CHECK(n > 0);
		z.len = 4;
		for (int i = 0; i < 100; i++) {
			put_le32(z.p + z.len, (uint32_t)n);
			memcpy(z.p + z.len + 4, blk, (size_t)n);
			z.len += 4 + (size_t)n;
		}
		free(blk);
	}
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -E2BIG);
	free(bz.p);

	/* gzip: 100 MiB of zeros. */
	free(z.p);
	{
		uint8_t *big = calloc(1, 100 * MiB);

		z = compress_gzip(big, 100 * MiB);
		free(big);
	}
	CHECK(z.len > 0);
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), -E2BIG);
	free(bz.p);
	free(z.p);
}

static struct boot_kernel vmlinux_kernel(void)
{
	struct boot_kernel k;
	struct elf_img e;

	build_elf(&e, 0x3000);
	memset(&k, 0, sizeof(k));
	if (boot_load_kernel(&g_mem, e.buf, e.len, &k))
		k.format = NULL;
	free(e.buf);
	return k;
}

static void test_initrd(void)
{
	struct boot_kernel k;
	uint64_t gpa;
	uint8_t *data = malloc(MiB + 123);

	for (size_t i = 0; i < MiB + 123; i++)
		data[i] = (uint8_t)(i * 13);
	CHECK_EQ(guest(256 * MiB), 0);
	k = vmlinux_kernel();
	CHECK(k.format);
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, MiB + 123, &gpa), 0);
	CHECK_EQ(gpa, (256 * MiB - (MiB + 123)) & ~0xfffULL);
	CHECK(!memcmp(mm_gpa_to_hva(&g_mem, gpa, MiB + 123), data, MiB + 123));
	/* The header's limit wins over the top of RAM. */
	k.initrd_max = 0x8000000;
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, MiB + 123, &gpa), 0);
	CHECK_EQ(gpa, (0x8000000 - (MiB + 123)) & ~0xfffULL);
	/* Fits exactly between the kernel and the limit; one page more does not. */
	k.initrd_max = k.load_end + 0x3000; /* load_end is page aligned here */
	CHECK_EQ(k.load_end & 0xfff, 0);
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, 0x3000, &gpa), 0);
	CHECK_EQ(gpa, k.load_end);
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, 0x3001, &gpa), -E2BIG);
	k.initrd_max = 0x80000000;
	/* Too big for the RAM above the kernel. */
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, 256 * MiB - k.load_end + 1, &gpa), -E2BIG);
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, SIZE_MAX, &gpa), -E2BIG);

	/* 6 GiB: below the header limit (2 GiB) even though RAM goes on to 3 GiB and past 4. */
	CHECK_EQ(guest(6 * GiB), 0);
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, MiB + 123, &gpa), 0);
	CHECK_EQ(gpa, (0x80000000 - (MiB + 123)) & ~0xfffULL);
	/* A kernel allowing 4 GiB still stays below the 32-bit hole. */
	k.initrd_max = 0x100000000ULL;
	CHECK_EQ(boot_load_initrd(&g_mem, &k, data, MiB + 123, &gpa), 0);
	CHECK_EQ(gpa, (MEM_32BIT_HOLE_START - (MiB + 123)) & ~0xfffULL);
	free(data);
}

/* mm_layout_nodes() lays RAM out as mm_init_nodes() does, with nothing behind it. */
static void test_layout_only(void)
{
	static const struct mm_node_spec nodes[] = { { 64 * MiB, -1 }, { 0, -1 }, { 6 * GiB, -1 } };
	static const struct mm_node_spec too_small = { 8 * MiB, -1 }, odd = { 65 * MiB, -1 };
	const struct mm_region *a;
	struct guest_mem layout;

	CHECK_EQ(mm_layout_nodes(&layout, nodes, 3, 0), 0);
	mm_free(&g_mem);
	CHECK_EQ(mm_init_nodes(&g_mem, nodes, 3, 0), 0);
	CHECK_EQ(layout.ram_size, g_mem.ram_size);
	CHECK_EQ(mm_nr_regions(&layout), mm_nr_regions(&g_mem));
	mm_for_each_region(&layout, a) {
		const struct mm_region *b = mm_region(&g_mem, mm_region_index(&layout, a));

		CHECK(a->gpa == b->gpa && a->size == b->size && a->node == b->node &&
		      a->fd_offset == b->fd_offset);
		CHECK(!a->hva && a->memfd == -1 && b->hva && b->memfd >= 0);
	}
	mm_free(&layout);
	CHECK_EQ(mm_layout_nodes(&layout, nodes, 0, 0), -EINVAL);
	CHECK_EQ(mm_layout_nodes(&layout, &too_small, 1, 0), -EINVAL);
	CHECK_EQ(mm_layout_nodes(&layout, &odd, 1, 1), -EINVAL);	/* not in 2M pages */
}

/*
 * Parse, then check against a layout without memory: what boot_place_kernel() and
 * boot_load_initrd() then do in real memory is decided before that memory exists.
 */
static void test_parse_then_place(void)
{
	struct mm_node_spec one = { 256 * MiB, -1 }, small = { 16 * MiB, -1 };
	struct guest_mem layout, tiny;
	uint8_t *initrd = calloc(1, MiB + 123);
	struct boot_image bi;
	uint64_t planned, gpa;
	struct elf_img e;
	struct blob z, bz;

	build_elf(&e, 0x3000);
	z = compress_gzip(e.buf, e.len);
	bz = build_bzimage(&z, 0x020f);
	CHECK_EQ(boot_parse_kernel(bz.p, bz.len, 256 * MiB, BOOT_DECOMPRESS_HOST, &bi), 0);
	free(bz.p);	/* the decompressed ELF is all that is needed now */
	free(z.p);
	CHECK(!strcmp(bi.k.format, "bzImage/gzip"));
	CHECK(bi.buf && bi.elf == bi.buf);
	CHECK_EQ(bi.k.entry, TEXT_PADDR + ENTRY_OFF);
	CHECK_EQ(bi.k.load_start, TEXT_PADDR);
	CHECK_EQ(bi.k.load_end, e.data_paddr + DATA_MEMSZ);

	CHECK_EQ(mm_layout_nodes(&layout, &one, 1, 0), 0);
	CHECK_EQ(mm_layout_nodes(&tiny, &small, 1, 0), 0);
	CHECK_EQ(boot_check_kernel(&layout, &bi), 0);
	/* 16 MiB of RAM end where the kernel starts. */
	CHECK_EQ(boot_check_kernel(&tiny, &bi), -EFAULT);
	CHECK_EQ(boot_initrd_gpa(&layout, &bi.k, MiB + 123, &planned), 0);
	CHECK_EQ(boot_initrd_gpa(&layout, &bi.k, 256 * MiB, &gpa), -E2BIG);
	CHECK_EQ(boot_initrd_gpa(&layout, &bi.k, 0, &gpa), 0);
	CHECK_EQ(gpa, 0);

	CHECK_EQ(guest(256 * MiB), 0);
	dirty_bss(&g_mem, &e);
	CHECK_EQ(boot_place_kernel(&g_mem, &bi), 0);
	CHECK(elf_loaded(&g_mem, &bi.k, &e));
	CHECK_EQ(boot_load_initrd(&g_mem, &bi.k, initrd, MiB + 123, &gpa), 0);
	CHECK_EQ(gpa, planned);
	boot_image_free(&bi);
	CHECK(!bi.buf && !bi.elf);

	/* A vmlinux is used where it lies: nothing is copied. */
	CHECK_EQ(boot_parse_kernel(e.buf, e.len, 256 * MiB, BOOT_DECOMPRESS_HOST, &bi), 0);
	CHECK(!bi.buf && bi.elf == e.buf && bi.elf_len == e.len);
	CHECK_EQ(boot_check_kernel(&layout, &bi), 0);
	boot_image_free(&bi);
	/* A failed parse leaves nothing to free but says what the image was. */
	z = compress_gzip(e.buf, e.len);
	z.len /= 2;
	bz = build_bzimage(&z, 0x020f);
	CHECK(boot_parse_kernel(bz.p, bz.len, 256 * MiB, BOOT_DECOMPRESS_HOST, &bi) < 0);
	CHECK(!bi.buf && !bi.elf && !strcmp(bi.k.format, "bzImage/gzip"));
	free(bz.p);
	free(z.p);
	free(e.buf);
	free(initrd);
}

/*
 * --decompress guest: the bzImage is not decompressed (a payload no decoder could read is
 * fine), its protected-mode part lands byte for byte at pref_address, entered at +0x200; the
 * room init_size asks for must be RAM, and a header whose pref_address, alignment or
 * init_size cannot be right is refused.
 */
static void test_guest_decompresses(void)
{
	struct mm_node_spec small = { 40 * MiB, -1 };
	const uint64_t pm = BZ_PM_START;
	struct blob junk = { calloc(1, 5000), 5000 }, bz;
	struct guest_mem tiny;
	struct boot_image bi;
	uint8_t *at;

	for (size_t i = 0; i < junk.len; i++)
		junk.p[i] = (uint8_t)(i * 31 + 7);
	bz = build_bzimage(&junk, 0x020f);
	CHECK_EQ(boot_parse_kernel(bz.p, bz.len, 256 * MiB, BOOT_DECOMPRESS_GUEST, &bi), 0);
	CHECK(!bi.buf && !bi.elf && bi.pm == bz.p + pm && bi.pm_len == bz.len - pm);
	CHECK_EQ(bi.k.load_start, 0x1000000);
	CHECK_EQ(bi.k.load_end, 0x1000000 + 0x3000000);
	CHECK_EQ(bi.k.entry, 0x1000000 + 0x200);
	CHECK(!memcmp(bi.k.hdr + 0x214 - 0x1f1, "\0\0\0\1", 4));	/* code32_start */
	CHECK_EQ(mm_layout_nodes(&tiny, &small, 1, 0), 0);
	CHECK_EQ(boot_check_kernel(&tiny, &bi), -EFAULT);	/* init_size runs past 40 MiB */
	CHECK_EQ(guest(256 * MiB), 0);
	CHECK_EQ(boot_place_kernel(&g_mem, &bi), 0);
	at = mm_gpa_to_hva(&g_mem, 0x1000000, bi.pm_len);
	CHECK(at && !memcmp(at, bz.p + pm, bi.pm_len));
	boot_image_free(&bi);
	/* Headers that cannot be loaded as they say. */
	put_le32(bz.p + 0x258, 0x1000000 + 4096);		/* pref_address off the alignment */
	CHECK_EQ(boot_parse_kernel(bz.p, bz.len, 256 * MiB, BOOT_DECOMPRESS_GUEST, &bi), -ENOEXEC);
	put_le32(bz.p + 0x258, 0x1000000);
	put_le32(bz.p + 0x230, 0x300000);			/* an alignment not a power of 2 */
	CHECK_EQ(boot_parse_kernel(bz.p, bz.len, 256 * MiB, BOOT_DECOMPRESS_GUEST, &bi), -ENOEXEC);
	put_le32(bz.p + 0x230, 0x200000);
	put_le32(bz.p + 0x260, 100);				/* less room than the image itself */
	CHECK_EQ(boot_parse_kernel(bz.p, bz.len, 256 * MiB, BOOT_DECOMPRESS_GUEST, &bi), -ENOEXEC);
	free(bz.p);
	free(junk.p);
}

static int write_file(const char *path, const void *p, size_t len, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), ret;

	if (fd < 0)
		return -1;
	ret = write(fd, p, len) == (ssize_t)len && !ftruncate(fd, (off_t)size) ? 0 : -1;
	close(fd);
	return ret;
}

/* vm_boot_load(): each bad input refused with -errno and one line naming it (@: the files'
 * directory); no KVM here. */
static void test_vm_boot_load(void)
{
	static const struct {
		const char *kernel, *initrd, *mem;
		int long_cmdline, ret;
		const char *msg;
	} cases[] = {
		{ "vmlinux", NULL, "256M", 0, 0, NULL },
		{ "vmlinux", "initrd", "64M", 0, 0, NULL },
		{ "missing", NULL, "256M", 0, -ENOENT,
		  "kernel @/missing: No such file or directory" },
		{ "", NULL, "256M", 0, -EINVAL, "kernel @/: not a regular file" },
		{ "garbage", NULL, "256M", 0, -ENOEXEC,
		  "kernel @/garbage: not an x86-64 Linux kernel (bzImage or vmlinux ELF)" },
		{ "cut", NULL, "256M", 0, -ENODATA, "kernel @/cut: kernel image is truncated" },
		{ "vmlinux", NULL, "16M", 0, -EFAULT,
		  "kernel @/vmlinux: image lands outside guest RAM" },
		{ "vmlinux", NULL, "256M", 1, -E2BIG, "--cmdline: too long for the kernel" },
		{ "vmlinux", "missing", "256M", 0, -ENOENT,
		  "initrd @/missing: No such file or directory" },
		{ "vmlinux", "", "256M", 0, -EINVAL, "initrd @/: not a regular file" },
		{ "vmlinux", "big", "64M", 0, -E2BIG,
		  "initrd @/big (209715200 bytes): does not fit in guest memory or exceeds its "
		  "limit" },
	};
	char dir[] = "/tmp/kumo-test-boot.XXXXXX", kernel[128], initrd[128], err[512], want[512];
	char *cmdline = malloc(3000);
	uint8_t data[5000];
	struct elf_img e;

	CHECK(mkdtemp(dir));
	build_elf(&e, 0x3000);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	memset(cmdline, 'x', 2999);
	cmdline[2999] = 0;
#define FILE_IN(name, p, len, size) \
	(snprintf(kernel, sizeof(kernel), "%s/" name, dir), write_file(kernel, p, len, size))
	CHECK_EQ(FILE_IN("vmlinux", e.buf, e.len, e.len), 0);
	CHECK_EQ(FILE_IN("initrd", data, sizeof(data), sizeof(data)), 0);
	CHECK_EQ(FILE_IN("garbage", data, 100, 100), 0);
	CHECK_EQ(FILE_IN("cut", "MZ", 2, 2), 0);
	CHECK_EQ(FILE_IN("big", "", 0, 200 * MiB), 0);	/* sparse: refused by its size */
#undef FILE_IN
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[12] = { "run", "--kernel", kernel, "--mem", (char *)cases[i].mem,
				   "--no-pvm-quirks" };
		struct run_options o;
		struct vm_config cfg;
		struct vm_boot b;
		int argc = 6, ret;

		snprintf(kernel, sizeof(kernel), "%s/%s", dir, cases[i].kernel);
		if (cases[i].initrd) {
			snprintf(initrd, sizeof(initrd), "%s/%s", dir, cases[i].initrd);
			argv[argc++] = "--initrd";
			argv[argc++] = initrd;
		}
		if (cases[i].long_cmdline) {
			argv[argc++] = "--cmdline";
			argv[argc++] = cmdline;
		}
		CHECK_EQ(config_parse_run(argc, argv, &cfg, &o, err, sizeof(err)), 0);
		err[0] = 0;
		ret = vm_boot_load(&b, &cfg, err, sizeof(err));
		if (ret != cases[i].ret)
			fprintf(stderr, "  case %zu: %d (%s)\n", i, ret, err);
		CHECK_EQ(ret, cases[i].ret);
		if (ret) {
			const char *at = strchr(cases[i].msg, '@');

			snprintf(want, sizeof(want), "%.*s%s%s", at ? (int)(at - cases[i].msg) : 0,
				 cases[i].msg, at ? dir : "", at ? at + 1 : cases[i].msg);
			if (strcmp(err, want))
				fprintf(stderr, "  case %zu: '%s', want '%s'\n", i, err, want);
			CHECK(!strcmp(err, want));
			CHECK(!b.kernel_file && !b.initrd && !b.cmdline && !b.kernel.buf);
			continue;
		}
		CHECK(!strcmp(b.kernel.k.format, "vmlinux"));
		CHECK(b.kernel_len == e.len && !memcmp(b.kernel_file, e.buf, e.len));
		CHECK(b.kernel.elf == b.kernel_file);
		CHECK(!strcmp(b.cmdline, "console=ttyS0 "));
		CHECK_EQ(b.initrd_len, cases[i].initrd ? sizeof(data) : 0);
		CHECK(!cases[i].initrd || !memcmp(b.initrd, data, sizeof(data)));
		vm_boot_free(&b);
		CHECK(!b.kernel_file && !b.initrd && !b.cmdline);
	}
	for (const char *const *n = (const char *const[]){ "vmlinux", "initrd", "garbage", "cut",
							   "big", NULL }; *n; n++) {
		snprintf(kernel, sizeof(kernel), "%s/%s", dir, *n);
		unlink(kernel);
	}
	rmdir(dir);
	free(cmdline);
	free(e.buf);
}

static int e820_is(const struct e820_entry *t, uint64_t addr, uint64_t size, uint32_t type)
{
	if (t->addr == addr && t->size == size && t->type == type)
		return 1;
	fprintf(stderr, "  e820 [0x%llx +0x%llx type %u], want [0x%llx +0x%llx type %u]\n",
		(unsigned long long)t->addr, (unsigned long long)t->size, t->type,
		(unsigned long long)addr, (unsigned long long)size, type);
	return 0;
}

static void test_e820(void)
{
	struct e820_entry t[E820_MAX_ENTRIES];
	struct guest_mem split = { 0 };

	CHECK_EQ(guest(256 * MiB), 0);
	CHECK_EQ(boot_build_e820(&g_mem, t, E820_MAX_ENTRIES), 3);
	CHECK(e820_is(&t[0], 0, EBDA_START, E820_RAM));
	CHECK(e820_is(&t[1], EBDA_START, HIGH_MEM_START - EBDA_START, E820_RESERVED));
	CHECK(e820_is(&t[2], HIGH_MEM_START, 256 * MiB - HIGH_MEM_START, E820_RAM));
	CHECK_EQ(boot_build_e820(&g_mem, t, 2), -E2BIG);

	CHECK_EQ(guest(3 * GiB), 0);
	CHECK_EQ(boot_build_e820(&g_mem, t, E820_MAX_ENTRIES), 3);
	CHECK(e820_is(&t[2], HIGH_MEM_START, 3 * GiB - HIGH_MEM_START, E820_RAM));

	CHECK_EQ(guest(4 * GiB), 0);
	CHECK_EQ(boot_build_e820(&g_mem, t, E820_MAX_ENTRIES), 4);
	CHECK(e820_is(&t[2], HIGH_MEM_START, 3 * GiB - HIGH_MEM_START, E820_RAM));
	CHECK(e820_is(&t[3], 4 * GiB, 1 * GiB, E820_RAM));
	CHECK_EQ(boot_build_e820(&g_mem, t, 3), -E2BIG);

	CHECK_EQ(guest(6 * GiB), 0);
	CHECK_EQ(boot_build_e820(&g_mem, t, E820_MAX_ENTRIES), 4);
	CHECK(e820_is(&t[0], 0, EBDA_START, E820_RAM));
	CHECK(e820_is(&t[1], EBDA_START, HIGH_MEM_START - EBDA_START, E820_RESERVED));
	CHECK(e820_is(&t[2], HIGH_MEM_START, 3 * GiB - HIGH_MEM_START, E820_RAM));
	CHECK(e820_is(&t[3], 4 * GiB, 3 * GiB, E820_RAM));

	/* One region per NUMA node, listed out of order: adjacent RAM merges. */
	split.nr_regions = 4;
	split.regions[0] = (struct mm_region){ .gpa = 4 * GiB + GiB, .size = GiB };
	split.regions[1] = (struct mm_region){ .gpa = 0, .size = 2 * GiB };
	split.regions[2] = (struct mm_region){ .gpa = 2 * GiB, .size = GiB };
	split.regions[3] = (struct mm_region){ .gpa = 4 * GiB, .size = GiB };
	CHECK_EQ(boot_build_e820(&split, t, E820_MAX_ENTRIES), 4);
	CHECK(e820_is(&t[2], HIGH_MEM_START, 3 * GiB - HIGH_MEM_START, E820_RAM));
	CHECK(e820_is(&t[3], 4 * GiB, 2 * GiB, E820_RAM));
}

static uint32_t le32_at(const uint8_t *p, size_t off)
{
	return (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
	       (uint32_t)p[off + 3] << 24;
}

static uint64_t le64_at(const uint8_t *p, size_t off)
{
	return le32_at(p, off) | (uint64_t)le32_at(p, off + 4) << 32;
}

static void test_zero_page(void)
{
	const char *cmd = "console=ttyS0 nokaslr";
	struct boot_kernel k;
	struct elf_img e;
	struct blob z, bz;
	const uint8_t *zp;

	CHECK_EQ(guest(4 * GiB), 0);
	k = vmlinux_kernel();
	CHECK(k.format);
	zp = mm_gpa_to_hva(&g_mem, BOOT_ZERO_PAGE_GPA, 4096);
	memset((void *)zp, 0xee, 4096);
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0x7f000000, 0x123456, 0xe0000), 0);
	CHECK_EQ(zp[0x1ef], 0); /* sentinel */
	CHECK_EQ(le32_at(zp, 0x1fe) & 0xffff, 0xaa55);
	CHECK(!memcmp(zp + 0x202, "HdrS", 4));
	CHECK_EQ(le32_at(zp, 0x206) & 0xffff, 0x020f);
	CHECK_EQ(le32_at(zp, 0x1fa) & 0xffff, 0xffff);
	CHECK_EQ(zp[0x210], 0xff);
	CHECK_EQ(zp[0x211] & 0xc1, 0x81); /* LOADED_HIGH | CAN_USE_HEAP, not KEEP_SEGMENTS */
	CHECK_EQ(le32_at(zp, 0x224) & 0xffff, 0xfe00);
	CHECK_EQ(le32_at(zp, 0x228), BOOT_CMDLINE_GPA);
	CHECK_EQ(le32_at(zp, 0x0c8), 0);
	CHECK_EQ(le32_at(zp, 0x218), 0x7f000000);
	CHECK_EQ(le32_at(zp, 0x21c), 0x123456);
	CHECK_EQ(le32_at(zp, 0x0c0), 0);
	CHECK_EQ(le32_at(zp, 0x0c4), 0);
	CHECK_EQ(le32_at(zp, 0x22c), 0x7fffffff);
	CHECK_EQ(le32_at(zp, 0x230), 0x200000);
	CHECK_EQ(le32_at(zp, 0x238), 2047);
	CHECK_EQ(le64_at(zp, 0x070), 0xe0000);
	CHECK_EQ(le64_at(zp, 0x250), 0); /* setup_data */
	CHECK_EQ(zp[0x1e8], 4);
	CHECK_EQ(le64_at(zp, 0x2d0), 0);
	CHECK_EQ(le64_at(zp, 0x2d8), EBDA_START);
	CHECK_EQ(le32_at(zp, 0x2e0), E820_RAM);
	CHECK_EQ(le64_at(zp, 0x2d0 + 20), EBDA_START);
	CHECK_EQ(le32_at(zp, 0x2d0 + 20 + 16), E820_RESERVED);
	CHECK_EQ(le64_at(zp, 0x2d0 + 60), 4 * GiB);
	CHECK_EQ(le64_at(zp, 0x2d0 + 68), GiB);
	CHECK_EQ(zp[0x2d0 + 80], 0); /* nothing after the last entry */
	CHECK_EQ(zp[4095], 0);
	CHECK(!strcmp(mm_gpa_to_hva(&g_mem, BOOT_CMDLINE_GPA, strlen(cmd) + 1), cmd));

	/* No initrd, no RSDP, empty command line. */
	CHECK_EQ(boot_setup_params(&g_mem, &k, NULL, 0, 0, 0), 0);
	CHECK_EQ(le32_at(zp, 0x218), 0);
	CHECK_EQ(le32_at(zp, 0x21c), 0);
	CHECK_EQ(le64_at(zp, 0x070), 0);
	CHECK_EQ(*(const char *)mm_gpa_to_hva(&g_mem, BOOT_CMDLINE_GPA, 1), 0);
	/* An initrd outside RAM is refused. */
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0xc0000000, 0x1000, 0), -EFAULT);

	/* From a bzImage: its header is passed through, with our loader fields on top. */
	build_elf(&e, 0x3000);
	z = compress_gzip(e.buf, e.len);
	bz = build_bzimage(&z, 0x020c);
	put_le32(bz.p + 0x238, 1000);
	put_le32(bz.p + 0x250, 0xdeadbeef); /* setup_data from the file is not followed */
	put_le32(bz.p + 0x22c, 0x37ffffff);
	bz.p[0x211] |= 0x40; /* KEEP_SEGMENTS: must be cleared */
	CHECK_EQ(boot_load_kernel(&g_mem, bz.p, bz.len, &k), 0);
	CHECK_EQ(k.cmdline_max, 1000);
	CHECK_EQ(k.initrd_max, 0x38000000);
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0, 0, 0), 0);
	CHECK_EQ(le32_at(zp, 0x206) & 0xffff, 0x020c);
	CHECK_EQ(le32_at(zp, 0x260), 0x3000000);
	CHECK_EQ(le32_at(zp, 0x258), 0x1000000);
	CHECK_EQ(le64_at(zp, 0x250), 0);
	CHECK_EQ(zp[0x211], 0x81 | 0x20); /* QUIET_FLAG from the image kept */
	CHECK_EQ(zp[0x210], 0xff);
	CHECK_EQ(zp[0x26c], 0);
	free(e.buf);
	free(z.p);
	free(bz.p);
}

static void test_cmdline_too_long(void)
{
	struct boot_kernel k;
	char *cmd = malloc(BOOT_CMDLINE_MAX + 2);

	CHECK_EQ(guest(64 * MiB), 0);
	k = vmlinux_kernel();
	CHECK(k.format);
	memset(cmd, 'a', 2047);
	cmd[2047] = 0;
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0, 0, 0), 0);
	CHECK_EQ(strlen(mm_gpa_to_hva(&g_mem, BOOT_CMDLINE_GPA, 2048)), 2047);
	cmd[2047] = 'a';
	cmd[2048] = 0;
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0, 0, 0), -E2BIG);
	/* Even a header claiming more is held to our buffer. */
	k.cmdline_max = UINT32_MAX;
	memset(cmd, 'b', BOOT_CMDLINE_MAX);
	cmd[BOOT_CMDLINE_MAX] = 0;
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0, 0, 0), -E2BIG);
	cmd[BOOT_CMDLINE_MAX - 1] = 0;
	CHECK_EQ(boot_setup_params(&g_mem, &k, cmd, 0, 0, 0), 0);
	free(cmd);
}

static void test_pagetables(void)
{
	const uint64_t *gdt, *pml4, *pdpt, *pd;

	CHECK_EQ(guest(64 * MiB), 0);
	memset(mm_gpa_to_hva(&g_mem, BOOT_PML4_GPA, 0x2000), 0xff, 0x2000);
	CHECK_EQ(boot_setup_pagetables(&g_mem), 0);
	gdt = mm_gpa_to_hva(&g_mem, BOOT_GDT_GPA, 32);
	CHECK_EQ(gdt[0], 0);
	CHECK_EQ(gdt[1], 0);
	CHECK_EQ(gdt[BOOT_CS / 8], 0x00af9b000000ffffULL);
	CHECK_EQ(gdt[BOOT_DS / 8], 0x00cf93000000ffffULL);
	CHECK_EQ(BOOT_GDT_LIMIT, 31);
	CHECK(BOOT_GDT_GPA + BOOT_GDT_LIMIT < BOOT_IDT_GPA);
	pml4 = mm_gpa_to_hva(&g_mem, BOOT_PML4_GPA, 4096);
	pdpt = mm_gpa_to_hva(&g_mem, BOOT_PDPT_GPA, 4096);
	pd = mm_gpa_to_hva(&g_mem, BOOT_PD_GPA, 4 * 4096);
	CHECK_EQ(pml4[0], BOOT_PDPT_GPA | 3);
	for (int i = 1; i < 512; i++)
		CHECK_EQ(pml4[i], 0);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(pdpt[i], (BOOT_PD_GPA + i * 4096ULL) | 3);
	for (int i = 4; i < 512; i++)
		CHECK_EQ(pdpt[i], 0);
	for (int i = 0; i < 2048; i++)
		CHECK_EQ(pd[i], ((uint64_t)i << 21) | 0x83);
	CHECK_EQ(pd[2047], 0xffe00000ULL | 0x83);
}

static void test_strerror(void)
{
	static const int errs[] = { -ENOEXEC, -ENODATA, -EPROTO, -EBADMSG, -E2BIG, -EFAULT };

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		CHECK(boot_strerror(errs[i]) && *boot_strerror(errs[i]));
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(boot_strerror(errs[i]), boot_strerror(errs[j])));
	}
	CHECK(boot_strerror(-EIO) && *boot_strerror(-EIO));
}

static uint8_t *read_file(const char *path, size_t *len)
{
	uint8_t *buf = NULL;
	FILE *f = fopen(path, "rb");
	long n;

	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) > 0 && !fseek(f, 0, SEEK_SET)) {
		buf = malloc((size_t)n);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

/* $env if set, else the first of paths that exists. */
static const char *find_image(const char *env, const char *const *paths, size_t n)
{
	const char *e = getenv(env);
	struct stat st;

	if (e && *e)
		return e;
	for (size_t i = 0; i < n; i++)
		if (!stat(paths[i], &st) && S_ISREG(st.st_mode))
			return paths[i];
	return NULL;
}

static const char *const real_bzimages[] = { "guest/out/stock-vmlinuz",
					     "/var/cache/kumo/stock-vmlinuz",
					     "guest/out/test-bzImage" };
static const char *const real_vmlinuxes[] = { "guest/out/test-vmlinux" };

/* Load a real kernel into g_mem (256 MiB) and check what any x86-64 Linux must look like. */
static void load_real(const char *path, struct boot_kernel *k, int *ok)
{
	struct timespec t0, t1;
	const uint8_t *p;
	uint8_t *img;
	size_t len = 0;
	long ms;
	int ret;

	*ok = 0;
	img = read_file(path, &len);
	CHECK(img);
	CHECK_EQ(guest(256 * MiB), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = boot_load_kernel(&g_mem, img, len, k);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(img);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	fprintf(stderr, "  %s: %s, %zu bytes, protocol %x, loaded [0x%llx, 0x%llx), entry 0x%llx, "
		"%ld ms\n", path, k->format ? k->format : "?", len, k->protocol,
		(unsigned long long)k->load_start, (unsigned long long)k->load_end,
		(unsigned long long)k->entry, ms);
	CHECK_EQ(ret, 0);
	CHECK_EQ(k->has_setup_header, !!strncmp(k->format, "vmlinux", 7));
	CHECK(k->protocol >= 0x020c);
	CHECK(k->entry >= 0x1000000 && k->entry < 0x1000000 + 0x200000);
	CHECK_EQ(k->load_start, 0x1000000);
	CHECK(k->load_end > k->load_start + 8 * MiB && k->load_end < 256 * MiB);
	/* startup_64 starts with code, not zeros. */
	p = mm_gpa_to_hva(&g_mem, k->entry, 16);
	CHECK(p && (p[0] | p[1] | p[2] | p[3]));
	CHECK_EQ(boot_setup_params(&g_mem, k, "console=ttyS0", 0, 0, 0), 0);
	CHECK_EQ(boot_setup_pagetables(&g_mem), 0);
	*ok = 1;
}

static void test_real_bzimage(void)
{
	const char *path = find_image("KUMO_TEST_BZIMAGE", real_bzimages, 3);
	struct boot_kernel k;
	int ok;

	if (!path)
		SKIP("no real bzImage (KUMO_TEST_BZIMAGE, guest/out/stock-vmlinuz)");
	load_real(path, &k, &ok);
	CHECK(ok);
	CHECK(!strncmp(k.format, "bzImage/", 8));
}

static void test_real_vmlinux(void)
{
	const char *path = find_image("KUMO_TEST_VMLINUX", real_vmlinuxes, 1);
	struct boot_kernel k;
	int ok;

	if (!path)
		SKIP("no real vmlinux (KUMO_TEST_VMLINUX, guest/out/test-vmlinux)");
	load_real(path, &k, &ok);
	CHECK(ok);
	CHECK(!strcmp(k.format, "vmlinux"));
}

/* guest/build.sh makes test-bzImage and test-vmlinux from one build: same bytes in RAM. */
static void test_real_pair(void)
{
	struct boot_kernel kb, kv;
	uint8_t *ram;
	int ok;

	if (access("guest/out/test-bzImage", R_OK) || access("guest/out/test-vmlinux", R_OK))
		SKIP("no guest/out/test-bzImage + test-vmlinux pair");
	load_real("guest/out/test-bzImage", &kb, &ok);
	CHECK(ok);
	ram = malloc(kb.load_end - kb.load_start);
	memcpy(ram, mm_gpa_to_hva(&g_mem, kb.load_start, kb.load_end - kb.load_start),
	       kb.load_end - kb.load_start);
	load_real("guest/out/test-vmlinux", &kv, &ok);
	if (ok && (kv.load_start != kb.load_start || kv.load_end != kb.load_end ||
		   kv.entry != kb.entry ||
		   memcmp(ram, mm_gpa_to_hva(&g_mem, kv.load_start, kv.load_end - kv.load_start),
			  kv.load_end - kv.load_start))) {
		fprintf(stderr, "  test-bzImage and test-vmlinux load differently (rebuilt apart?)\n");
		ok = 0;
	}
	free(ram);
	CHECK(ok);
}

/* Seeds for tests/fuzz/fuzz-boot: small versions of the images above, written on request. */
static void test_write_seeds(void)
{
	const char *dir = getenv("KUMO_WRITE_SEEDS");
	char path[4096];
	struct elf_img e;
	FILE *f;

	if (!dir)
		SKIP("set KUMO_WRITE_SEEDS=dir to write fuzzing seeds");
	build_elf(&e, 0x400);
	snprintf(path, sizeof(path), "%s/vmlinux", dir);
	f = fopen(path, "wb");
	CHECK(f);
	fwrite(e.buf, 1, e.len, f);
	fclose(f);
	for (int c = GZIP; c <= LZ4; c++) {
		struct blob z = compress_with((enum codec)c, e.buf, e.len), bz;

		bz = build_bzimage(&z, 0x020f);
		snprintf(path, sizeof(path), "%s/%s", dir, codec_format[c] + 8);
		f = fopen(path, "wb");
		CHECK(f);
		fwrite(bz.p, 1, bz.len, f);
		fclose(f);
		free(z.p);
		free(bz.p);
	}
	free(e.buf);
}

static void test_cleanup(void)
{
	mm_free(&g_mem);
}

TEST_MAIN(TEST(test_elf_load), TEST(test_bz_gzip), TEST(test_bz_xz), TEST(test_bz_zstd),
	  TEST(test_bz_lz4), TEST(test_bz_lz4_variants), TEST(test_bz_corrupt),
	  TEST(test_bz_unsupported), TEST(test_bz_truncated), TEST(test_not_kernel),
	  TEST(test_elf_hostile), TEST(test_bz_bomb), TEST(test_initrd), TEST(test_layout_only),
	  TEST(test_parse_then_place), TEST(test_guest_decompresses),
	  TEST(test_vm_boot_load), TEST(test_e820),
	  TEST(test_zero_page), TEST(test_cmdline_too_long), TEST(test_pagetables),
	  TEST(test_strerror), TEST(test_real_bzimage), TEST(test_real_vmlinux),
	  TEST(test_real_pair), TEST(test_write_seeds), TEST(test_cleanup))
