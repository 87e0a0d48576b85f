#!/bin/sh
# `make bench`: measures kumo side by side with its peers and writes docs/benchmarks.md
# (tests/bench/run.py). Where the host's /dev/kvm is missing or PVM (tests/box/box want;
# KUMO_BOX=0 runs here anyway), the VM measurements run inside the KVM box, in one box boot,
# and leave their results in the output folder; the host-side device rows run on the host.
# BENCH_BOX_CPUS (2), BENCH_BOX_MEM (4G), BENCH_BOX_TIMEOUT (s, 4800: the snapshot section adds ~25 min) size that box;
# BENCH_* variables scale the measurements (tests/bench/run.py); KUMO_BENCH_ONLY=snapshot runs
# only the snapshot/restore section and replaces just that section of docs/benchmarks.md;
# KUMO_BENCH_ONLY=migrate likewise the live migration section (tests/bench/migrate.py);
# KUMO_BENCH_ONLY=startup only exec → first KVM_RUN, own memory and the boots, replacing
# those rows of the main table.
cd "$(dirname "$0")/../.." || exit 2
BENCH_T0=$(date +%s)
export BENCH_T0

if why=$(bash tests/box/box want); then
	out=tests/out/bench
	mkdir -p "$out" || exit 2
	rm -f "$out/host.json" "$out/vm.json"
	echo "bench: VM measurements in the KVM box ($why); device rows on the host"
	if [ -z "$KUMO_BENCH_ONLY" ]; then
		python3 tests/bench/run.py --part host "$out/host.json" || exit 1
	fi
	# The box passes KUMO_* variables only: BENCH_* go in through env.
	bash tests/box/box run --cpus "${BENCH_BOX_CPUS:-2}" --mem "${BENCH_BOX_MEM:-4G}" \
		--timeout "${BENCH_BOX_TIMEOUT:-4800}" -- \
		env $(env | grep '^BENCH_[A-Z_]*=[^ ]*$') python3 tests/bench/run.py --part vm "$out/vm.json"
	rc=$?
	if ! [ -s "$out/vm.json" ]; then
		echo "bench: the box left no results (status $rc); docs/benchmarks.md left unchanged" >&2
		exit 1
	fi
	[ $rc -eq 0 ] || echo "bench: the box ended with status $rc; writing what it measured" >&2
	BENCH_BOX_WHY=$why python3 tests/bench/run.py --write $(ls "$out/host.json" 2>/dev/null) "$out/vm.json" || exit 1
	exit $rc
fi

# Every table has kumo rows; without KVM there is nothing to put beside the peers, and the
# measured docs/benchmarks.md stays as it is.
if ! [ -c /dev/kvm ] || ! [ -w /dev/kvm ]; then
	echo "bench: kumo needs /dev/kvm and this host has none usable; docs/benchmarks.md left unchanged" >&2
	exit 1
fi
exec python3 tests/bench/run.py
