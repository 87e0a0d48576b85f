#!/bin/sh
# `make demo`: boot the test guest in kumo with 2 vCPUs and show it working. The guest prints
# KUMO-GUEST-READY and its checks, then powers off; kumo exits with the guest's status.
# KUMO_DEMO_KERNEL=stock boots Debian's stock cloud kernel instead (much slower on PVM hosts).
cd "$(dirname "$0")/.." || exit 2
if [ "${KUMO_DEMO_KERNEL:-test}" = stock ]; then
	KERNEL=guest/out/stock-vmlinuz; INITRD=guest/out/initramfs-stock.cpio
else
	KERNEL=guest/out/test-bzImage; INITRD=guest/out/initramfs.cpio
fi
if [ -d /sys/module/kvm_pvm ]; then
	echo "demo: this host's KVM is PVM: the guest kernel runs in KVM's instruction emulator,"
	echo "demo: so the boot takes minutes (seconds on a VMX/SVM host). Progress follows."
fi
echo "demo: ./kumo run --kernel $KERNEL --initrd $INITRD --cpus 2 --mem 256M" \
	"--cmdline 'kumo.script=boot-check.sh panic=-1'"
./kumo run --kernel "$KERNEL" --initrd "$INITRD" --cpus 2 --mem 256M \
	--cmdline "kumo.script=boot-check.sh panic=-1" < /dev/null
rc=$?
case $rc in
0) echo "demo: the guest powered off cleanly (exit status 0)";;
3) echo "demo: the guest rebooted or panicked (exit status 3): see the log above";;
*) echo "demo: kumo exited with status $rc";;
esac
exit $rc
