/* Virtual NUMA: --numa/--numa-distance parsing, the checks, --numa full, CPUID topology. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <numaif.h>
#include <stdio.h>
#include <unistd.h>

#include <asm/kvm_para.h>
#include <linux/kvm.h>

#include "tests/harness.h"
#include "mm/mem.h"
#include "vmm/config.h"
#include "vmm/layout.h"
#include "vmm/cpuid.h"
#include "vmm/numa.h"
#include "vmm/vm.h"

#define G (1ULL << 30)
#define M (1ULL << 20)

/* A host with one node 0 (like this machine), so host-node=0 is valid. */
static const struct numa_host one_node = { .nnodes = 1, .mem = { 24 * G }, .ncpus = { 2 },
					   .cpus = { { 0, 1 } }, .dist = { { 10 } } };

/* Parses each --numa argument of a NULL-terminated list, then numa_finish(). */
static int layout(struct numa_config *n, const char *const *nodes, const char *const *dists,
		  unsigned int ncpus, uint64_t mem, char *err)
{
	numa_config_init(n);
	for (; nodes && *nodes; nodes++)
		if (numa_parse_node(n, *nodes, err, 256) < 0)
			return -EINVAL;
	for (; dists && *dists; dists++)
		if (numa_parse_distance(n, *dists, err, 256) < 0)
			return -EINVAL;
	return numa_finish(n, ncpus, mem, &one_node, err, 256);
}

static void test_numa_four_nodes(void)
{
	/* Asymmetric distances, a memory-less node 1 and a CPU-less node 3 (listed last). */
	static const char *const nodes[] = {
		"node=0,cpus=0-1,mem=512M,host-node=0", "node=1,cpus=2,mem=0",
		"node=2,cpus=3,mem=256M", "node=3,mem=256M,host-node=0", NULL };
	static const char *const dists[] = { "0:1=21", "1:0=31", "0:2=16", "2:3=40", NULL };
	struct numa_config n;
	char err[256] = "", list[64];

	CHECK_EQ(layout(&n, nodes, dists, 4, G, err), 0);
	CHECK_EQ(n.nnodes, 4);
	CHECK_EQ(n.nodes[0].mem, 512 * M);
	CHECK_EQ(n.nodes[1].mem, 0);
	CHECK_EQ(n.nodes[3].ncpus, 0);
	CHECK_EQ(n.nodes[0].host_node, 0);
	CHECK_EQ(n.nodes[1].host_node, -1);
	CHECK_EQ(n.vcpu_node[0], 0);
	CHECK_EQ(n.vcpu_node[1], 0);
	CHECK_EQ(n.vcpu_node[2], 1);
	CHECK_EQ(n.vcpu_node[3], 2);
	CHECK_EQ(n.vcpu_node[4], -1);
	CHECK_EQ(n.dist[0][1], 21);
	CHECK_EQ(n.dist[1][0], 31);		/* explicit, not mirrored */
	CHECK_EQ(n.dist[0][2], 16);
	CHECK_EQ(n.dist[2][0], 16);		/* mirrored */
	CHECK_EQ(n.dist[3][2], 40);
	CHECK_EQ(n.dist[1][3], 20);		/* default */
	for (unsigned int i = 0; i < 4; i++)
		CHECK_EQ(n.dist[i][i], 10);
	numa_node_cpulist(&n, 0, list, sizeof(list));
	CHECK(!strcmp(list, "0-1"));
	numa_node_cpulist(&n, 3, list, sizeof(list));
	CHECK(!strcmp(list, ""));
}

static void test_numa_defaults_and_lists(void)
{
	static const char *const nodes[] = { "node=0,cpus=0:2-3", "node=1,cpus=1,cpus=4-5", NULL };
	struct numa_config n;
	char err[256] = "", list[64];

	/* No mem= anywhere: --mem is split evenly in 2 MiB units. */
	CHECK_EQ(layout(&n, nodes, NULL, 6, 1026 * M, err), 0);
	CHECK_EQ(n.nodes[0].mem + n.nodes[1].mem, 1026 * M);
	CHECK_EQ(n.nodes[0].mem % (2 * M), 0);
	CHECK(n.nodes[0].mem == 514 * M || n.nodes[0].mem == 512 * M);
	numa_node_cpulist(&n, 0, list, sizeof(list));
	CHECK(!strcmp(list, "0,2-3"));
	numa_node_cpulist(&n, 1, list, sizeof(list));
	CHECK(!strcmp(list, "1,4-5"));
	CHECK_EQ(n.dist[0][1], 20);
	CHECK_EQ(n.dist[1][0], 20);
}

