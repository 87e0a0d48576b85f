#!/usr/bin/env python3
"""Plays the host side of the kumo-probe checks while a guest boots (tests/integration).

  drive-guest.py CONSOLE_FILE AGENT_SOCKET CONTROL_SOCKET MEM_BYTES [reporting|pss|oom] [PID]

PID (the VMM's, or its `timeout`'s): waits end when it does, and a FAIL says where the guest got.

Mode "oom" (a VM with DEFLATE_ON_OOM): the balloon first takes 160 MiB, then the guest
touches 128 MiB, more than it has left: the driver must deflate instead of OOM-killing.
Mode "reporting" (default): the memory the guest frees must come back to the host (free page
reporting on). Mode "pss" (a VM without free page reporting): the guest's freed memory stays
resident, and inflating the balloon by 64 MiB must cut the guest RAM resident on the host by at
least 90% of that.

Follows the console file the guest writes; when the probe opens the agent port it sends a
line and expects "echo: LINE" back; when the probe starts its balloon step it lowers the
balloon target by 64 MiB through the control socket, waits for the balloon to reach it, then
restores it. Prints PASS:/FAIL: lines and "drive: key=value" facts. Waits on conditions, with
generous hang guards; nothing here asserts a time.
"""
import json, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostlib import GUARD, Console, T0 as t0, agent_roundtrip, say  # noqa: E402
import hostlib  # noqa: E402

con, agent_path, ctl_path, mem = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "reporting"
console = Console(con, int(sys.argv[6]) if len(sys.argv) > 6 else None)
lines, wait_line = console.lines, console.wait_line


def ctl(verb, **args):
    return hostlib.ctl(ctl_path, verb, **args)


# 1. Agent port: a line in, the same line back.
if mode in ("pss", "oom"):
    pass
elif wait_line("KUMO-CHECK agent_port="):
    token = f"ping-{os.getpid()}-{int(t0)}"
    got = agent_roundtrip(agent_path, token)
    say(got == f"echo: {token}\n", "agent-roundtrip", repr(got))
    say(wait_line(f"KUMO-CHECK agent_received={token}") is not None, "agent-guest-received")
else:
    say(False, "agent-roundtrip", "the probe never opened the agent port; " + console.why())

# 2. Free page reporting: the guest touches 64 MiB and frees it; the host must get it back.
def agent_send(text):
    hostlib.agent_send(agent_path, text)


def resident():
    return ctl("stats")["guest_ram_resident_bytes"]


def touch_step():
    MiB = 1 << 20
    if mode == "oom":
        target = mem - 160 * MiB
        ctl("balloon-set", target=target)
        while time.time() - t0 < GUARD and ctl("balloon-get")["actual_bytes"] != target:
            time.sleep(1)
        held = ctl("balloon-get")["balloon_bytes"]
        say(held == 160 * MiB, "oom-balloon-inflated", f"{held >> 20} MiB")
        agent_send("go\n")
        ok = wait_line("KUMO-CHECK touched_mb=") is not None
        held2 = ctl("balloon-get")["balloon_bytes"]
        print(f"drive: balloon before touch={held >> 20} MiB after={held2 >> 20} MiB", flush=True)
        say(ok, "oom-guest-survives-touching-past-its-memory")
        say(held2 < held, "oom-balloon-deflated-on-oom", f"{held >> 20} -> {held2 >> 20} MiB")
        agent_send("free\n")
        wait_line("KUMO-CHECK freed_mb=")
        agent_send("continue\n")
        return
    base = resident()
    agent_send("go\n")
    if not wait_line("KUMO-CHECK touched_mb="):
        say(False, "reporting-guest-touched", "no touched_mb line")
        return
    peak = resident()
    print(f"drive: resident base={base // MiB} MiB touched={peak // MiB} MiB", flush=True)
    say(peak - base >= 56 * MiB, "reporting-touch-is-resident", f"+{(peak - base) // MiB} MiB")
    agent_send("free\n")
    wait_line("KUMO-CHECK freed_mb=")
    if mode == "pss":
        agent_send("continue\n")
        return
    now = resident()
    while time.time() - t0 < GUARD and now > base + 16 * MiB:
        time.sleep(1)
        now = resident()
    print(f"drive: resident after free={now // MiB} MiB", flush=True)
    say(now <= base + 16 * MiB, "reporting-freed-memory-returns-to-host",
        f"{(now - base) // MiB} MiB above the start")
    agent_send("continue\n")


