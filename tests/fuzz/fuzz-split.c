/*
 * libFuzzer target for the split migration's main-host receiver (migrate/split.c,
 * mig_split_dest_run: the hello, pages, the page-location map, the state): the input is the
 * byte stream a hostile source sends after a valid split hello (first byte odd), or records
 * (type u8, payload length u16, arg u64, payload) sent as well-framed chunks after it (even),
 * or (first byte 2 mod 4) a page-location map: a byte of sub-host count (any value), then runs
 * (gpa, len, sub, replica) as they come, wrapped in a well-formed header and addresses and sent
 * as the MIG_SPLIT chunk with a state and END after it, so the runs' checks (RAM, named and
 * distinct owners, no page twice) and the replicas' owner check behind them see them whole.
 * The sub-hosts cannot be reached (the connect hook refuses), so a stream that gets that far
 * ends there; the VM's ops are stubs. Any input must end in an error or a clean return, never
 * a crash, a hang or an access outside guest RAM or the location map.
 *
 *   sh tests/fuzz/run.sh    (builds every tests/fuzz/fuzz-*.c)
 */
// fuzz-sources: migrate/split.c migrate/memserver.c migrate/migration.c migrate/stream.c mm/mem.c mm/dirty.c mm/pagestate.c vmm/log.c
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/migration.h"
#include "migrate/split.h"
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

	return src->ops->is_hole(src->opaque, 0, src->size, &run) < 0 ? -EIO : 0;
}

static int stub_start(void *vm)
{
	return 0;
}

static const struct mig_dest_ops ops = { .load = stub_load, .lazy = stub_lazy,
					 .start = stub_start };

static int refuse(void *opaque, const char *addr, char *err, size_t errlen)
{
	snprintf(err, errlen, "unreachable");
	return -ECONNREFUSED;
}

struct feed {
	int fd;
	const uint8_t *data;
	size_t size;
	int framed;
	int map;
};

static void *writer(void *arg)
{
	struct feed *f = arg;
	const uint8_t *p = f->data;
	size_t n = f->size;
	struct mig_hello hi;

	mig_hello_make(&hi, &mem, 1);
	hi.flags = MIG_HELLO_SPLIT;
	mig_send(f->fd, MIG_HELLO, 0, &hi, sizeof(hi));
	if (f->map && n) {
		/* the resident budget too (page-out), any value: it is the main host's to bound */
		struct mig_split_hdr h = { .vm_id = 1, .nr_subs = p[0],
					   .budget = (uint64_t)p[0] * 0x10001ULL << 10 };
		uint32_t subs = h.nr_subs <= MIG_SPLIT_SUBS_MAX ? h.nr_subs : MIG_SPLIT_SUBS_MAX;
		size_t head = sizeof(h) + subs * MIG_SPLIT_ADDR_MAX;
		uint8_t *m;

		h.nr_runs = (uint32_t)((n - 1) / sizeof(struct mig_split_run));
		m = calloc(1, head + h.nr_runs * sizeof(struct mig_split_run));
		if (m) {
			memcpy(m, &h, sizeof(h));
			for (uint32_t i = 0; i < subs; i++)
				m[sizeof(h) + i * MIG_SPLIT_ADDR_MAX] = (uint8_t)('a' + i);
			memcpy(m + head, p + 1, h.nr_runs * sizeof(struct mig_split_run));
			if (!mig_send(f->fd, MIG_SPLIT, 0, m,
				      (uint32_t)(head + h.nr_runs * sizeof(struct mig_split_run))) &&
			    !mig_send(f->fd, MIG_STATE, 0, "k", 1))
				mig_send(f->fd, MIG_END, 0, NULL, 0);
			free(m);
		}
		n = 0;
	}
	while (f->framed && n >= 11) {
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_split_dest *d = NULL;
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
			   .framed = size && !(data[0] & 1) && data[0] % 4 != 2,
			   .map = size && data[0] % 4 == 2 };
	if (pthread_create(&t, NULL, writer, &f)) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	mig_split_dest_run(&mem, 1, sv[0], &ops, NULL, refuse, NULL, &d, err, sizeof(err));
	mig_split_dest_free(d);
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
