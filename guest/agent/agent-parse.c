/* kumo-agent's parsers: bounded by length, no libc, no system calls (see agent-parse.h). */
#include "agent-parse.h"

#define X(k) #k,
const char *const ap_meminfo_keys[AP_MEMINFO_N] = { AP_MEMINFO_KEYS };
const char *const ap_vmstat_keys[AP_VMSTAT_N] = { AP_VMSTAT_KEYS };
const char *const ap_nodemem_keys[AP_NODEMEM_N] = { AP_NODEMEM_KEYS };
#undef X

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Decimal digits at *p (< end), saturating; returns the number of digits read. */
static size_t read_u64(const char **p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	size_t n = 0;

	while (*p < end && is_digit(**p)) {
		uint64_t d = (uint64_t)(**p - '0');

		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
		(*p)++;
		n++;
	}
	*out = v;
	return n;
}

/* Does [s, s+n) equal the NUL-terminated key? */
static int span_eq(const char *s, size_t n, const char *key)
{
	size_t i = 0;

	for (; i < n; i++)
		if (!key[i] || key[i] != s[i])
			return 0;
	return key[i] == 0;
}

static int key_is(const char *key, const char *want)
{
	while (*key && *key == *want)
		key++, want++;
	return *key == *want;
}

static const char *line_end(const char *p, const char *end)
{
	while (p < end && *p != '\n')
		p++;
	return p;
}

/* The start of the line after the one ending at le (never past end). */
static const char *next_line(const char *le, const char *end)
{
	return le < end ? le + 1 : end;
}

int ap_parse_keyed(const char *buf, size_t len, int skip, const char *const *keys, int nkeys,
		   uint64_t *vals, uint64_t *present)
{
	const char *p = buf, *end = buf + len;
	int found = 0;

	if (nkeys > 64)
		nkeys = 64;
	*present = 0;
	while (p < end) {
		const char *le = line_end(p, end), *k, *q = p;
		size_t klen;
		uint64_t v;

		for (int w = 0; w < skip; w++) {
			while (q < le && is_space(*q))
				q++;
			while (q < le && !is_space(*q))
				q++;
		}
		while (q < le && is_space(*q))
			q++;
		k = q;
		while (q < le && !is_space(*q) && *q != ':')
			q++;
		klen = (size_t)(q - k);
		if (q < le && *q == ':')
			q++;
		while (q < le && is_space(*q))
			q++;
		if (klen && read_u64(&q, le, &v) && (q == le || is_space(*q))) {
			for (int i = 0; i < nkeys; i++) {
				if (span_eq(k, klen, keys[i])) {
					if (!(*present & (1ULL << i)))
						found++;
					*present |= 1ULL << i;
					vals[i] = v;
					break;
				}
			}
		}
		p = next_line(le, end);
	}
	return found;
}

/* "12.34" into 1234 (hundredths); at most two decimals are kept. */
static int read_hundredths(const char **p, const char *end, uint32_t *out)
{
	uint64_t ip, frac = 0;
	int digits = 0;

	if (!read_u64(p, end, &ip))
		return 0;
	if (*p < end && **p == '.') {
		(*p)++;
		while (*p < end && is_digit(**p)) {
			if (digits < 2) {
				frac = frac * 10 + (uint64_t)(**p - '0');
				digits++;
			}
			(*p)++;
		}
	}
	while (digits++ < 2)
		frac *= 10;
	if (ip > 10000000)
		ip = 10000000;
	*out = (uint32_t)(ip * 100 + frac);
	return 1;
}

