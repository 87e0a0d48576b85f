/*
 * migrate/state.c: the state FDT round-trips filled vCPU and VM states; every corruption
 * (bad magic, truncation, another version, a missing or mis-sized property, counts past the
 * structs' arrays, a vCPU count that disagrees) is refused with its error and one line naming
 * the node and property; the machine description is checked against a config.
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <libfdt.h>

#include "devices/dev.h"
#include "migrate/state.h"
#include "mm/mem.h"
#include "tests/harness.h"

#define M (1ULL << 20)
#define NVCPUS 2

static void fill(void *p, size_t len, uint32_t seed)
{
	uint8_t *b = p;

	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245 + 12345;
		b[i] = (uint8_t)(seed >> 16);
	}
}

/* vCPU 0 with sregs2 and 4 KiB of XSAVE, vCPU 1 with sregs and none; every byte set. */
static void vcpu_example(struct kvm_vcpu_state *s, uint32_t n)
{
	memset(s, 0, sizeof(*s));
	fill(s->cpuid, sizeof(s->cpuid), n + 1);
	s->ncpuid = 30 + n;
	s->tsc_khz = 2500000 + n;
	s->has_sregs2 = n == 0;
	if (s->has_sregs2)
		fill(&s->sregs2, sizeof(s->sregs2), n + 2);
	else
		fill(&s->sregs, sizeof(s->sregs), n + 2);
	fill(&s->regs, sizeof(s->regs), n + 3);
	fill(&s->fpu, sizeof(s->fpu), n + 4);
	s->xsave_size = n == 0 ? 4096 : 0;
	fill(s->xsave, s->xsave_size, n + 5);
	fill(&s->xcrs, sizeof(s->xcrs), n + 6);
	s->xcrs.nr_xcrs = 1;
	s->nmsrs = 40 + n;
	for (uint32_t i = 0; i < s->nmsrs; i++)
		s->msrs[i] = (struct kvm_msr_entry){ .index = 0xc0000080 + i,
						     .data = 0x8000000000000001ULL * i + n };
	fill(&s->events, sizeof(s->events), n + 7);
	s->mp_state.mp_state = KVM_MP_STATE_HALTED;
	fill(&s->lapic, sizeof(s->lapic), n + 8);
	fill(&s->debugregs, sizeof(s->debugregs), n + 9);
}

static void vm_example(struct kvm_vm_state *vm)
{
	fill(vm, sizeof(*vm), 99);
	vm->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
	vm->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
	vm->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
}

/* Two nodes, node 0 across the 32-bit hole: three regions. */
static int machine_example(struct mig_machine *d, uint64_t node1, uint32_t nr_vcpus)
{
	const struct mm_node_spec spec[2] = { { 3072 * M + 64 * M, -1 }, { node1, -1 } };
	struct guest_mem m;

	if (mm_layout_nodes(&m, spec, 2, 0))
		return -1;
	mig_machine_describe(d, &m, nr_vcpus);
	mm_free(&m);
	return 0;
}

struct example {
	struct mig_machine machine;
	struct kvm_vcpu_state vcpus[NVCPUS];
	struct kvm_vm_state vm;
	void *blob;
	size_t size;
};

static struct example *example_encoded(void)
{
	struct example *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	for (uint32_t i = 0; i < NVCPUS; i++)
		vcpu_example(&e->vcpus[i], i);
	vm_example(&e->vm);
	if (machine_example(&e->machine, 64 * M, NVCPUS) ||
	    mig_state_encode(&e->machine, e->vcpus, &e->vm, NULL, 0, &e->blob, &e->size)) {
		free(e);
		return NULL;
	}
	return e;
}

static void example_free(struct example *e)
{
	if (e)
		free(e->blob);
	free(e);
}

/* Decode with stderr captured into msg (what pr_err printed). */
static int decode_quiet(const void *blob, size_t size, struct mig_state *out, char *msg,
			size_t msg_len)
{
	FILE *tmp = tmpfile();
	int saved = dup(2), ret;
	size_t n;

	fflush(stderr);
	dup2(fileno(tmp), 2);
	ret = mig_state_decode(blob, size, out);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(msg, 1, msg_len - 1, tmp);
	msg[n] = 0;
	fclose(tmp);
	return ret;
}

