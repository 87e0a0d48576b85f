/*
 * Per-thread seccomp allow-lists (docs/security.md), built with libseccomp: it checks the
 * architecture, refuses the x32 ABI, resolves names at compile time (SCMP_SYS) and orders the
 * BPF, which raw BPF would make us do by hand for ~100 rules.
 *
 * A filter is installed by the thread itself (no TSYNC), so each thread kind has its own.
 * Filters are inherited and stack: a thread started by a filtered thread runs under both, so a
 * kind that starts threads (a vCPU starting a device worker at DRIVER_OK, the control thread
 * starting the migration sender) also allows what those threads need (`spawns`).
 * Before its filter a thread drops every capability it does not use (kinds[].caps, with its
 * children's): a root kumo keeps only CAP_NET_ADMIN, in the threads that may touch a tap, and
 * CAP_SETPCAP in the threads that start others (each child empties its own bounding set, under
 * its starter's filter, which therefore allows capget, capset and prctl(PR_CAPBSET_DROP)).
 * A forbidden call raises SIGSYS (SECCOMP_RET_TRAP); the handler writes one line naming the
 * call, the thread and, for open/openat, the path, then the call's stack (kumo(+offset) for
 * addr2line), and ends the process with status 1.
 */
#include <dlfcn.h>
#include <errno.h>
#include <json-c/json.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/prctl.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <time.h>
#include <unistd.h>

#include "vmm/log.h"
#include "vmm/seccomp.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KIND(k) (1u << (k))
#define WORKERS (KIND(KUMO_THREAD_BLK) | KIND(KUMO_THREAD_NET) | KIND(KUMO_THREAD_CONSOLE) | \
		 KIND(KUMO_THREAD_BALLOON))

/* Every thread: memory (never executable: see add_base), locks, time, the log, its end. */
static const int base_calls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(close), SCMP_SYS(futex),
	SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(madvise), SCMP_SYS(mremap),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
	SCMP_SYS(gettimeofday), SCMP_SYS(gettid), SCMP_SYS(getpid), SCMP_SYS(tgkill),
	SCMP_SYS(sched_yield), SCMP_SYS(restart_syscall), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(exit), SCMP_SYS(exit_group),
	SCMP_SYS(getrandom),	/* random bytes only (glibc's malloc, OpenSSL, json-c) */
};

/* Starting a thread (pthread_create) and putting it under its own filter. */
static const int spawn_calls[] = {
	SCMP_SYS(clone), SCMP_SYS(clone3), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
	SCMP_SYS(seccomp), SCMP_SYS(sched_getaffinity),
	SCMP_SYS(capget), SCMP_SYS(capset),	/* the child drops its capabilities (drop_caps) */
};

static const int vcpu_calls[] = {
	SCMP_SYS(ioctl),	/* KVM_RUN and vCPU state on its fd; the VM fd for irqfds,
				 * ioeventfds, MSI routes; tap offloads at DRIVER_OK */
	SCMP_SYS(eventfd2),	/* MSI-X irqfds, io_uring's completion eventfd */
	SCMP_SYS(epoll_ctl),	/* a device's fds added to its worker's epoll */
	SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_register),	/* a disk's ring at DRIVER_OK */
	SCMP_SYS(timerfd_settime),
	SCMP_SYS(fallocate),	/* balloon pages punched on the vCPU's PCI write paths */
};

static const int worker_calls[] = {	/* devices/virtio.c's loop */
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl),
	SCMP_SYS(timerfd_settime), SCMP_SYS(prctl),
};

static const int blk_calls[] = {
	SCMP_SYS(io_uring_enter), SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(fallocate),
	SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(preadv), SCMP_SYS(pwritev),
};

static const int net_calls[] = {
	SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(ioctl),	/* tap queues and offloads */
};

static const int console_calls[] = {
	SCMP_SYS(accept4), SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(recvmsg),
	SCMP_SYS(sendmsg), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(shutdown),
	SCMP_SYS(getsockopt), SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(ioctl),	/* the bytes a client socket holds (FIONREAD, SIOCOUTQ) */
};

static const int balloon_calls[] = {
	SCMP_SYS(fallocate),	/* inflated and reported pages punched out of the memfd */
};

