# moe — the commands a person runs. `make test` is what CI runs.
CARGO ?= cargo
THREADS ?=
# cpu, or cuda (cuda:N): the GPU build (`--features cuda`) and `--device` for train/generate.
DEVICE ?= cpu
FEATURES = $(if $(filter cuda%,$(DEVICE)),--features cuda)
MOE = ./target/release/moe

.PHONY: all build test ptx bench bench-gpu train generate experiments clean

all: build

build:
	$(CARGO) build --release $(FEATURES)

# Formatting, lints (warnings are errors) with and without the GPU code, and every test, in
# release mode. The GPU kernels' tests (tests/kernels/) print SKIP where there is no GPU.
test:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features cuda -- -D warnings
	$(CARGO) test --release
	$(CARGO) test --release --features cuda --test kernels

# Assembles every kernels/*.ptx with ptxas for sm_80 and sm_90 (fetches ptxas with pip once).
ptx:
	.ci/ptxas

# Throughput tables: matmul against numpy, tokenizer against the `tokenizers` library.
# Their columns need python3 with numpy / tokenizers (MOE_BENCH_PYTHON picks another python).
bench: build
	$(MOE) bench $(if $(THREADS),--threads $(THREADS))

# The GPU table: router and grouped expert matmul kernels beside torch/cuBLAS (needs a GPU).
bench-gpu:
	$(CARGO) build --release --features cuda
	$(MOE) bench --only gpu

# The default run (about 10 minutes on 2 cores): weights/shakespeare-moe. Run again after an
# interruption, it continues from the last checkpoint.
RUN = weights/shakespeare-moe
train: build
	$(MOE) train $(if $(wildcard $(RUN)/train_state.json),--resume $(RUN),--out $(RUN)) --device $(DEVICE) $(if $(THREADS),--threads $(THREADS))

# Samples from the model `make train` wrote. PROMPT's \n are newlines (printf %b); it reaches
# the shell as an environment variable, so any quotes in it are safe.
PROMPT ?= Romeo.\nBut soft,
export PROMPT
generate: build
	@test -f $(RUN)/model.safetensors || { echo "make generate: no trained model in $(RUN)/ yet: run 'make train' first (about 11 minutes on 2 cores)" >&2; exit 1; }
	$(MOE) generate --model $(RUN) --prompt "$$(printf '%b' "$$PROMPT")" --device $(DEVICE) $(if $(THREADS),--threads $(THREADS))

# Small-scale OLMoE ablations (not part of `make test`): weights/experiments/REPORT.md.
experiments: build
	$(MOE) experiments $(if $(THREADS),--threads $(THREADS))

clean:
	$(CARGO) clean
