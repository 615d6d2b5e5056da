//! Token choice: each token picks its top-K experts by router probability.
//! ```text
//! dropless (OLMoE)      every pick is served
//! with capacity         per sequence of N tokens (a group), expert e serves at most
//!   (OpenMoE)           C = max(min_capacity, ⌊K · capacity_factor · N / E⌋) picks: all first
//!                       choices before any second choice, and within one rank earlier tokens
//!                       first; a pick that does not fit is dropped (the token keeps its
//!                       residual only). This priority is why drops pile up towards the end
//!                       of a sequence.
//! weight of (t, e)      p_{t,e}, renormalised over the token's K when norm_topk_prob
//!                       (OpenMoE's: the raw probability)
//! ```

use super::{Routes, WeightsFrom};
use crate::ops::moe::topk_forward;

/// Token choice; with `capacity`, each expert serves at most that many picks of each group of
/// `group` consecutive tokens (one sequence).
pub fn route(probs: &[f32], n: usize, group: usize, e: usize, k: usize, capacity: Option<usize>) -> Routes {
    let mut top_values = vec![0.0; n * k];
    let mut chosen = vec![0u32; n * k];
    topk_forward(&mut top_values, &mut chosen, probs, e, k);
    // Priority within a group: rank 0 of every token (in token order), then rank 1, …
    let mut served = vec![0usize; e];
    let mut dropped = vec![false; n * k];
    for start in (0..n).step_by(group) {
        let mut in_group = vec![0usize; e];
        for rank in 0..k {
            for t in start..(start + group).min(n) {
                let pick = t * k + rank;
                let expert = chosen[pick] as usize;
                if capacity.is_some_and(|c| in_group[expert] >= c) {
                    dropped[pick] = true;
                } else {
                    in_group[expert] += 1;
                    served[expert] += 1;
                }
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

/// Running sums of per-expert counts: offsets (E + 1).
fn offsets(counts: &[usize]) -> Vec<usize> {
    let mut out = vec![0; counts.len() + 1];
    for (i, c) in counts.iter().enumerate() {
        out[i + 1] = out[i] + c;
    }
    out
}