static const int control_calls[] = {
	/* clients */
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl), SCMP_SYS(accept4),
	SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg),
	SCMP_SYS(shutdown), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt), SCMP_SYS(getrandom),
	SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(eventfd2),
	/* snapshot: state and memory files */
	SCMP_SYS(openat), SCMP_SYS(newfstatat), SCMP_SYS(fstat), SCMP_SYS(lseek),
	SCMP_SYS(ftruncate), SCMP_SYS(fallocate), SCMP_SYS(pread64), SCMP_SYS(pwrite64),
	SCMP_SYS(preadv), SCMP_SYS(pwritev), SCMP_SYS(fsync), SCMP_SYS(fdatasync),
	SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(unlink),
	SCMP_SYS(unlinkat), SCMP_SYS(mkdir), SCMP_SYS(mkdirat), SCMP_SYS(getdents64),
	/* migration: the connection */
	SCMP_SYS(socket), SCMP_SYS(connect), SCMP_SYS(getsockname), SCMP_SYS(getpeername),
	/* vCPU and VM state, dirty log; vcpu-pin; stats: guest RAM resident */
	SCMP_SYS(ioctl), SCMP_SYS(sched_setaffinity), SCMP_SYS(prctl), SCMP_SYS(mincore),
};

static const int relay_calls[] = {
	SCMP_SYS(socket), SCMP_SYS(connect), SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(shutdown), SCMP_SYS(prctl),
};

static const int agent_call_calls[] = {
	SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(sendto), SCMP_SYS(recvfrom),
	SCMP_SYS(epoll_ctl),	/* the deferred reply: the client's socket back to the poller */
};

static const int migration_calls[] = {
	SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(sendto), SCMP_SYS(recvfrom),
	SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(writev), SCMP_SYS(readv),
	SCMP_SYS(shutdown), SCMP_SYS(setsockopt), SCMP_SYS(pread64), SCMP_SYS(lseek),
	SCMP_SYS(ioctl),	/* the dirty log on the VM fd, vCPU state at switch-over */
	SCMP_SYS(epoll_ctl), SCMP_SYS(sendfile), SCMP_SYS(prctl),
	SCMP_SYS(socket), SCMP_SYS(connect), SCMP_SYS(getsockopt),	/* split: the sub-hosts */
};

static const int lazy_calls[] = {
	SCMP_SYS(ioctl),	/* UFFDIO_COPY/ZEROPAGE/WAKE/UNREGISTER */
	SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(pread64), SCMP_SYS(preadv),
	SCMP_SYS(lseek), SCMP_SYS(fstat), SCMP_SYS(newfstatat),	/* the file's data runs */
	SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg),
	SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(prctl),
	/* post-copy and split: pages asked of the source or a sub-host */
	SCMP_SYS(socket), SCMP_SYS(connect), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
};

static const int lazy_watch_calls[] = {
	SCMP_SYS(ioctl),	/* mig_lazy_stop: UFFDIO_UNREGISTER */
	SCMP_SYS(sendto), SCMP_SYS(epoll_ctl), SCMP_SYS(prctl),
};

static const int main_calls[] = {
	SCMP_SYS(poll), SCMP_SYS(ppoll),	/* console input */
	SCMP_SYS(ioctl),	/* the terminal back (TCSETS); io_uring and KVM teardown */
	SCMP_SYS(epoll_ctl), SCMP_SYS(shutdown), SCMP_SYS(unlink), SCMP_SYS(unlinkat),
	SCMP_SYS(io_uring_register), SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(lseek),
	SCMP_SYS(rt_sigaction), SCMP_SYS(prctl),
	SCMP_SYS(sendmsg),	/* split: the sub-hosts DROP the VM's pages at teardown */
};

struct kind {
	const char *name;
	const int *calls;
	size_t n;
	const int *more;	/* a device worker's own calls on top of the loop's */
	size_t nmore;
	unsigned int spawns;	/* kinds this one may start (their calls are added) */
	uint64_t caps;		/* capabilities it uses once running (1 << CAP_...) */
};

