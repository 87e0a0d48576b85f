/*
 * What a device may ask of the VMM, without seeing a KVM fd: guest memory, MSI routes, irqfds
 * and ioeventfds. The VMM fills it from vmm/kvm.c; host-side tests fill it with fakes that
 * record the eventfds and play the guest (ring doorbells, wait for interrupts).
 */
#ifndef KUMO_DEVENV_H
#define KUMO_DEVENV_H

#include <stdint.h>

struct guest_mem;
struct bus;

struct dev_env {
	const struct guest_mem *mem;
	struct bus *pio, *mmio;
	void *vmm;
	/*
	 * Point GSI *gsi at an MSI (address, data); *gsi == 0 allocates a new GSI. masked routes
	 * are kept but not delivered. Returns 0 or -errno.
	 */
	int (*msi_route)(void *vmm, uint32_t *gsi, uint64_t addr, uint32_t data);
	/* Writing 1 to fd raises GSI gsi. assign=0 removes it. */
	int (*irqfd)(void *vmm, int fd, uint32_t gsi, int assign);
	/* A guest write of len bytes (0 = any) at MMIO addr signals fd instead of exiting. */
	int (*ioeventfd)(void *vmm, int fd, uint64_t addr, uint32_t len, int assign);
};

#endif
