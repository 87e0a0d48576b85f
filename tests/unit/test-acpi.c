/* ACPI tables and the AML writer: layouts at spec offsets, checksums, limits, iasl round trip. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, mkdtemp */
#endif
#include <errno.h>
#include <unistd.h>

#include "tests/harness.h"
#include "vmm/acpi.h"
#include "vmm/aml.h"
#include "vmm/layout.h"

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static uint8_t sum8(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s += *p++;
	return s;
}

/* ---- AML ---- */

/* Independent PkgLength decoder: returns the value, *n = bytes used. */
static uint32_t pkglen_decode(const uint8_t *p, unsigned int *n)
{
	unsigned int follow = p[0] >> 6;
	uint32_t v;

	*n = 1 + follow;
	if (!follow)
		return p[0] & 0x3f;
	v = p[0] & 0x0f;
	for (unsigned int i = 1; i <= follow; i++)
		v |= (uint32_t)p[i] << (4 + 8 * (i - 1));
	return v;
}

static void test_aml_pkglen_encode(void)
{
	static const struct { uint32_t v; unsigned int n; uint8_t b[4]; } cases[] = {
		{ 0, 1, { 0x00 } },
		{ 63, 1, { 0x3f } },
		{ 64, 2, { 0x40, 0x04 } },
		{ 4095, 2, { 0x4f, 0xff } },
		{ 4096, 3, { 0x80, 0x00, 0x01 } },
		{ 0xfffff, 3, { 0x8f, 0xff, 0xff } },
		{ 0x100000, 4, { 0xc0, 0x00, 0x00, 0x01 } }, /* 1 MiB */
		{ 0xfffffff, 4, { 0xcf, 0xff, 0xff, 0xff } },
	};
	uint8_t out[4];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned int n, dn;

		n = aml_pkglen_encode(cases[i].v, out);
		CHECK_EQ(n, cases[i].n);
		CHECK(!memcmp(out, cases[i].b, n));
		CHECK_EQ(pkglen_decode(out, &dn), cases[i].v);
		CHECK_EQ(dn, n);
	}
	CHECK_EQ(aml_pkglen_encode(0x10000000, out), 0);
}

/* A Package whose body (NumElements + raw bytes) is body bytes long, fixed up at aml_end(). */
static void check_package_body(size_t body, unsigned int want_n)
{
	size_t cap = body + 16;
	uint8_t *buf = malloc(cap), *raw = calloc(1, body);
	struct aml a;
	unsigned int n;
	long len;

	CHECK(buf && raw);
	aml_init(&a, buf, cap);
	aml_package_begin(&a, 0);
	aml_bytes(&a, raw, body - 1);
	aml_end(&a);
	len = aml_finish(&a);
	CHECK_EQ(len, 1 + want_n + body);
	CHECK_EQ(buf[0], 0x12);
	CHECK_EQ(pkglen_decode(buf + 1, &n), want_n + body);
	CHECK_EQ(n, want_n);
	CHECK_EQ(buf[1 + n], 0); /* NumElements survived the move */
	free(buf);
	free(raw);
}

static void test_aml_pkglen_fixup(void)
{
	/* The PkgLength counts itself: body 62 + 1 = 63 fits one byte, body 63 needs two. */
	check_package_body(62, 1);
	if (__test_failed) return;
	check_package_body(63, 2);
	if (__test_failed) return;
	check_package_body(4093, 2);
	if (__test_failed) return;
	check_package_body(4094, 3);
	if (__test_failed) return;
	check_package_body(0xffffc, 3);
	if (__test_failed) return;
	check_package_body(0xffffd, 4);
	if (__test_failed) return;
	check_package_body(1 << 20, 4);
}

static void test_aml_integer(void)
{
	static const struct { uint64_t v; unsigned int n; uint8_t b[9]; } cases[] = {
		{ 0, 1, { 0x00 } },
		{ 1, 1, { 0x01 } },
		{ 2, 2, { 0x0a, 0x02 } },
		{ 0xff, 2, { 0x0a, 0xff } },
		{ 0x100, 3, { 0x0b, 0x00, 0x01 } },
		{ 0xffff, 3, { 0x0b, 0xff, 0xff } },
		{ 0x10000, 5, { 0x0c, 0x00, 0x00, 0x01, 0x00 } },
		{ 0xffffffff, 5, { 0x0c, 0xff, 0xff, 0xff, 0xff } },
		{ 0x100000000ull, 9, { 0x0e, 0, 0, 0, 0, 1, 0, 0, 0 } },
		{ UINT64_MAX, 1, { 0xff } },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t buf[16];
		struct aml a;

		aml_init(&a, buf, sizeof(buf));
		aml_integer(&a, cases[i].v);
		CHECK_EQ(aml_finish(&a), cases[i].n);
		CHECK(!memcmp(buf, cases[i].b, cases[i].n));
	}
}