#define CALLS(a) a, ARRAY_SIZE(a)
static const struct kind kinds[KUMO_THREAD__COUNT] = {
	[KUMO_THREAD_MAIN] = { "main", CALLS(main_calls), NULL, 0, 0 },
	[KUMO_THREAD_VCPU] = { "vcpu", CALLS(vcpu_calls), NULL, 0, WORKERS },
	[KUMO_THREAD_CONTROL] = { "control", CALLS(control_calls), NULL, 0,
				  WORKERS | KIND(KUMO_THREAD_MIGRATION) |
				  KIND(KUMO_THREAD_AGENT_CALL) },
	[KUMO_THREAD_RELAY] = { "agent relay", CALLS(relay_calls), NULL, 0, 0 },
	[KUMO_THREAD_AGENT_CALL] = { "agent call", CALLS(agent_call_calls), NULL, 0, 0 },
	[KUMO_THREAD_MIGRATION] = { "migration", CALLS(migration_calls), NULL, 0, WORKERS },
	[KUMO_THREAD_LAZY] = { "lazy memory", CALLS(lazy_calls), NULL, 0, 0 },
	[KUMO_THREAD_LAZY_WATCH] = { "lazy watch", CALLS(lazy_watch_calls), NULL, 0, WORKERS },
	[KUMO_THREAD_BLK] = { "blk worker", CALLS(worker_calls), CALLS(blk_calls), 0 },
	/* Attaching and detaching the tap's queues as the driver changes the queue pairs. */
	[KUMO_THREAD_NET] = { "net worker", CALLS(worker_calls), CALLS(net_calls), 0,
			      1ull << CAP_NET_ADMIN },
	[KUMO_THREAD_CONSOLE] = { "console worker", CALLS(worker_calls), CALLS(console_calls), 0 },
	[KUMO_THREAD_BALLOON] = { "balloon worker", CALLS(worker_calls), CALLS(balloon_calls), 0 },
};

static int enabled;
static __thread const char *thread_kind;
/* The frame of the function that called seccomp_enter: the SIGSYS stack walk stops below it. */
static __thread uintptr_t frames_top;
static struct sock_fprog progs[KUMO_THREAD__COUNT];

/* Syscall names, resolved before any filter (the SIGSYS handler may not allocate). */
#define MAX_NR 512
static char names[8192];
static unsigned short name_off[MAX_NR];

const char *seccomp_kind_name(enum kumo_thread kind)
{
	return kind < KUMO_THREAD__COUNT ? kinds[kind].name : "?";
}

/* The set of kinds whose calls `kind`'s filter allows: itself and what it may start. */
static unsigned int closure(enum kumo_thread kind)
{
	unsigned int set = KIND(kind), prev;

	do {
		prev = set;
		for (int k = 0; k < KUMO_THREAD__COUNT; k++)
			if (set & KIND(k))
				set |= kinds[k].spawns;
	} while (set != prev);
	return set;
}

static void mark(unsigned char *out, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (calls[i] >= 0 && calls[i] < MAX_NR)	/* negative: not on this architecture */
			out[calls[i]] = 1;
}

/* The calls of a set of kinds, deduplicated, into out (MAX_NR flags); returns how many. */
static size_t collect(unsigned int set, unsigned char *out)
{
	size_t n = 0;

	memset(out, 0, MAX_NR);
	mark(out, base_calls, ARRAY_SIZE(base_calls));
	for (int k = 0; k < KUMO_THREAD__COUNT; k++) {
		if (!(set & KIND(k)))
			continue;
		mark(out, kinds[k].calls, kinds[k].n);
		mark(out, kinds[k].more, kinds[k].nmore);
		if (kinds[k].spawns)
			mark(out, spawn_calls, ARRAY_SIZE(spawn_calls));
	}
	/* mmap/mprotect (never PROT_EXEC) and prctl are added with argument checks */
	out[SCMP_SYS(mmap)] = out[SCMP_SYS(mprotect)] = 1;
	for (int i = 0; i < MAX_NR; i++)
		n += out[i];
	return n;
}

size_t seccomp_allowed_count(enum kumo_thread kind)
{
	unsigned char set[MAX_NR];

	return kind < KUMO_THREAD__COUNT ? collect(closure(kind), set) : 0;
}

enum kumo_thread seccomp_device_kind(const char *devname)
{
	static const struct { const char *name; enum kumo_thread kind; } map[] = {
		{ "virtio-blk", KUMO_THREAD_BLK }, { "virtio-net", KUMO_THREAD_NET },
		{ "virtio-console", KUMO_THREAD_CONSOLE },
		{ "virtio-balloon", KUMO_THREAD_BALLOON },
	};

	for (size_t i = 0; i < ARRAY_SIZE(map); i++)
		if (!strcmp(devname, map[i].name))
			return map[i].kind;
	return KUMO_THREAD__COUNT;
}

