#!/bin/sh
# `make demo`: boot the test guest in kumo (2 vCPUs, 512 MiB, a virtio disk, the balloon and a
# control socket) and show it working: the kernel's boot log, then the guest's own checks
# (kumo-probe: CPUs, memory, MSI-X interrupts), then a clean ACPI power-off.
# KUMO_DEMO_KERNEL=stock boots Debian's stock cloud kernel with busybox instead (on PVM hosts it
# stops at /init's first system call: see docs/pvm.md).
cd "$(dirname "$0")/.." || exit 2
if [ -z "${KUMO_IN_BOX:-}" ] && why=$(bash tests/box/box want); then
	echo "demo: $why here, so the demo guest boots in kumo inside the KVM box (docs/box.md)"
	exec bash tests/box/box run --timeout 900 -- sh tools/demo.sh
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
head -c $((8 * 1024 * 1024)) /dev/urandom > "$T/disk.img"
if ! [ -c /dev/kvm ] || ! [ -w /dev/kvm ]; then
	echo "demo: kumo needs /dev/kvm, and this host has none usable (KUMO_BOX=0?)."
	exit 1
fi
if [ -d /sys/module/kvm_pvm ]; then
	echo "demo: this host's KVM is PVM: the guest kernel runs in KVM's instruction emulator,"
	echo "demo: so the boot takes a minute or more (well under a second on a VMX/SVM host)."
fi
if [ "${KUMO_DEMO_KERNEL:-test}" = stock ]; then
	set -- --kernel guest/out/stock-vmlinuz --initrd guest/out/initramfs-stock.cpio \
		--cmdline "kumo.script=boot-check.sh panic=-1"
else
	set -- --kernel guest/out/test-bzImage --initrd guest/out/initramfs.cpio \
		--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,poweroff"
fi
echo "demo: ./kumo run $* --cpus 2 --mem 512M --disk $T/disk.img,ro --balloon --control $T/ctl.sock"
./kumo run "$@" --cpus 2 --mem 512M --disk "$T/disk.img,ro" --balloon --control "$T/ctl.sock" \
	< /dev/null
rc=$?
case $rc in
0) echo "demo: the guest powered off cleanly (exit status 0)";;
3) echo "demo: the guest rebooted or panicked (exit status 3): see the log above";;
*) echo "demo: kumo exited with status $rc";;
esac
exit $rc
