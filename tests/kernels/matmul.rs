//! kernels/matmul.ptx against ops/matmul.rs (matmul_forward / matmul_backward, every layout
//! the tape builds), against a sequential-fma loop (matmul_f32's strides, bit for bit), and
//! against half::bf16 (to_bf16, bit for bit).
//!
//! C is poisoned with NaN before a forward; dA and dB (+=) start from the same random values
//! on both sides.

use super::{assert_close, gpu, poison, random};
use moe::cuda::matmul::{self, Strided};
use moe::cuda::{Buf, Gpu};
use moe::ops::matmul::{self as ops, MatmulDims};
use moe::rng::Rng;

// Each output sums up to 384 products of values in [-1, 1) (K = 256 in the forward; a shared
// B's dB sums batch * M = 3 * 128): the GPU in one running fma.rn sum in p order, the CPU's
// blocked GEMM in 256-long blocks, per batch entry, with its own grouping. Only the order of
// the f32 sums differs, by up to a few 1e-5 at 384 terms, hence atol 1e-5, not 1e-6. (The
// kernel's exact order replayed on the CPU for these inputs: worst 0.73 of atol + rtol * |C|,
// in a shared B's dB (384 terms); every other product under 0.1.)
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;

/// (M, N, K): one element, odd sizes below a tile, partial 16x16 tiles and a partial K step,
/// an N = 1 column (the load-balancing loss's (N, E) x (E, 1)), several tiles and K steps.
const SHAPES: [(usize, usize, usize); 5] = [(1, 1, 1), (3, 5, 7), (50, 33, 17), (64, 1, 16), (128, 96, 256)];

fn up<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, host: &[T]) -> Buf<T> {
    gpu.upload(host).unwrap()
}

fn down<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, buf: &Buf<T>) -> Vec<T> {
    gpu.download(buf).unwrap()
}

/// Every (trans_a, trans_b, b_shared) at batch 1 and 3 over SHAPES, and for b_shared && !trans_a
/// also the form Tape::matmul builds: (batch, M, K) rows collapsed into one (batch * M) x K
/// product at batch 1.
fn cases() -> Vec<MatmulDims> {
    let mut cases = Vec::new();
    for flags in 0..8 {
        let (trans_a, trans_b, b_shared) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        for batch in [1, 3] {
            for (m, n, k) in SHAPES {
                cases.push(MatmulDims { batch, m, k, n, trans_a, trans_b, b_shared });
                if b_shared && !trans_a && batch > 1 {
                    cases.push(MatmulDims { batch: 1, m: batch * m, k, n, trans_a, trans_b, b_shared });
                }
            }
        }
    }
    cases
}

/// Values in A, B and C for `d`.
fn lens(d: &MatmulDims) -> (usize, usize, usize) {
    let b_batch = if d.b_shared { 1 } else { d.batch };
    (d.batch * d.m * d.k, b_batch * d.k * d.n, d.batch * d.m * d.n)
}

#[test]
fn matmul_forward_matches_cpu() {
    let Some(gpu) = gpu("matmul_forward_matches_cpu") else { return };
    for (i, d) in cases().iter().enumerate() {
        let seed = 10 * i as u64;
        let (a_len, b_len, c_len) = lens(d);
        let (a, b) = (random(a_len, seed), random(b_len, seed + 1));
        let mut want = vec![0.0; c_len];
        ops::matmul_forward(&mut want, &a, &b, d);
        let mut c = up(gpu, &poison(c_len));
        matmul::matmul_forward(gpu, &mut c, &up(gpu, &a), &up(gpu, &b), d).unwrap();
        assert_close(&format!("matmul_forward {d:?}"), &down(gpu, &c), &want, ATOL, RTOL);
    }
}

