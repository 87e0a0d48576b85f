/*
 * The coordinator (sched/coord.h): one blocking connection per VMM, request/reply by id, a
 * receive timeout that drops a VMM which stops answering (and reconnects to it later), the
 * policy API's get/set calls on top, and a JSON-lines log of every sample and action.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "mm/mem.h"
#include "sched/coord.h"
#include "sched/policies.h"
#include "sched/sched.h"
#include "sched/stats.h"
#include "vmm/control.h"

#define ERRLEN		256
#define RECONNECT_S	1.0
#define MIN_KEEP	(32ull << 20)	/* no balloon target below this, whatever a policy asks */

struct coord_vm {
	char *path;
	int fd;				/* -1: not connected */
	pid_t pid;			/* the VMM's, from SO_PEERCRED; 0 unknown */
	struct control_linebuf lb;
	int64_t next_id;
	double next_connect;
	bool ever_up;
	bool down_logged;		/* this outage is in the log already */
	/* The latest samples and when they were taken (coordinator clock). */
	bool mem_ok;
	double mem_ts;
	struct sched_mem mem;
	int agent_ret;			/* 0, or why there is no agent data */
	double agent_ts;
	struct sched_agent agent;
	bool cpu_ok;
	double cpu_ts;
	struct sched_cpu cpu;
};

struct coord {
	struct sched head;		/* first: the policy API's handle */
	struct coord_vm *vms;
	int nvms;
	FILE *log;
	uint64_t budget;		/* 0: the host's MemTotal */
	int timeout_ms;
	double stale_s;
	const char *policy;		/* the policy being ticked, for the log */
	const char *token;		/* token file for tcp: VMs (--token) */
	bool host_ok;
	struct sched_host host;
};

static const struct sched_ops coord_ops;

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the log ---- */

/* A double printed short (json-c's default is %.17g). */
static struct json_object *dbl(double v, int decimals)
{
	char buf[48];

	snprintf(buf, sizeof(buf), "%.*f", decimals, v);
	return json_object_new_double_s(v, buf);
}

static struct json_object *log_line(const char *type, const char *vm)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ts", dbl(mono_now(), 6));
	json_object_object_add(o, "type", json_object_new_string(type));
	if (vm)
		json_object_object_add(o, "vm", json_object_new_string(vm));
	return o;
}

static void log_put(struct coord *c, struct json_object *o)
{
	if (c->log) {
		fprintf(c->log, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							 JSON_C_TO_STRING_NOSLASHESCAPE));
		fflush(c->log);
	}
	json_object_put(o);
}

static void add_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

/* ---- connections ---- */

static void vm_down(struct coord *c, struct coord_vm *v, const char *why)
{
	struct json_object *o;

	if (v->fd < 0)
		return;
	close(v->fd);
	v->fd = -1;
	v->mem_ok = v->cpu_ok = false;
	v->agent_ret = -ENOTCONN;
	control_linebuf_free(&v->lb);
	v->next_connect = mono_now() + RECONNECT_S;
	v->down_logged = true;
	o = log_line("vm-down", v->path);
	json_object_object_add(o, "reason", json_object_new_string(why));
	log_put(c, o);
}

static int vm_up(struct coord *c, struct coord_vm *v)
{
	struct timeval tv = { .tv_sec = c->timeout_ms / 1000,
			      .tv_usec = (c->timeout_ms % 1000) * 1000 };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct json_object *o;
	char err[ERRLEN];
	int fd = control_connect_auth(v->path, c->token, err, sizeof(err));

	if (fd < 0) {
		v->next_connect = mono_now() + RECONNECT_S;
		if (!v->down_logged) {
			v->down_logged = true;
			o = log_line("vm-down", v->path);
			json_object_object_add(o, "reason", json_object_new_string(err));
			log_put(c, o);
		}
		return fd;
	}
	v->down_logged = false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* A VMM on TCP may be on another host: its threads are not ours to read or renice. */
	v->pid = strncmp(v->path, "tcp:", 4) &&
		 getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
	v->fd = fd;
	v->agent_ret = -ENODATA;
	o = log_line("vm-up", v->path);
	json_object_object_add(o, "pid", json_object_new_int(v->pid));
	json_object_object_add(o, "reconnect", json_object_new_boolean(v->ever_up));
	log_put(c, o);
	v->ever_up = true;
	return 0;
}

/*
 * One request and its reply. Events are skipped; a broken connection, a timeout or a reply
 * that cannot be read drops the VM (-ENOTCONN). An error reply is -EREMOTEIO with its message.
 */
