//! Launch wrappers for `kernels/matmul.ptx`: the general f32 matrix product and the f32 →
//! bf16 cast.
//!
//! `matmul_f32` is one strided, batched product, C_z (= or +=) A_z·B_z, with any element
//! strides for A and B and a row-major C; `c_bs = 0` sums every batch entry into one C (a
//! weight shared by the batch). `matmul_forward` / `matmul_backward` build the CPU twin's
//! products (`ops::matmul`, same argument order and layouts) from it: the forward overwrites C,
//! the backward ACCUMULATES (+=) into dA and dB, as the twins do. Each output element sums
//! its products in order with fma.rn (one running sum over the batch for a shared B's dB), so
//! results differ from the CPU's blocked GEMM only by summation order and rounding.

use super::elementwise::len_u32;
use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use crate::ops::matmul::MatmulDims;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Output rows and columns one block computes, and the K step: 16×16 threads.
const TILE: usize = 16;
/// The most blocks `grid.y` / `grid.z` may hold.
const GRID_YZ: usize = 65_535;
/// Threads a block for `to_bf16`.
const BLOCK: u32 = 256;

/// One batched product C_z (= or +=) A_z·B_z, z < batch, with strides in elements:
/// A_z[i, p] = a[z·a_bs + i·a_rs + p·a_cs] (M×K), B_z[p, j] = b[z·b_bs + p·b_rs + j·b_cs]
/// (K×N), C_z[i, j] = c[z·c_bs + i·N + j] (row-major M×N). `c_bs = 0`: every batch entry adds
/// into the same C, summed over z in the kernel.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_bs: usize,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b_bs: usize,
    pub b_rs: usize,
    pub b_cs: usize,
    pub c_bs: usize,
}

/// The largest offset Σ (count − 1)·stride an operand's index can reach, or None when a count
/// is 0 (nothing is read). Panics, naming the operand, if it overflows a usize.
fn last_offset(what: &str, terms: [(usize, usize); 3]) -> Option<usize> {
    if terms.iter().any(|&(count, _)| count == 0) {
        return None;
    }
    let overflow = || panic!("matmul_f32: the offsets of {what} overflow a usize: {terms:?}");
    let mut last = 0usize;
    for (count, stride) in terms {
        last = (count - 1).checked_mul(stride).and_then(|t| last.checked_add(t)).unwrap_or_else(overflow);
    }
    Some(last)
}

