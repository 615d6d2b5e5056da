//! Launch wrappers for `kernels/elementwise.ptx`: one thread per element (a column per thread
//! for add_row_backward's dbias, a warp per row for scale_rows_backward), block 256. Each is
//! named and ordered like its CPU twin in `ops/dense.rs` / `ops/moe.rs`; backward wrappers
//! ACCUMULATE (+=) into their input gradients, as the twins do.

use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use cudarc::driver::PushKernelArg;

/// Threads a block, for every kernel in the family.
const BLOCK: u32 = 256;

/// `n` as the u32 the kernels take, or a panic naming the op.
pub(crate) fn len_u32(n: usize, op: &str) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("{op}: {n} elements is more than a u32 indexes"))
}

/// Panics unless every buffer in `lens` holds `n` values.
fn assert_lens(op: &str, n: usize, lens: &[(&str, usize)]) {
    for &(name, len) in lens {
        assert_eq!(len, n, "{op}: {name} holds {len} values, expected {n}");
    }
}

// ---- purely elementwise: thread i reads and writes element i of each buffer

/// g += d, element by element (twin: `ops::accumulate`).
pub fn accumulate(gpu: &Gpu, g: &mut Buf<f32>, d: &Buf<f32>) -> Result<()> {
    assert_eq!(g.len(), d.len(), "accumulate: {} vs {} values", g.len(), d.len());
    let n = len_u32(g.len(), "accumulate");
    let launch = grid_for(g.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "accumulate")?;
    // SAFETY: accumulate(f32 *g, const f32 *d, u32 n) touches elements 0..n of g and d, and
    // both hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(g).arg(d).arg(&n).launch(launch) }
        .map_err(driver("launching accumulate"))?;
    Ok(())
}

/// y_i = value (no CPU twin: `vec![value; n]`).
pub fn fill(gpu: &Gpu, y: &mut Buf<f32>, value: f32) -> Result<()> {
    let n = len_u32(y.len(), "fill");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "fill")?;
    // SAFETY: fill(f32 *y, f32 value, u32 n) writes elements 0..n of y, which holds n values.
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(&value).arg(&n).launch(launch) }
        .map_err(driver("launching fill"))?;
    Ok(())
}

