"""Host-side helpers for the integration tests that drive a booting guest: PASS/FAIL lines,
following the console file, `kumo ctl` calls and a line exchange on the agent port.
Waits on conditions with a hang guard (KUMO_DRIVE_GUARD seconds); never asserts a time."""
import json, os, socket, subprocess, time

KUMO = os.environ.get("KUMO", "./kumo")
GUARD = float(os.environ.get("KUMO_DRIVE_GUARD", "900"))
T0 = time.time()


def say(ok, name, why=""):
    print(f"{'PASS' if ok else 'FAIL'}: {name}{' (' + why + ')' if why and not ok else ''}",
          flush=True)
    return ok


class Console:
    """The console file the guest writes, read again on every look."""

    def __init__(self, path):
        self.path = path

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
