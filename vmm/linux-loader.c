/*
 * The Linux loader, for fresh boots only: reads and checks --kernel, --initrd and the command
 * line before any KVM object exists (vm_boot_load), then puts them, the ACPI tables and the
 * boot structures in the built machine's RAM and sets the boot vCPU's registers
 * (vm_load_linux). A restore loads a snapshot into the machine vm.c builds and skips this.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/acpi.h"
#include "vmm/boot.h"
#include "vmm/layout.h"
#include "vmm/log.h"
#include "vmm/pvm.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

int vm_setup_boot_cpu(struct vm *vm, uint64_t entry, uint64_t rsi)
{
	return vcpu_setup_long_mode(vm->vcpus[0], entry, rsi);
}

/* Open path, which must be a regular file, for reading: its fd and size, or -errno. */
static int open_input(const char *path, int *fd, size_t *len)
{
	struct stat st;
	int ret = 0;

	/* O_NONBLOCK: a FIFO is refused below instead of waiting for a writer. */
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (*fd < 0)
		return -errno;
	if (fstat(*fd, &st) < 0)
		ret = -errno;
	else if (!S_ISREG(st.st_mode))
		ret = -EINVAL;
	if (ret) {
		close(*fd);
		return ret;
	}
	*len = (size_t)st.st_size;
	return 0;
}

/* Read len bytes from fd into a new buffer: what is checked is what is used, even later. */
static int read_input(int fd, size_t len, uint8_t **out)
{
	uint8_t *buf = malloc(len ? len : 1);
	size_t got = 0;
	int ret = buf ? 0 : -ENOMEM;

	while (!ret && got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n < 0 && errno != EINTR)
			ret = -errno;
		else if (n == 0)
			ret = -EIO;	/* it shrank since fstat */
		else if (n > 0)
			got += (size_t)n;
	}
	if (ret)
		free(buf);
	else
		*out = buf;
	return ret;
}

static const char *input_strerror(int ret)
{
	return ret == -EINVAL ? "not a regular file" : boot_strerror(ret);
}

static char *build_cmdline(const struct vm_config *cfg)
{
	const char *user = cfg->cmdline ? cfg->cmdline : "";
	const char *quirks = vm_pvm_on(cfg) ? pvm_cmdline_quirks : "";
	/* Ours first so the user's own parameters win, and nothing lands after a "--". */
	size_t n = strlen("console=ttyS0 ") + strlen(quirks) + strlen(user) + 4;
	char *s = malloc(n);

	if (s)
		snprintf(s, n, "%s%s%s%s", strstr(user, "console=") ? "" : "console=ttyS0 ", quirks,
			 *quirks ? " " : "", user);
	return s;
}

int vm_boot_load(struct vm_boot *b, const struct vm_config *cfg, char *err, size_t errlen)
{
	struct mm_node_spec spec[MM_MAX_NODES];
	struct guest_mem layout;
	uint64_t gpa;
	int fd, ret;

	memset(b, 0, sizeof(*b));
	/* Where guest RAM will be, without the memory: what goes in is checked against it. */
	ret = mm_layout_nodes(&layout, spec, vm_ram_spec(cfg, spec), cfg->hugepages);
	if (ret) {	/* config_parse_run() has refused what would get here */
		snprintf(err, errlen, "guest RAM layout: %s", strerror(-ret));
		return ret;
	}
	ret = open_input(cfg->kernel, &fd, &b->kernel_len);
	if (!ret) {
		ret = read_input(fd, b->kernel_len, &b->kernel_file);
		close(fd);
	}
	if (!ret)
		ret = boot_parse_kernel(b->kernel_file, b->kernel_len, layout.ram_size,
					cfg->guest_decompress && !vm_pvm_on(cfg) ?
					BOOT_DECOMPRESS_GUEST : BOOT_DECOMPRESS_HOST, &b->kernel);
	if (!ret)
		ret = boot_check_kernel(&layout, &b->kernel);
	if (ret) {
		snprintf(err, errlen, "kernel %s: %s", cfg->kernel, input_strerror(ret));
		goto err;
	}
	b->cmdline = build_cmdline(cfg);
	ret = b->cmdline ? boot_check_cmdline(&b->kernel.k, b->cmdline) : -ENOMEM;
	if (ret) {
		snprintf(err, errlen, "--cmdline: %s", ret == -E2BIG ? "too long for the kernel" :
			 boot_strerror(ret));
		goto err;
	}
	if (!cfg->initrd)
		return 0;
	ret = open_input(cfg->initrd, &fd, &b->initrd_len);
	if (ret) {
		snprintf(err, errlen, "initrd %s: %s", cfg->initrd, input_strerror(ret));
		goto err;
	}
	/* Placed before it is read: a file far too big is refused as it is. */
	ret = boot_initrd_gpa(&layout, &b->kernel.k, b->initrd_len, &gpa);
	if (!ret)
		ret = read_input(fd, b->initrd_len, &b->initrd);
	close(fd);
	if (ret) {
		snprintf(err, errlen, "initrd %s (%zu bytes): %s", cfg->initrd, b->initrd_len,
			 input_strerror(ret));
		goto err;
	}
	return 0;
err:
	vm_boot_free(b);
	return ret;
}

