#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/serial.h"
#include "vmm/bus.h"
#include "vmm/log.h"

enum {
	UART_RX = 0, UART_TX = 0, UART_DLL = 0, UART_IER = 1, UART_DLM = 1, UART_IIR = 2,
	UART_FCR = 2, UART_LCR = 3, UART_MCR = 4, UART_LSR = 5, UART_MSR = 6, UART_SCR = 7,
};

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint8_t iir(const struct serial *s)
{
	uint8_t fifo = (s->fcr & FCR_ENABLE) ? IIR_FIFO : 0;

	if ((s->ier & IER_RDI) && s->rx_count)
		return fifo | IIR_RDI;
	if ((s->ier & IER_THRI) && s->thr_empty_pending)
		return fifo | IIR_THRI;
	return fifo | IIR_NO_INT;
}

/* The level the registers ask for on the interrupt line. */
static int line_level(const struct serial *s)
{
	/* Without OUT2 the PC wiring keeps the line off the interrupt controller. */
	if (!(s->mcr & 0x08))
		return 0;
	return !(iir(s) & IIR_NO_INT);
}

static void update_irq(struct serial *s)
{
	int level = line_level(s);

	if (level != s->irq_level) {
		s->irq_level = level;
		irq_set(&s->irq, level);
	}
}

static void rx_push(struct serial *s, uint8_t c)
{
	if (s->rx_count < SERIAL_FIFO_SIZE)
		s->rx[(s->rx_head + s->rx_count++) % SERIAL_FIFO_SIZE] = c;
}

static void transmit(struct serial *s, uint8_t c)
{
	if (s->mcr & MCR_LOOP) {
		rx_push(s, c);
		return;
	}
	if (!s->first_tx_ns)
		s->first_tx_ns = now_ns();
	s->tx_bytes++;
	if (s->out_fd >= 0) {
		ssize_t r;

		do {
			r = write(s->out_fd, &c, 1);
		} while (r < 0 && errno == EINTR);
	}
}

static void serial_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct serial *s = opaque;
	uint8_t v = 0xff;

	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RX:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
		} else {
			v = 0;
			if (s->rx_count) {
				v = s->rx[s->rx_head];
				s->rx_head = (s->rx_head + 1) % SERIAL_FIFO_SIZE;
				s->rx_count--;
			}
		}
		break;
	case UART_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case UART_IIR:
		v = iir(s);
		/* Reading IIR while it reports THR-empty acknowledges that interrupt. */
		if ((v & 0x0f) == IIR_THRI)
			s->thr_empty_pending = 0;
		break;
	case UART_LCR: v = s->lcr; break;
	case UART_MCR: v = s->mcr; break;
	case UART_LSR: v = LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0); break;
	case UART_MSR:
		if (s->mcr & MCR_LOOP) /* DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD */
			v = (uint8_t)(((s->mcr & 0x01) << 5) | ((s->mcr & 0x02) << 3) |
				      ((s->mcr & 0x04) << 4) | ((s->mcr & 0x08) << 4));
		else
			v = 0xb0; /* DCD, DSR, CTS: a cable with someone on the other end */
		break;
	case UART_SCR: v = s->scr; break;
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	memset(data, 0, len);
	*(uint8_t *)data = v;
}

static void serial_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct serial *s = opaque;
	uint8_t v = *(const uint8_t *)data;

	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_TX:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
		} else {
			transmit(s, v);
			s->thr_empty_pending = 1;
		}
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			/* Enabling THRI with an empty THR raises the interrupt at once. */
			if ((v & IER_THRI) && !(s->ier & IER_THRI))
				s->thr_empty_pending = 1;
			s->ier = v & 0x0f;
		}
		break;
	case UART_FCR:
		s->fcr = v & 0xc9;
		if (v & FCR_CLEAR_RX)
			s->rx_head = s->rx_count = 0;
		break;
	case UART_LCR: s->lcr = v; break;
	case UART_MCR: s->mcr = v & 0x1f; break;
	case UART_SCR: s->scr = v; break;
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

const struct io_ops serial_ops = {
	.read = serial_read,
	.write = serial_write,
};

void serial_init(struct serial *s, const struct irq_line *irq, int out_fd)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->irq = *irq;
	s->out_fd = out_fd;
	s->mcr = 0x08;
}

