//! The whole model on the GPU against the CPU: a training step (forward, backward, clipping,
//! AdamW) and the next-token logits, on a small OLMoE whose sizes are multiples of 8, so its
//! linear layers run on the tensor cores. Those take BF16 inputs, so the GPU is not the CPU
//! to f32 precision: at init the losses agree to ~1e-3 relative, and the tolerances below are
//! set for BF16 products (a router pick may also flip between near-equal experts).

use super::shared_gpu;
use moe::model::config::OlmoeConfig;
use moe::model::olmoe::{next_token_logits, Weights};
use moe::optim::{AdamW, AdamWConfig};
use moe::rng::Rng;
use moe::tensor::Tensor;
use moe::train::train_step;

fn config() -> OlmoeConfig {
    OlmoeConfig {
        vocab_size: 256,
        hidden_size: 64,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_experts: 8,
        num_experts_per_tok: 2,
        max_position_embeddings: 64,
        eos_token_id: None,
        pad_token_id: None,
        ..OlmoeConfig::default()
    }
}

fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.uniform() * vocab as f64) as u32 % vocab as u32).collect()
}

fn close(what: &str, gpu: f32, cpu: f32, rtol: f32) {
    let ok = (gpu - cpu).abs() <= rtol * cpu.abs().max(1e-3);
    eprintln!("{what}: GPU {gpu} vs CPU {cpu}");
    assert!(ok, "{what}: GPU {gpu} vs CPU {cpu} (rtol {rtol})");
}

#[test]
fn training_step_on_the_gpu_matches_the_cpu() {
    let Some(gpu) = shared_gpu("training_step_on_the_gpu_matches_the_cpu") else { return };
    let config = config();
    let (seq, lr) = (32, 1e-3);
    let batches = [ids(4 * seq, config.vocab_size, 1), ids(4 * seq, config.vocab_size, 2)];
    let init = Weights::init(&config, &mut Rng::new(3));
    let mut on_cpu = init.map(Tensor::clone);
    let mut on_gpu = init.map(|w| w.to_gpu(gpu));
    let adamw = AdamWConfig { lr: lr as f64, ..AdamWConfig::default() };
    let (mut opt_cpu, mut opt_gpu) = (AdamW::new(adamw), AdamW::new(adamw));
    for step in 0..2 {
        let cpu = train_step(&config, &mut on_cpu, &mut opt_cpu, &batches, seq, lr, 1.0).unwrap();
        let gpu = train_step(&config, &mut on_gpu, &mut opt_gpu, &batches, seq, lr, 1.0).unwrap();
        close(&format!("step {step} loss"), gpu.loss, cpu.loss, 1e-2);
        close(&format!("step {step} cross-entropy"), gpu.ce, cpu.ce, 1e-2);
        close(&format!("step {step} load balance"), gpu.aux, cpu.aux, 5e-2);
        close(&format!("step {step} z-loss"), gpu.z, cpu.z, 5e-2);
        close(&format!("step {step} gradient norm"), gpu.grad_norm, cpu.grad_norm, 0.1);
    }
    // Each of the first two AdamW steps moves a weight by at most lr·(1 + 4e-4) (|m̂|/√v̂ ≤ 1 by
    // Cauchy–Schwarz for β1 = 0.9, β2 = 0.95), so the two runs end within 4·lr of each other
    // even where their gradients differ in sign at both steps; on average they are far closer.
    let (mut worst, mut total, mut count) = (0.0f32, 0.0f64, 0usize);
    for (i, ((_, c), (_, g))) in on_cpu.named().into_iter().zip(on_gpu.named()).enumerate() {
        let (c, g) = (c.data(), g.to_host());
        for (a, b) in c.iter().zip(g.data()) {
            let diff = (a - b).abs();
            assert!(
                diff <= 4.5 * lr,
                "weight {i} (in Weights::named order): differs by {diff} after two steps"
            );
            worst = worst.max(diff);
            total += diff as f64;
        }
        count += c.len();
    }
    let mean = (total / count as f64) as f32;
    eprintln!("weights after two steps: worst |gpu - cpu| = {worst:.2e}, mean {mean:.2e} (lr {lr:.0e})");
    assert!(mean <= 0.25 * lr, "weights after two steps differ by {mean} on average");
}

#[test]
fn next_token_logits_on_the_gpu_match_the_cpu() {
    let Some(gpu) = shared_gpu("next_token_logits_on_the_gpu_match_the_cpu") else { return };
    let config = config();
    let weights = Weights::init(&config, &mut Rng::new(4));
    let prompt = ids(20, config.vocab_size, 5);
    let cpu = next_token_logits(&config, &weights, &prompt);
    let gpu = next_token_logits(&config, &weights.map(|w| w.to_gpu(gpu)), &prompt);
    super::assert_close("next-token logits", &gpu, &cpu, 2e-2, 2e-2);
}
