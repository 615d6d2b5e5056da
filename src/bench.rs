//! `moe bench`: throughput tables. Times are medians over repeats (matmul and training: after
//! one warm-up run; tokenizer: each encode pass from an empty piece cache, as a first pass over
//! a corpus).
//!
//! train: tokens/s of one training step (forward + backward + clipping + AdamW) of the default
//! model on one micro-batch, beside transformers' `OlmoeForCausalLM` of the same sizes where the
//! python in `MOE_BENCH_PYTHON` (default python3) has torch and transformers; model FLOPs
//! utilisation against numpy's matmul; and each side's peak memory. It runs first, so that our
//! process's peak memory is the training's.
//!
//! matmul: our GEMM in the three forms training uses (C = A·B, A·Bᵀ, Aᵀ·B), and, where the
//! python in `MOE_BENCH_PYTHON` (default python3) has numpy, numpy's BLAS on the same shapes.
//!
//! decode: see bench_decode.rs.
//!
//! tokenizer: encode throughput with the OLMo tokenizer and the time to train a 4096-token
//! vocabulary, both on the Shakespeare corpus and on one thread, beside the Python `tokenizers`
//! library's where the python in `MOE_BENCH_PYTHON` (default python3) can import it; and
//! whether both give the same ids and learn the same merges.

use crate::cli::{thousands, Args};
use crate::cpu::gemm::{gemm, Kernel, MatRef};
use crate::cpu::threads;
use crate::error::Result;
use crate::init_cmd::param_counts;
use crate::model::config::OlmoeConfig;
use crate::model::olmoe::Weights;
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::tokenize_cmd::{read_text, text_files};
use crate::tokenizer::train::{count_words, learn, SPECIAL_TOKENS};
use crate::tokenizer::Tokenizer;
use crate::train::train_step;
use crate::trainer::{default_config, RunOptions};
use std::path::Path;
use std::time::Instant;

pub const HELP: &str = "\
moe bench [--reps N] [--threads N] [--only train|matmul|tokenizer|decode|gpu]
  First the training step's tokens/s on the default model (`make train`'s config, one
  micro-batch of 8×256 tokens: forward + backward + clip + AdamW), 1 warm-up step then the
  median of 5, beside transformers' OlmoeForCausalLM of the same sizes where $MOE_BENCH_PYTHON
  (default python3) has torch and transformers; with the model FLOPs utilisation of both
  against numpy's 1024×1024×1024 NN matmul GFLOP/s (the better of a run before and one after
  the steps), and each side's peak memory (the process's peak RSS).
  Then GFLOP/s of the f32 matmul at the shapes the model uses, beside numpy's where
  $MOE_BENCH_PYTHON (default python3) has numpy. --reps: timed repeats per matmul entry (default
  15) and timed training steps (default 5).
  Then tokenizer encode MB/s and training time (one thread, median of 3) beside the Python
  `tokenizers` library's, run by $MOE_BENCH_PYTHON (default python3), on the corpus in
  data/shakespeare (else ../shared/corpus/shakespeare) with the OLMo tokenizer in
  tests/golden/tokenizer/ (else ../shared/tokenizers/).
  Last, greedy decoding tokens/s at batch 1 (median of 3 runs after a warm-up): make train's
  model (weights/shakespeare-moe, else that config untrained) beside transformers' generate on
  the same checkpoint; then an OLMoE-1B-7B-shaped BF16 checkpoint (written once by `moe init`
  into weights/bench/, 13.8 GB) beside the memory-bandwidth bound, with the peak RSS.
  --only: just one of the four tables. `--only gpu` (`make bench-gpu`, a build with
  `--features cuda` and a GPU): the router and grouped expert matmul kernels beside torch and
  cuBLAS on the same GPU; never part of the default run.
";

/// The tables, in the order they run: training first, so our peak memory is the training's.
/// The last, "gpu", runs only when `--only` names it.
const TABLES: [&str; 5] = ["train", "matmul", "tokenizer", "decode", "gpu"];
/// Timed repeats per matmul entry, and timed training steps, unless `--reps` says otherwise.
const MATMUL_REPS: usize = 15;
const TRAIN_REPS: usize = 5;
const DECODE_REPS: usize = 3;
const GPU_REPS: usize = 5;

