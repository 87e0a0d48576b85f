#!/usr/bin/env python3
"""kumo benchmarks side by side with their peers, as ratios; `make bench` (tests/bench/run.sh)
writes docs/benchmarks.md from one run of them.

Two parts. The VM part needs /dev/kvm: kumo and QEMU `-accel kvm` on the same KVM (exec → first
KVM_RUN, own memory, Linux boots, in-guest virtio-blk, in-guest balloon), the PIO exit loop, the
vNUMA PV section (tests/bench/numa_pv.py). The host part does not: kumo's virtio-blk and
virtio-balloon devices driven without a guest kernel. Where the host's /dev/kvm is missing or
PVM (tests/box/box want), run.sh runs the VM part inside the KVM box and the host part on the
host; elsewhere both run here.

  run.py                        both parts here, then docs/benchmarks.md
  run.py --part vm|host JSON    one part; its results go to JSON (rewritten after each section)
  run.py --write JSON...        docs/benchmarks.md from the parts' JSON files

Scale (environment): BENCH_RUNS (runs per VM measurement and per device test, default 5),
BENCH_BOOT_RUNS (boots per kernel and VMM, default 5), BENCH_BOOT_CPUS (vCPUs of those boots,
default 1), BENCH_PIO_ITERS (exits per PIO run, default 20000), BENCH_SETTLE (seconds before
reading memory, default 3), BENCH_GUEST_RUNS (in-guest virtio-blk boots per VMM, default 5),
BENCH_GUEST_DISK_MB (its disk, default 64), BENCH_GUEST_BLK_S (seconds per random-read test in
the guest, default 3), BENCH_QEMU_AIO (QEMU's aio=, default io_uring),
BENCH_BALLOON_GIB (balloon size in and out of the guest, default 1), BENCH_BALLOON_RUNS
(inflate/deflate cycles per VMM, in one boot, default 5), BENCH_BLK_MB and BENCH_BLK_SECONDS
(device-path file and seconds per test, defaults 256 and 2), BENCH_GUARD (hang guard per boot
or step in seconds, default 600), BENCH_NUMA (0: skip the vNUMA PV section; default 1) and
numa_pv.py's BENCH_OMP_* variables, snapshot.py's BENCH_SNAP_* variables, migrate.py's
BENCH_MIG_* variables.
KUMO_BENCH_ONLY=snapshot: only the snapshot/restore section (tests/bench/snapshot.py), which then
replaces its own section of docs/benchmarks.md and leaves the rest as it is; likewise
KUMO_BENCH_ONLY=migrate for the live migration section (tests/bench/migrate.py).
KUMO_BENCH_ONLY=startup: only exec → first KVM_RUN, the VMMs' own memory and the boots (issue
15's figures); their rows replace the same rows of the main table, with one dated line.
"""
import contextlib, json, os, re, select, shutil, statistics, subprocess, sys, tempfile, time

import numa_pv  # tests/bench/numa_pv.py: the vNUMA PV-feature benchmark (issue 5)
from numa_pv import INITRD, PVM, kill_group  # noqa: E402  (INITRD: the image for this host)
from agentlib import Agent  # noqa: E402  (guest/agentlib.py, on the path through numa_pv)
import snapshot as snap_bench  # noqa: E402  tests/bench/snapshot.py (issue 10)
import migrate as mig_bench  # noqa: E402  tests/bench/migrate.py (issue 13)

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BOOT_RUNS = int(os.environ.get("BENCH_BOOT_RUNS", "5"))
BOOT_CPUS = int(os.environ.get("BENCH_BOOT_CPUS", "1"))
PIO_ITERS = int(os.environ.get("BENCH_PIO_ITERS", "20000"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "3"))
GUEST_RUNS = int(os.environ.get("BENCH_GUEST_RUNS", "5"))
GUEST_DISK_MB = int(os.environ.get("BENCH_GUEST_DISK_MB", "64"))
GUEST_BLK_S = int(os.environ.get("BENCH_GUEST_BLK_S", "3"))
QEMU_AIO = os.environ.get("BENCH_QEMU_AIO", "io_uring")
BALLOON_GIB = int(os.environ.get("BENCH_BALLOON_GIB", "1"))
BALLOON_RUNS = int(os.environ.get("BENCH_BALLOON_RUNS", "5"))
BLK_MB = int(os.environ.get("BENCH_BLK_MB", "256"))
BLK_SECONDS = float(os.environ.get("BENCH_BLK_SECONDS", "2"))
GUARD = float(os.environ.get("BENCH_GUARD", "600"))
NUMA = os.environ.get("BENCH_NUMA", "1") != "0"
IN_BOX = os.environ.get("KUMO_IN_BOX") == "1"
ONLY = os.environ.get("KUMO_BENCH_ONLY", "")	# "snapshot", "migrate" or "startup": that part alone

KERNEL = "guest/out/test-bzImage"
KERNELS = [("test kernel", KERNEL, INITRD),
           ("stock kernel", "guest/out/stock-vmlinuz", "guest/out/initramfs-stock.cpio")]
MEM_MB = 256
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
# On a PVM host QEMU -accel kvm reaches KVM_RUN but cannot boot Linux: the guests' peer is TCG.
PEER_ACCEL = "tcg" if PVM else "kvm"
BOOT_ARGS = "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=poweroff"	# init powers off at once
BLK_ARGS = f"panic=-1 rdinit=/sbin/kumo-probe kumo.probe=blkbench,poweroff kumo.blkbench_s={GUEST_BLK_S}"
IDLE_ARGS = "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info"	# then the probe waits
INIT_MARKER = "Run /sbin/kumo-probe as init process"


def qemu_version():
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)\.?(\d*)", out)
    return (f"{m[1]}.{m[2]}", out.splitlines()[0].split("version ", 1)[1]) if m else ("?", "?")


