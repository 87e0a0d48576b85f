/* kumo: one binary, one subcommand per role. `kumo run` is the VMM. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "devices/virtio-pci.h"
#include "migrate/memserver.h"
#include "sched/coord.h"
#include "sched/sim.h"
#include "vmm/agent-relay.h"
#include "vmm/config.h"
#include "vmm/control.h"
#include "vmm/footprint.h"
#include "vmm/vm-control.h"
#include "vmm/log.h"
#include "vmm/seccomp.h"
#include "vmm/pvm.h"
#include "vmm/vcpu.h"
#include "vmm/migration.h"
#include "vmm/snapshot.h"
#include "vmm/vm.h"

static struct termios saved_tio;
static int tio_saved;
static volatile sig_atomic_t got_signal;

static void restore_terminal(void)
{
	if (tio_saved)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
	tio_saved = 0;
}

static void raw_terminal(void)
{
	struct termios tio;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tio) < 0)
		return;
	tio_saved = 1;
	atexit(restore_terminal);
	tio = saved_tio;
	cfmakeraw(&tio);
	tio.c_oflag |= OPOST | ONLCR; /* our own messages still start at column 0 */
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &tio);
}

static void on_signal(int sig)
{
	got_signal = sig;
}

/*
 * Feed stdin to the serial port until the VM stops. Ctrl-A x quits, Ctrl-A Ctrl-A sends one
 * Ctrl-A. Bytes the receive FIFO cannot take yet wait here.
 */
