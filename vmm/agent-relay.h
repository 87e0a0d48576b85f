/*
 * The guest agent relay: kumo run as the host end of the org.kumo.agent port, so a coordinator
 * needs only the VM's control socket. A thread connects to the port's Unix socket (the
 * virtio-console device serves it), reads the agent's JSON lines (docs/guest.md) and
 *   - keeps the latest "stats" event and streams it as the control event "agent-stats",
 *   - streams every other agent event as "agent-event" ({"event": NAME, "data": ...}),
 *   - hands replies (objects with an "id") to the request waiting for them.
 * It reconnects when the connection drops. Agent lines are guest input: each is bounded
 * (AGENT_RELAY_MAX_LINE), parsed strictly, and a bad one is counted and dropped.
 */
#ifndef KUMO_AGENT_RELAY_H
#define KUMO_AGENT_RELAY_H

#include <stddef.h>
#include <stdint.h>

struct json_object;
struct agent_relay;

#define AGENT_RELAY_MAX_LINE (1024 * 1024)

/* Where relayed events go: name and data (ownership of data passes). */
typedef void (*agent_relay_emit_fn)(void *opaque, const char *name, struct json_object *data);

/* Start relaying the agent port served at sock_path. 0 or -errno. */
int agent_relay_start(struct agent_relay **out, const char *sock_path, agent_relay_emit_fn emit,
		      void *opaque) __attribute__((warn_unused_result));
/*
 * Stop the thread, fail waiting requests (-ECONNRESET) and refuse new ones (-ESHUTDOWN); returns
 * once no caller is inside agent_relay_request(). The relay stays readable (counters, stats,
 * the verbs answer). With a control server serving the verbs: agent_relay_shutdown(), then
 * control_stop() (its owed agent replies are answered by then), then agent_relay_stop().
 */
void agent_relay_shutdown(struct agent_relay *r);
/* Shut down (if not yet) and free everything. NULL is a no-op. */
void agent_relay_stop(struct agent_relay *r);

/*
 * Send {"id", "verb", "args"} to the agent and wait up to timeout_ms for its reply. Returns 0
 * with *reply (the agent's whole reply object, owned by the caller), -ENOTCONN (no connection
 * to the port), -ETIMEDOUT, -ECONNRESET (the connection dropped while waiting), -EAGAIN (the
 * port is not taking bytes) or -EBUSY (too many requests in flight).
 */
int agent_relay_request(struct agent_relay *r, const char *verb, struct json_object *args,
			int timeout_ms, struct json_object **reply);

/* A copy of the latest stats data (the caller's own) and its age; -ENODATA before the first. */
int agent_relay_stats(struct agent_relay *r, struct json_object **data, double *age_s);

/* A copy of the agent's hello data on the current connection; -ENODATA before it. */
int agent_relay_hello(struct agent_relay *r, struct json_object **data);

struct agent_relay_counters {
	uint64_t lines, stats, events, replies, bad_lines, orphan_replies, connects;
	int connected;
};
void agent_relay_counters(struct agent_relay *r, struct agent_relay_counters *c);

/* One agent line, parsed. */
enum agent_line_kind { AGENT_LINE_STATS, AGENT_LINE_EVENT, AGENT_LINE_REPLY };
struct agent_line {
	enum agent_line_kind kind;
	struct json_object *obj;	/* the whole line (owned: json_object_put it) */
	const char *event;		/* event name (inside obj) for STATS/EVENT */
	struct json_object *data;	/* "data" member (borrowed from obj), may be NULL */
	uint64_t id;			/* REPLY: the request id */
};

/*
 * Parse one line (without its newline). A line must be a JSON object that is either an event
 * ({"event": string, "data": any}) or a reply ({"id": non-negative integer, "ok": bool, ...}).
 * 0 with *out filled, or -EINVAL (not JSON, not an object, neither kind, or too long).
 */
int agent_relay_parse_line(const char *line, size_t len, struct agent_line *out);

/* The control verbs `agent` (verb=NAME [args={...}] [timeout_ms=N]: the agent's result) and
 * `agent-stats` (latest stats with the relay's counters), for any control server that holds a
 * relay; r NULL is an error reply saying there is no relay. */
int agent_relay_verb_agent(struct agent_relay *r, struct json_object *args,
			   struct json_object **result, char *err, size_t errlen);
int agent_relay_verb_stats(struct agent_relay *r, struct json_object *args,
			   struct json_object **result, char *err, size_t errlen);

#endif
