#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "mm/dirty.h"
#include "mm/mem.h"
#include "vmm/kvm-state.h"
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

struct cap_name {
	long cap;
	const char *name;
};

#define CAP(c) { c, #c }
static const struct cap_name required_caps[] = {
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
};

/* What saving or loading any vCPU or VM state needs; XSAVE, XCRS, SREGS2, XSAVE2 and
 * TSC_CONTROL are used when there. */
static const struct cap_name state_caps[] = {
	CAP(KVM_CAP_IRQCHIP),
	CAP(KVM_CAP_PIT_STATE2),
	CAP(KVM_CAP_ADJUST_CLOCK),
	CAP(KVM_CAP_EXT_CPUID),
	CAP(KVM_CAP_GET_TSC_KHZ),
	CAP(KVM_CAP_MP_STATE),
	CAP(KVM_CAP_VCPU_EVENTS),
	CAP(KVM_CAP_DEBUGREGS),
};
#undef CAP

/* The name of the first of n capabilities KVM lacks, or NULL. */
static const char *missing_cap(struct kvm *kvm, const struct cap_name *caps, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!kvm_check_extension(kvm, caps[i].cap))
			return caps[i].name;
	return NULL;
}

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
	const char *missing;
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
	missing = missing_cap(kvm, required_caps, sizeof(required_caps) / sizeof(required_caps[0]));
	if (missing) {
		pr_err("KVM lacks %s, which kumo needs", missing);
		ret = -ENOTSUP;
		goto err_vm;
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

static int set_ram_slot(struct kvm *kvm, const struct guest_mem *m, const struct mm_region *r,
			uint32_t flags)
{
	struct kvm_userspace_memory_region slot = {
		.slot = (uint32_t)(kvm->ram_slot0 + mm_region_index(m, r)),
		.flags = flags,
		.guest_phys_addr = r->gpa,
		.memory_size = r->size,
		.userspace_addr = (uint64_t)(uintptr_t)r->hva,
	};

	return (int)kvm_ioctl(kvm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot);
}

int kvm_map_memory(struct kvm *kvm, const struct guest_mem *m)
{
	const struct mm_region *r;

	kvm->ram_slot0 = kvm->nr_slots;
	mm_for_each_region(m, r) {
		int ret = set_ram_slot(kvm, m, r, 0);

		if (ret < 0)
			return ret;
		kvm->nr_slots++;
	}
	return 0;
}

/* ---- dirty logging ---- */

static int set_ram_slot_flags(struct kvm *kvm, const struct guest_mem *m, uint32_t flags)
{
	const struct mm_region *r;

	mm_for_each_region(m, r) {
		int ret = set_ram_slot(kvm, m, r, flags);

		if (ret < 0)
			return ret;
	}
	return 0;
}

int kvm_dirty_log_start(struct kvm *kvm, struct guest_mem *m)
{
	int caps = kvm_check_extension(kvm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), ret;

	/* Manual protect: KVM_GET_DIRTY_LOG leaves pages writable until KVM_CLEAR_DIRTY_LOG. */
	if (kvm->dirty_manual == 0 && caps > 0 && (caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
					      .args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE };

		if (kvm_ioctl(kvm->vm_fd, KVM_ENABLE_CAP, &cap) == 0)
			kvm->dirty_manual = 1;
	}
	ret = mm_dirty_start(m);
	if (ret < 0)
		return ret;
	ret = set_ram_slot_flags(kvm, m, KVM_MEM_LOG_DIRTY_PAGES);
	if (ret < 0) {
		(void)set_ram_slot_flags(kvm, m, 0);
		mm_dirty_stop(m);
	}
	return ret;
}

int kvm_dirty_log_stop(struct kvm *kvm, struct guest_mem *m)
{
	int ret = set_ram_slot_flags(kvm, m, 0);

	mm_dirty_stop(m);
	return ret;
}

int kvm_dirty_log_sync(struct kvm *kvm, struct guest_mem *m)
{
	const struct mm_region *r;
	uint64_t *bits = NULL;
	int ret = 0;

	if (!m->dirty)
		return -ENODEV;
	mm_for_each_region(m, r) {
		int i = mm_region_index(m, r);
		uint64_t words = mm_dirty_words(m, i);
		struct kvm_dirty_log log = { .slot = (uint32_t)(kvm->ram_slot0 + i) };

		free(bits);
		bits = calloc(words, sizeof(*bits));
		if (!bits)
			return -ENOMEM;
		log.dirty_bitmap = bits;
		ret = (int)kvm_ioctl(kvm->vm_fd, KVM_GET_DIRTY_LOG, &log);
		if (ret < 0)
			break;
		ret = mm_dirty_merge(m, i, bits);
		if (ret < 0)
			break;
		if (kvm->dirty_manual > 0) {
			/* Write-protect again exactly the pages just taken; the slot's end is whole. */
			struct kvm_clear_dirty_log clr = {
				.slot = log.slot, .first_page = 0,
				.num_pages = (uint32_t)(r->size >> 12), .dirty_bitmap = bits,
			};

			ret = (int)kvm_ioctl(kvm->vm_fd, KVM_CLEAR_DIRTY_LOG, &clr);
			if (ret < 0)
				break;
		}
	}
	free(bits);
	return ret;
}

int kvm_irq_line(struct kvm *kvm, uint32_t gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };

	return (int)kvm_ioctl(kvm->vm_fd, KVM_IRQ_LINE, &irq);
}

