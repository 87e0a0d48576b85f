/*
 * libFuzzer target for the sub-host page store's receiver (migrate/memserver.c, ms_serve) and
 * the stream framing under it (migrate/stream.c): the input is the byte stream a hostile
 * client sends (first byte odd), or -- so that checksums do not stop the fuzzer at the
 * framing -- records (type u8, payload length u16, arg u64, payload) sent as well-framed
 * chunks after a valid OPEN (even). It goes through a socketpair into ms_serve() with a store
 * of 64 pages. Any input must end in an error or a clean return, never a crash, a hang or a
 * store over its limit.
 *
 *   sh tests/fuzz/run.sh    (builds every tests/fuzz/fuzz-*.c)
 */
// fuzz-sources: migrate/memserver.c migrate/stream.c mm/mem.c mm/dirty.c mm/pagestate.c vmm/log.c
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/memserver.h"
#include "migrate/stream.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct feed {
	int fd;
	const uint8_t *data;
	size_t size;
	int framed;
};

static void *writer(void *arg)
{
	struct feed *f = arg;
	const uint8_t *p = f->data;
	size_t n = f->size;

	if (f->framed) {
		mig_send(f->fd, MIG_MS_OPEN, 9, NULL, 0);
		while (n >= 11) {
			uint16_t len;
			uint64_t a;

			memcpy(&len, p + 1, 2);
			memcpy(&a, p + 3, 8);
			if (len > n - 11)
				len = (uint16_t)(n - 11);
			if (mig_send(f->fd, p[0] % (MIG_NR_TYPES + 1), a, p + 11, len))
				break;
			p += 11 + len;
			n -= 11 + (size_t)len;
		}
	}
	while (!f->framed && n) {
		ssize_t w = send(f->fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			break;
		p += w;
		n -= (size_t)w;
	}
	shutdown(f->fd, SHUT_WR);
	return NULL;
}

/* The replies the server sends are read and thrown away, so it never blocks on them. */
static void *drain(void *arg)
{
	int fd = *(int *)arg;
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct memserver *ms;
	struct ms_stats st;
	struct feed f;
	pthread_t t, d;
	int sv[2];

	log_level = -1;
	if (ms_create(64 * 4096, &ms))
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		ms_destroy(ms);
		return 0;
	}
	f = (struct feed){ .fd = sv[1], .data = data + !!size, .size = size ? size - 1 : 0,
			   .framed = size && !(data[0] & 1) };
	if (pthread_create(&t, NULL, writer, &f) || pthread_create(&d, NULL, drain, &sv[1]))
		abort();
	ms_serve(ms, sv[0]);
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(t, NULL);
	pthread_join(d, NULL);
	ms_stats(ms, &st);
	if (st.pages > st.limit_pages)
		abort();
	close(sv[0]);
	close(sv[1]);
	ms_destroy(ms);
	return 0;
}
