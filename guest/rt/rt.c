/* guest/rt: freestanding i386 and x86_64 runtime for kumo's guest programs (see rt.h for why). */
#include "rt.h"

/* ------------------------------------------------------------------ entry and syscalls */

/*
 * The kernel starts us with argc, argv[], NULL, envp[], NULL on the stack (words of the
 * native size); _start hands that address to rt_start_c on a 16-byte aligned stack.
 *
 * rt_clone_thread(flags, stack_top, tidptr): the child starts on stack_top, where the caller
 * stored the struct rt_thread pointer, and calls rt_thread_entry(t). tidptr is both the
 * parent's and the child's tid pointer (CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID); the clone
 * arguments are (flags, stack, parent_tid, tls, child_tid) on i386 but
 * (flags, stack, parent_tid, child_tid, tls) on x86_64.
 */
#ifdef __x86_64__
__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	movq %rsp, %rdi\n"
	"	andq $-16, %rsp\n"
	"	call rt_start_c\n"
	"	hlt\n"

	".globl rt_clone_thread\n"
	"rt_clone_thread:\n"
	"	movq %rdx, %r10\n"		/* child_tid; flags, stack, parent_tid in place */
	"	xorl %r8d, %r8d\n"		/* tls */
	"	movl $56, %eax\n"		/* SYS_clone */
	"	syscall\n"
	"	testq %rax, %rax\n"
	"	jz 1f\n"
	"	ret\n"
	"1:	xorl %ebp, %ebp\n"
	"	movq (%rsp), %rdi\n"
	"	call rt_thread_entry\n"
	"	hlt\n");

long rt_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long r;

	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return r;
}

long rt_sys5(long n, long a, long b, long c, long d, long e)
{
	return rt_syscall6(n, a, b, c, d, e, 0);
}

/* A 64-bit file offset is one argument (the second, "high", one is ignored or unused). */
#define OFF64_ARGS(off) (long)(off), 0L

/* The plain calls already take a byte offset and a 64-bit time_t. */
#define SYS_MMAP SYS_mmap
#define SYS_CLOCK_GETTIME SYS_clock_gettime
#define SYS_CLOCK_NANOSLEEP SYS_clock_nanosleep
#define SYS_FUTEX SYS_futex
#else
__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	movl %esp, %eax\n"
	"	andl $-16, %esp\n"
	"	subl $12, %esp\n"
	"	pushl %eax\n"
	"	call rt_start_c\n"
	"	hlt\n"

	/* long rt_syscall6(n, a, b, c, d, e, f): the sixth argument goes in %ebp. */
	".globl rt_syscall6\n"
	"rt_syscall6:\n"
	"	pushl %ebp\n"
	"	pushl %ebx\n"
	"	pushl %esi\n"
	"	pushl %edi\n"
	"	movl 20(%esp), %eax\n"
	"	movl 24(%esp), %ebx\n"
	"	movl 28(%esp), %ecx\n"
	"	movl 32(%esp), %edx\n"
	"	movl 36(%esp), %esi\n"
	"	movl 40(%esp), %edi\n"
	"	movl 44(%esp), %ebp\n"
	"	int $0x80\n"
	"	popl %edi\n"
	"	popl %esi\n"
	"	popl %ebx\n"
	"	popl %ebp\n"
	"	ret\n"

	".globl rt_clone_thread\n"
	"rt_clone_thread:\n"
	"	pushl %ebx\n"
	"	pushl %esi\n"
	"	pushl %edi\n"
	"	movl 16(%esp), %ebx\n"
	"	movl 20(%esp), %ecx\n"
	"	movl 24(%esp), %edx\n"
	"	xorl %esi, %esi\n"
	"	movl 24(%esp), %edi\n"
	"	movl $120, %eax\n"		/* SYS_clone */
	"	int $0x80\n"
	"	testl %eax, %eax\n"
	"	jz 1f\n"
	"	popl %edi\n"
	"	popl %esi\n"
	"	popl %ebx\n"
	"	ret\n"
	"1:	xorl %ebp, %ebp\n"
	"	call rt_thread_entry\n"	/* its argument: the pointer at stack_top */
	"	hlt\n");

long rt_sys5(long n, long a, long b, long c, long d, long e)
{
	long r;

	__asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
			 : "memory");
	return r;
}

/* A 64-bit file offset is two registers: low, high. */
#define OFF64_ARGS(off) (long)(u32)(off), (long)(u32)((off) >> 32)

