//! One training step of OLMoE's recipe, on a tiny model: the loss falls, and runs repeat
//! bit for bit.

use moe::model::config::OlmoeConfig;
use moe::model::olmoe::Weights;
use moe::optim::{AdamW, AdamWConfig};
use moe::rng::Rng;
use moe::tensor::Tensor;
use moe::train::{train_step, validation_loss, StepStats};

const VOCAB: usize = 48;
const SEQ: usize = 16;
const BATCH: usize = 4;

fn tiny() -> OlmoeConfig {
    OlmoeConfig {
        vocab_size: VOCAB,
        hidden_size: 32,
        intermediate_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        num_experts: 4,
        num_experts_per_tok: 2,
        eos_token_id: None,
        pad_token_id: None,
        ..OlmoeConfig::default()
    }
}

/// Sequences from a noisy deterministic rule (next = 5·prev + 3 mod V, 10% random): a model
/// can learn it quickly, so the loss must fall far below log V.
fn batch(rng: &mut Rng) -> Vec<u32> {
    let mut ids = Vec::with_capacity(BATCH * SEQ);
    for _ in 0..BATCH {
        let mut t = rng.below(VOCAB);
        for _ in 0..SEQ {
            ids.push(t as u32);
            t = if rng.uniform() < 0.1 { rng.below(VOCAB) } else { (5 * t + 3) % VOCAB };
        }
    }
    ids
}

fn run(steps: usize, micro_batches: usize) -> Vec<StepStats> {
    let config = tiny();
    let mut weights = Weights::init(&config, &mut Rng::new(1));
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut data = Rng::new(2);
    (0..steps)
        .map(|_| {
            let micro: Vec<Vec<u32>> = (0..micro_batches).map(|_| batch(&mut data)).collect();
            train_step(&config, &mut weights, &mut opt, &micro, SEQ, 1e-2, 1.0).expect("finite loss")
        })
        .collect()
}

#[test]
fn a_short_run_learns() {
    let stats = run(40, 1);
    let first = &stats[0];
    let last5: f32 = stats[35..].iter().map(|s| s.ce).sum::<f32>() / 5.0;
    println!(
        "ce: step 0 {:.3} (ln V = {:.3}), mean of steps 35-39 {last5:.3}",
        first.ce,
        (VOCAB as f32).ln()
    );
    assert!((first.ce - (VOCAB as f32).ln()).abs() < 0.3, "an untrained model predicts about uniformly");
    assert!(last5 < 0.6 * first.ce, "ce did not fall: {} → {last5}", first.ce);
    for s in &stats {
        assert!(s.loss.is_finite() && s.grad_norm.is_finite());
        // OLMoE's normalisation: perfect balance gives 1; the z-loss is a mean of squares.
        assert!(s.aux >= 0.99 && s.aux < 4.0 && s.z >= 0.0, "{s:?}");
        for load in &s.expert_load {
            assert!((load.iter().sum::<f32>() - 1.0).abs() < 1e-5, "loads are shares: {load:?}");
        }
        let (layer, worst) = s.worst_imbalance();
        assert!(layer < 2 && (1.0..=4.0).contains(&worst), "{layer} {worst}");
    }
}

#[test]
fn a_nan_loss_leaves_weights_and_optimizer_untouched() {
    let config = tiny();
    let mut weights = Weights::init(&config, &mut Rng::new(1));
    weights.norm.data_mut()[0] = f32::NAN;
    let before = weights.map(|w| w.data().to_vec());
    let mut opt = AdamW::new(AdamWConfig::default());
    let micro = vec![batch(&mut Rng::new(2))];
    let stats = train_step(&config, &mut weights, &mut opt, &micro, SEQ, 1e-2, 1.0).expect_err("NaN loss");
    assert!(stats.loss.is_nan());
    assert_eq!(opt.steps(), 0, "the optimizer took no step");
    for ((_, a), (_, b)) in weights.named().into_iter().zip(before.named()) {
        assert!(a.data().iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "weights changed");
    }
}

#[test]
fn validation_loss_weights_batches_by_their_predicted_tokens() {
    let config = tiny();
    let weights = Weights::init(&config, &mut Rng::new(4));
    let ids = batch(&mut Rng::new(5)); // BATCH sequences
    let whole = validation_loss(&config, &weights, [&ids[..]], SEQ);
    // One batch of 3 sequences and one of 1: the same tokens, so the same mean.
    let split = validation_loss(&config, &weights, [&ids[..3 * SEQ], &ids[3 * SEQ..]], SEQ);
    assert!((whole - split).abs() < 1e-5 * whole, "{whole} vs {split}");
    let ln_v = (VOCAB as f64).ln();
    assert!((whole - ln_v).abs() < 0.3, "untrained: about ln V = {ln_v}, got {whole}");
}

#[test]
fn same_seed_same_thread_count_same_bits() {
    let (a, b) = (run(5, 2), run(5, 2));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.loss.to_bits(), y.loss.to_bits());
        assert_eq!(x.grad_norm.to_bits(), y.grad_norm.to_bits());
    }
}

#[test]
fn values_mut_visits_the_weights_in_named_order() {
    let config = OlmoeConfig { tie_word_embeddings: false, ..tiny() };
    let mut weights = Weights::init(&config, &mut Rng::new(3));
    let named: Vec<*const f32> = weights.named().iter().map(|(_, t)| t.data().as_ptr()).collect();
    let visited: Vec<*const f32> =
        weights.values_mut().iter().map(|t: &&mut Tensor| t.data().as_ptr()).collect();
    assert_eq!(named, visited);
}
