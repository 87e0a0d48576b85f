/*
 * cpuload: fixed work units, UnixBench-like, on N threads, for the CPU policy experiments.
 * Each kind runs for seconds_per_kind with every thread busy; reports units and units/s.
 *   int      1000 rounds of integer mixing (xorshift, multiply, 32-bit division)
 *   fixed    100 rounds of 16.16 fixed-point math (Newton square root, a polynomial sine):
 *            the stand-in for floating point, which guest programs must not use (rt.h)
 *   pipe     one 1-byte round trip over two pipes with a partner thread (2 context switches)
 *   syscall  10 getppid() calls
 *
 *   cpuload threads=1 seconds=2 kinds=int,fixed,pipe,syscall report_ms=1000 pin=0
 * pin=1 pins thread i to CPU i % ncpus.
 */
#include "wl.h"

#define MAX_THREADS 64

enum { K_INT, K_FIXED, K_PIPE, K_SYSCALL, K_N };
static const char *const kind_names[K_N] = { "int", "fixed", "pipe", "syscall" };

struct worker {
	struct rt_thread t, partner;
	int kind, idx, pin;
	volatile u32 units;
	int to[2], from[2];		/* pipe kind: worker -> partner, partner -> worker */
	u32 sink;
};

static volatile u32 stop;
static struct worker W[MAX_THREADS];
static char lb[8192];
static volatile u32 divisor = 7;	/* not a constant: keeps the division a real divide */

static u32 unit_int(u32 x)
{
	for (int i = 0; i < 1000; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		x = x * 2654435761u + (x / (divisor + (x & 3)));
	}
	return x;
}

typedef s32 fix;		/* 16.16 */
#define FIX_ONE 65536

static fix fmul(fix a, fix b)
{
	return (fix)(((s64)a * b) >> 16);
}

static fix fdiv(fix a, fix b)
{
	return b ? (fix)(((s64)a << 16) / b) : 0;
}

static fix fsqrt(fix a)
{
	fix x = a > FIX_ONE ? a / 2 : FIX_ONE;

	if (a <= 0)
		return 0;
	for (int i = 0; i < 8; i++)
		x = (x + fdiv(a, x)) / 2;
	return x;
}

/* sin(x) for |x| <= pi/2 by its Taylor polynomial to x^7. */
static fix fsin(fix x)
{
	fix x2 = fmul(x, x), t = x, s = x;

	t = fmul(t, x2) / 6;
	s -= t;
	t = fmul(t, x2) / 20;
	s += t;
	t = fmul(t, x2) / 42;
	s -= t;
	return s;
}

static u32 unit_fixed(u32 seed)
{
	fix acc = 0;

	for (int i = 0; i < 100; i++) {
		fix v = (fix)((seed + (u32)i * 977u) & 0x1ffff);	/* 0 .. 2.0 */

		acc += fsqrt(v + FIX_ONE) + fsin(v - FIX_ONE);
	}
	return (u32)acc;
}

static void partner_main(void *arg)
{
	struct worker *w = arg;
	char c;

	for (;;) {
		if (rt_read(w->to[0], &c, 1) != 1 || c == 'q')
			break;
		rt_write(w->from[1], &c, 1);
	}
}

static void worker_main(void *arg)
{
	struct worker *w = arg;
	u32 x = 0x12345678u + (u32)w->idx;
	char c = 'x';

	if (w->pin)
		rt_pin_cpu(w->idx % rt_cpu_count());
	while (!stop) {
		switch (w->kind) {
		case K_INT:
			x = unit_int(x);
			break;
		case K_FIXED:
			x += unit_fixed(x);
			break;
		case K_PIPE:
			if (rt_write(w->to[1], &c, 1) != 1 || rt_read(w->from[0], &c, 1) != 1)
				return;
			break;
		default:
			for (int i = 0; i < 10; i++)
				x += (u32)rt_sys0(SYS_getppid);
			break;
		}
		w->units++;
	}
	w->sink = x;
	if (w->kind == K_PIPE) {
		c = 'q';
		rt_write(w->to[1], &c, 1);
	}
}

