/*
 * Unit tests for kumo-agent's parsers (guest/agent/agent-parse.c, not in libkumo: included
 * here) with /proc and sysfs files recorded on a host and in the QEMU guest
 * (tests/data/proc/), their truncated and garbage variants, and hostile request lines.
 */
#include "guest/agent/agent-parse.c"

#include "tests/harness.h"

#define DATA "tests/data/proc/"

/* A recorded file in an exact-size heap buffer (no NUL), so ASan sees any overread. */
static char *load(const char *name, size_t *len)
{
	char path[256], tmp[65536];
	FILE *f;
	char *buf;

	snprintf(path, sizeof(path), DATA "%s", name);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	*len = fread(tmp, 1, sizeof(tmp), f);
	fclose(f);
	buf = malloc(*len ? *len : 1);
	memcpy(buf, tmp, *len);
	return buf;
}

/* The number after "key" at a line start, the independent way (sscanf), or -1. */
static long long oracle(const char *buf, size_t len, const char *key, int skip)
{
	char *s = strndup(buf, len), *p = s;
	long long v = -1;

	while (p && *p) {
		char k[128];
		unsigned long long x;
		int n;
		char *q = p;

		for (int w = 0; w < skip; w++) {
			while (*q == ' ')
				q++;
			while (*q && *q != ' ' && *q != '\n')
				q++;
		}
		if (sscanf(q, " %127[^: \n]%n", k, &n) == 1 && !strcmp(k, key)) {
			q += n;
			if (*q == ':')
				q++;
			if (sscanf(q, "%llu", &x) == 1)
				v = (long long)x;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	free(s);
	return v;
}

static int key_index(const char *const *keys, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(keys[i], key))
			return i;
	return -1;
}

static void check_keyed_file(const char *name, int skip, const char *const *keys, int nkeys,
			     int *failed)
{
	size_t len;
	char *buf = load(name, &len);
	uint64_t vals[64], present;
	int found;

	if (!buf) {
		fprintf(stderr, "  missing %s\n", name);
		*failed = 1;
		return;
	}
	found = ap_parse_keyed(buf, len, skip, keys, nkeys, vals, &present);
	if (found < 4) {
		fprintf(stderr, "  %s: only %d keys\n", name, found);
		*failed = 1;
	}
	for (int i = 0; i < nkeys; i++) {
		long long want = oracle(buf, len, keys[i], skip);

		if ((present >> i & 1) != (want >= 0) || (want >= 0 && vals[i] != (uint64_t)want)) {
			fprintf(stderr, "  %s: %s: got %s%llu, want %lld\n", name, keys[i],
				(present >> i & 1) ? "" : "absent ", (unsigned long long)vals[i], want);
			*failed = 1;
		}
	}
	free(buf);
}

static void test_meminfo_recorded(void)
{
	int failed = 0;

	check_keyed_file("host-meminfo", 0, ap_meminfo_keys, AP_MEMINFO_N, &failed);
	check_keyed_file("guest-meminfo", 0, ap_meminfo_keys, AP_MEMINFO_N, &failed);
	check_keyed_file("guest-meminfo-truncated", 0, ap_meminfo_keys, AP_MEMINFO_N, &failed);
	CHECK(!failed);
}

static void test_meminfo_guest_values(void)
{
	size_t len;
	char *buf = load("guest-meminfo", &len);
	uint64_t vals[64], present;

	CHECK(buf);
	ap_parse_keyed(buf, len, 0, ap_meminfo_keys, AP_MEMINFO_N, vals, &present);
	free(buf);
	/* The QEMU guest with -m 256 (recorded by the agent itself, `run cat`). */
	CHECK_EQ(vals[key_index(ap_meminfo_keys, AP_MEMINFO_N, "MemTotal")], 246092);
	for (const char *const *k = (const char *const[]){ "MemTotal", "MemFree", "MemAvailable",
			"Cached", "Active(file)", "Inactive(file)", "Committed_AS", "AnonPages", NULL };
	     *k; k++)
		CHECK(present >> key_index(ap_meminfo_keys, AP_MEMINFO_N, *k) & 1);
}

static void test_vmstat_recorded(void)
{
	int failed = 0;

	check_keyed_file("host-vmstat", 0, ap_vmstat_keys, AP_VMSTAT_N, &failed);
	check_keyed_file("guest-vmstat", 0, ap_vmstat_keys, AP_VMSTAT_N, &failed);
	check_keyed_file("host-vmstat-truncated", 0, ap_vmstat_keys, AP_VMSTAT_N, &failed);
	CHECK(!failed);
}

static void test_node_meminfo_recorded(void)
{
	int failed = 0;

	check_keyed_file("host-node0-meminfo", 2, ap_nodemem_keys, AP_NODEMEM_N, &failed);
	check_keyed_file("guest-node0-meminfo", 2, ap_nodemem_keys, AP_NODEMEM_N, &failed);
	CHECK(!failed);
}

static void test_meminfo_garbage(void)
{
	size_t len;
	char *buf = load("meminfo-garbage", &len);
	uint64_t vals[64], present;

	CHECK(buf);
	ap_parse_keyed(buf, len, 0, ap_meminfo_keys, AP_MEMINFO_N, vals, &present);
	free(buf);
#define V(k) vals[key_index(ap_meminfo_keys, AP_MEMINFO_N, k)]
#define P(k) ((present >> key_index(ap_meminfo_keys, AP_MEMINFO_N, k)) & 1)
	CHECK(P("MemTotal") && V("MemTotal") == 1234);	/* the valid (last) line wins */
	CHECK(P("Cached") && V("Cached") == UINT64_MAX);	/* saturates */
	CHECK(!P("MemFree"));					/* "12x" is not a number */
	CHECK(!P("Active(file)"));				/* negative */
	CHECK(P("MemAvailable") && V("MemAvailable") == 4096);
	CHECK(P("Inactive(file)") && V("Inactive(file)") == 77);	/* no final newline */
#undef V
#undef P
}

/* Every prefix of every recorded file parses; values of complete lines stay right. */
static void test_every_truncation(void)
{
	static const char *const files[] = { "host-meminfo", "guest-meminfo", "host-vmstat",
					     "guest-vmstat", "host-stat", "guest-stat",
					     "guest-node0-meminfo", "host-pressure-memory",
					     "psi-memory-busy", "meminfo-garbage", "stat-garbage" };

	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		size_t len;
		char *full = load(files[f], &len);
		uint64_t fv[64], fp;

		CHECK(full);
		ap_parse_keyed(full, len, 0, ap_vmstat_keys, AP_VMSTAT_N, fv, &fp);
		for (size_t cut = 0; cut <= len; cut++) {
			char *part = malloc(cut ? cut : 1);
			uint64_t vals[64], present;
			struct ap_cpustat cpus[8], total;
			struct ap_psi psi;
			uint64_t mask[AP_CPU_WORDS];
			int have;

			memcpy(part, full, cut);
			ap_parse_keyed(part, cut, 0, ap_meminfo_keys, AP_MEMINFO_N, vals, &present);
			ap_parse_keyed(part, cut, 2, ap_nodemem_keys, AP_NODEMEM_N, vals, &present);
			ap_parse_stat(part, cut, cpus, 8, &total, &have);
			ap_parse_psi(part, cut, &psi);
			ap_parse_cpulist(part, cut, mask);
			ap_parse_keyed(part, cut, 0, ap_vmstat_keys, AP_VMSTAT_N, vals, &present);
			/* A key whose whole line (with its newline) is in the prefix has its value. */
			if (cut && part[cut - 1] == '\n') {
				CHECK((present & ~fp) == 0);
			}
			free(part);
		}
		free(full);
	}
}