int ap_parse_psi(const char *buf, size_t len, struct ap_psi *out)
{
	const char *p = buf, *end = buf + len;

	out->some.present = out->full.present = 0;
	while (p < end) {
		const char *le = line_end(p, end), *q = p;
		struct ap_psi_line l = { 0, 0, 0, 0, 0 }, *dst = NULL;
		int fields = 0;

		if (le - q >= 4 && span_eq(q, 4, "some"))
			dst = &out->some;
		else if (le - q >= 4 && span_eq(q, 4, "full"))
			dst = &out->full;
		if (dst)
			q += 4;
		while (dst && q < le) {
			const char *k;

			while (q < le && is_space(*q))
				q++;
			k = q;
			while (q < le && *q != '=' && !is_space(*q))
				q++;
			if (q >= le || *q != '=')
				break;
			q++;
			if (q - k == 6 && span_eq(k, 5, "avg10"))
				fields += read_hundredths(&q, le, &l.avg10);
			else if (q - k == 6 && span_eq(k, 5, "avg60"))
				fields += read_hundredths(&q, le, &l.avg60);
			else if (q - k == 7 && span_eq(k, 6, "avg300"))
				fields += read_hundredths(&q, le, &l.avg300);
			else if (q - k == 6 && span_eq(k, 5, "total"))
				fields += read_u64(&q, le, &l.total_us) ? 1 : 0;
			while (q < le && !is_space(*q))
				q++;
		}
		if (dst && fields == 4) {
			l.present = 1;
			*dst = l;
		}
		p = next_line(le, end);
	}
	return out->some.present + out->full.present;
}

int ap_parse_stat(const char *buf, size_t len, struct ap_cpustat *cpus, int max,
		  struct ap_cpustat *total, int *have_total)
{
	const char *p = buf, *end = buf + len;
	int n = 0;

	if (have_total)
		*have_total = 0;
	while (p < end) {
		const char *le = line_end(p, end), *q;
		struct ap_cpustat c;
		uint64_t v[8] = { 0, 0, 0, 0, 0, 0, 0, 0 }, num = UINT32_MAX;
		int nv = 0, is_total;

		if (le - p < 3 || !span_eq(p, 3, "cpu")) {
			p = next_line(le, end);
			continue;
		}
		q = p + 3;
		is_total = q < le && is_space(*q);
		if (!is_total && (!read_u64(&q, le, &num) || num >= UINT32_MAX ||
				  q >= le || !is_space(*q))) {
			p = next_line(le, end);
			continue;
		}
		while (nv < 8) {
			while (q < le && is_space(*q))
				q++;
			if (!read_u64(&q, le, &v[nv]))
				break;
			nv++;
		}
		/* Old kernels have 4 fields; every kernel we care about has >= 8. Need idle. */
		if (nv >= 4) {
			c.cpu = (uint32_t)num;
			c.user = v[0], c.nice = v[1], c.system = v[2], c.idle = v[3];
			c.iowait = v[4], c.irq = v[5], c.softirq = v[6], c.steal = v[7];
			if (is_total) {
				if (total)
					*total = c;
				if (have_total)
					*have_total = 1;
			} else if (n < max) {
				cpus[n++] = c;
			}
		}
		p = next_line(le, end);
	}
	return n;
}

/* ------------------------------------------------------------------- cpu lists */

int ap_parse_cpulist(const char *s, size_t len, uint64_t mask[AP_CPU_WORDS])
{
	const char *p = s, *end = s + len;

	for (int i = 0; i < AP_CPU_WORDS; i++)
		mask[i] = 0;
	while (end > p && is_space(end[-1]))
		end--;
	while (p < end && is_space(*p))
		p++;
	while (p < end) {
		uint64_t a, b;

		if (!read_u64(&p, end, &a))
			return -1;
		b = a;
		if (p < end && *p == '-') {
			p++;
			if (!read_u64(&p, end, &b))
				return -1;
		}
		if (a > b || b >= AP_MAX_CPUS)
			return -1;
		for (uint64_t c = a; c <= b; c++)
			mask[c / 64] |= 1ULL << (c % 64);
		if (p < end) {
			if (*p != ',')
				return -1;
			p++;
			if (p == end)
				return -1;
		}
	}
	return 0;
}

static int test_cpu(const uint64_t *mask, int c)
{
	return c >= 0 && c < AP_MAX_CPUS && (mask[c / 64] >> (c % 64)) & 1;
}

static int put_uint(char *out, size_t size, size_t *at, unsigned v)
{
	char t[12];
	int n = 0;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (*at + (size_t)n + 1 > size)
		return -1;
	while (n)
		out[(*at)++] = t[--n];
	return 0;
}

