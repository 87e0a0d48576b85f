/*
 * `kumo coord`: the coordinator. It keeps a list of VMMs (their control sockets), samples their
 * statistics and their guest agents', runs the policies and logs every sample and action as
 * JSON lines. It holds no guest state: what it knows is rebuilt from the VMMs on (re)connect.
 */
#ifndef KUMO_SCHED_COORD_H
#define KUMO_SCHED_COORD_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

struct coord;
struct sched;
struct sched_policy;

/* Logs to log (not closed by coord_free). NULL on out of memory. */
struct coord *coord_new(FILE *log);
void coord_free(struct coord *c);
/* Adds a VM by its control socket path (connected by the next coord_connect). 0 or -errno. */
int coord_add_vm(struct coord *c, const char *path);
/* Fixes what the VMs' memory targets may add up to (default: the host's MemTotal). */
void coord_set_host_budget(struct coord *c, uint64_t bytes);
/* Replies slower than this drop the connection (default 3000 ms). */
void coord_set_timeout_ms(struct coord *c, int ms);
/* The token file for VMs given as tcp:HOST:PORT (kept by reference). */
void coord_set_token(struct coord *c, const char *token_file);

/* What a --config file sets besides its VMs (strings malloc'ed; free them). */
struct coord_settings {
	char *policies, *log, *token;
	uint64_t budget;
	double duration;
};

/* One line of a --config file into c (vm) and st (the rest): 0, or -EINVAL with why in err. */
int coord_config_line(struct coord *c, struct coord_settings *st, const char *line, char *err,
		      size_t errlen);
/* Connects the VMs that are not connected and due for a try. Returns how many are connected. */
int coord_connect(struct coord *c);
/* Samples the host and every connected VM (VMM stats, agent stats, vCPU threads); logs them. */
void coord_sample(struct coord *c);
/* Runs one tick of policy p with its state (the log names it). */
void coord_tick(struct coord *c, const struct sched_policy *p, void *state);
/* The policy API on this coordinator. */
struct sched *coord_sched(struct coord *c);

/*
 * A policy by name: a built-in, or a shared object (a name with a '/') exporting
 * SCHED_POLICY_SYMBOL; *handle gets its dlopen handle (NULL for a built-in). NULL with err set.
 */
const struct sched_policy *coord_find_policy(const char *name, void **handle, char *err,
					     size_t errlen);

/* `kumo coord ...` (argv[0] is "coord"). */
int coord_main(int argc, char **argv);

#endif
