/*
 * The margin policy's decisions (sched/policy-margin.c) on recorded statistics sequences, and
 * the coordinator's pure parsers and host bound (sched/stats.c).
 */
#include <errno.h>

#include <json-c/json.h>

#include "tests/harness.h"
#include "sched/policies.h"
#include "sched/stats.h"

#define MIB (1024ull * 1024)
#define GIB (1024 * MIB)

/* One recorded sample: time, Committed_AS, Cached, Active(file) in MiB, file refaults. */
struct rec {
	double t;
	uint64_t committed, cached, active, refaults;
};

static struct margin_input input(const struct rec *r)
{
	struct margin_input in = {
		.now = r->t, .mem_ok = true, .agent_ok = true,
		.ram_bytes = 2 * GIB, .target_bytes = 2 * GIB,
		.agent = {
			.age_s = 0.5, .committed_as = r->committed * MIB, .cached = r->cached * MIB,
			.active_file = r->active * MIB, .refault_file = r->refaults,
			.mem_total = 2 * GIB,
		},
	};
	return in;
}

/* Runs a sequence, feeding each decision's target back as the VMM's target (as a VMM does). */
static uint64_t run(struct margin_vm *vm, const struct rec *recs, int n, uint64_t *target,
		    int *sets)
{
	for (int i = 0; i < n; i++) {
		struct margin_input in = input(&recs[i]);
		struct margin_decision d;

		in.target_bytes = *target;
		margin_step(&margin_defaults, vm, &in, &d);
		if (d.action == MARGIN_SET) {
			*target = d.target;
			(*sets)++;
		}
	}
	return vm->margin;
}

static void test_margin_first_tick_and_period(void)
{
	const struct margin_params *p = &margin_defaults;
	struct rec r = { 0, 300, 100, 50, 0 };
	struct margin_vm vm = { 0 };
	struct margin_input in = input(&r);
	struct margin_decision d;

	margin_step(p, &vm, &in, &d);
	CHECK_EQ(d.action, MARGIN_SET);
	CHECK_EQ(d.target, 300 * MIB + p->margin_init);
	CHECK(!d.adjusted);
	/* Cache grows every second; the margin moves only once 5 s have passed. */
	for (int t = 1; t <= 5; t++) {
		struct rec g = { t, 300, 100 + 10 * t, 50, 0 };

		in = input(&g);
		in.target_bytes = 300 * MIB + p->margin_init;
		margin_step(p, &vm, &in, &d);
		CHECK_EQ(d.adjusted, t == 5);
	}
	CHECK_EQ(vm.margin, p->margin_init + p->step_up);
	CHECK_EQ(vm.state, MARGIN_UP);
	CHECK_EQ(d.action, MARGIN_SET);
	CHECK_EQ(d.target, 300 * MIB + p->margin_init + p->step_up);
}

/* Paper 002's machine: UP while cache or active file grows, else DOWN; DOWN shrinks the margin
 * while the cache did not grow or its active part did not shrink, and goes back UP only when
 * the cache grew and its active part shrank (the paper's "or" for shrinking). */
