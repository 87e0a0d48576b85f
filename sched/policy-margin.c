/*
 * margin (paper 002): each VM gets W = Committed_AS + MarginSize. MarginSize follows an UP/DOWN
 * state machine every 5 s on what the unmodified guest shows (page cache, active file pages,
 * file refaults, swap-ins, major faults, memory PSI, all from the guest agent); the balloon goes
 * to W every second. A VM whose statistics are missing or stale is never ballooned: hold.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/policies.h"

#define MIB (1024ull * 1024)

const struct margin_params margin_defaults = {
	.adjust_s = 5.0,
	.stale_s = 5.0,
	.margin_init = 128 * MIB,
	.margin_min = 32 * MIB,
	.margin_max = 4096 * MIB,
	.step_up = 64 * MIB,
	.step_down = 16 * MIB,
	.floor = 96 * MIB,
	.hysteresis = 4 * MIB,
	.refault_pages = 64,
	.psi_some = 1.0,
};

static void set_base(struct margin_vm *vm, const struct sched_agent *a, double now)
{
	vm->cached = a->cached;
	vm->active_file = a->active_file;
	vm->refault_file = a->refault_file;
	vm->pswpin = a->pswpin;
	vm->pgmajfault = a->pgmajfault;
	vm->last_adjust = now;
	vm->have_base = true;
}

/* Counters only grow; a smaller value means the guest rebooted: no delta this time. */
static uint64_t delta(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}

/* The UP/DOWN machine, once per adjust_s. */
static void adjust(const struct margin_params *p, struct margin_vm *vm, const struct sched_agent *a)
{
	bool cache_grew = a->cached > vm->cached;
	bool active_grew = a->active_file > vm->active_file;
	bool active_shrank = a->active_file < vm->active_file;
	bool pressure = delta(a->refault_file, vm->refault_file) >= p->refault_pages ||
			delta(a->pswpin, vm->pswpin) > 0;
	bool psi = a->psi && a->psi_some_avg10 >= p->psi_some;
	bool up;

	/* Paper 002: UP stays up while the cache or its active part grows; DOWN shrinks the
	 * margin unless the cache grew *and* its active part shrank (it says "or" for the
	 * shrinking case). Pressure (refaults, swap-ins, PSI) is kumo's own way back up. But in
	 * DOWN, PSI alone is not: the balloon taking memory makes the guest reclaim, and those
	 * stalls are memory PSI of the balloon's own making (in the box an idle guest whose cache
	 * the balloon squeezed showed 1.6-18% and went 99 -> 483 MiB in 28 s,
	 * docs/experiments/margin.md); a working set it squeezes refaults, which still counts. */
	if (vm->state == MARGIN_UP)
		up = cache_grew || active_grew || pressure || psi;
	else
		up = (cache_grew && active_shrank) || pressure;
	if (up) {
		vm->margin = vm->margin + p->step_up > p->margin_max ? p->margin_max :
			     vm->margin + p->step_up;
		vm->state = MARGIN_UP;
	} else {
		vm->margin = vm->margin < p->margin_min + p->step_down ? p->margin_min :
			     vm->margin - p->step_down;
		vm->state = MARGIN_DOWN;
	}
}

void margin_step(const struct margin_params *p, struct margin_vm *vm,
		 const struct margin_input *in, struct margin_decision *d)
{
	uint64_t w;

	memset(d, 0, sizeof(*d));
	d->action = MARGIN_HOLD;
	if (!in->mem_ok || !in->agent_ok || in->agent.age_s > p->stale_s) {
		/* Blind: keep the target, and take a new baseline when the data comes back. */
		vm->have_base = false;
		d->why = !in->mem_ok ? "no fresh VMM stats" : "no fresh agent stats";
		return;
	}
	if (!vm->margin) {
		vm->margin = p->margin_init;
		vm->state = MARGIN_UP;
	}
	if (!vm->have_base) {
		set_base(vm, &in->agent, in->now);
	} else if (in->now - vm->last_adjust >= p->adjust_s) {
		adjust(p, vm, &in->agent);
		set_base(vm, &in->agent, in->now);
		d->adjusted = true;
	}
	/* A margin past the VM's RAM buys nothing and only delays the way down (kumo sim showed
	 * it climbing to margin_max while the VM sat at its RAM). */
	if (in->ram_bytes > in->agent.committed_as &&
	    vm->margin > in->ram_bytes - in->agent.committed_as)
		vm->margin = in->ram_bytes - in->agent.committed_as < p->margin_min ? p->margin_min :
			     in->ram_bytes - in->agent.committed_as;
	w = in->agent.committed_as + vm->margin;
	if (w < p->floor)
		w = p->floor;
	if (w > in->ram_bytes)
		w = in->ram_bytes;
	/* Skip a move too small to matter, against the VMM's target (truth after a restart). */
	if ((w > in->target_bytes ? w - in->target_bytes : in->target_bytes - w) < p->hysteresis) {
		d->why = "within hysteresis";
		vm->last_target = in->target_bytes;
		return;
	}
	d->action = MARGIN_SET;
	d->target = w;
	d->why = vm->state == MARGIN_UP ? "Committed_AS + margin (up)" :
					  "Committed_AS + margin (down)";
	vm->last_target = w;
}

struct margin_policy {
	int nvms;
	struct margin_vm *vms;
};

static int margin_init(struct sched *s, void **state)
{
	struct margin_policy *mp = calloc(1, sizeof(*mp));

	if (!mp)
		return -ENOMEM;
	*state = mp;
	return 0;
}

static void margin_tick(struct sched *s, void *state)
{
	struct margin_policy *mp = state;
	int n = sched_vm_count(s);

	if (n > mp->nvms) {
		struct margin_vm *v = realloc(mp->vms, n * sizeof(*v));

		if (!v)
			return;
		memset(v + mp->nvms, 0, (n - mp->nvms) * sizeof(*v));
		mp->vms = v;
		mp->nvms = n;
	}
	for (int i = 0; i < n; i++) {
		struct margin_input in = { .now = sched_now(s) };
		struct margin_decision d;
		struct sched_mem mem;

		in.mem_ok = !sched_get_mem(s, i, &mem) && mem.balloon;
		in.agent_ok = !sched_get_agent(s, i, &in.agent);
		if (in.mem_ok) {
			in.ram_bytes = mem.ram_bytes;
			in.target_bytes = mem.target_bytes;
		}
		margin_step(&margin_defaults, &mp->vms[i], &in, &d);
		if (d.adjusted) {
			char msg[160];

			snprintf(msg, sizeof(msg), "%s: margin %llu MiB (%s)", sched_vm_name(s, i),
				 (unsigned long long)(mp->vms[i].margin / MIB),
				 mp->vms[i].state == MARGIN_UP ? "up" : "down");
			sched_log(s, "margin", msg);
		}
		if (d.action == MARGIN_SET)
			sched_set_balloon(s, i, d.target, d.why);
	}
}

static void margin_fini(void *state)
{
	struct margin_policy *mp = state;

	if (mp)
		free(mp->vms);
	free(mp);
}

const struct sched_policy sched_policy_margin = {
	.name = "margin",
	.period_ms = 1000,
	.init = margin_init,
	.tick = margin_tick,
	.fini = margin_fini,
};
