#!/bin/sh
# Snapshot and restore (issue 10, docs/snapshot.md): Debian's stock kernel, 2 vCPUs, 512 MiB,
# an ext4 disk with a file on it, a raw disk for blkseq, the balloon, kumo-agent relayed through
# the control socket. snapshot-host.py runs membench (a held, verified pattern) and blkseq
# (sequence-numbered O_DIRECT writes, 8 in flight) in the guest, snapshots with stop=true,
# restores eagerly, checks the guest carries on (agent, workloads clean, file, balloon, clock),
# snapshots the restored VM and restores it with --restore-lazy, same checks; then the
# refusals (other --cpus/--mem, a truncated memory file: exit 2 with one line; a snapshot into
# an unwritable directory: an error reply while the VM runs on). Here: every console free of
# virtio and I/O errors, every VMM's device summary without errors.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm snapshot
KERNEL=${KUMO_STOCK_KERNEL:-guest/out/stock-vmlinuz}
INITRD=${KUMO_STOCK_INITRD:-guest/out/initramfs-stock.cpio}
[ -f "$KERNEL" ] && [ -f "$INITRD" ] || { fail snapshot-guest-image "run make guest"; exit 1; }
if [ -d /sys/module/kvm_pvm ]; then
	# The stock kernel's userspace does not run on PVM hosts (docs/pvm.md).
	echo "SKIP: snapshot (the stock kernel's userspace does not run on a PVM host)"
	exit 0
fi
PATH=$PATH:/sbin:/usr/sbin
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
truncate -s 16M "$T/fs.img"
mkfs.ext4 -q -F -L kumo-snap "$T/fs.img" || { fail snapshot-mkfs; exit 1; }
truncate -s 4M "$T/seq.img"
start=$(date +%s)
KUMO=$KUMO timeout "${KUMO_SNAPSHOT_TIMEOUT:-600}" python3 tests/integration/snapshot-host.py \
	"$T" "$KERNEL" "$INITRD"
rc=$?
echo "snapshot: host driver ended after $(( $(date +%s) - start )) s (status $rc)"
# The driver ends non-zero only when it broke off (an exception, its guard): the checks after
# that point never ran.
check snapshot-driver-exit-0 [ $rc -eq 0 ]
rm -f "$OUT"/snapshot-console-*.log "$OUT"/snapshot-kumo-*.err
for f in "$T"/console-*.log "$T"/kumo-*.err; do
	[ -f "$f" ] || continue
	n=$(basename "$f")
	tr -d '\r' < "$f" > "$OUT/snapshot-$n"
done
for f in "$OUT"/snapshot-kumo-*.err; do
	[ -f "$f" ] || continue
	grep -E 'after .* s \(exit status|, errors [0-9]' "$f" | sed "s|^|$(basename "$f"): |"
done
for f in "$OUT"/snapshot-console-*.log; do
	[ -f "$f" ] || continue
	n=$(basename "$f" .log)
	n=${n#snapshot-console-}
	expect_not "snapshot-run-$n-no-virtio-errors" "$f" \
		'virtio.*([Ee]rror|fail)|I/O error|blk_update_request|EXT4-fs (error|warning)|Buffer I/O'
	expect_not "snapshot-run-$n-no-oops" "$f" 'BUG:|Oops|WARNING: CPU|Call Trace|rcu_.*stall'
	e="$OUT/snapshot-kumo-$n.err"
	expect_not "snapshot-run-$n-no-device-errors" "$e" ', errors [1-9]'
done
