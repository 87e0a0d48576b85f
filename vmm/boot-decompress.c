/*
 * Decompression of a bzImage payload on the host, in the formats the kernel's build writes:
 * gzip, xz (with the x86 BCJ filter), zstd and LZ4 in the legacy "lz4 -l" framing. All but gzip
 * are followed by the uncompressed size as le32, which serves here only as a size hint.
 * The input is hostile: every decoder is bounded by max_out and stops at the end of input.
 *
 * The decoders' libraries are not linked: boot_decompress() dlopens the one the payload needs,
 * calls it through pointers of its header's types, and dlcloses it, so none stays mapped in a
 * running VMM (docs/dependencies.md). kumo run decompresses at setup, before any seccomp filter.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "vmm/boot-decompress.h"
#include "vmm/log.h"

#define LZ4_LEGACY_MAGIC 0x184C2102u
#define LZ4_LEGACY_BLOCK (8u << 20) /* uncompressed size of a legacy block, "lz4 -l" */
#define ZSTD_WINDOW_LOG_MAX 27	    /* 128 MiB: what zstd -22 uses; bounds the decoder's memory */
#define XZ_MEMLIMIT (256ULL << 20)
#define OUT_DEFAULT_CAP (16u << 20)
#define OUT_HINT_SLACK (64u << 10)

enum comp { COMP_NONE, COMP_GZIP, COMP_XZ, COMP_ZSTD, COMP_LZ4, COMP_UNSUPPORTED };

struct outbuf {
	uint8_t *p;
	size_t len, cap, max;
};

/* The one decoder library in use, dlopen'ed for one boot_decompress() call. */
struct codec {
	void *h;
	union {
		struct {
			typeof(inflateInit2_) *init;
			typeof(inflate) *inflate;
			typeof(inflateEnd) *end;
		} z;
		struct {
			typeof(lzma_stream_decoder) *decoder;
			typeof(lzma_code) *code;
			typeof(lzma_end) *end;
		} xz;
		struct {
			typeof(ZSTD_createDCtx) *create;
			typeof(ZSTD_DCtx_setParameter) *set;
			typeof(ZSTD_decompressStream) *stream;
			typeof(ZSTD_isError) *is_error;
			typeof(ZSTD_freeDCtx) *free;
		} zstd;
		struct {
			typeof(LZ4_decompress_safe) *decompress_safe;
		} lz4;
	};
};

static const char *const codec_soname[] = {
	[COMP_GZIP] = "libz.so.1",
	[COMP_XZ] = "liblzma.so.5",
	[COMP_ZSTD] = "libzstd.so.1",
	[COMP_LZ4] = "liblz4.so.1",
};

static void *sym(struct codec *c, const char *name, int *missing)
{
	void *p = dlsym(c->h, name);

	if (!p)
		*missing = 1;
	return p;
}

/*
 * Opens the library for comp and resolves what its decoder calls: 0, or -ELIBACC (not
 * installed) / -ELIBBAD (a symbol missing), said on stderr with the library's name.
 */
static int codec_open(struct codec *c, enum comp comp, const char *name)
{
	const char *soname = codec_soname[comp], *e;
	int missing = 0;

	memset(c, 0, sizeof(*c));
	c->h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!c->h) {
		e = dlerror();
		pr_err("bzImage: a %s payload needs %s: %s", name, soname, e ? e : "cannot load");
		return -ELIBACC;
	}
	switch (comp) {
	case COMP_GZIP:
		c->z.init = (typeof(inflateInit2_) *)sym(c, "inflateInit2_", &missing);
		c->z.inflate = (typeof(inflate) *)sym(c, "inflate", &missing);
		c->z.end = (typeof(inflateEnd) *)sym(c, "inflateEnd", &missing);
		break;
	case COMP_XZ:
		c->xz.decoder = (typeof(lzma_stream_decoder) *)sym(c, "lzma_stream_decoder", &missing);
		c->xz.code = (typeof(lzma_code) *)sym(c, "lzma_code", &missing);
		c->xz.end = (typeof(lzma_end) *)sym(c, "lzma_end", &missing);
		break;
	case COMP_ZSTD:
		c->zstd.create = (typeof(ZSTD_createDCtx) *)sym(c, "ZSTD_createDCtx", &missing);
		c->zstd.set = (typeof(ZSTD_DCtx_setParameter) *)sym(c, "ZSTD_DCtx_setParameter",
								    &missing);
		c->zstd.stream = (typeof(ZSTD_decompressStream) *)sym(c, "ZSTD_decompressStream",
								      &missing);
		c->zstd.is_error = (typeof(ZSTD_isError) *)sym(c, "ZSTD_isError", &missing);
		c->zstd.free = (typeof(ZSTD_freeDCtx) *)sym(c, "ZSTD_freeDCtx", &missing);
		break;
	case COMP_LZ4:
		c->lz4.decompress_safe = (typeof(LZ4_decompress_safe) *)sym(c, "LZ4_decompress_safe",
									    &missing);
		break;
	default:
		missing = 1;
		break;
	}
	if (missing) {
		pr_err("bzImage: %s lacks the %s decoder's functions", soname, name);
		dlclose(c->h);
		c->h = NULL;
		return -ELIBBAD;
	}
	return 0;
}