static int vm_call(struct coord *c, struct coord_vm *v, const char *verb, struct json_object *args,
		   struct json_object **result, char *err, size_t errlen)
{
	struct json_object *req;
	int64_t id = ++v->next_id;
	int ret;

	*result = NULL;
	if (v->fd < 0) {
		if (args)
			json_object_put(args);
		snprintf(err, errlen, "not connected");
		return -ENOTCONN;
	}
	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_int64(id));
	json_object_object_add(req, "verb", json_object_new_string(verb));
	json_object_object_add(req, "args", args ? args : json_object_new_object());
	ret = control_send(v->fd, req);
	json_object_put(req);
	if (ret) {
		snprintf(err, errlen, "send: %s", strerror(-ret));
		vm_down(c, v, err);
		return -ENOTCONN;
	}
	for (;;) {
		size_t len;
		int64_t rid;

		ret = control_getline(v->fd, &v->lb, &len);
		if (ret <= 0) {
			snprintf(err, errlen, "%s", ret == 0 ? "connection closed" :
				 ret == -EAGAIN ? "no reply in time" : strerror(-ret));
			vm_down(c, v, err);
			return -ENOTCONN;
		}
		ret = sched_parse_reply(v->lb.buf, len, &rid, result, err, errlen);
		if (ret == 1)
			continue;
		if (ret == -EINVAL) {
			vm_down(c, v, err);
			return -ENOTCONN;
		}
		if (rid != id) {	/* a late reply to a request we gave up on */
			if (*result)
				json_object_put(*result);
			*result = NULL;
			continue;
		}
		return ret;
	}
}

struct coord *coord_new(FILE *log)
{
	struct coord *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->head.ops = &coord_ops;
	c->log = log;
	c->timeout_ms = 3000;
	c->stale_s = 5.0;
	return c;
}

void coord_free(struct coord *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->nvms; i++) {
		if (c->vms[i].fd >= 0)
			close(c->vms[i].fd);
		control_linebuf_free(&c->vms[i].lb);
		free(c->vms[i].path);
	}
	free(c->vms);
	free(c);
}

int coord_add_vm(struct coord *c, const char *path)
{
	struct coord_vm *v = realloc(c->vms, (c->nvms + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	c->vms = v;
	v += c->nvms;
	memset(v, 0, sizeof(*v));
	v->fd = -1;
	v->agent_ret = -ENOTCONN;
	v->path = strdup(path);
	if (!v->path)
		return -ENOMEM;
	c->nvms++;
	return 0;
}

void coord_set_host_budget(struct coord *c, uint64_t bytes)
{
	c->budget = bytes;
}

void coord_set_token(struct coord *c, const char *token_file)
{
	c->token = token_file;
}

void coord_set_timeout_ms(struct coord *c, int ms)
{
	c->timeout_ms = ms > 0 ? ms : 1;
}

struct sched *coord_sched(struct coord *c)
{
	return &c->head;
}

int coord_connect(struct coord *c)
{
	double now = mono_now();
	int n = 0;

	for (int i = 0; i < c->nvms; i++) {
		struct coord_vm *v = &c->vms[i];

		if (v->fd < 0 && now >= v->next_connect)
			vm_up(c, v);
		n += v->fd >= 0;
	}
	return n;
}

/* ---- sampling ---- */

static int read_text(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

static void sample_host(struct coord *c)
{
	struct sched_host *h = &c->host;
	struct json_object *o;
	char buf[8192];

	memset(h, 0, sizeof(*h));
	c->host_ok = !read_text("/proc/loadavg", buf, sizeof(buf)) &&
		     !sched_parse_loadavg(buf, h->load) &&
		     !read_text("/proc/meminfo", buf, sizeof(buf)) &&
		     !sched_parse_meminfo(buf, &h->mem_total, &h->mem_available);
	h->cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	h->psi = !read_text("/proc/pressure/memory", buf, sizeof(buf)) &&
		 !sched_parse_psi(buf, &h->psi_some_avg10, &h->psi_full_avg10);
	h->budget_bytes = c->budget ? c->budget : h->mem_total;
	o = log_line("host", NULL);
	json_object_object_add(o, "ok", json_object_new_boolean(c->host_ok));
	json_object_object_add(o, "load1", dbl(h->load[0], 2));
	add_u64(o, "mem_total", h->mem_total);
	add_u64(o, "mem_available", h->mem_available);
	add_u64(o, "budget", h->budget_bytes);
	if (h->psi)
		json_object_object_add(o, "psi_some_avg10",
				       dbl(h->psi_some_avg10, 2));
	log_put(c, o);
}

/* Calls fn for every vCPU thread (comm kumo-vcpuN) of the VMM. The count, or -errno. */
static int for_each_vcpu_thread(const struct coord_vm *v, void (*fn)(pid_t tid, void *arg),
				void *arg)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	if (v->pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)v->pid);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char comm[32], p[96];
		pid_t tid = atoi(de->d_name);

		if (tid <= 0)
			continue;
		snprintf(p, sizeof(p), "/proc/%d/task/%d/comm", (int)v->pid, (int)tid);
		if (read_text(p, comm, sizeof(comm)) || strncmp(comm, "kumo-vcpu", 9))
			continue;
		fn(tid, arg);
		n++;
	}
	closedir(d);
	return n;
}