#[test]
fn matmul_backward_matches_cpu() {
    let Some(gpu) = gpu("matmul_backward_matches_cpu") else { return };
    for (i, d) in cases().iter().enumerate() {
        let (a_len, b_len, c_len) = lens(d);
        // both gradients, and each alone (the other is None: not needed by the tape)
        for (with_da, with_db) in [(true, true), (true, false), (false, true)] {
            let seed = 1000 + 10 * i as u64 + 3 * u64::from(with_da) + u64::from(with_db);
            let (a, b, dc) = (random(a_len, seed), random(b_len, seed + 1), random(c_len, seed + 2));
            let (da, db) = (random(a_len, seed + 3), random(b_len, seed + 4));
            let (mut want_da, mut want_db) = (da.clone(), db.clone());
            let cpu_da = if with_da { Some(want_da.as_mut_slice()) } else { None };
            let cpu_db = if with_db { Some(want_db.as_mut_slice()) } else { None };
            ops::matmul_backward(cpu_da, cpu_db, &dc, &a, &b, d);
            let (mut da_gpu, mut db_gpu) = (up(gpu, &da), up(gpu, &db));
            let gpu_da = if with_da { Some(&mut da_gpu) } else { None };
            let gpu_db = if with_db { Some(&mut db_gpu) } else { None };
            let (dc, a, b) = (up(gpu, &dc), up(gpu, &a), up(gpu, &b));
            matmul::matmul_backward(gpu, gpu_da, gpu_db, &dc, &a, &b, d).unwrap();
            let what = format!("matmul_backward {d:?} (da: {with_da}, db: {with_db})");
            assert_close(&format!("{what} da"), &down(gpu, &da_gpu), &want_da, ATOL, RTOL);
            assert_close(&format!("{what} db"), &down(gpu, &db_gpu), &want_db, ATOL, RTOL);
        }
    }
}

/// The kernel's own order: C_z[i, j] (= or +=) one fma running sum over z (all of 0..batch when
/// c_bs = 0, else z alone) then p, starting from +0. f32::mul_add rounds once, like fma.rn.
fn sequential(c: &mut [f32], a: &[f32], b: &[f32], s: &Strided, accumulate: bool) {
    let groups: Vec<Vec<usize>> =
        if s.c_bs == 0 { vec![(0..s.batch).collect()] } else { (0..s.batch).map(|z| vec![z]).collect() };
    for zs in groups {
        let c_z = zs.first().map_or(0, |&z| z * s.c_bs);
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0.0f32;
                for &z in &zs {
                    for p in 0..s.k {
                        let x = a[z * s.a_bs + i * s.a_rs + p * s.a_cs];
                        let y = b[z * s.b_bs + p * s.b_rs + j * s.b_cs];
                        acc = x.mul_add(y, acc);
                    }
                }
                let out = &mut c[c_z + i * s.n + j];
                *out = if accumulate { *out + acc } else { acc };
            }
        }
    }
}

#[test]
fn matmul_f32_strided_matches_naive() {
    let Some(gpu) = gpu("matmul_f32_strided_matches_naive") else { return };
    let strided = |batch, m, n, k, a: [usize; 3], b: [usize; 3], c_bs| Strided {
        batch,
        m,
        n,
        k,
        a_bs: a[0],
        a_rs: a[1],
        a_cs: a[2],
        b_bs: b[0],
        b_rs: b[1],
        b_cs: b[2],
        c_bs,
    };
    let cases = [
        // padded rows of A, a transposed B shared by the batch, gaps between C's batch entries
        strided(3, 5, 7, 19, [5 * 23 + 4, 23, 1], [0, 1, 21], 5 * 7 + 3),
        // A read down its columns with interleaved batch entries, K past one 16-wide step
        strided(2, 18, 3, 20, [1, 2, 40], [3 * 20 + 1, 3, 1], 18 * 3),
        // c_bs = 0: every batch entry summed into one C
        strided(3, 4, 6, 5, [20, 5, 1], [30, 6, 1], 0),
        strided(3, 40, 21, 37, [40 * 37, 1, 40], [0, 21, 1], 0),
        // (N, E) x (E, 1)
        strided(1, 33, 1, 17, [0, 17, 1], [0, 1, 0], 33),
    ];
    for (i, s) in cases.iter().enumerate() {
        let last = |terms: [(usize, usize); 3]| {
            terms.iter().map(|&(count, stride)| (count - 1) * stride).sum::<usize>()
        };
        let a_len = last([(s.batch, s.a_bs), (s.m, s.a_rs), (s.k, s.a_cs)]) + 1;
        let b_len = last([(s.batch, s.b_bs), (s.k, s.b_rs), (s.n, s.b_cs)]) + 1;
        let c_len = if s.c_bs == 0 { s.m * s.n } else { (s.batch - 1) * s.c_bs + s.m * s.n };
        let seed = 2000 + 10 * i as u64;
        let (a, b) = (random(a_len, seed), random(b_len, seed + 1));
        for accumulate in [false, true] {
            // gaps in C keep their NaN (or random value): the kernel must not touch them
            let c = if accumulate { random(c_len, seed + 2) } else { poison(c_len) };
            let mut want = c.clone();
            sequential(&mut want, &a, &b, s, accumulate);
            let mut c_gpu = up(gpu, &c);
            matmul::matmul_f32(gpu, &mut c_gpu, &up(gpu, &a), &up(gpu, &b), s, accumulate).unwrap();
            let got = down(gpu, &c_gpu);
            for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "matmul_f32 {s:?} accumulate={accumulate} [{e}]: GPU {g} vs sequential {w}"
                );
            }
        }
    }
}

