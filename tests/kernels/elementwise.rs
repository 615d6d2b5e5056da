//! kernels/elementwise.ptx against ops/dense.rs, ops/moe.rs and ops/mod.rs.

use super::{assert_close, gpu, poison, random};
use moe::cuda::{elementwise, Buf, Gpu};
use moe::ops::{dense, moe as moe_ops};

/// Element counts: one, a partial block, and counts that are not multiples of the block (256).
const SIZES: [usize; 6] = [1, 3, 50, 783, 4096, 100_003];
/// Rows and row widths for the row-wise kernels, every pair up to `MAX_ELEMENTS` values
/// (100_003 x 1000 would be 400 MB a buffer).
const ROWS: [usize; 6] = [1, 3, 50, 783, 4096, 100_003];
const WIDTHS: [usize; 4] = [1, 7, 64, 1000];
const MAX_ELEMENTS: usize = 8_000_000;
/// f32 math.
const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-5;

fn shapes() -> impl Iterator<Item = (usize, usize)> {
    let pairs = ROWS.into_iter().flat_map(|n| WIDTHS.into_iter().map(move |c| (n, c)));
    pairs.filter(|&(n, c)| n * c <= MAX_ELEMENTS)
}

fn up<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, host: &[T]) -> Buf<T> {
    gpu.upload(host).unwrap()
}

fn down(gpu: &Gpu, buf: &Buf<f32>) -> Vec<f32> {
    gpu.download(buf).unwrap()
}

/// n values in [-100, 100), led by the edges of f32 exp's range: exp(88.73) overflows to
/// inf (sigmoid(-88.73) = 0), exp(-104) rounds to 0, 1 + exp(-x) rounds to 1 from x = 16.7.
fn wide(n: usize, seed: u64) -> Vec<f32> {
    const EDGES: [f32; 18] = [
        0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 16.6, -16.6, 17.5, -17.5, 88.72, -88.72, 88.73, -88.73, 104.0,
        -104.0, 200.0, -200.0,
    ];
    let mut x: Vec<f32> = random(n, seed).iter().map(|v| 100.0 * v).collect();
    for (x, edge) in x.iter_mut().zip(EDGES) {
        *x = edge;
    }
    x
}