static void codec_close(struct codec *c)
{
	if (c->h)
		dlclose(c->h);
	c->h = NULL;
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static enum comp detect(const uint8_t *in, size_t len, const char **name)
{
	static const struct {
		const char *magic;
		size_t len;
		enum comp comp;
		const char *name;
	} tab[] = {
		{ "\x1f\x8b", 2, COMP_GZIP, "gzip" },
		{ "\xfd" "7zXZ\0", 6, COMP_XZ, "xz" },
		{ "\x28\xb5\x2f\xfd", 4, COMP_ZSTD, "zstd" },
		{ "\x02\x21\x4c\x18", 4, COMP_LZ4, "lz4" },
		{ "BZh", 3, COMP_UNSUPPORTED, "bzip2" },
		{ "\x5d\0\0", 3, COMP_UNSUPPORTED, "lzma" },
		{ "\x89LZO", 4, COMP_UNSUPPORTED, "lzo" },
		{ "\x04\x22\x4d\x18", 4, COMP_UNSUPPORTED, "lz4-frame" },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (len >= tab[i].len && !memcmp(in, tab[i].magic, tab[i].len)) {
			*name = tab[i].name;
			return tab[i].comp;
		}
	}
	*name = NULL;
	return COMP_NONE;
}

const char *boot_compression_name(const uint8_t *in, size_t len)
{
	const char *name;

	detect(in, len, &name);
	return name;
}

/* Start with the size the trailer claims (if believable) so a real kernel needs no realloc. */
static int ob_init(struct outbuf *ob, const uint8_t *in, size_t len, size_t max)
{
	size_t hint = len >= 4 ? get_le32(in + len - 4) : 0;

	ob->len = 0;
	ob->max = max;
	if (hint && max > OUT_HINT_SLACK && hint <= max - OUT_HINT_SLACK)
		ob->cap = hint + OUT_HINT_SLACK;
	else
		ob->cap = max < OUT_DEFAULT_CAP ? max : OUT_DEFAULT_CAP;
	if (!ob->cap)
		return -E2BIG;
	ob->p = malloc(ob->cap);
	return ob->p ? 0 : -ENOMEM;
}

static int ob_grow(struct outbuf *ob)
{
	size_t cap = ob->cap > ob->max / 2 ? ob->max : ob->cap * 2;
	uint8_t *p;

	if (ob->cap >= ob->max)
		return -E2BIG;
	p = realloc(ob->p, cap);
	if (!p)
		return -ENOMEM;
	ob->p = p;
	ob->cap = cap;
	return 0;
}

static int inflate_gzip(const struct codec *c, const uint8_t *in, size_t len, struct outbuf *ob)
{
	z_stream z;
	int ret, r;

	if (len > UINT_MAX)
		return -EBADMSG;
	memset(&z, 0, sizeof(z));
	/* inflateInit2() as zlib.h defines it; 16+: gzip wrapper only */
	if (c->z.init(&z, 16 + MAX_WBITS, ZLIB_VERSION, (int)sizeof(z)) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	for (;;) {
		size_t room;

		if (ob->len == ob->cap && (ret = ob_grow(ob)))
			break;
		room = ob->cap - ob->len;
		z.next_out = ob->p + ob->len;
		z.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
		r = c->z.inflate(&z, Z_NO_FLUSH);
		ob->len = (size_t)(z.next_out - ob->p);
		if (r == Z_STREAM_END) {
			ret = 0;
			break;
		}
		if (r == Z_OK || (r == Z_BUF_ERROR && !z.avail_out))
			continue;
		/* Z_BUF_ERROR with room left: the input ended inside the stream. */
		ret = r == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
		break;
	}
	c->z.end(&z);
	return ret;
}

static int decode_xz(const struct codec *c, const uint8_t *in, size_t len, struct outbuf *ob)
{
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_ret r;
	int ret;

	/* Not LZMA_CONCATENATED: decoding stops at the end of the stream, before the size. */
	if (c->xz.decoder(&s, XZ_MEMLIMIT, 0) != LZMA_OK)
		return -ENOMEM;
	s.next_in = in;
	s.avail_in = len;
	for (;;) {
		if (ob->len == ob->cap && (ret = ob_grow(ob)))
			break;
		s.next_out = ob->p + ob->len;
		s.avail_out = ob->cap - ob->len;
		r = c->xz.code(&s, LZMA_FINISH);
		ob->len = (size_t)(s.next_out - ob->p);
		if (r == LZMA_STREAM_END) {
			ret = 0;
			break;
		}
		if (r == LZMA_OK || (r == LZMA_BUF_ERROR && !s.avail_out))
			continue;
		ret = r == LZMA_MEM_ERROR ? -ENOMEM : -EBADMSG;
		break;
	}
	c->xz.end(&s);
	return ret;
}

static int decode_zstd(const struct codec *c, const uint8_t *in, size_t len, struct outbuf *ob)
{
	ZSTD_inBuffer ib = { in, len, 0 };
	ZSTD_DCtx *d = c->zstd.create();
	int ret;

	if (!d)
		return -ENOMEM;
	if (c->zstd.is_error(c->zstd.set(d, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		ZSTD_outBuffer obuf;
		size_t r;

		if (ob->len == ob->cap && (ret = ob_grow(ob)))
			break;
		obuf.dst = ob->p + ob->len;
		obuf.size = ob->cap - ob->len;
		obuf.pos = 0;
		r = c->zstd.stream(d, &obuf, &ib);
		ob->len += obuf.pos;
		if (c->zstd.is_error(r)) {
			ret = -EBADMSG;
			break;
		}
		if (r == 0) { /* one frame done; what follows is the size trailer */
			ret = 0;
			break;
		}
		if (ib.pos == ib.size && obuf.pos < obuf.size) {
			ret = -EBADMSG; /* truncated frame */
			break;
		}
	}
out:
	c->zstd.free(d);
	return ret;
}

/*
 * Legacy framing: magic, then [le32 compressed size][block] until the input ends. The kernel
 * appends the uncompressed size as le32, which reads as an implausible or overlong block size:
 * that, or fewer than 4 bytes left, ends the stream. A repeated magic starts a new frame.
 */
static int decode_lz4_legacy(const struct codec *c, const uint8_t *in, size_t len,
			     struct outbuf *ob)
{
	const size_t bound = (size_t)LZ4_COMPRESSBOUND(LZ4_LEGACY_BLOCK);
	size_t pos = 4;
	int blocks = 0;

	while (len - pos >= 4) {
		uint32_t csize = get_le32(in + pos);
		size_t room;
		int n;

		if (csize == LZ4_LEGACY_MAGIC) {
			pos += 4;
			continue;
		}
		if (!csize || csize > bound || csize > len - pos - 4)
			break;
		pos += 4;
		while (ob->cap - ob->len < LZ4_LEGACY_BLOCK && ob->cap < ob->max) {
			int ret = ob_grow(ob);

			if (ret)
				return ret;
		}
		room = ob->cap - ob->len;
		if (room > LZ4_LEGACY_BLOCK)
			room = LZ4_LEGACY_BLOCK;
		n = c->lz4.decompress_safe((const char *)in + pos, (char *)ob->p + ob->len,
					   (int)csize, (int)room);
		if (n < 0)
			return room < LZ4_LEGACY_BLOCK ? -E2BIG : -EBADMSG;
		ob->len += (size_t)n;
		pos += csize;
		blocks++;
	}
	return blocks ? 0 : -EBADMSG;
}

int boot_decompress(const uint8_t *in, size_t len, size_t max_out, uint8_t **out,
		    size_t *out_len)
{
	struct outbuf ob;
	struct codec lib;
	const char *name;
	enum comp c = detect(in, len, &name);
	int ret;

	*out = NULL;
	*out_len = 0;
	if (c == COMP_NONE || c == COMP_UNSUPPORTED)
		return -EBADMSG;
	ret = ob_init(&ob, in, len, max_out);
	if (ret)
		return ret;
	ret = codec_open(&lib, c, name);
	if (ret) {
		free(ob.p);
		return ret;
	}
	switch (c) {
	case COMP_GZIP: ret = inflate_gzip(&lib, in, len, &ob); break;
	case COMP_XZ: ret = decode_xz(&lib, in, len, &ob); break;
	case COMP_ZSTD: ret = decode_zstd(&lib, in, len, &ob); break;
	case COMP_LZ4: ret = decode_lz4_legacy(&lib, in, len, &ob); break;
	default: ret = -EBADMSG; break;
	}
	codec_close(&lib);	/* nothing of the library stays mapped */
	if (ret) {
		free(ob.p);
		return ret;
	}
	*out = ob.p;
	*out_len = ob.len;
	return 0;
}