/// (M, K, N): C[M, N] = A[M, K] · B[K, N].
const SHAPES: [(usize, usize, usize); 3] = [(1024, 1024, 1024), (256, 1024, 4096), (4096, 256, 1024)];

/// The operand layouts: "NN" C = A·B (an input gradient, dX = dY·W), "NT" C = A·Bᵀ with B
/// stored (N, K) (a linear layer, y = x·Wᵀ), "TN" C = Aᵀ·B with A stored (K, M) (a weight
/// gradient, dW = dYᵀ·X).
const FORMS: [&str; 3] = ["NN", "NT", "TN"];

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["reps", "only"])?;
    let reps = args.count("reps")?;
    let only = args.value("only")?;
    if let Some(table) = only.filter(|t| !TABLES.contains(t)) {
        return Err(crate::error::Error::invalid("--only", format!("no table '{table}'"))
            .with_hint(format!("the tables: {}", TABLES.join(", "))));
    }
    let wanted: Vec<&str> = match only {
        Some(table) => vec![table],
        None => TABLES.into_iter().filter(|&t| t != "gpu").collect(),
    };
    for (i, table) in wanted.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        match table {
            "train" => train_table(reps.unwrap_or(TRAIN_REPS), reps.unwrap_or(MATMUL_REPS))?,
            "matmul" => matmul_table(reps.unwrap_or(MATMUL_REPS))?,
            "tokenizer" => tokenizer_table()?,
            "decode" => crate::bench_decode::decode_table(reps.unwrap_or(DECODE_REPS))?,
            _ => crate::bench_gpu::gpu_table(reps.unwrap_or(GPU_REPS))?,
        }
    }
    Ok(())
}

