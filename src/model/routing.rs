//! Which experts see which tokens: the routing variants, chosen by `OlmoeConfig::routing`.
//! Each is a function of the router probabilities p (N, E) alone that returns the (token,
//! expert) pairs an MoE layer computes and where each pair's combine weight comes from;
//! model/moe.rs (training, on the tape) and model/decode.rs (inference) run the same
//! dispatch → experts → combine on them.
//! ```text
//! token choice, dropless (OLMoE)       each token takes its top-K experts by p; all are served
//!                                      weight = p_{t,e} (÷ Σ of the token's K, norm_topk_prob)
//! token choice with capacity (OpenMoE) the same top-K picks, but expert e serves at most
//!                                      C = max(min_capacity, ⌊K · capacity_factor · N / E⌋) of them:
//!                                      all first choices before any second choice, and within
//!                                      one choice rank earlier tokens first; a pick that does
//!                                      not fit is dropped (the token keeps its residual only)
//!                                      weight = p_{t,e}, as above
//! expert choice                        each expert takes its top-C tokens by p_{·,e},
//!                                      C = ⌊capacity_factor · N · K / E⌋ (at least 1, at most N);
//!                                      a token may get 0 … E experts. weight = p_{t,e}
//! ```
//! Ties go to the lower index everywhere (expert for token choice, token for expert choice).
//! The load-balancing loss counts the top-K picks before any drop (as OpenMoE's does); expert
//! choice is balanced by construction and has none.

use super::config::{OlmoeConfig, Routing};
use crate::ops::moe::topk_forward;

/// Where the pairs' combine weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFrom {
    /// The top-K probabilities (N·K, token-major, best first; renormalised if configured).
    TopK,
    /// The probabilities themselves (N·E).
    Probs,
}

/// One layer's routing decisions.
#[derive(Clone, Debug, PartialEq)]
pub struct Routes {
    /// Per served pair, sorted by expert (and within an expert by token, then rank): its token.
    pub tokens: Vec<u32>,
    /// Pairs offsets[e]..offsets[e+1] go to expert e (E + 1 values).
    pub offsets: Vec<usize>,
    /// Per served pair: its weight's index in `weights_from`'s flat array.
    pub weight_at: Vec<u32>,
    pub weights_from: WeightsFrom,
    /// Token choice: every token's top-K experts (N·K, token-major, best first) before any
    /// drop, what the load-balancing loss counts. Empty for expert choice.
    pub chosen: Vec<u32>,
    /// Token choice: per (token, rank) pick (N·K), whether capacity dropped it.
    pub dropped: Vec<bool>,
}

/// The routes for router probabilities `probs` (N, E) under `config.routing`.
pub fn route(probs: &[f32], config: &OlmoeConfig) -> Routes {
    let (e, k) = (config.num_experts, config.num_experts_per_tok);
    assert!(probs.len().is_multiple_of(e), "route: {} probabilities for {e} experts", probs.len());
    let n = probs.len() / e;
    match config.routing {
        Routing::TokenChoice => token_choice(probs, n, e, k, None),
        Routing::TokenChoiceCapacity { capacity_factor, min_capacity, .. } => {
            let capacity = ((k as f64 * capacity_factor as f64 * n as f64 / e as f64).floor() as usize)
                .max(min_capacity);
            token_choice(probs, n, e, k, Some(capacity))
        }
        Routing::ExpertChoice { capacity_factor } => expert_choice(probs, n, e, k, capacity_factor),
    }
}

/// Token choice; with `capacity`, each expert serves at most that many picks.
fn token_choice(probs: &[f32], n: usize, e: usize, k: usize, capacity: Option<usize>) -> Routes {
    let mut top_values = vec![0.0; n * k];
    let mut chosen = vec![0u32; n * k];
    topk_forward(&mut top_values, &mut chosen, probs, e, k);
    // Priority: rank 0 of every token (in token order), then rank 1, …
    let mut served = vec![0usize; e];
    let mut dropped = vec![false; n * k];
    for rank in 0..k {
        for t in 0..n {
            let pick = t * k + rank;
            let expert = chosen[pick] as usize;
            if capacity.is_some_and(|c| served[expert] >= c) {
                dropped[pick] = true;
            } else {
                served[expert] += 1;
            }
        }
    }
    // Served picks, by expert; within an expert in pick order (token, then rank): stable sort.
    let mut picks: Vec<u32> = (0..(n * k) as u32).filter(|&p| !dropped[p as usize]).collect();
    picks.sort_by_key(|&p| chosen[p as usize]);
    Routes {
        tokens: picks.iter().map(|&p| p / k as u32).collect(),
        offsets: offsets(&served),
        weight_at: picks,
        weights_from: WeightsFrom::TopK,
        chosen,
        dropped,
    }
}

/// Expert choice: each expert's top-C tokens, in token order within the expert.
fn expert_choice(probs: &[f32], n: usize, e: usize, k: usize, capacity_factor: f32) -> Routes {
    let c = ((capacity_factor as f64 * n as f64 * k as f64 / e as f64).floor() as usize).clamp(1, n);
    let (mut tokens, mut weight_at) = (Vec::with_capacity(e * c), Vec::with_capacity(e * c));
    for expert in 0..e {
        let mut ranked: Vec<u32> = (0..n as u32).collect();
        // Descending p_{t,expert}; the stable sort keeps lower tokens first among equals.
        ranked.sort_by(|&a, &b| probs[b as usize * e + expert].total_cmp(&probs[a as usize * e + expert]));
        let mut picked = ranked[..c].to_vec();
        picked.sort_unstable();
        weight_at.extend(picked.iter().map(|&t| t * e as u32 + expert as u32));
        tokens.extend(picked);
    }
    Routes {
        tokens,
        offsets: (0..=e).map(|i| i * c).collect(),
        weight_at,
        weights_from: WeightsFrom::Probs,
        chosen: Vec::new(),
        dropped: Vec::new(),
    }
}

/// Running sums of per-expert counts: offsets (E + 1).
fn offsets(counts: &[usize]) -> Vec<usize> {
    let mut out = vec![0; counts.len() + 1];
    for (i, c) in counts.iter().enumerate() {
        out[i + 1] = out[i] + c;
    }
    out
}
