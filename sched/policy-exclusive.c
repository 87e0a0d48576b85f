/*
 * exclusive (paper 004's exclusive resource sharing): the VMs share the host's pCPUs
 * disjointly. Every 5 s each VM's demand (the CPUs its vCPU threads used since the last tick)
 * sets its share: at least one pCPU each, the rest in proportion to demand, never more pCPUs than
 * it has vCPUs. Shares are cut from the host's CPUs in node order, in --vm order, so a VM's share
 * spans as few nodes as it can and a change moves only the CPUs at the boundaries. A VM then
 * runs vCPU c on pCPU c when it mirrors the host (--numa full: as many vCPUs as host CPUs, so
 * the guest's node of vCPU c is the host's node of pCPU c), else its first vCPUs on its pCPUs
 * one to one; the vCPUs left over are parked through the guest agent and pinned inside the
 * share. A VM that lost CPUs is moved before one that gained them, so shares never overlap.
 * A new assignment is applied once two ticks in a row agree on it; a VM whose actions did not
 * all take (an agent slow to answer) is moved again at the next tick.
 * Memory per node is not moved: kumo has no per-node balloon (docs/coordinator.md).
 */
#include <errno.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/policies.h"

const struct excl_params excl_defaults = {
	.min_demand = 0.05,
};

static int popcount(uint64_t m)
{
	return __builtin_popcountll(m);
}

int excl_assign(const struct excl_params *p, const int *cpu_node, int ncpus,
		const struct excl_vm *vms, int n, uint64_t *out)
{
	int order[EXCL_MAX_CPUS], count[EXCL_MAX_VMS], left, next = 0;
	double demand[EXCL_MAX_VMS], sum = 0;

	if (n <= 0 || n > EXCL_MAX_VMS || ncpus <= 0 || ncpus > EXCL_MAX_CPUS)
		return -EINVAL;
	if (n > ncpus)
		return -ENOSPC;		/* not one pCPU each */
	for (int i = 0; i < n; i++)
		if (!vms[i].ok || vms[i].vcpus <= 0)
			return -EAGAIN;	/* never re-assign blind */
	/* One pCPU each; the rest by largest remainder of demand, capped at the vCPU count. */
	for (int i = 0; i < n; i++) {
		demand[i] = vms[i].demand > p->min_demand ? vms[i].demand : p->min_demand;
		count[i] = 1;
	}
	left = ncpus - n;
	while (left > 0) {
		int best = -1;
		double best_gap = 0;

		sum = 0;
		for (int i = 0; i < n; i++)
			if (count[i] < vms[i].vcpus)
				sum += demand[i];
		if (sum <= 0)
			break;		/* every VM has a pCPU per vCPU: the rest stay free */
		for (int i = 0; i < n; i++) {
			double gap;

			if (count[i] >= vms[i].vcpus)
				continue;
			/* How far below its fair part of all CPUs this VM is. */
			gap = demand[i] / sum * ncpus - count[i];
			if (best < 0 || gap > best_gap) {
				best = i;
				best_gap = gap;
			}
		}
		count[best]++;
		left--;
	}
	/* The host's CPUs in node order (stable by CPU number), cut into consecutive shares. */
	for (int c = 0; c < ncpus; c++)
		order[c] = c;
	for (int a = 1; a < ncpus; a++)
		for (int b = a; b > 0 && cpu_node[order[b - 1]] > cpu_node[order[b]]; b--) {
			int t = order[b];

			order[b] = order[b - 1];
			order[b - 1] = t;
		}
	for (int i = 0; i < n; i++) {
		out[i] = 0;
		for (int k = 0; k < count[i]; k++)
			out[i] |= 1ull << order[next++];
	}
	return 0;
}

void excl_layout(uint64_t share, int vcpus, int ncpus, int *pin, uint64_t *parked)
{
	int k = 0;

	*parked = 0;
	if (vcpus == ncpus) {
		/* Full vNUMA: vCPU c lives on pCPU c; the others wait, parked, inside the share. */
		for (int v = 0; v < vcpus; v++) {
			pin[v] = share & (1ull << v) ? v : -1;
			if (pin[v] < 0)
				*parked |= 1ull << v;
		}
		return;
	}
	for (int v = 0; v < vcpus; v++) {
		while (k < 64 && !(share & (1ull << k)))
			k++;
		if (k < 64) {
			pin[v] = k++;
		} else {
			pin[v] = -1;
			if (v < 64)
				*parked |= 1ull << v;
		}
	}
}

int excl_cpulist(uint64_t m, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int c = 0; c < 64; c++) {
		int e = c;
		int w;

		if (!(m & (1ull << c)))
			continue;
		while (e + 1 < 64 && (m & (1ull << (e + 1))))
			e++;
		w = e > c ? snprintf(buf + off, size - off, "%s%d-%d", off ? "," : "", c, e) :
			    snprintf(buf + off, size - off, "%s%d", off ? "," : "", c);
		if (w < 0 || (size_t)w >= size - off)
			return -ENOSPC;
		off += w;
		c = e;
	}
	return 0;
}

struct excl_policy {
	int nvms;
	double last_t;
	uint64_t last_ns[EXCL_MAX_VMS];
	uint64_t share[EXCL_MAX_VMS];	/* what we set last; 0 none (or to be set again) */
	uint64_t proposed[EXCL_MAX_VMS];	/* last tick's assignment, not applied yet */
	int cpu_node[EXCL_MAX_CPUS];
	int ncpus;
};

