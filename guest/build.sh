#!/bin/sh
# kumo guest build (`make guest`): test kernel, stock Debian cloud kernel, initramfs images
# (with kumo-probe, kumo-agent and the workloads), the workloads' data disk.
# Heavy artefacts are cached in $KUMO_CACHE (default /var/cache/kumo); outputs go to guest/out/.
# Idempotent; fast when everything is cached.
set -eu

GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
OUT="$GUEST_DIR/out"
KUMO_CACHE=${KUMO_CACHE:-/var/cache/kumo}
JOBS=${JOBS:-$(nproc)}
LINUX_TARBALL=${LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
LINUX_PKG=${LINUX_PKG:-linux-source-6.1}
STOCK_META=${STOCK_META:-linux-image-cloud-amd64}

say() { echo "guest: $*"; }

# apt-get download PKG into DIR (through a temporary dir the _apt user can write to).
apt_download() {
	t=$(mktemp -d "$2/.dl.XXXXXX")
	chmod 755 "$t"; chown _apt "$t" 2>/dev/null || true
	if (cd "$t" && apt-get download -q "$1" >/dev/null); then
		mv "$t"/*.deb "$2"/; rmdir "$t"
	else
		rm -rf "$t"; return 1
	fi
}
die() { echo "guest: ERROR: $*" >&2; exit 1; }

mkdir -p "$KUMO_CACHE" "$OUT"

# One build at a time per cache (the lock is held for the rest of the script).
if [ -z "${KUMO_GUEST_LOCKED:-}" ]; then
	exec 9>"$KUMO_CACHE/guest-build.lock"
	if ! flock -n 9; then
		say "waiting for another guest build (lock $KUMO_CACHE/guest-build.lock)"
		flock 9
	fi
	export KUMO_GUEST_LOCKED=1
fi

# Install $1 to $2 only if different (keeps mtimes stable for make and humans).
install_if_changed() {
	if ! cmp -s "$1" "$2" 2>/dev/null; then
		cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
	fi
}

# ------------------------------------------------------------ our own kernels
# build_kernel NAME FRAGMENT: allnoconfig + FRAGMENT from linux-source with guest/patches/,
# cached in $KUMO_CACHE/NAME-kernel/<key>; installs $OUT/NAME-{bzImage,vmlinux,config,version}.
# NAME is "test" (the guest kernel) or "box" (the KVM box's host kernel, tests/box/).
build_kernel() {
	name=$1 FRAGMENT=$2
	[ -r "$LINUX_TARBALL" ] || die "$LINUX_TARBALL missing (run make deps: linux-source)"
	src_ver=$(dpkg-query -W -f='${Version}' "$LINUX_PKG" 2>/dev/null) || src_ver=unknown
	[ -n "$src_ver" ] || src_ver=unknown
	# Our patches (guest/patches/*.patch, applied in order) are part of the source identity.
	patches=$(ls "$GUEST_DIR"/patches/*.patch 2>/dev/null)
	patch_id=$(cat $patches /dev/null | sha256sum | cut -c1-16)
	key=$( { cat "$FRAGMENT"; echo "linux-source=$LINUX_PKG $src_ver patches=$patch_id"; } | sha256sum | cut -c1-16)
	kdir="$KUMO_CACHE/$name-kernel/$key"
	if [ -s "$kdir/bzImage" ] && [ -s "$kdir/vmlinux" ] && [ -s "$kdir/config" ]; then
		say "$name kernel: cached ($key)"
	else
		src="$KUMO_CACHE/src/$(basename "$LINUX_TARBALL" .tar.xz)"
		if [ "$(cat "$src/.kumo-version" 2>/dev/null)" != "$src_ver $patch_id" ]; then
			say "$name kernel: extracting $LINUX_TARBALL ($src_ver) into $KUMO_CACHE/src/"
			rm -rf "$src"
			mkdir -p "$KUMO_CACHE/src"
			tar -C "$KUMO_CACHE/src" -xf "$LINUX_TARBALL"
			[ -f "$src/Makefile" ] || die "unexpected tarball layout: no $src/Makefile"
			for p in $patches; do
				say "$name kernel: applying $(basename "$p")"
				patch -s -p1 -d "$src" <"$p" || die "patch $p does not apply"
			done
			echo "$src_ver $patch_id" >"$src/.kumo-version"
		fi
		bdir="$KUMO_CACHE/$name-kernel/build-$key"
		mkdir -p "$bdir"
		say "$name kernel: configuring ($key): allnoconfig + $(basename "$FRAGMENT")"
		make -s -C "$src" O="$bdir" ARCH=x86_64 KCONFIG_ALLCONFIG="$FRAGMENT" allnoconfig >"$bdir/config.log" 2>&1 ||
			{ cat "$bdir/config.log" >&2; die "kernel configuration failed"; }
		# Every line of the fragment must be in .config ("is not set" = not enabled).
		bad=0
		grep -E '^(CONFIG_|# CONFIG_[A-Za-z0-9_]+ is not set)' "$FRAGMENT" | while IFS= read -r line; do
			case "$line" in
			"# CONFIG_"*)
				sym=${line#\# }; sym=${sym%% *}
				if grep -q "^$sym=" "$bdir/.config"; then
					echo "guest: config mismatch: wanted '$line', got '$(grep "^$sym=" "$bdir/.config")'" >&2
					echo bad
				fi ;;
			*)
				if ! grep -qxF "$line" "$bdir/.config"; then
					got=$(grep "^${line%%=*}=" "$bdir/.config" || echo "not set")
					echo "guest: config mismatch: wanted '$line', got '$got'" >&2
					echo bad
				fi ;;
			esac
		done >"$bdir/config.check"
		[ -s "$bdir/config.check" ] && die "$name kernel config: options of $FRAGMENT did not make it into .config (see above)"
		say "$name kernel: building with -j$JOBS (log: $bdir/build.log)"
		t0=$(date +%s)
		if ! make -C "$src" O="$bdir" ARCH=x86_64 -j"$JOBS" bzImage >"$bdir/build.log" 2>&1; then
			tail -40 "$bdir/build.log" >&2
			die "$name kernel build failed"
		fi
		t1=$(date +%s)
		mkdir -p "$kdir.tmp"
		cp "$bdir/arch/x86/boot/bzImage" "$kdir.tmp/bzImage"
		cp "$bdir/vmlinux" "$kdir.tmp/vmlinux"
		cp "$bdir/.config" "$kdir.tmp/config"
		make -s -C "$src" O="$bdir" ARCH=x86_64 kernelrelease >"$kdir.tmp/release"
		echo "$((t1 - t0))" >"$kdir.tmp/build-seconds"
		rm -rf "$kdir"; mv "$kdir.tmp" "$kdir"
		say "$name kernel: built in $((t1 - t0)) s"
	fi
	install_if_changed "$kdir/bzImage" "$OUT/$name-bzImage"
	install_if_changed "$kdir/vmlinux" "$OUT/$name-vmlinux"
	install_if_changed "$kdir/config" "$OUT/$name-config"
	install_if_changed "$kdir/release" "$OUT/$name-version"
	say "$name kernel: $(cat "$kdir/release"), bzImage $(stat -c %s "$kdir/bzImage") B, vmlinux $(stat -c %s "$kdir/vmlinux") B"
}

# --------------------------------------------------------------- stock kernel
# Sets STOCK_ROOT (extracted package) and STOCK_VER (kernel release).
fetch_stock_kernel() {
	pkg=$(apt-cache depends "$STOCK_META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -1)
	if [ -z "$pkg" ]; then
		# apt lists not available: fall back to the newest cached package.
		deb=$(ls -t "$KUMO_CACHE"/stock/linux-image-*.deb 2>/dev/null | head -1 || true)
		[ -n "$deb" ] || die "cannot resolve $STOCK_META (apt-get update?) and nothing cached"
		say "stock kernel: cannot resolve $STOCK_META, using cached $(basename "$deb")"
	else
		mkdir -p "$KUMO_CACHE/stock"
		deb=$(ls "$KUMO_CACHE/stock/${pkg}_"*.deb 2>/dev/null | head -1 || true)
		want=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
		case "$deb" in
		*"_$(echo "$want" | sed 's/:/%3a/')_"*) ;;
		*) deb= ;;
		esac
		if [ -z "$deb" ]; then
			say "stock kernel: downloading $pkg ($want)"
			apt_download "$pkg" "$KUMO_CACHE/stock" || die "apt-get download $pkg failed"
			deb=$(ls -t "$KUMO_CACHE/stock/${pkg}_"*.deb | head -1)
		fi
	fi
	STOCK_ROOT="$KUMO_CACHE/stock/$(basename "$deb" .deb)"
	if [ ! -e "$STOCK_ROOT/.extracted" ]; then
		rm -rf "$STOCK_ROOT"; mkdir -p "$STOCK_ROOT"
		dpkg-deb -x "$deb" "$STOCK_ROOT"
		touch "$STOCK_ROOT/.extracted"
	fi
	STOCK_VER=$(ls "$STOCK_ROOT/boot" | sed -n 's/^vmlinuz-//p' | head -1)
	[ -n "$STOCK_VER" ] || die "no /boot/vmlinuz-* in $deb"
	install_if_changed "$STOCK_ROOT/boot/vmlinuz-$STOCK_VER" "$OUT/stock-vmlinuz"
	install_if_changed "$STOCK_ROOT/boot/config-$STOCK_VER" "$OUT/stock-config"
	echo "$STOCK_VER" >"$OUT/stock-version.tmp"; install_if_changed "$OUT/stock-version.tmp" "$OUT/stock-version"
	rm -f "$OUT/stock-version.tmp"
	say "stock kernel: $STOCK_VER ($(basename "$deb"))"
}

# Copies the stock kernel's virtio modules (+ dependencies, decompressed) into $1/lib/modules/.
STOCK_MODULES="virtio_pci virtio_blk virtio_console virtio_balloon virtio_net"
stage_stock_modules() {
	stage=$1
	mdir="$STOCK_ROOT/lib/modules/$STOCK_VER"
	[ -d "$mdir/kernel" ] || { say "stock kernel: no modules in the package, none packed"; return 0; }
	if [ ! -f "$mdir/modules.dep" ]; then
		# The package ships no modules.dep (postinst runs depmod): make it here.
		command -v depmod >/dev/null || PATH=$PATH:/sbin:/usr/sbin
		depmod -b "$STOCK_ROOT" "$STOCK_VER" || die "depmod failed (install kmod)"
	fi
	need=""
	for m in $STOCK_MODULES; do
		sym=CONFIG_$(echo "$m" | tr a-z A-Z)
		v=$(sed -n "s/^$sym=//p" "$OUT/stock-config")
		case "$v" in
		m) need="$need $m" ;;
		y) ;;
		*) say "stock kernel: $sym is '${v:-not set}'" ;;
		esac
	done
	[ -n "$need" ] || return 0
	# modules.dep: "path: dep1 dep2" (deps listed so that the last must be loaded first).
	order=$(
		for m in $need; do
			line=$(grep -E "/$m\.ko(\.xz|\.zst|\.gz)?:" "$mdir/modules.dep") || die "module $m not in modules.dep"
			deps=${line#*:}
			for d in $deps; do echo "$d"; done | tac
			echo "${line%%:*}"
		done | awk '!seen[$0]++'
	)
	dest="$stage/lib/modules/$STOCK_VER"
	mkdir -p "$dest"
	: >"$dest/load-order"
	for p in $order; do
		base=$(basename "$p"); name=${base%%.ko*}
		case "$p" in
		*.ko.xz) xz -dc "$mdir/$p" >"$dest/$name.ko" ;;
		*.ko.zst) zstd -qdc "$mdir/$p" >"$dest/$name.ko" ;;
		*.ko.gz) gzip -dc "$mdir/$p" >"$dest/$name.ko" ;;
		*.ko) cp "$mdir/$p" "$dest/$name.ko" ;;
		esac
		echo "$name.ko" >>"$dest/load-order"
	done
	say "stock kernel: modules for initramfs:$(tr '\n' ' ' <"$dest/load-order" | sed 's/\.ko//g; s/^/ /')"
}

# ------------------------------------------------------------------ busybox
# ELF class byte of $1: 01 (32-bit), 02 (64-bit), or empty when it is not an ELF file.
elf_class() {
	[ "$(head -c4 "$1" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || return 0
	od -An -tx1 -j4 -N1 "$1" | tr -d ' '
}

# fetch_busybox ARCH (i386 or amd64): sets BUSYBOX to Debian's busybox-static for ARCH,
# cached in $KUMO_CACHE/busybox-ARCH.
fetch_busybox() {
	arch=$1
	bdir="$KUMO_CACHE/busybox-$arch"
	mkdir -p "$bdir"
	deb=$(ls "$bdir"/busybox-static_*_"$arch".deb 2>/dev/null | head -1 || true)
	if [ -z "$deb" ]; then
		say "busybox: downloading busybox-static:$arch"
		apt_download "busybox-static:$arch" "$bdir" || die "apt-get download busybox-static:$arch failed"
		deb=$(ls "$bdir"/busybox-static_*_"$arch".deb | head -1)
	fi
	root="$bdir/$(basename "$deb" .deb)"
	if [ ! -x "$root/bin/busybox" ]; then
		rm -rf "$root"; mkdir -p "$root"; dpkg-deb -x "$deb" "$root"
	fi
	BUSYBOX="$root/bin/busybox"
	case "$arch" in i386) want=01 ;; *) want=02 ;; esac
	[ "$(elf_class "$BUSYBOX")" = "$want" ] || die "$BUSYBOX is not a $arch ELF"
}

# Applet list: run $BUSYBOX if the host can, else ask the host's busybox.
busybox_applets() {
	"$BUSYBOX" --list-full 2>/dev/null && return 0
	if command -v busybox >/dev/null; then busybox --list-full; return 0; fi
	die "cannot list busybox applets (install busybox-static)"
}

# ------------------------------------------------------- freestanding programs
# kumo-probe, kumo-agent and the workloads: freestanding C on guest/rt, built twice: 64-bit
# (syscall instruction) for the ordinary image, and 32-bit (int $0x80, no SSE/x87) for the
# one that runs on PVM hosts (guest/rt/rt.h, docs/guest.md).
GUEST_CFLAGS="-ffreestanding -nostdlib -static -fno-pic -no-pie -mgeneral-regs-only
	-fno-stack-protector -fno-builtin -fno-tree-loop-distribute-patterns -O2 -g0
	-Wall -Wextra -Wno-unused-parameter -Werror"
WORKLOADS="filereader webload cpuload membench ompbench blkseq"

# gcc_guest BITS OUT SOURCES...
gcc_guest() {
	bits=$1 o=$2; shift 2
	# shellcheck disable=SC2086
	gcc -m"$bits" $GUEST_CFLAGS -o "$o" "$@" || die "building $o ($bits-bit) failed"
}

# build_guest_programs STAGE BITS (32 or 64)
build_guest_programs() {
	stage=$1 bits=$2
	obj="$stage.obj"
	rm -rf "$obj"; mkdir -p "$obj"
	gcc_guest "$bits" "$obj/rt.o" -c "$GUEST_DIR/rt/rt.c"
	gcc_guest "$bits" "$obj/wl.o" -c "$GUEST_DIR/workloads/wl.c"
	gcc_guest "$bits" "$stage/sbin/kumo-probe" "$GUEST_DIR/probe/kumo-probe.c" "$obj/rt.o"
	gcc_guest "$bits" "$stage/sbin/kumo-agent" "$GUEST_DIR/agent/kumo-agent.c" \
		"$GUEST_DIR/agent/agent-parse.c" "$obj/rt.o"
	for w in $WORKLOADS; do
		gcc_guest "$bits" "$stage/bin/$w" "$GUEST_DIR/workloads/$w.c" "$obj/wl.o" "$obj/rt.o"
	done
	rm -rf "$obj"
	[ "$bits" = 32 ] || return 0
	# No SSE/x87 may slip in (PVM's emulator cannot run them after a return to user mode).
	for f in "$stage/sbin/kumo-probe" "$stage/sbin/kumo-agent" $(for w in $WORKLOADS; do echo "$stage/bin/$w"; done); do
		if objdump -d "$f" | grep -Eq '%xmm|%st[(0-9]|%mm[0-9]|\sf(ld|st|add|mul|div)'; then
			die "SSE/x87 instruction in $f"
		fi
	done
}

# ------------------------------------------------------------------ data disk
# guest/out/data.ext4: KUMO_DATA_FILES (64) files of 1 MiB (guest/mkdata.py) in /files, made
# with mkfs.ext4 -d on the host; rebuilt only when the count or mkdata.py changes.
build_data_disk() {
	n=${KUMO_DATA_FILES:-64}
	img="$OUT/data.ext4"
	stamp="n=$n $(sha256sum "$GUEST_DIR/mkdata.py" | cut -c1-16)"
	if [ -s "$img" ] && [ "$(cat "$img.stamp" 2>/dev/null)" = "$stamp" ]; then
		say "data disk: cached ($n files)"
		return 0
	fi
	command -v mkfs.ext4 >/dev/null || PATH=$PATH:/sbin:/usr/sbin
	command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 missing (install e2fsprogs)"
	dstage="$KUMO_CACHE/data-stage"
	rm -rf "$dstage"
	python3 "$GUEST_DIR/mkdata.py" "$dstage" "$n" || die "guest/mkdata.py failed"
	# Room for the files, metadata and a small journal.
	mb=$((n + n / 8 + 16))
	rm -f "$img.new"
	truncate -s "${mb}M" "$img.new"
	E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L kumo-data -U 6b756d6f-6461-7461-2d64-69736b000001 \
		-E root_owner=0:0,hash_seed=6b756d6f-6861-7368-2d73-656564000001 -J size=4 \
		-d "$dstage" "$img.new" || die "mkfs.ext4 -d failed"
	mv -f "$img.new" "$img"
	echo "$stamp" >"$img.stamp"
	rm -rf "$dstage"
	say "data disk: $img ($n files of 1 MiB, ${mb} MiB image)"
}

# ---------------------------------------------------------------- initramfs
# stage_base STAGE BITS: /init, scripts, $BUSYBOX and our programs built for BITS.
stage_base() {
	stage=$1 bits=$2
	rm -rf "$stage"; mkdir -p "$stage"
	for d in bin sbin usr/bin usr/sbin dev proc sys tmp run mnt root etc scripts lib/modules; do
		mkdir -p "$stage/$d"
	done
	cp "$BUSYBOX" "$stage/bin/busybox"; chmod 755 "$stage/bin/busybox"
	busybox_applets | while read -r a; do
		case "$a" in bin/busybox|"") continue ;; esac
		[ -e "$stage/$a" ] || ln -s /bin/busybox "$stage/$a"
	done
	[ -e "$stage/bin/sh" ] || ln -s busybox "$stage/bin/sh"
	mknod "$stage/dev/console" c 5 1
	mknod "$stage/dev/null" c 1 3
	chmod 1777 "$stage/tmp"
	cp "$GUEST_DIR/init" "$stage/init"; chmod 755 "$stage/init"
	build_guest_programs "$stage" "$bits"
	for s in "$GUEST_DIR"/scripts/*; do
		[ -f "$s" ] || continue
		cp "$s" "$stage/scripts/"; chmod 755 "$stage/scripts/$(basename "$s")"
	done
	echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
	echo "root:x:0:" >"$stage/etc/group"
}

# Packs $1 into the newc archive $2 (reproducible order and mtimes).
pack_cpio() {
	stage=$1 dst=$2
	find "$stage" -exec touch -h -d @0 {} +
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$dst.new.$$"
	install_if_changed "$dst.new.$$" "$dst"; rm -f "$dst.new.$$"
	say "initramfs: $(basename "$dst") $(stat -c %s "$dst") B"
}

# initramfs.cpio, initramfs-stock.cpio: the ordinary userspace (amd64 busybox, 64-bit programs)
# for SVM/VMX hosts and QEMU; initramfs-pvm.cpio: 32-bit only, for PVM hosts, where 64-bit
# system calls and SSE in user code do not work (docs/pvm.md).
build_initramfs() {
	[ "$(id -u)" = 0 ] || die "building the initramfs needs root (mknod /dev/console)"
	work="$KUMO_CACHE/initramfs-stage"
	fetch_busybox amd64
	stage_base "$work/test" 64
	pack_cpio "$work/test" "$OUT/initramfs.cpio"
	rm -rf "$work/stock"; cp -a "$work/test" "$work/stock"
	stage_stock_modules "$work/stock"
	pack_cpio "$work/stock" "$OUT/initramfs-stock.cpio"

	fetch_busybox i386
	stage_base "$work/pvm" 32
	find "$work/pvm" -type f | while read -r f; do
		[ "$(elf_class "$f")" != 02 ] || die "64-bit ELF in the PVM initramfs: $f"
	done
	pack_cpio "$work/pvm" "$OUT/initramfs-pvm.cpio"
}

case "${1:-all}" in
all)
	build_kernel test "$GUEST_DIR/test-kernel.config"
	fetch_stock_kernel
	build_initramfs
	build_data_disk
	;;
test-kernel) build_kernel test "$GUEST_DIR/test-kernel.config" ;;
box-kernel) build_kernel box "$GUEST_DIR/../tests/box/box-kernel.config" ;;
stock|initramfs)
	fetch_stock_kernel
	build_initramfs
	build_data_disk
	;;
data) build_data_disk ;;
*) die "usage: build.sh [all|test-kernel|box-kernel|initramfs|data]" ;;
esac
say "done: outputs in $OUT"
