//! `moe upcycle`: sparse upcycling as OLMoE's `scripts/sparsify_ckpt_unsharded.py` does it
//! (SPEC.md §2.3): a dense model becomes an MoE whose experts all start as the dense MLP.
//! ```text
//! every layer:  expert e ← the dense MLP (gate, up, down), for e = 0 … E−1
//!               [--noise: in each copy, each entry is replaced by a N(0, 0.02) draw with
//!                probability ½ (independently per expert, which makes the copies differ)]
//!               router  ← N(0, 0.02)          (the script's comment: an all-ones init did worse)
//! everything else (embeddings, attention, norms, lm_head) is copied
//! ```
//! With every expert the same MLP and the top-K weights renormalised (norm_topk_prob true),
//! the upcycled model computes exactly the dense model's function (tests/upcycle.rs checks
//! this). The output keeps the dense config's norm_topk_prob (OLMoE's default, false): then
//! each layer's MLP output starts scaled by the chosen experts' router mass, about K/E.
//!
//! The dense model is our own (`moe train --dense`: an OLMoE with one expert) or any Hugging
//! Face directory in OLMoE's layout whose MLP is `mlp.experts.0.*` or plain `mlp.*_proj`
//! (single file or shards). Tensors are read and written one at a time, so a dense model of
//! any size upcycles within about one tensor of memory; the dtype (F32 or BF16) is kept.

use crate::checkpoint::Checkpoint;
use crate::cli::{thousands, Args};
use crate::error::{Error, Result};
use crate::init_cmd::{hub_tensors, param_counts};
use crate::model::config::OlmoeConfig;
use crate::model::hf;
use crate::rng::Rng;
use crate::safetensors::{to_bytes, write_streaming, Dtype};
use crate::tensor::Tensor;
use std::path::Path;

pub const HELP: &str = r"moe upcycle --dense DIR --num-experts E --top-k K [--noise] [--seed S] --out DIR
  Sparse upcycling (OLMoE's script): writes OUT, an OLMoE with E experts per layer, K per
  token, whose every expert is a copy of DIR's dense MLP and whose routers are N(0, 0.02);
  everything else is copied, and tokenizer.json too if DIR has one. DIR is a dense OLMoE
  (one expert, as `moe train --dense` writes) or a Hugging Face directory in the same layout
  with plain mlp.{gate,up,down}_proj weights; single file or shards; F32 or BF16 (kept).
  --noise   replace a random half of each copied expert matrix's entries with N(0, 0.02)
  --seed S  router init and noise (default 0)
  Then `moe train --init OUT` trains it with a fresh optimizer.
";

/// The router's and the noise's standard deviation (the script's `normal_(std=0.02)`).
const INIT_STD: f64 = 0.02;

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["dense", "num-experts", "top-k", "noise", "seed", "out"])?;
    let dense = Path::new(args.required("dense", HELP)?);
    let out = Path::new(args.required("out", HELP)?);
    let experts = args.count("num-experts")?.ok_or_else(|| args.missing("num-experts", HELP))?;
    let top_k = args.count("top-k")?.ok_or_else(|| args.missing("top-k", HELP))?;
    let seed = args.whole("seed")?.unwrap_or(0);
    let config = upcycle(dense, out, experts, top_k, args.has("noise"), seed)?;
    let (total, active) = param_counts(&config);
    println!(
        "wrote {}: {} experts per layer, top-{}, each a copy of {}'s dense MLP{}; {} parameters, {} active per token",
        out.display(),
        experts,
        top_k,
        dense.display(),
        if args.has("noise") { " with half its entries noised" } else { "" },
        thousands(total),
        thousands(active)
    );
    Ok(())
}

