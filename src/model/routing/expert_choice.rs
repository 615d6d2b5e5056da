//! Expert choice: each expert picks its top-C tokens by router probability.
//! ```text
//! C = ⌊capacity_factor · N · K / E⌋, at least 1 and at most N (capacity factor 1: as many
//!     expert rows as token choice's top-K on average)
//! expert e serves the C tokens with the largest p_{t,e} (ties: the lower token); a token may
//!     be served by 0 … E experts
//! weight of (t, e) = p_{t,e}; no load-balancing loss (every expert serves exactly C)
//! ```

use super::{Routes, WeightsFrom};

/// Expert choice: each expert's top-C tokens, in token order within the expert.
pub fn route(probs: &[f32], n: usize, e: usize, k: usize, capacity_factor: f32) -> Routes {
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
