/*
 * kumo sim (sched/sim.h): the LRU model against a plain reference implementation of the same
 * rules on small traces, known answers of the model, CPU sharing, determinism of whole runs
 * (same seed, byte-identical log), scenario refusals (malformed and hostile files: an error
 * naming the line, no crash), and a replay of a small recorded coordinator log.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sched/sim.h"
#include "tests/harness.h"

/* ---- the reference: lists as arrays, head at index 0, linear scans everywhere ---- */

#define REF_MAX 512

struct ref {
	uint32_t page_bytes;
	int list[3][REF_MAX], n[3];	/* [SIM_PAGE_INACTIVE], [SIM_PAGE_ACTIVE] */
	int where[REF_MAX];		/* SIM_PAGE_* */
	int ref[REF_MAX];
	uint64_t shadow[REF_MAX];	/* eviction age + 1 */
	uint64_t age;
	uint64_t hits, misses, refault, activate, evicted;
};

static void ref_remove(struct ref *r, int s, int p)
{
	for (int i = 0; i < r->n[s]; i++) {
		if (r->list[s][i] != p)
			continue;
		memmove(&r->list[s][i], &r->list[s][i + 1], (r->n[s] - i - 1) * sizeof(int));
		r->n[s]--;
		r->where[p] = SIM_PAGE_NONE;
		return;
	}
}

static void ref_push(struct ref *r, int s, int p)
{
	memmove(&r->list[s][1], &r->list[s][0], r->n[s] * sizeof(int));
	r->list[s][0] = p;
	r->n[s]++;
	r->where[p] = s;
}

static int isqrt(int x)
{
	int y = 0;

	while ((y + 1) * (y + 1) <= x)
		y++;
	return y;
}

static bool ref_inactive_low(const struct ref *r)
{
	uint64_t bytes = (uint64_t)(r->n[SIM_PAGE_INACTIVE] + r->n[SIM_PAGE_ACTIVE]) * r->page_bytes;
	int gb = (int)(bytes / (1ull << 30));
	int ratio = gb ? isqrt(10 * gb) : 1;

	return r->n[SIM_PAGE_INACTIVE] * ratio < r->n[SIM_PAGE_ACTIVE];
}

static void ref_shrink(struct ref *r, int limit)
{
	while (r->n[1] + r->n[2] > limit) {
		int excess = r->n[1] + r->n[2] - limit;

		if (ref_inactive_low(r) || !r->n[SIM_PAGE_INACTIVE])
			for (int k = 0; k < 32 && r->n[SIM_PAGE_ACTIVE]; k++) {
				int p = r->list[SIM_PAGE_ACTIVE][r->n[SIM_PAGE_ACTIVE] - 1];

				ref_remove(r, SIM_PAGE_ACTIVE, p);
				r->ref[p] = 0;
				ref_push(r, SIM_PAGE_INACTIVE, p);
			}
		for (int k = 0; k < (excess < 32 ? excess : 32) && r->n[SIM_PAGE_INACTIVE]; k++) {
			int p = r->list[SIM_PAGE_INACTIVE][r->n[SIM_PAGE_INACTIVE] - 1];

			ref_remove(r, SIM_PAGE_INACTIVE, p);
			r->ref[p] = 0;
			r->shadow[p] = ++r->age;
			r->evicted++;
		}
	}
}

static int ref_access(struct ref *r, int p, int limit)
{
	if (r->where[p] == SIM_PAGE_INACTIVE) {
		r->hits++;
		if (r->ref[p]) {
			ref_remove(r, SIM_PAGE_INACTIVE, p);
			r->ref[p] = 0;
			ref_push(r, SIM_PAGE_ACTIVE, p);
			r->age++;
		} else {
			r->ref[p] = 1;
		}
		return 1;
	}
	if (r->where[p] == SIM_PAGE_ACTIVE) {
		r->hits++;
		r->ref[p] = 1;
		return 1;
	}
	r->misses++;
	if (!limit)
		return 0;
	ref_shrink(r, limit - 1);
	if (r->shadow[p]) {
		uint64_t d = r->age - (r->shadow[p] - 1);

		r->shadow[p] = 0;
		r->refault++;
		if (d <= (uint64_t)r->n[SIM_PAGE_ACTIVE]) {
			r->activate++;
			r->age++;
			r->ref[p] = 0;
			ref_push(r, SIM_PAGE_ACTIVE, p);
			return 0;
		}
	}
	r->ref[p] = 1;
	ref_push(r, SIM_PAGE_INACTIVE, p);
	return 0;
}

