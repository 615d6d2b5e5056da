//! Sparse upcycling (`moe upcycle`): the copy is exact (with renormalised top-K weights the
//! MoE computes the dense model's logits), noise touches half the entries, sharded and plain
//! dense layouts work, and a model that is not dense, or lacks a tensor, is refused by name.

use moe::autograd::Tape;
use moe::checkpoint::Checkpoint;
use moe::model::config::OlmoeConfig;
use moe::model::hf;
use moe::model::olmoe::{forward, Weights};
use moe::rng::Rng;
use moe::tensor::Tensor;
use moe::upcycle::upcycle;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-upcycle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A random dense OLMoE (one expert, top-1), saved in `dir`.
fn dense_model(dir: &Path) -> (OlmoeConfig, Weights<Tensor>) {
    let config = OlmoeConfig {
        vocab_size: 64,
        hidden_size: 16,
        intermediate_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        num_experts: 1,
        num_experts_per_tok: 1,
        initializer_range: 0.2,
        eos_token_id: None,
        pad_token_id: None,
        router_aux_loss_coef: 0.0,
        router_z_loss_coef: 0.0,
        ..OlmoeConfig::default()
    };
    let weights = Weights::init(&config, &mut Rng::new(1));
    hf::save(dir, &config, &weights).unwrap();
    (config, weights)
}

fn logits(config: &OlmoeConfig, weights: &Weights<Tensor>, ids: &[u32]) -> Vec<f32> {
    let mut tape = Tape::new();
    let vars = weights.map(|w| tape.constant(w.clone()));
    let out = forward(&mut tape, &vars, config, ids, 1, ids.len());
    tape.value(out.logits).data().to_vec()
}

