/* Unit tests for the control socket: a real server on a temporary socket, hostile clients. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tests/harness.h"
#include "vmm/control.h"

#define BIG_REPLY (1024 * 1024)

static int verb_echo(void *opaque, struct json_object *args, struct json_object **result,
		     char *err, size_t errlen)
{
	(*(int *)opaque)++;
	*result = json_object_get(args);
	return 0;
}

static int verb_add(void *opaque, struct json_object *args, struct json_object **result,
		    char *err, size_t errlen)
{
	int64_t a, b;
	int ret;

	if ((ret = control_arg_int64(args, "a", &a, err, errlen)) ||
	    (ret = control_arg_int64(args, "b", &b, err, errlen)))
		return ret;
	*result = json_object_new_object();
	json_object_object_add(*result, "sum", json_object_new_int64(a + b));
	return 0;
}

static int verb_big(void *opaque, struct json_object *args, struct json_object **result,
		    char *err, size_t errlen)
{
	char *s = malloc(BIG_REPLY + 1);

	if (!s)
		return -ENOMEM;
	memset(s, 'x', BIG_REPLY);
	s[BIG_REPLY] = '\0';
	*result = json_object_new_object();
	json_object_object_add(*result, "blob", json_object_new_string(s));
	free(s);
	return 0;
}

static int verb_fail(void *opaque, struct json_object *args, struct json_object **result,
		     char *err, size_t errlen)
{
	*result = json_object_new_object();	/* freed by the server on failure */
	return -EBUSY;
}

static const struct control_verb test_verbs[] = {
	{ .name = "echo", .fn = verb_echo, .help = "returns its args" },
	{ .name = "add", .fn = verb_add, .help = "a + b" },
	{ .name = "big", .fn = verb_big, .help = "a 1 MiB reply" },
	{ .name = "fail", .fn = verb_fail, .help = "always -EBUSY" },
};

static struct control_server *srv;
static char sock_path[108];
static int echo_calls;

static struct control_server *server(void)
{
	if (!srv) {
		signal(SIGPIPE, SIG_DFL);	/* the server must not need SIG_IGN */
		alarm(120);			/* hang guard for the whole binary */
		snprintf(sock_path, sizeof(sock_path), "/tmp/kumo-test-control-%d.sock",
			 (int)getpid());
		if (control_start(&srv, sock_path, test_verbs, 4, &echo_calls))
			srv = NULL;
	}
	return srv;
}

struct conn {
	int fd;
	size_t have;
	char buf[2 * BIG_REPLY];
};

static struct conn *conn_open(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 10 };	/* hang guard only */
	struct conn *c = calloc(1, sizeof(*c));

	strcpy(sa.sun_path, sock_path);
	c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(c->fd);
		free(c);
		return NULL;
	}
	return c;
}

static void conn_close(struct conn *c)
{
	if (c) {
		close(c->fd);
		free(c);
	}
}

static int conn_send(struct conn *c, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);

		if (n <= 0)
			return -1;
		s += n;
		len -= n;
	}
	return 0;
}

static int conn_sends(struct conn *c, const char *s)
{
	return conn_send(c, s, strlen(s));
}

/* Next line as JSON; NULL on EOF, error or timeout (*eof tells EOF/reset from timeout). */
static struct json_object *conn_recv(struct conn *c, int *eof)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->have);
		ssize_t n;

		if (nl) {
			struct json_object *o;

			*nl = '\0';
			o = json_tokener_parse(c->buf);
			memmove(c->buf, nl + 1, c->have - (nl + 1 - c->buf));
			c->have -= nl + 1 - c->buf;
			return o;
		}
		if (c->have == sizeof(c->buf))
			return NULL;
		n = recv(c->fd, c->buf + c->have, sizeof(c->buf) - c->have, 0);
		if (n <= 0) {
			if (eof)
				*eof = n == 0 || errno == ECONNRESET;
			return NULL;
		}
		c->have += n;
	}
}

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

