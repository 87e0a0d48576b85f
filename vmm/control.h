/*
 * The control socket: one JSON object per line in each direction over a Unix stream socket,
 * served by its own thread. Knows nothing of the VM: the VMM registers a verb table.
 * The protocol is described in docs/control-protocol.md.
 */
#ifndef KUMO_CONTROL_H
#define KUMO_CONTROL_H

#include <stddef.h>
#include <stdint.h>

struct json_object;
struct control_server;

#define CONTROL_MAX_LINE	(64 * 1024)	/* a longer request line drops the client */
#define CONTROL_MAX_OUTBUF	(4 * 1024 * 1024) /* unread output beyond this drops the client */
#define CONTROL_MAX_CLIENTS	64
#define CONTROL_AUTH_TIMEOUT_MS	5000	/* a TCP client proves the token by then or is closed */
#define CONTROL_MAX_DEFERRED	64	/* replies owed at once (control_defer) */
#define CONTROL_DEFERRED	1	/* a verb's return: its reply comes via control_complete */

/*
 * A verb. fn runs on the control thread; args is always an object (empty when the request had
 * none) and is borrowed. On success fn returns 0 and may set *result (owned by the server from
 * then on; NULL means {}). On failure it returns -errno and may write a message to err (else
 * strerror is used); a *result set on failure is freed.
 */
struct control_verb {
	const char *name;
	int (*fn)(void *opaque, struct json_object *args, struct json_object **result, char *err,
		  size_t errlen);
	const char *help;
};

/*
 * Listens on path (a stale socket there is replaced, a live one is -EADDRINUSE) and serves
 * verbs plus the built-ins "help" and "events". verbs must outlive the server. 0 or -errno.
 */
int control_start(struct control_server **out, const char *path, const struct control_verb *verbs,
		  size_t nverbs, void *opaque) __attribute__((warn_unused_result));
/*
 * The same, where path may also be "tcp:ADDR:PORT": then token_file (mode 0600, see
 * vmm/control-auth.h) is required (-EINVAL without one), and every connection must answer the
 * server's challenge with it before any verb; a wrong or missing answer is refused, logged and
 * closed. token_file is ignored for a Unix socket.
 */
int control_start_auth(struct control_server **out, const char *path, const char *token_file,
		       const struct control_verb *verbs, size_t nverbs, void *opaque)
	__attribute__((warn_unused_result));
/* Stops the thread (waiting for a running verb), flushes what it can, unlinks the socket.
 * Not from a verb. NULL is a no-op. */
void control_stop(struct control_server *srv);

/*
 * Streams {"event": name, "data": data, "ts": <CLOCK_MONOTONIC seconds>} to every subscribed
 * client. Any thread, never blocks on a client. Takes ownership of data (NULL means {});
 * srv NULL is a no-op. Returns the number of clients it was queued for.
 */
int control_emit_event(struct control_server *srv, const char *name, struct json_object *data);

/*
 * Deferred replies, for verbs that wait on something else (the guest agent): inside a verb,
 * control_defer(&handle) takes a handle on the request being run and the verb returns
 * CONTROL_DEFERRED; later, from any thread, control_complete(handle, ret, result, err) sends the
 * reply (as the verb would have: ret 0 with result, or -errno with err) and frees the handle.
 * The control thread goes on serving other requests and clients meanwhile, so replies on one
 * connection may come out of request order (match them by id). A client gone by then gets
 * nothing. control_defer() returns 0, -ESRCH when not called from a verb, -EBUSY when
 * CONTROL_MAX_DEFERRED replies are owed already, or -ENOMEM. control_stop() waits for every
 * owed reply: complete them (stop their owners) first.
 */
struct control_pending;
int control_defer(struct control_pending **out) __attribute__((warn_unused_result));
void control_complete(struct control_pending *p, int ret, struct json_object *result,
		      const char *err);

/* A parsed request. root owns everything; id may be NULL (absent); args is never NULL. */
struct control_request {
	struct json_object *root;
	struct json_object *id;
	const char *verb;
	struct json_object *args;
};

/*
 * Parses one request line (without its newline; bytes of any value). 0 with *req filled (free
 * with control_request_free), or -EINVAL with a message in err; on a failure after the JSON
 * parsed, req->id is still set (so the error reply can carry it) and req must be freed.
 */
int control_parse_request(const char *line, size_t len, struct control_request *req, char *err,
			  size_t errlen);
void control_request_free(struct control_request *req);

/*
 * One line of JSON-lines input that must be an object: trailing CR/blanks ignored, at most max
 * bytes, no NUL, strict JSON with valid UTF-8 and bounded depth. 0 with *out (owned by the
 * caller), or -EINVAL/-ENOMEM with a message in err. Shared by the control socket and the
 * agent relay.
 */
int json_parse_object_line(const char *line, size_t len, size_t max, struct json_object **out,
			   char *err, size_t errlen);

/*
 * Argument helpers for verbs: 0, -ENOENT when absent, -EINVAL on a wrong type; err is set
 * either way ("missing argument 'x'" / "argument 'x' must be an integer").
 */
int control_arg_int64(struct json_object *args, const char *key, int64_t *out, char *err,
		      size_t errlen);
int control_arg_bool(struct json_object *args, const char *key, int *out, char *err,
		     size_t errlen);
int control_arg_string(struct json_object *args, const char *key, const char **out, char *err,
		       size_t errlen);

/*
 * Client side, shared by `kumo ctl` and `kumo coord` (blocking sockets; a receive timeout set
 * with SO_RCVTIMEO bounds control_getline). control_connect: a connected fd or -errno.
 * control_send: msg as one line, 0 or -errno. control_getline: 1 with the next line (NUL
 * instead of its newline) at lb->buf, valid until the next call; 0 on EOF; -errno on an error,
 * a timeout (-EAGAIN) or a line past 8 MiB (-EMSGSIZE).
 */
struct control_linebuf {
	char *buf;
	size_t cap, have, consumed;
};
int control_connect(const char *path);
/*
 * A Unix path (as control_connect) or tcp:HOST:PORT, authenticated with token_file there
 * (control-auth.h). A connected fd, or -errno with a message in err.
 */
int control_connect_auth(const char *addr, const char *token_file, char *err, size_t errlen);
int control_send(int fd, struct json_object *msg);
int control_getline(int fd, struct control_linebuf *lb, size_t *linelen);
void control_linebuf_free(struct control_linebuf *lb);

/*
 * `kumo ctl`: argv[0] is the command name, then PATH VERB [key=value ...]. Values that parse as
 * JSON are sent as such, others as strings. Prints the result (pretty) and returns 0, or the
 * error on stderr and returns 1; "events" prints event lines until interrupted or the server
 * goes away. 2 on a usage error.
 */
int control_client_main(int argc, char **argv);

#endif
