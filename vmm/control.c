/*
 * Control socket server and `kumo ctl` client. One thread owns every socket: it reads request
 * lines, runs the verbs and flushes output. Other threads only queue event lines under the lock
 * and kick an eventfd, so a slow or hostile client can never block anyone but itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vmm/control-auth.h"
#include "vmm/control.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"

#define ERRLEN 256

struct client {
	struct client *next;
	uint64_t serial;	/* unique per server: deferred replies find their client by it */
	int fd;
	uint32_t events;	/* current epoll interest */
	/* Input: touched by the control thread only. */
	char *in;
	size_t inlen;
	/* Output and state: under srv->lock. */
	char *out;
	size_t outoff, outlen, outcap;
	bool subscribed;
	bool closing;		/* close once the output is flushed */
	bool dead;		/* close at the end of this loop iteration */
	/* TCP: no verb before the token is proven (control-auth.h), by auth_deadline (ms,
	 * CLOCK_MONOTONIC): a silent client would otherwise hold one of the few slots. */
	bool authed;
	uint64_t auth_deadline;
	uint8_t nonce[CONTROL_AUTH_NONCE];
	char peer[64];
};

struct control_server {
	int lfd, epfd, wakefd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];	/* Unix only */
	bool tcp;
	struct control_token token;	/* tcp */
	const struct control_verb *verbs;
	size_t nverbs;
	void *opaque;
	pthread_t thread;
	pthread_mutex_t lock;
	struct client *clients;
	int nclients;
	int stop;		/* __atomic */
	bool kick;		/* events queued since the thread last flushed */
	uint64_t next_serial;	/* under lock */
	int deferred;		/* replies owed by control_defer() handles; under lock */
	pthread_cond_t deferred_done;
};

/* A reply owed to one request, answered later by control_complete() from any thread. */
struct control_pending {
	struct control_server *srv;
	uint64_t client;	/* its client's serial */
	struct json_object *id;
};

/* The request the control thread is running a verb for (control_defer() reads it). */
static __thread struct control_server *cur_srv;
static __thread struct client *cur_client;
static __thread struct json_object *cur_id;

/* ---- request parsing ---- */

void control_request_free(struct control_request *req)
{
	if (req->root)
		json_object_put(req->root);
	memset(req, 0, sizeof(*req));
}

int json_parse_object_line(const char *line, size_t len, size_t max, struct json_object **out,
			   char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *root;
	enum json_tokener_error jerr;

	*out = NULL;
	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len > max) {
		snprintf(err, errlen, "line longer than %zu bytes", max);
		return -EINVAL;
	}
	if (memchr(line, '\0', len)) {
		snprintf(err, errlen, "NUL byte in line");
		return -EINVAL;
	}
	tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
	if (!tok) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, line, (int)len);
	jerr = json_tokener_get_error(tok);
	if (jerr == json_tokener_success && json_tokener_get_parse_end(tok) != len) {
		snprintf(err, errlen, "invalid JSON: trailing data after the object");
		jerr = json_tokener_error_parse_unexpected;
	} else if (jerr == json_tokener_continue) {
		snprintf(err, errlen, "invalid JSON: incomplete");
	} else if (jerr != json_tokener_success) {
		snprintf(err, errlen, "invalid JSON: %s", json_tokener_error_desc(jerr));
	}
	json_tokener_free(tok);
	if (jerr != json_tokener_success) {
		if (root)
			json_object_put(root);
		return -EINVAL;
	}
	if (!json_object_is_type(root, json_type_object)) {
		snprintf(err, errlen, "not a JSON object");
		json_object_put(root);
		return -EINVAL;
	}
	*out = root;
	return 0;
}

