#include <errno.h>
#include <sched.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/mem.h"
#include "vmm/numa.h"

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -EINVAL; } while (0)

void numa_config_init(struct numa_config *n)
{
	memset(n, 0, sizeof(*n));
	for (unsigned int i = 0; i < NUMA_MAX_VCPUS; i++)
		n->vcpu_node[i] = -1;
	for (unsigned int i = 0; i < NUMA_MAX_NODES; i++)
		n->nodes[i].host_node = -1;
}

static int parse_uint(const char *s, const char **end, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > max)
			return -EINVAL;
		p++;
	}
	*end = p;
	*out = v;
	return 0;
}

/* One "A" or "A-B" item ending at stop (',', ':' or NUL). */
static int parse_cpu_item(const char *s, const char **end, unsigned int nbits,
			  unsigned long *lo, unsigned long *hi)
{
	if (parse_uint(s, &s, nbits - 1, lo) < 0)
		return -EINVAL;
	*hi = *lo;
	if (*s == '-' && (parse_uint(s + 1, &s, nbits - 1, hi) < 0 || *hi < *lo))
		return -EINVAL;
	*end = s;
	return 0;
}

int numa_parse_cpulist(const char *s, uint64_t *mask, unsigned int nbits)
{
	memset(mask, 0, (nbits + 63) / 64 * sizeof(uint64_t));
	for (;;) {
		unsigned long lo, hi;

		if (parse_cpu_item(s, &s, nbits, &lo, &hi) < 0)
			return -EINVAL;
		for (unsigned long c = lo; c <= hi; c++)
			mask[c / 64] |= 1ULL << (c % 64);
		if (!*s)
			return 0;
		if (*s != ',')
			return -EINVAL;
		s++;
	}
}

static int parse_full(struct numa_config *n, char *err, size_t errlen)
{
	if (n->nnodes || n->full)
		FAIL("--numa full cannot be combined with other --numa options");
	n->full = 1;
	return 0;
}

int numa_parse_node(struct numa_config *n, const char *arg, char *err, size_t errlen)
{
	char buf[512], *rest = buf, *tok;
	unsigned long node = NUMA_MAX_NODES;
	uint64_t mem = 0;
	long host = -1;
	int have_mem = 0;
	/* cpus= may repeat ("cpus=0-1,cpus=4"); applied once the node number is known. */
	uint64_t cpus[NUMA_MAX_VCPUS / 64];

	if (!strcmp(arg, "full"))
		return parse_full(n, err, errlen);
	if (n->full)
		FAIL("--numa full cannot be combined with other --numa options");
	if (strlen(arg) >= sizeof(buf))
		FAIL("too long");
	strcpy(buf, arg);
	memset(cpus, 0, sizeof(cpus));
	while ((tok = strsep(&rest, ","))) {
		const char *end;
		unsigned long v, lo, hi;

		if (!*tok) {
			FAIL("empty item (use node=N,cpus=A-B,mem=SIZE,host-node=H)");
		} else if (!strncmp(tok, "node=", 5)) {
			if (parse_uint(tok + 5, &end, NUMA_MAX_NODES - 1, &v) < 0 || *end)
				FAIL("node=%s: a node number from 0 to %d", tok + 5, NUMA_MAX_NODES - 1);
			node = v;
		} else if (!strncmp(tok, "cpus=", 5)) {
			/* A list inside one token uses ':' between items: cpus=0-1:4. */
			const char *p = tok + 5;

			for (;;) {
				if (parse_cpu_item(p, &p, NUMA_MAX_VCPUS, &lo, &hi) < 0)
					FAIL("cpus=%s: a vCPU list such as 0-3 (0 to %d)", tok + 5,
					     NUMA_MAX_VCPUS - 1);
				for (unsigned long c = lo; c <= hi; c++)
					cpus[c / 64] |= 1ULL << (c % 64);
				if (!*p)
					break;
				if (*p != ':')
					FAIL("cpus=%s: a vCPU list such as 0-3", tok + 5);
				p++;
			}
		} else if (!strncmp(tok, "mem=", 4)) {
			if (mm_parse_size(tok + 4, &mem) < 0)
				FAIL("mem=%s: not a size (use e.g. 512M or 2G)", tok + 4);
			have_mem = 1;
		} else if (!strncmp(tok, "host-node=", 10)) {
			if (parse_uint(tok + 10, &end, 1023, &v) < 0 || *end)
				FAIL("host-node=%s: a host node number", tok + 10);
			host = (long)v;
		} else {
			FAIL("unknown key '%s' (node=, cpus=, mem=, host-node=)", tok);
		}
	}
	if (node == NUMA_MAX_NODES)
		FAIL("node= is required");
	if (n->defined & (1u << node))
		FAIL("node %lu is defined twice", node);
	for (unsigned int c = 0; c < NUMA_MAX_VCPUS; c++) {
		if (!(cpus[c / 64] & (1ULL << (c % 64))))
			continue;
		if (n->vcpu_node[c] >= 0)
			FAIL("vCPU %u is already in node %d", c, n->vcpu_node[c]);
		n->vcpu_node[c] = (int16_t)node;
		n->nodes[node].ncpus++;
	}
	n->defined |= 1u << node;
	if (have_mem)
		n->mem_given |= 1u << node;
	n->nodes[node].mem = mem;
	n->nodes[node].host_node = (int)host;
	if (node + 1 > n->nnodes)
		n->nnodes = (unsigned int)node + 1;
	return 0;
}