/* ---- vCPU and VM state (vmm/kvm-state.h) ---- */

static int check_state_caps(struct kvm *kvm, const char *what)
{
	const char *missing = missing_cap(kvm, state_caps, sizeof(state_caps) / sizeof(state_caps[0]));

	if (!missing)
		return 0;
	pr_err("%s: KVM lacks %s", what, missing);
	return -ENOTSUP;
}

#define MSR_IA32_TSC_DEADLINE 0x6e0
#define HV_MSR_FIRST 0x40000000u
#define HV_MSR_LAST 0x400000ffu

int kvm_state_msr_saved(uint32_t index)
{
	return index < HV_MSR_FIRST || index > HV_MSR_LAST;
}

struct kvm_msr_entry *kvm_vcpu_state_msr(struct kvm_vcpu_state *s, uint32_t index)
{
	for (uint32_t i = 0; i < s->nmsrs && i < KVM_STATE_MAX_MSRS; i++)
		if (s->msrs[i].index == index)
			return &s->msrs[i];
	return NULL;
}

/* Bytes KVM_GET_XSAVE2/KVM_SET_XSAVE move for this VM; 0 without XSAVE. */
static uint32_t xsave_size(struct kvm *kvm)
{
	int size = kvm_check_extension(kvm, KVM_CAP_XSAVE2);

	if (size <= 0)
		size = kvm_check_extension(kvm, KVM_CAP_XSAVE) ? (int)sizeof(struct kvm_xsave) : 0;
	return (uint32_t)size;
}

/* KVM_GET_MSRS or KVM_SET_MSRS on n entries; returns how many it did, or -errno. */
static long msrs_io(int fd, struct kvm_msr_entry *e, uint32_t n, int set)
{
	struct kvm_msrs *m = malloc(sizeof(*m) + n * sizeof(*e));
	long ret;

	if (!m)
		return -ENOMEM;
	m->nmsrs = n;
	m->pad = 0;
	memcpy(m->entries, e, n * sizeof(*e));
	ret = set ? kvm_ioctl(fd, KVM_SET_MSRS, m) : kvm_ioctl(fd, KVM_GET_MSRS, m);
	if (ret > 0 && !set)
		memcpy(e, m->entries, (size_t)ret * sizeof(*e));
	free(m);
	return ret;
}