/* mmap (90) takes a struct; the test kernel has no COMPAT_32BIT_TIME: *_time64 only. */
#define SYS_MMAP SYS_mmap2
#define SYS_CLOCK_GETTIME SYS_clock_gettime64
#define SYS_CLOCK_NANOSLEEP SYS_clock_nanosleep_time64
#define SYS_FUTEX SYS_futex_time64
#endif

void rt_start_c(long *sp);
long rt_clone_thread(unsigned long flags, void *stack_top, volatile u32 *tid);
void rt_thread_entry(struct rt_thread *t);

void rt_start_c(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);

	rt_exit(main(argc, argv, argv + argc + 1));
}

long rt_open(const char *path, int flags, int mode)
{
	return rt_sys3(SYS_open, path, flags, mode);
}

long rt_close(long fd)
{
	return rt_sys1(SYS_close, fd);
}

long rt_read(long fd, void *buf, u32 len)
{
	return rt_sys3(SYS_read, fd, buf, len);
}

long rt_write(long fd, const void *buf, u32 len)
{
	return rt_sys3(SYS_write, fd, buf, len);
}

long rt_write_all(long fd, const void *buf, u32 len)
{
	const char *p = buf;
	u32 done = 0;

	while (done < len) {
		long n = rt_write(fd, p + done, len - done);

		if (n == -EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? n : -EPIPE;
		done += (u32)n;
	}
	return done;
}

long rt_pread(long fd, void *buf, u32 len, u64 off)
{
	return rt_sys5(SYS_pread64, fd, (long)buf, (long)len, OFF64_ARGS(off));
}

long rt_pwrite(long fd, const void *buf, u32 len, u64 off)
{
	return rt_sys5(SYS_pwrite64, fd, (long)buf, (long)len, OFF64_ARGS(off));
}

long rt_preadv2(long fd, const struct rt_iovec *iov, int n, u64 off, int flags)
{
	return rt_syscall6(SYS_preadv2, fd, (long)iov, n, OFF64_ARGS(off), flags);
}

long rt_poll(struct rt_pollfd *fds, u32 n, int timeout_ms)
{
	return rt_sys3(SYS_poll, fds, n, timeout_ms);
}

long rt_mount(const char *src, const char *dst, const char *type, unsigned long flags,
	      const void *data)
{
	return rt_sys5(SYS_mount, (long)src, (long)dst, (long)type, (long)flags, (long)data);
}

long rt_wait4(long pid, int *status, int options)
{
	return rt_sys4(SYS_wait4, pid, status, options, 0);
}

void *rt_mmap(u32 len)
{
	long p = rt_syscall6(SYS_MMAP, 0, (long)len, 3 /* RW */, 0x22 /* PRIVATE|ANON */, -1, 0);

	return rt_is_err(p) ? NULL : (void *)p;
}

long rt_munmap(void *p, u32 len)
{
	return rt_sys2(SYS_munmap, p, len);
}

u64 rt_now_ns(void)
{
	s64 ts[2] = { 0, 0 };

	rt_sys2(SYS_CLOCK_GETTIME, CLOCK_MONOTONIC, ts);
	return (u64)ts[0] * 1000000000ULL + (u64)ts[1];
}

void rt_sleep_ms(u32 ms)
{
	s64 ts[2] = { ms / 1000, (s64)(ms % 1000) * 1000000 };

	while (rt_sys4(SYS_CLOCK_NANOSLEEP, CLOCK_MONOTONIC, 0, ts, ts) == -EINTR)
		;
}

long rt_futex_wait(volatile u32 *addr, u32 val, u32 timeout_ms)
{
	s64 ts[2] = { timeout_ms / 1000, (s64)(timeout_ms % 1000) * 1000000 };

	return rt_sys4(SYS_FUTEX, addr, FUTEX_WAIT, val, timeout_ms ? ts : NULL);
}

long rt_futex_wake(volatile u32 *addr, u32 n)
{
	return rt_sys3(SYS_FUTEX, addr, FUTEX_WAKE, n);
}

void rt_exit(int code)
{
	for (;;)
		rt_sys1(SYS_exit_group, code);
}

void rt_ignore_sigpipe(void)
{
	/*
	 * The kernel's struct sigaction: handler, flags, restorer, then an 8-byte mask (two words
	 * on i386, one on x86_64). SIG_IGN runs no handler, so no restorer is needed.
	 */
	unsigned long act[5] = { 1 /* SIG_IGN */, 0, 0, 0, 0 };

	rt_sys4(SYS_rt_sigaction, SIGPIPE, act, 0, 8);
}

int rt_cpu_count(void)
{
	u32 mask[32];
	long n = rt_sys3(SYS_sched_getaffinity, 0, sizeof(mask), mask);
	int cpus = 0;

	for (long i = 0; i < n / 4; i++)
		for (u32 m = mask[i]; m; m &= m - 1)
			cpus++;
	return cpus ? cpus : 1;
}

long rt_pin_cpu(int cpu)
{
	u32 mask[2] = { 0, 0 };

	if (cpu < 0 || cpu >= 64)
		return -EINVAL;
	mask[cpu / 32] = 1u << (cpu % 32);
	return rt_sys3(SYS_sched_setaffinity, 0, sizeof(mask), mask);
}

/* --------------------------------------------------------------------- arithmetic */

u64 rt_udivmod64(u64 n, u64 d, u64 *rem)
{
	u64 q = 0, r = 0;

	if (!d) {			/* no trap: callers guard, this keeps a bug harmless */
		if (rem)
			*rem = n;
		return ~0ULL;
	}
	if (!(n >> 32) && !(d >> 32)) {
		if (rem)
			*rem = (u32)n % (u32)d;
		return (u32)n / (u32)d;
	}
	for (int i = 63; i >= 0; i--) {
		int carry = (int)(r >> 63);

		r = (r << 1) | ((n >> i) & 1);
		if (carry || r >= d) {
			r -= d;
			q |= 1ULL << i;
		}
	}
	if (rem)
		*rem = r;
	return q;
}

#ifndef __x86_64__
/* What gcc calls for 64-bit '/' and '%' on i386. */
u64 __udivdi3(u64 a, u64 b);
u64 __umoddi3(u64 a, u64 b);
s64 __divdi3(s64 a, s64 b);
s64 __moddi3(s64 a, s64 b);
u64 __udivmoddi4(u64 a, u64 b, u64 *rem);

u64 __udivdi3(u64 a, u64 b)
{
	return rt_udivmod64(a, b, NULL);
}

u64 __umoddi3(u64 a, u64 b)
{
	u64 r;

	rt_udivmod64(a, b, &r);
	return r;
}

u64 __udivmoddi4(u64 a, u64 b, u64 *rem)
{
	return rt_udivmod64(a, b, rem);
}

s64 __divdi3(s64 a, s64 b)
{
	int neg = (a < 0) != (b < 0);
	u64 q = rt_udivmod64(a < 0 ? -(u64)a : (u64)a, b < 0 ? -(u64)b : (u64)b, NULL);

	return neg ? -(s64)q : (s64)q;
}

s64 __moddi3(s64 a, s64 b)
{
	u64 r;

	rt_udivmod64(a < 0 ? -(u64)a : (u64)a, b < 0 ? -(u64)b : (u64)b, &r);
	return a < 0 ? -(s64)r : (s64)r;
}
#endif

/* ------------------------------------------------------------------- strings, memory */

void *memcpy(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;

	if (d < s) {
		while (n--)
			*d++ = *s++;
	} else {
		while (n--)
			d[n] = s[n];
	}
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	u8 *d = dst;

	while (n--)
		*d++ = (u8)c;
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

u32 rt_strlen(const char *s)
{
	u32 n = 0;

	while (s[n])
		n++;
	return n;
}

int rt_streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

int rt_starts(const char *s, const char *p)
{
	while (*p)
		if (*s++ != *p++)
			return 0;
	return 1;
}

char *rt_strcpy_n(char *dst, const char *src, u32 size)
{
	u32 i = 0;

	if (!size)
		return dst;
	for (; i + 1 < size && src[i]; i++)
		dst[i] = src[i];
	dst[i] = 0;
	return dst;
}

char *rt_utoa(u64 v, char *end)
{
	*--end = 0;
	do {
		u64 r;

		v = rt_udivmod64(v, 10, &r);
		*--end = (char)('0' + r);
	} while (v);
	return end;
}

int rt_parse_u64(const char *s, u64 *out)
{
	u64 v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (~0ULL - 9) / 10)
			return -1;
		v = v * 10 + (u64)(*s - '0');
	}
	*out = v;
	return 0;
}

