/*
 * Parsers of kumo-agent: /proc and sysfs text, cpu lists, request lines from the host.
 *
 * Pure C without system calls or libc, so the same file builds into the freestanding agent
 * (32- and 64-bit) and into host unit tests and fuzzers. Every input is untrusted and bounded
 * by its length (it need not be NUL-terminated): truncated or garbage text yields partial
 * results or an error, never a read past the end.
 */
#ifndef KUMO_AGENT_PARSE_H
#define KUMO_AGENT_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* ----------------------------------------------------------- "Key: value" files */

/* /proc/meminfo fields the agent reports (kB, except HugePages_*). */
#define AP_MEMINFO_KEYS                                                                  \
	X(MemTotal) X(MemFree) X(MemAvailable) X(Buffers) X(Cached) X(SwapCached)        \
	X(Active) X(Inactive) X(Active(anon)) X(Inactive(anon)) X(Active(file))          \
	X(Inactive(file)) X(Unevictable) X(Mlocked) X(SwapTotal) X(SwapFree) X(Dirty)    \
	X(Writeback) X(AnonPages) X(Mapped) X(Shmem) X(KReclaimable) X(Slab)             \
	X(SReclaimable) X(SUnreclaim) X(KernelStack) X(PageTables) X(CommitLimit)        \
	X(Committed_AS) X(AnonHugePages) X(HugePages_Total) X(HugePages_Free)
/* /proc/vmstat counters the agent reports. */
#define AP_VMSTAT_KEYS                                                                   \
	X(nr_free_pages) X(nr_inactive_anon) X(nr_active_anon) X(nr_inactive_file)      \
	X(nr_active_file) X(nr_file_pages) X(nr_anon_pages) X(nr_dirty) X(nr_writeback) \
	X(workingset_refault_anon) X(workingset_refault_file)                            \
	X(workingset_activate_anon) X(workingset_activate_file)                          \
	X(workingset_restore_anon) X(workingset_restore_file) X(workingset_nodereclaim)  \
	X(pgpgin) X(pgpgout) X(pswpin) X(pswpout) X(pgfault) X(pgmajfault) X(pgrefill)   \
	X(pgscan_kswapd) X(pgscan_direct) X(pgscan_khugepaged) X(pgsteal_kswapd)         \
	X(pgsteal_direct) X(pgsteal_khugepaged) X(allocstall_normal) X(allocstall_movable) \
	X(compact_stall) X(balloon_inflate) X(balloon_deflate) X(oom_kill) X(drop_pagecache)
/* /sys/devices/system/node/nodeN/meminfo ("Node N Key: value kB"). */
#define AP_NODEMEM_KEYS                                                                  \
	X(MemTotal) X(MemFree) X(MemUsed) X(Active(file)) X(Inactive(file)) X(FilePages) \
	X(AnonPages) X(Shmem)

#define X(k) +1
enum { AP_MEMINFO_N = 0 AP_MEMINFO_KEYS, AP_VMSTAT_N = 0 AP_VMSTAT_KEYS,
       AP_NODEMEM_N = 0 AP_NODEMEM_KEYS };
#undef X

extern const char *const ap_meminfo_keys[AP_MEMINFO_N];
extern const char *const ap_vmstat_keys[AP_VMSTAT_N];
extern const char *const ap_nodemem_keys[AP_NODEMEM_N];

/*
 * Lines of "KEY[:] NUMBER ..." (after skipping `skip` leading words, 2 for "Node 0"): for each
 * key of keys[] found, vals[i] gets the number (saturating at 2^64-1) and bit i of *present is
 * set (nkeys <= 64). Lines that do not fit are ignored. Returns the number of keys found.
 */
int ap_parse_keyed(const char *buf, size_t len, int skip, const char *const *keys, int nkeys,
		   uint64_t *vals, uint64_t *present);

/* ----------------------------------------------------------------- PSI */

/* One line of /proc/pressure/memory; averages in hundredths of a percent. */
struct ap_psi_line {
	int present;
	uint32_t avg10, avg60, avg300;
	uint64_t total_us;
};
struct ap_psi {
	struct ap_psi_line some, full;
};
/* The last valid "some" and "full" lines; returns how many of the two were found. */
int ap_parse_psi(const char *buf, size_t len, struct ap_psi *out);

/* ----------------------------------------------------------------- /proc/stat */

struct ap_cpustat {
	uint32_t cpu;			/* the N of "cpuN" */
	uint64_t user, nice, system, idle, iowait, irq, softirq, steal;	/* USER_HZ ticks */
};
/*
 * The "cpuN" lines of /proc/stat into cpus[0..max) in file order; the "cpu" total line into
 * *total when total is not NULL (its cpu is UINT32_MAX). Returns the number of cpuN lines.
 */
int ap_parse_stat(const char *buf, size_t len, struct ap_cpustat *cpus, int max,
		  struct ap_cpustat *total, int *have_total);

/* ----------------------------------------------------------------- cpu lists */

#define AP_MAX_CPUS 256
#define AP_CPU_WORDS (AP_MAX_CPUS / 64)

/* "0-3,5" (whitespace and a trailing newline allowed) into mask; 0, or -1 when malformed. */
int ap_parse_cpulist(const char *s, size_t len, uint64_t mask[AP_CPU_WORDS]);
/* mask as "0-3,5" into out (NUL-terminated); returns the length, or -1 if out is too small. */
int ap_format_cpulist(const uint64_t mask[AP_CPU_WORDS], char *out, size_t size);
int ap_cpu_count(const uint64_t mask[AP_CPU_WORDS]);

/* ------------------------------------------------------------- JSON requests */

#define AP_MAX_ARGS 24
#define AP_MAX_ARG 128

/*
 * {"id": ANY, "verb": "park-cpus", "args": {...}}: the fields the agent's commands use.
 * args: "cpus" (cpu list string, integer, or array of integers), "period_ms" (integer),
 * "name" (string), "argv" (array of strings), "wait" (bool), "run" (integer).
 */
struct ap_request {
	char id[64];			/* raw JSON text of "id" ("null" when absent) */
	char verb[32];
	int has_cpus;
	uint64_t cpus[AP_CPU_WORDS];
	int has_period;
	uint64_t period_ms;
	char name[64];
	int argc;
	char argv[AP_MAX_ARGS][AP_MAX_ARG];
	int wait;
	int has_run;
	uint64_t run;
};

/* Parses one request line; 0, or -1 with *err set to a static message. */
int ap_parse_request(const char *line, size_t len, struct ap_request *req, const char **err);

/* 1 when buf[0..len) is exactly one JSON object (surrounding whitespace allowed). */
int ap_json_object_valid(const char *buf, size_t len);

/* 1 when a virtio-ports "name" file says org.kumo.agent. */
int ap_is_agent_port_name(const char *buf, size_t len);

#endif
