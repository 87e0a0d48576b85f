/*
 * virtio-balloon. Everything the guest sends is handled on the device's one I/O thread; the
 * config words are atomics (the transport reads them on vCPU threads, the VMM sets the
 * target from its own), the statistics sit behind slock, and the hinting session behind
 * hlock so that start/done never race with a buffer being recorded.
 *
 * Inflate: a PFN is taken only if it is guest RAM, not already in the balloon, and the
 * balloon is below the target; the page is then punched out of the memfd. A page the guest
 * did not give is never released: every range comes from a checked PFN or descriptor.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/virtio-balloon.h"
#include "devices/virtio.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/devenv.h"
#include "vmm/log.h"

#define PAGE MM_PAGE_SIZE
#define STATS_BUF_MAX (1024 * BALLOON_STAT_ENTRY_SIZE)	/* entries beyond are not read */
#define PFN_CHUNK 4096					/* bytes of PFNs copied at a time */

enum { EV_REQ = 1, EV_TIMER };	/* the balloon's own fds on its worker */

#define REQ_STATS 1u

struct balloon {
	struct virtio_dev vdev;
	struct guest_mem *m;
	struct mm_pagestate *ps;
	struct balloon_options opt;
	/* config space (atomics) */
	uint32_t num_pages, actual, cmd_id, poison_val;
	int qidx[BALLOON_Q_NR];		/* by role under the negotiated features, -1 = none */
	int req_fd, timer_fd;
	unsigned int req;		/* REQ_* bits (atomic) */
	struct virtq_elem elem;		/* I/O thread scratch */
	uint8_t *scratch;		/* PFN / stats bytes, STATS_BUF_MAX */
	int stats_held;			/* the guest's stats buffer is with us (I/O thread) */
	uint16_t stats_head;
	pthread_mutex_t hlock;		/* cmd_id changes, hint_active, recording hints */
	uint32_t next_cmd_id, hint_active;
	pthread_mutex_t slock;
	struct balloon_stats stats;
	struct balloon_counters ctr;	/* atomics */
};

static struct balloon *to_balloon(struct virtio_dev *vdev)
{
	return (struct balloon *)((char *)vdev - offsetof(struct balloon, vdev));
}

