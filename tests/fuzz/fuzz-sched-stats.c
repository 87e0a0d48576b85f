/*
 * libFuzzer target for what the coordinator reads from a VMM (sched/stats.c): a reply line, and
 * the `stats` and `agent-stats` results inside it; the same bytes also go through the host text
 * parsers, the margin policy and the host bound, whose results must stay in range.
 *
 *   sh tests/fuzz/run.sh    (builds every tests/fuzz/fuzz-*.c)
 */
// fuzz-sources: sched/stats.c sched/policy-margin.c vmm/control.c vmm/control-auth.c vmm/log.c vmm/seccomp.c
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "sched/policies.h"
#include "sched/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *res = NULL;
	struct sched_agent a;
	struct sched_mem m;
	char err[256], *text;
	int64_t id;
	int ret;

	ret = sched_parse_reply((const char *)data, size, &id, &res, err, sizeof(err));
	if (ret != 0 && res)
		abort();	/* only a successful reply hands out a result */
	if (res) {
		int mret = sched_parse_vmm_stats(res, &m);
		int aret = sched_parse_agent_stats(res, &a);

		if (mret && mret != -EINVAL)
			abort();
		if (aret && aret != -ENOTCONN && aret != -ENODATA)
			abort();
		if (!aret) {
			/* What the parser accepted drives the policy without harm. */
			struct margin_vm vm = { 0 };
			struct margin_input in = { .now = 0, .mem_ok = !mret && m.balloon,
						   .agent_ok = true, .agent = a };
			struct margin_decision d;

			in.ram_bytes = m.ram_bytes;
			in.target_bytes = m.target_bytes;
			for (int i = 0; i < 3; i++) {
				in.now = 5.0 * i;
				margin_step(&margin_defaults, &vm, &in, &d);
				if (d.action == MARGIN_SET && d.target > in.ram_bytes)
					abort();
			}
		}
		json_object_put(res);
	}

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	{
		double load[3], some, full;
		uint64_t total, avail, ticks, t;
		int nice;

		sched_parse_loadavg(text, load);
		sched_parse_meminfo(text, &total, &avail);
		sched_parse_psi(text, &some, &full);
		sched_parse_task_stat(text, &ticks, &nice);
		if (size >= 40) {
			uint64_t v[5];

			memcpy(v, data, sizeof(v));
			t = sched_bound_target(v[0], v[1], v[2], v[3], v[4]);
			if (t && (t > v[0] || t > v[1] || t < v[4] ||
				  (v[2] > v[3] && t > v[2] - v[3]) || (v[2] <= v[3])))
				abort();
		}
	}
	free(text);
	return 0;
}
