//! kernels/rope.ptx against ops/attention.rs (rope_forward, rope_backward).

use super::{assert_close, gpu, poison, random};
use moe::cuda::rope;
use moe::ops::attention::{rope_backward, rope_forward};

/// (B, T, H) × D × pos0: one token, a pair count not a multiple of the 256-thread block, and
/// a KV-cache offset (pos0 = 7).
fn shapes() -> Vec<[usize; 5]> {
    let mut shapes = Vec::new();
    for d in [8, 64, 128] {
        for pos0 in [0, 7] {
            for [b, t, h] in [[1, 1, 1], [2, 33, 3], [3, 5, 4]] {
                shapes.push([b, t, h, d, pos0]);
            }
        }
    }
    shapes
}

const THETA: f32 = 10_000.0;

#[test]
fn rope_forward_matches_cpu() {
    let Some(gpu) = gpu("rope_forward_matches_cpu") else { return };
    for (n, [b, t, h, d, pos0]) in shapes().into_iter().enumerate() {
        let x = random(b * t * h * d, n as u64);
        let mut want = vec![0.0; x.len()];
        rope_forward(&mut want, &x, pos0, THETA, [b, t, h, d]);
        let mut y_gpu = gpu.upload(&poison(x.len())).unwrap();
        rope::rope_forward(gpu, &mut y_gpu, &gpu.upload(&x).unwrap(), pos0, THETA, [b, t, h, d]).unwrap();
        let what = format!("rope_forward (B, T, H, D) = ({b}, {t}, {h}, {d}), pos0 {pos0}");
        assert_close(&what, &gpu.download(&y_gpu).unwrap(), &want, 1e-6, 1e-5);
    }
}

#[test]
fn rope_backward_matches_cpu() {
    let Some(gpu) = gpu("rope_backward_matches_cpu") else { return };
    for (n, [b, t, h, d, pos0]) in shapes().into_iter().enumerate() {
        let (dy, dx) = (random(b * t * h * d, 2 * n as u64), random(b * t * h * d, 2 * n as u64 + 1));
        let mut want = dx.clone();
        rope_backward(&mut want, &dy, pos0, THETA, [b, t, h, d]);
        let mut dx_gpu = gpu.upload(&dx).unwrap();
        rope::rope_backward(gpu, &mut dx_gpu, &gpu.upload(&dy).unwrap(), pos0, THETA, [b, t, h, d]).unwrap();
        let what = format!("rope_backward (B, T, H, D) = ({b}, {t}, {h}, {d}), pos0 {pos0}");
        assert_close(&what, &gpu.download(&dx_gpu).unwrap(), &want, 1e-6, 1e-5);
    }
}