/* The model's lists, head to tail, must be the reference's. */
static bool same_lists(const struct sim_lru *l, const struct ref *r)
{
	for (int s = SIM_PAGE_INACTIVE; s <= SIM_PAGE_ACTIVE; s++) {
		int32_t p = l->head[s];

		if (l->nr[s] != (uint64_t)r->n[s])
			return false;
		for (int i = 0; i < r->n[s]; i++, p = l->next[p])
			if (p != r->list[s][i])
				return false;
		if (p != -1)
			return false;
	}
	return true;
}

static void run_against_reference(uint32_t page_bytes, int npages, int limit, int steps,
				  uint64_t seed, int hot)
{
	struct sim_lru l;
	struct ref *r = calloc(1, sizeof(*r));

	CHECK(r);
	r->page_bytes = page_bytes;
	CHECK(sim_lru_init(&l, npages, page_bytes) == 0);
	for (int i = 0; i < steps; i++) {
		/* A hot set read often and a cold range read now and then, limit moving. */
		int p = sim_rand(&seed) % 4 ? (int)(sim_rand(&seed) % hot) :
					      (int)(sim_rand(&seed) % npages);
		int lim = limit - (int)(i / 500 % 3) * (limit / 4);

		if (i % 97 == 0) {
			sim_lru_shrink(&l, lim);
			ref_shrink(r, lim);
		}
		if (sim_lru_access(&l, p, lim) != ref_access(r, p, lim)) {
			fprintf(stderr, "  step %d page %d: hit/miss differ\n", i, p);
			CHECK(0);
		}
		if (!same_lists(&l, r)) {
			fprintf(stderr, "  step %d page %d: lists differ\n", i, p);
			CHECK(0);
		}
	}
	CHECK_EQ(l.st.hits, r->hits);
	CHECK_EQ(l.st.misses, r->misses);
	CHECK_EQ(l.st.refault, r->refault);
	CHECK_EQ(l.st.activate, r->activate);
	CHECK_EQ(l.st.evicted, r->evicted);
	CHECK_EQ(l.nonresident_age, r->age);
	CHECK(l.st.activate > 0 && l.st.refault > l.st.activate && l.st.hits > 0);
	sim_lru_free(&l);
	free(r);
}

static void test_lru_vs_reference_small(void)
{
	run_against_reference(4096, 200, 64, 20000, 1, 48);
}

static void test_lru_vs_reference_ratio(void)
{
	/* 64 MiB pages: the cache is GiBs and the inactive ratio int_sqrt(10 * GiB) > 1. */
	run_against_reference(64u << 20, 300, 120, 20000, 7, 80);
}

static void test_lru_vs_reference_tight(void)
{
	run_against_reference(4096, 64, 8, 20000, 3, 12);
}

