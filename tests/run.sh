#!/bin/sh
# Runs kumo's test tiers and ends with "N passed, N failed".
#   KUMO_TIERS="unit kvm fuzz integration" (default), "slow" for the bigger stock-kernel boot
#   (tests/integration/slow-*), or "pending" for tests written but not yet run
#   (tests/integration/pending-*).
# Every test prints PASS:/FAIL:/SKIP: lines; this script only counts and summarises them.
# Tests that need KVM (tests/kvm/*, integration scripts calling need_kvm) run in the KVM box
# (tests/box/box, docs/box.md) where the host's /dev/kvm is missing or PVM: all of them in one
# box boot, after the host's own tests, their results counted here under "box/".
# KUMO_BOX=auto|1|0 (tests/box/box want); KUMO_BOX_TIMEOUT (s) bounds that boot.
cd "$(dirname "$0")/.." || exit 2
TIERS=${KUMO_TIERS:-unit kvm fuzz integration}
LOG=${KUMO_TEST_LOG:-tests/out}
mkdir -p "$LOG"
: > "$LOG/results"
: > "$LOG/durations"	# "NAME SECONDS" per test, for finding what makes a run long

# WHERE: all (native), host (KVM tests deferred to the box), kvm (inside the box: only those).
if [ -n "${KUMO_IN_BOX:-}" ]; then
	WHERE=kvm
elif why=$(bash tests/box/box want); then
	WHERE=host
	echo "== KVM tests run in the box: $why"
else
	WHERE=all