static void test_aml_namestring(void)
{
	static const struct { const char *in; size_t n; const char *out; } cases[] = {
		{ "_HID", 4, "_HID" },
		{ "RTC", 4, "RTC_" },
		{ "\\_SB", 5, "\\_SB_" },
		{ "\\_SB.PCI0", 10, "\\\x2e_SB_PCI0" },
		{ "^^COM1", 6, "^^COM1" },
		{ "A.B.C", 14, "\x2f\x03" "A___B___C___" },
	};
	static const char *bad[] = { "", "1ABC", "ABCDE", "a", "_SB.", "\\\\_SB", "A-B" };
	uint8_t buf[32];
	struct aml a;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		aml_init(&a, buf, sizeof(buf));
		aml_namestring(&a, cases[i].in);
		CHECK_EQ(aml_finish(&a), cases[i].n);
		CHECK(!memcmp(buf, cases[i].out, cases[i].n));
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		aml_init(&a, buf, sizeof(buf));
		aml_namestring(&a, bad[i]);
		CHECK_EQ(aml_finish(&a), -EINVAL);
	}
}

static void test_aml_eisaid_string(void)
{
	static const uint8_t hid[] = { 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03 };
	static const uint8_t str[] = { 0x0d, 'k', 'u', 'm', 'o', 0x00 };
	uint8_t buf[32];
	struct aml a;

	CHECK_EQ(aml_eisaid_value("PNP0A03"), 0x030AD041);
	CHECK_EQ(aml_eisaid_value("PNP0501"), 0x0105D041);
	CHECK_EQ(aml_eisaid_value("pnp0a03"), 0);
	CHECK_EQ(aml_eisaid_value("PNP0A0"), 0);
	CHECK_EQ(aml_eisaid_value("PNP0G03"), 0);
	aml_init(&a, buf, sizeof(buf));
	aml_name_eisaid(&a, "_HID", "PNP0A03");
	CHECK_EQ(aml_finish(&a), sizeof(hid));
	CHECK(!memcmp(buf, hid, sizeof(hid)));
	aml_init(&a, buf, sizeof(buf));
	aml_string(&a, "kumo");
	CHECK_EQ(aml_finish(&a), sizeof(str));
	CHECK(!memcmp(buf, str, sizeof(str)));
}

static void test_aml_restemplate(void)
{
	static const uint8_t want[] = {
		0x11, 0x10, 0x0a, 0x0d,				/* Buffer, PkgLength, size 13 */
		0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,	/* IO 0x3f8 len 8 */
		0x22, 0x10, 0x00,				/* IRQNoFlags {4} */
		0x79,						/* EndTag + checksum */
	};
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_restemplate_begin(&a);
	aml_io(&a, 0x3f8, 8);
	aml_irq(&a, 4);
	aml_restemplate_end(&a);
	CHECK_EQ(aml_finish(&a), sizeof(want) + 1);
	CHECK(!memcmp(buf, want, sizeof(want)));
	CHECK_EQ(sum8(buf + 4, 13), 0);

	/* Address descriptors have their fixed sizes (tag + 2 length bytes + length). */
	aml_init(&a, buf, sizeof(buf));
	aml_word_bus_number(&a, 0, 255);
	CHECK_EQ(a.len, 16);
	CHECK_EQ(buf[0], 0x88);
	CHECK_EQ(rd16(buf + 1), 13);
	CHECK_EQ(rd16(buf + 14), 256); /* length = max - min + 1 */
	aml_init(&a, buf, sizeof(buf));
	aml_dword_memory(&a, AML_MEM_NONCACHEABLE, 0xc0000000, 0xdfffffff);
	CHECK_EQ(a.len, 26);
	CHECK_EQ(rd32(buf + 22), 0x20000000);
	aml_init(&a, buf, sizeof(buf));
	aml_qword_memory(&a, AML_MEM_PREFETCHABLE, 1ull << 40, (2ull << 40) - 1);
	CHECK_EQ(a.len, 46);
	CHECK_EQ(buf[5], 0x01 | 3 << 1);
	CHECK_EQ(rd64(buf + 38), 1ull << 40);
	aml_init(&a, buf, sizeof(buf));
	aml_interrupt(&a, AML_INT_LEVEL | AML_INT_ACTIVE_LOW | AML_INT_SHARED, 20);
	CHECK_EQ(a.len, 9);
	CHECK_EQ(buf[3], 0x01 | 0x04 | 0x08);
	CHECK_EQ(rd32(buf + 5), 20);
	CHECK_EQ(aml_finish(&a), 9);
}

static void test_aml_errors(void)
{
	uint8_t buf[64];
	struct aml a;

	/* Out of room mid-way: sticky -E2BIG, never writes past cap (ASan checks the rest). */
	for (size_t cap = 0; cap < 24; cap++) {
		uint8_t *b = malloc(cap ? cap : 1);

		aml_init(&a, b, cap);
		aml_scope_begin(&a, "\\_SB");
		aml_device_begin(&a, "COM1");
		aml_name_eisaid(&a, "_HID", "PNP0501");
		aml_end(&a);
		aml_end(&a);
		free(b);
		CHECK_EQ(aml_finish(&a), -E2BIG);
	}
	aml_init(&a, buf, sizeof(buf));
	aml_scope_begin(&a, "\\_SB");
	CHECK_EQ(aml_finish(&a), -EINVAL); /* left open */
	aml_init(&a, buf, sizeof(buf));
	aml_end(&a);
	CHECK_EQ(aml_finish(&a), -EINVAL); /* nothing open */
	aml_init(&a, buf, sizeof(buf));
	aml_irq(&a, 16);
	CHECK_EQ(aml_finish(&a), -EINVAL);
	aml_init(&a, buf, sizeof(buf));
	aml_package_begin(&a, 1);
	aml_restemplate_end(&a); /* not a buffer */
	CHECK_EQ(aml_finish(&a), -EINVAL);
	aml_init(&a, buf, sizeof(buf));
	for (int i = 0; i <= AML_MAX_DEPTH; i++)
		aml_package_begin(&a, 1);
	CHECK_EQ(aml_finish(&a), -EINVAL);
}