#[test]
fn upcycled_experts_are_exact_copies_so_the_model_computes_the_dense_function() {
    let (dense_dir, out) = (tmp("dense"), tmp("moe"));
    let (dense_config, dense) = dense_model(&dense_dir);
    let config = upcycle(&dense_dir, &out, 4, 2, false, 7).unwrap();
    assert_eq!((config.num_experts, config.num_experts_per_tok), (4, 2));
    assert_eq!((config.router_aux_loss_coef, config.router_z_loss_coef), (0.01, 0.001));
    let (loaded_config, moe) = hf::load(&out).unwrap();
    assert_eq!(loaded_config, config);
    for (d, m) in dense.layers.iter().zip(&moe.layers) {
        for (dense_w, experts) in [
            (&d.experts_gate, &m.experts_gate),
            (&d.experts_up, &m.experts_up),
            (&d.experts_down, &m.experts_down),
        ] {
            for e in experts.data().chunks_exact(dense_w.numel()) {
                assert_eq!(e, dense_w.data(), "an expert differs from the dense MLP");
            }
        }
        assert_eq!(d.q_proj.data(), m.q_proj.data());
        // The router: N(0, 0.02).
        let r = m.router.data();
        let std = (r.iter().map(|v| (v * v) as f64).sum::<f64>() / r.len() as f64).sqrt();
        assert!((0.01..0.03).contains(&std), "router std {std}");
    }
    // With the top-2 weights renormalised, every token gets 1 · (the dense MLP): the dense model.
    let ids: Vec<u32> = (0..10).map(|i| (i * 7 % 64) as u32).collect();
    let renormalised = OlmoeConfig { norm_topk_prob: true, ..config };
    let (want, got) = (logits(&dense_config, &dense, &ids), logits(&renormalised, &moe, &ids));
    let worst = want.iter().zip(&got).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("upcycled vs dense logits: max |diff| {worst:.2e}");
    assert!(worst < 1e-5, "upcycled logits differ from the dense model's by {worst:e}");
    for d in [dense_dir, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn noise_replaces_about_half_of_each_copy_differently_per_expert() {
    let (dense_dir, out) = (tmp("noise-dense"), tmp("noise-moe"));
    let (_, dense) = dense_model(&dense_dir);
    upcycle(&dense_dir, &out, 4, 2, true, 3).unwrap();
    let (_, moe) = hf::load(&out).unwrap();
    let dense_gate = dense.layers[0].experts_gate.data();
    let experts: Vec<&[f32]> = moe.layers[0].experts_gate.data().chunks_exact(dense_gate.len()).collect();
    for e in &experts {
        let changed = e.iter().zip(dense_gate).filter(|(a, b)| a != b).count() as f64 / e.len() as f64;
        assert!((0.4..0.6).contains(&changed), "{changed} of the entries changed");
    }
    assert_ne!(experts[0], experts[1], "each expert gets its own noise");
    for d in [dense_dir, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_plain_sharded_dense_checkpoint_upcycles_to_the_same_model() {
    // The dense MLP under plain names (mlp.{gate,up,down}_proj), no router, in two shards.
    let (dense_dir, plain_dir, a, b) = (tmp("s-dense"), tmp("s-plain"), tmp("s-a"), tmp("s-b"));
    let (_, dense) = dense_model(&dense_dir);
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::copy(dense_dir.join("config.json"), plain_dir.join("config.json")).unwrap();
    let renamed: Vec<(String, Tensor)> = hf::hf_tensors(&dense)
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".mlp.gate.weight"))
        .map(|(n, t)| (n.replace(".mlp.experts.0.", ".mlp."), t))
        .collect();
    let half = renamed.len() / 2;
    let mut weight_map = Vec::new();
    for (i, part) in [&renamed[..half], &renamed[half..]].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let refs: Vec<(&str, &Tensor)> = part.iter().map(|(n, t)| (n.as_str(), t)).collect();
        moe::safetensors::write_f32(&plain_dir.join(&file), &refs, &[]).unwrap();
        weight_map.extend(part.iter().map(|(n, _)| (n.clone(), moe::json::Value::String(file.clone()))));
    }
    let index = moe::json::Value::Object(vec![("weight_map".into(), moe::json::Value::Object(weight_map))]);
    std::fs::write(plain_dir.join("model.safetensors.index.json"), index.to_json_pretty()).unwrap();
    assert!(Checkpoint::open(&plain_dir).unwrap().info("model.layers.0.mlp.gate_proj.weight").is_some());
    upcycle(&dense_dir, &a, 4, 2, true, 5).unwrap();
    upcycle(&plain_dir, &b, 4, 2, true, 5).unwrap();
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(bytes(&a) == bytes(&b), "the plain sharded dense model upcycles to different weights");
    for d in [dense_dir, plain_dir, a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_model_that_is_not_dense_or_lacks_a_tensor_is_refused_by_name() {
    let (dense_dir, out) = (tmp("bad-dense"), tmp("bad-out"));
    dense_model(&dense_dir);
    let moe_dir = tmp("bad-moe");
    upcycle(&dense_dir, &moe_dir, 4, 2, false, 0).unwrap();
    let err = upcycle(&moe_dir, &out, 8, 2, false, 0).unwrap_err().to_string();
    assert!(err.contains("field 'num_experts': is 4: not a dense model"), "{err}");
    let err = upcycle(&dense_dir, &out, 4, 5, false, 0).unwrap_err().to_string();
    assert!(err.contains("num_experts_per_tok 5 exceeds num_experts 4"), "{err}");
    // Drop one layer's down projection from the dense checkpoint.
    let (_, weights) = hf::load(&dense_dir).unwrap();
    let kept: Vec<(String, Tensor)> = hf::hf_tensors(&weights)
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.mlp.experts.0.down_proj.weight")
        .collect();
    let refs: Vec<(&str, &Tensor)> = kept.iter().map(|(n, t)| (n.as_str(), t)).collect();
    moe::safetensors::write_f32(&dense_dir.join("model.safetensors"), &refs, &[]).unwrap();
    let err = upcycle(&dense_dir, &out, 4, 2, false, 0).unwrap_err().to_string();
    assert!(
        err.contains("tensor 'model.layers.1.mlp.experts.0.down_proj.weight': missing from the dense checkpoint (nor is 'model.layers.1.mlp.down_proj.weight' there)"),
        "{err}"
    );
    for d in [dense_dir, out, moe_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}
