//! The routing variants (model/routing.rs) on hand-worked examples, the MoE block under each
//! against a per-token f64 twin (forward and finite-difference backward), and their config.

mod common;
use common::*;
use moe::autograd::Tape;
use moe::json;
use moe::model::config::{OlmoeConfig, Routing};
use moe::model::moe::{load_balancing_loss, sparse_moe_block, LoadBalance};
use moe::model::olmoe::SharedExpert;
use moe::model::routing::{route, WeightsFrom};
use moe::rng::Rng;
use moe::tensor::Tensor;

/// Six tokens' probabilities over three experts (rows sum to 1; the 0.3s tie exactly).
const PROBS: [[f32; 3]; 6] = [
    [0.6, 0.3, 0.1], // t0: top-2 = e0, e1
    [0.5, 0.2, 0.3], // t1: e0, e2
    [0.7, 0.2, 0.1], // t2: e0, e1
    [0.1, 0.6, 0.3], // t3: e1, e2
    [0.2, 0.5, 0.3], // t4: e1, e2
    [0.3, 0.3, 0.4], // t5: e2, then e0 (tied with e1: the lower index)
];

fn config(routing: Routing) -> OlmoeConfig {
    OlmoeConfig { num_experts: 3, num_experts_per_tok: 2, routing, ..OlmoeConfig::default() }
}

fn capacity(capacity_factor: f32, min_capacity: usize) -> Routing {
    Routing::TokenChoiceCapacity { capacity_factor, eval_capacity_factor: 2.0, min_capacity }
}

fn probs() -> Vec<f32> {
    PROBS.concat()
}

#[test]
fn dropless_token_choice_serves_every_pick() {
    let r = route(&probs(), 6, &config(Routing::TokenChoice));
    assert_eq!(r.chosen, [0, 1, 0, 2, 0, 1, 1, 2, 1, 2, 2, 0]);
    assert_eq!(r.dropped, [false; 12]);
    // By expert, in pick order (pick = token·2 + rank).
    assert_eq!(r.weight_at, [0, 2, 4, 11, 1, 5, 6, 8, 3, 7, 9, 10]);
    assert_eq!(r.tokens, [0, 1, 2, 5, 0, 2, 3, 4, 1, 3, 4, 5]);
    assert_eq!(r.offsets, [0, 4, 8, 12]);
    assert_eq!(r.weights_from, WeightsFrom::TopK);
}

#[test]
fn capacity_serves_first_choices_first_then_earlier_tokens() {
    // C = max(1, ⌊2 · 0.5 · 6 / 3⌋) = 2 picks per expert.
    //   rank 0: t0→e0 ✓, t1→e0 ✓, t2→e0 ✗ (e0 full), t3→e1 ✓, t4→e1 ✓, t5→e2 ✓
    //   rank 1: t0→e1 ✗, t1→e2 ✓, t2→e1 ✗, t3→e2 ✗, t4→e2 ✗, t5→e0 ✗
    let r = route(&probs(), 6, &config(capacity(0.5, 1)));
    let dropped: Vec<usize> = (0..12).filter(|&p| r.dropped[p]).collect();
    assert_eq!(dropped, [1, 4, 5, 7, 9, 11]);
    assert_eq!(r.weight_at, [0, 2, 6, 8, 3, 10]);
    assert_eq!(r.tokens, [0, 1, 3, 4, 1, 5]); // t2 lost both its picks: residual only
    assert_eq!(r.offsets, [0, 2, 4, 6]);
    assert_eq!(
        r.chosen,
        route(&probs(), 6, &config(Routing::TokenChoice)).chosen,
        "LB counts the picks before drops"
    );
    // Each sequence is its own group: two copies of the six tokens drop the same picks each.
    let twice = route(&[probs(), probs()].concat(), 6, &config(capacity(0.5, 1)));
    let dropped_twice: Vec<usize> = (0..24).filter(|&p| twice.dropped[p]).collect();
    assert_eq!(dropped_twice, [1, 4, 5, 7, 9, 11, 13, 16, 17, 19, 21, 23]);
    // min_capacity rules when the factor gives less: C = max(4, 2) serves every pick here.
    assert_eq!(route(&probs(), 6, &config(capacity(0.5, 4))).dropped, [false; 12]);
    // The evaluation factor 2.0: C = 8, nothing dropped.
    let eval = config(capacity(0.5, 1)).for_evaluation();
    assert_eq!(eval.routing, capacity(2.0, 1));
    assert_eq!(route(&probs(), 6, &eval).dropped, [false; 12]);
}

