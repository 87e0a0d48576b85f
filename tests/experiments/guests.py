#!/usr/bin/env python3
"""Drivers of the coordinator experiments on real guests (issue 11; not part of make check):

  guests.py data N IMG [KIB]    an ext4 image of N files of KIB KiB (default 1024) in /files,
                                in guest/mkdata.py's block format (the workloads' wl_verify)
  guests.py cache OUT IMG       paper 000: two stock-kernel guests running webload, the cache
                                policy against the equal split (tests/experiments/cache.sh)
  guests.py margin OUT IMG      paper 002: filereader with a changing file set under the margin
                                policy (tests/experiments/margin.sh)

The experiments' parameters are environment variables; cache.sh and margin.sh give their
defaults (the box's scale) and say what each means. The guests are driven through their
control sockets' agent relay (tests/integration/hostlib.py).
"""
import json, os, re, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("KUMO_DRIVE_GUARD", "7200")  # hostlib's hang guard: the whole experiment
import hostlib  # noqa: E402
from hostlib import KUMO, agent_up, bg, collect, connect, sh  # noqa: E402

KERNEL = os.environ.get("KUMO_STOCK_KERNEL", "guest/out/stock-vmlinuz")
INITRD = os.environ.get("KUMO_STOCK_INITRD", "guest/out/initramfs-stock.cpio")
MiB = 1 << 20


def env(name, conv=str):
    """A parameter the calling script set (cache.sh, margin.sh)."""
    if name not in os.environ:
        sys.exit(f"FAIL: guests.py: {name} not set (run it through cache.sh or margin.sh)")
    return conv(os.environ[name])


