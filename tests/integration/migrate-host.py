#!/usr/bin/env python3
"""Host side of tests/integration/test-migrate.sh: live migration between two network
namespaces of the KVM box ("hosts" A and B, a veth pair between them).

  migrate-host.py WORKDIR KERNEL INITRD

Boots the stock kernel on A (2 vCPUs, 512 MiB, an ext4 disk with a file, a raw disk for
blkseq, the balloon, kumo-agent relayed by the control socket), starts membench holding a
verified pattern, a second membench re-touching memory all the time (the dirtying load) and
blkseq (sequence-numbered O_DIRECT writes, 8 in flight); migrates A -> B pre-copy, then
B -> A with post-copy; after each the guest must carry on: agent answers on the destination's
control socket, workloads clean, file intact, clock continuous, source VMM exited 0.
Then the failures, each leaving the source running the VM: a destination killed during the
rounds, a destination that answers garbage, a cancelled migration, a destination whose
config does not match. Writes WORKDIR/console-N.log and WORKDIR/kumo-N.err per VMM.
"""
import os, socket, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostlib  # noqa: E402
from hostlib import (GUARD, KUMO, T0, agent_up, bg, collect, count_lines, mono, say,  # noqa: E402
                     sh, wall)

work, kernel, initrd = sys.argv[1:4]
NS = {"A": "kumo-mig-a", "B": "kumo-mig-b"}
IP = {"A": "10.77.0.1", "B": "10.77.0.2"}
PORT = 4450
MEM = 512 << 20
DISKS = ["--disk", os.path.join(work, "fs.img"), "--disk", os.path.join(work, "seq.img")]
COMMON = ["--mem", "512M", "--cpus", "2"] + DISKS + ["--balloon", "--agent"]
BOOT = ["--kernel", kernel, "--initrd", initrd,
        "--cmdline", "panic=-1 kumo.script=agentd.sh kumo.probe=info,agentd kumo.shell=0"]
HOLD = ["mb=48", "hold_ms=40000", "verify=1"]
DIRTY = ["mb=32", "phases=4000", "free=1", "verify=0", "report_ms=2000"]
BLKSEQ = ["dev=/dev/vdb", "qd=8", "slots=256", "seconds=10", "report_ms=500"]
runs = []


def ctl_path(host, n):
    return os.path.join(work, f"ctl-{host}{n}.sock")


def start_vmm(host, extra, ctl):
    n = len(runs)
    con = open(os.path.join(work, f"console-{n}.log"), "w")
    err = open(os.path.join(work, f"kumo-{n}.err"), "w")
    argv = ["ip", "netns", "exec", NS[host], KUMO, "run"] + extra + COMMON + ["--control", ctl]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=con, stderr=err)
    runs.append(p)
    return p


def err_of(p):
    return open(os.path.join(work, f"kumo-{runs.index(p)}.err")).read().strip().split("\n")


def wait_exit(p, timeout):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def kill(p):
    if p.poll() is None:
        p.kill()
        p.wait()


def still_running(c, name):
    s = c.request("status")
    ping = c.agent("ping")
    return say(bool(s and s.get("ok") and s["result"].get("state") == "running" and ping),
               name, f"status {(s or {}).get('result', {}).get('state')}, agent ping {bool(ping)}")


def start_migration(c, args, timeout=120):
    """The migrate verb's reply; retried while the destination is not listening yet (its
    control socket comes up before its migration listener)."""
    c.request("events")	# migrate-progress/-done/-failed come as events
    end = time.time() + timeout
    while True:
        r = c.request("migrate", args)
        if (r and r.get("ok")) or time.time() > end or \
                not any(w in str((r or {}).get("error")) for w in ("refused", "No such file")):
            return r
        time.sleep(0.3)


def wait_migration(c, timeout=600):
    """The migrate-done or migrate-failed event (or None)."""
    return c.wait_event(lambda e: e.get("event") in ("migrate-done", "migrate-failed"), timeout)


