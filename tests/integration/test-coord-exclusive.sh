#!/bin/sh
# kumo coord --policy exclusive (paper 004) in a 4-CPU box: two test-kernel guests with 4 vCPUs
# each (the host's CPU count: vCPU c runs on pCPU c) and their agents. First an equal split
# (2 + 2 pCPUs, the other vCPUs parked through the agents); then cpuload in the first guest
# moves the boundary (3 + 1). Checked: every pin and park the VMMs and agents took, the vCPU
# threads' affinity disjoint between the VMs at the end and inside each share, the parked
# guest CPUs as the agent reports them; reported: time from each decision to its last action.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm coord-exclusive
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
LOG=$OUT/coord-exclusive.jsonl
T=$(mktemp -d)
cleanup() {
	for i in 1 2; do
		$KUMO ctl "$T/ctl$i.sock" quit > /dev/null 2>&1
	done
	wait
	rm -rf "$T"
}
trap cleanup EXIT
rm -f "$LOG"
n=$(nproc)
if [ "$n" -lt 3 ] || [ "$n" -gt 64 ]; then
	echo "SKIP: coord-exclusive (needs 3..64 host CPUs, has $n: tests/box/box run --cpus 4)"
	exit 0
fi

for i in 1 2; do
	$KUMO run --kernel "$KERNEL" --initrd "$KUMO_INITRD" --cpus "$n" --mem 256M \
		--control "$T/ctl$i.sock" --agent \
		--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,agentd" \
		< /dev/null > "$OUT/coord-exclusive$i.console" 2>&1 &
	eval "pid$i=\$!"
done
agent_up() { $KUMO ctl "$T/ctl$1.sock" agent-stats 2>/dev/null | grep -q '"seq"'; }
i=0
until agent_up 1 && agent_up 2; do
	i=$((i + 1))
	[ $i -gt 600 ] && break
	sleep 1
done
agents_up() { agent_up 1 && agent_up 2; }
check coord-exclusive-agents-up agents_up
agents_up || exit 0

$KUMO coord --vm "$T/ctl1.sock" --vm "$T/ctl2.sock" --policy exclusive --log "$LOG" \
	--duration 50 &
coord=$!
sleep 12
# Busy the first guest on every CPU it may use (cpuload's threads follow its cpuset).
$KUMO ctl "$T/ctl1.sock" agent verb=run \
	"args={\"name\":\"cpuload\",\"argv\":[\"threads=$n\",\"seconds=30\",\"kinds=int\"]}" \
	> "$T/run" 2>&1
cat "$T/run"
wait $coord
check coord-exclusive-exit-0 [ $? -eq 0 ]

# Affinity of every vCPU thread of a VMM, as a CPU mask.
mask_of() { # pid
	m=0
	for t in /proc/"$1"/task/*; do
		grep -q '^kumo-vcpu' "$t/comm" 2>/dev/null || continue
		l=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$t/status")
		for r in $(echo "$l" | tr ',' ' '); do
			a=${r%-*}; b=${r#*-}
			while [ "$a" -le "$b" ]; do m=$((m | (1 << a))); a=$((a + 1)); done
		done
	done
	echo $m
}
m1=$(mask_of $pid1)
m2=$(mask_of $pid2)
echo "vCPU thread affinity masks: vm1 $m1, vm2 $m2"
for i in 1 2; do
	$KUMO ctl "$T/ctl$i.sock" agent verb=ping > "$T/ping$i" 2>&1
	echo "vm$i agent: $(grep -E '"(allowed|parked)"' "$T/ping$i" | tr -d ' \n')"
done
grep '"policy":"exclusive"' "$LOG" | grep '"type":"policy"'
expect coord-exclusive-pin-ok "$LOG" '"action":"pin".*"ok":true'
expect coord-exclusive-park-ok "$LOG" '"action":"park".*"ok":true'
# The VMM's pinning never fails; an agent slow to answer in the box may, and is retried.
expect_not coord-exclusive-no-failed-pin "$LOG" '"action":"pin".*"ok":false'
grep '"type":"action".*"ok":false' "$LOG" | cut -c1-240
expect coord-exclusive-equal-split "$LOG" '"msg":"share [^"]*\(2 pCPUs'
expect coord-exclusive-shift "$LOG" '"msg":"share [^"]*\(3 pCPUs'
check coord-exclusive-disjoint [ $((m1 & m2)) -eq 0 ]
check coord-exclusive-vm1-grew [ "$m1" -eq 7 ]
check coord-exclusive-vm2-shrank [ "$m2" -eq 8 ]
check coord-exclusive-vm2-parked grep -q '"parked": *"0-2"' "$T/ping2"
# From each decision (its policy line) to the last pin/park action that followed it.
awk '
/"type":"policy".*"policy":"exclusive".*"msg":"share/ {
	if (t0 != "") printf "re-assignment: %.0f ms from decision to last action\n", (last - t0) * 1000
	match($0, /"ts":[0-9.]+/); t0 = substr($0, RSTART + 5, RLENGTH - 5); last = t0
}
/"type":"action".*"policy":"exclusive"/ { match($0, /"ts":[0-9.]+/); last = substr($0, RSTART + 5, RLENGTH - 5) }
END { if (t0 != "") printf "re-assignment: %.0f ms from decision to last action\n", (last - t0) * 1000 }
' "$LOG"
