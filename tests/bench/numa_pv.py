"""vNUMA PV-feature benchmark for `make bench` (issue 5, paper 004): ompbench (a memory-bound
triad and a barrier-heavy kernel with libgomp-style spin-then-futex barriers) in a 2-node guest
under kumo, one boot per `--pv` combination, and the same static binary on the host.

Scale (environment): BENCH_OMP_RUNS (runs per spin value, default 5), BENCH_OMP_KB (size of
each triad array in KiB, default 32; the paper's sizes are MiB: 8192 = ompbench's default
mb=8), BENCH_OMP_ITERS (triad iterations, default 4), BENCH_OMP_BARRIERS (barrier-kernel
iterations, default 40), BENCH_OMP_SPINS (default 0,300000,30000000000: GOMP_SPINCOUNT as in
the paper), BENCH_OMP_IDLE_S (seconds of idle guest, read as 1-s windows of the vCPU threads'
host CPU time, default 5), BENCH_OMP_PIN (ompbench's pin=: 1, thread i on CPU i, default), BENCH_OMP_GUARD (hang guard per
boot in seconds, default 600), BENCH_OMP_COMBOS (comma-free names of the combinations to run,
separated by ';', default all).

Run alone (prints the section, writes nothing): python3 tests/bench/numa_pv.py
"""
import json, os, resource, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "guest"))
from agentlib import Agent  # noqa: E402  (guest/agentlib.py)

RUNS = int(os.environ.get("BENCH_OMP_RUNS", "5"))
KB = int(os.environ.get("BENCH_OMP_KB", "32"))
ITERS = int(os.environ.get("BENCH_OMP_ITERS", "4"))
BARRIERS = int(os.environ.get("BENCH_OMP_BARRIERS", "40"))
SPINS = [int(s) for s in os.environ.get("BENCH_OMP_SPINS", "0,300000,30000000000").split(",")]
IDLE_S = int(os.environ.get("BENCH_OMP_IDLE_S", "5"))
# Thread i on CPU i (the guest's vCPU i is pinned to host CPU i). Unpinned, this 2-CPU host's
# scheduler often starts both threads on one CPU, and a spinning barrier then costs a time
# slice per iteration: the host row would measure thread placement (ms instead of µs).
PIN = int(os.environ.get("BENCH_OMP_PIN", "1"))
GUARD = float(os.environ.get("BENCH_OMP_GUARD", "600"))
KERNEL, DATA = "guest/out/test-bzImage", "guest/out/data.ext4"
# The guest image kumo boots: the ordinary 64-bit one, or on a PVM host (where 64-bit system
# calls and SSE in user code do not work, docs/pvm.md) the 32-bit one.
PVM = os.path.isdir("/sys/module/kvm_pvm")
INITRD = "guest/out/initramfs-pvm.cpio" if PVM else "guest/out/initramfs.cpio"
# Inside the KVM box (tests/box/box): its kernel is this run's host, its CPUs are QEMU TCG's.
IN_BOX = os.environ.get("KUMO_IN_BOX") == "1"

# (name in the table, --pv value or None). The default is what kumo ships: every PV feature
# KVM offers, KVM's own halt polling.
COMBOS = [("default", None),
          ("steal-time=off", "steal-time=off"),
          ("pv-unhalt=off", "pv-unhalt=off"),
          ("halt-poll-ns=0", "halt-poll-ns=0"),
          ("all three off", "steal-time=off,pv-unhalt=off,halt-poll-ns=0")]
if os.environ.get("BENCH_OMP_COMBOS"):
    _want = os.environ["BENCH_OMP_COMBOS"].split(";")
    COMBOS = [c for c in COMBOS if c[0] in _want]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def omp_argv(spin):
    return ["threads=2", "kernels=triad,barrier", f"kb={KB}", f"iters={ITERS}",
            f"barriers={BARRIERS}", f"spin={spin}", f"pin={PIN}"]


