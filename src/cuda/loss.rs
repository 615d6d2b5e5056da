//! Launch wrappers for `kernels/loss.ptx`: cross-entropy with an ignore index, one block per
//! row (twin: `ops::loss`).
//!
//! The targets travel on the host (`&[i32]`, which the tape keeps): the host checks each is a
//! class or the ignore index, counts the counted rows, and uploads them (N values, small
//! beside the N·V logits). The forward's final mean is taken on the host: the kernel writes
//! each row's lse_n − logit_n[target_n] in f64, and the host sums the counted rows in row
//! order in f64 and divides by the count, exactly the CPU twin's arithmetic, so the loss
//! differs from the CPU's only through the f32 lse (its exp and ln are the GPU's).
//!
//! The backward accumulates into dlogits (+=), as the CPU twin does.

use super::elementwise::len_u32;
use super::gpu::{driver, Buf, Family, Gpu};
use crate::error::Result;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Threads per block: the forward's reductions are written for exactly 8 warps.
const BLOCK: u32 = 256;

/// Checks the shapes and targets of either kernel and returns (N, V as u32, count).
fn check(op: &str, logits: &Buf<f32>, targets: &[i32], ignore_index: i32, v: usize) -> (usize, u32, usize) {
    let n = targets.len();
    assert!(v >= 1, "{op}: logits have no classes (V = 0)");
    assert_eq!(
        logits.len(),
        n * v,
        "{op}: logits hold {} values, expected N = {n} rows of V = {v}",
        logits.len()
    );
    let v32 = len_u32(v, op);
    assert!(v32 <= u32::MAX - BLOCK, "{op}: V = {v} is too wide for the column loop");
    for (row, &t) in targets.iter().enumerate() {
        assert!(
            t == ignore_index || usize::try_from(t).is_ok_and(|t| t < v),
            "{op}: target {t} at row {row} is outside 0..{v} and is not the ignore_index {ignore_index}"
        );
    }
    let count = targets.iter().filter(|&&t| t != ignore_index).count();
    (n, v32, count)
}

/// One block of [`BLOCK`] threads per row: `n` blocks (at most 2^31 − 1, CUDA's grid limit).
fn per_row(n: usize, op: &str) -> LaunchConfig {
    assert!(n <= i32::MAX as usize, "{op}: one block per row allows at most 2^31 - 1 rows, got {n}");
    LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Writes each row's logsumexp to `lse` (N) and returns the mean loss over the counted rows
/// (0 when none is counted), from logits (N, V) (twin: `ops::loss::cross_entropy_forward`).
pub fn cross_entropy_forward(
    gpu: &Gpu,
    lse: &mut Buf<f32>,
    logits: &Buf<f32>,
    targets: &[i32],
    ignore_index: i32,
    v: usize,
) -> Result<f32> {
    let op = "cross_entropy_forward";
    let (n, v32, count) = check(op, logits, targets, ignore_index, v);
    assert_eq!(lse.len(), n, "{op}: lse holds {} values, expected N = {n}", lse.len());
    if n == 0 {
        return Ok(0.0);
    }
    let targets_gpu = gpu.upload(targets)?;
    let mut losses = gpu.zeros::<f64>(n)?;
    let f = gpu.function(Family::Loss, op)?;
    // SAFETY: cross_entropy_forward(f32 *lse, f64 *losses, const f32 *logits, const i32
    // *targets, u32 v, i32 ignore_index), grid = N: block n reads logits[n*V .. (n+1)*V]
    // (logits hold N*V), targets[n] (N), and logits[n*V + target] only for a counted row,
    // whose target is in 0..V (checked); it writes lse[n] and losses[n] (N each).
    unsafe {
        (gpu.stream().launch_builder(&f))
            .arg(lse)
            .arg(&mut losses)
            .arg(logits)
            .arg(&targets_gpu)
            .arg(&v32)
            .arg(&ignore_index)
            .launch(per_row(n, op))
    }
    .map_err(driver(format!("launching {op}")))?;
    if count == 0 {
        return Ok(0.0);
    }
    // The CPU twin's sum: counted rows in row order, in f64.
    let losses = gpu.download(&losses)?;
    let total: f64 =
        (targets.iter().zip(&losses)).filter(|&(&t, _)| t != ignore_index).map(|(_, &l)| l).sum();
    Ok((total / count as f64) as f32)
}

/// dlogits_nv += dloss/count · (exp(logits_nv − lse_n) − [v = target_n]) for the counted rows
/// (twin: `ops::loss::cross_entropy_backward`). dlogits, logits: (N, V), lse: (N).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(
    gpu: &Gpu,
    dlogits: &mut Buf<f32>,
    dloss: f32,
    lse: &Buf<f32>,
    logits: &Buf<f32>,
    targets: &[i32],
    ignore_index: i32,
    v: usize,
) -> Result<()> {
    let op = "cross_entropy_backward";
    let (n, v32, count) = check(op, logits, targets, ignore_index, v);
    assert_eq!(
        dlogits.len(),
        n * v,
        "{op}: dlogits hold {} values, expected N = {n} rows of V = {v}",
        dlogits.len()
    );
    assert_eq!(lse.len(), n, "{op}: lse holds {} values, expected N = {n}", lse.len());
    if count == 0 {
        return Ok(());
    }
    let dloss_per_row = dloss / count as f32;
    let targets_gpu = gpu.upload(targets)?;
    let f = gpu.function(Family::Loss, op)?;
    // SAFETY: cross_entropy_backward(f32 *dlogits, const f32 *lse, const f32 *logits, const
    // i32 *targets, u32 v, i32 ignore_index, f32 dloss_per_row), grid = N: block n reads
    // targets[n] and lse[n] (N each) and touches elements n*V .. (n+1)*V of logits and
    // dlogits (N*V each).
    unsafe {
        (gpu.stream().launch_builder(&f))
            .arg(dlogits)
            .arg(lse)
            .arg(logits)
            .arg(&targets_gpu)
            .arg(&v32)
            .arg(&ignore_index)
            .arg(&dloss_per_row)
            .launch(per_row(n, op))
    }
    .map_err(driver(format!("launching {op}")))?;
    Ok(())
}
