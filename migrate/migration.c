/*
 * Live migration, source and destination (migrate/migration.h, docs/migration.md).
 *
 * Source: round 0 sends every page that holds data (the memfds' data extents, all-zero pages
 * skipped: the destination's memory starts as zeros); each later round takes the dirty map
 * (KVM's log + the VMM's own writes) and sends those pages, a page that became zero as a ZERO
 * range. After each round the expected downtime is the dirty bytes over the round's
 * bandwidth; once under the target: stop, send the rest and the state, wait for the
 * destination's ack. Post-copy instead sends the state and the list of pages the destination
 * still lacks, and answers its page requests until it has them all.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/migration.h"
#include "migrate/stream.h"
#include "mm/dirty.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/log.h"

#define PAGE MM_PAGE_SIZE
#define ACK_TIMEOUT_S 120	/* a destination loading a state, or a post-copy request */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int mig_page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < PAGE / sizeof(*w); i++)
		if (w[i])
			return 0;
	return 1;
}

static void set_timeout(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* ---- source ---- */

struct sender {
	int fd;
	struct guest_mem *m;
	const struct mig_params *p;
	uint8_t *buf;			/* MIG_PAGES_MAX pages being gathered */
	uint64_t run_gpa;
	unsigned int run_n;
	uint64_t zero_gpa, zero_len;
	int round0;			/* zero pages need not be sent: the destination is fresh */
	uint64_t t_bw, bytes_bw;	/* the bandwidth limit's window */
	uint64_t t_stop;		/* the source stopped: downtime runs from here */
	struct mig_progress st;
};

static int cancelled(const struct sender *s)
{
	return s->p->cancel && __atomic_load_n(s->p->cancel, __ATOMIC_ACQUIRE);
}

static int send_chunk(struct sender *s, uint32_t type, uint64_t arg, const void *data,
		      uint32_t len)
{
	int ret;

	if (cancelled(s))
		return -ECANCELED;
	ret = mig_send(s->fd, type, arg, data, len);
	if (ret)
		return ret;
	s->st.bytes_sent += sizeof(struct mig_chunk_hdr) + len;
	s->bytes_bw += sizeof(struct mig_chunk_hdr) + len;
	if (s->p->bandwidth) {
		uint64_t due = s->t_bw + s->bytes_bw * 1000000000ULL / s->p->bandwidth;
		uint64_t t = now_ns();

		if (due > t) {
			struct timespec ts = { .tv_sec = (time_t)((due - t) / 1000000000ULL),
					       .tv_nsec = (long)((due - t) % 1000000000ULL) };

			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

static int flush_pages(struct sender *s)
{
	int ret = 0;

	if (s->run_n)
		ret = send_chunk(s, MIG_PAGES, s->run_gpa, s->buf, (uint32_t)(s->run_n * PAGE));
	s->st.pages_sent += s->run_n;
	s->run_n = 0;
	return ret;
}

static int flush_zero(struct sender *s)
{
	int ret = 0;

	if (s->zero_len)
		ret = send_chunk(s, MIG_ZERO, s->zero_gpa, &s->zero_len, sizeof(s->zero_len));
	s->st.zero_pages += s->zero_len / PAGE;
	s->zero_len = 0;
	return ret;
}

static int flush(struct sender *s)
{
	int ret = flush_pages(s);

	return ret ? ret : flush_zero(s);
}

/* Gather one page: runs of data into PAGES chunks, runs of zero pages into ZERO ranges. */
static int send_page(struct sender *s, uint64_t gpa)
{
	const uint8_t *hva = mm_gpa_to_hva(s->m, gpa, PAGE);
	int ret;

	if (!hva)
		return -EFAULT;
	if (mig_page_is_zero(hva)) {
		if ((ret = flush_pages(s)))
			return ret;
		if (s->round0)
			return 0;
		if (s->zero_len && s->zero_gpa + s->zero_len == gpa) {
			s->zero_len += PAGE;
			return 0;
		}
		if ((ret = flush_zero(s)))
			return ret;
		s->zero_gpa = gpa;
		s->zero_len = PAGE;
		return 0;
	}
	if ((ret = flush_zero(s)))
		return ret;
	if (s->run_n && (s->run_gpa + s->run_n * PAGE != gpa || s->run_n == MIG_PAGES_MAX))
		if ((ret = flush_pages(s)))
			return ret;
	if (!s->run_n)
		s->run_gpa = gpa;
	memcpy(s->buf + s->run_n * PAGE, hva, PAGE);
	s->run_n++;
	return 0;
}

static int send_run(void *opaque, uint64_t gpa, uint64_t len)
{
	struct sender *s = opaque;
	int ret = 0;

	for (uint64_t off = 0; off < len && !ret; off += PAGE)
		ret = send_page(s, gpa + off);
	return ret;
}

/* Every data extent of every region's memfd: fn(opaque, gpa, len). */
int mig_for_each_data(const struct guest_mem *m, int (*fn)(void *, uint64_t, uint64_t),
		      void *opaque)
{
	const struct mm_region *r;

	mm_for_each_region(m, r) {
		uint64_t pos = r->fd_offset, end = r->fd_offset + r->size;

		while (pos < end) {
			off_t data = lseek(r->memfd, (off_t)pos, SEEK_DATA), hole;
			int ret;

			if (data < 0 || (uint64_t)data >= end)
				break;
			hole = lseek(r->memfd, data, SEEK_HOLE);
			if (hole < 0 || (uint64_t)hole > end)
				hole = (off_t)end;
			data &= ~(off_t)(PAGE - 1);
			ret = fn(opaque, r->gpa + ((uint64_t)data - r->fd_offset),
				 (uint64_t)(hole - data + (off_t)PAGE - 1) & ~(PAGE - 1));
			if (ret)
				return ret;
			pos = (uint64_t)hole;
		}
	}
	return 0;
}

static void progress(struct sender *s, const struct mig_source_ops *ops, void *vm,
		     const char *phase, uint64_t t0)
{
	s->st.phase = phase;
	s->st.total_ns = now_ns() - t0;
	if (ops->progress)
		ops->progress(vm, &s->st);
}

/* An ack: 0 when it says ok, else its -errno with its reason in err. */
static int ack_result(const struct mig_chunk_hdr *h, const uint8_t *buf, char *err,
		      size_t errlen)
{
	int e = (int)(int64_t)h->arg;
	char why[MIG_ACK_TEXT_MAX + 1];

	if (!h->arg)
		return 0;
	/* Its reason, as printable text only: it ends up in logs and events. */
	for (uint32_t i = 0; i < h->len; i++)
		why[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? (char)buf[i] : '?';
	why[h->len] = '\0';
	snprintf(err, errlen, "migration: the destination refused: %s",
		 h->len ? why : e < 0 && e > -4096 ? strerror(-e) : "unknown error");
	return e < 0 && e > -4096 ? e : -EPROTO;
}

/* Wait for the destination's ack: 0 when it says ok, else its -errno or the stream's. */
static int wait_ack(int fd, char *err, size_t errlen)
{
	struct mig_chunk_hdr h;
	uint8_t *buf = NULL;
	size_t cap = 0;
	int ret;

	set_timeout(fd, ACK_TIMEOUT_S);
	ret = mig_recv(fd, &h, &buf, &cap, err, errlen);
	if (!ret && h.type != MIG_ACK) {
		snprintf(err, errlen, "migration: expected an ack, got chunk type %u", h.type);
		ret = -EPROTO;
	}
	if (!ret)
		ret = ack_result(&h, buf, err, errlen);
	free(buf);
	return ret;
}

static int mark_run(void *opaque, uint64_t gpa, uint64_t len)
{
	return mm_dirty_mark(opaque, gpa, len);
}

struct runs {
	uint64_t *r;		/* gpa, len pairs */
	size_t n, cap;
};

static int add_run(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *rs = opaque;

	if (rs->n == MIG_RUNS_MAX)
		return -E2BIG;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 1024;
		uint64_t *r = realloc(rs->r, cap * 2 * sizeof(*r));

		if (!r)
			return -ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[2 * rs->n] = gpa;
	rs->r[2 * rs->n + 1] = len;
	rs->n++;
	return 0;
}

/*
 * Post-copy: answer page requests until the destination is done. They may come before its
 * ack of the switch-over (loading the state can fault pages in): *acked is set when the ack
 * comes, and a refusal returns its -errno with *acked still 0.
 */
static int serve_pages(struct sender *s, int *acked, char *err, size_t errlen)
{
	struct mig_chunk_hdr h;
	uint8_t *buf = NULL;
	size_t cap = 0;
	uint64_t len;
	int ret;

	set_timeout(s->fd, ACK_TIMEOUT_S);
	for (;;) {
		ret = mig_recv(s->fd, &h, &buf, &cap, err, errlen);
		if (ret)
			break;
		if (h.type == MIG_ACK && !*acked) {
			ret = ack_result(&h, buf, err, errlen);
			if (ret)
				break;
			*acked = 1;
			s->st.downtime_ns = now_ns() - s->t_stop;
			continue;
		}
		if (h.type == MIG_DONE && *acked) {
			ret = h.arg ? -EIO : 0;
			if (ret)
				snprintf(err, errlen, "migration: the destination failed after the "
					 "switch-over");
			break;
		}
		if (h.type != MIG_READ || h.len != sizeof(len)) {
			snprintf(err, errlen, "migration: unexpected chunk type %u after the "
				 "switch-over", h.type);
			ret = -EPROTO;
			break;
		}
		memcpy(&len, buf, sizeof(len));
		if (!len || len > MIG_PAGES_MAX * PAGE || (h.arg | len) & (PAGE - 1) ||
		    !mm_range_is_ram(s->m, h.arg, len)) {
			snprintf(err, errlen, "migration: request for [%#" PRIx64 ", +%#" PRIx64
				 ") is not guest RAM", h.arg, len);
			ret = -EPROTO;
			break;
		}
		ret = mig_send(s->fd, MIG_DATA, h.arg, mm_gpa_to_hva(s->m, h.arg, len),
			       (uint32_t)len);
		if (ret) {
			snprintf(err, errlen, "migration: answering a page request: %s",
				 strerror(-ret));
			break;
		}
		s->st.postcopy_reads += len / PAGE;
		s->st.bytes_sent += sizeof(h) + len;
	}
	free(buf);
	return ret;
}

int mig_source_run(struct guest_mem *m, uint32_t nr_vcpus, int fd,
		   const struct mig_source_ops *ops, void *vm, const struct mig_params *p,
		   struct mig_progress *result, char *err, size_t errlen)
{
	struct sender s = { .fd = fd, .m = m, .p = p };
	struct runs pending = { 0 };
	struct mig_hello hi;
	uint64_t t0 = now_ns(), t_round, t_stop = 0, prev_dirty = UINT64_MAX;
	unsigned int stalls = 0;
	void *blob = NULL;
	size_t size = 0;
	int ret, stopped = 0, tracking = 0, postcopy = 0, switched = 0;

	s.buf = malloc(MIG_PAGES_MAX * PAGE);
	if (!s.buf)
		return -ENOMEM;
	s.t_bw = t0;
	mig_hello_make(&hi, m, nr_vcpus);
	ret = mig_send(fd, MIG_HELLO, 0, &hi, sizeof(hi));
	if (ret) {
		snprintf(err, errlen, "migration: sending the hello: %s", strerror(-ret));
		goto out;
	}
	ret = wait_ack(fd, err, errlen);
	if (ret)
		goto out;
	ret = ops->dirty_start(vm);
	if (ret) {
		snprintf(err, errlen, "migration: dirty logging: %s", strerror(-ret));
		goto out;
	}
	tracking = 1;
	if (!p->postcopy_now) {
		/* Round 0: every page that holds data. */
		t_round = now_ns();
		s.round0 = 1;
		ret = mig_for_each_data(m, send_run, &s);
		if (!ret)
			ret = flush(&s);
		s.round0 = 0;
		if (ret)
			goto fail;
		for (;;) {
			uint64_t dt = now_ns() - t_round, bytes = s.bytes_bw, dirty;

			ret = ops->dirty_sync(vm);
			if (ret)
				goto fail;
			dirty = mm_dirty_count(m);
			s.st.dirty_pages = dirty;
			s.st.bandwidth = dt ? bytes * 1000000000ULL / dt : 0;
			s.st.dirty_rate = dt ? dirty * 1000000000ULL / dt : 0;
			s.st.expected_downtime_ns = s.st.bandwidth ?
				dirty * PAGE * 1000000000ULL / s.st.bandwidth : UINT64_MAX;
			progress(&s, ops, vm, "round", t0);
			stalls = dirty * 10 >= prev_dirty * 9 ? stalls + 1 : 0;
			prev_dirty = dirty;
			if (s.st.expected_downtime_ns <= p->downtime_ns)
				break;
			if (p->postcopy > 0 && s.st.round + 1 >= (unsigned int)p->postcopy) {
				postcopy = 1;
				break;
			}
			if (p->postcopy == MIG_POSTCOPY_AUTO && stalls >= 3) {
				postcopy = 1;
				break;
			}
			if (s.st.round + 1 >= p->max_rounds) {
				postcopy = p->postcopy != MIG_POSTCOPY_OFF;
				break;
			}
			s.st.round++;
			t_round = now_ns();
			s.t_bw = t_round;
			s.bytes_bw = 0;
			ret = mm_dirty_for_each_run(m, 1, send_run, &s);
			if (!ret)
				ret = flush(&s);
			if (ret)
				goto fail;
		}
	} else {
		postcopy = 1;
	}

	/* Switch-over: the source stops here. */
	ret = ops->stop(vm);
	if (ret) {
		snprintf(err, errlen, "migration: stopping the VM: %s", strerror(-ret));
		goto fail;
	}
	stopped = 1;
	t_stop = s.t_stop = now_ns();
	ret = ops->dirty_sync(vm);
	if (ret)
		goto fail;
	ret = ops->state(vm, &blob, &size);
	if (ret) {
		snprintf(err, errlen, "migration: saving the state: %s", strerror(-ret));
		goto fail;
	}
	if (!postcopy) {
		progress(&s, ops, vm, "stop-and-copy", t0);
		ret = mm_dirty_for_each_run(m, 1, send_run, &s);
		if (!ret)
			ret = flush(&s);
	} else {
		progress(&s, ops, vm, "postcopy", t0);
		if (p->postcopy_now)	/* nothing sent yet: every page with data is pending */
			ret = mig_for_each_data(m, mark_run, m);
		if (!ret)
			ret = mm_dirty_for_each_run(m, 1, add_run, &pending);
		if (!ret)
			ret = send_chunk(&s, MIG_PENDING, 0, pending.r,
					 (uint32_t)(pending.n * 2 * sizeof(uint64_t)));
	}
	if (!ret)
		ret = send_chunk(&s, MIG_STATE, 0, blob, (uint32_t)size);
	if (!ret)
		ret = send_chunk(&s, MIG_END, (uint64_t)postcopy, NULL, 0);
	if (ret) {
		snprintf(err, errlen, "migration: %s", ret == -ECANCELED ? "cancelled" :
			 strerror(-ret));
		goto fail;
	}
	if (!postcopy) {
		ret = wait_ack(fd, err, errlen);
		if (ret)
			goto fail;
		/* The destination runs the guest now: there is no way back. */
		switched = 1;
		s.st.downtime_ns = now_ns() - t_stop;
	} else {
		ret = serve_pages(&s, &switched, err, errlen);
		if (!switched)
			goto fail;
		if (ret)
			ret = -ENOTRECOVERABLE;
	}
	ops->dirty_stop(vm);
	tracking = 0;
	if (!ret)
		progress(&s, ops, vm, "done", t0);
	goto out;

fail:
	if (ret == -ECANCELED) {
		snprintf(err, errlen, "migration cancelled");
		mig_send(fd, MIG_CANCEL, 0, NULL, 0);
	}
	if (tracking)
		ops->dirty_stop(vm);
	tracking = 0;
	if (stopped && !switched)
		ops->resume(vm);
out:
	if (tracking)
		ops->dirty_stop(vm);
	s.st.total_ns = now_ns() - t0;
	if (result)
		*result = s.st;
	free(pending.r);
	free(blob);
	free(s.buf);
	return ret;
}

/* ---- destination ---- */

/* The source's memory, pulled page by page over the stream after a post-copy switch-over. */
struct mig_remote {
	int fd;
	pthread_mutex_t lock;	/* the stream: a request and its answer, or the ack */
	int dead;		/* the switch-over failed: no more requests */
	const struct guest_mem *m;
	uint64_t *runs;		/* pending, as sorted (flat offset, len) pairs */
	size_t n;
	uint8_t *buf;
	size_t cap;
	char err[256];
};

/* The offset of gpa in the memory file order (regions one after another). */
static int gpa_to_flat(const struct guest_mem *m, uint64_t gpa, uint64_t len, uint64_t *off)
{
	const struct mm_region *r;
	uint64_t base = 0;

	mm_for_each_region(m, r) {
		if (gpa >= r->gpa && gpa - r->gpa < r->size) {
			if (len > r->size - (gpa - r->gpa))
				return -EINVAL;
			*off = base + (gpa - r->gpa);
			return 0;
		}
		base += r->size;
	}
	return -EINVAL;
}

int mig_flat_to_gpa(const struct guest_mem *m, uint64_t off, uint64_t *gpa, uint64_t *left)
{
	const struct mm_region *r;

	mm_for_each_region(m, r) {
		if (off < r->size) {
			*gpa = r->gpa + off;
			*left = r->size - off;
			return 0;
		}
		off -= r->size;
	}
	return -EINVAL;
}

static int remote_read(void *opaque, uint64_t off, void *buf, uint64_t len)
{
	struct mig_remote *r = opaque;
	uint8_t *out = buf;


	while (len) {
		struct mig_chunk_hdr h;
		uint64_t gpa, left, n;
		int ret = mig_flat_to_gpa(r->m, off, &gpa, &left);

		if (ret)
			return ret;
		n = len < left ? len : left;
		if (n > MIG_PAGES_MAX * PAGE)
			n = MIG_PAGES_MAX * PAGE;
		/* One request and its answer at a time; the switch-over's ack shares the lock. */
		pthread_mutex_lock(&r->lock);
		ret = r->dead ? -EPIPE : mig_send(r->fd, MIG_READ, gpa, &n, sizeof(n));
		if (!ret)
			ret = mig_recv(r->fd, &h, &r->buf, &r->cap, r->err, sizeof(r->err));
		if (!ret && h.type == MIG_DATA && h.arg == gpa && h.len == n)
			memcpy(out, r->buf, n);
		pthread_mutex_unlock(&r->lock);
		if (!ret && (h.type != MIG_DATA || h.arg != gpa || h.len != n)) {
			snprintf(r->err, sizeof(r->err), "migration: asked for %#" PRIx64 " +%#"
				 PRIx64 ", got chunk type %u for %#" PRIx64 " +%#x", gpa, n,
				 h.type, h.arg, h.len);
			ret = -EPROTO;
		}
		if (ret) {
			pr_err("post-copy: the source's memory is out of reach (%s)",
			       r->err[0] ? r->err : strerror(-ret));
			return ret;
		}
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int remote_is_hole(void *opaque, uint64_t off, uint64_t len, uint64_t *run)
{
	const struct mig_remote *r = opaque;
	size_t lo = 0, hi = r->n;

	/* The first pending run that ends after off. */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (r->runs[2 * mid] + r->runs[2 * mid + 1] <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < r->n && r->runs[2 * lo] <= off) {
		uint64_t end = r->runs[2 * lo] + r->runs[2 * lo + 1];

		*run = end - off < len ? end - off : len;
		return 0;
	}
	*run = lo < r->n && r->runs[2 * lo] - off < len ? r->runs[2 * lo] - off : len;
	return 1;
}

static const struct mig_page_source_ops remote_ops = {
	.read = remote_read,
	.is_hole = remote_is_hole,
};

static int cmp_run(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Check PENDING's runs (whole pages of one region each, not overlapping) into flat order. */
static int pending_runs(const struct guest_mem *m, const uint8_t *p, uint32_t len,
			uint64_t **out, size_t *nout, char *err, size_t errlen)
{
	size_t n = len / (2 * sizeof(uint64_t));
	uint64_t *r;

	if (len % (2 * sizeof(uint64_t))) {
		snprintf(err, errlen, "migration stream: PENDING of %u bytes", len);
		return -EPROTO;
	}
	r = malloc(n ? n * 2 * sizeof(*r) : 1);
	if (!r)
		return -ENOMEM;
	memcpy(r, p, n * 2 * sizeof(*r));
	for (size_t i = 0; i < n; i++) {
		uint64_t gpa = r[2 * i], l = r[2 * i + 1];

		if (!l || (gpa | l) & (PAGE - 1) || gpa_to_flat(m, gpa, l, &r[2 * i])) {
			snprintf(err, errlen, "migration stream: pending pages [%#" PRIx64
				 ", +%#" PRIx64 ") are not whole pages of one RAM region", gpa, l);
			free(r);
			return -EPROTO;
		}
	}
	qsort(r, n, 2 * sizeof(*r), cmp_run);
	for (size_t i = 1; i < n; i++)
		if (r[2 * i - 2] + r[2 * i - 1] > r[2 * i]) {
			snprintf(err, errlen, "migration stream: pending runs overlap");
			free(r);
			return -EPROTO;
		}
	*out = r;
	*nout = n;
	return 0;
}

/* The destination's answer: 0, or -errno with the reason (err) for the source to report. */
static int send_ack(int fd, int ret, const char *err)
{
	size_t len = ret ? strnlen(err, MIG_ACK_TEXT_MAX) : 0;

	return mig_send(fd, MIG_ACK, (uint64_t)(int64_t)ret, err, (uint32_t)len);
}

int mig_dest_run(struct guest_mem *m, uint32_t nr_vcpus, int fd, const struct mig_dest_ops *ops,
		 void *vm, struct mig_remote **remote, char *err, size_t errlen)
{
	struct mig_chunk_hdr h;
	struct mig_remote *rem = NULL;
	struct mig_hello hi;
	uint8_t *buf = NULL, *state = NULL;
	uint64_t *runs = NULL;
	size_t cap = 0, state_len = 0, nruns = 0;
	int ret, have_pending = 0;

	*remote = NULL;
	set_timeout(fd, ACK_TIMEOUT_S);
	ret = mig_recv(fd, &h, &buf, &cap, err, errlen);
	if (!ret && (h.type != MIG_HELLO || h.len != sizeof(hi))) {
		snprintf(err, errlen, "migration stream: does not start with a hello");
		ret = -EPROTO;
	}
	if (!ret) {
		memcpy(&hi, buf, sizeof(hi));
		ret = mig_hello_check(&hi, m, nr_vcpus, err, errlen);
		send_ack(fd, ret, err);
	}
	while (!ret) {
		ret = mig_recv(fd, &h, &buf, &cap, err, errlen);
		if (ret)
			break;
		switch (h.type) {
		case MIG_PAGES:
		case MIG_ZERO:
			ret = mig_apply_pages(m, &h, buf, err, errlen);
			continue;
		case MIG_STATE:
			free(state);
			state = malloc(h.len ? h.len : 1);
			if (!state) {
				ret = -ENOMEM;
				break;
			}
			memcpy(state, buf, h.len);
			state_len = h.len;
			continue;
		case MIG_PENDING:
			free(runs);
			runs = NULL;
			ret = pending_runs(m, buf, h.len, &runs, &nruns, err, errlen);
			have_pending = !ret;
			continue;
		case MIG_END:
			break;
		case MIG_CANCEL:
			snprintf(err, errlen, "migration: the source cancelled it");
			ret = -ECANCELED;
			continue;
		default:
			snprintf(err, errlen, "migration stream: unexpected chunk type %u", h.type);
			ret = -EPROTO;
			continue;
		}
		break;
	}
	if (ret)
		goto out;
	if (!state || h.arg > 1 || (h.arg && !have_pending)) {
		snprintf(err, errlen, "migration stream: ended without %s",
			 !state ? "the VM's state" : "the pending pages");
		ret = -EPROTO;
		goto out_ack;
	}
	if (h.arg) {
		/* Post-copy: what the source still has must fault here, so it must be absent. */
		for (size_t i = 0; i < nruns && !ret; i++) {
			uint64_t gpa, left;

			ret = mig_flat_to_gpa(m, runs[2 * i], &gpa, &left);
			if (!ret)
				ret = mm_release_range(m, gpa, runs[2 * i + 1]);
		}
		if (ret) {
			snprintf(err, errlen, "migration: post-copy needs guest memory it can punch "
				 "out (not huge pages): %s", strerror(-ret));
			goto out_ack;
		}
		rem = calloc(1, sizeof(*rem));
		if (!rem) {
			ret = -ENOMEM;
			goto out_ack;
		}
		*rem = (struct mig_remote){ .fd = fd, .m = m, .runs = runs, .n = nruns };
		pthread_mutex_init(&rem->lock, NULL);
		runs = NULL;
		{
			const struct mig_page_source src = { .ops = &remote_ops, .opaque = rem,
							     .size = m->ram_size };

			ret = ops->lazy(vm, &src);
		}
		if (ret) {
			snprintf(err, errlen, "migration: lazy memory: %s", strerror(-ret));
			goto out_ack;
		}
	}
	ret = ops->load(vm, state, state_len);
	if (ret) {
		snprintf(err, errlen, "migration: the VM's state was not loaded (the reason is "
			 "above)");
		goto out_ack;
	}
	ret = ops->start(vm);
	if (ret)
		snprintf(err, errlen, "migration: starting the vCPUs: %s", strerror(-ret));
out_ack:
	/* Loading may already fault pages in (KVM touches kvmclock's page when its MSR is set):
	 * the source answers requests before the ack too, so the ack waits its turn. */
	if (rem)
		pthread_mutex_lock(&rem->lock);
	if (send_ack(fd, ret, err) && !ret) {
		/* The source never hears that we run: it resumes; so must we not. */
		snprintf(err, errlen, "migration: the source is gone before the switch-over");
		ret = -EPIPE;
	}
	if (rem) {
		rem->dead = ret != 0;
		pthread_mutex_unlock(&rem->lock);
	}
out:
	if (rem) {
		/* Handed over even on failure: the lazy server may be using it until stopped. */
		set_timeout(fd, 0);	/* page requests wait as long as the source takes */
		*remote = rem;
	}
	free(runs);
	free(state);
	free(buf);
	return ret;
}

void mig_dest_finish(struct mig_remote *r, int ok)
{
	if (!r)
		return;
	if (!r->dead)
		mig_send(r->fd, MIG_DONE, ok ? 0 : 1, NULL, 0);
	pthread_mutex_destroy(&r->lock);
	free(r->buf);
	free(r->runs);
	free(r);
}