def file_sum(c):
    rc, out = sh(c, "sync;echo 3 >/proc/sys/vm/drop_caches;sha256sum </mnt/f")
    return out.split()[0] if rc == 0 and out else None


def start_workloads(c):
    # The dirtying load is membench again, under another name for its own /run files.
    sh(c, "rm -f /run/membench.* /run/blkseq.* /run/dirty.*;ln -sf $(command -v membench) /bin/dirty")
    ok = bg(c, "membench", HOLD)
    rc, _ = sh(c, "until grep -q holding /run/membench.out;do sleep 0.2;done", 300)
    ok = ok and rc == 0 and bg(c, "dirty", DIRTY) and bg(c, "blkseq", BLKSEQ)
    rc, _ = sh(c, "until grep -q writing /run/blkseq.out;do sleep 0.1;done", 120)
    return ok and rc == 0


def check_after(c, tag, file_sha, before):
    say(agent_up(c, 120), f"{tag}-agent-ping", "the agent answers on the destination")
    mono1, wall1 = mono(c), wall(c)
    host_ms = (mono1[1] - before["mono"][1]) * 1000
    ok = None not in (before["mono"][0], mono1[0]) and \
        0 < mono1[0] - before["mono"][0] <= host_ms + 1000
    say(ok, f"{tag}-clock-monotonic", f"guest {before['mono'][0]} -> {mono1[0]} ms, host "
        f"{host_ms:.0f} ms")
    ok = None not in (before["wall"][0], wall1[0]) and \
        0 <= wall1[0] - before["wall"][0] <= wall1[2] - before["wall"][1] + 2
    say(ok, f"{tag}-clock-realtime", f"guest date {before['wall'][0]} -> {wall1[0]}")
    rc, res = collect(c, "membench")
    say(rc == 0 and res.get("mismatches") == 0 and res.get("verified_mb") == 48,
        f"{tag}-membench-verifies", f"exit {rc}: {res}")
    rc, res = collect(c, "blkseq")
    say(rc == 0 and res.get("writes", 0) > 0 and
        all(res.get(k) == 0 for k in ("lost", "dup", "corrupt", "write_errors", "read_errors")),
        f"{tag}-blkseq-exactly-once", f"exit {rc}: {res}")
    n = count_lines(c, "dirty", "progress")
    say(n > before["dirty"], f"{tag}-dirtying-went-on", f"{before['dirty']} -> {n} lines")
    sh(c, "killall dirty")
    got = file_sum(c)
    say(got == file_sha, f"{tag}-file-checksum", f"{got} vs {file_sha}")


def migrate(c, p, src, dst, tag, args, file_sha):
    """Migrate the VM of (c, p) on src to a new VMM on dst. Returns (control, process)."""
    ctl = ctl_path(dst, len(runs))
    q = start_vmm(dst, ["--incoming", f"tcp:{IP[dst]}:{PORT}"], ctl)
    cq = hostlib.connect(ctl, q)
    if not say(cq is not None, f"{tag}-destination-listens", f"exit {q.poll()}"):
        return None, None
    ok = start_workloads(c)
    before = {"mono": mono(c), "wall": wall(c), "dirty": count_lines(c, "dirty", "progress")}
    say(ok, f"{tag}-workloads-running")
    t = time.time()
    r = start_migration(c, dict(to=f"tcp:{IP[dst]}:{PORT}", **args))
    say(bool(r and r.get("ok")), f"{tag}-migrate-accepted", str(r))
    ev = wait_migration(c)
    data = (ev or {}).get("data", {})
    say(ev is not None and ev.get("event") == "migrate-done", f"{tag}-migrate-done",
        f"{time.time() - t:.1f} s: {data}")
    print(f"migration {tag}: total {data.get('total_ms', 0):.0f} ms, downtime "
          f"{data.get('downtime_ms', 0):.0f} ms, {data.get('bytes_sent', 0)} bytes, "
          f"{data.get('round')} rounds, {data.get('postcopy_pages')} pages after the switch",
          flush=True)
    if "postcopy" in args:
        say(data.get("postcopy_pages", 0) > 0, f"{tag}-switched-to-postcopy",
            f"{data.get('postcopy_pages')} pages pulled after the switch-over")
    c.close()
    st = wait_exit(p, 300)
    say(st == 0, f"{tag}-source-exits-0", f"exit {st}: {err_of(p)[-1:]}")
    if st is None:
        kill(p)
    check_after(cq, tag, file_sha, before)
    return cq, q