/* KVM's MSR index list, read into s->msrs with what KVM_GET_MSRS refuses dropped. */
static int get_msrs(struct kvm *kvm, int fd, struct kvm_vcpu_state *s)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list;
	uint32_t n = 0, done = 0;
	long ret;

	/* The first call fails with E2BIG and says how many there are. */
	if (ioctl(kvm->sys_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG) {
		ret = -errno;
		pr_err("KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
		return (int)ret;
	}
	list = malloc(sizeof(*list) + probe.nmsrs * sizeof(list->indices[0]));
	if (!list)
		return -ENOMEM;
	list->nmsrs = probe.nmsrs;
	ret = kvm_ioctl(kvm->sys_fd, KVM_GET_MSR_INDEX_LIST, list);
	for (uint32_t i = 0; ret >= 0 && i < list->nmsrs; i++) {
		if (!kvm_state_msr_saved(list->indices[i]))
			continue;
		if (n == KVM_STATE_MAX_MSRS) {
			pr_err("KVM_GET_MSR_INDEX_LIST: more than %d MSRs to save", KVM_STATE_MAX_MSRS);
			ret = -E2BIG;
			break;
		}
		s->msrs[n++] = (struct kvm_msr_entry){ .index = list->indices[i] };
	}
	free(list);
	/* KVM_GET_MSRS stops at the first MSR it refuses (one this vCPU's CPUID lacks). */
	while (ret >= 0 && done < n) {
		ret = msrs_io(fd, s->msrs + done, n - done, 0);
		if (ret < 0)
			break;
		done += (uint32_t)ret;
		if (done < n) {
			pr_debug("KVM_GET_MSRS refuses MSR 0x%x: not saved", s->msrs[done].index);
			memmove(s->msrs + done, s->msrs + done + 1, (n - done - 1) * sizeof(s->msrs[0]));
			n--;
		}
	}
	s->nmsrs = n;
	return ret < 0 ? (int)ret : 0;
}

/* Load the TSC deadline (deadline=1) or every other MSR; names the one KVM refuses. */
static int set_msrs(int fd, const struct kvm_vcpu_state *s, int deadline)
{
	struct kvm_msr_entry e[KVM_STATE_MAX_MSRS];
	uint32_t n = 0;
	long ret;

	for (uint32_t i = 0; i < s->nmsrs; i++)
		if ((s->msrs[i].index == MSR_IA32_TSC_DEADLINE) == deadline)
			e[n++] = s->msrs[i];
	if (!n)
		return 0;
	ret = msrs_io(fd, e, n, 1);
	if (ret >= 0 && (uint32_t)ret < n) {
		pr_err("KVM_SET_MSRS: MSR 0x%x (value 0x%llx) refused", e[ret].index,
		       (unsigned long long)e[ret].data);
		return -EINVAL;
	}
	return ret < 0 ? (int)ret : 0;
}

/*
 * KVM_GET_CPUID2 into s. Linux 6.1 reports the number of entries neither on success (nent
 * stays as passed) nor with E2BIG, so find the smallest nent it accepts: that is the count.
 */
static int get_cpuid(int fd, struct kvm_vcpu_state *s)
{
	struct kvm_cpuid2 *c = malloc(sizeof(*c) + KVM_STATE_MAX_CPUID * sizeof(c->entries[0]));
	int lo = -1, hi = KVM_STATE_MAX_CPUID + 1;	/* nent lo is refused, hi accepted */
	int ret = 0;

	if (!c)
		return -ENOMEM;
	while (hi - lo > 1) {
		int mid = lo + (hi - lo) / 2;

		c->nent = (uint32_t)mid;
		if (ioctl(fd, KVM_GET_CPUID2, c) == 0) {
			hi = mid;
		} else if (errno == E2BIG) {
			lo = mid;
		} else {
			ret = -errno;
			pr_err("KVM_GET_CPUID2: %s", strerror(errno));
			goto out;
		}
	}
	if (hi > KVM_STATE_MAX_CPUID) {
		pr_err("KVM_GET_CPUID2: more than %d entries", KVM_STATE_MAX_CPUID);
		ret = -E2BIG;
		goto out;
	}
	c->nent = (uint32_t)hi;
	ret = (int)kvm_ioctl(fd, KVM_GET_CPUID2, c);
	if (ret >= 0) {
		s->ncpuid = (uint32_t)hi;
		memcpy(s->cpuid, c->entries, (size_t)hi * sizeof(c->entries[0]));
		ret = 0;
	}
out:
	free(c);
	return ret;
}

static int set_cpuid(int fd, const struct kvm_vcpu_state *s)
{
	struct kvm_cpuid2 *c = malloc(sizeof(*c) + s->ncpuid * sizeof(c->entries[0]));
	long ret;

	if (!c)
		return -ENOMEM;
	c->nent = s->ncpuid;
	c->padding = 0;
	memcpy(c->entries, s->cpuid, s->ncpuid * sizeof(c->entries[0]));
	ret = kvm_ioctl(fd, KVM_SET_CPUID2, c);
	free(c);
	return ret < 0 ? (int)ret : 0;
}

int kvm_vcpu_state_get(struct kvm *kvm, int fd, struct kvm_vcpu_state *s)
{
	long ret;

	if ((ret = check_state_caps(kvm, "saving a vCPU")))
		return (int)ret;
	memset(s, 0, sizeof(*s));
	s->has_sregs2 = kvm_check_extension(kvm, KVM_CAP_SREGS2) > 0;
	s->xsave_size = xsave_size(kvm);
	if (s->xsave_size > sizeof(s->xsave)) {
		pr_err("KVM_CAP_XSAVE2: %u bytes of XSAVE state, kumo keeps up to %zu",
		       s->xsave_size, sizeof(s->xsave));
		return -E2BIG;
	}
	if ((ret = get_cpuid(fd, s)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_TSC_KHZ, 0)) < 0)
		return (int)ret;
	s->tsc_khz = (uint32_t)ret;
	if ((ret = s->has_sregs2 ? kvm_ioctl(fd, KVM_GET_SREGS2, &s->sregs2)
				 : kvm_ioctl(fd, KVM_GET_SREGS, &s->sregs)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_REGS, &s->regs)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_FPU, &s->fpu)) < 0)
		return (int)ret;
	if (s->xsave_size) {
		ret = s->xsave_size > sizeof(struct kvm_xsave)
			      ? kvm_ioctl(fd, KVM_GET_XSAVE2, s->xsave)
			      : kvm_ioctl(fd, KVM_GET_XSAVE, s->xsave);
		if (ret < 0)
			return (int)ret;
	}
	/* Only hosts with XSAVE have XCRs; KVM's XSAVE calls work without (x87 and SSE). */
	if (kvm_check_extension(kvm, KVM_CAP_XCRS) > 0 &&
	    (ret = kvm_ioctl(fd, KVM_GET_XCRS, &s->xcrs)) < 0)
		return (int)ret;
	if ((ret = get_msrs(kvm, fd, s)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_VCPU_EVENTS, &s->events)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_MP_STATE, &s->mp_state)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_LAPIC, &s->lapic)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_GET_DEBUGREGS, &s->debugregs)) < 0)
		return (int)ret;
	return 0;
}

