#!/bin/sh
# A second, smaller boot for what cannot share the main boot: the balloon must give memory
# back to the host. Free page reporting is off here, so the 64 MiB the guest touched and freed
# stays resident until the balloon takes it; inflating by 64 MiB must then cut the host's
# resident guest RAM by at least 90% of that (tests/integration/drive-guest.py, mode pss).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm balloon-boots
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=$KUMO_INITRD
CON=$OUT/balloon-test.console
ERR=$OUT/balloon-test.stderr
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -f "$CON"
timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" --cpus 1 \
	--mem 512M --agent-socket "$T/agent.sock" --balloon=stats=1 --control "$T/ctl.sock" \
	--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=touch,balloon,poweroff" \
	< /dev/null > "$CON" 2> "$ERR" &
kumo_pid=$!
python3 tests/integration/drive-guest.py "$CON" "$T/agent.sock" "$T/ctl.sock" $((512 << 20)) pss $kumo_pid
wait $kumo_pid
rc=$?
grep -E 'after .* s \(exit status|virtio-balloon' "$ERR"
check balloon-boot-poweroff-exit-0 [ $rc -eq 0 ]

# DEFLATE_ON_OOM: a 256 MiB guest whose balloon holds 160 MiB touches 128 MiB; the driver
# must give balloon pages back instead of OOM-killing the probe (which would panic the guest).
CON=$OUT/balloon-oom.console
ERR=$OUT/balloon-oom.stderr
rm -f "$CON" "$T/agent.sock" "$T/ctl.sock"
timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" --cpus 1 \
	--mem 256M --agent-socket "$T/agent.sock" --balloon=stats=1,deflate-on-oom \
	--control "$T/ctl.sock" \
	--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=touch,poweroff kumo.touch_mb=128" \
	< /dev/null > "$CON" 2> "$ERR" &
kumo_pid=$!
python3 tests/integration/drive-guest.py "$CON" "$T/agent.sock" "$T/ctl.sock" $((256 << 20)) oom $kumo_pid
wait $kumo_pid
rc=$?
tr -d '\r' < "$CON" | grep -E 'Out of memory|oom-kill|virtio_balloon' | head -5
grep -E 'after .* s \(exit status|virtio-balloon' "$ERR"
check balloon-oom-poweroff-exit-0 [ $rc -eq 0 ]
expect_not balloon-oom-no-oom-kill "$CON" 'Out of memory: Killed process'
