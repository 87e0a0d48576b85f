/*
 * cache (paper 000's cache-aware memory scheduler, on an unmodified guest): every 5 s, move
 * memory (balloon targets) from the VM whose page cache pays off least to the one whose cache
 * would pay off most. The paper patched the guest to count cache hits per page held; an
 * unmodified Linux counts, per evicted file page read back, whether its refault distance fit
 * within the workingset (workingset_activate_file): each of those would have been a hit with
 * that much more memory. So the payoff of a VM's cache is its file activations per cached page
 * (Cached) over the period. A VM receives only if it has such refaults (or memory pressure,
 * PSI), and only if they are a fair share of all its file refaults: a working set that never
 * fits (long refault distances) refaults mostly without activating and does not attract memory
 * it could not use, however many reads it serves. A VM gives only what lies above Committed_AS +
 * Active(file) + a floor (its anonymous memory and the cache it uses stay), never while under
 * pressure. A VM whose VMM or agent figures are missing or stale is left alone (and takes a new
 * baseline when they return).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/policies.h"

#define MIB (1024ull * 1024)
#define PAGE 4096ull

/*
 * A taker's activations must be at least 1/ACTIVATE_SHARE of its file refaults in the period.
 * The absolute minimum (activate_min) alone let a busy low-locality VM take memory: in the box
 * scale of paper 000 (tests/experiments/cache.sh, kumo sim of it), a uniform reader over 2 GiB
 * with a 60-190 MiB cache refaults thousands of pages a period and 5-15% of them still come
 * back within the (small) active list, hundreds of activations: enough to pass 64, and, per
 * page of its small cache, twice the payoff of a VM whose working set had just come to fit
 * (no refaults, no activations). Memory then went back and forth every few periods between
 * the two. A working set that fits with more memory refaults mostly within it (40-100% in
 * the same runs). (A cache_params field when sched/policies.h next changes.)
 */
#define ACTIVATE_SHARE 3

const struct cache_params cache_defaults = {
	.stale_s = 5.0,
	.step = 64 * MIB,
	.floor = 64 * MIB,
	.min_keep = 128 * MIB,
	.activate_min = 64,
	.min_move = 4 * MIB,
	.ratio = 2.0,
	.psi_pressure = 10.0,
};

static uint64_t delta(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;	/* a reset (guest reboot) counts as none */
}

void cache_step(const struct cache_params *p, struct cache_vm *st, const struct cache_input *in,
		int n, struct cache_decision *d)
{
	int give = -1, take = -1;

	memset(d, 0, sizeof(*d));
	d->from = d->to = -1;
	d->why = "nothing to move";
	for (int i = 0; i < n; i++) {
		const struct sched_agent *a = &in[i].agent;
		struct cache_vm *v = &st[i];
		uint64_t pages, guard;

		v->eligible = false;
		if (!in[i].ok || a->age_s > p->stale_s) {
			v->have_base = false;
			continue;
		}
		if (!v->have_base) {
			v->have_base = true;
			v->refault = a->refault_file;
			v->activate = a->activate_file;
			continue;
		}
		v->refaults = delta(a->refault_file, v->refault);
		v->hits = delta(a->activate_file, v->activate);
		v->refault = a->refault_file;
		v->activate = a->activate_file;
		pages = a->cached / PAGE;
		v->score = (double)v->hits / (double)(pages ? pages : 1);
		v->pressure = a->psi && a->psi_some_avg10 >= p->psi_pressure;
		guard = a->committed_as + a->active_file + p->floor;
		if (guard < p->min_keep)
			guard = p->min_keep;
		v->headroom = in[i].target > guard ? in[i].target - guard : 0;
		v->eligible = true;
	}
	/* The receiver: the best payoff among those that would use more memory. */
	for (int i = 0; i < n; i++) {
		const struct cache_vm *v = &st[i];

		if (!v->eligible || in[i].target >= in[i].ram ||
		    ((v->hits < p->activate_min || v->hits * ACTIVATE_SHARE < v->refaults) &&
		     !v->pressure))
			continue;
		if (take < 0 || v->score > st[take].score)
			take = i;
	}
	if (take < 0) {
		d->why = "no VM would use more memory";
		return;
	}
	/* The giver: the worst payoff among the others with memory above their guard. */
	for (int i = 0; i < n; i++) {
		const struct cache_vm *v = &st[i];

		if (i == take || !v->eligible || v->pressure || !v->headroom)
			continue;
		if (give < 0 || v->score < st[give].score)
			give = i;
	}
	if (give < 0) {
		d->why = "no VM can give memory above Committed_AS + Active(file) + floor";
		return;
	}
	/* Only a clear difference moves memory: the giver's payoff well below the taker's. */
	if (st[give].score * p->ratio > st[take].score) {
		d->why = "payoffs too close";
		return;
	}
	d->amount = p->step;
	if (d->amount > st[give].headroom)
		d->amount = st[give].headroom;
	if (d->amount > in[take].ram - in[take].target)
		d->amount = in[take].ram - in[take].target;
	if (d->amount < p->min_move) {
		d->amount = 0;
		d->why = "too little to move";
		return;
	}
	d->from = give;
	d->to = take;
	d->from_target = in[give].target - d->amount;
	d->to_target = in[take].target + d->amount;
	d->why = "cache payoff";
}

struct cache_policy {
	int nvms;
	struct cache_vm *vms;
	struct cache_input *in;
};

static int cache_init(struct sched *s, void **state)
{
	struct cache_policy *cp = calloc(1, sizeof(*cp));

	if (!cp)
		return -ENOMEM;
	*state = cp;
	return 0;
}

static void cache_tick(struct sched *s, void *state)
{
	struct cache_policy *cp = state;
	struct cache_decision d;
	int n = sched_vm_count(s);
	char why[256];

	if (n > cp->nvms) {
		struct cache_vm *v = realloc(cp->vms, n * sizeof(*v));
		struct cache_input *in;

		if (!v)
			return;
		memset(v + cp->nvms, 0, (n - cp->nvms) * sizeof(*v));
		cp->vms = v;
		in = realloc(cp->in, n * sizeof(*in));
		if (!in)
			return;
		cp->in = in;
		cp->nvms = n;
	}
	for (int i = 0; i < n; i++) {
		struct cache_input *in = &cp->in[i];
		struct sched_mem mem;

		memset(in, 0, sizeof(*in));
		in->ok = !sched_get_mem(s, i, &mem) && mem.balloon &&
			 !sched_get_agent(s, i, &in->agent);
		if (in->ok) {
			in->ram = mem.ram_bytes;
			in->target = mem.target_bytes;
		}
	}
	cache_step(&cache_defaults, cp->vms, cp->in, n, &d);
	if (d.from < 0)
		return;
	snprintf(why, sizeof(why), "%s: %llu MiB from %s (%.4f activations/page) to %s (%.4f)",
		 d.why, (unsigned long long)(d.amount / MIB), sched_vm_name(s, d.from),
		 cp->vms[d.from].score, sched_vm_name(s, d.to), cp->vms[d.to].score);
	sched_log(s, "cache", why);
	/* The giver first, so the host budget has room for the taker. */
	if (!sched_set_balloon(s, d.from, d.from_target, why))
		sched_set_balloon(s, d.to, d.to_target, why);
}

static void cache_fini(void *state)
{
	struct cache_policy *cp = state;

	if (cp) {
		free(cp->vms);
		free(cp->in);
	}
	free(cp);
}

const struct sched_policy sched_policy_cache = {
	.name = "cache",
	.period_ms = 5000,
	.init = cache_init,
	.tick = cache_tick,
	.fini = cache_fini,
};