/// The bf16 edge cases: signed zeros and infinities, NaNs, rounding ties to even (1 + 2^-8
/// rounds down to 1, 1 + 3 * 2^-8 up to 1 + 2^-6), just past a tie, the largest f32 (rounds up
/// to inf), the smallest normal, and subnormals (ties and non-ties in the low 16 bits).
fn bf16_edges() -> Vec<f32> {
    let bits: [u32; 16] = [
        0x3F80_8000, // 1 + 2^-8: tie, rounds down to even
        0x3F81_8000, // 1 + 3 * 2^-8: tie, rounds up to even
        0x3F80_8001, // just past the tie: up
        0xBF80_8000, // -(1 + 2^-8)
        0x7F7F_FFFF, // f32::MAX: rounds to +inf
        0x7F7F_8000, // tie below inf, odd: rounds to +inf
        0x0080_0000, // smallest normal
        0x0000_0001, // smallest subnormal: rounds to +0
        0x0000_8000, // subnormal tie, even: +0
        0x0001_8000, // subnormal tie, odd: up
        0x0000_7FFF, // below the tie: +0
        0x807F_FFFF, // largest negative subnormal
        0x7FC0_0001, // quiet NaN with payload
        0x7F80_0001, // signalling NaN
        0xFF80_0001, // negative NaN
        0x3F7F_FFFF, // just below 1: rounds to 1
    ];
    let mut x = vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 1.0, -1.0];
    x.extend(bits.map(f32::from_bits));
    x
}

#[test]
fn to_bf16_matches_half() {
    let Some(gpu) = gpu("to_bf16_matches_half") else { return };
    for (i, n) in [1usize, 50, 783, 100_003].into_iter().enumerate() {
        // uniform values at every scale, then arbitrary bit patterns (every exponent, NaNs)
        let mut rng = Rng::new(3000 + i as u64);
        let mut x: Vec<f32> = random(n, 3100 + i as u64);
        for (j, v) in x.iter_mut().enumerate() {
            match j % 3 {
                0 => *v *= 2f32.powi(rng.below(250) as i32 - 125),
                1 => *v = f32::from_bits(rng.next_u64() as u32),
                _ => {}
            }
        }
        for (v, edge) in x.iter_mut().zip(bf16_edges()) {
            *v = edge;
        }
        let mut dst = up(gpu, &vec![0xDEADu16; n]);
        matmul::to_bf16(gpu, &mut dst, &up(gpu, &x)).unwrap();
        for (j, (&got, &v)) in down(gpu, &dst).iter().zip(&x).enumerate() {
            let want = half::bf16::from_f32(v).to_bits();
            let both_nan = half::bf16::from_bits(got).is_nan() && v.is_nan();
            assert!(
                got == want || both_nan,
                "to_bf16 n={n} [{j}]: {v:e} ({:#010x}) -> GPU {got:#06x}, half {want:#06x}",
                v.to_bits()
            );
        }
    }
}