static void test_lru_known_answers(void)
{
	struct sim_lru l;

	/* A working set that fits: after one pass every read is a hit, nothing evicted. */
	CHECK(sim_lru_init(&l, 100, 4096) == 0);
	for (int pass = 0; pass < 3; pass++)
		for (int p = 0; p < 50; p++)
			sim_lru_access(&l, p, 60);
	CHECK_EQ(l.st.misses, 50);
	CHECK_EQ(l.st.hits, 100);
	CHECK_EQ(l.st.evicted, 0);
	CHECK_EQ(l.nr[SIM_PAGE_ACTIVE], 50);	/* the second read activated each */
	sim_lru_free(&l);

	/* A loop one page larger than the cache, read once per pass: never a hit, refaults
	 * every time, and no activation (the refault distance is always the whole loop). */
	CHECK(sim_lru_init(&l, 100, 4096) == 0);
	for (int pass = 0; pass < 5; pass++)
		for (int p = 0; p < 41; p++)
			sim_lru_access(&l, p, 40);
	CHECK_EQ(l.st.hits, 0);
	CHECK_EQ(l.st.refault, 4 * 41);
	CHECK_EQ(l.st.activate, 0);
	sim_lru_free(&l);

	/* A page evicted and read back soon, while active pages exist: a workingset activation. */
	CHECK(sim_lru_init(&l, 100, 4096) == 0);
	for (int p = 0; p < 4; p++) {		/* 0-3 active */
		sim_lru_access(&l, p, 8);
		sim_lru_access(&l, p, 8);
	}
	for (int p = 10; p < 15; p++)		/* 10 evicted at the fifth */
		sim_lru_access(&l, p, 8);
	CHECK_EQ(l.st.evicted, 1);
	CHECK(l.shadow[10] != 0);
	sim_lru_access(&l, 10, 8);
	CHECK_EQ(l.st.refault, 1);
	CHECK_EQ(l.st.activate, 1);
	CHECK_EQ(l.state[10], SIM_PAGE_ACTIVE);
	/* No room at all: read, not cached. */
	CHECK_EQ(sim_lru_access(&l, 50, 0), 0);
	CHECK_EQ(l.state[50], SIM_PAGE_NONE);
	/* Out of the file space: a miss, nothing touched. */
	CHECK_EQ(sim_lru_access(&l, 1000, 8), 0);
	sim_lru_free(&l);
}

static void test_cpu_share(void)
{
	struct sim_cpu_ent e[3];

	/* Three busy threads on 2 CPUs, equal weights: 2/3 each. */
	for (int i = 0; i < 3; i++)
		e[i] = (struct sim_cpu_ent){ .weight = 1024, .threads = 1 };
	sim_cpu_share(e, 3, 2);
	for (int i = 0; i < 3; i++)
		CHECK(e[i].got > 0.666 && e[i].got < 0.667);
	/* The third at nice 15 (weight 36): the others nearly a CPU each, never more. */
	e[2].weight = sim_nice_weight(15);
	CHECK(e[2].weight == 36);
	sim_cpu_share(e, 3, 2);
	CHECK(e[0].got > 0.98 && e[0].got <= 1.0 && e[1].got == e[0].got);
	CHECK(e[2].got > 0.03 && e[2].got < 0.04);
	/* One VM can use only half a CPU: the rest goes to the others. */
	e[2] = (struct sim_cpu_ent){ .weight = 88761, .threads = 0.5 };
	sim_cpu_share(e, 3, 2);
	CHECK(e[2].got == 0.5 && e[0].got == 0.75 && e[1].got == 0.75);
	/* More room than demand: everyone gets what it can use. */
	sim_cpu_share(e, 3, 8);
	CHECK(e[0].got == 1 && e[1].got == 1 && e[2].got == 0.5);
	CHECK(sim_nice_weight(0) == 1024 && sim_nice_weight(-20) == 88761 &&
	      sim_nice_weight(99) == 15);
}

/* ---- whole runs ---- */

static const char small_scenario[] =
	"name small\n"
	"duration 120\n"
	"measure 60\n"
	"host cpus 2 mem 1G\n"
	"page 16K\n"
	"policy cache,margin,cpu-priority\n"
	"vm a ram 768M target 512M base 64M vcpus 2 balloon-rate 64M\n"
	"vm b ram 768M target 512M base 64M vcpus 1\n"
	"at 0 a anon 64M\n"
	"at 0 b anon 32M\n"
	"at 0 a files 2000 size 256K rate 40 zipf 0.9\n"
	"at 0 b files 600 size 1M rate 5 burst 30 5 20 50\n"
	"at 0 a cpu 2\n"
	"at 10 b cpu 1\n"
	"at 20 host burners 2\n"
	"at 60 a files 200 size 256K rate 40\n";

