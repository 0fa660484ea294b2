# logtap: the two commands a new user needs are `make demo` and `make test`.
CARGO ?= cargo
SO := target/release/liblogtap.so
SINK := target/release/logtap-sink

.PHONY: all build test demo fuzz lint clean release e2e test-arm64

all: build

build:
	$(CARGO) build --release --workspace

# Everything the tests need: the release library and sink, then every test
# (unit, sink, and the integration suite that runs real programs under the
# library). Tests are about correctness; timings live in `make bench`.
test: test-setup build
	$(CARGO) test --release --workspace

# Installs what the tests run for real (C compilers, rsyslog, nginx,
# PostgreSQL, redis, useradd) when missing and root on Debian; see the script.
.PHONY: test-setup
test-setup:
	@bash tests/setup.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

demo: build
	bash demo/run-local.sh

# Release artifacts for container images (README "Release builds"):
#   dist/liblogtap.so                x86_64 glibc, needs at most GLIBC_2.17
#   dist/musl/liblogtap.so           x86_64 musl (Alpine), needs musl's libc.so
#   dist/logtap-sink                 x86_64 static (musl), runs in any image
#   dist/aarch64/liblogtap.so        arm64 glibc, needs at most GLIBC_2.17
#   dist/aarch64/musl/liblogtap.so   arm64 musl
#   dist/aarch64/logtap-sink         arm64 static (musl)
# e2e/toolchain.sh installs what is missing (zig via pip, cargo-zigbuild,
# the musl and aarch64 Rust targets, musl-tools, binutils and
# binutils-aarch64-linux-gnu: the host objcopy cannot read arm64 files). A separate target
# dir keeps the dev build in target/release untouched; the musl cdylib
# (dynamic CRT) and the static sink get their own dirs so RUSTFLAGS never
# force rebuilds. Each cargo call builds both architectures at once.
DIST := dist
RELEASE_DIR := target/release-builds
GLIBC_MAX := 2.17
GNU_TARGET := x86_64-unknown-linux-gnu.$(GLIBC_MAX)
MUSL_TARGET := x86_64-unknown-linux-musl
A64_GNU_TARGET := aarch64-unknown-linux-gnu.$(GLIBC_MAX)
A64_MUSL_TARGET := aarch64-unknown-linux-musl
# extra rustc flags for the glibc build (e.g. -C link-arg=-ldl)
RELEASE_GNU_RUSTFLAGS ?=