#[test]
fn expert_choice_takes_each_experts_top_tokens() {
    // C = ⌊1 · 6 · 2 / 3⌋ = 4 tokens per expert.
    //   e0: p = .6 .5 .7 .1 .2 .3 → t2, t0, t1, t5
    //   e1: p = .3 .2 .2 .6 .5 .3 → t3, t4, t0, t5 (0.3 tie: lower token first)
    //   e2: p = .1 .3 .1 .3 .3 .4 → t5, t1, t3, t4 (t2 and t0 left out)
    let r = route(&probs(), 6, &config(Routing::ExpertChoice { capacity_factor: 1.0 }));
    assert_eq!(r.tokens, [0, 1, 2, 5, 0, 3, 4, 5, 1, 3, 4, 5]);
    assert_eq!(r.offsets, [0, 4, 8, 12]);
    assert_eq!(r.weight_at, [0, 3, 6, 15, 1, 10, 13, 16, 5, 11, 14, 17]); // t·E + e into p
    assert_eq!(r.weights_from, WeightsFrom::Probs);
    assert!(r.chosen.is_empty() && r.dropped.is_empty());
    // A tiny factor still gives each expert one token; a huge one at most every token.
    let one = route(&probs(), 6, &config(Routing::ExpertChoice { capacity_factor: 0.01 }));
    assert_eq!((one.tokens.clone(), one.offsets.clone()), (vec![2, 3, 5], vec![0, 1, 2, 3]));
    assert_eq!(route(&probs(), 6, &config(Routing::ExpertChoice { capacity_factor: 9.0 })).tokens.len(), 18);
}

// ---- the block: exact outputs and gradients against a per-token twin

const N: usize = 6;
const C: usize = 6;
const E: usize = 3;
const F: usize = 2;

/// The block's output from `routes` (computed by the twin's own rules), per token in f64:
/// out_t = Σ_{served (t, e)} w · down_e(silu(gate_e h_t) ⊙ up_e h_t).
fn block_reference(x: &[Vec<f64>], served: &[(usize, usize, f64)]) -> Vec<f64> {
    let mut out = vec![0.0; N * C];
    for &(t, e, w) in served {
        let h = &x[0][t * C..(t + 1) * C];
        let expert = |i: usize| &x[i][e * F * C..(e + 1) * F * C];
        let y = common::swiglu_mlp_ref(h, expert(2), expert(3), expert(4));
        out[t * C..(t + 1) * C].iter_mut().zip(y).for_each(|(o, y)| *o += w * y);
    }
    out
}

/// Router probabilities (N, E) in f64 from h and the router weights.
fn probs64(x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    (0..N)
        .map(|t| {
            let logits: Vec<f64> =
                (0..E).map(|e| (0..C).map(|c| x[0][t * C + c] * x[1][e * C + c]).sum()).collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            logits.iter().map(|l| (l - max).exp() / z).collect()
        })
        .collect()
}

