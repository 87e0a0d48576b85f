/* Command-line parsing for `kumo run`, kept apart from main() so it is unit-tested. */
#ifndef KUMO_CONFIG_H
#define KUMO_CONFIG_H

#include <stddef.h>

struct vm_config;

struct run_options {
	int verbose;
	int quiet;
	const char *control_token;	/* --control-token FILE, with --control tcp:ADDR:PORT */
	int no_seccomp;			/* --no-seccomp: threads unfiltered (debugging) */
	int seccomp;			/* --seccomp: every thread under its allow-list (default) */
};

/*
 * Parse the arguments after "run". Returns 0, or -EINVAL with a one-line reason in err.
 * Returns 1 when --help was asked for.
 */
int config_parse_run(int argc, char **argv, struct vm_config *cfg, struct run_options *opts,
		     char *err, size_t errlen);

extern const char config_run_usage[];

#endif
