#!/bin/sh
# One test-kernel boot with a 4-node virtual NUMA layout: asymmetric distances, a memory-less
# node 1 and a CPU-less node 3. Checks the guest kernel's log (SRAT/SLIT taken, nodes set up,
# no firmware-bug warnings), what guest userspace reads in sysfs (kumo-probe numa: CPU lists,
# MemTotal per node, distances, CPUID 0x40000001), the PV switches, and on the host the vCPU
# threads' affinity, run-time pinning over the control socket and the topology verb.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm numa-boots
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=$KUMO_INITRD
CON=$OUT/numa-test.console
ERR=$OUT/numa-test.stderr
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -f "$CON"

timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" \
	--cpus 4 --mem 1G \
	--numa node=0,cpus=0-1,mem=512M,host-node=0 --numa node=1,cpus=2,mem=0 \
	--numa node=2,cpus=3,mem=256M,host-node=0 --numa node=3,mem=256M \
	--numa-distance 0:1=21 --numa-distance 1:0=31 --numa-distance 0:2=16 \
	--numa-distance 2:3=40 \
	--cpu-pin 0=0,1=1,2=0,3=1 --pv pv-unhalt=off,pv-ipi=off,halt-poll-ns=0 \
	--agent-socket "$T/agent.sock" --control "$T/ctl.sock" \
	--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=numa,agent,poweroff" \
	< /dev/null > "$CON" 2> "$ERR" &
kumo_pid=$!
python3 tests/integration/numa-host.py "$CON" "$T/ctl.sock" "$T/agent.sock" $kumo_pid \
	"0 1 0 1"
wait $kumo_pid
rc=$?
grep -E 'after .* s \(exit status' "$ERR"
check numa-boot-poweroff-exit-0 [ $rc -eq 0 ]

# The guest kernel took every node from the SRAT, in our numbering.
expect numa-srat-cpu-node0 "$CON" 'SRAT: PXM 0 -> APIC 0x01 -> Node 0'
expect numa-srat-cpu-node1 "$CON" 'SRAT: PXM 1 -> APIC 0x02 -> Node 1'
expect numa-srat-cpu-node2 "$CON" 'SRAT: PXM 2 -> APIC 0x04 -> Node 2'
expect numa-srat-mem-node0 "$CON" 'SRAT: Node 0 PXM 0 \[mem 0x00000000-0x1fffffff\]'
expect numa-srat-mem-node2 "$CON" 'SRAT: Node 2 PXM 2 \[mem 0x20000000-0x2fffffff\]'
expect numa-srat-mem-node3 "$CON" 'SRAT: Node 3 PXM 3 \[mem 0x30000000-0x3fffffff\]'
expect numa-memoryless-node1 "$CON" 'Initializing node 1 as memoryless'
expect numa-four-nodes-up "$CON" 'smp: Brought up 4 nodes, 4 CPUs'
expect numa-fallback-uses-slit "$CON" 'Fallback order for Node 0: 0 2 3'
expect_not numa-no-firmware-bug "$CON" 'Firmware Bug|FW_BUG|not on the same node|SRAT: .*ignored|SLIT.*invalid|NUMA: Warning|WARNING:'
expect_not numa-no-numa-off "$CON" 'No NUMA configuration found|Faking a node'
# PV switches of this boot: pv-unhalt off leaves PV spinlocks without host support;
# pv-ipi off: no PV IPIs (the default boot in test-boot.sh has them).
expect numa-pv-unhalt-off "$CON" 'PV spinlocks disabled, no host support'
expect_not numa-pv-ipi-off "$CON" 'setup PV IPIs'

# What guest userspace sees in sysfs equals the configuration.
expect numa-guest-online "$CON" 'KUMO-CHECK numa_online=0-3'
expect numa-guest-node0-cpus "$CON" 'KUMO-CHECK node0_cpulist=0-1[[:cntrl:]]*$'
expect numa-guest-node1-cpus "$CON" 'KUMO-CHECK node1_cpulist=2[[:cntrl:]]*$'
expect numa-guest-node2-cpus "$CON" 'KUMO-CHECK node2_cpulist=3[[:cntrl:]]*$'
expect numa-guest-node3-cpus "$CON" 'KUMO-CHECK node3_cpulist=[[:cntrl:]]*$'
expect numa-guest-dist0 "$CON" 'KUMO-CHECK node0_distance=10 21 16 20[[:cntrl:]]*$'
expect numa-guest-dist1 "$CON" 'KUMO-CHECK node1_distance=31 10 20 20[[:cntrl:]]*$'
expect numa-guest-dist2 "$CON" 'KUMO-CHECK node2_distance=16 20 10 40[[:cntrl:]]*$'
expect numa-guest-dist3 "$CON" 'KUMO-CHECK node3_distance=20 20 40 10[[:cntrl:]]*$'
# MemTotal per node within 5% of the node's size (the kernel keeps some for itself).
memnode() { tr -d '\r' < "$CON" | sed -n "s/^KUMO-CHECK node$1_memtotal_kb=//p" | head -1; }
within() { # name, got_kb, want_mib
	if [ -n "$2" ] && [ "$2" -le $(($3 * 1024)) ] && [ "$2" -ge $(($3 * 1024 * 95 / 100)) ]; then
		pass "$1"
	else
		fail "$1" "MemTotal ${2:-?} kB, want ~$3 MiB"
	fi
}
within numa-guest-node0-mem "$(memnode 0)" 512
within numa-guest-node2-mem "$(memnode 2)" 256
within numa-guest-node3-mem "$(memnode 3)" 256
check numa-guest-node1-no-mem [ "$(memnode 1)" = 0 ]
