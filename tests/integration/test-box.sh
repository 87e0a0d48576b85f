#!/bin/sh
# The KVM box itself (tests/box/box, docs/box.md), from the host: a command's output, exit
# status and written files come back; /dev/kvm is real KVM on SVM with nested paging; the
# host's tree is not changed by writes in the box; a timeout and a box that cannot boot each end in one FAIL line
# with their own exit status, never a hang. Runs where the box is used (tests/box/box want).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
if ! why=$(bash tests/box/box want); then
	echo "SKIP: box ($why: KVM tests run directly here)"
	exit 0
fi
BOX="bash tests/box/box"
T=$(mktemp -d "$OUT/box-test.XXXXXX")
trap 'rm -rf "$T"' EXIT

# One boot: output, status, a file in the output folder, what the box is.
$BOX run --out "$T" --timeout 300 -- sh -c '
	echo "box-out: hello"
	echo "kvm=$(stat -c %t:%T /dev/kvm 2>/dev/null)"
	echo "svm=$(grep -c -w svm /proc/cpuinfo) npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null)"
	echo "pvm=$([ -d /sys/module/kvm_pvm ] && echo yes || echo no) in_box=$KUMO_IN_BOX"
	echo "nproc=$(nproc)"
	touch -d @946684800 Makefile && echo "tree=written-in-the-overlay"
	touch /tmp/scratch && echo "tmp=writable"
	echo written > "$0/file.txt"
	exit 7' "$T" > "$T/run.log" 2>&1
rc=$?
cat "$T/run.log"
check box-exit-status-is-the-commands [ $rc -eq 7 ]
expect box-output-streams "$T/run.log" '^box-out: hello$'
expect box-has-dev-kvm "$T/run.log" '^kvm=a:e8$'
expect box-svm-with-npt "$T/run.log" '^svm=[1-9][0-9]* npt=(Y|1)$'
expect box-not-pvm "$T/run.log" '^pvm=no in_box=1$'
expect box-cpus "$T/run.log" '^nproc=2$'
expect box-root-writable "$T/run.log" '^tree=written-in-the-overlay$'
check box-host-tree-unchanged [ "$(stat -c %Y Makefile)" != 946684800 ]
expect box-tmp-writable "$T/run.log" '^tmp=writable$'
check box-file-comes-back grep -qx written "$T/file.txt"
check box-boot-logged grep -q ' ok .* status=7 ' "$T/box-boots.log"

# A command that outlives --timeout: exit 124 and one FAIL line.
$BOX run --out "$T" --timeout 20 -- sleep 600 > "$T/timeout.log" 2>&1
rc=$?
check box-timeout-exit-124 [ $rc -eq 124 ]
expect box-timeout-says-why "$T/timeout.log" '^box: FAIL: timed out after 20 s'

# A box that cannot start (a kernel that is no kernel): exit 125, one FAIL line, no hang.
printf 'not a kernel' > "$T/bad-bzImage"
KUMO_BOX_KERNEL=$T/bad-bzImage $BOX run --out "$T" --timeout 60 -- true > "$T/bad.log" 2>&1
rc=$?
check box-bad-kernel-exit-125 [ $rc -eq 125 ]
expect box-bad-kernel-says-why "$T/bad.log" '^box: FAIL: '

# A CPU without SVM: the box boots but has no /dev/kvm: exit 125 and it says so.
KUMO_BOX_CPU=EPYC,-svm,-xsave $BOX run --out "$T" --timeout 120 -- true > "$T/nosvm.log" 2>&1
rc=$?
check box-no-svm-exit-125 [ $rc -eq 125 ]
expect box-no-svm-says-why "$T/nosvm.log" '^box: FAIL: no /dev/kvm in the box'