static int excl_init(struct sched *s, void **state)
{
	struct excl_policy *ep = calloc(1, sizeof(*ep));

	if (!ep)
		return -ENOMEM;
	*state = ep;
	return 0;
}

/* The host's CPUs and their nodes, at the first tick with host figures. */
static bool host_topology(struct sched *s, struct excl_policy *ep)
{
	struct sched_host h;

	if (ep->ncpus)
		return true;
	if (sched_get_host(s, &h) || h.cpus <= 0)
		return false;
	if (h.cpus > EXCL_MAX_CPUS) {
		sched_log(s, "exclusive", "more than 64 host CPUs: hold");
		return false;
	}
	for (int c = 0; c < h.cpus; c++) {
		int node = numa_available() < 0 ? 0 : numa_node_of_cpu(c);

		ep->cpu_node[c] = node < 0 ? 0 : node;
	}
	ep->ncpus = h.cpus;
	return true;
}

/*
 * Moves one VM to its new share: unpark and pin what runs, park and pin the rest inside it.
 * Returns how many of those actions failed (an agent slow to answer, say).
 */
static int apply(struct sched *s, struct excl_policy *ep, int vm, int vcpus, uint64_t share,
		  const char *why)
{
	int pin[EXCL_MAX_CPUS * 4];
	uint64_t parked, running = 0;
	char list[256], one[16];
	int failed = 0;

	if (vcpus > (int)(sizeof(pin) / sizeof(pin[0])))
		vcpus = sizeof(pin) / sizeof(pin[0]);
	excl_layout(share, vcpus, ep->ncpus, pin, &parked);
	for (int v = 0; v < vcpus && v < 64; v++)
		if (pin[v] >= 0)
			running |= 1ull << v;
	if (!excl_cpulist(running, list, sizeof(list)))
		failed += !!sched_set_park(s, vm, list, false, why);
	for (int v = 0; v < vcpus; v++) {
		if (pin[v] >= 0) {
			snprintf(one, sizeof(one), "%d", pin[v]);
			failed += !!sched_set_pin(s, vm, v, one, why);
		} else if (!excl_cpulist(share, list, sizeof(list))) {
			failed += !!sched_set_pin(s, vm, v, list, why);
		}
	}
	if (parked && !excl_cpulist(parked, list, sizeof(list)))
		failed += !!sched_set_park(s, vm, list, true, why);
	return failed;
}

static void excl_tick(struct sched *s, void *state)
{
	struct excl_policy *ep = state;
	struct excl_vm in[EXCL_MAX_VMS];
	uint64_t share[EXCL_MAX_VMS];
	int n = sched_vm_count(s), ret;
	double now = sched_now(s), dt = now - ep->last_t;
	bool first = !ep->last_t, changed = false, settled = true;
	char why[320], list[256];

	if (!host_topology(s, ep))
		return;
	if (n > EXCL_MAX_VMS)
		n = EXCL_MAX_VMS;
	for (int i = 0; i < n; i++) {
		struct sched_cpu cpu;

		memset(&in[i], 0, sizeof(in[i]));
		if (sched_get_cpu(s, i, &cpu))
			continue;
		in[i].ok = true;
		in[i].vcpus = cpu.vcpus;
		if (!first && dt > 0 && cpu.vcpu_time_ns >= ep->last_ns[i])
			in[i].demand = (cpu.vcpu_time_ns - ep->last_ns[i]) / 1e9 / dt;
		ep->last_ns[i] = cpu.vcpu_time_ns;
	}
	ep->last_t = now;
	ret = excl_assign(&excl_defaults, ep->cpu_node, ep->ncpus, in, n, share);
	if (ret) {
		if (ret != -EAGAIN || first)
			sched_log(s, "exclusive", ret == -ENOSPC ? "more VMs than host CPUs: hold" :
				  ret == -EAGAIN ? "a VM without fresh figures: hold" :
				  "cannot assign: hold");
		return;
	}
	for (int i = 0; i < n; i++) {
		changed |= share[i] != ep->share[i];
		settled &= !!ep->share[i];
	}
	if (!changed)
		return;
	/*
	 * A new assignment must come out of two ticks in a row before it is applied, so a one-off
	 * burst (or a busy boot) does not move CPUs back and forth; the first one goes at once.
	 */
	if (settled && memcmp(share, ep->proposed, n * sizeof(share[0]))) {
		memcpy(ep->proposed, share, n * sizeof(share[0]));
		return;
	}
	/* Shrinking VMs first, so no two shares overlap at any moment. */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n; i++) {
			bool shrinks = popcount(share[i]) < popcount(ep->share[i]) || !ep->share[i];

			if (share[i] == ep->share[i] || shrinks != (pass == 0))
				continue;
			excl_cpulist(share[i], list, sizeof(list));
			snprintf(why, sizeof(why), "share %s (%d pCPUs, demand %.2f CPUs)", list,
				 popcount(share[i]), in[i].demand);
			sched_log(s, "exclusive", why);
			/* What did not take is done again at the next tick. */
			ep->share[i] = apply(s, ep, i, in[i].vcpus, share[i], why) ? 0 : share[i];
		}
	}
}

static void excl_fini(void *state)
{
	free(state);
}

const struct sched_policy sched_policy_exclusive = {
	.name = "exclusive",
	.period_ms = 5000,
	.init = excl_init,
	.tick = excl_tick,
	.fini = excl_fini,
};