static void ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint32_t ld32(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void st32(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static void config_changed(struct balloon *b)
{
	__atomic_fetch_add(&b->vdev.config_generation, 1, __ATOMIC_SEQ_CST);
	if (b->vdev.tops && b->vdev.tops->notify_config)
		b->vdev.tops->notify_config(&b->vdev);
}

/* A hole reads back as zeros: with a non-zero poison the pages must keep their bytes. */
static int may_release(struct balloon *b)
{
	return !(virtio_has_feature(&b->vdev, VIRTIO_BALLOON_F_PAGE_POISON) &&
		 ld32(&b->poison_val) != 0);
}

static void release(struct balloon *b, uint64_t gpa, uint64_t len)
{
	int r;

	if (!len || !may_release(b))
		return;
	r = mm_release_range(b->m, gpa, len);
	if (r) {
		ctr_add(&b->ctr.release_errors, 1);
		pr_warn_ratelimited("virtio-balloon: cannot release 0x%" PRIx64 "+0x%" PRIx64
				    ": %s", gpa, len, strerror(-r));
	}
}

/* ---- inflate / deflate ---- */

static unsigned int do_pfns(struct balloon *b, const uint8_t *p, size_t len, int inflate)
{
	uint64_t run_gpa = 0, run_len = 0;
	unsigned int accepted = 0;

	for (size_t i = 0; i + 4 <= len; i += 4) {
		uint64_t gpa = (uint64_t)get_le32(p + i) << VIRTIO_BALLOON_PFN_SHIFT;
		int st = mm_pagestate_get(b->ps, gpa);

		if (st < 0) {
			ctr_add(&b->ctr.bad_pfn, 1);
			pr_warn_ratelimited("virtio-balloon: %s of PFN 0x%" PRIx64 " outside RAM "
					    "ignored", inflate ? "inflate" : "deflate",
					    gpa >> VIRTIO_BALLOON_PFN_SHIFT);
			continue;
		}
		if (!inflate) {
			if (st != MM_PAGE_BALLOONED) {
				ctr_add(&b->ctr.not_ballooned, 1);
				continue;	/* the page is the guest's already */
			}
			mm_pagestate_set(b->ps, gpa, PAGE, MM_PAGE_PRESENT);
			ctr_add(&b->ctr.deflated, 1);
			accepted++;
			continue;
		}
		if (st == MM_PAGE_BALLOONED) {
			ctr_add(&b->ctr.duplicate, 1);
			continue;
		}
		if (mm_pagestate_count(b->ps, MM_PAGE_BALLOONED) >= ld32(&b->num_pages)) {
			ctr_add(&b->ctr.past_target, 1);
			pr_warn_ratelimited("virtio-balloon: inflate past the target of %u pages "
					    "ignored", ld32(&b->num_pages));
			continue;
		}
		mm_pagestate_set(b->ps, gpa, PAGE, MM_PAGE_BALLOONED);
		ctr_add(&b->ctr.inflated, 1);
		accepted++;
		/* Contiguous PFNs go out in one fallocate, as long as they stay in one region. */
		if (run_len && gpa == run_gpa + run_len &&
		    mm_gpa_to_hva(b->m, run_gpa, run_len + PAGE)) {
			run_len += PAGE;
			continue;
		}
		release(b, run_gpa, run_len);
		run_gpa = gpa;
		run_len = PAGE;
	}
	release(b, run_gpa, run_len);
	return accepted;
}

unsigned int balloon_inflate_pfns(struct virtio_dev *vdev, const void *buf, size_t len)
{
	return do_pfns(to_balloon(vdev), buf, len, 1);
}

unsigned int balloon_deflate_pfns(struct virtio_dev *vdev, const void *buf, size_t len)
{
	return do_pfns(to_balloon(vdev), buf, len, 0);
}

/* ---- stats ---- */

unsigned int balloon_parse_stats(const void *buf, size_t len, struct balloon_stats *st)
{
	const uint8_t *p = buf;
	unsigned int n = 0;
	size_t i;

	for (i = 0; i + BALLOON_STAT_ENTRY_SIZE <= len; i += BALLOON_STAT_ENTRY_SIZE) {
		unsigned int tag = (unsigned int)p[i] | (unsigned int)p[i + 1] << 8;

		if (tag >= BALLOON_STATS_MAX_TAGS) {
			st->dropped_tags++;
			continue;
		}
		st->val[tag] = get_le64(p + i + 2);
		st->valid |= 1ULL << tag;
		n++;
	}
	if (i != len)
		st->malformed++;
	return n;
}

static void stats_in(struct balloon *b, struct virtq_elem *e)
{
	size_t len = e->out_len < STATS_BUF_MAX ? e->out_len : STATS_BUF_MAX;
	struct timespec ts;
	uint64_t malformed;

	len = iov_to_buf(e->out, e->nout, 0, b->scratch, len);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&b->slock);
	malformed = b->stats.malformed;
	balloon_parse_stats(b->scratch, len, &b->stats);
	if (e->out_len > STATS_BUF_MAX && b->stats.malformed == malformed)
		b->stats.malformed++;	/* longer than any driver sends: the rest is unread */
	b->stats.updates++;
	b->stats.updated_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	if (!b->stats.updated_ns)
		b->stats.updated_ns = 1;
	if (b->stats.malformed != malformed)
		pr_warn_ratelimited("virtio-balloon: stats buffer of %" PRIu64 " bytes is not "
				    "whole %d-byte entries", e->out_len, BALLOON_STAT_ENTRY_SIZE);
	pthread_mutex_unlock(&b->slock);
}

/* ---- queues (I/O thread) ---- */

static int vq_pop(struct balloon *b, int q, struct virtq_elem *e)
{
	int r;

	if (q < 0 || !__atomic_load_n(&b->vdev.vqs[q].ready, __ATOMIC_ACQUIRE) ||
	    b->vdev.vqs[q].broken)
		return 0;
	r = virtq_pop(b->vdev.env->mem, &b->vdev.vqs[q], e);
	if (r < 0) {
		b->vdev.stats_errors++;
		virtio_set_needs_reset(&b->vdev, (unsigned int)q);
		return 0;
	}
	return r;
}

static int vq_push(struct balloon *b, int q, uint16_t head)
{
	if (virtq_push(b->vdev.env->mem, &b->vdev.vqs[q], head, 0) < 0) {
		b->vdev.stats_errors++;
		virtio_set_needs_reset(&b->vdev, (unsigned int)q);
		return -1;
	}
	return 0;
}

static void serve_pfns(struct balloon *b, int q, int inflate)
{
	struct virtq_elem *e = &b->elem;
	int pushed = 0;

	while (vq_pop(b, q, e) > 0) {
		for (uint64_t off = 0; off < e->out_len; off += PFN_CHUNK) {
			size_t n = iov_to_buf(e->out, e->nout, off, b->scratch, PFN_CHUNK);

			do_pfns(b, b->scratch, n, inflate);
		}
		b->vdev.stats_requests++;
		if (vq_push(b, q, e->head))
			return;
		pushed = 1;
	}
	if (pushed)
		virtio_notify(&b->vdev, (unsigned int)q);
}

static void stats_return(struct balloon *b)
{
	int q = b->qidx[BALLOON_Q_STATS];

	if (!b->stats_held || q < 0)
		return;
	b->stats_held = 0;
	if (!vq_push(b, q, b->stats_head))
		virtio_notify(&b->vdev, (unsigned int)q);
}

static void serve_stats(struct balloon *b)
{
	int q = b->qidx[BALLOON_Q_STATS];

	while (vq_pop(b, q, &b->elem) > 0) {
		/* A second buffer while we hold one: give the old one back first. */
		stats_return(b);
		stats_in(b, &b->elem);
		b->stats_head = b->elem.head;
		b->stats_held = 1;
	}
}

/* The whole pages inside a guest buffer given by its host pointer; 0 if there are none. */
static int buf_pages(struct balloon *b, const struct iovec *iov, uint64_t *gpa, uint64_t *len)
{
	uint64_t start, end;

	if (mm_hva_to_gpa(b->m, iov->iov_base, iov->iov_len, &start))
		return 0;	/* virtq_pop only hands out RAM: cannot happen */
	end = (start + iov->iov_len) & ~(PAGE - 1);
	start = (start + PAGE - 1) & ~(PAGE - 1);
	if (end <= start)
		return 0;
	*gpa = start;
	*len = end - start;
	return 1;
}

static void serve_reporting(struct balloon *b)
{
	int q = b->qidx[BALLOON_Q_REPORTING], pushed = 0;
	struct virtq_elem *e = &b->elem;
	uint64_t gpa, len;

	while (vq_pop(b, q, e) > 0) {
		for (unsigned int i = 0; i < e->nin + e->nout; i++) {
			const struct iovec *iov = i < e->nin ? &e->in[i] : &e->out[i - e->nin];

			if (!buf_pages(b, iov, &gpa, &len))
				continue;
			release(b, gpa, len);
			mm_pagestate_change(b->ps, gpa, len, 1u << MM_PAGE_PRESENT |
					    1u << MM_PAGE_HINTED, MM_PAGE_REPORTED);
			ctr_add(&b->ctr.reported_bytes, len);
		}
		if (vq_push(b, q, e->head))
			return;
		pushed = 1;
	}
	if (pushed)
		virtio_notify(&b->vdev, (unsigned int)q);
}

static void serve_free_page(struct balloon *b)
{
	int q = b->qidx[BALLOON_Q_FREE_PAGE], pushed = 0;
	struct virtq_elem *e = &b->elem;
	uint64_t gpa, len;

	while (vq_pop(b, q, e) > 0) {
		pthread_mutex_lock(&b->hlock);
		if (e->out_len) {
			uint8_t id[4];

			if (iov_to_buf(e->out, e->nout, 0, id, 4) == 4) {
				uint32_t v = get_le32(id);

				if (v == VIRTIO_BALLOON_CMD_ID_STOP)
					b->hint_active = 0;
				else if (v == ld32(&b->cmd_id) && v >= VIRTIO_BALLOON_CMD_ID_MIN)
					b->hint_active = v;
				else
					pr_warn_ratelimited("virtio-balloon: hint cmd id 0x%x is not "
							    "ours (0x%x)", v, ld32(&b->cmd_id));
			}
		}
		/* Hints count only inside the session of the id we published last. */
		for (unsigned int i = 0; i < e->nin; i++) {
			if (!b->hint_active || b->hint_active != ld32(&b->cmd_id))
				break;
			if (!buf_pages(b, &e->in[i], &gpa, &len))
				continue;
			mm_pagestate_change(b->ps, gpa, len, 1u << MM_PAGE_PRESENT |
					    1u << MM_PAGE_REPORTED, MM_PAGE_HINTED);
			ctr_add(&b->ctr.hinted_bytes, len);
		}
		pthread_mutex_unlock(&b->hlock);
		if (vq_push(b, q, e->head))
			return;
		pushed = 1;
	}
	if (pushed)
		virtio_notify(&b->vdev, (unsigned int)q);
}

static void handle_queue(struct balloon *b, unsigned int q)
{
	if ((int)q == b->qidx[BALLOON_Q_INFLATE])
		serve_pfns(b, (int)q, 1);
	else if ((int)q == b->qidx[BALLOON_Q_DEFLATE])
		serve_pfns(b, (int)q, 0);
	else if ((int)q == b->qidx[BALLOON_Q_STATS])
		serve_stats(b);
	else if ((int)q == b->qidx[BALLOON_Q_FREE_PAGE])
		serve_free_page(b);
	else if ((int)q == b->qidx[BALLOON_Q_REPORTING])
		serve_reporting(b);
}

static void drain(int fd)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0)
		v = 0;
}

