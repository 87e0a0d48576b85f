/*
 * kumo-agent: the guest agent on the org.kumo.agent virtio-console port (docs/guest.md).
 *
 * JSON lines in both directions, like kumo's control socket: requests
 * {"id":..,"verb":..,"args":{..}} get {"id":..,"ok":true,"result":{..}} or
 * {"id":..,"ok":false,"error":".."}; the agent also sends events {"event":..,"data":{..},"ts":..}:
 * "hello" when a host connects, "stats" every period, "run-progress"/"run-exit" for workloads.
 *
 * Freestanding, 64-bit and 32-bit, like every guest program (guest/rt/rt.h). Single-threaded,
 * one poll loop. The port is opened non-blocking: Linux's virtio_console reports POLLHUP and
 * reads return 0 while no host is connected, writes fail with EAGAIN, and ENODEV when the port
 * is unplugged; the agent then stops sending stats, polls the port every 200 ms and resumes
 * (reopening the port after ENODEV). Runs as PID 1 too (kumo-probe's "agentd" step execs it),
 * reaping every orphan.
 *
 * Options (argv "key=value", or kumo.agent_period_ms=N on the kernel command line):
 *   period_ms=N  stats period (default 1000)     port=/dev/vportNpM  skip the sysfs lookup
 *   cgroup=DIR   where the cpuset hierarchy is (default /sys/fs/cgroup)
 */
#include "../rt/rt.h"
#include "agent-parse.h"

#define AGENT_VERSION 1
#define MAX_RUNS 4
#define OUTQ_SIZE (256 * 1024)
#define INBUF_SIZE 8192
#define LINE_SIZE 32768

struct run {
	int active;
	long pid, fd;			/* fd: the read end of its stdout pipe, -1 at EOF */
	int exited, status;
	u32 num;
	int wait;
	char id[64], name[64];
	u64 t0;
	char lb[16384];
	u32 lblen;
	char result[16384];
	u32 reslen;
};

static struct {
	long fd;			/* the port, -1 when not open */
	char path[64], fixed_path[64];
	int host_up;
	char in[INBUF_SIZE];
	u32 inlen;
	int discarding;			/* the current input line was too long */
	char outq[OUTQ_SIZE];
	u32 outlen;
	u64 dropped;			/* lines not queued because the queue was full */
	u32 period_ms;
	u64 next_stats, next_open, seq;
	struct run runs[MAX_RUNS];
	u32 run_seq;
	char cg_root[64];
	int cg_ready, cg_v2;
	u64 parked[AP_CPU_WORDS];
} A;

static char fbuf[65536];		/* /proc and sysfs files */
static char line[LINE_SIZE];		/* the line being built */

static void logmsg(const char *a, const char *b)
{
	struct rt_buf b2;
	char t[256];

	rt_buf_init(&b2, t, sizeof(t));
	rt_buf_str(&b2, "kumo-agent: ");
	rt_buf_str(&b2, a);
	if (b)
		rt_buf_str(&b2, b);
	rt_put_line(&b2);
}

/* ------------------------------------------------------------------- output queue */

static void queue_line(struct rt_buf *b)
{
	if (b->overflow || A.outlen + b->len + 1 > OUTQ_SIZE) {
		A.dropped++;
		return;
	}
	memcpy(A.outq + A.outlen, b->p, b->len);
	A.outlen += b->len;
	A.outq[A.outlen++] = '\n';
}

static void host_down(void);

static void port_close(const char *why)
{
	if (A.fd >= 0) {
		rt_close(A.fd);
		logmsg("port closed: ", why);
	}
	A.fd = -1;
	A.host_up = 0;
	A.inlen = 0;
}

static void flush_out(void)
{
	while (A.fd >= 0 && A.host_up && A.outlen) {
		/* The driver takes at most 32 KiB per write. */
		long n = rt_write(A.fd, A.outq, A.outlen > 16384 ? 16384 : A.outlen);

		if (n == -EAGAIN || n == -EINTR)
			return;
		if (n == -ENODEV) {
			port_close("ENODEV on write");
			return;
		}
		if (n <= 0) {
			host_down();
			return;
		}
		memmove(A.outq, A.outq + n, A.outlen - (u32)n);
		A.outlen -= (u32)n;
	}
}

static void begin_event(struct rt_buf *b, const char *name)
{
	rt_buf_init(b, line, sizeof(line));
	jw_obj(b, NULL);
	jw_str(b, "event", name);
	jw_frac(b, "ts", rt_now_ns() / 1000, 1000000);
	jw_obj(b, "data");
}