int control_parse_request(const char *line, size_t len, struct control_request *req, char *err,
			  size_t errlen)
{
	struct json_object *root, *verb, *args;
	int ret;

	memset(req, 0, sizeof(*req));
	ret = json_parse_object_line(line, len, CONTROL_MAX_LINE, &root, err, errlen);
	if (ret < 0) {
		if (ret == -EINVAL && !strcmp(err, "not a JSON object"))
			snprintf(err, errlen, "request must be a JSON object");
		return ret;
	}
	req->root = root;
	json_object_object_get_ex(root, "id", &req->id);
	if (!json_object_object_get_ex(root, "verb", &verb) || !verb) {
		snprintf(err, errlen, "missing \"verb\"");
		return -EINVAL;
	}
	if (!json_object_is_type(verb, json_type_string) || !json_object_get_string_len(verb) ||
	    strlen(json_object_get_string(verb)) != (size_t)json_object_get_string_len(verb)) {
		snprintf(err, errlen, "\"verb\" must be a non-empty string without NUL");
		return -EINVAL;
	}
	req->verb = json_object_get_string(verb);
	if (!json_object_object_get_ex(root, "args", &args) || !args) {
		/* Absent or null: an empty object owned by root, so verbs never see NULL. */
		args = json_object_new_object();
		if (!args || json_object_object_add(root, "args", args)) {
			if (args)
				json_object_put(args);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
	} else if (!json_object_is_type(args, json_type_object)) {
		snprintf(err, errlen, "\"args\" must be an object");
		return -EINVAL;
	}
	req->args = args;
	return 0;
}

/* ---- argument helpers ---- */

static struct json_object *arg_get(struct json_object *args, const char *key, char *err,
				   size_t errlen)
{
	struct json_object *v = NULL;

	if (!args || !json_object_object_get_ex(args, key, &v) || !v) {
		snprintf(err, errlen, "missing argument '%s'", key);
		return NULL;
	}
	return v;
}

int control_arg_int64(struct json_object *args, const char *key, int64_t *out, char *err,
		      size_t errlen)
{
	struct json_object *v = arg_get(args, key, err, errlen);

	if (!v)
		return -ENOENT;
	/* json-c clamps out-of-range integers; refuse rather than act on a clamped value. */
	if (!json_object_is_type(v, json_type_int) ||
	    (json_object_get_int64(v) == INT64_MAX && json_object_get_uint64(v) != INT64_MAX)) {
		snprintf(err, errlen, "argument '%s' must be an integer", key);
		return -EINVAL;
	}
	*out = json_object_get_int64(v);
	return 0;
}

int control_arg_bool(struct json_object *args, const char *key, int *out, char *err,
		     size_t errlen)
{
	struct json_object *v = arg_get(args, key, err, errlen);

	if (!v)
		return -ENOENT;
	if (!json_object_is_type(v, json_type_boolean)) {
		snprintf(err, errlen, "argument '%s' must be true or false", key);
		return -EINVAL;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

int control_arg_string(struct json_object *args, const char *key, const char **out, char *err,
		       size_t errlen)
{
	struct json_object *v = arg_get(args, key, err, errlen);

	if (!v)
		return -ENOENT;
	if (!json_object_is_type(v, json_type_string)) {
		snprintf(err, errlen, "argument '%s' must be a string", key);
		return -EINVAL;
	}
	*out = json_object_get_string(v);
	return 0;
}

/* ---- output ---- */

static void client_set_events(struct control_server *srv, struct client *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (c->events == events || c->dead)
		return;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = events;
	else
		c->dead = true;
}

/* Called with srv->lock held. Never blocks. */
static void client_flush(struct control_server *srv, struct client *c)
{
	while (!c->dead && c->outoff < c->outlen) {
		ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->outoff += n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			client_set_events(srv, c, c->closing ? EPOLLOUT : EPOLLIN | EPOLLOUT);
			return;
		} else {
			c->dead = true;	/* EPIPE, ECONNRESET: the client went away */
			return;
		}
	}
	if (c->dead)
		return;
	c->outoff = c->outlen = 0;
	if (c->closing)
		c->dead = true;
	else
		client_set_events(srv, c, EPOLLIN);
}

/* Queues one line (a newline is added). Called with srv->lock held. */
static void client_queue(struct client *c, const char *s, size_t len)
{
	size_t need;

	if (c->dead)
		return;
	if (c->outoff && c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	need = c->outlen - c->outoff + len + 1;
	if (need > CONTROL_MAX_OUTBUF) {
		pr_warn_ratelimited("control: client not reading its replies, dropped");
		c->dead = true;
		return;
	}
	if (c->outoff && c->outlen + len + 1 > c->outcap) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	if (c->outlen + len + 1 > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 4096;
		char *p;

		while (cap < c->outlen + len + 1)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p) {
			c->dead = true;
			return;
		}
		c->out = p;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, s, len);
	c->out[c->outlen + len] = '\n';
	c->outlen += len + 1;
}

static const char *to_line(struct json_object *obj, size_t *len)
{
	return json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN |
						 JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

static struct json_object *reply_new(struct json_object *id, bool ok)
{
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "id", id ? json_object_get(id) : NULL);
	json_object_object_add(r, "ok", json_object_new_boolean(ok));
	return r;
}

static struct json_object *error_reply(struct json_object *id, const char *msg)
{
	struct json_object *r = reply_new(id, false);

	json_object_object_add(r, "error", json_object_new_string(msg));
	return r;
}

/* Queues a reply line (a reply too big for the output bound becomes an error); false if it
 * was replaced. Called with srv->lock held. */
static bool queue_reply(struct client *c, struct json_object *r)
{
	size_t len;
	const char *s = to_line(r, &len);
	struct json_object *id = NULL, *e;

	if (len + 1 <= CONTROL_MAX_OUTBUF) {
		client_queue(c, s, len);
		return true;
	}
	json_object_object_get_ex(r, "id", &id);
	e = error_reply(id, "reply too large");
	s = to_line(e, &len);
	client_queue(c, s, len);
	json_object_put(e);
	return false;
}

/* Sends a reply (and frees it). */
static void client_reply(struct control_server *srv, struct client *c, struct json_object *r,
			 bool subscribe)
{
	pthread_mutex_lock(&srv->lock);
	if (queue_reply(c, r) && subscribe)
		c->subscribed = true;	/* after the reply, so it precedes any event */
	client_flush(srv, c);
	pthread_mutex_unlock(&srv->lock);
	json_object_put(r);
}

/* The reply to a verb that returned ret (0 or -errno) with result or err; takes result. */
static struct json_object *verb_reply(struct json_object *id, int ret, struct json_object *result,
				      const char *err)
{
	struct json_object *r;
	char msg[ERRLEN];

	if (ret) {
		if (result)
			json_object_put(result);
		snprintf(msg, sizeof(msg), "%s", err && err[0] ? err :
			 strerror(ret < 0 ? -ret : ret));
		return error_reply(id, msg);
	}
	r = reply_new(id, true);
	json_object_object_add(r, "result", result ? result : json_object_new_object());
	return r;
}

/* ---- deferred replies ---- */

static void wake(struct control_server *srv);

int control_defer(struct control_pending **out)
{
	struct control_server *srv = cur_srv;
	struct control_pending *p;

	if (!srv)
		return -ESRCH;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_lock(&srv->lock);
	if (srv->deferred >= CONTROL_MAX_DEFERRED) {
		pthread_mutex_unlock(&srv->lock);
		free(p);
		return -EBUSY;
	}
	srv->deferred++;
	pthread_mutex_unlock(&srv->lock);
	p->srv = srv;
	p->client = cur_client->serial;
	/* A copy: the request is freed on this thread while the handle lives on another, and
	 * json-c's reference counts are not atomic. */
	if (cur_id && json_object_deep_copy(cur_id, &p->id, NULL) < 0) {
		pthread_mutex_lock(&srv->lock);
		srv->deferred--;
		pthread_mutex_unlock(&srv->lock);
		free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

void control_complete(struct control_pending *p, int ret, struct json_object *result,
		      const char *err)
{
	struct control_server *srv = p->srv;
	struct json_object *r = verb_reply(p->id, ret, result, err);
	struct client *c;

	pthread_mutex_lock(&srv->lock);
	for (c = srv->clients; c; c = c->next)
		if (c->serial == p->client)
			break;
	if (c && !c->dead && !c->closing) {	/* a client that left gets nothing */
		queue_reply(c, r);
		srv->kick = true;
	}
	srv->deferred--;
	pthread_cond_broadcast(&srv->deferred_done);
	pthread_mutex_unlock(&srv->lock);
	wake(srv);
	json_object_put(r);
	if (p->id)
		json_object_put(p->id);
	free(p);
}

/* ---- verbs ---- */

static int verb_help(struct control_server *srv, struct json_object **result)
{
	struct json_object *list = json_object_new_array();
	static const struct control_verb builtin[] = {
		{ "help", NULL, "list the verbs" },
		{ "events", NULL, "subscribe this connection to event lines" },
	};

	for (size_t i = 0; i < 2 + srv->nverbs; i++) {
		const struct control_verb *v = i < 2 ? &builtin[i] : &srv->verbs[i - 2];
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(v->name));
		json_object_object_add(o, "help", json_object_new_string(v->help ? v->help : ""));
		json_object_array_add(list, o);
	}
	*result = json_object_new_object();
	json_object_object_add(*result, "verbs", list);
	return 0;
}

/* A TCP client's first line: its answer to our challenge. Refused: logged and closed. */
static void auth_line(struct control_server *srv, struct client *c, const char *line, size_t len)
{
	static const char ok[] = "{\"auth\":\"ok\"}";
	static const char no[] = "{\"id\":null,\"ok\":false,\"error\":\"authentication failed\"}";
	int ret = control_auth_check(&srv->token, c->nonce, line, len);

	pthread_mutex_lock(&srv->lock);
	if (ret) {
		pr_warn_ratelimited("control: %s: refused (%s)", c->peer,
				    ret == -EACCES ? "wrong token" : "no token answer");
		client_queue(c, no, sizeof(no) - 1);
		c->closing = true;
	} else {
		pr_debug("control: %s: authenticated", c->peer);
		c->authed = true;
		client_queue(c, ok, sizeof(ok) - 1);
	}
	client_flush(srv, c);
	pthread_mutex_unlock(&srv->lock);
}

static void handle_line(struct control_server *srv, struct client *c, const char *line,
			size_t len)
{
	struct control_request req;
	struct json_object *result = NULL;
	char err[ERRLEN] = "";
	bool subscribe = false;
	size_t i;
	int ret;

	for (i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
			break;
	if (i == len)
		return;		/* blank lines are ignored */
	if (!c->authed) {
		auth_line(srv, c, line, len);
		return;
	}

	if (control_parse_request(line, len, &req, err, sizeof(err))) {
		client_reply(srv, c, error_reply(req.id, err), false);
		control_request_free(&req);
		return;
	}
	if (!strcmp(req.verb, "help")) {
		ret = verb_help(srv, &result);
	} else if (!strcmp(req.verb, "events")) {
		result = json_object_new_object();
		json_object_object_add(result, "subscribed", json_object_new_boolean(1));
		subscribe = true;
		ret = 0;
	} else {
		for (i = 0; i < srv->nverbs; i++)
			if (!strcmp(srv->verbs[i].name, req.verb))
				break;
		if (i == srv->nverbs) {
			snprintf(err, sizeof(err), "unknown verb '%.64s' (try \"help\")", req.verb);
			client_reply(srv, c, error_reply(req.id, err), false);
			control_request_free(&req);
			return;
		}
		cur_srv = srv;
		cur_client = c;
		cur_id = req.id;
		ret = srv->verbs[i].fn(srv->opaque, req.args, &result, err, sizeof(err));
		cur_srv = NULL;
		cur_client = NULL;
		cur_id = NULL;
	}
	if (ret == CONTROL_DEFERRED) {	/* the verb took a control_defer() handle */
		control_request_free(&req);
		return;
	}
	client_reply(srv, c, verb_reply(req.id, ret, result, err), subscribe);
	control_request_free(&req);
}

/* ---- input ---- */

static void client_read(struct control_server *srv, struct client *c)
{
	size_t start = 0, i, scan;
	ssize_t n;

	n = recv(c->fd, c->in + c->inlen, CONTROL_MAX_LINE + 1 - c->inlen, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		pthread_mutex_lock(&srv->lock);
		c->dead = true;
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	if (n == 0) {
		/* EOF: a partial line is dropped; pending replies still go out. */
		pthread_mutex_lock(&srv->lock);
		c->inlen = 0;
		c->closing = true;
		client_flush(srv, c);
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	scan = c->inlen;
	c->inlen += n;
	for (i = scan; i < c->inlen; i++) {
		if (c->in[i] != '\n')
			continue;
		handle_line(srv, c, c->in + start, i - start);
		start = i + 1;
		if (c->dead || c->closing)
			return;
	}
	if (start) {
		memmove(c->in, c->in + start, c->inlen - start);
		c->inlen -= start;
	}
	if (c->inlen > CONTROL_MAX_LINE) {
		char msg[64];

		snprintf(msg, sizeof(msg), "request line longer than %d bytes", CONTROL_MAX_LINE);
		client_reply(srv, c, error_reply(NULL, msg), false);
		pthread_mutex_lock(&srv->lock);
		c->closing = true;
		c->inlen = 0;
		client_flush(srv, c);
		pthread_mutex_unlock(&srv->lock);
	}
}

/* ---- connections ---- */

static void client_free(struct client *c)
{
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

/* A new TCP client gets a fresh nonce; nothing else until it answers. Under srv->lock. */
static void challenge(struct control_server *srv, struct client *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char line[CONTROL_AUTH_LINE], host[48], port[8];

	if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(c->peer, sizeof(c->peer), "tcp client");
	else
		snprintf(c->peer, sizeof(c->peer), "%s:%s", host, port);
	if (control_auth_nonce(c->nonce)) {
		c->dead = true;
		return;
	}
	control_auth_challenge(c->nonce, line, sizeof(line));
	client_queue(c, line, strlen(line));
	client_flush(srv, c);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void accept_clients(struct control_server *srv)
{
	for (;;) {
		struct epoll_event ev;
		struct client *c;
		int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				pr_warn_ratelimited("control: accept: %s", strerror(errno));
			return;
		}
		if (srv->nclients >= CONTROL_MAX_CLIENTS) {
			static const char msg[] =
				"{\"id\":null,\"ok\":false,\"error\":\"too many clients\"}\n";

			send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c)
			c->in = malloc(CONTROL_MAX_LINE + 1);
		if (!c || !c->in) {
			if (c)
				free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->authed = !srv->tcp;
		c->auth_deadline = now_ms() + CONTROL_AUTH_TIMEOUT_MS;
		c->events = EPOLLIN;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev)) {
			client_free(c);
			continue;
		}
		pthread_mutex_lock(&srv->lock);
		c->serial = ++srv->next_serial;
		c->next = srv->clients;
		srv->clients = c;
		srv->nclients++;
		if (srv->tcp)
			challenge(srv, c);
		pthread_mutex_unlock(&srv->lock);
	}
}

/*
 * Flushes queued events, closes TCP clients that did not prove the token in time, then the
 * dead. Returns the ms until the next such deadline (-1: none), epoll_wait's timeout.
 * Control thread only.
 */
static int reap(struct control_server *srv)
{
	struct client **pp, *c;
	uint64_t now = now_ms(), next = UINT64_MAX;

	pthread_mutex_lock(&srv->lock);
	for (c = srv->clients; c; c = c->next) {
		if (c->authed || c->dead || c->closing)
			continue;
		if (c->auth_deadline <= now) {
			pr_warn_ratelimited("control: %s: no token proof within %d ms: closed",
					    c->peer, CONTROL_AUTH_TIMEOUT_MS);
			c->dead = true;
		} else if (c->auth_deadline < next) {
			next = c->auth_deadline;
		}
	}
	if (srv->kick) {
		srv->kick = false;
		for (c = srv->clients; c; c = c->next)
			if (c->outlen > c->outoff && !(c->events & EPOLLOUT))
				client_flush(srv, c);
	}
	for (pp = &srv->clients; (c = *pp);) {
		if (!c->dead) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		srv->nclients--;
		epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		client_free(c);
	}
	pthread_mutex_unlock(&srv->lock);
	return next == UINT64_MAX ? -1 : (int)(next - now);
}

static void *control_thread(void *arg)
{
	struct control_server *srv = arg;
	struct epoll_event evs[16];
	int timeout = -1;

	seccomp_enter(KUMO_THREAD_CONTROL);
	while (!__atomic_load_n(&srv->stop, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(srv->epfd, evs, 16, timeout);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			pr_err("control: epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct client *c = evs[i].data.ptr;
			uint32_t e = evs[i].events;

			if (c == NULL) {
				uint64_t v;

				if (read(srv->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					pr_warn_ratelimited("control: eventfd: %s", strerror(errno));
				continue;
			}
			if (c == (struct client *)srv) {
				accept_clients(srv);
				continue;
			}
			if (c->dead)
				continue;
			if (e & EPOLLOUT) {
				pthread_mutex_lock(&srv->lock);
				client_flush(srv, c);
				pthread_mutex_unlock(&srv->lock);
			}
			if ((e & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->closing && !c->dead)
				client_read(srv, c);
			else if ((e & (EPOLLHUP | EPOLLERR)) && c->closing) {
				pthread_mutex_lock(&srv->lock);
				c->dead = true;
				pthread_mutex_unlock(&srv->lock);
			}
		}
		timeout = reap(srv);
	}
	return NULL;
}

static int listen_socket(const char *path, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int probe;

		ret = -errno;
		if (ret != -EADDRINUSE || lstat(path, &st) || !S_ISSOCK(st.st_mode))
			goto err_close;
		/* Replace a stale socket left by a dead VMM, never a live one. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe < 0)
			goto err_close;
		if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
		    errno != ECONNREFUSED) {
			close(probe);
			goto err_close;
		}
		close(probe);
		unlink(path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			ret = -errno;
			goto err_close;
		}
	}
	/* The socket can stop the VM: owner only. */
	if (chmod(path, 0600) || listen(fd, 16)) {
		ret = -errno;
		unlink(path);
		goto err_close;
	}
	*out = fd;
	return 0;
err_close:
	close(fd);
	return ret;
}

/* A listening (passive) or connected TCP socket to host:port: an fd or -errno. */
static int tcp_socket(const char *host, const char *port, bool passive)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 },
			*res, *ai;
	int fd = -1, one = 1, ret, flags = SOCK_CLOEXEC | (passive ? SOCK_NONBLOCK : 0);

	ret = getaddrinfo(host, port, &hints, &res);
	if (ret)
		return ret == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	ret = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | flags, ai->ai_protocol);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		if (passive) {
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (!bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, 16))
				break;
		} else if (!connect(fd, ai->ai_addr, ai->ai_addrlen)) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			break;
		}
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd >= 0 ? fd : ret;
}

int control_start(struct control_server **out, const char *path, const struct control_verb *verbs,
		  size_t nverbs, void *opaque)
{
	return control_start_auth(out, path, NULL, verbs, nverbs, opaque);
}

int control_start_auth(struct control_server **out, const char *path, const char *token_file,
		       const struct control_verb *verbs, size_t nverbs, void *opaque)
{
	struct control_server *srv;
	struct epoll_event ev;
	char host[256], port[16], err[ERRLEN];
	sigset_t all, old;
	int ret, tcp;

	for (size_t i = 0; i < nverbs; i++) {
		if (!verbs[i].name || !verbs[i].name[0] || !verbs[i].fn)
			return -EINVAL;
		if (!strcmp(verbs[i].name, "help") || !strcmp(verbs[i].name, "events"))
			return -EEXIST;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(verbs[i].name, verbs[j].name))
				return -EEXIST;
	}
	tcp = control_tcp_addr(path, host, sizeof(host), port, sizeof(port));
	if (tcp < 0 || (tcp && !token_file))
		return -EINVAL;		/* a TCP control socket without a token: never */
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->verbs = verbs;
	srv->nverbs = nverbs;
	srv->opaque = opaque;
	srv->tcp = tcp;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->deferred_done, NULL);
	if (tcp) {
		ret = control_token_load(token_file, &srv->token, err, sizeof(err));
		if (ret) {
			pr_err("control: %s", err);
			goto err_free;
		}
		srv->lfd = tcp_socket(host, port, true);
		ret = srv->lfd < 0 ? srv->lfd : 0;
	} else {
		ret = listen_socket(path, &srv->lfd);
	}
	if (ret)
		goto err_free;
	if (!tcp)
		snprintf(srv->path, sizeof(srv->path), "%s", path);
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->epfd < 0) {
		ret = -errno;
		goto err_listen;
	}
	srv->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->wakefd < 0) {
		ret = -errno;
		goto err_epoll;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->wakefd, &ev)) {
		ret = -errno;
		goto err_wake;
	}
	ev.data.ptr = srv;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->lfd, &ev)) {
		ret = -errno;
		goto err_wake;
	}
	/* Signals belong to the main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&srv->thread, NULL, control_thread, srv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		goto err_wake;
	*out = srv;
	return 0;
err_wake:
	close(srv->wakefd);
err_epoll:
	close(srv->epfd);
err_listen:
	close(srv->lfd);
	if (!srv->tcp)
		unlink(srv->path);
err_free:
	explicit_bzero(&srv->token, sizeof(srv->token));
	pthread_cond_destroy(&srv->deferred_done);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	return ret;
}

static void wake(struct control_server *srv)
{
	uint64_t one = 1;

	if (write(srv->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn_ratelimited("control: eventfd: %s", strerror(errno));
}

void control_stop(struct control_server *srv)
{
	struct client *c;

	if (!srv)
		return;
	__atomic_store_n(&srv->stop, 1, __ATOMIC_RELEASE);
	wake(srv);
	pthread_join(srv->thread, NULL);
	/* Owed replies are completed by their owners (stopped first: see control.h). */
	pthread_mutex_lock(&srv->lock);
	while (srv->deferred)
		pthread_cond_wait(&srv->deferred_done, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
	/* Last chance for replies (a "quit" reply) to go out; never blocks. */
	while ((c = srv->clients)) {
		srv->clients = c->next;
		client_flush(srv, c);
		client_free(c);
	}
	close(srv->wakefd);
	close(srv->epfd);
	close(srv->lfd);
	if (!srv->tcp)
		unlink(srv->path);
	explicit_bzero(&srv->token, sizeof(srv->token));
	pthread_cond_destroy(&srv->deferred_done);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}

