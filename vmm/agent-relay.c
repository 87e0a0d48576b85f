#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vmm/agent-relay.h"
#include "vmm/control.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"

#define RELAY_MAX_PENDING 16
#define RELAY_RETRY_MS 200

struct pending {
	uint64_t id;			/* 0: free slot */
	struct json_object *reply;	/* set by the relay thread */
	int error;			/* -ECONNRESET when the connection dropped */
};

struct agent_relay {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	agent_relay_emit_fn emit;
	void *opaque;
	pthread_t thread;
	int stop_fd;			/* eventfd: the thread stops when it is signalled */
	int fd;				/* connection to the port, -1 while disconnected */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pending pending[RELAY_MAX_PENDING];
	uint64_t next_id;
	struct json_object *stats;	/* latest stats data */
	struct json_object *hello;	/* the agent's hello on this connection (its data) */
	struct timespec stats_at;
	struct agent_relay_counters n;

	int waiters;			/* callers inside agent_relay_request() */
	int stopping;			/* agent_relay_shutdown() ran: no new requests */

	char *buf;			/* partial line from the agent */
	size_t len;
	int skipping;			/* inside a line that was too long: drop up to its newline */
};

static double since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

int agent_relay_parse_line(const char *line, size_t len, struct agent_line *out)
{
	struct json_object *root, *ev, *id, *ok;
	char err[128];

	memset(out, 0, sizeof(*out));
	if (json_parse_object_line(line, len, AGENT_RELAY_MAX_LINE, &root, err, sizeof(err)) < 0)
		return -EINVAL;
	if (json_object_object_get_ex(root, "event", &ev)) {
		if (!json_object_is_type(ev, json_type_string) || !json_object_get_string_len(ev))
			goto bad;
		out->event = json_object_get_string(ev);
		json_object_object_get_ex(root, "data", &out->data);
		out->kind = strcmp(out->event, "stats") ? AGENT_LINE_EVENT : AGENT_LINE_STATS;
		out->obj = root;
		return 0;
	}
	if (json_object_object_get_ex(root, "id", &id) && json_object_is_type(id, json_type_int) &&
	    json_object_get_int64(id) >= 0 && json_object_object_get_ex(root, "ok", &ok) &&
	    json_object_is_type(ok, json_type_boolean)) {
		out->kind = AGENT_LINE_REPLY;
		out->id = (uint64_t)json_object_get_int64(id);
		out->obj = root;
		return 0;
	}
bad:
	json_object_put(root);
	return -EINVAL;
}

/* Wake every waiter with an error (the connection is gone). Under lock. */
static void fail_pending(struct agent_relay *r, int error)
{
	for (int i = 0; i < RELAY_MAX_PENDING; i++)
		if (r->pending[i].id && !r->pending[i].reply)
			r->pending[i].error = error;
	pthread_cond_broadcast(&r->cond);
}

static void handle_line(struct agent_relay *r, const char *line, size_t len)
{
	struct agent_line l;
	struct json_object *ev;

	if (len == 0)
		return;
	pthread_mutex_lock(&r->lock);
	r->n.lines++;
	pthread_mutex_unlock(&r->lock);
	if (agent_relay_parse_line(line, len, &l) < 0) {
		pthread_mutex_lock(&r->lock);
		r->n.bad_lines++;
		pthread_mutex_unlock(&r->lock);
		pr_warn_ratelimited("agent relay: dropped a line that is not an agent event or reply");
		return;
	}
	switch (l.kind) {
	case AGENT_LINE_STATS:
		pthread_mutex_lock(&r->lock);
		if (r->stats)
			json_object_put(r->stats);
		r->stats = l.data ? json_object_get(l.data) : json_object_new_object();
		clock_gettime(CLOCK_MONOTONIC, &r->stats_at);
		r->n.stats++;
		/* Copies, never shared references: json-c's reference counts are not atomic. */
		ev = NULL;
		if (json_object_deep_copy(r->stats, &ev, NULL) < 0)
			ev = NULL;
		pthread_mutex_unlock(&r->lock);
		r->emit(r->opaque, "agent-stats", ev);
		break;
	case AGENT_LINE_EVENT:
		if (!strcmp(l.event, "hello")) {	/* kept: a late client can still see it */
			pthread_mutex_lock(&r->lock);
			if (r->hello)
				json_object_put(r->hello);
			r->hello = NULL;
			if (!l.data || json_object_deep_copy(l.data, &r->hello, NULL) < 0)
				r->hello = json_object_new_object();
			pthread_mutex_unlock(&r->lock);
		}
		ev = json_object_new_object();
		json_object_object_add(ev, "event", json_object_new_string(l.event));
		if (l.data)
			json_object_object_add(ev, "data", json_object_get(l.data));
		pthread_mutex_lock(&r->lock);
		r->n.events++;
		pthread_mutex_unlock(&r->lock);
		r->emit(r->opaque, "agent-event", ev);
		break;
	case AGENT_LINE_REPLY: {
		int found = 0;

		pthread_mutex_lock(&r->lock);
		for (int i = 0; i < RELAY_MAX_PENDING && !found; i++)
			if (r->pending[i].id == l.id && !r->pending[i].reply && !r->pending[i].error) {
				/* Handed over whole: json-c's reference counts are not atomic. */
				r->pending[i].reply = l.obj;
				l.obj = NULL;
				found = 1;
			}
		if (found) {
			r->n.replies++;
			pthread_cond_broadcast(&r->cond);
		} else {
			r->n.orphan_replies++;	/* late (timed out) or never asked for */
		}
		pthread_mutex_unlock(&r->lock);
		break;
	}
	}
	json_object_put(l.obj);
}

