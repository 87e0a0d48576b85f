/*
 * filereader (paper 002): whole-file reads of 1 MiB files on the data disk, chosen uniformly at
 * random from the first K, K following a schedule; exact page-cache hit ratio (wl.h: a read
 * RWF_NOWAIT serves whole is a hit).
 *
 *   filereader dir=/data/files n=64 k=500,5000,2000 phase_s=5 [duration_s=S] mode=random
 *              seed=1 size=1048576 verify=1 report_ms=1000
 *   mode=seq: each phase reads files 0..K-1 once, in order (k=64,64: a cold then a warm pass)
 * K is clamped to n. Without duration_s the schedule runs once (phase_s per entry); with it,
 * the schedule repeats until duration_s.
 */
#include "wl.h"

#define MAX_PHASES 64

struct phase {
	u32 k;
	u64 reads, hits, bytes, cached_bytes, errors, bad_blocks, ns;
};

static struct phase ph[MAX_PHASES * 4];
static char lb[8192];

static void put_phase(struct rt_buf *b, const char *key, struct phase *p)
{
	jw_obj(b, key);
	jw_u64(b, "k", p->k);
	jw_u64(b, "reads", p->reads);
	jw_u64(b, "hits", p->hits);
	jw_u64(b, "hit_ratio_ppm", wl_ppm(p->hits, p->reads));
	jw_u64(b, "cached_bytes_ppm", wl_ppm(p->cached_bytes, p->bytes));
	jw_u64(b, "reads_per_s", wl_per_sec(p->reads, p->ns));
	jw_u64(b, "mib_per_s", wl_per_sec(p->bytes, p->ns) / MiB);
	jw_u64(b, "errors", p->errors);
	jw_end_obj(b);
}

int main(int argc, char **argv, char **envp)
{
	const char *dir = rt_arg_str(argc, argv, "dir", "/data/files");
	const char *mode = rt_arg_str(argc, argv, "mode", "random");
	u32 n = (u32)rt_arg_u64(argc, argv, "n", 64);
	u64 phase_ns = rt_arg_u64(argc, argv, "phase_s", 5) * 1000000000ULL;
	u64 duration_ns = rt_arg_u64(argc, argv, "duration_s", 0) * 1000000000ULL;
	u64 seed = rt_arg_u64(argc, argv, "seed", 1) * 0x9E3779B97F4A7C15ULL + 1;
	u32 size = (u32)rt_arg_u64(argc, argv, "size", MiB);
	int verify = (int)rt_arg_u64(argc, argv, "verify", 1);
	u64 report_ns = rt_arg_u64(argc, argv, "report_ms", 1000) * 1000000ULL;
	int seq = rt_streq(mode, "seq");
	u32 sched[MAX_PHASES];
	int nsched;
	u8 *buf;
	u64 t0 = rt_now_ns(), next_report = t0 + report_ns, tot_reads = 0, tot_hits = 0;
	u64 tot_bytes = 0, tot_err = 0, tot_bad = 0;
	int np = 0;
	struct rt_buf b;

	nsched = wl_parse_list(rt_arg_str(argc, argv, "k", ""), sched, MAX_PHASES);
	if (nsched <= 0) {
		sched[0] = n;
		nsched = 1;
	}
	if (!n || !size || size > 64 * MiB || (!seq && !rt_streq(mode, "random"))) {
		rt_puts("filereader: bad arguments (n, size <= 64 MiB, mode=random|seq)\n");
		return 2;
	}
	buf = rt_mmap((size + 4095) & ~4095u);
	if (!buf) {
		rt_puts("filereader: out of memory\n");
		return 1;
	}
	for (u64 start = t0;; np++) {
		struct phase *p = &ph[np];
		u32 i = 0;
		u64 pstart = rt_now_ns();

		if (np >= (int)(sizeof(ph) / sizeof(ph[0])) ||
		    (duration_ns ? pstart - start >= duration_ns : np >= nsched))
			break;
		p->k = sched[np % nsched] < n ? sched[np % nsched] : n;
		if (!p->k)
			p->k = 1;
		for (;;) {
			char path[160];
			u32 f, cached;
			int hit;
			long fd, r;
			u64 now = rt_now_ns();

			if (seq ? i >= p->k : now - pstart >= phase_ns)
				break;
			if (duration_ns && now - start >= duration_ns)
				break;
			f = seq ? i : rt_rand_below(&seed, p->k);
			i++;
			wl_file_path(path, sizeof(path), dir, f);
			fd = rt_open(path, O_RDONLY | O_CLOEXEC, 0);
			if (fd < 0) {
				p->errors++;
				if (p->errors == 1) {
					rt_puts("filereader: cannot open ");
					rt_puts(path);
					rt_puts("\n");
				}
				if (p->errors > 1000 && !p->reads)
					break;
				continue;
			}
			r = wl_read_counted(fd, buf, size, 0, &hit, &cached);
			rt_close(fd);
			if (r < 0) {
				p->errors++;
				continue;
			}
			p->reads++;
			p->hits += (u64)hit;
			p->bytes += (u64)r;
			p->cached_bytes += cached;
			if (verify)
				p->bad_blocks += wl_verify(buf, (u32)r, f, 0);
			if (now >= next_report) {
				wl_begin(&b, lb, sizeof(lb), "progress", "filereader", t0);
				jw_u64(&b, "phase", (u64)np);
				jw_u64(&b, "k", p->k);
				jw_u64(&b, "reads", p->reads);
				jw_u64(&b, "hits", p->hits);
				jw_u64(&b, "hit_ratio_ppm", wl_ppm(p->hits, p->reads));
				jw_u64(&b, "reads_per_s", wl_per_sec(p->reads, now - pstart));
				wl_end(&b);
				next_report = now + report_ns;
			}
		}
		p->ns = rt_now_ns() - pstart;
		tot_reads += p->reads;
		tot_hits += p->hits;
		tot_bytes += p->bytes;
		tot_err += p->errors;
		tot_bad += p->bad_blocks;
		if (p->errors > 1000 && !p->reads) {
			np++;
			break;
		}
	}
	wl_begin(&b, lb, sizeof(lb), "workload", "filereader", t0);
	jw_str(&b, "mode", mode);
	jw_u64(&b, "n", n);
	jw_u64(&b, "reads", tot_reads);
	jw_u64(&b, "hits", tot_hits);
	jw_u64(&b, "misses", tot_reads - tot_hits);
	jw_u64(&b, "hit_ratio_ppm", wl_ppm(tot_hits, tot_reads));
	jw_u64(&b, "reads_per_s", wl_per_sec(tot_reads, rt_now_ns() - t0));
	jw_u64(&b, "bytes", tot_bytes);
	jw_u64(&b, "errors", tot_err);
	if (verify)
		jw_u64(&b, "bad_blocks", tot_bad);
	jw_u64(&b, "phase_count", (u64)np);
	jw_arr(&b, "phases");		/* the first 32: result lines stay below 8 KiB */
	for (int i = 0; i < np && i < 32; i++)
		put_phase(&b, NULL, &ph[i]);
	jw_end_arr(&b);
	wl_end(&b);
	return tot_err || tot_bad ? 1 : 0;
}
