//! kernels/router.ptx against ops::dense::softmax_* and ops::moe::{topk, renormalize_rows}_*.

use super::{assert_close, gpu, poison, random};
use moe::cuda::router;
use moe::ops::{dense, moe as moe_ops};
use moe::rng::Rng;

/// N: one token, a partial block of 8, and sizes that are not multiples of 8 warps.
const TOKENS: [usize; 5] = [1, 3, 50, 783, 4096];
/// (E, K): one slot a lane (E <= 32) up to all eight (E = 256), E not a multiple of 32 (60,
/// 5, 33: 33 puts one expert in slot 1), K from 1 to 16.
const SHAPES: [(usize, usize); 6] = [(8, 2), (64, 8), (60, 4), (256, 16), (5, 1), (33, 3)];

/// The CPU twin's forward: probs (N, E); picked (N, K), the top-K probs before renormalising;
/// idx (N, K); w (N, K), the router weights (renormalised when asked).
struct Routing {
    probs: Vec<f32>,
    picked: Vec<f32>,
    idx: Vec<u32>,
    w: Vec<f32>,
}

fn cpu_forward(logits: &[f32], n: usize, e: usize, k: usize, renormalize: bool) -> Routing {
    let mut probs = vec![0.0; n * e];
    dense::softmax_forward(&mut probs, logits, e);
    let (mut picked, mut idx) = (vec![0.0; n * k], vec![0; n * k]);
    moe_ops::topk_forward(&mut picked, &mut idx, &probs, e, k);
    let mut w = picked.clone();
    if renormalize {
        moe_ops::renormalize_rows_forward(&mut w, &picked, k);
    }
    Routing { probs, picked, idx, w }
}

/// (N, E) logits whose sorted values in a row are about d = 16 / E apart: each row a random
/// permutation of 0, d, 2d, ..., (E - 1) d, plus noise within +-d/10 and a shift in [-4, 4).
/// Neighbouring probabilities then differ by a factor >= exp(0.8 d) >= 1.05, far beyond the
/// GPU's ~1e-6 relative error, so both sides pick the same experts in the same order.
fn spaced_logits(n: usize, e: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let d = 16.0 / e as f64;
    let mut ranks: Vec<usize> = (0..e).collect();
    let mut logits = Vec::with_capacity(n * e);
    for _ in 0..n {
        rng.shuffle(&mut ranks);
        let shift = rng.uniform() * 8.0 - 4.0;
        for &rank in &ranks {
            let noise = (rng.uniform() - 0.5) * 0.2 * d;
            logits.push((shift + d * rank as f64 + noise) as f32);
        }
    }
    logits
}

/// Fails unless, in every row of `probs` (N, E), the K + 1 largest are more than 1e-4 apart:
/// the inputs of an exact-index comparison must not sit on a near-tie.
fn assert_spaced(probs: &[f32], e: usize, k: usize) {
    let k1 = (k + 1).min(e);
    let n = probs.len() / e;
    let (mut top, mut idx) = (vec![0.0; n * k1], vec![0; n * k1]);
    moe_ops::topk_forward(&mut top, &mut idx, probs, e, k1);
    for (t, row) in top.chunks_exact(k1).enumerate() {
        for pair in row.windows(2) {
            assert!(pair[0] - pair[1] > 1e-4, "test data: token {t} has top probs {row:?} closer than 1e-4");
        }
    }
}

/// Fails at the first token whose picks differ, printing both rows.
fn assert_same_indices(what: &str, got: &[u32], want: &[u32], k: usize) {
    assert_eq!(got.len(), want.len(), "{what}: {} indices, expected {}", got.len(), want.len());
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        let t = i / k;
        panic!("{what}: token {t}: GPU picks {:?}, CPU {:?}", &got[t * k..][..k], &want[t * k..][..k]);
    }
}

/// Runs the GPU forward on `logits` (outputs poisoned first) and checks it against the CPU
/// twin: indices exactly, probs and weights within atol 1e-6, rtol 1e-5. Returns the GPU's
/// indices.
fn check_forward(
    gpu: &moe::cuda::Gpu,
    what: &str,
    logits: &[f32],
    (n, e, k): (usize, usize, usize),
    renormalize: bool,
) -> Vec<u32> {
    let want = cpu_forward(logits, n, e, k, renormalize);
    let mut probs = gpu.upload(&poison(n * e)).unwrap();
    let mut idx = gpu.upload(&vec![u32::MAX; n * k]).unwrap();
    let mut w = gpu.upload(&poison(n * k)).unwrap();
    let logits = gpu.upload(logits).unwrap();
    router::router_topk_forward(gpu, &mut probs, &mut idx, &mut w, &logits, n, e, k, renormalize).unwrap();
    let got_idx = gpu.download(&idx).unwrap();
    assert_same_indices(&format!("{what} topk_idx"), &got_idx, &want.idx, k);
    assert_close(&format!("{what} probs"), &gpu.download(&probs).unwrap(), &want.probs, 1e-6, 1e-5);
    assert_close(&format!("{what} topk_w"), &gpu.download(&w).unwrap(), &want.w, 1e-6, 1e-5);
    got_idx
}