/// y = a + b (twin: `ops::dense::add_forward`).
pub fn add_forward(gpu: &Gpu, y: &mut Buf<f32>, a: &Buf<f32>, b: &Buf<f32>) -> Result<()> {
    assert_lens("add_forward", y.len(), &[("a", a.len()), ("b", b.len())]);
    let n = len_u32(y.len(), "add_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "add_forward")?;
    // SAFETY: add_forward(f32 *y, const f32 *a, const f32 *b, u32 n) touches elements 0..n of
    // each, and all three hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(a).arg(b).arg(&n).launch(launch) }
        .map_err(driver("launching add_forward"))?;
    Ok(())
}

/// y = a ⊙ b (twin: `ops::dense::mul_forward`).
pub fn mul_forward(gpu: &Gpu, y: &mut Buf<f32>, a: &Buf<f32>, b: &Buf<f32>) -> Result<()> {
    assert_lens("mul_forward", y.len(), &[("a", a.len()), ("b", b.len())]);
    let n = len_u32(y.len(), "mul_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "mul_forward")?;
    // SAFETY: mul_forward(f32 *y, const f32 *a, const f32 *b, u32 n) touches elements 0..n of
    // each, and all three hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(a).arg(b).arg(&n).launch(launch) }
        .map_err(driver("launching mul_forward"))?;
    Ok(())
}

/// da += dy ⊙ b;  db += dy ⊙ a (twin: `ops::dense::mul_backward`).
pub fn mul_backward(
    gpu: &Gpu,
    da: &mut Buf<f32>,
    db: &mut Buf<f32>,
    dy: &Buf<f32>,
    a: &Buf<f32>,
    b: &Buf<f32>,
) -> Result<()> {
    let lens = [("db", db.len()), ("dy", dy.len()), ("a", a.len()), ("b", b.len())];
    assert_lens("mul_backward", da.len(), &lens);
    let n = len_u32(da.len(), "mul_backward");
    let launch = grid_for(da.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "mul_backward")?;
    // SAFETY: mul_backward(f32 *da, f32 *db, const f32 *dy, const f32 *a, const f32 *b, u32 n)
    // touches elements 0..n of each, and all five hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(da).arg(db).arg(dy).arg(a).arg(b).arg(&n).launch(launch) }
        .map_err(driver("launching mul_backward"))?;
    Ok(())
}

/// y = s · x (twin: `ops::dense::scale_forward`).
pub fn scale_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, s: f32) -> Result<()> {
    assert_lens("scale_forward", y.len(), &[("x", x.len())]);
    let n = len_u32(y.len(), "scale_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "scale_forward")?;
    // SAFETY: scale_forward(f32 *y, const f32 *x, f32 s, u32 n) touches elements 0..n of y and
    // x, and both hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(x).arg(&s).arg(&n).launch(launch) }
        .map_err(driver("launching scale_forward"))?;
    Ok(())
}

/// dx += s · dy (twin: `ops::dense::scale_backward`).
pub fn scale_backward(gpu: &Gpu, dx: &mut Buf<f32>, dy: &Buf<f32>, s: f32) -> Result<()> {
    assert_lens("scale_backward", dx.len(), &[("dy", dy.len())]);
    let n = len_u32(dx.len(), "scale_backward");
    let launch = grid_for(dx.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "scale_backward")?;
    // SAFETY: scale_backward(f32 *dx, const f32 *dy, f32 s, u32 n) touches elements 0..n of dx
    // and dy, and both hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(dx).arg(dy).arg(&s).arg(&n).launch(launch) }
        .map_err(driver("launching scale_backward"))?;
    Ok(())
}

/// y = x · σ(x) (twin: `ops::dense::silu_forward`).
pub fn silu_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>) -> Result<()> {
    assert_lens("silu_forward", y.len(), &[("x", x.len())]);
    let n = len_u32(y.len(), "silu_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "silu_forward")?;
    // SAFETY: silu_forward(f32 *y, const f32 *x, u32 n) touches elements 0..n of y and x, and
    // both hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(x).arg(&n).launch(launch) }
        .map_err(driver("launching silu_forward"))?;
    Ok(())
}

/// dx += dy · σ(x) · (1 + x · (1 − σ(x))) (twin: `ops::dense::silu_backward`).
pub fn silu_backward(gpu: &Gpu, dx: &mut Buf<f32>, dy: &Buf<f32>, x: &Buf<f32>) -> Result<()> {
    assert_lens("silu_backward", dx.len(), &[("dy", dy.len()), ("x", x.len())]);
    let n = len_u32(dx.len(), "silu_backward");
    let launch = grid_for(dx.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "silu_backward")?;
    // SAFETY: silu_backward(f32 *dx, const f32 *dy, const f32 *x, u32 n) touches elements 0..n
    // of each, and all three hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(dx).arg(dy).arg(x).arg(&n).launch(launch) }
        .map_err(driver("launching silu_backward"))?;
    Ok(())
}

/// y = silu(gate) ⊙ up (twin: `ops::dense::swiglu_forward`).
pub fn swiglu_forward(gpu: &Gpu, y: &mut Buf<f32>, gate: &Buf<f32>, up: &Buf<f32>) -> Result<()> {
    assert_lens("swiglu_forward", y.len(), &[("gate", gate.len()), ("up", up.len())]);
    let n = len_u32(y.len(), "swiglu_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "swiglu_forward")?;
    // SAFETY: swiglu_forward(f32 *y, const f32 *gate, const f32 *up, u32 n) touches elements
    // 0..n of each, and all three hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(gate).arg(up).arg(&n).launch(launch) }
        .map_err(driver("launching swiglu_forward"))?;
    Ok(())
}

/// dgate += dy ⊙ up ⊙ silu'(gate);  dup += dy ⊙ silu(gate) (twin: `ops::dense::swiglu_backward`).
pub fn swiglu_backward(
    gpu: &Gpu,
    dgate: &mut Buf<f32>,
    dup: &mut Buf<f32>,
    dy: &Buf<f32>,
    gate: &Buf<f32>,
    up: &Buf<f32>,
) -> Result<()> {
    let lens = [("dup", dup.len()), ("dy", dy.len()), ("gate", gate.len()), ("up", up.len())];
    assert_lens("swiglu_backward", dgate.len(), &lens);
    let n = len_u32(dgate.len(), "swiglu_backward");
    let launch = grid_for(dgate.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "swiglu_backward")?;
    // SAFETY: swiglu_backward(f32 *dgate, f32 *dup, const f32 *dy, const f32 *gate,
    // const f32 *up, u32 n) touches elements 0..n of each, and all five hold n values
    // (asserted above).
    unsafe {
        gpu.stream().launch_builder(&f).arg(dgate).arg(dup).arg(dy).arg(gate).arg(up).arg(&n).launch(launch)
    }
    .map_err(driver("launching swiglu_backward"))?;
    Ok(())
}

/// y = min(max(x, lo), hi) (twin: `ops::dense::clamp_forward`).
pub fn clamp_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, lo: f32, hi: f32) -> Result<()> {
    assert!(lo <= hi, "clamp_forward: lo {lo} > hi {hi}");
    assert_lens("clamp_forward", y.len(), &[("x", x.len())]);
    let n = len_u32(y.len(), "clamp_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "clamp_forward")?;
    // SAFETY: clamp_forward(f32 *y, const f32 *x, f32 lo, f32 hi, u32 n) touches elements 0..n
    // of y and x, and both hold n values (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(x).arg(&lo).arg(&hi).arg(&n).launch(launch) }
        .map_err(driver("launching clamp_forward"))?;
    Ok(())
}

/// dx += dy where lo ≤ x ≤ hi, else 0 (twin: `ops::dense::clamp_backward`).
pub fn clamp_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<f32>,
    x: &Buf<f32>,
    lo: f32,
    hi: f32,
) -> Result<()> {
    assert!(lo <= hi, "clamp_backward: lo {lo} > hi {hi}");
    assert_lens("clamp_backward", dx.len(), &[("dy", dy.len()), ("x", x.len())]);
    let n = len_u32(dx.len(), "clamp_backward");
    let launch = grid_for(dx.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "clamp_backward")?;
    // SAFETY: clamp_backward(f32 *dx, const f32 *dy, const f32 *x, f32 lo, f32 hi, u32 n)
    // touches elements 0..n of dx, dy and x, and all three hold n values (asserted above).
    unsafe {
        gpu.stream().launch_builder(&f).arg(dx).arg(dy).arg(x).arg(&lo).arg(&hi).arg(&n).launch(launch)
    }
    .map_err(driver("launching clamp_backward"))?;
    Ok(())
}

// ---- row-wise: (N, C) matrices with one value per column (bias) or per row (w)

/// y_n = x_n + bias for each row of x, y: (N, C), bias: (C) (twin: `ops::dense::add_row_forward`).
pub fn add_row_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, bias: &Buf<f32>) -> Result<()> {
    let c = bias.len();
    assert!(c > 0, "add_row_forward: bias is empty");
    assert_lens("add_row_forward", y.len(), &[("x", x.len())]);
    assert!(y.len().is_multiple_of(c), "add_row_forward: {} values are not whole rows of C = {c}", y.len());
    let n = len_u32(y.len(), "add_row_forward");
    let c_u32 = len_u32(c, "add_row_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "add_row_forward")?;
    // SAFETY: add_row_forward(f32 *y, const f32 *x, const f32 *bias, u32 n, u32 c) touches
    // elements 0..n of y and x (both hold n values) and bias[i mod c] (bias holds c > 0).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(x).arg(bias).arg(&n).arg(&c_u32).launch(launch) }
        .map_err(driver("launching add_row_forward"))?;
    Ok(())
}

/// dx += dy;  dbias += Σ_n dy_n, with dx, dy: (N, C), dbias: (C)
/// (twin: `ops::dense::add_row_backward`). dbias_c is summed by one thread in row order.
pub fn add_row_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dbias: &mut Buf<f32>,
    dy: &Buf<f32>,
    c: usize,
) -> Result<()> {
    assert!(c > 0, "add_row_backward: C = 0");
    assert_lens("add_row_backward", dy.len(), &[("dx", dx.len())]);
    assert_lens("add_row_backward", c, &[("dbias", dbias.len())]);
    assert!(
        dy.len().is_multiple_of(c),
        "add_row_backward: {} values are not whole rows of C = {c}",
        dy.len()
    );
    len_u32(dy.len(), "add_row_backward");
    let rows = len_u32(dy.len() / c, "add_row_backward");
    let c_u32 = len_u32(c, "add_row_backward");
    // thread i < N*C adds dy_i to dx_i; thread i < C sums column i
    let launch = grid_for(dy.len().max(c), BLOCK);
    let f = gpu.function(Family::Elementwise, "add_row_backward")?;
    // SAFETY: add_row_backward(f32 *dx, f32 *dbias, const f32 *dy, u32 rows, u32 c) touches
    // elements 0..rows*c of dx and dy (both hold rows*c values, rows*c < 2^32) and 0..c of
    // dbias (it holds c values), all asserted above.
    unsafe {
        gpu.stream().launch_builder(&f).arg(dx).arg(dbias).arg(dy).arg(&rows).arg(&c_u32).launch(launch)
    }
    .map_err(driver("launching add_row_backward"))?;
    Ok(())
}

/// y_m = w_m · x_m for each row of x, y: (M, C), w: (M) (twin: `ops::moe::scale_rows_forward`).
pub fn scale_rows_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, w: &Buf<f32>, c: usize) -> Result<()> {
    assert!(c > 0, "scale_rows_forward: C = 0");
    assert_lens("scale_rows_forward", y.len(), &[("x", x.len())]);
    assert_lens("scale_rows_forward", w.len() * c, &[("x (M*C, with M = w's length)", x.len())]);
    let n = len_u32(y.len(), "scale_rows_forward");
    let c_u32 = len_u32(c, "scale_rows_forward");
    let launch = grid_for(y.len(), BLOCK);
    let f = gpu.function(Family::Elementwise, "scale_rows_forward")?;
    // SAFETY: scale_rows_forward(f32 *y, const f32 *x, const f32 *w, u32 n, u32 c) touches
    // elements 0..n of y and x (both hold n values) and w[i / c] < n / c = w.len() (asserted).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(x).arg(w).arg(&n).arg(&c_u32).launch(launch) }
        .map_err(driver("launching scale_rows_forward"))?;
    Ok(())
}

