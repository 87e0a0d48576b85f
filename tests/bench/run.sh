#!/bin/sh
# `make bench`: measures kumo side by side with its peers and writes docs/benchmarks.md.
cd "$(dirname "$0")/../.." || exit 2
exec python3 tests/bench/run.py "$@"
