//! The blocked SIMD GEMM against a naive triple loop and against the scalar micro-kernel,
//! and the matmul op's gradients against finite differences.

mod common;
use common::*;
use moe::cpu::gemm::{gemm_with, Kernel, MatRef};
use moe::rng::Rng;

/// Ragged sizes around the tile (6×16) and cache blocks (KC 256, MC 180, NC 1536).
const SIZES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (3, 5, 7),
    (6, 16, 16),
    (7, 17, 33),
    (50, 3, 1),
    (13, 300, 29),
    (181, 257, 65),
    (200, 40, 1600),
    (1, 783, 50),
];

fn naive(a: MatRef, b: MatRef, a_data: (&[f32], usize, usize), b_data: (&[f32], usize, usize)) -> Vec<f64> {
    // element (i, j) of a view with strides (rs, cs)
    let at = |d: &(&[f32], usize, usize), i: usize, j: usize| d.0[i * d.1 + j * d.2] as f64;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| at(&a_data, i, p) * at(&b_data, p, j)).sum();
        }
    }
    c
}

/// Every form (A or Aᵀ, B or Bᵀ), ldc > N, accumulate on and off, 1 and 2 threads.
fn check_kernel(kernel: Kernel) {
    let mut rng = Rng::new(7);
    for &(m, k, n) in &SIZES {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = rand(&[m * k], &mut rng);
            let b = rand(&[k * n], &mut rng);
            let (a_view, a_str) = if ta {
                (MatRef::row_major(a.data(), k, m).t(), (a.data(), 1, m))
            } else {
                (MatRef::row_major(a.data(), m, k), (a.data(), k, 1))
            };
            let (b_view, b_str) = if tb {
                (MatRef::row_major(b.data(), n, k).t(), (b.data(), 1, k))
            } else {
                (MatRef::row_major(b.data(), k, n), (b.data(), n, 1))
            };
            let want = naive(a_view, b_view, a_str, b_str);
            let ldc = n + 3;
            for threads in [1, 2] {
                for accumulate in [false, true] {
                    let init = rand(&[m * ldc], &mut rng);
                    let mut c = init.data().to_vec();
                    gemm_with(kernel, threads, &mut c, ldc, a_view, b_view, accumulate);
                    let mut worst: f64 = 0.0;
                    for i in 0..m {
                        for j in 0..ldc {
                            let got = c[i * ldc + j] as f64;
                            let before = init.data()[i * ldc + j] as f64;
                            if j >= n {
                                assert_eq!(got, before, "{kernel:?}: padding column {j} of C was written");
                                continue;
                            }
                            let expect = want[i * n + j] + if accumulate { before } else { 0.0 };
                            worst = worst.max((got - expect).abs() / (k as f64).sqrt().max(1.0));
                        }
                    }
                    assert!(
                        worst < 1e-5,
                        "{kernel:?} {m}×{k}×{n} ta={ta} tb={tb} threads={threads} acc={accumulate}: error {worst:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn scalar_kernel_matches_naive_loop() {
    check_kernel(Kernel::Scalar);
}

#[test]
fn simd_kernel_matches_naive_loop_and_scalar_kernel() {
    if Kernel::detect() != Kernel::Avx2Fma {
        println!("SKIPPED: this CPU has no AVX2+FMA; only the scalar kernel was checked");
        return;
    }
    check_kernel(Kernel::Avx2Fma);
    // And directly against the scalar kernel: the same sums, differing only by FMA rounding.
    let mut rng = Rng::new(11);
    for &(m, k, n) in &SIZES {
        let a = rand(&[m * k], &mut rng);
        let b = rand(&[k * n], &mut rng);
        let (av, bv) = (MatRef::row_major(a.data(), m, k), MatRef::row_major(b.data(), k, n));
        let (mut c_simd, mut c_scalar) = (vec![0.0; m * n], vec![0.0; m * n]);
        gemm_with(Kernel::Avx2Fma, 1, &mut c_simd, n, av, bv, false);
        gemm_with(Kernel::Scalar, 1, &mut c_scalar, n, av, bv, false);
        let err = rel_err(&to_f64(&c_simd), &to_f64(&c_scalar));
        println!("simd vs scalar {m}×{k}×{n}: rel err {err:.2e}");
        assert!(err < 1e-5, "simd vs scalar {m}×{k}×{n}: rel err {err:e}");
    }
}

#[test]
fn same_thread_count_gives_same_bits() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (300, 500, 200);
    let a = rand(&[m * k], &mut rng);
    let b = rand(&[k * n], &mut rng);
    let (av, bv) = (MatRef::row_major(a.data(), m, k), MatRef::row_major(b.data(), k, n));
    for threads in [1, 2, 3] {
        let mut c1 = vec![0.0; m * n];
        let mut c2 = vec![0.0; m * n];
        gemm_with(Kernel::detect(), threads, &mut c1, n, av, bv, false);
        gemm_with(Kernel::detect(), threads, &mut c2, n, av, bv, false);
        assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()), "threads={threads}");
    }
}

/// Reference: op(A)·op(B) per batch entry, B shared when it is 2-D.
fn matmul_case(
    name: &str,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    b_shared: bool,
) {
    let mut rng = Rng::new(5);
    let nb: usize = batch.iter().product();
    let mut a_shape = batch.to_vec();
    a_shape.extend(if ta { [k, m] } else { [m, k] });
    let mut b_shape = if b_shared { vec![] } else { batch.to_vec() };
    b_shape.extend(if tb { [n, k] } else { [k, n] });
    let inputs = [param(rand(&a_shape, &mut rng)), param(rand(&b_shape, &mut rng))];
    check_op(
        name,
        &inputs,
        |t, v| t.matmul(v[0], v[1], ta, tb),
        |x| {
            let mut out = Vec::new();
            for i in 0..nb {
                let a = &x[0][i * m * k..(i + 1) * m * k];
                let bi = if b_shared { 0 } else { i };
                let b = &x[1][bi * k * n..(bi + 1) * k * n];
                let a = if ta { transpose(a, k, m) } else { a.to_vec() };
                let b = if tb { transpose(b, n, k) } else { b.to_vec() };
                out.extend(matmul_ref(&a, &b, m, k, n));
            }
            out
        },
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn matmul_gradients() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let tag = format!("matmul ta={ta} tb={tb}");
        matmul_case(&format!("{tag} 2-D"), &[], (5, 7, 3), (ta, tb), false);
        matmul_case(&format!("{tag} size-1"), &[], (1, 1, 1), (ta, tb), false);
        matmul_case(&format!("{tag} batched"), &[2, 3], (4, 9, 17), (ta, tb), false);
        matmul_case(&format!("{tag} shared B"), &[3], (7, 5, 6), (ta, tb), true);
    }
}

#[test]
#[should_panic(
    expected = "matmul(trans_a=false, trans_b=false): A [2, 3] and B [4, 5]: inner dimensions 3 and 4 differ"
)]
fn matmul_shape_mismatch_names_both_shapes() {
    let mut t = moe::autograd::Tape::new();
    let a = t.param(moe::tensor::Tensor::zeros(&[2, 3]));
    let b = t.param(moe::tensor::Tensor::zeros(&[4, 5]));
    t.matmul(a, b, false, false);
}