static int reply_ok(struct json_object *r)
{
	return r && json_object_get_boolean(get(r, "ok")) && get(r, "result");
}

static const char *reply_err(struct json_object *r)
{
	if (!r || json_object_get_boolean(get(r, "ok")) || !get(r, "error"))
		return "";
	return json_object_get_string(get(r, "error"));
}

/* One request on a fresh connection: the server is alive and well. */
static int server_alive(void)
{
	struct conn *c = conn_open();
	struct json_object *r;
	int ok;

	if (!c)
		return 0;
	conn_sends(c, "{\"id\":\"alive\",\"verb\":\"add\",\"args\":{\"a\":40,\"b\":2}}\n");
	r = conn_recv(c, NULL);
	ok = reply_ok(r) && json_object_get_int(get(get(r, "result"), "sum")) == 42 &&
	     !strcmp(json_object_get_string(get(r, "id")), "alive");
	json_object_put(r);
	conn_close(c);
	return ok;
}

static void test_parse_request(void)
{
	struct control_request req;
	char err[256];

	CHECK_EQ(control_parse_request("{\"verb\":\"x\"}", 12, &req, err, sizeof(err)), 0);
	CHECK(!strcmp(req.verb, "x"));
	CHECK(req.id == NULL);
	CHECK(json_object_is_type(req.args, json_type_object));
	control_request_free(&req);

	CHECK_EQ(control_parse_request("{\"id\":[1],\"verb\":\"y\",\"args\":{\"k\":1}}\r", 37,
				       &req, err, sizeof(err)), 0);
	CHECK(json_object_is_type(req.id, json_type_array));
	CHECK_EQ(json_object_object_length(req.args), 1);
	control_request_free(&req);

	static const char *const bad[] = {
		"", "nonsense", "[]", "42", "{\"verb\":1}", "{\"verb\":\"\"}", "{}",
		"{\"verb\":\"x\",\"args\":[1]}", "{\"verb\":\"x\"} {}", "{\"verb\":\"x\"",
		"{'verb':'x'}", "{\"verb\":\"x\",}", "{\"verb\":\"\xff\"}",
		"{\"verb\":\"\\u0000x\"}",	/* found by the fuzzer */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK_EQ(control_parse_request(bad[i], strlen(bad[i]), &req, err, sizeof(err)),
			 -EINVAL);
		CHECK(err[0]);
		control_request_free(&req);
	}
	/* An embedded NUL, and the id survives a failure after the JSON parsed. */
	CHECK_EQ(control_parse_request("{\"verb\":\"x\"}\0", 13, &req, err, sizeof(err)), -EINVAL);
	control_request_free(&req);
	CHECK_EQ(control_parse_request("{\"id\":9}", 8, &req, err, sizeof(err)), -EINVAL);
	CHECK_EQ(json_object_get_int(req.id), 9);
	control_request_free(&req);
}

static void test_start_errors(void)
{
	static const struct control_verb dup[] = {
		{ .name = "a", .fn = verb_echo }, { .name = "a", .fn = verb_echo },
	};
	static const struct control_verb builtin[] = { { .name = "help", .fn = verb_echo } };
	static const struct control_verb nofn[] = { { .name = "a" } };
	struct control_server *s2;
	char path[108];
	int fd;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	CHECK(server());
	CHECK_EQ(control_start(&s2, "/tmp/kumo-x.sock", dup, 2, NULL), -EEXIST);
	CHECK_EQ(control_start(&s2, "/tmp/kumo-x.sock", builtin, 1, NULL), -EEXIST);
	CHECK_EQ(control_start(&s2, "/tmp/kumo-x.sock", nofn, 1, NULL), -EINVAL);
	/* A live server is not replaced. */
	CHECK_EQ(control_start(&s2, sock_path, test_verbs, 1, NULL), -EADDRINUSE);
	CHECK(server_alive());
	/* A stale one is. */
	snprintf(path, sizeof(path), "/tmp/kumo-test-stale-%d.sock", (int)getpid());
	strcpy(sa.sun_path, path);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	CHECK_EQ(control_start(&s2, path, test_verbs, 1, NULL), 0);
	control_stop(s2);
	CHECK(access(path, F_OK) != 0);
	control_stop(NULL);
}

