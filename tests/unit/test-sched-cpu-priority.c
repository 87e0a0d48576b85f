/*
 * The cpu-priority policy's decisions (sched/policy-cpu-priority.c) on recorded host load
 * sequences, fed back as a VMM's threads would report them.
 */
#include "tests/harness.h"
#include "sched/policies.h"

/* Runs a load1 sequence on 2 CPUs, applying each decision; returns the number of changes. */
static int run(struct cpuprio_vm *vms, int n, const double *load1, int steps)
{
	int changes = 0;

	for (int i = 0; i < steps; i++) {
		struct cpuprio_decision d;

		cpuprio_step(&cpuprio_defaults, load1[i], 2, vms, n, &d);
		if (d.vm >= 0) {
			vms[d.vm].level = d.level;
			changes++;
		}
	}
	return changes;
}

/* Above 90% per CPU: the last VM (lowest priority on a tie) goes down one nice per tick. */
static void test_high_load_lowers_last(void)
{
	struct cpuprio_vm vms[3] = { { true, 0 }, { true, 0 }, { true, 0 } };
	const double load[] = { 1.81, 1.9, 2.5, 4.0 };
	struct cpuprio_decision d;

	CHECK_EQ(run(vms, 3, load, 4), 4);
	CHECK_EQ(vms[0].level, 0);
	CHECK_EQ(vms[1].level, 0);
	CHECK_EQ(vms[2].level, 4);
	/* Exactly 90% is not above the mark. */
	cpuprio_step(&cpuprio_defaults, 1.8, 2, vms, 3, &d);
	CHECK_EQ(d.vm, -1);
	/* The highest nice wins over the --vm order. */
	vms[0].level = 7;
	cpuprio_step(&cpuprio_defaults, 3.0, 2, vms, 3, &d);
	CHECK_EQ(d.vm, 0);
	CHECK_EQ(d.level, 8);
	CHECK(d.load > 1.49 && d.load < 1.51);
}

/* Below 10%: the first VM (highest priority on a tie) goes up; the lowest nice wins. */
static void test_low_load_raises_first(void)
{
	struct cpuprio_vm vms[2] = { { true, 0 }, { true, 0 } };
	const double idle[] = { 0.0, 0.1, 0.19 };
	struct cpuprio_decision d;

	CHECK_EQ(run(vms, 2, idle, 3), 3);
	CHECK_EQ(vms[0].level, -3);
	CHECK_EQ(vms[1].level, 0);
	cpuprio_step(&cpuprio_defaults, 0.2, 2, vms, 2, &d);	/* 10%: not below */
	CHECK_EQ(d.vm, -1);
	vms[1].level = -5;
	cpuprio_step(&cpuprio_defaults, 0.0, 2, vms, 2, &d);
	CHECK_EQ(d.vm, 1);
	CHECK_EQ(d.level, -6);
}

/* Bounded at +15 and -15: the policy holds there, it does not pick another VM. */
static void test_bounds(void)
{
	struct cpuprio_vm vms[2] = { { true, 0 }, { true, 0 } };
	double load[40];
	struct cpuprio_decision d;

	for (int i = 0; i < 40; i++)
		load[i] = 3.0;
	CHECK_EQ(run(vms, 2, load, 40), 15);
	CHECK_EQ(vms[1].level, 15);
	CHECK_EQ(vms[0].level, 0);
	cpuprio_step(&cpuprio_defaults, 3.0, 2, vms, 2, &d);
	CHECK_EQ(d.vm, -1);
	for (int i = 0; i < 40; i++)
		load[i] = 0.05;
	CHECK_EQ(run(vms, 2, load, 40), 15);
	CHECK_EQ(vms[0].level, -15);
	CHECK_EQ(vms[1].level, 15);
	/* A nice already beyond the bound (set by hand) is left alone. */
	vms[0].level = -20;
	cpuprio_step(&cpuprio_defaults, 0.0, 2, vms, 2, &d);
	CHECK_EQ(d.vm, -1);
}

/* A recorded day: load rises, stays between the marks, falls; the middle band holds. */
static void test_recorded_sequence(void)
{
	struct cpuprio_vm vms[2] = { { true, 0 }, { true, 0 } };
	const double load[] = { 0.5, 1.2, 1.85, 1.95, 2.1, 1.7, 1.0, 0.5, 0.3, 0.15, 0.1, 0.05 };
	static const int want1[] = { 0, 0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3 };
	static const int want0[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, -2, -3 };

	for (int i = 0; i < (int)(sizeof(load) / sizeof(load[0])); i++) {
		run(vms, 2, &load[i], 1);
		CHECK_EQ(vms[1].level, want1[i]);
		CHECK_EQ(vms[0].level, want0[i]);
	}
}

/* VMs without fresh figures are never chosen; no host figures: hold. */
static void test_missing_figures_hold(void)
{
	struct cpuprio_vm vms[2] = { { true, 0 }, { false, 0 } };
	struct cpuprio_decision d;

	cpuprio_step(&cpuprio_defaults, 3.0, 2, vms, 2, &d);
	CHECK_EQ(d.vm, 0);
	vms[0].ok = false;
	cpuprio_step(&cpuprio_defaults, 3.0, 2, vms, 2, &d);
	CHECK_EQ(d.vm, -1);
	cpuprio_step(&cpuprio_defaults, 0.0, 2, vms, 2, &d);
	CHECK_EQ(d.vm, -1);
	vms[0].ok = vms[1].ok = true;
	cpuprio_step(&cpuprio_defaults, 3.0, 0, vms, 2, &d);
	CHECK_EQ(d.vm, -1);
	cpuprio_step(&cpuprio_defaults, 3.0, 2, vms, 0, &d);
	CHECK_EQ(d.vm, -1);
}

/* cpu.weight follows the kernel's nice weights: 100 at 0, 1.25x a step, within 1..10000. */
static void test_weight_mapping(void)
{
	CHECK_EQ(cpuprio_weight(0), 100);
	CHECK_EQ(cpuprio_weight(1), 80);
	CHECK_EQ(cpuprio_weight(-1), 125);
	CHECK_EQ(cpuprio_weight(15), 4);
	CHECK_EQ(cpuprio_weight(-15), 2842);
	CHECK_EQ(cpuprio_weight(-40), 10000);
	CHECK_EQ(cpuprio_weight(40), 1);
	for (int l = -15; l < 15; l++)
		CHECK(cpuprio_weight(l) >= cpuprio_weight(l + 1) && cpuprio_weight(l) > 1);
}

TEST_MAIN(TEST(test_high_load_lowers_last), TEST(test_low_load_raises_first), TEST(test_bounds),
	  TEST(test_recorded_sequence), TEST(test_missing_figures_hold), TEST(test_weight_mapping))
