#!/bin/sh
# `kumo run` on bad input: a one-line error naming the problem, exit status 2, no crash.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

bad() { # name, expected-message-regex, kumo args...
	name=$1; re=$2; shift 2
	$KUMO run "$@" > "$T/out" 2> "$T/err" < /dev/null
	rc=$?
	if [ $rc -eq 2 ] && grep -Eq -- "$re" "$T/err"; then
		pass "$name"
	elif ! have_kvm && grep -q 'cannot open /dev/kvm' "$T/err"; then
		# kumo reads the kernel into guest memory, which it creates after the VM.
		echo "SKIP: $name ($(no_kvm_reason))"
	else
		fail "$name" "exit $rc, stderr: $(head -c 300 "$T/err")"
	fi
}

head -c 100 /dev/urandom > "$T/random"
: > "$T/empty"
printf 'MZ' > "$T/tiny"
KERNEL=guest/out/test-bzImage
[ -f "$KERNEL" ] || KERNEL=guest/out/stock-vmlinuz

bad cli-missing-kernel 'kernel /nonexistent: No such file' --kernel /nonexistent
bad cli-kernel-is-dir 'not a regular file' --kernel /tmp
bad cli-empty-kernel 'kernel .*empty: ' --kernel "$T/empty"
bad cli-not-a-kernel 'not an x86-64 Linux kernel' --kernel "$T/random"
bad cli-truncated-header 'truncated' --kernel "$T/tiny"
bad cli-bad-mem '--mem lots' --kernel "$KERNEL" --mem lots
bad cli-bad-cpus '--cpus 0' --kernel "$KERNEL" --cpus 0
bad cli-unknown-option 'unknown option --frobnicate' --kernel "$KERNEL" --frobnicate
bad cli-no-kernel '--kernel is required'
if [ -f "$KERNEL" ]; then
	size=$(stat -c %s "$KERNEL")
	head -c $((size / 2)) "$KERNEL" > "$T/half"
	bad cli-truncated-kernel 'truncated|corrupt' --kernel "$T/half"
	# Corrupt the start of the compressed payload (magic and first block header; LZ4's legacy
	# format has no checksum, so damage deeper inside cannot be detected by anyone).
	setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$KERNEL" | tr -d ' ')
	payload_off=$(od -An -tu4 -j $((0x248)) -N4 "$KERNEL" | tr -d ' ')
	cp "$KERNEL" "$T/corrupt"
	printf '\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377' |
		dd of="$T/corrupt" bs=1 seek=$(( (setup_sects + 1) * 512 + payload_off + 4 )) \
			conv=notrunc 2>/dev/null
	bad cli-corrupt-payload 'corrupt|truncated' --kernel "$T/corrupt"
	head -c $((200 * 1024 * 1024)) /dev/zero > "$T/bigrd"
	bad cli-initrd-too-big 'initrd .*does not fit' --kernel "$KERNEL" --initrd "$T/bigrd" --mem 64M
fi
# Virtual NUMA layouts that cannot be built on this host are refused before anything starts.
bad cli-numa-no-host-node 'host node 7 does not exist' --kernel "$KERNEL" --cpus 2 \
	--numa node=0,cpus=0-1,mem=256M,host-node=7
bad cli-numa-mem-sum 'adds up to 128M, --mem is 256M' --kernel "$KERNEL" --cpus 2 \
	--numa node=0,cpus=0,mem=64M --numa node=1,cpus=1,mem=64M
bad cli-numa-distance 'must be 11 to 254' --kernel "$KERNEL" --cpus 2 \
	--numa node=0,cpus=0 --numa node=1,cpus=1 --numa-distance 0:1=10
bad cli-cpu-pin-no-cpu 'host CPU 4095 does not exist' --kernel "$KERNEL" --cpu-pin 0=4095
# --hugepages with none reserved: one line that says what to reserve (exit 1: a host state).
if [ "$(cat /proc/sys/vm/nr_hugepages)" = 0 ] && ! have_kvm; then
	echo "SKIP: cli-hugepages-none-reserved ($(no_kvm_reason))"
elif [ "$(cat /proc/sys/vm/nr_hugepages)" = 0 ]; then
	$KUMO run --kernel "$KERNEL" --mem 64M --hugepages > "$T/out" 2> "$T/err" < /dev/null
	rc=$?
	if [ $rc -eq 1 ] && grep -q 'fewer than 32 free 2 MiB huge pages' "$T/err" &&
	   [ "$(wc -l < "$T/err")" -eq 1 ]; then
		pass cli-hugepages-none-reserved
	else
		fail cli-hugepages-none-reserved "exit $rc, stderr: $(head -c 300 "$T/err")"
	fi
fi
# Without /dev/kvm: one line that names it, exit 1 (a host state, not bad input).
if ! [ -e /dev/kvm ]; then
	$KUMO run --kernel "$KERNEL" > "$T/out" 2> "$T/err" < /dev/null
	rc=$?
	if [ $rc -eq 1 ] && grep -q 'cannot open /dev/kvm' "$T/err" && [ "$(wc -l < "$T/err")" -eq 1 ]; then
		pass cli-no-kvm
	else
		fail cli-no-kvm "exit $rc, stderr: $(head -c 300 "$T/err")"
	fi
fi
# kumo relay: both sockets are required; a control socket it cannot create is one line, exit 1.
$KUMO relay --agent-socket "$T/a.sock" > "$T/out" 2> "$T/err" < /dev/null
rc=$?
if [ $rc -eq 2 ] && grep -q 'needs --agent-socket and --control' "$T/err"; then
	pass cli-relay-needs-both
else
	fail cli-relay-needs-both "exit $rc, stderr: $(head -c 300 "$T/err")"
fi
$KUMO relay --agent-socket "$T/a.sock" --control "$T/no/such/dir/ctl" > "$T/out" 2> "$T/err" < /dev/null
rc=$?
if [ $rc -eq 1 ] && grep -q "control socket $T/no/such/dir/ctl" "$T/err" && [ "$(wc -l < "$T/err")" -eq 1 ]; then
	pass cli-relay-bad-control-path
else
	fail cli-relay-bad-control-path "exit $rc, stderr: $(head -c 300 "$T/err")"
fi
# The usage text is there for a person who asks.
if $KUMO run --help | grep -q -- '--kernel FILE'; then pass cli-help; else fail cli-help; fi