if wait_line("KUMO-CHECK touch_ready="):
    try:
        touch_step()
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        say(False, "reporting-control", str(e))
else:
    say(False, "reporting-guest-touched",
        "the probe never reached its touch step; " + console.why())

# 3. Balloon: 64 MiB lower, wait for actual == target, then back to the full size.
first = wait_line("KUMO-CHECK balloon_memtotal_kb=") if mode != "oom" else None


def balloon_step():
    before_kb = int(first.split("=")[1])
    res0 = ctl("stats")["guest_ram_resident_bytes"]
    target = mem - 64 * 1024 * 1024
    ctl("balloon-set", target=target)
    actual = 0
    while time.time() - t0 < GUARD:
        b = ctl("balloon-get")
        actual = b["actual_bytes"]
        if actual == target:
            break
        time.sleep(1)
    say(actual == target, "balloon-actual-reaches-target", f"actual {actual}")
    if mode == "pss":
        res_inflated = resident()
        print(f"drive: resident before inflate={res0 >> 20} MiB after={res_inflated >> 20} MiB",
              flush=True)
        say(res0 - res_inflated >= 0.9 * 64 * 1024 * 1024, "balloon-host-resident-drops-90pct",
            f"dropped {(res0 - res_inflated) >> 20} MiB")
    want_kb = before_kb - 64 * 1024
    after_kb = None
    while time.time() - t0 < GUARD:
        seen = [int(l.split("=")[1]) for l in lines() if l.startswith("KUMO-CHECK balloon_memtotal_kb=")]
        if seen and seen[-1] == want_kb:
            after_kb = want_kb
            break
        if any(l.startswith("KUMO-CHECK done") for l in lines()):
            break
        time.sleep(1)
    print(f"drive: memtotal_kb before={before_kb} inflated={after_kb}", flush=True)
    say(after_kb == want_kb, "balloon-guest-memtotal-drops-64mib", f"{before_kb} -> {after_kb} kB")
    after_kb = after_kb or before_kb
    # The guest refreshes its statistics every second (--balloon=stats=1): wait for the
    # first report made after the inflation, then compare with what the guest itself read.
    def close(bs):
        return "total_memory" in bs and abs(bs["total_memory"] - after_kb * 1024) <= 0.03 * after_kb * 1024
    st = ctl("stats")
    while time.time() - t0 < GUARD and not close(st.get("balloon_stats", {})):
        if any(l.startswith("KUMO-CHECK done") for l in lines()):
            break
        time.sleep(1)
        st = ctl("stats")
    res1 = st["guest_ram_resident_bytes"]
    print(f"drive: guest RAM resident before={res0} inflated={res1}", flush=True)
    bs = st.get("balloon_stats", {})
    print(f"drive: balloon stats {json.dumps(bs)}", flush=True)
    say(close(bs), "balloon-stats-total-matches-meminfo",
        f"stats {bs.get('total_memory')} vs MemTotal {after_kb * 1024}")
    ctl("balloon-set", target=mem)
    back_kb = None
    while time.time() - t0 < GUARD:
        seen = [int(l.split("=")[1]) for l in lines() if l.startswith("KUMO-CHECK balloon_memtotal_kb=")]
        if seen and seen[-1] == before_kb and len(seen) > 1:
            back_kb = before_kb
            break
        if any(l.startswith("KUMO-CHECK done") for l in lines()):
            break
        time.sleep(1)
    say(back_kb == before_kb, "balloon-deflate-restores-memtotal", f"{back_kb} kB")


if mode == "oom":
    pass
elif not first:
    say(False, "balloon-actual-reaches-target", "the probe never reached its balloon step; " + console.why())
else:
    try:
        balloon_step()
    except (RuntimeError, KeyError, ValueError) as e:
        say(False, "balloon-control", str(e))
