#!/bin/sh
# Debian's stock cloud kernel in kumo with the ordinary 64-bit busybox userspace: 2 vCPUs
# through the MADT, the memory it was given, ACPI tables, kvm-clock, the virtio modules from
# the initramfs binding a disk and the balloon, guest/scripts/boot-check.sh, poweroff -f -> exit 0.
# KUMO_STOCK_CPUS / KUMO_STOCK_MEM_MB size it (make check-slow boots a bigger one).
# On a PVM host (KUMO_BOX=0) the stock kernel stops at /init's first system call (docs/pvm.md):
# there only the kernel's part is checked.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm stock-boot
CPUS=${KUMO_STOCK_CPUS:-2}
MEM_MB=${KUMO_STOCK_MEM_MB:-256}
CON=$OUT/stock-boot-$CPUS.console
ERR=$OUT/stock-boot-$CPUS.stderr
[ -f guest/out/stock-vmlinuz ] || { fail stock-guest-image "run make guest"; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
head -c $((4 * 1024 * 1024)) /dev/urandom > "$T/disk.img"
start=$(date +%s)
timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel guest/out/stock-vmlinuz \
	--initrd guest/out/initramfs-stock.cpio --mem "${MEM_MB}M" --cpus "$CPUS" \
	--disk "$T/disk.img,ro" --balloon \
	--cmdline "kumo.script=boot-check.sh panic=-1" < /dev/null > "$CON" 2> "$ERR"
rc=$?
tr -d '\r' < "$CON" > "$CON.tmp" && mv "$CON.tmp" "$CON"
echo "stock boot: $CPUS vCPUs, $MEM_MB MiB: exit status $rc after $(( $(date +%s) - start )) s"
grep -E 'after .* s \(exit status|first guest output' "$ERR"
expect stock-boot-banner "$CON" 'Linux version 6\.1\.[0-9]+-[0-9]+-cloud-amd64'
expect stock-boot-acpi-madt "$CON" 'ACPI: Using ACPI \(MADT\) for SMP configuration'
expect stock-boot-madt-cpus "$CON" "smpboot: Allowing $CPUS CPUs"
expect stock-boot-smp-up "$CON" "smp: Brought up 1 node, $CPUS CPUs?\$"
for t in RSDP XSDT FACP DSDT APIC MCFG; do
	expect "stock-boot-acpi-table-$t" "$CON" "ACPI: $t 0x"
done
expect stock-boot-kvm-clock "$CON" 'clocksource: Switched to clocksource kvm-clock'
expect stock-boot-reaches-init "$CON" 'Run /init as init process'
expect_not stock-boot-no-oops "$CON" 'BUG:|Oops|WARNING: CPU|Call Trace|ACPI (BIOS )?Error'
if [ -d /sys/module/kvm_pvm ]; then
	grep -m1 -E 'traps: init\[1\]|KUMO-GUEST-READY' "$CON" | sed 's/^/stock boot, userspace: /'
	exit 0
fi
expect stock-boot-userspace-64bit "$CON" '^KUMO-CHECK userspace=64bit$'
expect stock-boot-nproc "$CON" "^KUMO-CHECK nproc=$CPUS\$"
expect stock-boot-clocksource "$CON" '^KUMO-CHECK clocksource=kvm-clock$'
mt=$(sed -n 's/^KUMO-CHECK memtotal_kb=\([0-9]*\)$/\1/p' "$CON")
# MemTotal: what the kernel keeps for itself comes off; it must be most of what kumo gave.
if [ -n "$mt" ] && [ "$mt" -gt $((MEM_MB * 1024 * 80 / 100)) ] && [ "$mt" -le $((MEM_MB * 1024)) ]; then
	pass stock-boot-memtotal "$mt kB of $((MEM_MB * 1024)) kB"
else
	fail stock-boot-memtotal "MemTotal ${mt:-missing} kB of $((MEM_MB * 1024)) kB"
fi
expect stock-boot-acpi-sysfs "$CON" '^KUMO-CHECK acpi=.*APIC.*'
expect stock-boot-virtio-blk-bound "$CON" '^KUMO-CHECK virtio=virtio[0-9]+ device_id=0x0002 driver=virtio_blk$'
expect stock-boot-virtio-balloon-bound "$CON" '^KUMO-CHECK virtio=virtio[0-9]+ device_id=0x0005 driver=virtio_balloon$'
expect stock-boot-disk-size "$CON" '^KUMO-CHECK block=vda sectors=8192$'
expect stock-boot-msi "$CON" '^KUMO-CHECK msi_irqs=[1-9]'
expect stock-boot-script-done "$CON" '^KUMO-CHECK done$'
if [ $rc -eq 0 ] && grep -q 'guest powered off' "$ERR"; then
	pass stock-boot-poweroff-exit-0
else
	fail stock-boot-poweroff-exit-0 "exit status $rc"
fi