QEMU_VER = qemu_version()[0]


# The binaries this run uses: private copies (take_binaries), since others may rebuild the
# tree's while a run of many minutes goes on.
BIN = {"kumo": "./kumo", "bench-pio": "tests/bench/bench-pio", "bench-blk": "tests/bench/bench-blk",
       "bench-balloon": "tests/bench/bench-balloon"}


def take_binaries(tmp, names):
    for n in names:
        BIN[n] = shutil.copy2(BIN[n], os.path.join(tmp, n))


def kumo_cmd(kernel, initrd, args, mem_mb=MEM_MB, cpus=1, extra=()):
    return [BIN["kumo"], "run", "-q", "--kernel", kernel, "--initrd", initrd, "--mem", f"{mem_mb}M",
            "--cpus", str(cpus), "--cmdline", args, *extra]


def qemu_cmd(kernel, initrd, args, mem_mb=MEM_MB, cpus=1, extra=(), accel=PEER_ACCEL, machine="q35"):
    """QEMU with what kumo gives a guest and nothing more: no default devices, the console on
    stdout, the host's CPU model under KVM (PVM's KVM refuses it: QEMU's default model there)."""
    cpu = ["-cpu", "host"] if accel == "kvm" and not PVM else []
    return [QEMU, "-accel", accel, "-M", machine, *cpu, "-m", str(mem_mb), "-smp", str(cpus), "-display", "none", "-nodefaults", "-no-reboot",
            "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 " + args, *extra]


def peer_label(accel=PEER_ACCEL):
    return f"QEMU {QEMU_VER} `-accel {accel}`"


# ------------------------------------------------------------------ rows and their text
def row(name, unit, kumo, peer, peer_vals, better="lower", scale=1.0, digits=1, failed=()):
    """One table row from raw values (formatted when the file is written)."""
    return {"name": name, "unit": unit, "kumo": kumo, "peer": peer, "peer_vals": peer_vals,
            "better": better, "scale": scale, "digits": digits, "failed": list(failed)}


def error_row(name, peer, why, skipped=False):
    """A row without figures: a failure, or (skipped) a measurement this host cannot make."""
    return {"name": name, "peer": peer, "error": str(why), "skipped": skipped}


def paired_row(name, key, k, q, failed, unit, peer, **kw):
    """The row for key from side_by_side's results, or why there is none."""
    if k.get(key) and q.get(key):
        return row(name, unit, k[key], peer, q[key], failed=failed, **kw)
    return error_row(name, peer, "; ".join(failed) or f"no {key} measured")


def fmt(xs, unit, scale=1.0, digits=1):
    xs = [x * scale for x in xs]
    m, lo, hi = statistics.median(xs), min(xs), max(xs)
    return f"{m:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def row_line(r, where):
    if "error" in r:
        return (f"| {r['name']} | {where} | {'not run' if r.get('skipped') else 'failed'}: "
                f"{r['error'].replace('|', '/')[:200]} | {r['peer']} | | | |")
    k, p = r["kumo"], r["peer_vals"]
    ratio = statistics.median(k) / statistics.median(p)
    runs = f" ({len(r['failed'])} failed runs not counted: {'; '.join(r['failed'])[:160]})" if r["failed"] else ""
    return (f"| {r['name']}{runs} | {where} | {fmt(k, r['unit'], r['scale'], r['digits'])} | "
            f"{r['peer']} | {fmt(p, r['unit'], r['scale'], r['digits'])} | {ratio:.2f} | {r['better']} |")


class Part:
    """One part's results, written to its JSON file after every section (a box that dies
    half-way still leaves the sections before)."""

    def __init__(self, name, path):
        self.path = path
        self.t0 = time.time()
        self.d = {"part": name, "rows": [], "notes": [], "env": environment(), "sections": []}

    def section(self, title, fn):
        t0 = time.time()
        try:
            rows, notes = fn()
        except Exception as e:  # noqa: BLE001  one section's failure must not cost the others
            rows, notes = [error_row(title, "", f"{type(e).__name__}: {e}")], []
        self.d["rows"] += rows
        self.d["notes"] += notes
        self.d["sections"].append((title, time.time() - t0))
        print(f"bench: {title} done in {time.time() - t0:.0f} s", flush=True)
        self.save()

    def save(self):
        self.d["wall_s"] = time.time() - self.t0
        with open(self.path + ".new", "w") as f:
            json.dump(self.d, f, indent=1)
        os.replace(self.path + ".new", self.path)


def environment():
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    cpu = ""
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and not cpu:
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return {"in_box": IN_BOX, "pvm": PVM, "nproc": os.cpu_count(), "mem_mib": mem, "cpu": cpu,
            "svm_npt": "svm" in flags and "npt" in flags, "xsave": "xsave" in flags,
            "kernel": os.uname().release,
            "qemu": qemu_version()[1]}


# ------------------------------------------------------------------ process helpers
def console_lines(stream, deadline):
    """A pipe's lines as they come (a process's stdout or stderr, binary), until EOF or
    deadline."""
    fd, buf = stream.fileno(), b""
    while time.time() < deadline:
        if not select.select([fd], [], [], deadline - time.time())[0]:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf:
                yield buf.decode(errors="replace")
            return
        *lines, buf = (buf + chunk).split(b"\n")
        for l in lines:
            yield l.decode(errors="replace").rstrip("\r")


def start(cmd, stdout=subprocess.PIPE):
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def side_by_side(n, kumo_fn, peer_fn):
    """kumo and its peer measured in turns, so a disturbance hits both alike:
    ({key: kumo values}, {key: peer values}, failures); each fn returns {key: value}."""
    res = ({}, {})
    failed = []
    for _ in range(n):
        for out, fn, who in ((res[0], kumo_fn, "kumo"), (res[1], peer_fn, "QEMU")):
            try:
                for k, v in fn().items():
                    out.setdefault(k, []).append(v)
            except RuntimeError as e:
                failed.append(f"{who}: {e}")
    return res[0], res[1], failed