static int run_to_buffer(const char *text, uint64_t seed, char **log, size_t *loglen,
			 char **out, size_t *outlen)
{
	struct sim_scenario sc;
	struct sim_opts o = { .csv_every = 10 };
	char err[256];
	int ret = sim_parse(text, strlen(text), "small", &sc, err, sizeof(err));

	if (ret) {
		fprintf(stderr, "  %s\n", err);
		return ret;
	}
	sc.seed = seed;
	o.log = open_memstream(log, loglen);
	o.out = open_memstream(out, outlen);
	o.csv = fopen("/dev/null", "w");
	ret = sim_run(&sc, &o, err, sizeof(err));
	if (ret)
		fprintf(stderr, "  %s\n", err);
	fclose(o.log);
	fclose(o.out);
	fclose(o.csv);
	sim_scenario_free(&sc);
	return ret;
}

static void test_determinism(void)
{
	char *l1 = NULL, *l2 = NULL, *l3 = NULL, *o1 = NULL, *o2 = NULL, *o3 = NULL;
	size_t n1, n2, n3, m1, m2, m3;

	CHECK(run_to_buffer(small_scenario, 42, &l1, &n1, &o1, &m1) == 0);
	CHECK(run_to_buffer(small_scenario, 42, &l2, &n2, &o2, &m2) == 0);
	CHECK(run_to_buffer(small_scenario, 43, &l3, &n3, &o3, &m3) == 0);
	CHECK(n1 > 10000);
	CHECK(n1 == n2 && !memcmp(l1, l2, n1));	/* same seed: the same log, byte for byte */
	CHECK(n1 != n3 || memcmp(l1, l3, n1));	/* another seed: another run */
	/* The coordinator's line types, and the policies acted through the model. */
	CHECK(strstr(l1, "\"type\":\"host\"") && strstr(l1, "\"type\":\"sample\""));
	CHECK(strstr(l1, "\"policy\":\"margin\",\"action\":\"balloon\""));
	CHECK(strstr(l1, "\"action\":\"nice\""));
	CHECK(strstr(l1, "\"type\":\"summary\""));
	CHECK(strstr(o1, "system: hit ratio"));
	free(l1);
	free(l2);
	free(l3);
	free(o1);
	free(o2);
	free(o3);
}

