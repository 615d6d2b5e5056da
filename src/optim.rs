//! The optimizer side of OLMoE's recipe (SPEC.md §2.1): AdamW with decoupled weight decay
//! on every parameter, global-norm gradient clipping, and the learning-rate schedule
//! (linear warmup from 0.1·peak → cosine to 0.1·peak → the annealing run's linear decay to 0).
//!
//! Parameters and gradients travel as parallel slices in one fixed order (the caller's, e.g.
//! `Weights::named`); AdamW keeps one first and one second moment per entry in that order.
//! All element math is f32 in torch's operation order, so a few steps agree with
//! `torch.optim.AdamW` to float rounding (tests/optim.rs against tests/golden/adamw/).

use crate::cpu::threads::{par_map, par_rows, split_range, threads_for};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Rough cost of one element of an AdamW step, for the thread split (`par_adamw_update`).
const ADAMW_WORK_PER_ELEMENT: usize = 8;
/// Gradient norms sum squares in chunks of this many elements (f64 each), added in chunk
/// order: the same bits whatever the thread count (and on the GPU: `cuda::optim`).
pub const NORM_CHUNK: usize = 4096;

// ---- AdamW

/// OLMoE's AdamW (yml `optimizer`): betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on every
/// parameter (norms and embeddings included). The scalars are f64 like torch's Python
/// floats; torch rounds each to f32 where it meets a tensor, and so does [`AdamW::step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Peak learning rate; the schedule sets the rate of each step (see [`Schedule`]).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig { lr: 4.0e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// What a checkpoint needs to continue AdamW exactly: the step count t and both moments,
/// one tensor per parameter in the parameter order.
#[derive(Clone, Debug)]
pub struct AdamWState {
    pub step: u64,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
}