static void test_aml_buffer_1mib(void)
{
	size_t n = 1 << 20, cap = n + 16;
	uint8_t *data = malloc(n), *buf = malloc(cap);
	struct aml a;
	unsigned int pn;

	CHECK(data && buf);
	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 7);
	aml_init(&a, buf, cap);
	aml_buffer(&a, data, n);
	/* Buffer op, 4-byte PkgLength, DWordConst size, data. */
	CHECK_EQ(aml_finish(&a), 1 + 4 + 5 + n);
	CHECK_EQ(pkglen_decode(buf + 1, &pn), 4 + 5 + n);
	CHECK_EQ(pn, 4);
	CHECK_EQ(buf[5], 0x0c);
	CHECK_EQ(rd32(buf + 6), n);
	CHECK(!memcmp(buf + 10, data, n));
	free(data);
	free(buf);
}

static void test_aml_method(void)
{
	static const uint8_t want[] = { 0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f };
	uint8_t buf[32];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_method_begin(&a, "_STA", 0);
	aml_return_integer(&a, 0x0f);
	aml_end(&a);
	CHECK_EQ(aml_finish(&a), sizeof(want));
	CHECK(!memcmp(buf, want, sizeof(want)));
}

/* ---- ACPI tables ---- */

#define TABLES_SIZE ACPI_TABLES_SIZE
static uint8_t tables[TABLES_SIZE];

struct built {
	long len;
	uint64_t gpa, rsdp;
	uint8_t *buf;
};

static long build(struct built *t, const struct acpi_config *cfg, uint64_t gpa)
{
	memset(tables, 0xa5, sizeof(tables)); /* padding must not depend on stale zeros */
	t->buf = tables;
	t->gpa = gpa;
	t->rsdp = 0;
	t->len = acpi_build(tables, sizeof(tables), gpa, cfg, &t->rsdp);
	return t->len;
}

/* Pointer to the table at guest address addr, NULL if it is not inside what was built. */
static uint8_t *at(const struct built *t, uint64_t addr, size_t min)
{
	if (addr < t->gpa || addr - t->gpa > (uint64_t)t->len || t->len - (addr - t->gpa) < min)
		return NULL;
	return t->buf + (addr - t->gpa);
}

/* A well-formed table: inside the buffer, its length fits, and it sums to 0. */
static int table_ok(const struct built *t, const uint8_t *p, const char *sig)
{
	uint32_t len;

	if (!p || memcmp(p, sig, 4))
		return 0;
	len = rd32(p + 4);
	if (len < 36 || (size_t)(p - t->buf) + len > (size_t)t->len)
		return 0;
	return sum8(p, len) == 0 && acpi_checksum(p, len) == 0;
}

static uint8_t *xsdt_of(const struct built *t)
{
	const uint8_t *r = at(t, t->rsdp, 36);

	return r ? at(t, rd64(r + 24), 36) : NULL;
}

static uint8_t *find(const struct built *t, const char *sig)
{
	uint8_t *x = xsdt_of(t);

	if (!x)
		return NULL;
	for (uint32_t off = 36; off + 8 <= rd32(x + 4); off += 8) {
		uint8_t *p = at(t, rd64(x + off), 36);

		if (p && !memcmp(p, sig, 4))
			return p;
	}
	return NULL;
}

static void test_acpi_rsdp(void)
{
	struct acpi_config cfg = { .ncpus = 1 };
	struct built t;
	const uint8_t *r;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	CHECK_EQ(t.rsdp, ACPI_TABLES_GPA); /* first in the buffer */
	r = t.buf;
	CHECK(!memcmp(r, "RSD PTR ", 8));
	CHECK(!memcmp(r + 9, "KUMO  ", 6));
	CHECK_EQ(r[15], 2);		/* revision */
	CHECK_EQ(rd32(r + 16), 0);	/* no RSDT */
	CHECK_EQ(rd32(r + 20), 36);	/* length */
	CHECK_EQ(sum8(r, 20), 0);
	CHECK_EQ(sum8(r, 36), 0);
	CHECK(table_ok(&t, xsdt_of(&t), "XSDT"));

	/* A gpa that is not 16-byte aligned: the RSDP moves to the next boundary. */
	CHECK(build(&t, &cfg, ACPI_TABLES_GPA + 8) > 0);
	CHECK_EQ(t.rsdp, ACPI_TABLES_GPA + 16);
	CHECK(table_ok(&t, xsdt_of(&t), "XSDT"));
	CHECK(table_ok(&t, find(&t, "FACP"), "FACP"));
}