static size_t put(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, unsigned long v)
{
	char tmp[24];
	int i = 0;

	do {
		tmp[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i && at + 1 < cap)
		buf[at++] = tmp[--i];
	return at;
}

/* The path an open or openat was given (our own memory: the call came from this process). */
static const char *open_path(unsigned int nr, void *uctx)
{
	const greg_t *r = ((const ucontext_t *)uctx)->uc_mcontext.gregs;

	if (nr == SYS_open)
		return (const char *)r[REG_RDI];
	if (nr == SYS_openat)
		return (const char *)r[REG_RSI];
	return NULL;
}

static size_t put_hex(char *buf, size_t at, size_t cap, unsigned long v)
{
	char tmp[20];
	int i = 0;

	do {
		tmp[i++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	at = put(buf, at, cap, "0x");
	while (i && at + 1 < cap)
		buf[at++] = tmp[--i];
	return at;
}

/* "  OBJECT(+OFFSET)" (addr2line -e OBJECT OFFSET) for one code address, with write(2) only. */
static void put_frame(uintptr_t pc, const char *what)
{
	char line[256];
	size_t at = put(line, 0, sizeof(line), "  ");
	Dl_info di;

	if (dladdr((void *)pc, &di) && di.dli_fname) {
		at = put(line, at, sizeof(line), di.dli_fname);
		at = put(line, at, sizeof(line), "(+");
		at = put_hex(line, at, sizeof(line), pc - (unsigned long)di.dli_fbase);
		at = put(line, at, sizeof(line), ")");
	} else {
		at = put_hex(line, at, sizeof(line), pc);
	}
	at = put(line, at, sizeof(line), what);
	at = put(line, at, sizeof(line), "\n");
	if (write(STDERR_FILENO, line, at) < 0)
		return;
}

/*
 * The stack of the call that trapped: its address, the word at the stack pointer (the caller
 * when libc's wrapper is a leaf), then the return addresses up the chain of frame pointers
 * (kumo is built with -fno-omit-frame-pointer), each frame checked to lie above the last and
 * below frames_top, so nothing unmapped is read. No unwinder: libgcc_s stays unloaded.
 */
static void put_stack(const ucontext_t *uc)
{
	uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
	uintptr_t fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];

	put_frame((uintptr_t)uc->uc_mcontext.gregs[REG_RIP], " (the call)");
	if (sp && !(sp & 7) && sp + 8 <= frames_top)
		put_frame(*(const uintptr_t *)sp, " (at the stack pointer)");
	for (int i = 0; i < 24 && fp >= sp && !(fp & 7) && fp + 16 <= frames_top; i++) {
		const uintptr_t *f = (const uintptr_t *)fp;

		put_frame(f[1], "");
		if (f[0] <= fp)
			break;
		fp = f[0];
	}
}

/*
 * Async-signal-safe: write(2), prctl(PR_GET_NAME), reads of the thread's own stack, dladdr
 * (no allocation, no system call) and exit_group only.
 */
static void on_sigsys(int sig, siginfo_t *si, void *uctx)
{
	char line[512], comm[17] = "?";
	unsigned int nr = (unsigned int)si->si_syscall;
	const char *path = open_path(nr, uctx);
	size_t at = 0;

	(void)sig;
	prctl(PR_GET_NAME, comm, 0, 0, 0);
	comm[16] = 0;
	at = put(line, at, sizeof(line), "kumo: error: seccomp: thread ");
	at = put(line, at, sizeof(line), comm);
	at = put(line, at, sizeof(line), " (");
	at = put(line, at, sizeof(line), thread_kind ? thread_kind : "?");
	at = put(line, at, sizeof(line), ") made a forbidden system call: ");
	at = put(line, at, sizeof(line), nr < MAX_NR && name_off[nr] ? names + name_off[nr] : "?");
	at = put(line, at, sizeof(line), " (");
	at = put_num(line, at, sizeof(line), nr);
	at = put(line, at, sizeof(line), ")");
	if (path) {
		at = put(line, at, sizeof(line), " of \"");
		for (int i = 0; path[i] && i < 160 && at + 1 < sizeof(line); i++)
			line[at++] = path[i];
		at = put(line, at, sizeof(line), "\"");
	}
	at = put(line, at, sizeof(line), "; stopping (--no-seccomp to debug); its stack:\n");
	if (write(STDERR_FILENO, line, at) < 0)
		at = 0;
	put_stack(uctx);
	_exit(1);
}

static int add_rules(scmp_filter_ctx ctx, const unsigned char *set);
static int compile(enum kumo_thread kind, struct sock_fprog *prog);

/*
 * libseccomp is used only here, at start (the filters' BPF and the names of the system calls
 * for the SIGSYS line are built once): dlopen'ed and closed after, so a running kumo does not
 * keep it mapped (docs/dependencies.md).
 */
#define LIBSECCOMP_SONAME "libseccomp.so.2"
static struct {
	void *h;
	typeof(seccomp_api_get) *api_get;
	typeof(seccomp_syscall_resolve_num_arch) *resolve;
	typeof(seccomp_init) *init;
	typeof(seccomp_rule_add) *rule_add;
	typeof(seccomp_export_bpf) *export_bpf;
	typeof(seccomp_release) *release;
} lib;

static int lib_open(void)
{
	const char *e;

	lib.h = dlopen(LIBSECCOMP_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!lib.h) {
		e = dlerror();
		pr_err("seccomp: %s", e ? e : "cannot load " LIBSECCOMP_SONAME);
		return -ELIBACC;
	}
	lib.api_get = (typeof(lib.api_get))dlsym(lib.h, "seccomp_api_get");
	lib.resolve = (typeof(lib.resolve))dlsym(lib.h, "seccomp_syscall_resolve_num_arch");
	lib.init = (typeof(lib.init))dlsym(lib.h, "seccomp_init");
	lib.rule_add = (typeof(lib.rule_add))dlsym(lib.h, "seccomp_rule_add");
	lib.export_bpf = (typeof(lib.export_bpf))dlsym(lib.h, "seccomp_export_bpf");
	lib.release = (typeof(lib.release))dlsym(lib.h, "seccomp_release");
	if (!lib.api_get || !lib.resolve || !lib.init || !lib.rule_add || !lib.export_bpf ||
	    !lib.release) {
		pr_err("seccomp: %s lacks a function kumo uses", LIBSECCOMP_SONAME);
		dlclose(lib.h);
		lib.h = NULL;
		return -ELIBBAD;
	}
	return 0;
}

static int build(void)
{
	size_t used = 1;

	if (lib.api_get() < 1)	/* also makes libseccomp probe the kernel now */
		return -ENOSYS;
	for (int nr = 0; nr < MAX_NR; nr++) {
		char *s = lib.resolve(SCMP_ARCH_NATIVE, nr);
		size_t len = s ? strlen(s) + 1 : 0;

		if (s && used + len <= sizeof(names)) {
			memcpy(names + used, s, len);
			name_off[nr] = (unsigned short)used;
			used += len;
		}
		free(s);
	}
	for (int k = 0; k < KUMO_THREAD__COUNT; k++) {
		int ret = compile(k, &progs[k]);

		if (ret < 0) {
			pr_err("seccomp: cannot build the %s filter: %s", kinds[k].name,
			       strerror(-ret));
			return ret;
		}
	}
	return 0;
}

int seccomp_enable(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
	int ret = lib_open();

	if (ret)
		return ret;
	ret = build();
	dlclose(lib.h);
	memset(&lib, 0, sizeof(lib));
	if (ret)
		return ret;
	/*
	 * json-c draws its hash seed once, on the first key hashed: getrandom, and while the
	 * kernel's pool is not ready (early in a fresh VM) open("/dev/urandom"), which no thread
	 * may do later. Draw it now.
	 */
	struct json_object *o = json_object_new_object();

	if (o) {
		json_object_object_add(o, "seed", NULL);
		json_object_put(o);
	}
	/*
	 * glibc reads the time zone (open("/etc/localtime")) on the first gmtime_r or localtime
	 * of the process: the RTC's first register read on a vCPU thread. Read it now.
	 */
	tzset();
	/* Inherited by every thread started from now on: their filters need it. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	sigfillset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return -errno;
	enabled = 1;
	return 0;
}

int seccomp_enabled(void)
{
	return enabled;
}

static int add_rules(scmp_filter_ctx ctx, const unsigned char *set)
{
	int ret = 0;

	for (int nr = 0; nr < MAX_NR && !ret; nr++) {
		if (!set[nr] || nr == SCMP_SYS(mmap) || nr == SCMP_SYS(mprotect) ||
		    nr == SCMP_SYS(prctl) || nr == SCMP_SYS(seccomp))
			continue;
		ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	}
	/* Memory, never executable: no new code in a kumo thread. */
	if (!ret)
		ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (!ret)
		ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* Thread names (the SIGSYS line reads its own) and, for spawners, a child's filter. */
	for (int i = 0; i < 2 && !ret; i++)
		ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				       SCMP_A0(SCMP_CMP_EQ, i ? PR_SET_NAME : PR_GET_NAME));
	if (!ret && set[SCMP_SYS(seccomp)]) {
		ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				       SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS));
		if (!ret)
			ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
					       SCMP_A0(SCMP_CMP_EQ, PR_CAPBSET_DROP));
		if (!ret)
			ret = lib.rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp), 1,
					       SCMP_A0(SCMP_CMP_EQ, SECCOMP_SET_MODE_FILTER));
	}
	return ret;
}

