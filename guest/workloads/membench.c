/*
 * membench: allocate, touch and free memory in phases, for balloon and migration tests. Every
 * 32-bit word gets a value derived from (seed, phase, address); after an optional hold the
 * whole area is read back and compared (mismatches counted), then unmapped.
 *
 *   membench mb=64 [mb=16,64,32: one phase per size] phases=N seed=1 hold_ms=0 verify=1
 *            free=1 report_ms=1000
 * phases defaults to the number of sizes. free=0 keeps every phase's memory until the end.
 */
#include "wl.h"

#define MAX_PHASES 64

static char lb[8192];

static inline u32 pattern(u32 key, u32 i)
{
	u32 x = (i + key) * 0x9E3779B1u;

	return x ^ (x >> 15) ^ i;
}

int main(int argc, char **argv, char **envp)
{
	u32 sizes[MAX_PHASES];
	int nsizes = wl_parse_list(rt_arg_str(argc, argv, "mb", "64"), sizes, MAX_PHASES);
	u32 phases = (u32)rt_arg_u64(argc, argv, "phases", nsizes > 0 ? (u64)nsizes : 1);
	u32 seed = (u32)rt_arg_u64(argc, argv, "seed", 1);
	u32 hold_ms = (u32)rt_arg_u64(argc, argv, "hold_ms", 0);
	int verify = (int)rt_arg_u64(argc, argv, "verify", 1);
	int do_free = (int)rt_arg_u64(argc, argv, "free", 1);
	u64 report_ns = rt_arg_u64(argc, argv, "report_ms", 1000) * 1000000ULL;
	u64 t0 = rt_now_ns(), touch_ns = 0, verify_ns = 0, touched = 0, verified = 0;
	u64 mismatches = 0, first_bad = ~0ULL;
	u32 failed_alloc = 0;
	struct { u32 *p; u32 bytes; } keep[MAX_PHASES];
	u32 nkeep = 0;
	struct rt_buf b;

	if (nsizes <= 0 || phases > 4096) {
		rt_puts("membench: bad arguments (mb=N[,N...], phases <= 4096)\n");
		return 2;
	}
	for (u32 ph = 0; ph < phases; ph++) {
		u32 mb = sizes[ph % (u32)nsizes], bytes = mb * MiB, words = bytes / 4;
		u32 key = seed * 0x85EBCA77u + ph * 0xC2B2AE3Du, *p;
		u64 t1, t2, t3, bad = 0;

		if (!mb || mb > 3000) {
			failed_alloc++;
			continue;
		}
		p = rt_mmap(bytes);
		if (!p) {
			failed_alloc++;
			continue;
		}
		t1 = rt_now_ns();
		for (u32 i = 0; i < words; i++)
			p[i] = pattern(key, i);
		t2 = rt_now_ns();
		touch_ns += t2 - t1;
		touched += bytes;
		wl_begin(&b, lb, sizeof(lb), "progress", "membench", t0);
		jw_u64(&b, "phase", ph);
		jw_str(&b, "step", "touched");
		jw_u64(&b, "mb", mb);
		jw_u64(&b, "mib_per_s", wl_per_sec(bytes, t2 - t1) / MiB);
		wl_end(&b);
		for (u64 held = 0; held < hold_ms;) {
			u32 step = hold_ms - held < report_ns / 1000000 ? (u32)(hold_ms - held)
								       : (u32)(report_ns / 1000000);

			rt_sleep_ms(step ? step : 1);
			held += step ? step : 1;
			wl_begin(&b, lb, sizeof(lb), "progress", "membench", t0);
			jw_u64(&b, "phase", ph);
			jw_str(&b, "step", "holding");
			jw_u64(&b, "held_ms", held);
			wl_end(&b);
		}
		if (verify) {
			t2 = rt_now_ns();
			for (u32 i = 0; i < words; i++) {
				if (p[i] != pattern(key, i)) {
					if (!bad && first_bad == ~0ULL)
						first_bad = (u64)ph << 32 | (u64)i * 4;
					bad++;
				}
			}
			t3 = rt_now_ns();
			verify_ns += t3 - t2;
			verified += bytes;
			mismatches += bad;
			wl_begin(&b, lb, sizeof(lb), "progress", "membench", t0);
			jw_u64(&b, "phase", ph);
			jw_str(&b, "step", "verified");
			jw_u64(&b, "mismatches", bad);
			jw_u64(&b, "mib_per_s", wl_per_sec(bytes, t3 - t2) / MiB);
			wl_end(&b);
		}
		if (do_free || nkeep >= MAX_PHASES) {
			rt_munmap(p, bytes);
		} else {
			keep[nkeep].p = p;
			keep[nkeep++].bytes = bytes;
		}
	}
	for (u32 i = 0; i < nkeep; i++)
		rt_munmap(keep[i].p, keep[i].bytes);
	wl_begin(&b, lb, sizeof(lb), "workload", "membench", t0);
	jw_u64(&b, "phases", phases);
	jw_u64(&b, "touched_mb", touched / MiB);
	jw_u64(&b, "verified_mb", verified / MiB);
	jw_u64(&b, "mismatches", mismatches);
	if (mismatches)
		jw_u64(&b, "first_bad", first_bad);	/* phase << 32 | byte offset */
	jw_u64(&b, "failed_allocs", failed_alloc);
	jw_u64(&b, "touch_mib_per_s", wl_per_sec(touched, touch_ns) / MiB);
	jw_u64(&b, "verify_mib_per_s", wl_per_sec(verified, verify_ns) / MiB);
	wl_end(&b);
	return mismatches || failed_alloc ? 1 : 0;
}