static void test_margin_up_down_sequence(void)
{
	const struct margin_params *p = &margin_defaults;
	static const struct rec seq[] = {
		{ 0, 400, 100, 80, 0 },
		{ 5, 400, 200, 90, 0 },		/* cache grew: up */
		{ 10, 400, 300, 95, 0 },	/* up */
		{ 15, 400, 300, 95, 0 },	/* flat: down */
		{ 20, 400, 300, 95, 0 },	/* flat: down */
		{ 25, 400, 300, 90, 0 },	/* active shrank alone in DOWN: still down */
		{ 30, 400, 350, 90, 0 },	/* cache grew alone in DOWN: still down */
		{ 35, 400, 400, 85, 0 },	/* cache grew and active shrank: up */
		{ 40, 400, 400, 85, 0 },	/* flat: down */
	};
	static const struct {
		uint64_t margin;
		enum margin_state state;
	} want[] = {
		{ 128 * MIB, MARGIN_UP },
		{ 192 * MIB, MARGIN_UP },
		{ 256 * MIB, MARGIN_UP },
		{ 240 * MIB, MARGIN_DOWN },
		{ 224 * MIB, MARGIN_DOWN },
		{ 208 * MIB, MARGIN_DOWN },
		{ 192 * MIB, MARGIN_DOWN },
		{ 256 * MIB, MARGIN_UP },
		{ 240 * MIB, MARGIN_DOWN },
	};
	struct margin_vm vm = { 0 };
	uint64_t target = 2 * GIB;
	int sets = 0;

	CHECK_EQ(p->margin_init, 128 * MIB);
	CHECK_EQ(p->step_up, 64 * MIB);
	CHECK_EQ(p->step_down, 16 * MIB);
	for (int i = 0; i < (int)(sizeof(seq) / sizeof(seq[0])); i++) {
		run(&vm, &seq[i], 1, &target, &sets);
		CHECK_EQ(vm.margin, want[i].margin);
		CHECK_EQ(vm.state, want[i].state);
		CHECK_EQ(target, 400 * MIB + want[i].margin);
	}
	CHECK_EQ(sets, 9);
}

static void test_margin_pressure_and_limits(void)
{
	const struct margin_params *p = &margin_defaults;
	struct margin_vm vm = { 0 };
	uint64_t target = 2 * GIB;
	int sets = 0;
	/* Flat cache but refaults: pressure keeps it UP. */
	static const struct rec refaults[] = {
		{ 0, 200, 100, 80, 1000 }, { 5, 200, 100, 80, 1000 + 64 },
		{ 10, 200, 100, 80, 1000 + 64 + 10 },
	};

	run(&vm, refaults, 2, &target, &sets);
	CHECK_EQ(vm.state, MARGIN_UP);
	CHECK_EQ(vm.margin, p->margin_init + p->step_up);
	run(&vm, refaults + 2, 1, &target, &sets);	/* 10 refaults: not pressure */
	CHECK_EQ(vm.state, MARGIN_DOWN);

	/* The margin never goes below margin_min; the target never below the floor. */
	memset(&vm, 0, sizeof(vm));
	target = 2 * GIB;
	for (int t = 0; t <= 200; t += 5) {
		struct rec r = { t, 0, 0, 0, 0 };

		run(&vm, &r, 1, &target, &sets);
	}
	CHECK_EQ(vm.margin, p->margin_min);
	CHECK_EQ(target, p->floor);

	/* Never more than the VM's RAM. */
	memset(&vm, 0, sizeof(vm));
	{
		struct rec big = { 0, 4096, 0, 0, 0 };
		struct margin_input in = input(&big);
		struct margin_decision d;

		in.target_bytes = GIB;
		margin_step(p, &vm, &in, &d);
		CHECK_EQ(d.action, MARGIN_SET);
		CHECK_EQ(d.target, 2 * GIB);
	}
	/* A counter going backwards (guest reboot) is no pressure and no crash. */
	memset(&vm, 0, sizeof(vm));
	{
		static const struct rec reboot[] = { { 0, 200, 100, 80, 5000 },
						     { 5, 200, 100, 80, 10 } };

		target = 2 * GIB;
		run(&vm, reboot, 2, &target, &sets);
		CHECK_EQ(vm.state, MARGIN_DOWN);
	}
}

/*
 * Memory PSI keeps an UP machine up, but in DOWN it alone is no pressure: the balloon taking
 * memory makes the guest reclaim, and that shows as PSI (the box: an idle guest went 99 ->
 * 483 MiB on it). Refaults in DOWN still send it up.
 */