static void test_request_reply(void)
{
	struct conn *c;
	struct json_object *r;

	CHECK(server());
	CHECK((c = conn_open()));
	CHECK_EQ(conn_sends(c, "{\"id\":7,\"verb\":\"echo\",\"args\":{\"x\":1}}\n"), 0);
	r = conn_recv(c, NULL);
	CHECK(reply_ok(r));
	CHECK_EQ(json_object_get_int(get(r, "id")), 7);
	CHECK_EQ(json_object_get_int(get(get(r, "result"), "x")), 1);
	json_object_put(r);

	/* Any JSON as id is echoed as is; no id is null; \r\n and blank lines are fine. */
	CHECK_EQ(conn_sends(c, "\n  \n{\"id\":{\"a\":[1,\"b\"]},\"verb\":\"echo\"}\r\n"), 0);
	r = conn_recv(c, NULL);
	CHECK(reply_ok(r));
	CHECK(!strcmp(json_object_to_json_string_ext(get(r, "id"), JSON_C_TO_STRING_PLAIN),
		      "{\"a\":[1,\"b\"]}"));
	CHECK_EQ(json_object_object_length(get(r, "result")), 0);
	json_object_put(r);
	CHECK_EQ(conn_sends(c, "{\"verb\":\"help\"}\n"), 0);
	r = conn_recv(c, NULL);
	CHECK(reply_ok(r));
	CHECK(get(r, "id") == NULL && json_object_object_get_ex(r, "id", NULL));
	CHECK_EQ(json_object_array_length(get(get(r, "result"), "verbs")), 6);
	json_object_put(r);
	conn_close(c);
}

static void test_two_clients(void)
{
	struct conn *a, *b;
	struct json_object *r;

	CHECK(server());
	CHECK((a = conn_open()));
	CHECK((b = conn_open()));
	/* a's line arrives in pieces while b is served. */
	CHECK_EQ(conn_sends(a, "{\"id\":\"a\",\"verb\":\"add\",\"ar"), 0);
	usleep(20000);
	CHECK_EQ(conn_sends(b, "{\"id\":\"b1\",\"verb\":\"add\",\"args\":{\"a\":1,\"b\":1}}\n"
			       "{\"id\":\"b2\",\"verb\":\"add\",\"args\":{\"a\":2,\"b\":2}}\n"), 0);
	r = conn_recv(b, NULL);
	CHECK(reply_ok(r) && !strcmp(json_object_get_string(get(r, "id")), "b1"));
	json_object_put(r);
	CHECK_EQ(conn_sends(a, "gs\":{\"a\":5,"), 0);
	r = conn_recv(b, NULL);
	CHECK(reply_ok(r) && !strcmp(json_object_get_string(get(r, "id")), "b2"));
	CHECK_EQ(json_object_get_int(get(get(r, "result"), "sum")), 4);
	json_object_put(r);
	CHECK_EQ(conn_sends(a, "\"b\":6}}\n"), 0);
	r = conn_recv(a, NULL);
	CHECK(reply_ok(r) && !strcmp(json_object_get_string(get(r, "id")), "a"));
	CHECK_EQ(json_object_get_int(get(get(r, "result"), "sum")), 11);
	json_object_put(r);
	conn_close(a);
	conn_close(b);
}

#define NEVENTS 200

static void *emitter(void *arg)
{
	for (int i = 0; i < NEVENTS; i++) {
		struct json_object *d = json_object_new_object();

		json_object_object_add(d, "n", json_object_new_int(i));
		control_emit_event(srv, "tick", d);
		if (i % 50 == 0)
			usleep(1000);
	}
	return NULL;
}

