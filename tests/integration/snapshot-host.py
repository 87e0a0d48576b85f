#!/usr/bin/env python3
"""Host side of tests/integration/test-snapshot.sh: boot, snapshot, restore, twice.

  snapshot-host.py WORKDIR KERNEL INITRD

Boots the stock kernel (2 vCPUs, 512 MiB, a control socket with the agent relayed, an ext4
disk /dev/vda, a raw disk /dev/vdb for blkseq, the balloon) with kumo-agent, then per cycle
("eager": snapshot the booted VM, restore it; "lazy": snapshot the restored VM, restore it with
--restore-lazy): membench holding a pattern and blkseq writing with 8 requests in flight while
the snapshot (stop=true) is taken; the VMM must exit 0; the restored guest must answer, finish
both workloads clean, read back the file written before the first snapshot, keep the balloon
and its clock (no jump beyond the host's time). Then the refusals: another --cpus or --mem, a
truncated memory file (exit 2, one line), a snapshot into an unwritable directory (an error
reply, the VM runs on). Workloads run through the agent's `run` verb under sh, their output in
the guest's /run, so a result that comes while no host is connected is not lost.
Writes WORKDIR/console-N.log and WORKDIR/kumo-N.err for each VMM run.
"""
import hashlib, os, shutil, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostlib  # noqa: E402
from hostlib import (GUARD, KUMO, T0, agent_up, bg, collect, count_lines, mono, say,  # noqa: E402
                     sh, wall)

work, kernel, initrd = sys.argv[1:4]
CTL = os.path.join(work, "ctl.sock")
MEM = 512 << 20
BALLOON = 32 << 20
COMMON = ["--mem", "512M", "--cpus", "2", "--disk", os.path.join(work, "fs.img"),
          "--disk", os.path.join(work, "seq.img"), "--balloon", "--control", CTL, "--agent"]
BOOT = ["--kernel", kernel, "--initrd", initrd,
        "--cmdline", "panic=-1 kumo.script=agentd.sh kumo.probe=info,agentd kumo.shell=0"]
MEMBENCH = ["mb=64", "hold_ms=12000", "verify=1"]
BLKSEQ = ["dev=/dev/vdb", "qd=8", "slots=256", "seconds=6", "report_ms=500"]
runs = []


def start_vmm(extra):
    n = len(runs)
    con = open(os.path.join(work, f"console-{n}.log"), "w")
    err = open(os.path.join(work, f"kumo-{n}.err"), "w")
    p = subprocess.Popen([KUMO, "run"] + extra + COMMON, stdin=subprocess.DEVNULL,
                         stdout=con, stderr=err)
    runs.append(p)
    return p


def err_tail():
    """The last line the latest VMM wrote on stderr."""
    lines = open(os.path.join(work, f"kumo-{len(runs) - 1}.err")).read().strip().split("\n")
    return lines[-1]



def connect(p, timeout=180):
    return hostlib.connect(CTL, p, timeout)


def file_sum(c):
    rc, out = sh(c, "sync;echo 3 >/proc/sys/vm/drop_caches;sha256sum </mnt/f")
    return out.split()[0] if rc == 0 and out else None


def balloon_bytes(c):
    r = c.request("balloon-get")
    return r["result"].get("balloon_bytes") if r and r.get("ok") else None


def set_balloon(c, target):
    c.request("balloon-set", {"target": target})
    end = time.time() + 120
    while time.time() < end:
        r = c.request("balloon-get")
        if r and r.get("ok") and r["result"].get("actual_bytes") == target:
            return True
        time.sleep(0.5)
    return False


def ctl_cli(*args, timeout=300):
    r = subprocess.run([KUMO, "ctl", CTL] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).strip()


def refuse_snapshot(c, name, d):
    """A snapshot into d fails with an error reply and the VM keeps running."""
    rc, out = ctl_cli("snapshot", f"dir={d}")
    say(rc == 1 and out != "" and "unknown verb" not in out, f"{name}-error-reply",
        f"exit {rc}: {out[:200]}")
    s = c.request("status")
    p = c.agent("ping")
    say(bool(s and s.get("ok") and s["result"].get("state") == "running" and p),
        f"{name}-vm-keeps-running", f"status {s.get('result', {}).get('state') if s else None}, "
        f"agent ping {bool(p)}")


