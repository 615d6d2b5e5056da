//! Sampling on hand-made distributions: greedy picks the argmax (lower id on ties),
//! temperature reshapes the probabilities, top-k and top-p leave only the allowed tokens, and
//! the same seed draws the same tokens.

use moe::rng::Rng;
use moe::sample::{argmax, candidates, draw, Sampling};

/// Logits whose softmax is `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn sampling(temperature: f32, top_k: usize, top_p: f32) -> Sampling {
    Sampling { temperature, top_k, top_p }
}

fn ids(c: &[(u32, f64)]) -> Vec<u32> {
    c.iter().map(|&(id, _)| id).collect()
}

#[test]
fn greedy_is_the_argmax_with_ties_to_the_lower_id() {
    assert_eq!(argmax(&[0.1, 3.0, -2.0, 3.0]), 1);
    assert_eq!(argmax(&[-1.0]), 0);
    let mut rng = Rng::new(0);
    for _ in 0..10 {
        assert_eq!(draw(&[0.0, 2.0, 5.0, 5.0, 1.0], Sampling::GREEDY, &mut rng), 2);
    }
}

#[test]
fn top_k_and_top_p_keep_only_the_allowed_tokens() {
    // ids 0..5 with probabilities 0.1, 0.4, 0.05, 0.3, 0.15: ranked 1, 3, 4, 0, 2.
    let logits = logits_of(&[0.1, 0.4, 0.05, 0.3, 0.15]);
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 0, 1.0))), [1, 3, 4, 0, 2]);
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 2, 1.0))), [1, 3]);
    // top-p keeps a token while the mass ranked above it is < p.
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 0, 0.39))), [1]); // 0.4 ≥ 0.39 above id 3
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 0, 0.41))), [1, 3]);
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 0, 0.75))), [1, 3, 4]);
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 0, 0.01))), [1]); // always one token
                                                                        // top-p works on the top-k renormalised distribution (transformers' order): within the top 2,
                                                                        // id 1 has 0.4/0.7 ≈ 0.571.
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 2, 0.57))), [1]);
    assert_eq!(ids(&candidates(&logits, sampling(1.0, 2, 0.58))), [1, 3]);
    // top-k keeps every token tied with the k-th, as transformers' TopKLogitsWarper does.
    assert_eq!(ids(&candidates(&[1.0, 1.0, 1.0, 0.0], sampling(1.0, 2, 1.0))), [0, 1, 2]);
    assert_eq!(ids(&candidates(&[1.0, 2.0, 1.0, 0.0], sampling(1.0, 1, 1.0))), [1]);
    assert_eq!(ids(&candidates(&[1.0, 2.0], sampling(1.0, 5, 1.0))), [1, 0]); // k past the vocabulary
                                                                              // The kept probabilities are renormalised.
    let kept = candidates(&logits, sampling(1.0, 0, 0.75));
    let want = [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85];
    for (&(_, p), w) in kept.iter().zip(want) {
        assert!((p - w).abs() < 1e-6, "{kept:?}");
    }
    // Draws never leave the allowed set.
    let mut rng = Rng::new(7);
    for _ in 0..2000 {
        assert!([1, 3].contains(&draw(&logits, sampling(1.0, 2, 1.0), &mut rng)));
        assert!([1, 3, 4].contains(&draw(&logits, sampling(1.0, 0, 0.75), &mut rng)));
    }
}

#[test]
fn temperature_reshapes_the_distribution() {
    // p ∝ exp(l / T): with logits ln 0.8, ln 0.2 and T = 2, p = √0.8 : √0.2 = 2/3 : 1/3.
    let logits = logits_of(&[0.8, 0.2]);
    let c = candidates(&logits, sampling(2.0, 0, 1.0));
    assert!((c[0].1 - 2.0 / 3.0).abs() < 1e-6 && (c[1].1 - 1.0 / 3.0).abs() < 1e-6, "{c:?}");
    // Drawn frequencies follow (20,000 draws: the standard error of a share is about 0.003).
    let mut rng = Rng::new(3);
    let n = 20_000;
    let zeros = (0..n).filter(|_| draw(&logits, sampling(2.0, 0, 1.0), &mut rng) == 0).count();
    let share = zeros as f64 / n as f64;
    assert!((share - 2.0 / 3.0).abs() < 0.015, "share of id 0: {share}");
}

#[test]
fn the_same_seed_draws_the_same_tokens() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let run = |seed| {
        let mut rng = Rng::new(seed);
        (0..64).map(|_| draw(&logits, sampling(0.9, 20, 0.9), &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}
