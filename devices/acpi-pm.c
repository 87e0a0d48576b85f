#include <errno.h>
#include <string.h>

#include "devices/acpi-pm.h"
#include "devices/dev.h"
#include "vmm/bus.h"
#include "vmm/layout.h"
#include "vmm/log.h"

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_EN 0x2000
/* The status bits ACPI 6.5 (4.8.3.1) defines: TMR, BM, GBL, PWRBTN, SLPBTN, RTC, PCIEXP_WAKE, WAK. */
#define PM1_STS_DEFINED 0xc731


/* PM1a_EVT: status (write 1 to clear) at 0, enable at 2. */
static void evt_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;
	uint32_t both;

	pthread_mutex_lock(&pm->lock);
	both = pm->pm1_sts | ((uint32_t)pm->pm1_en << 16);
	pthread_mutex_unlock(&pm->lock);
	io_put_le(data, len, (both >> (off * 8)) & (len >= 4 ? 0xffffffffu : (1u << (len * 8)) - 1));
}

static void evt_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;
	uint32_t v = (uint32_t)io_get_le(data, len);

	pthread_mutex_lock(&pm->lock);
	for (uint32_t i = 0; i < len; i++) {
		uint8_t b = (uint8_t)(v >> (i * 8));
		uint64_t at = off + i;

		if (at < 2)
			pm->pm1_sts &= (uint16_t)~((uint16_t)b << (at * 8));
		else
			pm->pm1_en = (uint16_t)((pm->pm1_en & ~(0xff << ((at - 2) * 8))) |
						((uint16_t)b << ((at - 2) * 8)));
	}
	pthread_mutex_unlock(&pm->lock);
}

static void cnt_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;
	uint16_t v;

	pthread_mutex_lock(&pm->lock);
	v = pm->pm1_cnt | PM1_CNT_SCI_EN; /* always in ACPI mode: SMI_CMD is 0 in the FADT */
	pthread_mutex_unlock(&pm->lock);
	io_put_le(data, len, off ? (uint64_t)(v >> 8) : v);
}

static void cnt_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;
	uint16_t v = (uint16_t)io_get_le(data, len);
	int poweroff;

	pthread_mutex_lock(&pm->lock);
	if (off) /* a byte write to the high half */
		v = (uint16_t)((v << 8) | (pm->pm1_cnt & 0xff));
	else if (len == 1)
		v = (uint16_t)((pm->pm1_cnt & 0xff00) | (v & 0xff));
	pm->pm1_cnt = v & (uint16_t)~PM1_CNT_SLP_EN;
	pthread_mutex_unlock(&pm->lock);
	poweroff = (v & PM1_CNT_SLP_EN) &&
		   ((v >> PM1_CNT_SLP_TYP_SHIFT) & 7) == ACPI_S5_SLP_TYP;
	if (poweroff && pm->event)
		pm->event(pm->opaque, PM_POWEROFF);
}

static void reset_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;

	/* 0xcf9: bit 2 starts the reset (Linux writes 0x06 as the FADT says). */
	if ((*(const uint8_t *)data & 0x04) && pm->event)
		pm->event(pm->opaque, PM_RESET);
}

static void kbd_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;

	if (*(const uint8_t *)data == 0xfe && pm->event)
		pm->event(pm->opaque, PM_RESET);
}

static void kbd_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	/* No 8042 here: status reads "input buffer empty, no data", so Linux's reset loop ends. */
	io_put_le(data, len, 0);
}

const struct io_ops acpi_pm_evt_ops = { .read = evt_read, .write = evt_write };
const struct io_ops acpi_pm_cnt_ops = { .read = cnt_read, .write = cnt_write };
const struct io_ops acpi_reset_ops = { .write = reset_write };
const struct io_ops kbd_reset_ops = { .read = kbd_read, .write = kbd_write };

void acpi_pm_init(struct acpi_pm *pm, void (*event)(void *opaque, enum pm_event ev), void *opaque)
{
	memset(pm, 0, sizeof(*pm));
	pthread_mutex_init(&pm->lock, NULL);
	pm->event = event;
	pm->opaque = opaque;
}

/* The event and control registers; the event callback is the new process's own. */
struct acpi_pm_regs {
	uint16_t pm1_sts;	/* only ACPI-defined status bits */
	uint16_t pm1_en;
	uint16_t pm1_cnt;	/* SLP_EN is never stored: writing it acts at once */
	uint16_t pad;
};
_Static_assert(sizeof(struct acpi_pm_regs) == 8, "acpi_pm_regs layout");

static int acpi_pm_save(void *dev, const struct dev_state_out *o)
{
	struct acpi_pm *pm = dev;
	struct acpi_pm_regs r = { 0 };

	pthread_mutex_lock(&pm->lock);
	r.pm1_sts = pm->pm1_sts;
	r.pm1_en = pm->pm1_en;
	r.pm1_cnt = pm->pm1_cnt;
	pthread_mutex_unlock(&pm->lock);
	return dev_put(o, "regs", &r, sizeof(r));
}

static int acpi_pm_load(void *dev, const struct dev_state_in *in)
{
	struct acpi_pm *pm = dev;
	struct acpi_pm_regs r;
	int ret;

	ret = dev_get(in, "regs", &r, sizeof(r));
	if (ret)
		return ret;
	if (r.pm1_sts & ~PM1_STS_DEFINED) {
		pr_err("acpi-pm: state: pm1_sts 0x%x has undefined bits", r.pm1_sts);
		return -EINVAL;
	}
	if (r.pm1_cnt & PM1_CNT_SLP_EN) {
		pr_err("acpi-pm: state: pm1_cnt 0x%x has SLP_EN set", r.pm1_cnt);
		return -EINVAL;
	}
	if (r.pad) {
		pr_err("acpi-pm: state: pad 0x%x is not zero", r.pad);
		return -EINVAL;
	}
	pthread_mutex_lock(&pm->lock);
	pm->pm1_sts = r.pm1_sts;
	pm->pm1_en = r.pm1_en;
	pm->pm1_cnt = r.pm1_cnt;
	pthread_mutex_unlock(&pm->lock);
	return 0;
}

/* No quiesce or resume: these registers only act on vCPU exits. */
const struct dev_ops acpi_pm_dev_ops = {
	.save = acpi_pm_save,
	.load = acpi_pm_load,
};