# ------------------------------------------------------------------ VM part
def exec_to_first_kvm_run(cmd):
    """Seconds from execve to the first KVM_RUN ioctl, from strace timestamps (seccomp-bpf: the
    VMM stops only at the calls traced, not at every system call)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "trace")
        p = start(["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=execve,ioctl", "-o", out] + cmd,
                  subprocess.DEVNULL)
        t_exec = t_run = None
        deadline = time.time() + 60
        while time.time() < deadline and t_run is None:
            time.sleep(0.2)
            try:
                text = open(out).read()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                f = line.split()
                if len(f) < 3:
                    continue
                if t_exec is None and "execve(" in line:
                    t_exec = float(f[1])
                if "KVM_RUN" in line:
                    t_run = float(f[1])
                    break
        kill_group(p)
        if t_exec is None or t_run is None:
            raise RuntimeError(f"no KVM_RUN seen for {cmd[0]}")
        return t_run - t_exec


def kumo_phases(cmd):
    """{"phase:NAME": ms} of one kumo start with -v: its own "phase" lines, from main() to the
    vCPU thread's first KVM_RUN (vmm/log.c log_phase); no strace, so no tracing cost."""
    argv = [a for a in cmd if a != "-q"]
    argv.insert(argv.index("run") + 1, "-v")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    out, deadline = {}, time.time() + 60
    try:
        for line in console_lines(p.stderr, deadline):
            m = re.match(r"kumo: debug: phase (.*): \+([0-9.]+) ms", line)
            if m:
                out["phase:" + m[1]] = float(m[2])
                if "first KVM_RUN" in m[1]:
                    break
    finally:
        kill_group(p)
    if not any("first KVM_RUN" in k for k in out):
        raise RuntimeError("no first-KVM_RUN phase line from kumo -v")
    return out


def own_memory_kb(cmd):
    """Pss of the VMM process minus the Pss of its guest-RAM mapping, SETTLE s after start."""
    p = start(cmd, subprocess.DEVNULL)
    time.sleep(SETTLE)
    total = ram = size = 0
    name = ""
    try:
        for line in open(f"/proc/{p.pid}/smaps"):
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                # the path is the sixth field on: kumo's memfd is "/memfd:kumo-ram-node0 (deleted)"
                name = " ".join(line.split()[5:])
                continue
            if line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
                total += pss
                # Guest RAM: kumo's memfd, or QEMU's anonymous RAM block (>= guest size).
                if "kumo-ram" in name or (name == "" and size >= MEM_MB * 1024):
                    ram += pss
    finally:
        kill_group(p)
    return total - ram


def devices_args(disk, d):
    """kumo's and QEMU's options for the same devices: a read-only virtio disk, a balloon, a
    virtio console port on a socket and a control socket (QMP)."""
    k = ["--disk", f"{disk},ro", "--balloon", "--console-socket", os.path.join(d, "con.sock"),
         "--control", os.path.join(d, "ctl.sock")]
    q = ["-drive", f"file={disk},if=none,id=d0,format=raw,readonly=on",
         "-device", "virtio-blk-pci,drive=d0", "-device", "virtio-balloon-pci",
         "-device", "virtio-serial-pci",
         "-chardev", f"socket,id=c0,path={os.path.join(d, 'qcon.sock')},server=on,wait=off",
         "-device", "virtconsole,chardev=c0",
         "-qmp", f"unix:{os.path.join(d, 'qmp.sock')},server=on,wait=off"]
    return k, q


def twice(keys, d):
    """The peer's figures for keys also under "KEY_g": the same QEMU run against kumo's
    `--decompress guest` variant (QEMU's guest always decompresses itself)."""
    return {**d, **{f"{k}_g": d[k] for k in keys}}


def vmm_startup():
    kumo = kumo_cmd(KERNEL, INITRD, "panic=-1")
    kumo_g = kumo_cmd(KERNEL, INITRD, "panic=-1", extra=["--decompress", "guest"])
    qemu = qemu_cmd(KERNEL, INITRD, "panic=-1", accel="kvm")
    with bench_disk(8) as (disk, _), tempfile.TemporaryDirectory(prefix="kumo-bench.") as d:
        kx, qx = devices_args(disk, d)
        kumo_dev = kumo_cmd(KERNEL, INITRD, "panic=-1", extra=kx)
        qemu_dev = qemu_cmd(KERNEL, INITRD, "panic=-1", accel="kvm", extra=qx)
        k, q, failed = side_by_side(
            RUNS, lambda: {"exec": exec_to_first_kvm_run(kumo), "mem": own_memory_kb(kumo),
                           "memdev": own_memory_kb(kumo_dev), **kumo_phases(kumo),
                           "exec_g": exec_to_first_kvm_run(kumo_g)},
            lambda: twice(("exec",), {"exec": exec_to_first_kvm_run(qemu),
                                      "mem": own_memory_kb(qemu),
                                      "memdev": own_memory_kb(qemu_dev)}))
    rows = [paired_row("exec → first KVM_RUN (strace), 1 vCPU", "exec", k, q, failed, "ms",
                       peer_label("kvm"), scale=1e3),
            paired_row("exec → first KVM_RUN (strace), 1 vCPU, kumo `--decompress guest`", "exec_g",
                       k, q, failed, "ms", peer_label("kvm"), scale=1e3),
            paired_row(f"VMM own memory (Pss − guest RAM, {SETTLE:g} s after start)", "mem", k, q,
                       failed, "MiB", peer_label("kvm"), scale=1 / 1024),
            paired_row(f"VMM own memory with a virtio disk, balloon, console port and control "
                       f"socket ({SETTLE:g} s after start)", "memdev", k, q, failed, "MiB",
                       peer_label("kvm"), scale=1 / 1024)]
    phases = [f"{k[6:]} {statistics.median(v):.1f} ms" for k, v in k.items()
              if k.startswith("phase:")]
    return rows, ["exec → first KVM_RUN: both VMMs load the same bzImage + initramfs; kumo "
                  "decompresses the kernel on the host before its first KVM_RUN.",
                  "kumo's phases from main() to the first KVM_RUN (`kumo run -v` phase lines, "
                  "medians, without strace; exec → main() is the dynamic loader and libc): "
                  + ("; ".join(phases) if phases else "none measured") + ". QEMU has no "
                  "such breakdown here.",
                  "VMM own memory: proportional set size of the VMM process minus that of its "
                  "guest-RAM mapping (kumo's memfd, QEMU's RAM block); with devices: the same "
                  "read-only 8 MiB disk, a balloon, a virtio console port on a socket and a "
                  "control socket (QEMU: virtio-blk-pci, virtio-balloon-pci, virtconsole on "
                  "virtio-serial-pci, QMP)."]