static void test_numa_bad_arguments(void)
{
	static const char *const bad[] = {
		"", "node=", "node=16", "node=-1", "node=a", "cpus=0", "node=0,cpus=",
		"node=0,cpus=3-1", "node=0,cpus=0-", "node=0,cpus=1024", "node=0,cpus=0,,",
		"node=0,mem=1X", "node=0,mem=-1M", "node=0,host-node=x", "node=0,foo=1",
		"node=0,cpus=0;1", "node=0,cpus=0:", NULL };
	static const char *const bad_dist[] = {
		"", "0:1", "0:1=", "0-1=20", "0:1=10", "0:1=5", "0:0=11", "0:1=255", "0:16=20",
		"0:1=20x", "a:b=20", NULL };
	struct numa_config n;
	char err[256];

	for (unsigned int i = 0; bad[i]; i++) {
		numa_config_init(&n);
		err[0] = 0;
		if (numa_parse_node(&n, bad[i], err, sizeof(err)) != -EINVAL || !err[0]) {
			fprintf(stderr, "  accepted --numa '%s'\n", bad[i]);
			CHECK(0);
		}
	}
	for (unsigned int i = 0; bad_dist[i]; i++) {
		numa_config_init(&n);
		err[0] = 0;
		if (numa_parse_distance(&n, bad_dist[i], err, sizeof(err)) != -EINVAL || !err[0]) {
			fprintf(stderr, "  accepted --numa-distance '%s'\n", bad_dist[i]);
			CHECK(0);
		}
	}
	numa_config_init(&n);
	CHECK_EQ(numa_parse_node(&n, "node=0,cpus=0", err, sizeof(err)), 0);
	CHECK_EQ(numa_parse_node(&n, "node=0,cpus=1", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "twice"));
	CHECK_EQ(numa_parse_node(&n, "node=1,cpus=0", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "already in node 0"));
	CHECK_EQ(numa_parse_node(&n, "full", err, sizeof(err)), -EINVAL);
}

/* Layouts that parse but do not add up, each with the reason the user sees. */
static void test_numa_bad_layouts(void)
{
	static const struct {
		const char *nodes[3];
		const char *dist;
		unsigned int ncpus;
		uint64_t mem;
		const char *why;
	} cases[] = {
		{ { "node=0,cpus=0,mem=256M", "node=1,cpus=1,mem=256M" }, NULL, 3, 512 * M,
		  "vCPU 2 is in no node" },
		{ { "node=0,cpus=0-2,mem=256M", "node=1,mem=256M" }, NULL, 2, 512 * M,
		  "vCPU 2 is in node 0 but --cpus is 2" },
		{ { "node=0,cpus=0,mem=256M", "node=1,cpus=1,mem=128M" }, NULL, 2, 512 * M,
		  "adds up to 384M, --mem is 512M" },
		{ { "node=0,cpus=0,mem=255M", "node=1,cpus=1,mem=257M" }, NULL, 2, 512 * M,
		  "multiple of 2M" },
		{ { "node=0,cpus=0,mem=510M", "node=1,cpus=1,mem=2M" }, NULL, 2, 512 * M,
		  "at least 4M" },
		{ { "node=0,cpus=0-1,mem=512M", "node=2,mem=0" }, NULL, 2, 512 * M,
		  "node 1 is not defined" },
		{ { "node=0,cpus=0-1,mem=512M", "node=1" }, NULL, 2, 512 * M,
		  "neither vCPUs nor memory" },
		{ { "node=0,cpus=0-1,mem=512M,host-node=3" }, NULL, 2, 512 * M,
		  "host node 3 does not exist" },
		{ { "node=0,cpus=0-1,mem=512M" }, "0:1=20", 2, 512 * M, "node 1 is not defined" },
	};
	struct numa_config n;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const dists[] = { cases[i].dist, NULL };
		const char *nodes[4] = { cases[i].nodes[0], cases[i].nodes[1], cases[i].nodes[2] };

		err[0] = 0;
		if (layout(&n, nodes, dists, cases[i].ncpus, cases[i].mem, err) != -EINVAL ||
		    !strstr(err, cases[i].why)) {
			fprintf(stderr, "  case %zu: got '%s', want '%s'\n", i, err, cases[i].why);
			CHECK(0);
		}
	}
}

