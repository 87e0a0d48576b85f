/*
 * kumo-probe: a tiny guest userspace for hosts where ordinary userspace cannot run.
 *
 * On PVM hosts the guest's user code runs in KVM's emulator right after every return from
 * the kernel, and that emulator has no SSE: glibc-based programs die (docs/pvm.md). This
 * program is freestanding C with general-purpose registers only; its 32-bit build
 * (initramfs-pvm.cpio) makes its system calls with int $0x80, so it runs there (with the test
 * kernel's int $0x80 fix-up), and the 64-bit build (initramfs.cpio) everywhere else. It is /init (rdinit=/sbin/kumo-probe) and runs the checks named on the
 * kernel command line, printing "KUMO-CHECK key=value" lines the host tests read:
 *
 *   kumo.probe=info,blk,agent,touch,balloon,poweroff   (in that order, any subset)
 *   info      nproc, MemTotal, MSI-X interrupt lines in /proc/interrupts
 *   blk       FNV-1a of the first 1 MiB of /dev/vdb; 1 MiB pattern written to /dev/vda at 1 MiB
 *             and fsync'd; a write to /dev/vdb (read-only) must fail
 *   agent     finds the org.kumo.agent port, reads one line from the host, answers "echo: LINE"
 *   touch     with the host in step over the agent port ("go", "free", "continue" lines):
 *             touches kumo.touch_mb=N MiB (64), frees it, waits while the host watches
 *   fswrite   mounts the ext4 file system on /dev/vda (the only disk in that boot), writes /kumo.txt (the kumo.token=
 *             value), fsyncs, unmounts
 *   fsread    mounts it again and prints /kumo.txt
 *   blkbench  O_DIRECT on /dev/vda: 4 KiB random reads at QD1 (pread) and QD32 (Linux AIO),
 *             kumo.blkbench_s=N seconds each (1), 1 MiB sequential reads and writes; prints
 *             KUMO-BENCH name=value lines (IOPS, MiB/s) from the guest's clock
 *   balloon   prints MemTotal whenever it changes, until it went down and back (or 900 s)
 *   numa      /sys/devices/system/node: online nodes, each node's CPU list, MemTotal and
 *             distance row; CPUID 0x40000001 EAX (the KVM PV features this guest was given)
 *   data      mounts the workloads' data disk (kumo.data=DEV, default /dev/vda) on /data:
 *             read-write, or read-only when the disk is (docs/guest.md)
 *   agentd    becomes the guest agent: execve /sbin/kumo-agent (stays PID 1; steps after it
 *             never run). kumo.agent_period_ms=N sets its stats period
 *   poweroff  reboot(POWER_OFF): ACPI S5, kumo exits 0
 * Build: gcc -m32 or -m64 -ffreestanding -nostdlib -static -mgeneral-regs-only with guest/rt
 * (guest/build.sh).
 */
#include "../rt/rt.h"