def pio():
    out = subprocess.run([BIN["bench-pio"], str(PIO_ITERS), str(RUNS)], capture_output=True,
                         text=True, check=True, timeout=GUARD).stdout
    raw = [float(l.split()[1]) for l in out.splitlines() if l.startswith("raw ")]
    km = [float(l.split()[1]) for l in out.splitlines() if l.startswith("kumo ")]
    return ([row(f"PIO exit round trip from guest user mode ({PIO_ITERS} exits per run)", "µs", km,
                 "bare KVM_RUN loop", raw, scale=1e-3, digits=2)],
            ["PIO round trip: one `out` from guest CPL3 (IOPL 3) per iteration; the bare loop is "
             "`KVM_RUN` + a switch on the port in the same binary, kumo's is its vCPU thread, "
             "exit dispatcher and PIO bus."])


def timed_boot(cmd):
    """{"init": s, "off": s}: from start to the kernel starting /init, and to the VMM's exit
    after the guest powered off (which it must)."""
    t0 = time.time()
    p = start(cmd)
    t_first = t_init = None
    last = ""
    try:
        for line in console_lines(p.stdout, t0 + GUARD):
            last = line.strip() or last
            if t_first is None and line.strip():
                t_first = time.time() - t0
            if t_init is None and INIT_MARKER in line:
                t_init = time.time() - t0
        rc = p.wait(timeout=max(1, t0 + GUARD - time.time()))
        t_off = time.time() - t0
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        kill_group(p)
    if t_init is None or rc != 0:
        what = os.path.basename(cmd[0]) + (" --decompress guest" if "--decompress" in cmd else "")
        raise RuntimeError(f"{what}: {'no /init' if t_init is None else 'exit status ' + str(rc)}"
                           f" after {time.time() - t0:.0f} s (console's last line: {last[:100]!r})")
    return {"first": t_first, "kernel": t_init - t_first, "init": t_init, "off": t_off,
            "poweroff": t_off - t_init}


def boots():
    rows = []
    peer = peer_label() + ", same kernel, initramfs and command line"
    for label, kernel, initrd in KERNELS:
        if PVM and "stock" in label:
            rows.append(error_row(f"{label} boot", peer, "on a PVM host: its initramfs is "
                                  "ordinary 64-bit code, which PVM's emulator cannot run", True))
            continue
        guest = ["--decompress", "guest"]
        k, q, failed = side_by_side(
            BOOT_RUNS, lambda: {**timed_boot(kumo_cmd(kernel, initrd, BOOT_ARGS, cpus=BOOT_CPUS)),
                                **{f"{x}_g": v for x, v in timed_boot(kumo_cmd(
                                    kernel, initrd, BOOT_ARGS, cpus=BOOT_CPUS,
                                    extra=guest)).items()}},
            lambda: twice(("init", "off", "first"),
                          timed_boot(qemu_cmd(kernel, initrd, BOOT_ARGS, cpus=BOOT_CPUS))))
        for key, what in (("init", "start → kernel runs init"), ("off", "start → power-off (VMM exit)"),
                          ("first", "phase start → the kernel's first console line"),
                          ("kernel", "phase first console line → init"),
                          ("poweroff", "phase init → power-off (VMM exit)"),
                          ("first_g", "kumo `--decompress guest`: phase start → the kernel's first "
                           "console line"),
                          ("init_g", "kumo `--decompress guest`: start → kernel runs init"),
                          ("off_g", "kumo `--decompress guest`: start → power-off (VMM exit)")):
            name = f"{label} boot: {what}, {BOOT_CPUS} vCPU{'s' if BOOT_CPUS > 1 else ''}, {MEM_MB} MiB"
            rows.append(paired_row(name, key, k, q, failed, "s", peer, digits=2))
    qemu = qemu_cmd(KERNEL, INITRD, BOOT_ARGS, cpus=BOOT_CPUS)
    notes = [f"Boots: each kernel with its initramfs and the command line `{BOOT_ARGS}` (+ "
             "`console=ttyS0`) in both VMMs: kumo-probe, the kernel's first process, powers off "
             "at once (ACPI S5; QEMU with `-no-reboot`). Times from the VMM's start as its parent "
             f"sees it, to the kernel's `{INIT_MARKER}` line on the console and to the VMM's "
             f"exit. QEMU: `{' '.join(qemu[1:qemu.index('-kernel')])}`. The phase rows split "
             "that time at the kernel's first line on the serial console (the same kernel event "
             "in both VMMs: before it the VMM's set-up, QEMU's firmware and the kernel's "
             "decompression and early boot up to its console; after it the kernel's boot to "
             "init, then init's power-off and the VMM's exit)."]
    if PVM:
        notes.append("This host's KVM is PVM: kumo's guest kernel runs in KVM's instruction "
                     "emulator, so its guests are compared with QEMU's software emulation (TCG); "
                     "QEMU with `-accel kvm` cannot boot Linux here. On a VMX/SVM host, or in the "
                     "KVM box, the same command compares with `-accel kvm`.")
    return rows, notes