def kumo_cmd(pv, sock, kumo="./kumo"):
    cmd = [kumo, "run", "-q", "--kernel", KERNEL, "--initrd", INITRD, "--cpus", "2",
           "--mem", "512M",
           "--numa", "node=0,cpus=0,mem=256M,host-node=0",
           "--numa", "node=1,cpus=1,mem=256M,host-node=0",
           "--numa-distance", "0:1=21", "--cpu-pin", "0=0,1=1",
           "--disk", f"{DATA},ro", "--agent-socket", sock,
           "--cmdline", "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,data,agentd"]
    if pv:
        cmd += ["--pv", pv]
    return cmd


def kill_group(p):
    """Kill p and everything it started (strace leaves its tracee running otherwise)."""
    try:
        os.killpg(p.pid, 9)
    except ProcessLookupError:
        pass
    p.wait()


def extract_from_cpio(cpio, member, dest):
    """Copy one member of a newc cpio archive (the initramfs) to dest: the guest's own binary."""
    data = open(cpio, "rb").read()
    off = 0
    while off + 110 <= len(data):
        h = data[off:off + 110]
        if h[:6] not in (b"070701", b"070702"):
            break
        f = [int(h[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        fsize, nsize = f[6], f[11]
        name = data[off + 110:off + 110 + nsize - 1].decode()
        body = (off + 110 + nsize + 3) & ~3
        off = (body + fsize + 3) & ~3
        if name == "TRAILER!!!":
            break
        if name.lstrip("./") == member:
            with open(dest, "wb") as out:
                out.write(data[body:body + fsize])
            os.chmod(dest, 0o755)
            return dest
    raise RuntimeError(f"{member} not in {cpio}")


def vcpu_ticks(pid):
    """utime + stime (clock ticks) summed over the process's kumo-vcpuN threads, and their count."""
    total = n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith("kumo-vcpu"):
            f = stat[stat.rindex(")") + 2:].split()
            total += int(f[11]) + int(f[12])  # fields 14 and 15 of stat(5)
            n += 1
    return total, n


def host_reference(binary):
    """Each spin value RUNS times on the host: {spin: [(result, cpu_pct)]}."""
    out = {s: [] for s in SPINS}
    for _ in range(RUNS):
        for spin in SPINS:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            p = subprocess.run([binary] + omp_argv(spin), capture_output=True, text=True,
                               timeout=600)
            wall = time.time() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            res = None
            for line in p.stdout.splitlines():
                if line.startswith('{"workload"'):
                    res = json.loads(line)
            if p.returncode != 0 or not res or res["triad"]["bad"]:
                raise RuntimeError(f"host ompbench spin={spin}: exit {p.returncode} {p.stdout[-200:]}")
            cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            out[spin].append((res, 100 * cpu / wall))
    return out


def guest_combo(pv, tmp, log, kumo="./kumo"):
    """One boot with --pv pv: {"runs": {spin: [(result, vcpu_cpu_pct)]}, "idle_pct", "hello_s",
    "exit"}. Raises RuntimeError (after killing kumo's process group) on any failure."""
    sock = os.path.join(tmp, "agent.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    t0 = time.time()
    deadline = t0 + GUARD
    with open(log, "wb") as logf:
        p = subprocess.Popen(kumo_cmd(pv, sock, kumo), stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, start_new_session=True)
    agent = Agent(sock, deadline)
    out = {"runs": {s: [] for s in SPINS}}
    try:
        while not os.path.exists(sock):
            if p.poll() is not None:
                raise RuntimeError(f"kumo exited with status {p.returncode} before the agent socket")
            if time.time() > deadline:
                raise RuntimeError("no agent socket before the hang guard")
            time.sleep(0.2)
        agent.connect(timeout=30)
        if agent.wait_event("hello", deadline - time.time()) is None:
            raise RuntimeError(f"no agent hello within {GUARD:.0f} s")
        out["hello_s"] = time.time() - t0
        # Quiet the agent: no stats while measuring.
        agent.request("period", {"period_ms": 3600000}, timeout=max(1, deadline - time.time()))
        for _ in range(RUNS):
            for spin in SPINS:
                c0, n = vcpu_ticks(p.pid)
                w0 = time.time()
                res, r = agent.run("ompbench", omp_argv(spin), timeout=max(1, deadline - time.time()))
                wall = time.time() - w0
                c1, _ = vcpu_ticks(p.pid)
                if not res or r["result"].get("exit") != 0 or res["triad"]["bad"]:
                    raise RuntimeError(f"ompbench spin={spin}: {json.dumps(r)[:300] if r else 'no reply before the hang guard'}")
                out["runs"][spin].append((res, 100 * (c1 - c0) / CLK_TCK / wall))
        agent.events = []
        time.sleep(1)
        out["idle_pct"] = []
        for _ in range(IDLE_S):
            c0, n = vcpu_ticks(p.pid)
            w0 = time.time()
            time.sleep(1)
            c1, _ = vcpu_ticks(p.pid)
            out["idle_pct"].append(100 * (c1 - c0) / CLK_TCK / (time.time() - w0))
        out["vcpus"] = n
        agent.request("poweroff", timeout=30)
        agent.close()
        try:
            out["exit"] = p.wait(timeout=max(5, min(120, deadline - time.time())))
        except subprocess.TimeoutExpired:
            raise RuntimeError("kumo did not exit after the agent's poweroff")
        out["wall_s"] = time.time() - t0
        return out
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{type(e).__name__}: {e}")
    finally:
        agent.close()
        if p.poll() is None:
            kill_group(p)


def run_all(kumo_src="./kumo"):
    """Everything this section measures: {"host": ..., "guest": [(name, pv, out|error)], ...}."""
    t_start = time.time()
    res = {"params": {"runs": RUNS, "kb": KB, "iters": ITERS, "barriers": BARRIERS,
                      "spins": SPINS, "idle_s": IDLE_S, "pin": PIN}}
    with tempfile.TemporaryDirectory(prefix="kumo-bench-numa.") as tmp:
        binary = os.path.join(tmp, "ompbench")
        try:
            extract_from_cpio(INITRD, "bin/ompbench", binary)
            res["host"] = host_reference(binary)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            res["host"] = f"{e}"
        print(f"bench: numa-pv host reference: {'done' if isinstance(res['host'], dict) else res['host']}",
              flush=True)
        # One kumo binary for every boot, even if ./kumo is rebuilt meanwhile.
        kumo = os.path.join(tmp, "kumo")
        shutil.copy2(kumo_src, kumo)
        res["guest"] = []
        for name, pv in COMBOS:
            log = os.path.join(tmp, "console.log")
            first = None
            for attempt in (1, 2):  # a failed boot is retried once, then reported as failed
                t0 = time.time()
                try:
                    out = guest_combo(pv, tmp, log, kumo)
                    print(f"bench: numa-pv {name}: hello after {out['hello_s']:.0f} s, "
                          f"boot total {out['wall_s']:.0f} s, exit {out['exit']}", flush=True)
                    if first:
                        out["first_failure"] = first
                    break
                except RuntimeError as e:
                    out = str(e)
                    print(f"bench: numa-pv {name}: attempt {attempt} FAILED after "
                          f"{time.time() - t0:.0f} s: {e}", flush=True)
                    try:
                        tail = open(log, errors="replace").read().replace("\r", "").splitlines()[-15:]
                        print("\n".join("    | " + l for l in tail), flush=True)
                    except OSError:
                        pass
                    first = out
            res["guest"].append((name, pv, out))
    res["wall_s"] = time.time() - t_start
    return res


def _cell(xs, unit="", digits=0):
    m, lo, hi = statistics.median(xs), min(xs), max(xs)
    return f"{m:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def _ratio(a, b):
    if not a or not b or not statistics.median(b):
        return "–"
    r = statistics.median(a) / statistics.median(b)
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}"


def summary(res):
    """{(name, spin): {"triad", "barrier", "futex", "cpu": [per run]}} for every row that ran."""
    s = {}
    rows = [("host", res["host"])] + [(n, o if isinstance(o, str) else o["runs"])
                                      for n, _, o in res["guest"]]
    for name, runs in rows:
        if isinstance(runs, str):
            continue
        for spin, lst in runs.items():
            s[(name, int(spin))] = {
                "triad": [r["triad"]["ns_per_iter"] for r, _ in lst],
                "barrier": [r["barrier"]["ns_per_iter"] for r, _ in lst],
                "futex": [r["futex_waits"] for r, _ in lst],
                "cpu": [c for _, c in lst]}
    return s


def against_default(res, s, sign):
    """Combinations clearly better (sign 1) or worse (sign -1) than the default: faster (slower)
    in both kernels at every spin value with no overlap of the min–max ranges, or idle at a
    lower (higher) vCPU CPU time with no overlap. [(name, pv, in_runs, idle)]; None when the
    default itself failed."""
    ok = {n: o for n, _, o in res["guest"] if not isinstance(o, str)}
    if "default" not in ok:
        return None

    def clearly_lower(a, b):  # a's range entirely below b's
        return max(a) < min(b) if sign > 0 else min(a) > max(b)

    out = []
    for name, pv, o in res["guest"]:
        if name == "default" or isinstance(o, str):
            continue
        runs = all(clearly_lower(s[(name, sp)][k], s[("default", sp)][k])
                   for sp in SPINS for k in ("triad", "barrier"))
        idle = clearly_lower(o["idle_pct"], ok["default"]["idle_pct"])
        if runs or idle:
            out.append((name, pv, runs, idle))
    return out


def kernel_config():
    cfg = {}
    try:
        for line in open("guest/out/test-config"):
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.strip().split("=", 1)
                cfg[k] = v
    except OSError:
        pass
    return cfg


SHIPPED = "every PV feature KVM offers on, KVM's own halt polling"


def section(res):
    """The Markdown section for docs/benchmarks.md."""
    p = res["params"]
    s = summary(res)
    L = ["## vNUMA PV features: ompbench in a 2-node guest", ""]
    L.append(f"`ompbench threads=2 kernels=triad,barrier kb={p['kb']} iters={p['iters']} "
             f"barriers={p['barriers']} spin=S pin={p.get('pin', 0)}` (`guest/workloads/ompbench.c`, "
             f"a static freestanding {'i386' if PVM else 'x86_64'} binary) run by kumo-agent's "
             "`run` verb with `wait:true`, "
             f"{p['runs']} runs per spin value, in one boot of the test kernel per `--pv` "
             "combination: `kumo run --cpus 2 --mem 512M --numa node=0,cpus=0,mem=256M,host-node=0 "
             "--numa node=1,cpus=1,mem=256M,host-node=0 --numa-distance 0:1=21 --cpu-pin 0=0,1=1 "
             "--pv ...` (kumo-probe → kumo-agent, data disk read-only). The host row runs the "
             "same binary, taken from the initramfs, with the same arguments on the host" +
             (" (in this run the KVM box, outside any VM)" if IN_BOX else "") + ". "
             "S is libgomp's GOMP_SPINCOUNT: 0 (sleep on the futex at once), 300,000 "
             "(libgomp's default), 30,000,000,000 (spin \"forever\")." +
             (" pin=1 puts thread i on CPU i in both the guest and the host (unpinned, this "
              "host's scheduler often starts both threads on one CPU, and a spinning barrier then "
              "costs a time slice per iteration, so the host row would measure thread placement)."
              if p.get("pin") else "") + " Times are ns per iteration "
             "as ompbench measures them (the guest's clock in the guest), medians with "
             "(min–max); ratio = row / host row at the same spin value (lower is better). "
             "vCPU CPU = host CPU time of the `kumo-vcpuN` threads (`/proc/PID/task/TID/stat`) "
             "over the run's wall time as the host sees it, 100% = one host CPU; for the host "
             "row, ompbench's own CPU time.")
    L.append("")
    L.append("| `--pv` | spin | triad ns/iter | ratio | barrier ns/iter | ratio | futex waits | "
             "vCPU CPU |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, pv, o in [("host", None, res["host"])] + res["guest"]:
        label = "host (no VM)" if name == "host" else (f"`{pv}`" if pv else "default (none)")
        if isinstance(o, str):
            L.append(f"| {label} | – | failed: {o.replace('|', '/')[:200]} | | | | | |")
            continue
        for sp in SPINS:
            d, h = s[(name, sp)], s.get(("host", sp))
            L.append(f"| {label} | {sp:,} | {_cell(d['triad'])} | "
                     f"{_ratio(d['triad'], h['triad']) if h else '–'} | {_cell(d['barrier'])} | "
                     f"{_ratio(d['barrier'], h['barrier']) if h else '–'} | "
                     f"{_cell(d['futex'])} | {statistics.median(d['cpu']):.0f}% |")
    L.append("")
    L.append(f"The same boots idle (agent quiet, after the runs; {p['idle_s']} windows of 1 s), "
             "and their boot times:")
    L.append("")
    L.append("| `--pv` | vCPU CPU while idle | start → agent hello | whole boot, start → exit |")
    L.append("|---|---|---|---|")
    for name, pv, o in res["guest"]:
        label = f"`{pv}`" if pv else "default (none)"
        if isinstance(o, str):
            L.append(f"| {label} | failed | | |")
        else:
            again = (f"; a first boot failed ({o['first_failure'].replace('|', '/')[:120]}), "
                     "this is the retry" if o.get("first_failure") else "")
            L.append(f"| {label} | {_cell(o['idle_pct'], '%')} | {o['hello_s']:.0f} s | "
                     f"{o['wall_s']:.0f} s (exit status {o['exit']}{again}) |")
    L.append("")

    if PVM:
        note = ("- **On this host these numbers measure KVM's instruction emulator more than the "
                "PV features.** Its KVM is PVM: every guest-kernel path ompbench reaches — the "
                "futex wait and wake behind each sleeping barrier, the scheduler, the idle loop "
                "and `hlt`, the timer tick — runs in KVM's instruction emulator, about 1000× "
                "slower than native, so the barrier rows at small spin counts and the idle "
                "figures are the emulator's cost of those paths.")
        d, h = s.get(("default", SPINS[-1])), s.get(("host", SPINS[-1]))
        if d:
            per = statistics.median(d["triad"]) / (p["kb"] * 1024 / 4 / 2)
            if per > 1000:
                note += (f" Guest user code ran at the emulator's speed too: with spin "
                         f"{SPINS[-1]:,} the triad makes no system call while it is timed, yet "
                         f"each vCPU took {per / 1000:.0f} µs per array element (a handful of "
                         "integer instructions; KVM's emulator runs ~0.3 M instructions/s on "
                         "these hosts)" + (f", the host {statistics.median(h['triad']) / (p['kb'] * 1024 / 4 / 2):.1f} ns"
                                           if h else "") + ".")
        note += (" Steal time (the guest scheduler's accounting of time its vCPU did not run), "
                 "PV unhalt (kicking a vCPU halted in a PV spinlock) and halt polling (the host "
                 "spinning a few hundred microseconds before a halted vCPU sleeps) act on paths "
                 "that take milliseconds here, so a difference between combinations is at most a "
                 "hint of the direction on a VMX/SVM host, where the paper's effect (vCPU "
                 "utilisation while idle or halted) is what they change.")
        L.append(note)
    elif IN_BOX:
        L.append("- **In the KVM box every figure here is TCG-scaled.** The guest runs under the "
                 "box's real kvm-amd (nested SVM, so steal time, PV unhalt and halt polling act "
                 "on KVM's own paths), but the box's CPUs are QEMU TCG threads, each guest exit "
                 "is an emulated #VMEXIT, and the host row ran in the box too: compare the "
                 "combinations with each other and with the host row, not with native figures.")
    cfg = kernel_config()
    if (PVM or IN_BOX) and cfg.get("CONFIG_HZ_PERIODIC") == "y":
        L.append(f"- Idle: the test kernel ticks periodically at {cfg.get('CONFIG_HZ', '?')} Hz "
                 "on every vCPU (`CONFIG_HZ_PERIODIC`, no cpuidle), and each "
                 f"{'emulated' if PVM else 'TCG-scaled'} tick costs host CPU, so the idle column is "
                 f"mostly the tick; halt polling (KVM's default here: {_halt_poll_default()}) "
                 "acts on top of it.")
    better = against_default(res, s, 1)
    worse = against_default(res, s, -1) or []
    if better is None:
        L.append("- Default: the default combination failed or did not run, so this run supports no choice; kumo "
                 f"keeps what it ships ({SHIPPED}).")
    elif not better:
        worse_txt = "; ".join(f"`{pv}` " + " and ".join(
            w for w, f in (("is slower in both kernels at every spin value", r),
                           ("idles dearer", i)) if f) for _, pv, r, i in worse)
        L.append("- **Default: the table supports keeping what kumo ships** "
                 f"({SHIPPED}): no combination is faster than it in both kernels at every spin "
                 "value beyond the run-to-run spread (min–max), nor idles cheaper beyond it" +
                 (f"; {worse_txt} beyond it" if worse_txt else
                  "; none is clearly worse either") +
                 (". With the caveat above: on PVM that says only that switching these features "
                  "off buys nothing measurable through the emulator, not that they help on a "
                  "VMX/SVM host; re-run `make bench` there before changing the default."
                  if PVM else ". TCG-scaled: confirm on VMX/SVM hardware before relying on it."
                  if IN_BOX else "."))
    else:
        what = "; ".join(f"`{pv}` " + " and ".join(
            w for w, f in (("is faster in both kernels at every spin value", fa),
                           ("idles cheaper", idl)) if f) for _, pv, fa, idl in better)
        L.append(f"- Default: {what} than the shipped default ({SHIPPED}), beyond the run-to-run "
                 "spread" + (". On PVM that is the emulator's cost of those paths, not the "
                             "features' effect, so the table does not justify another default "
                             "here: kumo keeps what it ships until `make bench` on a VMX/SVM "
                             "host agrees." if PVM else "; TCG-scaled, so kumo keeps what it "
                             "ships until `make bench` on VMX/SVM hardware agrees." if IN_BOX
                             else "; the table supports that setting."))
    L.append("- Scale: BENCH_OMP_RUNS, BENCH_OMP_KB, BENCH_OMP_ITERS, BENCH_OMP_BARRIERS, "
             "BENCH_OMP_GUARD (hang guard per boot) in `tests/bench/numa_pv.py`; at this size the "
             "triad's arrays fit in the host's caches, so its host row is not memory-bound (the "
             f"paper's sizes: BENCH_OMP_KB=8192 and up). This section took "
             f"{res['wall_s'] / 60:.1f} min.")
    return "\n".join(L) + "\n"


def _halt_poll_default():
    try:
        return f"{int(open('/sys/module/kvm/parameters/halt_poll_ns').read())} ns"
    except (OSError, ValueError):
        return "unknown"


if __name__ == "__main__":
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    if len(sys.argv) > 2 and sys.argv[1] == "--from":
        r = json.load(open(sys.argv[2]))
    else:
        r = run_all()
        if len(sys.argv) > 1:
            with open(sys.argv[1], "w") as f:
                json.dump(r, f)
    print(section(r))
