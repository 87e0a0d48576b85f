/*
 * Token authentication of TCP control sockets (vmm/control-auth.c, vmm/control.c): token files,
 * the challenge-response lines, and a real server on 127.0.0.1 against clients with the right
 * token, a wrong one, none, and one replaying an answer seen on another connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tests/harness.h"
#include "vmm/control-auth.h"
#include "vmm/control.h"

static int calls;

static int verb_count(void *opaque, struct json_object *args, struct json_object **result,
		      char *err, size_t errlen)
{
	calls++;
	*result = json_object_new_object();
	json_object_object_add(*result, "calls", json_object_new_int(calls));
	return 0;
}

static const struct control_verb verbs[] = {
	{ .name = "count", .fn = verb_count, .help = "counts its calls" },
};

static char dir[64];

static const char *token_file(const char *name, const char *content, mode_t mode)
{
	static char paths[4][128];
	static int next;
	char *p = paths[next++ % 4];
	int fd;

	snprintf(p, 128, "%s/%s", dir, name);
	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content))
		abort();
	close(fd);
	if (chmod(p, mode))
		abort();
	return p;
}

static void setup(void)
{
	if (!dir[0]) {
		signal(SIGPIPE, SIG_IGN);
		alarm(60);
		snprintf(dir, sizeof(dir), "/tmp/kumo-test-auth-%d", (int)getpid());
		mkdir(dir, 0700);
	}
}

static int mapped(const char *lib)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	int found = 0;

	if (!f)
		return -1;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, lib) != NULL;
	fclose(f);
	return found;
}

/* libcrypto is not linked: it is mapped once a MAC is needed, and stays (the first case). */
static void test_crypto_dlopen(void)
{
	char err[256] = "";

	CHECK_EQ(mapped("libcrypto.so"), 0);
	CHECK_EQ(control_auth_crypto_load(err, sizeof(err)), 0);
	CHECK_EQ(err[0], 0);
	CHECK_EQ(mapped("libcrypto.so.3"), 1);
	CHECK_EQ(control_auth_crypto_load(NULL, 0), 0);		/* once per process */
}

static void test_token_files(void)
{
	struct control_token tok;
	char err[256];

	setup();
	CHECK_EQ(control_token_load(token_file("good", "0123456789abcdef-secret\n", 0600), &tok,
				    err, sizeof(err)), 0);
	CHECK_EQ(tok.len, 23);		/* the newline is not part of it */
	CHECK(!memcmp(tok.key, "0123456789abcdef-secret", 23));
	CHECK_EQ(control_token_load(token_file("ro", "0123456789abcdef", 0400), &tok, err,
				    sizeof(err)), 0);
	CHECK_EQ(control_token_load(token_file("group", "0123456789abcdef", 0640), &tok, err,
				    sizeof(err)), -EACCES);
	CHECK(strstr(err, "0600"));
	CHECK_EQ(control_token_load(token_file("world", "0123456789abcdef", 0604), &tok, err,
				    sizeof(err)), -EACCES);
	CHECK_EQ(control_token_load(token_file("short", "short\n", 0600), &tok, err, sizeof(err)),
		 -EINVAL);
	CHECK_EQ(control_token_load(token_file("empty", "", 0600), &tok, err, sizeof(err)),
		 -EINVAL);
	CHECK_EQ(control_token_load("/nonexistent/token", &tok, err, sizeof(err)), -ENOENT);
	CHECK_EQ(control_token_load(dir, &tok, err, sizeof(err)), -EINVAL);
}