static void test_stat(void)
{
	size_t len;
	char *buf = load("guest-stat", &len);
	struct ap_cpustat cpus[4], total;
	int have, n;

	CHECK(buf);
	n = ap_parse_stat(buf, len, cpus, 4, &total, &have);
	free(buf);
	CHECK_EQ(n, 2);
	CHECK(have);
	CHECK_EQ(total.cpu, UINT32_MAX);
	CHECK_EQ(cpus[0].cpu, 0);
	CHECK_EQ(cpus[1].cpu, 1);
	CHECK_EQ(cpus[1].system, 38);
	CHECK_EQ(cpus[1].idle, 73);
	CHECK_EQ(cpus[0].idle + cpus[1].idle, total.idle);
	CHECK_EQ(cpus[1].steal, 0);

	buf = load("host-stat", &len);
	CHECK(buf);
	n = ap_parse_stat(buf, len, cpus, 1, NULL, NULL);	/* more lines than room */
	free(buf);
	CHECK_EQ(n, 1);

	buf = load("guest-stat-truncated", &len);	/* "cpu  ...\ncpu0 4 0 156 22 1 0 1" */
	CHECK(buf);
	n = ap_parse_stat(buf, len, cpus, 4, &total, &have);
	free(buf);
	CHECK_EQ(n, 1);			/* a partial line still has user..idle: reported */
	CHECK(have);
	CHECK_EQ(cpus[0].idle, 22);
	CHECK_EQ(cpus[0].steal, 0);
	CHECK_EQ(ap_parse_stat("cpu0 1 2 3", 10, cpus, 4, NULL, NULL), 0);	/* no idle */

	buf = load("stat-garbage", &len);
	CHECK(buf);
	n = ap_parse_stat(buf, len, cpus, 4, &total, &have);
	free(buf);
	CHECK(!have);			/* "cpu  1 2 3": too few fields */
	CHECK_EQ(n, 2);			/* cpu0 and cpu2; not cpuX, cpu1 (empty), the huge one */
	CHECK_EQ(cpus[0].cpu, 0);
	CHECK_EQ(cpus[0].steal, 8);
	CHECK_EQ(cpus[1].cpu, 2);
	CHECK_EQ(cpus[1].idle, 5);
	CHECK_EQ(cpus[1].steal, 0);
}

