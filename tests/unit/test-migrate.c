/*
 * Live migration without KVM (migrate/migration.c): a source and a destination guest_mem joined
 * by a socketpair, the VM's ops played by the test. A writer thread dirties the source's memory
 * as fast as it can (marking what it writes, as KVM's log would) until the source stops; the
 * destination's memory must then equal the source's, byte for byte -- pre-copy, and post-copy
 * with the destination's memory pulled through userfaultfd. Refusals: another machine, a
 * cancelled migration, a destination that dies.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/migration.h"
#include "migrate/stream.h"
#include "mm/dirty.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "tests/harness.h"
#include "vmm/log.h"

#define MEM (32ULL << 20)
#define PAGE MM_PAGE_SIZE

struct src_vm {
	struct guest_mem m;
	int stop;		/* atomic: the writer stops (the "vCPUs" are paused) */
	int stopped, resumed;
	uint64_t writes;
	pthread_t writer;
	int cancel;
};

static int s_dirty_start(void *o)
{
	return mm_dirty_start(&((struct src_vm *)o)->m);
}

static int s_dirty_sync(void *o)
{
	return 0;	/* the writer marks its pages itself */
}

static void s_dirty_stop(void *o)
{
	mm_dirty_stop(&((struct src_vm *)o)->m);
}

