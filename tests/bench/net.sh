#!/bin/sh
# Network bench (issue 16), in the KVM box: the same guest (Debian's stock kernel, 2 vCPUs,
# 512 MiB, busybox httpd) behind a tap in a network namespace, in kumo with vhost-net, kumo
# with its own data path, and QEMU 7.2 (-accel kvm, virtio-net-pci, vhost=on). From the
# namespace: TCP throughput (one HTTP GET of a 64 MiB file, best of BENCH_NET_REPS) and
# request rate (HTTP GETs of a 1 KiB file, a new connection each, for BENCH_NET_SECONDS).
# Prints a markdown table and writes tests/out/bench/net.json. Not part of `make bench` yet:
#   tests/box/box run --timeout 3000 -- sh tests/bench/net.sh
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm net-bench
KERNEL=${KUMO_STOCK_KERNEL:-guest/out/stock-vmlinuz}
INITRD=${KUMO_STOCK_INITRD:-guest/out/initramfs-stock.cpio}
QEMU=${QEMU:-qemu-system-x86_64}
REPS=${BENCH_NET_REPS:-3}
SECS=${BENCH_NET_SECONDS:-10}
T=$(mktemp -d)
NS=kumo-netb-$$
mkdir -p "$OUT/bench"
JSON=$OUT/bench/net.json
cleanup() {
	exec 3>&-
	[ -n "${vmm_pid:-}" ] && kill "$vmm_pid" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

wait_for() {
	i=0
	while [ $i -lt $(($3 * 5)) ]; do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$vmm_pid" 2>/dev/null || return 1
		sleep 0.2
		i=$((i + 1))
	done
	return 1
}

# One VMM: $1 name, the rest its command (the tap is kb0 in $NS).
bench_one() {
	name=$1
	shift
	CON=$OUT/bench/net-$name.console
	rm -f "$T/fifo"
	mkfifo "$T/fifo"
	ip netns add "$NS"
	ip -n "$NS" link set lo up
	ip netns exec "$NS" "$@" <"$T/fifo" >"$CON" 2>&1 &
	vmm_pid=$!
	exec 3>"$T/fifo"
	i=0
	until ip -n "$NS" link show kb0 >/dev/null 2>&1 || [ $i -gt 300 ]; do sleep 0.1; i=$((i + 1)); done
	ip -n "$NS" addr add 10.0.9.2/24 dev kb0 && ip -n "$NS" link set kb0 up
	if ! wait_for "$CON" 'kumo-init: starting a shell' 900; then
		echo "bench: $name: no guest shell" >&2
		printf '"%s": null,\n' "$name" >>"$T/json"
	else
		sleep 1
		printf '%s\n' 'for x in /sys/class/net/*; do [ "$(cat $x/address)" = 52:54:00:00:00:20 ] && d=${x##*/}; done' >&3
		printf '%s\n' 'ip link set $d up; ip addr add 10.0.9.15/24 dev $d; mkdir -p /www' >&3
		printf '%s\n' 'dd if=/dev/zero of=/www/big bs=1M count=64 2>/dev/null; head -c 1024 /www/big >/www/small' >&3
		printf '%s\n' 'httpd -p 80 -h /www && echo BENCH""-UP' >&3
		wait_for "$CON" '^BENCH-UP' 300
		ip netns exec "$NS" python3 - "$REPS" "$SECS" "$name" >>"$T/json" <<'PY'
import json, socket, sys, time, urllib.request
reps, secs, name = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
url = "http://10.0.9.15/"
for _ in range(60):
    try:
        urllib.request.urlopen(url + "small", timeout=5).read(); break
    except OSError:
        time.sleep(1)
best = 0.0
for _ in range(reps):
    t = time.monotonic()
    n = len(urllib.request.urlopen(url + "big", timeout=300).read())
    best = max(best, n * 8 / (time.monotonic() - t) / 1e6)
end, reqs = time.monotonic() + secs, 0
while time.monotonic() < end:
    urllib.request.urlopen(url + "small", timeout=30).read()
    reqs += 1
print(json.dumps(name) + ": " + json.dumps({"mbit_s": round(best, 1), "req_s": round(reqs / secs, 1)}) + ",")
PY
	fi
	printf '%s\n' 'poweroff -f' >&3
	( sleep 60; kill "$vmm_pid" 2>/dev/null ) &
	wait "$vmm_pid"
	vmm_pid=
	exec 3>&-
	ip netns del "$NS"
}

: >"$T/json"
if [ -c /dev/vhost-net ]; then
	bench_one kumo-vhost $KUMO run --kernel "$KERNEL" --initrd "$INITRD" --cpus 2 --mem 512M \
		--net tap=kb0,mac=52:54:00:00:00:20,vhost=on --cmdline "panic=-1 kumo.shell=1"
fi
bench_one kumo-own $KUMO run --kernel "$KERNEL" --initrd "$INITRD" --cpus 2 --mem 512M \
	--net tap=kb0,mac=52:54:00:00:00:20,vhost=off --cmdline "panic=-1 kumo.shell=1"
if [ -c /dev/vhost-net ]; then
	bench_one qemu-vhost $QEMU -accel kvm -M q35 -cpu host -smp 2 -m 512M -nodefaults \
		-no-reboot -display none -serial stdio -kernel "$KERNEL" -initrd "$INITRD" \
		-append "console=ttyS0 panic=-1 kumo.shell=1" \
		-netdev tap,id=n0,ifname=kb0,script=no,downscript=no,vhost=on \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:20
fi
{ echo "{"; sed '$ s/,$//' "$T/json"; echo "}"; } >"$JSON"
python3 - "$JSON" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
q = r.get("qemu-vhost") or {}
print("| VMM | TCP throughput (Mbit/s) | HTTP requests/s | vs QEMU+vhost |")
print("|---|---|---|---|")
for k, v in r.items():
    if not v:
        print(f"| {k} | failed | failed | |"); continue
    ratio = (f"{v['mbit_s'] / q['mbit_s']:.2f}x / {v['req_s'] / q['req_s']:.2f}x"
             if q.get("mbit_s") and q.get("req_s") else "")
    print(f"| {k} | {v['mbit_s']} | {v['req_s']} | {ratio} |")
PY
