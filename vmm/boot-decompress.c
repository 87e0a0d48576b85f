/*
 * Decompression of a bzImage payload on the host, in the formats the kernel's build writes:
 * gzip, xz (with the x86 BCJ filter), zstd and LZ4 in the legacy "lz4 -l" framing. All but gzip
 * are followed by the uncompressed size as le32, which serves here only as a size hint.
 * The input is hostile: every decoder is bounded by max_out and stops at the end of input.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "vmm/boot-decompress.h"

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

static int inflate_gzip(const uint8_t *in, size_t len, struct outbuf *ob)
{
	z_stream z;
	int ret, r;

	if (len > UINT_MAX)
		return -EBADMSG;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) /* 16+: gzip wrapper only */
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
		r = inflate(&z, Z_NO_FLUSH);
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
	inflateEnd(&z);
	return ret;
}

static int decode_xz(const uint8_t *in, size_t len, struct outbuf *ob)
{
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_ret r;
	int ret;

	/* Not LZMA_CONCATENATED: decoding stops at the end of the stream, before the size. */
	if (lzma_stream_decoder(&s, XZ_MEMLIMIT, 0) != LZMA_OK)
		return -ENOMEM;
	s.next_in = in;
	s.avail_in = len;
	for (;;) {
		if (ob->len == ob->cap && (ret = ob_grow(ob)))
			break;
		s.next_out = ob->p + ob->len;
		s.avail_out = ob->cap - ob->len;
		r = lzma_code(&s, LZMA_FINISH);
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
	lzma_end(&s);
	return ret;
}

static int decode_zstd(const uint8_t *in, size_t len, struct outbuf *ob)
{
	ZSTD_inBuffer ib = { in, len, 0 };
	ZSTD_DCtx *d = ZSTD_createDCtx();
	int ret;

	if (!d)
		return -ENOMEM;
	if (ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) {
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
		r = ZSTD_decompressStream(d, &obuf, &ib);
		ob->len += obuf.pos;
		if (ZSTD_isError(r)) {
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
	ZSTD_freeDCtx(d);
	return ret;
}

/*
 * Legacy framing: magic, then [le32 compressed size][block] until the input ends. The kernel
 * appends the uncompressed size as le32, which reads as an implausible or overlong block size:
 * that, or fewer than 4 bytes left, ends the stream. A repeated magic starts a new frame.
 */
static int decode_lz4_legacy(const uint8_t *in, size_t len, struct outbuf *ob)
{
	const size_t bound = (size_t)LZ4_compressBound(LZ4_LEGACY_BLOCK);
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
		n = LZ4_decompress_safe((const char *)in + pos, (char *)ob->p + ob->len, (int)csize,
					(int)room);
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
	switch (c) {
	case COMP_GZIP: ret = inflate_gzip(in, len, &ob); break;
	case COMP_XZ: ret = decode_xz(in, len, &ob); break;
	case COMP_ZSTD: ret = decode_zstd(in, len, &ob); break;
	case COMP_LZ4: ret = decode_lz4_legacy(in, len, &ob); break;
	default: ret = -EBADMSG; break;
	}
	if (ret) {
		free(ob.p);
		return ret;
	}
	*out = ob.p;
	*out_len = ob.len;
	return 0;
}
