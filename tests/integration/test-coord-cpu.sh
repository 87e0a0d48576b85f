#!/bin/sh
# kumo coord --policy cpu-priority / cpu-weight (paper 001) against two small test-kernel
# guests while host burners keep load1 above 90% of the CPUs: the coordinator lowers the
# priority of the second (lowest-priority) VM step by step: the nice of its vCPU threads, read
# from /proc/PID/task/*/stat, goes up while the first VM's stays 0; with each VMM in a cgroup
# of its own, cpu-weight lowers the second one's cpu.weight below 100.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm coord-cpu
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
LOG=$OUT/coord-cpu.jsonl
WLOG=$OUT/coord-cpu-weight.jsonl
T=$(mktemp -d)
burners=
cleanup() {
	for p in $burners; do kill "$p" 2>/dev/null; done
	for i in 1 2; do
		$KUMO ctl "$T/ctl$i.sock" quit > /dev/null 2>&1
	done
	wait
	rmdir /sys/fs/cgroup/kumo-coord-cpu1 /sys/fs/cgroup/kumo-coord-cpu2 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
rm -f "$LOG" "$WLOG"

for i in 1 2; do
	$KUMO run --kernel "$KERNEL" --initrd "$KUMO_INITRD" --cpus 1 --mem 128M \
		--control "$T/ctl$i.sock" --cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info" \
		< /dev/null > "$OUT/coord-cpu$i.console" 2>&1 &
	eval "pid$i=\$!"
done
up() { $KUMO ctl "$T/ctl$1.sock" stats > /dev/null 2>&1; }
i=0
until up 1 && up 2; do
	i=$((i + 1))
	[ $i -gt 60 ] && break
	sleep 1
done
vmms_up() { up 1 && up 2; }
check coord-cpu-vmms-up vmms_up
vmms_up || exit 0
# vCPU threads' nice (field 19 of /proc/PID/task/TID/stat, after the comm in parentheses).
vcpu_nice() {
	for t in /proc/"$1"/task/*; do
		grep -q '^kumo-vcpu' "$t/comm" 2>/dev/null || continue
		sed 's/.*) //' "$t/stat" | cut -d' ' -f17
	done | sort -u | tr '\n' ' '
}
echo "before: vm1 nice $(vcpu_nice $pid1), vm2 nice $(vcpu_nice $pid2), load $(cat /proc/loadavg)"

# Host burners: two per CPU, so load1 climbs past 90% per CPU within a minute.
n=$(( $(nproc) * 2 ))
while [ $n -gt 0 ]; do
	sh -c 'while :; do :; done' &
	burners="$burners $!"
	n=$((n - 1))
done

$KUMO coord --vm "$T/ctl1.sock" --vm "$T/ctl2.sock" --policy cpu-priority --log "$LOG" \
	--duration "${KUMO_COORD_CPU_S:-50}"
check coord-cpu-exit-0 [ $? -eq 0 ]
n1=$(vcpu_nice $pid1)
n2=$(vcpu_nice $pid2)
echo "after: vm1 nice $n1, vm2 nice $n2, load $(cat /proc/loadavg)"
expect coord-cpu-nice-action "$LOG" '"action":"nice".*"vm":".*ctl2.sock".*"ok":true|"vm":".*ctl2.sock".*"action":"nice".*"ok":true'
expect_not coord-cpu-vm1-untouched "$LOG" '"vm":"[^"]*ctl1.sock".*"action":"nice"'
expect_not coord-cpu-no-failed-action "$LOG" '"action":"nice".*"ok":false'
check coord-cpu-vm2-threads-niced [ "${n2% }" -gt 0 ] 2>/dev/null
check coord-cpu-vm1-threads-nice-0 [ "$n1" = "0 " ]
last=$(grep '"action":"nice"' "$LOG" | tail -n 1 | sed -n 's/.*"nice":\(-*[0-9]*\).*/\1/p')
check coord-cpu-threads-match-last-action [ "${n2% }" = "${last:-x}" ]
echo "nice actions: $(grep -c '"action":"nice"' "$LOG"), first at load1 $(grep '"action":"nice"' "$LOG" | head -n 1 | sed -n 's/.*load1 \([0-9.]*\).*/\1/p')"

# cpu-weight: each VMM in a cgroup of its own (cgroup v2 with the cpu controller).
cg=/sys/fs/cgroup
if echo +cpu > $cg/cgroup.subtree_control 2>/dev/null && mkdir -p $cg/kumo-coord-cpu1 \
   $cg/kumo-coord-cpu2 && echo $pid1 > $cg/kumo-coord-cpu1/cgroup.procs &&
   echo $pid2 > $cg/kumo-coord-cpu2/cgroup.procs; then
	$KUMO coord --vm "$T/ctl1.sock" --vm "$T/ctl2.sock" --policy cpu-weight --log "$WLOG" \
		--duration 8
	check coord-cpu-weight-exit-0 [ $? -eq 0 ]
	w1=$(cat $cg/kumo-coord-cpu1/cpu.weight)
	w2=$(cat $cg/kumo-coord-cpu2/cpu.weight)
	echo "cpu.weight: vm1 $w1, vm2 $w2, load $(cat /proc/loadavg)"
	expect coord-cpu-weight-action "$WLOG" '"action":"cpu.weight".*"ok":true'
	check coord-cpu-weight-vm2-lowered [ "$w2" -lt 100 ]
	check coord-cpu-weight-vm1-100 [ "$w1" -eq 100 ]
	# Back to the parent cgroup so the test's cgroups can go.
	echo $pid1 > $cg/cgroup.procs 2>/dev/null
	echo $pid2 > $cg/cgroup.procs 2>/dev/null
else
	echo "SKIP: coord-cpu-weight (no writable cgroup v2 with the cpu controller here)"
fi