int control_emit_event(struct control_server *srv, const char *name, struct json_object *data)
{
	struct json_object *ev;
	struct timespec ts;
	struct client *c;
	char tsbuf[32];
	const char *s;
	size_t len;
	int n = 0, touched = 0;

	if (!srv) {
		if (data)
			json_object_put(data);
		return 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string(name));
	json_object_object_add(ev, "data", data ? data : json_object_new_object());
	snprintf(tsbuf, sizeof(tsbuf), "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
	json_object_object_add(ev, "ts", json_object_new_double_s(ts.tv_sec + ts.tv_nsec / 1e9,
								   tsbuf));
	s = to_line(ev, &len);
	pthread_mutex_lock(&srv->lock);
	for (c = srv->clients; c; c = c->next) {
		if (!c->subscribed || c->dead || c->closing)
			continue;
		client_queue(c, s, len);
		touched = 1;	/* queued, or dropped for not reading: either way, wake */
		n += !c->dead;
	}
	if (touched)
		srv->kick = true;
	pthread_mutex_unlock(&srv->lock);
	json_object_put(ev);
	if (touched)
		wake(srv);
	return n;
}

/* ---- kumo ctl ---- */

static int ctl_usage(const char *name)
{
	fprintf(stderr, "usage: %s [--token FILE] SOCKET VERB [key=value ...]\n"
		"  SOCKET is a Unix socket path or tcp:HOST:PORT (with --token: its token file);\n"
		"  values are JSON when they parse as JSON (1, true, {\"a\":1}), else strings;\n"
		"  \"%s SOCKET help\" lists the verbs, \"events\" streams events.\n", name, name);
	return 2;
}

/* A value as JSON if the whole of it parses, else as a string. */
static struct json_object *ctl_value(const char *s)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *v = NULL;
	size_t len = strlen(s);

	if (tok) {
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
		/* Including the NUL, which ends a bare number. */
		v = json_tokener_parse_ex(tok, s, (int)len + 1);
		if (json_tokener_get_error(tok) != json_tokener_success ||
		    json_tokener_get_parse_end(tok) < len) {
			if (v)
				json_object_put(v);
			v = json_object_new_string(s);
		}
		json_tokener_free(tok);
		return v;
	}
	return json_object_new_string(s);
}

