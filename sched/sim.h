/*
 * `kumo sim`: the coordinator's policies, unchanged, against modelled VMs in virtual time
 * (docs/sim.md). The model (sched/sim-model.c): a page cache per VM kept as Linux keeps it
 * (inactive/active file LRU, shadow entries, refault distance, workingset activations), a
 * balloon that moves at a modelled rate, anonymous memory following Committed_AS, vCPUs sharing
 * host CPUs by weight. The scenario format and the runner are sched/sim.c.
 */
#ifndef KUMO_SCHED_SIM_H
#define KUMO_SCHED_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- the page cache (one per VM) ---- */

enum { SIM_PAGE_NONE, SIM_PAGE_INACTIVE, SIM_PAGE_ACTIVE };

struct sim_lru_stats {
	uint64_t hits, misses;
	uint64_t refault, activate;	/* workingset_refault_file, workingset_activate_file */
	uint64_t evicted, scanned;	/* pages reclaimed, pages looked at by reclaim */
	uint64_t deactivated;
};

struct sim_lru {
	uint32_t npages;		/* the file space: page ids 0..npages-1 */
	uint32_t page_bytes;		/* what one modelled page stands for */
	int32_t *prev, *next;		/* list links; -1 ends */
	uint8_t *state;			/* SIM_PAGE_* */
	uint8_t *referenced;		/* PG_referenced */
	uint64_t *shadow;		/* eviction stamp + 1 of an evicted page; 0: none */
	int32_t head[3], tail[3];	/* per state (NONE unused) */
	uint64_t nr[3];
	uint64_t nonresident_age;	/* lruvec->nonresident_age: evictions + activations */
	struct sim_lru_stats st;
};

int sim_lru_init(struct sim_lru *l, uint32_t npages, uint32_t page_bytes);
/* Grows the file space (new pages are not cached). 0 or -ENOMEM. */
int sim_lru_grow(struct sim_lru *l, uint32_t npages);
void sim_lru_free(struct sim_lru *l);
/* A read of page p with room for limit cached pages: 1 hit, 0 miss (the page is then cached). */
int sim_lru_access(struct sim_lru *l, uint32_t p, uint64_t limit);
/* Reclaim until at most limit pages are cached (shrink_lruvec, file pages only). */
void sim_lru_shrink(struct sim_lru *l, uint64_t limit);
/* mm/vmscan.c's inactive_is_low for the file LRU. */
bool sim_lru_inactive_low(const struct sim_lru *l);

/* ---- CPUs: weighted max-min sharing (CFS as seen from far) ---- */

struct sim_cpu_ent {
	double weight;			/* per runnable thread */
	double threads;			/* runnable threads: the most CPUs it can use */
	double got;			/* out: CPUs it gets */
};
/* Shares cap CPUs among n entities by weight, none above its threads (water filling). */
void sim_cpu_share(struct sim_cpu_ent *e, int n, double cap);
/* The kernel's nice-to-weight table (1024 at 0, ~1.25x a step). */
double sim_nice_weight(int nice);

/* ---- randomness (a seed gives the same run everywhere) ---- */

uint64_t sim_rand(uint64_t *s);
double sim_rand01(uint64_t *s);

/* ---- scenarios ---- */

#define SIM_MAX_VMS	16
#define SIM_NAME	108		/* a replayed VM is named by its socket path */

enum sim_ev_kind {
	SIM_EV_FILES,			/* a file set and how it is read */
	SIM_EV_ANON,			/* anonymous memory (Committed_AS) */
	SIM_EV_CPU,			/* busy vCPUs */
	SIM_EV_BURNERS,			/* host threads outside the VMs */
	SIM_EV_LOAD,			/* replay: the host's recorded load1 */
};

enum sim_pattern { SIM_UNIFORM, SIM_ZIPF, SIM_ONCE };	/* ONCE: each file read once, in order */

struct sim_files {
	uint32_t files;			/* in play */
	uint64_t file_bytes;
	double rate;			/* file reads per second */
	enum sim_pattern pattern;
	double zipf;			/* exponent */
	double burst_every, burst_len, burst_mult;	/* 0: no bursts */
	uint32_t burst_files;		/* the hot set of a burst */
};

struct sim_event {
	double t;
	int vm;				/* -1: the host */
	enum sim_ev_kind kind;
	uint64_t bytes;			/* ANON */
	double value;			/* CPU (busy vCPUs), BURNERS, LOAD */
	struct sim_files files;		/* FILES */
	int order;			/* in the file: keeps a sort stable */
};

struct sim_vm_conf {
	char name[SIM_NAME];
	uint64_t ram, base, target;	/* target 0: all RAM */
	int vcpus, nice;
	bool balloon;
	double balloon_rate;		/* bytes per second */
};

struct sim_scenario {
	char name[64];
	double duration, step;		/* seconds */
	double measure;			/* hit ratios also from this time on (steady state) */
	uint64_t seed;
	int cpus;
	uint64_t host_mem, budget;	/* bytes; budget 0: host_mem */
	double load;			/* the host's load averages at time 0 */
	uint32_t page_bytes;
	double io_ms;			/* a refault's wait, for memory PSI */
	char policy[256];		/* comma-separated, "none" for none */
	char replay[256];		/* a `kumo coord --log` file, or "" */
	int nvms;
	struct sim_vm_conf vm[SIM_MAX_VMS];
	int nev, cap_ev;
	struct sim_event *ev;		/* sorted by t */
	int nticks;
	double *ticks;			/* replay: the recorded coordinator's sampling times */
};

/* Parses scenario text (name for messages). 0, or -EINVAL / -ENOMEM with err set. */
int sim_parse(const char *text, size_t len, const char *name, struct sim_scenario *sc, char *err,
	      size_t errlen);
void sim_scenario_free(struct sim_scenario *sc);
/* A new zeroed event at the end (NULL when out of memory or too many); sort after adding. */
struct sim_event *sim_scenario_event(struct sim_scenario *sc);
/* Sorts the events by time, keeping the order of events at the same time. */
void sim_scenario_sort(struct sim_scenario *sc);

/* Runs a scenario: JSON lines to log (NULL: none), CSV rows to csv, summary to out. 0 or -errno. */
struct sim_opts {
	FILE *log, *csv, *out;
	double csv_every;		/* seconds between CSV rows */
};
int sim_run(struct sim_scenario *sc, const struct sim_opts *o, char *err, size_t errlen);

/* `kumo sim ...` (argv[0] is "sim"). */
int sim_main(int argc, char **argv);

#endif
