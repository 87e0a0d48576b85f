#!/bin/sh
# Every thread of a running kumo is under a seccomp filter (docs/security.md): /proc's
# "Seccomp: 2" for each task, with a disk, balloon, console port, control socket and agent relay
# (their workers started by the guest's drivers), and with no devices; the control socket, a
# quit and SIGTERM still work under the filters, and nothing was refused. --no-seccomp leaves
# them unfiltered. Prints kumo's own memory (Pss of every mapping but guest RAM) for both
# configurations (issue 15's goals: 2 MiB without devices, 2.5 MiB with them).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm seccomp-boots
KERNEL=${KUMO_TEST_KERNEL:-guest/out/test-bzImage}
INITRD=$KUMO_INITRD
DATA=${KUMO_TEST_DATA:-guest/out/data.ext4}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# wait_line FILE REGEX PID: up to KUMO_BOOT_TIMEOUT s for the guest to print it, while kumo runs.
wait_line() {
	n=0
	while [ $n -lt "${KUMO_BOOT_TIMEOUT:-1500}" ]; do
		tr -d '\r' < "$1" 2>/dev/null | grep -Eq -- "$2" && return 0
		kill -0 "$3" 2>/dev/null || return 1
		sleep 1
		n=$((n + 1))
	done
	return 1
}

# The kumo process under `timeout`.
child_of() { cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{ print $1 }'; }

# seccomp_states PID: "NAME=MODE" for every thread.
seccomp_states() {
	for s in /proc/"$1"/task/*/status; do
		awk '/^Name:/ { n = $2 } /^Seccomp:/ { m = $2 } END { print n "=" m }' "$s"
	done
}

# caps_states PID: "NAME=CapEff/CapBnd" for every thread.
caps_states() {
	for s in /proc/"$1"/task/*/status; do
		awk '/^Name:/ { n = $2 } /^CapEff:/ { e = $2 } /^CapBnd:/ { b = $2 }
		     END { print n "=" e "/" b }' "$s"
	done
}

# own_kib PID: Pss of every mapping but the guest's memfd (kumo-ram-node*), in KiB.
own_kib() {
	awk '/^[0-9a-f]+-[0-9a-f]+ / { ram = ($0 ~ /kumo-ram-node/) }
	     /^Pss:/ { if (!ram) s += $2 } END { print s }' "/proc/$1/smaps"
}

# --- with devices: disk, balloon, console port, control socket, agent relay -----------------
CON=$OUT/seccomp-devices.console
ERR=$OUT/seccomp-devices.stderr
rm -f "$CON"
timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" \
	--cpus 2 --mem 256M --seccomp --disk "$DATA,ro" --balloon \
	--console-socket "$T/con.sock" --control "$T/ctl.sock" --agent \
	--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info,data kumo.data=/dev/vda" \
	< /dev/null > "$CON" 2> "$ERR" &
tpid=$!
if wait_line "$CON" '^KUMO-CHECK done' $tpid; then
	sleep 2	# the balloon's and console's workers start once their drivers are up
	pid=$(child_of $tpid)
	states=$(seccomp_states "$pid")
	echo "threads: $(echo $states)"
	echo "own memory, disk + balloon + console + control + agent relay: $(own_kib "$pid") KiB"
	if echo "$states" | grep -qv '=2$'; then
		fail seccomp-every-thread-filtered "$(echo $states)"
	else
		pass seccomp-every-thread-filtered
	fi
	# Capabilities: none, or only CAP_NET_ADMIN (bit 12) where a thread may start the net
	# worker (vCPUs, control), with CAP_SETPCAP (bit 8) for its children to empty their
	# bounding sets; the device workers here (started by vCPU threads) none at all.
	caps=$(caps_states "$pid")
	echo "capabilities (effective/bounding): $(echo $caps)"
	if echo "$caps" | grep -Ev '=0000000000000000/0000000000000000$|=0000000000001100/0000000000001100$' | grep -q .; then
		fail seccomp-capabilities-dropped "$(echo $caps)"
	else
		pass seccomp-capabilities-dropped
	fi
	check seccomp-workers-no-capabilities sh -c "! echo '$caps' | grep -E '^kumo-(blk|balloon|console)=' | grep -v '=0000000000000000/0000000000000000'"
	for t in kumo-vcpu0 kumo-vcpu1 kumo-blk kumo-balloon kumo-console; do
		check "seccomp-thread-$t-running" sh -c "echo '$states' | grep -q '^$t='"
	done
	check seccomp-control-status $KUMO ctl "$T/ctl.sock" status
	check seccomp-control-stats $KUMO ctl "$T/ctl.sock" stats
	check seccomp-control-balloon $KUMO ctl "$T/ctl.sock" balloon-set target=$((200 << 20))
	check seccomp-control-quit $KUMO ctl "$T/ctl.sock" quit
else
	fail seccomp-devices-guest-up "no KUMO-CHECK done: $(boot_why "$CON" "$ERR" $tpid)"
	kill $tpid
fi
wait $tpid
rc=$?
grep -E 'after .* s \(exit status' "$ERR"
check seccomp-devices-quit-exit-0 [ $rc -eq 0 ]
expect_not seccomp-devices-nothing-refused "$ERR" 'forbidden system call'
expect seccomp-devices-data-disk "$CON" 'KUMO-CHECK data_mount_errno=0'

# --- no devices, filtered and not: SIGTERM ends it (status 143) -------------------------------
for mode in on off; do
	CON=$OUT/seccomp-bare-$mode.console
	ERR=$OUT/seccomp-bare-$mode.stderr
	rm -f "$CON"
	flag=--seccomp; [ $mode = off ] && flag=--no-seccomp
	timeout "${KUMO_BOOT_TIMEOUT:-1500}" $KUMO run --kernel "$KERNEL" --initrd "$INITRD" \
		--cpus 1 --mem 256M $flag \
		--cmdline "panic=-1 rdinit=/sbin/kumo-probe kumo.probe=info" \
		< /dev/null > "$CON" 2> "$ERR" &
	tpid=$!
	if wait_line "$CON" '^KUMO-CHECK done' $tpid; then
		sleep 1
		pid=$(child_of $tpid)
		states=$(seccomp_states "$pid")
		echo "seccomp $mode, no devices: threads: $(echo $states); own memory: $(own_kib "$pid") KiB"
		want=2; [ $mode = off ] && want=0
		if echo "$states" | grep -qv "=$want\$"; then
			fail "seccomp-bare-$mode-mode-$want" "$(echo $states)"
		else
			pass "seccomp-bare-$mode-mode-$want"
		fi
		kill -TERM "$pid"
	else
		fail "seccomp-bare-$mode-guest-up" "no KUMO-CHECK done: $(boot_why "$CON" "$ERR" $tpid)"
		kill $tpid
	fi
	wait $tpid
	rc=$?
	check "seccomp-bare-$mode-sigterm-exit-143" [ $rc -eq 143 ]
	expect_not "seccomp-bare-$mode-nothing-refused" "$ERR" 'forbidden system call'
done