/// C (= or +=) A·B over the batch, as `s` describes (twin: the products of
/// `ops::matmul::matmul_forward` / `matmul_backward`; `accumulate` = the backward's +=).
pub fn matmul_f32(
    gpu: &Gpu,
    c: &mut Buf<f32>,
    a: &Buf<f32>,
    b: &Buf<f32>,
    s: &Strided,
    accumulate: bool,
) -> Result<()> {
    let Strided { batch, m, n, k, .. } = *s;
    let sizes = format!("batch = {batch}, M = {m}, N = {n}, K = {k}");
    for (name, v) in [("M", m), ("N", n), ("K", k)] {
        assert!(v < 1 << 31, "matmul_f32: {name} must be below 2^31 ({sizes})");
    }
    // Every index the kernel can form lies inside its buffer.
    if let Some(last) = last_offset("A", [(batch, s.a_bs), (m, s.a_rs), (k, s.a_cs)]) {
        assert!(last < a.len(), "matmul_f32: A reaches element {last}, holds {} ({sizes}, {s:?})", a.len());
    }
    if let Some(last) = last_offset("B", [(batch, s.b_bs), (k, s.b_rs), (n, s.b_cs)]) {
        assert!(last < b.len(), "matmul_f32: B reaches element {last}, holds {} ({sizes}, {s:?})", b.len());
    }
    let c_len = match s.c_bs {
        0 => m.checked_mul(n),
        _ => batch.saturating_sub(1).checked_mul(s.c_bs).and_then(|t| t.checked_add(m * n)),
    };
    let c_len = c_len.unwrap_or_else(|| panic!("matmul_f32: C's size overflows a usize ({sizes}, {s:?})"));
    assert!(c_len <= c.len(), "matmul_f32: C needs {c_len} values, holds {} ({sizes}, {s:?})", c.len());
    assert!(
        s.c_bs == 0 || batch <= 1 || s.c_bs >= m * n,
        "matmul_f32: batch entries of C overlap: c_bs = {} < M·N = {} ({sizes})",
        s.c_bs,
        m * n
    );
    // Nothing to write (c_bs = 0 with batch = 0 still writes C = 0, or leaves C as it is).
    if m == 0 || n == 0 || (batch == 0 && s.c_bs != 0) {
        return Ok(());
    }
    let grid_z = if s.c_bs == 0 { 1 } else { batch };
    let (grid_x, grid_y) = (n.div_ceil(TILE), m.div_ceil(TILE));
    assert!(
        grid_y <= GRID_YZ && grid_z <= GRID_YZ,
        "matmul_f32: grid.y = ceil(M / 16) = {grid_y} and grid.z = {grid_z} must be at most {GRID_YZ} \
         ({sizes})"
    );
    let launch = LaunchConfig {
        grid_dim: (grid_x as u32, grid_y as u32, grid_z as u32),
        block_dim: (TILE as u32, TILE as u32, 1),
        shared_mem_bytes: 0,
    };
    let (m32, n32, k32) = (m as u32, n as u32, k as u32);
    let batch32 = len_u32(batch, "matmul_f32 (batch)");
    let strides = [s.a_bs, s.a_rs, s.a_cs, s.b_bs, s.b_rs, s.b_cs, s.c_bs].map(|v| v as u64);
    let accumulate = u32::from(accumulate);
    let f = gpu.function(Family::Matmul, "matmul_f32")?;
    let mut launch_args = gpu.stream().launch_builder(&f);
    launch_args.arg(c).arg(a).arg(b).arg(&m32).arg(&n32).arg(&k32).arg(&batch32);
    for stride in &strides {
        launch_args.arg(stride);
    }
    launch_args.arg(&accumulate);
    // SAFETY: matmul_f32(f32 *c, const f32 *a, const f32 *b, u32 M, u32 N, u32 K, u32 batch,
    // u64 a_bs, a_rs, a_cs, b_bs, b_rs, b_cs, c_bs, u32 accumulate) reads a and b only at
    // z*bs + row*rs + col*cs with z < batch and row, col below their counts, and touches c
    // only at z*c_bs + i*N + j (z < grid.z) with i < M, j < N: the largest of each was
    // asserted above to lie inside its buffer, and with c_bs != 0 the batch entries of C are
    // disjoint, so no two threads write one element.
    unsafe { launch_args.launch(launch) }.map_err(driver("launching matmul_f32"))?;
    Ok(())
}

// ---- the CPU twin's layouts (ops/matmul.rs)

/// A strided operand: (batch stride, row stride, column stride), in elements.
type View = (usize, usize, usize);

/// The transpose of a view: same storage, row and column strides swapped.
fn t((bs, rs, cs): View) -> View {
    (bs, cs, rs)
}

/// The product C (M×N, batch stride c_bs) = A (M×K) · B (K×N) over `batch` entries.
fn product(batch: usize, (m, n, k): (usize, usize, usize), a: View, b: View, c_bs: usize) -> Strided {
    let ((a_bs, a_rs, a_cs), (b_bs, b_rs, b_cs)) = (a, b);
    Strided { batch, m, n, k, a_bs, a_rs, a_cs, b_bs, b_rs, b_cs, c_bs }
}

/// op(A) as an M×K view: A is (batch, M, K), or (batch, K, M) when trans_a.
fn a_view(d: &MatmulDims) -> View {
    let (rs, cs) = if d.trans_a { (1, d.m) } else { (d.k, 1) };
    (d.m * d.k, rs, cs)
}

/// op(B) as a K×N view: B is (batch or 1, K, N), or (.., N, K) when trans_b; a shared B has
/// batch stride 0.
fn b_view(d: &MatmulDims) -> View {
    let (rs, cs) = if d.trans_b { (1, d.k) } else { (d.n, 1) };
    (if d.b_shared { 0 } else { d.k * d.n }, rs, cs)
}

