#!/bin/sh
# Boot check: prints KUMO-CHECK lines for the host test to grep, ends with "KUMO-CHECK done".
c() { echo "KUMO-CHECK $*"; }
rd() { cat "$1" 2>/dev/null || echo none; }

c kernel=$(uname -r)
c machine=$(uname -m)
read -r up _ </proc/uptime
c uptime=$up
c nproc=$(nproc)
c cpus_online=$(rd /sys/devices/system/cpu/online)
c cpus_possible=$(rd /sys/devices/system/cpu/possible)
c memtotal_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
c memfree_kb=$(sed -n 's/^MemFree: *\([0-9]*\) kB/\1/p' /proc/meminfo)
c numa_nodes=$(rd /sys/devices/system/node/online)
for n in /sys/devices/system/node/node[0-9]*; do
	[ -d "$n" ] || continue
	c numa_node=${n##*/node} cpus=$(rd "$n/cpulist") memtotal_kb=$(sed -n 's/.*MemTotal: *\([0-9]*\) kB/\1/p' "$n/meminfo")
done
c clocksource=$(rd /sys/devices/system/clocksource/clocksource0/current_clocksource)
c acpi=$([ -d /sys/firmware/acpi/tables ] && ls /sys/firmware/acpi/tables | grep -v -e dynamic -e data | tr '\n' ',' | sed 's/,$//' || echo none)
c pci_devices=$(ls /sys/bus/pci/devices 2>/dev/null | wc -l)
for d in /sys/bus/virtio/devices/*; do
	[ -e "$d" ] || continue
	drv=none
	[ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
	c virtio=${d##*/} device_id=$(rd "$d/device") driver=$drv
done
for b in /sys/block/*; do
	[ -e "$b" ] || continue
	case "${b##*/}" in ram*|loop*) continue ;; esac
	c block=${b##*/} sectors=$(rd "$b/size")
done
c msi_irqs=$(grep -c -e PCI-MSI -e PCI-MSIX /proc/interrupts)
c cgroup_cpuset=$(grep -q cpuset /proc/cgroups 2>/dev/null && echo yes || echo no)
c userspace=$(od -An -tx1 -j4 -N1 /bin/busybox | tr -d ' ' | sed 's/01/32bit/; s/02/64bit/')
echo "--- dmesg | grep -i virtio"
dmesg | grep -i virtio
echo "---"
c done