def mount_of(path):
    """"FSTYPE on DEVICE" of the file system path is on."""
    best = ("", "?", "?")
    for line in open("/proc/self/mounts"):
        dev, mnt, fstype = line.split()[:3]
        if path == mnt or path.startswith(mnt.rstrip("/") + "/"):
            if len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return f"{best[1]} on {best[2]}" + (", the box's scratch disk" if IN_BOX else "")


@contextlib.contextmanager
def bench_disk(mb):
    """A disk image both VMMs open with O_DIRECT (cache=none), filled with data: a file in
    /var/tmp, or a loop device over it where that file system has no O_DIRECT (the box's tmpfs)."""
    d = tempfile.mkdtemp(prefix="kumo-bench.", dir="/var/tmp")
    img = os.path.join(d, "disk.img")
    loop = None
    try:
        with open(img, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        try:
            os.close(os.open(img, os.O_RDONLY | os.O_DIRECT))
            disk = (img, f"a file in /var/tmp ({mount_of(img)})")
        except OSError:
            loop = subprocess.run(["losetup", "-f", "--show", img], capture_output=True, text=True,
                                  check=True).stdout.strip()
            disk = (loop, f"a loop device over a file in /var/tmp ({mount_of(img)}, no O_DIRECT)")
        yield disk
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop])
        shutil.rmtree(d, ignore_errors=True)


def blkbench(cmd):
    """kumo-probe's KUMO-BENCH lines of one boot: {name: value}."""
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=GUARD).stdout
    res = {}
    for l in out.decode(errors="replace").replace("\r", "").splitlines():
        if l.startswith("KUMO-BENCH "):
            k, v = l[len("KUMO-BENCH "):].split("=")
            res[k] = float(v)
    if not res:
        raise RuntimeError(f"{os.path.basename(cmd[0])}: no KUMO-BENCH lines")
    return res


BLK_TESTS = (("randread_4k_qd1_iops", "4k random read, QD1", "IOPS"),
             ("randread_4k_qd32_iops", "4k random read, QD32", "IOPS"),
             ("seqread_1m_mibps", "1M sequential read", "MiB/s"),
             ("seqwrite_1m_mibps", "1M sequential write", "MiB/s"))


def guest_blk():
    peer = peer_label() + f", its virtio-blk-pci (`cache=none,aio={QEMU_AIO}`), same guest and disk"
    with bench_disk(GUEST_DISK_MB) as (disk, what):
        k, q, failed = side_by_side(
            GUEST_RUNS, lambda: blkbench(kumo_cmd(KERNEL, INITRD, BLK_ARGS, extra=["--disk", disk])),
            lambda: blkbench(qemu_cmd(KERNEL, INITRD, BLK_ARGS, extra=[
                "-drive", f"file={disk},if=none,id=d0,format=raw,cache=none,aio={QEMU_AIO}",
                "-device", "virtio-blk-pci,drive=d0"])))
    rows = [paired_row(f"in-guest virtio-blk {label} (guest O_DIRECT)", key, k, q, failed, unit,
                       peer, better="higher", digits=0) for key, label, unit in BLK_TESTS]
    return rows, [f"In-guest virtio-blk: kumo-probe's blkbench (`{BLK_ARGS}`) in the test kernel, "
                  f"1 vCPU, {MEM_MB} MiB, on a {GUEST_DISK_MB} MiB disk: {what}, opened with "
                  "O_DIRECT by both VMMs (kumo `--disk` default cache=none, io_uring). "
                  f"4k random reads over its first 32 MiB for {GUEST_BLK_S} s of guest time each, QD1 with "
                  "pread, QD32 with Linux AIO (io_submit); 1M sequential: 32 MiB written (then "
                  "fsync) and read back. Rates from the guest's clock; throughput, higher is better."] + (
                     ["On this PVM host the guest kernel's I/O path runs in KVM's instruction "
                      "emulator, so the in-guest rows measure the emulator far more than the "
                      "device; the device path alone is in the device rows."] if PVM else [])


class Qmp(Agent):
    """A QMP connection: the JSON-lines client of guest/agentlib.py with QMP's request shape."""

    def message(self, rid, verb, args):
        return {"execute": verb, "id": rid, **({"arguments": args} if args is not None else {})}


BALLOON_POLL = 0.02