static void test_tcp_addr(void)
{
	static const struct {
		const char *in;
		int ret;
		const char *host, *port;
	} cases[] = {
		{ "tcp:127.0.0.1:4000", 1, "127.0.0.1", "4000" },
		{ "tcp:[::1]:4000", 1, "::1", "4000" },
		{ "tcp:host.example:1", 1, "host.example", "1" },
		{ "/run/kumo.sock", 0, NULL, NULL },
		{ "tcp:", -EINVAL, NULL, NULL },
		{ "tcp:127.0.0.1", -EINVAL, NULL, NULL },
		{ "tcp::4000", -EINVAL, NULL, NULL },
		{ "tcp:1.2.3.4:", -EINVAL, NULL, NULL },
		{ "tcp:1.2.3.4:80x", -EINVAL, NULL, NULL },
		{ "tcp:[::1:4000", -EINVAL, NULL, NULL },
		{ "tcp:[::1]4000", -EINVAL, NULL, NULL },
		{ "tcp:1.2.3.4:123456789012345678", -EINVAL, NULL, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[64] = "", port[8] = "";
		int ret = control_tcp_addr(cases[i].in, host, sizeof(host), port, sizeof(port));

		if (ret != cases[i].ret)
			fprintf(stderr, "  %s\n", cases[i].in);
		CHECK_EQ(ret, cases[i].ret);
		if (ret == 1) {
			CHECK(!strcmp(host, cases[i].host));
			CHECK(!strcmp(port, cases[i].port));
		}
	}
}

/* The lines alone: right token, wrong token, another nonce (a replay), malformed answers. */
static void test_handshake_lines(void)
{
	struct control_token a = { .key = "token-number-one", .len = 16 };
	struct control_token b = { .key = "token-number-two", .len = 16 };
	uint8_t n1[CONTROL_AUTH_NONCE], n2[CONTROL_AUTH_NONCE], got[CONTROL_AUTH_NONCE];
	char ch[CONTROL_AUTH_LINE], ans[CONTROL_AUTH_LINE];
	static const char *const bad[] = {
		"", "{}", "[]", "{\"auth\":1}", "{\"auth\":\"\"}", "{\"auth\":\"zz\"}",
		"{\"auth\":\"0123\"}", "not json at all", "{\"verb\":\"count\"}",
	};

	CHECK_EQ(control_auth_nonce(n1), 0);
	CHECK_EQ(control_auth_nonce(n2), 0);
	CHECK(memcmp(n1, n2, sizeof(n1)));
	control_auth_challenge(n1, ch, sizeof(ch));
	CHECK_EQ(control_auth_parse_challenge(ch, strlen(ch), got), 0);
	CHECK(!memcmp(got, n1, sizeof(n1)));
	CHECK(strlen(ch) < CONTROL_AUTH_LINE - 1);
	control_auth_answer(&a, n1, ans, sizeof(ans));
	CHECK(!strstr(ans, "token-number"));		/* never in clear */
	CHECK_EQ(control_auth_check(&a, n1, ans, strlen(ans)), 0);
	CHECK_EQ(control_auth_check(&b, n1, ans, strlen(ans)), -EACCES);
	CHECK_EQ(control_auth_check(&a, n2, ans, strlen(ans)), -EACCES);	/* replayed */
	ans[10] ^= ans[10] == 'a' ? 3 : 1;			/* one digit off */
	CHECK(control_auth_check(&a, n1, ans, strlen(ans)) < 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ(control_auth_check(&a, n1, bad[i], strlen(bad[i])), -EINVAL);
	CHECK_EQ(control_auth_parse_challenge("{\"auth\":\"hmac-md5\",\"nonce\":\"00\"}", 33, got),
		 -EINVAL);
	CHECK_EQ(control_auth_parse_challenge("{\"auth\":\"hmac-sha256\"}", 22, got), -EINVAL);
	CHECK_EQ(control_auth_parse_challenge("{\"ok\":true}", 11, got), -EINVAL);
}

static char addr[64];
static struct control_server *srv;

static int start(void)
{
	setup();
	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", 20000 + (int)getpid() % 20000);
	return control_start_auth(&srv, addr, token_file("server", "the-servers-token-0001", 0600),
				  verbs, 1, NULL);
}

/* A raw TCP connection to the server, with a 5 s receive bound. */
static int raw_connect(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_port = htons(20000 + (int)getpid() % 20000);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Sends a line, returns everything the server says until it closes (or 5 s pass). */
static void say(int fd, const char *line, char *out, size_t size)
{
	size_t have = 0;
	ssize_t n;

	if (send(fd, line, strlen(line), MSG_NOSIGNAL) < 0)
		return;
	while (have + 1 < size && (n = recv(fd, out + have, size - 1 - have, 0)) > 0)
		have += n;
	out[have] = '\0';
}

static int call_count(int fd, struct control_linebuf *lb)
{
	struct json_object *req = json_object_new_object(), *msg, *res, *v;
	size_t len;
	int ret = -1;

	json_object_object_add(req, "id", json_object_new_int(7));
	json_object_object_add(req, "verb", json_object_new_string("count"));
	if (control_send(fd, req) == 0 && control_getline(fd, lb, &len) == 1 &&
	    (msg = json_tokener_parse(lb->buf))) {
		if (json_object_object_get_ex(msg, "result", &res) &&
		    json_object_object_get_ex(res, "calls", &v))
			ret = json_object_get_int(v);
		json_object_put(msg);
	}
	json_object_put(req);
	return ret;
}

static void test_server_right_token(void)
{
	struct control_linebuf lb = { 0 };
	char err[256];
	int fd, n;

	if (!srv && start())
		SKIP("cannot listen on 127.0.0.1");
	fd = control_connect_auth(addr, token_file("client", "the-servers-token-0001\n", 0600),
				  err, sizeof(err));
	if (fd < 0)
		fprintf(stderr, "  %s\n", err);
	CHECK(fd >= 0);
	n = call_count(fd, &lb);
	CHECK(n >= 1);
	CHECK_EQ(call_count(fd, &lb), n + 1);
	close(fd);
	control_linebuf_free(&lb);
}

static void test_server_refusals(void)
{
	char err[256], out[4096], line[CONTROL_AUTH_LINE + 2], ans[CONTROL_AUTH_LINE];
	struct control_token wrong = { .key = "not-the-servers-token", .len = 21 };
	struct control_token right = { .key = "the-servers-token-0001", .len = 22 };
	uint8_t nonce[CONTROL_AUTH_NONCE];
	int before, fd;
	char *nl;

	if (!srv && start())
		SKIP("cannot listen on 127.0.0.1");
	before = calls;
	/* A wrong token file: refused at the handshake. */
	CHECK_EQ(control_connect_auth(addr, token_file("wrong", "not-the-servers-token", 0600),
				      err, sizeof(err)), -EACCES);
	CHECK(strstr(err, "authentication failed"));
	/* No token: the client refuses to try; a bad token file mode too. */
	CHECK_EQ(control_connect_auth(addr, NULL, err, sizeof(err)), -EINVAL);
	CHECK_EQ(control_connect_auth(addr, token_file("open", "the-servers-token-0001", 0644),
				      err, sizeof(err)), -EACCES);

	/* No answer, straight to a verb: the challenge, then a refusal and the close. */
	fd = raw_connect();
	CHECK(fd >= 0);
	say(fd, "{\"id\":1,\"verb\":\"count\"}\n", out, sizeof(out));
	close(fd);
	CHECK(strstr(out, "\"nonce\""));
	CHECK(strstr(out, "authentication failed"));
	CHECK(!strstr(out, "calls"));

	/* A wrong answer, then a verb on the same line stream: nothing but the refusal. */
	fd = raw_connect();
	CHECK(fd >= 0);
	CHECK(recv(fd, line, sizeof(line) - 1, 0) > 0);
	line[sizeof(line) - 1] = '\0';
	nl = strchr(line, '\n');
	CHECK(nl);
	CHECK_EQ(control_auth_parse_challenge(line, nl - line, nonce), 0);
	control_auth_answer(&wrong, nonce, ans, sizeof(ans));
	strcat(ans, "\n{\"id\":2,\"verb\":\"count\"}\n");
	say(fd, ans, out, sizeof(out));
	close(fd);
	CHECK(strstr(out, "authentication failed"));
	CHECK(!strstr(out, "calls"));

	/* The right answer on one connection, replayed on another: refused there. */
	fd = raw_connect();
	CHECK(fd >= 0);
	CHECK(recv(fd, line, sizeof(line) - 1, 0) > 0);
	nl = strchr(line, '\n');
	CHECK(nl);
	CHECK_EQ(control_auth_parse_challenge(line, nl - line, nonce), 0);
	control_auth_answer(&right, nonce, ans, sizeof(ans));
	close(fd);
	fd = raw_connect();
	CHECK(fd >= 0);
	strcat(ans, "\n{\"id\":3,\"verb\":\"count\"}\n");
	say(fd, ans, out, sizeof(out));
	close(fd);
	CHECK(strstr(out, "authentication failed"));
	CHECK(!strstr(out, "calls"));
	CHECK_EQ(calls, before);		/* no verb ran for any of them */
}

static void test_server_start_refusals(void)
{
	struct control_server *s2 = NULL;
	char cmd[128];

	setup();
	/* TCP without a token, a token file others can read, a malformed address. */
	CHECK_EQ(control_start_auth(&s2, "tcp:127.0.0.1:1", NULL, verbs, 1, NULL), -EINVAL);
	CHECK_EQ(control_start(&s2, "tcp:127.0.0.1:1", verbs, 1, NULL), -EINVAL);
	CHECK_EQ(control_start_auth(&s2, "tcp:127.0.0.1:1",
				    token_file("loose", "the-servers-token-0001", 0660), verbs, 1,
				    NULL), -EACCES);
	CHECK_EQ(control_start_auth(&s2, "tcp:127.0.0.1", token_file("t", "0123456789abcdef",
								     0600), verbs, 1, NULL),
		 -EINVAL);
	if (srv) {
		control_stop(srv);
		srv = NULL;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_EQ(system(cmd), 0);
}

TEST_MAIN(TEST(test_crypto_dlopen), TEST(test_token_files), TEST(test_tcp_addr), TEST(test_handshake_lines),
	  TEST(test_server_right_token), TEST(test_server_refusals),
	  TEST(test_server_start_refusals))
