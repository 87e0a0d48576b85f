/*
 * The policy API of `kumo coord` (paper 001's get/set idea). A policy reads the world only
 * through the sched_get_* calls and acts only through the sched_set_* calls; the coordinator
 * bounds every action by host limits and logs it. The calls go through an ops table held by the
 * coordinator, so a policy built as a shared object (`--policy ./my.so`, exporting a
 * `const struct sched_policy` named SCHED_POLICY_SYMBOL) needs nothing from kumo's symbols.
 * docs/coordinator.md describes the API, the verb and the built-in policies.
 */
#ifndef KUMO_SCHED_H
#define KUMO_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#define SCHED_API_VERSION	1
#define SCHED_POLICY_SYMBOL	"kumo_sched_policy"

struct sched;

/* What the VMM reports (`stats` verb) and what the host says of its vCPU threads. */
struct sched_mem {
	double age_s;			/* since the coordinator took this sample */
	uint64_t ram_bytes;		/* guest RAM */
	uint64_t resident_bytes;	/* guest RAM resident on the host */
	bool balloon;			/* has a balloon; the three below are valid */
	uint64_t target_bytes;		/* memory the guest should keep */
	uint64_t actual_bytes;		/* memory it keeps now */
	bool balloon_stats;		/* the guest's balloon statistics below are valid */
	double balloon_stats_age_s;
	uint64_t swap_in, swap_out, major_faults, minor_faults;	/* pages / events */
	uint64_t free_memory, total_memory, available_memory, disk_caches;	/* bytes */
};

struct sched_cpu {
	double age_s;
	int vcpus;			/* vCPU threads found (kumo-vcpuN) */
	uint64_t vcpu_time_ns;		/* their user+system time, summed */
	int nice;			/* nice of vCPU thread 0 (what sched_set_nice last set) */
};

/* The guest agent's latest statistics (`agent-stats`): memory in bytes, counters as counted. */
struct sched_agent {
	double age_s;			/* of the agent's data, as the VMM reports it, plus ours */
	uint64_t seq;
	uint64_t mem_total, mem_free, mem_available, cached, active_file, inactive_file;
	uint64_t committed_as, swap_total, swap_free;
	uint64_t refault_file, activate_file, pgmajfault, pswpin, pswpout, pgscan;
	bool psi;			/* psi_* valid */
	double psi_some_avg10, psi_full_avg10;
};

struct sched_host {
	double load[3];			/* 1, 5, 15 min */
	int cpus;			/* online */
	uint64_t mem_total, mem_available;	/* bytes, /proc/meminfo */
	uint64_t budget_bytes;		/* what the VMs' memory targets may add up to */
	bool psi;
	double psi_some_avg10, psi_full_avg10;	/* /proc/pressure/memory */
};

/*
 * The calls. vm is 0..vm_count-1; a VM that is not connected is still listed (its get_* fail
 * with -ENOTCONN) so a policy's per-VM state keeps its index. get_* return 0 or -errno:
 * -ENODATA (never sampled), -ESTALE (older than the coordinator's limit: do not act on it),
 * -ENOTCONN. set_* return 0 (done, possibly bounded) or -errno; the coordinator logs both.
 */
struct sched_ops {
	int version;			/* SCHED_API_VERSION */
	double (*now)(const struct sched *s);	/* monotonic seconds */
	int (*vm_count)(const struct sched *s);
	const char *(*vm_name)(const struct sched *s, int vm);
	int (*get_mem)(const struct sched *s, int vm, struct sched_mem *out);
	int (*get_cpu)(const struct sched *s, int vm, struct sched_cpu *out);
	int (*get_agent)(const struct sched *s, int vm, struct sched_agent *out);
	int (*get_host)(const struct sched *s, struct sched_host *out);
	/* Memory the guest should keep; bounded by its RAM and the host budget. */
	int (*set_balloon)(struct sched *s, int vm, uint64_t keep_bytes, const char *why);
	/* nice (-20..19) of every vCPU thread. */
	int (*set_nice)(struct sched *s, int vm, int nice, const char *why);
	/* cpu.weight (1..10000) of the cgroup (v2) the VMM runs in. */
	int (*set_cpu_weight)(struct sched *s, int vm, int weight, const char *why);
	/* Host CPUs ("0-1,3") vCPU vcpu's thread may run on. */
	int (*set_pin)(struct sched *s, int vm, int vcpu, const char *cpus, const char *why);
	/* Park (or unpark) guest CPUs ("1-3") through the agent. */
	int (*set_park)(struct sched *s, int vm, const char *cpus, bool park, const char *why);
	/* A line of the policy's own in the coordinator's log. */
	void (*log)(struct sched *s, const char *policy, const char *msg);
};

/* The head of the coordinator's state; everything else of it is private. */
struct sched {
	const struct sched_ops *ops;
};

/*
 * A policy. init (optional) runs once with the coordinator connected to what it could reach and
 * may allocate *state (0 or -errno; an error stops kumo coord). tick runs every period_ms, after a
 * fresh sample. fini (optional) frees the state.
 */
struct sched_policy {
	const char *name;
	unsigned int period_ms;
	int (*init)(struct sched *s, void **state);
	void (*tick)(struct sched *s, void *state);
	void (*fini)(void *state);
};

static inline double sched_now(const struct sched *s) { return s->ops->now(s); }
static inline int sched_vm_count(const struct sched *s) { return s->ops->vm_count(s); }
static inline const char *sched_vm_name(const struct sched *s, int vm)
{
	return s->ops->vm_name(s, vm);
}
static inline int sched_get_mem(const struct sched *s, int vm, struct sched_mem *out)
{
	return s->ops->get_mem(s, vm, out);
}
static inline int sched_get_cpu(const struct sched *s, int vm, struct sched_cpu *out)
{
	return s->ops->get_cpu(s, vm, out);
}
static inline int sched_get_agent(const struct sched *s, int vm, struct sched_agent *out)
{
	return s->ops->get_agent(s, vm, out);
}
static inline int sched_get_host(const struct sched *s, struct sched_host *out)
{
	return s->ops->get_host(s, out);
}
static inline int sched_set_balloon(struct sched *s, int vm, uint64_t keep_bytes, const char *why)
{
	return s->ops->set_balloon(s, vm, keep_bytes, why);
}
static inline int sched_set_nice(struct sched *s, int vm, int nice, const char *why)
{
	return s->ops->set_nice(s, vm, nice, why);
}
static inline int sched_set_cpu_weight(struct sched *s, int vm, int weight, const char *why)
{
	return s->ops->set_cpu_weight(s, vm, weight, why);
}
static inline int sched_set_pin(struct sched *s, int vm, int vcpu, const char *cpus,
				const char *why)
{
	return s->ops->set_pin(s, vm, vcpu, cpus, why);
}
static inline int sched_set_park(struct sched *s, int vm, const char *cpus, bool park,
				 const char *why)
{
	return s->ops->set_park(s, vm, cpus, park, why);
}
static inline void sched_log(struct sched *s, const char *policy, const char *msg)
{
	s->ops->log(s, policy, msg);
}

#endif