static void test_events(void)
{
	struct conn *sub, *other;
	struct json_object *r;
	pthread_t t;
	double last_ts = 0;

	CHECK(server());
	CHECK_EQ(control_emit_event(NULL, "x", json_object_new_object()), 0);
	CHECK((sub = conn_open()));
	CHECK((other = conn_open()));
	CHECK_EQ(conn_sends(sub, "{\"id\":1,\"verb\":\"events\"}\n"), 0);
	r = conn_recv(sub, NULL);
	CHECK(reply_ok(r) && json_object_get_boolean(get(get(r, "result"), "subscribed")));
	json_object_put(r);

	CHECK_EQ(pthread_create(&t, NULL, emitter, NULL), 0);
	pthread_join(t, NULL);
	for (int i = 0; i < NEVENTS; i++) {
		r = conn_recv(sub, NULL);
		CHECK(r);
		CHECK(!strcmp(json_object_get_string(get(r, "event")), "tick"));
		CHECK_EQ(json_object_get_int(get(get(r, "data"), "n")), i);
		CHECK(json_object_is_type(get(r, "ts"), json_type_double));
		CHECK(json_object_get_double(get(r, "ts")) >= last_ts);
		last_ts = json_object_get_double(get(r, "ts"));
		json_object_put(r);
	}
	/* A subscriber still gets replies; an unsubscribed client gets no events. */
	CHECK_EQ(conn_sends(sub, "{\"id\":2,\"verb\":\"echo\"}\n"), 0);
	r = conn_recv(sub, NULL);
	CHECK(reply_ok(r) && json_object_get_int(get(r, "id")) == 2);
	json_object_put(r);
	CHECK_EQ(conn_sends(other, "{\"id\":3,\"verb\":\"echo\"}\n"), 0);
	r = conn_recv(other, NULL);
	CHECK(reply_ok(r) && json_object_get_int(get(r, "id")) == 3);
	json_object_put(r);
	conn_close(other);
	/* Emitting to a subscriber that went away is harmless. */
	conn_close(sub);
	control_emit_event(srv, "late", NULL);
	CHECK(server_alive());
}

static void test_garbage(void)
{
	static const char *const lines[] = {
		"not json\n", "[1,2]\n", "{\"verb\":5}\n", "{\"args\":{}}\n",
		"{\"verb\":\"echo\",\"args\":7}\n", "{\"verb\":\"echo\"} trailing\n",
		"\x01\x02\xff\xfe\n", "{\"verb\":\"echo\",\"args\":{\"a\":[[[[[[[[[[[[[[[[[[[[[[[["
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
		"]]}}\n",
	};
	struct conn *c;
	struct json_object *r;

	CHECK(server());
	CHECK((c = conn_open()));
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		CHECK_EQ(conn_sends(c, lines[i]), 0);
		r = conn_recv(c, NULL);
		CHECK(r);
		CHECK(!json_object_get_boolean(get(r, "ok")));
		CHECK(reply_err(r)[0]);
		CHECK(json_object_object_get_ex(r, "id", NULL));
		json_object_put(r);
	}
	/* The id is echoed when the JSON parsed. */
	CHECK_EQ(conn_sends(c, "{\"id\":3,\"verb\":[]}\n"), 0);
	r = conn_recv(c, NULL);
	CHECK(r && json_object_get_int(get(r, "id")) == 3 && strstr(reply_err(r), "verb"));
	json_object_put(r);
	/* Embedded NUL. */
	CHECK_EQ(conn_send(c, "{\"verb\":\"echo\"}\0\n", 17), 0);
	r = conn_recv(c, NULL);
	CHECK(r && strstr(reply_err(r), "NUL"));
	json_object_put(r);
	CHECK_EQ(conn_sends(c, "{\"id\":4,\"verb\":\"echo\"}\n"), 0);
	r = conn_recv(c, NULL);
	CHECK(reply_ok(r) && json_object_get_int(get(r, "id")) == 4);
	json_object_put(r);
	conn_close(c);
}

