#!/usr/bin/env python3
"""Host side of the agent boot (tests/integration/test-agent.sh).

  agent-host.py CONSOLE CONTROL_SOCKET PID [qemu]

Talks to kumo-agent only through a kumo control socket (the relay: verbs agent and
agent-stats, events agent-stats and agent-event), as the coordinator does: kumo run --agent's
own, or with "qemu" that of `kumo relay` in front of a QEMU guest's agent port (PID is then
QEMU's, its vCPU threads named with -name ...,debug-threads=on). Sizes are small:
on a PVM host the guest's kernel and its user code after each iret run in KVM's emulator.
AGENT_PERIOD_MS (default 2000) is the stats period set and checked; PARK_SECONDS (default 5)
the window over which the parked vCPU's host thread must stay under 5% of one CPU (and each
busy one above 20%).
"""
import os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostlib import GUARD, T0, Console, Control, kumo_pid, say, thread_cpu_s, vcpu_threads  # noqa: E402

con_path, ctl_path, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
QEMU = sys.argv[4:5] == ["qemu"]
VMM_COMM, VCPU_RE = ("qemu-system-x86", r"CPU (\d+)/TCG$") if QEMU else ("kumo", r"kumo-vcpu(\d+)$")
PERIOD_MS = int(os.environ.get("AGENT_PERIOD_MS", "2000"))
PARK_S = float(os.environ.get("PARK_SECONDS", "5"))
CPULOAD_KINDS = os.environ.get("AGENT_CPULOAD_KINDS", "int,fixed,pipe,syscall").split(",")
console = Console(con_path, pid)


def is_agent_event(name):
    return lambda e: e.get("event") == "agent-event" and e["data"].get("event") == name


def connect(path):
    for _ in range(600):
        try:
            return Control(path)
        except OSError:
            time.sleep(0.1)
    return Control(path)


def run(c, name, argv, timeout=600):
    """Runs a workload to its end through the relay; its parsed result line, or None."""
    r = c.agent("run", {"name": name, "argv": argv, "wait": True}, timeout)
    ok = bool(r and r.get("exit") == 0 and isinstance(r.get("result"), dict))
    say(ok, f"agent-run-{name}-{argv[0].replace('=', '-')}",
        str(r if r is not None else c.last))
    return r["result"] if ok else None


