# logtap: the two commands a new user needs are `make demo` and `make test`.
CARGO ?= cargo
SO := target/release/liblogtap.so
SINK := target/release/logtap-sink

.PHONY: all build test demo fuzz lint clean

all: build

build:
	$(CARGO) build --release --workspace

# Everything the tests need: the release library and sink, then every test
# (unit, sink, and the integration suite that runs real programs under the
# library). Tests are about correctness; timings live in `make bench`.
test: build
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

demo: build
	bash demo/run-local.sh

fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} $(CARGO) test --release -p logtap-sink --test prop

clean:
	$(CARGO) clean
	rm -rf dist
