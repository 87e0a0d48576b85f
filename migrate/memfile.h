/*
 * Guest RAM as a sparse raw file beside the state FDT (docs/snapshot.md): the regions one
 * after another in mm_for_each_region() order, so the file is exactly ram_size bytes; pages
 * that are holes in the memfd (never touched, released, ballooned) or read as zeros are holes
 * in the file and cost no write.
 */
#ifndef KUMO_MIGRATE_MEMFILE_H
#define KUMO_MIGRATE_MEMFILE_H

#include <stdint.h>

struct guest_mem;

/* Write m's RAM into fd (truncated first). Returns 0 or -errno (named in one line). */
int mig_memfile_write(const struct guest_mem *m, int fd) __attribute__((warn_unused_result));

/*
 * Load fd into m, which must be fresh (all zeros: only the file's data extents are copied).
 * A file whose size is not m's RAM size is refused with -EINVAL and one line, before any
 * byte is copied. Returns 0 or -errno.
 */
int mig_memfile_read(const struct guest_mem *m, int fd) __attribute__((warn_unused_result));

#endif