def balloon_cycles(kind, tmp):
    """BALLOON_RUNS inflate/deflate cycles of BALLOON_GIB in one idle guest: {"inflate": [s],
    "deflate": [s]}, each from the request to the first poll that sees the driver's actual
    size at the target."""
    mem_mb = BALLOON_GIB * 1024 + 512
    ram = mem_mb << 20
    sock = os.path.join(tmp, f"{kind}.sock")
    if kind == "kumo":
        cmd = kumo_cmd(KERNEL, INITRD, IDLE_ARGS, mem_mb=mem_mb,
                       extra=["--balloon=stats=0", "--control", sock])
    else:
        cmd = qemu_cmd(KERNEL, INITRD, IDLE_ARGS, mem_mb=mem_mb, machine="q35,memory-backend=ram",
                       extra=["-object", f"memory-backend-memfd,id=ram,size={mem_mb}M",
                              "-device", "virtio-balloon-pci", "-qmp", f"unix:{sock},server=on,wait=off"])
    t0 = time.time()
    deadline = t0 + GUARD
    p = start(cmd)
    c = (Agent if kind == "kumo" else Qmp)(sock, deadline)
    out = {"inflate": [], "deflate": []}

    def call(verb, args=None):
        r = c.request(verb, args, timeout=max(1, deadline - time.time()))
        if not r or ("ok" in r and not r["ok"]) or "error" in r:
            raise RuntimeError(f"{kind} {verb}: {r}")
        return r.get("result", r.get("return"))

    if kind == "kumo":
        def set_target(b): call("balloon-set", {"target": b})
        def actual(): return call("balloon-get")["actual_bytes"]
    else:
        def set_target(b): call("balloon", {"value": b})
        def actual(): return call("query-balloon")["actual"]
    try:
        if not any("KUMO-CHECK done" in l for l in console_lines(p.stdout, deadline)):
            raise RuntimeError(f"{kind}: the guest did not come up within {GUARD:.0f} s")
        c.connect(timeout=30)
        if kind != "kumo":
            call("qmp_capabilities")
        for _ in range(BALLOON_RUNS):
            for key, target in (("inflate", ram - (BALLOON_GIB << 30)), ("deflate", ram)):
                t = time.time()
                deadline = t + GUARD
                set_target(target)
                while actual() != target:
                    if time.time() > deadline:
                        raise RuntimeError(f"{kind}: {key} not done after {GUARD:.0f} s")
                    time.sleep(BALLOON_POLL)
                out[key].append(time.time() - t)
        return out
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{kind}: {type(e).__name__}: {e}")
    finally:
        c.close()
        kill_group(p)


def guest_balloon():
    name = f"in-guest virtio-balloon %s {BALLOON_GIB} GiB (test kernel, 1 vCPU, {BALLOON_GIB * 1024 + 512} MiB)"
    peer = peer_label() + ", its virtio-balloon-pci, QMP `balloon` / `query-balloon`"
    if PVM:
        return [error_row(name % "inflate", peer, "on a PVM host: the guest kernel's page "
                          "allocator runs in KVM's instruction emulator there", True)], []
    with tempfile.TemporaryDirectory(prefix="kumo-bench-balloon.") as tmp:
        k = balloon_cycles("kumo", tmp)
        q = balloon_cycles("qemu", tmp)
    return ([row(name % key, "s", k[key], peer, q[key], digits=2) for key in ("inflate", "deflate")],
            [f"In-guest balloon: one boot per VMM of the test kernel with kumo-probe idle "
             f"(`{IDLE_ARGS}`); {BALLOON_RUNS} cycles each of setting the target to RAM − "
             f"{BALLOON_GIB} GiB (inflate) and back to RAM (deflate), timed from the request on "
             "the control socket (kumo `balloon-set`, QMP `balloon`) to the first poll "
             f"(every {BALLOON_POLL * 1000:.0f} ms: `balloon-get` / `query-balloon`) that shows the "
             "Linux driver's `actual` at the target. Same device features on both: statistics "
             "queue without polling (kumo `--balloon=stats=0`, QEMU's default), no "
             "deflate-on-oom, no free page reporting. Guest RAM is a memfd on both (QEMU "
             "`memory-backend-memfd`), so both give pages back with a hole punch; on anonymous "
             "RAM QEMU 7.2 warns once per page on deflate (MADV_WILLNEED)."])


def numa_section():
    """numa_pv's Markdown section; its own failures become rows that say so."""
    if not NUMA:
        return "## vNUMA PV features\n\nNot run (BENCH_NUMA=0).\n"
    try:
        return numa_pv.section(numa_pv.run_all(BIN["kumo"]))
    except Exception as e:  # noqa: BLE001
        return f"## vNUMA PV features: ompbench in a 2-node guest\n\nThe section failed: {e!r}\n"


def vm_part(path, tmp):
    take_binaries(tmp, ("kumo", "bench-pio"))
    part = Part("vm", path)
    print(f"bench: VM part, {RUNS} runs, {BOOT_RUNS} boots per kernel and VMM, PVM: {PVM}, "
          f"in the box: {IN_BOX}", flush=True)
    if ONLY == "startup":
        for title, fn in (("exec → KVM_RUN and memory", vmm_startup), ("boots", boots)):
            part.section(title, fn)
        return
    if ONLY not in ("snapshot", "migrate"):
        for title, fn in (("exec → KVM_RUN and memory", vmm_startup), ("PIO", pio),
                          ("boots", boots), ("in-guest virtio-blk", guest_blk),
                          ("in-guest balloon", guest_balloon)):
            part.section(title, fn)
        t0 = time.time()
        part.d["numa"] = numa_section()
        part.d["sections"].append(("vNUMA PV features", time.time() - t0))
        print(f"bench: vNUMA PV features done in {time.time() - t0:.0f} s", flush=True)
        part.save()
    if ONLY != "migrate":
        snapshot_part(part)
    if ONLY != "snapshot":
        migrate_part(part)


def snapshot_part(part):
    """tests/bench/snapshot.py's measurements into part.d["snapshot"] (saved after each size)."""
    section_part(part, "snapshot", "snapshot and restore",
                 "not run on a PVM host (the test kernel's touch runs in KVM's emulator)",
                 lambda save: snap_bench.run_all(BIN["kumo"], qemu_cmd, Agent, Qmp, KERNEL, INITRD, save))


def migrate_part(part):
    """tests/bench/migrate.py's measurements into part.d["migrate"] (saved after each cell)."""
    section_part(part, "migrate", "live migration",
                 "not run on a PVM host (the stock kernel's userspace does not run there)",
                 lambda save: mig_bench.run_all(BIN["kumo"], qemu_cmd, Agent, Qmp, save))