static void test_refusals(void)
{
	static const struct {
		const char *text, *want;
	} bad[] = {
		{ "vm a\n", "needs ram" },
		{ "vm a ram 1G\nvm a ram 1G\n", "defined twice" },
		{ "vm a/b ram 1G\n", "a name of" },
		{ "vm a ram 1G base 2G\n", "base must be below ram" },
		{ "vm a ram 1G target 2G\n", "target above ram" },
		{ "vm a ram 10\n", "not a size" },
		{ "vm a ram 1G vcpus 0\n", "not a number" },
		{ "vm a ram 1G vcpus 1.5\n", "not a whole number" },
		{ "vm a ram 1G colour blue\n", "unknown 'colour'" },
		{ "vm a ram 1G\nat 5 b anon 1M\n", "no vm 'b'" },
		{ "vm a ram 1G\nat -1 a anon 1M\n", "not a number" },
		{ "vm a ram 1G\nat nan a anon 1M\n", "not a number" },
		{ "vm a ram 1G\nat 1 a anon 2G\n", "not a size" },
		{ "vm a ram 1G\nat 1 a cpu 2\n", "not a number" },
		{ "vm a ram 1G\nat 1 a files 10 size 1M rate 5 zipf\n", "missing" },
		{ "vm a ram 1G\nat 1 a files 10 burst 5 10 2 3\n", "not a number" },
		{ "vm a ram 1G\nat 1 a files 100000000\n", "not a number" },
		{ "vm a ram 1G\nat 1 a files 30000000 size 16M\n", "modelled pages" },
		{ "vm a ram 1G\nat 1 a sing\n", "unknown 'sing'" },
		{ "vm a ram 1G\nat 1 host burners -2\n", "not a number" },
		{ "vm a ram 1G\nat 1 host load 2\n", "only 'burners N'" },
		{ "vm a ram 1G\nat 700 a anon 1M\n", "after the end" },
		{ "vm a ram 1G\nduration 100\nmeasure 100\n", "not before the end" },
		{ "vm a ram 1G\nat 1 a anon 1M\npage 8K\n", "before any 'at'" },
		{ "page 12K\n", "power of two" },
		{ "duration 1 2\n", "takes one value" },
		{ "host cpus 0\n", "not a number" },
		{ "host ram 4G\n", "unknown 'ram'" },
		{ "frobnicate\n", "unknown statement" },
		{ "vm a ram 1G\nvm b ram 1G\nvm c ram 1G\nvm d ram 1G\nvm e ram 1G\nvm f ram 1G\n"
		  "vm g ram 1G\nvm h ram 1G\nvm i ram 1G\nvm j ram 1G\nvm k ram 1G\nvm l ram 1G\n"
		  "vm m ram 1G\nvm n ram 1G\nvm o ram 1G\nvm p ram 1G\nvm q ram 1G\n", "at most 16" },
	};
	struct sim_scenario sc;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(err, 0, sizeof(err));
		if (sim_parse(bad[i].text, strlen(bad[i].text), "t.txt", &sc, err, sizeof(err)) !=
			    -EINVAL || !strstr(err, bad[i].want) || strncmp(err, "t.txt:", 6)) {
			fprintf(stderr, "  case %zu: got '%s', wanted '%s'\n", i, err, bad[i].want);
			CHECK(0);
		}
	}
	/* A NUL byte, a line too long, too many words: refused, with the line. */
	CHECK(sim_parse("vm a ram 1G\n\0x", 14, "t", &sc, err, sizeof(err)) == -EINVAL &&
	      strstr(err, "t:2: a NUL byte"));
	{
		char longl[3000];

		memset(longl, 'x', sizeof(longl));
		CHECK(sim_parse(longl, sizeof(longl), "t", &sc, err, sizeof(err)) == -EINVAL &&
		      strstr(err, "longer than"));
		memset(longl, 0, sizeof(longl));
		strcpy(longl, "vm a ram 1G");
		for (int i = 0; i < 40; i++)
			strcat(longl, " nice 1");
		CHECK(sim_parse(longl, strlen(longl), "t", &sc, err, sizeof(err)) == -EINVAL &&
		      strstr(err, "more than"));
	}
	/* A tiny error buffer is not overrun. */
	CHECK(sim_parse("frobnicate\n", 11, "a-long-file-name.txt", &sc, err, 8) == -EINVAL &&
	      strlen(err) < 8);
	/* No VM at all: parsed, but nothing to run. */
	CHECK(sim_parse("# nothing\n", 10, "t", &sc, err, sizeof(err)) == 0);
	{
		struct sim_opts o = { .out = stdout };

		CHECK(sim_run(&sc, &o, err, sizeof(err)) == -EINVAL && strstr(err, "no vm"));
	}
	sim_scenario_free(&sc);
	/* Good text after all this still parses. */
	CHECK(sim_parse(small_scenario, strlen(small_scenario), "t", &sc, err, sizeof(err)) == 0);
	CHECK_EQ(sc.nvms, 2);
	CHECK_EQ(sc.nev, 8);
	CHECK(sc.ev[sc.nev - 1].t == 60 && sc.page_bytes == 16384);
	sim_scenario_free(&sc);
}

/* Random mutations of a good scenario: parse (or refuse) without a crash or a leak. */
static void test_hostile_mutations(void)
{
	size_t n = strlen(small_scenario);
	char *buf = malloc(n + 64);
	uint64_t seed = 99;
	int ok = 0, refused = 0;

	CHECK(buf);
	for (int round = 0; round < 3000; round++) {
		struct sim_scenario sc;
		char err[128];
		size_t len = n;

		memcpy(buf, small_scenario, n);
		for (int k = 0; k < 1 + round % 6; k++) {
			size_t at = sim_rand(&seed) % len;
			static const char junk[] = " \n#0-9.eE+xGKM\0\377";

			buf[at] = junk[sim_rand(&seed) % (sizeof(junk) - 1)];
		}
		if (sim_parse(buf, len, "m", &sc, err, sizeof(err)) == 0) {
			ok++;
			sim_scenario_free(&sc);
		} else {
			refused++;
			CHECK(err[0] == 'm' && strlen(err) < sizeof(err));
		}
	}
	CHECK(ok > 0 && refused > 0);
	free(buf);
}

