#!/usr/bin/env python3
"""Checks kumo-agent and the workloads in a guest under QEMU TCG (part of guest/check-qemu.sh).

Boots the test kernel with kumo-probe as init (info, data, agentd: mounts the data disk on
/data and execs kumo-agent), the agent's virtio-console port on a Unix socket, the data disk
as virtio-blk (snapshot=on: the image is not modified), then drives the agent over the socket
and prints PASS:/FAIL: lines. Exit status 1 when anything failed.

usage: agent-check.py KERNEL INITRD DATA_DISK LOG [TIMEOUT_S]
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from agentlib import Agent

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
failed = 0


def result(ok, name, detail=""):
    global failed
    print("%s: %s%s" % ("PASS" if ok else "FAIL", name, (" (" + detail + ")") if detail else ""),
          flush=True)
    if not ok:
        failed = 1
    return ok


def busy(cpu):
    return cpu["user"] + cpu["nice"] + cpu["system"] + cpu["irq"] + cpu["softirq"]


def cpu_busy_during(agent, name, argv, timeout=120):
    """Runs a workload and returns per-CPU busy ticks between the stats before and after."""
    before = agent.request("stats", timeout=30)
    res, _ = agent.run(name, argv, timeout)
    after = agent.request("stats", timeout=30)
    if not before or not after or not res:
        return None, res
    b = {c["cpu"]: busy(c) for c in before["result"]["cpus"]}
    a = {c["cpu"]: busy(c) for c in after["result"]["cpus"]}
    return {c: a[c] - b.get(c, 0) for c in a}, res


def main():
    kernel, initrd, disk, log = sys.argv[1:5]
    timeout = int(sys.argv[5]) if len(sys.argv) > 5 else 300
    deadline = time.time() + timeout
    tmp = tempfile.mkdtemp(prefix="kumo-agent-check.")
    sock = os.path.join(tmp, "agent.sock")
    append = ("console=ttyS0 panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,data,agentd "
              "kumo.data=/dev/vda")
    cmd = [QEMU, "-accel", "tcg", "-m", "256", "-smp", "2", "-nographic", "-no-reboot",
           "-nic", "none", "-kernel", kernel, "-initrd", initrd, "-append", append,
           "-drive", "file=%s,format=raw,if=none,id=d0,snapshot=on" % disk,
           "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
           "-device", "virtio-serial-pci,disable-legacy=on",
           "-chardev", "socket,id=a,path=%s,server=on,wait=off" % sock,
           "-device", "virtserialport,chardev=a,name=org.kumo.agent"]
    logf = open(log, "wb")
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    agent = Agent(sock, deadline)
    try:
        checks(agent, log)
    except (EOFError, OSError) as e:
        result(False, "agent-qemu-connection", str(e))
    finally:
        agent.close()
        try:
            qemu.wait(timeout=20)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
        logf.close()
        try:
            os.unlink(sock)
            os.rmdir(tmp)
        except OSError:
            pass
    if failed:
        print("    agent-check console log: %s" % log)
    return failed


def checks(agent, log):
    agent.connect()
    hello = agent.wait_event("hello", 150)
    if not result(hello is not None, "agent-qemu-hello", "no hello event" if hello is None else
                  "port %s" % hello["data"].get("port")):
        return

    # Period and stats: stats arrive at the set period and MemTotal matches /proc/meminfo.
    r = agent.request("period", {"period_ms": 500})
    result(bool(r and r.get("ok") and r["result"]["period_ms"] == 500), "agent-qemu-period", str(r))
    stats = agent.stats_for(3.2)
    ts = [s["ts"] for s in stats if s["data"].get("period_ms") == 500]
    gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
    med = gaps[len(gaps) // 2] if gaps else 0
    result(len(ts) >= 4 and 0.4 <= med <= 0.65, "agent-qemu-stats-period",
           "%d stats in 3.2 s, median gap %.3f s" % (len(ts), med))
    with open(log, "rb") as f:
        m = re.search(rb"KUMO-CHECK memtotal_kb=(\d+)", f.read())
    probe_kb = int(m.group(1)) if m else -1
    mi = stats[-1]["data"]["meminfo"] if stats else {}
    need = ["MemTotal", "MemFree", "MemAvailable", "Cached", "Active(file)", "Inactive(file)",
            "Committed_AS", "AnonPages"]
    result(mi.get("MemTotal") == probe_kb and all(k in mi for k in need), "agent-qemu-meminfo",
           "agent MemTotal %s kB, kumo-probe read %d kB from /proc/meminfo" %
           (mi.get("MemTotal"), probe_kb))
    d = stats[-1]["data"] if stats else {}
    vm = d.get("vmstat", {})
    result(all(k in vm for k in ("workingset_refault_file", "pgpgin", "pgmajfault", "pgscan",
                                 "pgsteal")) and len(d.get("cpus", [])) == 2 and
           "steal" in d["cpus"][0] and len(d.get("nodes", [])) >= 1 and
           "MemTotal" in d["nodes"][0],
           "agent-qemu-stats-fields", "vmstat %d keys, cpus %d, nodes %d" %
           (len(vm), len(d.get("cpus", [])), len(d.get("nodes", []))))

    r = agent.request("ping")
    result(bool(r and r.get("ok") and r["result"].get("pong")), "agent-qemu-ping", str(r))
    agent.send_raw(b'this is not json\n{"id":"x","verb":"nosuch"}\n')
    bad1 = agent.line(20)
    bad2 = agent.line(20)
    while bad1 and "event" in bad1:
        bad1, bad2 = bad2, agent.line(20)
    while bad2 and "event" in bad2:
        bad2 = agent.line(20)
    result(bool(bad1 and bad1.get("ok") is False and bad2 and bad2.get("ok") is False and
                bad2.get("id") == "x"), "agent-qemu-bad-requests", "%s / %s" % (bad1, bad2))

    # filereader: cold after drop-caches (hit ratio 0), then warm (near 1): 64 MiB fits.
    r = agent.request("drop-caches", timeout=60)
    result(bool(r and r.get("ok")), "agent-qemu-drop-caches", str(r))
    res, r = agent.run("filereader", ["mode=seq", "n=64", "k=64,64"])
    ok = bool(res and len(res["phases"]) == 2 and res["phases"][0]["hit_ratio_ppm"] == 0 and
              res["phases"][1]["hit_ratio_ppm"] >= 950000 and res["bad_blocks"] == 0 and
              res["errors"] == 0 and r["result"]["exit"] == 0)
    result(ok, "agent-qemu-filereader-hit-ratio", "cold %s ppm, warm %s ppm, bad_blocks %s" % (
        res["phases"][0]["hit_ratio_ppm"] if res else "?",
        res["phases"][1]["hit_ratio_ppm"] if res and len(res["phases"]) > 1 else "?",
        res.get("bad_blocks") if res else r))
    res, r = agent.run("filereader", ["n=64", "k=8,64", "phase_s=1"])
    result(bool(res and res["reads"] > 0 and res["errors"] == 0 and "reads_per_s" in res),
           "agent-qemu-filereader-random", "reads %s, hit ratio %s ppm" % (
               res.get("reads") if res else r, res.get("hit_ratio_ppm") if res else "?"))

    res, r = agent.run("membench", ["mb=32,16", "hold_ms=200"])
    result(bool(res and res["mismatches"] == 0 and res["verified_mb"] == 48 and
                r["result"]["exit"] == 0), "agent-qemu-membench-pattern",
           "verified %s MiB, mismatches %s" % (res.get("verified_mb") if res else r,
                                               res.get("mismatches") if res else "?"))
    prog = [e for e in agent.events if e.get("event") == "run-progress"]
    result(len(prog) > 0 and any("progress" in e["data"] for e in prog), "agent-qemu-run-progress",
           "%d progress events" % len(prog))
    agent.events = [e for e in agent.events if e.get("event") != "run-progress"]

    res, r = agent.run("cpuload", ["threads=2", "seconds=1"])
    result(bool(res and all(res.get(k, {}).get("units", 0) > 0
                            for k in ("int", "fixed", "pipe", "syscall"))),
           "agent-qemu-cpuload", json.dumps(res) if res else str(r))
    res, r = agent.run("webload", ["mode=burst", "hot=4", "seconds=2", "threads=2"])
    result(bool(res and res["requests"] > 0 and res["errors"] == 0), "agent-qemu-webload-burst",
           "requests %s, hit ratio %s ppm" % (res.get("requests") if res else r,
                                              res.get("hit_ratio_ppm") if res else "?"))
    res, r = agent.run("webload", ["mode=normal", "seconds=2", "threads=2"])
    result(bool(res and res["requests"] > 0 and res["errors"] == 0), "agent-qemu-webload-normal",
           "requests %s, hit ratio %s ppm" % (res.get("requests") if res else r,
                                              res.get("hit_ratio_ppm") if res else "?"))
    for spin in ("0", "300000"):
        res, r = agent.run("ompbench", ["threads=2", "mb=2", "iters=5", "barriers=200",
                                        "spin=" + spin])
        result(bool(res and res["triad"]["bad"] == 0 and res["barrier"]["ns_per_iter"] > 0),
               "agent-qemu-ompbench-spin-" + spin, json.dumps(res) if res else str(r))
    # Arrays sized in KiB (make bench on PVM hosts) and a barrier that never sleeps.
    res, r = agent.run("ompbench", ["threads=2", "kb=16", "iters=3", "barriers=50",
                                    "spin=30000000000"])
    result(bool(res and res["triad"].get("kb") == 16 and res["triad"]["bad"] == 0 and
                res["futex_waits"] == 0), "agent-qemu-ompbench-kb-spin-forever",
           json.dumps(res) if res else str(r))

    # park-cpus 1: a 2-thread cpuload stays on CPU 0; unpark-cpus gives CPU 1 back.
    r = agent.request("park-cpus", {"cpus": "1"})
    ok = bool(r and r.get("ok") and r["result"]["allowed"] == "0" and r["result"]["moved"] > 0)
    result(ok, "agent-qemu-park-cpus", str(r))
    delta, res = cpu_busy_during(agent, "cpuload", ["threads=2", "seconds=3", "kinds=int"])
    ok = bool(delta and delta.get(0, 0) > 100 and delta.get(1, 0) * 10 < delta.get(0, 0))
    result(ok, "agent-qemu-parked-cpu-idle", "busy ticks while parked: %s" % delta)
    r = agent.request("unpark-cpus", {"cpus": [1]})
    result(bool(r and r.get("ok") and r["result"]["allowed"] == "0-1" and
                r["result"]["parked"] == ""), "agent-qemu-unpark-cpus", str(r))
    delta, res = cpu_busy_during(agent, "cpuload", ["threads=2", "seconds=3", "kinds=int"])
    ok = bool(delta and delta.get(1, 0) > 100)
    result(ok, "agent-qemu-unparked-cpu-busy", "busy ticks after unpark: %s" % delta)

    # The host side goes away and comes back: the agent says hello again and keeps reporting.
    agent.close()
    agent.events = []
    time.sleep(1.5)
    agent.connect()
    hello = agent.wait_event("hello", 20)
    st = [s for s in agent.stats_for(1.6) if hello and s["ts"] >= hello["ts"]]
    result(hello is not None and len(st) >= 2, "agent-qemu-reconnect",
           "hello %s, %d fresh stats after reconnecting" % (hello is not None, len(st)))

    r = agent.request("poweroff", timeout=20)
    result(bool(r and r.get("ok")), "agent-qemu-poweroff", str(r))


if __name__ == "__main__":
    sys.exit(main())