/// The inputs of the silu kernels at size n: uniform in [-1, 1), then `wide`.
fn silu_inputs(n: usize, seed: u64) -> [(&'static str, Vec<f32>); 2] {
    [("uniform", random(n, seed)), ("wide", wide(n, seed))]
}

// ---- purely elementwise

#[test]
fn accumulate_matches_cpu() {
    let Some(gpu) = gpu("accumulate_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let (g, d) = (random(n, 2 * i as u64), random(n, 2 * i as u64 + 1));
        let mut want = g.clone();
        moe::ops::accumulate(&mut want, &d);
        let mut g_gpu = gpu.upload(&g).unwrap();
        elementwise::accumulate(gpu, &mut g_gpu, &gpu.upload(&d).unwrap()).unwrap();
        assert_close(&format!("accumulate n={n}"), &gpu.download(&g_gpu).unwrap(), &want, 0.0, 1e-6);
    }
}

#[test]
fn fill_matches_cpu() {
    let Some(gpu) = gpu("fill_matches_cpu") else { return };
    for n in SIZES {
        for value in [0.0, -2.5] {
            let mut y = up(gpu, &poison(n));
            elementwise::fill(gpu, &mut y, value).unwrap();
            assert_close(&format!("fill n={n} value={value}"), &down(gpu, &y), &vec![value; n], 0.0, 0.0);
        }
    }
}

#[test]
fn add_forward_matches_cpu() {
    let Some(gpu) = gpu("add_forward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let (a, b) = (random(n, seed), random(n, seed + 1));
        let mut want = vec![0.0; n];
        dense::add_forward(&mut want, &a, &b);
        let mut y = up(gpu, &poison(n));
        elementwise::add_forward(gpu, &mut y, &up(gpu, &a), &up(gpu, &b)).unwrap();
        assert_close(&format!("add_forward n={n}"), &down(gpu, &y), &want, ATOL, RTOL);
    }
}

#[test]
fn mul_forward_matches_cpu() {
    let Some(gpu) = gpu("mul_forward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let (a, b) = (random(n, seed), random(n, seed + 1));
        let mut want = vec![0.0; n];
        dense::mul_forward(&mut want, &a, &b);
        let mut y = up(gpu, &poison(n));
        elementwise::mul_forward(gpu, &mut y, &up(gpu, &a), &up(gpu, &b)).unwrap();
        assert_close(&format!("mul_forward n={n}"), &down(gpu, &y), &want, ATOL, RTOL);
    }
}

#[test]
fn mul_backward_matches_cpu() {
    let Some(gpu) = gpu("mul_backward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let (dy, a, b) = (random(n, seed), random(n, seed + 1), random(n, seed + 2));
        // += outputs start from the same random values on both sides
        let (da, db) = (random(n, seed + 3), random(n, seed + 4));
        let (mut want_da, mut want_db) = (da.clone(), db.clone());
        dense::mul_backward(&mut want_da, &mut want_db, &dy, &a, &b);
        let (mut da_gpu, mut db_gpu) = (up(gpu, &da), up(gpu, &db));
        let (dy, a, b) = (up(gpu, &dy), up(gpu, &a), up(gpu, &b));
        elementwise::mul_backward(gpu, &mut da_gpu, &mut db_gpu, &dy, &a, &b).unwrap();
        assert_close(&format!("mul_backward da n={n}"), &down(gpu, &da_gpu), &want_da, ATOL, RTOL);
        assert_close(&format!("mul_backward db n={n}"), &down(gpu, &db_gpu), &want_db, ATOL, RTOL);
    }
}

#[test]
fn scale_forward_matches_cpu() {
    let Some(gpu) = gpu("scale_forward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let x = random(n, 400 + i as u64);
        for s in [0.125, -3.7] {
            let mut want = vec![0.0; n];
            dense::scale_forward(&mut want, &x, s);
            let mut y = up(gpu, &poison(n));
            elementwise::scale_forward(gpu, &mut y, &up(gpu, &x), s).unwrap();
            assert_close(&format!("scale_forward n={n} s={s}"), &down(gpu, &y), &want, ATOL, RTOL);
        }
    }
}

#[test]
fn scale_backward_matches_cpu() {
    let Some(gpu) = gpu("scale_backward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let (dx, dy) = (random(n, seed), random(n, seed + 1));
        for s in [0.125, -3.7] {
            let mut want = dx.clone();
            dense::scale_backward(&mut want, &dy, s);
            let mut dx_gpu = up(gpu, &dx);
            elementwise::scale_backward(gpu, &mut dx_gpu, &up(gpu, &dy), s).unwrap();
            assert_close(&format!("scale_backward n={n} s={s}"), &down(gpu, &dx_gpu), &want, ATOL, RTOL);
        }
    }
}

#[test]
fn silu_forward_matches_cpu() {
    let Some(gpu) = gpu("silu_forward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        for (kind, x) in silu_inputs(n, 600 + i as u64) {
            let mut want = vec![0.0; n];
            dense::silu_forward(&mut want, &x);
            let mut y = up(gpu, &poison(n));
            elementwise::silu_forward(gpu, &mut y, &up(gpu, &x)).unwrap();
            assert_close(&format!("silu_forward {kind} n={n}"), &down(gpu, &y), &want, ATOL, RTOL);
        }
    }
}

#[test]
fn silu_backward_matches_cpu() {
    let Some(gpu) = gpu("silu_backward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 700 + 10 * i as u64;
        let (dx, dy) = (random(n, seed), random(n, seed + 1));
        for (kind, x) in silu_inputs(n, seed + 2) {
            let mut want = dx.clone();
            dense::silu_backward(&mut want, &dy, &x);
            let mut dx_gpu = up(gpu, &dx);
            elementwise::silu_backward(gpu, &mut dx_gpu, &up(gpu, &dy), &up(gpu, &x)).unwrap();
            assert_close(&format!("silu_backward {kind} n={n}"), &down(gpu, &dx_gpu), &want, ATOL, RTOL);
        }
    }
}

#[test]
fn swiglu_forward_matches_cpu() {
    let Some(gpu) = gpu("swiglu_forward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 800 + 10 * i as u64;
        let up_values = random(n, seed);
        for (kind, gate) in silu_inputs(n, seed + 1) {
            let mut want = vec![0.0; n];
            dense::swiglu_forward(&mut want, &gate, &up_values);
            let mut y = up(gpu, &poison(n));
            elementwise::swiglu_forward(gpu, &mut y, &up(gpu, &gate), &up(gpu, &up_values)).unwrap();
            assert_close(&format!("swiglu_forward {kind} n={n}"), &down(gpu, &y), &want, ATOL, RTOL);
        }
    }
}

