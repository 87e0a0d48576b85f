#!/bin/sh
# Experiment (paper 001; not part of make check): cpuload in a priority VM against two
# background VMs, all busy, 1 vCPU each, on the box's 2 CPUs: the priority VM's throughput
# (cpuload int units/s) and its share of the three VMs' throughput, without a policy, then
# with kumo coord --policy cpu-priority (which lowers the last VM's priority while the host is
# loaded). Run in the box:
#   tests/box/box run --timeout 1200 -- sh tests/experiments/cpu-priority.sh
# Prints one line per condition and writes $OUT/exp-cpu-priority.csv.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm exp-cpu-priority
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
MEASURE_S=${MEASURE_S:-20}
WARM_S=${WARM_S:-80}
CSV=$OUT/exp-cpu-priority.csv
LOG=$OUT/exp-cpu-priority.jsonl
T=$(mktemp -d)
coord=
cleanup() {
	[ -n "$coord" ] && kill "$coord" 2>/dev/null
	for i in 1 2 3; do $KUMO ctl "$T/ctl$i.sock" quit > /dev/null 2>&1; done
	wait
	rm -rf "$T"
}
trap cleanup EXIT
rm -f "$LOG"

for i in 1 2 3; do
	$KUMO run --kernel "$KERNEL" --initrd "$KUMO_INITRD" --cpus 1 --mem 192M \
		--control "$T/ctl$i.sock" --agent \
		--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,agentd" \
		< /dev/null > "$OUT/exp-cpu-priority$i.console" 2>&1 &
	eval "pid$i=\$!"
done
agent_up() { $KUMO ctl "$T/ctl$1.sock" agent-stats 2>/dev/null | grep -q '"seq"'; }
i=0
until agent_up 1 && agent_up 2 && agent_up 3; do
	i=$((i + 1))
	[ $i -gt 600 ] && { echo "FAIL: exp-cpu-priority (agents not up)"; exit 0; }
	sleep 1
done

cpuload() { # vm seconds wait
	$KUMO ctl "$T/ctl$1.sock" agent verb=run timeout_ms=600000 \
		"args={\"name\":\"cpuload\",\"argv\":[\"threads=1\",\"seconds=$2\",\"kinds=int\"],\"wait\":$3}"
}
units() { sed -n 's/.*"int": *{[^}]*"units_per_s": *\([0-9]*\).*/\1/p' | head -n 1; }
nice_of() {
	for t in /proc/"$1"/task/*; do
		grep -q '^kumo-vcpu' "$t/comm" 2>/dev/null && sed 's/.*) //' "$t/stat" | cut -d' ' -f17
	done | head -n 1
}

# All three busy for the same seconds: each VM's int units/s, and the priority VM's share of
# the three (a ratio that does not move with the box's speed, which other boxes on the host
# change from one minute to the next).
measure() { # seconds -> "u1 u2 u3"
	w=
	for i in 1 2 3; do
		cpuload $i "$1" true | tr -d '\n ' | units > "$T/u$i" &
		w="$w $!"
	done
	wait $w	# these only: the VMMs and the coordinator are children too
	echo "$(cat "$T/u1") $(cat "$T/u2") $(cat "$T/u3")"
}
share() { awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { if (a + b + c) printf "%.3f", a / (a + b + c) }'; }

set -- $(measure "$MEASURE_S")
base="$1"; base_share=$(share "$@")
echo "without policy: int units/s priority VM $1, background $2 $3; priority share $base_share; nice $(nice_of $pid1) $(nice_of $pid2) $(nice_of $pid3); load $(cut -d' ' -f1 /proc/loadavg)"

# With cpu-priority: everything busy until the load is high and the policy has acted.
$KUMO coord --vm "$T/ctl1.sock" --vm "$T/ctl2.sock" --vm "$T/ctl3.sock" --policy cpu-priority \
	--log "$LOG" &
coord=$!
measure "$WARM_S" > /dev/null
set -- $(measure "$MEASURE_S")
with="$1"; with_share=$(share "$@")
echo "with cpu-priority: int units/s priority VM $1, background $2 $3; priority share $with_share; nice $(nice_of $pid1) $(nice_of $pid2) $(nice_of $pid3); load $(cut -d' ' -f1 /proc/loadavg); nice actions $(grep -c '"action":"nice"' "$LOG")"
kill $coord 2>/dev/null
wait $coord 2>/dev/null
coord=
echo "condition,priority_vm_int_units_per_s,priority_share" > "$CSV"
echo "none,${base:-},${base_share:-}" >> "$CSV"
echo "cpu-priority,${with:-},${with_share:-}" >> "$CSV"
if [ -n "$base_share" ] && [ -n "$with_share" ]; then
	echo "priority share with/without: $(awk -v a="$with_share" -v b="$base_share" 'BEGIN { printf "%.2f", a / b }') (paper: +16% UnixBench index)"
fi