static void test_round_trip(void)
{
	struct example *e = example_encoded();
	struct mig_state s;
	int nodes = 0, node;

	CHECK(e);
	CHECK_EQ(mig_state_decode(e->blob, e->size, &s), 0);
	CHECK_EQ(mig_machine_check(&s.machine, &e->machine), 0);
	CHECK_EQ(s.machine.nr_regions, 3);
	for (int i = 0; i < NVCPUS; i++)
		CHECK(kvm_vcpu_state_diff(&e->vcpus[i], &s.vcpus[i]) == NULL);
	CHECK(kvm_vm_state_diff(&e->vm, &s.vm) == NULL);
	CHECK(!memcmp(&e->vm, &s.vm, sizeof(s.vm)));	/* count_load_time too */
	mig_state_free(&s);
	/* Self-describing: the nodes are there by name, /devices waits for device state. */
	CHECK(fdt_path_offset(e->blob, "/devices") >= 0);
	CHECK(fdt_path_offset(e->blob, "/vcpus/vcpu@1") >= 0);
	fdt_for_each_subnode(node, e->blob, 0)
		nodes++;
	CHECK_EQ(nodes, 4);
	/* An unaligned copy decodes the same. */
	{
		uint8_t *odd = malloc(e->size + 1);

		CHECK(odd);
		memcpy(odd + 1, e->blob, e->size);
		CHECK_EQ(mig_state_decode(odd + 1, e->size, &s), 0);
		CHECK(kvm_vcpu_state_diff(&e->vcpus[1], &s.vcpus[1]) == NULL);
		mig_state_free(&s);
		free(odd);
	}
	example_free(e);
}

enum edit_op { DEL_PROP, SET_LEN, FILL_FF, SET_U32, DEL_NODE, ADD_NODE };