int numa_parse_distance(struct numa_config *n, const char *arg, char *err, size_t errlen)
{
	unsigned long a, b, d;
	const char *p;

	if (parse_uint(arg, &p, NUMA_MAX_NODES - 1, &a) < 0 || *p != ':' ||
	    parse_uint(p + 1, &p, NUMA_MAX_NODES - 1, &b) < 0 || *p != '=' ||
	    parse_uint(p + 1, &p, 255, &d) < 0 || *p)
		FAIL("use A:B=DISTANCE, nodes 0 to %d, distance up to 254", NUMA_MAX_NODES - 1);
	if (a == b && d != NUMA_LOCAL_DISTANCE)
		FAIL("a node's distance to itself must be %d", NUMA_LOCAL_DISTANCE);
	if (a != b && (d <= NUMA_LOCAL_DISTANCE || d > 254))
		FAIL("distance %lu between different nodes must be 11 to 254", d);
	/* An explicit B:A given before or after wins over the mirrored value. */
	n->dist[a][b] = (uint8_t)d;
	n->explicit_dist[a] |= 1u << b;
	if (!(n->explicit_dist[b] & (1u << a)))
		n->dist[b][a] = (uint8_t)d;
	return 0;
}

/* Split total units over n weights in proportion, largest remainder first. */
static void apportion(uint64_t total, const uint64_t *weight, unsigned int n, uint64_t *out)
{
	uint64_t sum = 0, given = 0;
	uint64_t rem[NUMA_MAX_NODES];

	for (unsigned int i = 0; i < n; i++)
		sum += weight[i];
	for (unsigned int i = 0; i < n; i++) {
		unsigned __int128 p = (unsigned __int128)total * weight[i];

		out[i] = sum ? (uint64_t)(p / sum) : 0;
		rem[i] = sum ? (uint64_t)(p % sum) : 0;
		given += out[i];
	}
	while (given < total && sum) {
		unsigned int best = 0;

		for (unsigned int i = 1; i < n; i++)
			if (rem[i] > rem[best] || (rem[i] == rem[best] && !weight[best]))
				best = i;
		out[best]++;
		rem[best] = 0;
		given++;
	}
}

