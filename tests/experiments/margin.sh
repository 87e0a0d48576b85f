#!/bin/sh
# Experiment (paper 002; not part of make check): one stock-kernel guest (MEM) under kumo coord
# --policy margin --log, running filereader over the read-only data disk (N files of FILE_KIB
# KiB, made by cache.sh --data) with the file set K following the schedule KS (PHASE_S s each),
# then idle TAIL_S s. The workload starts once the balloon holds the target the policy set for
# the idle guest (at most SETTLE_S s). Run in the box:
#   sh tests/experiments/cache.sh --data      (the data image, once, on the host)
#   tests/box/box run --timeout 1800 -- sh tests/experiments/margin.sh
# Writes $OUT/exp-margin.jsonl (the coordinator's log) and $OUT/exp-margin.csv: a row per
# sample, t from filereader's start, working set (K files, MiB), Committed_AS, Cached,
# Active(file), the balloon target and the guest's actual, the margin (MiB), the file refaults
# since the last sample and memory PSI some avg10.
#
# The defaults are the box's scale: the paper's 500 -> 5000 -> 2000 files halved, of 64 KiB
# (16 -> 156 -> 62 MiB) in a 384 MiB guest, 2 minutes a phase. Paper scale, on a host with KVM:
#   FILE_KIB=1024 N=5000 KS=500,5000,2000 MEM=3G PHASE_S=600 TAIL_S=600
# KUMO is the binary (./kumo), RUN_OPTS more `kumo run` options (e.g. --no-seccomp).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm exp-margin
export FILE_KIB=${FILE_KIB:-64} N=${N:-32768}
IMG=${IMG:-$OUT/exp-data.ext4}
[ -s "$IMG" ] || { echo "FAIL: exp-margin: no $IMG (sh tests/experiments/cache.sh --data)"; exit 1; }
grep -qx "n=$N kib=$FILE_KIB" "$IMG.stamp" 2>/dev/null ||
	{ echo "FAIL: exp-margin: $IMG is not N=$N FILE_KIB=$FILE_KIB (sh tests/experiments/cache.sh --data)"; exit 1; }
export MEM=${MEM:-384M}
export KS=${KS:-250,2500,1000}
export PHASE_S=${PHASE_S:-120} TAIL_S=${TAIL_S:-90} SETTLE_S=${SETTLE_S:-120}
echo "exp-margin: FILE_KIB=$FILE_KIB N=$N KS=$KS MEM=$MEM PHASE_S=$PHASE_S TAIL_S=$TAIL_S KUMO=$KUMO"
exec python3 tests/experiments/guests.py margin "$OUT" "$IMG"
