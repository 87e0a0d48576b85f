/*
 * The guest physical map. RAM sits below the 32-bit PCI hole and continues at 4 GiB.
 *
 *   0x0000_0500  GDT            0x0000_7000  zero page (boot_params)
 *   0x0000_9000  PML4           0x0000_A000  PDPT      0x0000_B000 4 page directories
 *   0x0002_0000  kernel command line (up to 64 KiB)
 *   0x0009_F000 .. 0x0010_0000  reserved (EBDA, VGA, BIOS area); ACPI tables at 0xE0000
 *   0xC000_0000 .. 4 GiB        32-bit hole: PCI MMIO, ECAM, IOAPIC, LAPIC
 */
#ifndef KUMO_LAYOUT_H
#define KUMO_LAYOUT_H

#define BOOT_GDT_GPA 0x500ULL
#define BOOT_IDT_GPA 0x520ULL
#define BOOT_ZERO_PAGE_GPA 0x7000ULL
#define BOOT_PML4_GPA 0x9000ULL
#define BOOT_PDPT_GPA 0xA000ULL
#define BOOT_PD_GPA 0xB000ULL /* 4 pages: identity map of the low 4 GiB with 2 MiB pages */
#define BOOT_CMDLINE_GPA 0x20000ULL
#define BOOT_CMDLINE_MAX 0x10000ULL

#define EBDA_START 0x9F000ULL
#define ACPI_TABLES_GPA 0xE0000ULL
#define ACPI_TABLES_SIZE 0x20000ULL
#define HIGH_MEM_START 0x100000ULL

#define MEM_32BIT_HOLE_START 0xC0000000ULL
#define MEM_4G 0x100000000ULL
#define PCI_MMIO_START 0xC0000000ULL
#define PCI_MMIO_SIZE 0x20000000ULL
#define PCI_ECAM_GPA 0xE0000000ULL
#define PCI_ECAM_SIZE 0x10000000ULL
#define IOAPIC_GPA 0xFEC00000ULL
#define LAPIC_GPA 0xFEE00000ULL

/* I/O ports of our fixed devices. */
#define SERIAL_COM1_PORT 0x3f8
#define SERIAL_COM1_IRQ 4
#define ACPI_PM1A_EVT_PORT 0x600 /* 4 bytes: status, enable */
#define ACPI_PM1A_CNT_PORT 0x604 /* 2 bytes */
#define ACPI_SCI_IRQ 9
#define ACPI_S5_SLP_TYP 5
#define RESET_PORT 0xcf9

#endif