/* Decimal, or hex (base 16). */
static char *utoa(u64 v, char *end, int base)
{
	if (base != 16)
		return rt_utoa(v, end);
	*--end = 0;
	do {
		*--end = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	return end;
}

static void check(const char *key, const char *val)
{
	rt_puts("KUMO-CHECK ");
	rt_puts(key);
	rt_puts("=");
	rt_puts(val);
	rt_puts("\n");
}

/* The decimal number at the start of s (0 if none). */
static long leading_num(const char *s)
{
	long v = 0;

	for (; *s >= '0' && *s <= '9'; s++)
		v = v * 10 + (*s - '0');
	return v;
}

static void check_num(const char *key, u64 v, int base)
{
	char b[32];

	check(key, utoa(v, b + sizeof(b), base));
}

static void sleep_s(long s)
{
	rt_sleep_ms((u32)s * 1000);
}

static char filebuf[65536];

/* Read a whole (small) file into filebuf; returns its length or a negative errno. */
static long slurp(const char *path)
{
	return rt_slurp(path, filebuf, sizeof(filebuf));
}

/* The number after "key" on its line in filebuf, or 0. */
static u64 field(const char *key)
{
	for (char *p = filebuf; *p; p++) {
		if ((p == filebuf || p[-1] == '\n') && rt_starts(p, key)) {
			u64 v = 0;

			p += rt_strlen(key);
			while (*p == ' ' || *p == ':' || *p == '\t')
				p++;
			while (*p >= '0' && *p <= '9')
				v = v * 10 + (u64)(*p++ - '0');
			return v;
		}
	}
	return 0;
}

static u64 count_lines_with(const char *needle)
{
	u64 n = 0;
	int hit = 0;

	for (char *p = filebuf; *p; p++) {
		if (*p == '\n') {
			n += hit;
			hit = 0;
		} else if (!hit && rt_starts(p, needle)) {
			hit = 1;
		}
	}
	return n;
}

static u64 memtotal_kb(void)
{
	return slurp("/proc/meminfo") > 0 ? field("MemTotal") : 0;
}

static void do_info(void)
{
	long n = slurp("/proc/cpuinfo");

	check_num("nproc", n > 0 ? count_lines_with("processor") : 0, 10);
	check_num("memtotal_kb", memtotal_kb(), 10);
	if (slurp("/sys/devices/system/cpu/online") > 0) {
		for (char *p = filebuf; *p; p++)
			if (*p == '\n')
				*p = 0;
		check("cpus_online", filebuf);
	}
	if (slurp("/proc/interrupts") > 0) {
		check_num("msi_irq_lines", count_lines_with("PCI-MSI"), 10);
		check_num("virtio_irq_lines", count_lines_with("virtio"), 10);
	}
}

static u64 fnv1a(const unsigned char *p, long n, u64 h)
{
	for (long i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static void do_blk(void)
{
	static unsigned char buf[65536];
	u64 h = 0xcbf29ce484222325ULL;
	long fd, n, done;

	fd = rt_sys3(SYS_open, "/dev/vdb", O_RDONLY, 0);
	if (fd < 0) {
		check_num("vdb_open_errno", (u64)-fd, 10);
	} else {
		for (done = 0; done < MiB && (n = rt_sys3(SYS_read, fd, buf, sizeof(buf))) > 0; done += n)
			h = fnv1a(buf, n, h);
		rt_sys3(SYS_close, fd, 0, 0);
		check_num("vdb_fnv1a", h, 16);
	}
	/* Writing to the read-only disk must fail: at open (EROFS) or at write/fsync. */
	fd = rt_sys3(SYS_open, "/dev/vdb", O_RDWR, 0);
	if (fd < 0) {
		check_num("vdb_write_errno", (u64)-fd, 10);
	} else {
		n = rt_sys3(SYS_write, fd, buf, 4096);
		if (n >= 0)
			n = rt_sys3(SYS_fsync, fd, 0, 0);
		check_num("vdb_write_errno", n < 0 ? (u64)-n : 0, 10);
		rt_sys3(SYS_close, fd, 0, 0);
	}
	/* 1 MiB at offset 1 MiB of /dev/vda: byte i is (i * 7 + i / 4096) & 0xff. */
	fd = rt_sys3(SYS_open, "/dev/vda", O_RDWR, 0);
	if (fd < 0) {
		check_num("vda_open_errno", (u64)-fd, 10);
		return;
	}
	rt_sys3(SYS_lseek, fd, MiB, 0);
	for (done = 0; done < MiB; done += (long)sizeof(buf)) {
		for (long i = 0; i < (long)sizeof(buf); i++) {
			long k = done + i;

			buf[i] = (unsigned char)(k * 7 + k / 4096);
		}
		n = rt_sys3(SYS_write, fd, buf, sizeof(buf));
		if (n != (long)sizeof(buf)) {
			check_num("vda_write_errno", n < 0 ? (u64)-n : 0, 10);
			break;
		}
	}
	n = rt_sys3(SYS_fsync, fd, 0, 0);
	check_num("vda_fsync", n < 0 ? (u64)-n : 0, 10);
	rt_sys3(SYS_close, fd, 0, 0);
}

/* Open the port whose sysfs name is org.kumo.agent; its path goes into path. */
static long open_agent(char *path)
{
	for (int dev = 0; dev < 8; dev++) {
		for (int port = 0; port < 4; port++) {
			char sys[80] = "/sys/class/virtio-ports/vport0p0/name";

			sys[29] = (char)('0' + dev);
			sys[31] = (char)('0' + port);
			if (slurp(sys) > 0 && rt_starts(filebuf, "org.kumo.agent")) {
				path[10] = (char)('0' + dev);
				path[12] = (char)('0' + port);
				return rt_sys3(SYS_open, path, O_RDWR, 0);
			}
		}
	}
	return -2;
}

/* One line from the host (reads return 0 while no client is connected: wait, 10 min). */
static long read_line(long fd, char *line, long size)
{
	long got = 0, n;

	for (int tries = 0; got < size - 1 && tries < 600;) {
		n = rt_sys3(SYS_read, fd, line + got, 1);
		if (n == 1) {
			if (line[got] == '\n')
				break;
			got++;
		} else {
			sleep_s(1);
			tries++;
		}
	}
	line[got] = 0;
	return got;
}

static void do_agent(void)
{
	static char line[512];
	char path[64] = "/dev/vport0p0";
	long fd = open_agent(path), got;

	if (fd < 0) {
		check("agent", "no-port");
		return;
	}
	check("agent_port", path);
	got = read_line(fd, line, sizeof(line));
	rt_sys3(SYS_write, fd, "echo: ", 6);
	rt_sys3(SYS_write, fd, line, got);
	rt_sys3(SYS_write, fd, "\n", 1);
	check("agent_received", line);
	rt_sys3(SYS_close, fd, 0, 0);
}

static char token[64];		/* kumo.token=WORD */

static void do_fswrite(void)
{
	long fd, ret;

	rt_sys3(SYS_mkdir, "/mnt", 0755, 0);
	ret = rt_sys5(SYS_mount, (long)"/dev/vda", (long)"/mnt", (long)"ext4", 0, 0);
	check_num("fs_mount_errno", ret < 0 ? (u64)-ret : 0, 10);
	if (ret < 0)
		return;
	fd = rt_sys3(SYS_open, "/mnt/kumo.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		rt_sys3(SYS_write, fd, token, rt_strlen(token));
		ret = rt_sys3(SYS_fsync, fd, 0, 0);
		rt_sys3(SYS_close, fd, 0, 0);
	} else {
		ret = fd;
	}
	check_num("fs_write_errno", ret < 0 ? (u64)-ret : 0, 10);
	ret = rt_sys3(SYS_umount2, "/mnt", 0, 0);
	check_num("fs_umount_errno", ret < 0 ? (u64)-ret : 0, 10);
}

static void do_fsread(void)
{
	long ret;

	rt_sys3(SYS_mkdir, "/mnt", 0755, 0);
	ret = rt_sys5(SYS_mount, (long)"/dev/vda", (long)"/mnt", (long)"ext4", 0, 0);
	check_num("fs_mount_errno", ret < 0 ? (u64)-ret : 0, 10);
	if (ret < 0)
		return;
	ret = slurp("/mnt/kumo.txt");
	check("fs_read", ret >= 0 ? filebuf : "missing");
	rt_sys3(SYS_umount2, "/mnt", 0, 0);
}

static u64 now_ns(void)
{
	return rt_now_ns();
}

static long pio64(int write, long fd, void *buf, long len, u64 off)
{
	return write ? rt_pwrite(fd, buf, (u32)len, off) : rt_pread(fd, buf, (u32)len, off);
}

/* units per second, without 64-bit division: ns >> 20 counts units of 1.048576 ms. */
static void bench_line(const char *name, u64 units, u64 ns)
{
	char b[32];
	u32 slices = (u32)(ns >> 20);

	if (!slices)
		slices = 1;
	rt_puts("KUMO-BENCH ");
	rt_puts(name);
	rt_puts("=");
	rt_puts(utoa((u32)units * 954u / slices, b + sizeof(b), 10));
	rt_puts("\n");
}

/* Linux AIO (include/uapi/linux/aio_abi.h): the one queue-depth interface a freestanding
 * program has on both builds (the test kernel has no io_uring). */
struct aio_iocb {
	u64 data;
	u32 key, rw_flags;
	u32 opcode_reqprio;	/* u16 opcode (0: IOCB_CMD_PREAD), s16 reqprio */
	u32 fildes;
	u64 buf, nbytes;
	s64 offset;
	u64 reserved2;
	u32 flags, resfd;
};

struct aio_event {
	u64 data, obj;
	s64 res, res2;
};

#define BLKBENCH_QD 32

/* 4 KiB random reads with BLKBENCH_QD in flight (Linux AIO, O_DIRECT) for ns of guest time;
 * buf holds BLKBENCH_QD pages. */
static void randread_qd(long fd, unsigned char *buf, u32 *seed, u64 ns)
{
	static struct aio_iocb cb[BLKBENCH_QD];
	static struct aio_event ev[BLKBENCH_QD];
	struct aio_iocb *one[1];
	unsigned long ctx = 0;
	u64 t0, n = 0;
	long ret = rt_sys2(SYS_io_setup, BLKBENCH_QD, &ctx);
	int inflight = 0, failed = 0;

	if (ret < 0) {
		check_num("blkbench_aio_errno", (u64)-ret, 10);
		return;
	}
	t0 = now_ns();
	for (int i = 0; i < BLKBENCH_QD; i++) {
		*seed = *seed * 1103515245u + 12345u;
		cb[i] = (struct aio_iocb){ .data = (u64)i, .fildes = (u32)fd,
					  .buf = (u64)(unsigned long)(buf + i * 4096), .nbytes = 4096,
					  .offset = (s64)((*seed >> 8) % 8192) * 4096 };
		one[0] = &cb[i];
		if (rt_sys3(SYS_io_submit, ctx, 1, one) != 1)
			break;
		inflight++;
	}
	while (inflight) {
		long got = rt_syscall6(SYS_io_pgetevents, (long)ctx, 1, BLKBENCH_QD, (long)ev, 0, 0);

		if (got <= 0)
			break;
		for (long e = 0; e < got; e++) {
			struct aio_iocb *c = &cb[ev[e].data];

			inflight--;
			if (ev[e].res != 4096)
				failed = 1;
			else
				n++;
			if (failed || now_ns() - t0 >= ns)
				continue;
			*seed = *seed * 1103515245u + 12345u;
			c->offset = (s64)((*seed >> 8) % 8192) * 4096;
			one[0] = c;
			if (rt_sys3(SYS_io_submit, ctx, 1, one) == 1)
				inflight++;
		}
	}
	if (!failed && !inflight)
		bench_line("randread_4k_qd32_iops", n, now_ns() - t0);
	else
		check("blkbench_qd32", "failed");
	rt_sys1(SYS_io_destroy, ctx);
}

static long blkbench_s = 1;	/* kumo.blkbench_s=N: seconds per random-read test */

static void do_blkbench(void)
{
	static unsigned char raw[MiB + 4096];
	unsigned char *buf = (unsigned char *)(((unsigned long)raw + 4095) & ~4095UL);
	long fd = rt_sys3(SYS_open, "/dev/vda", O_RDWR | O_DIRECT, 0);
	u32 seed = 12345;
	u64 t0, n;

	if (fd < 0) {
		check_num("blkbench_open_errno", (u64)-fd, 10);
		return;
	}
	/* 4 KiB random reads over the first 32 MiB, one at a time, for blkbench_s of guest time. */
	t0 = now_ns();
	for (n = 0; now_ns() - t0 < (u64)blkbench_s * 1000000000ULL; n++) {
		seed = seed * 1103515245u + 12345u;
		if (pio64(0, fd, buf, 4096, (u64)((seed >> 8) % 8192) * 4096) != 4096)
			break;
	}
	bench_line("randread_4k_qd1_iops", n, now_ns() - t0);
	randread_qd(fd, buf, &seed, (u64)blkbench_s * 1000000000ULL);
	/* 1 MiB sequential writes then reads over 32 MiB. */
	t0 = now_ns();
	for (n = 0; n < 32; n++)
		if (pio64(1, fd, buf, MiB, n * MiB) != MiB)
			break;
	rt_sys3(SYS_fsync, fd, 0, 0);
	bench_line("seqwrite_1m_mibps", n, now_ns() - t0);
	t0 = now_ns();
	for (n = 0; n < 32; n++)
		if (pio64(0, fd, buf, MiB, n * MiB) != MiB)
			break;
	bench_line("seqread_1m_mibps", n, now_ns() - t0);
	rt_sys3(SYS_close, fd, 0, 0);
}

static long touch_mb = 64;	/* kumo.touch_mb=N */

static void do_touch(void)
{
	const long TOUCH_BYTES = touch_mb * MiB;
	char path[64] = "/dev/vport0p0", line[64];
	long fd = open_agent(path);
	unsigned char *p;

	if (fd < 0) {
		check("touch", "no-port");
		return;
	}
	check("touch_ready", "1");
	read_line(fd, line, sizeof(line));			/* "go" */
	p = rt_mmap((u32)TOUCH_BYTES);
	if (!p) {
		check_num("touch_mmap_errno", ENOMEM, 10);
		rt_sys3(SYS_close, fd, 0, 0);
		return;
	}
	for (long i = 0; i < TOUCH_BYTES; i += 4096)
		p[i] = (unsigned char)(i >> 12);
	check_num("touched_mb", TOUCH_BYTES / MiB, 10);
	read_line(fd, line, sizeof(line));			/* "free" */
	rt_sys3(SYS_munmap, p, TOUCH_BYTES, 0);
	check_num("freed_mb", TOUCH_BYTES / MiB, 10);
	read_line(fd, line, sizeof(line));			/* "continue" */
	rt_sys3(SYS_close, fd, 0, 0);
}

/* filebuf up to its first newline, as a KUMO-CHECK value. */
static void check_first_line(const char *key)
{
	for (char *p = filebuf; *p; p++)
		if (*p == '\n')
			*p = 0;
	check(key, filebuf);
}

static u32 cpuid_eax(u32 leaf)
{
	u32 a = leaf, b, c = 0, d;

	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return a;
}

/* What the guest kernel made of the SRAT and SLIT, as userspace sees it. */
static void do_numa(void)
{
	char path[80], key[40], num[16];
	struct rt_buf b;

	check_num("kvm_pv_eax", cpuid_eax(0x40000001), 16);
	if (slurp("/sys/devices/system/node/online") > 0)
		check_first_line("numa_online");
	for (int node = 0; node < 64; node++) {
		char *n = rt_utoa((u64)node, num + sizeof(num));
		static const char *const files[] = { "cpulist", "distance", "meminfo" };

		for (int f = 0; f < 3; f++) {
			rt_buf_init(&b, path, sizeof(path));
			rt_buf_str(&b, "/sys/devices/system/node/node");
			rt_buf_str(&b, n);
			rt_buf_str(&b, "/");
			rt_buf_str(&b, files[f]);
			if (slurp(rt_buf_cstr(&b)) < 0)
				return;
			rt_buf_init(&b, key, sizeof(key));
			rt_buf_str(&b, "node");
			rt_buf_str(&b, n);
			if (f < 2) {
				rt_buf_str(&b, f ? "_distance" : "_cpulist");
				check_first_line(rt_buf_cstr(&b));
			} else {
				char want[32];
				struct rt_buf w;

				rt_buf_init(&w, want, sizeof(want));
				rt_buf_str(&w, "Node ");
				rt_buf_str(&w, n);
				rt_buf_str(&w, " MemTotal");
				rt_buf_str(&b, "_memtotal_kb");
				check_num(rt_buf_cstr(&b), field(rt_buf_cstr(&w)), 10);
			}
		}
	}
}

/* Print MemTotal whenever it changes, until it went down and came back (or 900 s). */
static void do_balloon(void)
{
	u64 start = memtotal_kb(), last = start;
	int went_down = 0;

	check_num("balloon_memtotal_kb", last, 10);
	for (int s = 0; s < 900; s++) {
		u64 now;

		sleep_s(1);
		now = memtotal_kb();
		if (now == last)
			continue;
		check_num("balloon_memtotal_kb", now, 10);
		last = now;
		went_down |= now < start;
		if (went_down && now == start)
			break;
	}
}

static char data_dev[64] = "/dev/vda";	/* kumo.data=DEV */

static void do_data(void)
{
	long ret;

	rt_sys3(SYS_mkdir, "/data", 0755, 0);
	ret = rt_mount(data_dev, "/data", "ext4", 0, 0);
	if (ret < 0)
		ret = rt_mount(data_dev, "/data", "ext4", MS_RDONLY, 0);
	check("data_dev", data_dev);
	check_num("data_mount_errno", ret < 0 ? (u64)-ret : 0, 10);
}

static void do_agentd(char **envp)
{
	static char *argv[] = { "/sbin/kumo-agent", 0 };
	long ret;

	check("agentd", "exec");
	ret = rt_sys3(SYS_execve, argv[0], argv, envp);
	check_num("agentd_exec_errno", (u64)-ret, 10);
}

int main(int argc, char **argv, char **envp)
{
	char *arg = 0;
	long n;

	rt_sys3(SYS_mkdir, "/proc", 0755, 0);
	rt_sys3(SYS_mkdir, "/sys", 0755, 0);
	rt_sys3(SYS_mkdir, "/dev", 0755, 0);
	rt_sys5(SYS_mount, (long)"proc", (long)"/proc", (long)"proc", 0, 0);
	rt_sys5(SYS_mount, (long)"sysfs", (long)"/sys", (long)"sysfs", 0, 0);
	rt_sys5(SYS_mount, (long)"devtmpfs", (long)"/dev", (long)"devtmpfs", 0, 0);
	rt_puts("KUMO-PROBE-READY\n");
	n = slurp("/proc/cmdline");
	for (long i = 0; i < n; i++) {
		if ((i == 0 || filebuf[i - 1] == ' ') && rt_starts(filebuf + i, "kumo.probe="))
			arg = filebuf + i + 11;
		if ((i == 0 || filebuf[i - 1] == ' ') && rt_starts(filebuf + i, "kumo.token=")) {
			int t = 0;

			for (char *q = filebuf + i + 11; *q > ' ' && t < 63; q++)
				token[t++] = *q;
			token[t] = 0;
		}
		if ((i == 0 || filebuf[i - 1] == ' ') && rt_starts(filebuf + i, "kumo.data=")) {
			int t = 0;

			for (char *q = filebuf + i + 10; *q > ' ' && t < 63; q++)
				data_dev[t++] = *q;
			data_dev[t] = 0;
		}
		if ((i == 0 || filebuf[i - 1] == ' ') && rt_starts(filebuf + i, "kumo.touch_mb=")) {
			long v = leading_num(filebuf + i + 14);

			if (v > 0 && v < 2048)
				touch_mb = v;
		}
		if ((i == 0 || filebuf[i - 1] == ' ') && rt_starts(filebuf + i, "kumo.blkbench_s=")) {
			long v = leading_num(filebuf + i + 16);

			if (v > 0 && v <= 600)
				blkbench_s = v;
		}
	}
	if (arg) {
		static char list[256];
		int l = 0;

		while (*arg && *arg != ' ' && *arg != '\n' && l < 255)
			list[l++] = *arg++;
		list[l] = ',';
		for (char *w = list; w < list + l; w++) {
			char *e = w;

			while (*e != ',')
				e++;
			*e = 0;
			if (rt_streq(w, "info"))
				do_info();
			else if (rt_streq(w, "blk"))
				do_blk();
			else if (rt_streq(w, "agent"))
				do_agent();
			else if (rt_streq(w, "balloon"))
				do_balloon();
			else if (rt_streq(w, "touch"))
				do_touch();
			else if (rt_streq(w, "fswrite"))
				do_fswrite();
			else if (rt_streq(w, "fsread"))
				do_fsread();
			else if (rt_streq(w, "blkbench"))
				do_blkbench();
			else if (rt_streq(w, "numa"))
				do_numa();
			else if (rt_streq(w, "data"))
				do_data();
			else if (rt_streq(w, "agentd"))
				do_agentd(envp);
			else if (rt_streq(w, "poweroff")) {
				rt_puts("KUMO-CHECK done\n");
				rt_sys5(SYS_reboot, 0xfee1deadL, 672274793L, 0x4321fedcL, 0, 0);
			}
			w = e;
		}
	}
	rt_puts("KUMO-CHECK done\n");
	for (;;)
		rt_sys3(SYS_pause, 0, 0, 0);
}