/* The paper's hosts: Xeon Platinum 8160 x2 (10/21) and Threadripper 2990WX (4 nodes, 10/16,
 * memory on nodes 0 and 2 only). */
static void test_numa_full_synthetic(void)
{
	struct numa_host xeon = { .nnodes = 2, .id = { 0, 1 }, .mem = { 96 * G, 96 * G },
				  .ncpus = { 48, 48 }, .dist = { { 10, 21 }, { 21, 10 } } };
	struct numa_host tr = { .nnodes = 4, .id = { 0, 1, 2, 3 },
				.mem = { 64 * G, 0, 64 * G, 0 }, .ncpus = { 16, 16, 16, 16 } };
	struct numa_config n;
	char err[256] = "";

	for (unsigned int i = 0; i < 4; i++)
		for (unsigned int j = 0; j < 4; j++)
			tr.dist[i][j] = i == j ? 10 : 16;
	numa_config_init(&n);
	CHECK_EQ(numa_parse_node(&n, "full", err, sizeof(err)), 0);
	CHECK_EQ(numa_finish(&n, 4, 4 * G, &xeon, err, sizeof(err)), 0);
	CHECK_EQ(n.nnodes, 2);
	CHECK_EQ(n.nodes[0].ncpus, 2);
	CHECK_EQ(n.nodes[1].ncpus, 2);
	CHECK_EQ(n.nodes[0].mem, 2 * G);
	CHECK_EQ(n.nodes[1].mem, 2 * G);
	CHECK_EQ(n.nodes[1].host_node, 1);
	CHECK_EQ(n.vcpu_node[1], 0);
	CHECK_EQ(n.vcpu_node[2], 1);
	CHECK_EQ(n.dist[0][1], 21);
	CHECK_EQ(n.dist[1][0], 21);

	/* Odd sizes: 3 vCPUs and 1026 MiB still add up exactly. */
	numa_config_init(&n);
	CHECK_EQ(numa_parse_node(&n, "full", err, sizeof(err)), 0);
	CHECK_EQ(numa_finish(&n, 3, 1026 * M, &xeon, err, sizeof(err)), 0);
	CHECK_EQ(n.nodes[0].ncpus + n.nodes[1].ncpus, 3);
	CHECK_EQ(n.nodes[0].mem + n.nodes[1].mem, 1026 * M);

	numa_config_init(&n);
	CHECK_EQ(numa_parse_node(&n, "full", err, sizeof(err)), 0);
	CHECK_EQ(numa_finish(&n, 8, 2 * G, &tr, err, sizeof(err)), 0);
	CHECK_EQ(n.nnodes, 4);
	for (unsigned int i = 0; i < 4; i++) {
		CHECK_EQ(n.nodes[i].ncpus, 2);
		CHECK_EQ(n.nodes[i].mem, i % 2 ? 0 : G);	/* memory-less nodes 1 and 3 */
		CHECK_EQ(n.nodes[i].host_node, i);
		for (unsigned int j = 0; j < 4; j++)
			CHECK_EQ(n.dist[i][j], i == j ? 10 : 16);
	}
	/* Fewer vCPUs than nodes would leave memory-less node 1 empty. */
	numa_config_init(&n);
	CHECK_EQ(numa_parse_node(&n, "full", err, sizeof(err)), 0);
	CHECK_EQ(numa_finish(&n, 2, 2 * G, &tr, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "neither vCPUs nor memory"));
}

