#!/usr/bin/env python3
"""Host side of tests/integration/test-split.sh: split migration from a source host to a main
host and two sub-hosts (network namespaces of the KVM box).

  split-host.py WORKDIR KERNEL INITRD

For each run of KUMO_SPLIT_RUNS ("on:48:2:po" by default, one boot; "on:48 off:48" compares:
tracking on or off, the MiB membench holds, optionally the copies of each sub-host page and
"po" for page-out): two `kumo memserver`s on the sub-hosts, the
stock kernel booted on the source (KUMO_SPLIT_MEM, default 512M; 1 vCPU, the balloon with free
page reporting, the agent; KUMO_SPLIT_RUN_ARGS more options), membench holding a verified
pattern, an empty `kumo run --incoming` on the main host; `migrate ... sub=... main-mem=64M`;
then on the main host the agent must answer, membench verify (its pages come from the
sub-hosts on demand) and split-stats count page-ins without errors. With replicas=2 the
first sub-host is killed once the VM runs on the main host: membench still verifies, its pages
coming from the second copies. With page-out the main host's resident guest RAM (Rss of its
memfd mappings, sampled every 100 ms from the migration's end to membench's verdict) must stay
within main-mem while membench pages its set back in. Prints one `split-figures:`
line per run (bytes to the main host and to the sub-hosts, time, pages by place).
"""
import os, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostlib  # noqa: E402
from hostlib import GUARD, KUMO, T0, agent_up, bg, collect, say, sh  # noqa: E402

work, kernel, initrd = sys.argv[1:4]
NS = {h: f"kumo-sp-{h}" for h in ("src", "main", "sub1", "sub2")}
MAIN_IP, SUBS = "10.78.1.2", ["10.78.9.3", "10.78.9.4"]
PORT, MS_PORT = 4450, 4460
MAIN_MEM = "64M"
COMMON = ["--mem", os.environ.get("KUMO_SPLIT_MEM", "512M"), "--cpus", "1", "--balloon",
          "--agent"] + os.environ.get("KUMO_SPLIT_RUN_ARGS", "").split()
BOOT = ["--kernel", kernel, "--initrd", initrd,
        "--cmdline", "panic=-1 kumo.script=agentd.sh kumo.probe=info,agentd kumo.shell=0"]
# TRACKING:HOLD_MB[:REPLICAS[:po]]; with REPLICAS 2 the first sub-host is killed once the VM
# runs on the main host: every page must still come, from the other copy; po: pageout=on.
RUNS = [(f[0], int(f[1]), int((f + ["1"])[2]), (f + ["1", ""])[3] == "po")
        for f in (r.split(":") for r in os.environ.get("KUMO_SPLIT_RUNS", "on:48:2:po").split())]
procs = []


