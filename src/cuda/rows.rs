//! Launch wrappers for `kernels/rows.ptx`: the row-wise ops, one row of C values per block of
//! 256 threads (row sums by warp shuffles, then the 8 warp sums in order from shared memory:
//! deterministic), and the whole-tensor sum / mean in two passes (per-block f64 partials, then
//! one block adding them in order). Backward wrappers accumulate (+=) into the input
//! gradients, as their CPU twins do.

use super::elementwise::len_u32;
use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Threads per block for every kernel in rows.ptx (its block reductions assume 8 warps).
const BLOCK: u32 = 256;

/// The most blocks `sum_all_partials` runs (each then strides over the tensor).
const MAX_PARTIALS: usize = 1024;

/// (N, C) as u32 for a buffer of `len` values in rows of `c`. Panics, naming `op`, unless
/// C > 0, `len` is whole rows, and `len` < 2^31 (the kernels' u32 column index, stepped by
/// 256, then never wraps, and N fits the grid).
fn rows_cols(op: &str, len: usize, c: usize) -> (u32, u32) {
    assert!(c > 0, "{op}: rows of C = 0 values");
    assert_eq!(len % c, 0, "{op}: {len} values are not whole rows of C = {c}");
    assert!(len < 1 << 31, "{op}: {len} values; the kernels need fewer than 2^31");
    (len_u32(len / c, op), len_u32(c, op))
}

/// grid = N blocks of 256 threads: block n is row n.
fn one_block_per_row(rows: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Launches kernel `name` of the form (f32 *out, const f32 *inputs…, u32 C) with one block per
/// row (softmax, log-sum-exp, renormalise, forward and backward). Nothing to do for N = 0.
fn launch_per_row(
    gpu: &Gpu,
    name: &str,
    rows: u32,
    c: u32,
    out: &mut Buf<f32>,
    inputs: &[&Buf<f32>],
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function(Family::Rows, name)?;
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(out);
    for &input in inputs {
        launch.arg(input);
    }
    launch.arg(&c);
    // SAFETY: each of these kernels takes (f32 *out, const f32 *inputs…, u32 C) in this order,
    // and block n touches only row n of each buffer ([n·C, (n+1)·C) of an (N, C) one, element
    // n of an (N) one); the callers assert every buffer's length for N rows of C.
    unsafe { launch.launch(one_block_per_row(rows)) }.map_err(driver(format!("launching {name}")))?;
    Ok(())
}

// ---- RMSNorm

/// RMSNorm forward (twin: `ops::dense::rmsnorm_forward`).  x, y: (N, C)  w: (C)  rstd: (N)
/// r = 1/sqrt(Σ_c x_c²/C + eps);   y_c = w_c · (r · x_c)
pub fn rmsnorm_forward(
    gpu: &Gpu,
    y: &mut Buf<f32>,
    rstd: &mut Buf<f32>,
    x: &Buf<f32>,
    w: &Buf<f32>,
    c: usize,
    eps: f32,
) -> Result<()> {
    let (rows, c_u32) = rows_cols("rmsnorm_forward", x.len(), c);
    assert_eq!(y.len(), x.len(), "rmsnorm_forward: y has {} values, x {}", y.len(), x.len());
    assert_eq!(
        rstd.len(),
        rows as usize,
        "rmsnorm_forward: rstd has {} values for N = {rows} rows",
        rstd.len()
    );
    assert_eq!(w.len(), c, "rmsnorm_forward: w has {} values for C = {c}", w.len());
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function(Family::Rows, "rmsnorm_forward")?;
    // SAFETY: rmsnorm_forward(f32 *y, f32 *rstd, const f32 *x, const f32 *w, u32 C, f32 eps),
    // N blocks: block n touches y and x at [n·C, (n+1)·C), w at [0, C) and rstd[n]; y and x
    // hold N·C values, w C, rstd N (asserted above).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(y)
            .arg(rstd)
            .arg(x)
            .arg(w)
            .arg(&c_u32)
            .arg(&eps)
            .launch(one_block_per_row(rows))
    }
    .map_err(driver("launching rmsnorm_forward"))?;
    Ok(())
}