static void test_unknown_verb_bad_args(void)
{
	static const struct { const char *line, *err; } cases[] = {
		{ "{\"verb\":\"frobnicate\"}\n", "unknown verb 'frobnicate'" },
		{ "{\"verb\":\"add\",\"args\":{\"a\":\"x\",\"b\":1}}\n", "'a' must be an integer" },
		{ "{\"verb\":\"add\",\"args\":{\"a\":1.5,\"b\":1}}\n", "'a' must be an integer" },
		{ "{\"verb\":\"add\",\"args\":{\"a\":1}}\n", "missing argument 'b'" },
		{ "{\"verb\":\"add\",\"args\":{\"a\":1,\"b\":99999999999999999999}}\n",
		  "'b' must be an integer" },
		{ "{\"verb\":\"fail\"}\n", "Device or resource busy" },
	};
	struct conn *c;
	struct json_object *r;

	CHECK(server());
	CHECK((c = conn_open()));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ(conn_sends(c, cases[i].line), 0);
		r = conn_recv(c, NULL);
		if (!strstr(reply_err(r), cases[i].err))
			fprintf(stderr, "  got '%s', want '%s'\n", reply_err(r), cases[i].err);
		CHECK(strstr(reply_err(r), cases[i].err));
		json_object_put(r);
	}
	conn_close(c);
	CHECK(server_alive());
}

static void test_overlong_line(void)
{
	size_t len = CONTROL_MAX_LINE + 4096;
	char *junk = malloc(len);
	struct json_object *r;
	struct conn *c;
	int eof = 0;

	CHECK(server());
	CHECK((c = conn_open()));
	memset(junk, ' ', len);
	memcpy(junk, "{\"verb\":\"echo\",\"args\":{\"s\":\"", 28);
	CHECK_EQ(conn_send(c, junk, len), 0);
	free(junk);
	r = conn_recv(c, NULL);
	CHECK(r && strstr(reply_err(r), "longer than"));
	json_object_put(r);
	CHECK(conn_recv(c, &eof) == NULL);
	CHECK(eof);	/* dropped, not a timeout */
	conn_close(c);
	CHECK(server_alive());
}

static void test_half_line_close(void)
{
	struct conn *c;

	CHECK(server());
	for (int i = 0; i < 20; i++) {
		CHECK((c = conn_open()));
		CHECK_EQ(conn_sends(c, "{\"id\":1,\"verb\":\"ec"), 0);
		conn_close(c);
	}
	/* Half-closed after a full line: the reply still arrives (socat-style clients). */
	CHECK((c = conn_open()));
	CHECK_EQ(conn_sends(c, "{\"id\":5,\"verb\":\"echo\"}\n{\"verb\":\"ec"), 0);
	shutdown(c->fd, SHUT_WR);
	struct json_object *r = conn_recv(c, NULL);
	int eof = 0;

	CHECK(reply_ok(r) && json_object_get_int(get(r, "id")) == 5);
	json_object_put(r);
	CHECK(conn_recv(c, &eof) == NULL && eof);
	conn_close(c);
	CHECK(server_alive());
}

static void test_killed_mid_reply(void)
{
	struct conn *c;
	char buf[4096];

	CHECK(server());
	for (int i = 0; i < 5; i++) {
		CHECK((c = conn_open()));
		CHECK_EQ(conn_sends(c, "{\"verb\":\"big\"}\n"), 0);
		if (i & 1)	/* read a little of it first */
			CHECK(recv(c->fd, buf, sizeof(buf), 0) > 0);
		conn_close(c);
	}
	CHECK(server_alive());
}

