/*
 * The agent relay against a host-side stand-in for the org.kumo.agent port: a Unix socket this
 * test listens on and answers from, as the virtio-console device and the guest agent would.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tests/harness.h"
#include "vmm/agent-relay.h"
#include "vmm/control.h"

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_event[64];
static char last_data[4096];
static int nevents;

static void collect(void *opaque, const char *name, struct json_object *data)
{
	pthread_mutex_lock(&ev_lock);
	snprintf(last_event, sizeof(last_event), "%s", name);
	snprintf(last_data, sizeof(last_data), "%s",
		 data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "null");
	nevents++;
	pthread_mutex_unlock(&ev_lock);
	json_object_put(data);
}

/* Wait (hang guard, not a timing check) until n events arrived; returns the count. */
static int wait_events(int n)
{
	int got = 0;

	for (int i = 0; i < 5000; i++) {
		pthread_mutex_lock(&ev_lock);
		got = nevents;
		pthread_mutex_unlock(&ev_lock);
		if (got >= n)
			break;
		usleep(1000);
	}
	return got;
}

static int listen_at(char *path, size_t len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(path, len, "/tmp/kumo-relay-test-%d-%d.sock", getpid(), rand());
	strcpy(a.sun_path, path);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0)
		return -1;
	return fd;
}

static void put(int fd, const char *s)
{
	size_t n = strlen(s);

	if (write(fd, s, n) != (ssize_t)n)
		abort();
}

/* One request line from the relay; returns its id (or -1). */
static long read_request(int fd, char *verb, size_t vlen)
{
	char line[4096];
	size_t n = 0;
	struct json_object *o, *v;
	long id = -1;

	while (n < sizeof(line) - 1 && read(fd, line + n, 1) == 1 && line[n] != '\n')
		n++;
	line[n] = 0;
	o = json_tokener_parse(line);
	if (o && json_object_object_get_ex(o, "id", &v))
		id = (long)json_object_get_int64(v);
	if (o && json_object_object_get_ex(o, "verb", &v))
		snprintf(verb, vlen, "%s", json_object_get_string(v));
	json_object_put(o);
	return id;
}

struct call {
	struct agent_relay *r;
	const char *verb;
	int timeout_ms;
	int ret;
	struct json_object *reply;
};

static void *do_call(void *arg)
{
	struct call *c = arg;

	c->ret = agent_relay_request(c->r, c->verb, NULL, c->timeout_ms, &c->reply);
	return NULL;
}