/// Reference: each expert's rows times that expert's weight, transposed.
fn grouped_ref(x: &[f64], w: &[f64], offsets: &[usize], k: usize, n: usize) -> Vec<f64> {
    let mut y = Vec::new();
    for (e, r) in offsets.windows(2).enumerate() {
        let w_t = transpose(&w[e * n * k..(e + 1) * n * k], n, k);
        y.extend(matmul_ref(&x[r[0] * k..r[1] * k], &w_t, r[1] - r[0], k, n));
    }
    y
}

#[test]
fn grouped_matmul_gradients() {
    let mut rng = Rng::new(8);
    // (offsets, K, N): ragged groups, empty experts at the start, middle and end, one row.
    let cases: [(&[usize], usize, usize); 4] =
        [(&[0, 3, 3, 7, 12], 5, 4), (&[0, 0, 2, 2], 3, 6), (&[0, 1], 1, 1), (&[0, 40, 41, 90, 90], 17, 9)];
    for (offsets, k, n) in cases {
        let (e, m) = (offsets.len() - 1, offsets[offsets.len() - 1]);
        let inputs = [param(rand(&[m, k], &mut rng)), param(rand(&[e, n, k], &mut rng))];
        check_op(
            &format!("grouped_matmul offsets {offsets:?}"),
            &inputs,
            |t, v| t.grouped_matmul(v[0], v[1], offsets),
            |x| grouped_ref(&x[0], &x[1], offsets, k, n),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
#[should_panic(
    expected = "grouped_matmul: x [5, 3] and w [2, 4, 3]: offsets [0, 2, 4] must rise from 0 to M = 5"
)]
fn grouped_matmul_offsets_must_cover_the_rows() {
    let mut t = moe::autograd::Tape::new();
    let x = t.param(moe::tensor::Tensor::zeros(&[5, 3]));
    let w = t.param(moe::tensor::Tensor::zeros(&[2, 4, 3]));
    t.grouped_matmul(x, w, &[0, 2, 4]);
}
