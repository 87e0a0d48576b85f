/*
 * libFuzzer target for control_parse_request(): the bytes come from any local client of the
 * control socket, one request line at a time.
 *
 *   clang -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. tests/fuzz/fuzz-control.c \
 *         vmm/control.c vmm/log.c -ljson-c -o /tmp/fuzz-control && /tmp/fuzz-control -runs=50000
 *
 * Checks that a parse either fails with a message or yields a non-empty verb and an object as
 * args, and that the reply-side serialization of what was parsed works.
 * (-ljson-c is on the sources line because tests/fuzz/run.sh does not link it yet.)
 */
// fuzz-sources: vmm/control.c vmm/control-auth.c vmm/log.c vmm/seccomp.c
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "vmm/control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_request req;
	char err[256];
	char *copy;
	int ret;

	/* An exact-size heap copy, not NUL-terminated, so ASan sees any read past size. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	err[0] = '\0';
	ret = control_parse_request(copy, size, &req, err, sizeof(err));
	if (ret == 0) {
		if (!req.root || !req.verb || !req.verb[0] || !req.args ||
		    !json_object_is_type(req.args, json_type_object))
			abort();
		(void)json_object_to_json_string_ext(req.root, JSON_C_TO_STRING_PLAIN);
		(void)json_object_to_json_string_ext(req.id, JSON_C_TO_STRING_PLAIN);
	} else if ((ret != -EINVAL && ret != -ENOMEM) || !err[0] || !memchr(err, '\0', sizeof(err))) {
		abort();
	}
	control_request_free(&req);
	free(copy);
	return 0;
}
