/* The coordinator's pure parsers (sched/stats.h). Nothing here trusts its input. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "sched/stats.h"
#include "vmm/control.h"

int sched_parse_reply(const char *line, size_t len, int64_t *id, struct json_object **result,
		      char *err, size_t errlen)
{
	struct json_object *root, *v;
	int ret;

	*id = -1;
	*result = NULL;
	ret = json_parse_object_line(line, len, 2 * CONTROL_MAX_OUTBUF, &root, err, errlen);
	if (ret)
		return ret == -ENOMEM ? ret : -EINVAL;
	if (json_object_object_get_ex(root, "event", NULL)) {
		json_object_put(root);
		return 1;
	}
	if (!json_object_object_get_ex(root, "ok", &v) || !json_object_is_type(v, json_type_boolean)) {
		snprintf(err, errlen, "neither a reply nor an event");
		json_object_put(root);
		return -EINVAL;
	}
	ret = 0;
	if (!json_object_get_boolean(v)) {
		struct json_object *e;

		snprintf(err, errlen, "%s",
			 json_object_object_get_ex(root, "error", &e) &&
			 json_object_is_type(e, json_type_string) ? json_object_get_string(e) :
			 "(no message)");
		ret = -EREMOTEIO;
	}
	if (json_object_object_get_ex(root, "id", &v) && json_object_is_type(v, json_type_int))
		*id = json_object_get_int64(v);
	if (!ret && json_object_object_get_ex(root, "result", &v) &&
	    json_object_is_type(v, json_type_object))
		*result = json_object_get(v);
	json_object_put(root);
	return ret;
}

/* A non-negative integer member (a double is truncated; anything else is absent). */
static bool get_u64(struct json_object *o, const char *key, uint64_t *out)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return false;
	if (json_object_is_type(v, json_type_int)) {
		int64_t i = json_object_get_int64(v);

		if (i < 0)
			return false;
		*out = (uint64_t)i;
		return true;
	}
	if (json_object_is_type(v, json_type_double)) {
		double d = json_object_get_double(v);

		if (!(d >= 0 && d < 1.8e19))
			return false;
		*out = (uint64_t)d;
		return true;
	}
	return false;
}

static bool get_double(struct json_object *o, const char *key, double *out)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return false;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return false;
	*out = json_object_get_double(v);
	return isfinite(*out);
}

static struct json_object *get_obj(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_object))
		return NULL;
	return v;
}

int sched_parse_vmm_stats(struct json_object *result, struct sched_mem *out)
{
	struct json_object *b, *bs;

	memset(out, 0, sizeof(*out));
	if (!get_u64(result, "guest_ram_bytes", &out->ram_bytes))
		return -EINVAL;
	get_u64(result, "guest_ram_resident_bytes", &out->resident_bytes);
	b = get_obj(result, "balloon");
	if (b && get_u64(b, "target_bytes", &out->target_bytes) &&
	    get_u64(b, "actual_bytes", &out->actual_bytes))
		out->balloon = true;
	bs = get_obj(result, "balloon_stats");
	if (bs && get_double(bs, "age_s", &out->balloon_stats_age_s)) {
		out->balloon_stats = true;
		get_u64(bs, "swap_in", &out->swap_in);
		get_u64(bs, "swap_out", &out->swap_out);
		get_u64(bs, "major_faults", &out->major_faults);
		get_u64(bs, "minor_faults", &out->minor_faults);
		get_u64(bs, "free_memory", &out->free_memory);
		get_u64(bs, "total_memory", &out->total_memory);
		get_u64(bs, "available_memory", &out->available_memory);
		get_u64(bs, "disk_caches", &out->disk_caches);
	}
	return 0;
}

static bool get_kib(struct json_object *o, const char *key, uint64_t *out)
{
	uint64_t kib;

	if (!get_u64(o, key, &kib) || kib > UINT64_MAX / 1024)
		return false;
	*out = kib * 1024;
	return true;
}

