/* The built-in policies and the pure decision functions they are made of (unit-tested). */
#ifndef KUMO_SCHED_POLICIES_H
#define KUMO_SCHED_POLICIES_H

#include <stdbool.h>
#include <stdint.h>

#include "sched/sched.h"

extern const struct sched_policy sched_policy_margin;
extern const struct sched_policy sched_policy_cpu_priority;
extern const struct sched_policy sched_policy_cpu_weight;
extern const struct sched_policy sched_policy_exclusive;
extern const struct sched_policy sched_policy_cache;

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

/*
 * cpu-priority / cpu-weight (paper 001): load1 per CPU above high → the lowest-priority VM
 * (highest level, later on a tie) one level down; below low → the highest-priority VM (lowest
 * level, earlier on a tie) one level up; levels within -bound..bound. The level is the nice of
 * the vCPU threads, or for cpu-weight the nice whose weight cpu.weight gets.
 */
struct cpuprio_params {
	double high, low;		/* load1 per online CPU (0.9, 0.1) */
	int bound;			/* 15 */
};
extern const struct cpuprio_params cpuprio_defaults;

struct cpuprio_vm {
	bool ok;			/* fresh figures: a candidate */
	int level;			/* its nice (or the cpu.weight variant's level) */
};

struct cpuprio_decision {
	int vm;				/* -1: hold */
	int level;			/* the new level of vm */
	double load;			/* load1 per CPU it decided on */
	const char *why;
};

void cpuprio_step(const struct cpuprio_params *p, double load1, int cpus,
		  const struct cpuprio_vm *vms, int n, struct cpuprio_decision *d);
/* cgroup v2 cpu.weight for a level: 100 at 0, 1.25x per step as the kernel's nice weights. */
int cpuprio_weight(int level);

/*
 * exclusive (paper 004): disjoint pCPU shares. excl_assign gives each of n VMs at least one
 * of ncpus host CPUs, the rest by demand (CPUs used), at most one per vCPU, cut in node order
 * (cpu_node[c] is CPU c's node) in VM order: out[i] is VM i's CPU mask. 0, -EAGAIN (a VM
 * without fresh figures: hold), -ENOSPC (more VMs than CPUs) or -EINVAL.
 */
#define EXCL_MAX_CPUS	64
#define EXCL_MAX_VMS	64
struct excl_params {
	double min_demand;		/* demand below this counts as this (CPUs) */
};
extern const struct excl_params excl_defaults;

struct excl_vm {
	bool ok;
	int vcpus;
	double demand;			/* CPUs its vCPU threads used over the last period */
};

int excl_assign(const struct excl_params *p, const int *cpu_node, int ncpus,
		const struct excl_vm *vms, int n, uint64_t *out);
/*
 * Where a VM's vCPUs go within its share: pin[v] the pCPU of vCPU v, or -1 for a vCPU to park
 * (its bit set in *parked). A VM with as many vCPUs as the host has CPUs (--numa full) keeps
 * vCPU c on pCPU c; another runs its first vCPUs on its pCPUs in order.
 */
void excl_layout(uint64_t share, int vcpus, int ncpus, int *pin, uint64_t *parked);
/* A CPU mask as a list ("0-3,6"). 0 or -ENOSPC. */
int excl_cpulist(uint64_t mask, char *buf, size_t size);

/*
 * cache (paper 000): per period, the VM whose cache pays off least (workingset activations of
 * file pages per cached page: refaults that more memory would have made hits) gives step bytes
 * of balloon target to the one that pays off most, if that one has at least activate_min such
 * refaults (or is under pressure) and pays off ratio times more; the giver keeps at least
 * max(Committed_AS + Active(file) + floor, min_keep).
 */
struct cache_params {
	double stale_s;
	uint64_t step, floor, min_keep;	/* bytes */
	uint64_t activate_min;		/* activations per period that say "more would help" */
	uint64_t min_move;		/* bytes: a smaller move is not made */
	double ratio;			/* taker's payoff / giver's payoff needed to move */
	double psi_pressure;		/* PSI some avg10 (%): pressure (never gives, may take) */
};
extern const struct cache_params cache_defaults;

/* Per-VM state; zeroed = never seen. The fields after the counters are this tick's view. */
struct cache_vm {
	bool have_base;
	uint64_t refault, activate;	/* counters at the last tick */
	bool eligible, pressure;
	uint64_t hits, refaults, headroom;	/* hits: file activations in the period */
	double score;			/* activations per cached page over the last period */
};

struct cache_input {
	bool ok;			/* VMM stats with a balloon and agent stats, fresh */
	uint64_t ram, target;
	struct sched_agent agent;
};

struct cache_decision {
	int from, to;			/* -1: hold */
	uint64_t amount, from_target, to_target;
	const char *why;
};

void cache_step(const struct cache_params *p, struct cache_vm *st, const struct cache_input *in,
		int n, struct cache_decision *d);

#endif
