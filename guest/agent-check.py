#!/usr/bin/env python3
"""Checks kumo-agent's port behaviour in a guest under QEMU TCG (part of guest/check-qemu.sh).

Boots the test kernel with kumo-probe as init (info, data, agentd: mounts the data disk on
/data and execs kumo-agent), the agent's virtio-console port on a Unix socket, the data disk
as virtio-blk (snapshot=on: the image is not modified), then talks to the agent on the socket
(see checks()) and prints PASS:/FAIL: lines. Exit status 1 when anything failed.

usage: agent-check.py KERNEL INITRD DATA_DISK LOG [TIMEOUT_S]
Results are named agent-qemu-* (KUMO_AGENT_CHECK_NAME sets the prefix).
"""
import os
import subprocess
import sys
import tempfile
import time

from agentlib import Agent

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
NAME = os.environ.get("KUMO_AGENT_CHECK_NAME", "agent-qemu")  # the results' prefix
failed = 0


def result(ok, name, detail=""):
    global failed
    print("%s: %s-%s%s" % ("PASS" if ok else "FAIL", NAME, name,
                           (" (" + detail + ")") if detail else ""), flush=True)
    if not ok:
        failed = 1
    return ok


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
        result(False, "connection", str(e))
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
    """What only a client on the port itself can check: the agent's greeting, its answers to
    malformed requests, surviving the host side going away, poweroff. The stats, every
    workload and park-cpus are checked through kumo's relay by
    tests/integration/test-agent-qemu.sh (agent-host.py), which make guest-check runs too."""
    agent.connect()
    hello = agent.wait_event("hello", 150)
    if not result(hello is not None, "hello", "no hello event" if hello is None else
                  "port %s" % hello["data"].get("port")):
        return
    r = agent.request("ping")
    result(bool(r and r.get("ok") and r["result"].get("pong")), "ping", str(r))
    agent.send_raw(b'this is not json\n{"id":"x","verb":"nosuch"}\n{"id":"y","verb":"run",'
                   b'"args":{"name":"../sbin/kumo-agent"}}\n')
    bad = [agent.reply(i, 20) for i in (None, "x", "y")]
    result(all(b and b.get("ok") is False for b in bad), "bad-requests",
           " / ".join(str(b) for b in bad))

    # The host side goes away and comes back: the agent says hello again and keeps reporting.
    agent.close()
    agent.events = []
    time.sleep(1.5)
    agent.connect()
    hello = agent.wait_event("hello", 20)
    st = [s for s in agent.stats_for(2.5) if hello and s["ts"] >= hello["ts"]]
    result(hello is not None and len(st) >= 2, "reconnect",
           "hello %s, %d fresh stats after reconnecting" % (hello is not None, len(st)))

    r = agent.request("poweroff", timeout=20)
    result(bool(r and r.get("ok")), "poweroff", str(r))


if __name__ == "__main__":
    sys.exit(main())
