#!/bin/sh
# `kumo run` on bad input: a one-line error naming the problem, exit status 2, no crash.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# refused NAME STATUS REGEX LINES COMMAND...: COMMAND exits STATUS with stderr matching REGEX,
# in exactly LINES lines ("any": the usage text may follow).
refused() {
	name=$1; want=$2; re=$3; lines=$4; shift 4
	"$@" > "$T/out" 2> "$T/err" < /dev/null
	rc=$?
	if [ $rc -eq "$want" ] && grep -Eq -- "$re" "$T/err" &&
	   { [ "$lines" = any ] || [ "$(wc -l < "$T/err")" -eq "$lines" ]; }; then
		pass "$name"
	elif ! have_kvm && grep -q 'cannot open /dev/kvm' "$T/err"; then
		# kumo reads the kernel into guest memory, which it creates after the VM.
		echo "SKIP: $name ($(no_kvm_reason))"
	else
		fail "$name" "exit $rc, stderr: $(head -c 300 "$T/err")"
	fi
}
bad() { # name, expected-message-regex, kumo run args...: bad input, exit 2
	name=$1; re=$2; shift 2
	refused "$name" 2 "$re" any $KUMO run "$@"
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
if [ "$(cat /proc/sys/vm/nr_hugepages)" = 0 ]; then
	refused cli-hugepages-none-reserved 1 'fewer than 32 free 2 MiB huge pages' 1 \
		$KUMO run --kernel "$KERNEL" --mem 64M --hugepages
fi
# Without /dev/kvm: one line that names it, exit 1 (a host state, not bad input).
if ! [ -e /dev/kvm ]; then
	refused cli-no-kvm 1 'cannot open /dev/kvm' 1 $KUMO run --kernel "$KERNEL"
fi
# kumo relay: both sockets are required; a control socket it cannot create is one line, exit 1.
refused cli-relay-needs-both 2 'needs --agent-socket and --control' any \
	$KUMO relay --agent-socket "$T/a.sock"
refused cli-relay-bad-control-path 1 "control socket $T/no/such/dir/ctl" 1 \
	$KUMO relay --agent-socket "$T/a.sock" --control "$T/no/such/dir/ctl"
# The usage text is there for a person who asks.
if $KUMO run --help | grep -q -- '--kernel FILE'; then pass cli-help; else fail cli-help; fi
