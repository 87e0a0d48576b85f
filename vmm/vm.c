/*
 * The machine builder: one VM from its config (KVM, memory, buses, fixed devices, virtio
 * devices, vCPUs), and how it is torn down. Running it is vmm/vm-run.c; putting Linux in it
 * for a fresh boot is vmm/linux-loader.c, which a restore does not use.
 *
 * Everything the guest can see of the machine's wiring is a function of the config alone, so
 * a second process given the same config builds the same machine to load a snapshot into:
 * - PCI slots and BARs: virtio devices are added only here, in create_virtio_devices(), in a
 *   fixed order (disks and nets in config order, balloon, console); pci_host_add() gives each
 *   the first free slot from 1 and its BARs from a bump allocator, nothing adds or removes a PCI
 *   device after vm_create(). Same config, same slot and same initial BARs for each device.
 * - Legacy GSIs are constants (vmm/layout.h: COM1 on GSI 4; GSIs 0-23 are the IOAPIC pins
 *   that routes_init() in vmm/kvm.c sets up the same way every time). virtio devices have no
 *   INTx line, only MSI-X.
 * - MSI-X GSIs are not fixed: kvm_msi_route() hands out GSIs from 24 up in the order the
 *   guest first unmasks vectors at run time. They are host-side handles of KVM's routing
 *   table, never seen by the guest (it sees only each vector's address/data in the MSI-X
 *   table), and not in the snapshot; a restore re-creates the routes from the restored MSI-X
 *   tables instead of expecting the same numbers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "devices/virtio-console.h"
#include "devices/virtio-pci.h"
#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/log.h"
#include "vmm/pvm.h"
#include "vmm/migration.h"
#include "vmm/snapshot.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

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

/* Enter a device in the VM's list (devices/dev.h); names are the state's node names. */
static int add_dev(struct vm *vm, const char *name, const struct dev_ops *ops, void *state)
{
	struct dev *d;

	if (vm->ndevs == VM_MAX_DEVS)
		return -ENOSPC;
	d = &vm->devs[vm->ndevs++];
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->ops = ops;
	d->state = state;
	return 0;
}

/* Put a virtio device on the PCI bus; on failure the device is destroyed. */
static int add_virtio(struct vm *vm, struct virtio_dev *vdev, void (*destroy)(struct virtio_dev *))
{
	struct vm_virtio *v = &vm->virtio[vm->nvirtio];
	int ret = virtio_pci_create(&vm->pci, &vm->env, vdev, &v->pci);
	char name[32];

	if (ret < 0) {
		destroy(vdev);
		return ret;
	}
	v->vdev = vdev;
	v->destroy = destroy;
	vm->nvirtio++;
	/* The slot follows the config (see the top of this file), so the name does too. */
	snprintf(name, sizeof(name), "%s@%02x", vdev->ops->name, v->pci->pci.slot);
	return add_dev(vm, name, &virtio_pci_dev_ops, v->pci);
}

/* virtio devices from the configuration: disks, nets, balloon, then the console. */
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
	for (unsigned int i = 0; i < vm->cfg.nnets; i++) {
		const struct net_options *o = &vm->cfg.nets[i];

		ret = virtio_net_create(&vm->env, o, &vdev);
		if (ret < 0) {
			pr_err("--net tap=%s: %s", o->tap, strerror(-ret));
			return ret;
		}
		ret = add_virtio(vm, vdev, virtio_net_destroy);
		if (ret < 0) {
			pr_err("--net tap=%s: adding it to PCI: %s", o->tap, strerror(-ret));
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
int vm_ram_spec(const struct vm_config *cfg, struct mm_node_spec *spec)
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
int vm_pvm_on(const struct vm_config *cfg)
{
	return cfg->pvm_quirks && pvm_detect();
}

/* Guest RAM, one memfd per virtual node, bound to its host node. */
static int create_memory(struct vm *vm)
{
	const struct numa_config *n = &vm->cfg.numa;
	struct mm_node_spec spec[MM_MAX_NODES];
	int nr = vm_ram_spec(&vm->cfg, spec), ret;

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
	    (ret = bus_register(&vm->pio, 0x64, 1, &kbd_reset_ops, &vm->pm, "kbd-reset")) ||
	    (ret = add_dev(vm, "serial@3f8", &serial_dev_ops, &vm->com1)) ||
	    (ret = add_dev(vm, "rtc@70", &rtc_dev_ops, &vm->rtc)) ||
	    (ret = add_dev(vm, "acpi-pm@600", &acpi_pm_dev_ops, &vm->pm)))
		pr_err("registering a legacy device: %s", strerror(-ret));
	return ret;
}

int vm_create(struct vm *vm, const struct vm_config *cfg)
{
	int ret;

	memset(vm, 0, sizeof(*vm));
	vm->lazy_fd = -1;
	vm->cfg = *cfg;
	if (cfg->agent_socket == cfg->agent_socket_buf)	/* keep pointing into our copy */
		vm->cfg.agent_socket = vm->cfg.agent_socket_buf;
	vm->ncpus = cfg->ncpus;
	vm->start_ns = vm_now_ns();
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	vm->pvm = vm_pvm_on(cfg);

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
	ret = add_dev(vm, "pci-host", &pci_host_dev_ops, &vm->pci);
	if (ret < 0)
		goto err_virtio;
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
	vm_migration_end(vm);	/* the sender joined, a post-copy source told */
	vm_restore_end(vm);	/* no vCPU waits on a fault any more */
	free(vm->cpuid);
	destroy_virtio_devices(vm);
	pci_host_destroy(&vm->pci);
	mm_free(&vm->mem);
	kvm_exit(&vm->kvm);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
}