static void console_loop(struct vm *vm)
{
	uint8_t buf[256];
	size_t have = 0, off = 0;
	int escape = 0, in_open = 1;
	int first_reported = 0;

	if (!vm->cfg.restart_on_reboot)	/* a restart builds the VM anew: setup calls */
		seccomp_enter(KUMO_THREAD_MAIN);
	while (!__atomic_load_n(&vm->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
		int n;

		if (got_signal) {
			pr_info("signal %d: stopping the VM", (int)got_signal);
			vm_request_stop(vm, VM_STOP_USER, 128 + (int)got_signal);
			break;
		}
		if (!first_reported && vm->com1.first_tx_ns) {
			first_reported = 1;
			pr_debug("first guest output %.3f s after start",
				 (double)(vm->com1.first_tx_ns - vm->start_ns) / 1e9);
		}
		if (have > off) {
			off += serial_push_input(&vm->com1, buf + off, have - off);
			if (off < have) {
				usleep(1000);
				continue;
			}
		}
		have = off = 0;
		n = poll(&p, in_open ? 1 : 0, 100);
		if (n <= 0)
			continue;
		ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
		if (r <= 0) {
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			in_open = 0; /* EOF: the guest keeps running without input */
			continue;
		}
		for (ssize_t i = 0; i < r; i++) {
			uint8_t c = buf[i];

			if (escape) {
				escape = 0;
				if (c == 'x' || c == 'X') {
					restore_terminal();
					pr_info("Ctrl-A x: quitting");
					vm_request_stop(vm, VM_STOP_USER, KUMO_EXIT_POWEROFF);
					return;
				}
				if (c != 0x01)
					continue;
			} else if (c == 0x01 && tio_saved) {
				escape = 1;
				continue;
			}
			buf[have++] = c;
		}
	}
}

static void print_summary(struct vm *vm, int status)
{
	uint64_t exits[VCPU_EXIT__COUNT] = { 0 }, fix[PVM_INSN__COUNT] = { 0 };
	static const char *const why[] = {
		[VM_STOP_POWEROFF] = "guest powered off", [VM_STOP_RESET] = "guest reset",
		[VM_STOP_USER] = "stopped by the user", [VM_STOP_ERROR] = "stopped on an error",
		[VM_STOP_EMULATION] = "stopped: instruction could not be emulated",
	};
	char fixes[256] = "";
	size_t used = 0;

	for (unsigned int i = 0; i < vm->ncpus; i++) {
		for (int k = 0; k < VCPU_EXIT__COUNT; k++)
			exits[k] += vm->vcpus[i]->exits[k];
		for (int k = 0; k < PVM_INSN__COUNT; k++)
			fix[k] += vm->vcpus[i]->pvm_fixups[k];
	}
	for (int k = 1; k < PVM_INSN__COUNT && used < sizeof(fixes) - 32; k++)
		if (fix[k])
			used += (size_t)snprintf(fixes + used, sizeof(fixes) - used, " %s=%llu",
						 pvm_insn_name(k), (unsigned long long)fix[k]);
	pr_info("%s after %.1f s (exit status %d); exits: io=%llu mmio=%llu intr=%llu%s%s",
		why[vm->stop] ? why[vm->stop] : "stopped",
		(double)(vm_now_ns() - vm->start_ns) / 1e9, status,
		(unsigned long long)exits[VCPU_EXIT_IO], (unsigned long long)exits[VCPU_EXIT_MMIO],
		(unsigned long long)exits[VCPU_EXIT_INTR], used ? "; emulation fix-ups:" : "", fixes);
	for (unsigned int i = 0; i < vm->nvirtio; i++) {
		const struct vm_virtio *v = &vm->virtio[i];

		pr_info("%s (PCI 00:%02x.0): status 0x%02x, requests %llu, errors %llu, MSI-X interrupts %llu",
			v->vdev->ops->name, v->pci->pci.slot, v->vdev->status,
			(unsigned long long)v->vdev->stats_requests,
			(unsigned long long)v->vdev->stats_errors,
			(unsigned long long)v->pci->msix_irqs);
	}
	if (vm->com1.first_tx_ns)
		pr_info("first guest output came %.2f s after start",
			(double)(vm->com1.first_tx_ns - vm->start_ns) / 1e9);
}

static int cmd_run(int argc, char **argv)
{
	struct vm_config cfg;
	struct run_options opts;
	struct sigaction sa = { .sa_handler = on_signal };
	struct vm_boot boot = { 0 };
	struct vm_restore saved = { .mem_fd = -1 };
	char err[512];
	struct vm vm;
	int ret, status;

	ret = config_parse_run(argc, argv, &cfg, &opts, err, sizeof(err));
	if (ret == 1) {
		fputs(config_run_usage, stdout);
		return 0;
	}
	if (ret < 0) {
		fprintf(stderr, "kumo run: %s\n%s", err, config_run_usage);
		return KUMO_EXIT_USAGE;
	}
	if (opts.verbose)
		log_level = LOG_DEBUG;
	if (opts.quiet)
		log_level = LOG_ERR;
	log_phase("options");
	footprint_init();
	/* Every thread filtered from here on, each by its own kind's list (docs/security.md). */
	if (!opts.no_seccomp && (ret = seccomp_enable()) < 0) {
		pr_err("seccomp: %s (--no-seccomp runs without the filters)", strerror(-ret));
		return KUMO_EXIT_ERROR;
	}
	log_phase("seccomp lists");
	/* All input is checked before /dev/kvm is opened: bad input is status 2 on any host. */
	ret = 0;
	if (cfg.restore)
		ret = vm_restore_check(&saved, &cfg, err, sizeof(err));
	else if (!cfg.incoming)	/* the source sends kernel and memory */
		ret = vm_boot_load(&boot, &cfg, err, sizeof(err));
	if (ret < 0) {
		if (err[0])
			pr_err("%s", err);
		return ret == -ENOMEM ? KUMO_EXIT_ERROR : KUMO_EXIT_USAGE;
	}
	log_phase("kernel and initrd read (bzImage decompressed)");
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (;;) {
		ret = vm_create(&vm, &cfg);
		log_phase("VM created (KVM, memory, devices, vCPUs)");
		if (ret < 0) {
			status = ret == -ENOENT || ret == -EACCES || ret == -ENOTSUP ?
				 KUMO_EXIT_USAGE : KUMO_EXIT_ERROR;
			break;
		}
		if (cfg.restore) {
			ret = vm_restore(&vm, &saved, cfg.restore_lazy);
			vm_restore_free(&saved);
			cfg.restore = NULL;	/* a guest reboot boots nothing else */
			cfg.restart_on_reboot = 0;
		} else if (cfg.incoming) {
			ret = 0;	/* after the control socket: it answers while we wait */
			cfg.restart_on_reboot = 0;
		} else {
			ret = vm_load_linux(&vm, &boot);
			log_phase("kernel, initrd, boot data and ACPI in guest RAM");
		}
		if (ret < 0) {	/* vm_boot_load() / vm_restore_check() checked the input */
			vm_destroy(&vm);
			status = ret == -EINVAL ? KUMO_EXIT_USAGE : KUMO_EXIT_ERROR;
			break;
		}
		if (!cfg.restart_on_reboot) {
			vm_boot_free(&boot);	/* in guest RAM now; kept only for a restart */
			malloc_trim(0);		/* the images' pages back from the heap too */
		}
		if (cfg.control && vm_control_start_auth(&vm, cfg.control, opts.control_token) < 0) {
			vm_destroy(&vm);
			status = KUMO_EXIT_USAGE;
			break;
		}
		raw_terminal();
		if (cfg.incoming) {
			ret = vm_incoming(&vm, cfg.incoming, err, sizeof(err));
			cfg.incoming = NULL;
			if (ret < 0) {
				pr_err("%s", err);
				vm_request_stop(&vm, VM_STOP_ERROR, KUMO_EXIT_ERROR);
				vm_wait(&vm);	/* vCPUs started before a late failure */
				vm_control_stop(&vm);
				restore_terminal();
				vm_destroy(&vm);
				status = KUMO_EXIT_ERROR;
				break;
			}
			vm_control_event(&vm, "started", NULL);
			console_loop(&vm);
		} else if (vm_start(&vm) == 0) {
			vm_control_event(&vm, "started", NULL);
			console_loop(&vm);
		}
		status = vm_wait(&vm);
		vm_control_stop(&vm);
		restore_terminal();
		print_summary(&vm, status);
		vm_destroy(&vm);
		if (status != KUMO_EXIT_REBOOT || !cfg.restart_on_reboot)
			break;
		pr_info("guest rebooted: restarting (--on-reboot=restart)");
	}
	vm_boot_free(&boot);
	vm_restore_free(&saved);
	return status;
}

static const char relay_usage[] =
	"usage: kumo relay --agent-socket PATH --control PATH|tcp:ADDR:PORT [--control-token FILE]\n"
	"  Relays a guest agent whose port another VMM serves on a Unix socket (QEMU:\n"
	"  -chardev socket,path=PATH,server=on,wait=off + virtserialport name=org.kumo.agent)\n"
	"  through a control socket with the verbs agent and agent-stats, as kumo run --agent\n"
	"  does for its own VMs. Runs until SIGINT/SIGTERM.\n";

static void relay_emit(void *opaque, const char *name, struct json_object *data)
{
	control_emit_event(opaque, name, data);
}

/* opaque: where cmd_relay publishes its relay once started. */
static int relay_verb_agent(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	return agent_relay_verb_agent(__atomic_load_n((struct agent_relay **)opaque,
						      __ATOMIC_ACQUIRE), args, result, err, errlen);
}

static int relay_verb_stats(void *opaque, struct json_object *args, struct json_object **result,
			    char *err, size_t errlen)
{
	return agent_relay_verb_stats(__atomic_load_n((struct agent_relay **)opaque,
						      __ATOMIC_ACQUIRE), args, result, err, errlen);
}

static const struct control_verb relay_verbs[] = {
	{ "agent", relay_verb_agent, "verb=NAME [args={...}] [timeout_ms=N]: ask the guest agent" },
	{ "agent-stats", relay_verb_stats, "the guest agent's latest statistics" },
};

static int cmd_relay(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "agent-socket", required_argument, NULL, 'a' },
		{ "control", required_argument, NULL, 'c' },
		{ "control-token", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sigaction sa = { .sa_handler = on_signal };
	const char *agent = NULL, *ctl = NULL, *token = NULL;
	struct agent_relay *relay = NULL, *r;
	struct control_server *srv = NULL;
	sigset_t mask, old;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'a': agent = optarg; break;
		case 'c': ctl = optarg; break;
		case 't': token = optarg; break;
		case 'h': fputs(relay_usage, stdout); return 0;
		default: fputs(relay_usage, stderr); return KUMO_EXIT_USAGE;
		}
	}
	if (!agent || !ctl || optind != argc) {
		fprintf(stderr, "kumo relay: needs --agent-socket and --control\n%s", relay_usage);
		return KUMO_EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	/* The helper threads inherit the blocked mask; only sigsuspend below takes the signals. */
	pthread_sigmask(SIG_BLOCK, &mask, &old);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	ret = control_start_auth(&srv, ctl, token, relay_verbs,
				 sizeof(relay_verbs) / sizeof(relay_verbs[0]), &relay);
	if (ret < 0) {
		pr_err("control socket %s: %s", ctl, strerror(-ret));
		return KUMO_EXIT_ERROR;
	}
	ret = agent_relay_start(&r, agent, relay_emit, srv);
	if (ret < 0) {
		pr_err("agent relay on %s: %s", agent, strerror(-ret));
		control_stop(srv);
		return KUMO_EXIT_ERROR;
	}
	__atomic_store_n(&relay, r, __ATOMIC_RELEASE);
	while (!got_signal)
		sigsuspend(&old);
	pr_info("signal %d: relay stopping", (int)got_signal);
	agent_relay_shutdown(r);	/* answers the agent replies still owed */
	control_stop(srv);
	agent_relay_stop(r);
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: kumo COMMAND [ARGS]\n"
	      "  run     run a VM (kumo run --help)\n"
	      "  ctl     talk to a VM's control socket: kumo ctl [--token FILE] PATH|tcp:HOST:PORT\n"
	      "          VERB [key=value ...]\n"
	      "  relay   relay another VMM's guest agent port over a control socket (--help)\n"
	      "  coord   the coordinator: sample VMMs and run policies (--help)\n"
	      "  sim     the policies against modelled VMs in virtual time (--help)\n"
	      "  memserver  a sub-host's page store for split migration: --listen ADDR --mem SIZE\n", f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return KUMO_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "ctl"))
		return control_client_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "relay"))
		return cmd_relay(argc - 1, argv + 1);
	if (!strcmp(argv[1], "coord"))
		return coord_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "sim"))
		return sim_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "memserver"))
		return ms_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "kumo: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return KUMO_EXIT_USAGE;
}
