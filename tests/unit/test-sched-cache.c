/*
 * The cache policy's decisions (sched/policy-cache.c) on recorded agent statistics: the
 * paper's two cases, the Committed_AS + Active(file) guard, pressure, missing and stale data.
 */
#include "tests/harness.h"
#include "sched/policies.h"

#define MIB (1024ull * 1024)
#define PAGES(mib) ((mib) * 256ull)

/* One VM's recorded sample: MiB figures and counters as counted (pages). */
struct rec {
	uint64_t committed, cached, active, activate, refault;
};

static struct cache_input input(const struct rec *r, uint64_t ram, uint64_t target)
{
	struct cache_input in = {
		.ok = true, .ram = ram, .target = target,
		.agent = {
			.age_s = 0.5, .committed_as = r->committed * MIB, .cached = r->cached * MIB,
			.active_file = r->active * MIB, .activate_file = r->activate,
			.refault_file = r->refault,
		},
	};
	return in;
}

/*
 * Runs two VMs through recorded per-period samples, applying each move to the targets as the
 * VMM would. Returns the number of moves; targets end in t[].
 */
static int run2(struct cache_vm *st, const struct rec (*seq)[2], int steps, uint64_t ram,
		uint64_t *t, int *last_to)
{
	int moves = 0;

	for (int k = 0; k < steps; k++) {
		struct cache_input in[2] = { input(&seq[k][0], ram, t[0]),
					     input(&seq[k][1], ram, t[1]) };
		struct cache_decision d;

		cache_step(&cache_defaults, st, in, 2, &d);
		if (d.from >= 0) {
			t[d.from] = d.from_target;
			t[d.to] = d.to_target;
			*last_to = d.to;
			moves++;
		}
	}
	return moves;
}

/*
 * Case 1: VM0 (low locality: refaults with long distances, few activations, big cache) against
 * VM1 (medium locality: many activations, would fit with more). Memory flows 0 -> 1, never
 * below VM0's Committed_AS + Active(file) + floor.
 */
static void test_case1_flows_to_medium_locality(void)
{
	struct rec seq[12][2];
	struct cache_vm st[2] = { 0 };
	uint64_t t[2] = { 512 * MIB, 512 * MIB };
	int to = -1, moves;

	for (int k = 0; k < 12; k++) {
		seq[k][0] = (struct rec){ 100, 380, 60, 10 * k, 5000 * k };
		seq[k][1] = (struct rec){ 100, 380, 300, 3000 * k, 3500 * k };
	}
	moves = run2(st, seq, 12, 1024 * MIB, t, &to);
	CHECK(moves >= 3);
	CHECK_EQ(to, 1);
	CHECK(t[1] > 512 * MIB);
	CHECK_EQ(t[0] + t[1], 1024 * MIB);	/* moved, not made */
	/* Guard: VM0 keeps Committed_AS + Active(file) + floor = 100 + 60 + 64 MiB. */
	CHECK(t[0] >= 224 * MIB);
	CHECK_EQ(t[0], 224 * MIB);		/* 11 periods were enough to reach it */
}

/* Case 2: VM1 fits already (no refaults): nobody would use more, nothing moves. */
static void test_case2_no_change(void)
{
	struct rec seq[10][2];
	struct cache_vm st[2] = { 0 };
	uint64_t t[2] = { 512 * MIB, 512 * MIB };
	int to = -1;

	for (int k = 0; k < 10; k++) {
		seq[k][0] = (struct rec){ 100, 380, 60, 10 * k, 5000 * k };
		seq[k][1] = (struct rec){ 100, 300, 280, 0, 0 };
	}
	CHECK_EQ(run2(st, seq, 10, 1024 * MIB, t, &to), 0);
	CHECK_EQ(t[0], 512 * MIB);
	CHECK_EQ(t[1], 512 * MIB);
}

/*
 * The ping-pong seen in kumo sim at the box's scale: VM0 a busy low-locality reader (thousands
 * of refaults a period over a set far larger than memory, a small share of them activating, but
 * more than activate_min, and per page of its small cache more than twice VM1's), VM1 a VM
 * whose working set has just come to fit (no refaults). VM0 must not take VM1's memory; a VM
 * whose refaults mostly activate still does.
 */
