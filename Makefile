# kumo: one build for everything. `make`, `make check`, `make demo`, `make bench`, `make guest`.
CC ?= gcc
CFLAGS ?= -O2 -g
WERROR ?= 1
KUMO_CFLAGS := -std=gnu11 -Wall -Wextra -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
	-Wno-unused-parameter -D_GNU_SOURCE -I. -MMD -MP
# Frame pointers: perf's call graphs of kumo, and the SIGSYS line's stack (vmm/seccomp.c) without
# loading an unwinder (libgcc_s) into every VMM.
KUMO_CFLAGS += -fno-omit-frame-pointer
ifeq ($(WERROR),1)
KUMO_CFLAGS += -Werror
endif
ifeq ($(SAN),1)
KUMO_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif
# libcrypto and the kernel decompressors (liblz4, liblzma, libzstd; libz's inflate) are dlopen'ed
# where used, not linked (docs/dependencies.md); -lz stays for the migration stream's crc32.
LIBS := -luring -lnuma -lfdt -lz -ljson-c -lpthread
# libseccomp is dlopen'ed by vmm/seccomp.c at start and closed once the filters are built.
# test-boot compresses its synthetic kernels with the libraries themselves.
tests/unit/test-boot: LIBS += -llz4 -llzma -lzstd

# Where heavy, machine-wide artefacts (kernels, busybox) are cached, outside the clone.
export KUMO_CACHE ?= /var/cache/kumo

OBJS += vmm/log.o
OBJS += vmm/boot.o
OBJS += vmm/boot-decompress.o
OBJS += vmm/acpi.o
OBJS += vmm/aml.o
OBJS += vmm/pvm.o
OBJS += vmm/kvm.o
OBJS += vmm/vcpu.o
OBJS += vmm/cpuid.o
OBJS += vmm/bus.o
OBJS += vmm/vm.o
OBJS += vmm/vm-run.o
OBJS += vmm/snapshot.o
OBJS += vmm/migration.o
OBJS += vmm/linux-loader.o
OBJS += vmm/config.o
OBJS += vmm/seccomp.o
OBJS += vmm/footprint.o
OBJS += devices/serial.o
OBJS += devices/acpi-pm.o
OBJS += devices/rtc.o
OBJS += devices/pci.o
OBJS += devices/virtio.o
OBJS += devices/virtio-pci.o
OBJS += devices/virtio-blk.o
OBJS += devices/virtio-blk-uring.o
OBJS += devices/virtio-console.o
OBJS += devices/virtio-balloon.o
OBJS += devices/virtio-net.o
OBJS += devices/virtio-net-vhost.o
OBJS += mm/pagestate.o
OBJS += vmm/control.o
OBJS += vmm/control-auth.o
OBJS += vmm/vm-control.o
OBJS += vmm/agent-relay.o
OBJS += mm/mem.o
OBJS += mm/dirty.o
OBJS += migrate/state.o
OBJS += migrate/memfile.o
OBJS += migrate/lazy.o
OBJS += migrate/stream.o
OBJS += migrate/migration.o
OBJS += migrate/memserver.o
OBJS += migrate/split.o
OBJS += vmm/numa.o
OBJS += sched/stats.o
OBJS += sched/coord.o
OBJS += sched/policy-margin.o
OBJS += sched/policy-cpu-priority.o
OBJS += sched/policy-exclusive.o
OBJS += sched/policy-cache.o
OBJS += sched/sim.o
OBJS += sched/sim-model.o
OBJS += sched/sim-scenario.o

MAIN_OBJS := vmm/main.o

UNIT_TESTS := $(patsubst %.c,%,$(wildcard tests/unit/test-*.c))
KVM_TESTS := $(patsubst %.c,%,$(wildcard tests/kvm/test-*.c))
BENCH_BINS := $(patsubst %.c,%,$(wildcard tests/bench/bench-*.c))

all: kumo

