"""A client for kumo-agent's port (JSON lines each way, docs/guest.md): requests, replies,
events. Used by guest/agent-check.py (under QEMU) and tests/bench (under kumo); kumo's control
socket speaks the same shape, so tests/integration/hostlib.py's Control is one too."""
import json
import socket
import time


class Agent:
    def __init__(self, path, deadline):
        self.path = path
        self.deadline = deadline
        self.events = []
        self.replies = {}
        self.next_id = 1
        self.sock = None
        self.buf = b""

    def connect(self, timeout=60):
        end = time.time() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                self.sock = s
                self.buf = b""
                return
            except OSError:
                s.close()
                if time.time() > end:
                    raise
                time.sleep(0.2)

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def line(self, timeout):
        """One parsed JSON line, or None on timeout."""
        end = min(time.time() + timeout, self.deadline)
        while b"\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError("agent socket closed")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(raw)
        except ValueError:
            return {"unparsable": raw.decode("latin-1")}

    def send_raw(self, data):
        self.sock.sendall(data)

    def message(self, rid, verb, args):
        """A request as this protocol spells it (a subclass may speak another, e.g. QMP)."""
        msg = {"id": rid, "verb": verb}
        if args is not None:
            msg["args"] = args
        return msg

    def send(self, verb, args=None):
        """Sends a request without waiting; returns its id (for reply())."""
        rid = self.next_id
        self.next_id += 1
        self.send_raw((json.dumps(self.message(rid, verb, args)) + "\n").encode())
        return rid

    def _wait(self, want, timeout):
        """The first new line for which want(line) holds, or None; the others are kept:
        events in self.events, replies in self.replies."""
        end = time.time() + timeout
        while time.time() < end:
            m = self.line(end - time.time())
            if m is None:
                break
            if want(m):
                return m
            if "event" in m:
                self.events.append(m)
            elif "id" in m:
                self.replies[m["id"]] = m
        return None

    def reply(self, rid, timeout=60):
        """The reply to request rid, or None."""
        if rid in self.replies:
            return self.replies.pop(rid)
        return self._wait(lambda m: "event" not in m and m.get("id") == rid, timeout)

    def request(self, verb, args=None, timeout=60):
        return self.reply(self.send(verb, args), timeout)

    def wait_event(self, name, timeout):
        """The first event (kept or new) called name, or for which name(event) holds."""
        match = name if callable(name) else (lambda e: e.get("event") == name)
        for i, e in enumerate(self.events):
            if match(e):
                return self.events.pop(i)
        return self._wait(lambda m: "event" in m and match(m), timeout)

    def stats_for(self, seconds):
        """Every stats event that arrives within seconds (plus those already queued)."""
        out = [e for e in self.events if e.get("event") == "stats"]
        self.events = [e for e in self.events if e.get("event") != "stats"]
        end = time.time() + seconds
        while True:
            m = self._wait(lambda m: m.get("event") == "stats", end - time.time())
            if m is None:
                return out
            out.append(m)

    def run(self, name, argv, timeout=120):
        r = self.request("run", {"name": name, "argv": argv, "wait": True}, timeout)
        if not r or not r.get("ok"):
            return None, r
        return r["result"].get("result"), r