static void test_low_locality_does_not_take(void)
{
	struct rec seq[10][2];
	struct cache_vm st[2] = { 0 };
	uint64_t t[2] = { 128 * MIB, 384 * MIB };
	int to = -1;

	for (int k = 0; k < 10; k++) {
		seq[k][0] = (struct rec){ 5, 63, 30, 150 * k, 8000 * k };
		seq[k][1] = (struct rec){ 5, 310, 150, 0, 0 };
	}
	CHECK_EQ(run2(st, seq, 10, 448 * MIB, t, &to), 0);
	CHECK_EQ(t[0], 128 * MIB);
	CHECK_EQ(t[1], 384 * MIB);
	/* The same VM0, with most of its refaults activating (its set would fit): it takes. */
	memset(st, 0, sizeof(st));
	for (int k = 0; k < 10; k++)
		seq[k][0] = (struct rec){ 5, 63, 30, 3000 * k, 8000 * k };
	CHECK(run2(st, seq, 10, 448 * MIB, t, &to) >= 1);
	CHECK_EQ(to, 0);
	CHECK(t[0] > 128 * MIB);
}

/* Both pay off alike: no ping-pong. */
static void test_close_payoffs_hold(void)
{
	struct rec seq[8][2];
	struct cache_vm st[2] = { 0 };
	uint64_t t[2] = { 512 * MIB, 512 * MIB };
	int to = -1;

	for (int k = 0; k < 8; k++) {
		seq[k][0] = (struct rec){ 100, 300, 100, 2000 * k, 2000 * k };
		seq[k][1] = (struct rec){ 100, 300, 100, 2500 * k, 2500 * k };
	}
	CHECK_EQ(run2(st, seq, 8, 1024 * MIB, t, &to), 0);
}

/* The first sample is a baseline; a VM under pressure never gives; a full VM never takes. */
static void test_baseline_pressure_full(void)
{
	struct rec a0 = { 100, 380, 60, 0, 0 }, b0 = { 100, 380, 300, 0, 0 };
	struct rec a1 = { 100, 380, 60, 10, 5000 }, b1 = { 100, 380, 300, 3000, 3500 };
	struct cache_vm st[2] = { 0 };
	struct cache_input in[2] = { input(&a0, 1024 * MIB, 512 * MIB), input(&b0, 1024 * MIB,
									    512 * MIB) };
	struct cache_decision d;

	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(d.from, -1);			/* baseline */
	in[0] = input(&a1, 1024 * MIB, 512 * MIB);
	in[1] = input(&b1, 1024 * MIB, 512 * MIB);
	in[0].agent.psi = true;
	in[0].agent.psi_some_avg10 = 25.0;
	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(d.from, -1);			/* the giver is under pressure */
	a1.activate += 10;
	b1.activate += 3000;
	in[0] = input(&a1, 1024 * MIB, 512 * MIB);
	in[1] = input(&b1, 1024 * MIB, 1024 * MIB);	/* the taker has all its RAM */
	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(d.from, -1);
}

/* Agent gone or stale: that VM is left alone and takes a new baseline when it returns. */
static void test_missing_and_stale(void)
{
	struct rec a = { 100, 380, 60, 0, 0 }, b = { 100, 380, 300, 0, 0 };
	struct cache_vm st[2] = { 0 };
	struct cache_input in[2];
	struct cache_decision d;

	for (int k = 0; k < 2; k++) {
		in[0] = input(&a, 1024 * MIB, 512 * MIB);
		in[1] = input(&b, 1024 * MIB, 512 * MIB);
		cache_step(&cache_defaults, st, in, 2, &d);
		a.activate += 10;
		b.activate += 3000;
	}
	CHECK_EQ(d.from, 0);			/* it would move with both seen */
	in[0] = input(&a, 1024 * MIB, 512 * MIB);
	in[1] = input(&b, 1024 * MIB, 512 * MIB);
	in[0].ok = false;			/* the giver's agent is gone */
	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(d.from, -1);
	CHECK(!st[0].have_base);
	in[0].ok = true;
	in[0].agent.age_s = 30;			/* back, but stale */
	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(d.from, -1);
	in[0].agent.age_s = 0.5;		/* fresh: a baseline first, no jump */
	a.activate += 1000000;
	in[0] = input(&a, 1024 * MIB, 512 * MIB);
	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(d.from, -1);
	CHECK(st[0].have_base);
	/* A guest reboot (counters reset) counts as no activity, not a huge one. */
	a.activate = 0;
	b.activate += 3000;
	in[0] = input(&a, 1024 * MIB, 512 * MIB);
	in[1] = input(&b, 1024 * MIB, 512 * MIB);
	cache_step(&cache_defaults, st, in, 2, &d);
	CHECK_EQ(st[0].hits, 0);
	CHECK_EQ(d.from, 0);
}

TEST_MAIN(TEST(test_case1_flows_to_medium_locality), TEST(test_case2_no_change),
	  TEST(test_low_locality_does_not_take), TEST(test_close_payoffs_hold), TEST(test_baseline_pressure_full),
	  TEST(test_missing_and_stale))