int sched_parse_agent_stats(struct json_object *result, struct sched_agent *out)
{
	struct json_object *v, *data, *mi, *vm, *psi;

	memset(out, 0, sizeof(*out));
	if (!json_object_object_get_ex(result, "connected", &v) ||
	    !json_object_get_boolean(v))
		return -ENOTCONN;
	data = get_obj(result, "data");
	mi = get_obj(data, "meminfo");
	/* Without these the data is of no use to a memory policy. */
	if (!get_double(result, "age_s", &out->age_s) || out->age_s < 0 ||
	    !get_kib(mi, "MemTotal", &out->mem_total) ||
	    !get_kib(mi, "Committed_AS", &out->committed_as))
		return -ENODATA;
	get_u64(data, "seq", &out->seq);
	get_kib(mi, "MemFree", &out->mem_free);
	get_kib(mi, "MemAvailable", &out->mem_available);
	get_kib(mi, "Cached", &out->cached);
	get_kib(mi, "Active(file)", &out->active_file);
	get_kib(mi, "Inactive(file)", &out->inactive_file);
	get_kib(mi, "SwapTotal", &out->swap_total);
	get_kib(mi, "SwapFree", &out->swap_free);
	vm = get_obj(data, "vmstat");
	get_u64(vm, "workingset_refault_file", &out->refault_file);
	get_u64(vm, "workingset_activate_file", &out->activate_file);
	get_u64(vm, "pgmajfault", &out->pgmajfault);
	get_u64(vm, "pswpin", &out->pswpin);
	get_u64(vm, "pswpout", &out->pswpout);
	get_u64(vm, "pgscan", &out->pgscan);
	psi = get_obj(data, "psi_memory");
	out->psi = get_double(get_obj(psi, "some"), "avg10", &out->psi_some_avg10) &&
		   get_double(get_obj(psi, "full"), "avg10", &out->psi_full_avg10);
	return 0;
}

int sched_parse_loadavg(const char *text, double load[3])
{
	if (sscanf(text, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
		return -EINVAL;
	for (int i = 0; i < 3; i++)
		if (!isfinite(load[i]) || load[i] < 0)
			return -EINVAL;
	return 0;
}

/* The value of "Key:" at the start of a line of text, in kB. */
static bool meminfo_kib(const char *text, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		unsigned long long v;

		if (!strncmp(p, key, klen) && p[klen] == ':' &&
		    sscanf(p + klen + 1, "%llu", &v) == 1 && v <= UINT64_MAX / 1024) {
			*out = v * 1024;
			return true;
		}
	}
	return false;
}

int sched_parse_meminfo(const char *text, uint64_t *total, uint64_t *available)
{
	if (!meminfo_kib(text, "MemTotal", total) || !meminfo_kib(text, "MemAvailable", available))
		return -EINVAL;
	return 0;
}

int sched_parse_psi(const char *text, double *some_avg10, double *full_avg10)
{
	const char *some = strstr(text, "some avg10="), *full = strstr(text, "full avg10=");

	if (!some || sscanf(some, "some avg10=%lf", some_avg10) != 1 || !isfinite(*some_avg10))
		return -EINVAL;
	*full_avg10 = 0;
	if (full && (sscanf(full, "full avg10=%lf", full_avg10) != 1 || !isfinite(*full_avg10)))
		return -EINVAL;
	return 0;
}

int sched_parse_task_stat(const char *text, uint64_t *ticks, int *nice)
{
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	const char *p = strrchr(text, ')');
	unsigned long long ut, st;
	long n;

	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
			 "%*d %*d %*d %ld", &ut, &st, &n) != 3)
		return -EINVAL;
	*ticks = ut + st;
	*nice = (int)n;
	return 0;
}

uint64_t sched_bound_target(uint64_t want, uint64_t ram, uint64_t budget, uint64_t others,
			    uint64_t floor)
{
	uint64_t room = budget > others ? budget - others : 0;
	uint64_t t = want;

	if (t > ram)
		t = ram;
	if (t > room)
		t = room;
	return t < floor ? 0 : t;
}
