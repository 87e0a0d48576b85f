#!/usr/bin/env python3
"""Drivers of the coordinator experiments on real guests (issue 11; not part of make check):

  guests.py data N IMG          an ext4 image of N files of 1 MiB (guest/mkdata.py), read-only data
  guests.py cache OUT ...       paper 000: two stock-kernel guests running webload, the cache
                                policy against the equal split (tests/experiments/cache.sh)
  guests.py margin OUT ...      paper 002: filereader with a changing file set under the margin
                                policy (tests/experiments/margin.sh)

The guests are driven through their control sockets' agent relay (tests/integration/hostlib.py).
"""
import json, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("KUMO_DRIVE_GUARD", "7200")  # hostlib's hang guard: the whole experiment
import hostlib  # noqa: E402
from hostlib import KUMO, agent_up, bg, collect, connect, sh  # noqa: E402

KERNEL = os.environ.get("KUMO_STOCK_KERNEL", "guest/out/stock-vmlinuz")
INITRD = os.environ.get("KUMO_STOCK_INITRD", "guest/out/initramfs-stock.cpio")
MiB = 1 << 20


def data(n, img):
    """IMG with N files of 1 MiB in /files, as guest/build.sh makes data.ext4, unless it is there."""
    stamp = f"n={n}"
    if os.path.exists(img) and open(img + ".stamp").read().strip() == stamp:
        return
    stage = tempfile.mkdtemp()
    subprocess.run([sys.executable, os.path.join(ROOT, "guest", "mkdata.py"), stage, str(n)],
                   check=True)
    subprocess.run(["truncate", "-s", f"{n + n // 8 + 16}M", img + ".new"], check=True)
    env = dict(os.environ, PATH=os.environ["PATH"] + ":/sbin:/usr/sbin", E2FSPROGS_FAKE_TIME="1")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "kumo-data", "-J", "size=4", "-d", stage,
                    img + ".new"], check=True, env=env)
    subprocess.run(["rm", "-rf", stage], check=True)
    os.replace(img + ".new", img)
    open(img + ".stamp", "w").write(stamp + "\n")