/* Split what arrived into lines; a line over the limit is dropped whole. */
static void take_bytes(struct agent_relay *r, const char *p, size_t n)
{
	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t chunk = nl ? (size_t)(nl - p) : n;

		if (!r->skipping) {
			if (r->len + chunk > AGENT_RELAY_MAX_LINE) {
				r->skipping = 1;
				r->len = 0;
				pthread_mutex_lock(&r->lock);
				r->n.bad_lines++;
				pthread_mutex_unlock(&r->lock);
				pr_warn_ratelimited("agent relay: dropped a line over %d bytes",
						    AGENT_RELAY_MAX_LINE);
			} else {
				memcpy(r->buf + r->len, p, chunk);
				r->len += chunk;
			}
		}
		if (!nl)
			return;
		if (!r->skipping)
			handle_line(r, r->buf, r->len);
		r->skipping = 0;
		r->len = 0;
		p = nl + 1;
		n -= chunk + 1;
	}
}

static int connect_port(struct agent_relay *r)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	memcpy(a.sun_path, r->path, sizeof(r->path));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static void set_connection(struct agent_relay *r, int fd)
{
	pthread_mutex_lock(&r->lock);
	if (r->fd >= 0 && fd < 0) {
		close(r->fd);
		fail_pending(r, -ECONNRESET);
		if (r->hello)
			json_object_put(r->hello);
		r->hello = NULL;
	}
	r->fd = fd;
	r->n.connected = fd >= 0;
	if (fd >= 0)
		r->n.connects++;
	pthread_mutex_unlock(&r->lock);
	r->len = 0;
	r->skipping = 0;
}

static void *relay_thread(void *arg)
{
	struct agent_relay *r = arg;
	char chunk[65536];

	seccomp_enter(KUMO_THREAD_RELAY);
	for (;;) {
		struct pollfd p[2] = { { .fd = r->stop_fd, .events = POLLIN },
				       { .fd = r->fd, .events = POLLIN } };
		int fd = r->fd;

		if (fd < 0) {
			fd = connect_port(r);
			if (fd >= 0) {
				set_connection(r, fd);
				pr_debug("agent relay: connected to %s", r->path);
				continue;
			}
			if (poll(p, 1, RELAY_RETRY_MS) > 0)
				break;
			continue;
		}
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		if (p[1].revents) {
			ssize_t n = read(fd, chunk, sizeof(chunk));

			if (n > 0) {
				take_bytes(r, chunk, (size_t)n);
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				pr_debug("agent relay: connection to %s closed", r->path);
				set_connection(r, -1);
			}
		}
	}
	return NULL;
}

static void relay_free(struct agent_relay *r)
{
	if (r->stop_fd >= 0)
		close(r->stop_fd);
	if (r->fd >= 0)
		close(r->fd);
	if (r->stats)
		json_object_put(r->stats);
	if (r->hello)
		json_object_put(r->hello);
	for (int i = 0; i < RELAY_MAX_PENDING; i++)
		if (r->pending[i].reply)
			json_object_put(r->pending[i].reply);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r->buf);
	free(r);
}