def workloads_done(c, tag, before):
    """After the snapshot (or without one): membench and blkseq ended clean."""
    rc, res = collect(c, "membench")
    say(rc == 0 and res.get("mismatches") == 0 and res.get("verified_mb") == 64 and
        res.get("failed_allocs") == 0, f"{tag}-membench-verifies", f"exit {rc}: {res}")
    rc, res = collect(c, "blkseq")
    say(rc == 0 and res.get("writes", 0) > 0 and res.get("ok_slots", 0) > 0 and
        all(res.get(k) == 0 for k in ("lost", "dup", "corrupt", "write_errors", "read_errors",
                                      "bad_events")), f"{tag}-blkseq-exactly-once",
        f"exit {rc}: {res}")
    if before is None:
        return
    held, wrote = count_lines(c, "membench", "holding"), count_lines(c, "blkseq", "writing")
    say(held > before[0], f"{tag}-membench-held-across",
        f"{before[0]} holding lines before the snapshot, {held} in all")
    say(wrote > before[1], f"{tag}-blkseq-wrote-across",
        f"{before[1]} writing lines before the snapshot, {wrote} in all")


def cycle(c, p, tag, lazy):
    """Workloads running, snapshot with stop, restore; the checks. The new (control, process)
    or (None, None)."""
    sh(c, "rm -f /run/membench.* /run/blkseq.*")  # the last cycle's
    ok = bg(c, "membench", MEMBENCH)
    rc, _ = sh(c, "until grep -qs holding /run/membench.out;do sleep 0.2;done", 300)
    wall0 = wall(c)
    ok = bg(c, "blkseq", BLKSEQ) and ok and rc == 0
    # The last look before the snapshot, in one run: blkseq writing, the lines so far.
    rc, out = sh(c, "until grep -qs writing /run/blkseq.out;do sleep 0.1;done;grep -c holding "
                    "/run/membench.out;grep -c writing /run/blkseq.out", 120)
    before = [int(n) for n in (out or "").split() if n.isdigit()]
    mono0 = mono(c)
    say(ok and rc == 0 and len(before) == 2, f"{tag}-workloads-running",
        f"membench holding, blkseq writing: {out}")
    before = before if len(before) == 2 else [1 << 30] * 2
    snap = os.path.join(work, f"snap-{tag}")
    os.makedirs(snap, exist_ok=True)
    t = time.time()
    rc, out = ctl_cli("snapshot", f"dir={snap}", "stop=true")
    if not say(rc == 0, f"{tag}-snapshot-reply-ok", f"exit {rc}: {out[:300]}"):
        # No snapshot verb yet (or it failed): the VM must still be running; check what
        # can be checked without a restore.
        workloads_done(c, f"{tag}-no-restore", None)
        return c, p
    c.close()
    try:
        st = p.wait(120)
    except subprocess.TimeoutExpired:
        st = None
    say(st == 0, f"{tag}-snapshot-vmm-exits-0", f"exit {st} {time.time() - t:.1f} s after the "
        "request")
    files = {f: os.path.getsize(os.path.join(snap, f)) if os.path.exists(os.path.join(snap, f))
             else None for f in ("state.fdt", "memory.raw")}
    say(bool(files["state.fdt"]) and files["memory.raw"] == MEM, f"{tag}-snapshot-files",
        str(files))
    if st is None:
        p.kill()
        p.wait()
        return None, None
    t = time.time()
    p = start_vmm(["--restore", snap] + (["--restore-lazy"] if lazy else []))
    c = connect(p)
    if not say(c is not None, f"{tag}-restore-listens", f"VMM exit {p.poll()}: {err_tail()}"):
        return None, None
    s = c.request("status")
    say(bool(s and s.get("ok") and s["result"].get("state") == "running"),
        f"{tag}-restore-running", f"{time.time() - t:.1f} s after the start: {s}")
    if not say(agent_up(c, 90), f"{tag}-agent-ping", "the agent answers after the restore"):
        c.close()
        p.kill()
        p.wait()
        return None, None
    mono1, wall1 = mono(c), wall(c)
    host_ms = (mono1[1] - mono0[1]) * 1000
    ok = mono0[0] is not None and mono1[0] is not None and 0 < mono1[0] - mono0[0] <= host_ms + 1000
    say(ok, f"{tag}-clock-monotonic", f"guest {mono0[0]} -> {mono1[0]} ms, "
        f"host {host_ms:.0f} ms between the pings")
    host_s = wall1[2] - wall0[1]
    ok = wall0[0] is not None and wall1[0] is not None and 0 <= wall1[0] - wall0[0] <= host_s + 2
    say(ok, f"{tag}-clock-realtime", f"guest date {wall0[0]} -> {wall1[0]}, host {host_s:.1f} s"
        " (date has 1 s steps)")
    workloads_done(c, tag, before)
    got = file_sum(c)
    say(got is not None and got == file_sha, f"{tag}-file-checksum", f"{got} vs {file_sha}")
    b = balloon_bytes(c)
    say(b == BALLOON, f"{tag}-balloon-kept", f"{b} bytes held, {BALLOON} before")
    return c, p


