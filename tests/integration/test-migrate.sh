#!/bin/sh
# Live migration (issue 13, docs/migration.md) between two network namespaces of the KVM box
# standing for two hosts, joined by a veth pair (10.77.0.1 <-> 10.77.0.2, addresses that exist
# only inside the box): Debian's stock kernel with the agent, membench holding a verified
# pattern while another dirties memory and blkseq writes with 8 in flight; pre-copy A -> B,
# post-copy B -> A; then the failures (destination killed, garbage stream, cancel, another
# machine), each leaving the source running. migrate-host.py drives it.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm migrate
KERNEL=${KUMO_STOCK_KERNEL:-guest/out/stock-vmlinuz}
INITRD=${KUMO_STOCK_INITRD:-guest/out/initramfs-stock.cpio}
[ -f "$KERNEL" ] && [ -f "$INITRD" ] || { fail migrate-guest-image "run make guest"; exit 1; }
if [ -d /sys/module/kvm_pvm ]; then
	echo "SKIP: migrate (the stock kernel's userspace does not run on a PVM host)"
	exit 0
fi
PATH=$PATH:/sbin:/usr/sbin
T=$(mktemp -d)
cleanup() {
	ip netns del kumo-mig-a 2>/dev/null
	ip netns del kumo-mig-b 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
cleanup
mkdir -p "$T"
ip netns add kumo-mig-a && ip netns add kumo-mig-b &&
	ip link add kumo-mig0 netns kumo-mig-a type veth peer name kumo-mig1 netns kumo-mig-b &&
	ip -n kumo-mig-a addr add 10.77.0.1/24 dev kumo-mig0 &&
	ip -n kumo-mig-b addr add 10.77.0.2/24 dev kumo-mig1 &&
	ip -n kumo-mig-a link set kumo-mig0 up && ip -n kumo-mig-b link set kumo-mig1 up &&
	ip -n kumo-mig-a link set lo up && ip -n kumo-mig-b link set lo up ||
	{ fail migrate-netns "cannot make the two hosts (network namespaces)"; exit 1; }
pass migrate-netns
truncate -s 16M "$T/fs.img"
mkfs.ext4 -q -F -L kumo-mig "$T/fs.img" || { fail migrate-mkfs; exit 1; }
truncate -s 4M "$T/seq.img"
start=$(date +%s)
KUMO=$(realpath "$KUMO") timeout "${KUMO_MIGRATE_TIMEOUT:-900}" python3 \
	tests/integration/migrate-host.py "$T" "$KERNEL" "$INITRD"
rc=$?
echo "migrate: host driver ended after $(( $(date +%s) - start )) s (status $rc)"
# The driver ends non-zero only when it broke off (an exception, its guard): the checks after
# that point never ran.
check migrate-driver-exit-0 [ $rc -eq 0 ]
rm -f "$OUT"/migrate-console-*.log "$OUT"/migrate-kumo-*.err
for f in "$T"/console-*.log "$T"/kumo-*.err; do
	[ -f "$f" ] || continue
	tr -d '\r' < "$f" > "$OUT/migrate-$(basename "$f")"
done
for f in "$OUT"/migrate-console-*.log; do
	[ -f "$f" ] || continue
	n=$(basename "$f" .log)
	n=${n#migrate-console-}
	expect_not "migrate-run-$n-no-virtio-errors" "$f" \
		'virtio.*([Ee]rror|fail)|I/O error|blk_update_request|EXT4-fs (error|warning)|Buffer I/O'
	expect_not "migrate-run-$n-no-oops" "$f" 'BUG:|Oops|WARNING: CPU|Call Trace|rcu_.*stall'
done
