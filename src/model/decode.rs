//! Inference: the OLMoE forward pass of model/olmoe.rs without a tape, on the weights as the
//! checkpoint stores them (f32 or bf16, memory-mapped; see cpu/linear.rs), with a KV cache.
//! ```text
//! step(ids): the T new tokens sit at positions p0 .. p0+T−1, p0 = tokens seen so far
//! x = embed_tokens[ids]                                                    (T, C)
//! per layer:  h = input_layernorm(x)
//!             q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ → q_norm, k_norm → clamp → RoPE at p0..
//!             append k, v to the layer's cache                             (p0+T, Hkv·D)
//!             x += softmax(q·K_cacheᵀ/√D + causal) · V_cache · Woᵀ
//!             h = post_attention_layernorm(x)
//!             p = softmax(h·Wrᵀ), routes (model/routing/; top-K per token unless configured)
//!             x += Σ_routed e  w_e · down_e(silu(gate_e h) ⊙ up_e h)        only routed experts read
//! logits = norm(x[T−1]) · lm_headᵀ                                         (V), last token only
//! ```
//! Prefill is one `step` with the whole prompt; decoding is one `step` per token. Each step's
//! logits equal row p0+T−1 of `olmoe::forward` on the whole sequence (tests/decode.rs).

use super::config::OlmoeConfig;
use super::olmoe::{LayerWeights, Weights};
use super::routing::{route, WeightsFrom};
use crate::cpu::gemm::Kernel;
use crate::cpu::linear::{linear_with, Helpers, Matrix};
use crate::ops::attention::{attention_forward, rope_forward, AttentionDims};
use crate::ops::dense::{clamp_forward, rmsnorm_forward, softmax_forward, swiglu_forward};
use crate::ops::moe::renormalize_rows_forward;
use crate::tensor::Tensor;

/// Every weight for inference: one matrix each (a norm weight is 1 × C), except the stacked
/// expert weights, which are E matrices, one per expert.
pub type StoredWeights<'a> = Weights<Vec<Matrix<'a>>>;

/// f32 weights in memory (a model being trained) borrowed as [`StoredWeights`].
pub fn borrow_tensors(weights: &Weights<Tensor>) -> StoredWeights<'_> {
    fn borrow(t: &Tensor) -> Vec<Matrix<'_>> {
        match *t.shape() {
            [_, rows, cols] => {
                t.data().chunks_exact(rows * cols).map(|x| Matrix::f32(x, rows, cols)).collect()
            }
            [rows, cols] => vec![Matrix::f32(t.data(), rows, cols)],
            [cols] => vec![Matrix::f32(t.data(), 1, cols)],
            _ => panic!("borrow_tensors: a weight of shape {:?}", t.shape()),
        }
    }
    // Weights::map visits in named() order.
    let mut borrowed = weights.named().into_iter().map(|(_, t)| borrow(t));
    weights.map(|_| borrowed.next().expect("one tensor per weight"))
}

/// One layer's keys and values so far, (S, Hkv·D) each, row s for position s.
struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// A model reading a sequence: the weights, and what it has cached of the tokens seen so far.
pub struct Decoder<'w, 'a> {
    config: &'w OlmoeConfig,
    weights: &'w StoredWeights<'a>,
    cache: Vec<KvCache>,
    position: usize,
}

impl<'w, 'a> Decoder<'w, 'a> {
    /// An empty cache with room for `capacity` tokens (it grows past that if need be).
    pub fn new(config: &'w OlmoeConfig, weights: &'w StoredWeights<'a>, capacity: usize) -> Self {
        let row = config.num_key_value_heads * config.head_dim();
        let empty =
            || KvCache { k: Vec::with_capacity(capacity * row), v: Vec::with_capacity(capacity * row) };
        Decoder {
            config,
            weights,
            cache: (0..config.num_hidden_layers).map(|_| empty()).collect(),
            position: 0,
        }
    }