/* ---- on the device's worker ---- */

static void balloon_queue_notify(struct virtio_dev *vdev, unsigned int q)
{
	handle_queue(to_balloon(vdev), q);
}

static void balloon_fd_ready(struct virtio_dev *vdev, uint32_t tag, uint32_t events)
{
	struct balloon *b = to_balloon(vdev);

	if (tag == EV_TIMER) {
		drain(b->timer_fd);
		stats_return(b);
	} else if (tag == EV_REQ) {
		drain(b->req_fd);
		if (__atomic_fetch_and(&b->req, ~REQ_STATS, __ATOMIC_ACQ_REL) & REQ_STATS)
			stats_return(b);
	}
}

/* ---- virtio_dev_ops ---- */

static unsigned int balloon_num_queues(struct virtio_dev *vdev)
{
	const struct balloon_options *o = &to_balloon(vdev)->opt;

	return 2 + !!o->stats + !!o->free_page_hint + !!o->free_page_reporting;
}

static uint64_t balloon_features(struct virtio_dev *vdev)
{
	const struct balloon_options *o = &to_balloon(vdev)->opt;
	uint64_t f = 1ULL << VIRTIO_F_INDIRECT_DESC;

	if (o->stats)
		f |= 1ULL << VIRTIO_BALLOON_F_STATS_VQ;
	if (o->deflate_on_oom)
		f |= 1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
	if (o->free_page_hint)
		f |= 1ULL << VIRTIO_BALLOON_F_FREE_PAGE_HINT;
	if (o->page_poison)
		f |= 1ULL << VIRTIO_BALLOON_F_PAGE_POISON;
	if (o->free_page_reporting)
		f |= 1ULL << VIRTIO_BALLOON_F_REPORTING;
	return f;
}

