#!/bin/sh
# Experiment (paper 000; not part of make check): two stock-kernel guests under kumo, each
# running webload over a read-only data disk of N files of 1 MiB, in two cases:
#   case 1: VM1 webload normal (uniform over N: low locality) vs VM2 webload burst (a hot set
#           of HOT1 files 100x as likely: pays off if it gets more memory)
#   case 2: VM1 the same vs VM2 a high-locality burst (HOT2 hot files: fits already)
# and in each, both VMs' balloons at SPLIT MiB (the equal split of the host budget), caches
# dropped, then webload WARM+MEAS s: without a policy, and with kumo coord --policy cache
# --host-mem BUDGET. Each VM's and the whole system's exact hit ratio (RWF_NOWAIT) over the last
# MEAS s. Run in the box (the data image is made first, on the host, if it is missing):
#   sh tests/experiments/cache.sh --data
#   tests/box/box run --timeout 2400 -- sh tests/experiments/cache.sh
# Writes $OUT/exp-cache.csv and $OUT/exp-cache-CASE-cache.jsonl (the coordinator's logs).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
N=${N:-1000}
IMG=${IMG:-$OUT/exp-data.ext4}
if [ "$1" = --data ]; then
	exec python3 tests/experiments/guests.py data "$N" "$IMG"
fi
need_kvm exp-cache
[ -s "$IMG" ] || { echo "FAIL: exp-cache: no $IMG (sh tests/experiments/cache.sh --data)"; exit 1; }
MEM=${MEM:-512M}
SPLIT=${SPLIT:-320}
BUDGET=${BUDGET:-640M}
WARM=${WARM:-60}
MEAS=${MEAS:-90}
HOT1=${HOT1:-300}
HOT2=${HOT2:-32}
exec python3 tests/experiments/guests.py cache "$OUT" "$IMG" "$MEM" "$SPLIT" "$BUDGET" \
	"$WARM" "$MEAS" "mode=normal n=$N" "mode=burst n=$N hot=$HOT1" "mode=burst n=$N hot=$HOT2"