size_t serial_push_input(struct serial *s, const uint8_t *buf, size_t n)
{
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < n && s->rx_count < SERIAL_FIFO_SIZE; i++)
		rx_push(s, buf[i]);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return i;
}

/*
 * The guest-visible state: registers, the interrupt owed and the receive FIFO as it sits in
 * the ring. Not the output fd, the IRQ route or the counters: those belong to the new process.
 */
struct serial_regs {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	uint8_t thr_empty_pending;	/* 0 or 1 */
	uint8_t irq_level;		/* 0 or 1, must agree with the registers */
	uint8_t rx_head;		/* < SERIAL_FIFO_SIZE */
	uint8_t rx_count;		/* <= SERIAL_FIFO_SIZE */
	uint8_t pad[5];
	uint8_t rx[SERIAL_FIFO_SIZE];
};
_Static_assert(sizeof(struct serial_regs) == 16 + SERIAL_FIFO_SIZE, "serial_regs layout");

static int serial_save(void *dev, const struct dev_state_out *o)
{
	struct serial *s = dev;
	struct serial_regs r = { 0 };

	pthread_mutex_lock(&s->lock);
	r.ier = s->ier;
	r.lcr = s->lcr;
	r.mcr = s->mcr;
	r.scr = s->scr;
	r.dll = s->dll;
	r.dlm = s->dlm;
	r.fcr = s->fcr;
	r.thr_empty_pending = (uint8_t)!!s->thr_empty_pending;
	r.irq_level = (uint8_t)!!s->irq_level;
	r.rx_head = (uint8_t)s->rx_head;
	r.rx_count = (uint8_t)s->rx_count;
	memcpy(r.rx, s->rx, sizeof(r.rx));
	pthread_mutex_unlock(&s->lock);
	return dev_put(o, "regs", &r, sizeof(r));
}

/* Name the first value no guest could have produced through the registers, or NULL. */
static const char *serial_regs_bad(const struct serial_regs *r, unsigned int *val)
{
	struct serial t = { 0 };

#define BAD_IF(cond, field)                     \
	do {                                    \
		if (cond) {                     \
			*val = r->field;        \
			return #field;          \
		}                               \
	} while (0)
	BAD_IF(r->ier & ~0x0f, ier);
	BAD_IF(r->mcr & ~0x1f, mcr);
	BAD_IF(r->fcr & ~0xc9, fcr);
	BAD_IF(r->thr_empty_pending > 1, thr_empty_pending);
	BAD_IF(r->irq_level > 1, irq_level);
	BAD_IF(r->rx_head >= SERIAL_FIFO_SIZE, rx_head);
	BAD_IF(r->rx_count > SERIAL_FIFO_SIZE, rx_count);
	for (size_t i = 0; i < sizeof(r->pad); i++) {
		if (r->pad[i]) {
			*val = r->pad[i];
			return "pad";
		}
	}
	/* The saver drove the line after every access, so the two must agree. */
	t.ier = r->ier;
	t.mcr = r->mcr;
	t.fcr = r->fcr;
	t.thr_empty_pending = r->thr_empty_pending;
	t.rx_count = r->rx_count;
	BAD_IF(line_level(&t) != r->irq_level, irq_level);
#undef BAD_IF
	return NULL;
}

static int serial_load(void *dev, const struct dev_state_in *in)
{
	struct serial *s = dev;
	struct serial_regs r;
	const char *bad;
	unsigned int val;
	int ret;

	ret = dev_get(in, "regs", &r, sizeof(r));
	if (ret)
		return ret;
	bad = serial_regs_bad(&r, &val);
	if (bad) {
		pr_err("serial: state: %s %u is out of range or disagrees with the registers", bad,
		       val);
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	s->ier = r.ier;
	s->lcr = r.lcr;
	s->mcr = r.mcr;
	s->scr = r.scr;
	s->dll = r.dll;
	s->dlm = r.dlm;
	s->fcr = r.fcr;
	s->thr_empty_pending = r.thr_empty_pending;
	s->rx_head = r.rx_head;
	s->rx_count = r.rx_count;
	memcpy(s->rx, r.rx, sizeof(s->rx));
	/* Drive the line even when the cached level agrees: the new route starts from nothing. */
	s->irq_level = line_level(s);
	irq_set(&s->irq, s->irq_level);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* No quiesce or resume: the UART only acts on vCPU exits and serial_push_input. */
const struct dev_ops serial_dev_ops = {
	.save = serial_save,
	.load = serial_load,
};