def stats_period(c):
    """Stats arrive as agent-stats events at the set period; MemTotal equals the guest's."""
    r = c.agent("period", {"period_ms": PERIOD_MS})
    say(bool(r and r.get("period_ms") == PERIOD_MS), "agent-set-period", str(c.last))
    got = []
    while len(got) < 6:
        e = c.wait_event("agent-stats", 10 * PERIOD_MS / 1000)
        if e is None:
            break
        if e["data"].get("period_ms") == PERIOD_MS:
            got.append(e)
    gaps = sorted(b["ts"] - a["ts"] for a, b in zip(got, got[1:]))
    med = gaps[len(gaps) // 2] if gaps else 0
    say(len(got) == 6 and 0.75 * PERIOD_MS <= med * 1000 <= 1.5 * PERIOD_MS,
        "agent-stats-at-period", f"{len(got)} stats, median gap {med:.3f} s, period {PERIOD_MS} ms")
    line = console.wait_line("KUMO-CHECK memtotal_kb=")
    probe_kb = int(line.split("=", 1)[1]) if line else -1
    mi = got[-1]["data"].get("meminfo", {}) if got else {}
    need = ["MemTotal", "MemFree", "MemAvailable", "Cached", "Active(file)", "Inactive(file)",
            "Committed_AS"]
    say(mi.get("MemTotal") == probe_kb and all(k in mi for k in need), "agent-stats-meminfo",
        f"agent MemTotal {mi.get('MemTotal')} kB, kumo-probe read {probe_kb} kB")
    d = got[-1]["data"] if got else {}
    say(len(d.get("cpus", [])) == 2 and "pgpgin" in d.get("vmstat", {}) and
        len(d.get("nodes", [])) >= 1, "agent-stats-fields",
        f"cpus {len(d.get('cpus', []))}, vmstat {len(d.get('vmstat', {}))} keys")
    s = c.request("agent-stats")
    r = s.get("result", {}) if s else {}
    say(r.get("connected") is True and r.get("stats_received", 0) >= 6 and
        r.get("bad_lines") == 0 and r.get("data", {}).get("seq") is not None and
        r.get("connects", 0) >= 1 and str(r.get("hello", {}).get("port", "")).startswith("/dev/vport"),
        "agent-stats-verb", str({k: r.get(k) for k in ("connected", "connects", "stats_received",
                                                       "bad_lines", "hello")}))


def not_blocked(c):
    """A workload run with wait holds up nothing else on the control socket: agent-stats and
    an agent ping sent after it are answered before it ends."""
    rid = c.send("agent", {"verb": "run", "args": {"name": "cpuload", "wait": True,
                                                   "argv": ["threads=1", "seconds=3", "kinds=int"]},
                           "timeout_ms": 300000})
    s = c.request("agent-stats")
    p = c.agent("ping")
    early = rid in c.replies
    r = c.reply(rid, 310)
    say(bool(s and s.get("ok") and p and p.get("pong") and not early and r and r.get("ok") and
             r["result"].get("exit") == 0), "agent-run-holds-up-nothing",
        f"agent-stats {bool(s and s.get('ok'))}, ping {bool(p)}, run answered first {early}, "
        f"run reply {r.get('ok') if r else None}")


def vcpu_busy(c, pid, tids, argv):
    """Host CPU seconds each vCPU thread used over PARK_S while cpuload runs in the guest."""
    r = c.agent("run", {"name": "cpuload", "argv": argv, "wait": False}, 120)
    if r is None:
        return None
    time.sleep(1)  # the workload's threads are running
    before = {v: thread_cpu_s(pid, t) for v, t in tids.items()}
    t0 = time.time()
    time.sleep(PARK_S)
    after = {v: thread_cpu_s(pid, t) for v, t in tids.items()}
    wall = time.time() - t0
    c.wait_event(is_agent_event("run-exit"), 900)
    return {v: (after[v] - before[v]) / wall for v in tids}


def park(c, pid):
    tids = vcpu_threads(pid, VCPU_RE)
    if not say(sorted(tids) == [0, 1], "agent-vcpu-threads", str(tids)):
        return
    secs = int(PARK_S) + 3
    argv = ["threads=2", f"seconds={secs}", "kinds=int", "report_ms=100000"]
    r = c.agent("park-cpus", {"cpus": "1"})
    say(bool(r and r.get("allowed") == "0" and r.get("parked") == "1"), "agent-park-cpus",
        str(c.last))
    share = vcpu_busy(c, pid, tids, argv)
    # Busy means a good share of a CPU, not all of one: other host load may take the rest.
    # Idle is not zero: the parked vCPU still takes its timer ticks, and in the KVM box every
    # VM exit costs tens of microseconds of TCG (7.6% of a CPU measured there, 1.6% under
    # plain QEMU TCG); a vCPU that was not parked runs the spinning load at > 20%.
    say(bool(share and share[1] < 0.15 and share[0] > 0.2), "agent-parked-vcpu-idle-on-host",
        f"host CPU share over {PARK_S:.0f} s: " + (
            ", ".join(f"vcpu{v} {s:.1%}" for v, s in sorted(share.items())) if share else "none"))
    r = c.agent("unpark-cpus", {"cpus": [1]})
    say(bool(r and r.get("allowed") == "0-1" and r.get("parked") == ""), "agent-unpark-cpus",
        str(c.last))
    share = vcpu_busy(c, pid, tids, argv)
    say(bool(share and min(share[0], share[1]) > 0.2), "agent-unparked-vcpus-busy-on-host",
        f"host CPU share over {PARK_S:.0f} s: " + (
            ", ".join(f"vcpu{v} {s:.1%}" for v, s in sorted(share.items())) if share else "none"))


def workloads(c):
    r = c.agent("drop-caches", timeout=120)
    say(r is not None, "agent-drop-caches", str(c.last))
    res = run(c, "filereader", ["mode=seq", "n=4", "k=4,4"])
    ph = res.get("phases", []) if res else []
    say(len(ph) == 2 and ph[0].get("hit_ratio_ppm") == 0 and ph[1].get("hit_ratio_ppm", 0) >= 950000
        and res.get("bad_blocks") == 0 and res.get("errors") == 0, "agent-filereader-hit-ratio",
        f"cold {ph[0].get('hit_ratio_ppm') if ph else '?'} ppm, "
        f"warm {ph[1].get('hit_ratio_ppm') if len(ph) > 1 else '?'} ppm")
    res = run(c, "filereader", ["n=8", "k=2,8", "phase_s=1"])
    say(bool(res and res.get("reads", 0) > 0 and res.get("errors") == 0),
        "agent-filereader-random", str(res))
    res = run(c, "webload", ["mode=burst", "hot=2", "seconds=1", "threads=1"])
    say(bool(res and res.get("requests", 0) > 0 and res.get("errors") == 0),
        "agent-webload-burst", str(res))
    res = run(c, "webload", ["mode=normal", "seconds=1", "threads=1"])
    say(bool(res and res.get("requests", 0) > 0 and res.get("errors") == 0),
        "agent-webload-normal", str(res))
    res = run(c, "cpuload", ["threads=2", "seconds=1", "kinds=" + ",".join(CPULOAD_KINDS)])
    say(bool(res and all(res.get(k, {}).get("units", 0) > 0
                         for k in CPULOAD_KINDS)), "agent-cpuload-units",
        str(res))
    res = run(c, "membench", ["mb=4,2", "hold_ms=100"])
    say(bool(res and res.get("mismatches") == 0 and res.get("verified_mb") == 6),
        "agent-membench-pattern", str(res))
    # The paper's GOMP_SPINCOUNT values: a barrier that sleeps at once, after 300k spins, never.
    for spin in ("0", "300000", "30000000000"):
        res = run(c, "ompbench", ["threads=2", "kb=16", "iters=2", "barriers=20", "spin=" + spin])
        say(bool(res and res.get("triad", {}).get("bad") == 0 and res.get("spin") == int(spin) and
                 (spin != "30000000000" or res.get("futex_waits") == 0) and
                 res.get("barrier", {}).get("ns_per_iter", 0) > 0), f"agent-ompbench-spin-{spin}",
            str(res))


if not console.wait_line("KUMO-CHECK agentd=exec"):
    say(False, "agent-probe-execs-agent", "kumo-probe never reached its agentd step; " + console.why())
    sys.exit(0)
pid = kumo_pid(pid, VMM_COMM)
c = connect(ctl_path)
try:
    r = c.request("events")
    say(bool(r and r.get("ok")), "agent-events-subscribed", str(r))
    # The agent says hello when the relay connects, which may be before we subscribed: wait
    # until the relay is connected and the agent answers instead.
    hello = None
    while hello is None and time.time() - T0 < GUARD:
        s = c.request("agent-stats")
        if s and s.get("ok") and s["result"].get("connected"):
            hello = c.agent("ping", timeout=60)
        if hello is None:
            time.sleep(1)
    if say(hello is not None, "agent-answers-through-relay", str(c.last if hello else "")):
        r = c.agent("ping")
        say(bool(r and r.get("pong")), "agent-ping-through-relay", str(c.last))
        stats_period(c)
        workloads(c)
        not_blocked(c)
        ev = [e for e in c.events if e.get("event") == "agent-event"]
        say(any(e["data"].get("event") == "run-exit" for e in ev) and
            any(e["data"].get("event") == "run-progress" for e in ev), "agent-events-relayed",
            f"{len(ev)} agent-event lines: " + ",".join(sorted({e['data'].get('event', '?') for e in ev})))
        c.events = [e for e in c.events if e.get("event") != "agent-event"]
        park(c, pid)
        r = c.agent("poweroff", timeout=60)
        say(r is not None, "agent-poweroff", str(c.last))
except (EOFError, OSError, ValueError, KeyError) as e:
    say(False, "agent-host-control", repr(e))
finally:
    c.close()
