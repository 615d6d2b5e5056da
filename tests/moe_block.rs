//! The sort-based MoE block against its slow twin — HF's per-expert loop written per token in
//! f64 — and the aux losses against their formulas, forward and backward.

mod common;
use common::*;
use moe::autograd::{Tape, Var};
use moe::model::config::OlmoeConfig;
use moe::model::moe::{load_balancing_loss, router_z_loss, sparse_moe_block, LoadBalance};
use moe::rng::Rng;
use moe::tensor::Tensor;

const N: usize = 6; // tokens
const C: usize = 5; // hidden
const E: usize = 4; // experts
const F: usize = 3; // expert width

fn config(k: usize, norm_topk_prob: bool) -> OlmoeConfig {
    OlmoeConfig {
        hidden_size: C,
        intermediate_size: F,
        num_experts: E,
        num_experts_per_tok: k,
        norm_topk_prob,
        ..OlmoeConfig::default()
    }
}

/// Inputs h (N, C), router (E, C), gate (E, F, C), up (E, F, C), down (E, C, F), with the
/// router scaled so that every token's top-k has a clear margin (finite differences must not
/// flip the selection).
fn inputs(seed: u64) -> Vec<Input> {
    let mut rng = Rng::new(seed);
    vec![
        param(rand(&[N, C], &mut rng)),
        param(Tensor::uniform(&[E, C], -2.0, 2.0, &mut rng)),
        param(rand(&[E, F, C], &mut rng)),
        param(rand(&[E, F, C], &mut rng)),
        param(rand(&[E, C, F], &mut rng)),
    ]
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One layer's routing: probabilities (N, E) and each token's top-k experts.
type Routing = (Vec<Vec<f64>>, Vec<Vec<usize>>);

/// Router probabilities (N, E) and each token's top-k experts (ties: lower index).
fn route(x: &[Vec<f64>], k: usize) -> Routing {
    let probs: Vec<Vec<f64>> = (0..N)
        .map(|t| {
            let h = &x[0][t * C..(t + 1) * C];
            softmax(&(0..E).map(|e| dot(h, &x[1][e * C..(e + 1) * C])).collect::<Vec<_>>())
        })
        .collect();
    let chosen = probs
        .iter()
        .map(|p| {
            let mut order: Vec<usize> = (0..E).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            order[..k].to_vec()
        })
        .collect();
    (probs, chosen)
}

/// HF's block, token by token: out_t = Σ_{e in top-k} w_e · down_e(silu(gate_e h) ⊙ up_e h).
fn moe_reference(x: &[Vec<f64>], k: usize, norm_topk_prob: bool) -> Vec<f64> {
    let (probs, chosen) = route(x, k);
    let mut out = vec![0.0; N * C];
    for t in 0..N {
        let h = &x[0][t * C..(t + 1) * C];
        let total: f64 = chosen[t].iter().map(|&e| probs[t][e]).sum();
        for &e in &chosen[t] {
            let w = if norm_topk_prob { probs[t][e] / total } else { probs[t][e] };
            let expert = |i: usize| &x[i][e * F * C..(e + 1) * F * C];
            let y = common::swiglu_mlp_ref(h, expert(2), expert(3), expert(4));
            out[t * C..(t + 1) * C].iter_mut().zip(y).for_each(|(o, y)| *o += w * y);
        }
    }
    out
}

/// The smallest gap between a token's k-th and (k+1)-th router probability.
fn min_margin(x: &[Vec<f64>], k: usize) -> f64 {
    let (probs, chosen) = route(x, k);
    (0..N)
        .filter(|_| k < E)
        .map(|t| {
            let kth = probs[t][chosen[t][k - 1]];
            let next = (0..E).filter(|e| !chosen[t].contains(e)).map(|e| probs[t][e]).fold(0.0, f64::max);
            kth - next
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn sort_dispatch_matches_the_per_token_loop() {
    for (k, renorm, seed) in [(1, false, 1), (2, false, 2), (2, true, 3), (3, true, 4), (E, false, 5)] {
        let inputs = inputs(seed);
        let x64: Vec<Vec<f64>> = inputs.iter().map(|i| to_f64(i.value.data())).collect();
        let margin = min_margin(&x64, k);
        assert!(margin > 1e-3, "seed {seed}: top-{k} margin {margin:e} too small for finite differences");
        let cfg = config(k, renorm);
        check_op(
            &format!("moe block k={k} norm_topk_prob={renorm}"),
            &inputs,
            |t, v| {
                let w = moe_layer(t, v[1], [v[2], v[3], v[4]]);
                sparse_moe_block(t, v[0], &w, &cfg, N).0
            },
            |x| moe_reference(x, k, renorm),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

/// HF: E · Σ_e (pooled share of slots to e) · (pooled mean prob of e), pooled over layers.
/// OLMoE training: mean over layers of E · Σ_e (layer share of slots, ÷K) · (layer mean prob).
fn aux_reference(layers: &[Routing], k: usize, norm: LoadBalance) -> f64 {
    let l = layers.len() as f64;
    let mut per_layer = Vec::new();
    let (mut pooled_share, mut pooled_prob) = (vec![0.0; E], vec![0.0; E]);
    for (probs, chosen) in layers {
        let (mut share, mut prob) = (vec![0.0; E], vec![0.0; E]);
        for t in 0..N {
            chosen[t].iter().for_each(|&e| share[e] += 1.0 / (N * k) as f64);
            (0..E).for_each(|e| prob[e] += probs[t][e] / N as f64);
        }
        per_layer.push(E as f64 * dot(&share, &prob));
        for e in 0..E {
            pooled_share[e] += share[e] * k as f64 / l; // HF's tokens_per_expert summed over slots
            pooled_prob[e] += prob[e] / l;
        }
    }
    match norm {
        LoadBalance::HuggingFace => E as f64 * dot(&pooled_share, &pooled_prob),
        LoadBalance::OlmoeTraining => per_layer.iter().sum::<f64>() / l,
    }
}

#[test]
fn load_balancing_and_z_losses_match_their_formulas() {
    // Two layers: each input pair (h, router) is one layer's router.
    let k = 2;
    let mut rng = Rng::new(9);
    let inputs: Vec<Input> = (0..2)
        .flat_map(|_| [param(rand(&[N, C], &mut rng)), param(Tensor::uniform(&[E, C], -2.0, 2.0, &mut rng))])
        .collect();
    let cfg = config(k, false);
    let routers = |t: &mut Tape, v: &[Var]| {
        (0..2)
            .map(|l| {
                let experts = [[E, F, C], [E, F, C], [E, C, F]].map(|s| t.constant(Tensor::zeros(&s)));
                let w = moe_layer(t, v[2 * l + 1], experts);
                sparse_moe_block(t, v[2 * l], &w, &cfg, N).1
            })
            .collect::<Vec<_>>()
    };
    let layer_routes = |x: &[Vec<f64>]| -> Vec<Routing> {
        (0..2).map(|l| route(&[x[2 * l].clone(), x[2 * l + 1].clone()], k)).collect()
    };
    for l in 0..2 {
        let x: Vec<Vec<f64>> =
            [&inputs[2 * l], &inputs[2 * l + 1]].iter().map(|i| to_f64(i.value.data())).collect();
        assert!(min_margin(&x, k) > 1e-3, "layer {l}: top-{k} margin too small");
    }
    for norm in [LoadBalance::HuggingFace, LoadBalance::OlmoeTraining] {
        check_op(
            &format!("load balancing {norm:?}"),
            &inputs,
            |t, v| {
                let r = routers(t, v);
                load_balancing_loss(t, &r, E, norm)
            },
            |x| vec![aux_reference(&layer_routes(x), k, norm)],
            FWD_TOL,
            BWD_TOL,
        );
    }
    check_op(
        "router z-loss",
        &inputs,
        |t, v| {
            let r = routers(t, v);
            router_z_loss(t, &r)
        },
        |x| {
            let mut total = 0.0;
            for l in 0..2 {
                for t in 0..N {
                    let h = &x[2 * l][t * C..(t + 1) * C];
                    let logits: Vec<f64> =
                        (0..E).map(|e| dot(h, &x[2 * l + 1][e * C..(e + 1) * C])).collect();
                    total += logits.iter().map(|v| v.exp()).sum::<f64>().ln().powi(2) / (2 * N) as f64;
                }
            }
            vec![total]
        },
        FWD_TOL,
        BWD_TOL,
    );
}