static int s_stop(void *o)
{
	struct src_vm *v = o;

	__atomic_store_n(&v->stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(v->writer, NULL);
	v->stopped = 1;
	return 0;
}

static int s_state(void *o, void **blob, size_t *size)
{
	*blob = strdup("kumo-test-state");
	*size = 16;
	return *blob ? 0 : -ENOMEM;
}

static void s_resume(void *o)
{
	((struct src_vm *)o)->resumed = 1;
}

static const struct mig_source_ops sops = {
	.dirty_start = s_dirty_start, .dirty_sync = s_dirty_sync, .dirty_stop = s_dirty_stop,
	.stop = s_stop, .state = s_state, .resume = s_resume,
};

/* Writes a counter into pages spread over the first half of RAM, as fast as it can. */
static void *writer(void *arg)
{
	struct src_vm *v = arg;
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	while (!__atomic_load_n(&v->stop, __ATOMIC_SEQ_CST)) {
		uint64_t gpa = ((x >> 17) % (MEM / 2 / PAGE)) * PAGE + (x & 0xff8);

		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		if (!mm_write(&v->m, gpa, &x, sizeof(x)))	/* mm_write marks the page */
			v->writes++;
	}
	return NULL;
}

struct dst_vm {
	struct guest_mem m;
	struct mig_lazy *lazy;
	int loaded, started;
	char state[32];
	int postcopy_fail_load;
};

static int d_load(void *o, const void *blob, size_t size)
{
	struct dst_vm *d = o;

	if (d->postcopy_fail_load)
		return -EINVAL;
	memcpy(d->state, blob, size < sizeof(d->state) ? size : sizeof(d->state) - 1);
	d->loaded = 1;
	return 0;
}

static int d_lazy(void *o, const struct mig_page_source *src)
{
	struct dst_vm *d = o;
	struct mig_lazy_params p = { .prefetch = 4 };

	return mig_lazy_start(&d->m, src, &p, &d->lazy);
}

static int d_start(void *o)
{
	((struct dst_vm *)o)->started = 1;
	return 0;
}

static const struct mig_dest_ops dops = { .load = d_load, .lazy = d_lazy, .start = d_start };

struct dst_run {
	struct dst_vm *d;
	int fd, ret;
	uint32_t vcpus;
	struct mig_remote *remote;
	char err[256];
};

static void *dest_thread(void *arg)
{
	struct dst_run *r = arg;

	r->ret = mig_dest_run(&r->d->m, r->vcpus, r->fd, &dops, r->d, &r->remote, r->err,
			      sizeof(r->err));
	if (!r->ret && r->remote) {
		/* Post-copy: wait for all the memory, then let the source go. */
		int ok = mig_lazy_wait(r->d->lazy, 30000) == 0;

		mig_dest_finish(r->remote, ok);
	} else if (r->remote) {
		mig_lazy_stop(r->d->lazy);
		r->d->lazy = NULL;
		mig_dest_finish(r->remote, 0);
	}
	return NULL;
}

static void fill(struct guest_mem *m)
{
	/* Data in some pages, zeros written in others, the rest never touched. */
	for (uint64_t gpa = 0; gpa < MEM; gpa += 3 * PAGE) {
		uint64_t v = gpa * 2654435761ULL + 1;

		mm_write(m, gpa, &v, sizeof(v));
	}
	mm_zero(m, MEM - 64 * PAGE, 16 * PAGE);
}

/* The pages fill() leaves holding something other than zeros. */
static uint64_t data_pages(void)
{
	uint64_t n = 0;

	for (uint64_t pg = 0; pg < MEM / PAGE; pg += 3)
		n += pg < MEM / PAGE - 64 || pg >= MEM / PAGE - 48;
	return n;
}

static int same_memory(const struct guest_mem *a, const struct guest_mem *b)
{
	return !memcmp(mm_gpa_to_hva(a, 0, MEM), mm_gpa_to_hva(b, 0, MEM), MEM);
}

/* One migration with a writer on the source; returns the source's result. */
static int migrate(const struct mig_params *p, int postcopy_fail_load, struct mig_progress *res,
		   struct dst_vm *d, struct src_vm *v, int *dest_ret, int idle)
{
	struct dst_run dr = { .d = d, .vcpus = 2 };
	pthread_t t;
	char err[256];
	int sv[2], ret;

	memset(v, 0, sizeof(*v));
	memset(d, 0, sizeof(*d));
	if (mm_init(&v->m, MEM) || mm_init(&d->m, MEM) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -1;
	d->postcopy_fail_load = postcopy_fail_load;
	fill(&v->m);
	if (idle)
		v->stop = 1;
	pthread_create(&v->writer, NULL, writer, v);
	dr.fd = sv[1];
	pthread_create(&t, NULL, dest_thread, &dr);
	ret = mig_source_run(&v->m, 2, sv[0], &sops, v, p, res, err, sizeof(err));
	if (!v->stopped) {
		__atomic_store_n(&v->stop, 1, __ATOMIC_SEQ_CST);
		pthread_join(v->writer, NULL);
	}
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	*dest_ret = dr.ret;
	return ret;
}

static void done(struct src_vm *v, struct dst_vm *d)
{
	mig_lazy_stop(d->lazy);
	mm_free(&v->m);
	mm_free(&d->m);
}

static void test_precopy_converges(void)
{
	struct mig_params p = { .downtime_ns = 50000000, .max_rounds = 30 };
	struct mig_progress res;
	struct src_vm v;
	struct dst_vm d;
	int dret;

	CHECK_EQ(migrate(&p, 0, &res, &d, &v, &dret, 0), 0);
	CHECK_EQ(dret, 0);
	CHECK(v.writes > 0 && v.stopped && !v.resumed);
	CHECK(d.loaded && d.started && !strcmp(d.state, "kumo-test-state"));
	CHECK(same_memory(&v.m, &d.m));	/* nothing the writer did was missed */
	done(&v, &d);
	/* Idle: only pages that hold data go (a third of RAM here), once. */
	CHECK_EQ(migrate(&p, 0, &res, &d, &v, &dret, 1), 0);
	CHECK(same_memory(&v.m, &d.m));
	CHECK_EQ(res.pages_sent, data_pages());
	done(&v, &d);
}

static void test_postcopy(void)
{
	struct mig_params p = { .downtime_ns = 0, .max_rounds = 30, .postcopy = 2 };
	struct mig_params now = { .downtime_ns = 0, .max_rounds = 30, .postcopy_now = 1 };
	struct mig_progress res;
	struct src_vm v;
	struct dst_vm d;
	int dret;

	CHECK_EQ(migrate(&p, 0, &res, &d, &v, &dret, 0), 0);
	CHECK_EQ(dret, 0);
	/* A round that found nothing dirty may end in stop-and-copy: nothing left to pull. */
	CHECK(d.lazy ? mig_lazy_wait(d.lazy, 0) == 0 && res.postcopy_reads > 0 :
		       res.postcopy_reads == 0);
	CHECK(same_memory(&v.m, &d.m));
	done(&v, &d);
	/* Straight to post-copy: every page comes on demand or in the background. */
	CHECK_EQ(migrate(&now, 0, &res, &d, &v, &dret, 0), 0);
	CHECK_EQ(dret, 0);
	CHECK(same_memory(&v.m, &d.m));
	CHECK(res.pages_sent == 0 && res.postcopy_reads > 0);
	done(&v, &d);
}

static void test_refusals(void)
{
	struct mig_params p = { .downtime_ns = 0, .max_rounds = 3 };
	struct mig_progress res;
	struct src_vm v;
	struct dst_vm d;
	int dret, cancel = 1;

	/* The destination cannot load the state: the source resumes. */
	CHECK(migrate(&p, 1, &res, &d, &v, &dret, 0) < 0);
	CHECK(dret < 0 && v.stopped && v.resumed);
	done(&v, &d);
	/* Cancelled before it starts sending pages. */
	p.cancel = &cancel;
	CHECK_EQ(migrate(&p, 0, &res, &d, &v, &dret, 0), -ECANCELED);
	CHECK(dret < 0 && !d.started);
	done(&v, &d);
}

/* A destination with other RAM or vCPUs refuses at the hello; nothing else is sent. */
static void test_other_machine(void)
{
	struct guest_mem m;
	struct mig_hello hi;
	char err[256];

	CHECK_EQ(mm_init(&m, MEM), 0);
	mig_hello_make(&hi, &m, 2);
	CHECK_EQ(mig_hello_check(&hi, &m, 2, err, sizeof(err)), 0);
	CHECK_EQ(mig_hello_check(&hi, &m, 4, err, sizeof(err)), -EPROTO);
	hi.ram_size += PAGE;
	CHECK_EQ(mig_hello_check(&hi, &m, 2, err, sizeof(err)), -EPROTO);
	hi.ram_size -= PAGE;
	hi.version = 2;
	CHECK_EQ(mig_hello_check(&hi, &m, 2, err, sizeof(err)), -EPROTO);
	mm_free(&m);
}

/* Chunks: a flipped bit anywhere is caught; page chunks outside RAM are refused. */
static void test_chunks(void)
{
	uint8_t buf[sizeof(struct mig_chunk_hdr) + 2 * PAGE];
	struct mig_chunk_hdr h;
	const uint8_t *payload;
	struct guest_mem m;
	char err[256];
	size_t used;

	CHECK_EQ(mm_init(&m, MEM), 0);
	memset(buf + sizeof(h), 0x5a, 2 * PAGE);
	mig_chunk_make(&h, MIG_PAGES, 0x10000, buf + sizeof(h), 2 * PAGE);
	memcpy(buf, &h, sizeof(h));
	CHECK_EQ(mig_chunk_parse(buf, sizeof(buf), &h, &payload, &used, err, sizeof(err)), 1);
	CHECK_EQ(used, sizeof(buf));
	CHECK_EQ(mig_chunk_parse(buf, sizeof(buf) - 1, &h, &payload, &used, err, sizeof(err)), 0);
	for (size_t bit = 0; bit < 8 * sizeof(buf); bit += 997) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		CHECK(mig_chunk_parse(buf, sizeof(buf), &h, &payload, &used, err, sizeof(err)) != 1);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	CHECK_EQ(mig_apply_pages(&m, &h, payload, err, sizeof(err)), 0);
	CHECK_EQ(*(uint8_t *)mm_gpa_to_hva(&m, 0x10000 + PAGE, 1), 0x5a);
	h.arg = MEM - PAGE;	/* the second page would be past RAM */
	CHECK_EQ(mig_apply_pages(&m, &h, payload, err, sizeof(err)), -EPROTO);
	h.arg = 0x10001;
	CHECK_EQ(mig_apply_pages(&m, &h, payload, err, sizeof(err)), -EPROTO);
	mm_free(&m);
}

TEST_MAIN(TEST(test_chunks), TEST(test_other_machine), TEST(test_precopy_converges),
	  TEST(test_postcopy), TEST(test_refusals))
