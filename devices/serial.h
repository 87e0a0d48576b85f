/* A 16550A UART: what the Linux 8250 driver probes and uses as its console. */
#ifndef KUMO_SERIAL_H
#define KUMO_SERIAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/irq.h"

#define SERIAL_FIFO_SIZE 64

struct serial {
	pthread_mutex_t lock;
	struct irq_line irq;
	int out_fd;			/* guest output goes here (stdout, a pipe in tests) */
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	int thr_empty_pending;		/* THR-empty interrupt owed to the guest */
	int irq_level;
	uint8_t rx[SERIAL_FIFO_SIZE];
	unsigned int rx_head, rx_count;
	uint64_t tx_bytes;
	uint64_t first_tx_ns;		/* CLOCK_MONOTONIC of the first byte out, 0 before */
};

extern const struct io_ops serial_ops;

/* dev is a struct serial *; state: "regs" (struct serial_regs in serial.c). */
struct dev_ops;
extern const struct dev_ops serial_dev_ops;

void serial_init(struct serial *s, const struct irq_line *irq, int out_fd);

/* Queue input for the guest; returns how many bytes fit in the receive FIFO. */
size_t serial_push_input(struct serial *s, const uint8_t *buf, size_t n);

#endif