static void test_relay_stand_in(void)
{
	char path[108], verb[32], reply[256];
	struct agent_relay *r;
	struct agent_relay_counters cnt;
	struct json_object *data, *v;
	struct call c;
	pthread_t t;
	double age;
	int lfd = listen_at(path, sizeof(path)), cfd;
	long id;
	char *big;

	CHECK(lfd >= 0);
	CHECK_EQ(agent_relay_start(&r, path, collect, NULL), 0);
	cfd = accept(lfd, NULL, NULL);
	CHECK(cfd >= 0);
	CHECK_EQ(agent_relay_stats(r, &data, &age), -ENODATA);

	/* Stats: kept as the latest and streamed as agent-stats. */
	put(cfd, "{\"event\":\"stats\",\"ts\":1.5,\"data\":{\"seq\":0,\"meminfo\":{\"MemTotal\":1000}}}\n");
	CHECK_EQ(wait_events(1), 1);
	CHECK(!strcmp(last_event, "agent-stats"));
	CHECK(strstr(last_data, "\"MemTotal\":1000"));
	CHECK_EQ(agent_relay_stats(r, &data, &age), 0);
	CHECK(json_object_object_get_ex(data, "seq", &v) && json_object_get_int(v) == 0);
	CHECK(age >= 0);
	json_object_put(data);

	/* Other events, split across writes, CRLF-terminated. */
	put(cfd, "{\"event\":\"hel");
	put(cfd, "lo\",\"data\":{\"version\":1}}\r\n");
	CHECK_EQ(wait_events(2), 2);
	CHECK(!strcmp(last_event, "agent-event"));
	CHECK(strstr(last_data, "\"event\":\"hello\"") && strstr(last_data, "\"version\":1"));
	/* The hello is kept for clients that come later. */
	CHECK_EQ(agent_relay_hello(r, &data), 0);
	CHECK(json_object_object_get_ex(data, "version", &v) && json_object_get_int(v) == 1);
	json_object_put(data);

	/* Hostile lines are dropped and counted; what follows them still gets through. */
	put(cfd, "not json\n[1,2]\n{\"event\":7}\n{\"id\":-1,\"ok\":true}\n{\"id\":3}\n\n");
	big = malloc(AGENT_RELAY_MAX_LINE + 10);
	memset(big, 'x', AGENT_RELAY_MAX_LINE + 9);
	big[AGENT_RELAY_MAX_LINE + 9] = '\n';
	CHECK_EQ(write(cfd, big, AGENT_RELAY_MAX_LINE + 10), AGENT_RELAY_MAX_LINE + 10);
	free(big);
	put(cfd, "{\"event\":\"stats\",\"data\":{\"seq\":1}}\n");
	CHECK_EQ(wait_events(3), 3);
	CHECK(strstr(last_data, "\"seq\":1"));
	agent_relay_counters(r, &cnt);
	CHECK_EQ(cnt.bad_lines, 6);
	CHECK_EQ(cnt.stats, 2);
	CHECK_EQ(cnt.connected, 1);

	/* A request and its reply; a reply nobody asked for is an orphan. */
	c = (struct call){ .r = r, .verb = "ping", .timeout_ms = 10000 };
	CHECK_EQ(pthread_create(&t, NULL, do_call, &c), 0);
	id = read_request(cfd, verb, sizeof(verb));
	CHECK(id > 0);
	CHECK(!strcmp(verb, "ping"));
	snprintf(reply, sizeof(reply), "{\"id\":%ld,\"ok\":false,\"error\":\"x\"}\n"
		 "{\"id\":%ld,\"ok\":true,\"result\":{\"pong\":true}}\n", id + 100, id);
	put(cfd, reply);
	pthread_join(t, NULL);
	CHECK_EQ(c.ret, 0);
	CHECK(c.reply && json_object_object_get_ex(c.reply, "result", &v));
	CHECK(json_object_object_get_ex(v, "pong", &v) && json_object_get_boolean(v));
	json_object_put(c.reply);
	agent_relay_counters(r, &cnt);
	CHECK_EQ(cnt.orphan_replies, 1);

	/* No reply: the caller gets -ETIMEDOUT, and the late reply is an orphan. */
	c = (struct call){ .r = r, .verb = "slow", .timeout_ms = 50 };
	do_call(&c);
	CHECK_EQ(c.ret, -ETIMEDOUT);
	id = read_request(cfd, verb, sizeof(verb));
	snprintf(reply, sizeof(reply), "{\"id\":%ld,\"ok\":true}\n", id);
	put(cfd, reply);

	/* The port goes away while a request waits: -ECONNRESET, then the relay reconnects. */
	c = (struct call){ .r = r, .verb = "ping", .timeout_ms = 10000 };
	CHECK_EQ(pthread_create(&t, NULL, do_call, &c), 0);
	read_request(cfd, verb, sizeof(verb));
	close(cfd);
	pthread_join(t, NULL);
	CHECK_EQ(c.ret, -ECONNRESET);
	cfd = accept(lfd, NULL, NULL);
	CHECK(cfd >= 0);
	for (int i = 0; i < 5000; i++) {
		agent_relay_counters(r, &cnt);
		if (cnt.connects == 2 && cnt.connected)
			break;
		usleep(1000);
	}
	CHECK_EQ(cnt.connects, 2);
	CHECK_EQ(agent_relay_hello(r, &data), -ENODATA);	/* the old connection's is gone */
	put(cfd, "{\"event\":\"hello\"}\n");
	CHECK_EQ(wait_events(4), 4);
	CHECK_EQ(agent_relay_hello(r, &data), 0);
	CHECK(json_object_is_type(data, json_type_object));
	json_object_put(data);
	agent_relay_stop(r);
	close(cfd);
	close(lfd);
	unlink(path);
}