void vm_boot_free(struct vm_boot *b)
{
	boot_image_free(&b->kernel);
	free(b->kernel_file);
	free(b->initrd);
	free(b->cmdline);
	memset(b, 0, sizeof(*b));
}

int vm_load_linux(struct vm *vm, const struct vm_boot *b)
{
	const struct boot_kernel *k = &b->kernel.k;
	uint32_t *apic_ids, *cpu_node = NULL;
	struct acpi_mem_affinity mem_aff[MM_MAX_REGIONS];
	uint8_t dist[NUMA_MAX_NODES * NUMA_MAX_NODES];
	struct acpi_config acfg;
	void *tables;
	uint64_t initrd_gpa = 0, rsdp = 0;
	long used;
	int ret;

	/* Checked against this very layout by vm_boot_load(): these cannot fail. */
	ret = boot_place_kernel(&vm->mem, &b->kernel);
	if (!ret)
		ret = boot_load_initrd(&vm->mem, k, b->initrd, b->initrd_len, &initrd_gpa);
	if (ret < 0) {
		pr_err("loading the kernel and initrd: %s", boot_strerror(ret));
		return ret;
	}

	apic_ids = calloc(vm->ncpus, sizeof(*apic_ids));
	cpu_node = calloc(vm->ncpus, sizeof(*cpu_node));
	tables = calloc(1, ACPI_TABLES_SIZE);
	if (!apic_ids || !cpu_node || !tables) {
		ret = -ENOMEM;
		goto out;
	}
	for (unsigned int i = 0; i < vm->ncpus; i++)
		apic_ids[i] = vm->vcpus[i]->apic_id;
	acfg = (struct acpi_config){ .ncpus = vm->ncpus, .apic_ids = apic_ids, .pci = 1 };
	if (vm->cfg.numa.nnodes) {
		const struct numa_config *n = &vm->cfg.numa;
		const struct mm_region *r;

		for (unsigned int i = 0; i < vm->ncpus; i++)
			cpu_node[i] = (uint32_t)n->vcpu_node[i];
		mm_for_each_region(&vm->mem, r)
			mem_aff[mm_region_index(&vm->mem, r)] = (struct acpi_mem_affinity){
				.base = r->gpa, .size = r->size, .node = (uint32_t)r->node };
		for (unsigned int i = 0; i < n->nnodes; i++)
			for (unsigned int j = 0; j < n->nnodes; j++)
				dist[i * n->nnodes + j] = n->dist[i][j];
		acfg.nnodes = n->nnodes;
		acfg.cpu_node = cpu_node;
		acfg.mem = mem_aff;
		acfg.nmem = (unsigned int)mm_nr_regions(&vm->mem);
		acfg.distance = dist;
	}
	used = acpi_build(tables, ACPI_TABLES_SIZE, ACPI_TABLES_GPA, &acfg, &rsdp);
	if (used < 0) {
		ret = (int)used;
		pr_err("building ACPI tables: %s", strerror(-ret));
		goto out;
	}
	ret = mm_write(&vm->mem, ACPI_TABLES_GPA, tables, (uint64_t)used);
	if (ret < 0) {
		pr_err("ACPI tables do not fit in guest memory");
		goto out;
	}
	ret = boot_setup_pagetables(&vm->mem);
	if (ret == 0)
		ret = boot_setup_params(&vm->mem, k, b->cmdline, initrd_gpa, b->initrd_len, rsdp);
	if (ret < 0) {
		pr_err("setting up boot parameters: %s", boot_strerror(ret));
		goto out;
	}
	ret = vm_setup_boot_cpu(vm, k->entry, BOOT_ZERO_PAGE_GPA);
	if (ret < 0)
		goto out;
	pr_info("booting %s (%s, entry 0x%llx), %u vCPU%s, %llu MiB%s%s%s",
		vm->cfg.kernel, k->format ? k->format : "?", (unsigned long long)k->entry,
		vm->ncpus, vm->ncpus == 1 ? "" : "s", (unsigned long long)(vm->mem.ram_size >> 20),
		vm->cfg.initrd ? ", initrd " : "", vm->cfg.initrd ? vm->cfg.initrd : "",
		vm->pvm ? "; PVM host: the guest kernel runs in KVM's emulator (slow boot), "
		"emulation-failure handling and PVM kernel parameters on" : "");
	pr_debug("command line: %s", b->cmdline);
out:
	free(tables);
	free(apic_ids);
	free(cpu_node);
	return ret;
}
