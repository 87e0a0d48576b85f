#!/bin/sh
# virtio-net (issue 16, docs/net.md) in the KVM box: Debian's stock kernel with two
# --net devices, each on a tap kumo makes in its own network namespace of the box (a "host"
# with 10.0.N.2/24; the guest gets 10.0.N.15: addresses that exist only there). Over the guest's
# serial console: virtio_net binds both, busybox httpd serves a 2 MiB random file; from each
# namespace the box pings the guest and fetches the file (checksums compared). Then the driver
# is unloaded and loaded again (each device reset and set up anew: ping and fetch again), and
# the first tap is deleted: the guest sees that link go down, the other still carries traffic,
# kumo keeps running until the guest powers off. Two VMs cover vhost on and off with 1 and 2
# queue pairs (2 vCPUs: Linux uses both pairs).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm net
if [ -d /sys/module/kvm_pvm ]; then
	echo "SKIP: net (the stock kernel's userspace does not run on a PVM host)"
	exit 0
fi
KERNEL=${KUMO_STOCK_KERNEL:-guest/out/stock-vmlinuz}
INITRD=${KUMO_STOCK_INITRD:-guest/out/initramfs-stock.cpio}
[ -r "$KERNEL" ] && [ -r "$INITRD" ] || { fail net-images "no $KERNEL or $INITRD (make guest)"; exit 0; }
command -v ip >/dev/null || { echo "SKIP: net (no ip command)"; exit 0; }
T=$(mktemp -d)
NS=kumo-net-$$
cleanup() {
	exec 3>&-
	[ -n "${kumo_pid:-}" ] && kill "$kumo_pid" 2>/dev/null
	ip netns del "${NS}0" 2>/dev/null
	ip netns del "${NS}1" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

# wait_for FILE REGEX SECONDS: 0 once a line of FILE matches.
wait_for() {
	i=0
	while [ $i -lt $(($3 * 5)) ]; do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$kumo_pid" 2>/dev/null || { grep -Eq -- "$2" "$1" 2>/dev/null; return; }
		sleep 0.2
		i=$((i + 1))
	done
	return 1
}

# gsh CMD: one command line to the guest's shell (markers are printed as X""Y so the echo of
# the command line does not match them).
gsh() { printf '%s\n' "$1" >&3; }

# mac_dev MAC: the guest's interface with that MAC, into $dN (shell code for the guest).
mac_dev() { echo "for x in /sys/class/net/*; do [ \"\$(cat \$x/address)\" = $2 ] && $1=\${x##*/}; done"; }

# One VM with two NICs: $1 name, $2 and $3 the --net options after tap=/mac= of NIC 0 and 1.
run_vm() {
	vm=$1
	CON=$OUT/net-$vm.console
	ERR=$OUT/net-$vm.stderr
	rm -f "$CON" "$ERR" "$T/fifo"
	mkfifo "$T/fifo"
	for n in 0 1; do
		ip netns add "$NS$n" || { fail "net-$vm-netns" "ip netns add"; return; }
		ip -n "$NS$n" link set lo up
	done
	# kumo runs in the first namespace; the second tap is moved to its own once it exists.
	ip netns exec "${NS}0" timeout "${KUMO_NET_TIMEOUT:-900}" $KUMO run --kernel "$KERNEL" \
		--initrd "$INITRD" --cpus 2 --mem 512M \
		--net "tap=kt0,mac=52:54:00:00:00:10$2" --net "tap=kt1,mac=52:54:00:00:00:11$3" \
		--cmdline "panic=-1 kumo.shell=1" <"$T/fifo" >"$CON" 2>"$ERR" &
	kumo_pid=$!
	exec 3>"$T/fifo"
	i=0
	until ip -n "${NS}0" link show kt1 >/dev/null 2>&1 || [ $i -gt 300 ]; do sleep 0.1; i=$((i + 1)); done
	ip -n "${NS}0" link set kt1 netns "${NS}1"
	for n in 0 1; do
		ip -n "$NS$n" addr add 10.0.$((n + 2)).2/24 dev kt$n && ip -n "$NS$n" link set kt$n up
		check "net-$vm-tap$n-up" ip -n "$NS$n" link show kt$n
	done
	if ! wait_for "$CON" 'kumo-init: starting a shell' 600; then
		fail "net-$vm-boot" "no shell on the console: $(boot_why "$CON" "$ERR" $kumo_pid)"
		finish_vm
		return
	fi
	sleep 1
	gsh 'mkdir -p /www && dd if=/dev/urandom of=/www/blob bs=1024 count=2048 2>/dev/null'
	gsh 'echo NET""-SUM=$(sha256sum /www/blob | cut -d" " -f1); httpd -p 80 -h /www && echo NET""-HTTPD=up'
	guest_up "$vm" first
	expect "net-$vm-httpd" "$CON" '^NET-HTTPD=up'
	for n in 0 1; do
		expect "net-$vm-nic$n-driver-bound" "$CON" "^NET-DEV$n=eth"
		expect "net-$vm-nic$n-address" "$CON" "^NET-ADDR$n-first=ok"
		q=1
		case "$(eval echo \"\$$((n + 2))\")" in *queues=2*) q=2 ;; esac
		expect "net-$vm-nic$n-rx-queues-$q" "$CON" "^NET-QUEUES$n=$q"
		traffic "$vm-nic$n" $n
	done

	# Driver reload: both devices reset and set up again.
	gsh 'rmmod virtio_net && insmod /lib/modules/$(uname -r)/virtio_net.ko && echo NET""-RELOAD=ok'
	wait_for "$CON" '^NET-RELOAD=ok' 120
	expect "net-$vm-reload" "$CON" '^NET-RELOAD=ok'
	guest_up "$vm" again
	for n in 0 1; do
		expect "net-$vm-nic$n-reloaded-address" "$CON" "^NET-ADDR$n-again=ok"
		traffic "$vm-nic$n-reloaded" $n
	done

	# The first tap goes away: its link goes down in the guest, the other NIC carries on.
	ip -n "${NS}0" link del kt0
	gsh 'i=0; while [ "$(cat /sys/class/net/$d0/carrier 2>/dev/null)" != 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; echo NET""-CARRIER0=$(cat /sys/class/net/$d0/carrier) NET""-CARRIER1=$(cat /sys/class/net/$d1/carrier)'
	wait_for "$CON" '^NET-CARRIER0=' 60
	expect "net-$vm-tap-gone-link-down" "$CON" '^NET-CARRIER0=0 '
	expect "net-$vm-other-link-up" "$CON" 'NET-CARRIER1=1'
	traffic "$vm-nic1-after-tap0-gone" 1
	check "net-$vm-kumo-runs-on" kill -0 $kumo_pid
	gsh 'poweroff -f'
	finish_vm
	check "net-$vm-poweroff-exit-0" [ "$rc" -eq 0 ]
	expect_not "net-$vm-no-oops" "$CON" 'BUG:|Oops|WARNING: CPU|Call Trace|soft lockup'
	expect_not "net-$vm-no-device-errors" "$ERR" 'needs reset|malformed|TUNSET|VHOST_'
	for n in 0 1; do
		case "$(eval echo \"\$$((n + 2))\")" in
		*vhost=on*) expect "net-$vm-nic$n-vhost" "$ERR" "tap kt$n: .*vhost-net" ;;
		*vhost=off*) expect "net-$vm-nic$n-own-path" "$ERR" "tap kt$n: .*kumo's data path" ;;
		esac
	done
}

