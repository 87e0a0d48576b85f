#!/bin/sh
# Installs the Debian packages kumo needs to build, test, fetch and check its guest.
# Idempotent: does nothing (and needs no network) when everything is already installed.
set -e
PKGS="gcc make git linux-libc-dev liburing-dev libnuma-dev libfdt-dev libjson-c-dev libseccomp-dev
liblz4-dev zlib1g-dev liblzma-dev libzstd-dev
busybox-static cpio patch fdisk e2fsprogs kmod xz-utils lz4 zstd
linux-source bc bison flex libelf-dev libssl-dev dwarves rsync python3
qemu-system-x86 clang libclang-rt-14-dev acpica-tools strace iproute2 numactl"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
# The i386 busybox build is the guest userspace that runs on PVM hosts (int $0x80 syscalls).
if ! dpkg --print-foreign-architectures | grep -q i386; then
	dpkg --add-architecture i386
	missing="$missing"
	need_update=1
fi
if [ -n "$missing" ] || [ -n "$need_update" ]; then
	echo "deps: installing:$missing"
	[ "$(id -u)" = 0 ] || { echo "deps: run as root (apt-get)"; exit 1; }
	# A mirror mid-sync can fail one index; what we need usually still resolves.
	apt-get update -qq || apt-get update -qq || true
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