/// Runs `script` in the benchmark's Python (`$MOE_BENCH_PYTHON`, default python3) with `args`
/// and `env`; returns its stdout, or why there is none (not runnable, `module` not installed,
/// or its last error line).
pub(crate) fn run_python(
    script: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    module: &str,
) -> std::result::Result<String, String> {
    let python = std::env::var("MOE_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("{python} not runnable ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        return Err(if last.contains(&format!("No module named '{module}'")) {
            format!("{python} has no `{module}`: pip install {module}, or set MOE_BENCH_PYTHON")
        } else {
            format!("{python} failed: {last}")
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ours_gflops(m: usize, k: usize, n: usize, form: &str, reps: usize) -> f64 {
    let mut rng = Rng::new(1);
    let a = Tensor::uniform(&[m * k], -1.0, 1.0, &mut rng);
    let b = Tensor::uniform(&[k * n], -1.0, 1.0, &mut rng);
    let a_view = match form {
        "TN" => MatRef::row_major(a.data(), k, m).t(),
        _ => MatRef::row_major(a.data(), m, k),
    };
    let b_view = match form {
        "NT" => MatRef::row_major(b.data(), n, k).t(),
        _ => MatRef::row_major(b.data(), k, n),
    };
    let mut c = vec![0.0f32; m * n];
    let secs = median_seconds(reps, || gemm(&mut c, n, a_view, b_view, false));
    2.0 * (m * k * n) as f64 / secs / 1e9
}

/// numpy's GFLOP/s for one (shape, form), or why there is none. Timed right before ours for
/// the same entry, so both see the same machine load.
fn numpy_gflops(m: usize, k: usize, n: usize, form: &str, reps: usize) -> std::result::Result<f64, String> {
    let script = format!(
        r#"
import time, numpy as np
rng = np.random.default_rng(1)
m, k, n, form = {m}, {k}, {n}, "{form}"
a = rng.uniform(-1, 1, (k, m) if form == "TN" else (m, k)).astype(np.float32)
b = rng.uniform(-1, 1, (n, k) if form == "NT" else (k, n)).astype(np.float32)
A = a.T if form == "TN" else a
B = b.T if form == "NT" else b
A @ B
ts = []
for _ in range({reps}):
    t = time.perf_counter(); A @ B; ts.append(time.perf_counter() - t)
print(2 * m * k * n / sorted(ts)[len(ts) // 2] / 1e9)
"#
    );
    let text = run_python(&script, &[], &[], "numpy")?;
    text.trim().parse::<f64>().map_err(|_| format!("unexpected numpy output '{}'", text.trim()))
}

fn matmul_table(reps: usize) -> Result<()> {
    println!(
        "matmul f32, C[M,N] = A[M,K]·B[K,N]; kernel {:?}, {} threads, median of {reps}",
        Kernel::detect(),
        threads::num_threads()
    );
    println!("| M×K×N | form | ours GFLOP/s | numpy GFLOP/s | ours/numpy |");
    println!("|---|---|---:|---:|---:|");
    let mut numpy_missing = None;
    for (m, k, n) in SHAPES {
        for form in FORMS {
            let numpy =
                if numpy_missing.is_none() { numpy_gflops(m, k, n, form, reps) } else { Err(String::new()) };
            let ours = ours_gflops(m, k, n, form, reps);
            let (np_cell, ratio) = match numpy {
                Ok(np) => (format!("{np:.1}"), format!("{:.2}", ours / np)),
                Err(why) => {
                    numpy_missing.get_or_insert(why);
                    ("–".to_string(), "–".to_string())
                }
            };
            println!("| {m}×{k}×{n} | {form} | {ours:.1} | {np_cell} | {ratio} |");
        }
    }
    if let Some(why) = numpy_missing {
        println!("(numpy column empty: {why})");
    }
    Ok(())
}

// ---- training

/// The step `make train` takes, at a fixed learning rate: AdamW with OLMoE's betas, eps and
/// weight decay (`AdamWConfig::default()`), gradients clipped to a global norm of 1.
const TRAIN_LR: f32 = 4e-4;
const TRAIN_CLIP: f32 = 1.0;
/// Seeds the init and the random token ids (the same ids every step).
const TRAIN_SEED: u64 = 0;

/// One implementation's training step, as measured.
struct StepTiming {
    /// The median step, seconds.
    step_s: f64,
    /// The loss of the first (warm-up) step: that a real model of the right size trained.
    first_loss: f32,
    /// The process's peak resident memory, KiB (None where it cannot be read).
    peak_kib: Option<u64>,
}

/// Training FLOPs per token, in PaLM's convention (Chowdhery et al. 2022, appendix B):
/// 6·N + 12·L·H·D·T. N: the matmul weights one token goes through (2 FLOPs per weight
/// forward, 4 backward). 12·L·H·D·T: attention's QKᵀ and PV, counted at the full, non-causal
/// length T (2·2·T·H·D forward per layer, twice that backward).
fn train_flops_per_token(config: &OlmoeConfig, seq: usize) -> f64 {
    let attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim() * seq;
    (6 * active_matmul_params(config) + attention) as f64
}

/// N: every matmul weight a token goes through. Per layer q, k, v, o, the router, and K of the
/// E experts' gate, up and down; then lm_head, V·C, tied or not. The embedding lookup is not
/// a matmul, nor are the norms.
pub(crate) fn active_matmul_params(config: &OlmoeConfig) -> usize {
    let (c, f, k) = (config.hidden_size, config.intermediate_size, config.num_experts_per_tok);
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.num_key_value_heads * config.head_dim();
    let attention = c * q + 2 * c * kv + q * c;
    let router = config.num_experts * c;
    let experts = k * 3 * f * c;
    config.num_hidden_layers * (attention + router + experts) + config.vocab_size * c
}

/// This process's peak resident set size (VmHWM in /proc/self/status), KiB; None off Linux.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
}

/// `train::train_step` on one micro-batch of `batch` random sequences of `seq` ids: one
/// warm-up step, then the median of `reps`. The peak memory is read right after.
fn ours_train(config: &OlmoeConfig, batch: usize, seq: usize, reps: usize) -> StepTiming {
    let mut rng = Rng::new(TRAIN_SEED);
    let mut weights = Weights::init(config, &mut rng);
    let micro_batches = [(0..batch * seq).map(|_| rng.below(config.vocab_size) as u32).collect::<Vec<u32>>()];
    let mut optimizer = AdamW::new(AdamWConfig { lr: TRAIN_LR as f64, ..AdamWConfig::default() });
    let mut losses = Vec::new();
    let step_s = median_seconds(reps, || {
        // A diverged step (Err) has its stats too: its NaN loss shows in the table.
        let (Ok(stats) | Err(stats)) =
            train_step(config, &mut weights, &mut optimizer, &micro_batches, seq, TRAIN_LR, TRAIN_CLIP);
        losses.push(stats.loss);
    });
    StepTiming { step_s, first_loss: losses[0], peak_kib: peak_rss_kib() }
}

/// What transformers' run measured.
struct Transformers {
    /// Its version and torch's, and which attention and experts implementations ran.
    name: String,
    timing: StepTiming,
    /// The peak memory once torch and transformers are imported, before the model: KiB.
    imports_kib: u64,
}

/// The same step in transformers: `OlmoeForCausalLM` of `config`'s sizes, f32, on `threads`
/// torch threads, forward + backward + `clip_grad_norm_` + `torch.optim.AdamW`, one warm-up
/// step then the median of `reps`; or why there is none.
fn transformers_train(
    config: &OlmoeConfig,
    batch: usize,
    seq: usize,
    reps: usize,
    threads: usize,
) -> std::result::Result<Transformers, String> {
    let python_bool = |b: bool| if b { "True" } else { "False" };
    let adamw = AdamWConfig::default();
    let script = format!(
        r#"
import resource, time
import torch, transformers
from transformers import OlmoeConfig, OlmoeForCausalLM
imports_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
torch.set_num_threads({threads})
torch.manual_seed({TRAIN_SEED})
# Our sizes; every other field is OlmoeConfig's default, as ours are. eos_token_id plays no
# part in training (the default lies outside this vocabulary, which transformers warns about).
config = OlmoeConfig(vocab_size={vocab}, hidden_size={hidden}, intermediate_size={inter},
    num_hidden_layers={layers}, num_attention_heads={heads}, num_key_value_heads={kv_heads},
    num_experts={experts}, num_experts_per_tok={k}, max_position_embeddings={max_pos},
    norm_topk_prob={norm_topk}, tie_word_embeddings={tie}, router_aux_loss_coef={aux_coef:?},
    output_router_logits=True, eos_token_id=None)
model = OlmoeForCausalLM(config).float().train()
opt = torch.optim.AdamW(model.parameters(), lr={TRAIN_LR:?}, betas=({beta1:?}, {beta2:?}),
    eps={eps:?}, weight_decay={wd:?})
ids = torch.randint(0, {vocab}, ({batch}, {seq}), generator=torch.Generator().manual_seed({TRAIN_SEED}))
def step():
    loss = model(input_ids=ids, labels=ids).loss  # cross-entropy + aux coef · load balancing
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), {TRAIN_CLIP:?})
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
first_loss = step()  # warm-up
ts = []
for _ in range({reps}):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
print(transformers.__version__, torch.__version__, config._attn_implementation,
      getattr(config, "_experts_implementation", None) or "default")
print(sorted(ts)[len(ts) // 2])
print(first_loss)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, imports_kib)
"#,
        vocab = config.vocab_size,
        hidden = config.hidden_size,
        inter = config.intermediate_size,
        layers = config.num_hidden_layers,
        heads = config.num_attention_heads,
        kv_heads = config.num_key_value_heads,
        experts = config.num_experts,
        k = config.num_experts_per_tok,
        max_pos = config.max_position_embeddings,
        norm_topk = python_bool(config.norm_topk_prob),
        tie = python_bool(config.tie_word_embeddings),
        aux_coef = config.router_aux_loss_coef,
        beta1 = adamw.beta1,
        beta2 = adamw.beta2,
        eps = adamw.eps,
        wd = adamw.weight_decay,
    );
    let text = run_python(&script, &[], &[], "torch")?;
    let mut lines = text.lines();
    let mut next = |what: &str| lines.next().ok_or(format!("transformers output ends before {what}"));
    let name = match next("the versions")?.split_whitespace().collect::<Vec<_>>()[..] {
        [transformers, torch, attention, experts] => {
            format!("transformers {transformers} (torch {torch}; {attention} attention, {experts} experts)")
        }
        _ => return Err("unexpected transformers version line".to_string()),
    };
    let bad = |s: &str| format!("unexpected transformers output '{s}'");
    let step = next("the step time")?;
    let step_s = step.trim().parse::<f64>().map_err(|_| bad(step))?;
    let loss = next("the loss")?;
    let first_loss = loss.trim().parse::<f32>().map_err(|_| bad(loss))?;
    let rss = next("the peak memory")?;
    let kib = |n: &str| n.parse::<u64>().map_err(|_| bad(rss));
    let (peak, imports) = rss.split_once(' ').ok_or_else(|| bad(rss))?;
    let timing = StepTiming { step_s, first_loss, peak_kib: Some(kib(peak)?) };
    Ok(Transformers { name, timing, imports_kib: kib(imports)? })
}

fn train_table(reps: usize, matmul_reps: usize) -> Result<()> {
    let config = default_config();
    let options = RunOptions::default();
    let (batch, seq) = (options.micro_batch, options.seq);
    let tokens = batch * seq;
    let n_threads = threads::num_threads();
    // MFU's denominator, numpy's matmul, is the better of two runs, one before the training
    // steps and one after: on a shared machine a single run can land in a slow moment.
    let numpy_before = numpy_gflops(1024, 1024, 1024, "NN", matmul_reps);
    let ours = ours_train(&config, batch, seq, reps);
    let transformers = transformers_train(&config, batch, seq, reps, n_threads);
    let numpy = numpy_before.and_then(|a| Ok(a.max(numpy_gflops(1024, 1024, 1024, "NN", matmul_reps)?)));

    let (total, active) = param_counts(&config);
    let n_matmul = active_matmul_params(&config);
    let flops = train_flops_per_token(&config, seq);
    println!(
        "train: make train's model, f32 ({} layers, hidden {}, {} experts top-{}, vocab {}; {} parameters, \
         {} active per token)",
        config.num_hidden_layers,
        config.hidden_size,
        config.num_experts,
        config.num_experts_per_tok,
        config.vocab_size,
        thousands(total),
        thousands(active),
    );
    println!(
        "step: one micro-batch of {batch}×{seq} = {} random ids, forward + backward + clip {TRAIN_CLIP:?} + \
         AdamW lr {TRAIN_LR:e}; {n_threads} threads, 1 warm-up step then the median of {reps}",
        thousands(tokens)
    );
    println!("| implementation | step, s | tokens/s | MFU | peak RSS, MiB | loss, step 1 |");
    println!("|---|---:|---:|---:|---:|---:|");
    let tokens_per_s = |t: &StepTiming| tokens as f64 / t.step_s;
    let mfu = |t: &StepTiming| {
        numpy
            .as_ref()
            .map_or("–".to_string(), |np| format!("{:.1}%", 100.0 * flops * tokens_per_s(t) / (np * 1e9)))
    };
    let row = |name: &str, t: &StepTiming| {
        println!(
            "| {name} | {:.3} | {} | {} | {} | {:.3} |",
            t.step_s,
            thousands(tokens_per_s(t).round() as usize),
            mfu(t),
            t.peak_kib.map_or("–".to_string(), |kib| thousands((kib / 1024) as usize)),
            t.first_loss
        )
    };
    row("ours", &ours);
    match &transformers {
        Ok(t) => {
            row(&t.name, &t.timing);
            let memory = match (ours.peak_kib, t.timing.peak_kib) {
                (Some(a), Some(b)) => format!(", {:.2}x its peak memory", a as f64 / b as f64),
                _ => String::new(),
            };
            println!(
                "ours/transformers: {:.2}x its tokens/s{memory}",
                tokens_per_s(&ours) / tokens_per_s(&t.timing)
            );
        }
        Err(why) => {
            println!("| transformers | – | – | – | – | – |");
            println!("(transformers row empty: {why})");
        }
    }
    match &numpy {
        Ok(np) => println!(
            "MFU: (6 × {} matmul weights per token + 12·L·H·D·T attention) = {:.1} MFLOP per token \
             (PaLM's convention, appendix B: non-causal attention), × tokens/s ÷ numpy's \
             1024×1024×1024 NN matmul, {np:.1} GFLOP/s (the better of two runs, before and after \
             the steps)",
            thousands(n_matmul),
            flops / 1e6
        ),
        Err(why) => println!("(MFU empty: it is relative to numpy's matmul GFLOP/s, and {why})"),
    }
    let imports = transformers.as_ref().map_or(String::new(), |t| {
        format!(
            ", {} MiB of it once torch and transformers are imported",
            thousands((t.imports_kib / 1024) as usize)
        )
    });
    println!(
        "peak RSS: the whole process's; ours is VmHWM right after the steps (this table runs first), \
         transformers' ru_maxrss{imports}"
    );
    println!(
        "loss, step 1: cross-entropy (ln {} = {:.3} at random) + {} × load balancing; ours also + {} × z-loss",
        config.vocab_size,
        (config.vocab_size as f64).ln(),
        config.router_aux_loss_coef,
        config.router_z_loss_coef
    );
    Ok(())
}

// ---- tokenizer

/// The corpus: the repository's copy, else the shared one beside the repository.
const CORPUS_DIRS: [&str; 2] = ["data/shakespeare", "../shared/corpus/shakespeare"];
/// The OLMo tokenizer: the test suite's copy, else the shared one.
const OLMO_TOKENIZERS: [&str; 2] = [
    "tests/golden/tokenizer/olmoe-gpt-neox-olmo-dolma-v1_5.json",
    "../shared/tokenizers/olmoe-gpt-neox-olmo-dolma-v1_5.json",
];
/// Timed repeats per tokenizer entry (one encode of the corpus takes seconds in Python).
const TOKENIZER_REPS: usize = 3;
const TRAIN_VOCAB: usize = 4096;

/// What the `tokenizers` library did on the same corpus.
struct Library {
    version: String,
    encode_s: f64,
    train_s: f64,
    ids: Vec<u32>,
    merges: Vec<(String, String)>,
}

/// Runs the library in `$MOE_BENCH_PYTHON` (default python3) on one thread: encode every
/// document with the OLMo tokenizer, and train a 4096 vocabulary as `moe tokenizer-train`
/// does; medians of `TOKENIZER_REPS`, each encode pass with a freshly loaded tokenizer (an
/// empty word cache). Prints the version, the two times, the ids, then the merges one per
/// line (byte-level tokens never contain a space).
fn library_tokenizer(
    corpus: &[std::path::PathBuf],
    tokenizer: &Path,
) -> std::result::Result<Library, String> {
    let script = format!(
        r#"
import json, sys, time
import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
docs = [open(f, encoding="utf-8").read() for f in sys.argv[2:]]
def median(f, setup=lambda: None):
    ts = []
    for _ in range({TOKENIZER_REPS}):
        x = setup(); t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
# Training first: after the encoding below the same training runs ~1.4x slower here.
def train(_):
    global trained
    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.NFC()
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size={TRAIN_VOCAB}, special_tokens={SPECIAL_TOKENS:?},
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    trained.train_from_iterator(docs, trainer)
train_s = median(train)
merges = json.loads(trained.to_str())["model"]["merges"]
# A freshly loaded tokenizer each time: its word cache starts empty, as on a first pass.
load = lambda: Tokenizer.from_file(sys.argv[1])
encode_s = median(lambda olmo: [olmo.encode(d).ids for d in docs], load)
ids = [i for d in docs for i in load().encode(d).ids]
print(tokenizers.__version__)
print(encode_s)
print(train_s)
print(" ".join(map(str, ids)))
for m in merges:
    print(" ".join(m) if isinstance(m, list) else m)
"#
    );
    let mut args = vec![tokenizer.as_os_str()];
    args.extend(corpus.iter().map(|p| p.as_os_str()));
    let env = [("TOKENIZERS_PARALLELISM", "false"), ("RAYON_NUM_THREADS", "1")];
    let text = run_python(&script, &args, &env, "tokenizers")?;
    let mut lines = text.lines();
    let mut next = |what: &str| lines.next().ok_or(format!("library output ends before {what}"));
    let version = next("the version")?.to_string();
    let seconds = |s: &str| s.trim().parse::<f64>().map_err(|_| format!("unexpected library output '{s}'"));
    let encode_s = seconds(next("the encode time")?)?;
    let train_s = seconds(next("the train time")?)?;
    let ids = next("the ids")?
        .split_whitespace()
        .map(|i| i.parse::<u32>().map_err(|_| format!("unexpected library id '{i}'")))
        .collect::<std::result::Result<Vec<u32>, String>>()?;
    let merges = lines
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or("unexpected library merge line")?;
    Ok(Library { version, encode_s, train_s, ids, merges })
}

fn tokenizer_table() -> Result<()> {
    let Some(corpus_dir) = CORPUS_DIRS.iter().find(|d| Path::new(d).is_dir()) else {
        println!(
            "tokenizer: skipped, no corpus at {} (run from the repository root)",
            CORPUS_DIRS.join(" or ")
        );
        return Ok(());
    };
    let Some(olmo_path) = OLMO_TOKENIZERS.iter().map(Path::new).find(|p| p.is_file()) else {
        println!(
            "tokenizer: skipped, no OLMo tokenizer at {} (run from the repository root)",
            OLMO_TOKENIZERS.join(" or ")
        );
        return Ok(());
    };
    let files = text_files(corpus_dir)?;
    let docs = files.iter().map(|f| read_text(f)).collect::<Result<Vec<String>>>()?;
    let mb = docs.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    let olmo = Tokenizer::load(olmo_path)?;
    let library = library_tokenizer(&files, olmo_path);

    let threads_before = threads::num_threads();
    threads::set_num_threads(1);
    // Each pass with a fresh clone: our piece cache starts empty, as the library's does.
    let mut times: Vec<f64> = (0..TOKENIZER_REPS)
        .map(|_| {
            let fresh = olmo.clone();
            let start = Instant::now();
            for d in &docs {
                std::hint::black_box(fresh.encode(d));
            }
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let encode_s = times[times.len() / 2];
    let ids: Vec<u32> = docs.iter().flat_map(|d| olmo.encode(d)).collect();
    let mut merges = Vec::new();
    let train_s = median_seconds(TOKENIZER_REPS, || {
        merges = learn(&count_words(&docs), TRAIN_VOCAB, &SPECIAL_TOKENS, 0).merges;
    });
    threads::set_num_threads(threads_before);

    let lib_name = library.as_ref().map_or("tokenizers".to_string(), |l| format!("tokenizers {}", l.version));
    println!(
        "tokenizer: OLMo tokenizer.json on {corpus_dir} ({} files, {mb:.2} MB); one thread, median of {TOKENIZER_REPS}",
        docs.len()
    );
    println!("| task | ours | {lib_name} | ours vs library | result |");
    println!("|---|---:|---:|---:|---|");
    let (lib_encode, lib_train, same_ids, same_merges) = match &library {
        Ok(l) => (
            format!("{:.2}", mb / l.encode_s),
            format!("{:.2}", l.train_s),
            if l.ids == ids {
                "identical".to_string()
            } else {
                format!("DIFFERENT ({} ids from the library)", thousands(l.ids.len()))
            },
            {
                let agree = merges.iter().zip(&l.merges).take_while(|(a, b)| a == b).count();
                if l.merges == merges {
                    "identical".to_string()
                } else {
                    format!("DIFFERENT (first {agree} agree; library learned {})", l.merges.len())
                }
            },
        ),
        Err(_) => ("–".to_string(), "–".to_string(), "not compared".to_string(), "not compared".to_string()),
    };
    // How many times faster ours is (rates: bigger is better).
    let speedup = |ours: f64, theirs: Option<f64>| {
        theirs.map_or("–".to_string(), |t| {
            if ours >= t {
                format!("{:.1}x faster", ours / t)
            } else {
                format!("{:.1}x slower", t / ours)
            }
        })
    };
    let lib = library.as_ref().ok();
    println!(
        "| encode, MB/s | {:.2} | {lib_encode} | {} | {} ids, {same_ids} |",
        mb / encode_s,
        speedup(mb / encode_s, lib.map(|l| mb / l.encode_s)),
        thousands(ids.len())
    );
    println!(
        "| train {TRAIN_VOCAB} vocab, s | {train_s:.2} | {lib_train} | {} | {} merges, {same_merges} |",
        speedup(1.0 / train_s, lib.map(|l| 1.0 / l.train_s)),
        thousands(merges.len())
    );
    if let Err(why) = library {
        println!("(tokenizers column empty: {why})");
    }
    Ok(())
}