/// dx_m += w_m · dy_m;  dw_m += Σ_c dy_mc · x_mc, with dx, dy, x: (M, C), dw, w: (M)
/// (twin: `ops::moe::scale_rows_backward`). One warp per row, 8 rows a block; dw_m is a
/// fixed-order warp sum, so it differs from the twin's in-order sum by rounding only.
pub fn scale_rows_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dw: &mut Buf<f32>,
    dy: &Buf<f32>,
    x: &Buf<f32>,
    w: &Buf<f32>,
    c: usize,
) -> Result<()> {
    assert!(c > 0, "scale_rows_backward: C = 0");
    let m = w.len();
    assert_lens("scale_rows_backward", m * c, &[("dx", dx.len()), ("dy", dy.len()), ("x", x.len())]);
    assert_lens("scale_rows_backward", m, &[("dw", dw.len())]);
    len_u32(m * c, "scale_rows_backward");
    let rows = len_u32(m, "scale_rows_backward");
    let c_u32 = len_u32(c, "scale_rows_backward");
    // 32 threads (a warp) per row: grid = ceil(32 * M / 256) = ceil(M / 8) blocks
    let launch = grid_for(m * 32, BLOCK);
    let f = gpu.function(Family::Elementwise, "scale_rows_backward")?;
    // SAFETY: scale_rows_backward(f32 *dx, f32 *dw, const f32 *dy, const f32 *x, const f32 *w,
    // u32 rows, u32 c) touches elements 0..rows*c of dx, dy and x (each holds m*c values) and
    // 0..rows of dw and w (each holds m), all asserted above; block = 256 is whole warps.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dx)
            .arg(dw)
            .arg(dy)
            .arg(x)
            .arg(w)
            .arg(&rows)
            .arg(&c_u32)
            .launch(launch)
    }
    .map_err(driver("launching scale_rows_backward"))?;
    Ok(())
}

