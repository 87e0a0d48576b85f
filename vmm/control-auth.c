/*
 * Control socket authentication (vmm/control-auth.h): token files, the challenge-response
 * lines, HMAC-SHA256 from OpenSSL's libcrypto. Every parser here takes untrusted bytes.
 */
#include <errno.h>
#include <fcntl.h>
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

int control_token_load(const char *path, struct control_token *tok, char *err, size_t errlen)
{
	uint8_t buf[CONTROL_TOKEN_MAX + 64];
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
	return 0;
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

static void mac(const struct control_token *tok, const uint8_t nonce[CONTROL_AUTH_NONCE],
		uint8_t out[CONTROL_AUTH_MAC])
{
	unsigned int len = CONTROL_AUTH_MAC;

	if (!HMAC(EVP_sha256(), tok->key, (int)tok->len, nonce, CONTROL_AUTH_NONCE, out, &len))
		memset(out, 0, CONTROL_AUTH_MAC);	/* never matches a real answer */
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
		mac(tok, nonce, want);
		ret = CRYPTO_memcmp(got, want, sizeof(got)) ? -EACCES : 0;
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