#[test]
fn swiglu_backward_matches_cpu() {
    let Some(gpu) = gpu("swiglu_backward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 900 + 10 * i as u64;
        let (dgate, dup, dy, up_values) =
            (random(n, seed), random(n, seed + 1), random(n, seed + 2), random(n, seed + 3));
        for (kind, gate) in silu_inputs(n, seed + 4) {
            let (mut want_dgate, mut want_dup) = (dgate.clone(), dup.clone());
            dense::swiglu_backward(&mut want_dgate, &mut want_dup, &dy, &gate, &up_values);
            let (mut dgate_gpu, mut dup_gpu) = (up(gpu, &dgate), up(gpu, &dup));
            let (dy, gate, up_values) = (up(gpu, &dy), up(gpu, &gate), up(gpu, &up_values));
            elementwise::swiglu_backward(gpu, &mut dgate_gpu, &mut dup_gpu, &dy, &gate, &up_values).unwrap();
            let what = format!("swiglu_backward {kind} n={n}");
            assert_close(&format!("{what} dgate"), &down(gpu, &dgate_gpu), &want_dgate, ATOL, RTOL);
            assert_close(&format!("{what} dup"), &down(gpu, &dup_gpu), &want_dup, ATOL, RTOL);
        }
    }
}

/// Clamp bounds: an ordinary interval, and lo = hi.
const CLAMP_BOUNDS: [(f32, f32); 2] = [(-0.5, 0.25), (0.25, 0.25)];

/// Random values in [-1, 1) with the bounds themselves first (they pass gradient).
fn clamp_inputs(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = random(n, seed);
    for (x, bound) in x.iter_mut().zip([lo, hi]) {
        *x = bound;
    }
    x
}

#[test]
fn clamp_forward_matches_cpu() {
    let Some(gpu) = gpu("clamp_forward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        for (lo, hi) in CLAMP_BOUNDS {
            let x = clamp_inputs(n, 1000 + i as u64, lo, hi);
            let mut want = vec![0.0; n];
            dense::clamp_forward(&mut want, &x, lo, hi);
            let mut y = up(gpu, &poison(n));
            elementwise::clamp_forward(gpu, &mut y, &up(gpu, &x), lo, hi).unwrap();
            assert_close(&format!("clamp_forward n={n} [{lo}, {hi}]"), &down(gpu, &y), &want, ATOL, RTOL);
        }
    }
}

#[test]
fn clamp_backward_matches_cpu() {
    let Some(gpu) = gpu("clamp_backward_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let seed = 1100 + 10 * i as u64;
        let (dx, dy) = (random(n, seed), random(n, seed + 1));
        for (lo, hi) in CLAMP_BOUNDS {
            let x = clamp_inputs(n, seed + 2, lo, hi);
            let mut want = dx.clone();
            dense::clamp_backward(&mut want, &dy, &x, lo, hi);
            let mut dx_gpu = up(gpu, &dx);
            elementwise::clamp_backward(gpu, &mut dx_gpu, &up(gpu, &dy), &up(gpu, &x), lo, hi).unwrap();
            let what = format!("clamp_backward n={n} [{lo}, {hi}]");
            assert_close(&what, &down(gpu, &dx_gpu), &want, ATOL, RTOL);
        }
    }
}

// ---- row-wise

#[test]
fn add_row_forward_matches_cpu() {
    let Some(gpu) = gpu("add_row_forward_matches_cpu") else { return };
    for (i, (n, c)) in shapes().enumerate() {
        let seed = 1200 + 10 * i as u64;
        let (x, bias) = (random(n * c, seed), random(c, seed + 1));
        let mut want = vec![0.0; n * c];
        dense::add_row_forward(&mut want, &x, &bias);
        let mut y = up(gpu, &poison(n * c));
        elementwise::add_row_forward(gpu, &mut y, &up(gpu, &x), &up(gpu, &bias)).unwrap();
        assert_close(&format!("add_row_forward N={n} C={c}"), &down(gpu, &y), &want, ATOL, RTOL);
    }
}

