#!/bin/sh
# One boot of our test kernel in kumo (2 vCPUs, 256 MiB) that checks many things at once:
# ACPI tables, SMP through the MADT, e820 and memory size, kvm-clock, the UART, ACPI S5,
# no ACPI errors, PCI enumeration, two virtio-blk disks (a partition table written on the host
# is read by the guest kernel; one disk read-only) and virtio-console with the agent port, all
# driven through MSI-X; the guest's own userspace (nproc, MemTotal, poweroff -f -> exit 0).
# On PVM hosts the guest kernel is emulated: this takes a few minutes; the timeout is generous
# and is not a measurement (KUMO_BOOT_TIMEOUT, seconds).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=${KUMO_TEST_INITRD:-guest/out/initramfs.cpio}
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
timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" --cpus 2 \
	--mem 256M --disk "$T/disk0.img" --disk "$T/disk1.img,ro" --agent-socket "$T/agent.sock" \
	--cmdline "kumo.script=boot-check.sh panic=-1" < /dev/null > "$CON" 2> "$ERR"
rc=$?
end=$(date +%s)
# The serial console ends lines with CR LF.
tr -d '\r' < "$CON" > "$CON.tmp" && mv "$CON.tmp" "$CON"
echo "boot: kumo exited with status $rc after $((end - start)) s"
grep -E 'first guest output|after .* s \(exit status|MSI-X interrupts' "$ERR"

# The machine as the kernel saw it.
expect boot-e820-low "$CON" 'BIOS-e820: \[mem 0x0000000000000000-0x000000000009efff\] usable'
expect boot-e820-ram "$CON" 'BIOS-e820: \[mem 0x0000000000100000-0x000000000fffffff\] usable'
for t in RSDP XSDT FACP DSDT FACS APIC; do
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
# PCI and virtio: the host bridge from the DSDT/MCFG, three virtio-pci functions, the disks.
expect boot-pci-root-bridge "$CON" 'ACPI: PCI Root Bridge \[PCI0\] \(domain 0000 \[bus 00-ff\]\)'
expect boot-pci-mmconfig "$CON" 'MMCONFIG at \[mem 0xe0000000-0xefffffff\] reserved'
expect boot-pci-virtio-blk "$CON" 'pci 0000:00:0[12]\.0: \[1af4:1042\] type 00 class 0x018000'
expect boot-pci-virtio-console "$CON" 'pci 0000:00:03\.0: \[1af4:1043\] type 00 class 0x078000'
expect boot-vda-size "$CON" 'virtio_blk virtio[0-9]: \[vda\] 131072 512-byte logical blocks'
expect boot-vdb-size "$CON" 'virtio_blk virtio[0-9]: \[vdb\] 65536 512-byte logical blocks'
expect boot-vda-partitions "$CON" ' vda: vda1 vda2$'
# Every device reached DRIVER_OK and served its requests through MSI-X (the only interrupt
# mechanism kumo's virtio-pci offers: interrupt pin 0, no INTx).
for dev in virtio-blk virtio-console; do
	if grep -E "kumo: $dev \(PCI .*status 0x0f" "$ERR" | grep -qv 'MSI-X interrupts 0$'; then
		pass "boot-$dev-driver-ok-msix"
	else
		fail "boot-$dev-driver-ok-msix" "$(grep "kumo: $dev" "$ERR" | head -3)"
	fi
done
if grep -E 'kumo: virtio-blk .*requests [1-9]' "$ERR" | head -1 | grep -q .; then
	pass boot-virtio-blk-requests
else
	fail boot-virtio-blk-requests
fi
check boot-ro-disk-unchanged [ "$(sha256sum < "$T/disk1.img")" = "$sum_ro" ]
expect_not boot-no-virtio-errors "$CON" 'virtio.*(error|failed)|I/O error'
# Memory: "Memory: 241652K/261752K available": the total must be within 2% of 256 MiB.
total=$(sed -n 's|^.*Memory: [0-9]*K/\([0-9]*\)K available.*|\1|p' "$CON" | head -1)
if [ -n "$total" ] && [ "$total" -gt $((262144 * 98 / 100)) ] && [ "$total" -le 262144 ]; then
	pass boot-memory-size
else
	fail boot-memory-size "kernel saw ${total:-no}K of 262144K"
fi

# Userspace: 32-bit busybox. On PVM hosts KVM keeps emulating guest user code for a batch of
# instructions after an emulated iret (the kernel's way back to 32-bit user mode), and its
# emulator cannot run SSE: /init dies with "trap invalid opcode" and panic=-1 ends the run
# (exit status 3). docs/pvm.md has the probes that show it. So on PVM the run must end that
# way; elsewhere the guest's own checks must pass and poweroff -f must give exit status 0.
if [ -d /sys/module/kvm_pvm ]; then
	expect boot-pvm-init-started "$CON" 'Run /init as init process'
	grep -m1 -E 'traps: init\[1\]' "$CON" | sed 's/^/boot: PVM userspace: /'
	if [ $rc -eq 3 ] && grep -q 'guest reset' "$ERR"; then
		pass boot-pvm-panic-ends-run
	else
		fail boot-pvm-panic-ends-run "exit status $rc"
	fi
	for c in guest-ready guest-nproc guest-memtotal guest-script-done poweroff-exit-0; do
		echo "SKIP: boot-$c (PVM host: no guest userspace, see docs/pvm.md)"
	done
	exit 0
fi
expect boot-guest-ready "$CON" '^KUMO-GUEST-READY '
expect boot-guest-nproc "$CON" '^KUMO-CHECK nproc=2$'
expect boot-guest-cpus-online "$CON" '^KUMO-CHECK cpus_online=0-1$'
mt=$(sed -n 's/^KUMO-CHECK memtotal_kb=\([0-9]*\)$/\1/p' "$CON")
if [ -n "$mt" ] && [ "$mt" -gt 200000 ] && [ "$mt" -le 262144 ]; then
	pass boot-guest-memtotal
else
	fail boot-guest-memtotal "MemTotal ${mt:-missing} kB"
fi
expect boot-guest-acpi-tables "$CON" '^KUMO-CHECK acpi=.*APIC.*DSDT.*FACP'
expect boot-guest-script-done "$CON" '^KUMO-CHECK done$'
# poweroff -f in the guest -> ACPI S5 -> kumo exits 0.
if [ $rc -eq 0 ] && grep -q 'guest powered off' "$ERR"; then
	pass boot-poweroff-exit-0
else
	fail boot-poweroff-exit-0 "exit status $rc"
fi
