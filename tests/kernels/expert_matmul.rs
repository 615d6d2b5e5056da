//! kernels/expert_matmul.ptx against ops/matmul.rs (grouped_matmul_forward / _backward).
//!
//! The reference is the f32 twin run on the same inputs rounded to bf16 and back, so only the
//! order of the f32 sums differs: atol 1e-2, rtol 1e-2 (the bf16-input tolerance of main.rs).
//! y is poisoned with NaN before the forward; dx and dw (+=) start from the same random values
//! on both sides.

use super::{assert_close, gpu, poison, random};
use moe::cuda::expert_matmul::{self, row_tiles, to_bf16_bits, TILE};
use moe::cuda::Gpu;
use moe::ops::matmul::{grouped_matmul_backward, grouped_matmul_forward};
use moe::rng::Rng;

const ATOL: f32 = 1e-2;
const RTOL: f32 = 1e-2;

/// `random(n, seed)` as bf16 bit patterns, and the f32 values those patterns stand for.
fn random_bf16(n: usize, seed: u64) -> (Vec<u16>, Vec<f32>) {
    let bits = to_bf16_bits(&random(n, seed));
    let values = bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
    (bits, values)
}

/// offsets (E + 1) from each expert's row count.
fn offsets_of(counts: &[usize]) -> Vec<usize> {
    let mut offsets = vec![0];
    for &c in counts {
        offsets.push(offsets[offsets.len() - 1] + c);
    }
    offsets
}

/// All three products for experts with `counts` rows each, x (M, K), w (E, N, K), dy (M, N).
fn check(gpu: &Gpu, counts: &[usize], n: usize, k: usize, seed: u64) {
    let offsets = offsets_of(counts);
    let (e, m) = (counts.len(), offsets[counts.len()]);
    let what = |product: &str| format!("{product} E={e} M={m} N={n} K={k}");
    let (x_bits, x) = random_bf16(m * k, seed);
    let (w_bits, w) = random_bf16(e * n * k, seed + 1);
    let (dy_bits, dy) = random_bf16(m * n, seed + 2);
    let x_gpu = gpu.upload(&x_bits).unwrap();
    let w_gpu = gpu.upload(&w_bits).unwrap();
    let dy_gpu = gpu.upload(&dy_bits).unwrap();

    // forward: y = x·wᵀ per expert, every row overwritten
    let mut y_want = vec![0.0; m * n];
    grouped_matmul_forward(&mut y_want, &x, &w, &offsets, k, n);
    let mut y = gpu.upload(&poison(m * n)).unwrap();
    expert_matmul::grouped_matmul_forward(gpu, &mut y, &x_gpu, &w_gpu, &offsets, k, n).unwrap();
    assert_close(&what("forward"), &gpu.download(&y).unwrap(), &y_want, ATOL, RTOL);

    // backward: dx += dy·w[e] and dw[e] += dyᵀ·x, from the same random start on both sides
    let (mut dx_want, mut dw_want) = (random(m * k, seed + 3), random(e * n * k, seed + 4));
    let mut dx = gpu.upload(&dx_want).unwrap();
    let mut dw = gpu.upload(&dw_want).unwrap();
    grouped_matmul_backward(&mut dx_want, &mut dw_want, &dy, &x, &w, &offsets, k, n);
    expert_matmul::grouped_matmul_backward_input(gpu, &mut dx, &dy_gpu, &w_gpu, &offsets, k, n).unwrap();
    expert_matmul::grouped_matmul_backward_weight(gpu, &mut dw, &dy_gpu, &x_gpu, &offsets, k, n).unwrap();
    assert_close(&what("backward input"), &gpu.download(&dx).unwrap(), &dx_want, ATOL, RTOL);
    assert_close(&what("backward weight"), &gpu.download(&dw).unwrap(), &dw_want, ATOL, RTOL);
}

#[test]
fn grouped_matmul_dense_matches_cpu() {
    let Some(gpu) = gpu("grouped_matmul_dense_matches_cpu") else { return };
    // One group: the dense projections and lm_head.
    let shapes = [(1, 8, 8), (3, 64, 40), (50, 136, 72), (783, 256, 128), (4096, 512, 256)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        check(gpu, &[m], n, k, 10 * i as u64);
    }
}

#[test]
fn grouped_matmul_ragged_matches_cpu() {
    let Some(gpu) = gpu("grouped_matmul_ragged_matches_cpu") else { return };
    // Empty experts first, last and between; a group of 1 row; 129 = one tile and one row.
    let counts = [0, 5, 129, 0, 64, 1, 300, 0];
    check(gpu, &counts, 200, 72, 100);
    check(gpu, &counts, 72, 200, 110);
    // Exactly one and two tiles' worth of rows, then one short of a tile.
    check(gpu, &[TILE, 0, 2 * TILE, TILE - 1], 128, 128, 120);
    // Only the last expert has rows.
    check(gpu, &[0, 0, 7], 8, 16, 130);
    // 64 experts, about 2000 rows: random counts, every seventh expert empty, one of 128.
    let mut rng = Rng::new(140);
    let mut counts: Vec<usize> = (0..64).map(|e| if e % 7 == 3 { 0 } else { rng.below(63) }).collect();
    counts[10] = TILE;
    check(gpu, &counts, 136, 264, 150);
}

#[test]
fn row_tiles_never_span_two_experts() {
    // Runs without a GPU: the table the forward and backward-input launches read.
    let offsets = offsets_of(&[0, 5, 129, 0, 128, 1]);
    let want: Vec<u32> = vec![
        1, 0, 5, //
        2, 5, 133, //
        2, 133, 134, //
        4, 134, 262, //
        5, 262, 263,
    ];
    assert_eq!(row_tiles(&offsets), want);
    assert!(row_tiles(&[0, 0, 0]).is_empty());
}
