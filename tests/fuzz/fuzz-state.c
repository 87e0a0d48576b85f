/*
 * libFuzzer target for the state FDT decoder (migrate/state.c): any input is refused or
 * decodes into states that encode again, and whose encoding decodes and encodes to the very
 * same bytes; the decoded machine matches itself. Random bytes rarely pass fdt_check_full, so
 * the input is also applied as byte edits (be16 offset, value) to a valid two-vCPU state with
 * two device nodes; a decoded state's /devices is loaded into two probe devices that read
 * their properties with exact and variable sizes (the accessors devices get).
 *
 *   sh tests/fuzz/run.sh    (builds every tests/fuzz/fuzz-*.c)
 */
// fuzz-sources: migrate/state.c vmm/log.c
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/dev.h"
#include "migrate/state.h"
#include "vmm/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *valid;
static size_t valid_len;

/* A probe device: "regs" of exactly 16 bytes and "runs" of up to 256 bytes. */
struct probe {
	uint8_t regs[16];
	uint8_t runs[256];
	size_t nruns;
};

static int probe_save(void *dev, const struct dev_state_out *out)
{
	struct probe *p = dev;
	int ret = dev_put(out, "regs", p->regs, sizeof(p->regs));

	return ret ? ret : dev_put(out, "runs", p->runs, p->nruns);
}

static int probe_load(void *dev, const struct dev_state_in *in)
{
	struct probe *p = dev;
	const void *v;
	size_t len;
	int ret = dev_get(in, "regs", p->regs, sizeof(p->regs));

	if (!ret)
		ret = in->get_var(in->opaque, "runs", &v, &len, sizeof(p->runs));
	if (ret)
		return ret;
	if (len > sizeof(p->runs))
		abort();	/* the accessor let more than max through */
	memcpy(p->runs, v, len);	/* reads every byte it was given */
	p->nruns = len;
	return 0;
}

static const struct dev_ops probe_ops = { .save = probe_save, .load = probe_load };
static struct probe probes[2] = { { .nruns = 24 }, { .nruns = 0 } };
static const struct dev devs[2] = { { "serial@3f8", &probe_ops, &probes[0] },
				    { "virtio-blk@01", &probe_ops, &probes[1] } };

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
	if (mig_state_encode(&m, v, &vm, devs, 2, &valid, &valid_len))
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
	ret = mig_state_load_devices(&s, devs, 2);
	if (ret && ret != -EINVAL)
		abort();
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