    /// How many tokens the cache holds: the position the next token will take.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Runs `ids` (T ≥ 1) at the next T positions, caches their keys and values, and returns
    /// the logits (V) that follow the last of them. `helpers` (cpu/linear.rs) share the
    /// matrix products of short steps; without, larger products start threads of their own.
    pub fn step(&mut self, ids: &[u32], helpers: Option<&Helpers<'w, 'a>>) -> Vec<f32> {
        let (config, w) = (self.config, self.weights);
        let on = Threads { helpers };
        let (t, c) = (ids.len(), config.hidden_size);
        assert!(t > 0, "Decoder::step: no tokens");
        let mut x = vec![0.0; t * c];
        for (row, &id) in x.chunks_exact_mut(c).zip(ids) {
            assert!((id as usize) < config.vocab_size, "Decoder::step: token id {id} ≥ vocab_size");
            w.embed_tokens[0].row_to_f32(id as usize, row);
        }
        for (layer, cache) in w.layers.iter().zip(&mut self.cache) {
            let h = rmsnorm(&x, &layer.input_layernorm[0], config.rms_norm_eps);
            let attn = on.attention(&h, layer, cache, self.position, config);
            add(&mut x, &attn);
            let h = rmsnorm(&x, &layer.post_attention_layernorm[0], config.rms_norm_eps);
            let moe = on.sparse_moe(&h, layer, config);
            add(&mut x, &moe);
        }
        self.position += t;
        let last = rmsnorm(&x[(t - 1) * c..], &w.norm[0], config.rms_norm_eps);
        on.project(&last, &w.lm_head.as_ref().unwrap_or(&w.embed_tokens)[0])
    }
}

/// x += y
fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// RMSNorm of each row of x (rows of w's width).
fn rmsnorm(x: &[f32], w: &Matrix, eps: f32) -> Vec<f32> {
    let c = w.cols();
    let (mut y, mut rstd) = (vec![0.0; x.len()], vec![0.0; x.len() / c]);
    rmsnorm_forward(&mut y, &mut rstd, x, &w.to_f32(), c, eps);
    y
}

/// Where a step's matrix products run: with the helpers, if any.
struct Threads<'h, 'w, 'a> {
    helpers: Option<&'h Helpers<'w, 'a>>,
}