static void config_bytes(struct balloon *b, uint8_t *c)
{
	put_le32(c, ld32(&b->num_pages));
	put_le32(c + 4, ld32(&b->actual));
	put_le32(c + 8, ld32(&b->cmd_id));
	put_le32(c + 12, ld32(&b->poison_val));
}

static void balloon_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
	uint8_t c[VIRTIO_BALLOON_CONFIG_SIZE];

	config_bytes(to_balloon(vdev), c);
	memset(data, 0, len);
	if (off < sizeof(c))
		memcpy(data, c + off, len < sizeof(c) - off ? len : sizeof(c) - off);
}

static void balloon_config_write(struct virtio_dev *vdev, uint32_t off, const void *data,
				 uint32_t len)
{
	struct balloon *b = to_balloon(vdev);
	uint8_t c[VIRTIO_BALLOON_CONFIG_SIZE];

	if (off >= sizeof(c) || len > sizeof(c) - off)
		return;
	/* Only actual and poison_val are the driver's to write. */
	config_bytes(b, c);
	memcpy(c + off, data, len);
	st32(&b->actual, get_le32(c + 4));
	st32(&b->poison_val, get_le32(c + 12));
}

static void map_queues(struct balloon *b)
{
	static const unsigned int feat[BALLOON_Q_NR] = {
		[BALLOON_Q_STATS] = VIRTIO_BALLOON_F_STATS_VQ,
		[BALLOON_Q_FREE_PAGE] = VIRTIO_BALLOON_F_FREE_PAGE_HINT,
		[BALLOON_Q_REPORTING] = VIRTIO_BALLOON_F_REPORTING,
	};
	int next = 0;

	for (int r = 0; r < BALLOON_Q_NR; r++) {
		int on = r < BALLOON_Q_STATS || virtio_has_feature(&b->vdev, feat[r]);

		b->qidx[r] = on && (unsigned int)next < b->vdev.nqueues ? next++ : -1;
	}
}