int ap_format_cpulist(const uint64_t mask[AP_CPU_WORDS], char *out, size_t size)
{
	size_t at = 0;

	if (!size)
		return -1;
	for (int c = 0; c < AP_MAX_CPUS; c++) {
		int e = c;

		if (!test_cpu(mask, c))
			continue;
		while (test_cpu(mask, e + 1))
			e++;
		if (at) {
			if (at + 2 > size)
				return -1;
			out[at++] = ',';
		}
		if (put_uint(out, size, &at, (unsigned)c))
			return -1;
		if (e > c) {
			if (at + 2 > size)
				return -1;
			out[at++] = '-';
			if (put_uint(out, size, &at, (unsigned)e))
				return -1;
		}
		c = e;
	}
	out[at] = 0;
	return (int)at;
}

int ap_cpu_count(const uint64_t mask[AP_CPU_WORDS])
{
	int n = 0;

	for (int c = 0; c < AP_MAX_CPUS; c++)
		n += test_cpu(mask, c);
	return n;
}

/* ------------------------------------------------------------------------ JSON */

struct jp {
	const char *p, *end;
};

#define JSON_MAX_DEPTH 32

static void jp_ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
		j->p++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * A string at j->p (which must be '"'); decoded into out[0..size) when out is not NULL
 * (\uXXXX above 0x7f becomes '?'; a too-long string is an error). Returns 0 or -1.
 */
static int jp_string(struct jp *j, char *out, size_t size)
{
	size_t n = 0;

	if (j->p >= j->end || *j->p != '"')
		return -1;
	j->p++;
	for (;;) {
		char c;

		if (j->p >= j->end)
			return -1;
		c = *j->p++;
		if (c == '"')
			break;
		if ((unsigned char)c < 0x20)
			return -1;
		if (c == '\\') {
			if (j->p >= j->end)
				return -1;
			c = *j->p++;
			switch (c) {
			case '"': case '\\': case '/': break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u': {
				int v = 0;

				if (j->end - j->p < 4)
					return -1;
				for (int i = 0; i < 4; i++) {
					int h = hexval(j->p[i]);

					if (h < 0)
						return -1;
					v = v * 16 + h;
				}
				j->p += 4;
				c = v && v < 0x80 ? (char)v : '?';
				break;
			}
			default:
				return -1;
			}
		}
		if (out) {
			if (n + 1 >= size)
				return -1;
			out[n++] = c;
		}
	}
	if (out)
		out[n] = 0;
	return 0;
}

/* A JSON number; *u gets its value when it is a non-negative integer (else *is_uint = 0). */
static int jp_number(struct jp *j, uint64_t *u, int *is_uint)
{
	int neg = 0, frac = 0;

	if (j->p < j->end && *j->p == '-') {
		neg = 1;
		j->p++;
	}
	if (j->p >= j->end || !is_digit(*j->p))
		return -1;
	if (*j->p == '0' && j->end - j->p > 1 && is_digit(j->p[1]))
		return -1;
	read_u64(&j->p, j->end, u);
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		frac = 1;
		if (j->p >= j->end || !is_digit(*j->p))
			return -1;
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		frac = 1;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || !is_digit(*j->p))
			return -1;
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	}
	*is_uint = !neg && !frac && *u != UINT64_MAX;
	return 0;
}

static int jp_literal(struct jp *j, const char *lit)
{
	size_t n = 0;

	while (lit[n])
		n++;
	if ((size_t)(j->end - j->p) < n || !span_eq(j->p, n, lit))
		return -1;
	j->p += n;
	return 0;
}

/* Skips (and validates) one value. */
static int jp_skip(struct jp *j, int depth)
{
	uint64_t u;
	int isu;

	jp_ws(j);
	if (j->p >= j->end || depth > JSON_MAX_DEPTH)
		return -1;
	switch (*j->p) {
	case '"':
		return jp_string(j, NULL, 0);
	case 't':
		return jp_literal(j, "true");
	case 'f':
		return jp_literal(j, "false");
	case 'n':
		return jp_literal(j, "null");
	case '{':
	case '[': {
		char close = *j->p == '{' ? '}' : ']';
		int obj = close == '}';

		j->p++;
		jp_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			return 0;
		}
		for (;;) {
			jp_ws(j);
			if (obj) {
				if (jp_string(j, NULL, 0))
					return -1;
				jp_ws(j);
				if (j->p >= j->end || *j->p != ':')
					return -1;
				j->p++;
			}
			if (jp_skip(j, depth + 1))
				return -1;
			jp_ws(j);
			if (j->p >= j->end)
				return -1;
			if (*j->p == close) {
				j->p++;
				return 0;
			}
			if (*j->p != ',')
				return -1;
			j->p++;
		}
	}
	default:
		return jp_number(j, &u, &isu);
	}
}

