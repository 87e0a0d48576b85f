#!/bin/sh
# Experiment (paper 000; not part of make check): two stock-kernel guests under kumo, each
# running webload over one read-only data disk of N files of FILE_KIB KiB, in two cases:
#   case 1: VM1 webload normal (uniform over all N files: low locality, never fits) vs VM2
#           webload burst over its first N2 files, HOT1 of them 100x as likely (a hot set that
#           does not fit in the equal split but fits with the memory VM1 can give)
#   case 2: VM1 the same vs VM2 burst with HOT2 hot files (high locality: fits already)
# In each, both VMs' balloons at SPLIT MiB (the equal split of BUDGET), caches dropped, then
# webload WARM+MEAS s (THREADS users each, THINK_MS between a user's requests, so both VMs
# offer about the same request rate, as the paper's fixed user populations): without a policy,
# and with kumo coord --policy cache --host-mem BUDGET. Each VM's and the whole system's exact
# hit ratio (RWF_NOWAIT) over the last MEAS s, and every REPORT_S s a row of the time series.
#   sh tests/experiments/cache.sh --data     (on the host, once: the data image, the observer)
#   tests/box/box run --timeout 2400 -- sh tests/experiments/cache.sh
# Writes $OUT/exp-cache.csv (a row per case and policy), $OUT/exp-cache-series.csv (per VM
# every REPORT_S s: requests, hits, balloon target and actual, Cached, Active/Inactive(file),
# file refaults and workingset activations) and $OUT/exp-cache-CASE-POLICY.jsonl (the
# coordinator's logs; the baseline runs tests/experiments/observe.c alone, which acts on nothing).
#
# The defaults are the box's scale (TCG: every guest instruction is translated): 64 KiB files,
# guests of 448 MiB, a 512 MiB budget. Paper scale, for a host with KVM (docs/experiments/cache.md):
#   FILE_KIB=256 N=163840 N2=12000 HOT1=10000 HOT2=256 MEM=3584M SPLIT=2048 BUDGET=4G
#   THREADS=10 THINK_MS=1000 WARM=1800 MEAS=1800
# KUMO is the binary (./kumo), RUN_OPTS more `kumo run` options (e.g. --no-seccomp).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
export FILE_KIB=${FILE_KIB:-64}	# file size, KiB
export N=${N:-32768}		# files on the data disk; VM1 reads all of them (2 GiB)
IMG=${IMG:-$OUT/exp-data.ext4}
export OBSERVE=${OBSERVE:-$OUT/exp-observe.so}
observer() {
	[ -s "$OBSERVE" ] && [ "$OBSERVE" -nt tests/experiments/observe.c ] && return 0
	cc -shared -fPIC -O2 -I. -o "$OBSERVE" tests/experiments/observe.c
}
if [ "$1" = --data ]; then
	observer || exit 1
	exec python3 tests/experiments/guests.py data "$N" "$IMG" "$FILE_KIB"
fi
need_kvm exp-cache
[ -s "$IMG" ] || { echo "FAIL: exp-cache: no $IMG (sh tests/experiments/cache.sh --data)"; exit 1; }
grep -qx "n=$N kib=$FILE_KIB" "$IMG.stamp" 2>/dev/null ||
	{ echo "FAIL: exp-cache: $IMG is not N=$N FILE_KIB=$FILE_KIB (sh tests/experiments/cache.sh --data)"; exit 1; }
observer || { echo "FAIL: exp-cache: cannot build $OBSERVE"; exit 1; }
export MEM=${MEM:-448M}		# each guest's RAM
export SPLIT=${SPLIT:-256}	# MiB: the equal split, each VM's balloon target at the start
export BUDGET=${BUDGET:-512M}	# kumo coord --host-mem: what the two targets may add up to
export N2=${N2:-8192}		# VM2's files (the first N2 of the disk)
export HOT1=${HOT1:-4480}	# case 1: VM2's hot files (280 MiB: fits in 384, not in 256)
export HOT2=${HOT2:-512}	# case 2: VM2's hot files (32 MiB)
export THREADS=${THREADS:-4} THINK_MS=${THINK_MS:-20}
export WARM=${WARM:-120} MEAS=${MEAS:-120} REPORT_S=${REPORT_S:-10}
export SETTLE_S=${SETTLE_S:-90}	# at most this long for the balloons to reach SPLIT
export CASES=${CASES:-case1 case2}
echo "exp-cache: FILE_KIB=$FILE_KIB N=$N N2=$N2 HOT1=$HOT1 HOT2=$HOT2 MEM=$MEM SPLIT=$SPLIT" \
	"BUDGET=$BUDGET THREADS=$THREADS THINK_MS=$THINK_MS WARM=$WARM MEAS=$MEAS CASES='$CASES'" \
	"KUMO=$KUMO"
exec python3 tests/experiments/guests.py cache "$OUT" "$IMG"