/// Upcycles the dense model in `dense` into `out` (config.json, model.safetensors and the
/// tokenizer if any); returns the MoE's config.
pub fn upcycle(
    dense: &Path,
    out: &Path,
    experts: usize,
    top_k: usize,
    noise: bool,
    seed: u64,
) -> Result<OlmoeConfig> {
    let (dense_config, ckpt) = hf::open(dense)?;
    if dense_config.num_experts != 1 {
        return Err(Error::invalid(
            format!("{}: field 'num_experts'", dense.join("config.json").display()),
            format!("is {}: not a dense model (a dense OLMoE has one expert)", dense_config.num_experts),
        )
        .with_hint("`moe train --dense` writes one"));
    }
    let d = OlmoeConfig::default();
    let config = OlmoeConfig {
        num_experts: experts,
        num_experts_per_tok: top_k,
        router_aux_loss_coef: d.router_aux_loss_coef,
        router_z_loss_coef: d.router_z_loss_coef,
        ..dense_config.clone()
    };
    config.validate("moe upcycle: --num-experts / --top-k")?;
    let dtype = match ckpt.info("model.embed_tokens.weight").map(|i| i.dtype) {
        Some(Dtype::BF16) => Dtype::BF16,
        _ => Dtype::F32,
    };

    hf::write_config(out, &config)?;
    let tensors = hub_tensors(&config, dtype);
    let mut rng = Rng::new(seed);
    let mut source: Option<(String, Tensor)> = None; // the dense MLP matrix last read
    write_streaming(
        &out.join("model.safetensors"),
        &tensors,
        &[("format".into(), "pt".into())],
        |i, buf| {
            let (name, _, shape) = &tensors[i];
            let values = if name.ends_with(".mlp.gate.weight") {
                let numel = shape.iter().product();
                Tensor::new(shape, (0..numel).map(|_| (rng.normal() * INIT_STD) as f32).collect())
            } else if let Some((layer, part)) = expert_part(name) {
                let dense_name = dense_mlp_name(&ckpt, layer, part)?;
                if source.as_ref().is_none_or(|(n, _)| *n != dense_name) {
                    source = Some((dense_name.clone(), read(&ckpt, &dense_name, shape)?));
                }
                let mut copy = source.as_ref().expect("just read").1.clone();
                if noise {
                    for v in copy.data_mut() {
                        if rng.uniform() < 0.5 {
                            *v = (rng.normal() * INIT_STD) as f32;
                        }
                    }
                }
                copy
            } else {
                read(&ckpt, name, shape)?
            };
            buf.extend_from_slice(&to_bytes(&values, dtype)?);
            Ok(())
        },
    )?;
    let tokenizer = dense.join("tokenizer.json");
    if tokenizer.is_file() {
        std::fs::copy(&tokenizer, out.join("tokenizer.json"))
            .map_err(|source| Error::Io { path: out.join("tokenizer.json"), source })?;
    }
    Ok(config)
}

/// `model.layers.{i}.mlp.experts.{e}.{part}` → (`model.layers.{i}`, `{part}`).
fn expert_part(name: &str) -> Option<(&str, &str)> {
    let (layer, rest) = name.split_once(".mlp.experts.")?;
    let (_, part) = rest.split_once('.')?;
    Some((layer, part))
}

/// The dense MLP matrix `part` (e.g. `gate_proj.weight`) of `layer`: our dense OLMoE's single
/// expert, else a plain dense MLP's.
fn dense_mlp_name(ckpt: &Checkpoint, layer: &str, part: &str) -> Result<String> {
    let candidates = [format!("{layer}.mlp.experts.0.{part}"), format!("{layer}.mlp.{part}")];
    candidates.iter().find(|n| ckpt.info(n).is_some()).cloned().ok_or_else(|| {
        Error::invalid(
            format!("{}: tensor '{}'", ckpt.dir().display(), candidates[0]),
            format!("missing from the dense checkpoint (nor is '{}' there)", candidates[1]),
        )
    })
}

/// Tensor `name` of the dense checkpoint, which must have `shape`.
fn read(ckpt: &Checkpoint, name: &str, shape: &[usize]) -> Result<Tensor> {
    let what = || format!("{}: tensor '{name}'", ckpt.dir().display());
    let info = ckpt.info(name).ok_or_else(|| Error::invalid(what(), "missing from the dense checkpoint"))?;
    if info.shape != shape {
        return Err(Error::invalid(
            what(),
            format!("has shape {:?}; the upcycled model needs {shape:?}", info.shape),
        ));
    }
    ckpt.to_tensor(name)
}
