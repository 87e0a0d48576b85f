/* MC146818 CMOS RTC at 0x70/0x71: the wall clock Linux reads at boot, from the host's time. */
#ifndef KUMO_RTC_H
#define KUMO_RTC_H

#include <pthread.h>
#include <stdint.h>

struct rtc {
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[128];
};

extern const struct io_ops rtc_ops; /* 2 ports at 0x70 */

/* dev is a struct rtc *; state: "regs" (struct rtc_regs in rtc.c). */
struct dev_ops;
extern const struct dev_ops rtc_dev_ops;

void rtc_init(struct rtc *rtc);

#endif
