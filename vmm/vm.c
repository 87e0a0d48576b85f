#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "devices/virtio-console.h"
#include "devices/virtio-pci.h"
#include <json-c/json.h>

#include "vmm/acpi.h"
#include "vmm/vm-control.h"
#include "vmm/boot.h"
#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/log.h"
#include "vmm/pvm.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

uint64_t vm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int vm_irq_set(void *opaque, uint32_t gsi, int level)
{
	struct vm *vm = opaque;

	return kvm_irq_line(&vm->kvm, gsi, level);
}

static void vm_pm_event(void *opaque, enum pm_event ev)
{
	struct vm *vm = opaque;

	if (ev == PM_POWEROFF)
		vm_request_stop(vm, VM_STOP_POWEROFF, KUMO_EXIT_POWEROFF);
	else
		vm_request_stop(vm, VM_STOP_RESET, KUMO_EXIT_REBOOT);
}

static int env_msi_route(void *vmm, uint32_t *gsi, uint64_t addr, uint32_t data)
{
	return kvm_msi_route(&((struct vm *)vmm)->kvm, gsi, addr, data);
}

static int env_irqfd(void *vmm, int fd, uint32_t gsi, int assign)
{
	return kvm_irqfd(&((struct vm *)vmm)->kvm, fd, gsi, assign);
}

static int env_ioeventfd(void *vmm, int fd, uint64_t addr, uint32_t len, int assign)
{
	return kvm_ioeventfd(&((struct vm *)vmm)->kvm, fd, addr, len, assign);
}

/* Put a virtio device on the PCI bus; on failure the device is destroyed. */
static int add_virtio(struct vm *vm, struct virtio_dev *vdev, void (*destroy)(struct virtio_dev *))
{
	struct vm_virtio *v = &vm->virtio[vm->nvirtio];
	int ret = virtio_pci_create(&vm->pci, &vm->env, vdev, &v->pci);

	if (ret < 0) {
		destroy(vdev);
		return ret;
	}
	v->vdev = vdev;
	v->destroy = destroy;
	vm->nvirtio++;
	return 0;
}

