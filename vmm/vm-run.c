/*
 * The VM at run time: vCPU threads started (and pinned) and joined, pause and resume, and the
 * one way a VM stops (vm_request_stop). The machine itself is built by vmm/vm.c.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <linux/kvm.h>

#include "vmm/log.h"
#include "vmm/vcpu.h"
#include "vmm/vm-control.h"
#include "vmm/vm.h"

uint64_t vm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
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

	/* The bench times exec (or restore) to the first KVM_RUN against this clock. */
	pr_debug("starting %u vCPU(s) at CLOCK_MONOTONIC %.6f s", vm->ncpus, (double)vm_now_ns() / 1e9);
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
