/*
 * What kumo run itself keeps resident besides guest RAM (issue 15, measured in
 * docs/security.md): set once in cmd_run, before the first thread.
 */
#include <malloc.h>
#include <pthread.h>

#include "vmm/footprint.h"

void footprint_init(void)
{
	pthread_attr_t attr;

	/*
	 * Under 2 MiB, so no transparent huge page fits in a thread's stack (the 8 MiB default
	 * had a 2 MiB huge page resident); the deepest user is the agent relay's 64 KiB buffer.
	 */
	if (!pthread_attr_init(&attr)) {
#if defined(__SANITIZE_ADDRESS__)
		pthread_attr_setstacksize(&attr, 2 << 20);
#else
		pthread_attr_setstacksize(&attr, 256 << 10);
#endif
		pthread_setattr_default_np(&attr);
		pthread_attr_destroy(&attr);
	}
	/*
	 * A fixed threshold: glibc raises it to the size of the largest mmapped block freed (the
	 * kernel image, tens of MiB), after which a disk's 1 MiB request table came from a heap
	 * and calloc touched all of it; from a fresh mapping only the slots used are resident.
	 */
	mallopt(M_MMAP_THRESHOLD, 128 << 10);
	/* One heap for all threads: each thread's own arena kept tens of KiB resident. */
	mallopt(M_ARENA_MAX, 1);
}
