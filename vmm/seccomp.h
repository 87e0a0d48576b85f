/* Per-thread seccomp allow-lists for `kumo run` (docs/security.md). */
#ifndef KUMO_VMM_SECCOMP_H
#define KUMO_VMM_SECCOMP_H

#include <stddef.h>

enum kumo_thread {
	KUMO_THREAD_MAIN,	/* console input, signals, teardown */
	KUMO_THREAD_VCPU,
	KUMO_THREAD_CONTROL,
	KUMO_THREAD_RELAY,	/* the agent relay's connection */
	KUMO_THREAD_AGENT_CALL,	/* one deferred `agent` verb */
	KUMO_THREAD_MIGRATION,	/* the migration sender */
	KUMO_THREAD_LAZY,	/* userfaultfd server of a lazy restore */
	KUMO_THREAD_LAZY_WATCH,
	KUMO_THREAD_BLK,	/* the device I/O workers, one kind per device type */
	KUMO_THREAD_NET,
	KUMO_THREAD_CONSOLE,
	KUMO_THREAD_BALLOON,
	KUMO_THREAD__COUNT
};

/*
 * Turn filtering on for this process (kumo run, unless --no-seccomp): installs the SIGSYS
 * reporter. Until then seccomp_enter() does nothing, so unit tests, `kumo relay` and
 * `kumo coord` run unfiltered. Returns 0 or -errno.
 */
int seccomp_enable(void);
int seccomp_enabled(void);

/*
 * Put the calling thread under kind's allow-list (plus what the threads it may start need:
 * a filter is inherited). A forbidden call then ends the process with one line naming the
 * call and the thread. Failing to install ends the process too: never run unfiltered by
 * accident. Call once, at the top of the thread's function.
 */
void seccomp_enter(enum kumo_thread kind);

/* The worker kind for a virtio device's ops name ("virtio-blk", ...). */
enum kumo_thread seccomp_device_kind(const char *devname);

const char *seccomp_kind_name(enum kumo_thread kind);
/* Number of system calls kind's filter allows (its own and its children's). */
size_t seccomp_allowed_count(enum kumo_thread kind);

#endif
