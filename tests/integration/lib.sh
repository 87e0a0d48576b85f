# Helpers for integration tests: run kumo, then check what it printed.
# Each check prints "PASS: name" or "FAIL: name (why)"; tests/run.sh counts them.
KUMO=${KUMO:-./kumo}
OUT=${KUMO_TEST_LOG:-tests/out}
mkdir -p "$OUT"

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1${2:+ ($2)}"; }
check() { # name, command... : PASS if the command succeeds
	name=$1; shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
# log_has FILE REGEX
log_has() { grep -Eq -- "$2" "$1"; }
# Extended regex match against the console log, with the matching line shown on failure.
expect() { # name, file, regex
	if grep -Eq -- "$3" "$2"; then pass "$1"; else fail "$1" "no line matching /$3/ in $2"; fi
}
expect_not() { # name, file, regex
	if grep -Eq -- "$3" "$2"; then fail "$1" "$(grep -E -m1 -- "$3" "$2")"; else pass "$1"; fi
}
