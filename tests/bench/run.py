#!/usr/bin/env python3
"""kumo benchmarks, side by side in one run, as ratios. Writes docs/benchmarks.md.

Scale is set by environment variables so the same script runs small here and paper-sized on a
real host: BENCH_RUNS (default 5), BENCH_BOOT_RUNS (kumo Linux boots; default 5),
BENCH_PIO_ITERS (default 100000), BENCH_SETTLE (seconds before reading memory; default 3);
the vNUMA PV-feature section (tests/bench/numa_pv.py) has its own BENCH_OMP_* variables.
"""
import os, re, shutil, statistics, subprocess, sys, tempfile, time

import numa_pv  # tests/bench/numa_pv.py: the vNUMA PV-feature benchmark (issue 5)
from numa_pv import INITRD, kill_group  # noqa: E402  (INITRD: the image for this host)

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BOOT_RUNS = int(os.environ.get("BENCH_BOOT_RUNS", "5"))
PIO_ITERS = int(os.environ.get("BENCH_PIO_ITERS", "100000"))
BLK_MB = int(os.environ.get("BENCH_BLK_MB", "256"))
BLK_SECONDS = float(os.environ.get("BENCH_BLK_SECONDS", "2"))
BALLOON_GIB = int(os.environ.get("BENCH_BALLOON_GIB", "1"))
GUEST_RUNS = int(os.environ.get("BENCH_GUEST_RUNS", "3"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "3"))
KERNEL = "guest/out/test-bzImage"
MEM_MB = 256
QEMU = shutil.which("qemu-system-x86_64")
KUMO_CMD = ["./kumo", "run", "-q", "--kernel", KERNEL, "--initrd", INITRD, "--mem", f"{MEM_MB}M"]
QEMU_KVM_CMD = [QEMU or "qemu-system-x86_64", "-accel", "kvm", "-m", str(MEM_MB), "-smp", "1",
                "-nographic", "-nodefaults", "-no-reboot", "-serial", "null",
                "-kernel", KERNEL, "-initrd", INITRD, "-append", "console=ttyS0"]


