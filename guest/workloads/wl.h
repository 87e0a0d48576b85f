/*
 * Helpers shared by the workloads (guest/workloads/): exact page-cache hit accounting,
 * the data disk's file names and block format, rates without floating point, progress and
 * result lines. Every workload prints progress lines {"progress":"NAME",...} while it runs and
 * one result line {"workload":"NAME",...} at the end (kumo-agent forwards both; docs/guest.md).
 */
#ifndef KUMO_WL_H
#define KUMO_WL_H

#include "../rt/rt.h"

/*
 * Reads len bytes at off, first with preadv2(RWF_NOWAIT), which only copies what is in the
 * page cache and starts no I/O, then the rest with pread. *hit is 1 when RWF_NOWAIT served the
 * whole range; *cached gets the bytes it served. Returns the bytes read or -errno.
 */
long wl_read_counted(long fd, void *buf, u32 len, u64 off, int *hit, u32 *cached);

/* The data disk: DIR/fNNNNNN, 1 MiB each; block b (4 KiB) of file i starts with "KUMO", le32 i,
 * le32 b, then bytes (i + b + j) & 0xff for j = 12..4095 (guest/mkdata.py writes them). */
void wl_file_path(char *out, u32 size, const char *dir, u32 idx);
u32 wl_verify(const u8 *buf, u32 len, u32 file, u64 off);	/* bad blocks in buf */

u64 wl_per_sec(u64 count, u64 ns);			/* count / (ns / 1e9) */
u64 wl_ppm(u64 part, u64 whole);			/* part / whole in millionths */
int wl_parse_list(const char *s, u32 *out, int max);	/* "500,5000,2000"; count or -1 */

/* A line: {"progress":"NAME","t_ms":..  (or {"workload":"NAME" for the result). */
void wl_begin(struct rt_buf *b, char *mem, u32 cap, const char *kind, const char *name, u64 t0);
void wl_end(struct rt_buf *b);				/* closes the object and prints it */

#endif