struct cpu_acc {
	const struct coord_vm *v;
	struct sched_cpu *cpu;
};

static void add_thread_time(pid_t tid, void *arg)
{
	struct cpu_acc *a = arg;
	char p[96], buf[1024];
	uint64_t ticks;
	int nice;

	snprintf(p, sizeof(p), "/proc/%d/task/%d/stat", (int)a->v->pid, (int)tid);
	if (read_text(p, buf, sizeof(buf)) || sched_parse_task_stat(buf, &ticks, &nice))
		return;
	a->cpu->vcpu_time_ns += ticks * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
	if (!a->cpu->vcpus++)
		a->cpu->nice = nice;
}

static void sample_vm(struct coord *c, struct coord_vm *v)
{
	struct json_object *res, *o, *m;
	struct cpu_acc acc = { v, &v->cpu };
	char err[ERRLEN];
	int ret;

	o = log_line("sample", v->path);
	ret = vm_call(c, v, "stats", NULL, &res, err, sizeof(err));
	if (ret == 0) {
		ret = sched_parse_vmm_stats(res, &v->mem);
		json_object_put(res);
	}
	v->mem_ok = ret == 0;
	v->mem_ts = mono_now();
	if (v->mem_ok) {
		m = json_object_new_object();
		add_u64(m, "ram", v->mem.ram_bytes);
		add_u64(m, "resident", v->mem.resident_bytes);
		if (v->mem.balloon) {
			add_u64(m, "target", v->mem.target_bytes);
			add_u64(m, "actual", v->mem.actual_bytes);
		}
		if (v->mem.balloon_stats) {
			add_u64(m, "swap_in", v->mem.swap_in);
			add_u64(m, "major_faults", v->mem.major_faults);
			add_u64(m, "available", v->mem.available_memory);
			add_u64(m, "disk_caches", v->mem.disk_caches);
		}
		json_object_object_add(o, "mem", m);
	} else {
		json_object_object_add(o, "mem_error", json_object_new_string(
					       ret == -EINVAL ? "bad stats reply" : err));
	}

	ret = vm_call(c, v, "agent-stats", NULL, &res, err, sizeof(err));
	if (ret == 0) {
		ret = sched_parse_agent_stats(res, &v->agent);
		json_object_put(res);
	}
	v->agent_ret = ret;
	v->agent_ts = mono_now();
	if (ret == 0) {
		m = json_object_new_object();
		json_object_object_add(m, "age_s", dbl(v->agent.age_s, 3));
		add_u64(m, "seq", v->agent.seq);
		add_u64(m, "committed_as", v->agent.committed_as);
		add_u64(m, "cached", v->agent.cached);
		add_u64(m, "active_file", v->agent.active_file);
		add_u64(m, "mem_available", v->agent.mem_available);
		add_u64(m, "refault_file", v->agent.refault_file);
		add_u64(m, "pswpin", v->agent.pswpin);
		add_u64(m, "pgmajfault", v->agent.pgmajfault);
		if (v->agent.psi)
			json_object_object_add(m, "psi_some_avg10",
					       dbl(v->agent.psi_some_avg10, 2));
		json_object_object_add(o, "agent", m);
	} else {
		json_object_object_add(o, "agent_error", json_object_new_string(
			ret == -ENOTCONN && v->fd >= 0 ? "agent not connected" :
			ret == -ENODATA ? "no agent data" : err));
	}

	memset(&v->cpu, 0, sizeof(v->cpu));
	v->cpu_ok = v->fd >= 0 && for_each_vcpu_thread(v, add_thread_time, &acc) > 0;
	v->cpu_ts = mono_now();
	if (v->cpu_ok) {
		m = json_object_new_object();
		json_object_object_add(m, "vcpus", json_object_new_int(v->cpu.vcpus));
		add_u64(m, "vcpu_time_ns", v->cpu.vcpu_time_ns);
		json_object_object_add(m, "nice", json_object_new_int(v->cpu.nice));
		json_object_object_add(o, "cpu", m);
	}
	log_put(c, o);
}