static int balloon_activate(struct virtio_dev *vdev)
{
	map_queues(to_balloon(vdev));
	return 0;
}

static int clear_run(void *opaque, uint64_t gpa, uint64_t len)
{
	mm_pagestate_set(opaque, gpa, len, MM_PAGE_PRESENT);
	return 0;
}

static void balloon_reset(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);

	/* A new driver starts with an empty balloon: every page is the guest's again. */
	for (int s = MM_PAGE_BALLOONED; s < MM_PAGE_NR_STATES; s++)
		mm_pagestate_for_each_run(b->ps, s, clear_run, b->ps);
	b->stats_held = 0;
	pthread_mutex_lock(&b->hlock);
	b->hint_active = 0;
	st32(&b->cmd_id, VIRTIO_BALLOON_CMD_ID_STOP);
	pthread_mutex_unlock(&b->hlock);
	st32(&b->actual, 0);
	st32(&b->poison_val, 0);
	for (int r = 0; r < BALLOON_Q_NR; r++)
		b->qidx[r] = -1;
}

/* Quiesce: the stats buffer we hold goes back to its ring (it is the last one popped). */
static void balloon_drain(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);
	int q = b->qidx[BALLOON_Q_STATS];

	if (b->stats_held && q >= 0)
		virtq_unpop(&vdev->vqs[q]);
	b->stats_held = 0;
}

/* Saved as "balloon": the config words and the hinting session. */
struct balloon_state {
	uint32_t num_pages, actual, cmd_id, poison_val;
	uint32_t next_cmd_id, hint_active;
};
_Static_assert(sizeof(struct balloon_state) == 24, "balloon state layout");

/* Saved as "balloon-pages": every page not present, as runs (gpa, len, state). */
struct balloon_run {
	uint64_t gpa, len;
	uint32_t state, pad;
};
_Static_assert(sizeof(struct balloon_run) == 24, "balloon run layout");
#define BALLOON_MAX_RUNS (1u << 22)

struct runs {
	struct balloon_run *r;
	size_t n, cap;
	uint32_t state;
};

static int add_run(void *opaque, uint64_t gpa, uint64_t len)
{
	struct runs *rs = opaque;

	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 256;
		struct balloon_run *r = cap <= BALLOON_MAX_RUNS ?
					realloc(rs->r, cap * sizeof(*r)) : NULL;

		if (!r)
			return -ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[rs->n++] = (struct balloon_run){ .gpa = gpa, .len = len, .state = rs->state };
	return 0;
}

