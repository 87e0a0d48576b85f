/* AML writer: encodings from ACPI 6.5 chapter 20 (AML) and 6.4 (resource descriptors). */
#include <errno.h>
#include <string.h>

#include "vmm/aml.h"

#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0A
#define AML_WORD_PREFIX 0x0B
#define AML_DWORD_PREFIX 0x0C
#define AML_STRING_PREFIX 0x0D
#define AML_QWORD_PREFIX 0x0E
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_METHOD_OP 0x14
#define AML_DUAL_NAME_PREFIX 0x2E
#define AML_MULTI_NAME_PREFIX 0x2F
#define AML_EXT_OP_PREFIX 0x5B
#define AML_DEVICE_OP 0x82 /* after 0x5B */
#define AML_ROOT_CHAR '\\'
#define AML_PARENT_CHAR '^'
#define AML_RETURN_OP 0xA4
#define AML_ONES_OP 0xFF

enum { OPEN_PKG, OPEN_BUFFER };

void aml_init(struct aml *a, void *buf, size_t cap)
{
	memset(a, 0, sizeof(*a));
	a->buf = buf;
	a->cap = cap;
}

static void aml_fail(struct aml *a, int err)
{
	if (!a->err)
		a->err = err;
}

long aml_finish(struct aml *a)
{
	if (!a->err && a->depth)
		a->err = -EINVAL;
	return a->err ? a->err : (long)a->len;
}

static uint8_t *aml_reserve(struct aml *a, size_t n)
{
	uint8_t *p;

	if (a->err)
		return NULL;
	if (n > a->cap - a->len) {
		aml_fail(a, -E2BIG);
		return NULL;
	}
	p = a->buf + a->len;
	a->len += n;
	return p;
}

void aml_bytes(struct aml *a, const void *data, size_t n)
{
	uint8_t *p = aml_reserve(a, n);

	if (p && n)
		memcpy(p, data, n);
}

void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void aml_le(struct aml *a, uint64_t v, unsigned int n)
{
	uint8_t b[8];

	for (unsigned int i = 0; i < n; i++)
		b[i] = v >> (8 * i);
	aml_bytes(a, b, n);
}

unsigned int aml_pkglen_encode(uint32_t value, uint8_t out[4])
{
	unsigned int n;

	if (value <= 0x3F) {
		out[0] = value;
		return 1;
	}
	if (value <= 0xFFF)
		n = 2;
	else if (value <= 0xFFFFF)
		n = 3;
	else if (value <= AML_PKGLEN_MAX)
		n = 4;
	else
		return 0;
	/* Lead byte: bits 7-6 = count of following bytes, bits 3-0 = least significant nibble. */
	out[0] = ((n - 1) << 6) | (value & 0xF);
	for (unsigned int i = 1; i < n; i++)
		out[i] = value >> (4 + 8 * (i - 1));
	return n;
}

/* Encoding of an integer into tmp (at most 9 bytes); returns its length. */
static unsigned int aml_integer_encode(uint64_t v, uint8_t *tmp)
{
	unsigned int n, w;

	if (v == 0 || v == 1) {
		tmp[0] = v ? AML_ONE : AML_ZERO;
		return 1;
	}
	if (v == UINT64_MAX) {
		tmp[0] = AML_ONES_OP;
		return 1;
	}
	if (v <= 0xFF) {
		tmp[0] = AML_BYTE_PREFIX;
		w = 1;
	} else if (v <= 0xFFFF) {
		tmp[0] = AML_WORD_PREFIX;
		w = 2;
	} else if (v <= 0xFFFFFFFF) {
		tmp[0] = AML_DWORD_PREFIX;
		w = 4;
	} else {
		tmp[0] = AML_QWORD_PREFIX;
		w = 8;
	}
	for (n = 0; n < w; n++)
		tmp[1 + n] = v >> (8 * n);
	return 1 + w;
}

void aml_integer(struct aml *a, uint64_t v)
{
	uint8_t tmp[9];

	aml_bytes(a, tmp, aml_integer_encode(v, tmp));
}

void aml_string(struct aml *a, const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c > 0x7F) { /* AsciiCharList: 0x01-0x7F */
			aml_fail(a, -EINVAL);
			return;
		}
	}
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1);
}

static int aml_lead_char(char c)
{
	return (c >= 'A' && c <= 'Z') || c == '_';
}

static int aml_name_char(char c)
{
	return aml_lead_char(c) || (c >= '0' && c <= '9');
}

