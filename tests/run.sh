#!/bin/sh
# Runs kumo's test tiers and ends with "N passed, N failed".
#   KUMO_TIERS="unit kvm fuzz integration" (default), "slow" for the stock-kernel boot, or
#   "pending" for boots written but not yet run on a host with KVM (tests/integration/pending-*).
# Every test prints PASS:/FAIL:/SKIP: lines; this script only counts and summarises them.
cd "$(dirname "$0")/.." || exit 2
TIERS=${KUMO_TIERS:-unit kvm fuzz integration}
LOG=${KUMO_TEST_LOG:-tests/out}
mkdir -p "$LOG"
: > "$LOG/results"

run() { # name, command...
	name=$1; shift
	printf '== %s\n' "$name"
	"$@" > "$LOG/$name.out" 2>&1
	rc=$?
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
