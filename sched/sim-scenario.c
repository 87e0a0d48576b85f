/*
 * Scenario files for `kumo sim` (sched/sim.h, docs/sim.md): one statement a line, '#' starts a
 * comment. Everything is checked: a scenario is a file someone handed us, and a bad one gets
 * "FILE:LINE: what" and no run.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/mem.h"
#include "sched/sim.h"

#define MAX_LINE	1024
#define MAX_TOK		32
#define MAX_RAM		(1ull << 40)	/* 1 TiB */
#define MAX_PAGES	(1u << 25)	/* modelled pages per VM's file space */
#define MAX_EVENTS	1000000

struct pctx {
	const char *name;
	int line;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 2, 3)))
static int fail(struct pctx *c, const char *fmt, ...)
{
	int n = snprintf(c->err, c->errlen, "%s:%d: ", c->name, c->line);
	va_list ap;

	if (n < 0 || (size_t)n >= c->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(c->err + n, c->errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int num(struct pctx *c, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	if (!s)
		return fail(c, "a number is missing");
	v = strtod(s, &end);
	if (end == s || *end || !isfinite(v) || v < lo || v > hi)
		return fail(c, "'%s': not a number in %g..%g", s, lo, hi);
	*out = v;
	return 0;
}

static int inum(struct pctx *c, const char *s, long lo, long hi, long *out)
{
	double v;
	int ret = num(c, s, lo, hi, &v);

	if (ret)
		return ret;
	if (v != floor(v))
		return fail(c, "'%s': not a whole number", s);
	*out = (long)v;
	return 0;
}

static int size(struct pctx *c, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (!s)
		return fail(c, "a size is missing");
	if (mm_parse_size(s, out) < 0 || *out < lo || *out > hi)
		return fail(c, "'%s': not a size in %llu..%llu bytes", s, (unsigned long long)lo,
			    (unsigned long long)hi);
	return 0;
}

static int find_vm(const struct sim_scenario *sc, const char *name)
{
	for (int i = 0; i < sc->nvms; i++)
		if (!strcmp(sc->vm[i].name, name))
			return i;
	return -1;
}

static bool good_name(const char *s)
{
	if (!*s || strlen(s) >= SIM_NAME)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

struct sim_event *sim_scenario_event(struct sim_scenario *sc)
{
	if (sc->nev == sc->cap_ev) {
		int cap = sc->cap_ev ? sc->cap_ev * 2 : 32;
		struct sim_event *e;

		if (cap > MAX_EVENTS)
			return NULL;
		e = realloc(sc->ev, cap * sizeof(*e));
		if (!e)
			return NULL;
		sc->ev = e;
		sc->cap_ev = cap;
	}
	memset(&sc->ev[sc->nev], 0, sizeof(sc->ev[0]));
	return &sc->ev[sc->nev++];
}

static struct sim_event *new_event(struct pctx *c, struct sim_scenario *sc)
{
	struct sim_event *e = sim_scenario_event(sc);

	if (!e)
		fail(c, "too many events (at most %d), or out of memory", MAX_EVENTS);
	return e;
}

/* vm NAME ram SIZE [vcpus N] [base SIZE] [target SIZE] [balloon-rate SIZE] [nice N] [no-balloon] */
static int parse_vm(struct pctx *c, struct sim_scenario *sc, char **tok, int n)
{
	struct sim_vm_conf *v;
	long l;
	int ret;

	if (n < 2 || !good_name(tok[1]))
		return fail(c, "vm: a name of letters, digits, '-', '_', '.' (at most %d)",
			    SIM_NAME - 1);
	if (find_vm(sc, tok[1]) >= 0)
		return fail(c, "vm %s: defined twice", tok[1]);
	if (sc->nvms == SIM_MAX_VMS)
		return fail(c, "at most %d VMs", SIM_MAX_VMS);
	v = &sc->vm[sc->nvms];
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", tok[1]);
	v->vcpus = 1;
	v->base = 64ull << 20;
	v->balloon = true;
	v->balloon_rate = 256.0 * (1 << 20);
	for (int i = 2; i < n; i++) {
		const char *k = tok[i], *val = i + 1 < n ? tok[i + 1] : NULL;
		uint64_t u;

		if (!strcmp(k, "no-balloon")) {
			v->balloon = false;
			continue;
		}
		i++;
		if (!strcmp(k, "ram"))
			ret = size(c, val, 16ull << 20, MAX_RAM, &v->ram);
		else if (!strcmp(k, "base"))
			ret = size(c, val, 0, MAX_RAM, &v->base);
		else if (!strcmp(k, "target"))
			ret = size(c, val, 1, MAX_RAM, &v->target);
		else if (!strcmp(k, "balloon-rate")) {
			ret = size(c, val, 1 << 20, MAX_RAM, &u);
			v->balloon_rate = (double)u;
		} else if (!strcmp(k, "vcpus")) {
			ret = inum(c, val, 1, 64, &l);
			v->vcpus = (int)l;
		} else if (!strcmp(k, "nice")) {
			ret = inum(c, val, -20, 19, &l);
			v->nice = (int)l;
		} else
			return fail(c, "vm %s: unknown '%s'", v->name, k);
		if (ret)
			return ret;
	}
	if (!v->ram)
		return fail(c, "vm %s: needs ram SIZE", v->name);
	if (v->base >= v->ram)
		return fail(c, "vm %s: base must be below ram", v->name);
	if (v->target > v->ram)
		return fail(c, "vm %s: target above ram", v->name);
	sc->nvms++;
	return 0;
}

/* at T NAME files N size SIZE rate R [zipf A] [burst EVERY LEN MULT FILES] | anon SIZE | cpu N;
 * at T host burners N */
static int parse_at(struct pctx *c, struct sim_scenario *sc, char **tok, int n)
{
	struct sim_event *e;
	double t;
	long l;
	int vm = -1, ret;

	if (n < 4)
		return fail(c, "at: 'at TIME VM|host WHAT ...'");
	if ((ret = num(c, tok[1], 0, 1e7, &t)))
		return ret;
	if (strcmp(tok[2], "host") && (vm = find_vm(sc, tok[2])) < 0)
		return fail(c, "at: no vm '%.*s' (define it first)", SIM_NAME, tok[2]);
	if (!(e = new_event(c, sc)))
		return -EINVAL;
	e->t = t;
	e->vm = vm;
	if (vm < 0) {
		if (strcmp(tok[3], "burners") || n != 5)
			return fail(c, "at T host: only 'burners N'");
		e->kind = SIM_EV_BURNERS;
		if ((ret = inum(c, tok[4], 0, 4096, &l)))
			return ret;
		e->value = (double)l;
		return 0;
	}
	if (!strcmp(tok[3], "anon")) {
		e->kind = SIM_EV_ANON;
		if (n != 5)
			return fail(c, "at T VM anon SIZE");
		return size(c, tok[4], 0, sc->vm[vm].ram, &e->bytes);
	}
	if (!strcmp(tok[3], "cpu")) {
		e->kind = SIM_EV_CPU;
		if (n != 5)
			return fail(c, "at T VM cpu BUSY-VCPUS");
		return num(c, tok[4], 0, sc->vm[vm].vcpus, &e->value);
	}
	if (strcmp(tok[3], "files"))
		return fail(c, "at: unknown '%.*s' (files, anon, cpu, burners)", 32, tok[3]);
	e->kind = SIM_EV_FILES;
	e->files.file_bytes = 1 << 20;
	if ((ret = inum(c, tok[4], 0, MAX_PAGES, &l)))
		return ret;
	e->files.files = (uint32_t)l;
	for (int i = 5; i < n; i++) {
		const char *k = tok[i];
		double d[3];

		if (!strcmp(k, "size")) {
			ret = size(c, i + 1 < n ? tok[i + 1] : NULL, 4096, 1ull << 34,
				   &e->files.file_bytes);
			i++;
		} else if (!strcmp(k, "rate")) {
			ret = num(c, i + 1 < n ? tok[i + 1] : NULL, 0, 1e6, &e->files.rate);
			i++;
		} else if (!strcmp(k, "zipf")) {
			e->files.pattern = SIM_ZIPF;
			ret = num(c, i + 1 < n ? tok[i + 1] : NULL, 0.01, 5, &e->files.zipf);
			i++;
		} else if (!strcmp(k, "burst")) {
			if (i + 4 >= n)
				return fail(c, "burst EVERY LEN MULT FILES");
			if ((ret = num(c, tok[i + 1], 1, 1e6, &d[0])) ||
			    (ret = num(c, tok[i + 2], 0.1, d[0], &d[1])) ||
			    (ret = num(c, tok[i + 3], 0, 1e4, &d[2])) ||
			    (ret = inum(c, tok[i + 4], 1, e->files.files ? e->files.files : 1, &l)))
				return ret;
			e->files.burst_every = d[0];
			e->files.burst_len = d[1];
			e->files.burst_mult = d[2];
			e->files.burst_files = (uint32_t)l;
			i += 4;
		} else {
			return fail(c, "files: unknown '%.*s'", 32, k);
		}
		if (ret)
			return ret;
	}
	if ((uint64_t)e->files.files * ((e->files.file_bytes + sc->page_bytes - 1) /
					 sc->page_bytes) > MAX_PAGES)
		return fail(c, "files: more than %u modelled pages (use a larger 'page')", MAX_PAGES);
	return 0;
}

static int parse_line(struct pctx *c, struct sim_scenario *sc, char *line)
{
	char *tok[MAX_TOK], *save, *t, word[40];
	int n = 0, ret;
	long l;
	double d;

	for (t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
		if (*t == '#')
			break;
		if (n == MAX_TOK)
			return fail(c, "more than %d words", MAX_TOK);
		tok[n++] = t;
	}
	if (!n)
		return 0;
	if (!strcmp(tok[0], "vm"))
		return parse_vm(c, sc, tok, n);
	if (!strcmp(tok[0], "at"))
		return parse_at(c, sc, tok, n);
	if (!strcmp(tok[0], "host")) {
		for (int i = 1; i < n; i += 2) {
			const char *val = i + 1 < n ? tok[i + 1] : NULL;

			if (!strcmp(tok[i], "cpus")) {
				ret = inum(c, val, 1, 4096, &l);
				sc->cpus = (int)l;
			} else if (!strcmp(tok[i], "mem"))
				ret = size(c, val, 16ull << 20, 64 * MAX_RAM, &sc->host_mem);
			else if (!strcmp(tok[i], "budget"))
				ret = size(c, val, 16ull << 20, 64 * MAX_RAM, &sc->budget);
			else if (!strcmp(tok[i], "load"))
				ret = num(c, val, 0, 1e5, &sc->load);
			else
				return fail(c, "host: unknown '%.*s' (cpus, mem, budget, load)", 32,
					    tok[i]);
			if (ret)
				return ret;
		}
		return 0;
	}
	snprintf(word, sizeof(word), " %s ", tok[0]);
	if (!strstr(" name duration measure step io-ms seed page policy replay ", word))
		return fail(c, "unknown statement '%.*s'", 32, tok[0]);
	if (n != 2)
		return fail(c, "'%.*s' takes one value", 32, tok[0]);
	if (!strcmp(tok[0], "name")) {
		if (!good_name(tok[1]) || strlen(tok[1]) >= sizeof(sc->name))
			return fail(c, "name: letters, digits, '-', '_', '.'");
		snprintf(sc->name, sizeof(sc->name), "%s", tok[1]);
		return 0;
	}
	if (!strcmp(tok[0], "duration"))
		return num(c, tok[1], 1, 1e7, &sc->duration);
	if (!strcmp(tok[0], "measure"))
		return num(c, tok[1], 0, 1e7, &sc->measure);
	if (!strcmp(tok[0], "step"))
		return num(c, tok[1], 0.001, 1, &sc->step);
	if (!strcmp(tok[0], "io-ms"))
		return num(c, tok[1], 0, 1000, &sc->io_ms);
	if (!strcmp(tok[0], "seed")) {
		if ((ret = num(c, tok[1], 0, 1e18, &d)))
			return ret;
		sc->seed = (uint64_t)d;
		return 0;
	}
	if (!strcmp(tok[0], "page")) {
		uint64_t p;

		if (sc->nev)
			return fail(c, "page: before any 'at'");
		if ((ret = size(c, tok[1], 4096, 16 << 20, &p)))
			return ret;
		if (p & (p - 1))
			return fail(c, "page: a power of two");
		sc->page_bytes = (uint32_t)p;
		return 0;
	}
	if (!strcmp(tok[0], "policy") || !strcmp(tok[0], "replay")) {
		char *dst = tok[0][0] == 'p' ? sc->policy : sc->replay;

		if (strlen(tok[1]) >= sizeof(sc->policy))
			return fail(c, "%s: too long", tok[0]);
		strcpy(dst, tok[1]);
		return 0;
	}
	return fail(c, "unknown statement '%.*s'", 32, tok[0]);
}

static int ev_cmp(const void *a, const void *b)
{
	const struct sim_event *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return (x->order > y->order) - (x->order < y->order);	/* stable: the file's order */
}

void sim_scenario_sort(struct sim_scenario *sc)
{
	if (!sc->nev)
		return;
	for (int i = 0; i < sc->nev; i++)
		sc->ev[i].order = i;
	qsort(sc->ev, sc->nev, sizeof(sc->ev[0]), ev_cmp);
}

int sim_parse(const char *text, size_t len, const char *name, struct sim_scenario *sc, char *err,
	      size_t errlen)
{
	struct pctx c = { .name = name ? name : "scenario", .err = err, .errlen = errlen };
	char line[MAX_LINE + 1];
	size_t pos = 0;
	int ret;

	memset(sc, 0, sizeof(*sc));
	sc->duration = 600;
	sc->step = 0.1;
	sc->seed = 1;
	sc->cpus = 4;
	sc->host_mem = 4ull << 30;
	sc->page_bytes = 4096;
	sc->io_ms = 1.0;
	strcpy(sc->policy, "none");
	strcpy(sc->name, "scenario");
	while (pos < len) {
		size_t n = 0;

		c.line++;
		while (pos < len && text[pos] != '\n') {
			if (!text[pos]) {
				ret = fail(&c, "a NUL byte");
				goto bad;
			}
			if (n == MAX_LINE) {
				ret = fail(&c, "line longer than %d bytes", MAX_LINE);
				goto bad;
			}
			line[n++] = text[pos++];
		}
		pos++;
		line[n] = '\0';
		if ((ret = parse_line(&c, sc, line)))
			goto bad;
	}
	c.line = 0;
	if (sc->measure >= sc->duration) {
		ret = fail(&c, "measure %g s: not before the end (duration %g s)", sc->measure,
			   sc->duration);
		goto bad;
	}
	for (int i = 0; i < sc->nev; i++) {
		if (sc->ev[i].t > sc->duration) {
			ret = fail(&c, "an event at %g s, after the end (duration %g s)", sc->ev[i].t,
				   sc->duration);
			goto bad;
		}
	}
	sim_scenario_sort(sc);
	return 0;
bad:
	sim_scenario_free(sc);
	return ret;
}

void sim_scenario_free(struct sim_scenario *sc)
{
	free(sc->ev);
	free(sc->ticks);
	sc->ev = NULL;
	sc->ticks = NULL;
	sc->nticks = 0;
	sc->nev = sc->cap_ev = 0;
}
