/*
 * The sub-host page store (migrate/memserver.c) without KVM or network: a client and
 * ms_serve() on a socketpair. Page-out and page-in round trips by VM id and frame, bulk
 * transfer past one chunk, DROP, the limit (the pages that fit stay, SYNC names the first
 * frame refused), a page never stored is -ENOENT (never zeros), and hostile chunks end the
 * connection without touching the store.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/memserver.h"
#include "migrate/stream.h"
#include "mm/pagestate.h"
#include "tests/harness.h"

#define PAGE MM_PAGE_SIZE

struct served {
	struct memserver *ms;
	int fd, ret;
	pthread_t t;
};

static void *serve_thread(void *arg)
{
	struct served *s = arg;

	s->ret = ms_serve(s->ms, s->fd);
	close(s->fd);
	return NULL;
}

/* A connection to ms: *cfd is the client's end. */
static int serve(struct memserver *ms, struct served *s, int *cfd)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	*s = (struct served){ .ms = ms, .fd = sv[1] };
	*cfd = sv[0];
	return -pthread_create(&s->t, NULL, serve_thread, s);
}

static void pattern(uint8_t *p, uint64_t npages, uint64_t seed)
{
	for (uint64_t i = 0; i < npages * PAGE / 8; i++)
		((uint64_t *)p)[i] = seed * 0x9e3779b97f4a7c15ULL + i;
}

static void test_roundtrip(void)
{
	struct memserver *ms;
	struct ms_client *a, *b;
	struct served sa, sb;
	struct ms_stats st;
	const uint64_t n = 3 * MIG_PAGES_MAX + 5;	/* bulk: more than one chunk */
	uint8_t *in = malloc(n * PAGE), *out = malloc(n * PAGE);
	char err[256];
	int fd;

	CHECK(in && out);
	CHECK_EQ(ms_create(4 * n * PAGE, &ms), 0);
	CHECK_EQ(serve(ms, &sa, &fd), 0);
	CHECK_EQ(ms_client_open(fd, 7, &a, err, sizeof(err)), 0);
	CHECK_EQ(serve(ms, &sb, &fd), 0);
	CHECK_EQ(ms_client_open(fd, 8, &b, err, sizeof(err)), 0);
	pattern(in, n, 1);
	CHECK_EQ(ms_put(a, 0x100000, in, n * PAGE), 0);
	pattern(in, n, 2);
	CHECK_EQ(ms_put(b, 0x100000, in, n * PAGE), 0);	/* same frames, another VM */
	CHECK_EQ(ms_sync(a, err, sizeof(err)), 0);
	CHECK_EQ(ms_sync(b, err, sizeof(err)), 0);
	CHECK_EQ(ms_get(b, 0x100000, out, n * PAGE, err, sizeof(err)), 0);
	CHECK(!memcmp(in, out, n * PAGE));
	pattern(in, n, 1);
	CHECK_EQ(ms_get(a, 0x100000, out, n * PAGE, err, sizeof(err)), 0);
	CHECK(!memcmp(in, out, n * PAGE));
	/* Overwriting a stored page takes no new room. */
	CHECK_EQ(ms_put(a, 0x100000, in + PAGE, PAGE), 0);
	CHECK_EQ(ms_get(a, 0x100000, out, PAGE, err, sizeof(err)), 0);
	CHECK(!memcmp(in + PAGE, out, PAGE));
	ms_stats(ms, &st);
	CHECK_EQ(st.pages, 2 * n);
	/* A page never stored is an error naming it, never zeros. */
	CHECK_EQ(ms_get(a, 0x100000 + n * PAGE, out, PAGE, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "not stored") != NULL);
	CHECK_EQ(ms_drop(a, 0x100000, 2 * PAGE), 0);
	CHECK_EQ(ms_sync(a, err, sizeof(err)), 0);
	CHECK_EQ(ms_get(a, 0x100000 + PAGE, out, PAGE, err, sizeof(err)), -ENOENT);
	CHECK_EQ(ms_get(a, 0x100000 + 2 * PAGE, out, PAGE, err, sizeof(err)), 0);
	ms_stats(ms, &st);
	CHECK_EQ(st.pages, 2 * n - 2);
	CHECK_EQ(st.drops, 2);
	CHECK(ms_client_bytes(a) > 2 * n * PAGE);
	ms_client_close(a);
	ms_client_close(b);
	pthread_join(sa.t, NULL);
	pthread_join(sb.t, NULL);
	CHECK_EQ(sa.ret, 0);
	CHECK_EQ(sb.ret, 0);
	ms_destroy(ms);
	free(in);
	free(out);
}

