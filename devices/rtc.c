#include <errno.h>
#include <string.h>
#include <time.h>

#include "devices/dev.h"
#include "devices/rtc.h"
#include "vmm/bus.h"
#include "vmm/log.h"

enum { RTC_SEC = 0, RTC_MIN = 2, RTC_HOUR = 4, RTC_WDAY = 6, RTC_MDAY = 7, RTC_MON = 8,
       RTC_YEAR = 9, RTC_REG_A = 10, RTC_REG_B = 11, RTC_REG_C = 12, RTC_REG_D = 13,
       RTC_CENTURY = 0x32 };

static uint8_t bcd(int v)
{
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t rtc_reg(struct rtc *rtc, uint8_t idx)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	switch (idx) {
	case RTC_SEC: return bcd(tm.tm_sec);
	case RTC_MIN: return bcd(tm.tm_min);
	case RTC_HOUR: return bcd(tm.tm_hour);
	case RTC_WDAY: return bcd(tm.tm_wday + 1);
	case RTC_MDAY: return bcd(tm.tm_mday);
	case RTC_MON: return bcd(tm.tm_mon + 1);
	case RTC_YEAR: return bcd(tm.tm_year % 100);
	case RTC_CENTURY: return bcd(19 + tm.tm_year / 100);
	case RTC_REG_A: return 0x26;	/* 32.768 kHz base, 1024 Hz rate, never "update in progress" */
	case RTC_REG_B: return 0x02;	/* 24-hour, BCD */
	case RTC_REG_C: return 0;
	case RTC_REG_D: return 0x80;	/* battery good */
	default: return rtc->cmos[idx];
	}
}

static void rtc_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct rtc *rtc = opaque;
	uint8_t v = 0xff;

	pthread_mutex_lock(&rtc->lock);
	if (off == 1)
		v = rtc_reg(rtc, rtc->index);
	pthread_mutex_unlock(&rtc->lock);
	memset(data, 0, len);
	*(uint8_t *)data = v;
}

/* The registers whose value comes from the host or a constant, never from cmos[]. */
static int rtc_reg_fixed(uint8_t idx)
{
	return idx <= RTC_REG_D || idx == RTC_CENTURY;
}

static void rtc_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct rtc *rtc = opaque;
	uint8_t v = *(const uint8_t *)data;

	pthread_mutex_lock(&rtc->lock);
	if (off == 0)
		rtc->index = v & 0x7f; /* bit 7 is the NMI mask */
	else if (!rtc_reg_fixed(rtc->index))
		rtc->cmos[rtc->index] = v; /* the clock itself follows the host and ignores writes */
	pthread_mutex_unlock(&rtc->lock);
}

const struct io_ops rtc_ops = { .read = rtc_read, .write = rtc_write };

void rtc_init(struct rtc *rtc)
{
	memset(rtc, 0, sizeof(*rtc));
	pthread_mutex_init(&rtc->lock, NULL);
}

/*
 * The state is what the guest wrote: the index latch and the NVRAM bytes. The time registers
 * (0-9, century) are read from the host clock at every access and registers A-D are constants,
 * so the guest cannot change them and the clock must not be carried over: a restored guest
 * reads the host's time now, like a machine whose battery-backed clock ran while it was off.
 * Their bytes of cmos[] are never written and must be zero.
 */
struct rtc_regs {
	uint8_t index;			/* < 128 */
	uint8_t pad[7];
	uint8_t cmos[128];
};
_Static_assert(sizeof(struct rtc_regs) == 136, "rtc_regs layout");

static int rtc_save(void *dev, const struct dev_state_out *o)
{
	struct rtc *rtc = dev;
	struct rtc_regs r = { 0 };

	pthread_mutex_lock(&rtc->lock);
	r.index = rtc->index;
	memcpy(r.cmos, rtc->cmos, sizeof(r.cmos));
	pthread_mutex_unlock(&rtc->lock);
	return dev_put(o, "regs", &r, sizeof(r));
}

static int rtc_load(void *dev, const struct dev_state_in *in)
{
	struct rtc *rtc = dev;
	struct rtc_regs r;
	int ret;

	ret = dev_get(in, "regs", &r, sizeof(r));
	if (ret)
		return ret;
	if (r.index >= sizeof(r.cmos)) {
		pr_err("rtc: state: index %u is not below 128", r.index);
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(r.pad); i++) {
		if (r.pad[i]) {
			pr_err("rtc: state: pad byte %zu is not zero", i);
			return -EINVAL;
		}
	}
	for (uint8_t i = 0; i < sizeof(r.cmos); i++) {
		if (rtc_reg_fixed(i) && r.cmos[i]) {
			pr_err("rtc: state: cmos[0x%x] is a clock register, not NVRAM", i);
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&rtc->lock);
	rtc->index = r.index;
	memcpy(rtc->cmos, r.cmos, sizeof(rtc->cmos));
	pthread_mutex_unlock(&rtc->lock);
	return 0;
}

/* No quiesce or resume: the RTC only acts on vCPU exits. */
const struct dev_ops rtc_dev_ops = {
	.save = rtc_save,
	.load = rtc_load,
};