static void test_margin_psi_only_in_up(void)
{
	const struct margin_params *p = &margin_defaults;
	static const struct rec flat[] = {
		{ 0, 200, 100, 80, 0 }, { 5, 200, 100, 80, 0 }, { 10, 200, 100, 80, 0 },
		{ 15, 200, 100, 80, 100 },
	};
	static const double psi[2][4] = { { 0, 5.0, 0, 0 }, { 0, 0, 5.0, 0 } };

	for (int k = 0; k < 2; k++) {
		struct margin_vm vm = { 0 };
		uint64_t target = 2 * GIB;

		for (int i = 0; i < 4; i++) {
			struct margin_input in = input(&flat[i]);
			struct margin_decision d;

			in.target_bytes = target;
			in.agent.psi = true;
			in.agent.psi_some_avg10 = psi[k][i];
			margin_step(p, &vm, &in, &d);
			if (d.action == MARGIN_SET)
				target = d.target;
			if (k == 0 && i == 1) {		/* UP (the first state) with PSI: up */
				CHECK_EQ(vm.state, MARGIN_UP);
				CHECK_EQ(vm.margin, p->margin_init + p->step_up);
			}
			if (k == 1 && i == 2) {		/* DOWN with PSI alone: still down */
				CHECK_EQ(vm.state, MARGIN_DOWN);
				CHECK_EQ(vm.margin, p->margin_init - 2 * p->step_down);
			}
		}
		CHECK_EQ(vm.state, MARGIN_UP);		/* 100 refaults: up */
	}
}

/* Missing or stale statistics: hold (never balloon blind), then start a new baseline. */
static void test_margin_missing_or_stale_holds(void)
{
	const struct margin_params *p = &margin_defaults;
	struct rec r = { 0, 300, 100, 50, 0 };
	struct margin_vm vm = { 0 };
	struct margin_input in;
	struct margin_decision d;

	in = input(&r);
	in.agent_ok = false;
	margin_step(p, &vm, &in, &d);
	CHECK_EQ(d.action, MARGIN_HOLD);

	in = input(&r);
	in.mem_ok = false;
	margin_step(p, &vm, &in, &d);
	CHECK_EQ(d.action, MARGIN_HOLD);

	in = input(&r);
	in.agent.age_s = p->stale_s + 0.1;
	margin_step(p, &vm, &in, &d);
	CHECK_EQ(d.action, MARGIN_HOLD);
	CHECK(!vm.have_base);

	/* Data back at t=0: set, baseline taken. Stale at t=4..9, back at t=10: no adjustment
	 * against the old baseline (it would see 10 s of change as 5). */
	in = input(&r);
	margin_step(p, &vm, &in, &d);
	CHECK_EQ(d.action, MARGIN_SET);
	CHECK(vm.have_base);
	for (int t = 4; t < 10; t++) {
		struct rec g = { t, 300, 100 + 50 * t, 50, 0 };

		in = input(&g);
		in.agent.age_s = 30;
		in.target_bytes = d.target;
		margin_step(p, &vm, &in, &d);
		CHECK_EQ(d.action, MARGIN_HOLD);
	}
	{
		struct rec g = { 10, 300, 1000, 50, 0 };

		in = input(&g);
		in.target_bytes = 300 * MIB + p->margin_init;
		margin_step(p, &vm, &in, &d);
		CHECK(!d.adjusted);
		CHECK_EQ(vm.margin, p->margin_init);
		CHECK_EQ(d.action, MARGIN_HOLD);	/* the target is already W */
		CHECK(!strcmp(d.why, "within hysteresis"));
	}
}