/*
 * The order is KVM's (and QEMU's, which found it the hard way): CPUID first, since XSAVE, XCR0
 * and many MSRs are checked against it; the TSC rate before the TSC; sregs before the LAPIC,
 * which takes the APIC base from them; events before the MP state (INIT/SIPI states are refused
 * while an SMI or latched INIT is pending); the TSC deadline only once the LAPIC timer is in
 * deadline mode, else KVM ignores it.
 */
int kvm_vcpu_state_set(struct kvm *kvm, int fd, const struct kvm_vcpu_state *s)
{
	long ret;

	if (s->ncpuid > KVM_STATE_MAX_CPUID || s->nmsrs > KVM_STATE_MAX_MSRS ||
	    s->xsave_size > sizeof(s->xsave) || s->has_sregs2 > 1 ||
	    s->xcrs.nr_xcrs > KVM_MAX_XCRS) {
		pr_err("loading a vCPU: malformed state (%u CPUID entries, %u MSRs, %u bytes of "
		       "XSAVE)", s->ncpuid, s->nmsrs, s->xsave_size);
		return -EINVAL;
	}
	if ((ret = check_state_caps(kvm, "loading a vCPU")))
		return (int)ret;
	if ((s->has_sregs2 && kvm_check_extension(kvm, KVM_CAP_SREGS2) <= 0) ||
	    (s->xcrs.nr_xcrs && kvm_check_extension(kvm, KVM_CAP_XCRS) <= 0)) {
		pr_err("loading a vCPU: KVM lacks %s, which the state was saved with",
		       s->has_sregs2 && kvm_check_extension(kvm, KVM_CAP_SREGS2) <= 0
			       ? "KVM_CAP_SREGS2" : "KVM_CAP_XCRS");
		return -ENOTSUP;
	}
	/* KVM_SET_XSAVE reads as many bytes as this KVM's size, whatever the state's. */
	if (s->xsave_size > xsave_size(kvm) || xsave_size(kvm) > sizeof(s->xsave)) {
		pr_err("loading a vCPU: %u bytes of XSAVE state, KVM takes %u (KVM_CAP_XSAVE2)",
		       s->xsave_size, xsave_size(kvm));
		return -ENOTSUP;
	}
	if ((ret = set_cpuid(fd, s)) < 0)
		return (int)ret;
	ret = kvm_ioctl(fd, KVM_GET_TSC_KHZ, 0);
	if (ret >= 0 && (uint32_t)ret != s->tsc_khz)
		ret = kvm_ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)s->tsc_khz);
	if (ret < 0)
		return (int)ret;
	if ((ret = s->has_sregs2 ? kvm_ioctl(fd, KVM_SET_SREGS2, &s->sregs2)
				 : kvm_ioctl(fd, KVM_SET_SREGS, &s->sregs)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_SET_REGS, &s->regs)) < 0)
		return (int)ret;
	/* XSAVE holds the FPU state too; KVM_SET_FPU only where there is no XSAVE. */
	ret = s->xsave_size ? kvm_ioctl(fd, KVM_SET_XSAVE, s->xsave)
			    : kvm_ioctl(fd, KVM_SET_FPU, &s->fpu);
	if (ret < 0)
		return (int)ret;
	if (s->xcrs.nr_xcrs && (ret = kvm_ioctl(fd, KVM_SET_XCRS, &s->xcrs)) < 0)
		return (int)ret;
	if ((ret = set_msrs(fd, s, 0)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_SET_VCPU_EVENTS, &s->events)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_SET_MP_STATE, &s->mp_state)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_SET_LAPIC, &s->lapic)) < 0 ||
	    (ret = set_msrs(fd, s, 1)) < 0 ||
	    (ret = kvm_ioctl(fd, KVM_SET_DEBUGREGS, &s->debugregs)) < 0)
		return (int)ret;
	return 0;
}

