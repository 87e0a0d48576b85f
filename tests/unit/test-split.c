/*
 * Split migration without KVM (migrate/split.c): a source and a main host's guest_mem joined by
 * a socketpair, two in-process page stores (migrate/memserver.c) standing for the sub-hosts,
 * each reached over its own socketpairs. After the split every page of the main host's memory,
 * read through the lazy page source (userfaultfd), equals the source's; the main host got at
 * most main-mem of data; the sub-hosts hold the rest; with tracking the bytes sent are exactly
 * the data pages (free pages -- holes, punched pages, zero pages -- never sent); without it
 * every page is sent. A sub-host that is full fails the migration with its reason and the
 * source resumes. With replicas=2 every sub-host page is on two sub-hosts (twice the bytes):
 * one sub-host gone, every page still reads back from the other; both gone, the fault fails
 * naming the lost frames and its thread is never given zeros.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/memserver.h"
#include "migrate/migration.h"
#include "migrate/split.h"
#include "migrate/stream.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "tests/harness.h"

#define MEM (16ULL << 20)
#define PAGE MM_PAGE_SIZE
#define NPAGES (MEM / PAGE)

struct src_vm {
	int stopped, resumed;
};

static int s_stop(void *o)
{
	((struct src_vm *)o)->stopped = 1;
	return 0;
}

static int s_state(void *o, void **blob, size_t *size)
{
	*blob = strdup("kumo-split-state");
	*size = 17;
	return *blob ? 0 : -ENOMEM;
}

static void s_resume(void *o)
{
	((struct src_vm *)o)->resumed = 1;
}

static const struct mig_source_ops sops = {
	.stop = s_stop, .state = s_state, .resume = s_resume,
};

struct dst_vm {
	struct guest_mem m;
	struct mig_lazy *lazy;
	int loaded, started;
};

static int d_load(void *o, const void *blob, size_t size)
{
	struct dst_vm *d = o;

	d->loaded = size == 17 && !memcmp(blob, "kumo-split-state", 17);
	return d->loaded ? 0 : -EINVAL;
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

/* Two page stores; a connection to one is a socketpair with a serving thread. */
struct subs {
	struct memserver *ms[2];
	pthread_t t[16];
	int fds[16], sub[16], nt;	/* each connection's serving end and its sub-host */
};

struct conn {
	struct memserver *ms;
	int fd;
};

static void *serve_thread(void *arg)
{
	struct conn c = *(struct conn *)arg;

	free(arg);
	ms_serve(c.ms, c.fd);
	close(c.fd);
	return NULL;
}

/* addr "sub0" or "sub1": the client's end of a new connection. */
static int sub_connect(void *opaque, const char *addr, char *err, size_t errlen)
{
	struct subs *s = opaque;
	struct conn *c;
	int sv[2], i = addr[3] - '0';

	if (strncmp(addr, "sub", 3) || i < 0 || i > 1 || s->nt == 16) {
		snprintf(err, errlen, "no such sub-host %s", addr);
		return -ENOENT;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) || !(c = malloc(sizeof(*c))))
		return -errno;
	*c = (struct conn){ .ms = s->ms[i], .fd = sv[1] };
	s->fds[s->nt] = sv[1];
	s->sub[s->nt] = i;
	if (pthread_create(&s->t[s->nt], NULL, serve_thread, c)) {
		free(c);
		return -EAGAIN;
	}
	s->nt++;
	return sv[0];
}

static void subs_end(struct subs *s)
{
	for (int i = 0; i < s->nt; i++)
		pthread_join(s->t[i], NULL);
	ms_destroy(s->ms[0]);
	ms_destroy(s->ms[1]);
}

struct dst_run {
	struct dst_vm *d;
	struct subs *subs;
	int fd, ret, peek;
	struct mig_split_dest *sd;
	char err[256];
};

static void *dest_thread(void *arg)
{
	struct dst_run *r = arg;

	r->peek = mig_split_peek(r->fd);
	r->ret = mig_split_dest_run(&r->d->m, 1, r->fd, &dops, r->d, sub_connect, r->subs,
				    &r->sd, r->err, sizeof(r->err));
	return NULL;
}

/*
 * Data in 1 page of 3 over the first half, a zero page written every 7th, 64 pages punched
 * out again (as the balloon does), the rest never touched. The number of data pages.
 */
static uint64_t fill(struct guest_mem *m)
{
	uint64_t n = 0;

	for (uint64_t pg = 0; pg < NPAGES / 2; pg++) {
		uint64_t x = pg * 0x9e3779b97f4a7c15ULL + 1;

		int ret = pg % 3 == 0 ? mm_write(m, pg * PAGE + (pg % 512) * 8, &x, sizeof(x)) :
			  pg % 7 == 0 ? mm_zero(m, pg * PAGE, PAGE) : 0;

		if (ret)
			return 0;
	}
	if (mm_release_range(m, 300 * PAGE, 64 * PAGE))
		return 0;
	for (uint64_t pg = 0; pg < NPAGES / 2; pg++)
		if (pg % 3 == 0 && (pg < 300 || pg >= 364))
			n++;
	return n;
}

struct split_case {
	int tracking;
	uint64_t main_pages;
	uint64_t sub_limit;	/* bytes per sub-host */
	int lose;		/* a sub-host loses a page before the main host reads it */
	unsigned int replicas;
	int kill;		/* sub-host 0 goes away after the split, then sub-host 1 */
	int kill_bulk;		/* the main host's bulk channels close after the split */
};

