#!/bin/sh
# kumo coord --policy margin against one test-kernel guest with a balloon and the guest agent:
# within 30 s the log holds samples with the agent's Committed_AS and at least one balloon
# action that the VMM took, and the VMM's balloon target ends below the guest's RAM, at
# Committed_AS + margin.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm coord-margin
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
DATA=${KUMO_TEST_DATA:-guest/out/data.ext4}
CON=$OUT/coord-margin.console
ERR=$OUT/coord-margin.stderr
LOG=$OUT/coord-margin.jsonl
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -f "$CON" "$LOG"

timeout "${KUMO_BOOT_TIMEOUT:-900}" $KUMO run --kernel "$KERNEL" --initrd "$KUMO_INITRD" \
	--cpus 1 --mem 512M --balloon=stats=1 --disk "$DATA,ro" --control "$T/ctl.sock" --agent \
	--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,data,agentd kumo.data=/dev/vda" \
	< /dev/null > "$CON" 2> "$ERR" &
kumo_pid=$!

# Until the agent's statistics reach the VMM (boot in the box takes a while).
agent_up() { $KUMO ctl "$T/ctl.sock" agent-stats 2>/dev/null | grep -q '"seq"'; }
i=0
until agent_up; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 $kumo_pid 2>/dev/null; then
		break
	fi
	sleep 1
done
check coord-margin-agent-up agent_up

$KUMO coord --vm "$T/ctl.sock" --policy margin --log "$LOG" --duration 30
check coord-margin-exit-0 [ $? -eq 0 ]
$KUMO ctl "$T/ctl.sock" balloon-get > "$T/balloon" 2>&1
cat "$T/balloon"
$KUMO ctl "$T/ctl.sock" quit > /dev/null 2>&1
wait $kumo_pid

expect coord-margin-samples "$LOG" '"type":"sample".*"agent":\{[^}]*"committed_as":[1-9]'
expect coord-margin-balloon-action "$LOG" '"action":"balloon".*"target":[0-9]+.*"ok":true'
expect_not coord-margin-no-vm-down "$LOG" '"type":"vm-down"'
target=$(sed -n 's/.*"target_bytes": *\([0-9]*\).*/\1/p' "$T/balloon")
last=$(grep '"action":"balloon".*"ok":true' "$LOG" | tail -n 1 | sed -n 's/.*"target":\([0-9]*\).*/\1/p')
below_ram() { [ -n "$target" ] && [ "$target" -lt $((512 << 20)) ]; }
check coord-margin-target-below-ram below_ram
check coord-margin-vmm-has-last-target [ "${target:-x}" = "${last:-y}" ]
grep '"action":"balloon"' "$LOG" | tail -n 3