/* virtio devices from the configuration: disks, then the console with the agent port. */
static int create_virtio_devices(struct vm *vm)
{
	struct virtio_dev *vdev;
	int ret;

	vm->env = (struct dev_env){ .mem = &vm->mem, .pio = &vm->pio, .mmio = &vm->mmio,
				    .vmm = vm, .msi_route = env_msi_route, .irqfd = env_irqfd,
				    .ioeventfd = env_ioeventfd };
	for (unsigned int i = 0; i < vm->cfg.ndisks; i++) {
		const struct disk_config *d = &vm->cfg.disks[i];

		ret = virtio_blk_create(&vm->env, d->path, &d->opts, &vdev);
		if (ret < 0) {
			pr_err("disk %s: %s", d->path, strerror(-ret));
			return ret;
		}
		ret = add_virtio(vm, vdev, virtio_blk_destroy);
		if (ret < 0) {
			pr_err("disk %s: adding it to PCI: %s", d->path, strerror(-ret));
			return ret;
		}
	}
	if (vm->cfg.balloon) {
		ret = virtio_balloon_create(&vm->env, &vm->mem, &vm->cfg.balloon_opts, &vdev);
		if (ret < 0) {
			pr_err("virtio-balloon: %s", strerror(-ret));
			return ret;
		}
		ret = add_virtio(vm, vdev, virtio_balloon_destroy);
		if (ret < 0) {
			pr_err("virtio-balloon: adding it to PCI: %s", strerror(-ret));
			return ret;
		}
		vm->balloon = vdev;
	}
	if (vm->cfg.agent_socket || vm->cfg.console_socket) {
		struct console_options o = { .agent_socket = vm->cfg.agent_socket,
					     .console_socket = vm->cfg.console_socket,
					     .console_out_fd = -1 };

		ret = virtio_console_create(&vm->env, &o, &vdev);
		if (ret < 0) {
			pr_err("virtio-console: %s", strerror(-ret));
			return ret;
		}
		ret = add_virtio(vm, vdev, virtio_console_destroy);
		if (ret < 0) {
			pr_err("virtio-console: adding it to PCI: %s", strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void destroy_virtio_devices(struct vm *vm)
{
	while (vm->nvirtio) {
		struct vm_virtio *v = &vm->virtio[--vm->nvirtio];

		/* Stop the device's I/O first: it must not signal a transport that is gone. */
		pthread_mutex_lock(&v->vdev->lock);
		virtio_dev_reset(v->vdev);
		pthread_mutex_unlock(&v->vdev->lock);
		virtio_pci_destroy(v->pci);
		v->destroy(v->vdev);
	}
}

/* The guest RAM the config asks for, node by node; returns the number of nodes. */
static int ram_spec(const struct vm_config *cfg, struct mm_node_spec *spec)
{
	const struct numa_config *n = &cfg->numa;

	_Static_assert(NUMA_MAX_NODES <= MM_MAX_NODES, "node limits");
	_Static_assert(MM_HOLE_START == MEM_32BIT_HOLE_START && MM_HOLE_END == MEM_4G,
		       "mm/ and vmm/layout.h draw the same map");
	spec[0] = (struct mm_node_spec){ .size = cfg->mem_size, .host_node = -1 };
	for (unsigned int i = 0; i < n->nnodes; i++)
		spec[i] = (struct mm_node_spec){ .size = n->nodes[i].mem,
						 .host_node = n->nodes[i].host_node };
	return n->nnodes ? (int)n->nnodes : 1;
}

/* PVM handling: on a PVM host unless --no-pvm-quirks. */
static int pvm_on(const struct vm_config *cfg)
{
	return cfg->pvm_quirks && pvm_detect();
}

/* Guest RAM, one memfd per virtual node, bound to its host node. */
static int create_memory(struct vm *vm)
{
	const struct numa_config *n = &vm->cfg.numa;
	struct mm_node_spec spec[MM_MAX_NODES];
	int nr = ram_spec(&vm->cfg, spec), ret;

	ret = mm_init_nodes(&vm->mem, spec, nr, vm->cfg.hugepages);
	if (ret == -ENOMEM && vm->cfg.hugepages)
		pr_err("--hugepages: the host has fewer than %llu free 2 MiB huge pages for the "
		       "guest (reserve them in /proc/sys/vm/nr_hugepages or per node in "
		       "/sys/devices/system/node/nodeN/hugepages/hugepages-2048kB/nr_hugepages)",
		       (unsigned long long)(vm->cfg.mem_size >> 21));
	else if (ret == -EINVAL && vm->cfg.hugepages)
		pr_err("--hugepages: no 2 MiB huge page support on this host, or a node's memory "
		       "is not a multiple of 2M");
	else if (ret < 0)
		pr_err("cannot allocate %llu bytes of guest memory%s: %s",
		       (unsigned long long)vm->cfg.mem_size,
		       n->nnodes ? " bound to its host NUMA nodes" : "", strerror(-ret));
	return ret;
}

/* --pv FEATURE=on needs KVM to offer it: we can hide PV features, not invent them. */
static int check_pv_features(struct vm *vm)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(vm->cpuid, 0x40000001, 0);
	uint32_t offered = e ? e->eax : 0, missing = vm->cfg.pv.on & ~offered;

	if (!missing)
		return 0;
	pr_err("--pv: KVM does not offer the PV feature bit(s) 0x%x (CPUID 0x40000001 EAX is 0x%x)",
	       missing, offered);
	return -EOPNOTSUPP;
}

uint32_t vm_pv_features(struct vm *vm)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(vm->cpuid, 0x40000001, 0);

	return e ? e->eax & ~vm->cfg.pv.clear : 0;
}

void vm_cpu_topo(const struct vm *vm, unsigned int id, struct cpu_topo *t)
{
	const struct numa_config *n = &vm->cfg.numa;
	unsigned int widest = 1;

	*t = (struct cpu_topo){ .ncpus = vm->ncpus, .pkg_cpus = vm->ncpus, .core = id };
	if (n->nnodes && id < NUMA_MAX_VCPUS && n->vcpu_node[id] >= 0) {
		t->node = (unsigned int)n->vcpu_node[id];
		t->pkg_cpus = n->nodes[t->node].ncpus;
		t->core = 0;
		for (unsigned int c = 0; c < id; c++)
			if (n->vcpu_node[c] == n->vcpu_node[id])
				t->core++;
		for (unsigned int i = 0; i < n->nnodes; i++)
			if (n->nodes[i].ncpus > widest)
				widest = n->nodes[i].ncpus;
	} else {
		widest = vm->ncpus;
	}
	t->pkg_shift = cpuid_order_base_2(widest);
}

/* The fixed legacy devices every kumo VM has. */
static int register_devices(struct vm *vm)
{
	struct irq_line com1_irq = { vm_irq_set, vm, SERIAL_COM1_IRQ };
	int ret;

	serial_init(&vm->com1, &com1_irq, vm->cfg.console_out_fd);
	acpi_pm_init(&vm->pm, vm_pm_event, vm);
	rtc_init(&vm->rtc);
	if ((ret = bus_register(&vm->pio, SERIAL_COM1_PORT, 8, &serial_ops, &vm->com1, "com1")) ||
	    (ret = bus_register(&vm->pio, 0x70, 2, &rtc_ops, &vm->rtc, "rtc")) ||
	    (ret = bus_register(&vm->pio, ACPI_PM1A_EVT_PORT, 4, &acpi_pm_evt_ops, &vm->pm,
				"pm1a_evt")) ||
	    (ret = bus_register(&vm->pio, ACPI_PM1A_CNT_PORT, 2, &acpi_pm_cnt_ops, &vm->pm,
				"pm1a_cnt")) ||
	    (ret = bus_register(&vm->pio, 0x64, 1, &kbd_reset_ops, &vm->pm, "kbd-reset")))
		pr_err("registering a legacy device: %s", strerror(-ret));
	return ret;
}

int vm_create(struct vm *vm, const struct vm_config *cfg)
{
	int ret;

	memset(vm, 0, sizeof(*vm));
	vm->cfg = *cfg;
	if (cfg->agent_socket == cfg->agent_socket_buf)	/* keep pointing into our copy */
		vm->cfg.agent_socket = vm->cfg.agent_socket_buf;
	vm->ncpus = cfg->ncpus;
	vm->start_ns = vm_now_ns();
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	vm->pvm = pvm_on(cfg);

	ret = kvm_init(&vm->kvm, cfg->ncpus);
	if (ret < 0)
		goto err_bus;
	ret = create_memory(vm);
	if (ret < 0)
		goto err_kvm;
	for (unsigned int i = 0; i + 1 < cfg->numa.nnodes; i++)
		if (!cfg->numa.nodes[i].ncpus && cfg->numa.nodes[i + 1].ncpus)
			pr_warn("--numa: node %u has no vCPUs but a later node has; Linux numbers "
				"CPU-less nodes after the others, so the guest's node numbers will "
				"differ from these (list CPU-less nodes last)", i);
	if (cfg->halt_poll_set) {
		ret = kvm_set_halt_poll(&vm->kvm, cfg->halt_poll_ns);
		if (ret < 0) {
			pr_err("--pv halt-poll-ns: KVM_CAP_HALT_POLL: %s", strerror(-ret));
			goto err_mem;
		}
	}
	ret = kvm_map_memory(&vm->kvm, &vm->mem);
	if (ret < 0)
		goto err_mem;
	ret = register_devices(vm);
	if (ret < 0)
		goto err_mem;
	ret = pci_host_init(&vm->pci, &vm->pio, &vm->mmio);
	if (ret < 0) {
		pr_err("PCI host bridge: %s", strerror(-ret));
		goto err_mem;
	}
	/* The reset register 0xcf9 sits inside CONFIG_ADDRESS: the host bridge passes it on. */
	pci_host_set_reset_port(&vm->pci, &acpi_reset_ops, &vm->pm);
	ret = create_virtio_devices(vm);
	if (ret < 0)
		goto err_virtio;
	ret = cpuid_get_supported(&vm->kvm, &vm->cpuid);
	if (ret < 0)
		goto err_virtio;
	ret = check_pv_features(vm);
	if (ret < 0)
		goto err_cpuid;
	vm->vcpus = calloc(cfg->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		ret = -ENOMEM;
		goto err_cpuid;
	}
	for (unsigned int i = 0; i < cfg->ncpus; i++) {
		ret = vcpu_create(vm, i, &vm->vcpus[i]);
		if (ret < 0)
			goto err_vcpus;
	}
	return 0;

err_vcpus:
	for (unsigned int i = 0; i < cfg->ncpus; i++)
		vcpu_destroy(vm->vcpus[i]);
	free(vm->vcpus);
err_cpuid:
	free(vm->cpuid);
err_virtio:
	destroy_virtio_devices(vm);
	pci_host_destroy(&vm->pci);
err_mem:
	mm_free(&vm->mem);
err_kvm:
	kvm_exit(&vm->kvm);
err_bus:
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	return ret;
}

void vm_destroy(struct vm *vm)
{
	for (unsigned int i = 0; i < vm->ncpus && vm->vcpus; i++)
		vcpu_destroy(vm->vcpus[i]);
	free(vm->vcpus);
	free(vm->cpuid);
	destroy_virtio_devices(vm);
	pci_host_destroy(&vm->pci);
	mm_free(&vm->mem);
	kvm_exit(&vm->kvm);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
}

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
	const char *quirks = pvm_on(cfg) ? pvm_cmdline_quirks : "";
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
	ret = mm_layout_nodes(&layout, spec, ram_spec(cfg, spec), cfg->hugepages);
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
		ret = boot_parse_kernel(b->kernel_file, b->kernel_len, layout.ram_size, &b->kernel);
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

void vm_request_stop(struct vm *vm, enum vm_stop_reason why, int status)
{
	static const char *const reasons[] = {
		[VM_STOP_POWEROFF] = "poweroff", [VM_STOP_RESET] = "reset", [VM_STOP_USER] = "user",
		[VM_STOP_ERROR] = "error", [VM_STOP_EMULATION] = "emulation-failure",
	};
	int first = 0;

	pthread_mutex_lock(&vm->lock);
	if (!vm->stop) {
		first = 1;
		vm->stop_status = status;
		__atomic_store_n(&vm->stop, why, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&vm->cond);
		/* Kick under the lock: vm_wait() joins the threads only after taking it. */
		for (unsigned int i = 0; i < vm->ncpus; i++)
			if (vm->vcpus && vm->vcpus[i])
				vcpu_kick(vm->vcpus[i]);
	}
	pthread_mutex_unlock(&vm->lock);
	if (first) {
		struct json_object *d = json_object_new_object();

		json_object_object_add(d, "reason", json_object_new_string(reasons[why]));
		json_object_object_add(d, "exit_status", json_object_new_int(status));
		vm_control_event(vm, "stopping", d);
	}
}

int vm_pause(struct vm *vm)
{
	int ret = 0;

	pthread_mutex_lock(&vm->lock);
	vm->pause_req = 1;
	for (unsigned int i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i]->started)
			vcpu_kick(vm->vcpus[i]);
	while (!vm->stop && vm->nparked < vm->nstarted)
		pthread_cond_wait(&vm->cond, &vm->lock);
	if (vm->stop)
		ret = -ESHUTDOWN;
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

int vm_resume(struct vm *vm)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	vm->pause_req = 0;
	ret = vm->stop ? -ESHUTDOWN : 0;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

int vm_is_paused(struct vm *vm)
{
	int paused;

	pthread_mutex_lock(&vm->lock);
	paused = vm->pause_req && vm->nparked == vm->nstarted;
	pthread_mutex_unlock(&vm->lock);
	return paused;
}

void vm_vcpu_park_point(struct vm *vm, struct vcpu *vcpu)
{
	if (!__atomic_load_n(&vm->pause_req, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&vm->lock);
	vm->nparked++;
	pthread_cond_broadcast(&vm->cond);
	while (vm->pause_req && !vm->stop)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->nparked--;
	/* The kick that parked us left immediate_exit set; a stop sets it again itself. */
	if (!vm->stop)
		__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->lock);
}

int vm_pin_vcpu(struct vm *vm, unsigned int id, const void *set, size_t setsize)
{
	if (id >= vm->ncpus || !vm->vcpus[id]->started)
		return -EINVAL;
	return -pthread_setaffinity_np(vm->vcpus[id]->thread, setsize, set);
}

/* --cpu-pin: one host CPU, or with "numa" the host CPUs of the vCPU's node's host node. */
static int pin_at_start(struct vm *vm, unsigned int id)
{
	const struct numa_config *n = &vm->cfg.numa;
	cpu_set_t set;
	int ret, host = -1;

	CPU_ZERO(&set);
	if (vm->cfg.pin_numa) {
		if (n->nnodes && n->vcpu_node[id] >= 0)
			host = n->nodes[n->vcpu_node[id]].host_node;
		if (host < 0)
			return 0;	/* a node without host-node= floats */
		ret = numa_host_node_cpus(host, &set);
		if (ret < 0) {
			pr_err("--cpu-pin numa: CPUs of host node %d: %s", host, strerror(-ret));
			return ret;
		}
	} else if (id < NUMA_MAX_VCPUS && vm->cfg.pin_cpu[id]) {
		CPU_SET(vm->cfg.pin_cpu[id] - 1, &set);
	} else {
		return 0;
	}
	ret = vm_pin_vcpu(vm, id, &set, sizeof(set));
	if (ret < 0)
		pr_err("--cpu-pin: pinning vCPU %u: %s", id, strerror(-ret));
	else
		pr_debug("vCPU %u pinned to %d host CPU(s)", id, CPU_COUNT(&set));
	return ret;
}

int vm_start(struct vm *vm)
{
	sigset_t set, old;
	int ret = 0;

	/* vCPU threads unblock SIGUSR1 themselves; everyone else keeps it blocked. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = vm->vcpus[i];

		/*
		 * Counted before its thread exists: a vm_pause() meanwhile then waits for it too
		 * (the thread parks before its first KVM_RUN) instead of returning while an
		 * earlier vCPU still runs because this one parked first.
		 */
		pthread_mutex_lock(&vm->lock);
		vm->nstarted++;
		pthread_mutex_unlock(&vm->lock);
		ret = -pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (ret) {
			pr_err("starting vCPU %u: %s", i, strerror(-ret));
			pthread_mutex_lock(&vm->lock);
			vm->nstarted--;
			pthread_cond_broadcast(&vm->cond);
			pthread_mutex_unlock(&vm->lock);
			vm_request_stop(vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
			break;
		}
		v->started = 1;
		ret = pin_at_start(vm, i);
		if (ret) {
			vm_request_stop(vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
			break;
		}
	}
	return ret;
}

int vm_wait(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	while (!vm->stop)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	for (unsigned int i = 0; i < vm->ncpus; i++) {
		if (vm->vcpus[i]->started) {
			vcpu_kick(vm->vcpus[i]);
			pthread_join(vm->vcpus[i]->thread, NULL);
			vm->vcpus[i]->started = 0;
		}
	}
	return vm->stop_status;
}
