/*
 * Control socket authentication (vmm/control-auth.h): token files, the challenge-response
 * lines, HMAC-SHA256 from OpenSSL's libcrypto. Every parser here takes untrusted bytes.
 *
 * libcrypto is not linked: control_auth_crypto_load() dlopens it when a token is first loaded
 * (at setup, before any seccomp filter: the filtered threads may not map code), so a VMM
 * without a TCP control socket never maps it (docs/dependencies.md, docs/security.md).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "vmm/control-auth.h"
#include "vmm/control.h"

#define LIBCRYPTO_SONAME "libcrypto.so.3"

/* libcrypto's functions, through the headers' own types; set once, never unloaded. */
static struct {
	pthread_mutex_t lock;
	int ret;		/* 1: not tried yet; 0: loaded; -errno: failed (not retried) */
	char why[160];
	typeof(HMAC) *hmac;
	typeof(EVP_sha256) *sha256;
	typeof(CRYPTO_memcmp) *cmp;
} crypto = { .lock = PTHREAD_MUTEX_INITIALIZER, .ret = 1 };

static int crypto_open(void)
{
	static const uint8_t probe[CONTROL_AUTH_NONCE];
	uint8_t out[CONTROL_AUTH_MAC];
	unsigned int len = sizeof(out);
	const char *e;
	void *h;

	h = dlopen(LIBCRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		e = dlerror();
		snprintf(crypto.why, sizeof(crypto.why), "%s (apt-get install libssl3)",
			 e ? e : LIBCRYPTO_SONAME ": cannot load");
		return -ELIBACC;
	}
	crypto.hmac = (typeof(HMAC) *)dlsym(h, "HMAC");
	crypto.sha256 = (typeof(EVP_sha256) *)dlsym(h, "EVP_sha256");
	crypto.cmp = (typeof(CRYPTO_memcmp) *)dlsym(h, "CRYPTO_memcmp");
	if (!crypto.hmac || !crypto.sha256 || !crypto.cmp) {
		snprintf(crypto.why, sizeof(crypto.why), "%s: no HMAC, EVP_sha256 or CRYPTO_memcmp",
			 LIBCRYPTO_SONAME);
		dlclose(h);
		return -ELIBBAD;
	}
	/* One MAC now: libcrypto's own lazy setup (providers, its config file) happens here too. */
	if (!crypto.hmac(crypto.sha256(), probe, sizeof(probe), probe, sizeof(probe), out, &len)) {
		snprintf(crypto.why, sizeof(crypto.why), "%s: HMAC-SHA256 is not available",
			 LIBCRYPTO_SONAME);
		dlclose(h);
		return -ELIBBAD;
	}
	return 0;	/* h stays open: libcrypto is not made to be unloaded */
}

int control_auth_crypto_load(char *err, size_t errlen)
{
	int ret;

	pthread_mutex_lock(&crypto.lock);
	if (crypto.ret == 1)
		crypto.ret = crypto_open();
	ret = crypto.ret;
	if (ret && err && errlen)
		snprintf(err, errlen, "HMAC-SHA256 for the control token: %s", crypto.why);
	pthread_mutex_unlock(&crypto.lock);
	return ret;
}

int control_token_load(const char *path, struct control_token *tok, char *err, size_t errlen)
{
	uint8_t buf[CONTROL_TOKEN_MAX + 64];
	char why[256];
	struct stat st;
	ssize_t n;
	int fd, ret;

	memset(tok, 0, sizeof(*tok));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		close(fd);
		snprintf(err, errlen, "%s: mode %04o: a token file must be 0600 (chmod 600 %s)",
			 path, (unsigned int)(st.st_mode & 07777), path);
		return -EACCES;
	}
	n = read(fd, buf, sizeof(buf));
	ret = n < 0 ? -errno : 0;
	close(fd);
	if (ret) {
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\t'))
		n--;
	if (n < CONTROL_TOKEN_MIN || n > CONTROL_TOKEN_MAX) {
		snprintf(err, errlen, "%s: a token is %d to %d bytes (e.g. head -c 32 /dev/urandom | "
			 "base64 > FILE)", path, CONTROL_TOKEN_MIN, CONTROL_TOKEN_MAX);
		explicit_bzero(buf, sizeof(buf));
		return -EINVAL;
	}
	memcpy(tok->key, buf, n);
	tok->len = n;
	explicit_bzero(buf, sizeof(buf));
	/* Whoever loads a token will compute MACs: libcrypto now, at setup. */
	ret = control_auth_crypto_load(why, sizeof(why));
	if (ret) {
		explicit_bzero(tok, sizeof(*tok));
		snprintf(err, errlen, "%s: %s", path, why);
	}
	return ret;
}

int control_tcp_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *h, *colon, *p;
	size_t hl;

	if (strncmp(addr, "tcp:", 4))
		return 0;
	h = addr + 4;
	if (*h == '[') {
		const char *close = strchr(h, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h++;
		hl = close - h;
		p = close + 2;
	} else {
		colon = strrchr(h, ':');
		if (!colon)
			return -EINVAL;
		hl = colon - h;
		p = colon + 1;
	}
	if (!hl || hl >= hostlen || !*p || strlen(p) >= portlen || strspn(p, "0123456789") !=
	    strlen(p) || memchr(h, '/', hl))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, p);
	return 1;
}

