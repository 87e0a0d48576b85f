#!/usr/bin/env python3
"""Host side of the vNUMA boot (tests/integration/test-numa.sh).

  numa-host.py CONSOLE CONTROL_SOCKET AGENT_SOCKET PID "P0 P1 ..."

PID is the kumo process or its parent (timeout). While kumo-probe waits on the agent port:
each kumo-vcpuN thread must be allowed exactly host CPU PN (--cpu-pin), `vcpu-pin` must move
vCPU 0 at run time, `topology` must describe the layout, and the CPUID 0x40000001 EAX the
guest read must equal what kumo says it gave (with the PV features turned off cleared). Then
one agent line lets the probe go on to power off.
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostlib import Console, agent_roundtrip, ctl, kumo_pid, say, vcpu_threads  # noqa: E402

con, ctl_path, agent_path, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pins = [int(p) for p in sys.argv[5].split()]
console = Console(con, pid)
KVM_FEATURE_PV_UNHALT, KVM_FEATURE_PV_SEND_IPI = 7, 11


if not console.wait_line("KUMO-CHECK agent_port="):
    say(False, "numa-host-probe-waits", "the probe never reached its agent step; " + console.why())
    sys.exit(0)
pid = kumo_pid(pid)
threads = vcpu_threads(pid)
say(sorted(threads) == list(range(len(pins))), "numa-vcpu-threads-named",
    f"threads {sorted(threads)}")
for v, p in enumerate(pins):
    got = os.sched_getaffinity(threads[v]) if v in threads else set()
    say(got == {p}, f"numa-vcpu{v}-pinned", f"allowed {sorted(got)}, want [{p}]")

# Run-time pinning through the control socket.
try:
    r = ctl(ctl_path, "vcpu-pin", vcpu=0, cpus=pins[1])
    say(r.get("host_cpus") == str(pins[1]), "numa-ctl-vcpu-pin-reply", str(r))
    got = os.sched_getaffinity(threads[0])
    say(got == {pins[1]}, "numa-ctl-vcpu-pin-applied", f"allowed {sorted(got)}")
    r = ctl(ctl_path, "vcpu-pin", vcpu=0, cpus=f"{pins[0]}")
    say(os.sched_getaffinity(threads[0]) == {pins[0]}, "numa-ctl-vcpu-pin-back")
    try:
        ctl(ctl_path, "vcpu-pin", vcpu=9, cpus=0)
        say(False, "numa-ctl-vcpu-pin-bad-vcpu", "accepted vCPU 9")
    except RuntimeError as e:
        say("vCPUs 0 to 3" in str(e), "numa-ctl-vcpu-pin-bad-vcpu", str(e))
    topo = ctl(ctl_path, "topology")
    nodes = topo.get("nodes", [])
    say([n["vcpus"] for n in nodes] == ["0-1", "2", "3", ""], "numa-ctl-topology-vcpus",
        str([n.get("vcpus") for n in nodes]))
    say([n["memory_bytes"] >> 20 for n in nodes] == [512, 0, 256, 256],
        "numa-ctl-topology-memory")
    say(nodes and nodes[1]["distances"] == [31, 10, 20, 20], "numa-ctl-topology-distances",
        str(nodes[1]["distances"] if nodes else None))
    pv = topo.get("kvm_pv_features", -1)
    say(pv >= 0 and not pv & (1 << KVM_FEATURE_PV_UNHALT) and not pv & (1 << KVM_FEATURE_PV_SEND_IPI),
        "numa-pv-bits-cleared", hex(pv))
    line = console.wait_line("KUMO-CHECK kvm_pv_eax=")
    guest = int(line.split("=", 1)[1], 16) if line else -1
    say(guest == pv, "numa-guest-sees-pv-bits", f"guest {hex(guest)}, kumo {hex(pv)}")
except (RuntimeError, KeyError, ValueError) as e:
    say(False, "numa-ctl", str(e))

got = agent_roundtrip(agent_path, "numa-done")
say(got == "echo: numa-done\n", "numa-agent-release", repr(got))
