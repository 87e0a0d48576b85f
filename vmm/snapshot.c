/*
 * Snapshot and restore of a whole VM (docs/snapshot.md): vCPUs, the in-kernel irqchip, PIT
 * and clock, every device in vm->devs through the state contract (devices/dev.h), and guest
 * RAM as a sparse file. DIR/state.fdt and DIR/memory.raw appear together, by rename, only
 * once both are complete.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate/lazy.h"
#include "migrate/memfile.h"
#include "migrate/state.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"
#include "vmm/snapshot.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define STATE_FILE "state.fdt"
#define MEMORY_FILE "memory.raw"
#define STATE_MAX (256u << 20)	/* no kumo state is near this; a bigger file is not ours */

static void path_in(char *out, size_t len, const char *dir, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Quiesce every device, last first (virtio functions before the legacy ones). */
int vm_quiesce_devices(struct vm *vm, char *err, size_t errlen)
{
	for (unsigned int i = vm->ndevs; i-- > 0;) {
		const struct dev *d = &vm->devs[i];
		int ret = d->ops->quiesce ? d->ops->quiesce(d->state) : 0;

		if (ret) {
			snprintf(err, errlen, "device %s: quiesce: %s", d->name, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

int vm_resume_devices(struct vm *vm)
{
	int first = 0;

	for (unsigned int i = 0; i < vm->ndevs; i++) {
		const struct dev *d = &vm->devs[i];
		int ret = d->ops->resume ? d->ops->resume(d->state) : 0;

		if (ret) {
			pr_err("device %s: resume: %s", d->name, strerror(-ret));
			if (!first)
				first = ret;
		}
	}
	return first;
}

int vm_state_encode(struct vm *vm, void **blob, size_t *size, char *err, size_t errlen)
{
	struct kvm_vcpu_state *vs = calloc(vm->ncpus, sizeof(*vs));
	struct kvm_vm_state vms;
	struct mig_machine mach;
	int ret = 0;

	if (!vs)
		return -ENOMEM;
	for (unsigned int i = 0; i < vm->ncpus && !ret; i++) {
		ret = vcpu_save_state(vm->vcpus[i], &vs[i]);
		if (ret)
			snprintf(err, errlen, "vCPU %u: saving its state: %s", i, strerror(-ret));
	}
	if (!ret) {
		ret = kvm_vm_state_get(&vm->kvm, &vms);
		if (ret)
			snprintf(err, errlen, "saving the irqchip, PIT and clock: %s",
				 strerror(-ret));
	}
	if (!ret) {
		mig_machine_describe(&mach, &vm->mem, vm->ncpus);
		ret = mig_state_encode(&mach, vs, &vms, vm->devs, vm->ndevs, blob, size);
		if (ret)
			snprintf(err, errlen, "encoding the state: %s", strerror(-ret));
	}
	free(vs);
	return ret;
}

int vm_snapshot(struct vm *vm, const char *dir, int stop, struct vm_snapshot_info *info,
		char *err, size_t errlen)
{
	char state_tmp[4096], mem_tmp[4096], state_path[4096], mem_path[4096];
	int state_fd = -1, mem_fd = -1, was_paused, ret;
	uint64_t t0 = vm_now_ns(), t_paused;
	void *blob = NULL;
	size_t size = 0;
	struct stat st;

	memset(info, 0, sizeof(*info));
	if (strlen(dir) > 4000) {
		snprintf(err, errlen, "dir: path too long");
		return -ENAMETOOLONG;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return ret;
	}
	/* Files first: an unwritable directory fails before the guest is touched. */
	path_in(state_tmp, sizeof(state_tmp), dir, "." STATE_FILE ".tmp");
	path_in(mem_tmp, sizeof(mem_tmp), dir, "." MEMORY_FILE ".tmp");
	path_in(state_path, sizeof(state_path), dir, STATE_FILE);
	path_in(mem_path, sizeof(mem_path), dir, MEMORY_FILE);
	state_fd = open(state_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (state_fd >= 0)
		mem_fd = open(mem_tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (state_fd < 0 || mem_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", state_fd < 0 ? state_tmp : mem_tmp,
			 strerror(errno));
		goto out_files;
	}
	/* Memory still arriving from a lazy restore must be all here before it is copied. */
	if (vm->lazy) {
		ret = mig_lazy_wait(vm->lazy, -1);
		if (ret) {
			snprintf(err, errlen, "the restored memory did not all arrive: %s",
				 strerror(-ret));
			goto out_files;
		}
	}
	was_paused = vm_is_paused(vm);
	ret = vm_pause(vm);
	if (ret) {
		snprintf(err, errlen, "the VM is stopping");
		goto out_files;
	}
	t_paused = vm_now_ns();
	ret = vm_quiesce_devices(vm, err, errlen);
	if (!ret)
		ret = vm_state_encode(vm, &blob, &size, err, errlen);
	if (!ret) {
		ret = mig_memfile_write(&vm->mem, mem_fd);
		if (ret)
			snprintf(err, errlen, "%s: %s", mem_tmp, strerror(-ret));
	}
	if (!ret) {
		ret = write_all(state_fd, blob, size);
		if (ret)
			snprintf(err, errlen, "%s: %s", state_tmp, strerror(-ret));
	}
	if (!ret && (fsync(mem_fd) < 0 || fsync(state_fd) < 0 || fstat(mem_fd, &st) < 0)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
	}
	/* memory.raw first: a state.fdt is only ever next to its own memory. */
	if (!ret && (rename(mem_tmp, mem_path) < 0 || rename(state_tmp, state_path) < 0)) {
		ret = -errno;
		snprintf(err, errlen, "%s: rename: %s", dir, strerror(errno));
	}
	info->state_bytes = size;
	info->memory_bytes = ret ? 0 : (uint64_t)st.st_blocks * 512;
	info->ram_bytes = vm->mem.ram_size;
	info->total_ns = vm_now_ns() - t0;
	if (!ret && stop) {
		vm_request_stop(vm, VM_STOP_USER, KUMO_EXIT_POWEROFF);
	} else {
		/* Failed or not stopping: the VM goes on as before. */
		vm_resume_devices(vm);
		if (!was_paused)
			vm_resume(vm);
	}
	info->paused_ns = vm_now_ns() - t_paused;	/* to the resume (or the stop request) */

out_files:
	free(blob);
	if (state_fd >= 0)
		close(state_fd);
	if (mem_fd >= 0)
		close(mem_fd);
	if (ret) {
		unlink(state_tmp);
		unlink(mem_tmp);
	}
	return ret;
}

static int read_file(const char *path, void **out, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	void *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	size_t done = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > STATE_MAX) {
		snprintf(err, errlen, "%s: not a kumo state (not a regular file under 256 MiB)",
			 path);
		ret = -EINVAL;
		goto out;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, (char *)buf + done, (size_t)st.st_size - done);

		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "truncated");
			free(buf);
			goto out;
		}
		done += (size_t)n;
	}
	*out = buf;
	*len = done;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int vm_restore_check(struct vm_restore *r, const struct vm_config *cfg, char *err,
		     size_t errlen)
{
	struct mm_node_spec spec[MM_MAX_NODES];
	struct mig_machine mach;
	struct guest_mem layout;
	char path[4096];
	void *blob = NULL;
	size_t size = 0;
	struct stat st;
	int ret;

	memset(r, 0, sizeof(*r));
	r->mem_fd = -1;
	if (strlen(cfg->restore) > 4000) {
		snprintf(err, errlen, "--restore: path too long");
		return -ENAMETOOLONG;
	}
	path_in(path, sizeof(path), cfg->restore, STATE_FILE);
	ret = read_file(path, &blob, &size, err, errlen);
	if (ret)
		return ret;
	ret = mig_state_decode(blob, size, &r->state);
	free(blob);
	if (ret) {
		err[0] = '\0';	/* the decoder named the problem in its one line */
		return ret;
	}
	/* The machine the config builds, from its layout alone (no memory yet). */
	ret = mm_layout_nodes(&layout, spec, vm_ram_spec(cfg, spec), cfg->hugepages);
	if (ret) {
		snprintf(err, errlen, "the config's memory layout: %s", strerror(-ret));
		goto err_state;
	}
	mig_machine_describe(&mach, &layout, cfg->ncpus);
	ret = mig_machine_check(&r->state.machine, &mach);
	if (ret) {
		err[0] = '\0';	/* mig_machine_check() named the first difference */
		goto err_state;
	}
	path_in(path, sizeof(path), cfg->restore, MEMORY_FILE);
	r->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->mem_fd < 0 || fstat(r->mem_fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto err_state;
	}
	if ((uint64_t)st.st_size != r->state.machine.ram_size) {
		snprintf(err, errlen, "%s: %lld bytes, the state's RAM is %llu bytes", path,
			 (long long)st.st_size, (unsigned long long)r->state.machine.ram_size);
		ret = -EINVAL;
		goto err_state;
	}
	return 0;

err_state:
	vm_restore_free(r);
	return ret;
}

void vm_restore_free(struct vm_restore *r)
{
	mig_state_free(&r->state);
	if (r->mem_fd >= 0)
		close(r->mem_fd);
	r->mem_fd = -1;
}

/*
 * Watch a lazy restore: log when all memory has arrived; if the source fails the guest must
 * not run on silent zeros: stop the VM with an error, then release the faults still waiting
 * (their vCPUs see the stop before they run another guest instruction).
 */
static void *lazy_watch(void *arg)
{
	struct vm *vm = arg;
	struct mig_lazy_stats st;

	seccomp_enter(KUMO_THREAD_LAZY_WATCH);
	for (;;) {
		int ret = mig_lazy_wait(vm->lazy, 200);

		if (!ret) {
			mig_lazy_stats(vm->lazy, &st);
			pr_info("restore: all memory arrived: %llu faults, %llu pages by fault, "
				"%llu pushed, %llu zero, median fault %.1f us, max %.1f us",
				(unsigned long long)st.faults, (unsigned long long)st.pages_fault,
				(unsigned long long)st.pages_background,
				(unsigned long long)st.pages_zero,
				(double)mig_lazy_latency_median_ns(&st) / 1e3,
				(double)st.latency_max_ns / 1e3);
			if (vm->lazy_done)
				vm->lazy_done(vm, 1);
			return NULL;
		}
		if (ret != -ETIMEDOUT) {
			pr_err("restore: guest memory could not be served (%s): stopping the VM",
			       strerror(-ret));
			vm_request_stop(vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
			if (vm->lazy_done)
				vm->lazy_done(vm, 0);
			mig_lazy_stop(vm->lazy);
			__atomic_store_n(&vm->lazy, NULL, __ATOMIC_RELEASE);
			return NULL;
		}
		if (__atomic_load_n(&vm->stop, __ATOMIC_ACQUIRE) != VM_RUNNING)
			return NULL;
	}
}

void vm_restore_end(struct vm *vm)
{
	if (vm->lazy_watching)
		pthread_join(vm->lazy_watcher, NULL);
	vm->lazy_watching = 0;
	mig_lazy_stop(vm->lazy);
	vm->lazy = NULL;
	if (vm->lazy_fd >= 0)
		close(vm->lazy_fd);
	vm->lazy_fd = -1;
}

int vm_lazy_begin(struct vm *vm, const struct mig_page_source *src)
{
	struct mig_lazy_params params = { .prefetch = 8 };
	int ret = mig_lazy_start(&vm->mem, src, &params, &vm->lazy);

	if (ret)
		return ret;
	ret = -pthread_create(&vm->lazy_watcher, NULL, lazy_watch, vm);
	vm->lazy_watching = !ret;
	return ret;
}

int vm_state_load(struct vm *vm, const struct mig_state *st)
{
	int ret;

	for (unsigned int i = 0; i < vm->ncpus; i++) {
		ret = vcpu_load_state(vm->vcpus[i], &st->vcpus[i]);
		if (ret) {
			pr_err("loading vCPU %u: %s", i, strerror(-ret));
			return ret;
		}
	}
	ret = kvm_vm_state_set(&vm->kvm, &st->vm);
	if (ret) {
		pr_err("loading the irqchip, PIT and clock: %s", strerror(-ret));
		return ret;
	}
	/* Devices after the irqchip: their interrupt lines and MSI routes land in it. */
	ret = mig_state_load_devices(st, vm->devs, vm->ndevs);
	return ret ? ret : vm_resume_devices(vm);
}

int vm_restore(struct vm *vm, struct vm_restore *r, int lazy)
{
	uint64_t t0 = vm_now_ns();
	int ret;

	if (lazy) {
		struct mig_page_source src;

		ret = mig_page_source_file(&src, r->mem_fd);
		if (!ret) {	/* served from until all has arrived: the VM's now */
			vm->lazy_fd = r->mem_fd;
			r->mem_fd = -1;
			ret = vm_lazy_begin(vm, &src);
		}
	} else {
		ret = mig_memfile_read(&vm->mem, r->mem_fd);
	}
	if (ret) {
		pr_err("restore: guest memory: %s", strerror(-ret));
		return ret;
	}
	ret = vm_state_load(vm, &r->state);
	if (ret)
		return ret;
	pr_info("restored from %s in %.1f ms (%s memory)", vm->cfg.restore,
		(double)(vm_now_ns() - t0) / 1e6, lazy ? "lazy" : "eager");
	return 0;
}