/// RMSNorm backward (twin: `ops::dense::rmsnorm_backward`); accumulates into dx and dw.
/// dx: (N, C) += r · (g_c − x_c · r² · Σ_j g_j x_j / C),  g_c = w_c · dy_c   (block per row)
/// dw: (C) += Σ_rows dy_c · r · x_c        (one thread per column, rows in order: deterministic)
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dw: &mut Buf<f32>,
    dy: &Buf<f32>,
    rstd: &Buf<f32>,
    x: &Buf<f32>,
    w: &Buf<f32>,
    c: usize,
) -> Result<()> {
    let (rows, c_u32) = rows_cols("rmsnorm_backward", x.len(), c);
    assert_eq!(dx.len(), x.len(), "rmsnorm_backward: dx has {} values, x {}", dx.len(), x.len());
    assert_eq!(dy.len(), x.len(), "rmsnorm_backward: dy has {} values, x {}", dy.len(), x.len());
    assert_eq!(
        rstd.len(),
        rows as usize,
        "rmsnorm_backward: rstd has {} values for N = {rows} rows",
        rstd.len()
    );
    assert_eq!(w.len(), c, "rmsnorm_backward: w has {} values for C = {c}", w.len());
    assert_eq!(dw.len(), c, "rmsnorm_backward: dw has {} values for C = {c}", dw.len());
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function(Family::Rows, "rmsnorm_backward_dx")?;
    // SAFETY: rmsnorm_backward_dx(f32 *dx, const f32 *dy, const f32 *rstd, const f32 *x,
    // const f32 *w, u32 C), N blocks: block n touches dx, dy, x at [n·C, (n+1)·C), w at
    // [0, C) and rstd[n]; dx, dy, x hold N·C values, w C, rstd N (asserted above).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dx)
            .arg(dy)
            .arg(rstd)
            .arg(x)
            .arg(w)
            .arg(&c_u32)
            .launch(one_block_per_row(rows))
    }
    .map_err(driver("launching rmsnorm_backward_dx"))?;
    let f = gpu.function(Family::Rows, "rmsnorm_backward_dw")?;
    // SAFETY: rmsnorm_backward_dw(f32 *dw, const f32 *dy, const f32 *rstd, const f32 *x,
    // u32 C, u32 N), one thread per column c < C: touches dw[c], dy and x at n·C + c and
    // rstd[n] for n < N; dw holds C values, dy and x N·C, rstd N (asserted above).
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dw)
            .arg(dy)
            .arg(rstd)
            .arg(x)
            .arg(&c_u32)
            .arg(&rows)
            .launch(grid_for(c, BLOCK))
    }
    .map_err(driver("launching rmsnorm_backward_dw"))?;
    Ok(())
}

// ---- softmax

/// Softmax over each row (twin: `ops::dense::softmax_forward`).  x, y: (N, C)
/// y_c = exp(x_c − max x) / Σ_j exp(x_j − max x)
pub fn softmax_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, c: usize) -> Result<()> {
    let (rows, c_u32) = rows_cols("softmax_forward", x.len(), c);
    assert_eq!(y.len(), x.len(), "softmax_forward: y has {} values, x {}", y.len(), x.len());
    launch_per_row(gpu, "softmax_forward", rows, c_u32, y, &[x])
}

/// Softmax backward (twin: `ops::dense::softmax_backward`); accumulates into dx.
/// dx, dy, y: (N, C)    dx_c += y_c · (dy_c − Σ_j dy_j y_j)
pub fn softmax_backward(gpu: &Gpu, dx: &mut Buf<f32>, dy: &Buf<f32>, y: &Buf<f32>, c: usize) -> Result<()> {
    let (rows, c_u32) = rows_cols("softmax_backward", y.len(), c);
    assert_eq!(dx.len(), y.len(), "softmax_backward: dx has {} values, y {}", dx.len(), y.len());
    assert_eq!(dy.len(), y.len(), "softmax_backward: dy has {} values, y {}", dy.len(), y.len());
    launch_per_row(gpu, "softmax_backward", rows, c_u32, dx, &[dy, y])
}