static void check_all_tables(const struct acpi_config *cfg, int want_mcfg)
{
	static const char *want[] = { "FACP", "APIC", "MCFG" };
	struct built t;
	const uint8_t *x, *f, *p;
	unsigned int n;

	CHECK(build(&t, cfg, ACPI_TABLES_GPA) > 0);
	CHECK(t.len <= (long)TABLES_SIZE);
	x = xsdt_of(&t);
	CHECK(table_ok(&t, x, "XSDT"));
	CHECK_EQ(x[8], 1);
	n = (rd32(x + 4) - 36) / 8;
	CHECK_EQ(n, want_mcfg ? 3 : 2);
	CHECK_EQ(rd32(x + 4), 36 + 8 * n);
	for (unsigned int i = 0; i < n; i++) {
		p = at(&t, rd64(x + 36 + 8 * i), 36);
		CHECK(table_ok(&t, p, want[i]));
		CHECK_EQ(rd64(x + 36 + 8 * i) % 8, 0);
		CHECK(!memcmp(p + 10, "KUMO  ", 6));
		CHECK(!memcmp(p + 16, "KUMOVM  ", 8));
		CHECK(!memcmp(p + 28, "KUMO", 4));
	}
	f = find(&t, "FACP");
	CHECK(table_ok(&t, at(&t, rd32(f + 40), 36), "DSDT"));
	CHECK(table_ok(&t, at(&t, rd64(f + 140), 36), "DSDT"));
	p = at(&t, rd32(f + 36), 64);
	CHECK(p && !memcmp(p, "FACS", 4));
	CHECK_EQ(rd32(p + 4), 64);
	CHECK_EQ(rd32(f + 36) % 64, 0);
	CHECK_EQ(rd64(f + 132), 0); /* X_FIRMWARE_CTRL must be 0 when FIRMWARE_CTRL is set */
}

static void test_acpi_tables(void)
{
	struct acpi_config cfg = { .ncpus = 4 };

	check_all_tables(&cfg, 0);
	if (__test_failed) return;
	cfg.pci = 1;
	check_all_tables(&cfg, 1);
	if (__test_failed) return;
	cfg.ncpus = 300;
	cfg.pci_mmio64_base = 1ull << 44;
	cfg.pci_mmio64_size = 1ull << 40;
	check_all_tables(&cfg, 1);
}

static void test_acpi_fadt(void)
{
	struct acpi_config cfg = { .ncpus = 2 };
	struct built t;
	const uint8_t *f;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	f = find(&t, "FACP");
	CHECK(table_ok(&t, f, "FACP"));
	CHECK_EQ(rd32(f + 4), 276);
	CHECK_EQ(f[8], 6);			/* revision */
	CHECK_EQ(f[131], 5);			/* minor version: ACPI 6.5 */
	CHECK_EQ(rd32(f + 40), rd64(f + 140));	/* DSDT == X_DSDT */
	CHECK_EQ(rd16(f + 46), 9);		/* SCI_INT */
	CHECK_EQ(rd32(f + 48), 0);		/* SMI_CMD: always in ACPI mode */
	CHECK_EQ(rd32(f + 56), 0x600);		/* PM1a_EVT_BLK */
	CHECK_EQ(rd32(f + 60), 0);		/* PM1b_EVT_BLK */
	CHECK_EQ(rd32(f + 64), 0x604);		/* PM1a_CNT_BLK */
	CHECK_EQ(rd32(f + 76), 0);		/* PM_TMR_BLK */
	CHECK_EQ(f[88], 4);			/* PM1_EVT_LEN */
	CHECK_EQ(f[89], 2);			/* PM1_CNT_LEN */
	CHECK_EQ(f[91], 0);			/* PM_TMR_LEN */
	CHECK_EQ(f[108], 0x32);			/* CENTURY */
	/* IAPC_BOOT_ARCH: legacy devices, no 8042, no VGA, MSI ok, no ASPM, CMOS RTC present */
	CHECK_EQ(rd16(f + 109), (1 << 0) | (1 << 2) | (1 << 4));
	/* flags: WBINVD, PROC_C1, SLP_BUTTON, FIX_RTC, RESET_REG_SUP; fixed power button */
	CHECK_EQ(rd32(f + 112), (1 << 0) | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 10));
	CHECK_EQ(f[116], 1);			/* RESET_REG: SystemIO */
	CHECK_EQ(f[117], 8);			/* bit width: Linux requires exactly 8 */
	CHECK_EQ(f[118], 0);
	CHECK_EQ(rd64(f + 120), 0xcf9);
	CHECK_EQ(f[128], 0x06);			/* RESET_VALUE */
	/* X_PM1a_EVT_BLK at 148, X_PM1a_CNT_BLK at 172: widths match the legacy lengths. */
	CHECK_EQ(f[148], 1);
	CHECK_EQ(f[149], 32);
	CHECK_EQ(rd64(f + 152), 0x600);
	CHECK_EQ(f[172], 1);
	CHECK_EQ(f[173], 16);
	CHECK_EQ(rd64(f + 176), 0x604);
	CHECK_EQ(rd64(f + 160 + 4), 0);		/* X_PM1b_EVT_BLK */
	CHECK_EQ(rd64(f + 208 + 4), 0);		/* X_PM_TMR_BLK */
	CHECK_EQ(rd64(f + 220 + 4), 0);		/* X_GPE0_BLK */
}

