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

# Throughput tables: matmul against numpy, tokenizer against the `tokenizers` library.
# Their columns need python3 with numpy / tokenizers (MOE_BENCH_PYTHON picks another python).
bench: build
	$(MOE) bench $(if $(THREADS),--threads $(THREADS))

train: build
	$(MOE) train

generate: build
	$(MOE) generate

clean:
	$(CARGO) clean
