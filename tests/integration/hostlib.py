"""Host-side helpers for the integration tests that drive a booting guest: PASS/FAIL lines,
following the console file, `kumo ctl` calls and a line exchange on the agent port.
Waits on conditions with a hang guard (KUMO_DRIVE_GUARD seconds); never asserts a time."""
import json, os, re, signal, socket, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "guest"))
from agentlib import Agent  # noqa: E402  (guest/agentlib.py)

KUMO = os.environ.get("KUMO", "./kumo")
GUARD = float(os.environ.get("KUMO_DRIVE_GUARD", "900"))
T0 = time.time()


def say(ok, name, why=""):
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' (' + why + ')' if why else ''}", flush=True)
    return ok


# A guest kernel that reported one of these will not get anywhere: a wait ends there.
GUEST_CRASH = re.compile(r"^(BUG: |Oops: |Kernel panic - not syncing|traps: PANIC: double fault)")


def alive(pid):
    """Whether process pid still runs (a zombie does not)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Console:
    """The console file the guest writes, read again on every look; with the VMM's pid (or
    its `timeout`'s), a wait ends when the VMM does instead of at the guard; and it ends when
    the guest kernel reports a crash (GUEST_CRASH), stopping that VMM (SIGTERM)."""

    def __init__(self, path, pid=None):
        self.path = path
        self.pid = pid

    def why(self):
        """Where the guest got to, for a FAIL line: the VMM running or gone, the last line."""
        last = [l for l in self.lines() if l.strip()]
        st = "" if self.pid is None else ("VMM running; " if alive(self.pid) else "VMM gone; ")
        crash = [l for l in last if GUEST_CRASH.match(l)]
        if crash:
            st += f"the guest kernel reported \"{crash[0][:120]}\"; "
        return f"{st}console's last line: {last[-1][:160] if last else '(empty)'}"

    def lines(self):
        try:
            return open(self.path, errors="replace").read().replace("\r", "").split("\n")
        except FileNotFoundError:
            return []

    def wait_line(self, prefix, count=1):
        """The count-th line starting with prefix, or None at the guard or the probe's end."""
        while time.time() - T0 < GUARD:
            ls = self.lines()
            hits = [l for l in ls if l.startswith(prefix)]
            if len(hits) >= count:
                return hits[count - 1]
            if any(l.startswith("KUMO-CHECK done") for l in ls):
                return None
            if self.pid is not None and not alive(self.pid):
                return None
            if any(GUEST_CRASH.match(l) for l in ls):
                if self.pid is not None and alive(self.pid):
                    os.kill(self.pid, signal.SIGTERM)	# the script's `wait` for the VMM ends too
                return None
            time.sleep(0.5)
        return None


def ctl(ctl_path, verb, **args):
    """`kumo ctl PATH VERB k=v...`: the result object, or RuntimeError with kumo's words."""
    argv = [KUMO, "ctl", ctl_path, verb] + [f"{k}={v}" for k, v in args.items()]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"kumo ctl {verb}: {r.stdout}{r.stderr}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def agent_send(agent_path, text):
    """Send text on the agent port and go away."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(agent_path)
    s.sendall(text.encode())
    time.sleep(0.5)  # let the device take the bytes before the client goes away
    s.close()


def agent_roundtrip(agent_path, token):
    """Send one line, return the line that comes back (the probe answers "echo: LINE")."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(agent_path)
    s.settimeout(GUARD)
    s.sendall((token + "\n").encode())
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        got += chunk
    s.close()
    return got.decode(errors="replace")


def kumo_pid(pid, comm="kumo"):
    """pid itself if its command is comm, else its child that is (timeout runs the VMM as a
    child). comm "qemu-system-x86" finds QEMU."""
    for _ in range(100):
        if open(f"/proc/{pid}/comm").read().strip() == comm:
            return pid
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    stat = open(f"/proc/{p}/stat").read()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[1]) == pid and f"({comm})" in stat:
                    return int(p)
        time.sleep(0.1)
    return pid


