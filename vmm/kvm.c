#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "mm/mem.h"
#include "vmm/kvm.h"
#include "vmm/log.h"

long __kvm_ioctl(int fd, unsigned long req, void *arg, const char *name)
{
	long ret;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret < 0 && errno == EAGAIN && req != KVM_RUN);
	if (ret < 0) {
		ret = -errno;
		/* KVM_RUN is interrupted on purpose when we stop a vCPU. */
		if (!(req == KVM_RUN && ret == -EINTR))
			pr_err("%s: %s", name, strerror(-ret));
	}
	return ret;
}

int kvm_check_extension(struct kvm *kvm, long cap)
{
	int ret = ioctl(kvm->vm_fd >= 0 ? kvm->vm_fd : kvm->sys_fd, KVM_CHECK_EXTENSION, cap);

	return ret < 0 ? 0 : ret;
}

static const struct {
	long cap;
	const char *name;
} required_caps[] = {
#define CAP(c) { c, #c }
	CAP(KVM_CAP_IRQCHIP),
	CAP(KVM_CAP_USER_MEMORY),
	CAP(KVM_CAP_EXT_CPUID),
	CAP(KVM_CAP_PIT2),
	CAP(KVM_CAP_IRQ_ROUTING),
	CAP(KVM_CAP_IRQFD),
	CAP(KVM_CAP_IOEVENTFD),
	CAP(KVM_CAP_IMMEDIATE_EXIT),
	CAP(KVM_CAP_MP_STATE),
	CAP(KVM_CAP_VCPU_EVENTS),
#undef CAP
};

static int routes_init(struct kvm *kvm);

static int enable_cap(struct kvm *kvm, uint32_t cap, uint64_t arg0)
{
	struct kvm_enable_cap ec = { .cap = cap, .args = { arg0 } };

	return ioctl(kvm->vm_fd, KVM_ENABLE_CAP, &ec) < 0 ? -errno : 0;
}

int kvm_set_halt_poll(struct kvm *kvm, uint64_t ns)
{
	if (kvm_check_extension(kvm, KVM_CAP_HALT_POLL) <= 0)
		return -EOPNOTSUPP;
	return enable_cap(kvm, KVM_CAP_HALT_POLL, ns);
}