fi
deferred=0
needs_kvm() { case $1 in tests/kvm/*) return 0;; esac; [ -f "$1" ] && grep -q '^need_kvm ' "$1"; }

# guest_crash MARK: a console the test wrote (newer than MARK) where the guest kernel reported
# a crash or an RCU stall: "FILE: LINE", the console kept as FILE.try1. In the box such crashes
# have come from the nested SVM that TCG emulates (registers lost on an interrupt's return,
# double faults in the syscall gap, docs/box.md), once in some tens of boots, at any point of
# a boot; a stall from a box so slow that a vCPU did not run for 21 s.
guest_crash() {
	for c in "$LOG"/*.console "$LOG"/*console*.log; do
		[ -f "$c" ] && [ "$c" -nt "$1" ] || continue
		l=$(tr -d '\r' < "$c" | grep -m1 -E "$GUEST_CRASH")
		[ -n "$l" ] || continue
		cp "$c" "$c.try1"
		echo "$c: $l"
		return 0
	done
	return 1
}
GUEST_CRASH='(BUG: |Oops: |Kernel panic - not syncing|traps: PANIC: double fault|rcu: INFO: rcu_.* detected stalls)'

# In the box every test is bounded (KUMO_BOX_TEST_TIMEOUT s, whole process group): one that
# hangs fails alone instead of ending the box with the tests after it unrun.
bounded() {
	if [ "$WHERE" = kvm ]; then
		timeout -k 10 "${KUMO_BOX_TEST_TIMEOUT:-600}" "$@"
	else
		"$@"
	fi
}

run() { # name, command...
	name=$1; shift
	# The test's file is the first argument that names one.
	for a in "$@"; do [ -f "$a" ] && break; done
	if needs_kvm "$a"; then
		[ "$WHERE" = host ] && { deferred=$((deferred + 1)); return; }
	else
		[ "$WHERE" = kvm ] && return
	fi
	printf '== %s\n' "$name"
	t0=$(date +%s)
	# in the box: consoles newer than .start are the test's (guest_crash)
	[ "$WHERE" = kvm ] && { touch "$LOG/.start"; sleep 1; }
	bounded "$@" > "$LOG/$name.out" 2>&1
	rc=$?
	# In the box a failing test runs once more (said on a RETRY line that CI prints, the first
	# try's output kept): nested guests there crash, stall or hang now and then without kumo
	# at fault (docs/box.md); a failure of kumo's fails twice.
	if [ "$WHERE" = kvm ] && { [ $rc -ne 0 ] || grep -q '^FAIL: ' "$LOG/$name.out"; }; then
		why=$(guest_crash "$LOG/.start") || why="no guest crash in its consoles: $(
			grep -m1 '^FAIL: ' "$LOG/$name.out" | cut -c1-160)${rc:+, status $rc}"
		echo "$name: RETRY: it failed ($why); the first try's" \
			"output is $LOG/$name.try1.out" | tee -a "$LOG/retries"
		mv "$LOG/$name.out" "$LOG/$name.try1.out"
		touch "$LOG/.start"; sleep 1
		bounded "$@" > "$LOG/$name.out" 2>&1
		rc=$?
	fi
	{ [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && [ "$WHERE" = kvm ] &&
		echo "FAIL: timed out after ${KUMO_BOX_TEST_TIMEOUT:-600} s" >> "$LOG/$name.out"
	echo "$name $(($(date +%s) - t0))" >> "$LOG/durations"
	grep -E '^(PASS|FAIL|SKIP): ' "$LOG/$name.out" | sed "s|^|$name: |" | tee -a "$LOG/results"
	if [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$LOG/$name.out"; then
		# A crash or an early exit is a failure even if no case said so.
		echo "$name: FAIL: exited with status $rc" | tee -a "$LOG/results"
	fi
	if grep -q '^FAIL: ' "$LOG/$name.out" || [ $rc -ne 0 ]; then
		echo "---- $LOG/$name.out (last 40 lines)"; tail -n 40 "$LOG/$name.out"; echo "----"
	fi
}

for tier in $TIERS; do
	case $tier in
	unit)
		for t in tests/unit/test-*; do
			case $t in *.c|*.o|*.d) continue;; esac
			run "unit-$(basename "$t")" "$t"
		done ;;
	kvm)
		for t in tests/kvm/test-*; do
			case $t in *.c|*.o|*.d) continue;; esac
			run "kvm-$(basename "$t")" "$t"
		done ;;
	fuzz)
		run fuzz sh tests/fuzz/run.sh ;;
	integration)
		for t in tests/integration/test-*.sh; do
			[ -e "$t" ] || continue
			run "integration-$(basename "$t" .sh)" sh "$t"
		done ;;
	slow|pending)
		for t in tests/integration/$tier-*.sh; do
			[ -e "$t" ] || continue
			run "$(basename "$t" .sh)" sh "$t"
		done ;;
	esac
done

if [ "$deferred" -gt 0 ]; then
	printf '== box: %d tests that need KVM, in one box boot\n' "$deferred"
	rm -rf "$LOG/box"
	KUMO_TEST_LOG=$LOG/box KUMO_TIERS=$TIERS bash tests/box/box run --numa "${KUMO_BOX_NUMA:-0}" \
		--out "$LOG" --timeout "${KUMO_BOX_TIMEOUT:-3600}" -- sh tests/run.sh > "$LOG/box.out" 2>&1
	rc=$?
	tail -n 3 "$LOG/box.out"
	sed -n 's#^\([^ :]*\): \(PASS\|FAIL\|SKIP\): #box/\1: \2: #p' "$LOG/box/results" 2>/dev/null >> "$LOG/results"
	if [ $rc -ge 124 ]; then
		echo "box: FAIL: $(sed -n 's/^box: FAIL: //p' "$LOG/box.out" | tail -1)" | tee -a "$LOG/results"
	elif [ $rc -ne 0 ] && ! grep -q '^box/.*: FAIL: ' "$LOG/results"; then
		echo "box: FAIL: tests/run.sh in the box exited with status $rc" | tee -a "$LOG/results"
	fi
	grep '^box/' "$LOG/results"
	sed 's#^#box/#' "$LOG/box/retries" 2>/dev/null
	echo "box: seconds per test: $(sort -k2 -n -r "$LOG/box/durations" 2>/dev/null | head -n 8 | tr '\n' ' ')"
	echo "box: $(grep -c '^box/' "$LOG/results") results from the box; boots: $(wc -l < "$LOG/box-boots.log") so far ($LOG/box-boots.log)"
fi

# The failures again, last, where a log that keeps only its tail still shows them.
if grep -q ': FAIL: ' "$LOG/results"; then
	echo "---- failed:"
	grep ': FAIL: ' "$LOG/results"
fi
passed=$(grep -c ': PASS: ' "$LOG/results")
failed=$(grep -c ': FAIL: ' "$LOG/results")
skipped=$(grep -c ': SKIP: ' "$LOG/results")
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
