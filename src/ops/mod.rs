//! The math: each op's forward and backward side by side, as free functions over slices,
//! plus its tape method (`impl Tape`) that checks shapes, runs the forward and records it.
//!
//! Shape letters, used in every comment below:
//!   B batch, T sequence (queries), S keys (= T without a KV cache), N = B·T rows,
//!   C hidden (or any row width), H / Hkv attention / key-value heads, D head dim,
//!   E experts, K experts per token, F expert hidden, V vocab, R rows of a table.
//!
//! Conventions (llm.c's): forward functions *write* their outputs; backward functions
//! take (input gradients…, upstream gradient, saved…, inputs…, sizes) and *accumulate*
//! into the input gradients with `+=`, so a value used twice sums its gradients.

pub mod attention;
pub mod dense;
pub mod loss;
pub mod matmul;
pub mod moe;

/// grad += delta, element by element: the one accumulation every backward uses.
pub fn accumulate(grad: &mut [f32], delta: &[f32]) {
    assert_eq!(grad.len(), delta.len(), "accumulate: {} vs {} values", grad.len(), delta.len());
    for (g, d) in grad.iter_mut().zip(delta) {
        *g += d;
    }
}

/// log Σ exp(x), shifted by the max so no exp overflows (f32, summed in order).
pub fn logsumexp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + x.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}