def section_part(part, key, title, pvm_why, run):
    """A section whose results go to part.d[key] as run(save) hands them over; its failure to
    part.d[key + "_error"]."""
    if PVM:
        part.d[key + "_error"] = pvm_why
        return
    t0 = time.time()

    def save(res):
        part.d[key] = res
        part.d[key + "_s"] = time.time() - t0
        part.save()
    try:
        run(save)
    except Exception as e:  # noqa: BLE001
        part.d[key + "_error"] = f"{type(e).__name__}: {e}"
    part.d["sections"].append((title, time.time() - t0))
    print(f"bench: {title} done in {time.time() - t0:.0f} s", flush=True)
    part.save()


def migrate_text(vm):
    if not vm or (not vm.get("migrate") and not vm.get("migrate_error")):
        return ""
    if not vm.get("migrate"):
        return f"{mig_bench.HEADING}\n\nNot measured: {vm['migrate_error']}\n"
    return mig_bench.section(vm["migrate"], vm["env"], QEMU_VER, vm.get("migrate_s"))


def snapshot_text(vm):
    if not vm or (not vm.get("snapshot") and not vm.get("snapshot_error")):
        return ""
    if not vm.get("snapshot"):
        return f"{snap_bench.HEADING}\n\nNot measured: {vm['snapshot_error']}\n"
    return snap_bench.section(vm["snapshot"], vm["env"], QEMU_VER, vm.get("snapshot_s"))


def write_only_snapshot(vm, out, heading=snap_bench.HEADING, text_fn=snapshot_text, key="snapshot"):
    """KUMO_BENCH_ONLY=snapshot (or migrate): replaces that section of out (or appends it)."""
    text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
    new = text_fn(vm)
    i = text.find(heading + "\n")
    if i < 0:
        text = text.rstrip("\n") + "\n\n" + new
    else:
        j = text.find("\n## ", i + 1)
        text = text[:i] + new + ("\n" + text[j + 1:] if j >= 0 else "")
    with open(out, "w") as f:
        f.write(text)
    print(new)
    return 0 if vm.get(key) else 1


def write_only_rows(vm, out):
    """KUMO_BENCH_ONLY=startup: replaces the main table's rows of the same names (or adds them
    after its last row) and says so in one dated line under the table."""
    lines = open(out).read().split("\n")
    where = "box" if vm["env"]["in_box"] else "host"

    def table_end():	# the main table: from its header to its last row
        i = lines.index("| measurement | where | kumo | peer | peer result | ratio | better |") + 1
        while i + 1 < len(lines) and lines[i + 1].startswith("| "):
            i += 1
        return i

    last = table_end()
    for r in vm.get("rows", []):
        new = row_line(r, where)
        at = [i for i, l in enumerate(lines[:last + 1]) if l.startswith(f"| {r['name']} |")]
        if at:
            lines[at[0]] = new
        else:
            last += 1
            lines.insert(last, new)
        print(new)
    note = (f"- Rows {', '.join(repr(r['name']) for r in vm.get('rows', []))} re-measured alone "
            f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
            f"(`KUMO_BENCH_ONLY=startup make bench`, {vm['wall_s'] / 60:.1f} min, "
            f"host load average {os.getloadavg()[2]:.1f} over 15 min); the other rows are older.")
    lines = [l for l in lines if not l.startswith("- Rows ") or "re-measured alone" not in l]
    lines.insert(table_end() + 2, note)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    failed = [r["name"] for r in vm.get("rows", []) if "error" in r and not r.get("skipped")]
    return 1 if failed else 0


