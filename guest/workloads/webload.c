/*
 * webload (paper 000): a web-server-like request stream over the data disk's files. Each
 * request opens one file and sends it whole in chunk-sized reads; it is a page-cache hit when
 * every chunk was served by RWF_NOWAIT (wl.h), so the hit ratio is exact.
 *   mode=normal  many users, low locality: every request picks one of the n files uniformly
 *   mode=burst   a small hot set: files hot_base .. hot_base+hot-1 are each picked hot_weight
 *                (100) times as often as any other file
 *
 *   webload dir=/data/files n=64 mode=normal seconds=5 threads=4 hot=4 hot_base=0
 *           hot_weight=100 chunk=65536 think_us=0 seed=1 report_ms=1000
 * threads are the concurrent users (one request at a time each).
 */
#include "wl.h"

#define MAX_THREADS 64
#define BUCKETS 32		/* latency histogram: bucket i counts [2^i, 2^(i+1)) us */

struct user {
	struct rt_thread t;
	u64 seed;
	volatile u32 requests, hits, errors;
	u64 bytes;
	u32 lat[BUCKETS];
	u8 *buf;
};

static struct user U[MAX_THREADS];
static volatile u32 stop;
static const char *dir;
static u32 n, hot, hot_base, hot_weight, chunk, think_us;
static int burst;
static char lb[8192];

static u32 pick(u64 *seed)
{
	u64 total;
	u32 r;

	if (!burst)
		return rt_rand_below(seed, n);
	/* hot files weigh hot_weight each, the others 1: draw over the total weight. */
	total = (u64)hot * hot_weight + (n - hot);
	r = (u32)(((rt_rand(seed) >> 32) * total) >> 32);
	if (r < hot * hot_weight)
		return hot_base + r / hot_weight;
	r -= hot * hot_weight;
	/* the r-th cold file, skipping the hot range */
	return r < hot_base ? r : r + hot;
}

static void user_main(void *arg)
{
	struct user *u = arg;

	while (!stop) {
		char path[160];
		u32 f = pick(&u->seed), cached;
		u64 t0 = rt_now_ns(), off = 0, us;
		int all_hit = 1, hit, b = 0;
		long fd, r;

		wl_file_path(path, sizeof(path), dir, f);
		fd = rt_open(path, O_RDONLY | O_CLOEXEC, 0);
		if (fd < 0) {
			u->errors++;
			rt_sleep_ms(10);
			continue;
		}
		for (;;) {
			r = wl_read_counted(fd, u->buf, chunk, off, &hit, &cached);
			if (r <= 0)
				break;
			all_hit &= hit;
			off += (u64)r;
			if ((u32)r < chunk)
				break;
		}
		rt_close(fd);
		if (r < 0) {
			u->errors++;
			continue;
		}
		us = (rt_now_ns() - t0) / 1000;
		while (b < BUCKETS - 1 && (us >> (b + 1)))
			b++;
		u->lat[b]++;
		u->bytes += off;
		u->hits += (u32)all_hit;
		u->requests++;
		if (think_us)
			rt_sleep_ms(think_us / 1000 ? think_us / 1000 : 1);
	}
}

/* Upper bound (us) of the bucket holding the q-th per-million request. */
static u64 percentile(const u64 *lat, u64 total, u32 ppm)
{
	u64 want = total * ppm / 1000000, seen = 0;

	for (int b = 0; b < BUCKETS; b++) {
		seen += lat[b];
		if (seen > want)
			return 2ULL << b;
	}
	return 0;
}

