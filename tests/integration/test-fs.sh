#!/bin/sh
# An ext4 file system on a virtio disk survives a guest power-off and a fresh boot: the first
# boot mounts it, writes a file and fsyncs, then powers off; the host checks the file with
# debugfs; a second boot mounts it again and reads the same bytes. (The file system is made on
# the host with mkfs.ext4: the guest userspace that runs on PVM hosts, kumo-probe, has no mkfs.)
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm fs-boots
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=$KUMO_INITRD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
truncate -s 64M "$T/fs.img"
mkfs.ext4 -q -F "$T/fs.img"
token="kumo-$$-$(date +%s)"

boot() { # name, probe steps
	timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" \
		--mem 256M --disk "$T/fs.img" \
		--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=$2,poweroff kumo.token=$token" \
		< /dev/null > "$OUT/fs-$1.console" 2> "$OUT/fs-$1.stderr"
	rc=$?
	tr -d '\r' < "$OUT/fs-$1.console" > "$OUT/fs-$1.tmp" && mv "$OUT/fs-$1.tmp" "$OUT/fs-$1.console"
	check "fs-$1-poweroff-exit-0" [ $rc -eq 0 ]
}

boot write fswrite
expect fs-write-mounted "$OUT/fs-write.console" '^KUMO-CHECK fs_mount_errno=0$'
expect fs-write-written "$OUT/fs-write.console" '^KUMO-CHECK fs_write_errno=0$'
expect fs-write-unmounted "$OUT/fs-write.console" '^KUMO-CHECK fs_umount_errno=0$'
if [ "$(debugfs -R 'cat /kumo.txt' "$T/fs.img" 2>/dev/null)" = "$token" ]; then
	pass fs-host-reads-guest-file
else
	fail fs-host-reads-guest-file "debugfs: $(debugfs -R 'cat /kumo.txt' "$T/fs.img" 2>&1 | tail -1)"
fi
check fs-clean-after-poweroff e2fsck -n -f "$T/fs.img"
boot read fsread
expect fs-read-after-fresh-boot "$OUT/fs-read.console" "^KUMO-CHECK fs_read=$token\$"