static void end_event(struct rt_buf *b)
{
	jw_end_obj(b);
	jw_end_obj(b);
	queue_line(b);
}

static void begin_reply(struct rt_buf *b, const char *id)
{
	rt_buf_init(b, line, sizeof(line));
	jw_obj(b, NULL);
	jw_raw(b, "id", id, rt_strlen(id));
	jw_bool(b, "ok", 1);
	jw_obj(b, "result");
}

static void end_reply(struct rt_buf *b)
{
	jw_end_obj(b);
	jw_end_obj(b);
	queue_line(b);
}

static void reply_error(const char *id, const char *msg, const char *detail)
{
	struct rt_buf b;
	char m[256];
	struct rt_buf mb;

	rt_buf_init(&mb, m, sizeof(m));
	rt_buf_str(&mb, msg);
	if (detail)
		rt_buf_str(&mb, detail);
	rt_buf_init(&b, line, sizeof(line));
	jw_obj(&b, NULL);
	jw_raw(&b, "id", id, rt_strlen(id));
	jw_bool(&b, "ok", 0);
	jw_strn(&b, "error", m, mb.len);
	jw_end_obj(&b);
	queue_line(&b);
}

static void errno_msg(struct rt_buf *b, long err)
{
	rt_buf_str(b, " (errno ");
	rt_buf_u64(b, (u64)-err);
	rt_buf_str(b, ")");
}

/* --------------------------------------------------------------------------- stats */

static void put_keyed(struct rt_buf *b, const char *obj, const char *path, int skip,
		      const char *const *keys, int n, u64 *vals)
{
	u64 present;
	long len = rt_slurp(path, fbuf, sizeof(fbuf));

	if (len < 0)
		return;
	ap_parse_keyed(fbuf, (size_t)len, skip, keys, n, vals, &present);
	if (obj)
		jw_obj(b, obj);
	for (int i = 0; i < n; i++)
		if (present & (1ULL << i))
			jw_u64(b, keys[i], vals[i]);
	if (obj)
		jw_end_obj(b);
}

static void put_psi_line(struct rt_buf *b, const char *key, struct ap_psi_line *l)
{
	if (!l->present)
		return;
	jw_obj(b, key);
	jw_frac(b, "avg10", l->avg10, 100);
	jw_frac(b, "avg60", l->avg60, 100);
	jw_frac(b, "avg300", l->avg300, 100);
	jw_u64(b, "total_us", l->total_us);
	jw_end_obj(b);
}

static void put_cpulist(struct rt_buf *b, const char *key, const u64 *mask)
{
	char t[512];

	if (ap_format_cpulist(mask, t, sizeof(t)) < 0)
		t[0] = 0;
	jw_str(b, key, t);
}