def refusals(snap):
    """Restores that must be refused before anything runs: exit 2, one line."""
    def restore(name, d, common):
        ctl = os.path.join(work, "refuse.sock")
        argv = [KUMO, "run", "--restore", d] + [ctl if a == CTL else a for a in common]
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=60)
            rc, err = r.returncode, r.stderr.strip().split("\n")
        except subprocess.TimeoutExpired:
            rc, err = "timeout (it ran)", []
        say(rc == 2 and len(err) == 1 and err[0] != "", name, f"exit {rc}: {err[:3]}")

    if not os.path.exists(os.path.join(snap, "memory.raw")):
        for n in ("restore-refuses-other-cpus", "restore-refuses-other-mem",
                  "restore-refuses-truncated-memory"):
            say(False, n, "no snapshot to restore from")
        return
    restore("restore-refuses-other-cpus", snap,
            [("1" if a == "2" and COMMON[i - 1] == "--cpus" else a) for i, a in enumerate(COMMON)])
    restore("restore-refuses-other-mem", snap,
            [("256M" if a == "512M" else a) for a in COMMON])
    cut = os.path.join(work, "snap-truncated")
    os.makedirs(cut, exist_ok=True)
    subprocess.run(["cp", "--sparse=always", os.path.join(snap, "state.fdt"),
                    os.path.join(snap, "memory.raw"), cut], check=True)
    os.truncate(os.path.join(cut, "memory.raw"), MEM - 4096)
    restore("restore-refuses-truncated-memory", cut, COMMON)


def main():
    global file_sha
    p = start_vmm(BOOT)
    c = connect(p)
    if not say(c is not None and agent_up(c), "boot-agent-ping", f"VMM exit {p.poll()}"):
        return
    rc, out = sh(c, "mkdir -p /mnt&&mount /dev/vda /mnt&&dd if=/dev/urandom of=/mnt/f bs=64k "
                    "count=64&&sync")
    file_sha = file_sum(c)
    say(rc == 0 and file_sha is not None, "boot-file-written", f"{rc} {out} sha256 {file_sha}")
    say(set_balloon(c, MEM - BALLOON) and balloon_bytes(c) == BALLOON, "boot-balloon-inflated",
        f"{balloon_bytes(c)} bytes held")
    refuse_snapshot(c, "snapshot-unwritable-dir", "/proc/kumo-snapshot")
    notdir = os.path.join(work, "a-file")
    open(notdir, "w").close()
    refuse_snapshot(c, "snapshot-file-as-dir", notdir)
    for tag, lazy in (("eager", False), ("lazy", True)):
        c, p = cycle(c, p, tag, lazy)
        if c is None:
            break
    if c is not None:
        say(set_balloon(c, MEM) and balloon_bytes(c) == 0, "balloon-deflates-after-restore",
            f"{balloon_bytes(c)} bytes held")
        r = c.agent("poweroff", timeout=60)
        c.close()
        try:
            st = p.wait(120)
        except subprocess.TimeoutExpired:
            st = None
        say(r is not None and st == 0, "poweroff-exit-0", f"exit {st}")
        debugfs = shutil.which("debugfs") or "/sbin/debugfs"
        r = subprocess.run([debugfs, "-R", "cat /f", os.path.join(work, "fs.img")],
                           capture_output=True)
        got = hashlib.sha256(r.stdout).hexdigest()
        say(got == file_sha, "host-file-checksum", f"{got} on the host, {file_sha} in the guest")
    snaps = [os.path.join(work, f"snap-{t}") for t in ("lazy", "eager")]
    refusals(([d for d in snaps if os.path.exists(os.path.join(d, "memory.raw"))] + snaps)[0])


def on_term(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say(False, "snapshot-host-in-time", "the test's timeout ended it")
    raise SystemExit("snapshot-host: terminated")  # the finally below ends the VMMs


signal.signal(signal.SIGTERM, on_term)
file_sha = None
try:
    main()
except (EOFError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
    say(False, "snapshot-host-control", repr(e))
finally:
    for p in runs:
        if p.poll() is None:
            p.kill()
            p.wait()
    print(f"snapshot-host: {len(runs)} VMM runs, {time.time() - T0:.0f} s (guard {GUARD:.0f} s)",
          flush=True)