static int balloon_save(struct virtio_dev *vdev, const struct dev_state_out *out)
{
	struct balloon *b = to_balloon(vdev);
	struct balloon_state st = {
		.num_pages = ld32(&b->num_pages), .actual = ld32(&b->actual),
		.cmd_id = ld32(&b->cmd_id), .poison_val = ld32(&b->poison_val),
	};
	struct runs rs = { 0 };
	int ret = 0;

	pthread_mutex_lock(&b->hlock);
	st.next_cmd_id = b->next_cmd_id;
	st.hint_active = b->hint_active;
	for (int s = MM_PAGE_BALLOONED; !ret && s < MM_PAGE_NR_STATES; s++) {
		rs.state = (uint32_t)s;
		ret = mm_pagestate_for_each_run(b->ps, s, add_run, &rs);
	}
	pthread_mutex_unlock(&b->hlock);
	if (!ret)
		ret = dev_put(out, "balloon", &st, sizeof(st));
	if (!ret)
		ret = dev_put(out, "balloon-pages", rs.r, rs.n * sizeof(rs.r[0]));
	free(rs.r);
	return ret;
}

static int balloon_load(struct virtio_dev *vdev, const struct dev_state_in *in)
{
	struct balloon *b = to_balloon(vdev);
	const struct balloon_run *r;
	struct balloon_state st;
	const void *p;
	size_t len, n;
	int ret;

	ret = dev_get(in, "balloon", &st, sizeof(st));
	if (!ret)
		ret = in->get_var(in->opaque, "balloon-pages", &p, &len,
				  (size_t)BALLOON_MAX_RUNS * sizeof(*r));
	if (ret)
		return ret;
	if (len % sizeof(*r) || (uint64_t)st.actual > b->m->ram_size / PAGE ||
	    (st.next_cmd_id < VIRTIO_BALLOON_CMD_ID_MIN)) {
		pr_err("state: virtio-balloon: inconsistent balloon state");
		return -EINVAL;
	}
	r = p;
	n = len / sizeof(*r);
	for (size_t i = 0; i < n; i++)
		if (r[i].state < MM_PAGE_BALLOONED || r[i].state >= MM_PAGE_NR_STATES ||
		    !r[i].len || (r[i].gpa | r[i].len) & (PAGE - 1) ||
		    !mm_range_is_ram(b->m, r[i].gpa, r[i].len)) {
			pr_err("state: virtio-balloon: page run %zu (%#" PRIx64 ", %#" PRIx64
			       ", state %u) is not guest RAM", i, r[i].gpa, r[i].len, r[i].state);
			return -EINVAL;
		}
	for (size_t i = 0; i < n; i++) {
		ret = mm_pagestate_set(b->ps, r[i].gpa, r[i].len, (enum mm_page_state)r[i].state);
		if (ret)
			return ret;
	}
	st32(&b->num_pages, st.num_pages);
	st32(&b->actual, st.actual);
	st32(&b->cmd_id, st.cmd_id);
	st32(&b->poison_val, st.poison_val);
	pthread_mutex_lock(&b->hlock);
	b->next_cmd_id = st.next_cmd_id;
	b->hint_active = st.hint_active;
	pthread_mutex_unlock(&b->hlock);
	map_queues(b);
	return 0;
}

static const struct virtio_dev_ops balloon_ops = {
	.name = "virtio-balloon",
	.device_id = VIRTIO_ID_BALLOON,
	.pci_class = VIRTIO_BALLOON_PCI_CLASS,
	.queue_max_size = VIRTIO_BALLOON_QUEUE_SIZE,
	.config_size = VIRTIO_BALLOON_CONFIG_SIZE,
	.num_queues = balloon_num_queues,
	.features = balloon_features,
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.activate = balloon_activate,
	.reset = balloon_reset,
	.queue_notify = balloon_queue_notify,
	.fd_ready = balloon_fd_ready,
	.drain = balloon_drain,
	.save = balloon_save,
	.load = balloon_load,
};