int agent_relay_start(struct agent_relay **out, const char *sock_path, agent_relay_emit_fn emit,
		      void *opaque)
{
	struct agent_relay *r;
	pthread_condattr_t ca;
	int ret;

	if (strlen(sock_path) >= sizeof(r->path))
		return -ENAMETOOLONG;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	strcpy(r->path, sock_path);
	r->emit = emit;
	r->opaque = opaque;
	r->fd = -1;
	r->next_id = 1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	r->stop_fd = eventfd(0, EFD_CLOEXEC);
	r->buf = malloc(AGENT_RELAY_MAX_LINE);
	if (r->stop_fd < 0 || !r->buf) {
		ret = r->stop_fd < 0 ? -errno : -ENOMEM;
		relay_free(r);
		return ret;
	}
	ret = -pthread_create(&r->thread, NULL, relay_thread, r);
	if (ret) {
		relay_free(r);
		return ret;
	}
	*out = r;
	return 0;
}

void agent_relay_shutdown(struct agent_relay *r)
{
	uint64_t one = 1;

	if (!r || r->stopping)	/* stopping: written by this (the owner's) thread only */
		return;
	if (write(r->stop_fd, &one, sizeof(one)) != sizeof(one))
		pr_warn("agent relay: cannot signal its thread");
	pthread_join(r->thread, NULL);
	pthread_mutex_lock(&r->lock);
	r->stopping = 1;
	fail_pending(r, -ECONNRESET);
	while (r->waiters)	/* they still hold r: let them leave before it can go */
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
}

void agent_relay_stop(struct agent_relay *r)
{
	if (!r)
		return;
	agent_relay_shutdown(r);
	relay_free(r);
}

