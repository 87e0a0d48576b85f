/*
 * Token authentication for control sockets on TCP (docs/control-protocol.md): the server sends
 * a fresh random nonce, the client answers HMAC-SHA256(token, nonce), the server compares in
 * constant time. The token never crosses the wire; an answer is good for one connection only.
 *
 *   server: {"auth":"hmac-sha256","nonce":"<64 hex>"}
 *   client: {"auth":"<64 hex>"}
 *   server: {"auth":"ok"}   or   {"id":null,"ok":false,"error":"authentication failed"}, close
 */
#ifndef KUMO_CONTROL_AUTH_H
#define KUMO_CONTROL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define CONTROL_AUTH_NONCE	32
#define CONTROL_AUTH_MAC	32
#define CONTROL_TOKEN_MIN	16
#define CONTROL_TOKEN_MAX	256
#define CONTROL_AUTH_LINE	160	/* room for any handshake line we write */

struct control_linebuf;

struct control_token {
	uint8_t key[CONTROL_TOKEN_MAX];
	size_t len;
};

/*
 * Loads libcrypto (dlopen of libcrypto.so.3, not linked: docs/dependencies.md) and computes one
 * MAC, once per process; later calls return the first one's result. 0, or -ELIBACC (missing)
 * / -ELIBBAD with a message in err (err may be NULL). Must run before this thread or its
 * starter is under a seccomp filter: control_token_load() calls it, so loading the token at
 * setup loads libcrypto too.
 */
int control_auth_crypto_load(char *err, size_t errlen);

/*
 * Reads a token file: a regular file no one but its owner may read or write (mode 0600 or
 * stricter, else -EACCES), CONTROL_TOKEN_MIN..MAX bytes once trailing blanks and newlines are
 * cut, then loads libcrypto (control_auth_crypto_load). 0 or -errno with a message in err.
 */
int control_token_load(const char *path, struct control_token *tok, char *err, size_t errlen);

/* "tcp:HOST:PORT" (HOST may be [v6]) → 1 with host and port split out; 0 when not tcp:; -EINVAL. */
int control_tcp_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen);

/* A fresh nonce from getrandom(). 0 or -errno. */
int control_auth_nonce(uint8_t nonce[CONTROL_AUTH_NONCE]);
/* The server's challenge line (no newline) into line (CONTROL_AUTH_LINE bytes). */
void control_auth_challenge(const uint8_t nonce[CONTROL_AUTH_NONCE], char *line, size_t size);
/* Parses a challenge line: 0 with the nonce, or -EINVAL. Any bytes. */
int control_auth_parse_challenge(const char *line, size_t len, uint8_t nonce[CONTROL_AUTH_NONCE]);
/* The client's answer line for a nonce (one no server accepts if libcrypto is missing). */
void control_auth_answer(const struct control_token *tok, const uint8_t nonce[CONTROL_AUTH_NONCE],
			 char *line, size_t size);
/*
 * Checks an answer line against the token and this connection's nonce: 0, -EACCES (a well-formed
 * answer with the wrong MAC, or any answer without libcrypto) or -EINVAL (not an answer). Any
 * bytes.
 */
int control_auth_check(const struct control_token *tok, const uint8_t nonce[CONTROL_AUTH_NONCE],
		       const char *line, size_t len);

/*
 * The client side on a connected fd: reads the challenge, answers, waits for "ok". 0, or
 * -EACCES (refused), -EPROTO (not a kumo challenge) or -errno, with a message in err.
 */
int control_auth_client(int fd, struct control_linebuf *lb, const struct control_token *tok,
			char *err, size_t errlen);

#endif