static void put_stats(struct rt_buf *b)
{
	static struct ap_cpustat cpus[AP_MAX_CPUS];
	u64 vals[64];
	struct ap_psi psi;
	long len;

	jw_u64(b, "seq", A.seq);
	jw_u64(b, "period_ms", A.period_ms);
	put_keyed(b, "meminfo", "/proc/meminfo", 0, ap_meminfo_keys, AP_MEMINFO_N, vals);

	len = rt_slurp("/proc/vmstat", fbuf, sizeof(fbuf));
	if (len >= 0) {
		u64 present;

		ap_parse_keyed(fbuf, (size_t)len, 0, ap_vmstat_keys, AP_VMSTAT_N, vals, &present);
		jw_obj(b, "vmstat");
		for (int i = 0; i < AP_VMSTAT_N; i++)
			if (present & (1ULL << i))
				jw_u64(b, ap_vmstat_keys[i], vals[i]);
		/* Sums over reclaimers (kswapd, direct, khugepaged); *_anon/_file split the same. */
		u64 scan = 0, steal = 0;

		for (int i = 0; i < AP_VMSTAT_N; i++) {
			if (!(present & (1ULL << i)))
				continue;
			if (rt_starts(ap_vmstat_keys[i], "pgscan_"))
				scan += vals[i];
			if (rt_starts(ap_vmstat_keys[i], "pgsteal_"))
				steal += vals[i];
		}
		jw_u64(b, "pgscan", scan);
		jw_u64(b, "pgsteal", steal);
		jw_end_obj(b);
	}

	len = rt_slurp("/proc/pressure/memory", fbuf, sizeof(fbuf));
	if (len >= 0 && ap_parse_psi(fbuf, (size_t)len, &psi) > 0) {
		jw_obj(b, "psi_memory");
		put_psi_line(b, "some", &psi.some);
		put_psi_line(b, "full", &psi.full);
		jw_end_obj(b);
	}

	len = rt_slurp("/proc/stat", fbuf, sizeof(fbuf));
	if (len >= 0) {
		int n = ap_parse_stat(fbuf, (size_t)len, cpus, AP_MAX_CPUS, NULL, NULL);

		jw_arr(b, "cpus");
		for (int i = 0; i < n; i++) {
			jw_obj(b, NULL);
			jw_u64(b, "cpu", cpus[i].cpu);
			jw_u64(b, "user", cpus[i].user);
			jw_u64(b, "nice", cpus[i].nice);
			jw_u64(b, "system", cpus[i].system);
			jw_u64(b, "idle", cpus[i].idle);
			jw_u64(b, "iowait", cpus[i].iowait);
			jw_u64(b, "irq", cpus[i].irq);
			jw_u64(b, "softirq", cpus[i].softirq);
			jw_u64(b, "steal", cpus[i].steal);
			jw_end_obj(b);
		}
		jw_end_arr(b);
	}

	len = rt_slurp("/sys/devices/system/node/online", fbuf, sizeof(fbuf));
	if (len >= 0) {
		u64 nodes[AP_CPU_WORDS];

		if (ap_parse_cpulist(fbuf, (size_t)len, nodes) == 0) {
			jw_arr(b, "nodes");
			for (int nd = 0; nd < AP_MAX_CPUS; nd++) {
				char path[64];
				struct rt_buf pb;

				if (!((nodes[nd / 64] >> (nd % 64)) & 1))
					continue;
				rt_buf_init(&pb, path, sizeof(path));
				rt_buf_str(&pb, "/sys/devices/system/node/node");
				rt_buf_u64(&pb, (u64)nd);
				rt_buf_str(&pb, "/meminfo");
				jw_obj(b, NULL);
				jw_u64(b, "node", (u64)nd);
				put_keyed(b, NULL, rt_buf_cstr(&pb), 2, ap_nodemem_keys, AP_NODEMEM_N,
					  vals);
				jw_end_obj(b);
			}
			jw_end_arr(b);
		}
	}
	put_cpulist(b, "parked", A.parked);
	jw_u64(b, "dropped_lines", A.dropped);
}

static void send_stats(void)
{
	struct rt_buf b;

	begin_event(&b, "stats");
	put_stats(&b);
	end_event(&b);
	A.seq++;
}

/* ------------------------------------------------------------------------ cpusets */

static long write_file(const char *path, const char *s)
{
	long fd = rt_open(path, O_WRONLY | O_CLOEXEC, 0), r;

	if (fd < 0)
		return fd;
	r = rt_write(fd, s, rt_strlen(s));
	rt_close(fd);
	return r < 0 ? r : 0;
}

static void cg_path(char *out, const char *child, const char *file)
{
	struct rt_buf b;

	rt_buf_init(&b, out, 128);
	rt_buf_str(&b, A.cg_root);
	if (child) {
		rt_buf_char(&b, '/');
		rt_buf_str(&b, child);
	}
	rt_buf_char(&b, '/');
	rt_buf_str(&b, file);
	rt_buf_cstr(&b);
}