/* ---- create / destroy ---- */

int virtio_balloon_create(const struct dev_env *env, struct guest_mem *m,
			  const struct balloon_options *o, struct virtio_dev **out)
{
	struct balloon *b;
	int r;

	if (!m || !env || env->mem != m)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->m = m;
	b->opt = *o;
	if (b->opt.stats_period)
		b->opt.stats = 1;
	b->req_fd = b->timer_fd = -1;
	b->next_cmd_id = VIRTIO_BALLOON_CMD_ID_MIN;
	for (int i = 0; i < BALLOON_Q_NR; i++)
		b->qidx[i] = -1;
	pthread_mutex_init(&b->hlock, NULL);
	pthread_mutex_init(&b->slock, NULL);
	r = -ENOMEM;
	b->scratch = malloc(STATS_BUF_MAX > PFN_CHUNK ? STATS_BUF_MAX : PFN_CHUNK);
	if (!b->scratch)
		goto err_free;
	r = -EINVAL;
	b->ps = mm_pagestate(m);	/* the VM's: the balloon only moves pages in it */
	if (!b->ps)
		goto err_free;
	r = virtio_dev_init(&b->vdev, &balloon_ops, env, b);
	if (r)
		goto err_free;
	b->req_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->req_fd < 0) {
		r = -errno;
		goto err_fds;
	}
	r = virtio_dev_watch(&b->vdev, b->req_fd, EPOLLIN, EV_REQ);
	if (!r && b->opt.stats_period) {
		struct itimerspec its = {
			.it_interval.tv_sec = b->opt.stats_period,
			.it_value.tv_sec = b->opt.stats_period,
		};

		b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (b->timer_fd < 0 || timerfd_settime(b->timer_fd, 0, &its, NULL) < 0)
			r = -errno;
		else
			r = virtio_dev_watch(&b->vdev, b->timer_fd, EPOLLIN, EV_TIMER);
	}
	if (r)
		goto err_fds;
	*out = &b->vdev;
	return 0;

err_fds:
	if (b->timer_fd >= 0)
		close(b->timer_fd);
	virtio_dev_exit(&b->vdev);
	if (b->req_fd >= 0)
		close(b->req_fd);
err_free:
	free(b->scratch);
	pthread_mutex_destroy(&b->slock);
	pthread_mutex_destroy(&b->hlock);
	free(b);
	return r;
}

void virtio_balloon_destroy(struct virtio_dev *vdev)
{
	struct balloon *b;

	if (!vdev)
		return;
	b = to_balloon(vdev);
	virtio_dev_exit(vdev);	/* stops the worker */
	balloon_reset(vdev);
	if (b->timer_fd >= 0)
		close(b->timer_fd);
	close(b->req_fd);
	free(b->scratch);
	pthread_mutex_destroy(&b->slock);
	pthread_mutex_destroy(&b->hlock);
	free(b);
}

/* ---- the VMM's side ---- */

int virtio_balloon_set_target(struct virtio_dev *vdev, uint64_t bytes)
{
	struct balloon *b = to_balloon(vdev);
	uint64_t pages = bytes >> VIRTIO_BALLOON_PFN_SHIFT;

	if (bytes > b->m->ram_size || pages > UINT32_MAX)
		return -ERANGE;
	st32(&b->num_pages, (uint32_t)pages);
	config_changed(b);
	return 0;
}

void virtio_balloon_get(struct virtio_dev *vdev, uint64_t *actual_bytes, uint64_t *target_bytes)
{
	struct balloon *b = to_balloon(vdev);

	if (actual_bytes)
		*actual_bytes = (uint64_t)ld32(&b->actual) << VIRTIO_BALLOON_PFN_SHIFT;
	if (target_bytes)
		*target_bytes = (uint64_t)ld32(&b->num_pages) << VIRTIO_BALLOON_PFN_SHIFT;
}