static void test_relay_not_connected(void)
{
	struct agent_relay *r;
	struct json_object *reply;

	CHECK_EQ(agent_relay_start(&r, "/nonexistent/kumo-agent.sock", collect, NULL), 0);
	CHECK_EQ(agent_relay_request(r, "ping", NULL, 100, &reply), -ENOTCONN);
	agent_relay_stop(r);
	CHECK_EQ(agent_relay_start(&r, "/tmp/" "a-path-that-is-far-too-long-for-a-unix-socket-address-"
				   "because-sun_path-holds-only-108-bytes-xxxxxxxxxxxxxxxxxxx",
				   collect, NULL), -ENAMETOOLONG);
}

static void test_relay_parse_line(void)
{
	static const char *const bad[] = {
		"", "{", "[]", "\"s\"", "{}", "{\"event\":\"\"}", "{\"event\":1}", "{\"id\":1}",
		"{\"id\":\"1\",\"ok\":true}", "{\"id\":1,\"ok\":1}", "{\"id\":1.5,\"ok\":true}",
		"{\"event\":\"a\"} x", "{\"event\":\"a\",\"event\":",
	};
	struct agent_line l;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (agent_relay_parse_line(bad[i], strlen(bad[i]), &l) != -EINVAL || l.obj) {
			fprintf(stderr, "  accepted '%s'\n", bad[i]);
			CHECK(0);
		}
	}
	CHECK_EQ(agent_relay_parse_line("{\"event\":\"stats\"}", 17, &l), 0);
	CHECK_EQ(l.kind, AGENT_LINE_STATS);
	CHECK(!l.data);
	json_object_put(l.obj);
	CHECK_EQ(agent_relay_parse_line("{\"id\":7,\"ok\":false,\"error\":\"no\"}", 32, &l), 0);
	CHECK_EQ(l.kind, AGENT_LINE_REPLY);
	CHECK_EQ(l.id, 7);
	json_object_put(l.obj);
}

/* ---- the agent verb on a control server: deferred replies ---- */

static struct agent_relay *ctl_relay;

static int ctl_agent(void *opaque, struct json_object *args, struct json_object **result,
		     char *err, size_t errlen)
{
	return agent_relay_verb_agent(ctl_relay, args, result, err, errlen);
}

static int ctl_agent_stats(void *opaque, struct json_object *args, struct json_object **result,
			   char *err, size_t errlen)
{
	return agent_relay_verb_stats(ctl_relay, args, result, err, errlen);
}

static void ctl_emit(void *opaque, const char *name, struct json_object *data)
{
	control_emit_event(opaque, name, data);
}

static int ctl_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	return fd;
}

/* The next reply line on fd (events skipped), parsed; NULL when the connection ends. */
static struct json_object *ctl_reply(int fd)
{
	for (;;) {
		char line[8192];
		size_t n = 0;
		struct json_object *o;

		while (n < sizeof(line) - 1 && read(fd, line + n, 1) == 1 && line[n] != '\n')
			n++;
		if (n == 0)
			return NULL;
		line[n] = 0;
		o = json_tokener_parse(line);
		if (o && !json_object_object_get_ex(o, "event", NULL))
			return o;
		json_object_put(o);
	}
}

static long reply_id(struct json_object *o)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, "id", &v) ? (long)json_object_get_int64(v) : -1;
}

static int reply_ok(struct json_object *o)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
}

/*
 * An agent request whose answer is slow holds up nobody: while the stand-in port sits on it,
 * the same client and another one are answered; the deferred reply then arrives with its id.
 * A client that leaves before its reply costs nothing; stopping the relay with a request still
 * owed answers it with an error and lets the control server stop.
 */
