#!/bin/sh
# The guest image alone under QEMU TCG (no KVM needed): the test kernel reaches /init with and
# without virtio devices, and guest/agent-check.py drives kumo-agent and every workload on the
# agent port directly (bad requests, reconnecting, ompbench variants). `make guest-check` also
# boots Debian's stock kernel, which under TCG once stalled here (guest/check-qemu.sh).
cd "$(dirname "$0")/../.." || exit 2
KUMO_QEMU_STOCK=0 exec sh guest/check-qemu.sh
