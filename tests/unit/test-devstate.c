/*
 * Unit tests for the device state contract (devices/dev.h) of the legacy devices and PCI:
 * state set the guest's way, saved, loaded into a fresh device, read back the guest's way;
 * the IRQ line after load; hostile states refused with nothing applied.
 */
#include <errno.h>

#include "devices/acpi-pm.h"
#include "devices/dev.h"
#include "devices/pci.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "tests/harness.h"
#include "tests/state-store.h"
#include "vmm/bus.h"
#include "vmm/irq.h"
#include "vmm/layout.h"
#include "vmm/log.h"

/* ---- a tiny property store: name -> bytes ---- */

static int save(const struct dev_ops *ops, void *dev, struct store *st)
{
	struct dev_state_out o = store_out(st);

	memset(st, 0, sizeof(*st));
	return ops->save(dev, &o);
}

static int load(const struct dev_ops *ops, void *dev, struct store *st)
{
	struct dev_state_in in = store_in(st);

	return ops->load(dev, &in);
}

/* ---- legacy devices, driven the guest's way ---- */

struct line {
	int level, sets;
};

static int line_set(void *opaque, uint32_t gsi, int level)
{
	struct line *l = opaque;

	l->level = level;
	l->sets++;
	return 0;
}

static void uart_out(struct serial *s, int reg, uint8_t v)
{
	serial_ops.write(s, (uint64_t)reg, &v, 1);
}

static uint8_t uart_in(struct serial *s, int reg)
{
	uint8_t v;

	serial_ops.read(s, (uint64_t)reg, &v, 1);
	return v;
}

static void rtc_out(struct rtc *rtc, uint8_t idx, uint8_t v)
{
	rtc_ops.write(rtc, 0, &idx, 1);
	rtc_ops.write(rtc, 1, &v, 1);
}

static uint8_t rtc_in(struct rtc *rtc, uint8_t idx)
{
	uint8_t v;

	rtc_ops.write(rtc, 0, &idx, 1);
	rtc_ops.read(rtc, 1, &v, 1);
	return v;
}

/* A UART with a divisor, scratch, FIFO on, RDI on and 2 of 3 received bytes left unread. */
static void serial_busy(struct serial *s, struct line *l)
{
	struct irq_line irq = { line_set, l, 4 };

	serial_init(s, &irq, -1);
	uart_out(s, 3, 0x80);		/* DLAB */
	uart_out(s, 0, 0x0c);
	uart_out(s, 1, 0x01);
	uart_out(s, 3, 0x03);		/* 8N1 */
	uart_out(s, 2, 0xc7);		/* FIFO on, clear, trigger 14 */
	uart_out(s, 4, 0x0b);		/* DTR RTS OUT2 */
	uart_out(s, 7, 0x5a);
	uart_out(s, 1, 0x01);		/* RDI */
	serial_push_input(s, (const uint8_t *)"hi!", 3);
	(void)uart_in(s, 0);
}

static void test_serial_roundtrip(void)
{
	static struct store st;
	struct serial a, b;
	struct line la = { 0 }, lb = { 0 };
	struct irq_line irq = { line_set, &lb, 4 };

	serial_busy(&a, &la);
	CHECK_EQ(la.level, 1);
	CHECK_EQ(save(&serial_dev_ops, &a, &st), 0);
	CHECK_EQ(st.n, 1);
	CHECK_EQ(store_find(&st, "regs")->len, 16 + SERIAL_FIFO_SIZE);

	serial_init(&b, &irq, -1);
	CHECK_EQ(load(&serial_dev_ops, &b, &st), 0);
	/* The new line was driven high, not just the cached level set. */
	CHECK_EQ(lb.sets, 1);
	CHECK_EQ(lb.level, 1);
	CHECK_EQ(uart_in(&b, 3), 0x03);
	CHECK_EQ(uart_in(&b, 1), 0x01);
	CHECK_EQ(uart_in(&b, 4), 0x0b);
	CHECK_EQ(uart_in(&b, 7), 0x5a);
	CHECK_EQ(uart_in(&b, 2), 0xc4);		/* FIFO on, RDI pending */
	CHECK_EQ(uart_in(&b, 5) & 0x01, 1);	/* data ready */
	uart_out(&b, 3, 0x83);
	CHECK_EQ(uart_in(&b, 0), 0x0c);
	CHECK_EQ(uart_in(&b, 1), 0x01);
	uart_out(&b, 3, 0x03);
	CHECK_EQ(uart_in(&b, 0), 'i');
	CHECK_EQ(uart_in(&b, 0), '!');
	CHECK_EQ(uart_in(&b, 5) & 0x01, 0);
	CHECK_EQ(lb.level, 0);			/* drained: the line drops as it would have */
	CHECK_EQ(b.tx_bytes, 0);
}