static void test_agent_verb_deferred(void)
{
	static const struct control_verb verbs[] = {
		{ "agent", ctl_agent, "" }, { "agent-stats", ctl_agent_stats, "" },
	};
	struct control_server *srv = NULL;
	char port[108], ctl[128], verb[64];
	struct json_object *o, *v;
	int lfd, pfd, a, b, c;
	long id;

	lfd = listen_at(port, sizeof(port));
	CHECK(lfd >= 0);
	snprintf(ctl, sizeof(ctl), "%s.ctl", port);
	CHECK_EQ(control_start(&srv, ctl, verbs, 2, NULL), 0);
	CHECK_EQ(agent_relay_start(&ctl_relay, port, ctl_emit, srv), 0);
	pfd = accept(lfd, NULL, NULL);
	CHECK(pfd >= 0);
	a = ctl_connect(ctl);
	b = ctl_connect(ctl);
	CHECK(a >= 0 && b >= 0);

	/* The relay must be connected before it takes requests (hang guard, not a timing check). */
	for (int i = 0; i < 5000; i++) {
		struct agent_relay_counters n;

		agent_relay_counters(ctl_relay, &n);
		if (n.connected)
			break;
		usleep(1000);
	}
	put(a, "{\"id\":1,\"verb\":\"agent\",\"args\":{\"verb\":\"slow\",\"timeout_ms\":60000}}\n");
	id = read_request(pfd, verb, sizeof(verb));
	CHECK(id > 0);
	CHECK(!strcmp(verb, "slow"));
	/* Owed a reply, the server still answers the same client and another one. */
	put(a, "{\"id\":2,\"verb\":\"help\"}\n");
	o = ctl_reply(a);
	CHECK_EQ(reply_id(o), 2);
	CHECK(reply_ok(o));
	json_object_put(o);
	put(b, "{\"id\":9,\"verb\":\"agent-stats\"}\n");
	o = ctl_reply(b);
	CHECK_EQ(reply_id(o), 9);
	CHECK(reply_ok(o));
	json_object_put(o);
	/* The agent answers: the deferred reply goes to its client with its id and result. */
	{
		char line[128];

		snprintf(line, sizeof(line), "{\"id\":%ld,\"ok\":true,\"result\":{\"done\":7}}\n",
			 id);
		put(pfd, line);
	}
	o = ctl_reply(a);
	CHECK_EQ(reply_id(o), 1);
	CHECK(reply_ok(o));
	CHECK(json_object_object_get_ex(o, "result", &v) &&
	      json_object_object_get_ex(v, "done", &v) && json_object_get_int(v) == 7);
	json_object_put(o);

	/* A client that leaves before its reply: the reply is dropped, the server carries on. */
	c = ctl_connect(ctl);
	CHECK(c >= 0);
	put(c, "{\"id\":3,\"verb\":\"agent\",\"args\":{\"verb\":\"ping\"}}\n");
	id = read_request(pfd, verb, sizeof(verb));
	CHECK(id > 0);
	close(c);
	{
		char line[128];

		snprintf(line, sizeof(line), "{\"id\":%ld,\"ok\":true,\"result\":{}}\n", id);
		put(pfd, line);
	}
	put(b, "{\"id\":10,\"verb\":\"agent\",\"args\":{\"verb\":\"nope\"}}\n");
	id = read_request(pfd, verb, sizeof(verb));
	CHECK(id > 0);
	{
		char line[128];

		snprintf(line, sizeof(line), "{\"id\":%ld,\"ok\":false,\"error\":\"unknown\"}\n", id);
		put(pfd, line);
	}
	o = ctl_reply(b);
	CHECK_EQ(reply_id(o), 10);
	CHECK(!reply_ok(o));
	CHECK(json_object_object_get_ex(o, "error", &v) &&
	      !strcmp(json_object_get_string(v), "agent: unknown"));
	json_object_put(o);

	/* Stop with a reply still owed: the relay answers it (an error), then the server stops. */
	put(a, "{\"id\":4,\"verb\":\"agent\",\"args\":{\"verb\":\"never\"}}\n");
	id = read_request(pfd, verb, sizeof(verb));
	CHECK(id > 0);
	agent_relay_shutdown(ctl_relay);
	o = ctl_reply(a);
	CHECK_EQ(reply_id(o), 4);
	CHECK(!reply_ok(o));
	json_object_put(o);
	/* Shut down, the relay still answers its verbs: a new request is refused at once. */
	put(b, "{\"id\":11,\"verb\":\"agent\",\"args\":{\"verb\":\"ping\"}}\n");
	o = ctl_reply(b);
	CHECK_EQ(reply_id(o), 11);
	CHECK(!reply_ok(o));
	json_object_put(o);
	control_stop(srv);
	agent_relay_stop(ctl_relay);
	ctl_relay = NULL;
	close(a);
	close(b);
	close(pfd);
	close(lfd);
	unlink(port);
}

TEST_MAIN(TEST(test_relay_parse_line), TEST(test_relay_not_connected),
	  TEST(test_relay_stand_in), TEST(test_agent_verb_deferred))
