#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <asm/kvm_para.h>

#include "mm/mem.h"
#include "vmm/config.h"
#include "vmm/control-auth.h"
#include "vmm/numa.h"
#include "vmm/vm.h"

#define KUMO_MAX_VCPUS 1024

const char config_run_usage[] =
	"usage: kumo run --kernel FILE [options]\n"
	"       kumo run --restore DIR [--restore-lazy] [options]\n"
	"       kumo run --incoming tcp:ADDR:PORT|unix:PATH [options]\n"
	"  --kernel FILE        bzImage (LZ4/gzip/xz/zstd payload) or vmlinux ELF\n"
	"  --initrd FILE        initramfs\n"
	"  --cmdline STR        kernel command line (console=ttyS0 is added if absent)\n"
	"  --mem SIZE           guest RAM, e.g. 256M, 6G (default 256M)\n"
	"  --cpus N             vCPUs (default 1)\n"
	"  --disk PATH[,ro][,cache=none|host][,serial=ID]  virtio-blk disk (up to 8)\n"
	"  --net tap=NAME[,mac=MAC][,queues=N][,vhost=on|off]  virtio-net on a tap (up to 4;\n"
	"                       vhost-net when available unless vhost=off)\n"
	"  --agent-socket PATH  virtio-console port org.kumo.agent on a Unix socket\n"
	"  --console-socket PATH  virtio-console port 0 (hvc0) on a Unix socket\n"
	"  --control PATH       control socket (JSON lines; `kumo ctl PATH VERB`)\n"
	"  --control tcp:ADDR:PORT --control-token FILE  the control socket on TCP; every\n"
	"                       connection proves the token (file mode 0600) before any verb\n"
	"  --agent              relay the guest agent over --control (verbs agent, agent-stats;\n"
	"                       its port listens on --agent-socket, default CONTROL.agent)\n"
	"  --balloon[=OPTS]     virtio-balloon; OPTS: stats=SECONDS,deflate-on-oom,\n"
	"                       free-page-reporting,free-page-hint,page-poison (default:\n"
	"                       stats=1,deflate-on-oom,free-page-reporting)\n"
	"  --numa node=N[,cpus=A-B[:C]][,mem=SIZE][,host-node=H]  a virtual NUMA node (repeat);\n"
	"                       nodes without cpus= or with mem=0 are allowed\n"
	"  --numa full          mirror the host's nodes, CPUs, memory shares and distances\n"
	"  --numa-distance A:B=D  SLIT distance (also B:A unless given; default 10/20)\n"
	"  --hugepages          back guest RAM with 2 MiB huge pages (reserved beforehand)\n"
	"  --decompress host|guest  who decompresses a bzImage: kumo before the guest runs,\n"
	"                       or the kernel itself at its 64-bit entry (default host; always\n"
	"                       host on a PVM host)\n"
	"  --cpu-pin V=P[,V=P...]|numa  pin vCPU threads to host CPUs, or to their node's\n"
	"  --pv FEATURE=on|off[,...]  KVM PV features: steal-time, pv-unhalt, pv-sched-yield,\n"
	"                       pv-tlb-flush, pv-ipi, pv-eoi, async-pf, poll-control (default:\n"
	"                       what KVM offers); halt-poll-ns=N (KVM_CAP_HALT_POLL)\n"
	"  --on-reboot=exit|restart  what a guest reboot does (default exit, status 3)\n"
	"  --restore DIR        resume the VM saved in DIR by `snapshot` (no --kernel, --initrd,\n"
	"                       --cmdline; the other options must build the same machine)\n"
	"  --restore-lazy       with --restore: guest memory served on demand (userfaultfd)\n"
	"  --incoming ADDR      wait for a live migration on ADDR (the source's `migrate`);\n"
	"                       the other options must build the source's machine\n"
	"  --no-pvm-quirks      no PVM handling even on a PVM host\n"
	"  --seccomp            per-thread system call filters (docs/security.md; the default)\n"
	"  --no-seccomp         no filters (for debugging)\n"
	"  -v, --verbose        debug messages;  -q, --quiet  errors only\n"
	"Console: the guest's serial port on stdin/stdout; Ctrl-A x quits.\n"
	"Exit status: 0 power-off, 1 error, 2 bad usage/input, 3 reboot or panic,\n"
	"             4 an instruction that could not be emulated.\n";