/// Panics unless every buffer holds exactly the values `dims` gives it.
fn check_dims(op: &str, d: &MatmulDims, lens: &[(&str, usize)]) {
    let b_batch = if d.b_shared { 1 } else { d.batch };
    for &(name, len) in lens {
        let want = match name {
            "a" | "da" => d.batch * d.m * d.k,
            "b" | "db" => b_batch * d.k * d.n,
            _ => d.batch * d.m * d.n,
        };
        assert_eq!(len, want, "{op}: {name} holds {len} values, expected {want} for {d:?}");
    }
}

/// C = op(A)·op(B) per batch entry, C (batch, M, N) overwritten (twin:
/// `ops::matmul::matmul_forward`).
pub fn matmul_forward(
    gpu: &Gpu,
    c: &mut Buf<f32>,
    a: &Buf<f32>,
    b: &Buf<f32>,
    dims: &MatmulDims,
) -> Result<()> {
    check_dims("matmul_forward", dims, &[("c", c.len()), ("a", a.len()), ("b", b.len())]);
    let d = dims;
    let s = product(d.batch, (d.m, d.n, d.k), a_view(d), b_view(d), d.m * d.n);
    matmul_f32(gpu, c, a, b, &s, false)
}

/// With A' = op(A), B' = op(B) (twin: `ops::matmul::matmul_backward`), ACCUMULATING:
///   dA' += dC·B'ᵀ   (stored transposed when trans_a: dA (K, M) += B'·dCᵀ)
///   dB' += A'ᵀ·dC   (stored transposed when trans_b: dB (N, K) += dCᵀ·A')
/// A shared B sums dB over the batch (one launch with c_bs = 0). `None`: not computed.
pub fn matmul_backward(
    gpu: &Gpu,
    da: Option<&mut Buf<f32>>,
    db: Option<&mut Buf<f32>>,
    dc: &Buf<f32>,
    a: &Buf<f32>,
    b: &Buf<f32>,
    dims: &MatmulDims,
) -> Result<()> {
    let mut lens = vec![("dc", dc.len()), ("a", a.len()), ("b", b.len())];
    lens.extend(da.as_ref().map(|da| ("da", da.len())));
    lens.extend(db.as_ref().map(|db| ("db", db.len())));
    check_dims("matmul_backward", dims, &lens);
    let d = dims;
    let (batch, m, k, n) = (d.batch, d.m, d.k, d.n);
    let (a_op, b_op, dc_op) = (a_view(d), b_view(d), (m * n, n, 1));
    if let Some(da) = da {
        if d.trans_a {
            // dA (K, M) += B' (K×N) · dCᵀ (N×M)
            matmul_f32(gpu, da, b, dc, &product(batch, (k, m, n), b_op, t(dc_op), m * k), true)?;
        } else {
            // dA (M, K) += dC (M×N) · B'ᵀ (N×K)
            matmul_f32(gpu, da, dc, b, &product(batch, (m, k, n), dc_op, t(b_op), m * k), true)?;
        }
    }
    if let Some(db) = db {
        let c_bs = if d.b_shared { 0 } else { k * n };
        if d.trans_b {
            // dB (N, K) += dCᵀ (N×M) · A' (M×K)
            matmul_f32(gpu, db, dc, a, &product(batch, (n, k, m), t(dc_op), a_op, c_bs), true)?;
        } else {
            // dB (K, N) += A'ᵀ (K×M) · dC (M×N)
            matmul_f32(gpu, db, a, dc, &product(batch, (k, n, m), t(a_op), dc_op, c_bs), true)?;
        }
    }
    Ok(())
}

// ---- to_bf16

/// dst = bf16 bit patterns of src, round to nearest even; NaN stays NaN (twin:
/// `half::bf16::from_f32(x).to_bits()`).
pub fn to_bf16(gpu: &Gpu, dst: &mut Buf<u16>, src: &Buf<f32>) -> Result<()> {
    assert_eq!(dst.len(), src.len(), "to_bf16: dst holds {} values, src {}", dst.len(), src.len());
    let n = len_u32(src.len(), "to_bf16");
    let launch = grid_for(src.len(), BLOCK);
    let f = gpu.function(Family::Matmul, "to_bf16")?;
    // SAFETY: to_bf16(u16 *dst, const f32 *src, u32 n) touches elements 0..n of dst and src, and
    // both hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(dst).arg(src).arg(&n).launch(launch) }
        .map_err(driver("launching to_bf16"))?;
    Ok(())
}