static int derive_full(struct numa_config *n, unsigned int ncpus, uint64_t mem,
		       const struct numa_host *h, char *err, size_t errlen)
{
	uint64_t w[NUMA_MAX_NODES], vcpus[NUMA_MAX_NODES], units[NUMA_MAX_NODES];
	unsigned int next = 0;

	if (!h || !h->nnodes || h->nnodes > NUMA_MAX_NODES)
		FAIL("--numa full: the host's NUMA topology is unknown");
	for (unsigned int i = 0; i < h->nnodes; i++)
		w[i] = h->ncpus[i];
	apportion(ncpus, w, h->nnodes, vcpus);
	for (unsigned int i = 0; i < h->nnodes; i++)
		w[i] = h->mem[i];
	apportion(mem / NUMA_MEM_ALIGN, w, h->nnodes, units);
	n->nnodes = h->nnodes;
	for (unsigned int i = 0; i < h->nnodes; i++) {
		n->nodes[i].mem = units[i] * NUMA_MEM_ALIGN;
		n->nodes[i].host_node = h->id[i];
		n->nodes[i].ncpus = (unsigned int)vcpus[i];
		for (unsigned int c = 0; c < vcpus[i]; c++)
			n->vcpu_node[next++] = (int16_t)i;
		for (unsigned int j = 0; j < h->nnodes; j++)
			n->dist[i][j] = h->dist[i][j];
		n->defined |= 1u << i;
		n->mem_given |= 1u << i;
	}
	return 0;
}

static int host_has_node(const struct numa_host *h, int node)
{
	for (unsigned int i = 0; h && i < h->nnodes; i++)
		if (h->id[i] == node)
			return 1;
	return 0;
}

int numa_finish(struct numa_config *n, unsigned int ncpus, uint64_t mem,
		const struct numa_host *host, char *err, size_t errlen)
{
	uint64_t sum = 0;
	unsigned int cpus = 0, given_mem = 0;

	if (n->full && derive_full(n, ncpus, mem, host, err, errlen) < 0)
		return -EINVAL;
	if (!n->nnodes)
		return 0;
	if (ncpus > NUMA_MAX_VCPUS)
		FAIL("--numa: at most %d vCPUs", NUMA_MAX_VCPUS);
	for (unsigned int i = 0; i < n->nnodes; i++) {
		struct numa_node *nd = &n->nodes[i];

		if (!(n->defined & (1u << i)))
			FAIL("--numa: node %u is not defined (nodes are numbered from 0 without gaps)",
			     i);
		if (nd->mem % NUMA_MEM_ALIGN)
			FAIL("--numa node=%u: mem must be a multiple of 2M", i);
		if (nd->mem && nd->mem < 2 * NUMA_MEM_ALIGN)
			FAIL("--numa node=%u: mem must be 0 or at least 4M (Linux drops smaller nodes)",
			     i);
		if (!nd->mem && !nd->ncpus)
			FAIL("--numa node=%u: has neither vCPUs nor memory", i);
		if (nd->host_node >= 0 && !host_has_node(host, nd->host_node))
			FAIL("--numa node=%u: host node %d does not exist on this host", i,
			     nd->host_node);
		sum += nd->mem;
		cpus += nd->ncpus;
		if (n->mem_given & (1u << i))
			given_mem++;
	}
	/* No mem= anywhere: split --mem evenly over the nodes. */
	if (!given_mem) {
		uint64_t w[NUMA_MAX_NODES], units[NUMA_MAX_NODES];

		for (unsigned int i = 0; i < n->nnodes; i++)
			w[i] = 1;
		apportion(mem / NUMA_MEM_ALIGN, w, n->nnodes, units);
		sum = 0;
		for (unsigned int i = 0; i < n->nnodes; i++)
			sum += n->nodes[i].mem = units[i] * NUMA_MEM_ALIGN;
	}
	if (sum != mem)
		FAIL("--numa: node memory adds up to %lluM, --mem is %lluM",
		     (unsigned long long)(sum >> 20), (unsigned long long)(mem >> 20));
	for (unsigned int c = 0; c < NUMA_MAX_VCPUS; c++) {
		if (c < ncpus && n->vcpu_node[c] < 0)
			FAIL("--numa: vCPU %u is in no node", c);
		if (c >= ncpus && n->vcpu_node[c] >= 0)
			FAIL("--numa: vCPU %u is in node %d but --cpus is %u", c, n->vcpu_node[c],
			     ncpus);
	}
	if (cpus != ncpus)
		FAIL("--numa: nodes have %u vCPUs, --cpus is %u", cpus, ncpus);
	for (unsigned int i = 0; i < NUMA_MAX_NODES; i++)
		for (unsigned int j = 0; j < NUMA_MAX_NODES; j++) {
			if ((i >= n->nnodes || j >= n->nnodes) && n->dist[i][j])
				FAIL("--numa-distance %u:%u: node %u is not defined", i, j,
				     i >= n->nnodes ? i : j);
			if (i >= n->nnodes || j >= n->nnodes)
				continue;
			if (!n->dist[i][j])
				n->dist[i][j] = i == j ? NUMA_LOCAL_DISTANCE : NUMA_REMOTE_DISTANCE;
			if (i == j && n->dist[i][j] != NUMA_LOCAL_DISTANCE)
				FAIL("--numa: distance %u:%u must be %d", i, j, NUMA_LOCAL_DISTANCE);
			if (i != j && (n->dist[i][j] <= NUMA_LOCAL_DISTANCE || n->dist[i][j] > 254))
				FAIL("--numa: distance %u:%u is %u; between nodes it must be 11 to 254",
				     i, j, n->dist[i][j]);
		}
	return 0;
}

