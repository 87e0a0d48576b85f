/*
 * The exclusive policy's assignment (sched/policy-exclusive.c): disjoint shares, at least one
 * pCPU per VM, shares that follow demand, node-aligned cuts, the vCPU layout inside a share.
 */
#include <errno.h>

#include "tests/harness.h"
#include "sched/policies.h"

static const int one_node[8] = { 0 };
static const int two_nodes[8] = { 0, 0, 0, 0, 1, 1, 1, 1 };
static const int interleaved[8] = { 0, 1, 0, 1, 0, 1, 0, 1 };

/* Disjoint, inside the host, at least one pCPU each, at most one per vCPU. */
static int valid(const uint64_t *out, const struct excl_vm *vms, int n, int ncpus)
{
	uint64_t seen = 0;

	for (int i = 0; i < n; i++) {
		int k = __builtin_popcountll(out[i]);

		if ((seen & out[i]) || (out[i] >> ncpus) || k < 1 || k > vms[i].vcpus)
			return 0;
		seen |= out[i];
	}
	return 1;
}

static void test_equal_and_disjoint(void)
{
	struct excl_vm vms[3] = { { true, 8, 0 }, { true, 8, 0 }, { true, 8, 0 } };
	uint64_t out[3];

	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 2, out), 0);
	CHECK(valid(out, vms, 2, 8));
	CHECK_EQ(out[0], 0x0f);
	CHECK_EQ(out[1], 0xf0);
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 3, out), 0);
	CHECK(valid(out, vms, 3, 8));
	CHECK_EQ(__builtin_popcountll(out[0]) + __builtin_popcountll(out[1]) +
		 __builtin_popcountll(out[2]), 8);
	/* Two CPUs, two VMs: one each. */
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 2, vms, 2, out), 0);
	CHECK_EQ(out[0], 1);
	CHECK_EQ(out[1], 2);
}

/* Demand moves the boundary: the busy VM gets more, the idle one keeps at least one. */
static void test_share_follows_demand(void)
{
	struct excl_vm vms[2] = { { true, 8, 6.0 }, { true, 8, 0.0 } };
	uint64_t out[2];

	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 2, out), 0);
	CHECK(valid(out, vms, 2, 8));
	CHECK_EQ(out[0], 0x7f);
	CHECK_EQ(out[1], 0x80);
	vms[0].demand = 2.0;
	vms[1].demand = 6.0;
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 2, out), 0);
	CHECK(valid(out, vms, 2, 8));
	CHECK_EQ(out[0], 0x03);
	CHECK_EQ(out[1], 0xfc);
	/* A recorded swing, 2 CPUs: 1+1 whatever the demand. */
	for (double d = 0; d < 3; d += 0.5) {
		vms[0].demand = d;
		CHECK_EQ(excl_assign(&excl_defaults, one_node, 2, vms, 2, out), 0);
		CHECK(valid(out, vms, 2, 2));
	}
}

/* No VM gets more pCPUs than vCPUs; what nobody can use stays free. */
static void test_vcpu_cap(void)
{
	struct excl_vm vms[2] = { { true, 1, 8.0 }, { true, 2, 8.0 } };
	uint64_t out[2];

	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 2, out), 0);
	CHECK(valid(out, vms, 2, 8));
	CHECK_EQ(__builtin_popcountll(out[0]), 1);
	CHECK_EQ(__builtin_popcountll(out[1]), 2);
}

/* Shares are cut in node order: two VMs on a two-node host get a node each. */
static void test_node_aligned(void)
{
	struct excl_vm vms[2] = { { true, 8, 1 }, { true, 8, 1 } };
	uint64_t out[2];

	CHECK_EQ(excl_assign(&excl_defaults, two_nodes, 8, vms, 2, out), 0);
	CHECK_EQ(out[0], 0x0f);
	CHECK_EQ(out[1], 0xf0);
	CHECK_EQ(excl_assign(&excl_defaults, interleaved, 8, vms, 2, out), 0);
	CHECK_EQ(out[0], 0x55);		/* node 0's CPUs 0,2,4,6 */
	CHECK_EQ(out[1], 0xaa);
}

static void test_refusals(void)
{
	struct excl_vm vms[3] = { { true, 4, 1 }, { true, 4, 1 }, { true, 4, 1 } };
	uint64_t out[3] = { 7, 7, 7 };

	CHECK_EQ(excl_assign(&excl_defaults, one_node, 2, vms, 3, out), -ENOSPC);
	vms[1].ok = false;		/* blind: hold */
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 3, out), -EAGAIN);
	CHECK_EQ(out[0], 7);
	vms[1].ok = true;
	vms[2].vcpus = 0;
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 3, out), -EAGAIN);
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 8, vms, 0, out), -EINVAL);
	CHECK_EQ(excl_assign(&excl_defaults, one_node, 65, vms, 2, out), -EINVAL);
}

/* Full vNUMA: vCPU c on pCPU c, the rest parked; otherwise the first vCPUs in order. */
static void test_layout(void)
{
	int pin[8];
	uint64_t parked;
	char list[64];

	excl_layout(0xf0, 8, 8, pin, &parked);
	CHECK_EQ(parked, 0x0f);
	CHECK_EQ(pin[0], -1);
	CHECK_EQ(pin[4], 4);
	CHECK_EQ(pin[7], 7);
	excl_layout(0x0c, 4, 8, pin, &parked);
	CHECK_EQ(pin[0], 2);
	CHECK_EQ(pin[1], 3);
	CHECK_EQ(pin[2], -1);
	CHECK_EQ(parked, 0x0c);
	excl_layout(0x3, 2, 2, pin, &parked);
	CHECK_EQ(parked, 0);
	CHECK_EQ(excl_cpulist(0x0f, list, sizeof(list)), 0);
	CHECK(!strcmp(list, "0-3"));
	CHECK_EQ(excl_cpulist(0xa5, list, sizeof(list)), 0);
	CHECK(!strcmp(list, "0,2,5,7"));
	CHECK_EQ(excl_cpulist(0x8000000000000001ull, list, sizeof(list)), 0);
	CHECK(!strcmp(list, "0,63"));
	CHECK_EQ(excl_cpulist(0, list, sizeof(list)), 0);
	CHECK(!strcmp(list, ""));
	CHECK_EQ(excl_cpulist(0x5555555555555555ull, list, 8), -ENOSPC);
}

/* Many random demands: always a valid assignment that hands out every usable CPU. */
static void test_random_demands(void)
{
	unsigned int seed = 1;

	for (int round = 0; round < 2000; round++) {
		struct excl_vm vms[6];
		uint64_t out[6], all = 0;
		int n = 1 + rand_r(&seed) % 6, ncpus = n + rand_r(&seed) % (9 - (n > 8 ? 8 : n)),
		    want = 0;

		for (int i = 0; i < n; i++) {
			vms[i].ok = true;
			vms[i].vcpus = 1 + rand_r(&seed) % 8;
			vms[i].demand = (rand_r(&seed) % 100) / 10.0;
			want += vms[i].vcpus;
		}
		CHECK_EQ(excl_assign(&excl_defaults, interleaved, ncpus, vms, n, out), 0);
		CHECK(valid(out, vms, n, ncpus));
		for (int i = 0; i < n; i++)
			all |= out[i];
		CHECK_EQ(__builtin_popcountll(all), want < ncpus ? want : ncpus);
	}
}

TEST_MAIN(TEST(test_equal_and_disjoint), TEST(test_share_follows_demand), TEST(test_vcpu_cap),
	  TEST(test_node_aligned), TEST(test_refusals), TEST(test_layout),
	  TEST(test_random_demands))