static const uint32_t irqchip_ids[] = { KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
					KVM_IRQCHIP_IOAPIC };

static struct kvm_irqchip *vm_state_chip(struct kvm_vm_state *s, size_t i)
{
	struct kvm_irqchip *chips[] = { &s->pic_master, &s->pic_slave, &s->ioapic };

	return chips[i];
}

int kvm_vm_state_get(struct kvm *kvm, struct kvm_vm_state *s)
{
	long ret;

	if ((ret = check_state_caps(kvm, "saving the VM")))
		return (int)ret;
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < sizeof(irqchip_ids) / sizeof(irqchip_ids[0]); i++) {
		struct kvm_irqchip *c = vm_state_chip(s, i);

		c->chip_id = irqchip_ids[i];
		if ((ret = kvm_ioctl(kvm->vm_fd, KVM_GET_IRQCHIP, c)) < 0)
			return (int)ret;
	}
	if ((ret = kvm_ioctl(kvm->vm_fd, KVM_GET_PIT2, &s->pit)) < 0 ||
	    (ret = kvm_ioctl(kvm->vm_fd, KVM_GET_CLOCK, &s->clock)) < 0)
		return (int)ret;
	return 0;
}

/*
 * kvmclock goes on from the value saved: KVM_CLOCK_REALTIME is not passed, so the time the VM
 * spent saved is not added (QEMU does the same) and the guest sees no jump.
 */
