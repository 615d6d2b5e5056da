//! OLMoE (`OlmoeForCausalLM`): weights → forward → losses, and the Hugging Face names.
//! ```text
//! x = embed_tokens[ids]                                       (N, C), N = batch·seq
//! for each layer:  x = x + attention(input_layernorm(x))       model/attention.rs
//!                  x = x + sparse_moe(post_attention_layernorm(x))   model/moe.rs
//! logits = lm_head(norm(x))                                   (N, V); lm_head = embed_tokens if tied
//! ```

use super::attention::attention;
use super::config::OlmoeConfig;
use super::moe::{load_balancing_loss, router_z_loss, sparse_moe_block, LoadBalance, RouterOutput};
use crate::autograd::{Gradients, Tape, Var};
use crate::ops::loss::IGNORE_INDEX;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// One decoder layer's weights; `T` is a stored `Tensor` or a `Var` on the tape.
/// Shapes: C hidden, H·D and Hkv·D projected widths, E experts, F expert width.
#[derive(Clone, Debug)]
pub struct LayerWeights<T> {
    pub input_layernorm: T,          // (C)
    pub q_proj: T,                   // (H·D, C)
    pub k_proj: T,                   // (Hkv·D, C)
    pub v_proj: T,                   // (Hkv·D, C)
    pub o_proj: T,                   // (C, H·D)
    pub q_norm: T,                   // (H·D)
    pub k_norm: T,                   // (Hkv·D)
    pub post_attention_layernorm: T, // (C)
    pub router: T,                   // (E, C)     HF: mlp.gate
    pub experts_gate: T,             // (E, F, C)  HF: mlp.experts.{e}.gate_proj, stacked
    pub experts_up: T,               // (E, F, C)  HF: mlp.experts.{e}.up_proj, stacked
    pub experts_down: T,             // (E, C, F)  HF: mlp.experts.{e}.down_proj, stacked
    /// An expert every token passes through, its output added to the routed experts' (OLMoE's
    /// shared-expert ablation; config `shared_expert_intermediate_size`). None in OLMoE-1B-7B.
    pub shared_expert: Option<SharedExpert<T>>,
}

/// The shared expert's SwiGLU MLP, Fs = shared_expert_intermediate_size wide.
/// HF names (Qwen2-MoE's): `mlp.shared_expert.{gate,up,down}_proj.weight`.
#[derive(Clone, Debug)]
pub struct SharedExpert<T> {
    pub gate: T, // (Fs, C)
    pub up: T,   // (Fs, C)
    pub down: T, // (C, Fs)
}

#[derive(Clone, Debug)]
pub struct Weights<T> {
    pub embed_tokens: T, // (V, C)
    pub layers: Vec<LayerWeights<T>>,
    pub norm: T,            // (C)
    pub lm_head: Option<T>, // (V, C); None when tied to embed_tokens
}

/// Where a weight lives in a Hugging Face checkpoint.
pub enum HfName {
    /// One tensor of this name.
    Single(String),
    /// E per-expert tensors, `{prefix}.{e}.{suffix}`, stacked along a new first dimension.
    Experts { prefix: String, suffix: &'static str },
}

impl<T> Weights<T> {
    /// Every weight with its HF name, in checkpoint order.
    pub fn named(&self) -> Vec<(HfName, &T)> {
        let single = |s: String| HfName::Single(s);
        let mut out = vec![(single("model.embed_tokens.weight".into()), &self.embed_tokens)];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let experts = |suffix| HfName::Experts { prefix: format!("{p}.mlp.experts"), suffix };
            out.extend([
                (single(format!("{p}.input_layernorm.weight")), &l.input_layernorm),
                (single(format!("{p}.self_attn.q_proj.weight")), &l.q_proj),
                (single(format!("{p}.self_attn.k_proj.weight")), &l.k_proj),
                (single(format!("{p}.self_attn.v_proj.weight")), &l.v_proj),
                (single(format!("{p}.self_attn.o_proj.weight")), &l.o_proj),
                (single(format!("{p}.self_attn.q_norm.weight")), &l.q_norm),
                (single(format!("{p}.self_attn.k_norm.weight")), &l.k_norm),
                (single(format!("{p}.post_attention_layernorm.weight")), &l.post_attention_layernorm),
                (single(format!("{p}.mlp.gate.weight")), &l.router),
                (experts("gate_proj.weight"), &l.experts_gate),
                (experts("up_proj.weight"), &l.experts_up),
                (experts("down_proj.weight"), &l.experts_down),
            ]);
            if let Some(s) = &l.shared_expert {
                out.extend([
                    (single(format!("{p}.mlp.shared_expert.gate_proj.weight")), &s.gate),
                    (single(format!("{p}.mlp.shared_expert.up_proj.weight")), &s.up),
                    (single(format!("{p}.mlp.shared_expert.down_proj.weight")), &s.down),
                ]);
            }
        }
        out.push((single("model.norm.weight".into()), &self.norm));
        if let Some(head) = &self.lm_head {
            out.push((single("lm_head.weight".into()), head));
        }
        out
    }

