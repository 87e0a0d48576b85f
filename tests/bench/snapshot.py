"""Snapshot and restore benchmark for `make bench` (issue 10): kumo's `snapshot` verb and
`kumo run --restore [--restore-lazy]` beside QEMU's `migrate` to a file and `-incoming` from it,
same guest, same sizes, in the same run.

The guest: the test kernel with kumo-probe as init (`kumo.probe=touch kumo.touch_mb=N`,
1 vCPU): it waits for "go" on its agent port (kumo `--agent-socket`, QEMU a virtserialport named
org.kumo.agent), touches N MiB (a non-zero byte per page), says `touched_mb=N` and holds it while
the host snapshots. "idle" touches 1 MiB, "50% touched" half the RAM. Per size and state, one
boot per VMM: BENCH_SNAP_SNAPS snapshots of the held guest (kumo: `snapshot dir=D`, the last with
`stop=true`; QEMU: QMP `stop`, then `migrate "exec:cat > FILE"` with max-bandwidth lifted), then
BENCH_SNAP_RUNS restores of each kind (kumo eager, kumo lazy, QEMU `-incoming "exec:cat FILE"`
then `cont`). Restore times are from the VMM's execve (taken in the child just before it) to:
kumo's vCPUs starting (its `-v` line "starting N vCPU(s) at CLOCK_MONOTONIC T", printed right
before the vCPU threads are created, which enter KVM_RUN at once); QEMU's first `query-status`
that says running; and for both to the guest "alive again": the echo of a line written to the
serial console's input, which needs the guest kernel to take the UART interrupt and run its tty
layer.

Scale (environment): BENCH_SNAP_SIZES (MiB, default 256,1024,2048), BENCH_SNAP_RUNS (restores
per kind, default 2), BENCH_SNAP_SNAPS (snapshots per boot, default 2), BENCH_SNAP_STATES
(default idle,touched), BENCH_SNAP_GUARD (hang guard per step in seconds, default 600),
BENCH_SNAP_DIR (where the files go, default /var/tmp: the box's scratch disk).
"""
import contextlib, os, statistics, subprocess, tempfile, threading, time

from numa_pv import kill_group  # noqa: E402

SIZES = [int(s) for s in os.environ.get("BENCH_SNAP_SIZES", "256,1024,2048").split(",")]
RUNS = int(os.environ.get("BENCH_SNAP_RUNS", "2"))
SNAPS = int(os.environ.get("BENCH_SNAP_SNAPS", "2"))
GUARD = float(os.environ.get("BENCH_SNAP_GUARD", "600"))
SNAP_DIR = os.environ.get("BENCH_SNAP_DIR", "/var/tmp")
STATES = tuple(s for s in (("idle", 0.0), ("50% touched", 0.5))
               if s[0].split()[-1] in os.environ.get("BENCH_SNAP_STATES", "idle,touched").split(","))
ALIVE = "KUMO-ALIVE"
HEADING = "## Snapshot and restore"
WHERE_BOX = "the box's scratch disk, ext4"


def guest_args(touch_mb):
    return f"panic=-1 rdinit=/sbin/kumo-probe kumo.probe=touch kumo.touch_mb={touch_mb}"


