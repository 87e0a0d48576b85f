/*
 * ACPI tables, laid out in one buffer that the VMM copies to guest-physical memory:
 *
 *   +0x00 RSDP (16-byte aligned, first)   +0x40 FACS (64-byte aligned)   +0x80 DSDT
 *   then FADT, MADT, [MCFG], ... each 8-byte aligned, and the XSDT last, written from the list
 *   of tables appended with acpi_table_end(b, hdr, ACPI_XSDT) so a new table is one call.
 *
 * Field layouts follow ACPI 6.5 (FADT revision 6, minor 5: 276 bytes).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "vmm/acpi.h"
#include "vmm/aml.h"
#include "vmm/layout.h"

#define ACPI_OEM_ID "KUMO  "
#define ACPI_OEM_TABLE_ID "KUMOVM  "
#define ACPI_OEM_REVISION 1
#define ACPI_CREATOR_ID "KUMO"
#define ACPI_CREATOR_REVISION 1
#define ACPI_MAX_TABLES 16

/*
 * KVM's in-kernel IOAPIC resets its ID register to 0 and QEMU declares 0 too. IOAPIC and local
 * APIC IDs are separate name spaces since the xAPIC system bus; x86-64 Linux only checks that
 * IOAPIC IDs are unique among IOAPICs (and with > 255 vCPUs no 8-bit ID would be free anyway).
 */
#define ACPI_IOAPIC_ID 0

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum;	/* over the first 20 bytes */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t ext_checksum;	/* over all 36 bytes */
	uint8_t reserved[3];
} __attribute__((packed));

struct acpi_gas {
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t address;
} __attribute__((packed));

#define ACPI_GAS_SYSTEM_IO 1
#define ACPI_GAS_ACCESS_BYTE 1
#define ACPI_GAS_ACCESS_WORD 2

struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
	uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct acpi_gas sleep_control_reg, sleep_status_reg;
	uint64_t hypervisor_vendor_id;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_header) == 36, "ACPI header");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");
_Static_assert(offsetof(struct acpi_fadt, dsdt) == 40, "FADT.DSDT");
_Static_assert(offsetof(struct acpi_fadt, sci_int) == 46, "FADT.SCI_INT");
_Static_assert(offsetof(struct acpi_fadt, pm1a_evt_blk) == 56, "FADT.PM1a_EVT_BLK");
_Static_assert(offsetof(struct acpi_fadt, pm1_evt_len) == 88, "FADT.PM1_EVT_LEN");
_Static_assert(offsetof(struct acpi_fadt, iapc_boot_arch) == 109, "FADT.IAPC_BOOT_ARCH");
_Static_assert(offsetof(struct acpi_fadt, flags) == 112, "FADT.Flags");
_Static_assert(offsetof(struct acpi_fadt, reset_reg) == 116, "FADT.RESET_REG");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT.X_DSDT");
_Static_assert(offsetof(struct acpi_fadt, x_pm1a_evt_blk) == 148, "FADT.X_PM1a_EVT_BLK");
_Static_assert(offsetof(struct acpi_fadt, sleep_control_reg) == 244, "FADT.SLEEP_CONTROL");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT");

/* FADT flags */
#define FADT_WBINVD (1u << 0)
#define FADT_PROC_C1 (1u << 2)
#define FADT_SLP_BUTTON (1u << 5)	/* no fixed-feature sleep button */
#define FADT_FIX_RTC (1u << 6)		/* RTC wake status not in the fixed registers */
#define FADT_RESET_REG_SUP (1u << 10)
/* IA-PC boot architecture flags */
#define BOOT_LEGACY_DEVICES (1u << 0)	/* user-visible ISA devices: COM1 */
#define BOOT_8042 (1u << 1)		/* left clear: no i8042, Linux does not probe it */
#define BOOT_VGA_NOT_PRESENT (1u << 2)
#define BOOT_PCIE_ASPM_CONTROLS (1u << 4) /* the OS must not enable ASPM */

#define FADT_RESET_VALUE 0x06	/* 0xcf9: full reset (bit 1) + start (bit 2) */
#define RTC_CENTURY_INDEX 0x32	/* devices/rtc.c serves the century at CMOS 0x32 */

