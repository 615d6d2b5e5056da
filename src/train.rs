//! Training: one optimizer step of OLMoE's recipe (SPEC.md §2), and the validation loss. The
//! run around them (data, schedule, checkpoints, logging) is `trainer.rs`.
//!
//! loss = CE + router_aux_loss_coef · LB + router_z_loss_coef · Z, with LB in OLMoE's training
//! normalisation (per layer, ÷K, averaged over layers) and Z as the paper writes it; the
//! micro-batches' gradients are averaged, clipped to a global L2 norm, and AdamW takes a step.

use crate::autograd::Tape;
use crate::model::config::OlmoeConfig;
use crate::model::moe::LoadBalance;
use crate::model::olmoe::{forward, losses, next_token_targets, weight_grads, Weights};
use crate::optim::{clip_grad_norm, AdamW};
use crate::tensor::Tensor;

/// What one step measured, averaged over its micro-batches (losses unscaled).
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// The total loss that was differentiated.
    pub loss: f32,
    pub ce: f32,
    pub aux: f32,
    pub z: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
    /// (L, E): per layer, the share of the rows the experts computed that each one computed
    /// (served (token, expert) pairs; after any capacity drop).
    pub expert_load: Vec<Vec<f32>>,
}

impl StepStats {
    /// The worst load imbalance over layers: (layer, max_e load_e · E). 1.0 is a perfect
    /// balance; E means one expert took every token.
    pub fn worst_imbalance(&self) -> (usize, f32) {
        let imbalance = |load: &Vec<f32>| load.iter().fold(0.0f32, |m, &x| m.max(x)) * load.len() as f32;
        self.expert_load.iter().map(imbalance).enumerate().fold((0, 0.0), |best, (l, x)| {
            if x > best.1 {
                (l, x)
            } else {
                best
            }
        })
    }
}

/// One step over `micro_batches` (each `batch · seq` ids): gradients of the mean loss,
/// clipped to `max_grad_norm`, then AdamW at `lr`; weights are updated in place.
/// `Err(stats)` when the loss or the gradient norm is NaN or infinite: then nothing is
/// updated, neither the weights nor the optimizer.
pub fn train_step(
    config: &OlmoeConfig,
    weights: &mut Weights<Tensor>,
    optimizer: &mut AdamW,
    micro_batches: &[Vec<u32>],
    seq: usize,
    lr: f32,
    max_grad_norm: f32,
) -> Result<StepStats, StepStats> {
    assert!(!micro_batches.is_empty(), "train_step: no micro-batches");
    let share = 1.0 / micro_batches.len() as f32;
    let mut grads: Option<Weights<Tensor>> = None;
    let mut stats = StepStats {
        loss: 0.0,
        ce: 0.0,
        aux: 0.0,
        z: 0.0,
        grad_norm: 0.0,
        expert_load: vec![vec![0.0; config.num_experts]; config.num_hidden_layers],
    };
    for ids in micro_batches {
        assert_eq!(ids.len() % seq, 0, "train_step: {} ids are not whole sequences of {seq}", ids.len());
        let mut tape = Tape::beside(&weights.embed_tokens);
        let vars = weights.map(|w| tape.param(w.clone()));
        let out = forward(&mut tape, &vars, config, ids, ids.len() / seq, seq);
        let l = losses(&mut tape, &out, config, &next_token_targets(ids, seq), LoadBalance::OlmoeTraining);
        let aux = tape.scale(l.aux, config.router_aux_loss_coef);
        let z = tape.scale(l.z, config.router_z_loss_coef);
        let ce_aux = tape.add(l.ce, aux);
        let total = tape.add(ce_aux, z);
        let total = tape.scale(total, share); // the mean over micro-batches
        for (sum, var) in [(&mut stats.ce, l.ce), (&mut stats.aux, l.aux), (&mut stats.z, l.z)] {
            *sum += share * tape.value(var).item();
        }
        stats.loss += tape.value(total).item();
        for (load, router) in stats.expert_load.iter_mut().zip(&out.routers) {
            let rows: usize = router.served.iter().sum();
            load.iter_mut()
                .zip(&router.served)
                .for_each(|(l, &s)| *l += share * s as f32 / rows.max(1) as f32);
        }
        let micro = weight_grads(weights, &vars, &tape.backward(total));
        grads = Some(match grads {
            None => micro,
            Some(mut sum) => {
                for (s, (_, g)) in sum.values_mut().into_iter().zip(micro.named()) {
                    s.accumulate_from(g);
                }
                sum
            }
        });
    }
    let mut grads = grads.expect("at least one micro-batch");
    stats.grad_norm = clip_grad_norm(&mut grads.values_mut(), max_grad_norm);
    if !stats.loss.is_finite() || !stats.grad_norm.is_finite() {
        return Err(stats);
    }
    let grad_refs: Vec<&Tensor> = grads.named().into_iter().map(|(_, g)| g).collect();
    optimizer.step(&mut weights.values_mut(), &grad_refs, lr);
    Ok(stats)
}

/// The mean next-token cross-entropy over `batches` (each whole sequences of `seq` ids),
/// weighted by the number of predicted tokens, as one pass over the validation split. The
/// model runs as in evaluation (`OlmoeConfig::for_evaluation`).
pub fn validation_loss<'a>(
    config: &OlmoeConfig,
    weights: &Weights<Tensor>,
    batches: impl IntoIterator<Item = &'a [u32]>,
    seq: usize,
) -> f64 {
    let config = &config.for_evaluation(); // capacity routing: the evaluation capacity factor
    let (mut sum, mut count) = (0.0f64, 0usize);
    for ids in batches {
        let mut tape = Tape::beside(&weights.embed_tokens);
        let vars = weights.map(|w| tape.constant(w.clone()));
        let rows = ids.len() / seq;
        let out = forward(&mut tape, &vars, config, ids, rows, seq);
        let ce =
            tape.cross_entropy(out.logits, &next_token_targets(ids, seq), crate::ops::loss::IGNORE_INDEX);
        let predicted = rows * (seq - 1);
        sum += tape.value(ce).item() as f64 * predicted as f64;
        count += predicted;
    }
    assert!(count > 0, "validation_loss: no predicted tokens");
    sum / count as f64
}