enum { OPT_KERNEL = 256, OPT_INITRD, OPT_CMDLINE, OPT_MEM, OPT_CPUS, OPT_ON_REBOOT, OPT_NO_PVM,
       OPT_DISK, OPT_AGENT_SOCKET, OPT_CONSOLE_SOCKET, OPT_CONTROL, OPT_BALLOON, OPT_NUMA,
       OPT_NUMA_DISTANCE, OPT_HUGEPAGES, OPT_CPU_PIN, OPT_PV, OPT_AGENT, OPT_CONTROL_TOKEN,
       OPT_RESTORE, OPT_RESTORE_LAZY, OPT_NET, OPT_INCOMING, OPT_NO_SECCOMP, OPT_SECCOMP,
       OPT_DECOMPRESS };

/* 0 for a, 1 for b, -1 for anything else: the value of a two-way option. */
static int one_of(const char *arg, const char *a, const char *b)
{
	return !strcmp(arg, a) ? 0 : !strcmp(arg, b) ? 1 : -1;
}

static const struct option run_opts[] = {
	{ "kernel", required_argument, NULL, OPT_KERNEL },
	{ "restore", required_argument, NULL, OPT_RESTORE },
	{ "restore-lazy", no_argument, NULL, OPT_RESTORE_LAZY },
	{ "incoming", required_argument, NULL, OPT_INCOMING },
	{ "initrd", required_argument, NULL, OPT_INITRD },
	{ "cmdline", required_argument, NULL, OPT_CMDLINE },
	{ "mem", required_argument, NULL, OPT_MEM },
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "on-reboot", required_argument, NULL, OPT_ON_REBOOT },
	{ "no-pvm-quirks", no_argument, NULL, OPT_NO_PVM },
	{ "no-seccomp", no_argument, NULL, OPT_NO_SECCOMP },
	{ "seccomp", no_argument, NULL, OPT_SECCOMP },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "net", required_argument, NULL, OPT_NET },
	{ "agent-socket", required_argument, NULL, OPT_AGENT_SOCKET },
	{ "console-socket", required_argument, NULL, OPT_CONSOLE_SOCKET },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "control-token", required_argument, NULL, OPT_CONTROL_TOKEN },
	{ "balloon", optional_argument, NULL, OPT_BALLOON },
	{ "numa", required_argument, NULL, OPT_NUMA },
	{ "numa-distance", required_argument, NULL, OPT_NUMA_DISTANCE },
	{ "hugepages", no_argument, NULL, OPT_HUGEPAGES },
	{ "decompress", required_argument, NULL, OPT_DECOMPRESS },
	{ "cpu-pin", required_argument, NULL, OPT_CPU_PIN },
	{ "pv", required_argument, NULL, OPT_PV },
	{ "agent", no_argument, NULL, OPT_AGENT },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -EINVAL; } while (0)

/* "stats=N,deflate-on-oom,free-page-reporting,free-page-hint,page-poison"; NULL = defaults. */
static int parse_balloon(const char *arg, struct balloon_options *o, char *err, size_t errlen)
{
	char buf[256], *save = NULL;

	memset(o, 0, sizeof(*o));
	o->stats = 1;
	o->stats_period = 1;
	o->deflate_on_oom = 1;
	o->free_page_reporting = 1;
	if (!arg)
		return 0;
	if (strlen(arg) >= sizeof(buf))
		FAIL("too long");
	memset(o, 0, sizeof(*o));
	strcpy(buf, arg);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strncmp(tok, "stats=", 6)) {
			char *end;
			long n;

			errno = 0;
			n = strtol(tok + 6, &end, 10);
			if (errno || *end || end == tok + 6 || n < 0 || n > 3600)
				FAIL("stats=%s: seconds from 0 to 3600", tok + 6);
			o->stats = 1;
			o->stats_period = (unsigned int)n;
		} else if (!strcmp(tok, "deflate-on-oom")) {
			o->deflate_on_oom = 1;
		} else if (!strcmp(tok, "free-page-reporting")) {
			o->free_page_reporting = 1;
		} else if (!strcmp(tok, "free-page-hint")) {
			o->free_page_hint = 1;
		} else if (!strcmp(tok, "page-poison")) {
			o->page_poison = 1;
		} else {
			FAIL("unknown balloon option '%s'", tok);
		}
	}
	return 0;
}