/// dx[n, indices[n, j]] += dvalues[n, j], with dx: (N, C), dvalues, indices: (N, K), the
/// indices of a row distinct and < C, as `topk_forward` writes them (twin:
/// `ops::moe::topk_backward`). An index ≥ C is skipped on the GPU (the twin panics).
pub fn topk_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dvalues: &Buf<f32>,
    indices: &Buf<u32>,
    c: usize,
    k: usize,
) -> Result<()> {
    assert!((1..=c).contains(&k), "topk_backward: k = {k} must be in 1..={c}");
    assert!(
        dx.len().is_multiple_of(c),
        "topk_backward: dx holds {} values, not whole rows of C = {c}",
        dx.len()
    );
    let rows = dx.len() / c;
    assert_lens("topk_backward", rows * k, &[("dvalues", dvalues.len()), ("indices", indices.len())]);
    len_u32(dx.len(), "topk_backward");
    len_u32(rows * k, "topk_backward");
    let (rows_u32, c_u32, k_u32) =
        (len_u32(rows, "topk_backward"), len_u32(c, "topk_backward"), len_u32(k, "topk_backward"));
    let launch = grid_for(rows * k, BLOCK);
    let f = gpu.function(Family::Elementwise, "topk_backward")?;
    // SAFETY: topk_backward(f32 *dx, const f32 *dvalues, const u32 *indices, u32 rows, u32 c,
    // u32 k) reads elements 0..rows*k of dvalues and indices (each holds rows*k values) and
    // writes dx[n*c + idx] only for n < rows and idx < c (dx holds rows*c), all asserted above.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dx)
            .arg(dvalues)
            .arg(indices)
            .arg(&rows_u32)
            .arg(&c_u32)
            .arg(&k_u32)
            .launch(launch)
    }
    .map_err(driver("launching topk_backward"))?;
    Ok(())
}
