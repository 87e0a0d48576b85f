/*
 * The coordinator's pure parsers: VMM replies and statistics (untrusted: fuzzed by
 * tests/fuzz/fuzz-sched-stats.c), the host's /proc text, and the host memory bound.
 */
#ifndef KUMO_SCHED_STATS_H
#define KUMO_SCHED_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "sched/sched.h"

struct json_object;

/*
 * One line from a control socket. 0: a reply, *id its integer id (-1 when not an integer),
 * *result its result (owned by the caller; NULL when it was not an object); -EREMOTEIO: an
 * error reply, its message in err, *id set; 1: an event (ignored); -EINVAL: anything else.
 */
int sched_parse_reply(const char *line, size_t len, int64_t *id, struct json_object **result,
		      char *err, size_t errlen);
/* The `stats` verb's result. 0 or -EINVAL (no guest_ram_bytes). Missing parts stay zero/false. */
int sched_parse_vmm_stats(struct json_object *result, struct sched_mem *out);
/* The `agent-stats` verb's result. 0, -ENOTCONN (agent not connected), -ENODATA (no data yet). */
int sched_parse_agent_stats(struct json_object *result, struct sched_agent *out);

/* Host text: 0 or -EINVAL. */
int sched_parse_loadavg(const char *text, double load[3]);
int sched_parse_meminfo(const char *text, uint64_t *total, uint64_t *available);
int sched_parse_psi(const char *text, double *some_avg10, double *full_avg10);
/* /proc/PID/task/TID/stat: utime+stime in ticks and nice. */
int sched_parse_task_stat(const char *text, uint64_t *ticks, int *nice);

/*
 * The memory target within bounds: want, at most ram and at most what the budget leaves after
 * the other VMs' targets (others); 0 when that is below floor (no room: do not act).
 */
uint64_t sched_bound_target(uint64_t want, uint64_t ram, uint64_t budget, uint64_t others,
			    uint64_t floor);

#endif