void aml_namestring(struct aml *a, const char *path)
{
	uint8_t segs[255][4];
	unsigned int nsegs = 0, i;
	const char *p = path;

	if (*p == AML_ROOT_CHAR)
		aml_byte(a, *p++);
	else
		while (*p == AML_PARENT_CHAR)
			aml_byte(a, *p++);
	for (;;) {
		if (nsegs == 255 || !aml_lead_char(*p)) {
			aml_fail(a, -EINVAL);
			return;
		}
		for (i = 0; i < 4 && aml_name_char(*p); i++)
			segs[nsegs][i] = *p++;
		for (; i < 4; i++)
			segs[nsegs][i] = '_';
		nsegs++;
		if (*p == '\0')
			break;
		if (*p++ != '.') {
			aml_fail(a, -EINVAL);
			return;
		}
	}
	if (nsegs == 2) {
		aml_byte(a, AML_DUAL_NAME_PREFIX);
	} else if (nsegs > 2) {
		aml_byte(a, AML_MULTI_NAME_PREFIX);
		aml_byte(a, nsegs);
	}
	aml_bytes(a, segs, 4 * nsegs);
}

uint32_t aml_eisaid_value(const char *id)
{
	uint32_t v = 0;

	if (strlen(id) != 7)
		return 0;
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			return 0;
		v = (v << 5) | (id[i] - 0x40);
	}
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		unsigned int d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return 0;
		v = (v << 4) | d;
	}
	/* The 15 bits of letters and 16 of product id read as big-endian bytes in memory. */
	return __builtin_bswap32(v);
}

void aml_eisaid(struct aml *a, const char *id)
{
	uint32_t v = aml_eisaid_value(id);

	if (!v) {
		aml_fail(a, -EINVAL);
		return;
	}
	/* Always a DWordConst, as iasl writes it. */
	aml_byte(a, AML_DWORD_PREFIX);
	aml_le(a, v, 4);
}

void aml_name(struct aml *a, const char *name)
{
	aml_byte(a, AML_NAME_OP);
	aml_namestring(a, name);
}

void aml_name_integer(struct aml *a, const char *name, uint64_t v)
{
	aml_name(a, name);
	aml_integer(a, v);
}

void aml_name_string(struct aml *a, const char *name, const char *s)
{
	aml_name(a, name);
	aml_string(a, s);
}

void aml_name_eisaid(struct aml *a, const char *name, const char *id)
{
	aml_name(a, name);
	aml_eisaid(a, id);
}

static void aml_open(struct aml *a, int kind)
{
	if (a->depth == AML_MAX_DEPTH) {
		aml_fail(a, -EINVAL);
		return;
	}
	a->open[a->depth].at = a->len;
	a->open[a->depth].kind = kind;
	a->depth++;
}

void aml_scope_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_SCOPE_OP);
	aml_open(a, OPEN_PKG);
	aml_namestring(a, name);
}

void aml_device_begin(struct aml *a, const char *name)
{
	aml_byte(a, AML_EXT_OP_PREFIX);
	aml_byte(a, AML_DEVICE_OP);
	aml_open(a, OPEN_PKG);
	aml_namestring(a, name);
}

void aml_method_begin(struct aml *a, const char *name, unsigned int nargs)
{
	if (nargs > 7) {
		aml_fail(a, -EINVAL);
		return;
	}
	aml_byte(a, AML_METHOD_OP);
	aml_open(a, OPEN_PKG);
	aml_namestring(a, name);
	aml_byte(a, nargs); /* MethodFlags: NotSerialized, SyncLevel 0 */
}

void aml_return_integer(struct aml *a, uint64_t v)
{
	aml_byte(a, AML_RETURN_OP);
	aml_integer(a, v);
}

void aml_package_begin(struct aml *a, unsigned int nelems)
{
	if (nelems > 255) { /* VarPackage would be needed */
		aml_fail(a, -EINVAL);
		return;
	}
	aml_byte(a, AML_PACKAGE_OP);
	aml_open(a, OPEN_PKG);
	aml_byte(a, nelems);
}

void aml_buffer_begin(struct aml *a)
{
	aml_byte(a, AML_BUFFER_OP);
	aml_open(a, OPEN_BUFFER);
}

void aml_end(struct aml *a)
{
	uint8_t pkg[4], size[9];
	unsigned int npkg = 0, nsize = 0;
	size_t at, body;
	uint64_t total;

	if (!a->depth) {
		aml_fail(a, -EINVAL);
		return;
	}
	a->depth--;
	if (a->err)
		return;
	at = a->open[a->depth].at;
	body = a->len - at;
	if (a->open[a->depth].kind == OPEN_BUFFER)
		nsize = aml_integer_encode(body, size);
	/* The PkgLength counts its own bytes, so its size depends on itself: try 1..4. */
	for (npkg = 1; npkg <= 4; npkg++) {
		total = (uint64_t)body + nsize + npkg;
		if (total <= AML_PKGLEN_MAX && aml_pkglen_encode(total, pkg) == npkg)
			break;
	}
	if (npkg > 4) {
		aml_fail(a, -E2BIG);
		return;
	}
	if (!aml_reserve(a, npkg + nsize))
		return;
	memmove(a->buf + at + npkg + nsize, a->buf + at, body);
	memcpy(a->buf + at, pkg, npkg);
	memcpy(a->buf + at + npkg, size, nsize);
}