struct acpi_facs {
	char signature[4];
	uint32_t length;
	uint32_t hardware_signature;
	uint32_t firmware_waking_vector;
	uint32_t global_lock;
	uint32_t flags;
	uint64_t x_firmware_waking_vector;
	uint8_t version;
	uint8_t reserved0[3];
	uint32_t ospm_flags;
	uint8_t reserved1[24];
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_facs) == 64, "FACS");

struct acpi_madt {
	struct acpi_header h;
	uint32_t lapic_address;
	uint32_t flags;
} __attribute__((packed));

#define MADT_PCAT_COMPAT (1u << 0)
#define MADT_ENABLED (1u << 0)

enum {
	MADT_LAPIC = 0, MADT_IOAPIC = 1, MADT_INT_OVERRIDE = 2, MADT_LAPIC_NMI = 4,
	MADT_X2APIC = 9, MADT_X2APIC_NMI = 10,
};

struct madt_lapic {
	uint8_t type, length, uid, apic_id;
	uint32_t flags;
} __attribute__((packed));

struct madt_ioapic {
	uint8_t type, length, id, reserved;
	uint32_t address;
	uint32_t gsi_base;
} __attribute__((packed));

struct madt_int_override {
	uint8_t type, length, bus, source;
	uint32_t gsi;
	uint16_t flags;
} __attribute__((packed));

/* MPS INTI flags: polarity in bits 1:0, trigger mode in bits 3:2 */
#define MPS_ACTIVE_HIGH 0x1
#define MPS_LEVEL 0xC

struct madt_lapic_nmi {
	uint8_t type, length, uid;
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

struct madt_x2apic {
	uint8_t type, length;
	uint16_t reserved;
	uint32_t x2apic_id;
	uint32_t flags;
	uint32_t uid;
} __attribute__((packed));

struct madt_x2apic_nmi {
	uint8_t type, length;
	uint16_t flags;
	uint32_t uid;
	uint8_t lint;
	uint8_t reserved[3];
} __attribute__((packed));

/* SRAT (ACPI 6.5, 5.2.16): a 48-byte header, then affinity structures. */
struct acpi_srat {
	struct acpi_header h;
	uint32_t reserved1;	/* 1, for backward compatibility */
	uint64_t reserved2;
} __attribute__((packed));

enum { SRAT_LAPIC = 0, SRAT_MEMORY = 1, SRAT_X2APIC = 2 };
#define SRAT_ENABLED (1u << 0)

struct srat_lapic {
	uint8_t type, length;
	uint8_t proximity_lo;	/* bits 7:0 of the proximity domain */
	uint8_t apic_id;
	uint32_t flags;
	uint8_t sapic_eid;
	uint8_t proximity_hi[3];	/* bits 31:8 */
	uint32_t clock_domain;
} __attribute__((packed));

struct srat_memory {
	uint8_t type, length;
	uint32_t proximity;
	uint16_t reserved1;
	uint32_t base_lo, base_hi, length_lo, length_hi;
	uint32_t reserved2;
	uint32_t flags;
	uint64_t reserved3;
} __attribute__((packed));

struct srat_x2apic {
	uint8_t type, length;
	uint16_t reserved1;
	uint32_t proximity;
	uint32_t x2apic_id;
	uint32_t flags;
	uint32_t clock_domain;
	uint32_t reserved2;
} __attribute__((packed));

/* SLIT (5.2.17): the number of localities, then an N x N matrix of byte distances. */
struct acpi_slit {
	struct acpi_header h;
	uint64_t localities;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_srat) == 48, "SRAT header");
_Static_assert(sizeof(struct srat_lapic) == 16, "SRAT LAPIC affinity");
_Static_assert(sizeof(struct srat_memory) == 40, "SRAT memory affinity");
_Static_assert(sizeof(struct srat_x2apic) == 24, "SRAT x2APIC affinity");
_Static_assert(sizeof(struct acpi_slit) == 44, "SLIT header");

_Static_assert(sizeof(struct madt_lapic) == 8, "MADT LAPIC");
_Static_assert(sizeof(struct madt_ioapic) == 12, "MADT IOAPIC");
_Static_assert(sizeof(struct madt_int_override) == 10, "MADT ISO");
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT LAPIC NMI");
_Static_assert(sizeof(struct madt_x2apic) == 16, "MADT x2APIC");
_Static_assert(sizeof(struct madt_x2apic_nmi) == 12, "MADT x2APIC NMI");

