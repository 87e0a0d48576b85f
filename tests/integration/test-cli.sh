#!/bin/sh
# `kumo run` on bad input: a one-line error naming the problem, exit status 2, no crash; on
# every host, since kumo checks its input before it opens /dev/kvm.
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
	else
		fail "$name" "exit $rc, stderr: $(head -c 300 "$T/err")"
	fi
}
bad() { # name, expected-message-regex, kumo run args...: bad usage, exit 2 (usage may follow)
	name=$1; re=$2; shift 2
	refused "$name" 2 "$re" any $KUMO run "$@"
}
bad_input() { # name, expected-message-regex, kumo run args...: bad input, exit 2, one line
	name=$1; re=$2; shift 2
	refused "$name" 2 "$re" 1 $KUMO run "$@"
}

# le VALUE BYTES: VALUE as BYTES little-endian bytes.
le() {
	v=$1; n=$2
	while [ "$n" -gt 0 ]; do
		printf "\\$(printf %o $((v & 255)))"
		v=$((v >> 8)); n=$((n - 1))
	done
}
# vmlinux_at ADDR: a vmlinux kumo accepts, one PT_LOAD of 123 bytes at ADDR, entry on a hlt
# loop. At 2 MiB it fits any guest: the refusals below use it so that the one thing wrong is
# the thing tested.
vmlinux_at() {
	printf '\177ELF\2\1\1\0'; le 0 8		# ELF64, little-endian, version 1
	le 2 2; le 62 2; le 1 4			# ET_EXEC, EM_X86_64, EV_CURRENT
	le $(($1 + 120)) 8; le 64 8; le 0 8	# entry, phoff, shoff
	le 0 4; le 64 2; le 56 2; le 1 2; le 0 6	# flags, ehsize, phentsize, phnum, no shdrs
	le 1 4; le 5 4; le 0 8			# PT_LOAD, R+X, from offset 0
	le "$1" 8; le "$1" 8			# vaddr, paddr
	le 123 8; le 123 8; le 4096 8		# filesz, memsz, align
	printf '\364\353\375'			# hlt; jmp back to the hlt
}
GOOD=$T/vmlinux
vmlinux_at $((0x200000)) > "$GOOD"
vmlinux_at $((0x40000000)) > "$T/vmlinux-at-1G"
head -c 100 /dev/urandom > "$T/random"
: > "$T/empty"
printf 'MZ' > "$T/tiny"
KERNEL=guest/out/test-bzImage
[ -f "$KERNEL" ] || KERNEL=guest/out/stock-vmlinuz
# A bzImage cut off inside its setup header: a real one's first 600 bytes, or a made-up start
# (boot flag, "HdrS", protocol 2.15) where there is none.
if [ -f "$KERNEL" ]; then
	head -c 600 "$KERNEL" > "$T/cut-bzImage"
else
	{ head -c $((0x1fe)) /dev/zero; le $((0xaa55)) 2; printf '\353\152HdrS'; le $((0x20f)) 2
	  head -c $((600 - 0x208)) /dev/zero; } > "$T/cut-bzImage"
fi
mkdir "$T/dir"
truncate -s 200M "$T/bigrd"	# sparse: kumo refuses it by its size, before reading it

bad_input cli-missing-kernel 'kernel /nonexistent: No such file' --kernel /nonexistent
bad_input cli-kernel-is-dir 'kernel /tmp: not a regular file' --kernel /tmp
bad_input cli-empty-kernel 'kernel .*empty: not an x86-64 Linux kernel' --kernel "$T/empty"
bad_input cli-not-a-kernel 'kernel .*random: not an x86-64 Linux kernel' --kernel "$T/random"
bad_input cli-truncated-header 'kernel .*tiny: kernel image is truncated' --kernel "$T/tiny"
bad_input cli-truncated-bzimage 'kernel .*cut-bzImage: kernel image is truncated' \
	--kernel "$T/cut-bzImage"
bad_input cli-missing-initrd 'initrd /nonexistent: No such file' --kernel "$GOOD" \
	--initrd /nonexistent
bad_input cli-initrd-is-dir 'initrd .*dir: not a regular file' --kernel "$GOOD" --initrd "$T/dir"
bad_input cli-initrd-too-big 'initrd .*bigrd \(209715200 bytes\): does not fit' \
	--kernel "$GOOD" --initrd "$T/bigrd" --mem 64M
bad_input cli-kernel-outside-ram 'kernel .*vmlinux-at-1G: image lands outside guest RAM' \
	--kernel "$T/vmlinux-at-1G" --mem 256M
bad_input cli-cmdline-too-long '--cmdline: too long for the kernel' --kernel "$GOOD" \
	--cmdline "$(head -c 3000 /dev/zero | tr '\0' x)"
bad cli-bad-mem '--mem lots' --kernel "$GOOD" --mem lots
bad cli-bad-cpus '--cpus 0' --kernel "$GOOD" --cpus 0
bad cli-unknown-option 'unknown option --frobnicate' --kernel "$GOOD" --frobnicate
bad cli-no-kernel '--kernel is required'
# Bad input never gets as far as /dev/kvm (whose absence would be exit 1, a host state).
if command -v strace > /dev/null 2>&1; then
	# (LeakSanitizer cannot run under ptrace: a SAN=1 kumo checks no leaks here.)
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
		strace -f -qq -e trace=open,openat -o "$T/trace" $KUMO run --kernel "$T/random" \
		> /dev/null 2> "$T/err" < /dev/null
	rc=$?
	if grep -q /dev/kvm "$T/trace" 2> /dev/null; then
		fail cli-bad-kernel-before-kvm "$(grep -m1 /dev/kvm "$T/trace")"
	elif ! grep -q "$T/random" "$T/trace" 2> /dev/null; then
		echo "SKIP: cli-bad-kernel-before-kvm (no tracing: $(head -c 200 "$T/err"))"
	elif [ $rc -eq 2 ]; then
		pass cli-bad-kernel-before-kvm
	else
		fail cli-bad-kernel-before-kvm "exit $rc, stderr: $(head -c 300 "$T/err")"
	fi
