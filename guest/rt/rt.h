/*
 * guest/rt: the freestanding runtime of kumo's guest programs (kumo-probe, kumo-agent, the
 * workloads), built for i386 and for x86_64 from this one source.
 *
 * Why: on PVM hosts guest user code runs in KVM's instruction emulator right after every return
 * from the kernel, and that emulator has no SSE/x87, so libc programs die (docs/pvm.md). The
 * i386 build (initramfs-pvm.cpio) is for those hosts: -mgeneral-regs-only, system calls with
 * int $0x80, and since the test kernel has no COMPAT_32BIT_TIME only the *_time64 time calls.
 * On SVM/VMX hosts and QEMU the same programs run as ordinary x86_64 binaries (syscall
 * instruction; initramfs.cpio). There is no floating point anywhere (integers, fixed point, ppm).
 * What differs between the two is in the #ifdef __x86_64__ blocks here and in rt.c.
 *
 * A program defines main(argc, argv, envp); rt's _start calls it and exits with its value.
 * Build: gcc -m32 or -m64 -ffreestanding -nostdlib -static -fno-pic -no-pie -mgeneral-regs-only
 *        -fno-stack-protector -fno-builtin (guest/build.sh).
 */
#ifndef KUMO_GUEST_RT_H
#define KUMO_GUEST_RT_H

#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint32_t u32;
typedef int32_t s32;
typedef uint64_t u64;
typedef int64_t s64;

#ifdef __x86_64__
/* x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
enum {
	SYS_read = 0, SYS_write = 1, SYS_open = 2, SYS_close = 3, SYS_poll = 7, SYS_lseek = 8,
	SYS_mmap = 9, SYS_munmap = 11, SYS_rt_sigaction = 13, SYS_pread64 = 17,
	SYS_pwrite64 = 18, SYS_pipe = 22, SYS_madvise = 28, SYS_dup2 = 33, SYS_pause = 34,
	SYS_getpid = 39, SYS_clone = 56, SYS_fork = 57, SYS_execve = 59, SYS_exit = 60,
	SYS_wait4 = 61, SYS_kill = 62, SYS_fsync = 74, SYS_mkdir = 83, SYS_unlink = 87,
	SYS_getppid = 110, SYS_sync = 162, SYS_mount = 165, SYS_umount2 = 166, SYS_reboot = 169,
	SYS_gettid = 186, SYS_futex = 202, SYS_sched_setaffinity = 203,
	SYS_sched_getaffinity = 204, SYS_getdents64 = 217, SYS_clock_gettime = 228,
	SYS_clock_nanosleep = 230, SYS_exit_group = 231, SYS_openat = 257, SYS_pipe2 = 293,
	SYS_preadv2 = 327, SYS_io_setup = 206, SYS_io_destroy = 207, SYS_io_submit = 209,
	SYS_io_pgetevents = 333,
};
#else
/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
enum {
	SYS_exit = 1, SYS_fork = 2, SYS_read = 3, SYS_write = 4, SYS_open = 5, SYS_close = 6,
	SYS_unlink = 10, SYS_execve = 11, SYS_lseek = 19, SYS_getpid = 20, SYS_mount = 21,
	SYS_pause = 29, SYS_sync = 36, SYS_kill = 37, SYS_mkdir = 39, SYS_pipe = 42,
	SYS_dup2 = 63, SYS_getppid = 64, SYS_reboot = 88, SYS_old_mmap = 90, SYS_munmap = 91,
	SYS_wait4 = 114, SYS_fsync = 118, SYS_clone = 120, SYS_umount2 = 52, SYS_poll = 168,
	SYS_rt_sigaction = 174, SYS_pread64 = 180, SYS_pwrite64 = 181, SYS_mmap2 = 192,
	SYS_madvise = 219, SYS_getdents64 = 220, SYS_gettid = 224, SYS_sched_setaffinity = 241,
	SYS_sched_getaffinity = 242, SYS_exit_group = 252, SYS_openat = 295, SYS_pipe2 = 331,
	SYS_preadv2 = 378, SYS_clock_gettime64 = 403, SYS_clock_nanosleep_time64 = 407,
	SYS_futex_time64 = 422, SYS_io_setup = 245, SYS_io_destroy = 246, SYS_io_submit = 248,
	SYS_io_pgetevents = 416,	/* io_pgetevents_time64 */
};
#endif

