#!/bin/sh
# `make check-slow`: Debian's stock cloud kernel boots in kumo and reaches /init.
# On PVM hosts this takes ~15 minutes (the whole kernel runs in KVM's emulator), so it is not
# part of `make check`. Userspace: the stock kernel has no fix-up for int $0x80 arriving as #UD
# on PVM, so there /init's first system call ends the run (reported, not asserted); on a VMX
# host the guest's boot-check script runs and powers off.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
CON=$OUT/stock-boot.console
ERR=$OUT/stock-boot.stderr
need_kvm stock-boot
[ -f guest/out/stock-vmlinuz ] || { fail stock-guest-image "run make guest"; exit 1; }
start=$(date +%s)
timeout "${KUMO_SLOW_TIMEOUT:-3600}" $KUMO run --kernel guest/out/stock-vmlinuz \
	--initrd guest/out/initramfs-stock.cpio --mem 256M --cpus 1 \
	--cmdline "kumo.script=boot-check.sh panic=-1" < /dev/null > "$CON" 2> "$ERR"
rc=$?
tr -d '\r' < "$CON" > "$CON.tmp" && mv "$CON.tmp" "$CON"
echo "stock boot: exit status $rc after $(( $(date +%s) - start )) s"
grep -E 'after .* s \(exit status|first guest output' "$ERR"
expect stock-boot-banner "$CON" 'Linux version 6\.1\.[0-9]+-[0-9]+-cloud-amd64'
expect stock-boot-acpi-madt "$CON" 'ACPI: Using ACPI \(MADT\) for SMP configuration'
expect stock-boot-kvm-clock "$CON" 'kvm-clock: Using msrs'
expect stock-boot-reaches-init "$CON" 'Run /init as init process'
if [ -d /sys/module/kvm_pvm ]; then
	grep -m1 -E 'traps: init\[1\]|KUMO-GUEST-READY' "$CON" | sed 's/^/stock boot, userspace: /'
else
	expect stock-boot-userspace "$CON" '^KUMO-CHECK done$'
	check stock-boot-poweroff [ $rc -eq 0 ]
fi