/* --numa full on this host, whatever it is: the result must pass the checks and add up. */
static void test_numa_full_this_host(void)
{
	struct numa_host h;
	struct numa_config n;
	char err[256] = "";
	unsigned int cpus = 0;
	uint64_t mem = 0;

	CHECK_EQ(numa_host_read(&h), 0);
	CHECK(h.nnodes >= 1);
	CHECK(h.ncpus[0] >= 1);
	CHECK_EQ(h.dist[0][0], 10);
	numa_config_init(&n);
	CHECK_EQ(numa_parse_node(&n, "full", err, sizeof(err)), 0);
	CHECK_EQ(numa_finish(&n, 2 * h.nnodes, 512 * M * h.nnodes, &h, err, sizeof(err)), 0);
	CHECK_EQ(n.nnodes, h.nnodes);
	for (unsigned int i = 0; i < n.nnodes; i++) {
		cpus += n.nodes[i].ncpus;
		mem += n.nodes[i].mem;
		CHECK_EQ(n.nodes[i].host_node, h.id[i]);
	}
	CHECK_EQ(cpus, 2 * h.nnodes);
	CHECK_EQ(mem, 512 * M * h.nnodes);
}

static int parse(const char *line, struct vm_config *cfg, char *err)
{
	static char buf[1024];
	char *argv[40];
	int argc = 0;
	struct run_options o;

	snprintf(buf, sizeof(buf), "run --kernel k %s", line);
	for (char *tok = strtok(buf, " "); tok && argc < 39; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	argv[argc] = NULL;
	err[0] = 0;
	return config_parse_run(argc, argv, cfg, &o, err, 256);
}

static void test_numa_run_options(void)
{
	static struct vm_config c;
	char err[256];

	CHECK_EQ(parse("--cpus 4 --mem 1G --numa node=0,cpus=0-1,mem=512M,host-node=0 "
		       "--numa node=1,cpus=2-3,mem=512M,host-node=0 --numa-distance 0:1=21 "
		       "--cpu-pin numa --hugepages --pv steal-time=off,pv-unhalt=on,"
		       "halt-poll-ns=0", &c, err), 0);
	CHECK_EQ(c.numa.nnodes, 2);
	CHECK_EQ(c.numa.dist[1][0], 21);
	CHECK_EQ(c.pin_numa, 1);
	CHECK_EQ(c.hugepages, 1);
	CHECK_EQ(c.pv.clear, 1u << KVM_FEATURE_STEAL_TIME);
	CHECK_EQ(c.pv.on, 1u << KVM_FEATURE_PV_UNHALT);
	CHECK_EQ(c.halt_poll_set, 1);
	CHECK_EQ(c.halt_poll_ns, 0);
	CHECK_EQ(parse("--cpus 2 --cpu-pin 0=1,1=0", &c, err), 0);
	CHECK_EQ(c.pin_cpu[0], 2);
	CHECK_EQ(c.pin_cpu[1], 1);
	CHECK_EQ(c.numa.nnodes, 0);
	CHECK_EQ(parse("--cpus 2 --numa full", &c, err), 0);
	CHECK(c.numa.nnodes >= 1);

	static const struct { const char *line, *why; } bad[] = {
		{ "--cpus 2 --numa node=0,cpus=0-1,host-node=1000", "host node 1000 does not exist" },
		{ "--cpus 2 --numa node=0,cpus=0", "vCPU 1 is in no node" },
		{ "--numa-distance 0:1=20", "needs --numa" },
		{ "--cpu-pin numa", "needs --numa" },
		{ "--cpus 2 --cpu-pin 2=0", "vCPU 2 does not exist" },
		{ "--cpus 2 --cpu-pin 0=0,0=1", "pinned twice" },
		{ "--cpu-pin 0=100000", "use V=P" },
		{ "--cpu-pin 0=4095", "does not exist" },
		{ "--cpu-pin 0", "use V=P" },
		{ "--pv steal-time", "FEATURE=on|off" },
		{ "--pv steal-time=maybe", "use on or off" },
		{ "--pv warp-drive=on", "unknown PV feature" },
		{ "--pv halt-poll-ns=-1", "nanoseconds" },
		{ "--mem 257M --hugepages", "multiple of 2M" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i].line, &c, err) != -EINVAL || !strstr(err, bad[i].why)) {
			fprintf(stderr, "  '%s': got '%s', want '%s'\n", bad[i].line, err, bad[i].why);
			CHECK(0);
		}
	}
}