#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_NONBLOCK 04000
#define O_DIRECT 040000
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000
#define AT_FDCWD (-100)
#define RWF_NOWAIT 0x8
#define EINTR 4
#define EAGAIN 11
#define EPIPE 32
#define ENODEV 19
#define EBUSY 16
#define ENOENT 2
#define ECHILD 10
#define EINVAL 22
#define ENOMEM 12
#define MS_RDONLY 1
#define POLLIN 0x1
#define POLLOUT 0x4
#define POLLERR 0x8
#define POLLHUP 0x10
#define POLLNVAL 0x20
#define WNOHANG 1
#define SIGKILL 9
#define SIGPIPE 13
#define SIGTERM 15
#define CLOCK_MONOTONIC 1
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_PRIVATE 128
#define MiB (1024 * 1024)

struct rt_pollfd {
	int fd;
	short events, revents;
};

struct rt_iovec {
	void *base;
	size_t len;
};

/* Raw system calls: the return value is the result or -errno. */
long rt_syscall6(long n, long a, long b, long c, long d, long e, long f);
long rt_sys5(long n, long a, long b, long c, long d, long e);
#define rt_sys0(n) rt_sys5(n, 0, 0, 0, 0, 0)
#define rt_sys1(n, a) rt_sys5(n, (long)(a), 0, 0, 0, 0)
#define rt_sys2(n, a, b) rt_sys5(n, (long)(a), (long)(b), 0, 0, 0)
#define rt_sys3(n, a, b, c) rt_sys5(n, (long)(a), (long)(b), (long)(c), 0, 0)
#define rt_sys4(n, a, b, c, d) rt_sys5(n, (long)(a), (long)(b), (long)(c), (long)(d), 0)

/* -4095..-1 are errors; anything else (an address from mmap too) is a result. */
static inline int rt_is_err(long r)
{
	return (unsigned long)r > -4096UL;
}

long rt_open(const char *path, int flags, int mode);
long rt_close(long fd);
long rt_read(long fd, void *buf, u32 len);
long rt_write(long fd, const void *buf, u32 len);
long rt_write_all(long fd, const void *buf, u32 len);
long rt_pread(long fd, void *buf, u32 len, u64 off);
long rt_pwrite(long fd, const void *buf, u32 len, u64 off);
long rt_preadv2(long fd, const struct rt_iovec *iov, int n, u64 off, int flags);
long rt_poll(struct rt_pollfd *fds, u32 n, int timeout_ms);
long rt_mount(const char *src, const char *dst, const char *type, unsigned long flags,
	      const void *data);
long rt_wait4(long pid, int *status, int options);
void *rt_mmap(u32 len);			/* anonymous, private, RW; NULL on failure */
long rt_munmap(void *p, u32 len);
u64 rt_now_ns(void);			/* CLOCK_MONOTONIC */
void rt_sleep_ms(u32 ms);
long rt_futex_wait(volatile u32 *addr, u32 val, u32 timeout_ms);	/* 0 = no timeout */
long rt_futex_wake(volatile u32 *addr, u32 n);
__attribute__((noreturn)) void rt_exit(int code);
void rt_ignore_sigpipe(void);
int rt_cpu_count(void);			/* CPUs this process may run on (sched_getaffinity) */
long rt_pin_cpu(int cpu);		/* this thread onto one CPU (< 64) */

/* 64-bit division without libgcc (also exported as __udivdi3 and friends). */
u64 rt_udivmod64(u64 n, u64 d, u64 *rem);