static const struct {
	const char *name;
	unsigned int bit;
} pv_features[] = {
	{ "steal-time", KVM_FEATURE_STEAL_TIME },
	{ "pv-unhalt", KVM_FEATURE_PV_UNHALT },
	{ "pv-sched-yield", KVM_FEATURE_PV_SCHED_YIELD },
	{ "pv-tlb-flush", KVM_FEATURE_PV_TLB_FLUSH },
	{ "pv-ipi", KVM_FEATURE_PV_SEND_IPI },
	{ "pv-eoi", KVM_FEATURE_PV_EOI },
	{ "async-pf", KVM_FEATURE_ASYNC_PF },
	{ "poll-control", KVM_FEATURE_POLL_CONTROL },
};

/* "steal-time=off,pv-unhalt=on,halt-poll-ns=0"; later settings win. */
static int parse_pv(const char *arg, struct vm_config *cfg, char *err, size_t errlen)
{
	char buf[512], *save = NULL;

	if (strlen(arg) >= sizeof(buf))
		FAIL("too long");
	strcpy(buf, arg);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');
		size_t i;

		if (!val)
			FAIL("'%s': use FEATURE=on|off or halt-poll-ns=N", tok);
		*val++ = 0;
		if (!strcmp(tok, "halt-poll-ns")) {
			char *end;
			unsigned long long n;

			errno = 0;
			n = strtoull(val, &end, 10);
			if (errno || *end || end == val || *val == '-' || n > 1000000000ULL)
				FAIL("halt-poll-ns=%s: nanoseconds from 0 to 1000000000", val);
			cfg->halt_poll_set = 1;
			cfg->halt_poll_ns = n;
			continue;
		}
		for (i = 0; i < sizeof(pv_features) / sizeof(pv_features[0]); i++)
			if (!strcmp(tok, pv_features[i].name))
				break;
		if (i == sizeof(pv_features) / sizeof(pv_features[0]))
			FAIL("unknown PV feature '%s'", tok);
		if (!strcmp(val, "on")) {
			cfg->pv.on |= 1u << pv_features[i].bit;
			cfg->pv.clear &= ~(1u << pv_features[i].bit);
		} else if (!strcmp(val, "off")) {
			cfg->pv.clear |= 1u << pv_features[i].bit;
			cfg->pv.on &= ~(1u << pv_features[i].bit);
		} else {
			FAIL("%s=%s: use on or off", tok, val);
		}
	}
	return 0;
}

/* "numa" or "V=P,V=P,..." (one host CPU per vCPU). */
static int parse_cpu_pin(const char *arg, struct vm_config *cfg, char *err, size_t errlen)
{
	long host_cpus = sysconf(_SC_NPROCESSORS_CONF);
	const char *p = arg;

	if (!strcmp(arg, "numa")) {
		cfg->pin_numa = 1;
		return 0;
	}
	while (*p) {
		char *end;
		long v, c;

		errno = 0;
		v = strtol(p, &end, 10);
		if (errno || end == p || *end != '=' || v < 0 || v >= NUMA_MAX_VCPUS)
			FAIL("use V=P[,V=P...] (vCPU=host CPU) or numa");
		p = end + 1;
		c = strtol(p, &end, 10);
		if (errno || end == p || (*end && *end != ',') || c < 0 || c >= 65535)
			FAIL("use V=P[,V=P...] (vCPU=host CPU) or numa");
		if (host_cpus > 0 && c >= host_cpus)
			FAIL("host CPU %ld does not exist (this host has %ld)", c, host_cpus);
		if (cfg->pin_cpu[v])
			FAIL("vCPU %ld is pinned twice", v);
		cfg->pin_cpu[v] = (uint16_t)(c + 1);
		p = *end ? end + 1 : end;
	}
	return 0;
}

