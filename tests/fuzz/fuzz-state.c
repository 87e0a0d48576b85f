/*
 * libFuzzer target for the state FDT decoder (migrate/state.c): any input is refused or
 * decodes into states that encode again, and whose encoding decodes and encodes to the very
 * same bytes; the decoded machine matches itself. Random bytes rarely pass fdt_check_full, so
 * the input is also applied as byte edits (be16 offset, value) to a valid two-vCPU state.
 *
 *   sh tests/fuzz/run.sh    (builds every tests/fuzz/fuzz-*.c)
 */
// fuzz-sources: migrate/state.c vmm/log.c
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/state.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *valid;
static size_t valid_len;

static void make_valid(void)
{
	struct mig_machine m = {
		.nr_vcpus = 2, .ram_size = 1 << 24, .nr_nodes = 2,
		.node_size = { 1 << 23, 1 << 23 },
		.nr_regions = 2, .regions = { { 0, 1 << 23, 0 }, { 1 << 23, 1 << 23, 1 } },
	};
	struct kvm_vcpu_state *v = calloc(2, sizeof(*v));
	struct kvm_vm_state vm = { .pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE,
				   .ioapic.chip_id = KVM_IRQCHIP_IOAPIC };

	if (!v)
		abort();
	for (int i = 0; i < 2; i++) {
		v[i].ncpuid = 2;
		v[i].nmsrs = 3;
		v[i].xsave_size = 64;
		v[i].xcrs.nr_xcrs = 1;
		v[i].has_sregs2 = i;
	}
	if (mig_state_encode(&m, v, &vm, NULL, 0, &valid, &valid_len))
		abort();
	free(v);
}

static void check(const uint8_t *data, size_t size)
{
	struct mig_state s, again;
	void *blob, *blob2;
	size_t len, len2;
	int ret;

	ret = mig_state_decode(data, size, &s);
	if (ret) {
		if (ret != -EINVAL && ret != -EPROTO && ret != -ENOMEM)
			abort();
		return;
	}
	if (mig_machine_check(&s.machine, &s.machine) ||
	    mig_state_encode(&s.machine, s.vcpus, &s.vm, NULL, 0, &blob, &len))
		abort();
	if (mig_state_decode(blob, len, &again) ||
	    mig_state_encode(&again.machine, again.vcpus, &again.vm, NULL, 0, &blob2, &len2))
		abort();
	if (len != len2 || memcmp(blob, blob2, len))
		abort();
	free(blob);
	free(blob2);
	mig_state_free(&again);
	mig_state_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *edited;

	log_level = -1;
	if (!valid)
		make_valid();
	check(data, size);
	edited = malloc(valid_len);
	if (!edited)
		return 0;
	memcpy(edited, valid, valid_len);
	for (size_t i = 0; i + 3 <= size; i += 3)
		edited[((size_t)data[i] << 8 | data[i + 1]) % valid_len] = data[i + 2];
	check(edited, valid_len);
	free(edited);
	return 0;
}