struct acpi_mcfg {
	struct acpi_header h;
	uint64_t reserved;
	struct {
		uint64_t base;
		uint16_t segment;
		uint8_t start_bus, end_bus;
		uint32_t reserved;
	} __attribute__((packed)) alloc[1];
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_mcfg) == 60, "MCFG");

#define PCI_LAST_BUS ((PCI_ECAM_SIZE >> 20) - 1)	/* 1 MiB of ECAM per bus */

struct acpi_builder {
	uint8_t *buf;
	size_t size, len;
	uint64_t gpa;
	int err;
	uint64_t xsdt[ACPI_MAX_TABLES];
	unsigned int ntables;
};

enum { ACPI_NOT_LISTED, ACPI_XSDT };

uint8_t acpi_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return (uint8_t)-sum;
}

/* Zeroed room for len bytes whose guest address is a multiple of align (a power of 2). */
static void *acpi_alloc(struct acpi_builder *b, size_t len, size_t align)
{
	size_t pad = (size_t)(-(b->gpa + b->len) & (align - 1));
	void *p;

	if (b->err)
		return NULL;
	if (pad > b->size - b->len || len > b->size - b->len - pad) {
		b->err = -E2BIG;
		return NULL;
	}
	memset(b->buf + b->len, 0, pad + len);
	b->len += pad;
	p = b->buf + b->len;
	b->len += len;
	return p;
}

static uint64_t acpi_gpa(const struct acpi_builder *b, const void *p)
{
	return b->gpa + (uint64_t)((const uint8_t *)p - b->buf);
}

/* Starts a table of at least fixed_len bytes (header included); more may follow. */
static void *acpi_table_begin(struct acpi_builder *b, const char *sig, uint8_t rev,
			      size_t fixed_len)
{
	struct acpi_header *h = acpi_alloc(b, fixed_len, 8);

	if (!h)
		return NULL;
	memcpy(h->signature, sig, 4);
	h->revision = rev;
	memcpy(h->oem_id, ACPI_OEM_ID, 6);
	memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
	h->oem_revision = ACPI_OEM_REVISION;
	memcpy(h->creator_id, ACPI_CREATOR_ID, 4);
	h->creator_revision = ACPI_CREATOR_REVISION;
	return h;
}

/* Appends len zeroed bytes to the table being built. */
static void *acpi_table_grow(struct acpi_builder *b, size_t len)
{
	return acpi_alloc(b, len, 1);
}

/* Sets length and checksum, lists the table in the XSDT if asked; returns its gpa (0: error). */
static uint64_t acpi_table_end(struct acpi_builder *b, void *table, int list)
{
	struct acpi_header *h = table;
	uint64_t gpa;

	if (b->err || !h)
		return 0;
	h->length = (uint32_t)(b->buf + b->len - (uint8_t *)h);
	h->checksum = 0;
	h->checksum = acpi_checksum(h, h->length);
	gpa = acpi_gpa(b, h);
	if (list == ACPI_XSDT) {
		if (b->ntables == ACPI_MAX_TABLES) {
			b->err = -E2BIG;
			return 0;
		}
		b->xsdt[b->ntables++] = gpa;
	}
	return gpa;
}

static uint64_t build_facs(struct acpi_builder *b)
{
	struct acpi_facs *f = acpi_alloc(b, sizeof(*f), 64);

	if (!f)
		return 0;
	memcpy(f->signature, "FACS", 4);
	f->length = sizeof(*f);
	f->version = 2;
	return acpi_gpa(b, f);
}

static void dsdt_com1(struct aml *a)
{
	aml_device_begin(a, "COM1");
	aml_name_eisaid(a, "_HID", "PNP0501");
	aml_name_integer(a, "_UID", 1);
	aml_name(a, "_CRS");
	aml_restemplate_begin(a);
	aml_io(a, SERIAL_COM1_PORT, 8);
	aml_irq(a, SERIAL_COM1_IRQ);
	aml_restemplate_end(a);
	aml_end(a);
}

static void dsdt_rtc(struct aml *a)
{
	aml_device_begin(a, "RTC");
	aml_name_eisaid(a, "_HID", "PNP0B00");
	aml_name(a, "_CRS");
	aml_restemplate_begin(a);
	aml_io(a, 0x70, 2);
	aml_irq(a, 8);
	aml_restemplate_end(a);
	aml_end(a);
}