int kvm_vm_state_set(struct kvm *kvm, const struct kvm_vm_state *s)
{
	struct kvm_vm_state w = *s;
	struct kvm_clock_data clock = { .clock = s->clock.clock };
	long ret;

	if ((ret = check_state_caps(kvm, "loading the VM")))
		return (int)ret;
	for (size_t i = 0; i < sizeof(irqchip_ids) / sizeof(irqchip_ids[0]); i++) {
		struct kvm_irqchip *c = vm_state_chip(&w, i);

		if (c->chip_id != irqchip_ids[i]) {
			pr_err("loading the VM: irqchip %zu has id %u, not %u", i, c->chip_id,
			       irqchip_ids[i]);
			return -EINVAL;
		}
		if ((ret = kvm_ioctl(kvm->vm_fd, KVM_SET_IRQCHIP, c)) < 0)
			return (int)ret;
	}
	if ((ret = kvm_ioctl(kvm->vm_fd, KVM_SET_PIT2, &w.pit)) < 0 ||
	    (ret = kvm_ioctl(kvm->vm_fd, KVM_SET_CLOCK, &clock)) < 0)
		return (int)ret;
	return 0;
}

#define DIFF(field, what)                                                     \
	do {                                                                  \
		if (memcmp(&a->field, &b->field, sizeof(a->field)))           \
			return what;                                          \
	} while (0)

const char *kvm_vcpu_state_diff(const struct kvm_vcpu_state *a, const struct kvm_vcpu_state *b)
{
	if (a->ncpuid != b->ncpuid || a->ncpuid > KVM_STATE_MAX_CPUID ||
	    memcmp(a->cpuid, b->cpuid, a->ncpuid * sizeof(a->cpuid[0])))
		return "cpuid";
	DIFF(tsc_khz, "tsc_khz");
	if (a->has_sregs2 != b->has_sregs2 ||
	    (a->has_sregs2 ? memcmp(&a->sregs2, &b->sregs2, sizeof(a->sregs2))
			   : memcmp(&a->sregs, &b->sregs, sizeof(a->sregs))))
		return "sregs";
	DIFF(regs, "regs");
	DIFF(fpu, "fpu");
	if (a->xsave_size != b->xsave_size || a->xsave_size > sizeof(a->xsave) ||
	    memcmp(a->xsave, b->xsave, a->xsave_size))
		return "xsave";
	DIFF(xcrs, "xcrs");
	if (a->nmsrs != b->nmsrs || a->nmsrs > KVM_STATE_MAX_MSRS ||
	    memcmp(a->msrs, b->msrs, a->nmsrs * sizeof(a->msrs[0])))
		return "msrs";
	DIFF(events, "events");
	DIFF(mp_state, "mp_state");
	DIFF(lapic, "lapic");
	DIFF(debugregs, "debugregs");
	return NULL;
}

const char *kvm_vm_state_diff(const struct kvm_vm_state *a, const struct kvm_vm_state *b)
{
	struct kvm_pit_state2 pa = a->pit, pb = b->pit;

	DIFF(pic_master, "pic_master");
	DIFF(pic_slave, "pic_slave");
	DIFF(ioapic, "ioapic");
	for (int i = 0; i < 3; i++)
		pa.channels[i].count_load_time = pb.channels[i].count_load_time = 0;
	if (memcmp(&pa, &pb, sizeof(pa)))
		return "pit";
	DIFF(clock, "clock");
	return NULL;
}
#undef DIFF