/* Strings and memory (also memcpy/memset/memmove/memcmp for the compiler). */
u32 rt_strlen(const char *s);
int rt_streq(const char *a, const char *b);
int rt_starts(const char *s, const char *prefix);
char *rt_strcpy_n(char *dst, const char *src, u32 size);	/* always terminates */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* Numbers to text. */
char *rt_utoa(u64 v, char *end);		/* decimal, writes backwards from end (NUL'd) */
int rt_parse_u64(const char *s, u64 *out);	/* whole string decimal; 0 ok, -1 bad */

/* A growing-in-place text buffer; writes past cap are dropped and flagged. */
struct rt_buf {
	char *p;
	u32 len, cap;
	int overflow;
	int first;			/* JSON: no comma needed before the next item */
};
void rt_buf_init(struct rt_buf *b, char *mem, u32 cap);
void rt_buf_mem(struct rt_buf *b, const void *s, u32 n);
void rt_buf_str(struct rt_buf *b, const char *s);
void rt_buf_char(struct rt_buf *b, char c);
void rt_buf_u64(struct rt_buf *b, u64 v);
void rt_buf_s64(struct rt_buf *b, s64 v);
void rt_buf_hex(struct rt_buf *b, u64 v);
void rt_buf_frac(struct rt_buf *b, u64 v, u32 scale);	/* v / scale with decimals, e.g. 1.5 */
const char *rt_buf_cstr(struct rt_buf *b);		/* NUL-terminates (cap must leave room) */

/* JSON writer on an rt_buf: keys may be NULL inside arrays. Strings are escaped. */
void jw_obj(struct rt_buf *b, const char *key);		/* { */
void jw_arr(struct rt_buf *b, const char *key);		/* [ */
void jw_end_obj(struct rt_buf *b);
void jw_end_arr(struct rt_buf *b);
void jw_u64(struct rt_buf *b, const char *key, u64 v);
void jw_s64(struct rt_buf *b, const char *key, s64 v);
void jw_str(struct rt_buf *b, const char *key, const char *s);
void jw_strn(struct rt_buf *b, const char *key, const char *s, u32 n);
void jw_bool(struct rt_buf *b, const char *key, int v);
void jw_null(struct rt_buf *b, const char *key);
void jw_raw(struct rt_buf *b, const char *key, const char *raw, u32 n);	/* trusted JSON */
void jw_frac(struct rt_buf *b, const char *key, u64 v, u32 scale);	/* number v/scale */

/* Output to stdout. */
void rt_puts(const char *s);
void rt_put_line(struct rt_buf *b);	/* writes b + "\n" to stdout in one write */

/* Memory: bump allocator over mmap'd chunks (never freed) and whole mappings. */
void *rt_alloc(u32 size);		/* zeroed, 16-byte aligned; NULL when out of memory */

/* Threads: raw clone(CLONE_VM|...|CLONE_THREAD) with a mmap'd stack; join via futex. */
struct rt_thread {
	volatile u32 tid;		/* cleared by the kernel at exit (CLONE_CHILD_CLEARTID) */
	void *stack;
	u32 stack_size;
	void (*fn)(void *);
	void *arg;
};
int rt_thread_start(struct rt_thread *t, void (*fn)(void *), void *arg);
void rt_thread_join(struct rt_thread *t);

/* key=value program arguments: "name=value" pairs in argv[1..]. */
const char *rt_arg(int argc, char **argv, const char *key);
u64 rt_arg_u64(int argc, char **argv, const char *key, u64 dflt);
const char *rt_arg_str(int argc, char **argv, const char *key, const char *dflt);

/* Whole small file into buf (NUL-terminated); length or -errno. */
long rt_slurp(const char *path, char *buf, u32 size);

/* A simple, fast PRNG (xorshift64*); never returns the same state twice in 2^64-1 steps. */
static inline u64 rt_rand(u64 *s)
{
	u64 x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) without 64-bit division: the high 32 bits of a 32x32 product. */
static inline u32 rt_rand_below(u64 *s, u32 n)
{
	return (u32)(((rt_rand(s) >> 32) * (u64)n) >> 32);
}

static inline u32 rt_atomic_inc(volatile u32 *p)
{
	return __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST);
}

int main(int argc, char **argv, char **envp);

#endif