// ---- log-sum-exp over each row

/// Log-sum-exp of each row (twin: `ops::dense::logsumexp_rows_forward`).  x: (N, C)  y: (N)
/// y = max x + ln Σ_c exp(x_c − max x)
pub fn logsumexp_rows_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, c: usize) -> Result<()> {
    let (rows, c_u32) = rows_cols("logsumexp_rows_forward", x.len(), c);
    assert_eq!(
        y.len(),
        rows as usize,
        "logsumexp_rows_forward: y has {} values for N = {rows} rows",
        y.len()
    );
    launch_per_row(gpu, "logsumexp_rows_forward", rows, c_u32, y, &[x])
}

/// Log-sum-exp backward (twin: `ops::dense::logsumexp_rows_backward`); accumulates into dx.
/// dx, x: (N, C)  dy, y: (N)    dx_c += dy · exp(x_c − y)
pub fn logsumexp_rows_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<f32>,
    y: &Buf<f32>,
    x: &Buf<f32>,
    c: usize,
) -> Result<()> {
    let (rows, c_u32) = rows_cols("logsumexp_rows_backward", x.len(), c);
    assert_eq!(dx.len(), x.len(), "logsumexp_rows_backward: dx has {} values, x {}", dx.len(), x.len());
    assert_eq!(
        dy.len(),
        rows as usize,
        "logsumexp_rows_backward: dy has {} values for N = {rows} rows",
        dy.len()
    );
    assert_eq!(
        y.len(),
        rows as usize,
        "logsumexp_rows_backward: y has {} values for N = {rows} rows",
        y.len()
    );
    launch_per_row(gpu, "logsumexp_rows_backward", rows, c_u32, dx, &[dy, y, x])
}

// ---- renormalise rows to sum to one

/// Renormalise each row (twin: `ops::moe::renormalize_rows_forward`).  x, y: (N, C)
/// S = Σ_j x_j;   y_c = x_c / S
pub fn renormalize_rows_forward(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>, c: usize) -> Result<()> {
    let (rows, c_u32) = rows_cols("renormalize_rows_forward", x.len(), c);
    assert_eq!(y.len(), x.len(), "renormalize_rows_forward: y has {} values, x {}", y.len(), x.len());
    launch_per_row(gpu, "renormalize_rows_forward", rows, c_u32, y, &[x])
}

/// Renormalise backward (twin: `ops::moe::renormalize_rows_backward`); accumulates into dx.
/// dx, dy, y, x: (N, C)    dx_c += (dy_c − Σ_j dy_j y_j) / S,   S = Σ_j x_j
pub fn renormalize_rows_backward(
    gpu: &Gpu,
    dx: &mut Buf<f32>,
    dy: &Buf<f32>,
    y: &Buf<f32>,
    x: &Buf<f32>,
    c: usize,
) -> Result<()> {
    let (rows, c_u32) = rows_cols("renormalize_rows_backward", x.len(), c);
    for (name, len) in [("dx", dx.len()), ("dy", dy.len()), ("y", y.len())] {
        assert_eq!(len, x.len(), "renormalize_rows_backward: {name} has {len} values, x {}", x.len());
    }
    launch_per_row(gpu, "renormalize_rows_backward", rows, c_u32, dx, &[dy, y, x])
}

// ---- sum and mean of every element

/// y[0] = Σ x (twin: `ops::dense::sum_forward`: in f64, then rounded to f32).  x: any  y: (1)
pub fn sum_all(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>) -> Result<()> {
    reduce_all(gpu, "sum_all", y, x, 1.0)
}

