# moe — the commands a person runs. `make test` is what CI runs.
CARGO ?= cargo
THREADS ?=
MOE = ./target/release/moe

.PHONY: all build test bench train generate experiments clean

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

# The default run (about 10 minutes on 2 cores): weights/shakespeare-moe. Run again after an
# interruption, it continues from the last checkpoint.
RUN = weights/shakespeare-moe
train: build
	$(MOE) train $(if $(wildcard $(RUN)/train_state.json),--resume $(RUN),--out $(RUN)) $(if $(THREADS),--threads $(THREADS))

# Samples from the model `make train` wrote. PROMPT's \n are newlines (printf %b); it reaches
# the shell as an environment variable, so any quotes in it are safe.
PROMPT ?= Romeo.\nBut soft,
export PROMPT
generate: build
	@test -f $(RUN)/model.safetensors || { echo "make generate: no trained model in $(RUN)/ yet: run 'make train' first (about 11 minutes on 2 cores)" >&2; exit 1; }
	$(MOE) generate --model $(RUN) --prompt "$$(printf '%b' "$$PROMPT")" $(if $(THREADS),--threads $(THREADS))

# Small-scale OLMoE ablations (not part of `make test`): weights/experiments/REPORT.md.
experiments: build
	$(MOE) experiments $(if $(THREADS),--threads $(THREADS))

clean:
	$(CARGO) clean
