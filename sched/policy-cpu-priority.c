/*
 * cpu-priority (paper 001's example policy): when the host is loaded above 90% (load1 per
 * online CPU), lower the priority of the lowest-priority VM by one nice step; below 10%, raise
 * the highest-priority VM by one; nice stays within -15..15. "Priority" is the VM's nice; ties
 * go by the --vm order (the first VM is the most important). `cpu-priority` sets the nice of
 * the vCPU threads (read back from the host at every sample: the truth after a restart);
 * `cpu-weight` moves the same level through cgroup v2 `cpu.weight` of the VMM's cgroup, with
 * the kernel's nice-to-weight ratio (1.25 per step, level 0 = weight 100).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/policies.h"

const struct cpuprio_params cpuprio_defaults = {
	.high = 0.90,
	.low = 0.10,
	.bound = 15,
};

void cpuprio_step(const struct cpuprio_params *p, double load1, int cpus,
		  const struct cpuprio_vm *vms, int n, struct cpuprio_decision *d)
{
	double load = cpus > 0 ? load1 / cpus : 0;
	int pick = -1;

	memset(d, 0, sizeof(*d));
	d->vm = -1;
	d->load = load;
	if (cpus <= 0) {
		d->why = "no host load figures: hold";
		return;
	}
	if (load > p->high) {
		/* The lowest priority: the highest nice, the later one on a tie. */
		for (int i = 0; i < n; i++)
			if (vms[i].ok && (pick < 0 || vms[i].level >= vms[pick].level))
				pick = i;
		if (pick < 0) {
			d->why = "host loaded, no VM with fresh figures: hold";
		} else if (vms[pick].level >= p->bound) {
			d->why = "host loaded, lowest priority VM at the bound: hold";
		} else {
			d->vm = pick;
			d->level = vms[pick].level + 1;
			d->why = "host load above the high mark: lowest priority VM down";
		}
	} else if (load < p->low) {
		/* The highest priority: the lowest nice, the earlier one on a tie. */
		for (int i = 0; i < n; i++)
			if (vms[i].ok && (pick < 0 || vms[i].level < vms[pick].level))
				pick = i;
		if (pick < 0) {
			d->why = "host idle, no VM with fresh figures: hold";
		} else if (vms[pick].level <= -p->bound) {
			d->why = "host idle, highest priority VM at the bound: hold";
		} else {
			d->vm = pick;
			d->level = vms[pick].level - 1;
			d->why = "host load below the low mark: highest priority VM up";
		}
	} else {
		d->why = "host load between the marks: hold";
	}
}

int cpuprio_weight(int level)
{
	double w = 100.0;

	for (int i = 0; i < (level < 0 ? -level : level); i++)
		w = level < 0 ? w * 1.25 : w / 1.25;
	return w < 1 ? 1 : w > 10000 ? 10000 : (int)(w + 0.5);
}

struct cpuprio_policy {
	bool weight;			/* the cgroup cpu.weight variant */
	int nvms;
	int *level;			/* cpu-weight: the level last set (nice keeps its own) */
	struct cpuprio_vm *in;
};

static int cpuprio_init_common(void **state, bool weight)
{
	struct cpuprio_policy *cp = calloc(1, sizeof(*cp));

	if (!cp)
		return -ENOMEM;
	cp->weight = weight;
	*state = cp;
	return 0;
}

static int cpuprio_init(struct sched *s, void **state)
{
	return cpuprio_init_common(state, false);
}

static int cpuweight_init(struct sched *s, void **state)
{
	return cpuprio_init_common(state, true);
}

static void cpuprio_tick(struct sched *s, void *state)
{
	struct cpuprio_policy *cp = state;
	struct cpuprio_decision d;
	struct sched_host host;
	int n = sched_vm_count(s);
	char why[160];

	if (n > cp->nvms) {
		int *l = realloc(cp->level, n * sizeof(*l));
		struct cpuprio_vm *in;

		if (!l)
			return;
		cp->level = l;
		memset(l + cp->nvms, 0, (n - cp->nvms) * sizeof(*l));
		in = realloc(cp->in, n * sizeof(*in));
		if (!in)
			return;
		cp->in = in;
		cp->nvms = n;
	}
	for (int i = 0; i < n; i++) {
		struct sched_cpu cpu;

		cp->in[i].ok = !sched_get_cpu(s, i, &cpu);
		cp->in[i].level = cp->weight ? cp->level[i] : cpu.nice;
	}
	if (sched_get_host(s, &host))
		host.cpus = 0;
	cpuprio_step(&cpuprio_defaults, host.load[0], host.cpus, cp->in, n, &d);
	if (d.vm < 0)
		return;
	snprintf(why, sizeof(why), "%s (load1 %.2f on %d CPUs)", d.why, host.load[0], host.cpus);
	if (!cp->weight) {
		sched_set_nice(s, d.vm, d.level, why);
	} else if (!sched_set_cpu_weight(s, d.vm, cpuprio_weight(d.level), why)) {
		cp->level[d.vm] = d.level;
	}
}

static void cpuprio_fini(void *state)
{
	struct cpuprio_policy *cp = state;

	if (cp) {
		free(cp->level);
		free(cp->in);
	}
	free(cp);
}

const struct sched_policy sched_policy_cpu_priority = {
	.name = "cpu-priority",
	.period_ms = 1000,
	.init = cpuprio_init,
	.tick = cpuprio_tick,
	.fini = cpuprio_fini,
};

const struct sched_policy sched_policy_cpu_weight = {
	.name = "cpu-weight",
	.period_ms = 1000,
	.init = cpuweight_init,
	.tick = cpuprio_tick,
	.fini = cpuprio_fini,
};