/* One package per node: APIC ids, leaf 0xB, AMD node id and an L3 that stays in the node. */
static void test_numa_cpuid_topology(void)
{
	struct kvm_cpuid2 *tmpl = calloc(1, sizeof(*tmpl) + 8 * sizeof(tmpl->entries[0]));
	struct cpu_topo t = { .ncpus = 6, .pkg_cpus = 2, .pkg_shift = 2, .node = 2, .core = 1 };
	struct cpuid_pv pv = { .clear = 1u << KVM_FEATURE_STEAL_TIME };
	struct kvm_cpuid2 *c;
	struct kvm_cpuid_entry2 *e;

	tmpl->nent = 6;
	tmpl->entries[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 0xd };
	tmpl->entries[1] = (struct kvm_cpuid_entry2){ .function = 1 };
	tmpl->entries[2] = (struct kvm_cpuid_entry2){ .function = 0x8000001e };
	tmpl->entries[3] = (struct kvm_cpuid_entry2){ .function = 0x8000001d, .index = 1,
		.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = (2 << 5) | 3 | (7u << 14) };
	tmpl->entries[4] = (struct kvm_cpuid_entry2){ .function = 0x8000001d, .index = 3,
		.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = (3 << 5) | 3 | (15u << 14) };
	tmpl->entries[5] = (struct kvm_cpuid_entry2){ .function = 0x40000001,
		.eax = (1u << KVM_FEATURE_STEAL_TIME) | (1u << KVM_FEATURE_PV_UNHALT) };
	CHECK_EQ(cpu_topo_apic_id(&t), 9);
	c = cpuid_for_vcpu(tmpl, &t, &pv, 0);
	CHECK(c);
	e = cpuid_find(c, 1, 0);
	CHECK_EQ(e->ebx >> 24, 9);
	CHECK_EQ((e->ebx >> 16) & 0xff, 4);
	e = cpuid_find(c, 0xb, 1);
	CHECK_EQ(e->eax, 2);
	CHECK_EQ(e->ebx, 2);
	CHECK_EQ(e->edx, 9);
	e = cpuid_find(c, 0x8000001e, 0);
	CHECK_EQ(e->eax, 9);
	CHECK_EQ(e->ebx, 1);
	CHECK_EQ(e->ecx, 2);
	CHECK_EQ((cpuid_find(c, 0x8000001d, 1)->eax >> 14) & 0xfff, 0);	/* L2 per core */
	CHECK_EQ((cpuid_find(c, 0x8000001d, 3)->eax >> 14) & 0xfff, 3);	/* L3 per node */
	CHECK_EQ(cpuid_find(c, 0x40000001, 0)->eax, 1u << KVM_FEATURE_PV_UNHALT);
	free(c);
	free(tmpl);
}

/* Pages of node k's memfd, once touched, are on host node k: move_pages() asks the kernel. */
static int pages_on_node(struct guest_mem *m, int node, int want)
{
	const struct mm_node *n = &m->nodes[node];
	long page = sysconf(_SC_PAGESIZE);
	void *pages[64];
	int status[64];

	for (int i = 0; i < 64; i++) {
		pages[i] = n->hva + (uint64_t)i * (n->size / 64);
		*(volatile char *)pages[i] = 1;
		pages[i] = (void *)((uintptr_t)pages[i] & ~(uintptr_t)(page - 1));
	}
	if (move_pages(0, 64, pages, NULL, status, 0) < 0)
		return 0;
	for (int i = 0; i < 64; i++)
		if (status[i] != want) {
			fprintf(stderr, "  page %d of node %d: status %d, want %d\n", i, node,
				status[i], want);
			return 0;
		}
	return 1;
}

