/*
 * An I/O bus: a sorted set of non-overlapping address ranges, each with a device's handlers.
 * kumo has two, vm->pio and vm->mmio. Handlers get an offset from the range's base.
 */
#ifndef KUMO_BUS_H
#define KUMO_BUS_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>

struct io_ops {
	void (*read)(void *opaque, uint64_t off, void *data, uint32_t len);
	void (*write)(void *opaque, uint64_t off, const void *data, uint32_t len);
};

/* The value of a little-endian access of len bytes (handlers' data; x86 guests only). */
static inline uint64_t io_get_le(const void *data, uint32_t len)
{
	uint64_t v = 0;

	memcpy(&v, data, len > 8 ? 8 : len);
	return v;
}

/* Fill a read access of len bytes with v (bytes past 8 read as zero). */
static inline void io_put_le(void *data, uint32_t len, uint64_t v)
{
	memset(data, 0, len);
	memcpy(data, &v, len > 8 ? 8 : len);
}

struct bus_range {
	uint64_t base;
	uint64_t len;
	const struct io_ops *ops;
	void *opaque;
	const char *name;
};

struct bus {
	const char *name;	/* "pio" or "mmio", for messages */
	pthread_rwlock_t lock;	/* ranges change rarely (BAR moves); lookups are shared */
	struct bus_range *ranges;
	int nr, cap;
	uint64_t unhandled;	/* accesses that hit no range */
};

void bus_init(struct bus *bus, const char *name);
void bus_destroy(struct bus *bus);

/* -EEXIST if [base, base+len) overlaps a registered range, -EINVAL on len 0 or wrap. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct io_ops *ops,
		 void *opaque, const char *name) __attribute__((warn_unused_result));
int bus_unregister(struct bus *bus, uint64_t base);

/*
 * Dispatch one access. An access that no range covers reads as all-ones, is dropped on write,
 * and returns -ENOENT (the caller logs it, rate-limited).
 */
int bus_access(struct bus *bus, uint64_t addr, void *data, uint32_t len, int is_write);

#endif
