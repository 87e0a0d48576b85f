/*
 * The device state contract (docs/architecture.md, "Devices and their state"): every device
 * the guest sees -- legacy (serial, RTC, ACPI PM), the PCI functions, the virtio core and each
 * virtio device -- takes part in snapshot and migration only through these four ops.
 *
 *   quiesce  stop taking work from the guest, finish the I/O in flight and hand its results
 *            to the guest, hold no descriptor (a buffer taken but not used goes back to the
 *            ring); after it the device changes no guest memory and raises no interrupt.
 *   save     write the guest-visible state (plain data: never an fd, a pointer or a thread)
 *            as named properties.
 *   load     read it back into a device built from the same config, quiesced; every value is
 *            hostile until checked: a bad one is -EINVAL with one line, nothing half-applied
 *            that the guest could see.
 *   resume   take work again (threads, interrupt routes, ioeventfds from the loaded state).
 *
 * The VMM keeps its devices in one list (struct vm) and drives them in order: quiesce all,
 * save all; or load all, then resume all. A device without an op has nothing to do for it.
 */
#ifndef KUMO_DEV_H
#define KUMO_DEV_H

#include <stddef.h>
#include <stdint.h>

/* Where save writes: one property per call, name unique within the device. 0 or -errno. */
struct dev_state_out {
	int (*put)(void *opaque, const char *name, const void *data, size_t len);
	void *opaque;
};

/*
 * Where load reads from. get copies property name into data and fails with -EINVAL (one line
 * logged naming the device and property) unless it exists with exactly len bytes; get_var
 * returns a pointer to it and its length (up to max bytes, else -EINVAL), valid until load
 * returns.
 */
struct dev_state_in {
	int (*get)(void *opaque, const char *name, void *data, size_t len);
	int (*get_var)(void *opaque, const char *name, const void **data, size_t *len, size_t max);
	void *opaque;
};

struct dev_ops {
	int (*quiesce)(void *dev);
	int (*save)(void *dev, const struct dev_state_out *out);
	int (*load)(void *dev, const struct dev_state_in *in);
	int (*resume)(void *dev);
};

/* One entry of the VM's device list; name is the device's node in the state ("serial@3f8"). */
struct dev {
	char name[32];
	const struct dev_ops *ops;
	void *state;
};

/* Little helpers for the common case: a fixed-size value under a name. */
static inline int dev_put(const struct dev_state_out *o, const char *name, const void *p,
			  size_t len)
{
	return o->put(o->opaque, name, p, len);
}

static inline int dev_get(const struct dev_state_in *in, const char *name, void *p, size_t len)
{
	return in->get(in->opaque, name, p, len);
}

#endif