def stats(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(xs, unit, scale=1.0, digits=1):
    m, lo, hi = stats([x * scale for x in xs])
    return f"{m:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def exec_to_first_kvm_run(cmd):
    """Seconds from execve to the first KVM_RUN ioctl, from strace timestamps."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "trace")
        p = subprocess.Popen(["strace", "-f", "-ttt", "-e", "trace=execve,ioctl", "-o", out] + cmd,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        t_exec = t_run = None
        deadline = time.time() + 20
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


def own_memory_kb(cmd):
    """Pss of the VMM process minus the Pss of its guest-RAM mapping, SETTLE s after start."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(SETTLE)
    total = ram = 0
    size = 0
    name = ""
    try:
        for line in open(f"/proc/{p.pid}/smaps"):
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                name = line.split()[-1] if len(line.split()) > 5 else ""
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


def time_to_line(cmd, marker, timeout):
    """Seconds from start until the guest console prints a line containing marker; then kill."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, errors="replace",
                         start_new_session=True)
    try:
        for line in p.stdout:
            if marker in line:
                return time.time() - t0
            if time.time() - t0 > timeout:
                break
        raise RuntimeError(f"{cmd[0]}: no '{marker}' on the console")
    finally:
        kill_group(p)


BOOT_MARKER = "Run /init as init process"
BOOT_ARGS = "panic=-1"


def boot_kumo():
    return time_to_line(KUMO_CMD + ["--cpus", "1", "--cmdline", BOOT_ARGS], BOOT_MARKER, 3600)


def boot_qemu_tcg():
    return time_to_line([QEMU, "-accel", "tcg", "-m", str(MEM_MB), "-smp", "1", "-nographic",
                         "-nodefaults", "-no-reboot", "-serial", "stdio", "-kernel", KERNEL,
                         "-initrd", INITRD, "-append", "console=ttyS0 " + BOOT_ARGS],
                        BOOT_MARKER, 600)


def main():
    rows = []
    notes = []
    pvm = os.path.isdir("/sys/module/kvm_pvm")
    print(f"bench: {RUNS} runs, {BOOT_RUNS} kumo boots, PVM host: {pvm}", flush=True)

    k = [exec_to_first_kvm_run(KUMO_CMD) for _ in range(RUNS)]
    q = [exec_to_first_kvm_run(QEMU_KVM_CMD) for _ in range(RUNS)]
    rows.append(("exec → first KVM_RUN (strace)", fmt(k, "ms", 1e3), "QEMU 7.2 `-accel kvm`",
                 fmt(q, "ms", 1e3), statistics.median(k) / statistics.median(q)))
    print("bench: exec→KVM_RUN done", flush=True)

    k = [own_memory_kb(KUMO_CMD) for _ in range(RUNS)]
    q = [own_memory_kb(QEMU_KVM_CMD) for _ in range(RUNS)]
    rows.append((f"VMM own memory (Pss − guest RAM, {SETTLE:g} s after start)", fmt(k, "MiB", 1 / 1024),
                 "QEMU 7.2 `-accel kvm`", fmt(q, "MiB", 1 / 1024),
                 statistics.median(k) / statistics.median(q)))
    print("bench: memory done", flush=True)

    out = subprocess.run(["tests/bench/bench-pio", str(PIO_ITERS), str(RUNS)], capture_output=True,
                         text=True, check=True).stdout
    raw = [float(l.split()[1]) for l in out.splitlines() if l.startswith("raw ")]
    km = [float(l.split()[1]) for l in out.splitlines() if l.startswith("kumo ")]
    rows.append((f"PIO exit round trip from guest user mode ({PIO_ITERS} exits)", fmt(km, "µs", 1e-3, 2),
                 "bare KVM_RUN loop", fmt(raw, "µs", 1e-3, 2),
                 statistics.median(km) / statistics.median(raw)))
    print("bench: PIO done", flush=True)

    out = subprocess.run(["tests/bench/bench-blk", str(BLK_MB), str(BLK_SECONDS), str(RUNS)],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for l in out.splitlines():
        f = l.split()
        if len(f) >= 4 and f[0] in ("kumo", "raw"):
            res.setdefault((f[0], f[1]), []).append(float(f[2]))
            res[("unit", f[1])] = f[3]
    for test in sorted({t for (w, t) in res if w == "kumo"}):
        unit = res[("unit", test)]
        k, r = res[("kumo", test)], res[("raw", test)]
        rows.append((f"virtio-blk device path, {test} (cache=none, {BLK_MB} MiB file, no guest kernel)",
                     fmt(k, unit, 1, 0), "raw liburing, same file and depth", fmt(r, unit, 1, 0),
                     statistics.median(k) / statistics.median(r)))
    notes.append("virtio-blk rows: a host-side test driver plays the guest (rings in guest memory, "
                 "doorbell through the queue's eventfd, interrupt eventfd) against kumo's "
                 "virtio-blk and io_uring backend; ratio > 1 is better here (throughput).")
    print("bench: virtio-blk done", flush=True)

    out = subprocess.run(["tests/bench/bench-balloon", str(BALLOON_GIB), str(RUNS)],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for l in out.splitlines():
        f = l.split()
        if len(f) >= 4 and f[0] in ("kumo", "raw"):
            res.setdefault((f[0], f[1]), []).append(float(f[2]))
    for test, floor, label in (
            (f"inflate-{BALLOON_GIB}GiB", f"inflate-batched-{BALLOON_GIB}GiB",
             "fallocate(PUNCH_HOLE) per contiguous run of each PFN array"),
            (f"inflate-{BALLOON_GIB}GiB", f"inflate-{BALLOON_GIB}GiB",
             "fallocate(PUNCH_HOLE) per page"),
            (f"deflate-{BALLOON_GIB}GiB", f"deflate-{BALLOON_GIB}GiB", "a bare loop marking the pages present")):
        k, r = res[("kumo", test)], res[("raw", floor)]
        rows.append((f"virtio-balloon {test}, 256 PFNs per buffer, touched memfd, no guest kernel",
                     fmt(k, "MiB/s", 1, 0), label, fmt(r, "MiB/s", 1, 0),
                     statistics.median(k) / statistics.median(r)))
    notes.append("virtio-balloon rows: the host-side driver sends PFN arrays as Linux does (256 "
                 "ascending PFNs per buffer) with up to a queue's worth in flight; kumo merges "
                 "contiguous PFNs into one hole punch. Throughput: higher is better.")
    print("bench: virtio-balloon done", flush=True)

    # In-guest virtio-blk: kumo-probe's blkbench (O_DIRECT, one request at a time) in the same
    # test kernel under kumo and under QEMU TCG with its own virtio-blk.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        img = os.path.join(d, "bench.img")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        args = "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=blkbench,poweroff"
        kres, qres = {}, {}
        for _ in range(GUEST_RUNS):
            for res, cmd in ((kres, ["./kumo", "run", "-q", "--kernel", KERNEL, "--initrd", INITRD,
                                     "--mem", f"{MEM_MB}M", "--disk", img, "--cmdline", args]),
                             (qres, [QEMU, "-accel", "tcg", "-m", str(MEM_MB), "-nographic",
                                     "-nodefaults", "-no-reboot", "-serial", "stdio", "-kernel",
                                     KERNEL, "-initrd", INITRD, "-append", "console=ttyS0 " + args,
                                     "-drive", f"file={img},if=none,id=d0,format=raw,cache=none",
                                     "-device", "virtio-blk-pci,drive=d0"])):
                out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                     text=True, errors="replace", timeout=1800).stdout
                for l in out.replace("\r", "").splitlines():
                    if l.startswith("KUMO-BENCH "):
                        k, v = l[len("KUMO-BENCH "):].split("=")
                        res.setdefault(k, []).append(float(v))
        for key, unit in (("randread_4k_qd1_iops", "IOPS"), ("seqread_1m_mibps", "MiB/s"),
                          ("seqwrite_1m_mibps", "MiB/s")):
            if key not in kres or key not in qres:
                raise RuntimeError(f"in-guest bench: no {key} from kumo or QEMU")
            rows.append((f"in-guest virtio-blk {key.rsplit('_', 1)[0]} (guest O_DIRECT, 1 request at a time)",
                         fmt(kres[key], unit, 1, 0), "QEMU 7.2 TCG, its virtio-blk, same guest",
                         fmt(qres[key], unit, 1, 0),
                         statistics.median(kres[key]) / statistics.median(qres[key])))
        notes.append("In-guest virtio-blk rows: on a PVM host the guest kernel's I/O path is "
                     "emulated, so these measure the emulated guest kernel far more than the "
                     "device; QD32 is not measured in the guest (kumo-probe issues one request at "
                     "a time). The device path alone is in the host-side rows above.")
    print("bench: in-guest virtio-blk done", flush=True)

    q = [boot_qemu_tcg() for _ in range(RUNS)]
    k = []
    for i in range(BOOT_RUNS):
        k.append(boot_kumo())
        print(f"bench: kumo boot {i + 1}/{BOOT_RUNS}: {k[-1]:.1f} s", flush=True)
    rows.append(("test-kernel boot: start → kernel runs `/init`, 1 vCPU, 256 MiB",
                 fmt(k, "s"), "QEMU 7.2 TCG, same kernel + initramfs", fmt(q, "s"),
                 statistics.median(k) / statistics.median(q)))
    if pvm:
        notes.append("This host's KVM is PVM: kumo's guest kernel runs in KVM's instruction "
                     "emulator, so its boot is compared with QEMU's software emulation (TCG); "
                     "QEMU with `-accel kvm` cannot boot Linux here. On a VMX host the same "
                     "command boots natively.")

    # vNUMA PV features: ompbench in a 2-node guest per --pv combination, and on the host. Its
    # own failures become rows that say so; anything else must not cost the rows above.
    try:
        numa = numa_pv.section(numa_pv.run_all())
    except Exception as e:  # noqa: BLE001
        numa = f"## vNUMA PV features: ompbench in a 2-node guest\n\nThe section failed: {e!r}\n"
    print("bench: vNUMA PV features done", flush=True)

    host = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    with open("docs/benchmarks.md", "w") as f:
        f.write("# Benchmarks\n\n")
        f.write("Written by `make bench` (`tests/bench/run.py`); every figure below comes from "
                "that one run. Medians with (min–max); ratio = kumo / peer (for times and memory lower is "
                "better, for throughput higher is better).\n\n")
        f.write(f"Host: {os.cpu_count()} CPUs, kernel {host}, PVM: {'yes' if pvm else 'no'}; "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; runs: {RUNS} "
                f"(kumo boots: {BOOT_RUNS}).\n\n")
        f.write("| measurement | kumo | peer | peer result | ratio |\n|---|---|---|---|---|\n")
        for name, kv, peer, pv, ratio in rows:
            f.write(f"| {name} | {kv} | {peer} | {pv} | {ratio:.2f} |\n")
        f.write("\n")
        for n in notes:
            f.write(f"- {n}\n")
        f.write("- exec → first KVM_RUN: both VMMs load the same bzImage + initramfs; kumo "
                "decompresses the kernel on the host before its first KVM_RUN.\n")
        f.write("- VMM own memory: proportional set size of the VMM process minus that of its "
                "guest-RAM mapping (kumo's memfd, QEMU's RAM block).\n")
        f.write("- PIO round trip: one `out` from guest CPL3 (IOPL 3) per iteration; the bare loop "
                "is `KVM_RUN` + a switch on the port in the same binary, kumo's is its vCPU "
                "thread, exit dispatcher and PIO bus.\n")
        f.write("\n" + numa)
    print(open("docs/benchmarks.md").read())


if __name__ == "__main__":
    sys.exit(main())
