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

# A usable /dev/kvm, or why not (this host's kernel may itself be a PVM guest, where kvm_pvm
# does not bind and there is no /dev/kvm).
have_kvm() { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }
no_kvm_reason() {
	if dmesg 2>/dev/null | grep -q 'kvm-pvm: this kernel is itself a kvm-pvm guest'; then
		echo "no /dev/kvm: this host's kernel is itself a PVM guest and kvm_pvm does not bind"
	else
		echo "no usable /dev/kvm on this host"
	fi
}
# need_kvm NAME: a test that boots a VM says SKIP (with the reason) and stops without /dev/kvm.
need_kvm() {
	have_kvm && return 0
	echo "SKIP: $1 ($(no_kvm_reason))"
	exit 0
}

# The guest image for boots in kumo on this host (KUMO_TEST_INITRD overrides): the ordinary
# 64-bit userspace, or on a PVM host, where 64-bit system calls and SSE in user code do not
# work (docs/pvm.md), the 32-bit one. Boots under QEMU TCG use initramfs.cpio on every host.
if [ -n "${KUMO_TEST_INITRD:-}" ]; then
	KUMO_INITRD=$KUMO_TEST_INITRD
elif [ -d /sys/module/kvm_pvm ]; then
	KUMO_INITRD=guest/out/initramfs-pvm.cpio
else
	KUMO_INITRD=guest/out/initramfs.cpio
fi

# boot_why CONSOLE STDERR PID: one line on why a guest did not get where a test waited for it
# (kumo running or gone, its last error line, the console's last line, the machine's available
# memory and kumo processes), for the FAIL line itself: a log that keeps only its tail shows it.
boot_why() {
	if kill -0 "$3" 2>/dev/null; then st="kumo still running"; else st="kumo gone"; fi
	e=$(tr -d '\r' < "$2" 2>/dev/null | grep -v '^ *$' | tail -n 1 | cut -c1-160)
	c=$(tr -d '\r' < "$1" 2>/dev/null | grep -v '^ *$' | tail -n 1 | cut -c1-160)
	m=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
	n=$(pgrep -c -x kumo)
	echo "$st; stderr: ${e:-(empty)}; console: ${c:-(empty)}; $m MiB available; $n kumo processes"
}
