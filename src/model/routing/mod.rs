//! Which experts see which tokens: the routing variants, chosen by `OlmoeConfig::routing`.
//! Each is a function of the router probabilities p (N, E) alone that returns the (token,
//! expert) pairs an MoE layer computes and where each pair's combine weight comes from;
//! model/moe.rs (training, on the tape) and model/decode.rs (inference) run the same
//! dispatch → experts → combine on them. The variants, each with its math at its top:
//!   token_choice.rs   each token picks its top-K experts: dropless (OLMoE), or with a
//!                     capacity per expert and drops (OpenMoE)
//!   expert_choice.rs  each expert picks its top-C tokens
//! Ties go to the lower index everywhere (expert for token choice, token for expert choice).
//! The load-balancing loss counts the top-K picks before any drop (as OpenMoE's does); expert
//! choice is balanced by construction and has none.

mod expert_choice;
mod token_choice;

use super::config::{OlmoeConfig, Routing};

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

/// The routes for router probabilities `probs` (N, E) under `config.routing`. Capacities
/// apply per group of `group` consecutive tokens (a sequence), so one sequence's routing never
/// depends on another's, nor on the batch size.
pub fn route(probs: &[f32], group: usize, config: &OlmoeConfig) -> Routes {
    let (e, k) = (config.num_experts, config.num_experts_per_tok);
    assert!(probs.len().is_multiple_of(e), "route: {} probabilities for {e} experts", probs.len());
    let n = probs.len() / e;
    assert!(group > 0, "route: empty groups");
    match config.routing {
        Routing::TokenChoice => token_choice::route(probs, n, group, e, k, None),
        Routing::TokenChoiceCapacity { capacity_factor, min_capacity, .. } => {
            let size = group.min(n);
            let capacity = ((k as f64 * capacity_factor as f64 * size as f64 / e as f64).floor() as usize)
                .max(min_capacity);
            token_choice::route(probs, n, group, e, k, Some(capacity))
        }
        Routing::ExpertChoice { capacity_factor } => {
            expert_choice::route(probs, n, group, e, k, capacity_factor)
        }
    }
}