static void test_psi(void)
{
	size_t len;
	char *buf = load("psi-memory-busy", &len);
	struct ap_psi psi;

	CHECK(buf);
	CHECK_EQ(ap_parse_psi(buf, len, &psi), 2);
	free(buf);
	CHECK(psi.some.present && psi.full.present);
	CHECK_EQ(psi.some.avg10, 123);
	CHECK_EQ(psi.some.avg60, 50);
	CHECK_EQ(psi.some.avg300, 1200);
	CHECK_EQ(psi.some.total_us, 123456);
	CHECK_EQ(psi.full.avg10, 7);
	CHECK_EQ(psi.full.avg300, 10000);
	CHECK_EQ(psi.full.total_us, 99);

	buf = load("host-pressure-memory", &len);
	CHECK(buf);
	CHECK_EQ(ap_parse_psi(buf, len, &psi), 2);
	free(buf);

	CHECK_EQ(ap_parse_psi("some avg10=1.00 avg60=2.00", 26, &psi), 0);	/* truncated */
	CHECK(!psi.some.present);
	CHECK_EQ(ap_parse_psi("full avg10=x avg60=1 avg300=1 total=1\n", 38, &psi), 0);
}

static void test_cpulist(void)
{
	uint64_t m[AP_CPU_WORDS];
	char out[64];

	CHECK_EQ(ap_parse_cpulist("0-3,5\n", 6, m), 0);
	CHECK_EQ(m[0], 0x2f);
	CHECK_EQ(ap_format_cpulist(m, out, sizeof(out)), 5);
	CHECK(!strcmp(out, "0-3,5"));
	CHECK_EQ(ap_cpu_count(m), 5);
	CHECK_EQ(ap_parse_cpulist("", 0, m), 0);
	CHECK_EQ(ap_cpu_count(m), 0);
	CHECK_EQ(ap_format_cpulist(m, out, sizeof(out)), 0);
	CHECK(!strcmp(out, ""));
	CHECK_EQ(ap_parse_cpulist("255", 3, m), 0);
	CHECK_EQ(m[3], 1ULL << 63);
	CHECK_EQ(ap_parse_cpulist("0-255", 5, m), 0);
	CHECK_EQ(ap_cpu_count(m), 256);
	CHECK_EQ(ap_format_cpulist(m, out, sizeof(out)), 5);
	CHECK_EQ(ap_format_cpulist(m, out, 5), -1);		/* no room for the NUL */
	CHECK_EQ(ap_parse_cpulist("1,3,5,7", 7, m), 0);
	CHECK_EQ(ap_format_cpulist(m, out, sizeof(out)), 7);
	CHECK(!strcmp(out, "1,3,5,7"));
	CHECK_EQ(ap_format_cpulist(m, out, 4), -1);
	CHECK_EQ(ap_parse_cpulist("256", 3, m), -1);
	CHECK_EQ(ap_parse_cpulist("3-1", 3, m), -1);
	CHECK_EQ(ap_parse_cpulist("1,", 2, m), -1);
	CHECK_EQ(ap_parse_cpulist(",1", 2, m), -1);
	CHECK_EQ(ap_parse_cpulist("1-", 2, m), -1);
	CHECK_EQ(ap_parse_cpulist("a", 1, m), -1);
	CHECK_EQ(ap_parse_cpulist("99999999999999999999999", 23, m), -1);
	CHECK_EQ(ap_parse_cpulist("0-1", 1, m), 0);	/* length bounds the parse: "0" */
	CHECK_EQ(m[0], 1);
}

