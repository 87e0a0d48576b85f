#!/bin/sh
# Experiment (paper 002; not part of make check): one stock-kernel guest (MEM) under kumo coord
# --policy margin --log, running filereader over a read-only data disk of N files of 1 MiB with
# the file set K following the schedule KS (phase PHASE_S s each; paper: 500 -> 5000 -> 2000,
# here scaled down), then idle TAIL_S s. Run in the box:
#   sh tests/experiments/cache.sh --data      (the data image, once, on the host)
#   tests/box/box run --timeout 1800 -- sh tests/experiments/margin.sh
# Writes $OUT/exp-margin.jsonl (the coordinator's log) and $OUT/exp-margin.csv: a row per
# sample, t from filereader's start, working set (K MiB), Committed_AS, Cached, Active(file),
# the balloon target and the guest's actual, in MiB.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm exp-margin
N=${N:-1000}
IMG=${IMG:-$OUT/exp-data.ext4}
[ -s "$IMG" ] || { echo "FAIL: exp-margin: no $IMG (sh tests/experiments/cache.sh --data)"; exit 1; }
MEM=${MEM:-512M}
KS=${KS:-50,300,100,100}
PHASE_S=${PHASE_S:-75}
export TAIL_S=${TAIL_S:-60}
exec python3 tests/experiments/guests.py margin "$OUT" "$IMG" "$MEM" "$N" "$KS" "$PHASE_S"