/* A client that keeps asking and never reads is dropped once its output passes the bound. */
static void test_not_reading(void)
{
	struct conn *c, *other;
	struct json_object *r;
	size_t total = 0;
	ssize_t n;
	int sends = 0;

	CHECK(server());
	CHECK((c = conn_open()));
	for (int i = 0; i < 12; i++)
		if (conn_sends(c, "{\"verb\":\"big\"}\n") == 0)
			sends++;
	CHECK(sends > 0);
	/* Others are served meanwhile. */
	CHECK((other = conn_open()));
	CHECK_EQ(conn_sends(other, "{\"id\":1,\"verb\":\"echo\"}\n"), 0);
	r = conn_recv(other, NULL);
	CHECK(reply_ok(r));
	json_object_put(r);
	conn_close(other);
	usleep(100000);
	while ((n = recv(c->fd, c->buf, sizeof(c->buf), 0)) > 0)
		total += n;
	CHECK(n == 0 || errno == ECONNRESET);	/* not a timeout */
	CHECK(total < 12ul * BIG_REPLY);
	conn_close(c);
	CHECK(server_alive());
}

/* kumo ctl, run in a child with stdout to a file. */
static int run_ctl(const char *out, char **argv)
{
	int argc = 0, st;
	pid_t pid;

	while (argv[argc])
		argc++;
	pid = fork();
	if (pid == 0) {
		FILE *f = freopen(out, "w", stdout);

		if (!f)
			_exit(99);
		freopen("/dev/null", "w", stderr);
		int rc = control_client_main(argc, argv);

		fflush(stdout);
		_exit(rc);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static void test_ctl_client(void)
{
	char out[128], text[4096];
	struct json_object *o;
	FILE *f;
	size_t n;

	CHECK(server());
	snprintf(out, sizeof(out), "/tmp/kumo-test-ctl-%d.out", (int)getpid());
	CHECK_EQ(run_ctl(out, (char *[]){ "ctl", sock_path, "add", "a=2", "b=40", NULL }), 0);
	CHECK((f = fopen(out, "r")));
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	o = json_tokener_parse(text);
	CHECK(o && json_object_get_int(get(o, "sum")) == 42);
	json_object_put(o);
	CHECK_EQ(run_ctl(out, (char *[]){ "ctl", sock_path, "echo", "s=hello", "n=null",
					   "o={\"k\":[1]}", "t=true", "x=1x", NULL }), 0);
	CHECK((f = fopen(out, "r")));
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	o = json_tokener_parse(text);
	CHECK(o && !strcmp(json_object_get_string(get(o, "s")), "hello"));
	CHECK(json_object_object_get_ex(o, "n", NULL) && get(o, "n") == NULL);
	CHECK(json_object_is_type(get(get(o, "o"), "k"), json_type_array));
	CHECK(json_object_get_boolean(get(o, "t")));
	CHECK(!strcmp(json_object_get_string(get(o, "x")), "1x"));
	json_object_put(o);
	CHECK_EQ(run_ctl(out, (char *[]){ "ctl", sock_path, "add", "a=x", "b=1", NULL }), 1);
	CHECK_EQ(run_ctl(out, (char *[]){ "ctl", sock_path, "nope", NULL }), 1);
	CHECK_EQ(run_ctl(out, (char *[]){ "ctl", sock_path, "add", "novalue", NULL }), 2);
	CHECK_EQ(run_ctl(out, (char *[]){ "ctl", "/tmp/kumo-no-such.sock", "help", NULL }), 1);
	unlink(out);
}

/* Last: after everything above, the server still serves, then stops cleanly. */
static void test_still_serving_and_stop(void)
{
	struct stat st;

	CHECK(server());
	CHECK(server_alive());
	CHECK(echo_calls > 0);
	CHECK_EQ(stat(sock_path, &st), 0);
	CHECK_EQ(st.st_mode & 0777, 0600);
	control_stop(srv);
	srv = NULL;
	CHECK(stat(sock_path, &st) != 0);
}

TEST_MAIN(TEST(test_parse_request), TEST(test_start_errors), TEST(test_request_reply),
	  TEST(test_two_clients), TEST(test_events), TEST(test_garbage),
	  TEST(test_unknown_verb_bad_args), TEST(test_overlong_line), TEST(test_half_line_close),
	  TEST(test_killed_mid_reply), TEST(test_not_reading), TEST(test_ctl_client),
	  TEST(test_still_serving_and_stop))