struct madt_count {
	unsigned int lapic, x2apic, ioapic, iso, nmi, x2nmi, other;
	int sci_ok, irq0;
};

/* Walks the MADT checking each entry against cfg. Returns 0 on success. */
static int walk_madt(const uint8_t *m, const struct acpi_config *cfg, struct madt_count *c)
{
	uint32_t len = rd32(m + 4);

	memset(c, 0, sizeof(*c));
	c->irq0 = -1;
	if (rd32(m + 36) != LAPIC_GPA || rd32(m + 40) != 1)
		return -1;
	for (uint32_t off = 44; off < len;) {
		const uint8_t *e = m + off;

		if (e[1] < 2 || off + e[1] > len)
			return -2;
		switch (e[0]) {
		case 0: {
			unsigned int i = e[2];

			if (e[1] != 8 || i >= cfg->ncpus || rd32(e + 4) != 1)
				return -3;
			if (e[3] != (cfg->apic_ids ? cfg->apic_ids[i] : i) || e[3] >= 255)
				return -4;
			c->lapic++;
			break;
		}
		case 9: {
			uint32_t i = rd32(e + 12);

			if (e[1] != 16 || i >= cfg->ncpus || rd32(e + 8) != 1)
				return -5;
			if (rd32(e + 4) != (cfg->apic_ids ? cfg->apic_ids[i] : i) ||
			    rd32(e + 4) < 255)
				return -6;
			c->x2apic++;
			break;
		}
		case 1:
			if (e[1] != 12 || rd32(e + 4) != IOAPIC_GPA || rd32(e + 8) != 0)
				return -7;
			c->ioapic++;
			break;
		case 2:
			if (e[1] != 10 || e[2] != 0)
				return -8;
			if (e[3] == 9 && rd32(e + 4) == 9 && rd16(e + 8) == 0x000d)
				c->sci_ok = 1;
			else if (e[3] == 0)
				c->irq0 = (int)rd32(e + 4);
			c->iso++;
			break;
		case 4:
			if (e[1] != 6 || e[2] != 0xff || e[5] != 1)
				return -9;
			c->nmi++;
			break;
		case 10:
			if (e[1] != 12 || rd32(e + 4) != 0xffffffff || e[8] != 1)
				return -10;
			c->x2nmi++;
			break;
		default:
			c->other++;
		}
		off += e[1];
	}
	return 0;
}

static void check_madt(unsigned int ncpus, const uint32_t *ids, unsigned int want_lapic,
		       unsigned int want_x2apic)
{
	struct acpi_config cfg = { .ncpus = ncpus, .apic_ids = ids };
	struct madt_count c;
	struct built t;
	const uint8_t *m;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	m = find(&t, "APIC");
	CHECK(table_ok(&t, m, "APIC"));
	CHECK_EQ(walk_madt(m, &cfg, &c), 0);
	CHECK_EQ(c.lapic, want_lapic);
	CHECK_EQ(c.x2apic, want_x2apic);
	CHECK_EQ(c.ioapic, 1);
	CHECK_EQ(c.iso, 1);	/* the SCI only: KVM's default routing keeps IRQ0 on pin 0 */
	CHECK(c.sci_ok);
	CHECK_EQ(c.nmi, want_lapic ? 1 : 0);
	CHECK_EQ(c.x2nmi, want_x2apic ? 1 : 0);
	CHECK_EQ(c.other, 0);
	CHECK_EQ(rd32(m + 4), 44 + 8 * want_lapic + 16 * want_x2apic + 12 + 10 +
				  (want_lapic ? 6 : 0) + (want_x2apic ? 12 : 0));
}

static void test_acpi_madt(void)
{
	static uint32_t ids[300];

	for (unsigned int i = 0; i < 300; i++)
		ids[i] = i;
	check_madt(1, ids, 1, 0);
	if (__test_failed) return;
	check_madt(2, ids, 2, 0);
	if (__test_failed) return;
	check_madt(64, ids, 64, 0);
	if (__test_failed) return;
	check_madt(255, ids, 255, 0);
	if (__test_failed) return;
	check_madt(256, NULL, 255, 1);
	if (__test_failed) return;
	check_madt(300, ids, 255, 45);
	if (__test_failed) return;
	/* Sparse topology IDs (e.g. 6 cores per socket, 8 IDs apart). */
	for (unsigned int i = 0; i < 300; i++)
		ids[i] = (i / 6) * 8 + i % 6;
	check_madt(300, ids, 192, 108);
	if (__test_failed) return;
	/* Only x2APIC IDs. */
	for (unsigned int i = 0; i < 4; i++)
		ids[i] = 1000 + i;
	check_madt(4, ids, 0, 4);
}

static void test_acpi_madt_irq0_override(void)
{
	struct acpi_config cfg = { .ncpus = 2, .irq0_to_gsi2 = 1 };
	struct madt_count c;
	struct built t;
	const uint8_t *m;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	m = find(&t, "APIC");
	CHECK(table_ok(&t, m, "APIC"));
	CHECK_EQ(walk_madt(m, &cfg, &c), 0);
	CHECK_EQ(c.iso, 2);
	CHECK_EQ(c.irq0, 2);
	CHECK(c.sci_ok);
}