void coord_sample(struct coord *c)
{
	sample_host(c);
	for (int i = 0; i < c->nvms; i++)
		if (c->vms[i].fd >= 0)
			sample_vm(c, &c->vms[i]);
}

void coord_tick(struct coord *c, const struct sched_policy *p, void *state)
{
	c->policy = p->name;
	p->tick(&c->head, state);
	c->policy = NULL;
}

/* ---- the policy API: get ---- */

static struct coord *to_coord(const struct sched *s)
{
	return (struct coord *)s;
}

static struct coord_vm *get_vm(const struct sched *s, int vm)
{
	struct coord *c = to_coord(s);

	return vm >= 0 && vm < c->nvms ? &c->vms[vm] : NULL;
}

static double api_now(const struct sched *s)
{
	return mono_now();
}

static int api_vm_count(const struct sched *s)
{
	return to_coord(s)->nvms;
}

static const char *api_vm_name(const struct sched *s, int vm)
{
	struct coord_vm *v = get_vm(s, vm);

	return v ? v->path : NULL;
}

/* Whether a sample taken at ts can be used: 0, -ENOTCONN, -ENODATA or -ESTALE. */
static int freshness(const struct coord *c, const struct coord_vm *v, bool ok, double ts)
{
	if (v->fd < 0)
		return -ENOTCONN;
	if (!ok)
		return -ENODATA;
	return mono_now() - ts > c->stale_s ? -ESTALE : 0;
}

static int api_get_mem(const struct sched *s, int vm, struct sched_mem *out)
{
	struct coord_vm *v = get_vm(s, vm);
	int ret = v ? freshness(to_coord(s), v, v->mem_ok, v->mem_ts) : -EINVAL;

	if (ret)
		return ret;
	*out = v->mem;
	out->age_s = mono_now() - v->mem_ts;
	return 0;
}

static int api_get_cpu(const struct sched *s, int vm, struct sched_cpu *out)
{
	struct coord_vm *v = get_vm(s, vm);
	int ret = v ? freshness(to_coord(s), v, v->cpu_ok, v->cpu_ts) : -EINVAL;

	if (ret)
		return ret;
	*out = v->cpu;
	out->age_s = mono_now() - v->cpu_ts;
	return 0;
}

static int api_get_agent(const struct sched *s, int vm, struct sched_agent *out)
{
	struct coord *c = to_coord(s);
	struct coord_vm *v = get_vm(s, vm);
	int ret = v ? freshness(c, v, v->agent_ret == 0, v->agent_ts) : -EINVAL;

	if (ret)
		return ret == -ENODATA && v->agent_ret ? v->agent_ret : ret;
	*out = v->agent;
	out->age_s += mono_now() - v->agent_ts;
	return out->age_s > c->stale_s ? -ESTALE : 0;
}

static int api_get_host(const struct sched *s, struct sched_host *out)
{
	struct coord *c = to_coord(s);

	if (!c->host_ok)
		return -ENODATA;
	*out = c->host;
	return 0;
}

/* ---- the policy API: set ---- */

static struct json_object *action_line(struct coord *c, struct coord_vm *v, const char *action,
				       const char *why)
{
	struct json_object *o = log_line("action", v ? v->path : NULL);

	json_object_object_add(o, "policy", json_object_new_string(c->policy ? c->policy : "-"));
	json_object_object_add(o, "action", json_object_new_string(action));
	if (why)
		json_object_object_add(o, "why", json_object_new_string(why));
	return o;
}

static int action_done(struct coord *c, struct json_object *o, int ret, const char *err)
{
	json_object_object_add(o, "ok", json_object_new_boolean(ret == 0));
	if (ret)
		json_object_object_add(o, "error", json_object_new_string(err && *err ? err :
									  strerror(-ret)));
	log_put(c, o);
	return ret;
}

/* What the other VMs' memory targets add up to: their balloon target, else all their RAM. */
static uint64_t others_total(const struct coord *c, const struct coord_vm *self)
{
	uint64_t sum = 0;

	for (int i = 0; i < c->nvms; i++) {
		const struct coord_vm *v = &c->vms[i];

		if (v == self || !v->ever_up)
			continue;
		sum += v->mem.balloon ? v->mem.target_bytes : v->mem.ram_bytes;
	}
	return sum;
}