void aml_buffer(struct aml *a, const void *data, size_t n)
{
	aml_buffer_begin(a);
	aml_bytes(a, data, n);
	aml_end(a);
}

void aml_restemplate_begin(struct aml *a)
{
	aml_buffer_begin(a);
}

void aml_restemplate_end(struct aml *a)
{
	uint8_t sum = 0;
	size_t start;

	if (!a->depth || a->open[a->depth - 1].kind != OPEN_BUFFER) {
		aml_fail(a, -EINVAL);
		return;
	}
	aml_byte(a, 0x79); /* EndTag, then a checksum making the whole template sum to 0 */
	if (a->err)
		return;
	start = a->open[a->depth - 1].at;
	for (size_t i = start; i < a->len; i++)
		sum += a->buf[i];
	aml_byte(a, -sum);
	aml_end(a);
}

void aml_io(struct aml *a, uint16_t base, uint8_t len)
{
	aml_byte(a, 0x47); /* small item 0x08, length 7 */
	aml_byte(a, 0x01); /* decodes 16 bits */
	aml_le(a, base, 2);
	aml_le(a, base, 2);
	aml_byte(a, 1); /* alignment */
	aml_byte(a, len);
}

void aml_irq(struct aml *a, unsigned int irq)
{
	if (irq > 15) {
		aml_fail(a, -EINVAL);
		return;
	}
	aml_byte(a, 0x22); /* small item 0x04, length 2: edge, active high, exclusive */
	aml_le(a, 1u << irq, 2);
}

void aml_interrupt(struct aml *a, unsigned int flags, uint32_t gsi)
{
	uint8_t f = 0x01; /* consumer */

	if (!(flags & AML_INT_LEVEL))
		f |= 1 << 1;
	if (flags & AML_INT_ACTIVE_LOW)
		f |= 1 << 2;
	if (flags & AML_INT_SHARED)
		f |= 1 << 3;
	aml_byte(a, 0x89); /* large item 0x09 */
	aml_le(a, 6, 2);
	aml_byte(a, f);
	aml_byte(a, 1);
	aml_le(a, gsi, 4);
}

enum { SPACE_MEM = 0, SPACE_IO = 1, SPACE_BUS = 2 };
/* General flags: producer, positive decode, min and max fixed. */
#define ADDR_GFLAGS 0x0C

/*
 * Word/DWord/QWord address space descriptor with granularity 0, no translation and
 * length = max - min + 1, as the spec requires for a fixed window.
 */
static void aml_address(struct aml *a, uint8_t tag, unsigned int w, uint8_t space,
			uint8_t tflags, uint64_t min, uint64_t max)
{
	if (max < min) {
		aml_fail(a, -EINVAL);
		return;
	}
	aml_byte(a, tag);
	aml_le(a, 3 + 5 * w, 2);
	aml_byte(a, space);
	aml_byte(a, ADDR_GFLAGS);
	aml_byte(a, tflags);
	aml_le(a, 0, w);
	aml_le(a, min, w);
	aml_le(a, max, w);
	aml_le(a, 0, w);
	aml_le(a, max - min + 1, w);
}

void aml_word_bus_number(struct aml *a, uint16_t min, uint16_t max)
{
	aml_address(a, 0x88, 2, SPACE_BUS, 0, min, max);
}

void aml_word_io(struct aml *a, uint16_t min, uint16_t max)
{
	aml_address(a, 0x88, 2, SPACE_IO, 0x03 /* ISA and non-ISA ranges */, min, max);
}

void aml_dword_memory(struct aml *a, unsigned int cache, uint32_t min, uint32_t max)
{
	aml_address(a, 0x87, 4, SPACE_MEM, 0x01 /* read-write */ | (cache & 3) << 1, min, max);
}

void aml_qword_memory(struct aml *a, unsigned int cache, uint64_t min, uint64_t max)
{
	if (min == 0 && max == UINT64_MAX) { /* length would not fit */
		aml_fail(a, -EINVAL);
		return;
	}
	aml_address(a, 0x8A, 8, SPACE_MEM, 0x01 | (cache & 3) << 1, min, max);
}

void aml_memory32_fixed(struct aml *a, uint32_t base, uint32_t len)
{
	aml_byte(a, 0x86); /* large item 0x06 */
	aml_le(a, 9, 2);
	aml_byte(a, 0x01); /* read-write */
	aml_le(a, base, 4);
	aml_le(a, len, 4);
}
