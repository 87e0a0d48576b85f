#!/bin/sh
# `make check-slow`: a bigger stock-kernel boot than make check's (4 vCPUs, 1 GiB), with the
# same checks (tests/integration/test-stock-boot.sh).
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
need_kvm stock-boot-big
KUMO_STOCK_CPUS=${KUMO_STOCK_CPUS:-4} KUMO_STOCK_MEM_MB=${KUMO_STOCK_MEM_MB:-1024} \
	exec sh tests/integration/test-stock-boot.sh