impl<'w, 'a> Threads<'_, 'w, 'a> {
    /// y (T, N) = x (T, K) · Wᵀ
    fn project(&self, x: &[f32], w: &'w Matrix<'a>) -> Vec<f32> {
        let t = x.len() / w.cols();
        let mut y = vec![0.0; t * w.rows()];
        linear_with(Kernel::detect(), self.helpers, &mut y, x, w, t);
        y
    }

    /// h (T, C) → (T, C): the attention sublayer of model/attention.rs for T tokens that follow
    /// `p0` cached ones, appending their keys and values to `cache`.
    fn attention(
        &self,
        h: &[f32],
        w: &'w LayerWeights<Vec<Matrix<'a>>>,
        cache: &mut KvCache,
        p0: usize,
        config: &OlmoeConfig,
    ) -> Vec<f32> {
        let (heads, kv_heads, d) =
            (config.num_attention_heads, config.num_key_value_heads, config.head_dim());
        let t = h.len() / config.hidden_size;
        let eps = config.rms_norm_eps;
        let mut q = rmsnorm(&self.project(h, &w.q_proj[0]), &w.q_norm[0], eps);
        let mut k = rmsnorm(&self.project(h, &w.k_proj[0]), &w.k_norm[0], eps);
        let mut v = self.project(h, &w.v_proj[0]);
        if let Some(clip) = config.clip_qkv {
            for x in [&mut q, &mut k, &mut v] {
                let unclipped = x.clone();
                clamp_forward(x, &unclipped, -clip, clip);
            }
        }
        let mut q_rot = vec![0.0; q.len()];
        rope_forward(&mut q_rot, &q, p0, config.rope_theta, [1, t, heads, d]);
        let mut k_rot = vec![0.0; k.len()];
        rope_forward(&mut k_rot, &k, p0, config.rope_theta, [1, t, kv_heads, d]);
        cache.k.extend_from_slice(&k_rot);
        cache.v.extend_from_slice(&v);
        let s = p0 + t;
        let mut out = vec![0.0; t * heads * d];
        let mut lse = vec![0.0; heads * t];
        let dims = AttentionDims { b: 1, t, s, h: heads, hkv: kv_heads, d };
        attention_forward(&mut out, &mut lse, &q_rot, &cache.k, &cache.v, dims);
        self.project(&out, &w.o_proj[0])
    }

    /// h (T, C) → (T, C): the sparse MoE block of model/moe.rs, each chosen expert run once on
    /// the rows of the tokens that chose it; the other experts' weights are never read.
    fn sparse_moe(&self, h: &[f32], w: &'w LayerWeights<Vec<Matrix<'a>>>, config: &OlmoeConfig) -> Vec<f32> {
        let (c, e, k) = (config.hidden_size, config.num_experts, config.num_experts_per_tok);
        let t = h.len() / c;
        // HF: routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        let logits = self.project(h, &w.router[0]);
        let mut probs = vec![0.0; t * e];
        softmax_forward(&mut probs, &logits, e);
        let routes = route(&probs, t, config); // the step's tokens are one group
        let weights = match routes.weights_from {
            WeightsFrom::TopK => {
                // Each pick's probability: the top-K values, best first.
                let mut top: Vec<f32> =
                    routes.chosen.iter().enumerate().map(|(p, &x)| probs[p / k * e + x as usize]).collect();
                if config.norm_topk_prob {
                    let unnormalised = top.clone();
                    renormalize_rows_forward(&mut top, &unnormalised, k);
                }
                top
            }
            WeightsFrom::Probs => probs,
        };
        // HF: for expert_idx in range(num_experts): … index_add_: experts in ascending order.
        let mut out = vec![0.0; t * c];
        for expert in 0..e {
            let pairs = routes.offsets[expert]..routes.offsets[expert + 1];
            if pairs.is_empty() {
                continue;
            }
            let tokens = &routes.tokens[pairs.clone()];
            let y = self.run_expert(h, tokens, c, w, expert);
            for ((&token, &at), y_row) in tokens.iter().zip(&routes.weight_at[pairs]).zip(y.chunks_exact(c)) {
                let out_row = &mut out[token as usize * c..(token as usize + 1) * c];
                out_row.iter_mut().zip(y_row).for_each(|(o, y)| *o += weights[at as usize] * y);
            }
        }
        if let Some(shared) = &w.shared_expert {
            let (gate, up) = (self.project(h, &shared.gate[0]), self.project(h, &shared.up[0]));
            let mut act = vec![0.0; gate.len()];
            swiglu_forward(&mut act, &gate, &up);
            add(&mut out, &self.project(&act, &shared.down[0]));
        }
        out
    }

    /// down(silu(gate(x)) ⊙ up(x)) of one expert on the rows of h of `tokens`.
    fn run_expert(
        &self,
        h: &[f32],
        tokens: &[u32],
        c: usize,
        w: &'w LayerWeights<Vec<Matrix<'a>>>,
        expert: usize,
    ) -> Vec<f32> {
        let x: Vec<f32> =
            tokens.iter().flat_map(|&t| &h[t as usize * c..(t as usize + 1) * c]).copied().collect();
        let gate = self.project(&x, &w.experts_gate[expert]);
        let up = self.project(&x, &w.experts_up[expert]);
        let mut act = vec![0.0; gate.len()];
        swiglu_forward(&mut act, &gate, &up);
        self.project(&act, &w.experts_down[expert])
    }
}