int numa_host_read(struct numa_host *h)
{
	struct bitmask *cpus;
	int max;

	memset(h, 0, sizeof(*h));
	if (numa_available() < 0) {
		h->nnodes = 1;
		h->ncpus[0] = (unsigned int)numa_num_configured_cpus();
		h->dist[0][0] = NUMA_LOCAL_DISTANCE;
		for (unsigned int c = 0; c < h->ncpus[0] && c < 64; c++)
			h->cpus[0][c] = (int)c;
		return 0;
	}
	cpus = numa_allocate_cpumask();
	if (!cpus)
		return -ENOMEM;
	max = numa_max_node();
	for (int node = 0; node <= max && h->nnodes < NUMA_MAX_NODES; node++) {
		unsigned int i = h->nnodes;
		long long sz;

		if (!numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned int)node) &&
		    !numa_bitmask_isbitset(numa_nodes_ptr, (unsigned int)node))
			continue;
		h->id[i] = node;
		sz = numa_node_size64(node, NULL);
		h->mem[i] = sz > 0 ? (uint64_t)sz : 0;
		if (numa_node_to_cpus(node, cpus) == 0)
			for (unsigned int c = 0; c < cpus->size; c++)
				if (numa_bitmask_isbitset(cpus, c)) {
					if (h->ncpus[i] < 64)
						h->cpus[i][h->ncpus[i]] = (int)c;
					h->ncpus[i]++;
				}
		h->nnodes++;
	}
	for (unsigned int i = 0; i < h->nnodes; i++)
		for (unsigned int j = 0; j < h->nnodes; j++) {
			int d = numa_distance(h->id[i], h->id[j]);

			h->dist[i][j] = (uint8_t)(d > 0 ? d : i == j ? NUMA_LOCAL_DISTANCE :
						  NUMA_REMOTE_DISTANCE);
		}
	numa_free_cpumask(cpus);
	return 0;
}

void numa_node_cpulist(const struct numa_config *n, unsigned int node, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	for (unsigned int c = 0; c < NUMA_MAX_VCPUS; c++) {
		unsigned int e = c;

		if (n->vcpu_node[c] != (int)node)
			continue;
		while (e + 1 < NUMA_MAX_VCPUS && n->vcpu_node[e + 1] == (int)node)
			e++;
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, used ? ",%u" : "%u", c);
		if (e > c && used < len)
			used += (size_t)snprintf(buf + used, len - used, "-%u", e);
		c = e;
	}
}

int numa_host_node_cpus(int node, void *cpu_set)
{
	cpu_set_t *set = cpu_set;
	struct bitmask *cpus;
	int ret = 0;

	CPU_ZERO(set);
	if (numa_available() < 0) {
		if (node != 0)
			return -ENOENT;
		for (int c = 0; c < numa_num_configured_cpus() && c < CPU_SETSIZE; c++)
			CPU_SET(c, set);
		return 0;
	}
	cpus = numa_allocate_cpumask();
	if (!cpus)
		return -ENOMEM;
	if (numa_node_to_cpus(node, cpus) < 0)
		ret = -errno;
	for (unsigned int c = 0; !ret && c < cpus->size && c < CPU_SETSIZE; c++)
		if (numa_bitmask_isbitset(cpus, c))
			CPU_SET(c, set);
	numa_free_cpumask(cpus);
	if (!ret && !CPU_COUNT(set))
		ret = -ENOENT;
	return ret;
}
