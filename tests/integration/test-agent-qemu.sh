#!/bin/sh
# The guest agent and the workloads through kumo's relay, with the guest under QEMU TCG (no KVM
# needed, so this runs on every host): QEMU serves the agent's virtio-console port on a Unix
# socket, `kumo relay` puts kumo's control socket in front of it, and agent-host.py (the same
# host side as test-agent.sh's kumo boot) drives the agent only through that control socket:
# stats period and content, every workload's result, filereader's exact hit ratio cold and
# warm, park-cpus seen on the host as an idle vCPU thread, unpark, power-off.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=${KUMO_TEST_INITRD:-guest/out/initramfs.cpio}
DATA=${KUMO_TEST_DATA:-guest/out/data.ext4}
QEMU=${QEMU:-qemu-system-x86_64}
CON=$OUT/agent-qemu.console
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -f "$CON"
command -v "$QEMU" > /dev/null || { fail agent-qemu "$QEMU not found (make deps)"; exit 1; }

timeout "${KUMO_QEMU_AGENT_TIMEOUT:-600}" "$QEMU" -accel tcg -m 256 -smp 2 \
	-name kumo-agent-test,debug-threads=on -nographic -no-reboot -nic none \
	-kernel "$KERNEL" -initrd "$INITRD" \
	-append "console=ttyS0 panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,data,agentd kumo.data=/dev/vda" \
	-drive "file=$DATA,format=raw,if=none,id=d0,snapshot=on" \
	-device virtio-blk-pci,drive=d0,disable-legacy=on \
	-device virtio-serial-pci,disable-legacy=on \
	-chardev "socket,id=a,path=$T/agent.sock,server=on,wait=off" \
	-device virtserialport,chardev=a,name=org.kumo.agent \
	< /dev/null > "$CON" 2>&1 &
qemu_pid=$!
$KUMO relay --agent-socket "$T/agent.sock" --control "$T/ctl.sock" 2> "$T/relay.err" &
relay_pid=$!
python3 tests/integration/agent-host.py "$CON" "$T/ctl.sock" $qemu_pid qemu
wait $qemu_pid
rc=$?
check agent-qemu-poweroff-exit-0 [ $rc -eq 0 ]
kill -TERM $relay_pid
wait $relay_pid
rc=$?
check agent-relay-exits-0-on-sigterm [ $rc -eq 0 ]
# The relay reconnects while QEMU's socket comes up and after it goes; it never drops lines.
expect_not agent-relay-no-dropped-lines "$T/relay.err" 'dropped'
expect agent-data-disk-mounted "$CON" 'KUMO-CHECK data_mount_errno=0'
expect_not agent-no-oops "$CON" 'BUG:|Oops|WARNING:|Call Trace'
