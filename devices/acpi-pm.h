/*
 * ACPI fixed hardware the FADT points at: the PM1a event and control blocks (S5 power-off) and
 * the reset register at 0xcf9. Also the legacy keyboard-controller reset (0x64 <- 0xfe).
 */
#ifndef KUMO_ACPI_PM_H
#define KUMO_ACPI_PM_H

#include <pthread.h>
#include <stdint.h>

enum pm_event { PM_POWEROFF = 1, PM_RESET };

struct acpi_pm {
	pthread_mutex_t lock;
	uint16_t pm1_sts, pm1_en, pm1_cnt;
	void (*event)(void *opaque, enum pm_event ev);
	void *opaque;
};

extern const struct io_ops acpi_pm_evt_ops;	/* 4 bytes at ACPI_PM1A_EVT_PORT */
extern const struct io_ops acpi_pm_cnt_ops;	/* 2 bytes at ACPI_PM1A_CNT_PORT */
extern const struct io_ops acpi_reset_ops;	/* 1 byte at RESET_PORT */
extern const struct io_ops kbd_reset_ops;	/* 1 byte at 0x64 */

/* dev is a struct acpi_pm *; state: "regs" (struct acpi_pm_regs in acpi-pm.c). */
struct dev_ops;
extern const struct dev_ops acpi_pm_dev_ops;

void acpi_pm_init(struct acpi_pm *pm, void (*event)(void *opaque, enum pm_event ev),
		  void *opaque);

#endif