/// AdamW as `torch.optim.AdamW` computes it on the CPU (single-tensor path), per element:
/// ```text
/// t   = t + 1
/// p   = p · (1 − lr·wd)                          decoupled weight decay, before the update
/// m   = m + (1 − β1)·(g − m)                      = β1·m + (1 − β1)·g   (torch: m.lerp_(g, 1 − β1))
/// v   = v·β2 + ((1 − β2)·g)·g                     (torch: v.mul_(β2).addcmul_(g, g, 1 − β2))
/// bc1 = 1 − β1^t,  bc2 = 1 − β2^t                 (f64)
/// d   = sqrt(v) / sqrt(bc2) + eps                 = sqrt(v̂) + eps
/// p   = p + ((−lr/bc1)·m) / d                     = p − lr · m̂ / (sqrt(v̂) + eps)
/// ```
/// Moments start at zero on the first step, sized from the parameters.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW { config, step: 0, exp_avg: Vec::new(), exp_avg_sq: Vec::new() }
    }

    /// Continues from a checkpoint's state (the next step is `state.step + 1`).
    pub fn from_state(config: AdamWConfig, state: AdamWState) -> Result<AdamW> {
        let AdamWState { step, exp_avg, exp_avg_sq } = state;
        if exp_avg.len() != exp_avg_sq.len() {
            return Err(Error::invalid(
                "AdamW state",
                format!("{} first moments but {} second moments", exp_avg.len(), exp_avg_sq.len()),
            ));
        }
        for (i, (m, v)) in exp_avg.iter().zip(&exp_avg_sq).enumerate() {
            if m.shape() != v.shape() {
                return Err(Error::invalid(
                    "AdamW state",
                    format!("moments of parameter {i} differ in shape: {:?} vs {:?}", m.shape(), v.shape()),
                ));
            }
        }
        if step == 0 && !exp_avg.is_empty() {
            return Err(Error::invalid("AdamW state", "step 0 but moments are present"));
        }
        if step > 0 && exp_avg.is_empty() {
            return Err(Error::invalid("AdamW state", format!("step {step} but no moments")));
        }
        Ok(AdamW { config, step, exp_avg, exp_avg_sq })
    }

    /// A copy of the step count and moments, for a checkpoint.
    pub fn state(&self) -> AdamWState {
        let host = |moments: &[Tensor]| moments.iter().map(Tensor::to_host).collect();
        AdamWState { step: self.step, exp_avg: host(&self.exp_avg), exp_avg_sq: host(&self.exp_avg_sq) }
    }

    /// Steps taken so far (t of the last step).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One AdamW step at learning rate `lr` on `params` with their `grads` (same order,
    /// same shapes, and the same order on every call).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[&Tensor], lr: f32) {
        assert_eq!(
            params.len(),
            grads.len(),
            "AdamW::step: {} parameters but {} gradients",
            params.len(),
            grads.len()
        );
        if self.step == 0 {
            self.exp_avg = params.iter().map(|p| p.zeros_like()).collect();
            self.exp_avg_sq = self.exp_avg.clone();
        }
        assert_eq!(
            self.exp_avg.len(),
            params.len(),
            "AdamW::step: the optimizer holds moments for {} parameters, got {}",
            self.exp_avg.len(),
            params.len()
        );
        self.step += 1;

        let s = AdamWScalars::new(&self.config, lr, self.step);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            assert_eq!(
                p.shape(),
                g.shape(),
                "AdamW::step: parameter {i} has shape {:?}, its gradient {:?}",
                p.shape(),
                g.shape()
            );
            assert_eq!(
                p.shape(),
                self.exp_avg[i].shape(),
                "AdamW::step: parameter {i} has shape {:?}, its moments {:?}",
                p.shape(),
                self.exp_avg[i].shape()
            );
            #[cfg(feature = "cuda")]
            if let Some(p_gpu) = p.gpu_mut() {
                // The moments follow their parameter to the GPU (after a resume they load on the host).
                let gpu = std::sync::Arc::clone(&p_gpu.gpu);
                let (m, v) = (&mut self.exp_avg[i], &mut self.exp_avg_sq[i]);
                (*m, *v) = (m.to_gpu(&gpu), v.to_gpu(&gpu));
                let (m, v) = (m.gpu_mut().expect("on the GPU"), v.gpu_mut().expect("on the GPU"));
                let g = crate::cuda::ops::on_gpu(g, "AdamW::step");
                crate::cuda::must(crate::cuda::optim::adamw_update(
                    &gpu,
                    &mut p_gpu.buf,
                    &mut m.buf,
                    &mut v.buf,
                    &g.buf,
                    &s,
                ));
                continue;
            }
            par_adamw_update(
                p.data_mut(),
                self.exp_avg[i].data_mut(),
                self.exp_avg_sq[i].data_mut(),
                g.data(),
                &s,
            );
        }
    }
}

/// The f32 scalars of one AdamW step, from the f64 ones as torch computes them in Python,
/// each rounded to f32 where it meets a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// 1 − lr·wd
    pub decay: f32,
    /// 1 − β1
    pub one_minus_beta1: f32,
    /// β2
    pub beta2: f32,
    /// 1 − β2
    pub one_minus_beta2: f32,
    /// −lr / (1 − β1^t)
    pub neg_step_size: f32,
    /// sqrt(1 − β2^t)
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
}

impl AdamWScalars {
    /// The scalars of step `t` (1 on the first step) at learning rate `lr`.
    pub fn new(config: &AdamWConfig, lr: f32, t: u64) -> AdamWScalars {
        let c = config;
        let lr = lr as f64;
        let t = t as f64;
        let bias_correction1 = 1.0 - c.beta1.powf(t);
        let bias_correction2 = 1.0 - c.beta2.powf(t);
        AdamWScalars {
            decay: (1.0 - lr * c.weight_decay) as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            neg_step_size: (-(lr / bias_correction1)) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: c.eps as f32,
        }
    }
}