/*
 * Sub-host i goes away: every connection to it is shut down (its serving thread ends). Only
 * for connections whose client has not closed them (their fd would be closed already).
 */
static void kill_sub(struct subs *s, int i)
{
	for (int k = 0; k < s->nt; k++)
		if (s->sub[k] == i && s->fds[k] >= 0) {
			shutdown(s->fds[k], SHUT_RDWR);
			s->fds[k] = -1;
		}
}

static int reader_done;	/* atomic */

#define LOST_GPA ((NPAGES / 2 - 2) * PAGE)	/* data (pg % 3 == 0) past the main share */

static void *reader(void *arg)
{
	volatile uint8_t *p = arg;

	(void)*p;	/* blocks on the userfaultfd until the lazy memory is stopped */
	__atomic_store_n(&reader_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* A sub-host's page gone: the main host's fault on it fails naming it, never zeros. */
static void lose_a_page(struct dst_vm *d, struct subs *subs, struct mig_split_dest *sd,
			const struct mig_split_result *res)
{
	struct mig_split_counts c;
	struct ms_client *cl;
	uint64_t gpa = LOST_GPA;
	pthread_t t;
	char err[256];
	int fd = sub_connect(subs, "sub0", err, sizeof(err));

	CHECK(fd >= 0);
	CHECK_EQ(ms_client_open(fd, 42, &cl, err, sizeof(err)), 0);
	/* Whichever sub-host holds it: drop it from both. */
	CHECK_EQ(ms_drop(cl, gpa, PAGE), 0);
	CHECK_EQ(ms_sync(cl, err, sizeof(err)), 0);
	ms_client_close(cl);
	fd = sub_connect(subs, "sub1", err, sizeof(err));
	CHECK(fd >= 0);
	CHECK_EQ(ms_client_open(fd, 42, &cl, err, sizeof(err)), 0);
	CHECK_EQ(ms_drop(cl, gpa, PAGE), 0);
	CHECK_EQ(ms_sync(cl, err, sizeof(err)), 0);
	ms_client_close(cl);
	CHECK(res->c.pages_sub[0] + res->c.pages_sub[1] > 0);
	CHECK_EQ(pthread_create(&t, NULL, reader, mm_gpa_to_hva(&d->m, gpa, PAGE)), 0);
	CHECK_EQ(mig_lazy_wait(d->lazy, 10000), -ENOENT);
	mig_split_dest_counts(sd, &c);
	CHECK_EQ(c.errors, 1);
	usleep(100000);
	CHECK(!__atomic_load_n(&reader_done, __ATOMIC_SEQ_CST));	/* never given zeros */
	mig_lazy_stop(d->lazy);	/* lets the reader through (the VMM stops the VM first) */
	d->lazy = NULL;
	pthread_join(t, NULL);
}

/* The other sub-host gone too: a fault on a page both held fails naming it, never zeros. */
static void lose_both(struct dst_vm *d, struct subs *subs, struct mig_split_dest *sd)
{
	struct mig_split_counts c;
	pthread_t t;
	int ret;

	kill_sub(subs, 1);
	__atomic_store_n(&reader_done, 0, __ATOMIC_SEQ_CST);
	CHECK_EQ(pthread_create(&t, NULL, reader, mm_gpa_to_hva(&d->m, LOST_GPA, PAGE)), 0);
	ret = mig_lazy_wait(d->lazy, 10000);
	CHECK(ret < 0 && ret != -ETIMEDOUT);
	mig_split_dest_counts(sd, &c);
	CHECK_EQ(c.errors, 1);
	CHECK_EQ(c.subs_gone, 2);
	usleep(100000);
	CHECK(!__atomic_load_n(&reader_done, __ATOMIC_SEQ_CST));	/* never given zeros */
	mig_lazy_stop(d->lazy);
	d->lazy = NULL;
	pthread_join(t, NULL);
}

static void run_split(const struct split_case *sc, struct mig_split_result *res, int *ret,
		      uint64_t *data_pages, struct src_vm *v)
{
	struct guest_mem src;
	struct dst_vm d = { 0 };
	struct subs subs = { 0 };
	struct dst_run r = { .d = &d, .subs = &subs };
	struct mig_split_params p = { .main_mem = sc->main_pages * PAGE, .tracking = sc->tracking,
				      .nr_subs = 2, .sub_addr = { "sub0", "sub1" }, .vm_id = 42,
				      .replicas = sc->replicas };
	struct mig_split_counts c;
	struct ms_stats st[2];
	pthread_t t;
	char err[256] = "";
	int sv[2];

	*ret = -1;
	CHECK_EQ(mm_init(&src, MEM), 0);
	CHECK_EQ(mm_init(&d.m, MEM), 0);
	*data_pages = fill(&src);
	CHECK(*data_pages > 0);
	CHECK_EQ(ms_create(sc->sub_limit, &subs.ms[0]), 0);
	CHECK_EQ(ms_create(sc->sub_limit, &subs.ms[1]), 0);
	for (int i = 0; i < 2; i++) {
		int fd = sub_connect(&subs, p.sub_addr[i], err, sizeof(err));

		CHECK(fd >= 0);
		CHECK_EQ(ms_client_open(fd, p.vm_id, &p.sub[i], err, sizeof(err)), 0);
	}
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	r.fd = sv[1];
	CHECK_EQ(pthread_create(&t, NULL, dest_thread, &r), 0);
	*ret = mig_split_source_run(&src, 1, sv[0], &sops, v, &p, res, err, sizeof(err));
	if (*ret)
		fprintf(stderr, "  source: %s\n", err);
	close(sv[0]);
	pthread_join(t, NULL);
	close(sv[1]);
	if (!*ret) {
		CHECK_EQ(r.peek, 1);
		CHECK_EQ(r.ret, 0);
		CHECK(d.loaded && d.started);
		CHECK(r.sd != NULL);
		mig_split_dest_counts(r.sd, &c);
		/* The main host's map agrees with the source's. */
		CHECK_EQ(c.pages_main, res->c.pages_main);
		CHECK_EQ(c.pages_sub[0], res->c.pages_sub[0]);
		CHECK_EQ(c.pages_sub[1], res->c.pages_sub[1]);
		CHECK_EQ(c.pages_free, res->c.pages_free);
		ms_stats(subs.ms[0], &st[0]);
		ms_stats(subs.ms[1], &st[1]);
		CHECK_EQ(st[0].pages, res->c.pages_sub[0]);
		CHECK_EQ(st[1].pages, res->c.pages_sub[1]);
		if (sc->lose) {
			lose_a_page(&d, &subs, r.sd, res);
			goto out;
		}
		if (sc->kill)
			kill_sub(&subs, 0);
		if (sc->kill_bulk) {
			/* Connections: the source's 0 and 1, then the main host's urgent and bulk
			 * channel to sub0 (2, 3) and to sub1 (4, 5). */
			CHECK_EQ(subs.nt, 6);
			CHECK(subs.sub[3] == 0 && subs.sub[5] == 1);
			shutdown(subs.fds[3], SHUT_RDWR);
			shutdown(subs.fds[5], SHUT_RDWR);
			subs.fds[3] = subs.fds[5] = -1;
		}
		/* Every page, through the lazy page source, equals the source's. */
		for (uint64_t gpa = 0; gpa < MEM; gpa += PAGE) {
			const uint8_t *a = mm_gpa_to_hva(&src, gpa, PAGE);
			const uint8_t *b;

			if (sc->kill && gpa >= LOST_GPA - 8 * PAGE && gpa <= LOST_GPA + 8 * PAGE)
				continue;	/* for both gone, below (prefetch reaches 4 on) */
			b = mm_gpa_to_hva(&d.m, gpa, PAGE);

			if (memcmp(a, b, PAGE)) {
				fprintf(stderr, "  page %#llx differs\n", (unsigned long long)gpa);
				CHECK(0);
			}
		}
		mig_split_dest_counts(r.sd, &c);
		CHECK_EQ(c.errors, 0);
		if (sc->kill) {
			/* Sub-host 0 gone: its pages came from their copies on sub-host 1. */
			CHECK_EQ(c.subs_gone, 1);
			CHECK(c.pages_in_replica > 0);
			CHECK(c.pages_remote > 0 && c.pages_remote < 20);	/* the window left */
			lose_both(&d, &subs, r.sd);
			goto out;
		}
		CHECK_EQ(c.pages_sub[0] + c.pages_sub[1], 0);	/* all paged in now */
		CHECK_EQ(c.pages_remote, 0);
		CHECK_EQ(c.pages_in, res->c.pages_remote);
		CHECK_EQ(c.pages_in_replica, 0);
		if (sc->kill_bulk) {
			/* Every page still came, on the urgent channels, one fault each. */
			CHECK_EQ(c.bulk_gone, 2);
			CHECK_EQ(c.subs_gone, 0);
			CHECK(c.pages_in_bulk < 64);	/* at most before the first failure */
		} else if (!sc->tracking) {
			/* A fault's own page on the urgent channel, its neighbours (every page is
			 * data here; with tracking none has a data neighbour) on the bulk one. */
			CHECK(c.pages_in_bulk > 0 && c.pages_in_bulk < c.pages_in);
			CHECK_EQ(c.bulk_gone, 0);
		}
		{
			struct mig_lazy_stats ls;

			mig_lazy_stats(d.lazy, &ls);
			CHECK_EQ(ls.pages_background, 0);	/* on demand only */
			/* The serving thread may still be placing the last fault's neighbours
			 * (fetched, counted by split.c, not yet by lazy.c): at most a prefetch. */
			CHECK(sc->kill_bulk || (ls.pages_ahead <= c.pages_in_bulk &&
						c.pages_in_bulk - ls.pages_ahead <= 4));
			CHECK(sc->kill_bulk || ls.ahead_failed == 0);
			CHECK(!sc->kill_bulk || ls.ahead_failed > 0);
			CHECK_EQ(ls.errors, 0);
			/* Free pages: zero pages, no network (a fault can be answered by a
			 * neighbour's copy, so at most one per free page). */
			CHECK(ls.pages_zero <= res->c.pages_free);
			CHECK(!sc->tracking || ls.pages_zero > res->c.pages_free / 2);
			/* The fault-latency histogram (split-stats) holds every fault. */
			{
				uint64_t sum = 0;

				for (int i = 0; i < MIG_LAZY_HIST; i++)
					sum += ls.latency_hist[i];
				CHECK_EQ(sum, ls.faults);
				CHECK(ls.faults > 0);
				CHECK(mig_lazy_latency_median_ns(&ls) > 0);
				CHECK(mig_lazy_latency_median_ns(&ls) <=
				      mig_lazy_latency_quantile_ns(&ls, 990));
				CHECK(mig_lazy_latency_quantile_ns(&ls, 990) <= ls.latency_max_ns);
			}
		}
	} else {
		CHECK(r.ret != 0);
		fprintf(stderr, "  main host: %s\n", r.err);
	}
out:
	mig_lazy_stop(d.lazy);
	/* The VM gone from the main host, or its split failed: no sub-host keeps its pages. */
	mig_split_dest_forget(r.sd);
	ms_stats(subs.ms[0], &st[0]);
	ms_stats(subs.ms[1], &st[1]);
	CHECK(sc->kill || (st[0].pages == 0 && st[1].pages == 0));	/* killed: unreachable */
	mig_split_dest_free(r.sd);
	ms_client_close(p.sub[0]);
	ms_client_close(p.sub[1]);
	subs_end(&subs);
	mm_free(&src);
	mm_free(&d.m);
}

static void test_split_tracking(void)
{
	const struct split_case sc = { .tracking = 1, .main_pages = 300, .sub_limit = MEM };
	struct mig_split_result res;
	struct src_vm v = { 0 };
	uint64_t data, sent;
	int ret;

	run_split(&sc, &res, &ret, &data, &v);
	CHECK_EQ(ret, 0);
	CHECK(v.stopped && !v.resumed);
	/* The main host's share is full, the rest is on the sub-hosts, round-robin. */
	CHECK_EQ(res.c.pages_main, sc.main_pages);
	CHECK_EQ(res.c.pages_main + res.c.pages_sub[0] + res.c.pages_sub[1], data);
	CHECK(res.c.pages_sub[0] > 0 && res.c.pages_sub[1] > 0);
	CHECK(res.c.pages_sub[0] - res.c.pages_sub[1] + MIG_SPLIT_STRIPE <= 2 * MIG_SPLIT_STRIPE);
	CHECK_EQ(res.c.pages_free, NPAGES - data);
	/* Free pages never sent: the page bytes are exactly the data pages. */
	sent = res.bytes_main + res.bytes_sub;
	CHECK(sent >= data * PAGE);
	CHECK(sent < data * PAGE + 64 * 1024);	/* headers, map, state */
	CHECK(res.bytes_main < sc.main_pages * PAGE + 32 * 1024);	/* main-mem bound */
}

static void test_split_untracked(void)
{
	/* Tracking off: every page goes somewhere (what the figures compare against). */
	const struct split_case sc = { .tracking = 0, .main_pages = 1024, .sub_limit = MEM };
	struct mig_split_result res;
	struct src_vm v = { 0 };
	uint64_t data;
	int ret;

	run_split(&sc, &res, &ret, &data, &v);
	CHECK_EQ(ret, 0);
	CHECK_EQ(res.c.pages_free, 0);
	CHECK_EQ(res.c.pages_main, sc.main_pages);
	CHECK_EQ(res.c.pages_main + res.c.pages_sub[0] + res.c.pages_sub[1], NPAGES);
	CHECK(res.bytes_main + res.bytes_sub >= NPAGES * PAGE);
}

static void test_split_sub_full(void)
{
	/* A sub-host without room: the migration fails naming it, and the source runs on. */
	const struct split_case sc = { .tracking = 1, .main_pages = 100, .sub_limit = 64 * PAGE };
	struct mig_split_result res;
	struct src_vm v = { 0 };
	uint64_t data;
	int ret;

	run_split(&sc, &res, &ret, &data, &v);
	CHECK_EQ(ret, -ENOSPC);
	CHECK(v.stopped && v.resumed);
}

/*
 * Figures for docs/split-migration.md (KUMO_SPLIT_FIGURES=MiB, else skipped): a guest of that
 * size with 2, 12, 25 and 50% of its pages holding data (the rest never touched), split with
 * main-mem = 1/4 of it, tracking on and off; bytes sent and time, in this process over
 * socketpairs (no network, no KVM: the cost of the copying and the protocol alone).
 */
static void test_split_figures(void)
{
	static const unsigned int used_pct[] = { 2, 12, 25, 50 };
	const char *env = getenv("KUMO_SPLIT_FIGURES");
	uint64_t mem = env ? strtoull(env, NULL, 10) << 20 : 0;

	if (!mem)
		SKIP("KUMO_SPLIT_FIGURES=MiB not set");
	printf("used%%,tracking,bytes_main,bytes_sub,bytes_total,ms,pages_main,pages_sub,"
	       "pages_free\n");
	for (size_t u = 0; u < sizeof(used_pct) / sizeof(used_pct[0]); u++)
		for (int tracking = 1; tracking >= 0; tracking--) {
			struct guest_mem src;
			struct dst_vm d = { 0 };
			struct subs subs = { 0 };
			struct dst_run r = { .d = &d, .subs = &subs };
			struct mig_split_params p = { .main_mem = mem / 4, .tracking = tracking,
						      .nr_subs = 2, .sub_addr = { "sub0", "sub1" },
						      .vm_id = 7 };
			struct mig_split_result res;
			struct src_vm v = { 0 };
			uint64_t x = 1;
			pthread_t t;
			char err[256] = "";
			int sv[2], ret;

			CHECK_EQ(mm_init(&src, mem), 0);
			CHECK_EQ(mm_init(&d.m, mem), 0);
			/* used% of the pages hold data, spread evenly; the rest never touched */
			for (uint64_t pg = 0; pg < mem / PAGE; pg++)
				if (pg * used_pct[u] / 100 != (pg + 1) * used_pct[u] / 100) {
					uint64_t *w = mm_gpa_to_hva(&src, pg * PAGE, PAGE);

					for (size_t i = 0; i < PAGE / 8; i++)
						w[i] = x = x * 6364136223846793005ULL + 1;
				}
			CHECK_EQ(ms_create(mem, &subs.ms[0]), 0);
			CHECK_EQ(ms_create(mem, &subs.ms[1]), 0);
			for (int i = 0; i < 2; i++)
				CHECK_EQ(ms_client_open(sub_connect(&subs, p.sub_addr[i], err,
								    sizeof(err)), 7, &p.sub[i],
							err, sizeof(err)), 0);
			CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
			r.fd = sv[1];
			CHECK_EQ(pthread_create(&t, NULL, dest_thread, &r), 0);
			ret = mig_split_source_run(&src, 1, sv[0], &sops, &v, &p, &res, err,
						   sizeof(err));
			close(sv[0]);
			pthread_join(t, NULL);
			close(sv[1]);
			CHECK_EQ(ret, 0);
			CHECK_EQ(r.ret, 0);
			printf("%u,%s,%llu,%llu,%llu,%.1f,%llu,%llu,%llu\n", used_pct[u],
			       tracking ? "on" : "off", (unsigned long long)res.bytes_main,
			       (unsigned long long)res.bytes_sub,
			       (unsigned long long)(res.bytes_main + res.bytes_sub),
			       (double)res.total_ns / 1e6, (unsigned long long)res.c.pages_main,
			       (unsigned long long)(res.c.pages_sub[0] + res.c.pages_sub[1]),
			       (unsigned long long)res.c.pages_free);
			fflush(stdout);
			mig_lazy_stop(d.lazy);
			mig_split_dest_free(r.sd);
			ms_client_close(p.sub[0]);
			ms_client_close(p.sub[1]);
			subs_end(&subs);
			mm_free(&src);
			mm_free(&d.m);
		}
}

static void test_split_replicas(void)
{
	/* replicas=2: each sub-host page on both sub-hosts; one goes, then the other. */
	const struct split_case sc1 = { .tracking = 1, .main_pages = 300, .sub_limit = MEM };
	const struct split_case sc2 = { .tracking = 1, .main_pages = 300, .sub_limit = MEM,
					.replicas = 2, .kill = 1 };
	struct mig_split_result res1, res2;
	struct src_vm v = { 0 };
	uint64_t data, page_bytes;
	int ret;

	run_split(&sc1, &res1, &ret, &data, &v);
	CHECK_EQ(ret, 0);
	memset(&v, 0, sizeof(v));
	run_split(&sc2, &res2, &ret, &data, &v);
	CHECK_EQ(ret, 0);
	CHECK_EQ(res2.c.replicas, 2);
	CHECK_EQ(res2.c.pages_remote, res1.c.pages_remote);
	CHECK_EQ(res2.c.pages_main, res1.c.pages_main);
	/* Two copies of every sub-host page: each sub-host holds all of them. */
	CHECK_EQ(res2.c.pages_sub[0], res2.c.pages_remote);
	CHECK_EQ(res2.c.pages_sub[1], res2.c.pages_remote);
	/* The bytes to the sub-hosts: twice the pages, and twice one copy's bytes (chunk
	 * headers, one SYNC and OPEN each, aside). */
	page_bytes = res1.c.pages_remote * PAGE;
	CHECK(res1.bytes_sub >= page_bytes && res1.bytes_sub < page_bytes + 16 * 1024);
	CHECK(res2.bytes_sub >= 2 * page_bytes && res2.bytes_sub < 2 * page_bytes + 32 * 1024);
	CHECK(res2.bytes_sub - 2 * page_bytes <= 2 * (res1.bytes_sub - page_bytes) + 1024);
	/* Two sub-hosts needed; the parameters say so before anything is sent. */
	{
		struct mig_split_params p = { .nr_subs = 1, .vm_id = 1, .replicas = 2 };
		char err[256] = "";

		CHECK_EQ(mig_split_params_check(&p, err, sizeof(err)), -EINVAL);
		CHECK(strstr(err, "replicas=2 needs at least 2 sub-hosts") != NULL);
		p.replicas = 3;
		p.nr_subs = 2;
		CHECK_EQ(mig_split_params_check(&p, err, sizeof(err)), -EINVAL);
		p.replicas = 2;
		CHECK_EQ(mig_split_params_check(&p, err, sizeof(err)), 0);
	}
}

/* split-stats' median/p99 from lazy.c's log2 histogram: bucket bounds, capped at the max. */
static void test_split_fault_hist(void)
{
	struct mig_lazy_stats st = { 0 };
	uint64_t lo, hi;

	CHECK_EQ(mig_lazy_latency_quantile_ns(&st, 500), 0);	/* no faults */
	mig_lazy_hist_bounds(0, &lo, &hi);
	CHECK(lo == 0 && hi == 1000);
	mig_lazy_hist_bounds(3, &lo, &hi);
	CHECK(lo == 4000 && hi == 8000);
	mig_lazy_hist_bounds(MIG_LAZY_HIST - 1, &lo, &hi);
	CHECK(lo == (1ULL << (MIG_LAZY_HIST - 2)) * 1000 && hi == UINT64_MAX);
	st.latency_hist[3] = 98;	/* 4..8 us */
	st.latency_hist[10] = 2;	/* 512..1024 us */
	st.latency_max_ns = 900000;
	CHECK_EQ(mig_lazy_latency_median_ns(&st), 8000);
	CHECK_EQ(mig_lazy_latency_quantile_ns(&st, 980), 8000);
	CHECK_EQ(mig_lazy_latency_quantile_ns(&st, 990), 900000);	/* the max, not 1024 us */
	CHECK_EQ(mig_lazy_latency_quantile_ns(&st, 1000), 900000);
	st.latency_hist[MIG_LAZY_HIST - 1] = 200;	/* unbounded: its quantiles are the max */
	st.latency_max_ns = 9000000000ULL;
	CHECK_EQ(mig_lazy_latency_median_ns(&st), 9000000000ULL);
	CHECK_EQ(mig_lazy_latency_quantile_ns(&st, 300), 8000);
}

/* A split that succeeds; run_split() checks what happens on the main host after it. */
static void split_succeeds(const struct split_case *sc)
{
	struct mig_split_result res;
	struct src_vm v = { 0 };
	uint64_t data;
	int ret;

	run_split(sc, &res, &ret, &data, &v);
	CHECK_EQ(ret, 0);
}

static void test_split_bulk_gone(void)
{
	/* The bulk channels (neighbours) close: faults still get every page, urgently. */
	const struct split_case sc = { .tracking = 0, .main_pages = 1024, .sub_limit = MEM,
				       .kill_bulk = 1 };

	split_succeeds(&sc);
}

static void test_split_page_lost(void)
{
	const struct split_case sc = { .tracking = 1, .main_pages = 300, .sub_limit = MEM,
				       .lose = 1 };

	split_succeeds(&sc);
}

/* ---- page-out: the main host's resident guest memory stays within main-mem ---- */

#define PO_BUDGET 256			/* main-mem, pages */
#define PO_TOUCH (NPAGES * 3 / 4)	/* pages the writers touch; the rest stay free */
#define PO_THREADS 4
#define PO_PASSES 3
#define PO_HAMMER 16			/* pages written over and over, below PO_TOUCH */

struct po_run {
	struct dst_vm *d;
	uint8_t *expect;		/* every page as last written (or the source's) */
	int full;			/* the failure case: free pages of the upper half only */
	int done;			/* atomic: the writers finished */
	uint64_t mismatches;		/* atomic */
	uint64_t max_counted, max_mincore, samples, quiet;	/* quiet: walks with no page-out */
};

struct po_writer {
	struct po_run *r;
	int t;
};

/* The pages writer t owns, pass by pass: read (must be as last written), then write. */
static void *po_write(void *arg)
{
	struct po_writer *w = arg;
	struct po_run *r = w->r;
	uint64_t lo = r->full ? NPAGES / 2 : 0, hi = r->full ? NPAGES / 2 + 512 : PO_TOUCH - PO_HAMMER;

	for (uint64_t k = 1; k <= PO_PASSES; k++)
		for (uint64_t i = lo; i < hi; i++) {
			uint64_t pg = k % 2 ? i : hi - 1 - (i - lo);	/* odd passes up, even down */
			uint8_t *p = mm_gpa_to_hva(&r->d->m, pg * PAGE, PAGE), *e;
			uint64_t v = pg << 20 | k << 8 | (uint64_t)w->t, off;

			if (pg % PO_THREADS != (uint64_t)w->t)
				continue;
			e = r->expect + pg * PAGE;
			if (memcmp(p, e, PAGE))
				__atomic_add_fetch(&r->mismatches, 1, __ATOMIC_SEQ_CST);
			off = (pg * 40 + k * 8) % (PAGE - 8) & ~7ULL;
			memcpy(p + off, &v, sizeof(v));		/* through the lazy mapping */
			memcpy(e + off, &v, sizeof(v));
			memcpy(p + PAGE - 8, &v, sizeof(v));	/* and the page's last word */
			memcpy(e + PAGE - 8, &v, sizeof(v));
		}
	return NULL;
}

/*
 * Writes PO_HAMMER pages over and over without a pause, reading each value back first: they
 * never fault while resident, so CLOCK sees them as cold and pages them out under the writes
 * (a write to a page being paged out waits on its write protection). A write lost to a
 * page-out would read back as an older value.
 */
static void *po_hammer(void *arg)
{
	struct po_run *r = arg;
	uint64_t last[PO_HAMMER] = { 0 };

	for (uint64_t n = 1; !__atomic_load_n(&r->done, __ATOMIC_SEQ_CST); n++)
		for (int h = 0; h < PO_HAMMER; h++) {
			uint64_t pg = PO_TOUCH - PO_HAMMER + (uint64_t)h;
			volatile uint64_t *p = (volatile uint64_t *)mm_gpa_to_hva(&r->d->m,
								pg * PAGE + 16, 8);

			if (*p != last[h])
				__atomic_add_fetch(&r->mismatches, 1, __ATOMIC_SEQ_CST);
			*p = n;
			last[h] = n;
			memcpy(r->expect + pg * PAGE + 16, &n, sizeof(n));
		}
	return NULL;
}

/* The kernel's view: pages of the main host's guest RAM in memory. */
static uint64_t po_mincore(struct guest_mem *m)
{
	static unsigned char vec[NPAGES];
	uint64_t n = 0;

	if (mincore(mm_gpa_to_hva(m, 0, MEM), MEM, vec))
		return 0;
	for (uint64_t i = 0; i < NPAGES; i++)
		n += vec[i] & 1;
	return n;
}

/* Samples the resident count (lazy.c's and the kernel's) while the writers run. */
static void *po_check(void *arg)
{
	struct po_run *r = arg;

	while (!__atomic_load_n(&r->done, __ATOMIC_SEQ_CST)) {
		struct mig_lazy_stats ls0, ls;
		uint64_t k;

		mig_lazy_stats(r->d->lazy, &ls0);
		k = po_mincore(&r->d->m);
		mig_lazy_stats(r->d->lazy, &ls);
		if (ls.pages_resident > r->max_counted)
			r->max_counted = ls.pages_resident;
		/*
		 * mincore's walk is not atomic: a page seen before it was punched and the one
		 * placed after it would both count. lazy.c punches, counts, then places; so a
		 * walk with no page-out counted during it saw no such pair: only those count.
		 */
		if (ls.pages_out == ls0.pages_out) {
			if (k > r->max_mincore)
				r->max_mincore = k;
			r->quiet++;
		}
		r->samples++;
		usleep(200);
	}
	return NULL;
}

/* Sub-host i's pages of a split with tracking: the source's stripes of the remote ones. */
static uint64_t po_sub_pages(uint64_t data, int i)
{
	uint64_t n = 0;

	for (uint64_t k = 0; k + PO_BUDGET < data; k++)
		n += (int)(k / MIG_SPLIT_STRIPE % 2) == i;
	return n;
}

static void pageout_run(int full)
{
	struct guest_mem src;
	struct dst_vm d = { 0 };
	struct subs subs = { 0 };
	struct dst_run r = { .d = &d, .subs = &subs };
	struct mig_split_params p = { .main_mem = PO_BUDGET * PAGE, .tracking = 1, .nr_subs = 2,
				      .sub_addr = { "sub0", "sub1" }, .vm_id = 42, .replicas = 1,
				      .pageout = 1 };
	struct po_run pr = { .d = &d, .full = full };
	struct po_writer w[PO_THREADS];
	struct mig_split_result res;
	struct mig_split_counts c;
	struct mig_lazy_stats ls;
	struct src_vm v = { 0 };
	struct ms_stats st[2];
	pthread_t t, wt[PO_THREADS], ct, ht;
	char err[256] = "";
	uint64_t data;
	int sv[2], ret;

	CHECK_EQ(mm_init(&src, MEM), 0);
	CHECK_EQ(mm_init(&d.m, MEM), 0);
	data = fill(&src);
	CHECK(data > PO_BUDGET);
	/* The failure case: each sub-host has room for exactly the split's pages. */
	CHECK_EQ(ms_create(full ? po_sub_pages(data, 0) * PAGE : MEM, &subs.ms[0]), 0);
	CHECK_EQ(ms_create(full ? po_sub_pages(data, 1) * PAGE : MEM, &subs.ms[1]), 0);
	for (int i = 0; i < 2; i++) {
		int fd = sub_connect(&subs, p.sub_addr[i], err, sizeof(err));

		CHECK(fd >= 0);
		CHECK_EQ(ms_client_open(fd, p.vm_id, &p.sub[i], err, sizeof(err)), 0);
	}
	pr.expect = malloc(MEM);
	CHECK(pr.expect != NULL);
	memcpy(pr.expect, mm_gpa_to_hva(&src, 0, MEM), MEM);
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	r.fd = sv[1];
	CHECK_EQ(pthread_create(&t, NULL, dest_thread, &r), 0);
	ret = mig_split_source_run(&src, 1, sv[0], &sops, &v, &p, &res, err, sizeof(err));
	if (ret)
		fprintf(stderr, "  source: %s\n", err);
	CHECK_EQ(ret, 0);
	close(sv[0]);
	pthread_join(t, NULL);
	close(sv[1]);
	CHECK_EQ(r.ret, 0);
	if (ret || r.ret)
		goto out;
	mig_lazy_stats(d.lazy, &ls);
	CHECK_EQ(ls.budget_pages, PO_BUDGET);
	CHECK_EQ(ls.pages_resident, res.c.pages_main);	/* what came at the migration */
	CHECK_EQ(res.c.pages_main, PO_BUDGET);
	ms_stats(subs.ms[0], &st[0]);
	ms_stats(subs.ms[1], &st[1]);
	CHECK(!full || (st[0].pages == st[0].limit_pages && st[1].pages == st[1].limit_pages));

	/* Several threads read and write far more pages than main-mem; a checker samples. */
	CHECK_EQ(pthread_create(&ct, NULL, po_check, &pr), 0);
	if (!full) {
		for (int h = 0; h < PO_HAMMER; h++)	/* the source's bytes: zero but word 16 */
			memset(pr.expect + (PO_TOUCH - PO_HAMMER + (uint64_t)h) * PAGE + 16, 0, 8);
		CHECK_EQ(pthread_create(&ht, NULL, po_hammer, &pr), 0);
	}
	for (int i = 0; i < PO_THREADS; i++) {
		w[i] = (struct po_writer){ .r = &pr, .t = i };
		CHECK_EQ(pthread_create(&wt[i], NULL, po_write, &w[i]), 0);
	}
	for (int i = 0; i < PO_THREADS; i++)
		pthread_join(wt[i], NULL);
	if (!full)
		usleep(300000);		/* the hammer alone a little longer */
	__atomic_store_n(&pr.done, 1, __ATOMIC_SEQ_CST);
	pthread_join(ct, NULL);
	if (!full)
		pthread_join(ht, NULL);
	CHECK_EQ(pr.mismatches, 0);

	/* Every page as last written: no write lost, those racing with page-outs included. */
	for (uint64_t pg = 0; pg < (full ? NPAGES / 2 + 512 : PO_TOUCH); pg++)
		if (memcmp(mm_gpa_to_hva(&d.m, pg * PAGE, PAGE), pr.expect + pg * PAGE, PAGE)) {
			fprintf(stderr, "  page %#llx differs\n", (unsigned long long)pg);
			CHECK(0);
			break;
		}
	mig_lazy_stats(d.lazy, &ls);
	mig_split_dest_counts(r.sd, &c);
	ms_stats(subs.ms[0], &st[0]);
	ms_stats(subs.ms[1], &st[1]);
	fprintf(stderr, "  %s: %llu samples, resident at most %llu (counted) / %llu (mincore) of "
		"%d pages (%llu quiet walks); %llu paged out, %llu failed, %llu faults over the budget, %llu writes "
		"waited on a page-out\n",
		full ? "sub-hosts full" : "page-out", (unsigned long long)pr.samples,
		(unsigned long long)pr.max_counted, (unsigned long long)pr.max_mincore, PO_BUDGET,
		(unsigned long long)pr.quiet, (unsigned long long)ls.pages_out, (unsigned long long)ls.evictions_failed,
		(unsigned long long)ls.over_budget, (unsigned long long)ls.wp_faults);
	CHECK_EQ(ls.errors, 0);
	CHECK_EQ(c.errors, 0);
	/* The count is exact: the kernel agrees once nothing moves. */
	CHECK_EQ(ls.pages_resident, res.c.pages_main + ls.pages_fault + ls.pages_zero -
				    ls.pages_out);
	/* (a woken thread may run before lazy.c counts its page: let it settle) */
	for (int i = 0; i < 100 && po_mincore(&d.m) != ls.pages_resident; i++) {
		usleep(10000);
		mig_lazy_stats(d.lazy, &ls);
	}
	CHECK_EQ(po_mincore(&d.m), ls.pages_resident);
	CHECK_EQ(c.pages_main + c.pages_free + c.pages_remote, NPAGES);
	CHECK_EQ(c.pages_remote, c.pages_sub[0] + c.pages_sub[1]);
	CHECK(pr.samples > 10);
	CHECK(full || pr.quiet > 10);
	if (full) {
		/* Refused: every page stays here (over the budget, counted), nothing lost. */
		CHECK_EQ(ls.pages_out, 0);
		CHECK_EQ(c.pages_out, 0);
		CHECK(ls.evictions_failed > 0);
		CHECK(c.pageout_refused > 0);
		CHECK(ls.over_budget > 0);
		CHECK(ls.resident_max > PO_BUDGET);
		CHECK_EQ(st[0].pages, st[0].limit_pages);
		CHECK_EQ(st[1].pages, st[1].limit_pages);
		goto out;
	}
	/* Within main-mem all along, by the count and by the kernel's view. */
	CHECK(pr.max_counted <= PO_BUDGET);
	CHECK(ls.resident_max <= PO_BUDGET);
	CHECK(pr.max_mincore <= PO_BUDGET);
	CHECK_EQ(ls.over_budget, 0);
	CHECK_EQ(ls.evictions_failed, 0);
	CHECK_EQ(c.pageout_refused, 0);
	CHECK(ls.pages_out > PO_TOUCH);		/* each pass pages most of them out again */
	CHECK_EQ(c.pages_out, ls.pages_out);
	CHECK(ls.wp_faults > 0);	/* writes did race with page-outs */
	CHECK(c.bytes_out >= ls.pages_out * PAGE);
	/* Paged out = stored: the sub-hosts hold every page the map puts there (read above
	 * through the lazy memory); and free pages nobody touched were never sent. */
	CHECK(c.pages_remote > 0);
	CHECK(st[0].pages + st[1].pages >= c.pages_remote);
	{
		struct ms_client *cl[2];
		uint8_t page[PAGE];
		int missing = 0;

		for (int i = 0; i < 2; i++) {
			int fd = sub_connect(&subs, p.sub_addr[i], err, sizeof(err));

			CHECK(fd >= 0);
			CHECK_EQ(ms_client_open(fd, p.vm_id, &cl[i], err, sizeof(err)), 0);
		}
		for (uint64_t pg = PO_TOUCH; pg < NPAGES; pg++)
			for (int i = 0; i < 2; i++)
				missing += ms_get(cl[i], pg * PAGE, page, PAGE, err, sizeof(err)) ==
					   -ENOENT;
		CHECK_EQ(missing, 2 * (NPAGES - PO_TOUCH));
		ms_client_close(cl[0]);
		ms_client_close(cl[1]);
	}
out:
	mig_lazy_stop(d.lazy);
	/* The VM gone from the main host, or its split failed: no sub-host keeps its pages. */
	mig_split_dest_forget(r.sd);
	ms_stats(subs.ms[0], &st[0]);
	ms_stats(subs.ms[1], &st[1]);
	CHECK(st[0].pages == 0 && st[1].pages == 0);
	mig_split_dest_free(r.sd);
	ms_client_close(p.sub[0]);
	ms_client_close(p.sub[1]);
	subs_end(&subs);
	free(pr.expect);
	mm_free(&src);
	mm_free(&d.m);
}

static void test_split_pageout(void)
{
	pageout_run(0);
}

static void test_split_pageout_full(void)
{
	pageout_run(1);
}

TEST_MAIN(TEST(test_split_tracking), TEST(test_split_untracked), TEST(test_split_sub_full),
	  TEST(test_split_page_lost), TEST(test_split_replicas), TEST(test_split_fault_hist),
	  TEST(test_split_bulk_gone), TEST(test_split_pageout), TEST(test_split_pageout_full),
	  TEST(test_split_figures))