else
	echo "SKIP: cli-bad-kernel-before-kvm (no strace)"
fi
if [ -f "$KERNEL" ]; then
	size=$(stat -c %s "$KERNEL")
	head -c $((size / 2)) "$KERNEL" > "$T/half"
	bad_input cli-truncated-kernel 'truncated|corrupt' --kernel "$T/half"
	# Corrupt the start of the compressed payload (magic and first block header; LZ4's legacy
	# format has no checksum, so damage deeper inside cannot be detected by anyone).
	setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$KERNEL" | tr -d ' ')
	payload_off=$(od -An -tu4 -j $((0x248)) -N4 "$KERNEL" | tr -d ' ')
	cp "$KERNEL" "$T/corrupt"
	printf '\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377' |
		dd of="$T/corrupt" bs=1 seek=$(( (setup_sects + 1) * 512 + payload_off + 4 )) \
			conv=notrunc 2>/dev/null
	bad_input cli-corrupt-payload 'corrupt|truncated' --kernel "$T/corrupt"
fi
# --restore: its own input, checked before /dev/kvm like a kernel (a good state and the
# config checks against it are in test-snapshot.sh, in the KVM box).
bad cli-restore-with-kernel '--restore brings its own kernel' --restore "$T" --kernel "$GOOD"
bad cli-restore-lazy-alone '--restore-lazy needs --restore' --restore-lazy --kernel "$GOOD"
bad_input cli-restore-missing-dir "$T/no-such-snapshot/state.fdt: No such file" \
	--restore "$T/no-such-snapshot"
mkdir -p "$T/junk-snapshot"
cp "$T/random" "$T/junk-snapshot/state.fdt"
bad_input cli-restore-not-a-state 'state: not a valid FDT' --restore "$T/junk-snapshot"

# Virtual NUMA layouts that cannot be built on this host are refused before anything starts.
bad cli-numa-no-host-node 'host node 7 does not exist' --kernel "$GOOD" --cpus 2 \
	--numa node=0,cpus=0-1,mem=256M,host-node=7
bad cli-numa-mem-sum 'adds up to 128M, --mem is 256M' --kernel "$GOOD" --cpus 2 \
	--numa node=0,cpus=0,mem=64M --numa node=1,cpus=1,mem=64M
bad cli-numa-distance 'must be 11 to 254' --kernel "$GOOD" --cpus 2 \
	--numa node=0,cpus=0 --numa node=1,cpus=1 --numa-distance 0:1=10
bad cli-cpu-pin-no-cpu 'host CPU 4095 does not exist' --kernel "$GOOD" --cpu-pin 0=4095
# --hugepages with none reserved: one line that says what to reserve (exit 1: a host state).
# Guest memory is made after /dev/kvm is opened, so only a host with KVM gets that far.
if [ "$(cat /proc/sys/vm/nr_hugepages)" = 0 ]; then
	if have_kvm; then
		refused cli-hugepages-none-reserved 1 'fewer than 32 free 2 MiB huge pages' 1 \
			$KUMO run --kernel "$GOOD" --mem 64M --hugepages
	else
		echo "SKIP: cli-hugepages-none-reserved ($(no_kvm_reason))"
	fi
fi
# Without /dev/kvm: one line that names it, exit 1 (a host state, not bad input).
if ! [ -e /dev/kvm ]; then
	refused cli-no-kvm 1 'cannot open /dev/kvm' 1 $KUMO run --kernel "$GOOD"
fi
# kumo relay: both sockets are required; a control socket it cannot create is one line, exit 1.
refused cli-relay-needs-both 2 'needs --agent-socket and --control' any \
	$KUMO relay --agent-socket "$T/a.sock"
refused cli-relay-bad-control-path 1 "control socket $T/no/such/dir/ctl" 1 \
	$KUMO relay --agent-socket "$T/a.sock" --control "$T/no/such/dir/ctl"
# kumo coord: --vm and --policy required; a policy it cannot find or a log it cannot open is one
# line, exit 1, before it connects to anything.
refused cli-coord-needs-vm-and-policy 2 'needs --vm and --policy' any $KUMO coord --vm "$T/c.sock"
refused cli-coord-bad-host-mem 2 'host-mem 12Q: not a size' any \
	$KUMO coord --vm "$T/c.sock" --policy margin --host-mem 12Q
refused cli-coord-unknown-policy 1 "unknown policy 'nope'" 1 \
	$KUMO coord --vm "$T/c.sock" --policy margin,nope
refused cli-coord-missing-so 1 'no-such.so' 1 $KUMO coord --vm "$T/c.sock" --policy "$T/no-such.so"
refused cli-coord-bad-log 1 "--log $T/no/such/dir/log" 1 \
	$KUMO coord --vm "$T/c.sock" --policy margin --log "$T/no/such/dir/log"
# The usage text is there for a person who asks.
if $KUMO run --help | grep -q -- '--kernel FILE'; then pass cli-help; else fail cli-help; fi
