/*
 * virtio-balloon (virtio 1.2 5.5): inflate/deflate with 4 KiB PFNs, the statistics queue,
 * free page hinting (cmd id protocol) and free page reporting. Pages the guest gives back are
 * punched out of the guest memfd (mm_release_range) and tracked in a page-state map, except
 * when PAGE_POISON is negotiated with a non-zero poison_val: then a hole would read back as
 * zeros instead of the poison, so those pages are only marked, never released.
 *
 * Queues are numbered by the NEGOTIATED features: inflateq 0, deflateq 1, then statsq (if
 * STATS_VQ), free_page_vq (if FREE_PAGE_HINT), reporting_vq (if REPORTING), each taking the
 * next index. The device offers as many queues as its options can need.
 */
#ifndef KUMO_VIRTIO_BALLOON_H
#define KUMO_VIRTIO_BALLOON_H

#include <stddef.h>
#include <stdint.h>

struct dev_env;
struct guest_mem;
struct mm_pagestate;
struct virtio_dev;

#define VIRTIO_ID_BALLOON 5
#define VIRTIO_BALLOON_PCI_CLASS 0x00ff00	/* PCI_CLASS_OTHERS, as QEMU */

#define VIRTIO_BALLOON_F_MUST_TELL_HOST 0
#define VIRTIO_BALLOON_F_STATS_VQ 1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define VIRTIO_BALLOON_F_FREE_PAGE_HINT 3
#define VIRTIO_BALLOON_F_PAGE_POISON 4
#define VIRTIO_BALLOON_F_REPORTING 5

#define VIRTIO_BALLOON_QUEUE_SIZE 128
#define VIRTIO_BALLOON_CONFIG_SIZE 16	/* num_pages, actual, free_page_hint_cmd_id, poison_val */
#define VIRTIO_BALLOON_PFN_SHIFT 12

#define VIRTIO_BALLOON_CMD_ID_STOP 0
#define VIRTIO_BALLOON_CMD_ID_DONE 1
#define VIRTIO_BALLOON_CMD_ID_MIN 0x80000000u	/* our ids count up from here (as QEMU) */

/* Statistics tags (virtio 1.2 5.5.6.3, and the later ones Linux sends). */
#define VIRTIO_BALLOON_S_SWAP_IN 0
#define VIRTIO_BALLOON_S_SWAP_OUT 1
#define VIRTIO_BALLOON_S_MAJFLT 2
#define VIRTIO_BALLOON_S_MINFLT 3
#define VIRTIO_BALLOON_S_MEMFREE 4
#define VIRTIO_BALLOON_S_MEMTOT 5
#define VIRTIO_BALLOON_S_AVAIL 6
#define VIRTIO_BALLOON_S_CACHES 7
#define VIRTIO_BALLOON_S_HTLB_PGALLOC 8
#define VIRTIO_BALLOON_S_HTLB_PGFAIL 9
#define VIRTIO_BALLOON_S_NR_KNOWN 10
#define BALLOON_STAT_ENTRY_SIZE 10	/* le16 tag, le64 value, packed */
#define BALLOON_STATS_MAX_TAGS 64	/* tags at or above are counted and dropped */

/* Queue roles; virtio_balloon_queue() maps them to indices. */
enum balloon_queue {
	BALLOON_Q_INFLATE, BALLOON_Q_DEFLATE, BALLOON_Q_STATS, BALLOON_Q_FREE_PAGE,
	BALLOON_Q_REPORTING, BALLOON_Q_NR,
};

struct balloon_options {
	unsigned int stats_period;	/* seconds between stats refreshes; 0 = on request only */
	int stats;			/* offer STATS_VQ (also implied by stats_period) */
	int deflate_on_oom;
	int free_page_reporting;
	int free_page_hint;
	int page_poison;
};

struct balloon_stats {
	uint64_t updated_ns;		/* CLOCK_MONOTONIC of the last buffer; 0 = none yet */
	uint64_t updates;		/* buffers received */
	uint64_t valid;			/* bit t: val[t] was sent at least once */
	uint64_t val[BALLOON_STATS_MAX_TAGS];	/* latest value by tag (unknown tags kept) */
	uint64_t malformed;		/* buffers whose length was not a multiple of 10 */
	uint64_t dropped_tags;		/* entries with a tag >= BALLOON_STATS_MAX_TAGS */
};