int agent_relay_request(struct agent_relay *r, const char *verb, struct json_object *args,
			int timeout_ms, struct json_object **reply)
{
	struct json_object *req;
	struct pending *slot = NULL;
	struct timespec until;
	const char *text;
	size_t len;
	int ret = 0;

	*reply = NULL;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->lock);
	if (r->stopping || r->fd < 0) {
		pthread_mutex_unlock(&r->lock);
		return r->stopping ? -ESHUTDOWN : -ENOTCONN;
	}
	for (int i = 0; i < RELAY_MAX_PENDING && !slot; i++)
		if (!r->pending[i].id)
			slot = &r->pending[i];
	if (!slot) {
		pthread_mutex_unlock(&r->lock);
		return -EBUSY;
	}
	*slot = (struct pending){ .id = r->next_id++ };
	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_int64((int64_t)slot->id));
	json_object_object_add(req, "verb", json_object_new_string(verb));
	if (args)
		json_object_object_add(req, "args", json_object_get(args));
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	len = strlen(text);
	/* One line, never blocking the caller: a port that takes nothing is -EAGAIN. */
	if (send(r->fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len ||
	    send(r->fd, "\n", 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
		ret = errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -ECONNRESET;
	json_object_put(req);
	r->waiters++;
	while (!ret && !slot->reply && !slot->error)
		if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
			ret = -ETIMEDOUT;
	if (--r->waiters == 0 && r->stopping)
		pthread_cond_broadcast(&r->cond);
	if (!ret && slot->error)
		ret = slot->error;
	if (!ret)
		*reply = slot->reply;
	else if (slot->reply)
		json_object_put(slot->reply);
	*slot = (struct pending){ 0 };
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int agent_relay_stats(struct agent_relay *r, struct json_object **data, double *age_s)
{
	int ret = -ENODATA;

	*data = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->stats && json_object_deep_copy(r->stats, data, NULL) == 0) {
		*age_s = since(&r->stats_at);
		ret = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int agent_relay_hello(struct agent_relay *r, struct json_object **data)
{
	int ret = -ENODATA;

	*data = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->hello && json_object_deep_copy(r->hello, data, NULL) == 0)
		ret = 0;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void agent_relay_counters(struct agent_relay *r, struct agent_relay_counters *c)
{
	pthread_mutex_lock(&r->lock);
	*c = r->n;
	pthread_mutex_unlock(&r->lock);
}

/* One agent request on its own thread, answered through a deferred control reply. */
struct agent_call {
	struct agent_relay *r;
	char *verb;
	struct json_object *args;	/* may be NULL */
	int timeout_ms;
	struct control_pending *reply;
};

/* The agent's reply as a control verb's outcome: 0 and its result, or -errno and err. */
static int agent_call_run(struct agent_call *a, struct json_object **result, char *err,
			  size_t errlen)
{
	struct json_object *reply = NULL, *v;
	int ret = agent_relay_request(a->r, a->verb, a->args, a->timeout_ms, &reply);

	if (ret < 0) {
		snprintf(err, errlen, "agent: %s", ret == -ENOTCONN ? "the port is not connected" :
			 ret == -ETIMEDOUT ? "no reply in time" : strerror(-ret));
		return ret;
	}
	if (json_object_object_get_ex(reply, "ok", &v) && !json_object_get_boolean(v)) {
		struct json_object *e = NULL;

		json_object_object_get_ex(reply, "error", &e);
		snprintf(err, errlen, "agent: %s", e ? json_object_get_string(e) : "failed");
		json_object_put(reply);
		return -EREMOTEIO;
	}
	if (json_object_object_get_ex(reply, "result", &v) && v)
		*result = json_object_get(v);
	json_object_put(reply);
	return 0;
}

static void agent_call_free(struct agent_call *a)
{
	if (a->args)
		json_object_put(a->args);
	free(a->verb);
	free(a);
}

static void *agent_call_thread(void *arg)
{
	struct agent_call *a = arg;
	struct json_object *result = NULL;
	char err[256] = "";
	int ret;

	seccomp_enter(KUMO_THREAD_AGENT_CALL);
	ret = agent_call_run(a, &result, err, sizeof(err));

	control_complete(a->reply, ret, result, err);
	agent_call_free(a);
	return NULL;
}

/*
 * agent verb=NAME [args={...}] [timeout_ms=N]: one request to the guest agent. Its reply is
 * deferred (control_defer) and sent from a thread of its own, so a slow agent (a `run` with
 * wait) holds up nobody else on the control socket. Outside a control server's verb call it
 * waits in place.
 */
int agent_relay_verb_agent(struct agent_relay *r, struct json_object *args,
			   struct json_object **result, char *err, size_t errlen)
{
	struct json_object *a = NULL;
	struct agent_call *call;
	const char *verb;
	int64_t timeout = 30000;
	pthread_attr_t attr;
	pthread_t t;
	int ret;

	if (!r) {
		snprintf(err, errlen, "no agent relay (kumo run needs --agent and --control)");
		return -ENODEV;
	}
	ret = control_arg_string(args, "verb", &verb, err, errlen);
	if (ret < 0)
		return ret;
	if (json_object_object_get_ex(args, "args", &a) && a &&
	    !json_object_is_type(a, json_type_object)) {
		snprintf(err, errlen, "argument 'args' must be an object");
		return -EINVAL;
	}
	if (json_object_object_get_ex(args, "timeout_ms", NULL)) {
		ret = control_arg_int64(args, "timeout_ms", &timeout, err, errlen);
		if (ret < 0)
			return ret;
		if (timeout < 1 || timeout > 600000) {
			snprintf(err, errlen, "timeout_ms must be 1..600000");
			return -EINVAL;
		}
	}
	call = calloc(1, sizeof(*call));
	if (!call || !(call->verb = strdup(verb))) {
		free(call);
		return -ENOMEM;
	}
	call->r = r;
	/* A copy for the other thread (json-c's reference counts are not atomic). */
	if (a && json_object_deep_copy(a, &call->args, NULL) < 0) {
		agent_call_free(call);
		return -ENOMEM;
	}
	call->timeout_ms = (int)timeout;
	ret = control_defer(&call->reply);
	if (ret < 0) {
		if (ret == -ESRCH)	/* not called by a control server */
			ret = agent_call_run(call, result, err, errlen);
		else if (ret == -EBUSY)
			snprintf(err, errlen, "too many requests in flight");
		agent_call_free(call);
		return ret;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	ret = pthread_create(&t, &attr, agent_call_thread, call);
	pthread_attr_destroy(&attr);
	if (ret)	/* no thread: answer in place, still through the handle */
		agent_call_thread(call);
	return CONTROL_DEFERRED;
}

/* The guest agent's latest statistics, with their age and the relay's counters. */
int agent_relay_verb_stats(struct agent_relay *r, struct json_object *args,
			   struct json_object **result, char *err, size_t errlen)
{
	struct agent_relay_counters c;
	struct json_object *o, *data;
	double age;

	(void)args;

	if (!r) {
		snprintf(err, errlen, "no agent relay (kumo run needs --agent and --control)");
		return -ENODEV;
	}
	agent_relay_counters(r, &c);
	o = json_object_new_object();
	json_object_object_add(o, "connected", json_object_new_boolean(c.connected));
	json_object_object_add(o, "stats_received", json_object_new_int64((int64_t)c.stats));
	json_object_object_add(o, "bad_lines", json_object_new_int64((int64_t)c.bad_lines));
	json_object_object_add(o, "connects", json_object_new_int64((int64_t)c.connects));
	if (agent_relay_hello(r, &data) == 0)
		json_object_object_add(o, "hello", data);
	if (agent_relay_stats(r, &data, &age) == 0) {
		json_object_object_add(o, "age_s", json_object_new_double(age));
		json_object_object_add(o, "data", data);
	}
	*result = o;
	return 0;
}
