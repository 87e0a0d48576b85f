/*
 * ompbench: NPB-like kernels on T threads with an OpenMP-style barrier, for the vNUMA and CPU
 * experiments. The barrier spins `spin` times on the generation word before sleeping on a
 * futex, like libgomp with GOMP_SPINCOUNT (0, 300000 = libgomp's default, 30000000000 = spin
 * "forever"); a parked or preempted vCPU makes spinning waiters burn their time slice.
 *   triad    a[i] = b[i] + 3 * c[i] over three arrays of mb MiB (32-bit integers), each thread
 *            on its own slice (first-touched by that thread: NUMA-local), barrier per iteration;
 *            kb=N instead sizes the arrays in KiB (for hosts where the guest runs emulated)
 *   barrier  a few hundred integer operations then a barrier, iters times
 *
 *   ompbench threads=2 kernels=triad,barrier mb=8 iters=20 barriers=2000 spin=300000 pin=0
 * Reports ns per iteration for each kernel (and MiB/s for triad, 3 arrays' bytes per iter).
 */
#include "wl.h"

#define MAX_THREADS 64

struct barrier {
	volatile u32 count, gen, sleepers;
	u32 n;
	u64 spin;
	volatile u32 futex_waits;
};

static void barrier_wait(struct barrier *b)
{
	u32 g = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);

	if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
		__atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&b->gen, g + 1, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST))
			rt_futex_wake(&b->gen, 0x7fffffff);
		return;
	}
	for (u64 i = 0; i < b->spin; i++)
		if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != g)
			return;
	__atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&b->gen, __ATOMIC_SEQ_CST) == g) {
		__atomic_add_fetch(&b->futex_waits, 1, __ATOMIC_RELAXED);
		rt_futex_wait(&b->gen, g, 0);
	}
	__atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
}

struct worker {
	struct rt_thread t;
	u32 idx;
	u32 sink;
};

static struct worker W[MAX_THREADS];
static struct barrier bar;
static u32 threads, words, iters, barriers;
static u32 *A, *B, *C;
static int pin, do_triad, do_barrier;
static u64 triad_ns, barrier_ns;
static volatile u32 triad_bad;

static void slice(u32 idx, u32 *lo, u32 *hi)
{
	u32 per = words / threads;

	*lo = idx * per;
	*hi = idx == threads - 1 ? words : *lo + per;
}

static void work(struct worker *w)
{
	u32 lo, hi, x = w->idx + 1;
	u64 t;

	if (pin)
		rt_pin_cpu((int)(w->idx % (u32)rt_cpu_count()));
	slice(w->idx, &lo, &hi);
	if (do_triad) {
		for (u32 i = lo; i < hi; i++) {	/* first touch by the thread that uses it */
			A[i] = 0;
			B[i] = i;
			C[i] = i ^ 0x5555u;
		}
		barrier_wait(&bar);
		t = rt_now_ns();
		for (u32 it = 0; it < iters; it++) {
			for (u32 i = lo; i < hi; i++)
				A[i] = B[i] + 3 * C[i];
			barrier_wait(&bar);
		}
		if (w->idx == 0)
			triad_ns = rt_now_ns() - t;
		for (u32 i = lo; i < hi; i++)
			if (A[i] != i + 3 * (i ^ 0x5555u))
				__atomic_add_fetch(&triad_bad, 1, __ATOMIC_RELAXED);
	}
	if (do_barrier) {
		barrier_wait(&bar);
		t = rt_now_ns();
		for (u32 it = 0; it < barriers; it++) {
			for (int k = 0; k < 100; k++)
				x = x * 1103515245u + 12345u;
			barrier_wait(&bar);
		}
		if (w->idx == 0)
			barrier_ns = rt_now_ns() - t;
	}
	w->sink = x;
}

static void thread_main(void *arg)
{
	work(arg);
}

int main(int argc, char **argv, char **envp)
{
	const char *kernels = rt_arg_str(argc, argv, "kernels", "triad,barrier");
	u64 mb = rt_arg_u64(argc, argv, "mb", 8);
	u64 kb = rt_arg_u64(argc, argv, "kb", 0);	/* overrides mb when given */
	u64 t0 = rt_now_ns();
	struct rt_buf b;
	char lb[1024];

	threads = (u32)rt_arg_u64(argc, argv, "threads", 2);
	iters = (u32)rt_arg_u64(argc, argv, "iters", 20);
	barriers = (u32)rt_arg_u64(argc, argv, "barriers", 2000);
	pin = (int)rt_arg_u64(argc, argv, "pin", 0);
	bar.spin = rt_arg_u64(argc, argv, "spin", 300000);
	bar.n = threads;
	for (const char *s = kernels; *s; s++) {
		if (s != kernels && s[-1] != ',')
			continue;
		do_triad |= rt_starts(s, "triad");
		do_barrier |= rt_starts(s, "barrier");
	}
	if (!threads || threads > MAX_THREADS || !mb || mb > 1024 || !iters ||
	    (kb && (kb < 4 || kb > 1024 * 1024)) || (!do_triad && !do_barrier)) {
		rt_puts("ompbench: bad arguments (threads 1..64, mb 1..1024, kb 4..1048576, "
			"kernels=triad,barrier)\n");
		return 2;
	}
	words = kb ? (u32)(kb * 1024 / 4) : (u32)(mb * MiB / 4);
	if (do_triad) {
		A = rt_mmap(words * 4);
		B = rt_mmap(words * 4);
		C = rt_mmap(words * 4);
		if (!A || !B || !C) {
			rt_puts("ompbench: out of memory\n");
			return 1;
		}
	}
	for (u32 i = 1; i < threads; i++) {
		W[i].idx = i;
		if (rt_thread_start(&W[i].t, thread_main, &W[i]) < 0) {
			rt_puts("ompbench: cannot start threads\n");
			return 1;
		}
	}
	work(&W[0]);
	for (u32 i = 1; i < threads; i++)
		rt_thread_join(&W[i].t);
	wl_begin(&b, lb, sizeof(lb), "workload", "ompbench", t0);
	jw_u64(&b, "threads", threads);
	jw_u64(&b, "spin", bar.spin);
	if (do_triad) {
		jw_obj(&b, "triad");
		if (kb)
			jw_u64(&b, "kb", kb);
		else
			jw_u64(&b, "mb", mb);
		jw_u64(&b, "iters", iters);
		jw_u64(&b, "ns_per_iter", triad_ns / iters);
		jw_u64(&b, "mib_per_s", kb ? wl_per_sec(3 * kb * iters, triad_ns) / 1024 :
					     wl_per_sec(3 * mb * iters, triad_ns));
		jw_u64(&b, "bad", triad_bad);
		jw_end_obj(&b);
	}
	if (do_barrier) {
		jw_obj(&b, "barrier");
		jw_u64(&b, "iters", barriers);
		jw_u64(&b, "ns_per_iter", barriers ? barrier_ns / barriers : 0);
		jw_end_obj(&b);
	}
	jw_u64(&b, "futex_waits", bar.futex_waits);
	wl_end(&b);
	return triad_bad ? 1 : 0;
}