/* Node 0 fills most of low RAM, node 1 straddles the 32-bit hole, node 2 has no memory. */
static void test_numa_memory_layout(void)
{
	struct mm_node_spec spec[] = { { 2 * G, 0 }, { 2 * G, 0 }, { 0, -1 }, { 64 * M, -1 } };
	struct guest_mem m;

	CHECK_EQ(mm_init_nodes(&m, spec, 4, 0), 0);
	CHECK_EQ(m.ram_size, 4 * G + 64 * M);
	CHECK_EQ(mm_nr_regions(&m), 4);
	CHECK_EQ(mm_region(&m, 0)->gpa, 0);
	CHECK_EQ(mm_region(&m, 0)->size, 2 * G);
	CHECK_EQ(mm_region(&m, 0)->node, 0);
	CHECK_EQ(mm_region(&m, 1)->gpa, 2 * G);
	CHECK_EQ(mm_region(&m, 1)->size, MEM_32BIT_HOLE_START - 2 * G);
	CHECK_EQ(mm_region(&m, 1)->node, 1);
	CHECK_EQ(mm_region(&m, 2)->gpa, MEM_4G);
	CHECK_EQ(mm_region(&m, 2)->size, 2 * G - (MEM_32BIT_HOLE_START - 2 * G));
	CHECK_EQ(mm_region(&m, 2)->node, 1);
	CHECK_EQ(mm_region(&m, 2)->fd_offset, mm_region(&m, 1)->size);
	CHECK_EQ(mm_region(&m, 2)->memfd, mm_region(&m, 1)->memfd);
	CHECK(mm_region(&m, 0)->memfd != mm_region(&m, 1)->memfd);
	CHECK_EQ(mm_region(&m, 3)->node, 3);
	CHECK_EQ(mm_region(&m, 3)->gpa, MEM_4G + mm_region(&m, 2)->size);
	CHECK_EQ(m.nodes[2].memfd, -1);
	CHECK(mm_gpa_to_hva(&m, 3 * G - 4096, 4096) == m.nodes[1].hva + G - 4096);
	CHECK(mm_gpa_to_hva(&m, MEM_4G, 4096) == m.nodes[1].hva + G);
	CHECK(!mm_gpa_to_hva(&m, 3 * G, 1));
	CHECK(pages_on_node(&m, 0, 0));
	CHECK(pages_on_node(&m, 1, 0));
	mm_free(&m);
	/* A host node that does not exist: mbind refuses and nothing is left behind. */
	spec[1].host_node = 1000;
	CHECK(mm_init_nodes(&m, spec, 2, 0) < 0);
	CHECK_EQ(mm_nr_regions(&m), 0);
}

static int write_int(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return 0;
	ok = fprintf(f, "%ld\n", v) > 0;
	return fclose(f) == 0 && ok;
}

static long read_int(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* --hugepages: refused while none are reserved, bound and placed when they are. */
static void test_numa_hugepages(void)
{
	const char *nr = "/proc/sys/vm/nr_hugepages";
	struct mm_node_spec spec[] = { { 16 * M, 0 }, { 16 * M, 0 } };
	long before = read_int(nr);
	struct guest_mem m;
	int ret;

	if (before < 0 || !write_int(nr, 0))
		SKIP("cannot set /proc/sys/vm/nr_hugepages (not root?)");
	if (read_int(nr) == 0)
		CHECK_EQ(mm_init_nodes(&m, spec, 2, 1), -ENOMEM);
	if (!write_int(nr, 16) || read_int(nr) < 16) {
		write_int(nr, before);
		SKIP("the host could not reserve 16 huge pages");
	}
	ret = mm_init_nodes(&m, spec, 2, 1);
	if (ret == 0) {
		ret = pages_on_node(&m, 0, 0) && pages_on_node(&m, 1, 0) ? 0 : -1;
		mm_free(&m);
	}
	/* A size that is not a multiple of 2 MiB cannot be huge-page backed. */
	spec[1].size = 15 * M;
	CHECK_EQ(mm_init_nodes(&m, spec, 2, 1), -EINVAL);
	write_int(nr, before);
	CHECK_EQ(ret, 0);
}

TEST_MAIN(TEST(test_numa_four_nodes), TEST(test_numa_defaults_and_lists),
	  TEST(test_numa_bad_arguments), TEST(test_numa_bad_layouts),
	  TEST(test_numa_full_synthetic), TEST(test_numa_full_this_host),
	  TEST(test_numa_run_options), TEST(test_numa_cpuid_topology),
	  TEST(test_numa_memory_layout), TEST(test_numa_hugepages))