int virtio_balloon_stats(struct virtio_dev *vdev, struct balloon_stats *out)
{
	struct balloon *b = to_balloon(vdev);

	if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_STATS_VQ))
		return -ENODEV;
	pthread_mutex_lock(&b->slock);
	*out = b->stats;
	pthread_mutex_unlock(&b->slock);
	return 0;
}

int virtio_balloon_request_stats(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);
	uint64_t one = 1;

	if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_STATS_VQ) ||
	    !virtio_dev_running(vdev))
		return -ENODEV;
	__atomic_fetch_or(&b->req, REQ_STATS, __ATOMIC_ACQ_REL);
	if (write(b->req_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

uint32_t virtio_balloon_start_hinting(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);
	uint32_t id;

	if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT))
		return 0;
	pthread_mutex_lock(&b->hlock);
	/* Hints of an earlier round are stale: the guest has had its pages back since. */
	mm_pagestate_for_each_run(b->ps, MM_PAGE_HINTED, clear_run, b->ps);
	id = b->next_cmd_id++;
	if (b->next_cmd_id < VIRTIO_BALLOON_CMD_ID_MIN)
		b->next_cmd_id = VIRTIO_BALLOON_CMD_ID_MIN;
	b->hint_active = 0;
	st32(&b->cmd_id, id);
	pthread_mutex_unlock(&b->hlock);
	config_changed(b);
	return id;
}

static void set_cmd_id(struct balloon *b, uint32_t id, int clear)
{
	pthread_mutex_lock(&b->hlock);
	if (clear)
		mm_pagestate_for_each_run(b->ps, MM_PAGE_HINTED, clear_run, b->ps);
	st32(&b->cmd_id, id);
	pthread_mutex_unlock(&b->hlock);
	config_changed(b);
}

void virtio_balloon_stop_hinting(struct virtio_dev *vdev)
{
	if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT))
		set_cmd_id(to_balloon(vdev), VIRTIO_BALLOON_CMD_ID_STOP, 0);
}

void virtio_balloon_hinting_done(struct virtio_dev *vdev)
{
	if (virtio_has_feature(vdev, VIRTIO_BALLOON_F_FREE_PAGE_HINT))
		set_cmd_id(to_balloon(vdev), VIRTIO_BALLOON_CMD_ID_DONE, 1);
}

int virtio_balloon_hinted_ranges(struct virtio_dev *vdev,
				 int (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque)
{
	return mm_pagestate_for_each_run(to_balloon(vdev)->ps, MM_PAGE_HINTED, fn, opaque);
}

struct mm_pagestate *virtio_balloon_pagestate(struct virtio_dev *vdev)
{
	return to_balloon(vdev)->ps;
}

void virtio_balloon_counters(struct virtio_dev *vdev, struct balloon_counters *out)
{
	const struct balloon_counters *c = &to_balloon(vdev)->ctr;

	out->inflated = __atomic_load_n(&c->inflated, __ATOMIC_RELAXED);
	out->deflated = __atomic_load_n(&c->deflated, __ATOMIC_RELAXED);
	out->bad_pfn = __atomic_load_n(&c->bad_pfn, __ATOMIC_RELAXED);
	out->duplicate = __atomic_load_n(&c->duplicate, __ATOMIC_RELAXED);
	out->past_target = __atomic_load_n(&c->past_target, __ATOMIC_RELAXED);
	out->not_ballooned = __atomic_load_n(&c->not_ballooned, __ATOMIC_RELAXED);
	out->reported_bytes = __atomic_load_n(&c->reported_bytes, __ATOMIC_RELAXED);
	out->hinted_bytes = __atomic_load_n(&c->hinted_bytes, __ATOMIC_RELAXED);
	out->release_errors = __atomic_load_n(&c->release_errors, __ATOMIC_RELAXED);
}

int virtio_balloon_queue(struct virtio_dev *vdev, enum balloon_queue role)
{
	struct balloon *b = to_balloon(vdev);

	if ((unsigned int)role >= BALLOON_Q_NR)
		return -1;
	if (!virtio_dev_running(vdev))
		map_queues(b);	/* before activation: what the current features would give */
	return b->qidx[role];
}
