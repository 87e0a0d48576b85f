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