/* --control tcp:ADDR:PORT needs a usable --control-token; a token needs TCP. */
static int check_control(struct vm_config *cfg, const struct run_options *opts, char *err,
			 size_t errlen)
{
	char host[256], port[16], why[256];
	struct control_token tok;
	int tcp = cfg->control ? control_tcp_addr(cfg->control, host, sizeof(host), port,
						  sizeof(port)) : 0;

	if (tcp < 0)
		FAIL("--control %s: use a Unix socket path or tcp:ADDR:PORT", cfg->control);
	if (tcp && !opts->control_token)
		FAIL("--control %s: a TCP control socket needs --control-token FILE", cfg->control);
	if (!tcp && opts->control_token)
		FAIL("--control-token goes with --control tcp:ADDR:PORT");
	if (tcp && cfg->agent_relay && !cfg->agent_socket)
		FAIL("--agent with --control %s needs --agent-socket PATH", cfg->control);
	if (tcp && control_token_load(opts->control_token, &tok, why, sizeof(why)))
		FAIL("--control-token %s", why);
	explicit_bzero(&tok, sizeof(tok));
	return 0;
}

/* Checks that need all options: the NUMA layout against --cpus/--mem and this host. */
static int config_finish(struct vm_config *cfg, char *err, size_t errlen)
{
	struct numa_host host;
	int have_numa = cfg->numa.nnodes || cfg->numa.full;

	for (unsigned int v = cfg->ncpus; v < NUMA_MAX_VCPUS; v++)
		if (cfg->pin_cpu[v])
			FAIL("--cpu-pin: vCPU %u does not exist (--cpus %u)", v, cfg->ncpus);
	if (cfg->agent_relay && !cfg->control)
		FAIL("--agent needs --control");
	if (cfg->agent_relay && !cfg->agent_socket) {
		if ((size_t)snprintf(cfg->agent_socket_buf, sizeof(cfg->agent_socket_buf), "%s.agent",
				     cfg->control) >= sizeof(cfg->agent_socket_buf))
			FAIL("--control %s: too long for the agent socket beside it", cfg->control);
		cfg->agent_socket = cfg->agent_socket_buf;
	}
	if (!have_numa && cfg->pin_numa)
		FAIL("--cpu-pin numa needs --numa");
	if (cfg->hugepages && (cfg->mem_size & ((2ULL << 20) - 1)))
		FAIL("--hugepages: --mem must be a multiple of 2M");
	if (!have_numa) {
		for (unsigned int i = 0; i < NUMA_MAX_NODES; i++)
			if (cfg->numa.explicit_dist[i])
				FAIL("--numa-distance needs --numa");
		return 0;
	}
	if (numa_host_read(&host) < 0)
		FAIL("cannot read the host's NUMA topology");
	return numa_finish(&cfg->numa, cfg->ncpus, cfg->mem_size, &host, err, errlen);
}