class Console:
    """A VMM's stdout (the serial console), read by a thread; the arrival time of every chunk
    is kept, so the time a text first appeared can be told afterwards."""

    def __init__(self, p):
        self.p, self.text, self.chunks, self.eof = p, "", [], False
        self.cv = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        fd = self.p.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self.cv:
                if not chunk:
                    self.eof = True
                else:
                    self.text += chunk.decode("latin-1")
                    self.chunks.append((len(self.text), time.monotonic()))
                self.cv.notify_all()
            if not chunk:
                return

    def wait(self, marker, timeout=GUARD, start=0):
        """(offset after the marker, monotonic time it arrived); RuntimeError on EOF/timeout."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                i = self.text.find(marker, start)
                if i >= 0:
                    e = i + len(marker)
                    return e, next(t for n, t in self.chunks if n >= e)
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    tail = self.text[-300:].replace("\n", " / ")
                    raise RuntimeError(f"no {marker!r} on the console ({'EOF' if self.eof else 'timeout'}): {tail}")
                self.cv.wait(left)


def launch(cmd, err_path):
    """(process, console, monotonic time of its execve): the time is taken in the child right
    before exec."""
    r, w = os.pipe()

    def stamp():
        os.write(w, repr(time.monotonic()).encode())

    with open(err_path, "w") as err:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                             start_new_session=True, preexec_fn=stamp)
    os.close(w)
    t_exec = float(os.read(r, 64))
    os.close(r)
    return p, Console(p), t_exec


def agent_go(path, con, touch_mb, deadline):
    """Waits for the probe, connects to its port, says go, waits until the memory is touched;
    returns (socket, seconds the touch took)."""
    import socket
    con.wait("touch_ready", max(1, deadline - time.monotonic()))
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot connect to {path}")
            time.sleep(0.1)
    t = time.monotonic()
    s.sendall(b"go\n")
    con.wait(f"touched_mb={touch_mb}", max(1, deadline - time.monotonic()))
    return s, time.monotonic() - t


def finish(p, *conns):
    """Closes the connections that were made, then kills p and its group."""
    for c in conns:
        if c:
            c.close()
    kill_group(p)


def alive(p, con, t_exec):
    """Writes a line to the serial input; seconds from exec to its echo."""
    p.stdin.write((ALIVE + "\n").encode())
    p.stdin.flush()
    return con.wait(ALIVE, GUARD)[1] - t_exec


def err_value(path, prefix, suffix):
    """The number between prefix and suffix on the first stderr line that has both."""
    for line in open(path):
        i = line.find(prefix)
        if i >= 0 and suffix in line[i + len(prefix):]:
            return float(line[i + len(prefix):].split(suffix)[0])
    raise RuntimeError(f"no '{prefix}' line in {os.path.basename(path)}: "
                       + open(path).read()[-300:].replace("\n", " / "))


class Kumo:
    name = "kumo"

    def __init__(self, kumo, kernel, initrd, tmp, mem_mb):
        self.kumo, self.kernel, self.initrd, self.tmp, self.mem = kumo, kernel, initrd, tmp, mem_mb
        self.dir = tempfile.mkdtemp(prefix="kumo-snap.", dir=SNAP_DIR)
        self.n = 0

    def common(self):
        self.n += 1
        self.ctl = os.path.join(self.tmp, f"ctl-{self.n}.sock")
        self.ag = os.path.join(self.tmp, f"agent-{self.n}.sock")
        return ["--mem", f"{self.mem}M", "--cpus", "1", "--control", self.ctl, "--agent-socket", self.ag]

    def snapshots(self, touch_mb, Agent):
        """Boots, touches, takes SNAPS snapshots: {"total": [ms], "paused": [ms], "bytes": [B]}
        and the touch time."""
        cmd = [self.kumo, "run", "-q", "--kernel", self.kernel, "--initrd", self.initrd,
               "--cmdline", guest_args(touch_mb)] + self.common()
        deadline = time.monotonic() + GUARD
        p, con, _ = launch(cmd, os.path.join(self.tmp, "kumo-boot.err"))
        out = {"total": [], "paused": [], "bytes": []}
        s = c = None
        try:
            s, t_touch = agent_go(self.ag, con, touch_mb, deadline)
            c = Agent(self.ctl, time.time() + GUARD)
            c.connect(timeout=30)
            for i in range(SNAPS):
                r = c.request("snapshot", {"dir": self.dir, "stop": i == SNAPS - 1}, timeout=GUARD)
                res = (r or {}).get("result")
                if not r or not r.get("ok", True) or not res:
                    raise RuntimeError(f"kumo snapshot: {r}")
                out["total"].append(res["total_ms"])
                out["paused"].append(res["paused_ms"])
                out["bytes"].append(res["memory_bytes"] + res["state_bytes"])
            if p.wait(timeout=60) != 0:
                raise RuntimeError(f"kumo exited {p.returncode} after snapshot stop=true")
            return out, t_touch
        finally:
            finish(p, c, s)

    def restore(self, lazy):
        """{"run": s exec → vCPUs start, "alive": s exec → echo, "restore": ms of vm_restore}."""
        cmd = [self.kumo, "run", "-v", "--restore", self.dir] + (["--restore-lazy"] if lazy else []) + self.common()
        err = os.path.join(self.tmp, "kumo-restore.err")
        p, con, t_exec = launch(cmd, err)
        try:
            t_alive = alive(p, con, t_exec)
        finally:
            kill_group(p)
        return {"run": err_value(err, "at CLOCK_MONOTONIC ", " s") - t_exec, "alive": t_alive,
                "restore": err_value(err, "restored from " + self.dir + " in ", " ms")}

    def cleanup(self):
        for f in ("state.fdt", "memory.raw"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, f))
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


class Qemu:
    name = "QEMU"

    def __init__(self, qemu_cmd, kernel, initrd, tmp, mem_mb):
        self.qemu_cmd, self.kernel, self.initrd, self.tmp, self.mem = qemu_cmd, kernel, initrd, tmp, mem_mb
        fd, self.file = tempfile.mkstemp(prefix="qemu-snap.", dir=SNAP_DIR)
        os.close(fd)
        self.n = 0

    def cmd(self, touch_mb, extra=()):
        self.n += 1
        self.qmp = os.path.join(self.tmp, f"qmp-{self.n}.sock")
        self.ag = os.path.join(self.tmp, f"qagent-{self.n}.sock")
        return self.qemu_cmd(self.kernel, self.initrd, guest_args(touch_mb), mem_mb=self.mem, accel="kvm", extra=[
            "-device", "virtio-serial-pci", "-chardev", f"socket,id=ag,path={self.ag},server=on,wait=off",
            "-device", "virtserialport,chardev=ag,name=org.kumo.agent",
            "-qmp", f"unix:{self.qmp},server=on,wait=off", *extra])

    def connect(self, Qmp):
        q = Qmp(self.qmp, time.time() + GUARD)
        q.connect(timeout=60)
        self.call(q, "qmp_capabilities")
        return q

    @staticmethod
    def call(q, verb, args=None):
        r = q.request(verb, args, timeout=GUARD)
        if not r or "error" in r:
            raise RuntimeError(f"QMP {verb}: {r}")
        return r.get("return")

    def snapshots(self, touch_mb, Qmp):
        self.touch_mb = touch_mb
        deadline = time.monotonic() + GUARD
        p, con, _ = launch(self.cmd(touch_mb), os.path.join(self.tmp, "qemu-boot.err"))
        out = {"total": [], "paused": [], "bytes": []}
        s = q = None
        try:
            s, t_touch = agent_go(self.ag, con, touch_mb, deadline)
            q = self.connect(Qmp)
            self.call(q, "migrate-set-parameters", {"max-bandwidth": 1 << 40})
            for i in range(SNAPS):
                if i:	# QEMU refuses to migrate a VM paused by a migration: run it again first
                    self.call(q, "cont")
                t0 = time.monotonic()
                self.call(q, "stop")
                self.call(q, "migrate", {"uri": f"exec:cat > {self.file}"})
                while True:
                    m = self.call(q, "query-migrate")
                    if m.get("status") in ("completed", "failed", "cancelled"):
                        break
                    if time.monotonic() > t0 + GUARD:
                        raise RuntimeError("QEMU migrate: not completed")
                    time.sleep(0.005)
                t1 = time.monotonic()
                if m["status"] != "completed":
                    raise RuntimeError(f"QEMU migrate: {m}")
                # total-time: QEMU's own figure (7.2 said 0 once for a 2 GiB idle guest)
                out["total"].append(m.get("total-time") or (t1 - t0) * 1e3)
                out["paused"].append((t1 - t0) * 1e3)
                out["bytes"].append(os.stat(self.file).st_blocks * 512)
            return out, t_touch
        finally:
            finish(p, q, s)

    def restore(self, Qmp):
        p, con, t_exec = launch(self.cmd(self.touch_mb, ["-incoming", f"exec:cat {self.file}"]),
                                os.path.join(self.tmp, "qemu-restore.err"))
        q = None
        try:
            q = self.connect(Qmp)
            end = time.monotonic() + GUARD
            while True:
                st = self.call(q, "query-status")["status"]
                if st == "running":
                    break
                if st != "inmigrate":
                    self.call(q, "cont")
                if time.monotonic() > end:
                    raise RuntimeError(f"QEMU restore: still {st}")
                time.sleep(0.002)
            t_run = time.monotonic() - t_exec
            return {"run": t_run, "alive": alive(p, con, t_exec)}
        finally:
            if q:
                q.close()
            kill_group(p)

    def cleanup(self):
        with contextlib.suppress(OSError):
            os.unlink(self.file)


def measure(mem_mb, frac, kumo, qemu_cmd, Agent, Qmp, kernel, initrd):
    touch_mb = max(1, int(mem_mb * frac))
    r = {"mem_mb": mem_mb, "touch_mb": touch_mb, "kumo": {}, "qemu": {}, "errors": []}
    with tempfile.TemporaryDirectory(prefix="kumo-bench-snap.") as tmp:
        k = Kumo(kumo, kernel, initrd, tmp, mem_mb)
        q = Qemu(qemu_cmd, kernel, initrd, tmp, mem_mb)
        try:
            try:
                r["kumo"]["snap"], r["kumo"]["touch_s"] = k.snapshots(touch_mb, Agent)
                for _ in range(RUNS):
                    for kind, lazy in (("eager", False), ("lazy", True)):
                        try:
                            for key, v in k.restore(lazy).items():
                                r["kumo"].setdefault(kind, {}).setdefault(key, []).append(v)
                        except RuntimeError as e:
                            r["errors"].append(f"kumo {kind} restore: {e}")
            except (RuntimeError, OSError, EOFError, KeyError, ValueError) as e:
                r["errors"].append(f"kumo: {type(e).__name__}: {e}")
            k.cleanup()
            try:
                r["qemu"]["snap"], r["qemu"]["touch_s"] = q.snapshots(touch_mb, Qmp)
                for _ in range(RUNS):
                    try:
                        for key, v in q.restore(Qmp).items():
                            r["qemu"].setdefault("restore", {}).setdefault(key, []).append(v)
                    except RuntimeError as e:
                        r["errors"].append(f"QEMU restore: {e}")
            except (RuntimeError, OSError, EOFError, KeyError, ValueError) as e:
                r["errors"].append(f"QEMU: {type(e).__name__}: {e}")
        finally:
            k.cleanup()
            q.cleanup()
    return r


def run_all(kumo, qemu_cmd, Agent, Qmp, kernel, initrd, save=None):
    """Every size and state; save(results) after each (a box that dies keeps what it had)."""
    res = []
    for mem in SIZES:
        for state, frac in STATES:
            t0 = time.monotonic()
            r = measure(mem, frac, kumo, qemu_cmd, Agent, Qmp, kernel, initrd)
            r["state"] = state
            res.append(r)
            print(f"bench: snapshot {mem} MiB {state} done in {time.monotonic() - t0:.0f} s"
                  + (f"; {len(r['errors'])} errors: {r['errors'][0][:200]}" if r["errors"] else ""), flush=True)
            if save:
                save(res)
    return res


# ------------------------------------------------------------------ the Markdown section
def med(xs, scale=1.0, digits=1, unit=""):
    xs = [x * scale for x in xs]
    m = f"{statistics.median(xs):,.{digits}f}{' ' + unit if unit else ''}"
    return m if len(xs) == 1 else f"{m} ({min(xs):,.{digits}f}–{max(xs):,.{digits}f})"


def get(d, *keys):
    for k in keys:
        d = (d or {}).get(k)
    return d


def cell_row(label, kv, qv, unit, scale=1.0, digits=1, extra=""):
    k = med(kv, scale, digits, unit) + extra if kv else "—"
    q = med(qv, scale, digits, unit) if qv else "—"
    ratio = f"{statistics.median(kv) / statistics.median(qv):.3g}" if kv and qv and statistics.median(qv) else "—"
    return f"| {label} | {k} | {q} | {ratio} |"


def section(results, env, qemu_ver, wall_s=None):
    L = [HEADING, "",
         f"kumo `snapshot` / `kumo run --restore [--restore-lazy]` beside QEMU {qemu_ver} `-accel kvm` "
         "`migrate \"exec:cat > FILE\"` / `-incoming \"exec:cat FILE\"`, same guest, same run "
         f"({'in the KVM box: every absolute time is TCG-scaled, the ratios are the result' if env.get('in_box') else 'on this host'}). "
         "Guest: the test kernel, 1 vCPU, kumo-probe as init touching N MiB (`" + guest_args("N") + "`) "
         "and holding it over its agent port; idle = 1 MiB touched. Medians with (min–max); "
         f"{SNAPS} snapshot(s) per boot, {RUNS} restore(s) of each kind (one figure: no range); ratio = kumo / QEMU (lower is better for kumo).",
         "",
         f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
         + (f" in a KVM box of {env['nproc']} vCPUs and {env['mem_mib']} MiB (box kernel {env['kernel']}, "
            f"QEMU {env['qemu']} TCG beneath)" if env.get("in_box") else "")
         + (f"; this section took {wall_s / 60:.1f} min" if wall_s else "") + ".", ""]
    zeros = 0
    for r in results:
        k, q = r["kumo"], r["qemu"]
        qs = q.get("snap")
        if qs and 0 in qs["total"]:	# runs from before the fallback in Qemu.snapshots
            zeros += qs["total"].count(0)
            qs["total"] = [t or p for t, p in zip(qs["total"], qs["paused"])]
        L += [f"### {r['mem_mb']} MiB, {r['state']} ({r['touch_mb']} MiB touched)", "",
              "| measurement | kumo | QEMU | ratio |", "|---|---|---|---|",
              cell_row("snapshot: the VMM's own time (kumo `total_ms`, QEMU `query-migrate` total-time)",
                       get(k, "snap", "total"), get(q, "snap", "total"), "ms"),
              cell_row("snapshot: vCPUs paused (kumo `paused_ms`; QEMU stopped from `stop` to completed)",
                       get(k, "snap", "paused"), get(q, "snap", "paused"), "ms"),
              cell_row("bytes written (kumo memory_bytes + state_bytes; QEMU the file's blocks)",
                       get(k, "snap", "bytes"), get(q, "snap", "bytes"), "MiB", 1 / (1 << 20)),
              cell_row("restore, eager: exec → vCPUs run (QEMU: exec → `query-status` running, after `cont`)",
                       get(k, "eager", "run"), get(q, "restore", "run"), "ms", 1e3,
                       extra=f"; vm_restore {med(get(k, 'eager', 'restore'), unit='ms')}" if get(k, "eager", "restore") else ""),
              cell_row("restore, lazy: exec → vCPUs run (QEMU as above)",
                       get(k, "lazy", "run"), get(q, "restore", "run"), "ms", 1e3,
                       extra=f"; vm_restore {med(get(k, 'lazy', 'restore'), unit='ms')}" if get(k, "lazy", "restore") else ""),
              cell_row("restore, eager: exec → guest alive (serial echo)",
                       get(k, "eager", "alive"), get(q, "restore", "alive"), "ms", 1e3),
              cell_row("restore, lazy: exec → guest alive (serial echo; QEMU as above)",
                       get(k, "lazy", "alive"), get(q, "restore", "alive"), "ms", 1e3)]
        if r["touch_mb"] > 1:
            L.append(cell_row(f"(before the snapshot: the guest's first touch of its {r['touch_mb']} MiB, "
                              "\"go\" → `touched_mb`)", [k["touch_s"]] if "touch_s" in k else None,
                              [q["touch_s"]] if "touch_s" in q else None, "s", digits=2))
        L.append("")
        if r["errors"]:
            L += [f"Failed steps (not counted): {'; '.join(e.replace('|', '/')[:240] for e in r['errors'])}", ""]
    done = {(r["mem_mb"], r["state"]) for r in results}
    missing = [f"{m} MiB {st}" for m in SIZES for st, _ in STATES if (m, st) not in done]
    if missing:
        L += [f"**Not measured in this run: {', '.join(missing)}** (the box ended before; "
              "the rows above are all it measured).", ""]
    if zeros:
        L += [f"QEMU's `query-migrate` said total-time 0 in {zeros} migration(s); there its time "
              "from `stop` to completed, measured by the host, stands in.", ""]
    L += goals(results)
    L += ["- Times: the snapshot rows are each VMM's own figure; kumo's includes `fsync` of both "
          "files, QEMU's `exec:cat` does not sync. Restore: from the VMM's execve (stamped in the "
          "child right before it) to kumo's `-v` line \"starting N vCPU(s) at CLOCK_MONOTONIC T\" "
          "(vmm/vm-run.c, just before the vCPU threads start and enter KVM_RUN), and to QEMU's first "
          "`query-status` (polled every 2 ms) saying running after `cont` (QEMU keeps a guest "
          "migrated while stopped paused). vm_restore = kumo's own \"restored from DIR in X ms\" "
          "(memory eager or lazily registered, vCPU, irqchip and device state). Alive: a line "
          "written to the serial input comes back as the guest tty's echo.",
          f"- Files in {SNAP_DIR} ({WHERE_BOX if env.get('in_box') else 'this host'}), "
          "page cache warm from the snapshot just taken; a restore's reads come from it.",
          f"- Run alone: `KUMO_BENCH_ONLY=snapshot make bench` (only this section is measured and "
          "replaced in this file); scale with BENCH_SNAP_SIZES, BENCH_SNAP_RUNS, BENCH_SNAP_SNAPS "
          "(tests/bench/snapshot.py). These figures: `"
          + " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                     if k.startswith("BENCH_SNAP_") or k == "KUMO_BENCH_ONLY") + " make bench`.",
          f"- Host load average over the last 15 minutes when this was written: {os.getloadavg()[2]:.1f} "
          f"on {os.cpu_count()} CPUs (the box alone keeps up to its vCPU count busy; more means other "
          "work ran beside it, which spreads the figures)."]
    return "\n".join(L) + "\n"


def goals(results):
    """The issue's two goals, said from the figures."""
    L = []
    lazy1g = [r for r in results if r["mem_mb"] == 1024 and get(r["kumo"], "lazy", "run")]
    if lazy1g:
        worst = max(statistics.median(get(r["kumo"], "lazy", "run")) for r in lazy1g) * 1e3
        each = "; ".join(f"{r['state']}: exec → vCPUs run {statistics.median(get(r['kumo'], 'lazy', 'run')) * 1e3:.0f} ms, "
                         f"of which vm_restore {statistics.median(get(r['kumo'], 'lazy', 'restore')):.1f} ms"
                         for r in lazy1g)
        L.append(f"- **Goal: lazy restore of a 1 GiB guest to its first instruction in under 20 ms of "
                 f"kumo's own time: {'holds' if worst < 20 else 'not met in the box'}** ({each}). "
                 "The rest of exec → vCPUs run is exec, dynamic linking and building the VM, which "
                 "the box's TCG scales as it does the main table's fresh-boot exec → first KVM_RUN; "
                 "whether it holds natively needs a VMX/SVM host.")
    by = {(r["mem_mb"], r["state"]): r for r in results}
    parts = []
    for mem in sorted({r["mem_mb"] for r in results}):
        i, t = by.get((mem, "idle")), by.get((mem, "50% touched"))
        bi, bt = get(i, "kumo", "snap", "bytes"), get(t, "kumo", "snap", "bytes")
        if bi:
            parts.append(f"{mem} MiB: idle {statistics.median(bi) / (1 << 20):.1f} MiB"
                         + (f", touched {statistics.median(bt) / (1 << 20):.1f} MiB for {t['touch_mb']} MiB "
                            "touched" if bt else ""))
    if parts:
        L.append("- **Goal: no byte written for untouched memory**: kumo's snapshot size follows what "
                 "the guest wrote, not its RAM (" + "; ".join(parts) + "). The idle size grows with "
                 "RAM about as much as what the guest kernel itself writes per page of RAM at boot "
                 "(its `struct page` array, 64 bytes per 4 KiB page: 16 MiB per GiB). QEMU reads every "
                 "page and writes a short record for each zero one.")
    return L
