/*
 * A small AML (ACPI Machine Language) writer for the DSDT. It writes into a caller buffer of
 * fixed capacity; the first error (-E2BIG when out of room, -EINVAL for a bad name or misuse) is
 * sticky in a->err, later calls do nothing, and aml_finish() returns it. Constructs whose length
 * is only known at their end (Scope, Device, Package, Buffer) are opened with *_begin() and closed
 * with aml_end(): the body is written first and moved up once to make room for the PkgLength.
 *
 *   aml_scope_begin(a, "\\_SB");
 *     aml_device_begin(a, "COM1");
 *       aml_name_eisaid(a, "_HID", "PNP0501");
 *       aml_name(a, "_CRS");
 *       aml_restemplate_begin(a); aml_io(a, 0x3f8, 8); aml_irq(a, 4); aml_restemplate_end(a);
 *     aml_end(a);
 *   aml_end(a);
 */
#ifndef KUMO_AML_H
#define KUMO_AML_H

#include <stddef.h>
#include <stdint.h>

#define AML_MAX_DEPTH 16
#define AML_PKGLEN_MAX 0x0FFFFFFFu /* 28 bits */

struct aml {
	uint8_t *buf;
	size_t len, cap;
	int err;
	unsigned int depth;
	struct {
		size_t at;	/* where the PkgLength goes */
		int kind;
	} open[AML_MAX_DEPTH];
};

void aml_init(struct aml *a, void *buf, size_t cap);
/* Returns the byte count written, or the sticky error (also -EINVAL if a construct is open). */
long aml_finish(struct aml *a);

/* Encodes a PkgLength (the value counts its own bytes); returns 1..4, or 0 if too large. */
unsigned int aml_pkglen_encode(uint32_t value, uint8_t out[4]);
/* Compressed EISA id ("PNP0A08") as the 32-bit value AML carries; 0 when malformed. */
uint32_t aml_eisaid_value(const char *id);

void aml_byte(struct aml *a, uint8_t b);
void aml_bytes(struct aml *a, const void *p, size_t n);

/* A NameString: "\\_SB.PCI0", "^FOO", "_HID"; segments shorter than 4 are padded with '_'. */
void aml_namestring(struct aml *a, const char *path);
/* Zero, One, Ones or the shortest of Byte/Word/DWord/QWord Const. */
void aml_integer(struct aml *a, uint64_t v);
void aml_string(struct aml *a, const char *s);
void aml_eisaid(struct aml *a, const char *id);

/* Name(name, ...): the next object written is the value. */
void aml_name(struct aml *a, const char *name);
void aml_name_integer(struct aml *a, const char *name, uint64_t v);
void aml_name_string(struct aml *a, const char *name, const char *s);
void aml_name_eisaid(struct aml *a, const char *name, const char *id);

void aml_scope_begin(struct aml *a, const char *name);
void aml_device_begin(struct aml *a, const char *name);
/* Method(name, nargs, NotSerialized); its body is raw AML written by the caller. */
void aml_method_begin(struct aml *a, const char *name, unsigned int nargs);
void aml_package_begin(struct aml *a, unsigned int nelems);
/* Buffer(){...}: the BufferSize is computed at aml_end(). */
void aml_buffer_begin(struct aml *a);
/* Closes the innermost open construct. */
void aml_end(struct aml *a);
void aml_buffer(struct aml *a, const void *data, size_t n);
/* Return (integer) inside a method. */
void aml_return_integer(struct aml *a, uint64_t v);

/* ResourceTemplate(): a Buffer of resource descriptors closed by an EndTag with its checksum. */
void aml_restemplate_begin(struct aml *a);
void aml_restemplate_end(struct aml *a);

/* IO(Decode16, base, base, 1, len). */
void aml_io(struct aml *a, uint16_t base, uint8_t len);
/* IRQNoFlags(){irq}: ISA IRQ, edge, active high, exclusive. */
void aml_irq(struct aml *a, unsigned int irq);

#define AML_INT_LEVEL (1u << 0)
#define AML_INT_ACTIVE_LOW (1u << 1)
#define AML_INT_SHARED (1u << 2)
/* Interrupt(ResourceConsumer, ...){gsi}: extended interrupt descriptor. */
void aml_interrupt(struct aml *a, unsigned int flags, uint32_t gsi);

/* Address space descriptors of a producer (a bridge window): MinFixed, MaxFixed, PosDecode. */
void aml_word_bus_number(struct aml *a, uint16_t min, uint16_t max);
void aml_word_io(struct aml *a, uint16_t min, uint16_t max);
#define AML_MEM_NONCACHEABLE 0
#define AML_MEM_CACHEABLE 1
#define AML_MEM_WRITE_COMBINING 2
#define AML_MEM_PREFETCHABLE 3
void aml_dword_memory(struct aml *a, unsigned int cache, uint32_t min, uint32_t max);
void aml_qword_memory(struct aml *a, unsigned int cache, uint64_t min, uint64_t max);
/* Memory32Fixed(ReadWrite, base, len): a consumed range, e.g. a motherboard reservation. */
void aml_memory32_fixed(struct aml *a, uint32_t base, uint32_t len);

#endif
