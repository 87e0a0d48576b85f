/*
 * Split migration (docs/split-migration.md, paper 003): the VM's state and at most main_mem of
 * its data pages go to a main host; the rest of its data pages go to sub-hosts' page stores
 * (migrate/memserver.h), 64 pages at a time round-robin (with replicas=2 each of them on two
 * distinct sub-hosts: the stripe's own and the next one); free pages (memfd holes: never
 * touched, ballooned, reported; and all-zero pages) go nowhere. On the main host the VM runs at
 * once: a fault on a sub-host's page is paged in from that sub-host (userfaultfd, migrate/lazy.h,
 * on demand only; from the second owner when the first is gone, does not answer or lacks the
 * page; the fault's own page on an urgent connection, its neighbours on a bulk one), a fault
 * on a free page is a zero page with no network. A page-location map (free, main, sub-host
 * N and its replica's sub-host) with counters is kept on both sides.
 */
#ifndef KUMO_MIGRATE_SPLIT_H
#define KUMO_MIGRATE_SPLIT_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;
struct mig_source_ops;
struct mig_dest_ops;
struct ms_client;
struct mig_split_dest;

#define MIG_SPLIT_SUBS_MAX 8
#define MIG_SPLIT_ADDR_MAX 112		/* a sub-host's address as the main host reaches it */
#define MIG_SPLIT_STRIPE 64		/* pages that go to one sub-host before the next */
#define MIG_HELLO_SPLIT 1		/* struct mig_hello's flags: a split migration follows */
#define MIG_SPLIT_REPLICAS_MAX 2	/* copies of a sub-host page, each on its own sub-host */
#define MIG_SPLIT_GET_TIMEOUT_S 10	/* main host: a sub-host silent this long is gone */

/*
 * Where a page is: the map holds one byte per guest page, in guest-physical order; with
 * replicas a second byte per page names the replica's owner (its index + 1; 0: none).
 */
enum { MIG_LOC_FREE = 0, MIG_LOC_MAIN = 1, MIG_LOC_SUB = 2 /* + sub-host index */ };

/* The MIG_SPLIT chunk: this, nr_subs addresses (NUL-padded), nr_runs struct mig_split_run. */
struct mig_split_hdr {
	uint64_t vm_id;
	uint32_t nr_subs;
	uint32_t nr_runs;
	uint64_t budget;	/* the main host's resident guest RAM at most, bytes (main_mem):
				   cold pages are paged out to the sub-hosts to stay within it;
				   0: no page-out */
};

struct mig_split_run {
	uint64_t gpa, len;
	uint32_t sub;		/* the first owner's sub-host index */
	uint32_t replica;	/* the second owner's index + 1, another sub-host; 0: none (so a
				   map of one copy reads as the former u64 sub) */
};

struct mig_split_params {
	uint64_t main_mem;	/* data bytes that may go to the main host */
	int tracking;		/* 1: free pages go nowhere; 0: every page is sent (to compare) */
	unsigned int nr_subs;
	const char *sub_addr[MIG_SPLIT_SUBS_MAX];	/* as the main host reaches them */
	struct ms_client *sub[MIG_SPLIT_SUBS_MAX];	/* opened by the caller with vm_id */
	uint64_t vm_id;
	unsigned int replicas;	/* copies of each sub-host page: 0 or 1 one, 2 two (needs at
				   least 2 sub-hosts) */
	int pageout;		/* 1: the main host keeps its resident guest RAM within main_mem
				   by paging cold pages out to the sub-hosts */
};

struct mig_split_counts {
	uint64_t pages_free, pages_main;
	uint64_t pages_sub[MIG_SPLIT_SUBS_MAX];	/* copies on each sub-host (on the main host:
						   not paged in yet) */
	uint64_t pages_remote;	/* distinct pages on the sub-hosts (= their sum with 1 replica) */
	uint64_t pages_in;	/* main host: pages paged in from sub-hosts */
	uint64_t pages_in_replica;	/* main host: of those, served by the second owner */
	uint64_t bytes_in;	/* main host: bytes exchanged with the sub-hosts for that */
	uint64_t errors;	/* main host: page-ins that failed (on both owners) */
	uint64_t owner_failures;	/* main host: page-ins an owner failed (then the other) */
	uint64_t pages_in_bulk;	/* main host: of pages_in, fault neighbours on the bulk channel */
	uint64_t pages_out;	/* main host: pages paged out to the sub-hosts (stored, acked) */
	uint64_t bytes_out;	/* main host: bytes sent and received for that (all copies) */
	uint64_t pageout_refused;	/* main host: pages a sub-host did not store (or failed) */
	uint64_t budget;	/* main host: the resident budget from the source, bytes (0: none) */
	unsigned int subs_gone;	/* main host: sub-hosts dropped (closed, silent, bad replies) */
	unsigned int bulk_gone;	/* main host: bulk channels closed (their pages: faults alone) */
	unsigned int nr_subs;
	unsigned int replicas;
};

struct mig_split_result {
	struct mig_split_counts c;
	uint64_t bytes_main;	/* on the main link, chunk headers, map and state included */
	uint64_t bytes_sub;	/* to the sub-hosts, chunk headers included */
	uint64_t total_ns;	/* hello to the main host's ack; the VM is paused from the
				   first page sent (this cut is not live) */
};

/* Are p's sub-hosts and replicas consistent? 0, or -EINVAL with one line in err. */
int mig_split_params_check(const struct mig_split_params *p, char *err, size_t errlen);

/*
 * Split-migrate m (the VM reached through ops: stop, state, resume) over fd to the main host
 * and p->sub[] to the sub-hosts. 0 once the main host runs the VM (the caller stops its own);
 * on a failure before that the VM is resumed and -errno returned with one line in err.
 */
int mig_split_source_run(struct guest_mem *m, uint32_t nr_vcpus, int fd,
			 const struct mig_source_ops *ops, void *vm,
			 const struct mig_split_params *p, struct mig_split_result *res, char *err,
			 size_t errlen);

/* How the main host reaches a sub-host: a connected fd or -errno (err). NULL: mig_connect. */
typedef int (*mig_split_connect_fn)(void *opaque, const char *addr, char *err, size_t errlen);

/*
 * The main host's side: receive the VM over fd into m (fresh), connect to the sub-hosts, serve
 * their pages on demand through ops->lazy with a page source that pages in from them, load
 * the state, start. 0 once it runs, with *out the page source (keep it until the lazy memory
 * is stopped, then mig_split_dest_free()); -errno with one line in err otherwise (*out may be
 * set: stop the lazy memory first, then free it).
 */
int mig_split_dest_run(struct guest_mem *m, uint32_t nr_vcpus, int fd,
		       const struct mig_dest_ops *ops, void *vm, mig_split_connect_fn connect,
		       void *opaque, struct mig_split_dest **out, char *err, size_t errlen);
/*
 * Does the stream on fd (connected, nothing read yet) start with a split migration's hello?
 * Peeks, reads nothing: 1 split, 0 another stream, -errno.
 */
int mig_split_peek(int fd);
void mig_split_dest_counts(struct mig_split_dest *d, struct mig_split_counts *c);
/*
 * The VM is gone from the main host (it ended, or moved on with all its memory): each sub-host
 * still reached drops the VM's pages (DROP of all of guest RAM, then SYNC; a failure only
 * logged). Like mig_split_dest_free(), only once the lazy memory is stopped.
 */
void mig_split_dest_forget(struct mig_split_dest *d);
void mig_split_dest_free(struct mig_split_dest *d);

#endif
