/*
 * Virtual NUMA topology: which vCPUs and how much RAM each virtual node has, which host node
 * backs it, and the distances between nodes. Parsed from --numa / --numa-distance, or derived
 * from the host's topology (--numa full), then checked against --cpus and --mem.
 *
 * Pure data and parsing: mm/ places and binds the memory, acpi.c writes SRAT/SLIT, cpuid.c
 * the matching topology, vcpu.c the pinning.
 */
#ifndef KUMO_NUMA_H
#define KUMO_NUMA_H

#include <stddef.h>
#include <stdint.h>

#define NUMA_MAX_NODES 16
#define NUMA_MAX_VCPUS 1024
#define NUMA_MEM_ALIGN (2ULL << 20)	/* node memory granularity: one huge page */
#define NUMA_LOCAL_DISTANCE 10
#define NUMA_REMOTE_DISTANCE 20

struct numa_node {
	uint64_t mem;		/* bytes; 0 for a memory-less node */
	int host_node;		/* host node its memory is bound to; -1 = not bound */
	unsigned int ncpus;	/* vCPUs in this node (0 for a CPU-less node) */
};

struct numa_config {
	unsigned int nnodes;	/* 0: no --numa given (one node, no SRAT) */
	int full;		/* --numa full: derive from the host in numa_finish() */
	struct numa_node nodes[NUMA_MAX_NODES];
	int16_t vcpu_node[NUMA_MAX_VCPUS];	/* node of each vCPU; -1 while unassigned */
	uint8_t dist[NUMA_MAX_NODES][NUMA_MAX_NODES];	/* 0 = not given */
	uint32_t defined;	/* bit n: node n was defined */
	uint32_t mem_given;	/* bit n: node n had mem= */
	uint32_t explicit_dist[NUMA_MAX_NODES];	/* bit j of row i: i:j given */
};

/* A host topology: what libnuma reports, or a synthetic one in tests. */
struct numa_host {
	unsigned int nnodes;
	int id[NUMA_MAX_NODES];		/* host node numbers */
	uint64_t mem[NUMA_MAX_NODES];	/* bytes of memory on each */
	unsigned int ncpus[NUMA_MAX_NODES];
	int cpus[NUMA_MAX_NODES][64];	/* the first host CPUs of each node */
	uint8_t dist[NUMA_MAX_NODES][NUMA_MAX_NODES];
};

void numa_config_init(struct numa_config *n);

/* One --numa argument: "full" or "node=N[,cpus=A-B][,cpus=C...][,mem=SIZE][,host-node=H]". */
int numa_parse_node(struct numa_config *n, const char *arg, char *err, size_t errlen);

/* One --numa-distance argument: "A:B=D" (also sets B:A unless that is given on its own). */
int numa_parse_distance(struct numa_config *n, const char *arg, char *err, size_t errlen);

/*
 * Completes and checks the configuration for ncpus vCPUs and mem bytes: derives --numa full
 * from host, fills default distances, and checks every vCPU is in exactly one node, node memory
 * is a multiple of 2 MiB, the sums match, distances are valid for Linux (10 on the diagonal,
 * 11..254 off it) and bound host nodes exist in host. Returns 0 or -EINVAL with err set.
 */
int numa_finish(struct numa_config *n, unsigned int ncpus, uint64_t mem,
		const struct numa_host *host, char *err, size_t errlen);

/* This host's topology from libnuma (one node 0 with all CPUs when NUMA is unavailable). */
int numa_host_read(struct numa_host *h);

/* The host CPUs of host node node into a cpu_set_t (libnuma). 0 or -errno. */
int numa_host_node_cpus(int node, void *cpu_set);

/* "0-3,8" style list of the vCPUs of a node into buf. */
void numa_node_cpulist(const struct numa_config *n, unsigned int node, char *buf, size_t len);

/* Parse a CPU list "0-3,8,10-11" into a bitmap of nbits bits. 0 or -EINVAL. */
int numa_parse_cpulist(const char *s, uint64_t *mask, unsigned int nbits);

#endif
