#!/bin/sh
# `make bench`: measures kumo side by side with its peers and writes docs/benchmarks.md.
cd "$(dirname "$0")/../.." || exit 2
# Every table has kumo rows; without KVM there is nothing to put beside the peers, and the
# measured docs/benchmarks.md stays as it is.
if ! [ -c /dev/kvm ] || ! [ -w /dev/kvm ]; then
	echo "bench: kumo needs /dev/kvm and this host has none usable; docs/benchmarks.md left unchanged" >&2
	exit 1
fi
exec python3 tests/bench/run.py "$@"