int control_auth_nonce(uint8_t nonce[CONTROL_AUTH_NONCE])
{
	size_t off = 0;

	while (off < CONTROL_AUTH_NONCE) {
		ssize_t n = getrandom(nonce + off, CONTROL_AUTH_NONCE - off, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		off += n;
	}
	return 0;
}

static void to_hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly 2n hex digits → n bytes; 0 or -EINVAL. */
static int from_hex(const char *s, size_t slen, uint8_t *out, size_t n)
{
	if (slen != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* A handshake line as a JSON object, or NULL. */
static struct json_object *line_object(const char *line, size_t len)
{
	struct json_object *o = NULL;
	char err[64];

	if (json_parse_object_line(line, len, CONTROL_AUTH_LINE * 2, &o, err, sizeof(err)))
		return NULL;
	return o;
}

/* The string member key of o, or NULL. */
static const char *member(struct json_object *o, const char *key, size_t *slen)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	*slen = (size_t)json_object_get_string_len(v);
	return json_object_get_string(v);
}

void control_auth_challenge(const uint8_t nonce[CONTROL_AUTH_NONCE], char *line, size_t size)
{
	char hex[2 * CONTROL_AUTH_NONCE + 1];

	to_hex(nonce, CONTROL_AUTH_NONCE, hex);
	snprintf(line, size, "{\"auth\":\"hmac-sha256\",\"nonce\":\"%s\"}", hex);
}

int control_auth_parse_challenge(const char *line, size_t len, uint8_t nonce[CONTROL_AUTH_NONCE])
{
	struct json_object *o = line_object(line, len);
	const char *s;
	size_t slen;
	int ret = -EINVAL;

	s = member(o, "auth", &slen);
	if (s && slen == 11 && !strcmp(s, "hmac-sha256")) {
		s = member(o, "nonce", &slen);
		if (s)
			ret = from_hex(s, slen, nonce, CONTROL_AUTH_NONCE);
	}
	if (o)
		json_object_put(o);
	return ret;
}

/* 0, or -errno when libcrypto could not be loaded (out is then all zeros). */
static int mac(const struct control_token *tok, const uint8_t nonce[CONTROL_AUTH_NONCE],
	       uint8_t out[CONTROL_AUTH_MAC])
{
	unsigned int len = CONTROL_AUTH_MAC;
	int ret = control_auth_crypto_load(NULL, 0);

	if (!ret && !crypto.hmac(crypto.sha256(), tok->key, (int)tok->len, nonce,
				 CONTROL_AUTH_NONCE, out, &len))
		ret = -EIO;
	if (ret)
		memset(out, 0, CONTROL_AUTH_MAC);
	return ret;
}

void control_auth_answer(const struct control_token *tok, const uint8_t nonce[CONTROL_AUTH_NONCE],
			 char *line, size_t size)
{
	uint8_t m[CONTROL_AUTH_MAC];
	char hex[2 * CONTROL_AUTH_MAC + 1];

	mac(tok, nonce, m);
	to_hex(m, sizeof(m), hex);
	snprintf(line, size, "{\"auth\":\"%s\"}", hex);
}

int control_auth_check(const struct control_token *tok, const uint8_t nonce[CONTROL_AUTH_NONCE],
		       const char *line, size_t len)
{
	uint8_t got[CONTROL_AUTH_MAC], want[CONTROL_AUTH_MAC];
	struct json_object *o = line_object(line, len);
	const char *s;
	size_t slen;
	int ret = -EINVAL;

	s = member(o, "auth", &slen);
	if (s && !from_hex(s, slen, got, sizeof(got))) {
		/* Without a MAC, no answer is right (the zeros are never compared). */
		ret = mac(tok, nonce, want) || crypto.cmp(got, want, sizeof(got)) ? -EACCES : 0;
	}
	if (o)
		json_object_put(o);
	return ret;
}

int control_auth_client(int fd, struct control_linebuf *lb, const struct control_token *tok,
			char *err, size_t errlen)
{
	uint8_t nonce[CONTROL_AUTH_NONCE];
	char line[CONTROL_AUTH_LINE + 1];
	struct json_object *o;
	const char *s;
	size_t len, slen;
	ssize_t n;
	int ret;

	ret = control_auth_crypto_load(err, errlen);	/* loaded with the token: no-op then */
	if (ret)
		return ret;
	ret = control_getline(fd, lb, &len);
	if (ret <= 0) {
		snprintf(err, errlen, "no challenge from the server: %s",
			 ret ? strerror(-ret) : "connection closed");
		return ret ? ret : -ECONNRESET;
	}
	if (control_auth_parse_challenge(lb->buf, len, nonce)) {
		snprintf(err, errlen, "not a kumo challenge: %.80s", lb->buf);
		return -EPROTO;
	}
	control_auth_answer(tok, nonce, line, sizeof(line) - 1);
	len = strlen(line);
	line[len++] = '\n';
	do
		n = send(fd, line, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len) {
		ret = n < 0 ? -errno : -EIO;
		snprintf(err, errlen, "send: %s", strerror(-ret));
		return ret;
	}
	ret = control_getline(fd, lb, &len);
	if (ret <= 0) {
		snprintf(err, errlen, "refused: %s", ret ? strerror(-ret) : "connection closed");
		return ret ? ret : -EACCES;
	}
	o = line_object(lb->buf, len);
	s = member(o, "auth", &slen);
	ret = s && slen == 2 && !strcmp(s, "ok") ? 0 : -EACCES;
	if (ret)
		snprintf(err, errlen, "refused: %.120s", lb->buf);
	if (o)
		json_object_put(o);
	return ret;
}