int kvm_init(struct kvm *kvm, unsigned int ncpus)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	int ret, version;

	memset(kvm, 0, sizeof(*kvm));
	kvm->vm_fd = -1;
	kvm->sys_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm->sys_fd < 0) {
		/* A host without KVM is a host state (exit 1), not bad input like a missing file. */
		ret = errno == ENOENT ? -ENODEV : -errno;
		pr_err("cannot open /dev/kvm: %s", strerror(errno));
		return ret;
	}
	version = ioctl(kvm->sys_fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		pr_err("KVM API version %d, kumo needs %d", version, KVM_API_VERSION);
		ret = -EINVAL;
		goto err_sys;
	}
	ret = kvm_ioctl(kvm->sys_fd, KVM_CREATE_VM, 0);
	if (ret < 0)
		goto err_sys;
	kvm->vm_fd = ret;
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (!kvm_check_extension(kvm, required_caps[i].cap)) {
			pr_err("KVM lacks %s, which kumo needs", required_caps[i].name);
			ret = -ENOTSUP;
			goto err_vm;
		}
	}
	kvm->max_vcpus = kvm_check_extension(kvm, KVM_CAP_MAX_VCPUS);
	if (!kvm->max_vcpus)
		kvm->max_vcpus = kvm_check_extension(kvm, KVM_CAP_NR_VCPUS);
	if (ncpus > (unsigned int)kvm->max_vcpus) {
		pr_err("%u vCPUs requested, KVM allows %d", ncpus, kvm->max_vcpus);
		ret = -E2BIG;
		goto err_vm;
	}
	kvm->run_size = ioctl(kvm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (kvm->run_size < (int)sizeof(struct kvm_run)) {
		pr_err("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		ret = -EINVAL;
		goto err_vm;
	}
	/* Only needed by VMX real-mode emulation; other KVMs may refuse it harmlessly. */
	if (kvm_check_extension(kvm, KVM_CAP_SET_TSS_ADDR) &&
	    ioctl(kvm->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		pr_debug("KVM_SET_TSS_ADDR: %s", strerror(errno));
	if (ncpus > 254 && kvm_check_extension(kvm, KVM_CAP_X2APIC_API)) {
		if (enable_cap(kvm, KVM_CAP_X2APIC_API, KVM_X2APIC_API_USE_32BIT_IDS |
			       KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK) == 0)
			kvm->x2apic_api = 1;
	}
	ret = kvm_ioctl(kvm->vm_fd, KVM_CREATE_IRQCHIP, 0);
	if (ret < 0)
		goto err_vm;
	ret = kvm_ioctl(kvm->vm_fd, KVM_CREATE_PIT2, &pit);
	if (ret < 0)
		goto err_vm;
	ret = routes_init(kvm);
	if (ret < 0)
		goto err_vm;
	/* Emulation failures come to us with the instruction bytes (vmm/pvm.c handles them). */
	if (kvm_check_extension(kvm, KVM_CAP_EXIT_ON_EMULATION_FAILURE) &&
	    enable_cap(kvm, KVM_CAP_EXIT_ON_EMULATION_FAILURE, 1) == 0)
		kvm->emul_failure_exits = 1;
	return 0;

err_vm:
	close(kvm->vm_fd);
err_sys:
	close(kvm->sys_fd);
	kvm->sys_fd = kvm->vm_fd = -1;
	return ret;
}

#define IOAPIC_PINS 24
#define MAX_ROUTES 1024

/* The routing KVM starts with: GSI n on IOAPIC pin n, and on the PICs for n < 16. */
static int routes_init(struct kvm *kvm)
{
	struct kvm_irq_routing *r;

	r = calloc(1, sizeof(*r) + MAX_ROUTES * sizeof(r->entries[0]));
	if (!r)
		return -ENOMEM;
	for (uint32_t gsi = 0; gsi < IOAPIC_PINS; gsi++) {
		r->entries[r->nr++] = (struct kvm_irq_routing_entry){
			.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi } };
		if (gsi < 16 && gsi != 2)
			r->entries[r->nr++] = (struct kvm_irq_routing_entry){
				.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
				.u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER
								  : KVM_IRQCHIP_PIC_SLAVE,
					       .pin = gsi % 8 } };
	}
	pthread_mutex_init(&kvm->routes_lock, NULL);
	kvm->routes = r;
	kvm->next_gsi = IOAPIC_PINS;
	return 0;
}

int kvm_msi_route(struct kvm *kvm, uint32_t *gsi, uint64_t addr, uint32_t data)
{
	struct kvm_irq_routing *r = kvm->routes;
	struct kvm_irq_routing_entry *e = NULL;
	long ret;

	pthread_mutex_lock(&kvm->routes_lock);
	if (*gsi) {
		for (uint32_t i = 0; i < r->nr; i++)
			if (r->entries[i].gsi == *gsi && r->entries[i].type == KVM_IRQ_ROUTING_MSI)
				e = &r->entries[i];
		if (!e) {
			ret = -ENOENT;
			goto out;
		}
	} else {
		if (r->nr == MAX_ROUTES) {
			ret = -ENOSPC;
			goto out;
		}
		e = &r->entries[r->nr++];
		*e = (struct kvm_irq_routing_entry){ .gsi = kvm->next_gsi++,
						     .type = KVM_IRQ_ROUTING_MSI };
		*gsi = e->gsi;
	}
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
	ret = kvm_ioctl(kvm->vm_fd, KVM_SET_GSI_ROUTING, r);
out:
	pthread_mutex_unlock(&kvm->routes_lock);
	return ret < 0 ? (int)ret : 0;
}

int kvm_irqfd(struct kvm *kvm, int fd, uint32_t gsi, int assign)
{
	struct kvm_irqfd irqfd = { .fd = (uint32_t)fd, .gsi = gsi,
				   .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN };

	return (int)kvm_ioctl(kvm->vm_fd, KVM_IRQFD, &irqfd);
}

int kvm_ioeventfd(struct kvm *kvm, int fd, uint64_t addr, uint32_t len, int assign)
{
	struct kvm_ioeventfd io = { .addr = addr, .len = len, .fd = fd,
				    .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN };

	return (int)kvm_ioctl(kvm->vm_fd, KVM_IOEVENTFD, &io);
}

void kvm_exit(struct kvm *kvm)
{
	free(kvm->routes);
	kvm->routes = NULL;
	if (kvm->vm_fd >= 0)
		close(kvm->vm_fd);
	if (kvm->sys_fd >= 0)
		close(kvm->sys_fd);
	kvm->vm_fd = kvm->sys_fd = -1;
}

int kvm_map_memory(struct kvm *kvm, const struct guest_mem *m)
{
	for (int i = 0; i < m->nr_regions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = (uint32_t)kvm->nr_slots,
			.guest_phys_addr = m->regions[i].gpa,
			.memory_size = m->regions[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)m->regions[i].hva,
		};
		long ret = kvm_ioctl(kvm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r);

		if (ret < 0)
			return (int)ret;
		kvm->nr_slots++;
	}
	return 0;
}

int kvm_irq_line(struct kvm *kvm, uint32_t gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };

	return (int)kvm_ioctl(kvm->vm_fd, KVM_IRQ_LINE, &irq);
}