/* THR-empty owed to the guest survives, and reading IIR still acknowledges it. */
static void test_serial_thr_pending(void)
{
	static struct store st;
	struct serial a, b;
	struct line la = { 0 }, lb = { 0 };
	struct irq_line ia = { line_set, &la, 4 }, ib = { line_set, &lb, 4 };

	serial_init(&a, &ia, -1);
	uart_out(&a, 1, 0x02);			/* THRI on: owed at once */
	CHECK_EQ(la.level, 1);
	CHECK_EQ(save(&serial_dev_ops, &a, &st), 0);
	serial_init(&b, &ib, -1);
	CHECK_EQ(load(&serial_dev_ops, &b, &st), 0);
	CHECK_EQ(lb.level, 1);
	CHECK_EQ(uart_in(&b, 2), 0x02);
	CHECK_EQ(lb.level, 0);
	CHECK_EQ(uart_in(&b, 2), 0x01);
}

/* A quiet state loaded over a device whose line is high brings the line down. */
static void test_serial_load_lowers_line(void)
{
	static struct store st;
	struct serial a, b;
	struct line la = { 0 }, lb = { 0 };
	struct irq_line ia = { line_set, &la, 4 };

	serial_init(&a, &ia, -1);
	uart_out(&a, 7, 0x42);
	CHECK_EQ(save(&serial_dev_ops, &a, &st), 0);
	serial_busy(&b, &lb);
	CHECK_EQ(lb.level, 1);
	CHECK_EQ(load(&serial_dev_ops, &b, &st), 0);
	CHECK_EQ(lb.level, 0);
	CHECK_EQ(uart_in(&b, 7), 0x42);
	CHECK_EQ(uart_in(&b, 5) & 0x01, 0);
}

static void test_rtc_roundtrip(void)
{
	static struct store st;
	struct rtc a, b;

	rtc_init(&a);
	rtc_out(&a, 0x0e, 0x11);
	rtc_out(&a, 0x40, 0xab);
	rtc_out(&a, 0x7f, 0xcd);
	rtc_out(&a, 0x00, 0x99);		/* seconds: the host clock's, ignored */
	rtc_out(&a, 0x0b, 0x06);		/* register B: constant, ignored */
	rtc_out(&a, 0x33, 0x77);		/* leaves the index latch at 0x33 */
	CHECK_EQ(save(&rtc_dev_ops, &a, &st), 0);
	CHECK_EQ(store_find(&st, "regs")->len, 136);

	rtc_init(&b);
	CHECK_EQ(load(&rtc_dev_ops, &b, &st), 0);
	{
		uint8_t v;

		rtc_ops.read(&b, 1, &v, 1);	/* through the latch as loaded */
		CHECK_EQ(v, 0x77);
	}
	CHECK_EQ(rtc_in(&b, 0x0e), 0x11);
	CHECK_EQ(rtc_in(&b, 0x40), 0xab);
	CHECK_EQ(rtc_in(&b, 0x7f), 0xcd);
	CHECK_EQ(rtc_in(&b, 0x0b), 0x02);
	CHECK_EQ(rtc_in(&b, 0x0a), 0x26);
}

