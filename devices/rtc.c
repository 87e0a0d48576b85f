#include <string.h>
#include <time.h>

#include "devices/rtc.h"
#include "vmm/bus.h"

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

static void rtc_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct rtc *rtc = opaque;
	uint8_t v = *(const uint8_t *)data;

	pthread_mutex_lock(&rtc->lock);
	if (off == 0)
		rtc->index = v & 0x7f; /* bit 7 is the NMI mask */
	else if (rtc->index > RTC_REG_D && rtc->index != RTC_CENTURY)
		rtc->cmos[rtc->index] = v; /* the clock itself follows the host and ignores writes */
	pthread_mutex_unlock(&rtc->lock);
}

const struct io_ops rtc_ops = { .read = rtc_read, .write = rtc_write };

void rtc_init(struct rtc *rtc)
{
	memset(rtc, 0, sizeof(*rtc));
	pthread_mutex_init(&rtc->lock, NULL);
}
