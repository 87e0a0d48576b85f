/* An interrupt line as devices see it: they raise and lower it, the VMM routes it. */
#ifndef KUMO_IRQ_H
#define KUMO_IRQ_H

#include <stdint.h>

struct irq_line {
	int (*set)(void *opaque, uint32_t gsi, int level);
	void *opaque;
	uint32_t gsi;
};

static inline int irq_set(const struct irq_line *l, int level)
{
	return l->set ? l->set(l->opaque, l->gsi, level) : 0;
}

#endif