    /// The same structure with every weight mapped, visiting them in [`Weights::named`] order.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Weights<U> {
        let embed_tokens = f(&self.embed_tokens);
        let mut layer = |l: &LayerWeights<T>| LayerWeights {
            input_layernorm: f(&l.input_layernorm),
            q_proj: f(&l.q_proj),
            k_proj: f(&l.k_proj),
            v_proj: f(&l.v_proj),
            o_proj: f(&l.o_proj),
            q_norm: f(&l.q_norm),
            k_norm: f(&l.k_norm),
            post_attention_layernorm: f(&l.post_attention_layernorm),
            router: f(&l.router),
            experts_gate: f(&l.experts_gate),
            experts_up: f(&l.experts_up),
            experts_down: f(&l.experts_down),
            shared_expert: l.shared_expert.as_ref().map(|s| SharedExpert {
                gate: f(&s.gate),
                up: f(&s.up),
                down: f(&s.down),
            }),
        };
        let layers = self.layers.iter().map(&mut layer).collect();
        let norm = f(&self.norm);
        Weights { embed_tokens, layers, norm, lm_head: self.lm_head.as_ref().map(f) }
    }
}

impl<T> Weights<T> {
    /// Every weight, mutably, in [`Weights::named`] order (for the optimizer).
    pub fn values_mut(&mut self) -> Vec<&mut T> {
        let mut out = vec![&mut self.embed_tokens];
        for l in &mut self.layers {
            out.extend([
                &mut l.input_layernorm,
                &mut l.q_proj,
                &mut l.k_proj,
                &mut l.v_proj,
                &mut l.o_proj,
                &mut l.q_norm,
                &mut l.k_norm,
                &mut l.post_attention_layernorm,
                &mut l.router,
                &mut l.experts_gate,
                &mut l.experts_up,
                &mut l.experts_down,
            ]);
            if let Some(s) = &mut l.shared_expert {
                out.extend([&mut s.gate, &mut s.up, &mut s.down]);
            }
        }
        out.push(&mut self.norm);
        out.extend(self.lm_head.as_mut());
        out
    }
}

impl Weights<Vec<usize>> {
    /// The shape of every weight for `config`.
    pub fn shapes(config: &OlmoeConfig) -> Weights<Vec<usize>> {
        let (c, d) = (config.hidden_size, config.head_dim());
        let (q, kv) = (config.num_attention_heads * d, config.num_key_value_heads * d);
        let (e, f, v) = (config.num_experts, config.intermediate_size, config.vocab_size);
        let layer = LayerWeights {
            input_layernorm: vec![c],
            q_proj: vec![q, c],
            k_proj: vec![kv, c],
            v_proj: vec![kv, c],
            o_proj: vec![c, q],
            q_norm: vec![q],
            k_norm: vec![kv],
            post_attention_layernorm: vec![c],
            router: vec![e, c],
            experts_gate: vec![e, f, c],
            experts_up: vec![e, f, c],
            experts_down: vec![e, c, f],
            shared_expert: config.shared_expert_intermediate_size.map(|fs| SharedExpert {
                gate: vec![fs, c],
                up: vec![fs, c],
                down: vec![c, fs],
            }),
        };
        Weights {
            embed_tokens: vec![v, c],
            layers: vec![layer; config.num_hidden_layers],
            norm: vec![c],
            lm_head: (!config.tie_word_embeddings).then_some(vec![v, c]),
        }
    }
}

impl Weights<Tensor> {
    /// OLMoE's init: every matrix truncated normal (std initializer_range, cut at ±3 std),
    /// every norm weight one.
    pub fn init(config: &OlmoeConfig, rng: &mut Rng) -> Weights<Tensor> {
        Weights::shapes(config).map(|shape| match shape.len() {
            1 => Tensor::full(shape, 1.0),
            _ => Tensor::trunc_normal(shape, config.initializer_range, 3.0, rng),
        })
    }