static void test_acpi_pm_roundtrip(void)
{
	static struct store st;
	struct acpi_pm a, b;
	uint32_t v;

	acpi_pm_init(&a, NULL, NULL);
	v = 0x0121;				/* TMR_EN, GBL_EN, PWRBTN_EN */
	acpi_pm_evt_ops.write(&a, 2, &v, 2);
	v = 0x0c00;				/* a SLP_TYP without SLP_EN */
	acpi_pm_cnt_ops.write(&a, 0, &v, 2);
	a.pm1_sts = 0x0100;			/* as if the power button had been pressed */
	CHECK_EQ(save(&acpi_pm_dev_ops, &a, &st), 0);
	CHECK_EQ(store_find(&st, "regs")->len, 8);

	acpi_pm_init(&b, NULL, NULL);
	CHECK_EQ(load(&acpi_pm_dev_ops, &b, &st), 0);
	v = 0;
	acpi_pm_evt_ops.read(&b, 0, &v, 4);
	CHECK_EQ(v, 0x01210100);
	v = 0;
	acpi_pm_cnt_ops.read(&b, 0, &v, 2);
	CHECK_EQ(v, 0x0c01);			/* SCI_EN always reads set */
	v = 0x0100;				/* write 1 to clear still works */
	acpi_pm_evt_ops.write(&b, 0, &v, 2);
	acpi_pm_evt_ops.read(&b, 0, &v, 2);
	CHECK_EQ(v, 0);
}

/* ---- refusals ---- */

enum kind { K_SERIAL, K_RTC, K_PM };

static struct serial ser;
static struct rtc rtcdev;
static struct acpi_pm pm;
static struct line ser_line;

static const struct dev_ops *kind_ops(enum kind k)
{
	return k == K_SERIAL ? &serial_dev_ops : k == K_RTC ? &rtc_dev_ops : &acpi_pm_dev_ops;
}

static void *kind_fresh(enum kind k)
{
	struct irq_line irq = { line_set, &ser_line, 4 };

	switch (k) {
	case K_SERIAL:
		memset(&ser_line, 0, sizeof(ser_line));
		serial_init(&ser, &irq, -1);
		return &ser;
	case K_RTC:
		rtc_init(&rtcdev);
		return &rtcdev;
	default:
		acpi_pm_init(&pm, NULL, NULL);
		return &pm;
	}
}

/* A valid, busy state of each kind. */
static int kind_state(enum kind k, struct store *st)
{
	static struct serial s;
	static struct line l;
	struct rtc r;
	struct acpi_pm p;

	switch (k) {
	case K_SERIAL:
		serial_busy(&s, &l);
		return save(&serial_dev_ops, &s, st);
	case K_RTC:
		rtc_init(&r);
		rtc_out(&r, 0x40, 0xab);
		return save(&rtc_dev_ops, &r, st);
	default:
		acpi_pm_init(&p, NULL, NULL);
		p.pm1_en = 0x0100;
		return save(&acpi_pm_dev_ops, &p, st);
	}
}

/*
 * Offsets are the saved layout (struct serial_regs: ier lcr mcr scr dll dlm fcr thr irq head
 * count pad[5] rx[64]; struct rtc_regs: index pad[7] cmos[128]; struct acpi_pm_regs: sts en
 * cnt pad, u16 each): a change here is a format change.
 */
