#!/bin/sh
# The guest images alone under QEMU TCG (no KVM needed): test and stock kernels reach /init with
# and without virtio devices, and guest/agent-check.py drives kumo-agent and every workload on
# the agent port directly (bad requests, reconnecting, ompbench variants). `make guest-check`.
cd "$(dirname "$0")/../.." || exit 2
exec sh guest/check-qemu.sh