int config_parse_run(int argc, char **argv, struct vm_config *cfg, struct run_options *opts,
		     char *err, size_t errlen)
{
	int c;

	memset(cfg, 0, sizeof(*cfg));
	memset(opts, 0, sizeof(*opts));
	cfg->mem_size = 256ULL << 20;
	cfg->ncpus = 1;
	cfg->pvm_quirks = 1;
	cfg->console_out_fd = 1;
	numa_config_init(&cfg->numa);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vqh", run_opts, NULL)) != -1) {
		switch (c) {
		case OPT_KERNEL: cfg->kernel = optarg; break;
		case OPT_RESTORE: cfg->restore = optarg; break;
		case OPT_RESTORE_LAZY: cfg->restore_lazy = 1; break;
		case OPT_INCOMING:
			if (strncmp(optarg, "tcp:", 4) && strncmp(optarg, "unix:", 5))
				FAIL("--incoming %s: not tcp:ADDR:PORT or unix:PATH", optarg);
			cfg->incoming = optarg;
			break;
		case OPT_INITRD: cfg->initrd = optarg; break;
		case OPT_CMDLINE: cfg->cmdline = optarg; break;
		case OPT_MEM:
			if (mm_parse_size(optarg, &cfg->mem_size) < 0)
				FAIL("--mem %s: not a size (use e.g. 256M or 6G)", optarg);
			if (cfg->mem_size < (16ULL << 20) || (cfg->mem_size & ((1ULL << 20) - 1)))
				FAIL("--mem %s: must be at least 16M and a multiple of 1M", optarg);
			if (cfg->mem_size > (1ULL << 40))
				FAIL("--mem %s: more than 1T", optarg);
			break;
		case OPT_CPUS: {
			char *end;
			long n;

			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || n < 1 || n > KUMO_MAX_VCPUS)
				FAIL("--cpus %s: must be a number from 1 to %d", optarg, KUMO_MAX_VCPUS);
			cfg->ncpus = (unsigned int)n;
			break;
		}
		case OPT_ON_REBOOT:
			if ((cfg->restart_on_reboot = one_of(optarg, "exit", "restart")) < 0)
				FAIL("--on-reboot %s: use exit or restart", optarg);
			break;
		case OPT_NO_PVM: cfg->pvm_quirks = 0; break;
		case OPT_NO_SECCOMP: opts->no_seccomp = 1; break;
		case OPT_SECCOMP: opts->seccomp = 1; break;
		case OPT_DISK: {
			struct disk_config *d = &cfg->disks[cfg->ndisks];
			char why[200];

			if (cfg->ndisks == VM_MAX_DISKS)
				FAIL("--disk: at most %d disks", VM_MAX_DISKS);
			if (virtio_blk_parse_option(optarg, &d->path, &d->opts, why, sizeof(why)) < 0)
				FAIL("--disk %s: %s", optarg, why);
			cfg->ndisks++;
			break;
		}
		case OPT_NET: {
			char why[200];

			if (cfg->nnets == VM_MAX_NETS)
				FAIL("--net: at most %d", VM_MAX_NETS);
			if (virtio_net_parse_option(optarg, &cfg->nets[cfg->nnets], why,
						    sizeof(why)) < 0)
				FAIL("--net %s: %s", optarg, why);
			cfg->nnets++;
			break;
		}
		case OPT_AGENT_SOCKET: cfg->agent_socket = optarg; break;
		case OPT_CONSOLE_SOCKET: cfg->console_socket = optarg; break;
		case OPT_CONTROL: cfg->control = optarg; break;
		case OPT_CONTROL_TOKEN: opts->control_token = optarg; break;
		case OPT_BALLOON: {
			char why[200];

			cfg->balloon = 1;
			if (parse_balloon(optarg, &cfg->balloon_opts, why, sizeof(why)) < 0)
				FAIL("--balloon=%s: %s", optarg, why);
			break;
		}
		case OPT_NUMA: {
			char why[200];

			if (numa_parse_node(&cfg->numa, optarg, why, sizeof(why)) < 0)
				FAIL("--numa %s: %s", optarg, why);
			break;
		}
		case OPT_NUMA_DISTANCE: {
			char why[200];

			if (numa_parse_distance(&cfg->numa, optarg, why, sizeof(why)) < 0)
				FAIL("--numa-distance %s: %s", optarg, why);
			break;
		}
		case OPT_HUGEPAGES: cfg->hugepages = 1; break;
		case OPT_DECOMPRESS:
			if ((cfg->guest_decompress = one_of(optarg, "host", "guest")) < 0)
				FAIL("--decompress %s: use host or guest", optarg);
			break;
		case OPT_AGENT: cfg->agent_relay = 1; break;
		case OPT_CPU_PIN: {
			char why[200];

			if (parse_cpu_pin(optarg, cfg, why, sizeof(why)) < 0)
				FAIL("--cpu-pin %s: %s", optarg, why);
			break;
		}
		case OPT_PV: {
			char why[200];

			if (parse_pv(optarg, cfg, why, sizeof(why)) < 0)
				FAIL("--pv %s: %s", optarg, why);
			break;
		}
		case 'v': opts->verbose = 1; break;
		case 'q': opts->quiet = 1; break;
		case 'h': return 1;
		case ':': FAIL("%s needs a value", argv[optind - 1]);
		default: FAIL("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		FAIL("unexpected argument %s", argv[optind]);
	if (cfg->restore && (cfg->kernel || cfg->initrd || cfg->cmdline))
		FAIL("--restore brings its own kernel and memory: no --kernel, --initrd, --cmdline");
	if (cfg->incoming && (cfg->kernel || cfg->initrd || cfg->cmdline || cfg->restore))
		FAIL("--incoming receives kernel, memory and state: no --kernel, --initrd, "
		     "--cmdline, --restore");
	if (cfg->restore_lazy && !cfg->restore)
		FAIL("--restore-lazy needs --restore DIR");
	if (!cfg->kernel && !cfg->restore && !cfg->incoming)
		FAIL("--kernel is required");
	if (check_control(cfg, opts, err, errlen))
		return -EINVAL;
	return config_finish(cfg, err, errlen);
}