/*
 * Every kind's BPF, built once before any thread is filtered: a thread then installs its
 * filter with one system call (no libseccomp work, no allocation, nothing its starter's
 * filter must allow but seccomp itself), so a device worker serves its queues at once.
 */
static int compile(enum kumo_thread kind, struct sock_fprog *prog)
{
	unsigned char set[MAX_NR];
	scmp_filter_ctx ctx = lib.init(SCMP_ACT_TRAP);
	off_t size;
	int ret, fd;

	if (!ctx)
		return -ENOMEM;
	collect(closure(kind), set);
	ret = add_rules(ctx, set);
	fd = ret ? -1 : memfd_create("kumo-seccomp", MFD_CLOEXEC);
	if (!ret && fd < 0)
		ret = -errno;
	if (!ret)
		ret = lib.export_bpf(ctx, fd);
	lib.release(ctx);
	if (ret)
		goto out;
	size = lseek(fd, 0, SEEK_END);
	prog->filter = size > 0 ? malloc((size_t)size) : NULL;
	if (!prog->filter || pread(fd, prog->filter, (size_t)size, 0) != size) {
		free(prog->filter);
		prog->filter = NULL;
		ret = -EIO;
		goto out;
	}
	prog->len = (unsigned short)((size_t)size / sizeof(struct sock_filter));
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

/*
 * The capabilities of kind and of what it may start (they inherit the starter's); a starter
 * also keeps CAP_SETPCAP, so that its children can empty their bounding sets in turn.
 */
static uint64_t kind_caps(enum kumo_thread kind)
{
	unsigned int set = closure(kind);
	uint64_t caps = set != KIND(kind) ? 1ull << CAP_SETPCAP : 0;

	for (int k = 0; k < KUMO_THREAD__COUNT; k++)
		if (set & KIND(k))
			caps |= kinds[k].caps;
	return caps;
}

/*
 * Capabilities are per thread: keep in this one's bounding, permitted and effective sets only
 * what it uses (of what it has), none inheritable. Without CAP_SETPCAP (not root) the bounding
 * set stays and the rest is still dropped.
 */
static int drop_caps(uint64_t keep)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	for (int c = 0; c <= CAP_LAST_CAP; c++)
		if (!(keep & (1ull << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) &&
		    errno != EINVAL && errno != EPERM)
			return -errno;
	if (syscall(SYS_capget, &h, d))
		return -errno;
	for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
		d[i].effective &= (uint32_t)(keep >> (32 * i));
		d[i].permitted &= (uint32_t)(keep >> (32 * i));
		d[i].inheritable = 0;
	}
	return syscall(SYS_capset, &h, d) ? -errno : 0;
}

void seccomp_enter(enum kumo_thread kind)
{
	sigset_t sys;
	int ret = -EINVAL;

	if (!enabled)
		return;
	if (kind >= KUMO_THREAD__COUNT)
		goto fail;
	thread_kind = kinds[kind].name;
	/* Our frame's saved frame pointer is the caller's frame (-fno-omit-frame-pointer). */
	frames_top = *(const uintptr_t *)__builtin_frame_address(0) + 2 * sizeof(void *);
	/* A blocked SIGSYS would kill without the line: device workers block all signals. */
	sigemptyset(&sys);
	sigaddset(&sys, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &sys, NULL);
	ret = drop_caps(kind_caps(kind));	/* capset and prctl are not on the lists */
	if (ret)
		goto fail;
	if (!syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &progs[kind]))
		return;
	ret = -errno;
fail:
	pr_err("seccomp: cannot filter the %s thread (or drop its capabilities): %s",
	       seccomp_kind_name(kind), strerror(-ret));
	_exit(1);
}