static void test_bound_target(void)
{
	/* want, ram, budget, others, floor -> target */
	static const struct {
		uint64_t want, ram, budget, others, floor, t;
	} cases[] = {
		{ 512, 1024, 4096, 1024, 32, 512 },	/* within everything */
		{ 2048, 1024, 4096, 0, 32, 1024 },	/* at most RAM */
		{ 1024, 1024, 3072, 2560, 32, 512 },	/* at most what the budget leaves */
		{ 1024, 1024, 3072, 3060, 32, 0 },	/* no room: below the floor */
		{ 1024, 1024, 3072, 4000, 32, 0 },	/* others over budget already */
		{ 16, 1024, 3072, 0, 32, 0 },		/* asks for less than the floor */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_EQ(sched_bound_target(cases[i].want, cases[i].ram, cases[i].budget,
					    cases[i].others, cases[i].floor), cases[i].t);
}

/* The agent-stats reply of docs/control-protocol.md around the stats of docs/guest.md. */
static const char agent_reply[] =
	"{\"id\":7,\"ok\":true,\"result\":{\"connected\":true,\"connects\":1,\"stats_received\":9,"
	"\"bad_lines\":0,\"age_s\":0.4,\"data\":{\"seq\":8,\"period_ms\":1000,"
	"\"meminfo\":{\"MemTotal\":246092,\"MemFree\":236112,\"MemAvailable\":233336,"
	"\"Cached\":2236,\"Active(file)\":10,\"Inactive(file)\":0,\"SwapTotal\":0,\"SwapFree\":0,"
	"\"Committed_AS\":2928},\"vmstat\":{\"workingset_refault_file\":5,"
	"\"workingset_activate_file\":2,\"pswpin\":0,\"pswpout\":0,\"pgmajfault\":3,\"pgscan\":0},"
	"\"psi_memory\":{\"some\":{\"avg10\":1.50,\"avg60\":0.00,\"avg300\":0.00,\"total_us\":0},"
	"\"full\":{\"avg10\":0.25,\"avg60\":0.00,\"avg300\":0.00,\"total_us\":0}},\"parked\":\"\"}}}";

static void test_parse_replies(void)
{
	struct json_object *res = NULL;
	struct sched_agent a;
	struct sched_mem m;
	char err[128];
	int64_t id;

	CHECK_EQ(sched_parse_reply(agent_reply, strlen(agent_reply), &id, &res, err, sizeof(err)), 0);
	CHECK_EQ(id, 7);
	CHECK(res);
	CHECK_EQ(sched_parse_agent_stats(res, &a), 0);
	json_object_put(res);
	CHECK_EQ(a.seq, 8);
	CHECK_EQ(a.committed_as, 2928 * 1024ull);
	CHECK_EQ(a.cached, 2236 * 1024ull);
	CHECK_EQ(a.active_file, 10 * 1024ull);
	CHECK_EQ(a.refault_file, 5);
	CHECK_EQ(a.pgmajfault, 3);
	CHECK(a.psi && a.psi_some_avg10 == 1.5 && a.psi_full_avg10 == 0.25);
	CHECK(a.age_s == 0.4);

	/* Events are skipped, error replies carry their message, junk is refused. */
	{
		static const char ev[] = "{\"event\":\"balloon-target\",\"data\":{},\"ts\":1.0}";
		static const char er[] = "{\"id\":3,\"ok\":false,\"error\":\"no balloon device\"}";

		CHECK_EQ(sched_parse_reply(ev, strlen(ev), &id, &res, err, sizeof(err)), 1);
		CHECK_EQ(sched_parse_reply(er, strlen(er), &id, &res, err, sizeof(err)), -EREMOTEIO);
		CHECK_EQ(id, 3);
		CHECK(!strcmp(err, "no balloon device"));
		CHECK_EQ(sched_parse_reply("[1]", 3, &id, &res, err, sizeof(err)), -EINVAL);
		CHECK_EQ(sched_parse_reply("{\"id\":1}", 8, &id, &res, err, sizeof(err)), -EINVAL);
		CHECK_EQ(sched_parse_reply("{\"ok\":tru", 9, &id, &res, err, sizeof(err)), -EINVAL);
	}
	/* Agent not connected, no data yet, data without Committed_AS. */
	{
		static const char *const bad[] = {
			"{\"connected\":false,\"connects\":0}",
			"{\"connected\":true,\"connects\":1}",
			"{\"connected\":true,\"age_s\":1,\"data\":{\"meminfo\":{\"MemTotal\":1}}}",
			"{\"connected\":true,\"age_s\":-1,\"data\":{\"meminfo\":{\"MemTotal\":1,"
			"\"Committed_AS\":1}}}",
		};
		static const int want[] = { -ENOTCONN, -ENODATA, -ENODATA, -ENODATA };

		for (int i = 0; i < 4; i++) {
			res = json_tokener_parse(bad[i]);
			CHECK(res);
			CHECK_EQ(sched_parse_agent_stats(res, &a), want[i]);
			json_object_put(res);
		}
	}
	/* VMM stats: balloon and its statistics; without guest_ram_bytes it is no stats. */
	res = json_tokener_parse("{\"guest_ram_bytes\":1073741824,\"guest_ram_resident_bytes\":5,"
				 "\"balloon\":{\"target_bytes\":536870912,\"actual_bytes\":600000000,"
				 "\"balloon_bytes\":1},\"balloon_stats\":{\"swap_in\":4,"
				 "\"major_faults\":9,\"disk_caches\":1000,\"updates\":3,\"age_s\":0.9}}");
	CHECK(res);
	CHECK_EQ(sched_parse_vmm_stats(res, &m), 0);
	json_object_put(res);
	CHECK_EQ(m.ram_bytes, GIB);
	CHECK(m.balloon && m.target_bytes == 512 * MIB && m.actual_bytes == 600000000);
	CHECK(m.balloon_stats && m.swap_in == 4 && m.major_faults == 9 && m.disk_caches == 1000);
	res = json_tokener_parse("{\"guest_ram_bytes\":-5,\"balloon\":{\"target_bytes\":\"x\"}}");
	CHECK_EQ(sched_parse_vmm_stats(res, &m), -EINVAL);
	json_object_put(res);
	res = json_tokener_parse("{\"guest_ram_bytes\":100,\"balloon\":{\"target_bytes\":\"x\"}}");
	CHECK_EQ(sched_parse_vmm_stats(res, &m), 0);
	json_object_put(res);
	CHECK(!m.balloon);
}

static void test_parse_host(void)
{
	double load[3], some, full;
	uint64_t total, avail, ticks;
	int nice;

	CHECK_EQ(sched_parse_loadavg("0.52 1.25 3.00 2/345 6789\n", load), 0);
	CHECK(load[0] == 0.52 && load[1] == 1.25 && load[2] == 3.0);
	CHECK_EQ(sched_parse_loadavg("0.5 x", load), -EINVAL);
	CHECK_EQ(sched_parse_meminfo("MemTotal:       16384 kB\nMemFree:  1 kB\n"
				     "MemAvailable:    8192 kB\n", &total, &avail), 0);
	CHECK_EQ(total, 16384 * 1024ull);
	CHECK_EQ(avail, 8192 * 1024ull);
	CHECK_EQ(sched_parse_meminfo("MemTotal: 1 kB\n", &total, &avail), -EINVAL);
	CHECK_EQ(sched_parse_psi("some avg10=2.50 avg60=0.00 avg300=0.00 total=1\n"
				 "full avg10=0.75 avg60=0.00 avg300=0.00 total=0\n", &some, &full), 0);
	CHECK(some == 2.5 && full == 0.75);
	CHECK_EQ(sched_parse_psi("nothing", &some, &full), -EINVAL);
	/* A thread name with a space and a parenthesis. */
	CHECK_EQ(sched_parse_task_stat("123 (kumo vcpu) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 "
				       "-5 1 0 100\n", &ticks, &nice), 0);
	CHECK_EQ(ticks, 300);
	CHECK_EQ(nice, -5);
	CHECK_EQ(sched_parse_task_stat("123 kumo", &ticks, &nice), -EINVAL);
}

TEST_MAIN(TEST(test_margin_first_tick_and_period), TEST(test_margin_up_down_sequence),
	  TEST(test_margin_pressure_and_limits), TEST(test_margin_psi_only_in_up),
	  TEST(test_margin_missing_or_stale_holds),
	  TEST(test_bound_target), TEST(test_parse_replies), TEST(test_parse_host))