def fake_destination(path, reply):
    """A Unix listener at path that takes one migration and answers reply to its hello."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(reply)
        time.sleep(2)
        conn.close()
        srv.close()
    threading.Thread(target=serve, daemon=True).start()


def failures(c, p):
    """Each migration that cannot complete leaves the source running."""
    # The destination killed while the rounds run (bandwidth-limited so that they last).
    ctl = ctl_path("B", len(runs))
    q = start_vmm("B", ["--incoming", f"tcp:{IP['B']}:{PORT}"], ctl)
    hostlib.connect(ctl, q)
    start_workloads(c)
    r = start_migration(c, {"to": f"tcp:{IP['B']}:{PORT}", "bandwidth": "4M"})
    time.sleep(3)
    kill(q)
    ev = wait_migration(c, 300)
    say(bool(r and r.get("ok")) and ev is not None and ev.get("event") == "migrate-failed",
        "fail-destination-killed-error", str((ev or {}).get("data", {}).get("error")))
    still_running(c, "fail-destination-killed-source-runs")
    # Garbage instead of the hello's ack.
    fake = os.path.join(work, "fake-destination.sock")
    fake_destination(fake, b"\x07" * 64)
    r = start_migration(c, {"to": f"unix:{fake}"})
    ev = wait_migration(c, 120)
    say(ev is not None and ev.get("event") == "migrate-failed", "fail-corrupt-stream-error",
        str((ev or {}).get("data", {}).get("error")))
    still_running(c, "fail-corrupt-stream-source-runs")
    # Cancelled.
    ctl = ctl_path("B", len(runs))
    q = start_vmm("B", ["--incoming", f"tcp:{IP['B']}:{PORT}"], ctl)
    hostlib.connect(ctl, q)
    r = start_migration(c, {"to": f"tcp:{IP['B']}:{PORT}", "bandwidth": "2M"})
    time.sleep(2)
    rc = c.request("migrate-cancel")
    ev = wait_migration(c, 120)
    say(bool(rc and rc.get("ok")) and ev is not None and ev.get("event") == "migrate-failed",
        "fail-cancel-error", str((ev or {}).get("data", {}).get("error")))
    still_running(c, "fail-cancel-source-runs")
    st = wait_exit(q, 60)
    say(st not in (0, None), "fail-cancel-destination-exits-with-error", f"exit {st}: "
        f"{err_of(q)[-1:]}")
    kill(q)
    # A destination built for another machine refuses at the hello.
    ctl = ctl_path("B", len(runs))
    argv = ["ip", "netns", "exec", NS["B"], KUMO, "run", "--incoming",
            f"tcp:{IP['B']}:{PORT}", "--mem", "256M", "--cpus", "2"] + DISKS + \
        ["--balloon", "--agent", "--control", ctl]
    q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    hostlib.connect(ctl, q)
    r = start_migration(c, {"to": f"tcp:{IP['B']}:{PORT}"})
    ev = wait_migration(c, 120)
    say(ev is not None and ev.get("event") == "migrate-failed" and
        "bytes of RAM" in (ev.get("data", {}).get("error") or ""), "fail-other-config-refused",
        str((ev or {}).get("data", {}).get("error")))
    still_running(c, "fail-other-config-source-runs")
    st = wait_exit(q, 60)
    say(st == 1, "fail-other-config-destination-exit-1", f"exit {st}")
    kill(q)
    for name in ("membench", "blkseq"):
        collect(c, name, 120)
    sh(c, "killall dirty")


def idle_migration():
    """An idle 1 GiB guest: only the pages that hold data go (the kernel, its memmap, what
    runs; freed memory comes back to the host through free page reporting and is not sent).
    The bytes on the wire are measured against what the guest really holds (resident memory
    before the migration); their share of RAM is printed (issue 13's goal: under 5%)."""
    global COMMON
    saved = COMMON
    COMMON = [("1G" if a == "512M" else a) for a in saved]
    try:
        ctl = ctl_path("A", len(runs))
        p = start_vmm("A", BOOT, ctl)
        c = hostlib.connect(ctl, p)
        if not say(c is not None and agent_up(c), "idle-boot-agent-ping", f"exit {p.poll()}"):
            return
        time.sleep(10)	# free page reporting gives back what boot freed
        ctl = ctl_path("B", len(runs))
        q = start_vmm("B", ["--incoming", f"tcp:{IP['B']}:{PORT}"], ctl)
        cq = hostlib.connect(ctl, q)
        st = c.request("stats")
        resident = ((st or {}).get("result") or {}).get("guest_ram_resident_bytes", 0)
        r = start_migration(c, {"to": f"tcp:{IP['B']}:{PORT}"})
        ev = wait_migration(c)
        data = (ev or {}).get("data", {})
        sent = data.get("bytes_sent", 1 << 40)
        # What the guest holds is what goes: its resident memory (less its zero pages), plus
        # the stream's headers; the rest of the 1 GiB costs nothing.
        say(bool(r and r.get("ok")) and ev is not None and ev.get("event") == "migrate-done" and
            0 < sent <= resident * 102 // 100 + (1 << 20), "idle-1g-sends-only-what-it-holds",
            f"{sent} bytes on the wire = {100 * sent / (1 << 30):.1f}% of 1 GiB; the guest held "
            f"{resident} bytes ({100 * resident / (1 << 30):.1f}%), {data.get('pages_sent')} "
            f"data pages")
        say(cq is not None and agent_up(cq, 120), "idle-1g-destination-runs")
        if cq:
            cq.agent("poweroff", timeout=60)
            cq.close()
        c.close()
        wait_exit(p, 60)
        wait_exit(q, 60)
    finally:
        COMMON = saved


def main():
    p = start_vmm("A", BOOT, ctl_path("A", 0))
    c = hostlib.connect(ctl_path("A", 0), p)
    if not say(c is not None and agent_up(c), "boot-agent-ping", f"VMM exit {p.poll()}"):
        return
    rc, out = sh(c, "mkdir -p /mnt&&mount /dev/vda /mnt&&dd if=/dev/urandom of=/mnt/f bs=64k "
                    "count=64&&sync")
    file_sha = file_sum(c)
    say(rc == 0 and file_sha is not None, "boot-file-written", f"sha256 {file_sha}")
    failures(c, p)
    c, p = migrate(c, p, "A", "B", "precopy", {"downtime-ms": 300}, file_sha)
    if c is None:
        return
    c, p = migrate(c, p, "B", "A", "postcopy", {"postcopy": "after-rounds:1", "downtime-ms": 1},
                   file_sha)
    if c is None:
        return
    r = c.agent("poweroff", timeout=60)
    c.close()
    st = wait_exit(p, 120)
    say(r is not None and st == 0, "poweroff-exit-0", f"exit {st}")
    idle_migration()


try:
    main()
finally:
    for p in runs:
        kill(p)
    print(f"migrate-host: {len(runs)} VMM runs, {time.time() - T0:.0f} s (guard {GUARD:.0f} s)",
          flush=True)
