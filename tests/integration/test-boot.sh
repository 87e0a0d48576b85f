#!/bin/sh
# One boot of our test kernel in kumo (2 vCPUs, 512 MiB) that checks many things at once:
# ACPI tables, SMP through the MADT, e820 and memory size, kvm-clock, the UART, PCI enumeration,
# two virtio-blk disks (a partition table written on the host is read by the guest kernel;
# data both ways byte for byte; one disk read-only), virtio-console's agent port both ways,
# virtio-balloon driven through the control socket, MSI-X, and power-off through ACPI S5.
# Guest userspace is guest/probe/kumo-probe (freestanding; 32-bit, no SSE, int $0x80 in the PVM
# image, lib.sh picks it on PVM hosts: docs/pvm.md); the host side is drive-guest.py.
# On PVM hosts the guest kernel is emulated: this takes a few minutes; the timeout is generous
# and is not a measurement (KUMO_BOOT_TIMEOUT, seconds).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm boot-boots
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=$KUMO_INITRD
CON=$OUT/boot-test.console
ERR=$OUT/boot-test.stderr
for f in "$KERNEL" "$INITRD"; do
	[ -f "$f" ] || { fail boot-guest-image "$f missing: run make guest"; exit 1; }
done

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
truncate -s 64M "$T/disk0.img"
printf 'label: dos\n,32M,L\n,,L\n' | sfdisk -q "$T/disk0.img"
head -c $((32 * 1024 * 1024)) /dev/urandom > "$T/disk1.img"
sum_ro=$(sha256sum < "$T/disk1.img")

start=$(date +%s)
MEM=$((512 * 1024 * 1024))
rm -f "$CON"
timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" --cpus 2 \
	--mem 512M --disk "$T/disk0.img" --disk "$T/disk1.img,ro" --agent-socket "$T/agent.sock" \
	--balloon=stats=1,free-page-reporting --control "$T/ctl.sock" \
	--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,blk,agent,touch,balloon,poweroff" \
	< /dev/null > "$CON" 2> "$ERR" &
kumo_pid=$!
python3 tests/integration/drive-guest.py "$CON" "$T/agent.sock" "$T/ctl.sock" $MEM reporting $kumo_pid
wait $kumo_pid
rc=$?
end=$(date +%s)
# The serial console ends lines with CR LF.
tr -d '\r' < "$CON" > "$CON.tmp" && mv "$CON.tmp" "$CON"
echo "boot: kumo exited with status $rc after $((end - start)) s"
grep -E 'first guest output|after .* s \(exit status|MSI-X interrupts' "$ERR"

# The machine as the kernel saw it.
expect boot-e820-low "$CON" 'BIOS-e820: \[mem 0x0000000000000000-0x000000000009efff\] usable'
expect boot-e820-ram "$CON" 'BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] usable'
for t in RSDP XSDT FACP DSDT FACS APIC MCFG; do
	expect "boot-acpi-table-$t" "$CON" "ACPI: $t 0x00000000000E"
done
expect boot-madt-smp-config "$CON" 'Using ACPI \(MADT\) for SMP configuration'
expect boot-madt-2-cpus "$CON" 'smpboot: Allowing 2 CPUs'
expect boot-smp-brought-up "$CON" 'smp: Brought up 1 node, 2 CPUs'
expect boot-ioapic "$CON" 'IOAPIC\[0\]: apic_id 0, version [0-9]+, address 0xfec00000, GSI 0-23'
expect boot-kvm-clock "$CON" 'kvm-clock: Using msrs'
expect boot-kvm-clocksource "$CON" 'clocksource: Switched to clocksource kvm-clock'
expect boot-uart "$CON" 'ttyS0 at I/O 0x3f8 \(irq = 4, base_baud = 115200\) is a 16550A'
expect boot-acpi-s5 "$CON" 'ACPI: PM: \(supports S0 S5\)'
expect boot-acpi-interpreter "$CON" 'ACPI: Interpreter enabled'
expect_not boot-no-acpi-errors "$CON" 'ACPI (BIOS )?(Error|Warning)|\[Firmware Bug\]|ACPI: .*[Ff]ailed'
# Memory: "Memory: 241652K/261752K available": the total must be within 2% of 512 MiB.
total=$(sed -n 's|^.*Memory: [0-9]*K/\([0-9]*\)K available.*|\1|p' "$CON" | head -1)
if [ -n "$total" ] && [ "$total" -gt $((524288 * 98 / 100)) ] && [ "$total" -le 524288 ]; then
	pass boot-memory-size
