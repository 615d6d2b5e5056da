//! Launch wrappers for `kernels/router.ptx`: the router's softmax over E experts and its
//! top-K selection, fused, one warp per token (8 tokens to a 256-thread block).

use super::elementwise::len_u32;
use super::gpu::{driver, grid_for, Buf, Family, Gpu};
use crate::error::Result;
use cudarc::driver::PushKernelArg;

/// Threads per block: 8 warps, one token each.
const BLOCK: u32 = 256;

/// Panics unless (N, E, K) fit the one-warp-per-token kernels: a lane holds at most 8 of a
/// row's E logits in registers, a lane < K writes each pick, and t * 8 fits a u32.
fn check_sizes(op: &str, n: usize, e: usize, k: usize) {
    assert!(n < 1 << 31, "{op}: one warp per token needs N < 2^31, got {n}");
    assert!(e <= 256, "{op}: one warp per token needs E <= 256, got {e}");
    let k_max = e.min(16);
    assert!((1..=k_max).contains(&k), "{op}: needs 1 <= K <= min(16, E) = {k_max}, got K = {k} (E = {e})");
}

/// Panics unless buffer `name` holds rows * cols values (its shape `dims`, e.g. "N, E").
fn assert_len(op: &str, name: &str, len: usize, dims: &str, (rows, cols): (usize, usize)) {
    assert_eq!(len, rows * cols, "{op}: {name} holds {len} values, ({dims}) = ({rows}, {cols})");
}

/// probs = softmax(logits) over each row of E experts; topk_idx, topk_w = the K largest
/// probs of each row in descending order (ties: the lower expert first), the weights divided
/// by their sum when `renormalize` (HF norm_topk_prob). Twins: `ops::dense::softmax_forward`,
/// `ops::moe::topk_forward`, then `ops::moe::renormalize_rows_forward` when `renormalize`.
/// probs, logits: (N, E)   topk_idx, topk_w: (N, K)
#[allow(clippy::too_many_arguments)]
pub fn router_topk_forward(
    gpu: &Gpu,
    probs: &mut Buf<f32>,
    topk_idx: &mut Buf<u32>,
    topk_w: &mut Buf<f32>,
    logits: &Buf<f32>,
    n: usize,
    e: usize,
    k: usize,
    renormalize: bool,
) -> Result<()> {
    let op = "router_topk_forward";
    check_sizes(op, n, e, k);
    assert_len(op, "logits", logits.len(), "N, E", (n, e));
    assert_len(op, "probs", probs.len(), "N, E", (n, e));
    assert_len(op, "topk_idx", topk_idx.len(), "N, K", (n, k));
    assert_len(op, "topk_w", topk_w.len(), "N, K", (n, k));
    let (n32, e32, k32) = (len_u32(n, op), e as u32, k as u32);
    let renormalize = u32::from(renormalize);
    let launch = grid_for(n * 32, BLOCK); // one warp (32 threads) per token
    let f = gpu.function(Family::Router, "router_topk_forward")?;
    // SAFETY: router_topk_forward(f32 *probs, u32 *topk_idx, f32 *topk_w, const f32 *logits,
    // u32 n, u32 e, u32 k, u32 renormalize) reads logits and writes probs at (t, e) for
    // t < n, e < E (both hold n * E values), and writes topk_idx, topk_w at (t, j) for j < K
    // (both hold n * K values); all asserted above.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(probs)
            .arg(topk_idx)
            .arg(topk_w)
            .arg(logits)
            .arg(&n32)
            .arg(&e32)
            .arg(&k32)
            .arg(&renormalize)
            .launch(launch)
    }
    .map_err(driver("launching router_topk_forward"))?;
    Ok(())
}

/// dlogits += the gradient through softmax + top-K (+ renormalisation when `renormalize`),
/// from dprobs (the aux losses' gradient on the full probs; may be all zeros) and dtopk_w.
/// ACCUMULATES into dlogits, as the twins: `ops::moe::renormalize_rows_backward` (when
/// `renormalize`), `ops::moe::topk_backward`, `ops::dense::softmax_backward`.
/// dlogits, dprobs, probs: (N, E)   dtopk_w, topk_idx, topk_w: (N, K)
/// `probs`, `topk_idx` and `topk_w` are the forward's outputs (topk_w read only when
/// `renormalize`).
#[allow(clippy::too_many_arguments)]
pub fn router_topk_backward(
    gpu: &Gpu,
    dlogits: &mut Buf<f32>,
    dprobs: &Buf<f32>,
    dtopk_w: &Buf<f32>,
    probs: &Buf<f32>,
    topk_idx: &Buf<u32>,
    topk_w: &Buf<f32>,
    n: usize,
    e: usize,
    k: usize,
    renormalize: bool,
) -> Result<()> {
    let op = "router_topk_backward";
    check_sizes(op, n, e, k);
    assert_len(op, "dlogits", dlogits.len(), "N, E", (n, e));
    assert_len(op, "dprobs", dprobs.len(), "N, E", (n, e));
    assert_len(op, "probs", probs.len(), "N, E", (n, e));
    assert_len(op, "dtopk_w", dtopk_w.len(), "N, K", (n, k));
    assert_len(op, "topk_idx", topk_idx.len(), "N, K", (n, k));
    assert_len(op, "topk_w", topk_w.len(), "N, K", (n, k));
    let (n32, e32, k32) = (len_u32(n, op), e as u32, k as u32);
    let renormalize = u32::from(renormalize);
    let launch = grid_for(n * 32, BLOCK); // one warp (32 threads) per token
    let f = gpu.function(Family::Router, "router_topk_backward")?;
    // SAFETY: router_topk_backward(f32 *dlogits, const f32 *dprobs, const f32 *dtopk_w,
    // const f32 *probs, const u32 *topk_idx, const f32 *topk_w, u32 n, u32 e, u32 k,
    // u32 renormalize) touches dlogits, dprobs, probs at (t, e) for t < n, e < E (each holds
    // n * E values) and dtopk_w, topk_idx, topk_w at (t, j) for j < K (each holds n * K
    // values), all asserted above; it reads probs[t, topk_idx[t, j]] only where that index
    // is < E.
    unsafe {
        gpu.stream()
            .launch_builder(&f)
            .arg(dlogits)
            .arg(dprobs)
            .arg(dtopk_w)
            .arg(probs)
            .arg(topk_idx)
            .arg(topk_w)
            .arg(&n32)
            .arg(&e32)
            .arg(&k32)
            .arg(&renormalize)
            .launch(launch)
    }
    .map_err(driver("launching router_topk_backward"))?;
    Ok(())
}
