//! Loading and saving the Hugging Face layout: `config.json` + `model.safetensors` (or shards
//! with `model.safetensors.index.json`), by the hub's tensor names. The one place where HF
//! names meet our weights (`Weights::named` lists them).
//!
//! Experts: the hub stores one tensor per expert (`mlp.experts.{e}.gate_proj.weight`, …); we
//! stack them into (E, F, C) / (E, C, F). transformers 5 keeps them fused in memory
//! (`mlp.experts.gate_up_proj` (E, 2F, C) = [gate; up], `mlp.experts.down_proj` (E, C, F)),
//! and a checkpoint re-saved in that form loads too.
//!
//! Two ways in: [`views`] borrows every weight as the file stores it (what generation runs
//! on, so a bf16 model stays bf16 in memory); [`load`] reads them into f32 tensors (what
//! training and `moe forward` run on).

use super::config::OlmoeConfig;
use super::decode::StoredWeights;
use super::olmoe::{HfName, Weights};
use crate::checkpoint::Checkpoint;
use crate::cpu::linear::{Matrix, Values};
use crate::error::{Error, Result};
use crate::safetensors::{write_f32, Dtype};
use crate::tensor::Tensor;
use half::bf16;
use half::slice::HalfBitsSliceExt;
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

// A tensor's little-endian bytes are borrowed as values in place, which needs a little-endian CPU.
const _: () =
    assert!(cfg!(target_endian = "little"), "moe reads safetensors in place: little-endian CPUs only");

/// Reads `dir/config.json` and every weight into f32 tensors (for training and `moe forward`);
/// a missing, mis-shaped or unexpected tensor is an error that names it.
pub fn load(dir: &Path) -> Result<(OlmoeConfig, Weights<Tensor>)> {
    let (config, ckpt) = open(dir)?;
    let stored = views(&ckpt, &config)?;
    // Weights::map visits in named() order, so the stored weights come out in step.
    let mut matrices = stored.named().into_iter().map(|(_, m)| m);
    let tensors = Weights::shapes(&config).map(|shape| {
        let parts = matrices.next().expect("one stored weight per weight");
        Tensor::new(shape, parts.iter().flat_map(Matrix::to_f32).collect())
    });
    Ok((config, tensors))
}

/// `dir/config.json` and the checkpoint beside it, opened (memory-mapped, nothing read yet).
pub fn open(dir: &Path) -> Result<(OlmoeConfig, Checkpoint)> {
    let config = OlmoeConfig::load(&dir.join("config.json"))?;
    Ok((config, Checkpoint::open(dir)?))
}

/// Every weight `config` calls for, as `ckpt` stores it: F32 and BF16 values borrowed from
/// the memory map (copied only where the file leaves them unaligned), F16 widened to f32.
/// A missing, mis-shaped or unexpected tensor is an error that names it.
pub fn views<'c>(ckpt: &'c Checkpoint, config: &OlmoeConfig) -> Result<StoredWeights<'c>> {
    let shapes = Weights::shapes(config);
    let mut used = HashSet::new();
    let mut stored = Vec::new();
    for (name, shape) in shapes.named() {
        stored.push(match name {
            HfName::Single(name) => {
                let (rows, cols) = match *shape.as_slice() {
                    [cols] => (1, cols),
                    [rows, cols] => (rows, cols),
                    _ => unreachable!("weights are 1-D or 2-D, experts aside"),
                };
                vec![Matrix::new(read(ckpt, &name, shape, &mut used)?, rows, cols)]
            }
            HfName::Experts { prefix, suffix } => read_experts(ckpt, &prefix, suffix, shape, &mut used)?,
        });
    }
    if let Some(extra) = ckpt.names().into_iter().find(|n| !used.contains(*n) && !ignorable(n, config)) {
        return Err(Error::invalid(
            format!("{}: tensor '{extra}'", ckpt.dir().display()),
            "not part of an OLMoE model",
        )
        .with_hint("check num_hidden_layers, num_experts and tie_word_embeddings in config.json"));
    }
    let mut stored = stored.into_iter();
    Ok(shapes.map(|_| stored.next().expect("one stored weight per weight")))
}