/* Counters of what the guest sent, for `stats` and tests. */
struct balloon_counters {
	uint64_t inflated, deflated;		/* pages accepted */
	uint64_t bad_pfn, duplicate, past_target, not_ballooned;	/* pages ignored */
	uint64_t reported_bytes, hinted_bytes;
	uint64_t release_errors;
};

/*
 * Create the device (not yet on a transport). m is the guest RAM it may release pages of
 * (the same as env->mem, writable). 0 or -errno.
 */
int virtio_balloon_create(const struct dev_env *env, struct guest_mem *m,
			  const struct balloon_options *o, struct virtio_dev **out)
	__attribute__((warn_unused_result));
void virtio_balloon_destroy(struct virtio_dev *vdev);

/* Ask the guest to hold `bytes` (rounded down to 4 KiB pages) in its balloon. 0 or -ERANGE. */
int virtio_balloon_set_target(struct virtio_dev *vdev, uint64_t bytes);
/* What the driver says it holds (config `actual`) and the current target, in bytes. */
void virtio_balloon_get(struct virtio_dev *vdev, uint64_t *actual_bytes, uint64_t *target_bytes);

/* The latest statistics. 0, or -ENODEV when STATS_VQ was not negotiated. */
int virtio_balloon_stats(struct virtio_dev *vdev, struct balloon_stats *out);
/*
 * Ask the guest for fresh statistics: the buffer it left with us is returned and it sends a
 * new one (updated_ns moves). 0, or -ENODEV when STATS_VQ was not negotiated / not running.
 */
int virtio_balloon_request_stats(struct virtio_dev *vdev);

/*
 * Free page hinting. start: publish a new cmd id (config interrupt) and return it, or 0 when
 * FREE_PAGE_HINT was not negotiated. stop: tell the guest to stop hinting (cmd id STOP).
 * done: cmd id DONE, the guest takes its hinted pages back; they return to PRESENT in the map.
 * Hinted pages are only recorded (MM_PAGE_HINTED), never released: Linux may hand them back
 * to its allocator under memory pressure before DONE, so only a user that also tracks dirty
 * pages (migration) may act on them.
 */
uint32_t virtio_balloon_start_hinting(struct virtio_dev *vdev);
void virtio_balloon_stop_hinting(struct virtio_dev *vdev);
void virtio_balloon_hinting_done(struct virtio_dev *vdev);
/* fn(opaque, gpa, len) for each hinted run; returns fn's first non-zero value, else 0. */
int virtio_balloon_hinted_ranges(struct virtio_dev *vdev,
				 int (*fn)(void *opaque, uint64_t gpa, uint64_t len), void *opaque);

/* The device's page-state map (owned by the device) and its counters. */
struct mm_pagestate *virtio_balloon_pagestate(struct virtio_dev *vdev);
void virtio_balloon_counters(struct virtio_dev *vdev, struct balloon_counters *out);
/* Queue index of a role under the negotiated features, or -1 if that queue does not exist. */
int virtio_balloon_queue(struct virtio_dev *vdev, enum balloon_queue role);

/*
 * The guest-facing parsers, exposed for tests and fuzzing (normally run by the I/O thread).
 * buf holds what the driver put in one inflate/deflate buffer (le32 PFNs; a trailing partial
 * PFN is ignored). Returns the number of pages accepted.
 */
unsigned int balloon_inflate_pfns(struct virtio_dev *vdev, const void *buf, size_t len);
unsigned int balloon_deflate_pfns(struct virtio_dev *vdev, const void *buf, size_t len);
/*
 * Fold one stats buffer into *st: whole 10-byte entries are applied, a trailing partial one
 * is ignored and counts as malformed. Returns the entries applied.
 */
unsigned int balloon_parse_stats(const void *buf, size_t len, struct balloon_stats *st);

#endif