static void test_acpi_mcfg(void)
{
	struct acpi_config cfg = { .ncpus = 1, .pci = 1 };
	struct built t;
	const uint8_t *m;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	m = find(&t, "MCFG");
	CHECK(table_ok(&t, m, "MCFG"));
	CHECK_EQ(rd32(m + 4), 60);
	CHECK_EQ(rd64(m + 44), PCI_ECAM_GPA);
	CHECK_EQ(rd16(m + 52), 0);
	CHECK_EQ(m[54], 0);
	CHECK_EQ(m[55], (PCI_ECAM_SIZE >> 20) - 1);
}

static const uint8_t *dsdt_of(const struct built *t)
{
	const uint8_t *f = find(t, "FACP");

	return f ? at(t, rd32(f + 40), 36) : NULL;
}

static int contains(const uint8_t *p, size_t n, const void *needle, size_t nn)
{
	return memmem(p, n, needle, nn) != NULL;
}

static void test_acpi_dsdt(void)
{
	/* Name(\_S5_, Package(4){5, 5, 0, 0}) */
	static const uint8_t s5[] = { 0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04,
				      0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00 };
	static const uint8_t pnp0501[] = { 0x0c, 0x41, 0xd0, 0x05, 0x01 };
	struct acpi_config cfg = { .ncpus = 1 };
	struct built t;
	const uint8_t *d;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	d = dsdt_of(&t);
	CHECK(table_ok(&t, d, "DSDT"));
	CHECK_EQ(d[8], 2);
	CHECK(contains(d, rd32(d + 4), s5, sizeof(s5)));
	CHECK(contains(d, rd32(d + 4), pnp0501, sizeof(pnp0501)));
	CHECK(contains(d, rd32(d + 4), "COM1", 4));
	CHECK(!contains(d, rd32(d + 4), "PCI0", 4));
	cfg.pci = 1;
	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	d = dsdt_of(&t);
	CHECK(table_ok(&t, d, "DSDT"));
	CHECK(contains(d, rd32(d + 4), "PCI0", 4));
	CHECK(contains(d, rd32(d + 4), "MRES", 4));
}

static void test_acpi_e2big(void)
{
	struct acpi_config cfg = { .ncpus = 300, .pci = 1 };
	uint64_t rsdp;
	long need;

	need = acpi_build(tables, sizeof(tables), ACPI_TABLES_GPA, &cfg, &rsdp);
	CHECK(need > 0);
	/* Every smaller exact-size heap buffer fails cleanly; ASan catches any overrun. */
	for (long size = 0; size <= need; size++) {
		uint8_t *b = malloc(size ? size : 1);
		long r;

		CHECK(b);
		r = acpi_build(b, size, ACPI_TABLES_GPA, &cfg, &rsdp);
		free(b);
		if (size < need)
			CHECK_EQ(r, -E2BIG);
		else
			CHECK_EQ(r, need);
	}
}

static void test_acpi_bad_config(void)
{
	uint32_t ids[300];
	struct acpi_config cfg = { .ncpus = 0 };
	uint64_t rsdp;

	CHECK_EQ(acpi_build(tables, sizeof(tables), ACPI_TABLES_GPA, &cfg, &rsdp), -EINVAL);
	ids[0] = 0xffffffff;
	cfg = (struct acpi_config){ .ncpus = 1, .apic_ids = ids };
	CHECK_EQ(acpi_build(tables, sizeof(tables), ACPI_TABLES_GPA, &cfg, &rsdp), -EINVAL);
	/* An xAPIC ID on a vCPU index >= 255 would need UID 255+ in an 8-bit field. */
	for (unsigned int i = 0; i < 300; i++)
		ids[i] = 299 - i;
	cfg = (struct acpi_config){ .ncpus = 300, .apic_ids = ids };
	CHECK_EQ(acpi_build(tables, sizeof(tables), ACPI_TABLES_GPA, &cfg, &rsdp), -EINVAL);
	cfg = (struct acpi_config){ .ncpus = 1 };
	CHECK_EQ(acpi_build(tables, sizeof(tables), 1ull << 32, &cfg, &rsdp), -EINVAL);
	cfg = (struct acpi_config){ .ncpus = 1, .pci = 1, .pci_mmio64_base = ~0ull << 4,
				    .pci_mmio64_size = 1ull << 8 };
	CHECK_EQ(acpi_build(tables, sizeof(tables), ACPI_TABLES_GPA, &cfg, &rsdp), -EINVAL);
}

/* ---- iasl ---- */

static int have_iasl(void)
{
	return system("command -v iasl >/dev/null 2>&1") == 0;
}

static int write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(p, 1, n, f) == n;

	if (f && fclose(f))
		ok = 0;
	return ok;
}