/*
 * The PCI root bridge. No _OSC: Linux then keeps PCIe native features off ("platform retains
 * control", an info line) which is fine for virtio devices on bus 0, and MSI/MSI-X stay on.
 * No _PRT either: devices are expected to use MSI-X (or report interrupt pin 0).
 */
static void dsdt_pci(struct aml *a, const struct acpi_config *cfg)
{
	aml_device_begin(a, "PCI0");
	aml_name_eisaid(a, "_HID", "PNP0A08");
	aml_name_eisaid(a, "_CID", "PNP0A03");
	aml_name_integer(a, "_SEG", 0);
	aml_name_integer(a, "_BBN", 0);
	aml_name_integer(a, "_UID", 0);
	aml_name(a, "_CRS");
	aml_restemplate_begin(a);
	aml_word_bus_number(a, 0, PCI_LAST_BUS);
	aml_io(a, 0xcf8, 8);	/* config mechanism #1, consumed by the bridge itself */
	/* I/O BARs come from above the fixed devices (COM1, RTC, PM at 0x600, 0xcf8-0xcff). */
	aml_word_io(a, 0x1000, 0xffff);
	aml_dword_memory(a, AML_MEM_NONCACHEABLE, PCI_MMIO_START,
			 PCI_MMIO_START + PCI_MMIO_SIZE - 1);
	if (cfg->pci_mmio64_size)
		aml_qword_memory(a, AML_MEM_NONCACHEABLE, cfg->pci_mmio64_base,
				 cfg->pci_mmio64_base + cfg->pci_mmio64_size - 1);
	aml_restemplate_end(a);
	aml_end(a);

	/* ECAM must be reserved by a motherboard resource (PCI Firmware spec 4.1.2), or Linux
	 * complains that MMCONFIG is "not reserved in ACPI motherboard resources". */
	aml_device_begin(a, "MRES");
	aml_name_eisaid(a, "_HID", "PNP0C02");
	aml_name_integer(a, "_UID", 0);
	aml_name(a, "_CRS");
	aml_restemplate_begin(a);
	aml_memory32_fixed(a, PCI_ECAM_GPA, PCI_ECAM_SIZE);
	aml_restemplate_end(a);
	aml_end(a);
}

static uint64_t build_dsdt(struct acpi_builder *b, const struct acpi_config *cfg)
{
	struct acpi_header *h;
	struct aml a;
	long n;

	/* Revision 2: integers are 64 bits (needed for a QWord window). */
	h = acpi_table_begin(b, "DSDT", 2, sizeof(*h));
	if (!h)
		return 0;
	aml_init(&a, b->buf + b->len, b->size - b->len);

	/* \_S5: SLP_TYP for PM1a and PM1b, then two reserved. */
	aml_name(&a, "\\_S5");
	aml_package_begin(&a, 4);
	aml_integer(&a, ACPI_S5_SLP_TYP);
	aml_integer(&a, ACPI_S5_SLP_TYP);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_end(&a);

	aml_scope_begin(&a, "\\_SB");
	dsdt_com1(&a);
	dsdt_rtc(&a);
	if (cfg->pci)
		dsdt_pci(&a, cfg);
	aml_end(&a);

	n = aml_finish(&a);
	if (n < 0) {
		b->err = (int)n;
		return 0;
	}
	b->len += (size_t)n;
	return acpi_table_end(b, h, ACPI_NOT_LISTED);
}

static void gas_io(struct acpi_gas *g, uint16_t port, unsigned int bytes, uint8_t access)
{
	g->space_id = ACPI_GAS_SYSTEM_IO;
	g->bit_width = (uint8_t)(8 * bytes);
	g->access_size = access;
	g->address = port;
}

