/*
 * libFuzzer target for agent_relay_parse_line(): the bytes come from the guest agent, one line
 * at a time, through the org.kumo.agent port that kumo relays (vmm/agent-relay.c).
 *
 * Checks that a parse either fails or yields a kind that matches the object: stats and other
 * events carry a non-empty event name, replies a non-negative id and a boolean "ok".
 */
// fuzz-sources: vmm/agent-relay.c vmm/control.c vmm/control-auth.c vmm/log.c vmm/seccomp.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "vmm/agent-relay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_line l;
	struct json_object *ok;

	if (agent_relay_parse_line((const char *)data, size, &l) < 0) {
		if (l.obj)
			abort();
		return 0;
	}
	if (!l.obj || !json_object_is_type(l.obj, json_type_object))
		abort();
	switch (l.kind) {
	case AGENT_LINE_STATS:
		if (strcmp(l.event, "stats"))
			abort();
		break;
	case AGENT_LINE_EVENT:
		if (!l.event[0] || !strcmp(l.event, "stats"))
			abort();
		break;
	case AGENT_LINE_REPLY:
		if (!json_object_object_get_ex(l.obj, "ok", &ok) ||
		    !json_object_is_type(ok, json_type_boolean) || l.id > INT64_MAX)
			abort();
		break;
	}
	/* What is relayed gets serialised again for the control socket. */
	if (!json_object_to_json_string_ext(l.obj, JSON_C_TO_STRING_PLAIN))
		abort();
	json_object_put(l.obj);
	return 0;
}