def spawn(host, argv, tag):
    n = len(procs)
    out = open(os.path.join(work, f"console-{n}.log"), "w")
    err = open(os.path.join(work, f"kumo-{n}.err"), "w")
    p = subprocess.Popen(["ip", "netns", "exec", NS[host], KUMO] + argv,
                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    procs.append(p)
    return p


def err_tail(p):
    return open(os.path.join(work, f"kumo-{procs.index(p)}.err")).read().strip().split("\n")[-2:]


def stop(p, timeout=60):
    if p.poll() is None:
        p.kill()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def ram_rss_kb(pid):
    """Rss of the guest-RAM memfd mappings (kumo-ram-node*) of process pid, KiB (None: gone)."""
    total, ram = 0, False
    try:
        for line in open(f"/proc/{pid}/smaps"):
            if line[:1] in "0123456789abcdef" and "-" in line.split()[0]:
                ram = "kumo-ram-node" in line
            elif ram and line.startswith("Rss:"):
                total += int(line.split()[1])
    except OSError:
        return None
    return total


class Sampler(threading.Thread):
    """ram_rss_kb(pid) every 100 ms until stopped: the samples' count and maximum."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.n, self.max_kb, self.done = pid, 0, 0, threading.Event()

    def run(self):
        while not self.done.wait(0.1):
            kb = ram_rss_kb(self.pid)
            if kb is None:
                return
            self.n, self.max_kb = self.n + 1, max(self.max_kb, kb)


def one_run(tracking, hold_mb, replicas, pageout):
    tag = f"split-{tracking}-{hold_mb}m" + (f"-x{replicas}" if replicas > 1 else "") + \
        ("-po" if pageout else "")
    ms = [spawn(f"sub{i + 1}", ["memserver", "--listen", f"tcp:0.0.0.0:{MS_PORT}", "--mem",
                                "1G"], tag) for i in range(2)]
    ctl = os.path.join(work, f"ctl-src-{len(procs)}.sock")
    p = spawn("src", ["run"] + BOOT + COMMON + ["--control", ctl], tag)
    c = hostlib.connect(ctl, p)
    if not say(c is not None and agent_up(c), f"{tag}-boot-agent-ping", f"exit {p.poll()}"):
        return None
    ok = bg(c, "membench", [f"mb={hold_mb}", "hold_ms=60000", "verify=1"])
    rc, _ = sh(c, "until grep -q holding /run/membench.out;do sleep 0.2;done", 300)
    say(ok and rc == 0, f"{tag}-membench-holding")
    time.sleep(5)	# free page reporting gives back what boot and membench's set-up freed
    st = c.request("stats")
    resident = ((st or {}).get("result") or {}).get("guest_ram_resident_bytes", 0)
    mctl = os.path.join(work, f"ctl-main-{len(procs)}.sock")
    q = spawn("main", ["run", "--incoming", f"tcp:{MAIN_IP}:{PORT}"] + COMMON +
              ["--control", mctl], tag)
    cq = hostlib.connect(mctl, q)
    if not say(cq is not None, f"{tag}-main-listens", f"exit {q.poll()}"):
        return None
    c.request("events")
    args = {"to": f"tcp:{MAIN_IP}:{PORT}", "sub": ",".join(f"tcp:{s}:{MS_PORT}" for s in SUBS),
            "main-mem": MAIN_MEM, "tracking": tracking, "replicas": replicas,
            "pageout": "on" if pageout else "off"}
    end = time.time() + 60
    while True:
        r = c.request("migrate", args)
        if (r and r.get("ok")) or time.time() > end or "refused" not in str((r or {}).get("error")):
            break
        time.sleep(0.3)
    say(bool(r and r.get("ok")), f"{tag}-migrate-accepted", str(r))
    ev = c.wait_event(lambda e: e.get("event") in ("migrate-done", "migrate-failed"), 600)
    data = (ev or {}).get("data", {})
    say(ev is not None and ev.get("event") == "migrate-done", f"{tag}-migrate-done", str(data))
    sampler = Sampler(q.pid)
    sampler.start()
    sub_pages = sum(data.get("pages_sub") or [0])
    say(data.get("pages_main", 1 << 40) <= (64 << 20) // 4096 and sub_pages > 0,
        f"{tag}-main-mem-bound", f"{data.get('pages_main')} pages on the main host, "
        f"{data.get('pages_sub')} on the sub-hosts")
    if tracking == "on":
        # Free pages go nowhere: the data sent (one copy of it) is what the guest held.
        sent = data.get("bytes_main", 0) + data.get("bytes_sub", 0) // replicas
        say(0 < sent <= resident * 102 // 100 + (2 << 20), f"{tag}-free-pages-not-sent",
            f"{sent} bytes sent (one copy), the guest held {resident}")
    print(f"split-figures: tracking={tracking} hold_mb={hold_mb} resident={resident} "
          f"bytes_main={data.get('bytes_main')} bytes_sub={data.get('bytes_sub')} "
          f"total_ms={data.get('total_ms', 0):.0f} pages_main={data.get('pages_main')} "
          f"pages_sub={data.get('pages_sub')} pages_free={data.get('pages_free')}", flush=True)
    c.close()
    try:
        stp = p.wait(120)
    except subprocess.TimeoutExpired:
        stp = None
    say(stp == 0, f"{tag}-source-exits-0", f"exit {stp}: {err_tail(p)}")
    if replicas > 1:
        say(data.get("replicas") == replicas, f"{tag}-replicas", str(data))
        stop(ms[0], 10)	# one sub-host lost: its pages must come from their other copies
    say(agent_up(cq, 120), f"{tag}-main-agent-ping", "the agent answers on the main host")
    rc, res = collect(cq, "membench", 300)
    say(rc == 0 and res.get("mismatches") == 0 and res.get("verified_mb") == hold_mb,
        f"{tag}-membench-verifies", f"exit {rc}: {res}")
    s = cq.request("split-stats")
    sres = (s or {}).get("result") or {}
    sampler.done.set()
    sampler.join()
    budget_kb = int(MAIN_MEM[:-1]) << 10
    print(f"split-resident: {tag} {sampler.n} samples every 100 ms, max {sampler.max_kb} KiB of "
          f"guest RAM on the main host (main-mem {budget_kb} KiB); counted max "
          f"{sres.get('resident_max')} pages, paged out {sres.get('pages_out')}", flush=True)
    if pageout:
        say(sampler.n > 10 and sampler.max_kb <= budget_kb, f"{tag}-main-resident-within-main-mem",
            f"{sampler.n} samples, max {sampler.max_kb} KiB, main-mem {budget_kb} KiB")
        say(sres.get("budget_pages") == budget_kb // 4 and
            0 < sres.get("resident_max", 1 << 40) <= budget_kb // 4 and
            sres.get("pages_out", 0) > 0 and sres.get("faults_over_budget") == 0,
            f"{tag}-main-pages-out", f"budget_pages {sres.get('budget_pages')}, resident_max "
            f"{sres.get('resident_max')}, pages_out {sres.get('pages_out')}, over budget "
            f"{sres.get('faults_over_budget')}")
    say(bool(s and s.get("ok")) and sres.get("pages_in", 0) > 0 and sres.get("errors") == 0,
        f"{tag}-main-pages-in", str(sres))
    if replicas > 1:
        say(sres.get("pages_in_replica", 0) > 0 and sres.get("subs_gone", 0) >= 1,
            f"{tag}-main-survives-a-lost-sub-host",
            f"pages_in_replica {sres.get('pages_in_replica')}, subs_gone {sres.get('subs_gone')}")
    hist = sres.get("fault_hist") or []
    say(sum(b.get("faults", 0) for b in hist) == sres.get("faults")
        and all(b.get("hi_us") is None or b.get("lo_us", 0) < b["hi_us"] for b in hist)
        and 0 < sres.get("fault_median_us", 0) <= sres.get("fault_p99_us", 0)
        <= sres.get("fault_max_us", 0),
        f"{tag}-main-fault-hist", f"fault_hist {hist}, median {sres.get('fault_median_us')}, "
        f"p99 {sres.get('fault_p99_us')}, max {sres.get('fault_max_us')}")
    print(f"split-stats: {tag} {sres}", flush=True)
    cq.agent("poweroff", timeout=60)
    cq.close()
    stop(q)
    for m in ms:
        stop(m, 10)
    return data


def main():
    for tracking, hold, replicas, pageout in RUNS:
        one_run(tracking, hold, replicas, pageout)


try:
    main()
finally:
    for p in procs:
        stop(p, 10)
    print(f"split-host: {len(procs)} processes, {time.time() - T0:.0f} s (guard {GUARD:.0f} s)",
          flush=True)