static uint64_t build_fadt(struct acpi_builder *b, uint64_t facs, uint64_t dsdt)
{
	struct acpi_fadt *f = acpi_table_begin(b, "FACP", 6, sizeof(*f));

	if (!f)
		return 0;
	f->minor_version = 5;
	/* The spec wants X_FIRMWARE_CTRL zero when FIRMWARE_CTRL is set; both DSDTs are allowed. */
	f->firmware_ctrl = (uint32_t)facs;
	f->dsdt = (uint32_t)dsdt;
	f->x_dsdt = dsdt;
	f->sci_int = ACPI_SCI_IRQ;
	/* SMI_CMD = 0: no SMM, the machine is always in ACPI mode (SCI_EN reads as 1). */
	f->pm1a_evt_blk = ACPI_PM1A_EVT_PORT;
	f->pm1a_cnt_blk = ACPI_PM1A_CNT_PORT;
	f->pm1_evt_len = 4;
	f->pm1_cnt_len = 2;
	gas_io(&f->x_pm1a_evt_blk, ACPI_PM1A_EVT_PORT, 4, ACPI_GAS_ACCESS_WORD);
	gas_io(&f->x_pm1a_cnt_blk, ACPI_PM1A_CNT_PORT, 2, ACPI_GAS_ACCESS_WORD);
	/* No PM timer (optional since ACPI 5.0A; Linux uses kvmclock/TSC), no GPE blocks. */
	/* C2/C3 latencies above 100/1000 us mean "not supported". */
	f->p_lvl2_lat = 0x0fff;
	f->p_lvl3_lat = 0x0fff;
	f->century = RTC_CENTURY_INDEX;
	f->iapc_boot_arch = BOOT_LEGACY_DEVICES | BOOT_VGA_NOT_PRESENT | BOOT_PCIE_ASPM_CONTROLS;
	/*
	 * PWR_BUTTON is clear: the power button is the fixed-feature one (PM1 PWRBTN_STS/EN, bit
	 * 8), which devices/acpi-pm.c can raise with an SCI for a clean shutdown, as QEMU does.
	 */
	f->flags = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_FIX_RTC |
		   FADT_RESET_REG_SUP;
	gas_io(&f->reset_reg, RESET_PORT, 1, ACPI_GAS_ACCESS_BYTE);
	f->reset_value = FADT_RESET_VALUE;
	memcpy(&f->hypervisor_vendor_id, "KUMOKUMO", 8);
	return acpi_table_end(b, f, ACPI_XSDT);
}

static uint64_t build_madt(struct acpi_builder *b, const struct acpi_config *cfg)
{
	struct acpi_madt *m = acpi_table_begin(b, "APIC", 5, sizeof(*m));
	struct madt_ioapic *io;
	struct madt_int_override *iso;
	int lapics = 0, x2apics = 0;

	if (!m)
		return 0;
	m->lapic_address = (uint32_t)LAPIC_GPA;
	m->flags = MADT_PCAT_COMPAT;	/* KVM's in-kernel irqchip has the two 8259s */

	/*
	 * The ACPI processor UID is the vCPU index in both entry kinds, so UIDs are unique. Linux
	 * ignores x2APIC entries with IDs < 255 when local APIC entries exist, hence the split.
	 */
	for (unsigned int i = 0; i < cfg->ncpus; i++) {
		uint32_t id = cfg->apic_ids ? cfg->apic_ids[i] : i;

		if (id < 255) {
			struct madt_lapic *l = acpi_table_grow(b, sizeof(*l));

			if (!l)
				return 0;
			l->type = MADT_LAPIC;
			l->length = sizeof(*l);
			l->uid = (uint8_t)i;
			l->apic_id = (uint8_t)id;
			l->flags = MADT_ENABLED;
			lapics++;
		} else {
			struct madt_x2apic *x = acpi_table_grow(b, sizeof(*x));

			if (!x)
				return 0;
			x->type = MADT_X2APIC;
			x->length = sizeof(*x);
			x->x2apic_id = id;
			x->flags = MADT_ENABLED;
			x->uid = i;
			x2apics++;
		}
	}

	io = acpi_table_grow(b, sizeof(*io));
	if (!io)
		return 0;
	io->type = MADT_IOAPIC;
	io->length = sizeof(*io);
	io->id = ACPI_IOAPIC_ID;
	io->address = (uint32_t)IOAPIC_GPA;
	io->gsi_base = 0;

	/*
	 * ISA IRQ0: KVM's default GSI routing (kvm_setup_default_irq_routing) is the identity,
	 * GSI n -> IOAPIC pin n (and PIC pin n for n < 16), and the in-kernel PIT raises GSI 0, so
	 * the timer sits on pin 0 and the usual IRQ0 -> GSI2 override would be wrong. QEMU only
	 * declares that override because it installs its own routing with GSI 0 -> pin 2
	 * (kvm_pc_setup_irq_routing); a VMM that does the same sets cfg->irq0_to_gsi2. Whoever
	 * calls KVM_SET_GSI_ROUTING (for MSI) replaces the whole table and must keep these entries.
	 */
	if (cfg->irq0_to_gsi2) {
		iso = acpi_table_grow(b, sizeof(*iso));
		if (!iso)
			return 0;
		iso->type = MADT_INT_OVERRIDE;
		iso->length = sizeof(*iso);
		iso->source = 0;
		iso->gsi = 2;
		iso->flags = 0;	/* conforms to the bus: edge, active high */
	}

	/* The SCI is level triggered; ACPI says active low unless overridden, we drive it high. */
	iso = acpi_table_grow(b, sizeof(*iso));
	if (!iso)
		return 0;
	iso->type = MADT_INT_OVERRIDE;
	iso->length = sizeof(*iso);
	iso->source = ACPI_SCI_IRQ;
	iso->gsi = ACPI_SCI_IRQ;
	iso->flags = MPS_LEVEL | MPS_ACTIVE_HIGH;

	/* NMI on LINT1 of every processor, as the BIOS sets up the local APICs. */
	if (lapics) {
		struct madt_lapic_nmi *n = acpi_table_grow(b, sizeof(*n));

		if (!n)
			return 0;
		n->type = MADT_LAPIC_NMI;
		n->length = sizeof(*n);
		n->uid = 0xff;	/* all */
		n->lint = 1;
	}
	if (x2apics) {
		struct madt_x2apic_nmi *n = acpi_table_grow(b, sizeof(*n));

		if (!n)
			return 0;
		n->type = MADT_X2APIC_NMI;
		n->length = sizeof(*n);
		n->uid = 0xffffffff;	/* all */
		n->lint = 1;
	}
	return acpi_table_end(b, m, ACPI_XSDT);
}

