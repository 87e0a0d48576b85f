/* Host-side decompression of a bzImage payload (internal to vmm/boot.c). */
#ifndef KUMO_BOOT_DECOMPRESS_H
#define KUMO_BOOT_DECOMPRESS_H

#include <stddef.h>
#include <stdint.h>

/* Name of the compression the payload's magic announces ("gzip", "lz4", ...), or NULL. */
const char *boot_compression_name(const uint8_t *in, size_t len);

/*
 * Decompress a payload into a malloc'ed buffer of at most max_out bytes (*out, *out_len; the
 * caller frees *out). Returns 0, -EBADMSG (corrupt, truncated or unsupported compression),
 * -E2BIG (output would exceed max_out) or -ENOMEM.
 */
int boot_decompress(const uint8_t *in, size_t len, size_t max_out, uint8_t **out,
		    size_t *out_len) __attribute__((warn_unused_result));

#endif