/* A small log as kumo coord writes it: one VM, margin; the replay must take the same path. */
static void test_replay(void)
{
	static const char path[] = "/tmp/kumo-test-sim-replay.jsonl";
	FILE *f = fopen(path, "w");
	struct sim_scenario sc;
	struct sim_opts o = { .csv_every = 5 };
	char err[256], *out = NULL, *log = NULL;
	size_t outlen, loglen;
	uint64_t target = 536870912;
	const char *text = "policy margin\nhost cpus 2 mem 4G\nreplay /tmp/kumo-test-sim-replay.jsonl\n";

	CHECK(f);
	fprintf(f, "{\"ts\":9.9,\"type\":\"vm-up\",\"vm\":\"v\",\"pid\":1,\"reconnect\":false}\n");
	fprintf(f, "not json\n{\"no\":\"ts\"}\n");
	for (int i = 0; i < 20; i++) {
		fprintf(f, "{\"ts\":%.3f,\"type\":\"host\",\"ok\":true,\"load1\":0.5,"
			"\"mem_total\":4294967296,\"mem_available\":4000000000,\"budget\":4294967296}\n",
			10.0 + i);
		fprintf(f, "{\"ts\":%.3f,\"type\":\"sample\",\"vm\":\"v\",\"mem\":{\"ram\":536870912,"
			"\"resident\":1,\"target\":%llu,\"actual\":%llu},\"agent\":{\"age_s\":0.4,"
			"\"seq\":%d,\"committed_as\":8388608,\"cached\":4194304,\"active_file\":0,"
			"\"mem_available\":400000000,\"refault_file\":0,\"pswpin\":0,"
			"\"pgmajfault\":0},\"cpu\":{\"vcpus\":1,\"vcpu_time_ns\":%d000000,\"nice\":0}}\n",
			10.02 + i, (unsigned long long)target, (unsigned long long)target, i, i * 100);
		/* What margin does on an idle guest: W = 8 MiB + 128 MiB, then -16 MiB per 5 s. */
		target = (8ull << 20) + (128ull << 20) - (uint64_t)(i / 5) * (16ull << 20);
		if (target < (96ull << 20))	/* margin's floor */
			target = 96ull << 20;
	}
	fclose(f);
	CHECK(sim_parse(text, strlen(text), "r", &sc, err, sizeof(err)) == 0);
	o.out = open_memstream(&out, &outlen);
	o.log = open_memstream(&log, &loglen);
	CHECK(sim_run(&sc, &o, err, sizeof(err)) == 0);
	fclose(o.out);
	fclose(o.log);
	sim_scenario_free(&sc);
	unlink(path);
	if (!strstr(out, "20 samples, deviation mean 0.0% max 0.0%"))
		fprintf(stderr, "%s", out);
	CHECK(strstr(out, "validation against /tmp/kumo-test-sim-replay.jsonl"));
	CHECK(strstr(out, "20 samples, deviation mean 0.0% max 0.0%"));
	CHECK(strstr(log, "\"vm\":\"v\",\"policy\":\"margin\",\"action\":\"balloon\""));
	free(out);
	free(log);
	/* A replay of nothing usable: refused. */
	f = fopen(path, "w");
	CHECK(f);
	fprintf(f, "{\"ts\":1,\"type\":\"host\"}\n");
	fclose(f);
	CHECK(sim_parse(text, strlen(text), "r", &sc, err, sizeof(err)) == 0);
	o.out = fopen("/dev/null", "w");
	o.log = NULL;
	CHECK(sim_run(&sc, &o, err, sizeof(err)) == -EINVAL && strstr(err, "no VM samples"));
	fclose(o.out);
	sim_scenario_free(&sc);
	unlink(path);
}

TEST_MAIN(TEST(test_lru_vs_reference_small), TEST(test_lru_vs_reference_ratio),
	  TEST(test_lru_vs_reference_tight), TEST(test_lru_known_answers), TEST(test_cpu_share),
	  TEST(test_determinism), TEST(test_refusals), TEST(test_hostile_mutations),
	  TEST(test_replay))