/// Tensors a valid checkpoint may hold that the model does not read.
fn ignorable(name: &str, config: &OlmoeConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (config.tie_word_embeddings && name == "lm_head.weight")
}

/// The values of tensor `name`, which must have `shape`.
fn read<'c>(
    ckpt: &'c Checkpoint,
    name: &str,
    shape: &[usize],
    used: &mut HashSet<String>,
) -> Result<Values<'c>> {
    let what = || format!("{}: tensor '{name}'", ckpt.dir().display());
    let (Some(info), Some(bytes)) = (ckpt.info(name), ckpt.bytes(name)) else {
        return Err(Error::invalid(what(), "missing from the checkpoint"));
    };
    if info.shape != shape {
        return Err(Error::invalid(
            what(),
            format!("has shape {:?}, the config implies {shape:?}", info.shape),
        ));
    }
    used.insert(name.to_string());
    Ok(match info.dtype {
        Dtype::F32 => Values::F32(match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(values) => Cow::Borrowed(values),
            Err(_) => Cow::Owned(ckpt.to_tensor(name)?.into_vec()),
        }),
        Dtype::BF16 => Values::BF16(match bytemuck::try_cast_slice::<u8, u16>(bytes) {
            Ok(bits) => Cow::Borrowed(bits.reinterpret_cast::<bf16>()),
            Err(_) => Cow::Owned(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]])).collect()),
        }),
        // F16 (widened), or an error naming the tensor for a dtype that is not a float.
        _ => Values::F32(Cow::Owned(ckpt.to_tensor(name)?.into_vec())),
    })
}

/// The E per-expert matrices of `shape` (E, rows, cols): the hub's one tensor per expert, or
/// transformers 5's fused form.
fn read_experts<'c>(
    ckpt: &'c Checkpoint,
    prefix: &str,
    suffix: &str,
    shape: &[usize],
    used: &mut HashSet<String>,
) -> Result<Vec<Matrix<'c>>> {
    let (e, rows, cols) = (shape[0], shape[1], shape[2]);
    if ckpt.info(&format!("{prefix}.0.{suffix}")).is_none() {
        return read_fused_experts(ckpt, prefix, suffix, shape, used);
    }
    (0..e)
        .map(|i| {
            Ok(Matrix::new(read(ckpt, &format!("{prefix}.{i}.{suffix}"), &[rows, cols], used)?, rows, cols))
        })
        .collect()
}

/// transformers 5's fused experts: gate and up are the two halves of each expert's block of
/// `gate_up_proj` (E, 2F, C); `down_proj` is (E, C, F).
fn read_fused_experts<'c>(
    ckpt: &'c Checkpoint,
    prefix: &str,
    suffix: &str,
    shape: &[usize],
    used: &mut HashSet<String>,
) -> Result<Vec<Matrix<'c>>> {
    let (e, rows, cols) = (shape[0], shape[1], shape[2]);
    let (name, fused_shape, half) = match suffix {
        "down_proj.weight" => (format!("{prefix}.down_proj"), vec![e, rows, cols], 0),
        "gate_proj.weight" => (format!("{prefix}.gate_up_proj"), vec![e, 2 * rows, cols], 0),
        _ => (format!("{prefix}.gate_up_proj"), vec![e, 2 * rows, cols], 1),
    };
    if ckpt.info(&name).is_none() {
        return Err(Error::invalid(
            format!("{}: tensor '{prefix}.0.{suffix}'", ckpt.dir().display()),
            format!("missing from the checkpoint (nor is the fused '{name}' there)"),
        ));
    }
    let fused = read(ckpt, &name, &fused_shape, used)?;
    let (block, expert) = (rows * cols, fused_shape[1] * cols);
    Ok((0..e).map(|i| Matrix::new(fused.part(i * expert + half * block, block), rows, cols)).collect())
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