static const struct refusal {
	const char *what;
	enum kind kind;
	int len_delta;		/* resize "regs" by this much */
	int drop;		/* remove "regs" */
	int off;		/* else set this byte (or u16 when wide) */
	int wide;
	unsigned int val;
	int ret;
} refusals[] = {
	{ "serial: short", K_SERIAL, .len_delta = -1, .off = -1, .ret = -EINVAL },
	{ "serial: long", K_SERIAL, .len_delta = 1, .off = -1, .ret = -EINVAL },
	{ "serial: missing", K_SERIAL, .drop = 1, .off = -1, .ret = -EINVAL },
	{ "serial: ier high bits", K_SERIAL, .off = 0, .val = 0x11, .ret = -EINVAL },
	{ "serial: mcr high bits", K_SERIAL, .off = 2, .val = 0x2b, .ret = -EINVAL },
	{ "serial: fcr clear bits", K_SERIAL, .off = 6, .val = 0xc3, .ret = -EINVAL },
	{ "serial: thr pending 2", K_SERIAL, .off = 7, .val = 2, .ret = -EINVAL },
	{ "serial: irq level 2", K_SERIAL, .off = 8, .val = 2, .ret = -EINVAL },
	{ "serial: irq low, data waiting", K_SERIAL, .off = 8, .val = 0, .ret = -EINVAL },
	{ "serial: rx_head 64", K_SERIAL, .off = 9, .val = SERIAL_FIFO_SIZE, .ret = -EINVAL },
	{ "serial: rx_count 65", K_SERIAL, .off = 10, .val = SERIAL_FIFO_SIZE + 1, .ret = -EINVAL },
	{ "serial: empty FIFO, irq high", K_SERIAL, .off = 10, .val = 0, .ret = -EINVAL },
	{ "serial: pad", K_SERIAL, .off = 13, .val = 1, .ret = -EINVAL },
	{ "rtc: short", K_RTC, .len_delta = -1, .off = -1, .ret = -EINVAL },
	{ "rtc: missing", K_RTC, .drop = 1, .off = -1, .ret = -EINVAL },
	{ "rtc: index 128", K_RTC, .off = 0, .val = 128, .ret = -EINVAL },
	{ "rtc: index 255", K_RTC, .off = 0, .val = 255, .ret = -EINVAL },
	{ "rtc: pad", K_RTC, .off = 7, .val = 1, .ret = -EINVAL },
	{ "rtc: seconds stored", K_RTC, .off = 8 + 0, .val = 0x59, .ret = -EINVAL },
	{ "rtc: register D stored", K_RTC, .off = 8 + 0x0d, .val = 0x80, .ret = -EINVAL },
	{ "rtc: century stored", K_RTC, .off = 8 + 0x32, .val = 0x20, .ret = -EINVAL },
	{ "acpi-pm: long", K_PM, .len_delta = 2, .off = -1, .ret = -EINVAL },
	{ "acpi-pm: missing", K_PM, .drop = 1, .off = -1, .ret = -EINVAL },
	{ "acpi-pm: sts reserved bit", K_PM, .off = 0, .wide = 1, .val = 0x0002, .ret = -EINVAL },
	{ "acpi-pm: cnt SLP_EN", K_PM, .off = 4, .wide = 1, .val = 0x3400, .ret = -EINVAL },
	{ "acpi-pm: pad", K_PM, .off = 6, .wide = 1, .val = 1, .ret = -EINVAL },
};

static void test_legacy_refusals(void)
{
	static struct store st, before, after;

	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		const struct refusal *r = &refusals[i];
		const struct dev_ops *ops = kind_ops(r->kind);
		struct prop *p;
		void *dev;
		int ret;

		CHECK_EQ(kind_state(r->kind, &st), 0);
		p = store_find(&st, "regs");
		CHECK(p);
		if (r->drop)
			strcpy(p->name, "gone");
		p->len = (size_t)((int)p->len + r->len_delta);
		if (r->off >= 0 && r->wide) {
			uint16_t v = (uint16_t)r->val;

			memcpy(&p->data[r->off], &v, 2);
		} else if (r->off >= 0) {
			p->data[r->off] = (uint8_t)r->val;
		}
		dev = kind_fresh(r->kind);
		CHECK_EQ(save(ops, dev, &before), 0);
		ret = load(ops, dev, &st);
		if (ret != r->ret)
			fprintf(stderr, "  case \"%s\": load returned %d\n", r->what, ret);
		CHECK_EQ(ret, r->ret);
		/* Nothing applied: the device saves as it did before. */
		CHECK_EQ(save(ops, dev, &after), 0);
		CHECK(!memcmp(before.p[0].data, after.p[0].data, before.p[0].len));
		if (r->kind == K_SERIAL)
			CHECK_EQ(ser_line.sets, 0);
	}
	/* The unmodified states load (the table's cases fail for their own reason). */
	for (enum kind k = K_SERIAL; k <= K_PM; k++) {
		CHECK_EQ(kind_state(k, &st), 0);
		CHECK_EQ(load(kind_ops(k), kind_fresh(k), &st), 0);
	}
}