#[test]
fn router_topk_forward_matches_cpu() {
    let Some(gpu) = gpu("router_topk_forward_matches_cpu") else { return };
    let mut seed = 100;
    for renormalize in [false, true] {
        for (e, k) in SHAPES {
            for n in TOKENS {
                seed += 1;
                let logits = spaced_logits(n, e, seed);
                assert_spaced(&cpu_forward(&logits, n, e, k, false).probs, e, k);
                let what = format!("router_topk_forward N={n} E={e} K={k} renormalize={renormalize}");
                check_forward(gpu, &what, &logits, (n, e, k), renormalize);
            }
        }
    }
}

/// (E, K, the logit of expert e, the expected picks).
type TieCase = (usize, usize, fn(usize) -> f32, Vec<u32>);

#[test]
fn router_topk_ties_go_to_lower_index() {
    let Some(gpu) = gpu("router_topk_ties_go_to_lower_index") else { return };
    // Equal logits give bit-equal probs on both sides, so the order among them is the tie
    // rule alone. Ties within a lane (experts 0 and 32 of E = 33), across lanes, across
    // slots, and K cutting through a tied group.
    let one_row: fn(usize) -> f32 = |e| [1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 2.0, 3.0][e];
    let cases: [TieCase; 6] = [
        (8, 4, one_row, vec![1, 2, 4, 7]),
        (64, 8, |_| 0.0, (0..8).collect()),
        (256, 16, |_| 0.5, (0..16).collect()),
        (60, 4, |e| (e % 3) as f32, vec![2, 5, 8, 11]),
        (33, 3, |e| if e == 0 || e == 31 || e == 32 { 1.0 } else { 0.0 }, vec![0, 31, 32]),
        // 6 is the largest (37 e mod 7), at e = 3 mod 7: 37 experts, K = 16 takes the first
        (256, 16, |e| ((37 * e) % 7) as f32, (0..16).map(|j| 3 + 7 * j).collect()),
    ];
    for (e, k, logit, picks) in cases {
        let n = 3;
        let logits: Vec<f32> = (0..n * e).map(|i| logit(i % e)).collect();
        for renormalize in [false, true] {
            let what = format!("router_topk ties E={e} K={k} renormalize={renormalize}");
            let got = check_forward(gpu, &what, &logits, (n, e, k), renormalize);
            for row in got.chunks_exact(k) {
                assert_eq!(row, &picks[..], "{what}: ties must go to the lower expert index");
            }
        }
    }
}

#[test]
fn router_topk_backward_matches_cpu() {
    let Some(gpu) = gpu("router_topk_backward_matches_cpu") else { return };
    let mut seed = 1000;
    for renormalize in [false, true] {
        for (e, k) in SHAPES {
            for n in TOKENS {
                seed += 10;
                let fwd = cpu_forward(&spaced_logits(n, e, seed), n, e, k, renormalize);
                // dprobs is all zeros for odd N, as when no aux loss reaches the probs
                let dprobs = if n % 2 == 1 { vec![0.0; n * e] } else { random(n * e, seed + 1) };
                let dtopk_w = random(n * k, seed + 2);
                let dlogits = random(n * e, seed + 3);

                // CPU: renormalize_rows_backward (when set), topk_backward, softmax_backward
                let mut dpicked = vec![0.0; n * k];
                if renormalize {
                    moe_ops::renormalize_rows_backward(&mut dpicked, &dtopk_w, &fwd.w, &fwd.picked, k);
                } else {
                    moe::ops::accumulate(&mut dpicked, &dtopk_w);
                }
                let mut dp = dprobs.clone();
                moe_ops::topk_backward(&mut dp, &dpicked, &fwd.idx, e, k);
                let mut want = dlogits.clone();
                dense::softmax_backward(&mut want, &dp, &fwd.probs, e);

                let mut dlogits_gpu = gpu.upload(&dlogits).unwrap();
                let (dprobs, dtopk_w) = (gpu.upload(&dprobs).unwrap(), gpu.upload(&dtopk_w).unwrap());
                let (probs, idx, w) = (
                    gpu.upload(&fwd.probs).unwrap(),
                    gpu.upload(&fwd.idx).unwrap(),
                    gpu.upload(&fwd.w).unwrap(),
                );
                router::router_topk_backward(
                    gpu,
                    &mut dlogits_gpu,
                    &dprobs,
                    &dtopk_w,
                    &probs,
                    &idx,
                    &w,
                    n,
                    e,
                    k,
                    renormalize,
                )
                .unwrap();
                let what =
                    format!("router_topk_backward N={n} E={e} K={k} renormalize={renormalize} dlogits");
                // sum_i p_i dp_i is summed in another order than the CPU's (lanes, then a
                // butterfly); it enters each dlogits_e times p_e <= 1, well inside atol 1e-6.
                assert_close(&what, &gpu.download(&dlogits_gpu).unwrap(), &want, 1e-6, 1e-5);
            }
        }
    }
}