static int file_exists(const char *path)
{
	long fd = rt_open(path, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	rt_close(fd);
	return 1;
}

/* Mounts (if needed) a cpuset hierarchy and makes the child "kumo" cpuset. */
static long cg_setup(void)
{
	char p[128];
	long r;

	if (A.cg_ready)
		return 0;
	rt_sys2(SYS_mkdir, A.cg_root, 0755);
	cg_path(p, NULL, "cpuset.cpus");
	if (file_exists(p)) {
		cg_path(p, NULL, "cgroup.controllers");
		A.cg_v2 = file_exists(p);
	} else {
		cg_path(p, NULL, "cgroup.controllers");
		if (file_exists(p)) {
			A.cg_v2 = 1;
		} else if (rt_mount("cgroup", A.cg_root, "cgroup", 0, "cpuset") == 0) {
			A.cg_v2 = 0;
		} else if ((r = rt_mount("cgroup2", A.cg_root, "cgroup2", 0, 0)) == 0) {
			A.cg_v2 = 1;
		} else {
			return r;
		}
	}
	if (A.cg_v2) {
		cg_path(p, NULL, "cgroup.subtree_control");
		write_file(p, "+cpuset");
	}
	cg_path(p, "kumo", "");
	r = rt_sys2(SYS_mkdir, p, 0755);
	if (r < 0 && r != -17 /* EEXIST */)
		return r;
	if (!A.cg_v2) {
		/* v1: a cpuset takes no task until it has memory nodes. */
		char mems[256];
		long n;

		cg_path(p, NULL, "cpuset.mems");
		n = rt_slurp(p, mems, sizeof(mems));
		if (n < 0)
			return n;
		cg_path(p, "kumo", "cpuset.mems");
		if ((r = write_file(p, mems)) < 0)
			return r;
	}
	A.cg_ready = 1;
	return 0;
}

/* Moves every task it can into the kumo cpuset; kernel threads refuse (counted as failed). */
static void cg_move_all(u32 *moved, u32 *failed)
{
	static char dents[8192];
	char procs[128];
	long dfd, fd, n;

	*moved = *failed = 0;
	cg_path(procs, "kumo", "cgroup.procs");
	fd = rt_open(procs, O_WRONLY | O_CLOEXEC, 0);
	dfd = rt_open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (fd < 0 || dfd < 0)
		goto out;
	while ((n = rt_sys3(SYS_getdents64, dfd, dents, sizeof(dents))) > 0) {
		for (long off = 0; off + 19 < n;) {
			u32 reclen = (u8)dents[off + 16] | (u32)(u8)dents[off + 17] << 8;
			const char *name = dents + off + 19;
			u64 pid;

			if (reclen < 20 || off + (long)reclen > n)
				break;
			if (rt_parse_u64(name, &pid) == 0) {
				/* Each write must be one pid; cgroup.procs takes the whole process. */
				if (rt_write(fd, name, rt_strlen(name)) >= 0)
					(*moved)++;
				else
					(*failed)++;
			}
			off += reclen;
		}
	}
out:
	if (fd >= 0)
		rt_close(fd);
	if (dfd >= 0)
		rt_close(dfd);
}

/* Restricts the kumo cpuset to the online CPUs that are not parked; replies. */
static void cg_apply(const char *id)
{
	u64 online[AP_CPU_WORDS], allowed[AP_CPU_WORDS];
	char p[128], list[512];
	long r, len;
	u32 moved, failed;
	struct rt_buf b;

	len = rt_slurp("/sys/devices/system/cpu/online", fbuf, sizeof(fbuf));
	if (len < 0 || ap_parse_cpulist(fbuf, (size_t)len, online)) {
		reply_error(id, "cannot read /sys/devices/system/cpu/online", NULL);
		return;
	}
	for (int i = 0; i < AP_CPU_WORDS; i++)
		allowed[i] = online[i] & ~A.parked[i];
	if (!ap_cpu_count(allowed)) {
		reply_error(id, "refusing to park every online CPU", NULL);
		return;
	}
	r = cg_setup();
	if (r < 0) {
		rt_buf_init(&b, list, sizeof(list));
		errno_msg(&b, r);
		reply_error(id, "cannot set up a cpuset cgroup", rt_buf_cstr(&b));
		return;
	}
	ap_format_cpulist(allowed, list, sizeof(list));
	cg_path(p, "kumo", "cpuset.cpus");
	r = write_file(p, list);
	if (r < 0) {
		rt_buf_init(&b, list, sizeof(list));
		errno_msg(&b, r);
		reply_error(id, "writing cpuset.cpus failed", rt_buf_cstr(&b));
		return;
	}
	cg_move_all(&moved, &failed);
	begin_reply(&b, id);
	put_cpulist(&b, "parked", A.parked);
	jw_str(&b, "allowed", list);
	jw_str(&b, "cgroup", A.cg_v2 ? "v2" : "v1");
	jw_u64(&b, "moved", moved);
	jw_u64(&b, "unmovable", failed);
	end_reply(&b);
}

/* ---------------------------------------------------------------------------- runs */

static int valid_name(const char *s)
{
	if (!*s || *s == '.')
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return 0;
	return 1;
}

static void run_data(struct rt_buf *b, struct run *r)
{
	jw_u64(b, "run", r->num);
	jw_str(b, "name", r->name);
	jw_raw(b, "req_id", r->id, rt_strlen(r->id));
	jw_s64(b, "pid", r->pid);
}

static void start_run(struct ap_request *q)
{
	static char args[AP_MAX_ARGS + 2][AP_MAX_ARG];
	static char *argv[AP_MAX_ARGS + 2];
	static char *envp[] = { "PATH=/bin:/sbin", "HOME=/", 0 };
	struct run *r = NULL;
	long fds[2] = { -1, -1 }, pid;
	int pfd[2];
	struct rt_buf b;

	if (!valid_name(q->name)) {
		reply_error(q->id, "'name' must be a workload name such as \"filereader\"", NULL);
		return;
	}
	for (int i = 0; i < MAX_RUNS; i++)
		if (!A.runs[i].active)
			r = &A.runs[i];
	if (!r) {
		reply_error(q->id, "too many workloads running", NULL);
		return;
	}
	if ((pid = rt_sys2(SYS_pipe2, pfd, O_CLOEXEC)) < 0) {
		reply_error(q->id, "pipe failed", NULL);
		return;
	}
	fds[0] = pfd[0], fds[1] = pfd[1];
	rt_strcpy_n(args[0], q->name, AP_MAX_ARG);
	argv[0] = args[0];
	for (int i = 0; i < q->argc; i++) {
		rt_strcpy_n(args[i + 1], q->argv[i], AP_MAX_ARG);
		argv[i + 1] = args[i + 1];
	}
	argv[q->argc + 1] = 0;
	pid = rt_sys0(SYS_fork);
	if (pid == 0) {
		char path[80];
		long nul = rt_open("/dev/null", O_RDWR, 0);

		if (nul >= 0)
			rt_sys2(SYS_dup2, nul, 0);
		rt_sys2(SYS_dup2, fds[1], 1);
		rt_strcpy_n(path, "/bin/", sizeof(path));
		rt_strcpy_n(path + 5, q->name, sizeof(path) - 5);
		rt_sys3(SYS_execve, path, argv, envp);
		rt_strcpy_n(path, "/sbin/", sizeof(path));
		rt_strcpy_n(path + 6, q->name, sizeof(path) - 6);
		rt_sys3(SYS_execve, path, argv, envp);
		rt_exit(127);
	}
	rt_close(fds[1]);
	if (pid < 0) {
		rt_close(fds[0]);
		reply_error(q->id, "fork failed", NULL);
		return;
	}
	memset(r, 0, sizeof(*r));
	r->active = 1;
	r->pid = pid;
	r->fd = fds[0];
	r->num = ++A.run_seq;
	r->wait = q->wait;
	r->t0 = rt_now_ns();
	rt_strcpy_n(r->id, q->id, sizeof(r->id));
	rt_strcpy_n(r->name, q->name, sizeof(r->name));
	logmsg("run ", r->name);
	if (!r->wait) {
		begin_reply(&b, q->id);
		jw_u64(&b, "run", r->num);
		jw_s64(&b, "pid", pid);
		end_reply(&b);
	}
}

/* One line of a workload's stdout: its result line, or progress. */
static void run_line(struct run *r, const char *s, u32 n)
{
	struct rt_buf b;

	if (n && ap_json_object_valid(s, n)) {
		if (rt_starts(s, "{\"workload\"")) {
			if (n <= sizeof(r->result)) {
				memcpy(r->result, s, n);
				r->reslen = n;
			}
			return;
		}
		begin_event(&b, "run-progress");
		run_data(&b, r);
		jw_raw(&b, "progress", s, n);
		end_event(&b);
		return;
	}
	begin_event(&b, "run-progress");
	run_data(&b, r);
	jw_strn(&b, "text", s, n);
	end_event(&b);
}

static void run_read(struct run *r)
{
	long n = rt_read(r->fd, r->lb + r->lblen, sizeof(r->lb) - r->lblen);

	if (n == -EAGAIN || n == -EINTR)
		return;
	if (n <= 0) {
		if (r->lblen)
			run_line(r, r->lb, r->lblen);
		r->lblen = 0;
		rt_close(r->fd);
		r->fd = -1;
		return;
	}
	r->lblen += (u32)n;
	for (;;) {
		u32 i = 0;

		while (i < r->lblen && r->lb[i] != '\n')
			i++;
		if (i == r->lblen) {
			if (r->lblen == sizeof(r->lb)) {	/* too long: pass it on in pieces */
				run_line(r, r->lb, r->lblen);
				r->lblen = 0;
			}
			return;
		}
		run_line(r, r->lb, i);
		memmove(r->lb, r->lb + i + 1, r->lblen - i - 1);
		r->lblen -= i + 1;
	}
}

static void run_finish(struct run *r)
{
	struct rt_buf b;
	int code = (r->status >> 8) & 0xff, sig = r->status & 0x7f;
	u64 ms = (rt_now_ns() - r->t0) / 1000000;

	for (int pass = 0; pass < 1 + r->wait; pass++) {
		if (pass == 0)
			begin_event(&b, "run-exit");
		else
			begin_reply(&b, r->id);
		run_data(&b, r);
		jw_s64(&b, "exit", sig ? -1 : code);
		jw_u64(&b, "signal", (u64)sig);
		jw_u64(&b, "ms", ms);
		if (r->reslen)
			jw_raw(&b, "result", r->result, r->reslen);
		else
			jw_null(&b, "result");
		if (pass == 0)
			end_event(&b);
		else
			end_reply(&b);
	}
	logmsg("run done: ", r->name);
	r->active = 0;
}

static void reap(void)
{
	int st;
	long pid;

	while ((pid = rt_wait4(-1, &st, WNOHANG)) > 0) {
		for (int i = 0; i < MAX_RUNS; i++) {
			struct run *r = &A.runs[i];

			if (r->active && !r->exited && r->pid == pid) {
				r->exited = 1;
				r->status = st;
			}
		}
	}
	for (int i = 0; i < MAX_RUNS; i++)
		if (A.runs[i].active && A.runs[i].exited && A.runs[i].fd < 0)
			run_finish(&A.runs[i]);
}

static void kill_run(struct ap_request *q)
{
	struct rt_buf b;

	for (int i = 0; i < MAX_RUNS; i++) {
		struct run *r = &A.runs[i];

		if (r->active && q->has_run && r->num == q->run) {
			rt_sys2(SYS_kill, r->pid, SIGKILL);
			begin_reply(&b, q->id);
			jw_u64(&b, "run", r->num);
			end_reply(&b);
			return;
		}
	}
	reply_error(q->id, "no such run (args.run)", NULL);
}

/* ------------------------------------------------------------------------ requests */

static void handle_request(const char *s, u32 n)
{
	static struct ap_request q;
	const char *err = NULL;
	struct rt_buf b;

	while (n && (s[n - 1] == '\r' || s[n - 1] == ' '))
		n--;
	if (!n)
		return;
	if (ap_parse_request(s, n, &q, &err)) {
		reply_error(q.id, err, NULL);
		return;
	}
	if (rt_streq(q.verb, "ping")) {
		begin_reply(&b, q.id);
		jw_bool(&b, "pong", 1);
		jw_u64(&b, "version", AGENT_VERSION);
		jw_u64(&b, "uptime_ms", rt_now_ns() / 1000000);
		jw_u64(&b, "period_ms", A.period_ms);
		jw_str(&b, "port", A.path);
		put_cpulist(&b, "parked", A.parked);
		end_reply(&b);
	} else if (rt_streq(q.verb, "period")) {
		if (!q.has_period || q.period_ms < 50 || q.period_ms > 3600000) {
			reply_error(q.id, "args.period_ms must be 50..3600000", NULL);
			return;
		}
		A.period_ms = (u32)q.period_ms;
		A.next_stats = rt_now_ns() + (u64)A.period_ms * 1000000;
		begin_reply(&b, q.id);
		jw_u64(&b, "period_ms", A.period_ms);
		end_reply(&b);
	} else if (rt_streq(q.verb, "stats")) {
		begin_reply(&b, q.id);
		put_stats(&b);
		end_reply(&b);
	} else if (rt_streq(q.verb, "drop-caches")) {
		long r;
		u64 t0 = rt_now_ns();

		rt_sys0(SYS_sync);
		r = write_file("/proc/sys/vm/drop_caches", "3");
		if (r < 0) {
			struct rt_buf e;
			char t[64];

			rt_buf_init(&e, t, sizeof(t));
			errno_msg(&e, r);
			reply_error(q.id, "writing /proc/sys/vm/drop_caches failed", rt_buf_cstr(&e));
			return;
		}
		begin_reply(&b, q.id);
		jw_bool(&b, "dropped", 1);
		jw_u64(&b, "ms", (rt_now_ns() - t0) / 1000000);
		end_reply(&b);
	} else if (rt_streq(q.verb, "park-cpus") || rt_streq(q.verb, "unpark-cpus")) {
		int park = q.verb[0] == 'p';

		if (park && (!q.has_cpus || !ap_cpu_count(q.cpus))) {
			reply_error(q.id, "args.cpus: which CPUs to park (\"1-3\", 1 or [1,2])", NULL);
			return;
		}
		for (int i = 0; i < AP_CPU_WORDS; i++) {
			if (park)
				A.parked[i] |= q.cpus[i];
			else
				A.parked[i] &= q.has_cpus ? ~q.cpus[i] : 0;
		}
		cg_apply(q.id);
	} else if (rt_streq(q.verb, "run")) {
		start_run(&q);
	} else if (rt_streq(q.verb, "kill")) {
		kill_run(&q);
	} else if (rt_streq(q.verb, "poweroff")) {
		/* For tests: a clean end of the VM (kumo run exits 0). */
		rt_sys0(SYS_sync);
		begin_reply(&b, q.id);
		end_reply(&b);
		for (int i = 0; i < 50 && A.outlen && A.fd >= 0; i++) {
			flush_out();
			rt_sleep_ms(10);
		}
		logmsg("powering off", NULL);
		rt_sys4(SYS_reboot, 0xfee1deadL, 672274793L, 0x4321fedcL, 0);
	} else {
		reply_error(q.id, "unknown verb (ping, stats, period, drop-caches, park-cpus, "
				  "unpark-cpus, run, kill, poweroff)", NULL);
	}
}

static void port_read(void)
{
	long n = rt_read(A.fd, A.in + A.inlen, INBUF_SIZE - A.inlen);

	if (n == -EAGAIN || n == -EINTR)
		return;
	if (n == 0) {			/* no host connected */
		host_down();
		return;
	}
	if (n < 0) {
		port_close(n == -ENODEV ? "ENODEV on read" : "read error");
		return;
	}
	A.inlen += (u32)n;
	for (;;) {
		u32 i = 0;

		while (i < A.inlen && A.in[i] != '\n')
			i++;
		if (i == A.inlen) {
			if (A.inlen == INBUF_SIZE) {	/* an over-long line: drop it whole */
				A.discarding = 1;
				A.inlen = 0;
			}
			return;
		}
		if (A.discarding) {
			reply_error("null", "request line too long", NULL);
			A.discarding = 0;
		} else {
			handle_request(A.in, i);
		}
		memmove(A.in, A.in + i + 1, A.inlen - i - 1);
		A.inlen -= i + 1;
	}
}

/* ---------------------------------------------------------------------------- port */

static long find_port(char *path)
{
	static char dents[4096];
	long dfd = rt_open("/sys/class/virtio-ports", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0), n;
	long found = -ENOENT;

	if (dfd < 0)
		return dfd;
	while (found < 0 && (n = rt_sys3(SYS_getdents64, dfd, dents, sizeof(dents))) > 0) {
		for (long off = 0; off + 19 < n;) {
			u32 reclen = (u8)dents[off + 16] | (u32)(u8)dents[off + 17] << 8;
			const char *name = dents + off + 19;
			char p[128];
			struct rt_buf b;
			long len;

			if (reclen < 20 || off + (long)reclen > n)
				break;
			off += reclen;
			if (!rt_starts(name, "vport") || rt_strlen(name) > 32)
				continue;
			rt_buf_init(&b, p, sizeof(p));
			rt_buf_str(&b, "/sys/class/virtio-ports/");
			rt_buf_str(&b, name);
			rt_buf_str(&b, "/name");
			len = rt_slurp(rt_buf_cstr(&b), fbuf, sizeof(fbuf));
			if (len > 0 && ap_is_agent_port_name(fbuf, (size_t)len)) {
				rt_strcpy_n(path, "/dev/", 64);
				rt_strcpy_n(path + 5, name, 59);
				found = 0;
				break;
			}
		}
	}
	rt_close(dfd);
	return found;
}

static void port_open(void)
{
	static long last_err = 1;
	long r;

	if (A.fixed_path[0])
		rt_strcpy_n(A.path, A.fixed_path, sizeof(A.path));
	else if ((r = find_port(A.path)) < 0)
		goto fail;
	r = rt_open(A.path, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
	if (r < 0)
		goto fail;
	A.fd = r;
	A.host_up = 0;
	A.inlen = 0;
	logmsg("port open: ", A.path);
	rt_puts("KUMO-AGENT port=");
	rt_puts(A.path);
	rt_puts("\n");
	last_err = 1;
	return;
fail:
	if (r != last_err) {
		char t[24];

		logmsg("no org.kumo.agent port yet, errno ", rt_utoa((u64)-r, t + sizeof(t)));
		last_err = r;
	}
}

static void host_down(void)
{
	if (A.host_up)
		logmsg("host disconnected", NULL);
	A.host_up = 0;
	A.inlen = 0;
	A.discarding = 0;
}

/* Is a host connected? POLLHUP says no (virtio_console: host_connected false). */
static void port_check(void)
{
	struct rt_pollfd p = { (int)A.fd, POLLIN, 0 };
	int was = A.host_up;

	if (rt_poll(&p, 1, 0) < 0)
		return;
	if (p.revents & POLLNVAL) {
		port_close("POLLNVAL");
		return;
	}
	A.host_up = !(p.revents & POLLHUP);
	if (A.host_up && !was) {
		struct rt_buf b;

		logmsg("host connected", NULL);
		begin_event(&b, "hello");
		jw_u64(&b, "version", AGENT_VERSION);
		jw_u64(&b, "period_ms", A.period_ms);
		jw_str(&b, "port", A.path);
		put_cpulist(&b, "parked", A.parked);
		end_event(&b);
		A.next_stats = rt_now_ns();
	} else if (!A.host_up && was) {
		A.host_up = 1;
		host_down();
	}
}

/* ---------------------------------------------------------------------------- main */

static void parse_options(int argc, char **argv)
{
	u64 v;
	long n;

	A.period_ms = 1000;
	rt_strcpy_n(A.cg_root, "/sys/fs/cgroup", sizeof(A.cg_root));
	n = rt_slurp("/proc/cmdline", fbuf, sizeof(fbuf));
	for (long i = 0; i < n; i++) {
		if ((i == 0 || fbuf[i - 1] == ' ') && rt_starts(fbuf + i, "kumo.agent_period_ms=")) {
			char t[16];
			int k = 0;

			for (char *q = fbuf + i + 21; *q >= '0' && *q <= '9' && k < 15; q++)
				t[k++] = *q;
			t[k] = 0;
			if (rt_parse_u64(t, &v) == 0 && v >= 50 && v <= 3600000)
				A.period_ms = (u32)v;
		}
	}
	v = rt_arg_u64(argc, argv, "period_ms", A.period_ms);
	if (v >= 50 && v <= 3600000)
		A.period_ms = (u32)v;
	rt_strcpy_n(A.fixed_path, rt_arg_str(argc, argv, "port", ""), sizeof(A.fixed_path));
	rt_strcpy_n(A.cg_root, rt_arg_str(argc, argv, "cgroup", A.cg_root), sizeof(A.cg_root));
}

int main(int argc, char **argv, char **envp)
{
	struct rt_pollfd pfd[1 + MAX_RUNS];
	struct run *pr[1 + MAX_RUNS];

	A.fd = -1;
	if (rt_sys0(SYS_getpid) == 1) {
		/* PID 1 without kumo-probe before us: make the basic mounts ourselves. */
		rt_sys2(SYS_mkdir, "/proc", 0755);
		rt_sys2(SYS_mkdir, "/sys", 0755);
		rt_sys2(SYS_mkdir, "/dev", 0755);
		rt_mount("proc", "/proc", "proc", 0, 0);
		rt_mount("sysfs", "/sys", "sysfs", 0, 0);
		rt_mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
	}
	rt_ignore_sigpipe();
	parse_options(argc, argv);
	{
		char t[24];

		logmsg("started, period_ms=", rt_utoa(A.period_ms, t + sizeof(t)));
	}
	A.next_stats = rt_now_ns();
	for (;;) {
		u64 now = rt_now_ns();
		int n = 0, timeout;
		long r;

		if (A.fd < 0 && now >= A.next_open) {
			port_open();
			A.next_open = now + 1000000000ULL;
		}
		if (A.fd >= 0)
			port_check();
		now = rt_now_ns();
		if (now >= A.next_stats) {
			if (A.host_up)
				send_stats();
			A.next_stats += (u64)A.period_ms * 1000000;
			if (A.next_stats <= now)
				A.next_stats = now + (u64)A.period_ms * 1000000;
		}
		flush_out();
		if (A.fd >= 0 && A.host_up) {
			pfd[n].fd = (int)A.fd;
			pfd[n].events = POLLIN | (A.outlen ? POLLOUT : 0);
			pfd[n].revents = 0;
			pr[n++] = NULL;
		}
		for (int i = 0; i < MAX_RUNS; i++) {
			if (A.runs[i].active && A.runs[i].fd >= 0) {
				pfd[n].fd = (int)A.runs[i].fd;
				pfd[n].events = POLLIN;
				pfd[n].revents = 0;
				pr[n++] = &A.runs[i];
			}
		}
		now = rt_now_ns();
		timeout = A.next_stats > now ? (int)((A.next_stats - now) / 1000000) + 1 : 0;
		if (!A.host_up && timeout > 200)
			timeout = 200;	/* watch for a host connecting */
		/* A run whose pipe closed is about to exit (or the reverse): look again soon. */
		for (int i = 0; i < MAX_RUNS; i++)
			if (A.runs[i].active && (A.runs[i].exited || A.runs[i].fd < 0) && timeout > 20)
				timeout = 20;
		r = rt_poll(pfd, (u32)n, timeout);
		if (r > 0) {
			for (int i = 0; i < n; i++) {
				if (!pfd[i].revents)
					continue;
				if (pr[i]) {
					run_read(pr[i]);
				} else {
					if (pfd[i].revents & POLLHUP)
						host_down();
					else if (pfd[i].revents & POLLIN)
						port_read();
					if (A.fd >= 0 && (pfd[i].revents & POLLOUT))
						flush_out();
				}
			}
		}
		reap();
	}
	return 0;
}
