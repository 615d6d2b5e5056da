//! `moe init`: the checkpoint it writes loads, runs, is reproducible, follows OLMoE's init rule
//! (norms one, matrices truncated normal at ±3·initializer_range) and equals `Weights::init`
//! for the same seed; bad flags are clear errors; `write_streaming` checks what it is given.

use moe::forward::evaluate;
use moe::init_cmd::{init, param_counts};
use moe::model::config::OlmoeConfig;
use moe::model::hf;
use moe::model::olmoe::Weights;
use moe::rng::Rng;
use moe::safetensors::{write_streaming, Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-init-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny OLMoE config.json in `dir`: 2 layers, 8 experts (top 2), hidden 32, vocab `vocab`.
fn tiny_config(dir: &Path, vocab: usize, tied: bool) -> PathBuf {
    let path = dir.join("tiny.json");
    let text = format!(
        r#"{{"model_type": "olmoe", "vocab_size": {vocab}, "hidden_size": 32, "intermediate_size": 16,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8,
  "num_experts_per_tok": 2, "norm_topk_prob": false, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "max_position_embeddings": 64, "clip_qkv": null, "router_aux_loss_coef": 0.01,
  "tie_word_embeddings": {tied}, "initializer_range": 0.02, "bos_token_id": null,
  "eos_token_id": 95, "pad_token_id": 1}}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn moe_init(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moe")).arg("init").args(args).output().unwrap()
}

#[test]
fn f32_checkpoint_loads_runs_and_equals_weights_init() {
    let dir = temp_dir("f32");
    let config_path = tiny_config(&dir, 96, false);
    let out = dir.join("model");
    let run = moe_init(&[
        "--config",
        config_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "f32",
        "--seed",
        "7",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "moe init failed: {}", String::from_utf8_lossy(&run.stderr));
    let config = OlmoeConfig::load(&config_path).unwrap();
    let (total, active) = param_counts(&config);
    println!("{stdout}");
    assert!(stdout.contains("parameters") && stdout.contains("active per token") && stdout.contains("bytes"));

    let (loaded_config, weights) = hf::load(&out).unwrap();
    assert_eq!(loaded_config.to_json().to_json(), config.to_json().to_json(), "config.json round trip");
    let want = Weights::init(&config, &mut Rng::new(7));
    for ((name, got), (_, want)) in hf::hf_tensors(&weights).iter().zip(hf::hf_tensors(&want).iter()) {
        assert_eq!(got.shape(), want.shape(), "{name}");
        assert!(got.data() == want.data(), "{name}: differs from Weights::init with the same seed");
    }
    assert_eq!(weights.numel(), total);
    // Per token: everything but 6 of the 8 experts (3 matrices of 16×32) in each of 2 layers.
    assert_eq!(active, total - 2 * 6 * 3 * 16 * 32);

    let st = SafeTensors::open(&out.join("model.safetensors")).unwrap();
    assert_eq!(st.metadata(), [("format".to_string(), "pt".to_string())]);
    assert!(st.names().contains(&"model.layers.1.mlp.experts.7.down_proj.weight"));
    assert!(st.names().iter().all(|n| st.info(n).unwrap().dtype == Dtype::F32));

    let ids: Vec<u32> = (0..16).map(|i| (i * 7 + 3) % 96).collect();
    let report = evaluate(&config, &weights, &ids, 2, 8, false);
    println!("loss {} aux {} z {}", report.loss, report.aux_loss, report.z_loss);
    assert!(report.loss.is_finite() && report.aux_loss.is_finite() && report.z_loss.is_finite());
    // Near-uniform logits at init: CE close to ln(vocab).
    assert!((report.loss - 96f32.ln()).abs() < 0.5, "loss {} vs ln 96", report.loss);
    assert!(report.logits.data().iter().all(|x| x.is_finite()));
}

#[test]
fn same_seed_same_file_other_seed_other_file() {
    let dir = temp_dir("seed");
    let config = OlmoeConfig::load(&tiny_config(&dir, 96, true)).unwrap();
    let read = |sub: &str, seed| {
        init(&dir.join(sub), &config, Dtype::BF16, seed).unwrap();
        std::fs::read(dir.join(sub).join("model.safetensors")).unwrap()
    };
    let (a, b, c) = (read("a", 3), read("b", 3), read("c", 4));
    assert!(a == b, "the same seed must give identical files");
    assert!(a != c, "another seed must give another file");
    assert_eq!(
        std::fs::read(dir.join("a/config.json")).unwrap(),
        std::fs::read(dir.join("b/config.json")).unwrap()
    );
    assert!(!dir.join("a/model.safetensors.tmp").exists(), "the temporary file is renamed away");
}

#[test]
fn bf16_is_the_rounded_f32_init() {
    let dir = temp_dir("bf16");
    let config = OlmoeConfig::load(&tiny_config(&dir, 96, false)).unwrap();
    let size = init(&dir.join("m"), &config, Dtype::BF16, 11).unwrap();
    assert_eq!(size, std::fs::metadata(dir.join("m/model.safetensors")).unwrap().len());
    let st = SafeTensors::open(&dir.join("m/model.safetensors")).unwrap();
    assert!(st.names().iter().all(|n| st.info(n).unwrap().dtype == Dtype::BF16));
    let (_, weights) = hf::load(&dir.join("m")).unwrap();
    let want = Weights::init(&config, &mut Rng::new(11));
    for ((name, got), (_, want)) in hf::hf_tensors(&weights).iter().zip(hf::hf_tensors(&want).iter()) {
        let rounded: Vec<f32> = want.data().iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        assert!(got.data() == rounded.as_slice(), "{name}: not the bf16 rounding of the f32 init");
    }
    let ids: Vec<u32> = (0..8).collect();
    let report = evaluate(&config, &weights, &ids, 1, 8, false);
    assert!(report.loss.is_finite());
}

#[test]
fn init_rule_norms_one_matrices_truncated_normal() {
    let dir = temp_dir("rule");
    // vocab 4096 × hidden 32: an embedding of 131,072 values for the std estimate.
    let config = OlmoeConfig::load(&tiny_config(&dir, 4096, true)).unwrap();
    init(&dir.join("m"), &config, Dtype::F32, 0).unwrap();
    let st = SafeTensors::open(&dir.join("m/model.safetensors")).unwrap();
    let range = config.initializer_range;
    for name in st.names() {
        let t = st.to_tensor(name).unwrap();
        if t.shape().len() == 1 {
            assert!(name.contains("norm"), "{name}: 1-D but not a norm");
            assert!(t.data().iter().all(|&x| x == 1.0), "{name}: a norm weight must be all ones");
        } else {
            let worst = t.data().iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(worst <= 3.0 * range, "{name}: |x| up to {worst}, past 3·{range}");
            assert!(worst > 0.0, "{name}: all zeros");
        }
    }
    let embed = st.to_tensor("model.embed_tokens.weight").unwrap();
    let n = embed.numel() as f64;
    let mean = embed.data().iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (embed.data().iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    // The std of N(0, 1) cut at ±3 is 0.98658.
    let want = range as f64 * 0.98658;
    println!("embed mean {mean:.2e} std {std:.5} (want {want:.5})");
    assert!((std / want - 1.0).abs() < 0.01, "std {std} vs {want}");
    assert!(mean.abs() < 3.0 * want / n.sqrt() * 2.0, "mean {mean}");
}

#[test]
fn bad_flags_are_clear_errors() {
    let dir = temp_dir("errors");
    let config = tiny_config(&dir, 96, false);
    let (config, out) = (config.to_str().unwrap(), dir.join("m"));
    let out = out.to_str().unwrap();
    let expect_error = |args: &[&str], needle: &str| {
        let run = moe_init(args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: stderr lacks {needle:?}:\n{stderr}");
    };
    expect_error(
        &["--config", config, "--out", out, "--dtype", "f16"],
        "unknown dtype \"f16\" (known: bf16, f32)",
    );
    expect_error(&["--out", out], "--config is required");
    expect_error(&["--config", config], "--out is required");
    expect_error(&["--config", config, "--out", out, "--seed", "-1"], "not an unsigned integer");
    expect_error(&["--config", config, "--out", out, "--layers", "3"], "layers");
    expect_error(&["--config", "/nonexistent/config.json", "--out", out], "/nonexistent/config.json");
    // --out under a regular file: the directory cannot be made.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let under = blocker.join("m");
    expect_error(&["--config", config, "--out", under.to_str().unwrap()], under.to_str().unwrap());
    assert!(!Path::new(out).exists(), "nothing is written on a bad flag");
}

#[test]
fn write_streaming_checks_each_fill() {
    let dir = temp_dir("streaming");
    let path = dir.join("s.safetensors");
    let tensors = vec![("a".to_string(), Dtype::F32, vec![2, 3]), ("b".to_string(), Dtype::BF16, vec![4])];
    write_streaming(&path, &tensors, &[], |i, buf| {
        buf.resize(if i == 0 { 24 } else { 8 }, i as u8);
        Ok(())
    })
    .unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(st.names(), ["a", "b"]);
    assert_eq!(st.bytes("a").unwrap(), [0u8; 24]);
    assert_eq!(st.bytes("b").unwrap(), [1u8; 8]);

    let bad = dir.join("bad.safetensors");
    let err = write_streaming(&bad, &tensors, &[], |i, buf| {
        buf.resize(if i == 0 { 24 } else { 6 }, 0);
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("'b'") && err.contains("6 bytes") && err.contains("needs 8"), "{err}");
    assert!(!bad.exists() && !dir.join("bad.safetensors.tmp").exists(), "a failed write leaves nothing");

    let dup = vec![("a".to_string(), Dtype::F32, vec![1]), ("a".to_string(), Dtype::F32, vec![1])];
    let err = write_streaming(&bad, &dup, &[], |_, _| Ok(())).unwrap_err().to_string();
    assert!(err.contains("unique"), "{err}");
}