static int file_has(const char *path, const char *s)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t n = 0;
	int found;

	if (!f)
		return 0;
	/* The 300-vCPU MADT disassembles to a few hundred KiB: read it all. */
	for (size_t cap = 0;;) {
		char *t;
		size_t got;

		if (n + 1 >= cap) {
			cap = cap ? 2 * cap : 1 << 16;
			t = realloc(text, cap);
			if (!t)
				break;
			text = t;
		}
		got = fread(text + n, 1, cap - n - 1, f);
		n += got;
		if (!got)
			break;
	}
	fclose(f);
	if (!text)
		return 0;
	text[n] = '\0';
	found = strstr(text, s) != NULL;
	free(text);
	return found;
}

static int run(const char *dir, const char *cmd)
{
	char line[512];

	snprintf(line, sizeof(line), "cd %s && %s >>iasl.log 2>&1", dir, cmd);
	return system(line);
}

/*
 * SRAT and SLIT, byte by byte (ACPI 6.5 5.2.16/5.2.17): a CPU-less node 2, a memory-less
 * node 1, an x2APIC id, RAM split by the 32-bit hole, and asymmetric distances.
 */
static void test_acpi_srat_slit(void)
{
	static const uint32_t ids[] = { 0, 1, 0x104 };
	static const uint32_t nodes[] = { 0, 1, 1 };
	static const struct acpi_mem_affinity mem[] = {
		{ 0, 0xc0000000, 0 }, { 0x100000000ull, 0x40000000, 0 },
		{ 0x140000000ull, 0x20000000, 2 },
	};
	static const uint8_t dist[] = { 10, 21, 16, 31, 10, 40, 16, 40, 10 };
	struct acpi_config cfg = { .ncpus = 3, .apic_ids = ids, .nnodes = 3, .cpu_node = nodes,
				   .mem = mem, .nmem = 3, .distance = dist };
	struct built t;
	const uint8_t *s, *e;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	s = find(&t, "SRAT");
	CHECK(table_ok(&t, s, "SRAT"));
	CHECK_EQ(s[8], 3);				/* revision */
	CHECK_EQ(rd32(s + 4), 48 + 2 * 16 + 24 + 3 * 40);
	CHECK_EQ(rd32(s + 36), 1);			/* reserved, must be 1 */
	CHECK_EQ(rd64(s + 40), 0);
	e = s + 48;					/* local APIC affinity, APIC 0 */
	CHECK_EQ(e[0], 0);
	CHECK_EQ(e[1], 16);
	CHECK_EQ(e[2], 0);				/* proximity domain [7:0] */
	CHECK_EQ(e[3], 0);				/* APIC id */
	CHECK_EQ(rd32(e + 4), 1);			/* enabled */
	CHECK_EQ(e[8], 0);
	CHECK(!e[9] && !e[10] && !e[11]);		/* proximity domain [31:8] */
	CHECK_EQ(rd32(e + 12), 0);			/* clock domain */
	e += 16;
	CHECK_EQ(e[0], 0);
	CHECK_EQ(e[2], 1);
	CHECK_EQ(e[3], 1);
	e += 16;					/* x2APIC affinity */
	CHECK_EQ(e[0], 2);
	CHECK_EQ(e[1], 24);
	CHECK_EQ(rd16(e + 2), 0);
	CHECK_EQ(rd32(e + 4), 1);			/* proximity domain */
	CHECK_EQ(rd32(e + 8), 0x104);			/* x2APIC id */
	CHECK_EQ(rd32(e + 12), 1);
	CHECK_EQ(rd32(e + 16), 0);
	CHECK_EQ(rd32(e + 20), 0);
	e += 24;
	for (unsigned int i = 0; i < 3; i++, e += 40) {	/* memory affinity */
		CHECK_EQ(e[0], 1);
		CHECK_EQ(e[1], 40);
		CHECK_EQ(rd32(e + 2), mem[i].node);
		CHECK_EQ(rd16(e + 6), 0);
		CHECK_EQ(rd32(e + 8), (uint32_t)mem[i].base);
		CHECK_EQ(rd32(e + 12), mem[i].base >> 32);
		CHECK_EQ(rd32(e + 16), (uint32_t)mem[i].size);
		CHECK_EQ(rd32(e + 20), mem[i].size >> 32);
		CHECK_EQ(rd32(e + 24), 0);
		CHECK_EQ(rd32(e + 28), 1);		/* enabled, not hot-pluggable */
		CHECK_EQ(rd64(e + 32), 0);
	}
	s = find(&t, "SLIT");
	CHECK(table_ok(&t, s, "SLIT"));
	CHECK_EQ(s[8], 1);
	CHECK_EQ(rd32(s + 4), 44 + 9);
	CHECK_EQ(rd64(s + 36), 3);
	CHECK(!memcmp(s + 44, dist, 9));
	/* No NUMA: neither table. */
	cfg = (struct acpi_config){ .ncpus = 2 };
	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	CHECK(!find(&t, "SRAT") && !find(&t, "SLIT"));
}

