//! `moe bench --only decode`: greedy decoding at batch 1, tokens/s after the prefill.
//!
//! (a) make train's model (weights/shakespeare-moe, else the same config randomly initialised
//!     into weights/bench/: decoding speed does not depend on the values), ours beside
//!     transformers' `OlmoeForCausalLM.generate` on the same checkpoint, where the benchmark's
//!     python has torch and transformers.
//! (b) an OLMoE-1B-7B-shaped BF16 checkpoint from `moe init` (weights/bench/, written once:
//!     13.8 GB), beside its memory-bandwidth bound: a decode step must read every weight the
//!     token goes through once (attention, router, the top-K experts of each layer, lm_head),
//!     so tokens/s ≤ (copy bandwidth, measured in the same run) ÷ (those bytes).

use crate::bench::{active_matmul_params, median_seconds, peak_rss_kib, run_python};
use crate::cli::thousands;
use crate::cpu::threads;
use crate::error::Result;
use crate::init_cmd;
use crate::model::config::OlmoeConfig;
use crate::model::decode::Decoder;
use crate::model::hf;
use crate::rng::Rng;
use crate::safetensors::Dtype;
use crate::sample::{generate, Sampling};
use crate::trainer::default_config;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

const TRAINED: &str = "weights/shakespeare-moe";
const BENCH_DIR: &str = "weights/bench";
/// (prompt ids, new tokens) per model: (a) and (b).
const SMALL_RUN: (usize, usize) = (16, 128);
const LARGE_RUN: (usize, usize) = (8, 32);
/// The copy that measures memory bandwidth: two buffers of this many bytes.
const COPY_BYTES: usize = 512 << 20;

/// OLMoE-1B-7B's shape (allenai/OLMoE-1B-7B-0924 config.json): transformers' OlmoeConfig
/// defaults but for the expert width, 1024.
pub fn olmoe_1b_7b() -> OlmoeConfig {
    OlmoeConfig { intermediate_size: 1024, ..OlmoeConfig::default() }
}

pub fn decode_table(reps: usize) -> Result<()> {
    let n_threads = threads::num_threads();
    // The checkpoints first: writing one prints a line of its own.
    let (small_dir, trained) = match Path::new(TRAINED).join("model.safetensors").is_file() {
        true => (PathBuf::from(TRAINED), true),
        // No tokenizer, so no end-of-text id (the default's 50279 is past its vocabulary).
        false => (
            ensure_checkpoint(
                "default-f32",
                &OlmoeConfig { eos_token_id: None, ..default_config() },
                Dtype::F32,
            )?,
            false,
        ),
    };
    let config = olmoe_1b_7b();
    let large_dir = ensure_checkpoint("olmoe-1b-7b-bf16", &config, Dtype::BF16)?;
    println!(
        "decode: greedy, batch 1, tokens/s of the one-token steps after the prefill; {n_threads} threads, \
         a warm-up run then the median of {reps}"
    );
    println!("| model | weights | implementation | prompt + new tokens | decode tok/s | |");
    println!("|---|---|---|---:|---:|---|");

    // (a) make train's model, ours and transformers'.
    let label = if trained { format!("make train's ({TRAINED})") } else { "make train's, untrained".into() };
    let (prompt, new) = SMALL_RUN;
    let ours = ours_decode(&small_dir, prompt, new, reps)?;
    let size = format!("{}, {}", ours.dtype, megabytes(&small_dir));
    let run = format!("{prompt} + {new}");
    let theirs = transformers_decode(&small_dir, &ours.prompt, new, reps, n_threads);
    let ratio =
        theirs.as_ref().map_or(String::new(), |t| format!("{:.1}x transformers", ours.tokens_per_s / t.0));
    println!("| {label} | {size} | ours | {run} | {:.1} | {ratio} |", ours.tokens_per_s);
    match &theirs {
        Ok((tokens_per_s, ids, version)) => {
            let same = ours.ids.iter().zip(ids).take_while(|(a, b)| a == b).count();
            println!("| | | transformers {version} | {run} | {tokens_per_s:.1} | first {same} of {new} ids as ours |");
        }
        Err(why) => println!("| | | transformers | {run} | – | {why} |"),
    }

    // (b) OLMoE-1B-7B's shape in BF16, against the bandwidth bound.
    let (prompt, new) = LARGE_RUN;
    let ours = ours_decode(&large_dir, prompt, new, reps)?;
    let peak_kib = peak_rss_kib(); // before the bandwidth test's buffers
    let copy_gb_s = copy_bandwidth(reps.max(5));
    let bytes_per_token = active_matmul_params(&config) as f64 * 2.0;
    let bound = copy_gb_s * 1e9 / bytes_per_token;
    println!(
        "| OLMoE-1B-7B's shape (moe init) | {}, {} | ours | {prompt} + {new} | {:.2} | {:.0}% of the bandwidth bound, {bound:.2} |",
        ours.dtype,
        megabytes(&large_dir),
        ours.tokens_per_s,
        100.0 * ours.tokens_per_s / bound
    );
    println!(
        "bandwidth bound: copy bandwidth {copy_gb_s:.1} GB/s (a {} MiB buffer copied on {n_threads} threads, bytes \
         read + written, median of {}) ÷ {:.2} GB per token ({} bf16 weights: attention, router, the top-{} \
         experts of each layer, lm_head)",
        COPY_BYTES >> 20,
        reps.max(5),
        bytes_per_token / 1e9,
        thousands(active_matmul_params(&config)),
        config.num_experts_per_tok
    );
    if let Some(kib) = peak_kib {
        println!(
            "peak RSS of this process after decoding: {:.2} GiB, the checkpoint file {}: weights are memory-mapped \
             and never converted whole to f32",
            kib as f64 / (1 << 20) as f64,
            megabytes(&large_dir)
        );
    }
    Ok(())
}

