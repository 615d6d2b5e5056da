//! OLMoE's attention sublayer (HF `OlmoeAttention.forward`), on the tape:
//! ```text
//! q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ                 (N, H·D), (N, Hkv·D), (N, Hkv·D)
//! q, k    = q_norm(q), k_norm(k)               RMSNorm over the full projected width (QK-norm)
//! q, k, v = clamp(·, ±clip_qkv)                only when clip_qkv is set
//! q, k    = RoPE(q), RoPE(k)                   per head, positions 0..T-1
//! out     = softmax(q·kᵀ/√D + causal) · v      grouped-query when Hkv < H
//! return out·Woᵀ                               (N, C)
//! ```

use super::config::OlmoeConfig;
use super::olmoe::LayerWeights;
use crate::autograd::{Tape, Var};

/// h: (N, C) with N = batch·seq → (N, C).
pub fn attention(
    tape: &mut Tape,
    h: Var,
    w: &LayerWeights<Var>,
    config: &OlmoeConfig,
    batch: usize,
    seq: usize,
) -> Var {
    let (heads, kv_heads, d) = (config.num_attention_heads, config.num_key_value_heads, config.head_dim());
    let q = tape.matmul(h, w.q_proj, false, true);
    let k = tape.matmul(h, w.k_proj, false, true);
    let v = tape.matmul(h, w.v_proj, false, true);
    // HF: query_states = self.q_norm(self.q_proj(hidden_states)); same for k
    let mut q = tape.rmsnorm(q, w.q_norm, config.rms_norm_eps);
    let mut k = tape.rmsnorm(k, w.k_norm, config.rms_norm_eps);
    let mut v = v;
    if let Some(clip) = config.clip_qkv {
        // HF: query_states.clamp_(min=-self.config.clip_qkv, max=self.config.clip_qkv), after the norms
        q = tape.clamp(q, -clip, clip);
        k = tape.clamp(k, -clip, clip);
        v = tape.clamp(v, -clip, clip);
    }
    let q = tape.reshape(q, &[batch, seq, heads, d]);
    let k = tape.reshape(k, &[batch, seq, kv_heads, d]);
    let v = tape.reshape(v, &[batch, seq, kv_heads, d]);
    let q = tape.rope(q, 0, config.rope_theta);
    let k = tape.rope(k, 0, config.rope_theta);
    let out = tape.causal_attention(q, k, v);
    let out = tape.reshape(out, &[batch * seq, heads * d]);
    tape.matmul(out, w.o_proj, false, true)
}