static uint64_t build_mcfg(struct acpi_builder *b)
{
	struct acpi_mcfg *m = acpi_table_begin(b, "MCFG", 1, sizeof(*m));

	if (!m)
		return 0;
	m->alloc[0].base = PCI_ECAM_GPA;
	m->alloc[0].segment = 0;
	m->alloc[0].start_bus = 0;
	m->alloc[0].end_bus = PCI_LAST_BUS;
	return acpi_table_end(b, m, ACPI_XSDT);
}

static uint64_t build_xsdt(struct acpi_builder *b)
{
	struct acpi_header *h = acpi_table_begin(b, "XSDT", 1, sizeof(*h));
	uint64_t *e;

	if (!h)
		return 0;
	e = acpi_table_grow(b, 8 * b->ntables);
	if (!e)
		return 0;
	memcpy(e, b->xsdt, 8 * b->ntables);
	return acpi_table_end(b, h, ACPI_NOT_LISTED);
}

/* SRAT: each vCPU's and each RAM range's node, the vCPUs split the same way as in the MADT. */
static uint64_t build_srat(struct acpi_builder *b, const struct acpi_config *cfg)
{
	struct acpi_srat *t = acpi_table_begin(b, "SRAT", 3, sizeof(*t));

	if (!t)
		return 0;
	t->reserved1 = 1;
	for (unsigned int i = 0; i < cfg->ncpus; i++) {
		uint32_t id = cfg->apic_ids ? cfg->apic_ids[i] : i, node = cfg->cpu_node[i];

		if (id < 255) {
			struct srat_lapic *l = acpi_table_grow(b, sizeof(*l));

			if (!l)
				return 0;
			l->type = SRAT_LAPIC;
			l->length = sizeof(*l);
			l->proximity_lo = (uint8_t)node;
			l->proximity_hi[0] = (uint8_t)(node >> 8);
			l->proximity_hi[1] = (uint8_t)(node >> 16);
			l->proximity_hi[2] = (uint8_t)(node >> 24);
			l->apic_id = (uint8_t)id;
			l->flags = SRAT_ENABLED;
		} else {
			struct srat_x2apic *x = acpi_table_grow(b, sizeof(*x));

			if (!x)
				return 0;
			x->type = SRAT_X2APIC;
			x->length = sizeof(*x);
			x->proximity = node;
			x->x2apic_id = id;
			x->flags = SRAT_ENABLED;
		}
	}
	for (unsigned int i = 0; i < cfg->nmem; i++) {
		struct srat_memory *m = acpi_table_grow(b, sizeof(*m));

		if (!m)
			return 0;
		m->type = SRAT_MEMORY;
		m->length = sizeof(*m);
		m->proximity = cfg->mem[i].node;
		m->base_lo = (uint32_t)cfg->mem[i].base;
		m->base_hi = (uint32_t)(cfg->mem[i].base >> 32);
		m->length_lo = (uint32_t)cfg->mem[i].size;
		m->length_hi = (uint32_t)(cfg->mem[i].size >> 32);
		m->flags = SRAT_ENABLED;
	}
	return acpi_table_end(b, t, ACPI_XSDT);
}

