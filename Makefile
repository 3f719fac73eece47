# Shale — every entry point a user or CI needs. `make demo` and `make test` do everything on
# a fresh Debian 12 machine (they install what is missing first).

SWIFT        ?= swift
CONFIG       ?= debug
BUILD_FLAGS  ?= -c $(CONFIG)
BIN           = $(shell $(SWIFT) build $(BUILD_FLAGS) --show-bin-path 2>/dev/null)
# The build's libraries, then the programs the mount tests run on the mount (tar with xz, git,
# sqlite3, rsync; a missing one fails its test, it is never skipped), and the C compiler the
# libshale test builds tools/c/shale-example.c with.
DEB_PACKAGES := libfuse3-dev fuse3 libpmem-dev liburing-dev libzstd-dev pkg-config \
                tar xz-utils git sqlite3 rsync gcc
BENCH_PACKAGES := fio sqlite3 gcc
DEMO_DIR     ?= /tmp/shale-demo

.PHONY: all deps deps-bench build test demo bench bench-memory crashtest crashtest-long install uninstall clean

all: build

# Installs the Debian packages Shale builds against, only those missing (idempotent).
deps:
	@tools/install-deps $(DEB_PACKAGES)

deps-bench: deps
	@tools/install-deps $(BENCH_PACKAGES)

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# Every test: unit, media (real libpmem and io_uring), format, and the CLI end to end; then
# the crash harness's CI budget on a release build (~80 s to build, ~2 minutes to run, where
# a debug build takes ~180 ms a crash state): every one-operation workload with every crash
# state, a seeded sample of the two-operation ones, the Fixtures/crashtest workloads, crashes
# during mkfs and three seeded random long workloads. (The planted-bug checks need a debug
# build and run in the suite.) The timeouts keep a wedged step from holding CI for its budget.
RELEASE_SHALE = "$$($(SWIFT) build -c release --show-bin-path)/shale"
test: deps
	$(SWIFT) build $(BUILD_FLAGS)
	timeout 1200 $(SWIFT) test $(BUILD_FLAGS)
	$(SWIFT) build -c release --product shale
	timeout 600 $(RELEASE_SHALE) crashtest --seq 1
	timeout 600 $(RELEASE_SHALE) crashtest --seq 2 --sample 10 --seed 1
	timeout 600 $(RELEASE_SHALE) crashtest $(addprefix --workload ,$(wildcard Fixtures/crashtest/*.txt))
	timeout 600 $(RELEASE_SHALE) crashtest --mkfs
	timeout 600 $(RELEASE_SHALE) crashtest --random 3 --seed 1

# Makes a default file system in $(DEMO_DIR) and shows its status.
demo: build
	@tools/demo "$(BIN)/shale" "$(DEMO_DIR)"

# Benchmarks (release build, own package under tools/bench so tests never pay for it).
bench: deps-bench
	@tools/bench/run

# The crash-consistency harness, release build: every one-operation workload with the full
# set of crash states (and crashes during the recovery of one state each), a sample of the
# two-operation ones, the Fixtures/crashtest files, 10 random long workloads, and crashes
# during mkfs.
crashtest: deps
	$(SWIFT) build -c release --product shale
	$(RELEASE_SHALE) crashtest --seq 1
	$(RELEASE_SHALE) crashtest --seq 2 --sample 40
	$(RELEASE_SHALE) crashtest $(addprefix --workload ,$(wildcard Fixtures/crashtest/*.txt))
	$(RELEASE_SHALE) crashtest --random 10
	$(RELEASE_SHALE) crashtest --mkfs

# Every two-operation workload (484 of them; tens of minutes).
crashtest-long: deps
	$(SWIFT) build -c release --product shale
	$(RELEASE_SHALE) crashtest --seq 2

# Resident memory after a million files (minutes; kept out of `make bench`).
bench-memory: deps-bench
	@tools/bench/run memory

# Puts a release build of shale in $(PREFIX)/bin and mount(8)'s helper name beside mount.fuse3
# (/sbin/mount.fuse.shale), so `mount -t fuse.shale DIR MOUNTPOINT` and fstab lines work.
PREFIX ?= /usr/local
install: deps
	$(SWIFT) build -c release
	install -D -m 755 "$$($(SWIFT) build -c release --show-bin-path)/shale" "$(DESTDIR)$(PREFIX)/bin/shale"
	mkdir -p "$(DESTDIR)/sbin"
	ln -sf "$(PREFIX)/bin/shale" "$(DESTDIR)/sbin/mount.fuse.shale"
	@# libshale for C programs: cc prog.c -lshale (the library finds the Swift runtime by its RUNPATH).
	install -D -m 755 "$$($(SWIFT) build -c release --show-bin-path)/libLibShale.so" "$(DESTDIR)$(PREFIX)/lib/libshale.so"
	install -D -m 644 include/shale.h "$(DESTDIR)$(PREFIX)/include/shale.h"
	-[ -n "$(DESTDIR)" ] || ldconfig
	@echo "installed $(PREFIX)/bin/shale, /sbin/mount.fuse.shale, $(PREFIX)/lib/libshale.so and $(PREFIX)/include/shale.h"

uninstall:
	rm -f "$(DESTDIR)$(PREFIX)/bin/shale" "$(DESTDIR)/sbin/mount.fuse.shale" \
	      "$(DESTDIR)$(PREFIX)/lib/libshale.so" "$(DESTDIR)$(PREFIX)/include/shale.h"

clean:
	rm -rf .build tools/bench/.build
