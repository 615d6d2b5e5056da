//! `moe init`: a randomly initialised checkpoint in the Hugging Face layout, at any size.
//! Tensors are drawn one at a time, in `Weights::named` order with experts split out, and
//! streamed to disk, so memory holds one (per-expert) tensor, never the model. The values are
//! exactly `Weights::init` with `Rng::new(seed)`: 1-D weights (norms) one, matrices truncated
//! normal (std initializer_range, cut at ±3 std), rounded to the requested dtype.

use crate::cli::{thousands, Args};
use crate::error::{Error, Result};
use crate::model::config::OlmoeConfig;
use crate::model::hf;
use crate::model::olmoe::{HfName, Weights};
use crate::rng::Rng;
use crate::safetensors::{write_streaming, Dtype};
use half::bf16;
use std::path::Path;

pub const HELP: &str = r"moe init --config CONFIG.json --out DIR [--dtype bf16|f32] [--seed S]
  Writes DIR/config.json and DIR/model.safetensors: every weight of the model CONFIG.json
  describes, under its hub name, randomly initialised as OLMoE does (norm weights one, matrices
  truncated normal with std initializer_range, cut at ±3 std). Tensors are made and written one
  at a time, so any size fits in memory. Prints the parameter counts and the file size.
  --dtype  bf16 (default) or f32
  --seed   the random seed, an unsigned integer (default 0); the same seed gives the same file
";

/// Truncation of the normal init, in standard deviations (as `Weights::init`).
const CUTOFF: f32 = 3.0;

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["config", "out", "dtype", "seed"])?;
    let (config_path, out) =
        (Path::new(args.required("config", HELP)?), Path::new(args.required("out", HELP)?));
    let dtype = match args.value("dtype")? {
        None => Dtype::BF16,
        Some(name) => parse_dtype(name)?,
    };
    let seed = match args.value("seed")? {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            Error::invalid("moe init: --seed", format!("\"{s}\" is not an unsigned integer (e.g. --seed 0)"))
        })?,
    };
    let config = OlmoeConfig::load(config_path)?;
    let bytes = init(out, &config, dtype, seed)?;
    let (total, active) = param_counts(&config);
    println!(
        "wrote {}: {} parameters, {} active per token ({dtype}, seed {seed}), {} bytes ({:.2} GB)",
        out.join("model.safetensors").display(),
        thousands(total),
        thousands(active),
        thousands(bytes as usize),
        bytes as f64 / 1e9
    );
    Ok(())
}

/// `bf16` or `f32` (either case).
pub fn parse_dtype(name: &str) -> Result<Dtype> {
    match name.to_ascii_lowercase().as_str() {
        "bf16" => Ok(Dtype::BF16),
        "f32" => Ok(Dtype::F32),
        _ => Err(Error::invalid("moe init: --dtype", format!("unknown dtype \"{name}\" (known: bf16, f32)"))),
    }
}

/// Writes `dir/config.json` and `dir/model.safetensors` for `config`, initialised from
/// `Rng::new(seed)` and stored as `dtype` (F32 or BF16). Returns the safetensors file's size.
pub fn init(dir: &Path, config: &OlmoeConfig, dtype: Dtype, seed: u64) -> Result<u64> {
    assert!(matches!(dtype, Dtype::F32 | Dtype::BF16), "moe init: dtype {dtype} (F32 or BF16 only)");
    hf::write_config(dir, config)?;
    let tensors = hub_tensors(config, dtype);
    let std = config.initializer_range;
    let mut rng = Rng::new(seed);
    let path = dir.join("model.safetensors");
    let metadata = [("format".to_string(), "pt".to_string())];
    write_streaming(&path, &tensors, &metadata, |i, buf| {
        let shape = &tensors[i].2;
        let numel: usize = shape.iter().product();
        buf.reserve(numel * dtype.size());
        // Same draw, in the same order, as Tensor::trunc_normal inside Weights::init.
        let mut value = || match shape.len() {
            1 => 1.0,
            _ => (rng.truncated_normal(CUTOFF as f64) * std as f64) as f32,
        };
        for _ in 0..numel {
            match dtype {
                Dtype::BF16 => buf.extend_from_slice(&bf16::from_f32(value()).to_le_bytes()),
                _ => buf.extend_from_slice(&value().to_le_bytes()),
            }
        }
        Ok(())
    })?;
    std::fs::metadata(&path).map(|m| m.len()).map_err(|source| Error::Io { path, source })
}

/// Every tensor of the hub checkpoint, (name, dtype, shape), in `Weights::named` order with the
/// experts split out (`mlp.experts.{e}.gate_proj.weight`, …). A per-expert tensor is 2-D, a
/// norm 1-D, so the shape alone says how to initialise it.
pub(crate) fn hub_tensors(config: &OlmoeConfig, dtype: Dtype) -> Vec<(String, Dtype, Vec<usize>)> {
    let mut out = Vec::new();
    for (name, shape) in Weights::shapes(config).named() {
        match name {
            HfName::Single(name) => out.push((name, dtype, shape.clone())),
            HfName::Experts { prefix, suffix } => {
                for e in 0..shape[0] {
                    out.push((format!("{prefix}.{e}.{suffix}"), dtype, shape[1..].to_vec()));
                }
            }
        }
    }
    out
}

/// (total parameters, parameters one token reads): the total less the experts the router does
/// not pick (E − k per layer). Embeddings and lm_head count once each (once in all if tied).
pub fn param_counts(config: &OlmoeConfig) -> (usize, usize) {
    let shapes = Weights::shapes(config);
    let numel = |s: &Vec<usize>| s.iter().product::<usize>();
    let total: usize = shapes.named().iter().map(|(_, s)| numel(s)).sum();
    let per_expert: usize = shapes
        .layers
        .iter()
        .map(|l| {
            [&l.experts_gate, &l.experts_up, &l.experts_down].iter().map(|s| numel(s) / s[0]).sum::<usize>()
        })
        .sum();
    let idle = config.num_experts.saturating_sub(config.num_experts_per_tok);
    (total, total - idle * per_expert)
}
