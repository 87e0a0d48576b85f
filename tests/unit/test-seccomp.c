/*
 * The per-thread seccomp filters (vmm/seccomp.c): a device's real I/O worker (devices/virtio.c)
 * calling execve ends the process with the line naming the call and the thread; every kind's
 * filter loads, lets the basics through and stops execve. Each case runs in a forked child:
 * a filter cannot be taken off again.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devices/virtio.h"
#include "tests/harness.h"
#include "vmm/devenv.h"
#include "vmm/seccomp.h"

/* What the child wrote on stdout and stderr (both into one pipe), and how it ended. */
struct child {
	char out[4096];
	int status;
};

static int run_child(void (*fn)(void *), void *arg, struct child *c)
{
	int p[2];
	size_t have = 0;
	pid_t pid;

	if (pipe(p) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		fn(arg);
		_exit(42);	/* the case should have ended the process */
	}
	close(p[1]);
	for (;;) {
		ssize_t n = read(p[0], c->out + have, sizeof(c->out) - 1 - have);

		if (n <= 0)
			break;
		have += (size_t)n;
	}
	c->out[have] = 0;
	close(p[0]);
	if (waitpid(pid, &c->status, 0) < 0)
		return -errno;
	return 0;
}

static void try_exec(void)
{
	char *argv[] = { "/bin/sh", "-c", "echo EXECUTED", NULL };
	char *envp[] = { NULL };

	execve(argv[0], argv, envp);
}

/* ---- a device worker calls execve ---- */

static void bad_notify(struct virtio_dev *vdev, unsigned int q)
{
	struct timespec ts;

	/* What a worker does all day still works under its filter... */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0 && write(1, "worker-alive\n", 13) == 13)
		try_exec();	/* ...this does not */
	write(1, "exec-failed\n", 12);
	_exit(43);
}

static unsigned int one_queue(struct virtio_dev *vdev) { return 1; }

/* Named like the real disk so the worker takes the disk's filter (seccomp_device_kind). */
static const struct virtio_dev_ops evil_blk_ops = {
	.name = "virtio-blk", .num_queues = one_queue, .queue_notify = bad_notify,
};

static void device_child(void *arg)
{
	static struct dev_env env;
	static struct virtio_dev vdev;

	if (arg && seccomp_enable() < 0) {
		write(1, "no-seccomp\n", 11);
		_exit(44);
	}
	if (virtio_dev_init(&vdev, &evil_blk_ops, &env, NULL) < 0)
		_exit(45);
	/* DRIVER_OK: the worker starts and calls queue_notify for each queue at once. */
	if (virtio_dev_activate(&vdev) < 0)
		_exit(46);
	for (;;)
		pause();
}

static void test_device_worker_execve(void)
{
	struct child c;

	CHECK_EQ(run_child(device_child, (void *)1, &c), 0);
	CHECK(strstr(c.out, "worker-alive"));
	CHECK(!strstr(c.out, "EXECUTED"));
	CHECK(!strstr(c.out, "exec-failed"));
	CHECK(strstr(c.out, "seccomp: thread kumo-blk (blk worker) made a forbidden system call: "
			    "execve (59)"));
	/* The call's stack, down to the device's own code in this binary (for addr2line). */
	CHECK(strstr(c.out, "its stack:\n  "));
	CHECK(strstr(c.out, "test-seccomp(+0x"));
	CHECK(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1);
}

/* The same device without filters execs: the case above sees the filter, not a broken exec. */
static void test_device_worker_unfiltered(void)
{
	struct child c;

	CHECK_EQ(run_child(device_child, NULL, &c), 0);
	CHECK(strstr(c.out, "EXECUTED"));
	CHECK(!strstr(c.out, "forbidden"));
}

/* ---- every kind ---- */

static void *kind_thread(void *arg)
{
	enum kumo_thread k = (enum kumo_thread)(long)arg;
	struct timespec ts;

	time_t now = time(NULL);
	struct tm tm;

	pthread_setname_np(pthread_self(), "kumo-test");
	seccomp_enter(k);
	/* the RTC's registers (devices/rtc.c): glibc's first one reads the time zone */
	if (gmtime_r(&now, &tm) && clock_gettime(CLOCK_MONOTONIC, &ts) == 0 &&
	    write(1, "alive\n", 6) == 6)
		try_exec();
	return NULL;
}

static void kind_child(void *arg)
{
	pthread_t t;

	if (seccomp_enable() < 0 || pthread_create(&t, NULL, kind_thread, arg))
		_exit(44);
	pthread_join(t, NULL);
	_exit(47);
}

static void test_every_kind(void)
{
	for (int k = 0; k < KUMO_THREAD__COUNT; k++) {
		char want[128];
		struct child c;

		snprintf(want, sizeof(want), "thread kumo-test (%s) made a forbidden system call: "
			 "execve (59)", seccomp_kind_name(k));
		CHECK_EQ(run_child(kind_child, (void *)(long)k, &c), 0);
		if (!strstr(c.out, "alive") || !strstr(c.out, want) ||
		    !WIFEXITED(c.status) || WEXITSTATUS(c.status) != 1) {
			fprintf(stderr, "  kind %s: status 0x%x, output: %s\n", seccomp_kind_name(k),
				c.status, c.out);
			CHECK(0);
		}
		printf("  %-14s %zu system calls allowed\n", seccomp_kind_name(k),
		       seccomp_allowed_count(k));
	}
}

