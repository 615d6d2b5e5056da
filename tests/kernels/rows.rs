//! kernels/rows.ptx against ops/dense.rs, ops/moe.rs and the Sum / Mean arms of autograd.rs.
//! Every row kernel runs on N rows in {1, 3, 50, 783} by C in {1, 7, 32, 33, 256, 1000, 4099}:
//! one row, C below, at and just past a warp, at the block (256), and rows of several
//! block-strides with a ragged end.

use super::{assert_close, gpu, poison, random};
use moe::cuda::{rows, Buf, Gpu};
use moe::ops::{dense, moe as moe_ops};

const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-5;
const EPS: f32 = 1e-5;

/// (N, C, seed) for every test shape.
fn shapes() -> impl Iterator<Item = (usize, usize, u64)> {
    let cs = [1, 7, 32, 33, 256, 1000, 4099];
    [1, 3, 50, 783]
        .into_iter()
        .flat_map(move |n| cs.into_iter().map(move |c| (n, c)))
        .enumerate()
        .map(|(i, (n, c))| (n, c, 100 * i as u64))
}

/// n values uniform in [0.1, 1.1): RMSNorm weights, and rows that renormalise (top-k
/// probabilities are positive).
fn positive(n: usize, seed: u64) -> Vec<f32> {
    random(n, seed).into_iter().map(|v| 0.6 + 0.5 * v).collect()
}

fn up(gpu: &Gpu, host: &[f32]) -> Buf<f32> {
    gpu.upload(host).unwrap()
}

fn down(gpu: &Gpu, buf: &Buf<f32>) -> Vec<f32> {
    gpu.download(buf).unwrap()
}

// ---- RMSNorm