kumo: $(OBJS) $(MAIN_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

%.o: %.c
	$(CC) $(CFLAGS) $(KUMO_CFLAGS) -c -o $@ $<

# Tests link against the objects whose sources exist, so a module can be tested on its own.
libkumo.a: $(patsubst %.c,%.o,$(wildcard $(OBJS:.o=.c)))
	rm -f $@; ar rcs $@ $^

tests/unit/%: tests/unit/%.o libkumo.a
	$(CC) $(LDFLAGS) -o $@ $< libkumo.a $(LIBS)

tests/kvm/%: tests/kvm/%.o libkumo.a
	$(CC) $(LDFLAGS) -o $@ $< libkumo.a $(LIBS)

tests/bench/%: tests/bench/%.o libkumo.a
	$(CC) $(LDFLAGS) -o $@ $< libkumo.a $(LIBS)

tests: $(UNIT_TESTS) $(KVM_TESTS) kumo

# Installs every Debian package the project needs; idempotent and quick when all are there.
deps:
	@sh tools/deps.sh

guest: deps
	@sh guest/build.sh

# The guest image under QEMU TCG, then its agent and workloads through `kumo relay`.
guest-check: guest kumo
	@st=0; sh guest/check-qemu.sh || st=1; \
	sh tests/integration/test-agent-qemu.sh | tee guest/out/qemu-relay-check.log; \
	if grep -q '^FAIL' guest/out/qemu-relay-check.log; then st=1; fi; exit $$st

# The KVM box (tests/box/, docs/box.md): built where KVM work has to run in it.
box: deps
	$(MAKE) kumo tests
	$(MAKE) guest
	@bash tests/box/box build

box-if-needed:
	@if bash tests/box/box want >/dev/null; then bash tests/box/box build; fi

box-shell: box
	@bash tests/box/box shell

check: deps
	$(MAKE) tests
	$(MAKE) guest
	@$(MAKE) -s box-if-needed || echo "box: the box did not build (its tests will FAIL)"
	@sh tests/run.sh

check-unit: tests
	@KUMO_TIERS=unit sh tests/run.sh

check-slow: deps
	$(MAKE) tests
	$(MAKE) guest
	@$(MAKE) -s box-if-needed
	@KUMO_TIERS=slow sh tests/run.sh

demo: deps
	$(MAKE) kumo
	$(MAKE) guest
	@$(MAKE) -s box-if-needed
	@sh tools/demo.sh

bench: deps
	$(MAKE) kumo tests $(BENCH_BINS)
	$(MAKE) guest
	@$(MAKE) -s box-if-needed
	@sh tests/bench/run.sh

# Experiments without KVM: kumo sim's scenarios and replays (docs/sim.md). The box ones
# (tests/experiments/cpu-priority.sh) are run by hand in the box; EXPERIMENTS_BOX=1 also runs
# paper 000's and 002's on real guests (docs/experiments/cache.md, margin.md), one box each.
experiments: kumo
	@sh tests/experiments/sim.sh
	@[ "$(EXPERIMENTS_BOX)" = 1 ] || exit 0; sh tests/experiments/cache.sh --data && \
		tests/box/box run --timeout 2400 -- sh tests/experiments/cache.sh && \
		tests/box/box run --timeout 1800 -- sh tests/experiments/margin.sh

clean:
	rm -f kumo libkumo.a $(OBJS) $(MAIN_OBJS) $(UNIT_TESTS) $(KVM_TESTS) $(BENCH_BINS)
	find . -name '*.d' -delete -o -name '*.o' -delete

# Longer fuzzing than `make check` does.
fuzz: deps
	FUZZ_RUNS=$${FUZZ_RUNS:-2000000} sh tests/fuzz/run.sh

.PHONY: fuzz all deps guest guest-check box box-if-needed box-shell check check-unit check-slow demo bench clean tests
.SECONDARY:

-include $(shell find . -name '*.d' 2>/dev/null)