else
	fail boot-memory-size "kernel saw ${total:-no}K of 524288K"
fi

# PCI and virtio: the host bridge from the DSDT/MCFG, four virtio-pci functions, the disks.
expect boot-pci-root-bridge "$CON" 'ACPI: PCI Root Bridge \[PCI0\] \(domain 0000 \[bus 00-ff\]\)'
expect boot-pci-mmconfig "$CON" 'MMCONFIG at \[mem 0xe0000000-0xefffffff\] reserved'
expect boot-pci-virtio-blk "$CON" 'pci 0000:00:0[12]\.0: \[1af4:1042\] type 00 class 0x018000'
expect boot-pci-virtio-balloon "$CON" 'pci 0000:00:03\.0: \[1af4:1045\] type 00 class 0x00ff00'
expect boot-pci-virtio-console "$CON" 'pci 0000:00:04\.0: \[1af4:1043\] type 00 class 0x078000'
expect boot-vda-size "$CON" 'virtio_blk virtio[0-9]: \[vda\] 131072 512-byte logical blocks'
expect boot-vdb-size "$CON" 'virtio_blk virtio[0-9]: \[vdb\] 65536 512-byte logical blocks'
expect boot-vda-partitions "$CON" ' vda: vda1 vda2$'
expect_not boot-no-virtio-errors "$CON" 'virtio.*(error|failed)|I/O error'
# Every device served requests and interrupted the guest through MSI-X (the only interrupt
# mechanism kumo's virtio-pci offers: interrupt pin 0, no INTx).
for dev in virtio-blk virtio-balloon virtio-console; do
	if grep -E "kumo: $dev \(PCI " "$ERR" | grep -qv 'MSI-X interrupts 0$'; then
		pass "boot-$dev-msix"
	else
		fail "boot-$dev-msix" "$(grep "kumo: $dev" "$ERR" | head -3)"
	fi
done

# Guest userspace (kumo-probe).
expect boot-guest-probe-ready "$CON" '^KUMO-PROBE-READY$'
expect boot-guest-nproc "$CON" '^KUMO-CHECK nproc=2$'
expect boot-guest-cpus-online "$CON" '^KUMO-CHECK cpus_online=0-1$'
mt=$(sed -n 's/^KUMO-CHECK memtotal_kb=\([0-9]*\)$/\1/p' "$CON")
if [ -n "$mt" ] && [ "$mt" -gt 450000 ] && [ "$mt" -le 524288 ]; then
	pass boot-guest-memtotal
else
	fail boot-guest-memtotal "MemTotal ${mt:-missing} kB"
fi
msi=$(sed -n 's/^KUMO-CHECK msi_irq_lines=\([0-9]*\)$/\1/p' "$CON")
check boot-guest-msix-in-proc-interrupts [ "${msi:-0}" -ge 4 ]
# Data both ways: the host's random bytes read in the guest, the guest's pattern on the host.
want=$(python3 -c "
h = 0xcbf29ce484222325
for b in open('$T/disk1.img', 'rb').read(1 << 20):
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print('%x' % h)")
expect boot-guest-reads-host-data "$CON" "^KUMO-CHECK vdb_fnv1a=$want\$"
expect boot-guest-ro-write-fails "$CON" '^KUMO-CHECK vdb_write_errno=[1-9][0-9]*$'
expect boot-guest-fsync "$CON" '^KUMO-CHECK vda_fsync=0$'
if python3 -c "
import sys
d = open('$T/disk0.img', 'rb').read()[1 << 20:2 << 20]
sys.exit(d != bytes(((k * 7 + k // 4096) & 0xff) for k in range(1 << 20)))"; then
	pass boot-host-reads-guest-data
else
	fail boot-host-reads-guest-data "the 1 MiB at 1 MiB of disk0 is not the guest's pattern"
fi
check boot-ro-disk-unchanged [ "$(sha256sum < "$T/disk1.img")" = "$sum_ro" ]
expect boot-guest-script-done "$CON" '^KUMO-CHECK done$'
# reboot(POWER_OFF) in the guest -> ACPI S5 -> kumo exits 0.
expect boot-guest-acpi-s5 "$CON" 'ACPI: PM: Preparing to enter system sleep state S5'
if [ $rc -eq 0 ] && grep -q 'guest powered off' "$ERR"; then
	pass boot-poweroff-exit-0
else
	fail boot-poweroff-exit-0 "exit status $rc"
fi
