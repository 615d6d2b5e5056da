//! Drawing tokens: greedy, or sampling with temperature, top-k and top-p (nucleus); and the
//! generation loop: the prompt in one step (prefill), then one KV-cached step per new token.
//! ```text
//! greedy (temperature 0): argmax_i l_i, ties → the lower id
//! otherwise, in transformers' order (TemperatureLogitsWarper, TopK…, TopP…):
//!   z_i = l_i / temperature
//!   top-k: keep the k largest z and any tied with the k-th (k = 0: all)
//!   p_i = softmax(z) over the kept tokens
//!   top-p: ranked by p, keep token i while the mass ranked above it is < top_p (≥ 1 token)
//!   draw i with probability p_i / Σ_kept p
//! ```

use crate::cpu::linear::with_helpers;
use crate::error::{Error, Result};
use crate::model::decode::Decoder;
use crate::rng::Rng;
use std::ops::ControlFlow;
use std::time::Instant;

/// How the next token is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Draw among the k most likely tokens only (0: no limit).
    pub top_k: usize,
    /// Draw among the most likely tokens whose probabilities reach top_p (1: no limit).
    pub top_p: f32,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 };
}

/// The most likely token; ties go to the lower id.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The tokens sampling may draw (temperature > 0), most likely first, with their
/// probabilities after the top-k and top-p cuts, renormalised to sum to one.
pub fn candidates(logits: &[f32], sampling: Sampling) -> Vec<(u32, f64)> {
    assert!(sampling.temperature > 0.0, "candidates: temperature {} (greedy has none)", sampling.temperature);
    let mut ranked: Vec<u32> = (0..logits.len() as u32).collect();
    // Descending logit; sort_by is stable, so equal logits keep the lower id first.
    ranked.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if sampling.top_k > 0 && sampling.top_k < ranked.len() {
        // HF: indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
        let kth = logits[ranked[sampling.top_k - 1] as usize];
        let kept = ranked.iter().take_while(|&&i| logits[i as usize] >= kth).count();
        ranked.truncate(kept);
    }
    let top = logits[ranked[0] as usize];
    // p_i ∝ exp((l_i − l_max) / temperature), in f64 so the cuts below are not rounding noise.
    let weights: Vec<f64> = ranked
        .iter()
        .map(|&i| ((logits[i as usize] - top) as f64 / sampling.temperature as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut kept = Vec::new();
    let mut mass_above = 0.0;
    for (&id, w) in ranked.iter().zip(&weights) {
        if sampling.top_p < 1.0 && !kept.is_empty() && mass_above >= sampling.top_p as f64 {
            break;
        }
        kept.push((id, w / total));
        mass_above += w / total;
    }
    let kept_total: f64 = kept.iter().map(|(_, p)| p).sum();
    kept.iter().map(|&(id, p)| (id, p / kept_total)).collect()
}

/// Draws a token from one row of logits (V).
pub fn draw(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    if sampling.temperature <= 0.0 {
        return argmax(logits);
    }
    let candidates = candidates(logits, sampling);
    let mut u = rng.uniform();
    for &(id, p) in &candidates {
        if u < p {
            return id;
        }
        u -= p;
    }
    candidates.last().expect("at least one candidate").0
}

/// How many new tokens fit after a prompt of `prompt_len` when the model reads at most
/// `max_positions`: each drawn token but the last is fed back in, and needs a position.
pub fn room(max_positions: usize, prompt_len: usize) -> usize {
    (max_positions + 1).saturating_sub(prompt_len)
}

/// What [`generate`] produced, and how long it took.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The new tokens (the stop token included, when it came).
    pub ids: Vec<u32>,
    pub prefill_seconds: f64,
    /// One-token steps after the prefill (the last drawn token needs none).
    pub decode_steps: usize,
    pub decode_seconds: f64,
}

/// Feeds `prompt` to `decoder` in one step, then draws up to `max_new` tokens, one step each
/// (see [`generate_with`]). Helper threads (cpu/linear.rs) stay up for the whole generation.
pub fn generate(
    decoder: &mut Decoder,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: Option<u32>,
    rng: &mut Rng,
    on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation> {
    with_helpers(|helpers| {
        generate_with(|ids| decoder.step(ids, helpers), prompt, max_new, sampling, stop, rng, on_token)
    })
}

/// Feeds `prompt` to `step` (which returns the logits after the ids it is given, the ones
/// before them remembered), then draws up to `max_new` tokens, one step each, stopping after
/// `stop` (EOS), or when `on_token`, which sees each new token as soon as it is drawn, says
/// to. Logits that are not all finite (a broken checkpoint) are an error.
pub fn generate_with(
    mut step: impl FnMut(&[u32]) -> Vec<f32>,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: Option<u32>,
    rng: &mut Rng,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation> {
    {
        let start = Instant::now();
        let mut logits = step(prompt);
        let prefill_seconds = start.elapsed().as_secs_f64();
        let (start, mut ids, mut decode_steps) = (Instant::now(), Vec::with_capacity(max_new), 0);
        while ids.len() < max_new {
            if let Some(bad) = logits.iter().find(|l| !l.is_finite()) {
                return Err(Error::invalid(
                    format!("generation: the logits for new token {}", ids.len() + 1),
                    format!("hold {bad}: the checkpoint's weights are not all finite, or overflow in f32"),
                ));
            }
            let next = draw(&logits, sampling, rng);
            ids.push(next);
            if on_token(next).is_break() || Some(next) == stop || ids.len() == max_new {
                break;
            }
            logits = step(&[next]);
            decode_steps += 1;
        }
        Ok(Generation { ids, prefill_seconds, decode_steps, decode_seconds: start.elapsed().as_secs_f64() })
    }
}