#[test]
fn add_row_backward_matches_cpu() {
    let Some(gpu) = gpu("add_row_backward_matches_cpu") else { return };
    for (i, (n, c)) in shapes().enumerate() {
        let seed = 1300 + 10 * i as u64;
        let (dx, dbias, dy) = (random(n * c, seed), random(c, seed + 1), random(n * c, seed + 2));
        let (mut want_dx, mut want_dbias) = (dx.clone(), dbias.clone());
        dense::add_row_backward(&mut want_dx, &mut want_dbias, &dy, c);
        let (mut dx_gpu, mut dbias_gpu) = (up(gpu, &dx), up(gpu, &dbias));
        elementwise::add_row_backward(gpu, &mut dx_gpu, &mut dbias_gpu, &up(gpu, &dy), c).unwrap();
        assert_close(&format!("add_row_backward dx N={n} C={c}"), &down(gpu, &dx_gpu), &want_dx, ATOL, RTOL);
        // dbias_c sums N values in [-1, 1): the GPU sums each column in row order, the twin
        // sums a range of rows per CPU thread and adds the partials. Two f32 orders of N such
        // terms differ by about N * eps at most (partial sums and their rounding errors both
        // grow like sqrt(N)); simulated, the excess over rtol stays under 0.25 * N * eps.
        let atol = ATOL + n as f32 * f32::EPSILON;
        assert_close(
            &format!("add_row_backward dbias N={n} C={c}"),
            &down(gpu, &dbias_gpu),
            &want_dbias,
            atol,
            RTOL,
        );
    }
}

#[test]
fn scale_rows_forward_matches_cpu() {
    let Some(gpu) = gpu("scale_rows_forward_matches_cpu") else { return };
    for (i, (m, c)) in shapes().enumerate() {
        let seed = 1400 + 10 * i as u64;
        let (x, w) = (random(m * c, seed), random(m, seed + 1));
        let mut want = vec![0.0; m * c];
        moe_ops::scale_rows_forward(&mut want, &x, &w, c);
        let mut y = up(gpu, &poison(m * c));
        elementwise::scale_rows_forward(gpu, &mut y, &up(gpu, &x), &up(gpu, &w), c).unwrap();
        assert_close(&format!("scale_rows_forward M={m} C={c}"), &down(gpu, &y), &want, ATOL, RTOL);
    }
}

#[test]
fn scale_rows_backward_matches_cpu() {
    let Some(gpu) = gpu("scale_rows_backward_matches_cpu") else { return };
    for (i, (m, c)) in shapes().enumerate() {
        let seed = 1500 + 10 * i as u64;
        let (dx, dw) = (random(m * c, seed), random(m, seed + 1));
        let (dy, x, w) = (random(m * c, seed + 2), random(m * c, seed + 3), random(m, seed + 4));
        let (mut want_dx, mut want_dw) = (dx.clone(), dw.clone());
        moe_ops::scale_rows_backward(&mut want_dx, &mut want_dw, &dy, &x, &w, c);
        let (mut dx_gpu, mut dw_gpu) = (up(gpu, &dx), up(gpu, &dw));
        let (dy, x, w) = (up(gpu, &dy), up(gpu, &x), up(gpu, &w));
        elementwise::scale_rows_backward(gpu, &mut dx_gpu, &mut dw_gpu, &dy, &x, &w, c).unwrap();
        assert_close(
            &format!("scale_rows_backward dx M={m} C={c}"),
            &down(gpu, &dx_gpu),
            &want_dx,
            ATOL,
            RTOL,
        );
        // dw_m sums C products in (-1, 1): a warp tree on the GPU, in order on the CPU. As for
        // add_row_backward's dbias, the two orders differ by about C * eps at most.
        let atol = ATOL + c as f32 * f32::EPSILON;
        assert_close(
            &format!("scale_rows_backward dw M={m} C={c}"),
            &down(gpu, &dw_gpu),
            &want_dw,
            atol,
            RTOL,
        );
    }
}

#[test]
fn topk_backward_matches_cpu() {
    let Some(gpu) = gpu("topk_backward_matches_cpu") else { return };
    for (i, (n, c)) in shapes().enumerate() {
        let mut ks = vec![1, 8.min(c), c];
        ks.dedup();
        for k in ks {
            let seed = 1600 + 10 * i as u64 + k as u64;
            // indices as the model gets them: distinct within a row, in value order
            let (mut values, mut indices) = (vec![0.0; n * k], vec![0u32; n * k]);
            moe_ops::topk_forward(&mut values, &mut indices, &random(n * c, seed), c, k);
            let (dx, dvalues) = (random(n * c, seed + 1), random(n * k, seed + 2));
            let mut want = dx.clone();
            moe_ops::topk_backward(&mut want, &dvalues, &indices, c, k);
            let mut dx_gpu = up(gpu, &dx);
            elementwise::topk_backward(gpu, &mut dx_gpu, &up(gpu, &dvalues), &up(gpu, &indices), c, k)
                .unwrap();
            assert_close(&format!("topk_backward N={n} C={c} K={k}"), &down(gpu, &dx_gpu), &want, ATOL, RTOL);
        }
    }
}