def boot(work, name, mem, img):
    """A stock-kernel guest with a balloon, the agent and IMG read-only on /data."""
    ctl = os.path.join(work, f"{name}.sock")
    con = open(os.path.join(work, f"{name}.console"), "w")
    p = subprocess.Popen([KUMO, "run", "--kernel", KERNEL, "--initrd", INITRD, "--cpus", "1",
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


def balloon(ctl, target):
    hostlib.ctl(ctl, "balloon-set", target=target)


def ts():
    return f"{time.time() - hostlib.T0:7.1f}s"


def settle(ctls, target, timeout=120):
    """Every VM's balloon target to target bytes; waits until the guests keep about that."""
    for ctl in ctls:
        balloon(ctl, target)
    end = time.time() + timeout
    while time.time() < end:
        got = [hostlib.ctl(ctl, "balloon-get")["actual_bytes"] for ctl in ctls]
        if all(abs(a - target) < 4 * MiB for a in got):
            return
        time.sleep(1)
    print(f"{ts()} note: balloons not at {target >> 20} MiB after {timeout} s: "
          f"{[a >> 20 for a in got]} MiB", flush=True)


def nums(out, key):
    import re
    return [int(x) for x in re.findall(key + r":(\d+)", out or "")]


def cache(out, argv):
    """paper 000 on two guests: for each case, the equal split then the cache policy."""
    img, mem, split, budget, warm, meas = argv[0], argv[1], int(argv[2]) * MiB, argv[3], \
        int(argv[4]), int(argv[5])
    cases = {"case1": (argv[6].split(), argv[7].split()), "case2": (argv[6].split(), argv[8].split())}
    work = tempfile.mkdtemp()
    vms = [boot(work, f"vm{i}", mem, img) for i in (1, 2)]
    try:
        cs = [up(ctl, p, f"vm{i + 1}") for i, (ctl, p) in enumerate(vms)]
        print(f"{ts()} both agents up", flush=True)
        rows = []
        for case, (w1, w2) in cases.items():
            for policy in ("none", "cache"):
                settle([v[0] for v in vms], split)
                for c in cs:
                    sh(c, "rm -f /run/webload.*; sync; echo 3 > /proc/sys/vm/drop_caches")
                log = os.path.join(out, f"exp-cache-{case}-{policy}.jsonl")
                coord = None
                if policy == "cache":
                    if os.path.exists(log):
                        os.unlink(log)
                    coord = subprocess.Popen([KUMO, "coord", "--vm", vms[0][0], "--vm", vms[1][0],
                                              "--policy", "cache", "--host-mem", budget,
                                              "--log", log], stdout=subprocess.DEVNULL)
                common = [f"seconds={warm + meas}", f"report_ms={warm * 1000}", "threads=2"]
                for c, w in zip(cs, (w1, w2)):
                    if not bg(c, "webload", w + common):
                        sys.exit(f"FAIL: webload did not start ({case} {policy})")
                res = []
                for i, c in enumerate(cs):
                    ex, r = collect(c, "webload", timeout=590)  # the relay allows 600 s
                    _, prog = sh(c, "grep progress /run/webload.out | head -n 1")
                    req0, hit0 = (nums(prog, "requests") or [0])[0], (nums(prog, "hits") or [0])[0]
                    req, hit = r.get("requests", 0), r.get("hits", 0)
                    tgt = hostlib.ctl(vms[i][0], "balloon-get")["target_bytes"] >> 20
                    res.append((req - req0, hit - hit0, req, hit, tgt, ex))
                if coord:
                    coord.terminate()
                    coord.wait()
                mr = sum(x[0] for x in res)
                mh = sum(x[1] for x in res)
                line = [case, policy]
                for x in res:
                    line += [x[0], x[1], f"{x[1] / x[0]:.3f}" if x[0] else "", x[4]]
                line += [mr, mh, f"{mh / mr:.3f}" if mr else ""]
                rows.append(line)
                print(f"{ts()} {case} {policy}: " + ", ".join(
                    f"vm{i + 1} {x[1]}/{x[0]} hits in the last {meas} s "
                    f"({x[1] / max(x[0], 1):.3f}; whole run {x[3]}/{x[2]}), target {x[4]} MiB, "
                    f"exit {x[5]}" for i, x in enumerate(res)) +
                    f"; system {mh}/{mr} = {mh / max(mr, 1):.3f}", flush=True)
        with open(os.path.join(out, "exp-cache.csv"), "w") as f:
            f.write("case,policy,vm1_requests,vm1_hits,vm1_hit_ratio,vm1_target_mib_end,"
                    "vm2_requests,vm2_hits,vm2_hit_ratio,vm2_target_mib_end,"
                    "system_requests,system_hits,system_hit_ratio\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")
        for case in cases:
            a = [r for r in rows if r[0] == case]
            if len(a) == 2 and a[0][-1] and a[1][-1]:
                print(f"{case}: system hit ratio cache/none = {float(a[1][-1]) / float(a[0][-1]):.2f}",
                      flush=True)
    finally:
        for ctl, p in vms:
            subprocess.run([KUMO, "ctl", ctl, "quit"], capture_output=True)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def margin(out, argv):
    """paper 002: filereader's file set k follows the schedule; the margin policy's target."""
    img, mem, n, ks, phase_s = argv[0], argv[1], argv[2], argv[3], int(argv[4])
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
        time.sleep(30)  # the policy's first steps on the idle guest
        t0 = time.monotonic()
        if not bg(c, "filereader", [f"n={n}", f"k={ks}", f"phase_s={phase_s}", "verify=0",
                                    f"report_ms={phase_s * 1000}"]):
            sys.exit("FAIL: filereader did not start")
        ex, r = collect(c, "filereader", timeout=590)
        t1 = time.monotonic()
        print(f"{ts()} filereader exit {ex}: {json.dumps(r)[:600]}", flush=True)
        time.sleep(int(os.environ.get("TAIL_S", "60")))  # idle afterwards: the way down
        coord.terminate()
        coord.wait()
    finally:
        subprocess.run([KUMO, "ctl", ctl, "quit"], capture_output=True)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    # CSV: a row per sample, t from the workload's start; working set = the phase's K MiB
    # (0 before the start and after the end).
    rows = []
    for l in open(log):
        e = json.loads(l)
        if e.get("type") != "sample" or "mem" not in e:
            continue
        t = e["ts"] - t0
        ws = ks_l[int(t // phase_s)] if 0 <= t < t1 - t0 and int(t // phase_s) < len(ks_l) else 0
        a = e.get("agent", {})
        rows.append((f"{t:.1f}", ws, a.get("committed_as", 0) >> 20, a.get("cached", 0) >> 20,
                     a.get("active_file", 0) >> 20, e["mem"]["target"] >> 20,
                     e["mem"]["actual"] >> 20))
    with open(os.path.join(out, "exp-margin.csv"), "w") as f:
        f.write("t_s,working_set_mib,committed_as_mib,cached_mib,active_file_mib,target_mib,"
                "actual_mib\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    print(f"filereader ran {t1 - t0:.0f} s; {len(rows)} samples in exp-margin.csv", flush=True)
    for r in rows[::10]:
        print("  " + ",".join(str(x) for x in r))


if __name__ == "__main__":
    os.chdir(ROOT)
    if sys.argv[1] == "data":
        data(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "cache":
        cache(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "margin":
        margin(sys.argv[2], sys.argv[3:])
