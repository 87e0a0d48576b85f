/*
 * libFuzzer target for the TCP control handshake lines (vmm/control-auth.c): the first line a
 * network client sends (control_auth_check) and the challenge a client reads from whatever
 * it connected to (control_auth_parse_challenge). Neither may crash; only the one right answer
 * for the nonce may pass, and a challenge that parses must carry 32 bytes that round-trip.
 */
// fuzz-sources: vmm/control-auth.c vmm/control.c vmm/log.c vmm/seccomp.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/control-auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct control_token tok = { .key = "fuzzing-token-0123", .len = 18 };
	static const uint8_t nonce[CONTROL_AUTH_NONCE] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint8_t got[CONTROL_AUTH_NONCE];
	char line[CONTROL_AUTH_LINE];
	char *copy = malloc(size ? size : 1);	/* exact size: ASan sees any over-read */

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	/* Passing needs the 64 hex digits of the right MAC at least. */
	if (control_auth_check(&tok, nonce, copy, size) == 0 && size < 64)
		abort();
	if (control_auth_parse_challenge(copy, size, got) == 0) {
		control_auth_challenge(got, line, sizeof(line));
		if (control_auth_parse_challenge(line, strlen(line), got) != 0)
			abort();
	}
	free(copy);
	return 0;
}