/// One AdamW step on each element of p with its moments m, v and gradient g (the twin of
/// `kernels/optim.ptx` adamw_update), f32 in torch's operation order, no fused multiply-adds.
pub fn adamw_update(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamWScalars) {
    let n = p.len();
    assert!(
        m.len() == n && v.len() == n && g.len() == n,
        "adamw_update: p [{n}], m [{}], v [{}] and g [{}] differ in length",
        m.len(),
        v.len(),
        g.len()
    );
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        // torch's vectorised lerp fuses this into one FMA; without one
        // (no target features here) m can differ from torch by an ulp.
        *m += s.one_minus_beta1 * (g - *m);
        *v = *v * s.beta2 + s.one_minus_beta2 * g * g;
        // p ← p·(1 − lr·wd), then p + (−lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps)
        let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
        *p *= s.decay;
        *p += s.neg_step_size * *m / denom;
    }
}

/// [`adamw_update`] with p, m, v and g cut into the same contiguous ranges, one thread each.
fn par_adamw_update(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamWScalars) {
    let ranges = split_range(p.len(), threads_for(p.len().saturating_mul(ADAMW_WORK_PER_ELEMENT)), 1);
    if ranges.len() == 1 {
        return adamw_update(p, m, v, g, s);
    }
    std::thread::scope(|scope| {
        let (mut p, mut m, mut v) = (p, m, v);
        for r in ranges {
            let (p_chunk, p_rest) = std::mem::take(&mut p).split_at_mut(r.len());
            let (m_chunk, m_rest) = std::mem::take(&mut m).split_at_mut(r.len());
            let (v_chunk, v_rest) = std::mem::take(&mut v).split_at_mut(r.len());
            (p, m, v) = (p_rest, m_rest, v_rest);
            let g_chunk = &g[r];
            scope.spawn(move || adamw_update(p_chunk, m_chunk, v_chunk, g_chunk, s));
        }
    });
}

// ---- gradient clipping

/// The global L2 norm of all `tensors` together: sqrt(Σ_tensors Σ_i x_i²), squares summed in
/// f64 in a fixed order (chunks of `NORM_CHUNK` elements in order, whatever the thread count).
pub fn global_norm(tensors: &[&Tensor]) -> f64 {
    let mut sum = 0.0f64;
    for t in tensors {
        #[cfg(feature = "cuda")]
        if let Some(t) = t.gpu() {
            sum += crate::cuda::must(crate::cuda::optim::sum_squares(&t.gpu, &t.buf));
            continue;
        }
        let x = t.data();
        let chunks = x.len().div_ceil(NORM_CHUNK);
        let partials = par_map(chunks, NORM_CHUNK, |range| {
            range
                .map(|c| {
                    let chunk = &x[c * NORM_CHUNK..((c + 1) * NORM_CHUNK).min(x.len())];
                    chunk.iter().map(|&v| v as f64 * v as f64).sum::<f64>()
                })
                .collect::<Vec<f64>>()
        });
        sum += partials.into_iter().flatten().sum::<f64>();
    }
    sum.sqrt()
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (OLMoE: `max_grad_norm: 1.0`):
/// ```text
/// n    = ‖all gradients as one vector‖₂
/// coef = min(max_norm / (n + 1e-6), 1)      (f32, as torch)
/// g    = g · coef                           for every gradient, when coef < 1
/// ```
/// Returns n, the norm before clipping. A non-finite n is returned as is and the gradients
/// are left untouched (the training loop's NaN guard stops the run).
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f32) -> f32 {
    let norm = {
        let views: Vec<&Tensor> = grads.iter().map(|g| &**g).collect();
        global_norm(&views) as f32
    };
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            #[cfg(feature = "cuda")]
            if let Some(t) = g.gpu_mut() {
                crate::cuda::must(crate::cuda::optim::scale(&t.gpu, &mut t.buf, coef));
                continue;
            }
            par_rows(g.data_mut(), 1, 1, |_, chunk| chunk.iter_mut().for_each(|x| *x *= coef));
        }
    }
    norm
}

// ---- learning-rate schedule

