//! The sparse MoE block (HF `OlmoeSparseMoeBlock`) and its aux losses. Which tokens go to
//! which experts is model/routing/'s choice (dropless token choice unless configured).
//! ```text
//! h (N, C) → router logits = h·Wrᵀ (N, E) → p = softmax (f32)
//!          → routes (routing/): the served (token, expert) pairs, sorted by expert, with
//!            offsets (E + 1), and each pair's weight: a top-K probability (token choice;
//!            renormalised over the K when norm_topk_prob) or p_{t,e} (expert choice)
//!          → x_perm = h[token of each pair]                                (pairs, C)
//!          → experts, each once on its contiguous rows (grouped matmuls):
//!            y_perm = down_e( silu(gate_e x) ⊙ up_e x )                     (pairs, C)
//!          → combine: out[t] = Σ_{pairs of t} weight · y_perm[pair]        (N, C)
//!          [+ shared expert: out += down_s(silu(gate_s h) ⊙ up_s h), every token, weight 1]
//! ```

use super::config::OlmoeConfig;
use super::olmoe::LayerWeights;
use super::routing::{route, WeightsFrom};
use crate::autograd::{Tape, Var};
use crate::tensor::Tensor;

/// What the aux losses (and routing analysis) need from one layer's router.
pub struct RouterOutput {
    /// (N, E) router logits, before the softmax.
    pub logits: Var,
    /// (N, E) softmax probabilities over all experts.
    pub probs: Var,
    /// Token choice: the chosen experts (N·K), token-major, best first, before any capacity
    /// drop. Empty for expert choice, which has no load-balancing loss.
    pub experts: Vec<u32>,
    /// Token choice: per (token, rank) pick, whether capacity dropped it (all false dropless).
    pub dropped: Vec<bool>,
    /// Rows each expert computed (E): its load, whatever the routing.
    pub served: Vec<usize>,
}

/// h: (N, C) → (N, C), N = sequences of `seq` tokens (each its own routing group), and the
/// router's output for the losses.
pub fn sparse_moe_block(
    tape: &mut Tape,
    h: Var,
    w: &LayerWeights<Var>,
    config: &OlmoeConfig,
    seq: usize,
) -> (Var, RouterOutput) {
    let (n, k, e) = (tape.shape(h)[0], config.num_experts_per_tok, config.num_experts);
    // HF: router_logits = self.gate(hidden_states)
    //     routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
    let logits = tape.matmul(h, w.router, false, true);
    let probs = tape.softmax(logits);
    let routes = route(&tape.value(probs).host_data(), seq, config);
    let weights = match routes.weights_from {
        WeightsFrom::TopK => {
            // HF: routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
            let (mut top, top_experts) = tape.topk(probs, k);
            // The same sort as routing's (topk_forward), so the weights line up with the picks.
            assert_eq!(top_experts, routes.chosen, "sparse_moe_block: top-k and routes disagree");
            if config.norm_topk_prob {
                // HF: routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
                top = tape.renormalize_rows(top);
            }
            tape.reshape(top, &[n * k, 1])
        }
        WeightsFrom::Probs => tape.reshape(probs, &[n * e, 1]),
    };
    let x_perm = tape.gather_rows(h, &routes.tokens);

    // Experts: down(silu(gate(x)) * up(x)), each on its own rows.
    let gate = tape.grouped_matmul(x_perm, w.experts_gate, &routes.offsets);
    let up = tape.grouped_matmul(x_perm, w.experts_up, &routes.offsets);
    let act = tape.swiglu(gate, up);
    let y_perm = tape.grouped_matmul(act, w.experts_down, &routes.offsets);

    // Combine: weight each pair's output by its routing weight, sum back into its token.
    // HF: final_hidden_states.index_add_(0, top_x, current_hidden_states * routing_weights[top_x, idx, None])
    let pair_weights = tape.gather_rows(weights, &routes.weight_at);
    let y_weighted = tape.scale_rows(y_perm, pair_weights);
    let mut out = tape.scatter_add_rows(y_weighted, &routes.tokens, n);
    if let Some(shared) = &w.shared_expert {
        // Every token, unweighted: out += down(silu(gate h) ⊙ up h).
        let gate = tape.matmul(h, shared.gate, false, true);
        let up = tape.matmul(h, shared.up, false, true);
        let act = tape.swiglu(gate, up);
        let y = tape.matmul(act, shared.down, false, true);
        out = tape.add(out, y);
    }
    let served = routes.offsets.windows(2).map(|w| w[1] - w[0]).collect();
    (out, RouterOutput { logits, probs, experts: routes.chosen, dropped: routes.dropped, served })
}

