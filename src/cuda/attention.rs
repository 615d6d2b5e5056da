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
    let [b, t, s, h, hkv, d] = kernel_dims("attention_forward", dims, q, k, v);
    let rows = dims.b * dims.h * dims.t;
    assert_eq!(out.len(), q.len(), "attention_forward: out holds {} values, q {}", out.len(), q.len());
    assert_eq!(lse.len(), rows, "attention_forward: lse holds {} values, {dims:?} needs {rows}", lse.len());
    if rows == 0 {
        return Ok(());
    }
    let scale = score_scale(dims.d);
    let f = gpu.function(Family::Attention, "attention_forward")?;
    // SAFETY: attention_forward(f32 *out, f32 *lse, const f32 *q, *k, *v, u32 b, t, s, h, hkv,
    // d, f32 scale) reads q below B*T*H*D, k and v below B*S*Hkv*D, writes out below B*T*H*D and
    // lse below B*H*T: the lengths asserted above and in kernel_dims.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(out)
            .arg(lse)
            .arg(q)
            .arg(k)
            .arg(v)
            .arg(&b)
            .arg(&t)
            .arg(&s)
            .arg(&h)
            .arg(&hkv)
            .arg(&d)
            .arg(&scale)
            .launch(warp_per_row(rows))
    }
    .map_err(driver("launching attention_forward"))?;
    Ok(())
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
    let [b, t, s, h, hkv, d] = kernel_dims("attention_backward", dims, q, k, v);
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

    let f = gpu.function(Family::Attention, "attention_backward_dq")?;
    // SAFETY: attention_backward_dq(f32 *dq, f32 *delta, const f32 *dout, *lse, *out, *q, *k,
    // *v, u32 b, t, s, h, hkv, d, f32 scale) touches dq, dout, out and q below B*T*H*D, k and v
    // below B*S*Hkv*D, lse and delta below B*H*T: the lengths asserted above, delta made so.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(&mut *dq)
            .arg(&mut delta)
            .arg(dout)
            .arg(lse)
            .arg(out)
            .arg(q)
            .arg(k)
            .arg(v)
            .arg(&b)
            .arg(&t)
            .arg(&s)
            .arg(&h)
            .arg(&hkv)
            .arg(&d)
            .arg(&scale)
            .launch(warp_per_row(rows))
    }
    .map_err(driver("launching attention_backward_dq"))?;

    let f = gpu.function(Family::Attention, "attention_backward_dkdv")?;
    // SAFETY: attention_backward_dkdv(f32 *dk, f32 *dv, const f32 *dout, *lse, *delta, *q, *k,
    // *v, u32 b, t, s, h, hkv, d, f32 scale) touches dk, dv, k and v below B*S*Hkv*D, dout and
    // q below B*T*H*D, lse and delta below B*H*T: the same lengths. It runs after _dq on the
    // same stream, so delta is written.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dk)
            .arg(dv)
            .arg(dout)
            .arg(lse)
            .arg(&delta)
            .arg(q)
            .arg(k)
            .arg(v)
            .arg(&b)
            .arg(&t)
            .arg(&s)
            .arg(&h)
            .arg(&hkv)
            .arg(&d)
            .arg(&scale)
            .launch(warp_per_row(dims.b * dims.hkv * dims.s))
    }
    .map_err(driver("launching attention_backward_dkdv"))?;
    Ok(())
}