def vcpu_threads(pid, pattern=r"kumo-vcpu(\d+)$"):
    """{vCPU index: thread id} of the VMM's vCPU threads: kumo's kumo-vcpuN, or with
    pattern r"CPU (\d+)/TCG$" QEMU's (started with -name ...,debug-threads=on)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        except OSError:
            continue
        m = re.match(pattern, comm)
        if m:
            out[int(m.group(1))] = int(tid)
    return out


def thread_cpu_s(pid, tid):
    """Host CPU time (user + system, seconds) a thread has used."""
    stat = open(f"/proc/{pid}/task/{tid}/stat").read()
    f = stat[stat.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Control(Agent):
    """One connection to a kumo control socket (same JSON-lines shape as the agent's port):
    requests by id, events kept as they come, and the agent verb through kumo's relay."""

    def __init__(self, path):
        super().__init__(path, T0 + GUARD)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.last = None

    def agent(self, verb, args=None, timeout=60):
        """The agent's result for verb, or None; the whole reply goes to self.last."""
        self.last = self.request("agent", {"verb": verb, "args": args or {},
                                           "timeout_ms": int(timeout * 1000)}, timeout + 5)
        return self.last["result"] if self.last and self.last.get("ok") else None


# ---- a guest with kumo-agent, driven through the control socket's agent verb ----
# sh -c SCRIPT CMD: CMD's output (quotes dropped, blanks squeezed) and status as a result line.
SHJSON = (r'''o=$(eval "$0" 2>&1);r=$?;printf '{"workload":"sh","rc":%d,"out":"%s"}\n' $r '''
          r'''"$(echo $o|tr -d '"\\')"''')
# sh -c SCRIPT NAME ARGS...: NAME in the background, its stdout and status kept in /run.
BG = 'X=$0;$X "$@" >/run/$X.out;echo $? >/run/$X.rc'
COLLECT = 'while [ ! -e /run/$0.rc ];do sleep 0.2;done;cat /run/$0.out;exit $(cat /run/$0.rc)'


def connect(path, p, timeout=180):
    """A control connection to path once the VMM p listens, or None if it ended first."""
    end = time.time() + timeout
    while time.time() < end and p.poll() is None:
        try:
            return Control(path)
        except OSError:
            time.sleep(0.2)
    return None


def agent_up(c, timeout=300):
    """Waits until the relay holds the agent port and the agent answers a ping."""
    end = time.time() + timeout
    while time.time() < end:
        left = max(1, min(10, end - time.time()))
        s = c.request("agent-stats", timeout=left)
        if s and s.get("ok") and s["result"].get("connected") and c.agent("ping", timeout=left):
            return True
        time.sleep(0.5)
    return False


def sh(c, cmd, timeout=120):
    """cmd (at most 127 bytes) through the guest's sh: (status, output) or (None, None)."""
    assert len(cmd) < 128, cmd
    r = c.agent("run", {"name": "sh", "argv": ["-c", SHJSON, cmd], "wait": True}, timeout)
    res = (r or {}).get("result") or {}
    return res.get("rc"), res.get("out")


def bg(c, name, argv):
    r = c.agent("run", {"name": "sh", "argv": ["-c", BG, name] + argv, "wait": False})
    return bool(r and r.get("pid"))


def collect(c, name, timeout=300):
    """NAME's exit status and result line, once it has ended."""
    r = c.agent("run", {"name": "sh", "argv": ["-c", COLLECT, name], "wait": True}, timeout)
    return (r.get("exit"), r.get("result") or {}) if r else (None, {})


def count_lines(c, name, word):
    rc, out = sh(c, f"grep -c {word} /run/{name}.out")
    return int(out) if rc == 0 and out and out.isdigit() else 0


def mono(c):
    """(guest CLOCK_MONOTONIC ms from the agent's ping, host time s at the ping)."""
    h0 = time.time()
    r = c.agent("ping")
    return (r or {}).get("uptime_ms"), (h0 + time.time()) / 2


def wall(c):
    """(guest realtime s from date, host time s before, host time s after)."""
    h0 = time.time()
    rc, out = sh(c, "date +%s")
    return int(out) if rc == 0 and out and out.isdigit() else None, h0, time.time()