def data(n, img, kib=1024):
    """IMG with N files of KIB KiB in /files, unless it is there: block b (4 KiB) of file i is
    b"KUMO", le32 i, le32 b, then bytes (i + b + j) & 0xff for j = 12..4095 (guest/mkdata.py's
    format for 1 MiB files, which guest/workloads/wl.h checks)."""
    stamp = f"n={n} kib={kib}"
    try:
        if os.path.exists(img) and open(img + ".stamp").read().strip() == stamp:
            return
    except OSError:
        pass
    if kib % 4 or kib <= 0:
        sys.exit("FAIL: data: the file size must be a multiple of 4 KiB")
    t0 = time.time()
    stage = tempfile.mkdtemp()
    files = os.path.join(stage, "files")
    os.makedirs(files)
    ramp = bytes(range(256)) * 18
    for i in range(n):
        with open(os.path.join(files, "f%06d" % i), "wb") as f:
            f.write(b"".join(b"KUMO" + struct.pack("<II", i, b) +
                             ramp[(i + b + 12) & 0xFF:((i + b + 12) & 0xFF) + 4084]
                             for b in range(kib // 4)))
    with open(os.path.join(stage, "README"), "w") as f:
        f.write(f"kumo workload data: {n} files of {kib} KiB in files/ (tests/experiments/guests.py)\n")
    size_mib = n * kib * 106 // 100 // 1024 + 64
    subprocess.run(["truncate", "-s", f"{size_mib}M", img + ".new"], check=True)
    env_ = dict(os.environ, PATH=os.environ["PATH"] + ":/sbin:/usr/sbin", E2FSPROGS_FAKE_TIME="1")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "kumo-data", "-J", "size=4", "-N", str(n + 1024),
                    "-d", stage, img + ".new"], check=True, env=env_)
    # mkfs -d leaves /files a linear directory (N entries scanned per uncached lookup in the
    # guest); e2fsck -D indexes it (exit 1: "fixed").
    if subprocess.run(["e2fsck", "-f", "-y", "-D", img + ".new"], env=env_,
                      stdout=subprocess.DEVNULL).returncode > 1:
        sys.exit("FAIL: data: e2fsck -D failed")
    subprocess.run(["rm", "-rf", stage], check=True)
    os.replace(img + ".new", img)
    open(img + ".stamp", "w").write(stamp + "\n")
    print(f"{img}: {n} files of {kib} KiB, {size_mib} MiB image, {time.time() - t0:.0f} s", flush=True)


def boot(work, name, mem, img):
    """A stock-kernel guest with a balloon, the agent and IMG read-only on /data."""
    ctl = os.path.join(work, f"{name}.sock")
    con = open(os.path.join(work, f"{name}.console"), "w")
    p = subprocess.Popen([KUMO, "run"] + os.environ.get("RUN_OPTS", "").split() +
                         ["--kernel", KERNEL, "--initrd", INITRD, "--cpus", "1",
                          "--mem", mem, "--balloon=stats=1", "--disk", img + ",ro,cache=host",
                          "--control", ctl, "--agent", "--cmdline",
                          "panic=-1 kumo.script=agentd.sh kumo.probe=info,data,agentd "
                          "kumo.data=/dev/vda kumo.shell=0"],
                         stdin=subprocess.DEVNULL, stdout=con, stderr=subprocess.STDOUT)
    return ctl, p


def up(ctl, p, name):
    c = connect(ctl, p)
    if not c or not agent_up(c, timeout=900):
        sys.exit(f"FAIL: {name}: the agent did not come up")
    return c


def stop(vms):
    for ctl, p in vms:
        subprocess.run([KUMO, "ctl", ctl, "quit"], capture_output=True)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def finish(c, name, seconds):
    """NAME's exit status and result line once it has ended (it runs about seconds): the relay
    allows 600 s a request, so longer runs are waited for in turns."""
    end = time.time() + seconds + 300
    while True:
        ex, r = collect(c, name, timeout=590)
        if ex is not None or time.time() > end:
            return ex, r


def ts():
    return f"{time.time() - hostlib.T0:7.1f}s"


def settle(ctls, target, timeout):
    """Every VM's balloon target to target bytes; waits until the guests keep about that."""
    for ctl in ctls:
        hostlib.ctl(ctl, "balloon-set", target=target)
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = [hostlib.ctl(ctl, "balloon-get")["actual_bytes"] for ctl in ctls]
        if all(abs(a - target) < 4 * MiB for a in got):
            print(f"{ts()} balloons at {target >> 20} MiB after {time.time() - t0:.0f} s", flush=True)
            return
        time.sleep(1)
    print(f"{ts()} note: balloons not at {target >> 20} MiB after {timeout} s: "
          f"{[a >> 20 for a in got]} MiB", flush=True)


def progress(c, name):
    """(t_ms, requests, hits) of every progress line and of the result line, in order."""
    _, out = sh(c, f"grep -o 't_ms\":[0-9]*\\|requests\":[0-9]*\\|hits\":[0-9]*' /run/{name}.out")
    v = re.findall(r"t_ms:(\d+) requests:(\d+) hits:(\d+)", out or "")
    return [tuple(int(x) for x in t) for t in v]


def jsonl(path):
    """The objects of a JSON-lines log (a line cut short at the writer's end is skipped)."""
    for line in open(path):
        try:
            yield json.loads(line)
        except ValueError:
            pass


def observed(log, t0):
    """The observe policy's lines (tests/experiments/observe.c) in a coordinator log:
    {vm: [(t from t0, {refaults, activations, cached, active, inactive, target, actual})]}."""
    res = {}
    if not os.path.exists(log):
        return res
    for e in jsonl(log):
        if e.get("type") != "policy" or e.get("policy") != "observe":
            continue
        w = e["msg"].split()
        vm = os.path.basename(w[0]).replace(".sock", "")
        res.setdefault(vm, []).append((e["ts"] - t0, {w[k]: int(w[k + 1]) for k in range(1, len(w) - 1, 2)}))
    return res


def cache(out, img):
    """paper 000 on two guests: for each case, the equal split then the cache policy."""
    mem, split, budget = env("MEM"), env("SPLIT", int) * MiB, env("BUDGET")
    warm, meas, rep = env("WARM", int), env("MEAS", int), env("REPORT_S", int)
    n, n2, hot1, hot2 = env("N"), env("N2"), env("HOT1"), env("HOT2")
    load = [f"threads={env('THREADS')}", f"think_us={env('THINK_MS', int) * 1000}"]
    obs, settle_s = env("OBSERVE"), env("SETTLE_S", int)
    w1 = ["mode=normal", f"n={n}"]
    allcases = {"case1": (w1, ["mode=burst", f"n={n2}", f"hot={hot1}"]),
                "case2": (w1, ["mode=burst", f"n={n2}", f"hot={hot2}"])}
    cases = {k: allcases[k] for k in env("CASES").split()}
    work = tempfile.mkdtemp()
    vms = [boot(work, f"vm{i}", mem, img) for i in (1, 2)]
    rows, series = [], []
    try:
        cs = [up(ctl, p, f"vm{i + 1}") for i, (ctl, p) in enumerate(vms)]
        print(f"{ts()} both agents up", flush=True)
        for case, (wa, wb) in cases.items():
            for policy in ("none", "cache"):
                # Caches dropped first: the balloons then take free memory, not cache.
                for c in cs:
                    sh(c, "rm -f /run/webload.*; sync; echo 3 > /proc/sys/vm/drop_caches")
                settle([v[0] for v in vms], split, settle_s)
                log = os.path.join(out, f"exp-cache-{case}-{policy}.jsonl")
                if os.path.exists(log):
                    os.unlink(log)
                # The baseline runs the observer alone (it acts on nothing): same figures.
                pol = f"cache,{obs}" if policy == "cache" else obs
                coord = subprocess.Popen([KUMO, "coord", "--vm", vms[0][0], "--vm", vms[1][0],
                                          "--policy", pol, "--host-mem", budget, "--log", log],
                                         stdout=subprocess.DEVNULL)
                t0 = time.monotonic()  # CLOCK_MONOTONIC, as the coordinator's ts
                common = [f"seconds={warm + meas}", f"report_ms={rep * 1000}"] + load
                for i, (c, w) in enumerate(zip(cs, (wa, wb))):
                    if not bg(c, "webload", w + common + [f"seed={i + 1}"]):
                        sys.exit(f"FAIL: webload did not start ({case} {policy})")
                res = []
                for i, c in enumerate(cs):
                    ex, r = finish(c, "webload", warm + meas)
                    pr = progress(c, "webload")
                    # The measurement window: from the last progress line by WARM s to the end.
                    at = [x for x in pr[:-1] if x[0] <= warm * 1000 + rep * 500] or [(0, 0, 0)]
                    tw, req0, hit0 = at[-1]
                    req, hit = r.get("requests", 0), r.get("hits", 0)
                    tgt = hostlib.ctl(vms[i][0], "balloon-get")["target_bytes"] >> 20
                    res.append((req - req0, hit - hit0, req, hit, tgt, ex,
                                (r.get("t_ms", 0) - tw) / 1000))
                    prev = (0, 0, 0)
                    for x in pr:
                        series.append([case, policy, f"vm{i + 1}", x[0] / 1000, x[1] - prev[1],
                                       x[2] - prev[2], prev[0] / 1000])
                        prev = x
                coord.terminate()
                coord.wait()
                # Per interval: the observer's figures (its last line in the interval, and the
                # refaults and activations summed over it).
                ob = observed(log, t0)
                for s in series:
                    if s[0] != case or s[1] != policy or len(s) > 7:
                        continue
                    lines = [x for x in ob.get(s[2], []) if s[6] < x[0] <= s[3]]
                    last = lines[-1][1] if lines else {}
                    s += [last.get("target", ""), last.get("actual", ""), last.get("cached", ""),
                          last.get("active", ""), last.get("inactive", ""),
                          sum(x[1]["refaults"] for x in lines) if lines else "",
                          sum(x[1]["activations"] for x in lines) if lines else ""]
                moves = sum(1 for line in open(log) if '"type":"action"' in line) \
                    if os.path.exists(log) else 0
                mr, mh = sum(x[0] for x in res), sum(x[1] for x in res)
                line = [case, policy]
                for x in res:
                    line += [x[0], x[1], f"{x[1] / x[0]:.3f}" if x[0] else "",
                             f"{x[0] / x[6]:.1f}" if x[6] > 0 else "", x[4]]
                line += [mr, mh, f"{mh / mr:.3f}" if mr else "", moves]
                rows.append(line)
                print(f"{ts()} {case} {policy}: " + ", ".join(
                    f"vm{i + 1} {x[1]}/{x[0]} hits in the last {x[6]:.0f} s "
                    f"({x[1] / max(x[0], 1):.3f}; whole run {x[3]}/{x[2]}), target {x[4]} MiB, "
                    f"exit {x[5]}" for i, x in enumerate(res)) +
                    f"; system {mh}/{mr} = {mh / max(mr, 1):.3f}; {moves} balloon actions", flush=True)
                write_cache_csv(out, rows, series)
        for case in cases:
            a = [r for r in rows if r[0] == case]
            if len(a) == 2 and a[0][-2] and a[1][-2]:
                print(f"{case}: system hit ratio cache/none = {float(a[1][-2]) / float(a[0][-2]):.2f}"
                      f" ({a[0][-2]} -> {a[1][-2]}); vm1 {a[0][4]} -> {a[1][4]}, "
                      f"vm2 {a[0][9]} -> {a[1][9]}", flush=True)
    finally:
        stop(vms)


def write_cache_csv(out, rows, series):
    with open(os.path.join(out, "exp-cache.csv"), "w") as f:
        f.write("case,policy,vm1_requests,vm1_hits,vm1_hit_ratio,vm1_requests_per_s,"
                "vm1_target_mib_end,vm2_requests,vm2_hits,vm2_hit_ratio,vm2_requests_per_s,"
                "vm2_target_mib_end,system_requests,system_hits,system_hit_ratio,"
                "balloon_actions\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    with open(os.path.join(out, "exp-cache-series.csv"), "w") as f:
        f.write("case,policy,vm,t_s,requests,hits,target_mib,actual_mib,cached_mib,"
                "active_file_mib,inactive_file_mib,refaults,activations\n")
        for s in series:
            if len(s) > 7:
                f.write(",".join(str(x) for x in s[:6] + s[7:]) + "\n")


def margin(out, img):
    """paper 002: filereader's file set k follows the schedule; the margin policy's target."""
    mem, n, ks, phase_s = env("MEM"), env("N"), env("KS"), env("PHASE_S", int)
    kib, tail_s, settle_s = env("FILE_KIB", int), env("TAIL_S", int), env("SETTLE_S", int)
    ks_l = [int(k) for k in ks.split(",")]
    work = tempfile.mkdtemp()
    ctl, p = boot(work, "vm1", mem, img)
    log = os.path.join(out, "exp-margin.jsonl")
    if os.path.exists(log):
        os.unlink(log)
    try:
        c = up(ctl, p, "vm1")
        print(f"{ts()} agent up", flush=True)
        coord = subprocess.Popen([KUMO, "coord", "--vm", ctl, "--policy", "margin", "--log", log],
                                 stdout=subprocess.DEVNULL)
        # The policy's first steps on the idle guest: wait (at least 20 s, at most SETTLE_S)
        # until the balloon holds the target it set, so the workload starts from there.
        t_set = time.time()
        while time.time() - t_set < settle_s:
            time.sleep(2)
            b = hostlib.ctl(ctl, "balloon-get")
            if time.time() - t_set >= 20 and abs(b["actual_bytes"] - b["target_bytes"]) < 8 * MiB:
                break
        print(f"{ts()} balloon target {b['target_bytes'] >> 20} MiB, actual "
              f"{b['actual_bytes'] >> 20} MiB after {time.time() - t_set:.0f} s; filereader starts",
              flush=True)
        t0 = time.monotonic()
        if not bg(c, "filereader", [f"n={n}", f"k={ks}", f"phase_s={phase_s}", "verify=0",
                                    f"size={kib * 1024}", f"report_ms={phase_s * 1000}"]):
            sys.exit("FAIL: filereader did not start")
        ex, r = finish(c, "filereader", phase_s * len(ks_l))
        t1 = time.monotonic()
        print(f"{ts()} filereader exit {ex}: {json.dumps(r)[:900]}", flush=True)
        time.sleep(tail_s)  # idle afterwards: the way down
        coord.terminate()
        coord.wait()
    finally:
        stop([(ctl, p)])
    margin_csv(out, log, t0, t1, ks_l, phase_s, kib)


def margin_csv(out, log, t0, t1, ks_l, phase_s, kib):
    """exp-margin.csv: a row per sample, t from the workload's start; working set = the phase's
    K files in MiB (0 before the start and after the end); the margin as the policy last
    logged it; file refaults since the previous sample."""
    rows, mg, ref0 = [], 0, None
    for e in jsonl(log):
        if e.get("type") == "policy" and e.get("policy") == "margin":
            m = re.search(r"margin (\d+) MiB", e["msg"])
            mg = int(m.group(1)) if m else mg
        if e.get("type") != "sample" or "mem" not in e:
            continue
        t = e["ts"] - t0
        ph = int(t // phase_s)
        ws = ks_l[ph] * kib / 1024 if 0 <= t < t1 - t0 and ph < len(ks_l) else 0
        a = e.get("agent", {})
        rf = a.get("refault_file", 0)
        rows.append((f"{t:.1f}", f"{ws:g}", a.get("committed_as", 0) >> 20, a.get("cached", 0) >> 20,
                     a.get("active_file", 0) >> 20, e["mem"]["target"] >> 20,
                     e["mem"]["actual"] >> 20, mg, rf - ref0 if ref0 is not None else 0,
                     a.get("psi_some_avg10", 0)))
        ref0 = rf
    with open(os.path.join(out, "exp-margin.csv"), "w") as f:
        f.write("t_s,working_set_mib,committed_as_mib,cached_mib,active_file_mib,target_mib,"
                "actual_mib,margin_mib,refaults,psi_some_avg10\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    print(f"filereader ran {t1 - t0:.0f} s; {len(rows)} samples in exp-margin.csv", flush=True)
    lags(rows, phase_s, len(ks_l), t1 - t0)
    for r in rows[::10]:
        print("  " + ",".join(str(x) for x in r))


def lags(rows, phase_s, nph, t_end):
    """After each change of the file set (and the end), when the target got half-way from its
    value at the change to its value at the end of that stretch."""
    pts = [(float(r[0]), r[5]) for r in rows]
    edges = [k * phase_s for k in range(nph)] + [t_end]
    ends = edges[1:] + [pts[-1][0] if pts else t_end]
    for tc, te in zip(edges, ends):
        seg = [x for x in pts if tc <= x[0] <= te]
        if len(seg) < 2:
            continue
        a, b = seg[0][1], seg[-1][1]
        half = (a + b) / 2
        hit = next((x[0] for x in seg if (b >= a and x[1] >= half) or (b < a and x[1] <= half)), None)
        lag = f"half-way after {hit - tc:.0f} s" if hit is not None and a != b else "no change"
        print(f"from t={tc:.0f} s: target {a} -> {b} MiB by t={te:.0f} s, {lag}", flush=True)


if __name__ == "__main__":
    os.chdir(ROOT)
    if sys.argv[1] == "data":
        data(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1024)
    elif sys.argv[1] == "cache":
        cache(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "margin":
        margin(sys.argv[2], sys.argv[3])