int main(int argc, char **argv, char **envp)
{
	const char *mode = rt_arg_str(argc, argv, "mode", "normal");
	u32 threads = (u32)rt_arg_u64(argc, argv, "threads", 4);
	u64 seconds = rt_arg_u64(argc, argv, "seconds", 5);
	u64 report_ms = rt_arg_u64(argc, argv, "report_ms", 1000);
	u64 seed = rt_arg_u64(argc, argv, "seed", 1);
	u64 t0 = rt_now_ns(), end, lat[BUCKETS], req = 0, hits = 0, bytes = 0, errs = 0;
	struct rt_buf b;

	dir = rt_arg_str(argc, argv, "dir", "/data/files");
	n = (u32)rt_arg_u64(argc, argv, "n", 64);
	hot = (u32)rt_arg_u64(argc, argv, "hot", 4);
	hot_base = (u32)rt_arg_u64(argc, argv, "hot_base", 0);
	hot_weight = (u32)rt_arg_u64(argc, argv, "hot_weight", 100);
	chunk = (u32)rt_arg_u64(argc, argv, "chunk", 65536);
	think_us = (u32)rt_arg_u64(argc, argv, "think_us", 0);
	burst = rt_streq(mode, "burst");
	if (!n || !threads || threads > MAX_THREADS || !seconds || !report_ms || chunk < 4096 ||
	    chunk > 16 * MiB || (!burst && !rt_streq(mode, "normal")) ||
	    (burst && (!hot || !hot_weight || hot > n || hot_base > n - hot ||
		       (u64)hot * hot_weight > 0x7fffffffULL))) {
		rt_puts("webload: bad arguments (mode=normal|burst, n, threads 1..64, hot <= n, "
			"4096 <= chunk <= 16 MiB)\n");
		return 2;
	}
	for (u32 i = 0; i < threads; i++) {
		U[i].seed = (seed + i + 1) * 0x9E3779B97F4A7C15ULL;
		U[i].buf = rt_mmap(chunk);
		if (!U[i].buf || rt_thread_start(&U[i].t, user_main, &U[i]) < 0) {
			rt_puts("webload: cannot start a user thread\n");
			stop = 1;
			return 1;
		}
	}
	end = t0 + seconds * 1000000000ULL;
	for (;;) {
		u64 now = rt_now_ns(), left = now < end ? (end - now) / 1000000 : 0, r = 0, h = 0;

		if (!left)
			break;
		rt_sleep_ms((u32)(left < report_ms ? left : report_ms));
		for (u32 i = 0; i < threads; i++)
			r += U[i].requests, h += U[i].hits;
		wl_begin(&b, lb, sizeof(lb), "progress", "webload", t0);
		jw_u64(&b, "requests", r);
		jw_u64(&b, "hits", h);
		jw_u64(&b, "hit_ratio_ppm", wl_ppm(h, r));
		jw_u64(&b, "requests_per_s", wl_per_sec(r, rt_now_ns() - t0));
		wl_end(&b);
	}
	stop = 1;
	memset(lat, 0, sizeof(lat));
	for (u32 i = 0; i < threads; i++) {
		rt_thread_join(&U[i].t);
		req += U[i].requests;
		hits += U[i].hits;
		bytes += U[i].bytes;
		errs += U[i].errors;
		for (int k = 0; k < BUCKETS; k++)
			lat[k] += U[i].lat[k];
	}
	wl_begin(&b, lb, sizeof(lb), "workload", "webload", t0);
	jw_str(&b, "mode", mode);
	jw_u64(&b, "n", n);
	jw_u64(&b, "threads", threads);
	jw_u64(&b, "requests", req);
	jw_u64(&b, "hits", hits);
	jw_u64(&b, "misses", req - hits);
	jw_u64(&b, "hit_ratio_ppm", wl_ppm(hits, req));
	jw_u64(&b, "requests_per_s", wl_per_sec(req, rt_now_ns() - t0));
	jw_u64(&b, "mib_per_s", wl_per_sec(bytes, rt_now_ns() - t0) / MiB);
	jw_u64(&b, "lat_p50_us", percentile(lat, req, 500000));
	jw_u64(&b, "lat_p99_us", percentile(lat, req, 990000));
	jw_u64(&b, "errors", errs);
	wl_end(&b);
	return errs ? 1 : 0;
}