int main(int argc, char **argv, char **envp)
{
	u32 threads = (u32)rt_arg_u64(argc, argv, "threads", 1);
	u64 seconds = rt_arg_u64(argc, argv, "seconds", 2);
	u64 report_ms = rt_arg_u64(argc, argv, "report_ms", 1000);
	int pin = (int)rt_arg_u64(argc, argv, "pin", 0);
	const char *kinds = rt_arg_str(argc, argv, "kinds", "int,fixed,pipe,syscall");
	u64 units[K_N], ns[K_N];
	int ran[K_N] = { 0, 0, 0, 0 }, err = 0;
	u64 t0 = rt_now_ns();
	struct rt_buf b;

	if (!threads || threads > MAX_THREADS || !seconds || !report_ms) {
		rt_puts("cpuload: bad arguments (threads 1..64, seconds > 0)\n");
		return 2;
	}
	for (int k = 0; k < K_N; k++) {
		/* Is kind k in the comma-separated list? */
		const char *s = kinds;
		u32 len = rt_strlen(kind_names[k]);
		int want = 0;

		while (*s) {
			if (rt_starts(s, kind_names[k]) && (s[len] == ',' || !s[len]))
				want = 1;
			while (*s && *s != ',')
				s++;
			if (*s)
				s++;
		}
		if (!want)
			continue;
		stop = 0;
		for (u32 i = 0; i < threads; i++) {
			struct worker *w = &W[i];

			memset((void *)w, 0, sizeof(*w));
			w->kind = k;
			w->idx = (int)i;
			w->pin = pin;
			if (k == K_PIPE &&
			    (rt_sys1(SYS_pipe, w->to) < 0 || rt_sys1(SYS_pipe, w->from) < 0 ||
			     rt_thread_start(&w->partner, partner_main, w) < 0)) {
				err = 1;
				continue;	/* no partner: the worker would wait forever */
			}
			if (rt_thread_start(&w->t, worker_main, w) < 0)
				err = 1;
		}
		u64 ks = rt_now_ns(), end = ks + seconds * 1000000000ULL;

		for (;;) {
			u64 now = rt_now_ns(), left = now < end ? (end - now) / 1000000 : 0, sum = 0;

			if (!left)
				break;
			rt_sleep_ms((u32)(left < report_ms ? left : report_ms));
			for (u32 i = 0; i < threads; i++)
				sum += W[i].units;
			wl_begin(&b, lb, sizeof(lb), "progress", "cpuload", t0);
			jw_str(&b, "kind", kind_names[k]);
			jw_u64(&b, "units", sum);
			jw_u64(&b, "units_per_s", wl_per_sec(sum, rt_now_ns() - ks));
			wl_end(&b);
		}
		stop = 1;
		units[k] = 0;
		for (u32 i = 0; i < threads; i++) {
			rt_thread_join(&W[i].t);
			rt_thread_join(&W[i].partner);
			if (k == K_PIPE) {
				rt_close(W[i].to[0]), rt_close(W[i].to[1]);
				rt_close(W[i].from[0]), rt_close(W[i].from[1]);
			}
			units[k] += W[i].units;
		}
		ns[k] = rt_now_ns() - ks;
		ran[k] = 1;
	}
	wl_begin(&b, lb, sizeof(lb), "workload", "cpuload", t0);
	jw_u64(&b, "threads", threads);
	jw_u64(&b, "seconds_per_kind", seconds);
	for (int k = 0; k < K_N; k++) {
		if (!ran[k])
			continue;
		jw_obj(&b, kind_names[k]);
		jw_u64(&b, "units", units[k]);
		jw_u64(&b, "units_per_s", wl_per_sec(units[k], ns[k]));
		jw_end_obj(&b);
	}
	jw_bool(&b, "errors", err);
	wl_end(&b);
	return err;
}
