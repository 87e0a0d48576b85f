/*
 * libFuzzer target for kumo-agent's parsers (guest/agent/agent-parse.c): the guest's /proc and
 * sysfs text and the host's request lines are both untrusted input for the agent.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz-agent-parse.c \
 *         -o /tmp/fuzz-agent-parse && /tmp/fuzz-agent-parse -runs=50000
 *
 * The same bytes go through every parser; checks that results stay in range and that a parsed
 * cpu list survives a format/parse round trip.
 */
// fuzz-sources:
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guest/agent/agent-parse.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ap_request req;
	struct ap_cpustat cpus[16], total;
	uint64_t vals[64], present, mask[AP_CPU_WORDS], again[AP_CPU_WORDS];
	struct ap_psi psi;
	const char *err = NULL;
	char list[1200];
	char *copy;
	int n, have;

	/* An exact-size heap copy, not NUL-terminated, so ASan sees any read past size. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);

	n = ap_parse_keyed(copy, size, 0, ap_meminfo_keys, AP_MEMINFO_N, vals, &present);
	if (n < 0 || n > AP_MEMINFO_N || (uint64_t)__builtin_popcountll(present) != (uint64_t)n)
		abort();
	ap_parse_keyed(copy, size, 2, ap_nodemem_keys, AP_NODEMEM_N, vals, &present);
	ap_parse_keyed(copy, size, 0, ap_vmstat_keys, AP_VMSTAT_N, vals, &present);
	n = ap_parse_stat(copy, size, cpus, 16, &total, &have);
	if (n < 0 || n > 16)
		abort();
	n = ap_parse_psi(copy, size, &psi);
	if (n < 0 || n > 2 || (psi.some.present && psi.some.avg10 > 1000000000u))
		abort();
	if (ap_parse_cpulist(copy, size, mask) == 0) {
		n = ap_format_cpulist(mask, list, sizeof(list));
		if (n < 0 || ap_parse_cpulist(list, (size_t)n, again) || memcmp(mask, again, sizeof(mask)))
			abort();
	}
	ap_is_agent_port_name(copy, size);
	ap_json_object_valid(copy, size);
	if (ap_parse_request(copy, size, &req, &err) == 0) {
		if (!req.verb[0] || req.argc < 0 || req.argc > AP_MAX_ARGS || !req.id[0])
			abort();
		/* What the agent echoes as "id" must itself be valid JSON. */
		char wrapped[80];
		size_t idn = strlen(req.id);

		memcpy(wrapped, "{\"id\":", 6);
		memcpy(wrapped + 6, req.id, idn);
		wrapped[6 + idn] = '}';
		if (!ap_json_object_valid(wrapped, idn + 7))
			abort();
	} else if (!err || !*err) {
		abort();
	}
	free(copy);
	return 0;
}
