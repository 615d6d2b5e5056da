//! Loading and saving the Hugging Face layout: `config.json` + `model.safetensors` (or shards
//! with `model.safetensors.index.json`), by the hub's tensor names. The one place where HF
//! names meet our weights (`Weights::named` lists them).
//!
//! Experts: the hub stores one tensor per expert (`mlp.experts.{e}.gate_proj.weight`, …); we
//! stack them into (E, F, C) / (E, C, F). transformers 5 keeps them fused in memory
//! (`mlp.experts.gate_up_proj` (E, 2F, C) = [gate; up], `mlp.experts.down_proj` (E, C, F)),
//! and a checkpoint re-saved in that form loads too.

use super::config::OlmoeConfig;
use super::olmoe::{HfName, Weights};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::safetensors::write_f32;
use crate::tensor::Tensor;
use std::collections::HashSet;
use std::path::Path;

/// Reads `dir/config.json` and every weight; a missing, mis-shaped or unexpected tensor is an
/// error that names it.
pub fn load(dir: &Path) -> Result<(OlmoeConfig, Weights<Tensor>)> {
    let config = OlmoeConfig::load(&dir.join("config.json"))?;
    let ckpt = Checkpoint::open(dir)?;
    let shapes = Weights::shapes(&config);
    let mut used = HashSet::new();
    let mut loaded = Vec::new();
    for (name, shape) in shapes.named() {
        loaded.push(match name {
            HfName::Single(name) => read(&ckpt, &name, shape, &mut used)?,
            HfName::Experts { prefix, suffix } => read_experts(&ckpt, &prefix, suffix, shape, &mut used)?,
        });
    }
    if let Some(extra) = ckpt.names().into_iter().find(|n| !used.contains(*n) && !ignorable(n, &config)) {
        return Err(Error::invalid(
            format!("{}: tensor '{extra}'", dir.display()),
            "not part of an OLMoE model",
        )
        .with_hint("check num_hidden_layers, num_experts and tie_word_embeddings in config.json"));
    }
    let mut loaded = loaded.into_iter();
    Ok((config, shapes.map(|_| loaded.next().expect("one tensor per weight"))))
}

/// Tensors a valid checkpoint may hold that the model does not read.
fn ignorable(name: &str, config: &OlmoeConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (config.tie_word_embeddings && name == "lm_head.weight")
}

fn read(ckpt: &Checkpoint, name: &str, shape: &[usize], used: &mut HashSet<String>) -> Result<Tensor> {
    let what = || format!("{}: tensor '{name}'", ckpt.dir().display());
    let info = ckpt.info(name).ok_or_else(|| Error::invalid(what(), "missing from the checkpoint"))?;
    if info.shape != shape {
        return Err(Error::invalid(
            what(),
            format!("has shape {:?}, the config implies {shape:?}", info.shape),
        ));
    }
    used.insert(name.to_string());
    ckpt.to_tensor(name)
}

/// E per-expert tensors stacked into `shape` (E, rows, cols), or the fused form.
fn read_experts(
    ckpt: &Checkpoint,
    prefix: &str,
    suffix: &str,
    shape: &[usize],
    used: &mut HashSet<String>,
) -> Result<Tensor> {
    let (e, per_expert) = (shape[0], &shape[1..]);
    if ckpt.info(&format!("{prefix}.0.{suffix}")).is_none() {
        return read_fused_experts(ckpt, prefix, suffix, shape, used);
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    for i in 0..e {
        data.extend_from_slice(read(ckpt, &format!("{prefix}.{i}.{suffix}"), per_expert, used)?.data());
    }
    Ok(Tensor::new(shape, data))
}

/// transformers 5's fused experts: gate and up are the two halves of `gate_up_proj`.
fn read_fused_experts(
    ckpt: &Checkpoint,
    prefix: &str,
    suffix: &str,
    shape: &[usize],
    used: &mut HashSet<String>,
) -> Result<Tensor> {
    let (e, rows, cols) = (shape[0], shape[1], shape[2]);
    let (fused_name, half) = match suffix {
        "down_proj.weight" => return read(ckpt, &format!("{prefix}.down_proj"), shape, used),
        "gate_proj.weight" => ("gate_up_proj", 0),
        _ => ("gate_up_proj", 1),
    };
    let name = format!("{prefix}.{fused_name}");
    if ckpt.info(&name).is_none() {
        return Err(Error::invalid(
            format!("{}: tensor '{prefix}.0.{suffix}'", ckpt.dir().display()),
            format!("missing from the checkpoint (nor is the fused '{name}' there)"),
        ));
    }
    let fused = read(ckpt, &name, &[e, 2 * rows, cols], used)?;
    let data = fused.data().chunks_exact(2 * rows * cols).flat_map(|expert| {
        let block = rows * cols;
        &expert[half * block..(half + 1) * block]
    });
    Ok(Tensor::new(shape, data.copied().collect()))
}

/// Writes `dir/config.json` and `dir/model.safetensors` (f32, the hub's per-expert names),
/// each atomically; transformers' `OlmoeForCausalLM.from_pretrained(dir)` reads them.
pub fn save(dir: &Path, config: &OlmoeConfig, weights: &Weights<Tensor>) -> Result<()> {
    write_config(dir, config)?;
    let tensors = hf_tensors(weights);
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_f32(&dir.join("model.safetensors"), &named, &[("format".to_string(), "pt".to_string())])
}

/// Creates `dir` if need be and writes `dir/config.json` (pretty JSON), atomically.
pub fn write_config(dir: &Path, config: &OlmoeConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let config_path = dir.join("config.json");
    let tmp = dir.join("config.json.tmp");
    std::fs::write(&tmp, config.to_json().to_json_pretty() + "\n")
        .and_then(|()| std::fs::rename(&tmp, &config_path))
        .map_err(|source| Error::Io { path: config_path, source })
}

/// Every weight (or gradient) under its hub name, experts split back out.
pub fn hf_tensors(weights: &Weights<Tensor>) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (name, t) in weights.named() {
        match name {
            HfName::Single(name) => out.push((name, t.clone())),
            HfName::Experts { prefix, suffix } => {
                let per_expert = &t.shape()[1..];
                for (e, chunk) in t.data().chunks_exact(per_expert.iter().product()).enumerate() {
                    out.push((format!("{prefix}.{e}.{suffix}"), Tensor::new(per_expert, chunk.to_vec())));
                }
            }
        }
    }
    out
}
