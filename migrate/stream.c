/*
 * Migration stream framing (migrate/stream.h): chunk headers with CRC32 (zlib), checked
 * before a payload is used; page chunks applied to guest memory only inside RAM.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include "migrate/stream.h"
#include "mm/mem.h"
#include "mm/pagestate.h"
#include "vmm/log.h"

#define PAGE MM_PAGE_SIZE

uint32_t mig_chunk_max(uint32_t type)
{
	switch (type) {
	case MIG_HELLO:
		return sizeof(struct mig_hello);
	case MIG_PAGES:
	case MIG_DATA:
	case MIG_MS_PUT:
		return MIG_PAGES_MAX * PAGE;
	case MIG_ZERO:
	case MIG_READ:
	case MIG_MS_GET:
	case MIG_MS_DROP:
		return sizeof(uint64_t);
	case MIG_STATE:
		return MIG_STATE_MAX;
	case MIG_PENDING:
		return MIG_RUNS_MAX * 2 * sizeof(uint64_t);
	case MIG_ACK:
		return MIG_ACK_TEXT_MAX;	/* a refusal's reason */
	case MIG_SPLIT:
		return MIG_SPLIT_MAX;
	case MIG_END:
	case MIG_DONE:
	case MIG_CANCEL:
	case MIG_MS_OPEN:
	case MIG_MS_SYNC:
		return 0;
	}
	return 0;
}

static uint32_t chunk_crc(const struct mig_chunk_hdr *h, const void *payload)
{
	uLong c = crc32(0L, Z_NULL, 0);

	c = crc32(c, (const Bytef *)h, 16);
	if (h->len)
		c = crc32(c, payload, h->len);
	return (uint32_t)c;
}

void mig_chunk_make(struct mig_chunk_hdr *h, uint32_t type, uint64_t arg, const void *payload,
		    uint32_t len)
{
	*h = (struct mig_chunk_hdr){ .type = type, .len = len, .arg = arg };
	h->crc = chunk_crc(h, payload);
}

static int bad_header(const struct mig_chunk_hdr *h, char *err, size_t errlen)
{
	if (!h->type || h->type >= MIG_NR_TYPES) {
		snprintf(err, errlen, "migration stream: unknown chunk type %u", h->type);
		return -EPROTO;
	}
	if (h->len > mig_chunk_max(h->type) || h->pad) {
		snprintf(err, errlen, "migration stream: chunk type %u with %u bytes (at most %u)",
			 h->type, h->len, mig_chunk_max(h->type));
		return -EPROTO;
	}
	return 0;
}

int mig_chunk_check(const struct mig_chunk_hdr *h, const void *payload, char *err,
		    size_t errlen)
{
	int ret = bad_header(h, err, errlen);

	if (ret)
		return ret;
	if (chunk_crc(h, payload) != h->crc) {
		snprintf(err, errlen, "migration stream: chunk type %u (%u bytes, arg %#" PRIx64
			 ") fails its checksum", h->type, h->len, h->arg);
		return -EPROTO;
	}
	return 0;
}

int mig_chunk_parse(const uint8_t *buf, size_t len, struct mig_chunk_hdr *h,
		    const uint8_t **payload, size_t *used, char *err, size_t errlen)
{
	int ret;

	if (len < sizeof(*h))
		return 0;
	memcpy(h, buf, sizeof(*h));
	ret = bad_header(h, err, errlen);
	if (ret)
		return ret;
	if (len - sizeof(*h) < h->len)
		return 0;
	*payload = buf + sizeof(*h);
	ret = mig_chunk_check(h, *payload, err, errlen);
	if (ret)
		return ret;
	*used = sizeof(*h) + h->len;
	return 1;
}