int ap_json_object_valid(const char *buf, size_t len)
{
	struct jp j = { buf, buf + len };

	jp_ws(&j);
	if (j.p >= j.end || *j.p != '{' || jp_skip(&j, 0))
		return 0;
	jp_ws(&j);
	return j.p == j.end;
}

/* Iterates the members of an object: calls member(j, key, ctx) with j->p at the value. */
typedef int (*jp_member_fn)(struct jp *j, const char *key, void *ctx);

static int jp_object(struct jp *j, jp_member_fn member, void *ctx)
{
	char key[32];

	jp_ws(j);
	if (j->p >= j->end || *j->p != '{')
		return -1;
	j->p++;
	jp_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		const char *kstart;

		jp_ws(j);
		kstart = j->p;
		if (jp_string(j, key, sizeof(key))) {
			/* A key too long for us is not one we know: validate and skip it. */
			j->p = kstart;
			if (jp_string(j, NULL, 0))
				return -1;
			key[0] = 0;
		}
		jp_ws(j);
		if (j->p >= j->end || *j->p != ':')
			return -1;
		j->p++;
		jp_ws(j);
		if (member(j, key, ctx))
			return -1;
		jp_ws(j);
		if (j->p >= j->end)
			return -1;
		if (*j->p == '}') {
			j->p++;
			return 0;
		}
		if (*j->p != ',')
			return -1;
		j->p++;
	}
}

struct req_ctx {
	struct ap_request *req;
	const char *err;
};

static int set_err(struct req_ctx *c, const char *msg)
{
	if (!c->err)
		c->err = msg;
	return -1;
}

static int add_cpu(struct req_ctx *c, uint64_t cpu)
{
	if (cpu >= AP_MAX_CPUS)
		return set_err(c, "cpu number out of range");
	c->req->cpus[cpu / 64] |= 1ULL << (cpu % 64);
	return 0;
}

/* The elements of an array at j->p ('['): elem(j, ctx) parses each. */
static int jp_array(struct jp *j, int (*elem)(struct jp *j, struct req_ctx *c),
		    struct req_ctx *c)
{
	j->p++;
	jp_ws(j);
	if (j->p < j->end && *j->p == ']') {
		j->p++;
		return 0;
	}
	for (;;) {
		jp_ws(j);
		if (elem(j, c))
			return -1;
		jp_ws(j);
		if (j->p < j->end && *j->p == ']') {
			j->p++;
			return 0;
		}
		if (j->p >= j->end || *j->p != ',')
			return -1;
		j->p++;
	}
}

static int cpu_elem(struct jp *j, struct req_ctx *c)
{
	uint64_t u;
	int isu;

	if (jp_number(j, &u, &isu) || !isu)
		return set_err(c, "'cpus' array must hold integers");
	return add_cpu(c, u);
}

static int argv_elem(struct jp *j, struct req_ctx *c)
{
	struct ap_request *r = c->req;

	if (r->argc >= AP_MAX_ARGS)
		return set_err(c, "too many 'argv' entries");
	if (jp_string(j, r->argv[r->argc], AP_MAX_ARG))
		return set_err(c, "'argv' entries must be strings of at most 127 bytes");
	r->argc++;
	return 0;
}