static const struct corruption {
	const char *what;
	const char *node;
	const char *prop;	/* or the node to add */
	enum edit_op op;
	uint32_t val;		/* SET_LEN's length, SET_U32's value */
	int err;
	const char *msg;
} corruptions[] = {
	{ "version 2", "/", "kumo,state-version", SET_U32, 2, -EPROTO, "version 2" },
	{ "no version", "/", "kumo,state-version", DEL_PROP, 0, -EINVAL, "kumo,state-version missing" },
	{ "version 8 bytes", "/", "kumo,state-version", SET_LEN, 8, -EINVAL, "kumo,state-version has 8 bytes" },
	{ "not kumo", "/", "compatible", SET_LEN, 4, -EINVAL, "compatible" },
	{ "no /machine", "/machine", NULL, DEL_NODE, 0, -EINVAL, "node /machine missing" },
	{ "no /vm", "/vm", NULL, DEL_NODE, 0, -EINVAL, "node /vm missing" },
	{ "no /vcpus", "/vcpus", NULL, DEL_NODE, 0, -EINVAL, "node /vcpus missing" },
	{ "no vcpu@1", "/vcpus/vcpu@1", NULL, DEL_NODE, 0, -EINVAL, "/vcpus: 1 nodes" },
	{ "extra vCPU", "/vcpus", "vcpu@7", ADD_NODE, 0, -EINVAL, "/vcpus: 3 nodes" },
	{ "vcpus 3", "/machine", "vcpus", SET_U32, 3, -EINVAL, "/machine says 3" },
	{ "vcpus 0", "/machine", "vcpus", SET_U32, 0, -EINVAL, "/machine: property vcpus" },
	{ "vcpus 2000", "/machine", "vcpus", SET_U32, 2000, -EINVAL, "/machine: property vcpus" },
	{ "ram-size", "/machine", "ram-size", SET_U32, 1, -EINVAL, "property ram-size has 4 bytes" },
	{ "regions 0", "/machine", "regions", SET_LEN, 0, -EINVAL, "property regions has 0 bytes" },
	{ "regions 33", "/machine", "regions", SET_LEN, 33 * 24, -EINVAL, "property regions" },
	{ "regions odd", "/machine", "regions", SET_LEN, 25, -EINVAL, "property regions" },
	{ "regions wrap", "/machine", "regions", FILL_FF, 72, -EINVAL, "property regions out of range" },
	{ "node-sizes 17", "/machine", "node-sizes", SET_LEN, 17 * 8, -EINVAL, "node-sizes" },
	{ "node-sizes sum", "/machine", "node-sizes", SET_LEN, 16, -EINVAL, "property ram-size out of range" },
	{ "no regs", "/vcpus/vcpu@1", "regs", DEL_PROP, 0, -EINVAL, "/vcpus/vcpu@1: property regs missing" },
	{ "no lapic", "/vcpus/vcpu@0", "lapic", DEL_PROP, 0, -EINVAL, "/vcpus/vcpu@0: property lapic missing" },
	{ "no sregs", "/vcpus/vcpu@1", "sregs", DEL_PROP, 0, -EINVAL, "sregs (or sregs2) missing" },
	{ "both sregs", "/vcpus/vcpu@0", "sregs", SET_LEN, sizeof(struct kvm_sregs), -EINVAL, "both sregs and sregs2" },
	{ "regs short", "/vcpus/vcpu@0", "regs", SET_LEN, sizeof(struct kvm_regs) - 1, -EINVAL, "vcpu@0: property regs has" },
	{ "lapic long", "/vcpus/vcpu@1", "lapic", SET_LEN, sizeof(struct kvm_lapic_state) + 8, -EINVAL, "property lapic has" },
	{ "sregs2 short", "/vcpus/vcpu@0", "sregs2", SET_LEN, sizeof(struct kvm_sregs), -EINVAL, "property sregs2 has" },
	{ "mp-state 8", "/vcpus/vcpu@0", "mp-state", SET_LEN, 8, -EINVAL, "property mp-state has 8" },
	{ "no tsc-khz", "/vcpus/vcpu@0", "tsc-khz", DEL_PROP, 0, -EINVAL, "property tsc-khz missing" },
	{ "257 MSRs", "/vcpus/vcpu@0", "msrs", SET_LEN, 257 * 12, -EINVAL, "property msrs has 3084 bytes" },
	{ "MSR split", "/vcpus/vcpu@0", "msrs", SET_LEN, 13, -EINVAL, "property msrs has 13" },
	{ "257 CPUID", "/vcpus/vcpu@1", "cpuid", SET_LEN, 257 * sizeof(struct kvm_cpuid_entry2), -EINVAL, "property cpuid" },
	{ "CPUID split", "/vcpus/vcpu@1", "cpuid", SET_LEN, 41, -EINVAL, "property cpuid has 41" },
	{ "XSAVE too big", "/vcpus/vcpu@0", "xsave", SET_LEN, KVM_STATE_XSAVE_MAX + 1, -EINVAL, "property xsave" },
	{ "XCRs count", "/vcpus/vcpu@0", "xcrs", FILL_FF, sizeof(struct kvm_xcrs), -EINVAL, "property xcrs: 4294967295 XCRs" },
	{ "no pit", "/vm", "pit", DEL_PROP, 0, -EINVAL, "/vm: property pit missing" },
	{ "clock short", "/vm", "clock", SET_LEN, 8, -EINVAL, "/vm: property clock has 8" },
	{ "chip id", "/vm", "ioapic", FILL_FF, sizeof(struct kvm_irqchip), -EINVAL, "property ioapic has chip id" },
};

/* The example with one edit; *blob is a fresh buffer (free it). */
static int corrupt(const struct example *e, const struct corruption *c, void **blob)
{
	size_t cap = e->size + 65536;
	void *b = malloc(cap);
	int node, ret = -1;

	*blob = b;
	if (!b || fdt_open_into(e->blob, b, (int)cap))
		return -1;
	node = fdt_path_offset(b, c->node);
	if (node < 0)
		return -1;
	switch (c->op) {
	case DEL_PROP:
		ret = fdt_delprop(b, node, c->prop);
		break;
	case SET_LEN:
	case FILL_FF: {
		uint8_t *v = calloc(1, c->val + 1);

		if (c->op == FILL_FF)
			memset(v, 0xff, c->val);
		ret = v ? fdt_setprop(b, node, c->prop, v, (int)c->val) : -1;
		free(v);
		break;
	}
	case SET_U32:
		ret = fdt_setprop_u32(b, node, c->prop, c->val);
		break;
	case DEL_NODE:
		ret = fdt_del_node(b, node);
		break;
	case ADD_NODE:
		ret = fdt_add_subnode(b, node, c->prop) < 0 ? -1 : 0;
		break;
	}
	return ret;
}