int mig_send(int fd, uint32_t type, uint64_t arg, const void *payload, uint32_t len)
{
	struct mig_chunk_hdr h;
	struct iovec iov[2];
	size_t left = sizeof(h) + len;
	int n = len ? 2 : 1, i = 0;

	mig_chunk_make(&h, type, arg, payload, len);
	iov[0] = (struct iovec){ .iov_base = &h, .iov_len = sizeof(h) };
	iov[1] = (struct iovec){ .iov_base = (void *)payload, .iov_len = len };
	while (left) {
		struct msghdr msg = { .msg_iov = iov + i, .msg_iovlen = (size_t)(n - i) };
		/* A peer that went away is an error here, not a SIGPIPE for the process. */
		ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		left -= (size_t)w;
		while (i < n && (size_t)w >= iov[i].iov_len) {
			w -= (ssize_t)iov[i].iov_len;
			i++;
		}
		if (i < n) {
			iov[i].iov_base = (char *)iov[i].iov_base + w;
			iov[i].iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Read exactly len bytes: 0, -EPIPE on EOF before any byte when first, -EIO mid-way. */
static int read_all(int fd, void *buf, size_t len, int first)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = read(fd, (char *)buf + done, len - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return first && !done ? -EPIPE : -EIO;
		done += (size_t)r;
	}
	return 0;
}

int mig_recv(int fd, struct mig_chunk_hdr *h, uint8_t **buf, size_t *cap, char *err,
	     size_t errlen)
{
	int ret = read_all(fd, h, sizeof(*h), 1);

	if (ret) {
		snprintf(err, errlen, "migration stream: %s",
			 ret == -EPIPE ? "closed" : ret == -EIO ? "cut inside a chunk" :
			 strerror(-ret));
		return ret;
	}
	ret = bad_header(h, err, errlen);
	if (ret)
		return ret;
	if (h->len > *cap) {
		uint8_t *nb = realloc(*buf, h->len);

		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = h->len;
	}
	ret = read_all(fd, *buf, h->len, 0);
	if (ret) {
		snprintf(err, errlen, "migration stream: cut inside a chunk (%s)", strerror(-ret));
		return ret;
	}
	return mig_chunk_check(h, *buf, err, errlen);
}

int mig_apply_pages(const struct guest_mem *m, const struct mig_chunk_hdr *h,
		    const void *payload, char *err, size_t errlen)
{
	uint64_t gpa = h->arg, len = h->len;
	int ret;

	if (h->type == MIG_ZERO) {
		if (h->len != sizeof(len)) {
			snprintf(err, errlen, "migration stream: ZERO chunk of %u bytes", h->len);
			return -EPROTO;
		}
		memcpy(&len, payload, sizeof(len));
	}
	if (!len || (gpa | len) & (PAGE - 1) || !mm_range_is_ram(m, gpa, len)) {
		snprintf(err, errlen, "migration stream: pages [%#" PRIx64 ", +%#" PRIx64
			 ") are not whole pages of guest RAM", gpa, len);
		return -EPROTO;
	}
	if (h->type != MIG_ZERO)
		return mm_write(m, gpa, payload, len) ? -EPROTO : 0;
	/* Zero now: give the pages back where the memory allows it, else write zeros. */
	ret = m->hugepages ? -EINVAL : mm_release_range(m, gpa, len);
	if (ret)
		ret = mm_zero(m, gpa, len);
	if (ret)
		snprintf(err, errlen, "migration: zeroing [%#" PRIx64 ", +%#" PRIx64 "): %s", gpa,
			 len, strerror(-ret));
	return ret;
}

void mig_hello_make(struct mig_hello *hi, const struct guest_mem *m, uint32_t nr_vcpus)
{
	*hi = (struct mig_hello){ .magic = MIG_STREAM_MAGIC, .version = MIG_STREAM_VERSION,
				  .page_size = PAGE, .ram_size = m->ram_size,
				  .nr_vcpus = nr_vcpus };
}

int mig_hello_check(const struct mig_hello *hi, const struct guest_mem *m, uint32_t nr_vcpus,
		    char *err, size_t errlen)
{
	if (hi->magic != MIG_STREAM_MAGIC)
		snprintf(err, errlen, "migration stream: not a kumo migration");
	else if (hi->version != MIG_STREAM_VERSION)
		snprintf(err, errlen, "migration stream: version %u, this kumo speaks %d",
			 hi->version, MIG_STREAM_VERSION);
	else if (hi->page_size != PAGE || hi->flags)
		snprintf(err, errlen, "migration stream: page size %u, flags %#x", hi->page_size,
			 hi->flags);
	else if (hi->ram_size != m->ram_size || hi->nr_vcpus != nr_vcpus)
		snprintf(err, errlen, "migration: the source has %u vCPUs and %" PRIu64
			 " bytes of RAM, this VM %u and %" PRIu64, hi->nr_vcpus, hi->ram_size,
			 nr_vcpus, m->ram_size);
	else
		return 0;
	return -EPROTO;
}

/* ---- addresses ---- */

/* "tcp:HOST:PORT" (HOST may be empty for listening) or "unix:PATH". */
static int parse_addr(const char *addr, int *is_unix, char *host, size_t hlen, char *port,
		      size_t plen, char *err, size_t errlen)
{
	const char *colon;

	if (!strncmp(addr, "unix:", 5)) {
		if (strlen(addr + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path) || !addr[5])
			goto bad;
		*is_unix = 1;
		snprintf(host, hlen, "%s", addr + 5);
		return 0;
	}
	if (strncmp(addr, "tcp:", 4) || !(colon = strrchr(addr + 4, ':')) ||
	    (size_t)(colon - (addr + 4)) >= hlen || strlen(colon + 1) >= plen || !colon[1])
		goto bad;
	*is_unix = 0;
	memcpy(host, addr + 4, (size_t)(colon - (addr + 4)));
	host[colon - (addr + 4)] = '\0';
	strcpy(port, colon + 1);
	return 0;
bad:
	snprintf(err, errlen, "%s: not tcp:HOST:PORT or unix:PATH", addr);
	return -EINVAL;
}

static int inet_socket(const char *host, const char *port, int listening, char *err,
		       size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = listening ? AI_PASSIVE : 0 }, *res, *ai;
	int fd = -1, one = 1, ret = getaddrinfo(*host ? host : NULL, port, &hints, &res);

	if (ret) {
		snprintf(err, errlen, "tcp:%s:%s: %s", host, port, gai_strerror(ret));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (listening) {
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (!bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, 4))
				break;
		} else if (!connect(fd, ai->ai_addr, ai->ai_addrlen)) {
			break;
		}
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(err, errlen, "tcp:%s:%s: %s", host, port, strerror(ret ? -ret : EINVAL));
	return fd < 0 ? (ret ? ret : -EINVAL) : fd;
}

static int unix_socket(const char *path, int listening, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ret;

	if (fd < 0)
		return -errno;
	strcpy(sa.sun_path, path);
	if (listening) {
		unlink(path);
		ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4) ? -errno : 0;
	} else {
		ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 0;
	}
	if (ret) {
		snprintf(err, errlen, "unix:%s: %s", path, strerror(-ret));
		close(fd);
		return ret;
	}
	return fd;
}

static int open_addr(const char *addr, int listening, char *err, size_t errlen)
{
	char host[256], port[32];
	int is_unix, ret = parse_addr(addr, &is_unix, host, sizeof(host), port, sizeof(port), err,
				      errlen);

	if (ret)
		return ret;
	return is_unix ? unix_socket(host, listening, err, errlen) :
			 inet_socket(host, port, listening, err, errlen);
}

int mig_connect(const char *addr, char *err, size_t errlen)
{
	return open_addr(addr, 0, err, errlen);
}

int mig_listen(const char *addr, char *err, size_t errlen)
{
	return open_addr(addr, 1, err, errlen);
}

int mig_accept(int lfd, char *err, size_t errlen)
{
	int one = 1, fd;

	do
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		snprintf(err, errlen, "accepting the migration: %s", strerror(errno));
		return -errno;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}
