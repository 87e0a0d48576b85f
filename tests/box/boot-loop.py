#!/usr/bin/env python3
"""Boots one kumo command line over and over and looks closely at a boot that gets stuck:
for chasing a guest hang that shows once in many boots (docs/box.md, "Nested guests").

  tests/box/boot-loop.py [-n RUNS] [--stuck S] [--vmlinux FILE] OUTDIR -- KUMO_RUN_ARGS...

Each run starts `kumo run KUMO_RUN_ARGS --control SOCK` with its console to OUTDIR/run-N.console.
A run is stuck when kumo still runs and its console has not grown for S seconds (default 120):
then the VM is snapshotted (`snapshot dir=OUTDIR/run-N.snap stop=true`) and every vCPU's RIP,
RFLAGS, MP state and pending event is printed, with the guest symbol when --vmlinux is given
(nm). Prints one line per run and a last "boot-loop: N runs, N powered off, N stuck, N other".
"""
import argparse, os, struct, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from hostlib import ctl  # noqa: E402

FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
MP_STATES = {0: "runnable", 1: "uninitialized", 2: "init-received", 3: "halted",
             4: "sipi-received", 5: "stopped"}


def fdt_nodes(blob):
    """{path: {property: bytes}} of a flattened device tree (checked as it is read)."""
    if len(blob) < 40 or struct.unpack(">I", blob[:4])[0] != 0xd00dfeed:
        raise ValueError("not an FDT")
    off_struct, off_strings = struct.unpack(">II", blob[8:16])
    nodes, path, at = {}, [], off_struct
    while at + 4 <= len(blob):
        tag = struct.unpack(">I", blob[at:at + 4])[0]
        at += 4
        if tag == FDT_BEGIN_NODE:
            end = blob.index(b"\0", at)
            path.append(blob[at:end].decode())
            nodes["/".join(path)] = {}
            at = (end + 4) & ~3
        elif tag == FDT_END_NODE:
            path.pop()
        elif tag == FDT_PROP:
            ln, name_off = struct.unpack(">II", blob[at:at + 8])
            name = blob[off_strings + name_off:blob.index(b"\0", off_strings + name_off)].decode()
            nodes["/".join(path)][name] = blob[at + 8:at + 8 + ln]
            at = (at + 8 + ln + 3) & ~3
        elif tag == FDT_END:
            break
        elif tag != FDT_NOP:
            raise ValueError(f"bad FDT tag {tag}")
    return nodes


def symbolizer(vmlinux):
    """addr -> "symbol+0xoff" from the guest kernel's symbol table (nm -n), or hex alone."""
    syms = []
    if vmlinux:
        out = subprocess.run(["nm", "-n", vmlinux], capture_output=True, text=True).stdout
        for line in out.split("\n"):
            f = line.split()
            if len(f) == 3 and f[1] in "tTwW":
                syms.append((int(f[0], 16), f[2]))

    def name(addr):
        best = None
        for a, s in syms:
            if a > addr:
                break
            best = (a, s)
        return f"{addr:#x} {best[1]}+{addr - best[0]:#x}" if best else f"{addr:#x}"
    return name


def vcpu_report(snap, sym):
    nodes = fdt_nodes(open(os.path.join(snap, "state.fdt"), "rb").read())
    lines = []
    for path in sorted(p for p in nodes if p.split("/")[-1].startswith("vcpu@")):
        props = nodes[path]
        regs = struct.unpack("<18Q", props["regs"][:144])
        mp = struct.unpack(">I", props["mp-state"])[0]
        ev = props.get("events", b"")
        # struct kvm_vcpu_events: exception (injected, nr, has_error_code, pending), then
        # interrupt (injected, nr, soft, shadow), nmi (injected, pending, masked, pad)
        pend = f"exception {ev[0]}/{ev[1]}/{ev[3]} irq {ev[8]}/{ev[9]} nmi {ev[12]}/{ev[13]}" \
            if len(ev) >= 16 else "?"
        lines.append(f"  {path.split('/')[-1]}: rip {sym(regs[16])} rflags {regs[17]:#x} "
                     f"(IF={regs[17] >> 9 & 1}) rsp {regs[6]:#x} mp-state "
                     f"{MP_STATES.get(mp, mp)} events(injected/nr/pending) {pend}")
    return lines


def one(i, args, sym):
    con = os.path.join(args.outdir, f"run-{i}.console")
    err = os.path.join(args.outdir, f"run-{i}.stderr")
    sock = os.path.join(args.outdir, f"run-{i}.ctl")
    p = subprocess.Popen([args.kumo, "run", *args.run, "--control", sock],
                         stdin=subprocess.DEVNULL, stdout=open(con, "w"), stderr=open(err, "w"))
    size, since, t0 = -1, time.time(), time.time()
    while p.poll() is None:
        time.sleep(1)
        now = os.path.getsize(con)
        if now != size:
            size, since = now, time.time()
        elif time.time() - since > args.stuck:
            last = [l for l in open(con, errors="replace").read().split("\n") if l.strip()]
            print(f"run {i}: STUCK after {time.time() - t0:.0f} s, console still for "
                  f"{args.stuck} s at: {last[-1][:120] if last else '(empty)'}", flush=True)
            snap = os.path.join(args.outdir, f"run-{i}.snap")
            try:
                ctl(sock, "snapshot", dir=snap, stop="true")
                p.wait(60)
                print("\n".join(vcpu_report(snap, sym)), flush=True)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"  no snapshot: {e}", flush=True)
            p.kill()
            p.wait()
            return "stuck"
    print(f"run {i}: exit {p.returncode} after {time.time() - t0:.0f} s", flush=True)
    return "off" if p.returncode == 0 else "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--stuck", type=float, default=120)
    ap.add_argument("--vmlinux")
    ap.add_argument("--kumo", default=os.environ.get("KUMO", "./kumo"))
    ap.add_argument("outdir")
    ap.add_argument("run", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    args.run = [a for a in args.run if a != "--"] if args.run[:1] == ["--"] else args.run
    os.makedirs(args.outdir, exist_ok=True)
    sym = symbolizer(args.vmlinux)
    res = [one(i, args, sym) for i in range(args.n)]
    print(f"boot-loop: {len(res)} runs, {res.count('off')} powered off, {res.count('stuck')} "
          f"stuck, {res.count('other')} other", flush=True)


main()
