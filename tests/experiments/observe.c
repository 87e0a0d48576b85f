/*
 * A policy that acts on nothing (for the experiments in tests/experiments/): every 5 s, one
 * `policy` line per VM in the coordinator's log with what the cache policy decides on, which
 * the log's samples do not carry: the period's file refaults and workingset activations, and
 * Cached, Active(file), Inactive(file), the balloon target and actual (MiB). Run beside the
 * policy under test, or alone for the baseline (the equal split), so both have the same figures:
 *   cc -shared -fPIC -O2 -I. -o observe.so tests/experiments/observe.c
 *   kumo coord --vm A --vm B --policy cache,./observe.so --log LOG
 * Line: "VM refaults R activations A cached C active AF inactive IF target T actual U".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "sched/sched.h"

#define MIB (1024ull * 1024)
#define MAXVM 16

struct obs {
	int seen[MAXVM];
	uint64_t refault[MAXVM], activate[MAXVM];
};

static int obs_init(struct sched *s, void **state)
{
	*state = calloc(1, sizeof(struct obs));
	return *state ? 0 : -ENOMEM;
}

static uint64_t delta(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}

static void obs_tick(struct sched *s, void *state)
{
	struct obs *o = state;

	for (int i = 0; i < sched_vm_count(s) && i < MAXVM; i++) {
		struct sched_agent a;
		struct sched_mem m;
		char msg[256];

		if (sched_get_agent(s, i, &a) || sched_get_mem(s, i, &m)) {
			o->seen[i] = 0;
			continue;
		}
		if (o->seen[i]) {
			snprintf(msg, sizeof(msg),
				 "%s refaults %llu activations %llu cached %llu active %llu inactive %llu"
				 " target %llu actual %llu", sched_vm_name(s, i),
				 (unsigned long long)delta(a.refault_file, o->refault[i]),
				 (unsigned long long)delta(a.activate_file, o->activate[i]),
				 (unsigned long long)(a.cached / MIB),
				 (unsigned long long)(a.active_file / MIB),
				 (unsigned long long)(a.inactive_file / MIB),
				 (unsigned long long)(m.target_bytes / MIB),
				 (unsigned long long)(m.actual_bytes / MIB));
			sched_log(s, "observe", msg);
		}
		o->seen[i] = 1;
		o->refault[i] = a.refault_file;
		o->activate[i] = a.activate_file;
	}
}

static void obs_fini(void *state)
{
	free(state);
}

const struct sched_policy kumo_sched_policy = {
	.name = "observe",
	.period_ms = 5000,
	.init = obs_init,
	.tick = obs_tick,
	.fini = obs_fini,
};
