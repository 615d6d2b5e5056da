//! kernels/attention.ptx against ops/attention.rs (attention_forward, attention_backward).

use super::{assert_close, gpu, poison, random};
use moe::cuda::attention;
use moe::ops::attention::{attention_backward, attention_forward, AttentionDims};

// Each score is a dot product over D and each output a sum over up to S = 257 keys, summed in
// another order on the GPU (fma per lane, then a warp butterfly) than in the CPU's GEMMs, and
// the GPU's exp and ln are ex2.approx and lg2.approx: atol 1e-5 and rtol 1e-4, not the f32
// default 1e-6 / 1e-5.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

/// (B, T, S, H, Hkv, D): S = T (training), then KV-cache steps (S > T), then D not a multiple of
/// 32 and the largest D (all 8 chunks of a warp's row).
const SHAPES: [(usize, usize, usize, usize, usize, usize); 9] = [
    (1, 1, 1, 1, 1, 8),
    (2, 5, 5, 4, 2, 16),
    (1, 33, 33, 4, 4, 64),
    (2, 100, 100, 8, 2, 64),
    (1, 257, 257, 2, 1, 128),
    (2, 1, 20, 4, 2, 64),
    (1, 3, 20, 4, 1, 16),
    (1, 7, 7, 3, 3, 40),
    (2, 9, 9, 2, 1, 256),
];

fn dims_of(n: usize) -> AttentionDims {
    let (b, t, s, h, hkv, d) = SHAPES[n];
    AttentionDims { b, t, s, h, hkv, d }
}

/// Random q (B, T, H, D), k and v (B, S, Hkv, D) from `seed`.
fn inputs(dims: AttentionDims, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttentionDims { b, t, s, h, hkv, d } = dims;
    (random(b * t * h * d, seed), random(b * s * hkv * d, seed + 1), random(b * s * hkv * d, seed + 2))
}

#[test]
fn attention_forward_matches_cpu() {
    let Some(gpu) = gpu("attention_forward_matches_cpu") else { return };
    for n in 0..SHAPES.len() {
        let dims = dims_of(n);
        let (q, k, v) = inputs(dims, 10 * n as u64);
        let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; dims.b * dims.h * dims.t]);
        attention_forward(&mut out, &mut lse, &q, &k, &v, dims);
        let (mut out_gpu, mut lse_gpu) =
            (gpu.upload(&poison(out.len())).unwrap(), gpu.upload(&poison(lse.len())).unwrap());
        let (q_gpu, k_gpu, v_gpu) =
            (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap(), gpu.upload(&v).unwrap());
        attention::attention_forward(gpu, &mut out_gpu, &mut lse_gpu, &q_gpu, &k_gpu, &v_gpu, dims).unwrap();
        assert_close(
            &format!("attention_forward out {dims:?}"),
            &gpu.download(&out_gpu).unwrap(),
            &out,
            ATOL,
            RTOL,
        );
        assert_close(
            &format!("attention_forward lse {dims:?}"),
            &gpu.download(&lse_gpu).unwrap(),
            &lse,
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn attention_backward_matches_cpu() {
    let Some(gpu) = gpu("attention_backward_matches_cpu") else { return };
    for n in 0..SHAPES.len() {
        let dims = dims_of(n);
        let seed = 10 * n as u64;
        let (q, k, v) = inputs(dims, seed);
        // the saved out and lse come from the CPU forward, so both sides start from the same
        let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; dims.b * dims.h * dims.t]);
        attention_forward(&mut out, &mut lse, &q, &k, &v, dims);
        let dout = random(q.len(), seed + 3);
        // dq, dk, dv are accumulated into: both sides start from the same random values
        let (dq, dk, dv) = (random(q.len(), seed + 4), random(k.len(), seed + 5), random(v.len(), seed + 6));
        let (mut dq_want, mut dk_want, mut dv_want) = (dq.clone(), dk.clone(), dv.clone());
        attention_backward(&mut dq_want, &mut dk_want, &mut dv_want, &dout, &lse, &out, &q, &k, &v, dims);
        let up = |x: &[f32]| gpu.upload(x).unwrap();
        let (mut dq_gpu, mut dk_gpu, mut dv_gpu) = (up(&dq), up(&dk), up(&dv));
        let (dout_gpu, lse_gpu, out_gpu) = (up(&dout), up(&lse), up(&out));
        let (q_gpu, k_gpu, v_gpu) = (up(&q), up(&k), up(&v));
        attention::attention_backward(
            gpu,
            &mut dq_gpu,
            &mut dk_gpu,
            &mut dv_gpu,
            &dout_gpu,
            &lse_gpu,
            &out_gpu,
            &q_gpu,
            &k_gpu,
            &v_gpu,
            dims,
        )
        .unwrap();
        for (name, got, want) in
            [("dq", &dq_gpu, &dq_want), ("dk", &dk_gpu, &dk_want), ("dv", &dv_gpu, &dv_want)]
        {
            assert_close(
                &format!("attention_backward {name} {dims:?}"),
                &gpu.download(got).unwrap(),
                want,
                ATOL,
                RTOL,
            );
        }
    }
}
