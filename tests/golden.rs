//! The OLMoE model against Hugging Face transformers' `OlmoeForCausalLM`, on the small random
//! checkpoints that `tests/golden/make_golden.py` wrote (versions and seeds: its header and
//! tests/golden/README.md): logits, the three losses, and the gradient of every weight.
//! Bounds (issue #3): logits and losses 1e-4 absolute; gradients 1e-3 relative per tensor,
//! ‖ours − theirs‖ / ‖theirs‖.

use moe::checkpoint::Checkpoint;
use moe::forward::{evaluate, read_ids};
use moe::json;
use moe::model::hf;
use moe::npy;
use std::path::{Path, PathBuf};

const VARIANTS: [&str; 6] = ["base", "renorm", "gqa", "tied", "clip", "pad"];

fn golden(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(variant)
}

fn check_variant(variant: &str) {
    let dir = golden(variant);
    let (config, weights) = hf::load(&dir).unwrap();
    let (ids, batch, seq) = read_ids(&dir.join("ids.npy"), config.vocab_size).unwrap();
    let report = evaluate(&config, &weights, &ids, batch, seq, true);

    let want = npy::read(&dir.join("logits.npy")).unwrap().to_tensor().unwrap();
    assert_eq!(report.logits.shape(), want.shape(), "{variant}: logits shape");
    let worst =
        report.logits.data().iter().zip(want.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("{variant}: logits max |diff| {worst:.2e}");
    assert!(worst <= 1e-4, "{variant}: logits differ by {worst:e}");

    let text = std::fs::read_to_string(dir.join("losses.json")).unwrap();
    let losses = json::parse(&text).unwrap();
    for (name, ours) in [("loss", report.loss), ("aux_loss", report.aux_loss), ("z_loss", report.z_loss)] {
        let theirs = losses.get(name).and_then(|v| v.as_f64()).unwrap();
        let diff = (ours as f64 - theirs).abs();
        println!("{variant}: {name} ours {ours} theirs {theirs:.7} |diff| {diff:.2e}");
        assert!(diff <= 1e-4, "{variant}: {name} {ours} vs {theirs}");
    }

    let theirs = Checkpoint::open(&dir.join("grads.safetensors")).unwrap();
    let ours = report.grads.unwrap();
    let mut names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    let mut their_names = theirs.names();
    names.sort();
    their_names.sort();
    assert_eq!(names, their_names, "{variant}: gradient tensor names");
    let mut worst = (0.0f64, String::new());
    for (name, g) in &ours {
        let t = theirs.to_tensor(name).unwrap();
        assert_eq!(g.shape(), t.shape(), "{variant}: {name} gradient shape");
        let diff: f64 =
            g.data().iter().zip(t.data()).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = t.data().iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        let rel = diff / norm.max(1e-12);
        assert!(norm > 0.0, "{variant}: {name}: reference gradient is zero, the check would be vacuous");
        assert!(rel <= 1e-3, "{variant}: {name}: gradient rel diff {rel:e}");
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    println!("{variant}: {} gradients, worst rel diff {:.2e} ({})", ours.len(), worst.0, worst.1);
}

#[test]
fn matches_transformers_on_every_variant() {
    for variant in VARIANTS {
        check_variant(variant);
    }
}

#[test]
fn moe_forward_command_prints_the_losses_and_writes_files() {
    let dir = golden("base");
    let tmp = std::env::temp_dir().join(format!("moe-forward-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(["forward", "--model"])
        .arg(&dir)
        .arg("--ids")
        .arg(dir.join("ids.npy"))
        .arg("--out")
        .arg(tmp.join("logits.npy"))
        .arg("--grads")
        .arg(tmp.join("grads.safetensors"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, name) in lines.iter().zip(["loss ", "aux_loss ", "z_loss "]) {
        assert!(line.starts_with(name) && line[name.len()..].parse::<f32>().is_ok(), "{line}");
    }
    let logits = npy::read(&tmp.join("logits.npy")).unwrap();
    assert_eq!(logits.shape, npy::read(&dir.join("logits.npy")).unwrap().shape);
    let grads = Checkpoint::open(&tmp.join("grads.safetensors")).unwrap();
    assert!(grads.names().contains(&"model.layers.1.mlp.experts.7.down_proj.weight"));
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_saved_checkpoint_loads_back_identically() {
    let (config, weights) = hf::load(&golden("gqa")).unwrap();
    let tmp = std::env::temp_dir().join(format!("moe-save-{}", std::process::id()));
    hf::save(&tmp, &config, &weights).unwrap();
    let (config2, weights2) = hf::load(&tmp).unwrap();
    assert_eq!(config, config2);
    for ((n1, a), (n2, b)) in hf::hf_tensors(&weights).iter().zip(&hf::hf_tensors(&weights2)) {
        assert_eq!(n1, n2);
        assert_eq!(a.data(), b.data(), "{n1}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The base checkpoint rewritten into `dir`: its tensors in `dtype`, split over `shards` files.
fn rewrite_base(dir: &Path, dtype: moe::safetensors::Dtype, shards: usize) {
    use moe::safetensors::{to_bytes, write, TensorData};
    let (config, weights) = hf::load(&golden("base")).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_json().to_json_pretty()).unwrap();
    let tensors = hf::hf_tensors(&weights);
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| to_bytes(t, dtype).unwrap()).collect();
    let per_shard = tensors.len().div_ceil(shards);
    let mut weight_map = Vec::new();
    for s in 0..shards {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{s:05}-of-{shards:05}.safetensors")
        };
        let range = s * per_shard..((s + 1) * per_shard).min(tensors.len());
        let views: Vec<TensorData> = range
            .clone()
            .map(|i| TensorData { name: &tensors[i].0, dtype, shape: tensors[i].1.shape(), data: &bytes[i] })
            .collect();
        write(&dir.join(&file), &views, &[("format".into(), "pt".into())]).unwrap();
        weight_map.extend(range.map(|i| (tensors[i].0.clone(), json::Value::String(file.clone()))));
    }
    if shards > 1 {
        let index = json::Value::Object(vec![("weight_map".into(), json::Value::Object(weight_map))]);
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_json_pretty()).unwrap();
    }
}

#[test]
fn bf16_f16_and_sharded_checkpoints_load_to_the_same_model() {
    let (_, want) = hf::load(&golden("base")).unwrap();
    let want = hf::hf_tensors(&want);
    let tmp = std::env::temp_dir().join(format!("moe-layouts-{}", std::process::id()));
    let round_bf16: fn(f32) -> f32 = |x| half::bf16::from_f32(x).to_f32();
    let round_f16: fn(f32) -> f32 = |x| half::f16::from_f32(x).to_f32();
    let cases = [
        ("sharded", moe::safetensors::Dtype::F32, 3, (|x| x) as fn(f32) -> f32),
        ("bf16", moe::safetensors::Dtype::BF16, 1, round_bf16),
        ("f16", moe::safetensors::Dtype::F16, 2, round_f16),
    ];
    for (name, dtype, shards, round) in cases {
        let dir = tmp.join(name);
        rewrite_base(&dir, dtype, shards);
        let (_, got) = hf::load(&dir).unwrap();
        for ((n, w), (m, g)) in want.iter().zip(&hf::hf_tensors(&got)) {
            assert_eq!(n, m);
            let expect: Vec<f32> = w.data().iter().map(|&x| round(x)).collect();
            assert_eq!(g.data(), &expect[..], "{name}: {n}");
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn fused_expert_checkpoints_load_to_the_same_model() {
    // transformers 5 in memory: mlp.experts.gate_up_proj (E, 2F, C) = [gate; up] per expert,
    // mlp.experts.down_proj (E, C, F).
    let (config, weights) = hf::load(&golden("base")).unwrap();
    let dir = std::env::temp_dir().join(format!("moe-fused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_json().to_json_pretty()).unwrap();
    let mut tensors: Vec<(String, moe::tensor::Tensor)> =
        hf::hf_tensors(&weights).into_iter().filter(|(n, _)| !n.contains(".mlp.experts.")).collect();
    let (e, f, c) = (config.num_experts, config.intermediate_size, config.hidden_size);
    for (i, layer) in weights.layers.iter().enumerate() {
        let (gate, up) = (layer.experts_gate.data(), layer.experts_up.data());
        let gate_up: Vec<f32> = (0..e)
            .flat_map(|x| [&gate[x * f * c..(x + 1) * f * c], &up[x * f * c..(x + 1) * f * c]].concat())
            .collect();
        let p = format!("model.layers.{i}.mlp.experts");
        tensors.push((format!("{p}.gate_up_proj"), moe::tensor::Tensor::new(&[e, 2 * f, c], gate_up)));
        tensors.push((format!("{p}.down_proj"), layer.experts_down.clone()));
    }
    let refs: Vec<(&str, &moe::tensor::Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    moe::safetensors::write_f32(&dir.join("model.safetensors"), &refs, &[]).unwrap();
    let (_, got) = hf::load(&dir).unwrap();
    for ((n, w), (_, g)) in hf::hf_tensors(&weights).iter().zip(&hf::hf_tensors(&got)) {
        assert_eq!(w.data(), g.data(), "{n}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