/* ---- capabilities ---- */

static int caps_pipe[2];

/* arg: the kind, plus 256 * (its starter's kind + 1) when a filtered thread starts it. */
static void *caps_thread(void *arg)
{
	struct timespec ts = { .tv_sec = 5 };
	long a = (long)arg;
	pthread_t t;

	if (a >= 256) {
		seccomp_enter((enum kumo_thread)(a / 256 - 1));
		if (pthread_create(&t, NULL, caps_thread, (void *)(a % 256)))
			_exit(47);
		pthread_join(t, NULL);
		return NULL;
	}
	pthread_setname_np(pthread_self(), "kumo-caps");
	seccomp_enter((enum kumo_thread)a);
	if (write(caps_pipe[1], "r", 1) != 1)
		_exit(48);
	nanosleep(&ts, NULL);
	return NULL;
}

/* CapEff and CapBnd of the child's thread named kumo-caps, from /proc. */
static int read_caps(pid_t pid, unsigned long long *eff, unsigned long long *bnd)
{
	char path[64], line[256], name[32] = "";
	int found = -ENOENT;

	for (int tid = pid; tid < pid + 64 && found; tid++) {
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, tid);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			sscanf(line, "Name: %31s", name);
			sscanf(line, "CapEff: %llx", eff);
			sscanf(line, "CapBnd: %llx", bnd);
		}
		fclose(f);
		if (!strcmp(name, "kumo-caps"))
			found = 0;
	}
	return found;
}

/*
 * caps_of(kind): what a thread of that kind keeps (as root: its own set, else what it had);
 * kind + 256 * (starter + 1): the same, started by a filtered thread of kind starter.
 */
static int caps_of(long kind, unsigned long long *eff, unsigned long long *bnd)
{
	pthread_t t;
	char r;
	pid_t pid;
	int ret;

	if (pipe(caps_pipe) < 0)
		return -errno;
	pid = fork();
	if (!pid) {
		if (seccomp_enable() < 0 || pthread_create(&t, NULL, caps_thread, (void *)(long)kind))
			_exit(44);
		pthread_join(t, NULL);
		_exit(0);
	}
	close(caps_pipe[1]);
	ret = read(caps_pipe[0], &r, 1) == 1 ? read_caps(pid, eff, bnd) : -EIO;
	close(caps_pipe[0]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return ret;
}

static void test_caps_dropped(void)
{
	unsigned long long eff = ~0ull, bnd = ~0ull;

	if (geteuid()) {
		printf("  not root: no capabilities to drop\n");
		return;
	}
	CHECK_EQ(caps_of(KUMO_THREAD_BLK, &eff, &bnd), 0);
	CHECK_EQ(eff, 0ull);
	CHECK_EQ(bnd, 0ull);
	/* A tap's queues: the net worker and the threads that start it keep CAP_NET_ADMIN. */
	CHECK_EQ(caps_of(KUMO_THREAD_NET, &eff, &bnd), 0);
	CHECK_EQ(eff, 1ull << 12);
	CHECK_EQ(bnd, 1ull << 12);
	/* A starter also keeps CAP_SETPCAP (8), for its children to empty their bounding sets. */
	CHECK_EQ(caps_of(KUMO_THREAD_VCPU, &eff, &bnd), 0);
	CHECK_EQ(eff, (1ull << 12) | (1ull << 8));
	CHECK_EQ(caps_of(KUMO_THREAD_MAIN, &eff, &bnd), 0);
	CHECK_EQ(eff, 0ull);
	/* A worker started by a filtered vCPU thread (the balloon at DRIVER_OK) gets to none. */
	CHECK_EQ(caps_of(KUMO_THREAD_BALLOON + 256 * (KUMO_THREAD_VCPU + 1), &eff, &bnd), 0);
	CHECK_EQ(eff, 0ull);
	CHECK_EQ(bnd, 0ull);
	CHECK_EQ(caps_of(KUMO_THREAD_AGENT_CALL + 256 * (KUMO_THREAD_CONTROL + 1), &eff, &bnd), 0);
	CHECK_EQ(eff, 0ull);
}

/* A thread that spawns (a vCPU starting a worker) allows at least what the worker does. */
static void test_spawner_covers_worker(void)
{
	CHECK(seccomp_allowed_count(KUMO_THREAD_VCPU) > seccomp_allowed_count(KUMO_THREAD_BLK));
	CHECK(seccomp_allowed_count(KUMO_THREAD_CONTROL) >
	      seccomp_allowed_count(KUMO_THREAD_MIGRATION));
	CHECK_EQ(seccomp_device_kind("virtio-balloon"), KUMO_THREAD_BALLOON);
	CHECK_EQ(seccomp_device_kind("fake"), KUMO_THREAD__COUNT);
}

TEST_MAIN(TEST(test_device_worker_execve), TEST(test_device_worker_unfiltered),
	  TEST(test_every_kind), TEST(test_caps_dropped), TEST(test_spawner_covers_worker))