static int api_set_balloon(struct sched *s, int vm, uint64_t keep, const char *why)
{
	struct coord *c = to_coord(s);
	struct coord_vm *v = get_vm(s, vm);
	struct json_object *o, *args, *res;
	char err[ERRLEN] = "";
	uint64_t t;
	int ret;

	if (!v)
		return -EINVAL;
	o = action_line(c, v, "balloon", why);
	add_u64(o, "requested", keep);
	ret = freshness(c, v, v->mem_ok, v->mem_ts);
	if (ret)
		return action_done(c, o, ret, "no fresh VMM stats: hold");
	if (!v->mem.balloon)
		return action_done(c, o, -ENODEV, "no balloon device");
	if (!c->host_ok)
		return action_done(c, o, -ENODATA, "no host memory figures: hold");
	t = sched_bound_target(keep, v->mem.ram_bytes, c->host.budget_bytes, others_total(c, v),
			       MIN_KEEP);
	if (!t)
		return action_done(c, o, -ENOSPC, "no room within the host budget");
	add_u64(o, "target", t);
	json_object_object_add(o, "bounded", json_object_new_boolean(t != keep));
	args = json_object_new_object();
	add_u64(args, "target", t);
	ret = vm_call(c, v, "balloon-set", args, &res, err, sizeof(err));
	if (!ret) {
		struct json_object *tb;

		v->mem.target_bytes = t;
		if (res && json_object_object_get_ex(res, "target_bytes", &tb))
			v->mem.target_bytes = (uint64_t)json_object_get_int64(tb);
	}
	if (res)
		json_object_put(res);
	return action_done(c, o, ret, err);
}

struct nice_acc {
	int nice, failed;
};

static void set_thread_nice(pid_t tid, void *arg)
{
	struct nice_acc *a = arg;

	if (setpriority(PRIO_PROCESS, tid, a->nice))
		a->failed = -errno;
}

static int api_set_nice(struct sched *s, int vm, int nice, const char *why)
{
	struct coord *c = to_coord(s);
	struct coord_vm *v = get_vm(s, vm);
	struct nice_acc acc;
	struct json_object *o;
	int n;

	if (!v)
		return -EINVAL;
	acc.nice = nice < -20 ? -20 : nice > 19 ? 19 : nice;
	acc.failed = 0;
	o = action_line(c, v, "nice", why);
	json_object_object_add(o, "requested", json_object_new_int(nice));
	json_object_object_add(o, "nice", json_object_new_int(acc.nice));
	if (v->fd < 0)
		return action_done(c, o, -ENOTCONN, NULL);
	n = for_each_vcpu_thread(v, set_thread_nice, &acc);
	if (n == 0)
		n = -ESRCH;
	return action_done(c, o, n < 0 ? n : acc.failed, NULL);
}

static int api_set_cpu_weight(struct sched *s, int vm, int weight, const char *why)
{
	struct coord *c = to_coord(s);
	struct coord_vm *v = get_vm(s, vm);
	char p[64], buf[4096], file[4200], *cg, *nl;
	struct json_object *o;
	FILE *f;
	int ret, w;

	if (!v)
		return -EINVAL;
	w = weight < 1 ? 1 : weight > 10000 ? 10000 : weight;
	o = action_line(c, v, "cpu.weight", why);
	json_object_object_add(o, "requested", json_object_new_int(weight));
	json_object_object_add(o, "weight", json_object_new_int(w));
	if (v->fd < 0 || v->pid <= 0)
		return action_done(c, o, v->fd < 0 ? -ENOTCONN : -ESRCH, NULL);
	snprintf(p, sizeof(p), "/proc/%d/cgroup", (int)v->pid);
	ret = read_text(p, buf, sizeof(buf));
	if (ret)
		return action_done(c, o, ret, NULL);
	cg = strstr(buf, "0::");	/* the cgroup v2 line */
	if (!cg || (cg != buf && cg[-1] != '\n'))
		return action_done(c, o, -ENOTSUP, "not in a cgroup v2 hierarchy");
	cg += 3;
	nl = strchr(cg, '\n');
	if (nl)
		*nl = '\0';
	snprintf(file, sizeof(file), "/sys/fs/cgroup%s/cpu.weight", cg);
	json_object_object_add(o, "file", json_object_new_string(file));
	f = fopen(file, "we");
	if (!f)
		return action_done(c, o, -errno, NULL);
	ret = fprintf(f, "%d\n", w) < 0 ? -EIO : 0;
	if (fclose(f) && !ret)
		ret = -errno;
	return action_done(c, o, ret, NULL);
}

