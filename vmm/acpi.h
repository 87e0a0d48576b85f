/*
 * ACPI tables: RSDP, XSDT, FADT (+FACS), DSDT (AML from vmm/aml.c), MADT, and MCFG with PCI.
 * ACPI is the one description of the machine the guest gets: CPUs (MADT), power-off (FADT PM1a
 * + \_S5), virtual NUMA (SRAT, SLIT), the fixed power button (PM1 PWRBTN_STS/EN), reset register, COM1, RTC, PCI root.
 */
#ifndef KUMO_ACPI_H
#define KUMO_ACPI_H

#include <stddef.h>
#include <stdint.h>

/* One guest-physical RAM range of a proximity domain (virtual NUMA node). */
struct acpi_mem_affinity {
	uint64_t base;
	uint64_t size;
	uint32_t node;
};

struct acpi_config {
	unsigned int ncpus;
	const uint32_t *apic_ids;	/* ncpus entries (NULL: 0..ncpus-1); >= 255 get x2APIC */
	/* Everything below may stay 0: that is today's machine. */
	int pci;			/* \_SB.PCI0 host bridge (PNP0A08) in the DSDT, MCFG for ECAM */
	uint64_t pci_mmio64_base;	/* optional 64-bit PCI window; size 0 = none */
	uint64_t pci_mmio64_size;
	int irq0_to_gsi2;		/* MADT override ISA IRQ0 -> GSI2; only if the GSI routing
					   sends GSI 0 to IOAPIC pin 2 (QEMU does, KVM's default not) */
	/* Virtual NUMA: SRAT and SLIT are written when nnodes > 0. */
	unsigned int nnodes;
	const uint32_t *cpu_node;	/* ncpus entries: the node of each vCPU */
	const struct acpi_mem_affinity *mem;	/* nmem RAM ranges with their node */
	unsigned int nmem;
	const uint8_t *distance;	/* nnodes * nnodes, row-major: SLIT */
};

/*
 * Build all tables into buf (size bytes) that will be copied to guest-physical gpa.
 * Returns the number of bytes used (> 0) or -errno (-E2BIG when they do not fit).
 * *rsdp_gpa is where the RSDP landed (first, 16-byte aligned).
 */
long acpi_build(void *buf, size_t size, uint64_t gpa, const struct acpi_config *cfg,
		uint64_t *rsdp_gpa) __attribute__((warn_unused_result));

/* 8-bit checksum such that the sum of all bytes of the table is 0. */
uint8_t acpi_checksum(const void *p, size_t len);

#endif