/* Node layouts Linux would reject are refused before any table is written. */
static void test_acpi_numa_bad(void)
{
	static const uint32_t nodes_ok[] = { 0, 1 }, nodes_bad[] = { 0, 2 };
	static const struct acpi_mem_affinity mem_ok[] = { { 0, 1 << 30, 0 } };
	static const struct acpi_mem_affinity mem_bad_node[] = { { 0, 1 << 30, 2 } };
	static const struct acpi_mem_affinity mem_empty[] = { { 0, 0, 0 } };
	static const struct acpi_mem_affinity mem_wrap[] = { { ~0ull - 4095, 8192, 0 } };
	static const uint8_t d_ok[] = { 10, 20, 20, 10 }, d_diag[] = { 11, 20, 20, 10 },
			     d_near[] = { 10, 10, 20, 10 }, d_unreach[] = { 10, 255, 20, 10 };
	struct acpi_config cfg = { .ncpus = 2, .nnodes = 2, .cpu_node = nodes_ok, .mem = mem_ok,
				   .nmem = 1, .distance = d_ok };
	struct acpi_config bad;
	struct built t;

	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	bad = cfg; bad.cpu_node = nodes_bad;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.mem = mem_bad_node;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.mem = mem_empty;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.mem = mem_wrap;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.distance = d_diag;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.distance = d_near;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.distance = d_unreach;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.distance = NULL;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
	bad = cfg; bad.cpu_node = NULL;
	CHECK_EQ(build(&t, &bad, ACPI_TABLES_GPA), -EINVAL);
}

static void test_acpi_iasl(void)
{
	static const char *data_tables[] = { "FACP", "APIC", "MCFG", "XSDT", "SRAT", "SLIT" };
	static const struct acpi_mem_affinity mem[] = {
		{ 0, 3ull << 30, 0 }, { 1ull << 32, 1ull << 30, 0 }, { 5ull << 30, 2ull << 30, 2 },
	};
	static const uint8_t dist[] = { 10, 21, 16, 31, 10, 16, 16, 16, 10 };
	uint32_t ids[300], nodes[300];
	struct acpi_config cfg = { .ncpus = 300, .apic_ids = ids, .pci = 1,
				   .pci_mmio64_base = 1ull << 44, .pci_mmio64_size = 1ull << 40,
				   .nnodes = 3, .cpu_node = nodes, .mem = mem, .nmem = 3,
				   .distance = dist };
	char dir[] = "/tmp/kumo-test-acpi-XXXXXX", path[256], cmd[300];
	struct built t;
	const uint8_t *d;

	if (!have_iasl())
		SKIP("iasl not installed (apt-get install acpica-tools)");
	for (unsigned int i = 0; i < 300; i++) {
		ids[i] = i;
		nodes[i] = i % 2;
	}
	CHECK(build(&t, &cfg, ACPI_TABLES_GPA) > 0);
	CHECK(mkdtemp(dir));

	/* The DSDT disassembles, and recompiles without errors or warnings. */
	d = dsdt_of(&t);
	snprintf(path, sizeof(path), "%s/dsdt.aml", dir);
	CHECK(write_file(path, d, rd32(d + 4)));
	CHECK_EQ(run(dir, "iasl -d dsdt.aml"), 0);
	snprintf(path, sizeof(path), "%s/dsdt.dsl", dir);
	CHECK(file_has(path, "PNP0501"));
	CHECK(file_has(path, "PNP0A08"));
	CHECK(file_has(path, "Package (0x04)"));
	CHECK_EQ(run(dir, "iasl -p re dsdt.dsl"), 0);
	snprintf(path, sizeof(path), "%s/iasl.log", dir);
	CHECK(file_has(path, "Compilation successful. 0 Errors, 0 Warnings"));

	/* The data tables disassemble without complaints (iasl flags bad checksums/lengths). */
	for (size_t i = 0; i < sizeof(data_tables) / sizeof(data_tables[0]); i++) {
		const uint8_t *p = find(&t, data_tables[i]);

		if (!p)
			p = xsdt_of(&t);
		snprintf(path, sizeof(path), "%s/%.4s.dat", dir, data_tables[i]);
		CHECK(write_file(path, p, rd32(p + 4)));
		snprintf(cmd, sizeof(cmd), "iasl -d %.4s.dat", data_tables[i]);
		CHECK_EQ(run(dir, cmd), 0);
		snprintf(path, sizeof(path), "%s/%.4s.dsl", dir, data_tables[i]);
		CHECK(file_has(path, "Raw Table Data"));
		CHECK(!file_has(path, "Invalid") && !file_has(path, "Incorrect"));
		CHECK(!file_has(path, "Warning") && !file_has(path, "Error"));
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_EQ(system(cmd), 0);
}

TEST_MAIN(TEST(test_aml_pkglen_encode), TEST(test_aml_pkglen_fixup), TEST(test_aml_integer),
	  TEST(test_aml_namestring), TEST(test_aml_eisaid_string), TEST(test_aml_restemplate),
	  TEST(test_aml_errors), TEST(test_aml_buffer_1mib), TEST(test_aml_method),
	  TEST(test_acpi_rsdp), TEST(test_acpi_tables), TEST(test_acpi_fadt),
	  TEST(test_acpi_madt), TEST(test_acpi_madt_irq0_override), TEST(test_acpi_mcfg),
	  TEST(test_acpi_dsdt), TEST(test_acpi_e2big), TEST(test_acpi_bad_config),
	  TEST(test_acpi_srat_slit), TEST(test_acpi_numa_bad), TEST(test_acpi_iasl))