int control_connect_auth(const char *addr, const char *token_file, char *err, size_t errlen)
{
	struct timeval tv = { .tv_sec = 5 }, none = { 0 };
	struct control_linebuf lb = { 0 };
	struct control_token tok;
	char host[256], port[16];
	int fd, ret, tcp = control_tcp_addr(addr, host, sizeof(host), port, sizeof(port));

	if (tcp < 0) {
		snprintf(err, errlen, "%s: not tcp:HOST:PORT", addr);
		return -EINVAL;
	}
	if (!tcp) {
		fd = control_connect(addr);
		if (fd < 0)
			snprintf(err, errlen, "%s: %s", addr, strerror(-fd));
		return fd;
	}
	if (!token_file) {
		snprintf(err, errlen, "%s: a TCP control socket needs a token file", addr);
		return -EINVAL;
	}
	ret = control_token_load(token_file, &tok, err, errlen);
	if (ret)
		return ret;
	fd = tcp_socket(host, port, false);
	if (fd < 0) {
		explicit_bzero(&tok, sizeof(tok));
		snprintf(err, errlen, "%s: %s", addr, strerror(-fd));
		return fd;
	}
	/* The handshake is bounded; the caller sets its own timeouts afterwards. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ret = control_auth_client(fd, &lb, &tok, err, errlen);
	explicit_bzero(&tok, sizeof(tok));
	control_linebuf_free(&lb);
	if (ret) {
		close(fd);
		return ret;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	return fd;
}

int control_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int control_send(int fd, struct json_object *msg)
{
	size_t len, off = 0;
	const char *s = to_line(msg, &len);
	char *line = malloc(len + 1);

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len++] = '\n';
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int ret = -errno;

			free(line);
			return ret;
		}
		off += n;
	}
	free(line);
	return 0;
}

int control_getline(int fd, struct control_linebuf *lb, size_t *linelen)
{
	if (lb->consumed) {
		memmove(lb->buf, lb->buf + lb->consumed, lb->have - lb->consumed);
		lb->have -= lb->consumed;
		lb->consumed = 0;
	}
	for (;;) {
		char *nl = lb->have ? memchr(lb->buf, '\n', lb->have) : NULL;
		ssize_t n;

		if (nl) {
			*nl = '\0';
			*linelen = nl - lb->buf;
			lb->consumed = *linelen + 1;
			return 1;
		}
		if (lb->have == lb->cap) {
			size_t ncap = lb->cap ? lb->cap * 2 : 65536;
			char *p;

			if (ncap > 2 * CONTROL_MAX_OUTBUF)
				return -EMSGSIZE;
			p = realloc(lb->buf, ncap);
			if (!p)
				return -ENOMEM;
			lb->buf = p;
			lb->cap = ncap;
		}
		n = recv(fd, lb->buf + lb->have, lb->cap - lb->have, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		lb->have += n;
	}
}

void control_linebuf_free(struct control_linebuf *lb)
{
	free(lb->buf);
	memset(lb, 0, sizeof(*lb));
}

int control_client_main(int argc, char **argv)
{
	const char *name = argc > 0 ? argv[0] : "kumo ctl";
	const char *token = NULL;
	struct control_linebuf lb = { 0 };
	struct json_object *req, *args;
	char err[ERRLEN];
	size_t linelen;
	bool events;
	int fd, ret = 1;

	if (argc >= 3 && !strcmp(argv[1], "--token")) {
		token = argv[2];
		argv += 2;
		argc -= 2;
		argv[0] = (char *)name;
	}
	if (argc < 3 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		return ctl_usage(name);
	events = !strcmp(argv[2], "events");
	req = json_object_new_object();
	args = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_int(1));
	json_object_object_add(req, "verb", json_object_new_string(argv[2]));
	for (int i = 3; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		char *key;

		if (!eq || eq == argv[i]) {
			fprintf(stderr, "%s: expected key=value, got '%s'\n", name, argv[i]);
			json_object_put(req);
			json_object_put(args);
			return ctl_usage(name);
		}
		key = strndup(argv[i], eq - argv[i]);
		json_object_object_add(args, key, ctl_value(eq + 1));
		free(key);
	}
	json_object_object_add(req, "args", args);

	fd = control_connect_auth(argv[1], token, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", name, err);
		goto out_req;
	}
	ret = control_send(fd, req);
	if (ret) {
		fprintf(stderr, "%s: send: %s\n", name, strerror(-ret));
		ret = 1;
		goto out_fd;
	}
	ret = 1;

	for (;;) {
		struct json_object *msg, *v;
		int r = control_getline(fd, &lb, &linelen);
		const char *buf = lb.buf;

		if (r <= 0) {
			if (!events || r < 0)
				fprintf(stderr, "%s: connection closed before a reply\n", name);
			else
				ret = 0;
			break;
		}
		msg = json_tokener_parse(buf);
		if (msg && json_object_object_get_ex(msg, "event", NULL)) {
			if (events) {
				printf("%s\n", buf);
				fflush(stdout);
			}
		} else if (msg && json_object_object_get_ex(msg, "ok", &v)) {
			if (!json_object_get_boolean(v)) {
				json_object_object_get_ex(msg, "error", &v);
				fprintf(stderr, "%s: error: %s\n", name,
					v ? json_object_get_string(v) : "(no message)");
				json_object_put(msg);
				break;
			}
			if (!events) {
				json_object_object_get_ex(msg, "result", &v);
				printf("%s\n", json_object_to_json_string_ext(
					       v, JSON_C_TO_STRING_PRETTY |
						  JSON_C_TO_STRING_NOSLASHESCAPE));
				ret = 0;
				json_object_put(msg);
				break;
			}
		} else {
			fprintf(stderr, "%s: unexpected line from server: %.200s\n", name, buf);
		}
		if (msg)
			json_object_put(msg);
	}
out_fd:
	close(fd);
out_req:
	json_object_put(req);
	control_linebuf_free(&lb);
	return ret;
}
