/* Leveled logging. Anything a guest can trigger goes through pr_*_ratelimited. */
#ifndef KUMO_LOG_H
#define KUMO_LOG_H

#include <stdarg.h>

enum { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern int log_level;

void log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Startup phases (kumo run -v): "phase NAME: +X ms (Y ms since the first)", from the first
 * call's time; any thread. The bench reads them for its exec -> first KVM_RUN breakdown.
 */
void log_phase(const char *name);
/* Returns 1 when a message from this call site may be printed now (burst of 10, then 1/s). */
int log_ratelimit(int *burst, long *last_sec);

#define pr_err(...) log_printf(LOG_ERR, __VA_ARGS__)
#define pr_warn(...) log_printf(LOG_WARN, __VA_ARGS__)
#define pr_info(...) log_printf(LOG_INFO, __VA_ARGS__)
#define pr_debug(...) log_printf(LOG_DEBUG, __VA_ARGS__)

#define __pr_ratelimited(level, ...)                                \
	do {                                                        \
		static int __rl_burst;                              \
		static long __rl_last;                              \
		if (log_ratelimit(&__rl_burst, &__rl_last))         \
			log_printf(level, __VA_ARGS__);             \
	} while (0)
#define pr_warn_ratelimited(...) __pr_ratelimited(LOG_WARN, __VA_ARGS__)
#define pr_err_ratelimited(...) __pr_ratelimited(LOG_ERR, __VA_ARGS__)

#endif
