/*
 * libFuzzer target for the live-migration receiver (migrate/migration.c, mig_dest_run) and
 * its framing (migrate/stream.c): the input is the byte stream a hostile source sends (first
 * byte % 3 == 1), or that stream after a valid hello (0), or -- so that checksums do not stop
 * the fuzzer at the framing -- records (type u8, payload length u16, arg u64, payload) that
 * are sent as well-framed chunks after a valid hello (2). It goes
 * through a socketpair into the real receiver with a 16 MiB guest; the VM's ops are stubs
 * (load refuses or accepts by the state's first byte). Any input must end in an error or a
 * clean return, never a crash, a hang or an access outside guest RAM.
 *
 *   sh tests/fuzz/run.sh    (builds every tests/fuzz/fuzz-*.c)
 */
// fuzz-sources: migrate/migration.c migrate/stream.c migrate/lazy.c mm/mem.c mm/dirty.c mm/pagestate.c vmm/log.c vmm/seccomp.c
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/migration.h"
#include "migrate/stream.h"
#include "mm/mem.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;

static int stub_load(void *vm, const void *blob, size_t size)
{
	return size && ((const uint8_t *)blob)[0] == 'k' ? 0 : -EINVAL;
}

static int stub_lazy(void *vm, const struct mig_page_source *src)
{
	uint64_t run;

	/* Ask the source what is missing, as the lazy server would. */
	return src->ops->is_hole(src->opaque, 0, src->size, &run) < 0 ? -EIO : 0;
}

static int stub_start(void *vm)
{
	return 0;
}

static const struct mig_dest_ops ops = { .load = stub_load, .lazy = stub_lazy,
					 .start = stub_start };

struct feed {
	int fd;
	const uint8_t *data;
	size_t size;
	int mode;
};

/* Mode 2: each record framed with a good checksum. */
static void send_records(int fd, const uint8_t *p, size_t n)
{
	while (n >= 11) {
		uint16_t len;
		uint64_t arg;

		memcpy(&len, p + 1, 2);
		memcpy(&arg, p + 3, 8);
		if (len > n - 11)
			len = (uint16_t)(n - 11);
		if (mig_send(fd, p[0] % (MIG_NR_TYPES + 1), arg, p + 11, len))
			return;
		p += 11 + len;
		n -= 11 + (size_t)len;
	}
}

static void *writer(void *arg)
{
	struct feed *f = arg;
	size_t done = 0;

	if (f->mode != 1) {
		struct mig_hello hi;

		mig_hello_make(&hi, &mem, 2);
		mig_send(f->fd, MIG_HELLO, 0, &hi, sizeof(hi));
	}
	if (f->mode == 2)
		send_records(f->fd, f->data, f->size);
	while (f->mode != 2 && done < f->size) {
		ssize_t n = send(f->fd, f->data + done, f->size - done, MSG_NOSIGNAL);

		if (n <= 0)
			break;
		done += (size_t)n;
	}
	shutdown(f->fd, SHUT_WR);	/* the receiver sees the end of the stream */
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_remote *remote = NULL;
	struct feed f;
	pthread_t t;
	char err[256];
	int sv[2];

	log_level = -1;
	if (!mem.nr_regions && mm_init(&mem, 16 << 20))
		abort();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return 0;
	f = (struct feed){ .fd = sv[1], .data = data + !!size, .size = size ? size - 1 : 0,
			   .mode = size ? data[0] % 3 : 1 };
	if (pthread_create(&t, NULL, writer, &f)) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	mig_dest_run(&mem, 2, sv[0], &ops, NULL, &remote, err, sizeof(err));
	mig_dest_finish(remote, 0);	/* the stub started no lazy server */
	/* The writer may be blocked on a full socket the receiver stopped reading. */
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
