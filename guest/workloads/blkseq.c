/*
 * blkseq: sequence-numbered 4 KiB records written to a raw block device with several requests
 * in flight, then read back: is every completed write there exactly once? For snapshot,
 * restore and migration tests (a write in flight when the VM stops must be neither lost nor
 * replayed).
 *
 *   blkseq dev=/dev/vdb slots=256 qd=8 seconds=5 count=0 base=0 seed=1 report_ms=1000
 *
 * O_DIRECT, Linux AIO (the one queue-depth interface both builds have; the test kernel has no
 * io_uring). Writes go round a ring of `slots` blocks starting at block `base`, skipping a slot
 * that still has a write in flight, so a slot never has two. Each record: magic, slot, seq
 * (global, from 1, in submission order), this run's nonce, a payload derived from them and a
 * checksum of the rest. It writes for `seconds` of guest time or until `count` writes (count
 * given: no time limit unless seconds is given too), drains, fsyncs and reads every slot back:
 *   ok       holds the seq of its last completed write
 *   lost     holds the write before that, or nothing of this run: the last completed one is gone
 *   stale    holds an older write of this slot, one already overwritten twice: a replay
 *   foreign  holds a seq never completed for this slot (another slot's, or beyond the last)
 *   corrupt  the magic is there but the checksum is wrong, or the block is garbage
 * dup = stale + foreign. Exit status 1 on any of those, a failed write or read, or a completion
 * event for a request not in flight; 2 on bad arguments or a device it cannot use.
 */
#include "wl.h"

#define BLK 4096u
#define WORDS (BLK / 4)
#define MAX_QD 64
#define MAX_SLOTS 65536
#define MAGIC 0x5153454bu	/* "KESQ" */
#define SEEK_END 2
#define EOVERFLOW 75
#define IOCB_CMD_PWRITE 1

/* include/uapi/linux/aio_abi.h (x86: little-endian, 64-bit fields in both builds) */
struct iocb {
	u64 aio_data;
	u32 aio_key, aio_rw_flags;
	uint16_t aio_lio_opcode;
	int16_t aio_reqprio;
	u32 aio_fildes;
	u64 aio_buf, aio_nbytes;
	s64 aio_offset;
	u64 aio_reserved2;
	u32 aio_flags, aio_resfd;
};

struct io_event {
	u64 data, obj;
	s64 res, res2;
};

struct slot {
	u64 last_done;	/* seq of the last completed write (0: none) */
	u64 prev_done;	/* the completed write before it */
	u64 issued;	/* seq of the last write submitted */
	u8 busy;	/* a write in flight */
	u8 failed;	/* a write to it failed: its content is undefined */
};

static char lb[1024];

static u32 payload(u64 nonce, u64 seq, u32 slot, u32 i)
{
	u32 x = ((u32)seq + i * 0x9E3779B1u) ^ (slot * 0x85EBCA77u) ^ (u32)nonce;

	return x ^ (x >> 13) ^ (u32)(nonce >> 32);
}