static void test_corruptions_refused(void)
{
	struct example *e = example_encoded();
	struct mig_state s;
	char msg[512];

	CHECK(e);
	for (size_t i = 0; i < sizeof(corruptions) / sizeof(corruptions[0]); i++) {
		const struct corruption *c = &corruptions[i];
		void *b;
		int ret;

		if (!c->msg)
			continue;
		if (corrupt(e, c, &b)) {
			fprintf(stderr, "  %s: could not make the corruption\n", c->what);
			free(b);
			CHECK(0);
		}
		ret = decode_quiet(b, fdt_totalsize(b), &s, msg, sizeof(msg));
		free(b);
		if (ret != c->err || !strstr(msg, c->msg) || strchr(msg, '\n') != msg + strlen(msg) - 1)
			fprintf(stderr, "  %s: got %d, message \"%s\"\n", c->what, ret, msg);
		CHECK_EQ(ret, c->err);
		CHECK(strstr(msg, c->msg));
		CHECK(strchr(msg, '\n') == msg + strlen(msg) - 1);	/* one line */
		CHECK(!s.vcpus);
	}
	example_free(e);
}

/* vcpu@1 renamed vcpu@5: the count agrees, the name does not. */
static void test_vcpu_names(void)
{
	struct example *e = example_encoded();
	struct mig_state s;
	char msg[512];
	void *b;
	int vcpus;

	CHECK(e);
	b = malloc(e->size + 4096);
	CHECK(b && !fdt_open_into(e->blob, b, (int)e->size + 4096));
	CHECK(!fdt_del_node(b, fdt_path_offset(b, "/vcpus/vcpu@1")));
	vcpus = fdt_path_offset(b, "/vcpus");
	CHECK(fdt_add_subnode(b, vcpus, "vcpu@5") >= 0);
	CHECK_EQ(decode_quiet(b, fdt_totalsize(b), &s, msg, sizeof(msg)), -EINVAL);
	CHECK(strstr(msg, "node /vcpus/vcpu@1 missing"));
	free(b);
	example_free(e);
}

static void test_bad_blobs(void)
{
	struct example *e = example_encoded();
	struct mig_state s;
	uint8_t *b;
	char msg[512];

	CHECK(e);
	b = malloc(e->size);
	CHECK(b);
	memcpy(b, e->blob, e->size);
	b[0] ^= 0xff;	/* magic */
	CHECK_EQ(decode_quiet(b, e->size, &s, msg, sizeof(msg)), -EINVAL);
	CHECK(strstr(msg, "not a valid FDT"));
	b[0] ^= 0xff;
	/* Truncated anywhere: at the header, in the structure, by one byte. */
	CHECK_EQ(decode_quiet(b, 0, &s, msg, sizeof(msg)), -EINVAL);
	CHECK_EQ(decode_quiet(b, 20, &s, msg, sizeof(msg)), -EINVAL);
	CHECK_EQ(decode_quiet(b, e->size / 2, &s, msg, sizeof(msg)), -EINVAL);
	CHECK_EQ(decode_quiet(b, e->size - 1, &s, msg, sizeof(msg)), -EINVAL);
	CHECK(strstr(msg, "not a valid FDT"));
	/* A header whose totalsize lies past the buffer. */
	((fdt32_t *)b)[1] = cpu_to_fdt32((uint32_t)e->size + 4096);
	CHECK_EQ(decode_quiet(b, e->size, &s, msg, sizeof(msg)), -EINVAL);
	CHECK(!s.vcpus);
	free(b);
	example_free(e);
}

static void test_encode_refuses_bad_counts(void)
{
	struct example *e = example_encoded();
	void *blob = NULL;
	size_t size;

	CHECK(e);
	e->vcpus[1].nmsrs = KVM_STATE_MAX_MSRS + 1;
	CHECK_EQ(mig_state_encode(&e->machine, e->vcpus, &e->vm, NULL, 0, &blob, &size), -EINVAL);
	e->vcpus[1].nmsrs = 1;
	e->vcpus[0].xsave_size = KVM_STATE_XSAVE_MAX + 1;
	CHECK_EQ(mig_state_encode(&e->machine, e->vcpus, &e->vm, NULL, 0, &blob, &size), -EINVAL);
	e->vcpus[0].xsave_size = 0;
	e->machine.ram_size++;
	CHECK_EQ(mig_state_encode(&e->machine, e->vcpus, &e->vm, NULL, 0, &blob, &size), -EINVAL);
	CHECK(!blob);
	example_free(e);
}