/* ---------------------------------------------------------------------- rt_buf / JSON */

void rt_buf_init(struct rt_buf *b, char *mem, u32 cap)
{
	b->p = mem;
	b->len = 0;
	b->cap = cap;
	b->overflow = 0;
	b->first = 1;
}

void rt_buf_mem(struct rt_buf *b, const void *s, u32 n)
{
	/* One byte stays free for rt_buf_cstr's NUL. */
	if (b->len + n + 1 > b->cap || b->len + n < b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void rt_buf_str(struct rt_buf *b, const char *s)
{
	rt_buf_mem(b, s, rt_strlen(s));
}

void rt_buf_char(struct rt_buf *b, char c)
{
	rt_buf_mem(b, &c, 1);
}

void rt_buf_u64(struct rt_buf *b, u64 v)
{
	char t[24];

	rt_buf_str(b, rt_utoa(v, t + sizeof(t)));
}

void rt_buf_s64(struct rt_buf *b, s64 v)
{
	if (v < 0) {
		rt_buf_char(b, '-');
		rt_buf_u64(b, -(u64)v);
	} else {
		rt_buf_u64(b, (u64)v);
	}
}

void rt_buf_hex(struct rt_buf *b, u64 v)
{
	char t[20], *e = t + sizeof(t);

	*--e = 0;
	do {
		*--e = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	rt_buf_str(b, e);
}

void rt_buf_frac(struct rt_buf *b, u64 v, u32 scale)
{
	u64 rem, ip = rt_udivmod64(v, scale ? scale : 1, &rem);

	rt_buf_u64(b, ip);
	if (scale > 1) {
		char t[12];
		int digits = 0;

		for (u32 s = scale; s > 1; s /= 10)
			digits++;
		for (int i = digits - 1; i >= 0; i--) {
			t[i] = (char)('0' + rem % 10);
			rem /= 10;
		}
		rt_buf_char(b, '.');
		rt_buf_mem(b, t, (u32)digits);
	}
}

const char *rt_buf_cstr(struct rt_buf *b)
{
	if (b->cap)
		b->p[b->len < b->cap ? b->len : b->cap - 1] = 0;
	return b->p;
}

static void put_escaped(struct rt_buf *b, const char *s, u32 n)
{
	rt_buf_char(b, '"');
	for (u32 i = 0; i < n; i++) {
		u8 c = (u8)s[i];

		if (c == '"' || c == '\\') {
			rt_buf_char(b, '\\');
			rt_buf_char(b, (char)c);
		} else if (c < 0x20 || c >= 0x7f) {
			/* Bytes are not guaranteed UTF-8: escape so the line stays valid JSON. */
			rt_buf_str(b, "\\u00");
			rt_buf_char(b, "0123456789abcdef"[c >> 4]);
			rt_buf_char(b, "0123456789abcdef"[c & 15]);
		} else {
			rt_buf_char(b, (char)c);
		}
	}
	rt_buf_char(b, '"');
}

static void jw_sep_key(struct rt_buf *b, const char *key)
{
	if (!b->first)
		rt_buf_char(b, ',');
	b->first = 0;
	if (key) {
		put_escaped(b, key, rt_strlen(key));
		rt_buf_char(b, ':');
	}
}

void jw_obj(struct rt_buf *b, const char *key)
{
	jw_sep_key(b, key);
	rt_buf_char(b, '{');
	b->first = 1;
}

void jw_arr(struct rt_buf *b, const char *key)
{
	jw_sep_key(b, key);
	rt_buf_char(b, '[');
	b->first = 1;
}

void jw_end_obj(struct rt_buf *b)
{
	rt_buf_char(b, '}');
	b->first = 0;
}

void jw_end_arr(struct rt_buf *b)
{
	rt_buf_char(b, ']');
	b->first = 0;
}

void jw_u64(struct rt_buf *b, const char *key, u64 v)
{
	jw_sep_key(b, key);
	rt_buf_u64(b, v);
}

void jw_s64(struct rt_buf *b, const char *key, s64 v)
{
	jw_sep_key(b, key);
	rt_buf_s64(b, v);
}

void jw_frac(struct rt_buf *b, const char *key, u64 v, u32 scale)
{
	jw_sep_key(b, key);
	rt_buf_frac(b, v, scale);
}

void jw_strn(struct rt_buf *b, const char *key, const char *s, u32 n)
{
	jw_sep_key(b, key);
	put_escaped(b, s, n);
}

void jw_str(struct rt_buf *b, const char *key, const char *s)
{
	jw_strn(b, key, s, rt_strlen(s));
}

void jw_bool(struct rt_buf *b, const char *key, int v)
{
	jw_sep_key(b, key);
	rt_buf_str(b, v ? "true" : "false");
}

void jw_null(struct rt_buf *b, const char *key)
{
	jw_sep_key(b, key);
	rt_buf_str(b, "null");
}

void jw_raw(struct rt_buf *b, const char *key, const char *raw, u32 n)
{
	jw_sep_key(b, key);
	rt_buf_mem(b, raw, n);
}

void rt_puts(const char *s)
{
	rt_write_all(1, s, rt_strlen(s));
}

void rt_put_line(struct rt_buf *b)
{
	/* rt_buf_mem keeps one byte free, so the newline always fits. */
	b->p[b->len] = '\n';
	rt_write_all(1, b->p, b->len + 1);
}

/* ------------------------------------------------------------------- allocation */

static u8 *bump_cur, *bump_end;

void *rt_alloc(u32 size)
{
	const u32 CHUNK = 1 * MiB;
	void *p;

	size = (size + 15) & ~15u;
	if (!size || size > 0x40000000u)
		return NULL;
	if (size >= CHUNK / 4)
		return rt_mmap(size);		/* mmap memory is zeroed */
	if (!bump_cur || (u32)(bump_end - bump_cur) < size) {
		bump_cur = rt_mmap(CHUNK);
		if (!bump_cur)
			return NULL;
		bump_end = bump_cur + CHUNK;
	}
	p = bump_cur;
	bump_cur += size;
	return p;
}

/* ----------------------------------------------------------------------- threads */

#define CLONE_THREAD_FLAGS                                                              \
	(0x100 /* VM */ | 0x200 /* FS */ | 0x400 /* FILES */ | 0x800 /* SIGHAND */ |        \
	 0x10000 /* THREAD */ | 0x40000 /* SYSVSEM */ | 0x100000 /* PARENT_SETTID */ |       \
	 0x200000 /* CHILD_CLEARTID */)

void rt_thread_entry(struct rt_thread *t)
{
	t->fn(t->arg);
	for (;;)
		rt_sys1(SYS_exit, 0);	/* this thread only; the kernel clears t->tid and wakes */
}

int rt_thread_start(struct rt_thread *t, void (*fn)(void *), void *arg)
{
	void **top;
	long r;

	t->stack_size = 256 * 1024;
	t->stack = rt_mmap(t->stack_size);
	if (!t->stack)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->tid = 0;
	top = (void **)((u8 *)t->stack + t->stack_size - 16);	/* 16-byte aligned */
	top[0] = t;
	r = rt_clone_thread(CLONE_THREAD_FLAGS, top, &t->tid);
	if (r < 0) {
		rt_munmap(t->stack, t->stack_size);
		t->stack = NULL;
		return (int)r;
	}
	return 0;
}

void rt_thread_join(struct rt_thread *t)
{
	u32 v;

	if (!t->stack)
		return;
	while ((v = t->tid) != 0)
		rt_futex_wait(&t->tid, v, 0);
	rt_munmap(t->stack, t->stack_size);
	t->stack = NULL;
}

/* -------------------------------------------------------------------- arguments, files */

const char *rt_arg(int argc, char **argv, const char *key)
{
	u32 n = rt_strlen(key);

	for (int i = argc - 1; i >= 1; i--)	/* the last one wins */
		if (rt_starts(argv[i], key) && argv[i][n] == '=')
			return argv[i] + n + 1;
	return NULL;
}

u64 rt_arg_u64(int argc, char **argv, const char *key, u64 dflt)
{
	const char *s = rt_arg(argc, argv, key);
	u64 v;

	return s && rt_parse_u64(s, &v) == 0 ? v : dflt;
}

const char *rt_arg_str(int argc, char **argv, const char *key, const char *dflt)
{
	const char *s = rt_arg(argc, argv, key);

	return s ? s : dflt;
}

long rt_slurp(const char *path, char *buf, u32 size)
{
	long fd = rt_open(path, O_RDONLY | O_CLOEXEC, 0), n;
	u32 got = 0;

	if (fd < 0)
		return fd;
	while (got + 1 < size && (n = rt_read(fd, buf + got, size - 1 - got)) > 0)
		got += (u32)n;
	rt_close(fd);
	buf[got] = 0;
	return got;
}
