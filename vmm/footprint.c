/*
 * What kumo run itself keeps resident besides guest RAM (issue 15, measured in
 * docs/security.md): set once in cmd_run, before the first thread. (A fixed malloc mmap
 * threshold and a single arena were tried: no gain measured, so glibc's defaults stay.)
 */
#include <pthread.h>

#include "vmm/footprint.h"

void footprint_init(void)
{
	pthread_attr_t attr;

	/*
	 * Under 2 MiB, so no transparent huge page fits in a thread's stack (issue 15 saw an
	 * 8 MiB region with 2 MiB resident); the deepest user is the agent relay's 64 KiB buffer.
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
}
