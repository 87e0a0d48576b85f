/*
 * The coordinator's bookkeeping against stand-in VMMs: real control servers (vmm/control.c) on
 * sockets in /tmp serving canned `stats`, `agent-stats` and `balloon-set` replies. No KVM.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tests/harness.h"
#include "sched/coord.h"
#include "sched/policies.h"
#include "sched/sched.h"
#include "vmm/control.h"

#define MIB (1024ull * 1024)

/* One stand-in VMM. Its verbs run on its control thread; the test reads after they return. */
struct fake_vmm {
	char path[108];
	struct control_server *srv;
	uint64_t ram, target;
	bool agent_connected;
	uint64_t committed_kib;
	double agent_age_s;
	int balloon_sets;
	int delay_ms;			/* stats answers this late */
	bool fail_balloon;
};

static int fake_stats(void *opaque, struct json_object *args, struct json_object **result,
		      char *err, size_t errlen)
{
	struct fake_vmm *f = opaque;
	struct json_object *b = json_object_new_object();

	if (f->delay_ms)
		usleep(f->delay_ms * 1000);
	*result = json_object_new_object();
	json_object_object_add(*result, "guest_ram_bytes", json_object_new_int64(f->ram));
	json_object_object_add(*result, "guest_ram_resident_bytes", json_object_new_int64(f->ram / 2));
	json_object_object_add(b, "target_bytes", json_object_new_int64(f->target));
	json_object_object_add(b, "actual_bytes", json_object_new_int64(f->target));
	json_object_object_add(*result, "balloon", b);
	return 0;
}

static int fake_agent_stats(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	struct fake_vmm *f = opaque;
	char buf[512];

	if (!f->agent_connected) {
		*result = json_tokener_parse("{\"connected\":false,\"connects\":0}");
		return 0;
	}
	snprintf(buf, sizeof(buf),
		 "{\"connected\":true,\"connects\":1,\"age_s\":%.3f,\"data\":{\"seq\":1,"
		 "\"meminfo\":{\"MemTotal\":%llu,\"Cached\":1000,\"Active(file)\":500,"
		 "\"Committed_AS\":%llu},\"vmstat\":{\"workingset_refault_file\":0}}}",
		 f->agent_age_s, (unsigned long long)(f->ram / 1024),
		 (unsigned long long)f->committed_kib);
	*result = json_tokener_parse(buf);
	return 0;
}

static int fake_balloon_set(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	struct fake_vmm *f = opaque;
	int64_t t;
	int ret = control_arg_int64(args, "target", &t, err, errlen);

	if (ret)
		return ret;
	if (f->fail_balloon) {
		snprintf(err, errlen, "balloon says no");
		return -EIO;
	}
	f->target = (uint64_t)t;
	f->balloon_sets++;
	*result = json_object_new_object();
	json_object_object_add(*result, "target_bytes", json_object_new_int64(t));
	return 0;
}

static const struct control_verb fake_verbs[] = {
	{ "stats", fake_stats, "" },
	{ "agent-stats", fake_agent_stats, "" },
	{ "balloon-set", fake_balloon_set, "" },
};

static int fake_start(struct fake_vmm *f, int n)
{
	if (!f->path[0])
		snprintf(f->path, sizeof(f->path), "/tmp/kumo-test-coord-%d-%d.sock",
			 (int)getpid(), n);
	return control_start(&f->srv, f->path, fake_verbs, 3, f);
}

static void fake_stop(struct fake_vmm *f)
{
	control_stop(f->srv);
	f->srv = NULL;
}

/* The log so far, as one string (a memstream's buffer). */
static char *log_buf;
static size_t log_len;

