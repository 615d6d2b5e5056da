//! Expert choice: each expert picks its top-C tokens by router probability.
//! ```text
//! per sequence of N tokens (a group): C = ⌊capacity_factor · N · K / E⌋, at least 1 and at
//!     most N (capacity factor 1: as many expert rows as token choice's top-K on average)
//! expert e serves the C tokens with the largest p_{t,e} (ties: the lower token); a token may
//!     be served by 0 … E experts
//! weight of (t, e) = p_{t,e}; no load-balancing loss (every expert serves exactly C)
//! ```

use super::{Routes, WeightsFrom};

/// Expert choice: each expert's top-C tokens of each group of `group` consecutive tokens (one
/// sequence), in token order within the expert.
pub fn route(probs: &[f32], n: usize, group: usize, e: usize, k: usize, capacity_factor: f32) -> Routes {
    let (mut tokens, mut weight_at, mut offsets) = (Vec::new(), Vec::new(), vec![0]);
    for expert in 0..e {
        for start in (0..n).step_by(group) {
            let size = group.min(n - start);
            let c = ((capacity_factor as f64 * size as f64 * k as f64 / e as f64).floor() as usize)
                .clamp(1, size);
            let mut ranked: Vec<u32> = (start as u32..(start + size) as u32).collect();
            // Descending p_{t,expert}; the stable sort keeps lower tokens first among equals.
            ranked
                .sort_by(|&a, &b| probs[b as usize * e + expert].total_cmp(&probs[a as usize * e + expert]));
            let mut picked = ranked[..c].to_vec();
            picked.sort_unstable();
            weight_at.extend(picked.iter().map(|&t| t * e as u32 + expert as u32));
            tokens.extend(picked);
        }
        offsets.push(tokens.len());
    }
    Routes {
        tokens,
        offsets,
        weight_at,
        weights_from: WeightsFrom::Probs,
        chosen: Vec::new(),
        dropped: Vec::new(),
    }
}
