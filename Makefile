# moe — the commands a person runs. `make test` is what CI runs.
CARGO ?= cargo
THREADS ?=
MOE = ./target/release/moe

.PHONY: all build test bench train generate clean

all: build

build:
	$(CARGO) build --release

# Formatting, lints (warnings are errors) and every test, in release mode.
test:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --release

# Throughput tables (numpy's column needs python3 with numpy).
bench: build
	$(MOE) bench $(if $(THREADS),--threads $(THREADS))

train: build
	$(MOE) train

generate: build
	$(MOE) generate

clean:
	$(CARGO) clean