release:
	bash e2e/toolchain.sh
	RUSTFLAGS="$(RELEASE_GNU_RUSTFLAGS)" $(CARGO) zigbuild --release -p logtap \
		--target $(GNU_TARGET) --target $(A64_GNU_TARGET) --target-dir $(RELEASE_DIR)/gnu
	RUSTFLAGS="-C target-feature=-crt-static" $(CARGO) zigbuild --release -p logtap \
		--target $(MUSL_TARGET) --target $(A64_MUSL_TARGET) --target-dir $(RELEASE_DIR)/musl-dynamic
	RUSTFLAGS= $(CARGO) zigbuild --release -p logtap-sink -p logtap-run \
		--target $(MUSL_TARGET) --target $(A64_MUSL_TARGET) --target-dir $(RELEASE_DIR)/musl-static
	mkdir -p $(DIST)/musl $(DIST)/aarch64/musl
	objcopy --strip-debug $(RELEASE_DIR)/gnu/x86_64-unknown-linux-gnu/release/liblogtap.so $(DIST)/liblogtap.so
	objcopy --strip-debug $(RELEASE_DIR)/musl-dynamic/$(MUSL_TARGET)/release/liblogtap.so $(DIST)/musl/liblogtap.so
	objcopy --strip-debug $(RELEASE_DIR)/musl-static/$(MUSL_TARGET)/release/logtap-sink $(DIST)/logtap-sink
	objcopy --strip-debug $(RELEASE_DIR)/musl-static/$(MUSL_TARGET)/release/logtap-run $(DIST)/logtap-run
	aarch64-linux-gnu-objcopy --strip-debug $(RELEASE_DIR)/gnu/aarch64-unknown-linux-gnu/release/liblogtap.so $(DIST)/aarch64/liblogtap.so
	aarch64-linux-gnu-objcopy --strip-debug $(RELEASE_DIR)/musl-dynamic/$(A64_MUSL_TARGET)/release/liblogtap.so $(DIST)/aarch64/musl/liblogtap.so
	aarch64-linux-gnu-objcopy --strip-debug $(RELEASE_DIR)/musl-static/$(A64_MUSL_TARGET)/release/logtap-sink $(DIST)/aarch64/logtap-sink
	aarch64-linux-gnu-objcopy --strip-debug $(RELEASE_DIR)/musl-static/$(A64_MUSL_TARGET)/release/logtap-run $(DIST)/aarch64/logtap-run
	bash e2e/check-glibc.sh $(DIST)/liblogtap.so $(GLIBC_MAX)
	bash e2e/check-glibc.sh $(DIST)/aarch64/liblogtap.so $(GLIBC_MAX)
	bash e2e/check-arch.sh
	@ls -l $(DIST)/liblogtap.so $(DIST)/musl/liblogtap.so $(DIST)/logtap-sink $(DIST)/logtap-run \
		$(DIST)/aarch64/liblogtap.so $(DIST)/aarch64/musl/liblogtap.so $(DIST)/aarch64/logtap-sink \
		$(DIST)/aarch64/logtap-run

# arm64 release builds under qemu-user (README "arm64"): an arm64 C program
# built with Debian's cross compiler (hardening flags), preloaded with
# dist/aarch64/liblogtap.so, tapped to the arm64 sink; the bytes compared.
# Installs qemu-user and the cross toolchain with apt if missing.
test-arm64: release
	bash e2e/arm64.sh

# Container tests (README "Containers"): installs podman, docker.io & co. if
# missing, builds Debian 11/12 base images with debootstrap (cached), the
# release artifacts and the demo images, then runs docker-compose.yaml with
# podman-compose and with Docker Compose v2, deployment.yaml with `podman
# kube play`, the README's docker recipe under a private Docker engine, the
# old-glibc, musl, arm64 (qemu-user) and symbol-version checks. Needs root.
# E2E_ONLY=compose,kube,... runs a subset.
e2e:
	bash e2e/run.sh

fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} $(CARGO) test --release -p logtap-sink --test prop

clean:
	$(CARGO) clean
	rm -rf dist

# Performance figures (README "Performance"): builds a C writer and compares
# whole-process runs untapped and tapped, writes bench/results/results.md and
# chart.png. BENCH_LINES (1000000) and BENCH_RUNS (5) change the size;
# BENCH_BEFORE_LIB=/path/liblogtap.so runs a second build in the same rounds
# (before/after columns); BENCH_RESULTS=DIR writes the report elsewhere (a
# smoke run). Only prints figures: targets are reported, never asserted.
.PHONY: bench
bench: build
	$(CARGO) build --release -p logtap-sink --example loadgen
	@for t in valgrind strace; do command -v $$t >/dev/null || \
		{ command -v apt-get >/dev/null && apt-get install -y -qq $$t >/dev/null 2>&1; } || \
		echo "bench: $$t not available; its part is skipped"; done
	@[ -x /usr/sbin/rsyslogd ] || { command -v apt-get >/dev/null && apt-get install -y -qq rsyslog >/dev/null 2>&1; } || \
		echo "bench: rsyslog not available; the syslog output row is skipped"
	@python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib 2>/dev/null || \
		python3 -m pip install -q --break-system-packages matplotlib 2>/dev/null || \
		echo "bench: matplotlib could not be installed; chart.png is skipped (the table is written)"
	python3 bench/run.py