/* FNV-1a over the first WORDS - 1 words, folded to 32 bits. */
static u32 checksum(const u32 *w)
{
	u64 h = 0xcbf29ce484222325ULL;

	for (u32 i = 0; i < WORDS - 1; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return (u32)h ^ (u32)(h >> 32);
}

static void record(u32 *w, u64 nonce, u64 seq, u32 slot)
{
	w[0] = MAGIC;
	w[1] = slot;
	w[2] = (u32)seq;
	w[3] = (u32)(seq >> 32);
	w[4] = (u32)nonce;
	w[5] = (u32)(nonce >> 32);
	w[6] = w[7] = 0;
	for (u32 i = 8; i < WORDS - 1; i++)
		w[i] = payload(nonce, seq, slot, i);
	w[WORDS - 1] = checksum(w);
}

enum verdict { V_OK, V_UNWRITTEN, V_LOST, V_STALE, V_FOREIGN, V_CORRUPT, V_N };
static const char *const verdict_names[V_N] = { "ok_slots", "unwritten", "lost", "stale",
						 "foreign", "corrupt" };

static enum verdict classify(const u32 *w, const struct slot *s, u32 idx, u64 nonce)
{
	u64 seq = w[2] | (u64)w[3] << 32;
	int zero = 1;

	for (u32 i = 0; i < WORDS && zero; i++)
		zero = !w[i];
	if (zero || w[0] != MAGIC)
		return zero && !s->last_done ? V_UNWRITTEN : zero ? V_LOST : V_CORRUPT;
	if (w[WORDS - 1] != checksum(w))
		return V_CORRUPT;
	if ((w[4] | (u64)w[5] << 32) != nonce)	/* an earlier run's record */
		return s->last_done ? V_LOST : V_UNWRITTEN;
	if (w[1] != idx || !seq || seq > s->issued)
		return V_FOREIGN;
	if (seq == s->last_done)
		return V_OK;
	if (s->failed)		/* a failed write may or may not have landed */
		return V_OK;
	if (seq == s->prev_done)
		return V_LOST;
	return seq < s->prev_done ? V_STALE : V_FOREIGN;
}

static long aio_submit_one(unsigned long ctx, struct iocb *cb)
{
	struct iocb *one[1] = { cb };

	return rt_sys3(SYS_io_submit, ctx, 1, one);
}

static void progress(u64 t0, const char *step, u64 writes, u32 inflight, u64 ns)
{
	struct rt_buf b;

	wl_begin(&b, lb, sizeof(lb), "progress", "blkseq", t0);
	jw_str(&b, "step", step);
	jw_u64(&b, "writes", writes);
	jw_u64(&b, "inflight", inflight);
	jw_u64(&b, "iops", wl_per_sec(writes, ns));
	wl_end(&b);
}

int main(int argc, char **argv, char **envp)
{
	const char *dev = rt_arg_str(argc, argv, "dev", "/dev/vdb");
	u32 nslots = (u32)rt_arg_u64(argc, argv, "slots", 256);
	u32 qd = (u32)rt_arg_u64(argc, argv, "qd", 8);
	u64 count = rt_arg_u64(argc, argv, "count", 0);
	u64 secs = rt_arg_u64(argc, argv, "seconds", rt_arg(argc, argv, "count") ? 0 : 5);
	u64 base = rt_arg_u64(argc, argv, "base", 0) * BLK;
	u64 seed = rt_arg_u64(argc, argv, "seed", 1);
	u64 report_ns = rt_arg_u64(argc, argv, "report_ms", 1000) * 1000000ULL;
	static struct iocb cb[MAX_QD];
	static struct io_event ev[MAX_QD];
	static u8 buf_busy[MAX_QD];
	u64 t0 = rt_now_ns(), nonce, seq = 0, writes = 0, write_errors = 0, read_errors = 0;
	u64 bad_events = 0, verdicts[V_N] = { 0 }, next_report, write_ns;
	u32 cursor = 0, inflight = 0, first_bad = ~0u;
	unsigned long ctx = 0;
	struct slot *slots;
	u8 *bufs, *rbuf;
	struct rt_buf b;
	long fd, ret;
	int stop = 0;

	if (!qd || qd > MAX_QD || nslots < qd + 1 || nslots > MAX_SLOTS || (!count && !secs)) {
		rt_puts("blkseq: bad arguments (qd=1..64, slots=qd+1..65536, seconds or count)\n");
		return 2;
	}
	fd = rt_open(dev, O_RDWR | O_DIRECT, 0);
	if (fd < 0) {
		rt_puts("blkseq: cannot open the device O_RDWR|O_DIRECT\n");
		return 2;
	}
	/* i386: lseek's result is a long; a device past 2 GiB says -EOVERFLOW, big enough. */
	ret = rt_sys3(SYS_lseek, fd, 0, SEEK_END);
	if (ret != -EOVERFLOW && (ret < 0 || (u64)ret < base + (u64)nslots * BLK)) {
		rt_puts("blkseq: the device is smaller than base + slots blocks\n");
		return 2;
	}
	slots = rt_alloc(nslots * (u32)sizeof(*slots));
	bufs = rt_mmap(qd * BLK);
	rbuf = rt_mmap(BLK);
	if (!slots || !bufs || !rbuf) {
		rt_puts("blkseq: out of memory\n");
		return 2;
	}
	ret = rt_sys2(SYS_io_setup, qd, &ctx);
	if (ret < 0) {
		rt_puts("blkseq: io_setup failed\n");
		return 2;
	}
	/* Tells this run's records from those an earlier run left on the device. */
	nonce = seed * 0x9E3779B97F4A7C15ULL ^ t0 ^ (u64)rt_sys0(SYS_getpid) << 40;
	next_report = t0 + report_ns;
	for (u32 i = 0; i < qd; i++)
		cb[i] = (struct iocb){ .aio_data = i, .aio_lio_opcode = IOCB_CMD_PWRITE,
				       .aio_fildes = (u32)fd, .aio_nbytes = BLK,
				       .aio_buf = (u64)(unsigned long)(bufs + i * BLK) };
	for (;;) {
		u64 now;

		while (!stop && inflight < qd) {
			struct iocb *c;
			u32 i = 0;

			while (slots[cursor].busy)
				cursor = (cursor + 1) % nslots;
			while (buf_busy[i])
				i++;
			c = &cb[i];
			record((u32 *)(unsigned long)c->aio_buf, nonce, seq + 1, cursor);
			c->aio_offset = (s64)(base + (u64)cursor * BLK);
			c->aio_data = (u64)i | (u64)cursor << 32;
			if (aio_submit_one(ctx, c) != 1) {
				write_errors++;
				stop = 1;
				break;
			}
			seq++;
			buf_busy[i] = 1;
			slots[cursor].busy = 1;
			slots[cursor].issued = seq;
			inflight++;
			cursor = (cursor + 1) % nslots;
			if (count && seq >= count)
				stop = 1;
		}
		if (!inflight)
			break;
		ret = rt_syscall6(SYS_io_pgetevents, (long)ctx, 1, (long)qd, (long)ev, 0, 0);
		if (ret == -EINTR)
			continue;
		if (ret <= 0) {
			write_errors++;
			break;
		}
		for (long e = 0; e < ret; e++) {
			u32 bi = (u32)ev[e].data, si = (u32)(ev[e].data >> 32);
			struct slot *s = si < nslots ? &slots[si] : NULL;

			if (bi >= qd || !buf_busy[bi] || !s || !s->busy) {
				bad_events++;
				continue;
			}
			buf_busy[bi] = 0;
			s->busy = 0;
			inflight--;
			if (ev[e].res != (s64)BLK) {
				write_errors++;
				s->failed = 1;
				continue;
			}
			s->prev_done = s->last_done;
			s->last_done = s->issued;
			writes++;
		}
		now = rt_now_ns();
		if (secs && now - t0 >= secs * 1000000000ULL)
			stop = 1;
		if (now >= next_report) {
			progress(t0, "writing", writes, inflight, now - t0);
			next_report = now + report_ns;
		}
	}
	write_ns = rt_now_ns() - t0;
	rt_sys1(SYS_io_destroy, ctx);
	if (rt_sys1(SYS_fsync, fd) < 0)
		write_errors++;
	progress(t0, "verifying", writes, inflight, write_ns);
	for (u32 i = 0; i < nslots; i++) {
		enum verdict v;

		if (rt_pread(fd, rbuf, BLK, base + (u64)i * BLK) != (long)BLK) {
			read_errors++;
			continue;
		}
		v = classify((const u32 *)rbuf, &slots[i], i, nonce);
		verdicts[v]++;
		if (v != V_OK && v != V_UNWRITTEN && first_bad == ~0u)
			first_bad = i;
	}
	rt_close(fd);
	wl_begin(&b, lb, sizeof(lb), "workload", "blkseq", t0);
	jw_str(&b, "dev", dev);
	jw_u64(&b, "slots", nslots);
	jw_u64(&b, "qd", qd);
	jw_u64(&b, "writes", writes);
	jw_u64(&b, "issued", seq);
	jw_u64(&b, "iops", wl_per_sec(writes, write_ns));
	for (int v = 0; v < V_N; v++)
		jw_u64(&b, verdict_names[v], verdicts[v]);
	jw_u64(&b, "dup", verdicts[V_STALE] + verdicts[V_FOREIGN]);
	jw_u64(&b, "write_errors", write_errors);
	jw_u64(&b, "read_errors", read_errors);
	jw_u64(&b, "bad_events", bad_events);
	if (first_bad != ~0u)
		jw_u64(&b, "first_bad_slot", first_bad);
	wl_end(&b);
	return verdicts[V_LOST] || verdicts[V_STALE] || verdicts[V_FOREIGN] || verdicts[V_CORRUPT] ||
	       write_errors || read_errors || bad_events ? 1 : 0;
}
