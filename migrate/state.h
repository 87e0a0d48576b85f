/*
 * The machine state as one flattened device tree (docs/snapshot.md): what must match the
 * config to load it (/machine), each vCPU's KVM state (/vcpus/vcpu@N) and the VM's (/vm).
 * Pure data in, a blob out and back: nothing here touches KVM.
 */
#ifndef KUMO_MIGRATE_STATE_H
#define KUMO_MIGRATE_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "mm/mem.h"
#include "vmm/kvm-state.h"

#define MIG_STATE_VERSION 1
#define MIG_MAX_VCPUS 1024	/* kumo run --cpus' limit */

/* What a state needs of the machine it is loaded into: checked against the config. */
struct mig_machine {
	uint32_t nr_vcpus;
	uint64_t ram_size;
	uint32_t nr_nodes;
	uint64_t node_size[MM_MAX_NODES];
	uint32_t nr_regions;
	struct mig_region {
		uint64_t gpa, size;
		uint32_t node;
	} regions[MM_MAX_REGIONS];
};

/* A decoded state; vcpus[] has machine.nr_vcpus entries (free with mig_state_free()). */
struct mig_state {
	struct mig_machine machine;
	struct kvm_vm_state vm;
	struct kvm_vcpu_state *vcpus;
	void *fdt;		/* the checked blob, for mig_state_load_devices() */
};

struct dev;

/* The description of m's layout (a layout without memory will do) with nr_vcpus vCPUs. */
void mig_machine_describe(struct mig_machine *d, const struct guest_mem *m, uint32_t nr_vcpus);

/*
 * 0 when the saved machine is the one the config builds, else -EINVAL with one line naming
 * the first difference ("vCPUs: the state has 2, the config 4").
 */
int mig_machine_check(const struct mig_machine *saved, const struct mig_machine *config);

/*
 * The blob for machine m (m->nr_vcpus states in vcpus[]) and vm: malloc'ed into *blob, its
 * size in *size. 0, -EINVAL for a state that would not decode, or -ENOMEM.
 */
int mig_state_encode(const struct mig_machine *m, const struct kvm_vcpu_state *vcpus,
		     const struct kvm_vm_state *vm, const struct dev *devs, unsigned int ndevs,
		     void **blob, size_t *size) __attribute__((warn_unused_result));

/*
 * Decode and check size bytes: fdt_check_full, the version (-EPROTO for another one), then
 * every node and property (presence, exact length, counts in bounds): -EINVAL with one line
 * naming the node and property. -ENOMEM. On success free out with mig_state_free().
 */
int mig_state_decode(const void *blob, size_t size, struct mig_state *out)
	__attribute__((warn_unused_result));
void mig_state_free(struct mig_state *s);

/*
 * Load /devices into devs (the machine the config built, quiesced), in list order through
 * each device's load op. The saved devices must be exactly the config's, by name: -EINVAL
 * naming the first one missing on either side. A device's refusal is its -errno.
 */
int mig_state_load_devices(const struct mig_state *s, const struct dev *devs, unsigned int ndevs)
	__attribute__((warn_unused_result));

#endif