static void test_limit(void)
{
	struct memserver *ms;
	struct ms_client *c;
	struct served s;
	struct ms_stats st;
	uint8_t *in = malloc(20 * PAGE), *out = malloc(20 * PAGE);
	char err[256];
	int fd;

	CHECK(in && out);
	CHECK_EQ(ms_create(16 * PAGE, &ms), 0);
	CHECK_EQ(serve(ms, &s, &fd), 0);
	CHECK_EQ(ms_client_open(fd, 1, &c, err, sizeof(err)), 0);
	pattern(in, 20, 3);
	CHECK_EQ(ms_put(c, 0, in, 10 * PAGE), 0);
	CHECK_EQ(ms_put(c, 10 * PAGE, in + 10 * PAGE, 10 * PAGE), 0);
	CHECK_EQ(ms_sync(c, err, sizeof(err)), -ENOSPC);
	CHECK(strstr(err, "full") && strstr(err, "frame 0x10"));
	/* What fitted is there; the connection goes on. */
	CHECK_EQ(ms_get(c, 0, out, 16 * PAGE, err, sizeof(err)), 0);
	CHECK(!memcmp(in, out, 16 * PAGE));
	CHECK_EQ(ms_get(c, 16 * PAGE, out, PAGE, err, sizeof(err)), -ENOENT);
	CHECK_EQ(ms_sync(c, err, sizeof(err)), 0);	/* the error was reported once */
	ms_stats(ms, &st);
	CHECK_EQ(st.pages, 16);
	CHECK_EQ(st.refused, 4);
	ms_client_close(c);
	pthread_join(s.t, NULL);
	ms_destroy(ms);
	free(in);
	free(out);
	CHECK(ms_create(100, &ms) == -EINVAL);
}

/* Raw chunks a hostile client might send: each ends its connection with -EPROTO. */
static void test_hostile(void)
{
	static const struct { const char *name; uint32_t type; uint64_t arg; uint32_t len;
			      int open; } bad[] = {
		{ "PUT before OPEN", MIG_MS_PUT, 0, 4096, 0 },
		{ "OPEN of VM 0", MIG_MS_OPEN, 0, 0, 0 },
		{ "OPEN twice", MIG_MS_OPEN, 5, 0, 1 },
		{ "PUT of half a page", MIG_MS_PUT, 0, 2048, 1 },
		{ "PUT unaligned", MIG_MS_PUT, 100, 4096, 1 },
		{ "PUT wrapping", MIG_MS_PUT, ~0ULL & ~4095ULL, 8192, 1 },
		{ "GET without length", MIG_MS_GET, 0, 0, 1 },
		{ "a type it does not serve", MIG_PENDING, 0, 16, 1 },
	};
	static uint8_t payload[8192];
	struct memserver *ms;
	struct ms_stats st;

	CHECK_EQ(ms_create(64 * PAGE, &ms), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct served s;
		int fd;

		CHECK_EQ(serve(ms, &s, &fd), 0);
		if (bad[i].open)
			CHECK_EQ(mig_send(fd, MIG_MS_OPEN, 5, NULL, 0), 0);
		CHECK_EQ(mig_send(fd, bad[i].type, bad[i].arg, payload, bad[i].len), 0);
		pthread_join(s.t, NULL);
		close(fd);
		if (s.ret != -EPROTO)
			fprintf(stderr, "  %s: ms_serve returned %d\n", bad[i].name, s.ret);
		CHECK_EQ(s.ret, -EPROTO);
	}
	{
		/* A corrupted checksum. */
		struct mig_chunk_hdr h;
		struct served s;
		int fd;

		mig_chunk_make(&h, MIG_MS_OPEN, 5, NULL, 0);
		h.crc ^= 1;
		CHECK_EQ(serve(ms, &s, &fd), 0);
		CHECK_EQ(write(fd, &h, sizeof(h)), (ssize_t)sizeof(h));
		pthread_join(s.t, NULL);
		close(fd);
		CHECK_EQ(s.ret, -EPROTO);
	}
	ms_stats(ms, &st);
	CHECK_EQ(st.pages, 0);
	ms_destroy(ms);
}

TEST_MAIN(TEST(test_roundtrip), TEST(test_limit), TEST(test_hostile))
