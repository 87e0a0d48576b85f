/* The built-in policies and the pure decision functions they are made of (unit-tested). */
#ifndef KUMO_SCHED_POLICIES_H
#define KUMO_SCHED_POLICIES_H

#include <stdbool.h>
#include <stdint.h>

#include "sched/sched.h"

extern const struct sched_policy sched_policy_margin;

/* NULL-terminated list of the built-in policies. */
extern const struct sched_policy *const sched_builtin_policies[];

/*
 * margin (paper 002): W = Committed_AS + MarginSize. Every adjust_s the margin moves by an
 * UP/DOWN state machine; every tick the balloon target goes to W (within floor..RAM).
 */
struct margin_params {
	double adjust_s;		/* margin adjustment period (5 s) */
	double stale_s;			/* agent data older than this: hold */
	uint64_t margin_init, margin_min, margin_max;	/* bytes */
	uint64_t step_up, step_down;	/* bytes per adjustment */
	uint64_t floor;			/* never keep less (bytes) */
	uint64_t hysteresis;		/* skip a balloon-set closer than this to the last target */
	uint64_t refault_pages;		/* file refaults per adjustment that count as pressure */
	double psi_some;		/* PSI some avg10 (%) that counts as pressure */
};
extern const struct margin_params margin_defaults;

enum margin_state { MARGIN_UP, MARGIN_DOWN };

/* Per-VM state of the margin policy. Zeroed = never seen. */
struct margin_vm {
	bool have_base;			/* the fields below hold a baseline */
	enum margin_state state;
	uint64_t margin;
	double last_adjust;
	uint64_t cached, active_file, refault_file, pswpin, pgmajfault;
	uint64_t last_target;		/* 0: none set by us yet */
};

/* What one tick knows of one VM. */
struct margin_input {
	double now;
	bool mem_ok;			/* VMM stats fresh, with a balloon */
	bool agent_ok;			/* agent stats fresh (age below stale_s) */
	uint64_t ram_bytes, target_bytes;	/* from the VMM */
	struct sched_agent agent;
};

enum margin_action { MARGIN_HOLD, MARGIN_SET };

struct margin_decision {
	enum margin_action action;
	uint64_t target;		/* with MARGIN_SET */
	const char *why;		/* short reason, for the log */
	bool adjusted;			/* the margin moved this tick */
};

/* One tick for one VM: a pure function of params, state and input (updates state). */
void margin_step(const struct margin_params *p, struct margin_vm *vm,
		 const struct margin_input *in, struct margin_decision *d);

#endif