    /// Total parameter count.
    pub fn numel(&self) -> usize {
        self.named().iter().map(|(_, t)| t.numel()).sum()
    }
}

/// What one forward pass gives: logits and each layer's router output.
pub struct Forward {
    pub logits: Var, // (N, V)
    pub routers: Vec<RouterOutput>,
}

/// The forward pass over `ids`, `batch` sequences of `seq` tokens, row-major.
pub fn forward(
    tape: &mut Tape,
    w: &Weights<Var>,
    config: &OlmoeConfig,
    ids: &[u32],
    batch: usize,
    seq: usize,
) -> Forward {
    assert_eq!(ids.len(), batch * seq, "forward: {} ids for batch {batch} × seq {seq}", ids.len());
    let eps = config.rms_norm_eps;
    // HF: nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id): the pad row gets no gradient.
    let mut x = tape.embedding(w.embed_tokens, ids, config.pad_token_id);
    let mut routers = Vec::with_capacity(w.layers.len());
    for layer in &w.layers {
        let h = tape.rmsnorm(x, layer.input_layernorm, eps);
        let attn = attention(tape, h, layer, config, batch, seq);
        x = tape.add(x, attn);
        let h = tape.rmsnorm(x, layer.post_attention_layernorm, eps);
        let (moe, router) = sparse_moe_block(tape, h, layer, config, seq);
        x = tape.add(x, moe);
        routers.push(router);
    }
    let x = tape.rmsnorm(x, w.norm, eps);
    let logits = tape.matmul(x, w.lm_head.unwrap_or(w.embed_tokens), false, true);
    Forward { logits, routers }
}

/// The logits that follow the last of `ids` (one sequence), from one forward pass over all of
/// them on a tape beside the weights (host or GPU): generation without a KV cache, which is
/// how `moe generate --device cuda` steps. (V) values.
pub fn next_token_logits(config: &OlmoeConfig, weights: &Weights<Tensor>, ids: &[u32]) -> Vec<f32> {
    assert!(!ids.is_empty(), "next_token_logits: no ids");
    let mut tape = Tape::beside(&weights.embed_tokens);
    let vars = weights.map(|w| tape.constant(w.clone()));
    let out = forward(&mut tape, &vars, config, ids, 1, ids.len());
    let logits = tape.value(out.logits).host_data();
    logits[(ids.len() - 1) * config.vocab_size..].to_vec()
}

/// Every weight's gradient after `backward`, shaped like `weights` (zeros for a weight the loss
/// did not reach); `vars` are the weights' leaves on the tape that was differentiated.
pub fn weight_grads(weights: &Weights<Tensor>, vars: &Weights<Var>, grads: &Gradients) -> Weights<Tensor> {
    // Weights::map visits in named() order, so the vars come out in step.
    let mut var_of = vars.named().into_iter().map(|(_, v)| *v);
    weights.map(|w| {
        let v = var_of.next().expect("one var per weight");
        grads.get(v).cloned().unwrap_or_else(|| w.zeros_like())
    })
}

/// Next-token targets as HF's causal-LM loss builds them: position t predicts ids[t + 1];
/// the last position of each sequence predicts nothing (IGNORE_INDEX).
pub fn next_token_targets(ids: &[u32], seq: usize) -> Vec<i32> {
    ids.chunks(seq).flat_map(|s| s[1..].iter().map(|&id| id as i32).chain([IGNORE_INDEX])).collect()
}

/// The three losses of a forward pass, unscaled.
pub struct Losses {
    /// Next-token cross-entropy, mean over predicted tokens.
    pub ce: Var,
    /// Load balancing, in the chosen normalisation.
    pub aux: Var,
    /// Router z-loss (mean over layers and tokens of logsumexp²).
    pub z: Var,
}

pub fn losses(
    tape: &mut Tape,
    out: &Forward,
    config: &OlmoeConfig,
    targets: &[i32],
    norm: LoadBalance,
) -> Losses {
    let ce = tape.cross_entropy(out.logits, targets, IGNORE_INDEX);
    let aux = load_balancing_loss(tape, &out.routers, config.num_experts, norm);
    let z = router_z_loss(tape, &out.routers);
    Losses { ce, aux, z }
}