#[test]
fn rmsnorm_forward_matches_cpu() {
    let Some(gpu) = gpu("rmsnorm_forward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let (x, w) = (random(n * c, seed), positive(c, seed + 1));
        let (mut y, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        dense::rmsnorm_forward(&mut y, &mut rstd, &x, &w, c, EPS);
        let (mut y_gpu, mut rstd_gpu) = (up(gpu, &poison(n * c)), up(gpu, &poison(n)));
        rows::rmsnorm_forward(gpu, &mut y_gpu, &mut rstd_gpu, &up(gpu, &x), &up(gpu, &w), c, EPS).unwrap();
        assert_close(&format!("rmsnorm_forward y N={n} C={c}"), &down(gpu, &y_gpu), &y, ATOL, RTOL);
        assert_close(&format!("rmsnorm_forward rstd N={n} C={c}"), &down(gpu, &rstd_gpu), &rstd, ATOL, RTOL);
    }
}

#[test]
fn rmsnorm_backward_matches_cpu() {
    let Some(gpu) = gpu("rmsnorm_backward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let (x, w, dy) = (random(n * c, seed), positive(c, seed + 1), random(n * c, seed + 2));
        let (dx0, dw0) = (random(n * c, seed + 3), random(c, seed + 4));
        let (mut y, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        dense::rmsnorm_forward(&mut y, &mut rstd, &x, &w, c, EPS);
        let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
        dense::rmsnorm_backward(&mut dx, &mut dw, &dy, &rstd, &x, &w, c);
        let (mut dx_gpu, mut dw_gpu) = (up(gpu, &dx0), up(gpu, &dw0));
        let (dy_gpu, rstd_gpu, x_gpu, w_gpu) = (up(gpu, &dy), up(gpu, &rstd), up(gpu, &x), up(gpu, &w));
        rows::rmsnorm_backward(gpu, &mut dx_gpu, &mut dw_gpu, &dy_gpu, &rstd_gpu, &x_gpu, &w_gpu, c).unwrap();
        assert_close(&format!("rmsnorm_backward dx N={n} C={c}"), &down(gpu, &dx_gpu), &dx, ATOL, RTOL);
        // dw_c is a sum over N rows of terms of size ~0.6 with both signs: the GPU adds them in
        // row order, the CPU in per-thread chunks, and the two f32 rounding walks differ by
        // about 1e-8 · N (standard deviation; 6e-5 at most over the 4099 columns of N = 783
        // in a numpy model of both orders). Hence atol 2e-7 · N.
        let dw_atol = ATOL.max(2e-7 * n as f32);
        assert_close(&format!("rmsnorm_backward dw N={n} C={c}"), &down(gpu, &dw_gpu), &dw, dw_atol, RTOL);
    }
}

// ---- softmax

#[test]
fn softmax_forward_matches_cpu() {
    let Some(gpu) = gpu("softmax_forward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let x = random(n * c, seed);
        let mut y = vec![0.0; n * c];
        dense::softmax_forward(&mut y, &x, c);
        let mut y_gpu = up(gpu, &poison(n * c));
        rows::softmax_forward(gpu, &mut y_gpu, &up(gpu, &x), c).unwrap();
        assert_close(&format!("softmax_forward N={n} C={c}"), &down(gpu, &y_gpu), &y, ATOL, RTOL);
    }
}

#[test]
fn softmax_backward_matches_cpu() {
    let Some(gpu) = gpu("softmax_backward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let (x, dy, dx0) = (random(n * c, seed), random(n * c, seed + 1), random(n * c, seed + 2));
        let mut y = vec![0.0; n * c];
        dense::softmax_forward(&mut y, &x, c);
        let mut dx = dx0.clone();
        dense::softmax_backward(&mut dx, &dy, &y, c);
        let mut dx_gpu = up(gpu, &dx0);
        rows::softmax_backward(gpu, &mut dx_gpu, &up(gpu, &dy), &up(gpu, &y), c).unwrap();
        assert_close(&format!("softmax_backward N={n} C={c}"), &down(gpu, &dx_gpu), &dx, ATOL, RTOL);
    }
}

// ---- log-sum-exp over each row

#[test]
fn logsumexp_rows_forward_matches_cpu() {
    let Some(gpu) = gpu("logsumexp_rows_forward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let x = random(n * c, seed);
        let mut y = vec![0.0; n];
        dense::logsumexp_rows_forward(&mut y, &x, c);
        let mut y_gpu = up(gpu, &poison(n));
        rows::logsumexp_rows_forward(gpu, &mut y_gpu, &up(gpu, &x), c).unwrap();
        // ln(s) is lg2.approx(s) · ln 2: absolute error up to 2^-21.41 = 3.6e-7 for s in
        // [1, 2] (3 ulp above), on top of the exp() errors in s. Where y = max + ln(s) is
        // near 0 (small C, all x negative) rtol gives no room, hence atol 2e-6.
        assert_close(&format!("logsumexp_rows_forward N={n} C={c}"), &down(gpu, &y_gpu), &y, 2e-6, RTOL);
    }
}

#[test]
fn logsumexp_rows_backward_matches_cpu() {
    let Some(gpu) = gpu("logsumexp_rows_backward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let (x, dy, dx0) = (random(n * c, seed), random(n, seed + 1), random(n * c, seed + 2));
        let mut y = vec![0.0; n];
        dense::logsumexp_rows_forward(&mut y, &x, c);
        let mut dx = dx0.clone();
        dense::logsumexp_rows_backward(&mut dx, &dy, &y, &x, c);
        let mut dx_gpu = up(gpu, &dx0);
        rows::logsumexp_rows_backward(gpu, &mut dx_gpu, &up(gpu, &dy), &up(gpu, &y), &up(gpu, &x), c)
            .unwrap();
        assert_close(&format!("logsumexp_rows_backward N={n} C={c}"), &down(gpu, &dx_gpu), &dx, ATOL, RTOL);
    }
}

/// The bound rows.ptx documents for exp(a) = ex2.approx(a · log2 e) with a <= 0: at most
/// 2 + floor(1.173 |a|) ulp, within rtol 1e-5 of f32::exp down to a = -60. Rows spread over
/// [-20, 20] give arguments down to -40 (softmax) and -40 - ln C, about -48 (log-sum-exp
/// backward); checked purely relatively (atol 0), so the smallest values count as much as
/// the largest. The log-sum-exp gradient starts from zero here so that dx is exactly
/// dy · exp(a), not a sum that hides a relative error.
#[test]
fn exp_within_documented_bound() {
    let Some(gpu) = gpu("exp_within_documented_bound") else { return };
    for (n, c, seed) in shapes() {
        let x: Vec<f32> = random(n * c, seed).into_iter().map(|v| 20.0 * v).collect();
        let dy = random(n, seed + 1);
        let (x_gpu, dy_gpu) = (up(gpu, &x), up(gpu, &dy));
        let shape = format!("x in [-20, 20] N={n} C={c}");

        let mut y = vec![0.0; n * c];
        dense::softmax_forward(&mut y, &x, c);
        let mut y_gpu = up(gpu, &poison(n * c));
        rows::softmax_forward(gpu, &mut y_gpu, &x_gpu, c).unwrap();
        assert_close(&format!("softmax_forward {shape}"), &down(gpu, &y_gpu), &y, 0.0, RTOL);

        let mut lse = vec![0.0; n];
        dense::logsumexp_rows_forward(&mut lse, &x, c);
        let mut lse_gpu = up(gpu, &poison(n));
        rows::logsumexp_rows_forward(gpu, &mut lse_gpu, &x_gpu, c).unwrap();
        assert_close(&format!("logsumexp_rows_forward {shape}"), &down(gpu, &lse_gpu), &lse, 2e-6, RTOL);

        let mut dx = vec![0.0; n * c];
        dense::logsumexp_rows_backward(&mut dx, &dy, &lse, &x, c);
        let mut dx_gpu = up(gpu, &vec![0.0; n * c]);
        rows::logsumexp_rows_backward(gpu, &mut dx_gpu, &dy_gpu, &up(gpu, &lse), &x_gpu, c).unwrap();
        assert_close(&format!("logsumexp_rows_backward {shape}"), &down(gpu, &dx_gpu), &dx, 0.0, RTOL);
    }
}

// ---- renormalise rows to sum to one

#[test]
fn renormalize_rows_forward_matches_cpu() {
    let Some(gpu) = gpu("renormalize_rows_forward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let x = positive(n * c, seed);
        let mut y = vec![0.0; n * c];
        moe_ops::renormalize_rows_forward(&mut y, &x, c);
        let mut y_gpu = up(gpu, &poison(n * c));
        rows::renormalize_rows_forward(gpu, &mut y_gpu, &up(gpu, &x), c).unwrap();
        assert_close(&format!("renormalize_rows_forward N={n} C={c}"), &down(gpu, &y_gpu), &y, ATOL, RTOL);
    }
}

#[test]
fn renormalize_rows_backward_matches_cpu() {
    let Some(gpu) = gpu("renormalize_rows_backward_matches_cpu") else { return };
    for (n, c, seed) in shapes() {
        let (x, dy, dx0) = (positive(n * c, seed), random(n * c, seed + 1), random(n * c, seed + 2));
        let mut y = vec![0.0; n * c];
        moe_ops::renormalize_rows_forward(&mut y, &x, c);
        let mut dx = dx0.clone();
        moe_ops::renormalize_rows_backward(&mut dx, &dy, &y, &x, c);
        let mut dx_gpu = up(gpu, &dx0);
        rows::renormalize_rows_backward(gpu, &mut dx_gpu, &up(gpu, &dy), &up(gpu, &y), &up(gpu, &x), c)
            .unwrap();
        assert_close(&format!("renormalize_rows_backward N={n} C={c}"), &down(gpu, &dx_gpu), &dx, ATOL, RTOL);
    }
}

// ---- sum and mean of every element

/// Tensors of every test shape's N · C values (1 to 3.2M: one partial block, several, and
/// the 1024-block cap with blocks striding), plus 1024 · 256 + 1 (just past the cap).
fn totals() -> impl Iterator<Item = (usize, u64)> {
    shapes().map(|(n, c, seed)| (n * c, seed)).chain([(1024 * 256 + 1, 7)])
}

#[test]
fn sum_all_and_mean_all_match_cpu() {
    let Some(gpu) = gpu("sum_all_and_mean_all_match_cpu") else { return };
    for (n, seed) in totals() {
        let x = random(n, seed);
        let x_gpu = up(gpu, &x);
        // Both sides add in f64 and round once to f32: they agree to the last bit or two.
        let mut y_gpu = up(gpu, &poison(1));
        rows::sum_all(gpu, &mut y_gpu, &x_gpu).unwrap();
        assert_close(&format!("sum_all n={n}"), &down(gpu, &y_gpu), &[dense::sum_forward(&x)], ATOL, RTOL);
        let mut y_gpu = up(gpu, &poison(1));
        rows::mean_all(gpu, &mut y_gpu, &x_gpu).unwrap();
        assert_close(&format!("mean_all n={n}"), &down(gpu, &y_gpu), &[dense::mean_forward(&x)], ATOL, RTOL);
    }
}

#[test]
fn sum_all_and_mean_all_backward_match_cpu() {
    let Some(gpu) = gpu("sum_all_and_mean_all_backward_match_cpu") else { return };
    for (n, seed) in totals() {
        let (dx0, dy) = (random(n, seed), random(1, seed + 1));
        // The twin is autograd.rs's Sum / Mean arm: d = dy or dy / numel (f32), dx += d.
        let mean_d = dy[0] / n.max(1) as f32;
        for (what, d) in [("sum_all_backward", dy[0]), ("mean_all_backward", mean_d)] {
            let want: Vec<f32> = dx0.iter().map(|&v| v + d).collect();
            let mut dx_gpu = up(gpu, &dx0);
            let dy_gpu = up(gpu, &dy);
            if what == "sum_all_backward" {
                rows::sum_all_backward(gpu, &mut dx_gpu, &dy_gpu).unwrap();
            } else {
                rows::mean_all_backward(gpu, &mut dx_gpu, &dy_gpu).unwrap();
            }
            assert_close(&format!("{what} n={n}"), &down(gpu, &dx_gpu), &want, 0.0, 0.0);
        }
    }
}

// ---- determinism

/// The reductions add in a fixed order: the same inputs give the same bits, launch after
/// launch (the largest shape, where blocks stride and warps all hold partials).
#[test]
fn reductions_are_deterministic() {
    let Some(gpu) = gpu("reductions_are_deterministic") else { return };
    let (n, c) = (783, 4099);
    let (x, w, dy) = (random(n * c, 1), positive(c, 2), random(n * c, 3));
    let (x_gpu, w_gpu, dy_gpu) = (up(gpu, &x), up(gpu, &w), up(gpu, &dy));
    let run = || {
        let (mut y, mut rstd) = (up(gpu, &poison(n * c)), up(gpu, &poison(n)));
        rows::rmsnorm_forward(gpu, &mut y, &mut rstd, &x_gpu, &w_gpu, c, EPS).unwrap();
        let (mut dx, mut dw) = (up(gpu, &vec![0.0; n * c]), up(gpu, &vec![0.0; c]));
        rows::rmsnorm_backward(gpu, &mut dx, &mut dw, &dy_gpu, &rstd, &x_gpu, &w_gpu, c).unwrap();
        let mut p = up(gpu, &poison(n * c));
        rows::softmax_forward(gpu, &mut p, &x_gpu, c).unwrap();
        let mut total = up(gpu, &poison(1));
        rows::sum_all(gpu, &mut total, &x_gpu).unwrap();
        [&y, &rstd, &dx, &dw, &p, &total]
            .map(|b| down(gpu, b).into_iter().map(f32::to_bits).collect::<Vec<u32>>())
    };
    let (first, second) = (run(), run());
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert!(a == b, "output {i} of [y, rstd, dx, dw, softmax, sum] differs between two identical runs");
    }
}