/// y[0] = Σ x / numel (twin: `ops::dense::mean_forward`; numel 0 counts as 1).  x: any  y: (1)
pub fn mean_all(gpu: &Gpu, y: &mut Buf<f32>, x: &Buf<f32>) -> Result<()> {
    reduce_all(gpu, "mean_all", y, x, x.len().max(1) as f64)
}

/// y[0] = f32((Σ x, in f64) / div): per-block partial sums (at most 1024 blocks, a number
/// fixed by n), then one block adding the partials in a fixed order. Deterministic.
fn reduce_all(gpu: &Gpu, op: &str, y: &mut Buf<f32>, x: &Buf<f32>, div: f64) -> Result<()> {
    assert_eq!(y.len(), 1, "{op}: y must hold 1 value, has {}", y.len());
    let n = len_u32(x.len(), op);
    assert!(n < 1 << 31, "{op}: {n} values; the kernels need fewer than 2^31");
    let p = x.len().div_ceil(BLOCK as usize).clamp(1, MAX_PARTIALS);
    let p_u32 = p as u32;
    let mut partials = gpu.zeros::<f64>(p)?;
    let f = gpu.function(Family::Rows, "sum_all_partials")?;
    let launch = LaunchConfig { grid_dim: (p_u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: sum_all_partials(f64 *partials, const f32 *x, u32 n), P blocks: block b reads x
    // below n and writes partials[b]; x holds n values, partials P (allocated above).
    unsafe { gpu.stream().launch_builder(&f).arg(&mut partials).arg(x).arg(&n).launch(launch) }
        .map_err(driver("launching sum_all_partials"))?;
    let f = gpu.function(Family::Rows, "sum_all_finish")?;
    let launch = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: sum_all_finish(f32 *y, const f64 *partials, u32 P, f64 div), one block: reads
    // partials below P and writes y[0]; partials holds P values, y 1 (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(y).arg(&partials).arg(&p_u32).arg(&div).launch(launch) }
        .map_err(driver("launching sum_all_finish"))?;
    Ok(())
}

/// Backward of [`sum_all`] (twin: the `Sum` arm of `autograd.rs`): dx += dy[0], accumulating.
/// dx: any  dy: (1)
pub fn sum_all_backward(gpu: &Gpu, dx: &mut Buf<f32>, dy: &Buf<f32>) -> Result<()> {
    add_scalar(gpu, "sum_all_backward", dx, dy, 1.0)
}

/// Backward of [`mean_all`] (twin: the `Mean` arm of `autograd.rs`): dx += dy[0] / numel
/// (numel 0 counts as 1), accumulating.  dx: any  dy: (1)
pub fn mean_all_backward(gpu: &Gpu, dx: &mut Buf<f32>, dy: &Buf<f32>) -> Result<()> {
    let div = dx.len().max(1) as f32;
    add_scalar(gpu, "mean_all_backward", dx, dy, div)
}

/// dx_i += dy[0] / div, one thread per element (kernel `sum_all_backward`).
fn add_scalar(gpu: &Gpu, op: &str, dx: &mut Buf<f32>, dy: &Buf<f32>, div: f32) -> Result<()> {
    assert_eq!(dy.len(), 1, "{op}: dy must hold 1 value, has {}", dy.len());
    let n = len_u32(dx.len(), op);
    if n == 0 {
        return Ok(());
    }
    let launch = grid_for(dx.len(), BLOCK);
    let f = gpu.function(Family::Rows, "sum_all_backward")?;
    // SAFETY: sum_all_backward(f32 *dx, const f32 *dy, u32 n, f32 div), ceil(n / 256) blocks:
    // thread i < n touches dx[i], every thread reads dy[0]; dx holds n values, dy 1
    // (asserted above).
    unsafe { gpu.stream().launch_builder(&f).arg(dx).arg(dy).arg(&n).arg(&div).launch(launch) }
        .map_err(driver(format!("launching sum_all_backward for {op}")))?;
    Ok(())
}