/// The twin's routing: the same rules, written per token and per expert, in f64.
fn served64(p: &[Vec<f64>], routing: Routing) -> Vec<(usize, usize, f64)> {
    let ranked = |scores: Vec<f64>| {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        order
    };
    match routing {
        Routing::ExpertChoice { capacity_factor } => {
            let c = ((capacity_factor as f64 * (N * 2) as f64 / E as f64) as usize).clamp(1, N);
            (0..E)
                .flat_map(|e| {
                    ranked(p.iter().map(|r| r[e]).collect())[..c]
                        .iter()
                        .map(move |&t| (t, e, p[t][e]))
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        _ => {
            let cap = match routing {
                Routing::TokenChoiceCapacity { capacity_factor, min_capacity, .. } => {
                    ((2.0 * capacity_factor as f64 * N as f64 / E as f64) as usize).max(min_capacity)
                }
                _ => usize::MAX,
            };
            let top: Vec<Vec<usize>> = p.iter().map(|r| ranked(r.clone())[..2].to_vec()).collect();
            let mut load = [0usize; E];
            let mut served = Vec::new();
            for rank in 0..2 {
                for (t, picks) in top.iter().enumerate() {
                    let e = picks[rank];
                    if load[e] < cap {
                        load[e] += 1;
                        served.push((t, e, p[t][e]));
                    }
                }
            }
            served
        }
    }
}

/// The block's inputs: h (N, C), router (E, C) (spread so rankings have margins), gate and up
/// (E, F, C), down (E, C, F).
fn block_inputs(rng: &mut Rng) -> Vec<Input> {
    vec![
        param(rand(&[N, C], rng)),
        param(Tensor::uniform(&[E, C], -2.0, 2.0, rng)),
        param(rand(&[E, F, C], rng)),
        param(rand(&[E, F, C], rng)),
        param(rand(&[E, C, F], rng)),
    ]
}

/// The smallest gap in every ranking the routing makes (each token's over experts, each
/// expert's over tokens): finite differences must not flip any decision.
fn margin(p: &[Vec<f64>]) -> f64 {
    let gaps = |mut v: Vec<f64>| {
        v.sort_by(|a, b| b.total_cmp(a));
        v.windows(2).map(|w| w[0] - w[1]).fold(f64::INFINITY, f64::min)
    };
    let rows = p.iter().map(|r| gaps(r.clone())).fold(f64::INFINITY, f64::min);
    let cols = (0..E).map(|e| gaps(p.iter().map(|r| r[e]).collect())).fold(f64::INFINITY, f64::min);
    rows.min(cols)
}

#[test]
fn the_block_under_each_routing_matches_the_twin_forward_and_backward() {
    for routing in [Routing::TokenChoice, capacity(0.5, 1), Routing::ExpertChoice { capacity_factor: 1.0 }] {
        // The first seed whose rankings all have a clear margin.
        let (inputs, x64) = (1..200)
            .map(|seed| {
                let inputs = block_inputs(&mut Rng::new(seed));
                let x64: Vec<Vec<f64>> = inputs.iter().map(|i| to_f64(i.value.data())).collect();
                (inputs, x64)
            })
            .find(|(_, x)| margin(&probs64(x)) > 2e-3)
            .expect("a seed with clear routing margins");
        let served = served64(&probs64(&x64), routing);
        if let Routing::TokenChoiceCapacity { .. } = routing {
            assert!(served.len() < N * 2, "the capacity case drops some picks");
        }
        let cfg = OlmoeConfig { hidden_size: C, intermediate_size: F, ..config(routing) };
        check_op(
            &format!("moe block, {routing:?}"),
            &inputs,
            |t, v| {
                let w = moe_layer(t, v[1], [v[2], v[3], v[4]]);
                sparse_moe_block(t, v[0], &w, &cfg, N).0
            },
            |x| block_reference(x, &served64(&probs64(x), routing)),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
fn a_token_whose_picks_are_all_dropped_gets_exactly_zero() {
    // h_t = one-hot(t) and router[e][t] = ln PROBS[t][e] make the router's softmax PROBS itself,
    // so the hand-worked capacity example above applies: t2 loses both picks.
    let mut tape = Tape::new();
    let h = tape
        .constant(Tensor::new(&[N, C], (0..N * C).map(|i| if i / C == i % C { 1.0 } else { 0.0 }).collect()));
    let router: Vec<f32> = (0..E * C).map(|i| PROBS[i % C][i / C].ln()).collect();
    let router = tape.constant(Tensor::new(&[E, C], router));
    let mut rng = Rng::new(5);
    let experts = [[E, F, C], [E, F, C], [E, C, F]].map(|s| tape.constant(rand(&s, &mut rng)));
    let w = moe_layer(&mut tape, router, experts);
    let cfg = OlmoeConfig { hidden_size: C, intermediate_size: F, ..config(capacity(0.5, 1)) };
    let (out, router_out) = sparse_moe_block(&mut tape, h, &w, &cfg, N);
    let out = tape.value(out).data().to_vec();
    assert_eq!(&out[2 * C..3 * C], &[0.0; C], "t2's MoE output");
    assert!(out[..2 * C].iter().chain(&out[3 * C..]).all(|&v| v != 0.0), "every other token is served");
    assert_eq!(router_out.dropped.iter().filter(|&&d| d).count(), 6);
    assert_eq!(router_out.served, [2, 2, 2], "each expert computed its capacity's rows");
}

#[test]
fn expert_choice_has_no_load_balancing_loss() {
    let mut tape = Tape::new();
    let mut rng = Rng::new(9);
    let h = tape.constant(rand(&[N, C], &mut rng));
    let router = tape.constant(rand(&[E, C], &mut rng));
    let experts = [[E, F, C], [E, F, C], [E, C, F]].map(|s| tape.constant(rand(&s, &mut rng)));
    let w = moe_layer(&mut tape, router, experts);
    let cfg = OlmoeConfig {
        hidden_size: C,
        intermediate_size: F,
        ..config(Routing::ExpertChoice { capacity_factor: 1.0 })
    };
    let (_, r) = sparse_moe_block(&mut tape, h, &w, &cfg, N);
    assert_eq!(r.served, [4, 4, 4], "every expert takes C = ⌊1 · 6 · 2 / 3⌋ tokens");
    for norm in [LoadBalance::HuggingFace, LoadBalance::OlmoeTraining] {
        let aux = load_balancing_loss(&mut tape, std::slice::from_ref(&r), E, norm);
        assert_eq!(tape.value(aux).item(), 0.0);
    }
}

#[test]
fn a_shared_expert_adds_its_mlp_to_every_token() {
    // Dropless top-2 plus a shared expert of width 4: out_t = routed_t + down_s(silu(gate_s h) ⊙ up_s h).
    const FS: usize = 4;
    let mut rng = Rng::new(11);
    let mut inputs = block_inputs(&mut rng);
    inputs.extend([[FS, C], [FS, C], [C, FS]].map(|shape| param(rand(&shape, &mut rng))));
    let x64: Vec<Vec<f64>> = inputs.iter().map(|i| to_f64(i.value.data())).collect();
    assert!(margin(&probs64(&x64)) > 1e-3, "seed 11's routing margins");
    let cfg = OlmoeConfig {
        hidden_size: C,
        intermediate_size: F,
        shared_expert_intermediate_size: Some(FS),
        ..config(Routing::TokenChoice)
    };
    let shared = |x: &[Vec<f64>]| -> Vec<f64> {
        let token = |t: usize| common::swiglu_mlp_ref(&x[0][t * C..(t + 1) * C], &x[5], &x[6], &x[7]);
        (0..N).flat_map(token).collect::<Vec<f64>>()
    };
    check_op(
        "moe block with a shared expert",
        &inputs,
        |t, v| {
            let mut w = moe_layer(t, v[1], [v[2], v[3], v[4]]);
            w.shared_expert = Some(SharedExpert { gate: v[5], up: v[6], down: v[7] });
            sparse_moe_block(t, v[0], &w, &cfg, N).0
        },
        |x| {
            let routed = block_reference(x, &served64(&probs64(x), Routing::TokenChoice));
            routed.iter().zip(shared(x)).map(|(r, s)| r + s).collect()
        },
        FWD_TOL,
        BWD_TOL,
    );
}

// ---- config

#[test]
fn routing_round_trips_through_config_json_and_bad_values_are_named() {
    for routing in [Routing::TokenChoice, capacity(1.25, 4), Routing::ExpertChoice { capacity_factor: 2.0 }] {
        let c = OlmoeConfig { shared_expert_intermediate_size: Some(7), ..config(routing) };
        let text = c.to_json().to_json_pretty();
        assert_eq!(text.contains("moe_routing"), routing != Routing::TokenChoice, "{text}");
        let back = OlmoeConfig::from_json(&json::parse(&text).unwrap(), "config.json").unwrap();
        assert_eq!(back.routing, routing);
        assert_eq!(back.shared_expert_intermediate_size, Some(7));
    }
    let defaults = r#"{"model_type": "olmoe", "moe_routing": "token_choice_capacity"}"#;
    let c = OlmoeConfig::from_json(&json::parse(defaults).unwrap(), "c.json").unwrap();
    assert_eq!(c.routing, capacity(1.25, 4)); // OpenMoE's: 1.25 training, 2.0 evaluation, min 4
    for (text, message) in [
        (
            r#"{"model_type": "olmoe", "moe_routing": "token_choice_capacity", "moe_min_capacity": 0}"#,
            "c.json: field 'moe_min_capacity': expected a positive whole number",
        ),
        (
            r#"{"model_type": "olmoe", "moe_routing": "token_choice_capacity", "norm_topk_prob": true}"#,
            "capacity routing combines raw probabilities (OpenMoE): norm_topk_prob must be false",
        ),
        (
            r#"{"model_type": "olmoe", "moe_routing": "switch"}"#,
            "c.json: field 'moe_routing': \"switch\" is not a routing",
        ),
        (
            r#"{"model_type": "olmoe", "moe_routing": "expert_choice", "moe_capacity_factor": 0}"#,
            "c.json: field 'moe_capacity_factor': expected a positive number",
        ),
    ] {
        let err = OlmoeConfig::from_json(&json::parse(text).unwrap(), "c.json").unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
}

#[test]
fn a_shared_expert_checkpoint_saves_and_loads_under_its_hub_names() {
    let config = OlmoeConfig {
        vocab_size: 32,
        hidden_size: 8,
        intermediate_size: 4,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        num_experts: 3,
        num_experts_per_tok: 2,
        shared_expert_intermediate_size: Some(5),
        eos_token_id: None,
        pad_token_id: None,
        routing: Routing::ExpertChoice { capacity_factor: 2.0 },
        ..OlmoeConfig::default()
    };
    let weights = moe::model::olmoe::Weights::init(&config, &mut Rng::new(3));
    let dir = std::env::temp_dir().join(format!("moe-shared-expert-{}", std::process::id()));
    moe::model::hf::save(&dir, &config, &weights).unwrap();
    let names = moe::checkpoint::Checkpoint::open(&dir)
        .unwrap()
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    for part in ["gate", "up", "down"] {
        assert!(names.contains(&format!("model.layers.1.mlp.shared_expert.{part}_proj.weight")), "{names:?}");
    }
    let (back_config, back) = moe::model::hf::load(&dir).unwrap();
    assert_eq!(back_config, config);
    let flat = |w: &moe::model::olmoe::Weights<Tensor>| -> Vec<f32> {
        w.named().iter().flat_map(|(_, t)| t.data().to_vec()).collect()
    };
    assert_eq!(flat(&back), flat(&weights));
    std::fs::remove_dir_all(&dir).unwrap();
}