static void test_machine_check(void)
{
	struct mig_machine saved, config;

	CHECK_EQ(machine_example(&saved, 64 * M, 2), 0);
	CHECK_EQ(machine_example(&config, 64 * M, 2), 0);
	CHECK_EQ(mig_machine_check(&saved, &config), 0);
	CHECK_EQ(machine_example(&config, 64 * M, 4), 0);
	CHECK_EQ(mig_machine_check(&saved, &config), -EINVAL);
	CHECK_EQ(machine_example(&config, 128 * M, 2), 0);
	CHECK_EQ(mig_machine_check(&saved, &config), -EINVAL);
	/* Same total, split differently between the nodes. */
	config = saved;
	config.node_size[0] -= 64 * M;
	config.node_size[1] += 64 * M;
	CHECK_EQ(mig_machine_check(&saved, &config), -EINVAL);
	config = saved;
	config.regions[2].gpa += 4096;
	CHECK_EQ(mig_machine_check(&saved, &config), -EINVAL);
	config = saved;
	config.nr_nodes = 1;
	CHECK_EQ(mig_machine_check(&saved, &config), -EINVAL);
}

/* A device for the /devices tests: a counter saved as "n" and a blob as "big". */
struct fake_dev {
	uint32_t n;
	size_t big_len;
	int loaded;
};

static int fake_save(void *dev, const struct dev_state_out *out)
{
	struct fake_dev *d = dev;
	static uint8_t big[1 << 20];	/* bigger than the encoder's first buffer */
	int ret = dev_put(out, "n", &d->n, sizeof(d->n));

	memset(big, 0x5a, sizeof(big));
	return ret ? ret : dev_put(out, "big", big, d->big_len);
}

static int fake_load(void *dev, const struct dev_state_in *in)
{
	struct fake_dev *d = dev;
	const void *p;
	size_t len;
	int ret = dev_get(in, "n", &d->n, sizeof(d->n));

	if (!ret)
		ret = in->get_var(in->opaque, "big", &p, &len, 1 << 20);
	if (!ret && len && ((const uint8_t *)p)[len - 1] != 0x5a)
		ret = -EINVAL;
	d->big_len = len;
	d->loaded = !ret;
	return ret;
}

static const struct dev_ops fake_ops = { .save = fake_save, .load = fake_load };

/* Device nodes go through the blob by name; a different device set or size is refused. */
static void test_devices(void)
{
	struct fake_dev a = { .n = 7, .big_len = 1 << 20 }, b = { .n = 9, .big_len = 3 };
	struct fake_dev ra = { 0 }, rb = { 0 };
	struct dev devs[2] = { { "serial@3f8", &fake_ops, &a }, { "virtio-blk@01", &fake_ops, &b } };
	struct dev rdevs[2] = { { "serial@3f8", &fake_ops, &ra },
				{ "virtio-blk@01", &fake_ops, &rb } };
	struct dev other[2] = { { "serial@3f8", &fake_ops, &ra },
				{ "virtio-blk@02", &fake_ops, &rb } };
	struct example *e = example_encoded();
	struct mig_state st;
	char msg[512];
	void *blob = NULL;
	size_t size;

	CHECK(e != NULL);
	if (!e)
		return;
	CHECK_EQ(mig_state_encode(&e->machine, e->vcpus, &e->vm, devs, 2, &blob, &size), 0);
	CHECK(size > (1 << 20));
	CHECK_EQ(decode_quiet(blob, size, &st, msg, sizeof(msg)), 0);
	CHECK_EQ(mig_state_load_devices(&st, rdevs, 2), 0);
	CHECK(ra.loaded && rb.loaded && ra.n == 7 && rb.n == 9);
	CHECK(ra.big_len == (1 << 20) && rb.big_len == 3);
	/* Another device set: refused before any load. */
	ra.loaded = rb.loaded = 0;
	CHECK_EQ(mig_state_load_devices(&st, other, 2), -EINVAL);
	CHECK_EQ(mig_state_load_devices(&st, rdevs, 1), -EINVAL);
	CHECK(!ra.loaded && !rb.loaded);
	mig_state_free(&st);
	free(blob);
	example_free(e);
}

TEST_MAIN(TEST(test_round_trip), TEST(test_corruptions_refused), TEST(test_vcpu_names),
	  TEST(test_bad_blobs), TEST(test_encode_refuses_bad_counts), TEST(test_machine_check),
	  TEST(test_devices))
