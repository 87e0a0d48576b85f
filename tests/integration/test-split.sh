#!/bin/sh
# Split migration (issue 14, docs/split-migration.md) between network namespaces of the KVM box
# standing for four hosts: the source, the main host and two sub-hosts running
# `kumo memserver`. Point-to-point veth links (src-main, src-sub1, src-sub2, main-sub1,
# main-sub2); each sub-host serves on one address of its own (10.78.9.3, 10.78.9.4) that both
# the source and the main host route to. Debian's stock kernel with the agent and membench
# holding a verified pattern is split-migrated with main-mem=64M; on the main host the agent
# answers, membench verifies (its pages paged in from the sub-hosts), split-stats counts.
# split-host.py drives it; KUMO_SPLIT_RUNS="on:HOLD_MB[:REPLICAS[:po]] off:HOLD_MB ..." chooses
# the runs and their tracking (default one run, on:48:2:po: two copies, page-out on, the first
# sub-host killed on the main host and membench still verifying, the main host's guest RAM
# within main-mem; figures for docs/split-migration.md), KUMO_SPLIT_MEM
# the guest's RAM, KUMO_SPLIT_RUN_ARGS more kumo run options.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm split
KERNEL=${KUMO_STOCK_KERNEL:-guest/out/stock-vmlinuz}
INITRD=${KUMO_STOCK_INITRD:-guest/out/initramfs-stock.cpio}
[ -f "$KERNEL" ] && [ -f "$INITRD" ] || { fail split-guest-image "run make guest"; exit 1; }
if [ -d /sys/module/kvm_pvm ]; then
	echo "SKIP: split (the stock kernel's userspace does not run on a PVM host)"
	exit 0
fi
PATH=$PATH:/sbin:/usr/sbin
T=$(mktemp -d)
HOSTS="src main sub1 sub2"
cleanup() {
	for h in $HOSTS; do ip netns del "kumo-sp-$h" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
cleanup
mkdir -p "$T"
# link A B SUBNET IA IB: a veth pair between hosts A and B, A at SUBNET.IA, B at SUBNET.IB
link() {
	ip link add "kumo-$1-$2" netns "kumo-sp-$1" type veth peer name "kumo-$2-$1" \
		netns "kumo-sp-$2" &&
	ip -n "kumo-sp-$1" addr add "$3.$4/24" dev "kumo-$1-$2" &&
	ip -n "kumo-sp-$2" addr add "$3.$5/24" dev "kumo-$2-$1" &&
	ip -n "kumo-sp-$1" link set "kumo-$1-$2" up && ip -n "kumo-sp-$2" link set "kumo-$2-$1" up
}
setup() {
	for h in $HOSTS; do
		ip netns add "kumo-sp-$h" && ip -n "kumo-sp-$h" link set lo up || return 1
	done
	link src main 10.78.1 1 2 && link src sub1 10.78.2 1 3 && link src sub2 10.78.3 1 4 &&
	link main sub1 10.78.4 2 3 && link main sub2 10.78.5 2 4 &&
	ip -n kumo-sp-sub1 addr add 10.78.9.3/32 dev lo &&
	ip -n kumo-sp-sub2 addr add 10.78.9.4/32 dev lo &&
	ip -n kumo-sp-src route add 10.78.9.3 via 10.78.2.3 &&
	ip -n kumo-sp-src route add 10.78.9.4 via 10.78.3.4 &&
	ip -n kumo-sp-main route add 10.78.9.3 via 10.78.4.3 &&
	ip -n kumo-sp-main route add 10.78.9.4 via 10.78.5.4
}
setup || { fail split-netns "cannot make the four hosts (network namespaces)"; exit 1; }
pass split-netns
start=$(date +%s)
KUMO=$(realpath "$KUMO") timeout "${KUMO_SPLIT_TIMEOUT:-1500}" python3 \
	tests/integration/split-host.py "$T" "$KERNEL" "$INITRD"
rc=$?
echo "split: host driver ended after $(( $(date +%s) - start )) s (status $rc)"
# The driver ends non-zero only when it broke off (an exception, its guard): the checks after
# that point never ran.
check split-driver-exit-0 [ $rc -eq 0 ]
rm -f "$OUT"/split-console-*.log "$OUT"/split-kumo-*.err
for f in "$T"/console-*.log "$T"/kumo-*.err; do
	[ -f "$f" ] || continue
	tr -d '\r' < "$f" > "$OUT/split-$(basename "$f")"
done
for f in "$OUT"/split-console-*.log; do
	[ -f "$f" ] || continue
	n=$(basename "$f" .log)
	expect_not "split-run-${n#split-console-}-no-oops" "$f" \
		'BUG:|Oops|WARNING: CPU|Call Trace|rcu_.*stall'
done
