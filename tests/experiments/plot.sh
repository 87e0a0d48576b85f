#!/bin/sh
# Plots of the real-guest experiments from their CSV files (gnuplot; apt-get install gnuplot-nox):
#   sh tests/experiments/plot.sh [margin.csv [cache-series.csv [DIR]]]
# defaults docs/experiments/margin-real.csv and cache-real-series.csv (copies of the scripts'
# tests/out/exp-margin.csv and exp-cache-series.csv), PNGs into DIR (docs/experiments):
#   margin-real.png  paper 002: working set, Committed_AS, Cached, the balloon target and actual
#   cache-real.png   paper 000: per case, each VM's balloon target and hit ratio per interval,
#                    with and without the cache policy
cd "$(dirname "$0")/../.." || exit 2
M=${1:-docs/experiments/margin-real.csv}
C=${2:-docs/experiments/cache-real-series.csv}
D=${3:-docs/experiments}
command -v gnuplot >/dev/null || { echo "plot.sh: no gnuplot (apt-get install gnuplot-nox)"; exit 1; }
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
if [ -s "$M" ]; then
	gnuplot <<EOF || exit 1
set terminal pngcairo size 1000,560 font ",10" noenhanced
set output "$D/margin-real.png"
set datafile separator ","
set key outside right top
set xlabel "seconds from filereader's start"
set ylabel "MiB"
set grid
set title "margin policy (paper 002) in the box: $(basename "$M")"
plot "$M" using 1:2 with steps lw 2 title "working set (K files)", \
     "" using 1:6 with lines lw 2 title "balloon target", \
     "" using 1:7 with lines lw 1 dt 2 title "actual", \
     "" using 1:4 with lines lw 1 title "Cached", \
     "" using 1:5 with lines lw 1 dt 3 title "Active(file)", \
     "" using 1:3 with lines lw 1 title "Committed_AS"
EOF
	echo "plot.sh: $D/margin-real.png"
fi
if [ -s "$C" ]; then
	# Per case and policy (T/CASE-POLICY.dat): t, VM1 and VM2 targets, VM1, VM2 and system
	# hit ratio in the interval.
	awk -F, -v T="$T" 'NR > 1 {
		k = $1 "-" $2; b = int($4 / 5 + 0.5) * 5
		if (!((k, b) in seen)) { seen[k, b] = 1; order[k] = order[k] " " b }
		req[k, b, $3] = $5; hit[k, b, $3] = $6; tgt[k, b, $3] = $7; keys[k] = 1
	}
	END {
		for (k in keys) {
			f = T "/" k ".dat"; n = split(order[k], bs, " ")
			for (i = 1; i <= n; i++) {
				b = bs[i]; r1 = req[k, b, "vm1"]; r2 = req[k, b, "vm2"]
				h1 = hit[k, b, "vm1"]; h2 = hit[k, b, "vm2"]
				printf "%s %s %s %s %s %s\n", b, tgt[k, b, "vm1"], tgt[k, b, "vm2"],
					(r1 > 0 ? h1 / r1 : "NaN"), (r2 > 0 ? h2 / r2 : "NaN"),
					(r1 + r2 > 0 ? (h1 + h2) / (r1 + r2) : "NaN") > f
			}
		}
	}' "$C"
	{
		echo 'set terminal pngcairo size 1200,800 font ",10" noenhanced'
		echo "set output '$D/cache-real.png'"
		echo "set multiplot layout 2,2 title 'cache policy (paper 000) in the box: $(basename "$C")'"
		echo "set grid; set key bottom right; set xlabel 'seconds from the start of webload'"
		for c in case1 case2; do
			n=$T/$c-none.dat k=$T/$c-cache.dat
			[ -s "$n" ] && [ -s "$k" ] || continue
			echo "set title '$c: balloon targets'; set ylabel 'MiB'; set yrange [0:*]"
			echo "plot '$n' using 1:2 with lines dt 2 lw 2 title 'VM1, equal split'," \
				"'$n' using 1:3 with lines dt 2 lw 2 title 'VM2, equal split'," \
				"'$k' using 1:2 with lines lw 2 title 'VM1, cache'," \
				"'$k' using 1:3 with lines lw 2 title 'VM2, cache'"
			echo "set title '$c: hit ratio per interval'; set ylabel 'hits / requests'; set yrange [0:1]"
			echo "plot '$n' using 1:4 with lines dt 2 title 'VM1, equal split'," \
				"'$n' using 1:5 with lines dt 2 title 'VM2, equal split'," \
				"'$n' using 1:6 with lines dt 2 lw 3 title 'system, equal split'," \
				"'$k' using 1:4 with lines title 'VM1, cache'," \
				"'$k' using 1:5 with lines title 'VM2, cache'," \
				"'$k' using 1:6 with lines lw 3 title 'system, cache'"
		done
		echo 'unset multiplot'
	} | gnuplot || exit 1
	echo "plot.sh: $D/cache-real.png"
fi
