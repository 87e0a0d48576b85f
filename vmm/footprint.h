/* kumo run's own memory: thread stacks and malloc set before any thread starts. */
#ifndef KUMO_VMM_FOOTPRINT_H
#define KUMO_VMM_FOOTPRINT_H

void footprint_init(void);

#endif