static int api_set_pin(struct sched *s, int vm, int vcpu, const char *cpus, const char *why)
{
	struct coord *c = to_coord(s);
	struct coord_vm *v = get_vm(s, vm);
	struct json_object *o, *args, *res;
	char err[ERRLEN] = "";
	int ret;

	if (!v || !cpus)
		return -EINVAL;
	o = action_line(c, v, "pin", why);
	json_object_object_add(o, "vcpu", json_object_new_int(vcpu));
	json_object_object_add(o, "cpus", json_object_new_string(cpus));
	args = json_object_new_object();
	json_object_object_add(args, "vcpu", json_object_new_int(vcpu));
	json_object_object_add(args, "cpus", json_object_new_string(cpus));
	ret = vm_call(c, v, "vcpu-pin", args, &res, err, sizeof(err));
	if (res)
		json_object_put(res);
	return action_done(c, o, ret, err);
}

static int api_set_park(struct sched *s, int vm, const char *cpus, bool park, const char *why)
{
	struct coord *c = to_coord(s);
	struct coord_vm *v = get_vm(s, vm);
	struct json_object *o, *args, *aargs, *res;
	char err[ERRLEN] = "";
	int ret;

	if (!v || (park && !cpus))
		return -EINVAL;
	o = action_line(c, v, park ? "park" : "unpark", why);
	if (cpus)
		json_object_object_add(o, "cpus", json_object_new_string(cpus));
	args = json_object_new_object();
	aargs = json_object_new_object();
	json_object_object_add(args, "verb",
			       json_object_new_string(park ? "park-cpus" : "unpark-cpus"));
	if (cpus)
		json_object_object_add(aargs, "cpus", json_object_new_string(cpus));
	json_object_object_add(args, "args", aargs);
	json_object_object_add(args, "timeout_ms", json_object_new_int(c->timeout_ms * 2 / 3));
	ret = vm_call(c, v, "agent", args, &res, err, sizeof(err));
	if (res)
		json_object_put(res);
	return action_done(c, o, ret, err);
}

static void api_log(struct sched *s, const char *policy, const char *msg)
{
	struct json_object *o = log_line("policy", NULL);

	json_object_object_add(o, "policy", json_object_new_string(policy ? policy : "-"));
	json_object_object_add(o, "msg", json_object_new_string(msg ? msg : ""));
	log_put(to_coord(s), o);
}

static const struct sched_ops coord_ops = {
	.version = SCHED_API_VERSION,
	.now = api_now,
	.vm_count = api_vm_count,
	.vm_name = api_vm_name,
	.get_mem = api_get_mem,
	.get_cpu = api_get_cpu,
	.get_agent = api_get_agent,
	.get_host = api_get_host,
	.set_balloon = api_set_balloon,
	.set_nice = api_set_nice,
	.set_cpu_weight = api_set_cpu_weight,
	.set_pin = api_set_pin,
	.set_park = api_set_park,
	.log = api_log,
};

/* ---- policies ---- */

const struct sched_policy *const sched_builtin_policies[] = {
	&sched_policy_margin,
	&sched_policy_cpu_priority,
	&sched_policy_cpu_weight,
	&sched_policy_exclusive,
	&sched_policy_cache,
	NULL,
};

const struct sched_policy *coord_find_policy(const char *name, void **handle, char *err,
					     size_t errlen)
{
	const struct sched_policy *p;

	*handle = NULL;
	if (!strchr(name, '/')) {
		for (int i = 0; sched_builtin_policies[i]; i++)
			if (!strcmp(sched_builtin_policies[i]->name, name))
				return sched_builtin_policies[i];
		snprintf(err, errlen, "unknown policy '%s' (built in: margin, cpu-priority, "
			 "cpu-weight, exclusive, cache; or ./file.so)", name);
		return NULL;
	}
	*handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!*handle) {
		snprintf(err, errlen, "%s", dlerror());
		return NULL;
	}
	p = dlsym(*handle, SCHED_POLICY_SYMBOL);
	if (!p || !p->name || !p->tick || !p->period_ms) {
		snprintf(err, errlen, "%s: no valid '%s' (a const struct sched_policy)", name,
			 SCHED_POLICY_SYMBOL);
		dlclose(*handle);
		*handle = NULL;
		return NULL;
	}
	return p;
}

/* ---- kumo coord ---- */

static volatile sig_atomic_t coord_stop;

static void on_stop(int sig)
{
	coord_stop = sig;
}

