//! Launch wrappers for `kernels/attention.ptx`: fused causal attention with grouped-query
//! heads, one warp per query row (forward, dq) or per key row (dk and dv).

use super::elementwise::len_u32;
use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use crate::ops::attention::AttentionDims;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// The kernels' bound on D: a warp holds a row as 8 chunks of 32 lanes.
const MAX_D: usize = 256;

/// One warp (32 threads) per row, 4 warps a block.
fn warp_per_row(rows: usize) -> LaunchConfig {
    grid_for(rows * 32, 128)
}

/// The sizes as the kernels take them (b, t, s, h, hkv, d), after checking the launch
/// assumptions and that q holds B·T·H·D values and k and v B·S·Hkv·D.
fn kernel_dims(kernel: &str, dims: AttentionDims, q: &Buf<f32>, k: &Buf<f32>, v: &Buf<f32>) -> [u32; 6] {
    let AttentionDims { b, t, s, h, hkv, d } = dims;
    assert!((1..=MAX_D).contains(&d), "{kernel}: one warp holds a row of D <= {MAX_D} floats, got D = {d}");
    assert!(hkv > 0 && h % hkv == 0, "{kernel}: {h} query heads are not a multiple of {hkv} kv heads");
    assert!(s >= t, "{kernel}: {t} queries but only {s} keys (S must be >= T)");
    let (q_len, kv_len) = (b * t * h * d, b * s * hkv * d);
    assert_eq!(q.len(), q_len, "{kernel}: q holds {} values, {dims:?} needs {q_len}", q.len());
    assert_eq!(k.len(), kv_len, "{kernel}: k holds {} values, {dims:?} needs {kv_len}", k.len());
    assert_eq!(v.len(), kv_len, "{kernel}: v holds {} values, {dims:?} needs {kv_len}", v.len());
    // Every element index of q, k and v fits the kernels' u32 arithmetic; so do the sizes.
    len_u32(q_len, kernel);
    len_u32(kv_len, kernel);
    [b, t, s, h, hkv, d].map(|n| len_u32(n, kernel))
}

/// 1/√D, as the twin scales its scores (f32).
fn score_scale(d: usize) -> f32 {
    1.0 / (d as f32).sqrt()
}

/// Launches attention kernel `name`, one warp per row of `rows`. Every kernel in
/// attention.ptx takes (f32 *out0, f32 *out1, const f32 *inputs…, u32 b, t, s, h, hkv, d,
/// f32 scale).
fn launch_warp_per_row(
    gpu: &Gpu,
    name: &str,
    rows: usize,
    [out0, out1]: [&mut Buf<f32>; 2],
    inputs: &[&Buf<f32>],
    sizes: &[u32; 6],
    scale: f32,
) -> Result<()> {
    let f = gpu.function(Family::Attention, name)?;
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(out0).arg(out1);
    for &input in inputs {
        launch.arg(input);
    }
    for size in sizes {
        launch.arg(size);
    }
    launch.arg(&scale);
    // SAFETY: the argument list is the kernel's, in order (above); each kernel reads and
    // writes q-shaped buffers below B·T·H·D, k-shaped ones below B·S·Hkv·D and per-row ones
    // (lse, δ) below B·H·T, and the callers assert every buffer's length for those sizes.
    unsafe { launch.launch(warp_per_row(rows)) }.map_err(driver(format!("launching {name}")))?;
    Ok(())
}

/// out (B, T, H, D) and lse (B, H, T) of causal attention of q over k, v (B, S, Hkv, D)
/// (twin: `ops::attention::attention_forward`).
pub fn attention_forward(
    gpu: &Gpu,
    out: &mut Buf<f32>,
    lse: &mut Buf<f32>,
    q: &Buf<f32>,
    k: &Buf<f32>,
    v: &Buf<f32>,
    dims: AttentionDims,
) -> Result<()> {
    let sizes = kernel_dims("attention_forward", dims, q, k, v);
    let rows = dims.b * dims.h * dims.t;
    assert_eq!(out.len(), q.len(), "attention_forward: out holds {} values, q {}", out.len(), q.len());
    assert_eq!(lse.len(), rows, "attention_forward: lse holds {} values, {dims:?} needs {rows}", lse.len());
    if rows == 0 {
        return Ok(());
    }
    // out (B, T, H, D) and lse (B, H, T) from q, k, v
    launch_warp_per_row(gpu, "attention_forward", rows, [out, lse], &[q, k, v], &sizes, score_scale(dims.d))
}

/// dq += ∂L/∂q, dk += ∂L/∂k, dv += ∂L/∂v from dout and the forward's out and lse (twin:
/// `ops::attention::attention_backward`; it accumulates into dq, dk, dv, as the twin does).
/// Two launches: attention_backward_dq (which also writes δ_i = dout_i · out_i into a
/// (B, H, T) scratch buffer), then attention_backward_dkdv, which reads δ.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dq: &mut Buf<f32>,
    dk: &mut Buf<f32>,
    dv: &mut Buf<f32>,
    dout: &Buf<f32>,
    lse: &Buf<f32>,
    out: &Buf<f32>,
    q: &Buf<f32>,
    k: &Buf<f32>,
    v: &Buf<f32>,
    dims: AttentionDims,
) -> Result<()> {
    let sizes = kernel_dims("attention_backward", dims, q, k, v);
    let rows = dims.b * dims.h * dims.t;
    for (name, buf) in [("dq", &*dq), ("dout", dout), ("out", out)] {
        assert_eq!(
            buf.len(),
            q.len(),
            "attention_backward: {name} holds {} values, q {}",
            buf.len(),
            q.len()
        );
    }
    for (name, buf) in [("dk", &*dk), ("dv", &*dv)] {
        assert_eq!(
            buf.len(),
            k.len(),
            "attention_backward: {name} holds {} values, k {}",
            buf.len(),
            k.len()
        );
    }
    assert_eq!(lse.len(), rows, "attention_backward: lse holds {} values, {dims:?} needs {rows}", lse.len());
    if rows == 0 {
        return Ok(()); // no queries: every gradient gets += 0
    }
    let scale = score_scale(dims.d);
    // δ (B, H, T)
    let mut delta = gpu.zeros::<f32>(rows)?;
    // dq += …, and δ_i = dout_i · out_i, one warp per query row
    let inputs = [dout, lse, out, q, k, v];
    launch_warp_per_row(gpu, "attention_backward_dq", rows, [dq, &mut delta], &inputs, &sizes, scale)?;
    // dk, dv += …, one warp per key row of a kv head; after _dq on the same stream, so δ is written
    let (inputs, key_rows) = ([dout, lse, &delta, q, k, v], dims.b * dims.hkv * dims.s);
    launch_warp_per_row(gpu, "attention_backward_dkdv", key_rows, [dk, dv], &inputs, &sizes, scale)
}
