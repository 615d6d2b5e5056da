//! Whole training steps against PyTorch + transformers: `train::train_step` three times on the
//! checkpoint, micro-batches and learning rates that `tests/golden/make_train_golden.py` wrote
//! to `tests/golden/train_steps/` (versions and seed: its header and tests/golden/README.md).
//! Each step is CE + 0.01·LB (OLMoE training normalisation) + 0.001·Z over two micro-batches,
//! gradients averaged, clipped to norm 1.0, then AdamW (0.9, 0.95, 1e-8, wd 0.1).
//! Bounds: per step loss, ce, aux, z and grad_norm within 1e-5 relative; every final weight
//! within 1e-5 + 1e-4·|theirs|. (The script's float64 replay puts the golden values' own
//! float32 rounding at ≤ 1e-7 relative for the losses and 4e-7 absolute for the weights.)

use moe::json::{self, Value};
use moe::model::hf;
use moe::npy;
use moe::optim::{AdamW, AdamWConfig};
use moe::safetensors::SafeTensors;
use moe::train::{train_step, StepStats};
use std::path::{Path, PathBuf};

const STATS_RTOL: f64 = 1e-5;
const WEIGHT_ATOL: f64 = 1e-5;
const WEIGHT_RTOL: f64 = 1e-4;
const MAX_GRAD_NORM: f32 = 1.0;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/train_steps")
}

fn number(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("steps.json: no number '{key}'"))
}

/// The per-step quantities compared, by their steps.json names.
fn quantities(s: &StepStats) -> [(&'static str, f32); 5] {
    [("loss", s.loss), ("ce", s.ce), ("aux", s.aux), ("z", s.z), ("grad_norm", s.grad_norm)]
}

#[test]
fn three_training_steps_match_torch() {
    let dir = golden_dir();
    let (config, mut weights) = hf::load(&dir).unwrap();

    // ids: int64 (STEPS, MICRO, B, T); each micro-batch is B·T ids of B whole sequences.
    let ids = npy::read(&dir.join("ids.npy")).unwrap();
    let [steps, micro, batch, seq] = ids.shape[..] else { panic!("ids.npy: shape {:?}", ids.shape) };
    let ids = ids.u32s().unwrap();
    assert!(ids.iter().all(|&i| (i as usize) < config.vocab_size), "ids.npy: id outside the vocabulary");
    let lrs = npy::read(&dir.join("lrs.npy")).unwrap().to_tensor().unwrap();
    assert_eq!(lrs.shape(), [steps], "lrs.npy: one rate per step");

    let text = std::fs::read_to_string(dir.join("steps.json")).unwrap();
    let golden = json::parse(&text).unwrap();
    // The recipe's coefficients come from config.json on our side: they must be torch's.
    assert_eq!(number(&golden, "router_aux_loss_coef") as f32, config.router_aux_loss_coef);
    assert_eq!(number(&golden, "router_z_loss_coef") as f32, config.router_z_loss_coef);
    assert_eq!(number(&golden, "max_grad_norm") as f32, MAX_GRAD_NORM);
    let want = golden.get("steps").and_then(Value::as_array).expect("steps.json: 'steps'");
    assert_eq!(want.len(), steps, "steps.json: one record per step");

    // torch.optim.AdamW(betas (0.9, 0.95), eps 1e-8, weight_decay 0.1): our defaults.
    let adamw = AdamWConfig::default();
    assert_eq!((adamw.beta1, adamw.beta2, adamw.eps, adamw.weight_decay), (0.9, 0.95, 1e-8, 0.1));
    let mut optimizer = AdamW::new(adamw);

    let per_micro = batch * seq;
    let mut worst = [("loss", 0.0f64), ("ce", 0.0), ("aux", 0.0), ("z", 0.0), ("grad_norm", 0.0)];
    let mut misses = Vec::new();
    for (step, want) in want.iter().enumerate() {
        let first = step * micro * per_micro;
        let micro_batches: Vec<Vec<u32>> =
            (0..micro).map(|m| ids[first + m * per_micro..first + (m + 1) * per_micro].to_vec()).collect();
        let lr = lrs.data()[step];
        let stats = train_step(&config, &mut weights, &mut optimizer, &micro_batches, seq, lr, MAX_GRAD_NORM)
            .unwrap_or_else(|s| panic!("step {step}: non-finite loss or gradient norm: {s:?}"));
        for ((name, ours), (_, worst)) in quantities(&stats).into_iter().zip(worst.iter_mut()) {
            let theirs = number(want, name);
            let rel = (ours as f64 - theirs).abs() / theirs.abs().max(1e-12);
            println!("step {step}: {name:9} ours {ours:.7} torch {theirs:.7} rel diff {rel:.2e}");
            *worst = worst.max(rel);
            if rel > STATS_RTOL {
                misses.push(format!("step {step}: {name} ours {ours} vs torch {theirs} (rel {rel:.2e})"));
            }
        }
    }
    for (name, rel) in worst {
        println!("worst {name:9} rel diff over {steps} steps: {rel:.2e}");
    }

    // Every parameter after the last step, by hub name.
    let theirs = SafeTensors::open(&dir.join("final.safetensors")).unwrap();
    let ours = hf::hf_tensors(&weights);
    let mut names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    let mut their_names = theirs.names();
    names.sort();
    their_names.sort();
    assert_eq!(names, their_names, "final.safetensors: tensor names");
    let (mut worst_abs, mut worst_ratio, mut worst_name) = (0.0f64, 0.0f64, String::new());
    for (name, w) in &ours {
        let t = theirs.to_tensor(name).unwrap();
        assert_eq!(w.shape(), t.shape(), "{name}: shape");
        for (&a, &b) in w.data().iter().zip(t.data()) {
            let diff = (a as f64 - b as f64).abs();
            // diff / allowed: above 1 is a miss
            let ratio = diff / (WEIGHT_ATOL + WEIGHT_RTOL * (b as f64).abs());
            worst_abs = worst_abs.max(diff);
            if ratio > worst_ratio {
                (worst_ratio, worst_name) = (ratio, name.clone());
            }
        }
    }
    println!(
        "final weights: {} tensors, worst |diff| {worst_abs:.2e}, worst diff / (atol + rtol·|torch|) \
         {worst_ratio:.3} ({worst_name})",
        ours.len()
    );
    if worst_ratio > 1.0 {
        misses.push(format!("final weights: {worst_name} off by {worst_ratio:.3}× the bound"));
    }
    assert!(misses.is_empty(), "training steps differ from torch:\n{}", misses.join("\n"));
}