/*
 * --config FILE: the same settings for many VMs, one per line -- "vm SOCKET", "policy LIST",
 * "log FILE", "host-mem SIZE", "token FILE", "duration SECONDS"; '#' starts a comment. Options
 * on the command line come after the file's lines (a later policy/log/... wins; VMs add up).
 * 0, or -EINVAL with "FILE:LINE: why" in err.
 */
int coord_config_line(struct coord *c, struct coord_settings *st, const char *line, char *err,
		      size_t errlen)
{
	char key[32], val[1024], extra[2];
	int n;

	while (*line == ' ' || *line == '\t')
		line++;
	if (!*line || *line == '#' || *line == '\n')
		return 0;
	n = sscanf(line, "%31s %1023s %1s", key, val, extra);
	if (n != 2 || (val[0] == '#')) {
		snprintf(err, errlen, "expected \"KEY VALUE\"");
		return -EINVAL;
	}
	if (!strcmp(key, "vm")) {
		if (coord_add_vm(c, val)) {
			snprintf(err, errlen, "vm %s: cannot add it", val);
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "host-mem")) {
		uint64_t b;

		if (mm_parse_size(val, &b) < 0 || !b) {
			snprintf(err, errlen, "host-mem %s: not a size", val);
			return -EINVAL;
		}
		st->budget = b;
		return 0;
	}
	if (!strcmp(key, "duration")) {
		char *end;
		double d = strtod(val, &end);

		if (*end || !(d > 0)) {
			snprintf(err, errlen, "duration %s: not a positive number", val);
			return -EINVAL;
		}
		st->duration = d;
		return 0;
	}
	{
		char **slot = !strcmp(key, "policy") ? &st->policies : !strcmp(key, "log") ?
			      &st->log : !strcmp(key, "token") ? &st->token : NULL;

		if (!slot) {
			snprintf(err, errlen, "unknown key %s (vm, policy, log, host-mem, token, "
				 "duration)", key);
			return -EINVAL;
		}
		free(*slot);
		*slot = strdup(val);
		return *slot ? 0 : -ENOMEM;
	}
}

static int read_config(struct coord *c, struct coord_settings *st, const char *path, char *err,
		       size_t errlen)
{
	FILE *f = fopen(path, "re");
	char line[1200], why[160];
	int no = 0, ret = 0;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	while (!ret && fgets(line, sizeof(line), f)) {
		no++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line too long", path, no);
			ret = -EINVAL;
		} else if ((ret = coord_config_line(c, st, line, why, sizeof(why)))) {
			snprintf(err, errlen, "%s:%d: %s", path, no, why);
		}
	}
	fclose(f);
	return ret;
}

static const char coord_usage[] =
	"usage: kumo coord --vm SOCKET [--vm SOCKET...] --policy NAME[,NAME...] [--log FILE]\n"
	"                  [--host-mem SIZE] [--duration SECONDS] [--token FILE]\n"
	"       kumo coord --config FILE [options]\n"
	"  --config FILE    settings for many VMs, a line each: vm SOCKET, policy LIST, log FILE,\n"
	"                   host-mem SIZE, token FILE, duration SECONDS ('#' comments)\n"
	"  --vm SOCKET      a VMM's control socket (kumo run --control): a Unix path or\n"
	"                   tcp:HOST:PORT; repeat for more VMs\n"
	"  --policy LIST    built-in policies (margin, cpu-priority, cpu-weight, exclusive,\n"
	"                   cache) or shared objects (./my.so), comma-separated\n"
	"  --log FILE       JSON-lines log of every sample and action (default: stdout)\n"
	"  --host-mem SIZE  what the VMs' memory targets may add up to (default: MemTotal)\n"
	"  --duration S     stop after S seconds (default: until SIGINT/SIGTERM)\n"
	"  --token FILE     the token (mode 0600) that tcp: VMs are reached with\n";

#define MAX_POLICIES 16