# ------------------------------------------------------------------ host part
def device_rows(cmd):
    """Runs a device bench (bench-blk, bench-balloon): {(who, test): [values]}, {test: unit}."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=GUARD).stdout
    res, units = {}, {}
    for l in out.splitlines():
        f = l.split()
        if len(f) >= 4 and f[0] in ("kumo", "raw"):
            res.setdefault((f[0], f[1]), []).append(float(f[2]))
            units[f[1]] = f[3]
    return res, units


def blk_device():
    res, units = device_rows([BIN["bench-blk"], str(BLK_MB), str(BLK_SECONDS), str(RUNS)])
    rows = [row(f"virtio-blk device path, {t} (cache=none, {BLK_MB} MiB file, no guest kernel)",
                units[t], res[("kumo", t)], "raw liburing, same file and depth", res[("raw", t)],
                better="higher", digits=0)
            for t in sorted({t for (w, t) in res if w == "kumo"})]
    return rows, ["virtio-blk device path: a host-side test driver plays the guest (rings in "
                  "guest memory, doorbell through the queue's eventfd, interrupt eventfd) against "
                  "kumo's virtio-blk and io_uring backend; throughput, higher is better."]


def balloon_device():
    res, _ = device_rows([BIN["bench-balloon"], str(BALLOON_GIB), str(RUNS)])
    rows = []
    for test, floor, label in (
            (f"inflate-{BALLOON_GIB}GiB", f"inflate-batched-{BALLOON_GIB}GiB",
             "fallocate(PUNCH_HOLE) per contiguous run of each PFN array"),
            (f"inflate-{BALLOON_GIB}GiB", f"inflate-{BALLOON_GIB}GiB", "fallocate(PUNCH_HOLE) per page"),
            (f"deflate-{BALLOON_GIB}GiB", f"deflate-{BALLOON_GIB}GiB", "a bare loop marking the pages present")):
        rows.append(row(f"virtio-balloon device {test}, 256 PFNs per buffer, touched memfd, no guest kernel",
                        "MiB/s", res[("kumo", test)], label, res[("raw", floor)], better="higher", digits=0))
    return rows, ["virtio-balloon device rows: the host-side driver sends PFN arrays as Linux "
                  "does (256 ascending PFNs per buffer) with up to a queue's worth in flight; kumo "
                  "merges contiguous PFNs into one hole punch. Throughput: higher is better."]


def host_part(path, tmp):
    take_binaries(tmp, ("bench-blk", "bench-balloon"))
    part = Part("host", path)
    print(f"bench: host part, {RUNS} runs", flush=True)
    for title, fn in (("virtio-blk device path", blk_device), ("virtio-balloon device", balloon_device)):
        part.section(title, fn)


# ------------------------------------------------------------------ docs/benchmarks.md
def write(paths, out="docs/benchmarks.md"):
    parts = {}
    for p in paths:
        d = json.load(open(p))
        parts[d["part"]] = d
    vm, host = parts.get("vm"), parts.get("host")
    if ONLY == "startup":
        return write_only_rows(vm, out)
    if ONLY == "snapshot":
        return write_only_snapshot(vm, out)
    if ONLY == "migrate":
        return write_only_snapshot(vm, out, mig_bench.HEADING, migrate_text, "migrate")
    box = vm and vm["env"]["in_box"]
    why = os.environ.get("BENCH_BOX_WHY", "")
    L = ["# Benchmarks", "",
         "Written by `make bench` (`tests/bench/run.sh`, `tests/bench/run.py`); every figure below "
         "comes from that one run. Medians with (min–max); ratio = kumo / peer, and the last "
         "column says which way is better for kumo.", ""]
    he = (host or vm)["env"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    L.append(f"Host: {he['nproc']} CPUs ({he['cpu']}), {he['mem_mib'] // 1024} GiB, kernel "
             f"{he['kernel']}, /dev/kvm: {'PVM' if he['pvm'] else ('none' if not os.path.exists('/dev/kvm') else 'VMX/SVM')}; "
             f"{when}; runs: {RUNS} per measurement, {BOOT_RUNS} boots per kernel and VMM.")
    L.append("")
    if box:
        e = vm["env"]
        L.append(f"**Where: the VM rows ran in the KVM box** (`tests/box/box run`, used here because "
                 f"{why or 'the host has no usable native /dev/kvm'}): a QEMU {he['qemu']} TCG "
                 f"machine with emulated AMD SVM{' and nested paging (NPT)' if e['svm_npt'] else ''} "
                 f"(CPU model \"{e['cpu']}\"{'' if e.get('xsave') else ' without XSAVE, docs/box.md'}), {e['nproc']} vCPUs and {e['mem_mib']} MiB "
                 f"as its kernel sees them, box kernel {e['kernel']} with kvm-amd built in; kumo and "
                 f"its peer QEMU {e['qemu']} `-accel kvm` run one after the other on the box's "
                 f"nested /dev/kvm, in one box boot ({vm['wall_s'] / 60:.1f} min). **Every absolute "
                 "figure in those rows is TCG-scaled** (the box's CPUs are emulated, every exit of "
                 "a nested guest is an emulated #VMEXIT), so the ratios are the result, not the "
                 "times or rates. The device rows (no guest kernel, no KVM) ran on the host itself.")
    elif vm:
        L.append(f"Where: everything ran on this host directly (QEMU {vm['env']['qemu']}).")
    L.append("")
    L.append("| measurement | where | kumo | peer | peer result | ratio | better |")
    L.append("|---|---|---|---|---|---|---|")
    for d, where in ((vm, "box" if box else "host"), (host, "host")):
        for r in (d or {}).get("rows", []):
            L.append(row_line(r, where))
    L.append("")
    for d in (vm, host):
        for n in (d or {}).get("notes", []):
            L.append(f"- {n}")
    if box:
        L.append(f"- The box's own state: host load average over the last 15 minutes "
                 f"{os.getloadavg()[2]:.1f} on {os.cpu_count()} CPUs when this file was written "
                 "(the box alone keeps up to its vCPU count busy; more means something else ran "
                 "beside the run).")
    times = [f"{t} {s:.0f} s" for d in (host, vm) if d for t, s in d["sections"]]
    t0 = float(os.environ.get("BENCH_T0", "0"))
    L.append(f"- Scale: BENCH_* variables at the head of `tests/bench/run.py`"
             + (" (the box's size: BENCH_BOX_CPUS, BENCH_BOX_MEM in `tests/bench/run.sh`)" if box else "")
             + ". Sections: "
             f"{', '.join(times)}" + (f"; whole run {(time.time() - t0) / 60:.1f} min." if t0 else "."))
    L.append("")
    if vm:
        L.append(vm.get("numa", ""))
        L.append(snapshot_text(vm))
        L.append(migrate_text(vm))
    with open(out, "w") as f:
        f.write("\n".join(L).rstrip("\n") + "\n")
    print(open(out).read())
    failed = [r["name"] for d in (vm, host) if d for r in d["rows"]
              if "error" in r and not r.get("skipped")]
    if vm and (not vm.get("numa") or "The section failed" in vm["numa"]):
        failed.append("vNUMA PV features")
    if failed:
        print(f"bench: {len(failed)} measurements failed: {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv):
    if argv and argv[0] == "--write":
        return write(argv[1:])
    with tempfile.TemporaryDirectory(prefix="kumo-bench.") as d:
        if len(argv) >= 3 and argv[0] == "--part":
            os.makedirs(os.path.dirname(os.path.abspath(argv[2])), exist_ok=True)
            (vm_part if argv[1] == "vm" else host_part)(argv[2], d)
            return 0
        if ONLY not in ("snapshot", "migrate", "startup"):
            host_part(os.path.join(d, "host.json"), d)
        vm_part(os.path.join(d, "vm.json"), d)
        return write([p for p in (os.path.join(d, "host.json"), os.path.join(d, "vm.json"))
                      if os.path.exists(p)])


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    sys.exit(main(sys.argv[1:]))