/* ---- PCI ---- */

struct rec {
	uint64_t off;
	int reads;
};

static void rec_read(void *o, uint64_t off, void *data, uint32_t len)
{
	struct rec *r = o;

	r->reads++;
	r->off = off;
	memset(data, 0x5a, len);
}

static void rec_write(void *o, uint64_t off, const void *data, uint32_t len)
{
}

static const struct io_ops rec_ops = { .read = rec_read, .write = rec_write };

struct fixture {
	struct bus pio, mmio;
	struct pci_host h;
	struct pci_device d;
	struct rec r32, r64, rio;
	uint64_t mapped_addr[PCI_NUM_BARS];
	int map_events;
};

static void fx_bar_mapped(struct pci_device *d, int idx, uint64_t addr, int mapped)
{
	struct fixture *f = d->owner;

	f->map_events++;
	f->mapped_addr[idx] = mapped ? addr : 0;
}

/* A 32-bit BAR 0 (4 KiB), a 64-bit BAR 2 (16 KiB), an I/O BAR 5 (32 bytes), one capability. */
static int fx_init(struct fixture *f)
{
	uint8_t cap[8] = { 0x09, 0, 8, 1, 2, 3, 4, 5 };

	memset(f, 0, sizeof(*f));
	bus_init(&f->pio, "pio");
	bus_init(&f->mmio, "mmio");
	if (pci_host_init(&f->h, &f->pio, &f->mmio))
		return -1;
	pci_device_init(&f->d, "dummy", 0x1234, 0x5678, 0x020000, 7, 0xabcd, 0xef01);
	f->d.owner = f;
	f->d.bar_mapped = fx_bar_mapped;
	if (pci_device_add_bar(&f->d, 0, PCI_BAR_MEM32, 4096, &rec_ops, &f->r32) ||
	    pci_device_add_bar(&f->d, 2, PCI_BAR_MEM64, 0x4000, &rec_ops, &f->r64) ||
	    pci_device_add_bar(&f->d, 5, PCI_BAR_IO, 32, &rec_ops, &f->rio) ||
	    pci_device_add_cap(&f->d, cap, sizeof(cap)) != 0x40)
		return -1;
	return pci_host_add(&f->h, &f->d) == 1 ? 0 : -1;
}

static void fx_destroy(struct fixture *f)
{
	pci_host_destroy(&f->h);
	bus_destroy(&f->pio);
	bus_destroy(&f->mmio);
}

static uint32_t conf1(struct fixture *f, uint32_t reg, uint32_t len, uint32_t val, int is_write)
{
	uint32_t a = 0x80000000u | 1u << 11 | (reg & 0xfc), v = val;

	bus_access(&f->pio, 0xcf8, &a, 4, 1);
	bus_access(&f->pio, 0xcfc + (reg & 3), &v, len, is_write);
	return v;
}

static uint32_t cfg_r(struct fixture *f, uint32_t reg, uint32_t len)
{
	return conf1(f, reg, len, 0, 0);
}

static void cfg_w(struct fixture *f, uint32_t reg, uint32_t len, uint32_t val)
{
	conf1(f, reg, len, val, 1);
}

/* Does a read at addr reach r (and nothing else answer)? */
static int hits(struct bus *b, uint64_t addr, struct rec *r)
{
	uint32_t v = 0;
	int before = r->reads;

	return !bus_access(b, addr, &v, 4, 0) && r->reads == before + 1 && v == 0x5a5a5a5a;
}

#define BAR0_AT 0xc0100000ULL
#define BAR2_AT 0x800000000ULL
#define BAR5_AT 0x2000u