static int parse(const char *s, struct ap_request *r, const char **err)
{
	size_t n = strlen(s);
	char *copy = malloc(n ? n : 1);
	int ret;

	memcpy(copy, s, n);
	*err = NULL;
	ret = ap_parse_request(copy, n, r, err);
	free(copy);
	return ret;
}

static void test_request_ok(void)
{
	static struct ap_request r;
	const char *err;

	CHECK_EQ(parse("{\"id\": 42, \"verb\": \"ping\"}", &r, &err), 0);
	CHECK(!strcmp(r.id, "42") && !strcmp(r.verb, "ping"));
	CHECK_EQ(parse(" {\"verb\":\"ping\"} \r\n", &r, &err), 0);
	CHECK(!strcmp(r.id, "null"));
	CHECK_EQ(parse("{\"id\":{\"a\":[1,\"x\"]},\"verb\":\"park-cpus\",\"args\":{\"cpus\":\"1-2\"}}",
		       &r, &err), 0);
	CHECK(!strcmp(r.id, "{\"a\":[1,\"x\"]}"));
	CHECK(r.has_cpus && r.cpus[0] == 6);
	CHECK_EQ(parse("{\"verb\":\"park-cpus\",\"args\":{\"cpus\":3}}", &r, &err), 0);
	CHECK(r.has_cpus && r.cpus[0] == 8);
	CHECK_EQ(parse("{\"verb\":\"park-cpus\",\"args\":{\"cpus\":[1, 65]}}", &r, &err), 0);
	CHECK(r.cpus[0] == 2 && r.cpus[1] == 2);
	CHECK_EQ(parse("{\"verb\":\"unpark-cpus\",\"args\":{\"cpus\":[]}}", &r, &err), 0);
	CHECK(r.has_cpus && !r.cpus[0]);
	CHECK_EQ(parse("{\"verb\":\"period\",\"args\":{\"period_ms\":250,\"x\":[{}]}}", &r, &err), 0);
	CHECK(r.has_period && r.period_ms == 250);
	CHECK_EQ(parse("{\"verb\":\"run\",\"args\":{\"name\":\"filereader\",\"wait\":true,"
		       "\"argv\":[\"n=64\",\"k=5\\u0030,\\\"q\\\"\"]}}", &r, &err), 0);
	CHECK(!strcmp(r.name, "filereader") && r.wait && r.argc == 2);
	CHECK(!strcmp(r.argv[0], "n=64") && !strcmp(r.argv[1], "k=50,\"q\""));
	CHECK_EQ(parse("{\"verb\":\"kill\",\"args\":{\"run\":3},\"args2\":null}", &r, &err), 0);
	CHECK(r.has_run && r.run == 3);
	CHECK_EQ(parse("{\"verb\":\"ping\",\"args\":null}", &r, &err), 0);
	/* A long unknown key is skipped, not an error. */
	CHECK_EQ(parse("{\"verb\":\"ping\",\"a-very-long-key-that-does-not-fit-in-32\":1}", &r,
		       &err), 0);
}