/// `weights/bench/NAME`, written by `moe init` (seed 0) unless it already holds `config`.
fn ensure_checkpoint(name: &str, config: &OlmoeConfig, dtype: Dtype) -> Result<PathBuf> {
    let dir = Path::new(BENCH_DIR).join(name);
    let present = dir.join("model.safetensors").is_file()
        && OlmoeConfig::load(&dir.join("config.json")).is_ok_and(|c| &c == config);
    if !present {
        let (total, _) = init_cmd::param_counts(config);
        let gb = (total * dtype.size()) as f64 / 1e9;
        eprintln!("writing {} ({dtype}, {gb:.2} GB; once, kept for later runs)…", dir.display());
        init_cmd::init(&dir, config, dtype, 0)?;
    }
    Ok(dir)
}

fn megabytes(dir: &Path) -> String {
    let bytes = std::fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len());
    if bytes >= 1 << 30 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

struct OursDecode {
    tokens_per_s: f64,
    dtype: &'static str,
    prompt: Vec<u32>,
    ids: Vec<u32>,
}

/// Greedy decoding of `new` tokens after `prompt_len` random ids (no stop at EOS): a warm-up
/// run, then the median tokens/s of the one-token steps over `reps` runs.
fn ours_decode(dir: &Path, prompt_len: usize, new: usize, reps: usize) -> Result<OursDecode> {
    let (config, ckpt) = hf::open(dir)?;
    let weights = hf::views(&ckpt, &config)?;
    let mut rng = Rng::new(0);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| rng.below(config.vocab_size) as u32).collect();
    let (mut ids, mut rates) = (Vec::new(), Vec::new());
    for run in 0..=reps {
        let mut decoder = Decoder::new(&config, &weights, prompt_len + new);
        let g = generate(&mut decoder, &prompt, new, Sampling::GREEDY, None, &mut rng, |_| {
            ControlFlow::Continue(())
        })?;
        if run > 0 {
            rates.push(g.decode_steps as f64 / g.decode_seconds); // run 0 is the warm-up
        }
        ids = g.ids;
    }
    rates.sort_by(f64::total_cmp);
    let dtype = weights.embed_tokens[0].values().dtype_name();
    Ok(OursDecode { tokens_per_s: rates[rates.len() / 2], dtype, prompt, ids })
}

/// transformers' greedy `generate` on the same checkpoint and prompt: (decode tokens/s, ids,
/// its version). Decode time = time(new tokens) − time(1 token), per run; median of `reps`.
fn transformers_decode(
    dir: &Path,
    prompt: &[u32],
    new: usize,
    reps: usize,
    threads: usize,
) -> std::result::Result<(f64, Vec<u32>, String), String> {
    let prompt: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let script = format!(
        r#"
import statistics, sys, time
import torch, transformers
from transformers import OlmoeForCausalLM
torch.set_num_threads({threads})
model = OlmoeForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.tensor([[{prompt}]])
def run(n):
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, use_cache=True, max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=model.config.pad_token_id)
    return time.perf_counter() - start, out[0, ids.shape[1]:].tolist()
run({new})  # warm-up
rates = []
for _ in range({reps}):
    one, _ = run(1)
    all_, out = run({new})
    rates.append(({new} - 1) / (all_ - one))
print(statistics.median(rates))
print(" ".join(map(str, out)))
print(transformers.__version__)
"#,
        prompt = prompt.join(", ")
    );
    let out = run_python(&script, &[dir.as_os_str()], &[], "transformers")?;
    let lines: Vec<&str> = out.lines().collect();
    let [rate, ids, version] = lines[lines.len().saturating_sub(3)..] else {
        return Err(format!("unexpected output from the transformers script: {out:?}"));
    };
    let rate = rate.parse::<f64>().map_err(|_| format!("unexpected tokens/s {rate:?}"))?;
    let ids = ids.split(' ').filter_map(|s| s.parse().ok()).collect();
    Ok((rate, ids, version.to_string()))
}

/// Memory bandwidth, GB/s: a COPY_BYTES buffer copied into another, split across the
/// threads, counting the bytes read and written (STREAM's "copy"); median of `reps`.
fn copy_bandwidth(reps: usize) -> f64 {
    let src = vec![1u8; COPY_BYTES];
    let mut dst = vec![0u8; COPY_BYTES];
    let n = threads::num_threads();
    let chunk = COPY_BYTES.div_ceil(n);
    let seconds = median_seconds(reps, || {
        std::thread::scope(|s| {
            for (d, from) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(from));
            }
        });
    });
    2.0 * COPY_BYTES as f64 / seconds / 1e9
}
