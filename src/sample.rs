//! Sampling a continuation from a model: softmax(logits / temperature) over the `top_k` most
//! likely tokens, one token at a time. This version reruns the whole window for every new
//! token (no KV cache): simple and exact, fine for the few lines `moe train` prints at its end.

use crate::autograd::Tape;
use crate::model::config::OlmoeConfig;
use crate::model::olmoe::{forward, Weights};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// How the next token is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Draw among the k most likely tokens only (0: among all).
    pub top_k: usize,
}

/// Draws a token from one row of logits (V). Ties in the ranking go to the lower id.
pub fn draw(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    let mut ranked: Vec<u32> = (0..logits.len() as u32).collect();
    // Descending logit; sort_by is stable, so equal logits keep the lower id first.
    ranked.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if sampling.temperature <= 0.0 {
        return ranked[0];
    }
    let k = if sampling.top_k == 0 { ranked.len() } else { sampling.top_k.min(ranked.len()) };
    let top = logits[ranked[0] as usize];
    // p_i ∝ exp((l_i − l_max) / temperature) over the k kept tokens.
    let weights: Vec<f64> = ranked[..k]
        .iter()
        .map(|&i| (((logits[i as usize] - top) / sampling.temperature) as f64).exp())
        .collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (&id, w) in ranked.iter().zip(&weights) {
        if u < *w {
            return id;
        }
        u -= w;
    }
    ranked[k - 1]
}

/// `prompt` followed by up to `new_tokens` sampled tokens, stopping early after `stop`. The
/// model sees at most the last `max_position_embeddings` tokens.
pub fn continue_text(
    config: &OlmoeConfig,
    weights: &Weights<Tensor>,
    prompt: &[u32],
    new_tokens: usize,
    sampling: Sampling,
    stop: Option<u32>,
    rng: &mut Rng,
) -> Vec<u32> {
    assert!(!prompt.is_empty(), "continue_text: an empty prompt");
    let mut ids = prompt.to_vec();
    for _ in 0..new_tokens {
        let window = &ids[ids.len().saturating_sub(config.max_position_embeddings)..];
        let mut tape = Tape::new();
        let vars = weights.map(|w| tape.constant(w.clone()));
        let out = forward(&mut tape, &vars, config, window, 1, window.len());
        let logits = tape.value(out.logits).data();
        let last = &logits[(window.len() - 1) * config.vocab_size..];
        let next = draw(last, sampling, rng);
        ids.push(next);
        if Some(next) == stop {
            break;
        }
    }
    ids
}
