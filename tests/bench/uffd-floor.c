/*
 * uffd-floor: the local floor for a post-copy page fault (tests/bench/migrate.py). A memfd
 * mapping registered with userfaultfd MISSING, as kumo's lazy memory is; the main thread reads
 * one byte of each page in a shuffled order, a handler thread serves each fault with
 * UFFDIO_COPY. With fetch=1 the handler first asks a third thread for the page over a TCP
 * loopback connection (8-byte request, 4 KiB answer), as a post-copy destination asks its
 * source. Prints per fault the handler's service time (message read -> UFFDIO_COPY returned,
 * what kumo's "median fault" counts) and the faulting thread's whole access.
 *
 *   uffd-floor PAGES FETCH     ->  "floor fetch=F serve_median_us X serve_p99_us Y
 *                                   access_median_us Z access_p99_us W"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static char *area;
static long npages;
static int uffd, fetch, conn_c, conn_s;
static double *serve_us;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int full(int fd, void *buf, size_t n, int wr)
{
	for (size_t done = 0; done < n;) {
		ssize_t r = wr ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);

		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static void *source(void *arg)
{
	static char page[PAGE];
	uint64_t off;

	(void)arg;
	memset(page, 0x5a, sizeof(page));
	while (full(conn_s, &off, sizeof(off), 0) == 0)
		if (full(conn_s, page, sizeof(page), 1) < 0)
			break;
	return NULL;
}

static void *handler(void *arg)
{
	static char page[PAGE] __attribute__((aligned(PAGE)));
	long served = 0;

	(void)arg;
	memset(page, 0x5a, sizeof(page));
	while (served < npages) {
		struct pollfd p = { .fd = uffd, .events = POLLIN };
		struct uffd_msg m;
		uint64_t t0, off;

		if (poll(&p, 1, -1) < 0 || read(uffd, &m, sizeof(m)) != sizeof(m))
			continue;
		t0 = now_ns();
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		off = (m.arg.pagefault.address - (uint64_t)(uintptr_t)area) & ~(uint64_t)(PAGE - 1);
		if (fetch && (full(conn_c, &off, sizeof(off), 1) < 0 || full(conn_c, page, PAGE, 0) < 0)) {
			perror("fetch");
			exit(1);
		}
		struct uffdio_copy c = { .dst = (uint64_t)(uintptr_t)area + off,
					 .src = (uint64_t)(uintptr_t)page, .len = PAGE };
		if (ioctl(uffd, UFFDIO_COPY, &c) < 0) {
			perror("UFFDIO_COPY");
			exit(1);
		}
		serve_us[served++] = (double)(now_ns() - t0) / 1e3;
	}
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double q)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[(long)(q * (double)(n - 1))];
}

static int tcp_pair(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

	if (l < 0 || bind(l, (void *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (void *)&a, &al) < 0)
		return -1;
	conn_c = socket(AF_INET, SOCK_STREAM, 0);
	if (conn_c < 0 || connect(conn_c, (void *)&a, sizeof(a)) < 0)
		return -1;
	conn_s = accept(l, NULL, NULL);
	close(l);
	setsockopt(conn_c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(conn_s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return conn_s < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	pthread_t th, ts;
	double *access_us;
	long *order;
	int fd;

	npages = argc > 1 ? atol(argv[1]) : 4096;
	fetch = argc > 2 ? atoi(argv[2]) : 0;
	serve_us = calloc((size_t)npages, sizeof(double));
	access_us = calloc((size_t)npages, sizeof(double));
	order = calloc((size_t)npages, sizeof(long));
	fd = memfd_create("uffd-floor", 0);
	if (npages < 2 || !serve_us || !access_us || !order || fd < 0 ||
	    ftruncate(fd, npages * PAGE) < 0) {
		fprintf(stderr, "uffd-floor: setup failed\n");
		return 1;
	}
	area = mmap(NULL, (size_t)npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .range = { .start = (uint64_t)(uintptr_t)area,
						  .len = (uint64_t)npages * PAGE },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	if (area == MAP_FAILED || uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0 ||
	    ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		perror("uffd-floor: userfaultfd");
		return 1;
	}
	if (fetch && (tcp_pair() < 0 || pthread_create(&ts, NULL, source, NULL))) {
		perror("uffd-floor: loopback");
		return 1;
	}
	for (long i = 0; i < npages; i++)
		order[i] = i;
	srand(1);
	for (long i = npages - 1; i > 0; i--) {
		long j = rand() % (i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	pthread_create(&th, NULL, handler, NULL);
	for (long i = 0; i < npages; i++) {
		uint64_t t0 = now_ns();

		if (*(volatile char *)(area + order[i] * PAGE) != 0x5a) {
			fprintf(stderr, "uffd-floor: wrong page content\n");
			return 1;
		}
		access_us[i] = (double)(now_ns() - t0) / 1e3;
	}
	pthread_join(th, NULL);
	printf("floor fetch=%d pages %ld serve_median_us %.2f serve_p99_us %.2f "
	       "access_median_us %.2f access_p99_us %.2f\n", fetch, npages,
	       pct(serve_us, npages, 0.5), pct(serve_us, npages, 0.99),
	       pct(access_us, npages, 0.5), pct(access_us, npages, 0.99));
	return 0;
}