static void test_request_bad(void)
{
	static struct ap_request r;
	static const char *const bad[] = {
		"", "   ", "[]", "\"ping\"", "{", "{\"verb\":\"ping\"", "{\"verb\":\"ping\"}x",
		"{\"verb\":\"ping\"}{}", "{\"verb\":1}", "{\"verb\":\"\"}", "{\"id\":1}",
		"{\"verb\":\"ping\",}", "{\"verb\":\"ping\" \"id\":1}", "{\"verb\":\"ping\",\"args\":1}",
		"{\"verb\":\"this-verb-is-much-too-long-for-us\"}",
		("{\"id\":\"0123456789012345678901234567890123456789012345678901234567890123\","
		 "\"verb\":\"ping\"}"),
		"{\"verb\":\"x\",\"args\":{\"cpus\":\"1-\"}}", "{\"verb\":\"x\",\"args\":{\"cpus\":-1}}",
		"{\"verb\":\"x\",\"args\":{\"cpus\":1.5}}", "{\"verb\":\"x\",\"args\":{\"cpus\":256}}",
		"{\"verb\":\"x\",\"args\":{\"cpus\":[1,]}}", "{\"verb\":\"x\",\"args\":{\"period_ms\":\"1\"}}",
		"{\"verb\":\"x\",\"args\":{\"wait\":1}}", "{\"verb\":\"x\",\"args\":{\"argv\":[1]}}",
		"{\"verb\":\"x\",\"args\":{\"argv\":\"a\"}}", "{\"verb\":\"x\",\"args\":{\"name\":null}}",
		"{\"verb\":\"p\\q\"}", "{\"verb\":\"p\\u12\"}", "{\"verb\":\"p\tq\"}",
		"{\"verb\":\"x\",\"args\":{\"y\":01}}", "{\"verb\":\"x\",\"args\":{\"y\":1.}}",
		"{\"verb\":\"x\",\"args\":{\"y\":tru}}", "{\"verb\":\"x\",\"args\":{\"y\":-}}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err;

		if (parse(bad[i], &r, &err) != -1 || !err || !*err) {
			fprintf(stderr, "  accepted: %s\n", bad[i]);
			CHECK(0);
		}
	}
}

static void test_request_deep_and_long(void)
{
	static struct ap_request r;
	static char s[200000];
	const char *err;
	size_t n = 0;

	/* Nesting beyond the depth limit is an error, not a stack overflow. */
	n += (size_t)sprintf(s, "{\"verb\":\"x\",\"args\":{\"y\":");
	for (int i = 0; i < 50000; i++)
		s[n++] = '[';
	s[n] = 0;
	CHECK_EQ(parse(s, &r, &err), -1);
	/* Too many argv entries, and an over-long one. */
	n = (size_t)sprintf(s, "{\"verb\":\"run\",\"args\":{\"argv\":[");
	for (int i = 0; i < AP_MAX_ARGS + 1; i++)
		n += (size_t)sprintf(s + n, "%s\"a\"", i ? "," : "");
	sprintf(s + n, "]}}");
	CHECK_EQ(parse(s, &r, &err), -1);
	n = (size_t)sprintf(s, "{\"verb\":\"run\",\"args\":{\"argv\":[\"");
	memset(s + n, 'a', AP_MAX_ARG);
	sprintf(s + n + AP_MAX_ARG, "\"]}}");
	CHECK_EQ(parse(s, &r, &err), -1);
}

static int valid(const char *s)
{
	return ap_json_object_valid(s, strlen(s));
}

static void test_json_object_valid(void)
{
	CHECK(ap_json_object_valid("{}", 2));
	CHECK(valid(" {\"workload\":\"x\",\"a\":[1,-2.5e3,true,null,{},\"\\u00e9\"]} \n"));
	CHECK(!valid("{\"a\":[1,]}"));
	CHECK(!valid("{\"a\" 1}"));
	CHECK(!ap_json_object_valid("{\"a\":1", 6));
	CHECK(!ap_json_object_valid("{\"a\":1}", 6));	/* length bounds the check */
	CHECK(!ap_json_object_valid("[1]", 3));
	CHECK(!ap_json_object_valid("{} {}", 5));
	CHECK(!ap_json_object_valid("", 0));
	CHECK(!ap_json_object_valid("{\"a\":\"\x01\"}", 8));
}

static void test_port_name(void)
{
	CHECK(ap_is_agent_port_name("org.kumo.agent\n", 15));
	CHECK(ap_is_agent_port_name("org.kumo.agent", 14));
	CHECK(!ap_is_agent_port_name("org.kumo.agent2\n", 16));
	CHECK(!ap_is_agent_port_name("org.kumo.agen", 13));
	CHECK(!ap_is_agent_port_name("", 0));
}

TEST_MAIN(TEST(test_meminfo_recorded), TEST(test_meminfo_guest_values),
	  TEST(test_vmstat_recorded), TEST(test_node_meminfo_recorded),
	  TEST(test_meminfo_garbage), TEST(test_every_truncation), TEST(test_stat),
	  TEST(test_psi), TEST(test_cpulist), TEST(test_request_ok), TEST(test_request_bad),
	  TEST(test_request_deep_and_long), TEST(test_json_object_valid), TEST(test_port_name))
