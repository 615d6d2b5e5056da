//! kernels/optim.ptx against src/optim.rs. Every kernel does the CPU twin's IEEE operations in
//! the CPU twin's order (AdamW with no fused multiply-adds; the norm's chunk sums in f64 in
//! index order, added on the host in chunk order; one multiply to clip): bit for bit, atol 0,
//! rtol 0.

use super::{assert_close, gpu, random, shared_gpu};
use moe::cuda::optim;
use moe::optim::{adamw_update, clip_grad_norm, global_norm, AdamWConfig, AdamWScalars};
use moe::tensor::Tensor;

const SIZES: [usize; 6] = [1, 3, 50, 783, 4097, 100_003];

#[test]
fn adamw_update_matches_cpu_over_several_steps() {
    let Some(gpu) = gpu("adamw_update_matches_cpu_over_several_steps") else { return };
    let configs = [
        AdamWConfig::default(),
        AdamWConfig { lr: 1e-2, beta1: 0.8, beta2: 0.999, eps: 1e-6, weight_decay: 0.0 },
    ];
    for (k, config) in configs.into_iter().enumerate() {
        for (i, n) in SIZES.into_iter().enumerate() {
            let seed = 100 * (10 * k + i) as u64;
            let mut p = random(n, seed);
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            let (mut p_gpu, mut m_gpu, mut v_gpu) =
                (gpu.upload(&p).unwrap(), gpu.upload(&m).unwrap(), gpu.upload(&v).unwrap());
            for t in 1..=5u64 {
                // Gradients of a few magnitudes, down to where eps matters.
                let g: Vec<f32> =
                    random(n, seed + t).into_iter().map(|x| x * 10f32.powi(-(t as i32))).collect();
                let lr = config.lr as f32 * (0.5 + 0.1 * t as f32);
                let s = AdamWScalars::new(&config, lr, t);
                adamw_update(&mut p, &mut m, &mut v, &g, &s);
                optim::adamw_update(gpu, &mut p_gpu, &mut m_gpu, &mut v_gpu, &gpu.upload(&g).unwrap(), &s)
                    .unwrap();
                let what = |x: &str| format!("adamw_update {x} config {k} n={n} step {t}");
                assert_close(&what("p"), &gpu.download(&p_gpu).unwrap(), &p, 0.0, 0.0);
                assert_close(&what("m"), &gpu.download(&m_gpu).unwrap(), &m, 0.0, 0.0);
                assert_close(&what("v"), &gpu.download(&v_gpu).unwrap(), &v, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn global_norm_matches_cpu_bit_for_bit() {
    let Some(gpu) = shared_gpu("global_norm_matches_cpu_bit_for_bit") else { return };
    // Sizes around the chunk (4096) and several tensors together.
    let sizes = [1, 3, 50, 783, 4095, 4096, 4097, 100_003, 1_000_000];
    let tensors: Vec<Tensor> =
        sizes.iter().enumerate().map(|(i, &n)| Tensor::new(&[n], random(n, 7 + i as u64))).collect();
    for t in &tensors {
        let want = global_norm(&[t]);
        let got = global_norm(&[&t.to_gpu(gpu)]);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "global_norm n={}: GPU {got} vs CPU {want}",
            t.data().len()
        );
    }
    let want = global_norm(&tensors.iter().collect::<Vec<_>>());
    let on_gpu: Vec<Tensor> = tensors.iter().map(|t| t.to_gpu(gpu)).collect();
    let got = global_norm(&on_gpu.iter().collect::<Vec<_>>());
    assert_eq!(got.to_bits(), want.to_bits(), "global_norm of all: GPU {got} vs CPU {want}");
}

#[test]
fn scale_matches_cpu() {
    let Some(gpu) = gpu("scale_matches_cpu") else { return };
    for (i, n) in SIZES.into_iter().enumerate() {
        let x = random(n, 50 + i as u64);
        let s = 0.3719f32;
        let want: Vec<f32> = x.iter().map(|&v| v * s).collect();
        let mut got = gpu.upload(&x).unwrap();
        optim::scale(gpu, &mut got, s).unwrap();
        assert_close(&format!("scale n={n}"), &gpu.download(&got).unwrap(), &want, 0.0, 0.0);
    }
}

#[test]
fn clip_grad_norm_matches_cpu() {
    let Some(gpu) = shared_gpu("clip_grad_norm_matches_cpu") else { return };
    // ‖g‖ is about 200 here: max_norm 1 clips, max_norm 1e4 does not.
    for max_norm in [1.0f32, 1e4] {
        let grads: Vec<Tensor> =
            SIZES.iter().enumerate().map(|(i, &n)| Tensor::new(&[n], random(n, 90 + i as u64))).collect();
        let mut on_gpu: Vec<Tensor> = grads.iter().map(|g| g.to_gpu(gpu)).collect();
        let mut want = grads.clone();
        let want_norm = clip_grad_norm(&mut want.iter_mut().collect::<Vec<_>>(), max_norm);
        let got_norm = clip_grad_norm(&mut on_gpu.iter_mut().collect::<Vec<_>>(), max_norm);
        assert_eq!(
            got_norm.to_bits(),
            want_norm.to_bits(),
            "clip_grad_norm: GPU norm {got_norm} vs CPU {want_norm}"
        );
        for (got, w) in on_gpu.iter().zip(&want) {
            let what = format!("clip_grad_norm max_norm={max_norm} n={}", w.data().len());
            assert_close(&what, got.to_host().data(), w.data(), 0.0, 0.0);
        }
    }
}