/* Program BARs, command, interrupt line the guest's way. */
static void fx_program(struct fixture *f)
{
	cfg_w(f, 0x10, 4, (uint32_t)BAR0_AT);
	cfg_w(f, 0x18, 4, (uint32_t)BAR2_AT);
	cfg_w(f, 0x1c, 4, (uint32_t)(BAR2_AT >> 32));
	cfg_w(f, 0x24, 4, BAR5_AT);
	cfg_w(f, 0x3c, 1, 0x0b);
	cfg_w(f, 0x04, 2, 0x0007);		/* I/O, memory, bus master */
}

static void test_pci_roundtrip(void)
{
	static struct fixture a, b;
	static struct store dst, hst;
	struct dev_state_in in;
	uint32_t latch = 0;

	CHECK_EQ(fx_init(&a), 0);
	fx_program(&a);
	CHECK(hits(&a.mmio, BAR0_AT, &a.r32));
	CHECK_EQ(save(&pci_host_dev_ops, &a.h, &hst), 0);
	CHECK(store_find(&hst, "cf8") && store_find(&hst, "config"));
	{
		struct dev_state_out o = store_out(&dst);

		memset(&dst, 0, sizeof(dst));
		CHECK_EQ(pci_device_save(&a.d, &o), 0);
	}
	CHECK_EQ(store_find(&dst, "config")->len, PCI_CFG_SIZE);

	CHECK_EQ(fx_init(&b), 0);
	CHECK(!hits(&b.mmio, BAR0_AT, &b.r32));	/* fresh: decode off */
	CHECK_EQ(load(&pci_host_dev_ops, &b.h, &hst), 0);
	CHECK_EQ(bus_access(&b.pio, 0xcf8, &latch, 4, 0), 0);
	CHECK_EQ(latch, a.h.cf8);
	CHECK_EQ(latch & 0x80000000u, 0x80000000u);
	in = store_in(&dst);
	CHECK_EQ(pci_device_load(&b.d, &in), 0);
	/* Every BAR is on its bus at the loaded address, through the guest-write path. */
	CHECK(hits(&b.mmio, BAR0_AT + 8, &b.r32));
	CHECK_EQ(b.r32.off, 8);
	CHECK(hits(&b.mmio, BAR2_AT + 4, &b.r64));
	CHECK(hits(&b.pio, BAR5_AT + 4, &b.rio));
	CHECK(!hits(&b.mmio, PCI_MMIO_START, &b.r32));	/* not at the allocated default */
	CHECK_EQ(b.mapped_addr[0], BAR0_AT);
	CHECK_EQ(b.mapped_addr[2], BAR2_AT);
	CHECK_EQ(b.mapped_addr[5], BAR5_AT);
	CHECK_EQ(b.map_events, 3);
	/* And the guest reads back what it programmed. */
	CHECK_EQ(cfg_r(&b, 0x00, 4), 0x56781234);
	CHECK_EQ(cfg_r(&b, 0x04, 2), 0x0007);
	CHECK_EQ(cfg_r(&b, 0x10, 4), (uint32_t)BAR0_AT);
	CHECK_EQ(cfg_r(&b, 0x18, 4), (uint32_t)BAR2_AT | 0xc);
	CHECK_EQ(cfg_r(&b, 0x1c, 4), BAR2_AT >> 32);
	CHECK_EQ(cfg_r(&b, 0x24, 4), BAR5_AT | 1);
	CHECK_EQ(cfg_r(&b, 0x3c, 1), 0x0b);
	/* Decode off afterwards unmaps, as for any guest write. */
	cfg_w(&b, 0x04, 2, 0x0004);
	CHECK(!hits(&b.mmio, BAR0_AT, &b.r32));
	CHECK_EQ(b.mapped_addr[0], 0);
	fx_destroy(&a);
	fx_destroy(&b);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* BARs that trade places between two loads: mapping from nothing must not collide. */
static void test_pci_bars_trade_places(void)
{
	static struct fixture a, b;
	static struct store st;
	struct dev_state_in in = store_in(&st);
	struct prop *p;

	CHECK_EQ(fx_init(&a), 0);
	fx_program(&a);
	cfg_w(&a, 0x18, 4, 0xc0200000);
	cfg_w(&a, 0x1c, 4, 0);
	{
		struct dev_state_out o = store_out(&st);

		memset(&st, 0, sizeof(st));
		CHECK_EQ(pci_device_save(&a.d, &o), 0);
	}
	CHECK_EQ(fx_init(&b), 0);
	CHECK_EQ(pci_device_load(&b.d, &in), 0);
	CHECK(hits(&b.mmio, 0xc0200000, &b.r64));
	p = store_find(&st, "config");
	put_le32(&p->data[0x10], 0xc0200000);
	put_le32(&p->data[0x18], 0xc0100000 | 0xc);
	CHECK_EQ(pci_device_load(&b.d, &in), 0);
	CHECK(hits(&b.mmio, 0xc0200000, &b.r32));
	CHECK(hits(&b.mmio, 0xc0100000, &b.r64));
	fx_destroy(&a);
	fx_destroy(&b);
}

static const struct pci_refusal {
	const char *what;
	uint32_t off;
	uint32_t val, len;	/* len 1 or 4 */
	int size_delta;
} pci_refusals[] = {
	{ "vendor id", .off = 0x00, .val = 0x35, .len = 1 },
	{ "device id", .off = 0x03, .val = 0x00, .len = 1 },
	{ "revision", .off = 0x08, .val = 0x08, .len = 1 },
	{ "status capability bit", .off = 0x06, .val = 0x00, .len = 1 },
	{ "header type multi-function", .off = 0x0e, .val = 0x80, .len = 1 },
	{ "capability pointer", .off = 0x34, .val = 0x48, .len = 1 },
	{ "capability contents", .off = 0x44, .val = 0xff, .len = 1 },
	{ "BAR 0 prefetchable flag", .off = 0x10, .val = (uint32_t)BAR0_AT | 0x8, .len = 4 },
	{ "BAR 0 size bits", .off = 0x10, .val = (uint32_t)BAR0_AT | 0x800, .len = 4 },
	{ "BAR 5 I/O flag", .off = 0x24, .val = BAR5_AT, .len = 4 },
	{ "unused BAR 1", .off = 0x14, .val = 0xc0300000, .len = 4 },
	{ "interrupt pin", .off = 0x3d, .val = 0x01, .len = 1 },
	{ "extended config", .off = 0x100, .val = 0x01, .len = 1 },
	{ "last byte", .off = PCI_CFG_SIZE - 1, .val = 0x01, .len = 1 },
	{ "BAR 0 over ECAM", .off = 0x10, .val = (uint32_t)PCI_ECAM_GPA, .len = 4 },
	{ "BAR 0 over BAR 2", .off = 0x10, .val = 0xc0201000, .len = 4 },	/* BAR 2 is at 0xc0200000 here */
	{ "I/O BAR 5 over 0xcf8", .off = 0x24, .val = 0xce0 | 1, .len = 4 },
	{ "short", .size_delta = -1 },
	{ "long", .size_delta = 1 },
};

/*
 * Each refusal against a device already loaded with a good state: -EINVAL, and the config,
 * the BAR mappings and the bar_mapped view are those of the good state.
 */
static void test_pci_refusals(void)
{
	static struct fixture a, b;
	static struct store good, bad;
	static uint8_t cfg_before[PCI_CFG_SIZE];
	struct dev_state_in in;

	CHECK_EQ(fx_init(&a), 0);
	fx_program(&a);
	cfg_w(&a, 0x18, 4, 0xc0200000 | 0xc);	/* BAR 2 in the 32-bit window for the overlap case */
	cfg_w(&a, 0x1c, 4, 0);
	{
		struct dev_state_out o = store_out(&good);

		memset(&good, 0, sizeof(good));
		CHECK_EQ(pci_device_save(&a.d, &o), 0);
	}
	CHECK_EQ(fx_init(&b), 0);
	in = store_in(&good);
	CHECK_EQ(pci_device_load(&b.d, &in), 0);
	memcpy(cfg_before, b.d.cfg, PCI_CFG_SIZE);
	for (size_t i = 0; i < sizeof(pci_refusals) / sizeof(pci_refusals[0]); i++) {
		const struct pci_refusal *r = &pci_refusals[i];
		struct prop *p;
		int ret;

		bad = good;
		p = store_find(&bad, "config");
		if (r->size_delta) {
			p->len = (size_t)((int)p->len + r->size_delta);
		} else if (r->len == 4) {
			put_le32(&p->data[r->off], r->val);
		} else {
			p->data[r->off] = (uint8_t)r->val;
		}
		in = store_in(&bad);
		ret = pci_device_load(&b.d, &in);
		if (ret != -EINVAL)
			fprintf(stderr, "  case \"%s\": load returned %d\n", r->what, ret);
		CHECK_EQ(ret, -EINVAL);
		CHECK(!memcmp(cfg_before, b.d.cfg, PCI_CFG_SIZE));
		CHECK(hits(&b.mmio, BAR0_AT, &b.r32));
		CHECK(hits(&b.mmio, 0xc0200000, &b.r64));
		CHECK(hits(&b.pio, BAR5_AT, &b.rio));
		CHECK_EQ(b.mapped_addr[0], BAR0_AT);
		CHECK_EQ(b.mapped_addr[2], 0xc0200000);
		CHECK_EQ(b.mapped_addr[5], BAR5_AT);
	}
	/* The ECAM and 0xcf8 ranges are still the host's. */
	CHECK_EQ(cfg_r(&b, 0x00, 4), 0x56781234);
	fx_destroy(&a);
	fx_destroy(&b);
}

static void test_pci_host_refusals(void)
{
	static struct fixture a, b;
	static struct store st;
	struct prop *p;
	uint32_t latch = 0x80000800u, v = 0;

	CHECK_EQ(fx_init(&a), 0);
	CHECK_EQ(fx_init(&b), 0);
	bus_access(&a.pio, 0xcf8, &latch, 4, 1);
	CHECK_EQ(save(&pci_host_dev_ops, &a.h, &st), 0);
	p = store_find(&st, "cf8");
	put_le32(p->data, 0x80000801u);		/* bits 1:0 read as zero */
	CHECK_EQ(load(&pci_host_dev_ops, &b.h, &st), -EINVAL);
	put_le32(p->data, 0x81000800u);		/* reserved bits 30:24 */
	CHECK_EQ(load(&pci_host_dev_ops, &b.h, &st), -EINVAL);
	put_le32(p->data, latch);
	store_find(&st, "config")->data[0x00] = 0x87;	/* not the bridge's vendor */
	CHECK_EQ(load(&pci_host_dev_ops, &b.h, &st), -EINVAL);
	CHECK_EQ(bus_access(&b.pio, 0xcf8, &v, 4, 0), 0);
	CHECK_EQ(v, 0);				/* the latch was not applied either */
	store_find(&st, "config")->data[0x00] = 0x86;
	CHECK_EQ(load(&pci_host_dev_ops, &b.h, &st), 0);
	CHECK_EQ(bus_access(&b.pio, 0xcf8, &v, 4, 0), 0);
	CHECK_EQ(v, latch);
	fx_destroy(&a);
	fx_destroy(&b);
}

TEST_MAIN(TEST(test_serial_roundtrip), TEST(test_serial_thr_pending),
	  TEST(test_serial_load_lowers_line), TEST(test_rtc_roundtrip),
	  TEST(test_acpi_pm_roundtrip), TEST(test_legacy_refusals), TEST(test_pci_roundtrip),
	  TEST(test_pci_bars_trade_places), TEST(test_pci_refusals),
	  TEST(test_pci_host_refusals))