// ---- Aux losses
//
// Load balancing, with f_e the share of routed (token, slot) pairs that went to expert e and
// P_e the mean router probability of e, is E·Σ_e f_e·P_e in every normalisation; they differ
// in what is pooled (SPEC.md §1.4):
//   HuggingFace (`load_balancing_loss_func`, what `moe forward` reports): counts and mean
//     probabilities pooled over all L layers' N tokens, no division by K — perfect balance
//     gives K.  aux = E/(L·N)² · Σ_e c_e · Σ_{l,t} p_{l,t,e},  c_e = Σ_l c_{l,e}
//   OlmoeTraining (megablocks' `batched_load_balancing_loss`, what OLMoE trained with): per
//     layer, divided by K, averaged over layers — perfect balance gives 1.
//     aux = E/(L·N²·K) · Σ_l Σ_e c_{l,e} · Σ_t p_{l,t,e}
// (OLMo-core's third normalisation is not implemented.)
// The counts carry no gradient (top-k indices); the gradient flows through p.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalance {
    HuggingFace,
    OlmoeTraining,
}

/// The load-balancing loss over all layers' routers.
pub fn load_balancing_loss(
    tape: &mut Tape,
    routers: &[RouterOutput],
    num_experts: usize,
    norm: LoadBalance,
) -> Var {
    assert!(!routers.is_empty(), "load_balancing_loss: no MoE layers");
    if routers[0].experts.is_empty() {
        return tape.constant(Tensor::scalar(0.0)); // expert choice: balanced by construction
    }
    let (layers, tokens) = (routers.len(), tape.shape(routers[0].probs)[0]);
    let k = routers[0].experts.len() / tokens.max(1);
    let count = |experts: &[u32], counts: &mut [f32]| experts.iter().for_each(|&e| counts[e as usize] += 1.0);
    let mut pooled = vec![0.0f32; num_experts];
    routers.iter().for_each(|r| count(&r.experts, &mut pooled));
    let mut total = None;
    for r in routers {
        let counts = match norm {
            LoadBalance::HuggingFace => pooled.clone(),
            LoadBalance::OlmoeTraining => {
                let mut own = vec![0.0f32; num_experts];
                count(&r.experts, &mut own);
                own
            }
        };
        let counts = tape.constant(Tensor::new(&[num_experts, 1], counts));
        let weighted = tape.matmul(r.probs, counts, false, false); // (N, 1): Σ_e p_{t,e}·c_e
        let layer_sum = tape.sum(weighted);
        total = Some(match total {
            None => layer_sum,
            Some(t) => tape.add(t, layer_sum),
        });
    }
    let (e, l, n) = (num_experts as f64, layers as f64, tokens as f64);
    let scale = match norm {
        LoadBalance::HuggingFace => e / ((l * n) * (l * n)),
        LoadBalance::OlmoeTraining => e / (l * n * n * k as f64),
    };
    tape.scale(total.expect("at least one layer"), scale as f32)
}

/// Router z-loss as the OLMoE paper writes it (Eq. 4): the mean over tokens, and over layers,
/// of (log Σ_e exp(logit_e))². OLMoE's training code divides by K as well (÷8: an effective
/// weight of 1.25e-4 instead of 1e-3, allenai/OLMoE#39); we follow the paper.
pub fn router_z_loss(tape: &mut Tape, routers: &[RouterOutput]) -> Var {
    assert!(!routers.is_empty(), "router_z_loss: no MoE layers");
    let mut total = None;
    for r in routers {
        let lse = tape.logsumexp_rows(r.logits);
        let squared = tape.mul(lse, lse);
        let mean = tape.mean(squared);
        total = Some(match total {
            None => mean,
            Some(t) => tape.add(t, mean),
        });
    }
    tape.scale(total.expect("at least one layer"), 1.0 / routers.len() as f32)
}
