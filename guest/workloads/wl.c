/* Helpers shared by the workloads (see wl.h). */
#include "wl.h"

long wl_read_counted(long fd, void *buf, u32 len, u64 off, int *hit, u32 *cached)
{
	struct rt_iovec iov = { buf, len };
	u32 done = 0;
	long n;

	*hit = 0;
	*cached = 0;
	/* RWF_NOWAIT returns what the page cache holds (possibly short) or -EAGAIN. */
	n = rt_preadv2(fd, &iov, 1, off, RWF_NOWAIT);
	if (n > 0) {
		done = (u32)n;
		*cached = done;
	} else if (n != -EAGAIN && n != 0) {
		return n;	/* e.g. -EOPNOTSUPP: the file system cannot tell, report it */
	}
	if (done == len) {
		*hit = 1;
		return done;
	}
	while (done < len) {
		n = rt_pread(fd, (u8 *)buf + done, len - done, off + done);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return n;
		if (n == 0)
			break;
		done += (u32)n;
	}
	/* A file shorter than len: NOWAIT served all there is. */
	if (*cached == done)
		*hit = 1;
	return done;
}

void wl_file_path(char *out, u32 size, const char *dir, u32 idx)
{
	struct rt_buf b;
	char t[24], *d = rt_utoa(idx, t + sizeof(t));

	rt_buf_init(&b, out, size);
	rt_buf_str(&b, dir);
	rt_buf_str(&b, "/f");
	for (u32 l = rt_strlen(d); l < 6; l++)
		rt_buf_char(&b, '0');
	rt_buf_str(&b, d);
	rt_buf_cstr(&b);
}

static u32 le32(const u8 *p)
{
	return p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

u32 wl_verify(const u8 *buf, u32 len, u32 file, u64 off)
{
	u32 bad = 0;

	for (u32 at = 0; at + 4096 <= len; at += 4096) {
		const u8 *p = buf + at;
		u32 blk = (u32)((off + at) >> 12);

		if (p[0] != 'K' || p[1] != 'U' || p[2] != 'M' || p[3] != 'O' || le32(p + 4) != file ||
		    le32(p + 8) != blk || p[12] != (u8)(file + blk + 12) ||
		    p[4095] != (u8)(file + blk + 4095))
			bad++;
	}
	return bad;
}

u64 wl_per_sec(u64 count, u64 ns)
{
	u64 us = ns / 1000;

	if (!us)
		us = 1;
	if (count < (~0ULL / 1000000))
		return count * 1000000 / us;
	return count / us * 1000000;
}

u64 wl_ppm(u64 part, u64 whole)
{
	if (!whole)
		return 0;
	if (part < (~0ULL / 1000000))
		return part * 1000000 / whole;
	return part / (whole / 1000000 ? whole / 1000000 : 1);
}

int wl_parse_list(const char *s, u32 *out, int max)
{
	int n = 0;

	while (*s) {
		u64 v = 0;
		int digits = 0;

		while (*s >= '0' && *s <= '9') {
			v = v * 10 + (u64)(*s++ - '0');
			if (v > 0xffffffffULL)
				return -1;
			digits++;
		}
		if (!digits || n >= max)
			return -1;
		out[n++] = (u32)v;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return n;
}

void wl_begin(struct rt_buf *b, char *mem, u32 cap, const char *kind, const char *name, u64 t0)
{
	rt_buf_init(b, mem, cap);
	jw_obj(b, NULL);
	jw_str(b, kind, name);
	jw_u64(b, "t_ms", (rt_now_ns() - t0) / 1000000);
}

void wl_end(struct rt_buf *b)
{
	jw_end_obj(b);
	rt_put_line(b);
}