static int arg_member(struct jp *j, const char *key, void *ctx)
{
	struct req_ctx *c = ctx;
	struct ap_request *r = c->req;
	uint64_t u;
	int isu;

	if (key_is(key, "cpus")) {
		r->has_cpus = 1;
		for (int i = 0; i < AP_CPU_WORDS; i++)
			r->cpus[i] = 0;
		if (j->p < j->end && *j->p == '"') {
			char list[128];

			if (jp_string(j, list, sizeof(list)))
				return set_err(c, "'cpus' must be a cpu list string such as \"1-3\"");
			size_t n = 0;

			while (list[n])
				n++;
			if (ap_parse_cpulist(list, n, r->cpus))
				return set_err(c, "'cpus': malformed cpu list");
			return 0;
		}
		if (j->p < j->end && *j->p == '[')
			return jp_array(j, cpu_elem, c) ? set_err(c, "malformed 'cpus' array") : 0;
		if (jp_number(j, &u, &isu) || !isu)
			return set_err(c, "'cpus' must be a list string, an integer or an array");
		return add_cpu(c, u);
	}
	if (key_is(key, "period_ms") || key_is(key, "run")) {
		int is_run = key[0] == 'r';

		if (jp_number(j, &u, &isu) || !isu)
			return set_err(c, is_run ? "'run' must be a non-negative integer"
						 : "'period_ms' must be a non-negative integer");
		if (is_run) {
			r->has_run = 1;
			r->run = u;
		} else {
			r->has_period = 1;
			r->period_ms = u;
		}
		return 0;
	}
	if (key_is(key, "name")) {
		if (jp_string(j, r->name, sizeof(r->name)))
			return set_err(c, "'name' must be a string of at most 63 bytes");
		return 0;
	}
	if (key_is(key, "wait")) {
		if (!jp_literal(j, "true"))
			r->wait = 1;
		else if (!jp_literal(j, "false"))
			r->wait = 0;
		else
			return set_err(c, "'wait' must be true or false");
		return 0;
	}
	if (key_is(key, "argv")) {
		r->argc = 0;
		if (j->p >= j->end || *j->p != '[')
			return set_err(c, "'argv' must be an array of strings");
		return jp_array(j, argv_elem, c) ? set_err(c, "malformed 'argv' array") : 0;
	}
	return jp_skip(j, 1) ? set_err(c, "invalid JSON in args") : 0;
}

static int req_member(struct jp *j, const char *key, void *ctx)
{
	struct req_ctx *c = ctx;
	struct ap_request *r = c->req;

	if (key_is(key, "id")) {
		const char *s = j->p;
		size_t n;

		if (jp_skip(j, 1))
			return set_err(c, "invalid JSON in 'id'");
		n = (size_t)(j->p - s);
		if (n >= sizeof(r->id))
			return set_err(c, "'id' longer than 63 bytes");
		for (size_t i = 0; i < n; i++)
			r->id[i] = s[i];
		r->id[n] = 0;
		return 0;
	}
	if (key_is(key, "verb")) {
		if (jp_string(j, r->verb, sizeof(r->verb)) || !r->verb[0])
			return set_err(c, "'verb' must be a non-empty string of at most 31 bytes");
		return 0;
	}
	if (key_is(key, "args")) {
		if (jp_literal(j, "null") == 0)
			return 0;
		if (j->p >= j->end || *j->p != '{')
			return set_err(c, "'args' must be an object");
		return jp_object(j, arg_member, c) ? set_err(c, "invalid JSON in args") : 0;
	}
	return jp_skip(j, 1) ? set_err(c, "invalid JSON") : 0;
}

int ap_parse_request(const char *line, size_t len, struct ap_request *req, const char **err)
{
	struct req_ctx c = { req, NULL };
	struct jp j = { line, line + len };
	char *z = (char *)req;

	for (size_t i = 0; i < sizeof(*req); i++)
		z[i] = 0;
	req->id[0] = 'n', req->id[1] = 'u', req->id[2] = 'l', req->id[3] = 'l';
	jp_ws(&j);
	if (j.p >= j.end || *j.p != '{') {
		*err = "a request must be a JSON object";
		return -1;
	}
	if (jp_object(&j, req_member, &c)) {
		*err = c.err ? c.err : "invalid JSON";
		return -1;
	}
	jp_ws(&j);
	if (j.p != j.end) {
		*err = "trailing data after the request object";
		return -1;
	}
	if (!req->verb[0]) {
		*err = "'verb' missing";
		return -1;
	}
	return 0;
}

int ap_is_agent_port_name(const char *buf, size_t len)
{
	while (len && is_space(buf[len - 1]))
		len--;
	return span_eq(buf, len, "org.kumo.agent");
}
