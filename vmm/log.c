#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "vmm/log.h"

int log_level = LOG_INFO;

static const char *const prefix[] = {
	[LOG_ERR] = "error: ", [LOG_WARN] = "warning: ", [LOG_INFO] = "", [LOG_DEBUG] = "debug: ",
};

void log_printf(int level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	fprintf(stderr, "kumo: %s", prefix[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void log_phase(const char *name)
{
	static int64_t first, last;	/* ns, CLOCK_MONOTONIC: the first call's, the last's */
	int64_t now, prev, zero = 0;
	struct timespec ts;

	if (log_level < LOG_DEBUG)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	__atomic_compare_exchange_n(&first, &zero, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	prev = __atomic_exchange_n(&last, now, __ATOMIC_RELAXED);
	log_printf(LOG_DEBUG, "phase %s: +%.1f ms (%.1f ms since the first)", name,
		   prev ? (double)(now - prev) / 1e6 : 0.0,
		   (double)(now - __atomic_load_n(&first, __ATOMIC_RELAXED)) / 1e6);
}

int log_ratelimit(int *burst, long *last_sec)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ts.tv_sec != *last_sec) {
		*last_sec = ts.tv_sec;
		*burst = 0;
	}
	/* Racy across threads on purpose: an occasional extra line is harmless. */
	return ++*burst <= 10;
}