/// OLMoE's learning rate per optimizer step, `step` counted from 0:
/// ```text
/// warmup  0 ≤ s < W:      lr = peak · (w0 + (1 − w0) · s/W)                 w0 = warmup_start_ratio
/// cosine  W ≤ s < S:      lr = lo + (peak − lo) · (1 + cos(π (s − W)/(S − W))) / 2,   lo = min_lr_ratio·peak
/// anneal  S ≤ s < S + A:  lr = lo · (1 − (s − S + 1)/A)                     → 0 at the last step
/// ```
/// Warmup and cosine are OLMo's `CosWithWarmup` (`_linear_warmup` starts at 0.1·peak, not 0;
/// `t_warmup` W, `t_max` S, `alpha_f` 0.1). The anneal is OLMoE's separate annealing run
/// (`linear_with_warmup`, `t_warmup 0`, `alpha_f 0`, trainer state reset, optimizer state
/// kept), which starts from the main run's final rate lo and counts its own steps from 1,
/// so its first step is lo·(1 − 1/A) and its last (step A) is exactly 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub peak_lr: f64,
    /// W: steps of linear warmup.
    pub warmup_steps: u64,
    /// S: the step at which the cosine ends (OLMo's `t_max`), counted from step 0.
    pub cosine_steps: u64,
    /// A: steps of the final linear decay to 0 (0 = no anneal phase).
    pub anneal_steps: u64,
    /// lo / peak at the end of the cosine (OLMo `alpha_f`): 0.1.
    pub min_lr_ratio: f64,
    /// lr / peak at step 0 (OLMo `warmup_min_lr = None → 0.1·lr`): 0.1.
    pub warmup_start_ratio: f64,
}

impl Schedule {
    /// OLMoE's schedule with its ratios (0.1, 0.1), checked.
    pub fn olmoe(peak_lr: f64, warmup_steps: u64, cosine_steps: u64, anneal_steps: u64) -> Result<Schedule> {
        Schedule {
            peak_lr,
            warmup_steps,
            cosine_steps,
            anneal_steps,
            min_lr_ratio: 0.1,
            warmup_start_ratio: 0.1,
        }
        .validated()
    }

    /// The schedule if its fields make sense, else an error naming the field.
    pub fn validated(self) -> Result<Schedule> {
        let bad = |rule: String| Err(Error::invalid("learning-rate schedule", rule));
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return bad(format!("peak_lr must be a positive number, got {}", self.peak_lr));
        }
        if self.warmup_steps > self.cosine_steps {
            return Err(Error::invalid(
                "learning-rate schedule",
                format!(
                    "warmup_steps ({}) is past the end of the cosine phase (cosine_steps = {})",
                    self.warmup_steps, self.cosine_steps
                ),
            )
            .with_hint("cosine_steps counts from step 0 and includes the warmup"));
        }
        if self.total_steps() == 0 {
            return bad("the schedule has no steps (cosine_steps + anneal_steps = 0)".into());
        }
        for (name, r) in
            [("min_lr_ratio", self.min_lr_ratio), ("warmup_start_ratio", self.warmup_start_ratio)]
        {
            if !(0.0..=1.0).contains(&r) {
                return bad(format!("{name} must be in [0, 1], got {r}"));
            }
        }
        Ok(self)
    }

    /// Steps in the whole run: S + A.
    pub fn total_steps(&self) -> u64 {
        self.cosine_steps.saturating_add(self.anneal_steps)
    }

    /// The learning rate of optimizer step `step` (0-based); past the end, the final rate.
    pub fn lr(&self, step: u64) -> f32 {
        let (peak, w, s, a) = (self.peak_lr, self.warmup_steps, self.cosine_steps, self.anneal_steps);
        let lo = self.min_lr_ratio * peak;
        let lr = if step < w {
            let start = self.warmup_start_ratio * peak;
            start + (peak - start) * step as f64 / w as f64
        } else if step < s {
            let progress = (step - w) as f64 / (s - w) as f64;
            lo + (peak - lo) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
        } else if a == 0 {
            lo
        } else {
            let done = (step - s).saturating_add(1).min(a);
            lo * (1.0 - done as f64 / a as f64)
        };
        lr as f32
    }
}