int coord_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vm", required_argument, NULL, 'v' },
		{ "policy", required_argument, NULL, 'p' },
		{ "log", required_argument, NULL, 'l' },
		{ "host-mem", required_argument, NULL, 'm' },
		{ "duration", required_argument, NULL, 'd' },
		{ "token", required_argument, NULL, 't' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct sched_policy *pol[MAX_POLICIES];
	void *handles[MAX_POLICIES] = { 0 }, *states[MAX_POLICIES] = { 0 };
	double due[MAX_POLICIES], period = 0, end = 0, duration = 0, next;
	const char *policies = NULL, *logpath = NULL;
	char err[ERRLEN], *list = NULL, *tok, *save;
	struct sigaction sa = { .sa_handler = on_stop };
	uint64_t budget = 0;
	int npol = 0, opt, ret = 1, inited = 0;
	struct coord_settings conf = { 0 };
	FILE *log = stdout;
	struct coord *c;

	c = coord_new(NULL);
	if (!c)
		return 1;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'v':
			if (coord_add_vm(c, optarg)) {
				coord_free(c);
				return 1;
			}
			break;
		case 'p': policies = optarg; break;
		case 'l': logpath = optarg; break;
		case 't': coord_set_token(c, optarg); break;
		case 'c':
			if (read_config(c, &conf, optarg, err, sizeof(err))) {
				fprintf(stderr, "kumo coord: --config %s\n", err);
				goto usage;
			}
			if (conf.policies)
				policies = conf.policies;
			if (conf.log)
				logpath = conf.log;
			if (conf.token)
				coord_set_token(c, conf.token);
			if (conf.budget)
				budget = conf.budget;
			if (conf.duration > 0)
				duration = conf.duration;
			break;
		case 'm':
			if (mm_parse_size(optarg, &budget) < 0 || !budget) {
				fprintf(stderr, "kumo coord: --host-mem %s: not a size\n", optarg);
				goto usage;
			}
			break;
		case 'd': {
			char *end_p;

			duration = strtod(optarg, &end_p);
			if (*end_p || !(duration > 0)) {
				fprintf(stderr, "kumo coord: --duration %s: not a positive number\n",
					optarg);
				goto usage;
			}
			break;
		}
		case 'h':
			fputs(coord_usage, stdout);
			coord_free(c);
			return 0;
		default:
			goto usage;
		}
	}
	if (optind != argc || !c->nvms || !policies) {
		fprintf(stderr, "kumo coord: needs --vm and --policy\n");
		goto usage;
	}
	list = strdup(policies);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (npol == MAX_POLICIES) {
			fprintf(stderr, "kumo coord: at most %d policies\n", MAX_POLICIES);
			goto out;
		}
		pol[npol] = coord_find_policy(tok, &handles[npol], err, sizeof(err));
		if (!pol[npol]) {
			fprintf(stderr, "kumo coord: --policy %s: %s\n", tok, err);
			goto out;
		}
		npol++;
	}
	if (!npol) {
		fprintf(stderr, "kumo coord: --policy: empty list\n");
		goto out;
	}
	if (logpath && !(log = fopen(logpath, "ae"))) {
		fprintf(stderr, "kumo coord: --log %s: %s\n", logpath, strerror(errno));
		goto out;
	}
	c->log = log;
	coord_set_host_budget(c, budget);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	coord_connect(c);
	for (; inited < npol; inited++) {
		if (pol[inited]->init && (ret = pol[inited]->init(&c->head, &states[inited]))) {
			fprintf(stderr, "kumo coord: policy %s: init: %s\n", pol[inited]->name,
				strerror(-ret));
			ret = 1;
			goto out;
		}
		if (!period || pol[inited]->period_ms / 1000.0 < period)
			period = pol[inited]->period_ms / 1000.0;
		due[inited] = 0;
	}
	next = mono_now();
	if (duration)
		end = next + duration;
	/* One sample per shortest period; each policy ticks when its own period has passed. */
	while (!coord_stop && (!end || mono_now() < end)) {
		double now = mono_now();

		if (now < next) {
			double w = next - now;
			struct timespec ts = { (time_t)w, (long)((w - (time_t)w) * 1e9) };

			nanosleep(&ts, NULL);
			continue;
		}
		coord_connect(c);
		coord_sample(c);
		for (int i = 0; i < npol; i++) {
			if (now < due[i])
				continue;
			coord_tick(c, pol[i], states[i]);
			due[i] = now + pol[i]->period_ms / 1000.0 - period / 2;
		}
		next += period;
		if (next < mono_now())
			next = mono_now() + period;
	}
	ret = 0;
out:
	for (int i = 0; i < inited; i++)
		if (pol[i]->fini)
			pol[i]->fini(states[i]);
	for (int i = 0; i < npol; i++)
		if (handles[i])
			dlclose(handles[i]);
	if (log && log != stdout)
		fclose(log);
	free(list);
	coord_free(c);
	free(conf.policies);
	free(conf.log);
	free(conf.token);
	return ret;
usage:
	fputs(coord_usage, stderr);
	coord_free(c);
	free(conf.policies);
	free(conf.log);
	free(conf.token);
	return 2;
}