# Bring both NICs up with their addresses ($2: a tag for the markers).
guest_up() {
	for n in 0 1; do
		gsh "$(mac_dev d$n 52:54:00:00:00:1$n); echo NET\"\"-DEV$n=\$d$n; echo NET\"\"-QUEUES$n=\$(ls /sys/class/net/\$d$n/queues | grep -c rx-)"
		gsh "ip link set \$d$n up && ip addr add 10.0.$((n + 2)).15/24 dev \$d$n && echo NET\"\"-ADDR$n-$2=ok"
	done
	wait_for "$CON" "^NET-ADDR1-$2=" 120
}

finish_vm() {
	wait $kumo_pid
	rc=$?
	kumo_pid=
	exec 3>&-
	ip netns del "${NS}0" 2>/dev/null
	ip netns del "${NS}1" 2>/dev/null
}

# ping and an HTTP fetch from namespace $2, checksum against the guest's.
traffic() {
	check "net-$1-ping" ip netns exec "$NS$2" busybox ping -c 3 -W 10 10.0.$(($2 + 2)).15
	rm -f "$T/blob"
	ip netns exec "$NS$2" python3 -c 'import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=120).read())' \
		http://10.0.$(($2 + 2)).15/blob "$T/blob"
	want=$(sed -n 's/^NET-SUM=\([0-9a-f]*\).*/\1/p' "$CON" | head -1)
	got=$(sha256sum "$T/blob" 2>/dev/null | cut -d' ' -f1)
	if [ -n "$want" ] && [ "$want" = "$got" ]; then
		pass "net-$1-http-fetch-checksum"
	else
		fail "net-$1-http-fetch-checksum" "guest ${want:-none}, fetched ${got:-nothing}"
		ip -n "$NS$2" -s link show kt$2
		ip -n "$NS$2" neigh
		gsh "cat /proc/net/dev; grep -i virtio /proc/interrupts"
	fi
}

if [ -n "${KUMO_NET_ONLY:-}" ]; then
	run_vm a ",vhost=on,queues=1" ",vhost=off,queues=2"
elif [ -c /dev/vhost-net ]; then
	run_vm a ",vhost=on,queues=1" ",vhost=off,queues=2"
	run_vm b ",vhost=off,queues=1" ",vhost=on,queues=2"
else
	echo "SKIP: net-vhost (no /dev/vhost-net)"
	run_vm a ",vhost=off,queues=1" ",vhost=off,queues=2"
fi