static uint64_t build_slit(struct acpi_builder *b, const struct acpi_config *cfg)
{
	struct acpi_slit *t = acpi_table_begin(b, "SLIT", 1, sizeof(*t));
	uint8_t *d = acpi_table_grow(b, (size_t)cfg->nnodes * cfg->nnodes);

	if (!t || !d)
		return 0;
	t->localities = cfg->nnodes;
	memcpy(d, cfg->distance, (size_t)cfg->nnodes * cfg->nnodes);
	return acpi_table_end(b, t, ACPI_XSDT);
}

/* The node layout must be one Linux accepts: SLIT 10 on the diagonal and above 10 elsewhere. */
static int check_numa(const struct acpi_config *cfg)
{
	if (!cfg->nnodes)
		return 0;
	if (cfg->nnodes > 256 || !cfg->cpu_node || !cfg->distance || (cfg->nmem && !cfg->mem))
		return -EINVAL;
	for (unsigned int i = 0; i < cfg->ncpus; i++)
		if (cfg->cpu_node[i] >= cfg->nnodes)
			return -EINVAL;
	for (unsigned int i = 0; i < cfg->nmem; i++)
		if (cfg->mem[i].node >= cfg->nnodes || !cfg->mem[i].size ||
		    cfg->mem[i].base + cfg->mem[i].size - 1 < cfg->mem[i].base)
			return -EINVAL;
	for (unsigned int i = 0; i < cfg->nnodes; i++)
		for (unsigned int j = 0; j < cfg->nnodes; j++) {
			uint8_t d = cfg->distance[i * cfg->nnodes + j];

			if (i == j ? d != 10 : (d <= 10 || d == 255))
				return -EINVAL;
		}
	return 0;
}

static int acpi_check_config(const struct acpi_config *cfg)
{
	if (!cfg->ncpus)
		return -EINVAL;
	for (unsigned int i = 0; i < cfg->ncpus; i++) {
		uint32_t id = cfg->apic_ids ? cfg->apic_ids[i] : i;

		if (id == 0xffffffff)
			return -EINVAL;
		/* A local APIC entry carries an 8-bit UID and 0xff means "all processors". */
		if (id < 255 && i >= 255)
			return -EINVAL;
	}
	if (cfg->pci_mmio64_size &&
	    cfg->pci_mmio64_base + cfg->pci_mmio64_size - 1 < cfg->pci_mmio64_base)
		return -EINVAL;
	return check_numa(cfg);
}

long acpi_build(void *buf, size_t size, uint64_t gpa, const struct acpi_config *cfg,
		uint64_t *rsdp_gpa)
{
	struct acpi_builder b = { .buf = buf, .size = size, .gpa = gpa };
	struct acpi_rsdp *rsdp;
	uint64_t facs, dsdt, xsdt;
	int ret;

	ret = acpi_check_config(cfg);
	if (ret)
		return ret;
	/* FADT.DSDT and FIRMWARE_CTRL are 32-bit fields. */
	if (gpa > UINT32_MAX || size > UINT32_MAX - gpa)
		return -EINVAL;

	rsdp = acpi_alloc(&b, sizeof(*rsdp), 16);
	facs = build_facs(&b);
	dsdt = build_dsdt(&b, cfg);
	build_fadt(&b, facs, dsdt);
	build_madt(&b, cfg);
	if (cfg->pci)
		build_mcfg(&b);
	if (cfg->nnodes) {
		build_srat(&b, cfg);
		build_slit(&b, cfg);
	}
	xsdt = build_xsdt(&b);
	if (b.err)
		return b.err;

	memcpy(rsdp->signature, "RSD PTR ", 8);
	memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
	rsdp->revision = 2;
	rsdp->rsdt_address = 0;
	rsdp->length = sizeof(*rsdp);
	rsdp->xsdt_address = xsdt;
	rsdp->checksum = acpi_checksum(rsdp, 20);
	rsdp->ext_checksum = acpi_checksum(rsdp, sizeof(*rsdp));
	*rsdp_gpa = acpi_gpa(&b, rsdp);
	return (long)b.len;
}
