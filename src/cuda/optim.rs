//! Launch wrappers for `kernels/optim.ptx`: the AdamW step, the sum of squares behind the
//! global gradient norm, and the scaling that clips (twins: `optim::adamw_update` and the GPU
//! branches of `optim::global_norm` / `optim::clip_grad_norm`, which call these).
//!
//! All three give the CPU's bits: the AdamW kernel does the same IEEE operations in the same
//! order (no fused multiply-adds), the norm sums the same chunks in the same order in f64
//! (each chunk on one GPU thread, the chunk sums on the host), and scaling is one multiply.

use super::elementwise::len_u32;
use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use crate::optim::{AdamWScalars, NORM_CHUNK};
use cudarc::driver::PushKernelArg;

/// One AdamW step on p with its moments m, v and gradient g, in place, with the step's
/// scalars (`AdamWScalars::new`; twin: `optim::adamw_update`).
pub fn adamw_update(
    gpu: &Gpu,
    p: &mut Buf<f32>,
    m: &mut Buf<f32>,
    v: &mut Buf<f32>,
    g: &Buf<f32>,
    s: &AdamWScalars,
) -> Result<()> {
    let len = p.len();
    assert!(
        m.len() == len && v.len() == len && g.len() == len,
        "adamw_update: p [{len}], m [{}], v [{}] and g [{}] differ in length",
        m.len(),
        v.len(),
        g.len()
    );
    if len == 0 {
        return Ok(());
    }
    let n = len_u32(len, "adamw_update");
    let f = gpu.function(Family::Optim, "adamw_update")?;
    // SAFETY: adamw_update(f32 *p, f32 *m, f32 *v, const f32 *g, u32 n, then seven f32:
    // decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt,
    // eps) touches elements 0..n of p, m, v and g, and all four hold n values (asserted).
    unsafe {
        (gpu.stream().launch_builder(&f))
            .arg(p)
            .arg(m)
            .arg(v)
            .arg(g)
            .arg(&n)
            .arg(&s.decay)
            .arg(&s.one_minus_beta1)
            .arg(&s.beta2)
            .arg(&s.one_minus_beta2)
            .arg(&s.neg_step_size)
            .arg(&s.bias_correction2_sqrt)
            .arg(&s.eps)
            .launch(grid_for(len, 256))
    }
    .map_err(driver("launching adamw_update"))?;
    Ok(())
}

/// Σ_i x_i², in f64: chunks of `NORM_CHUNK` elements summed in order on the GPU, then the
/// chunk sums added in order here (the inner sum of `optim::global_norm`, the same bits).
pub fn sum_squares(gpu: &Gpu, x: &Buf<f32>) -> Result<f64> {
    if x.is_empty() {
        return Ok(0.0);
    }
    let n = len_u32(x.len(), "sum_squares");
    let chunks = x.len().div_ceil(NORM_CHUNK);
    let chunk = len_u32(NORM_CHUNK, "sum_squares");
    let mut partials = gpu.zeros::<f64>(chunks)?;
    let f = gpu.function(Family::Optim, "sum_squares")?;
    // SAFETY: sum_squares(f64 *partials, const f32 *x, u32 n, u32 chunk): thread j < ceil(n /
    // chunk) reads x[j*chunk .. min((j+1)*chunk, n)] (x holds n) and writes partials[j]
    // (partials hold ceil(n / chunk)).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(&mut partials)
            .arg(x)
            .arg(&n)
            .arg(&chunk)
            .launch(grid_for(chunks, 256))
    }
    .map_err(driver("launching sum_squares"))?;
    Ok(gpu.download(&partials)?.into_iter().sum::<f64>())
}

/// x_i *= s, in place.
pub fn scale(gpu: &Gpu, x: &mut Buf<f32>, s: f32) -> Result<()> {
    if x.is_empty() {
        return Ok(());
    }
    let n = len_u32(x.len(), "scale");
    let launch = grid_for(x.len(), 256);
    let f = gpu.function(Family::Optim, "scale")?;
    // SAFETY: scale(f32 *x, u32 n, f32 s) touches elements 0..n of x, which holds n values.
    unsafe { gpu.stream().launch_builder(&f).arg(x).arg(&n).arg(&s).launch(launch) }
        .map_err(driver("launching scale"))?;
    Ok(())
}