static int count(const char *needle)
{
	int n = 0;

	for (const char *p = log_buf; p && (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* margin on one VM: sample, tick, balloon-set to Committed_AS + the initial margin. */
static void test_margin_balloons_through_socket(void)
{
	struct fake_vmm f = { .ram = 1024 * MIB, .target = 1024 * MIB, .agent_connected = true,
			      .committed_kib = 200 * 1024, .agent_age_s = 0.2 };
	FILE *log = open_memstream(&log_buf, &log_len);
	struct coord *c = coord_new(log);
	void *state = NULL;
	struct sched_mem m;
	struct sched_agent a;

	CHECK(c);
	CHECK_EQ(fake_start(&f, 0), 0);
	CHECK_EQ(coord_add_vm(c, f.path), 0);
	coord_set_host_budget(c, 4096 * MIB);
	CHECK_EQ(coord_connect(c), 1);
	coord_sample(c);
	CHECK_EQ(sched_get_mem(coord_sched(c), 0, &m), 0);
	CHECK_EQ(m.ram_bytes, 1024 * MIB);
	CHECK_EQ(sched_get_agent(coord_sched(c), 0, &a), 0);
	CHECK_EQ(a.committed_as, 200 * MIB);
	CHECK_EQ(sched_policy_margin.init(coord_sched(c), &state), 0);
	coord_tick(c, &sched_policy_margin, state);
	CHECK_EQ(f.balloon_sets, 1);
	CHECK_EQ(f.target, 200 * MIB + margin_defaults.margin_init);
	/* A second tick on the same numbers: the VMM's target is W already, nothing sent. */
	coord_sample(c);
	coord_tick(c, &sched_policy_margin, state);
	CHECK_EQ(f.balloon_sets, 1);
	fflush(log);
	CHECK_EQ(count("\"type\":\"vm-up\""), 1);
	CHECK_EQ(count("\"type\":\"sample\""), 2);
	CHECK_EQ(count("\"type\":\"action\""), 1);
	CHECK(count("\"policy\":\"margin\",\"action\":\"balloon\"") == 1);
	CHECK(count("\"ok\":true}") == 1);

	/* The agent goes away: hold, nothing sent, the sample says why. */
	f.agent_connected = false;
	f.committed_kib = 600 * 1024;
	coord_sample(c);
	CHECK_EQ(sched_get_agent(coord_sched(c), 0, &a), -ENOTCONN);
	coord_tick(c, &sched_policy_margin, state);
	CHECK_EQ(f.balloon_sets, 1);
	/* Stale agent data (the VMM says its data is old): hold too. */
	f.agent_connected = true;
	f.agent_age_s = 60;
	coord_sample(c);
	CHECK_EQ(sched_get_agent(coord_sched(c), 0, &a), -ESTALE);
	coord_tick(c, &sched_policy_margin, state);
	CHECK_EQ(f.balloon_sets, 1);
	fflush(log);
	CHECK_EQ(count("agent not connected"), 1);
	/* Fresh again: follows Committed_AS. */
	f.agent_age_s = 0.1;
	coord_sample(c);
	coord_tick(c, &sched_policy_margin, state);
	CHECK_EQ(f.balloon_sets, 2);
	CHECK_EQ(f.target, 600 * MIB + margin_defaults.margin_init);

	sched_policy_margin.fini(state);
	coord_free(c);
	fake_stop(&f);
	fclose(log);
	free(log_buf);
	log_buf = NULL;
}

/* The sum of targets stays within the host budget; a VMM's error is logged, not fatal. */
static void test_host_bound_and_errors(void)
{
	struct fake_vmm f[2] = {
		{ .ram = 1024 * MIB, .target = 1024 * MIB, .agent_connected = true,
		  .committed_kib = 100 * 1024 },
		{ .ram = 1024 * MIB, .target = 700 * MIB, .agent_connected = true,
		  .committed_kib = 100 * 1024 },
	};
	FILE *log = open_memstream(&log_buf, &log_len);
	struct coord *c = coord_new(log);
	struct sched *s = coord_sched(c);

	for (int i = 0; i < 2; i++) {
		CHECK_EQ(fake_start(&f[i], 10 + i), 0);
		CHECK_EQ(coord_add_vm(c, f[i].path), 0);
	}
	coord_set_host_budget(c, 1200 * MIB);
	CHECK_EQ(coord_connect(c), 2);
	coord_sample(c);
	/* VM 1 holds 700 MiB: VM 0 may have 500 whatever it asks for. */
	CHECK_EQ(sched_set_balloon(s, 0, 900 * MIB, "test"), 0);
	CHECK_EQ(f[0].target, 500 * MIB);
	/* Now VM 1 may grow to 700 at most, not 1024. */
	CHECK_EQ(sched_set_balloon(s, 1, 1024 * MIB, "test"), 0);
	CHECK_EQ(f[1].target, 700 * MIB);
	/* Shrink VM 1 and VM 0 can have what it asked. */
	CHECK_EQ(sched_set_balloon(s, 1, 300 * MIB, "test"), 0);
	CHECK_EQ(sched_set_balloon(s, 0, 900 * MIB, "test"), 0);
	CHECK_EQ(f[0].target, 900 * MIB);
	/* VM 1 may not grow past what is left. */
	CHECK_EQ(sched_set_balloon(s, 1, 1024 * MIB, "test"), 0);
	CHECK_EQ(f[1].target, 300 * MIB);
	/* No room left for VM 1 above the minimum: refused, nothing sent. */
	coord_set_host_budget(c, 920 * MIB);
	coord_sample(c);
	CHECK_EQ(sched_set_balloon(s, 1, 1024 * MIB, "test"), -ENOSPC);
	CHECK_EQ(f[1].target, 300 * MIB);
	/* An error reply: logged with its message, the connection kept. */
	f[0].fail_balloon = true;
	CHECK_EQ(sched_set_balloon(s, 0, 600 * MIB, "test"), -EREMOTEIO);
	CHECK_EQ(coord_connect(c), 2);
	fflush(log);
	CHECK_EQ(count("\"bounded\":true"), 3);
	CHECK_EQ(count("balloon says no"), 1);
	CHECK_EQ(count("no room within the host budget"), 1);

	coord_free(c);
	for (int i = 0; i < 2; i++)
		fake_stop(&f[i]);
	fclose(log);
	free(log_buf);
	log_buf = NULL;
}

/* A VMM that goes away is dropped (its stats -ENOTCONN, no action on it), and picked up again
 * when it comes back; one that stops answering is dropped after the timeout. */
static void test_vm_goes_and_comes_back(void)
{
	struct fake_vmm f = { .ram = 512 * MIB, .target = 512 * MIB, .agent_connected = true,
			      .committed_kib = 100 * 1024 };
	FILE *log = open_memstream(&log_buf, &log_len);
	struct coord *c = coord_new(log);
	struct sched *s = coord_sched(c);
	struct sched_mem m;
	int up = 0;

	CHECK_EQ(coord_add_vm(c, "/tmp/kumo-test-coord-nothing-here.sock"), 0);
	CHECK_EQ(fake_start(&f, 20), 0);
	CHECK_EQ(coord_add_vm(c, f.path), 0);
	coord_set_host_budget(c, 4096 * MIB);
	coord_set_timeout_ms(c, 300);
	CHECK_EQ(coord_connect(c), 1);
	coord_sample(c);
	CHECK_EQ(sched_vm_count(s), 2);
	CHECK_EQ(sched_get_mem(s, 0, &m), -ENOTCONN);
	CHECK_EQ(sched_get_mem(s, 1, &m), 0);

	fake_stop(&f);
	coord_sample(c);
	CHECK_EQ(sched_get_mem(s, 1, &m), -ENOTCONN);
	CHECK_EQ(sched_set_balloon(s, 1, 300 * MIB, "test"), -ENOTCONN);
	f.target = 400 * MIB;	/* the VMM is the truth: what it says on return counts */
	CHECK_EQ(fake_start(&f, 20), 0);
	for (int i = 0; i < 30 && up < 1; i++) {	/* retried after RECONNECT_S */
		sleep_ms(100);
		up = coord_connect(c);
	}
	CHECK_EQ(up, 1);
	coord_sample(c);
	CHECK_EQ(sched_get_mem(s, 1, &m), 0);
	CHECK_EQ(m.target_bytes, 400 * MIB);

	/* Stops answering: dropped after the timeout, not hung. */
	f.delay_ms = 600;
	coord_sample(c);
	CHECK_EQ(sched_get_mem(s, 1, &m), -ENOTCONN);
	fflush(log);
	CHECK_EQ(count("\"type\":\"vm-up\""), 2);
	CHECK(count("\"reconnect\":true") == 1);
	CHECK(count("no reply in time") >= 1);
	CHECK(count("\"type\":\"vm-down\",\"vm\":\"/tmp/kumo-test-coord-nothing-here.sock\"") == 1);

	coord_free(c);
	fake_stop(&f);
	fclose(log);
	free(log_buf);
	log_buf = NULL;
}

static void test_find_policy(void)
{
	char err[256];
	void *h;

	CHECK(coord_find_policy("margin", &h, err, sizeof(err)) == &sched_policy_margin);
	CHECK(!h);
	CHECK(!coord_find_policy("nope", &h, err, sizeof(err)));
	CHECK(strstr(err, "unknown policy"));
	CHECK(!coord_find_policy("./no-such-policy.so", &h, err, sizeof(err)));
	CHECK(!h);
}

/* A policy built as a shared object reaches the API through the ops table alone. */
static void test_policy_from_shared_object(void)
{
	static const char src[] =
		"#include \"sched/sched.h\"\n"
		"static void tick(struct sched *s, void *st)\n"
		"{\n\tsched_log(s, \"ext\", sched_vm_count(s) == 0 ? \"hello, no VMs\" : \"?\");\n}\n"
		"const struct sched_policy kumo_sched_policy = {\n"
		"\t.name = \"ext\", .period_ms = 500, .tick = tick,\n};\n";
	char dir[] = "/tmp/kumo-test-policy-XXXXXX", cmd[512], so[64], cfile[64], err[256];
	const struct sched_policy *p;
	FILE *log, *f;
	struct coord *c;
	void *h;

	if (access("sched/sched.h", R_OK) || system("cc --version > /dev/null 2>&1"))
		SKIP("needs the tree's sched/sched.h and cc");
	CHECK(mkdtemp(dir));
	snprintf(cfile, sizeof(cfile), "%s/p.c", dir);
	snprintf(so, sizeof(so), "%s/p.so", dir);
	f = fopen(cfile, "w");
	CHECK(f);
	fputs(src, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "cc -shared -fPIC -Wall -Werror -I. -o %s %s", so, cfile);
	CHECK_EQ(system(cmd), 0);
	p = coord_find_policy(so, &h, err, sizeof(err));
	CHECK(p);
	CHECK(h);
	CHECK(!strcmp(p->name, "ext"));
	CHECK_EQ(p->period_ms, 500);
	log = open_memstream(&log_buf, &log_len);
	c = coord_new(log);
	coord_tick(c, p, NULL);
	coord_free(c);
	fclose(log);
	CHECK(count("\"type\":\"policy\",\"policy\":\"ext\",\"msg\":\"hello, no VMs\"") == 1);
	free(log_buf);
	log_buf = NULL;
	dlclose(h);
	/* A shared object without the symbol is refused. */
	f = fopen(cfile, "w");
	CHECK(f);
	fputs("int nothing_here;\n", f);
	fclose(f);
	CHECK_EQ(system(cmd), 0);
	CHECK(!coord_find_policy(so, &h, err, sizeof(err)));
	CHECK(strstr(err, "kumo_sched_policy"));
	unlink(so);
	unlink(cfile);
	rmdir(dir);
}

/* --config lines: each key, comments and blanks; refusals name the problem, change nothing. */
static void test_config_lines(void)
{
	static const char *const bad[] = {
		"vm", "policy", "frob x", "host-mem 12Q", "host-mem 0", "duration -1",
		"duration x", "vm a b", "policy # margin",
	};
	struct coord_settings st = { 0 };
	struct coord *c = coord_new(NULL);
	char err[160];

	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_EQ(coord_config_line(c, &st, "# a comment", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "   \n", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "vm /tmp/a.sock\n", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "\tvm tcp:10.0.0.2:7000", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "policy margin,cpu-priority", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "host-mem 3G", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "duration 2.5", err, sizeof(err)), 0);
	CHECK_EQ(coord_config_line(c, &st, "log /tmp/x.jsonl", err, sizeof(err)), 0);
	CHECK_EQ(sched_vm_count(coord_sched(c)), 2);
	CHECK(st.policies && !strcmp(st.policies, "margin,cpu-priority"));
	CHECK(st.log && !strcmp(st.log, "/tmp/x.jsonl"));
	CHECK_EQ(st.budget, 3ULL << 30);
	CHECK(st.duration == 2.5);
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		CHECK_EQ(coord_config_line(c, &st, bad[i], err, sizeof(err)), -EINVAL);
		CHECK(err[0] != 0);
	}
	CHECK_EQ(sched_vm_count(coord_sched(c)), 2);
	CHECK_EQ(st.budget, 3ULL << 30);
	free(st.policies);
	free(st.log);
	free(st.token);
	coord_free(c);
}

TEST_MAIN(TEST(test_margin_balloons_through_socket), TEST(test_host_bound_and_errors),
	  TEST(test_vm_goes_and_comes_back), TEST(test_find_policy),
	  TEST(test_policy_from_shared_object), TEST(test_config_lines))
