#!/bin/sh
# Builds every libFuzzer target in tests/fuzz (clang, ASan+UBSan) and runs each for a fixed
# number of inputs: FUZZ_RUNS (default 100000 in `make check`; `make fuzz` runs longer).
# A target's sources: its own file plus the kumo objects named on its "// fuzz-sources:" line.
cd "$(dirname "$0")/../.." || exit 2
RUNS=${FUZZ_RUNS:-100000}
OUT=tests/fuzz/out
mkdir -p "$OUT"
status=0
for f in tests/fuzz/fuzz-*.c; do
	name=$(basename "$f" .c)
	srcs=$(sed -n 's|^// fuzz-sources: *||p' "$f")
	if ! clang -g -O1 -std=gnu11 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -o "$OUT/$name" "$f" $srcs \
		-luring -lnuma -lfdt -llz4 -lz -llzma -lzstd -ljson-c -lcrypto -lseccomp -lpthread -lm > "$OUT/$name.build" 2>&1; then
		echo "FAIL: $name (build)"; cat "$OUT/$name.build"; status=1; continue
	fi
	mkdir -p "$OUT/$name.corpus"
	if "$OUT/$name" -runs="$RUNS" -max_len=65536 -artifact_prefix="$OUT/$name-" -rss_limit_mb=4096 "$OUT/$name.corpus" \
		> "$OUT/$name.log" 2>&1; then
		echo "PASS: $name ($(grep -o 'Done [0-9]* runs' "$OUT/$name.log"))"
	else
		echo "FAIL: $name"; tail -n 30 "$OUT/$name.log"; status=1
	fi
done
exit $status
