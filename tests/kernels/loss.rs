//! kernels/loss.ptx against ops/loss.rs. The GPU's exp and ln (ex2.approx, lg2.approx) and its
//! tree-ordered row sums differ from the CPU's by float rounding: f32 tolerances, atol 1e-6,
//! rtol 1e-5. The loss's final mean is the CPU's own f64 arithmetic on the host, so it
//! differs only through lse.

use super::{assert_close, gpu, poison, random};
use moe::cuda::loss;
use moe::ops::loss::{cross_entropy_backward, cross_entropy_forward, IGNORE_INDEX};
use moe::rng::Rng;

const ROWS: [usize; 4] = [1, 3, 50, 783];
const VOCAB: [usize; 4] = [1, 7, 1000, 50304];

/// n targets in 0..v, about one in four `IGNORE_INDEX` (never the first row, so every case
/// counts at least one).
fn targets(n: usize, v: usize, seed: u64) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| if i > 0 && rng.below(4) == 0 { IGNORE_INDEX } else { rng.below(v) as i32 }).collect()
}

/// Logits spread over [-3, 3), so the softmax is not flat.
fn logits(len: usize, seed: u64) -> Vec<f32> {
    random(len, seed).into_iter().map(|x| 3.0 * x).collect()
}

#[test]
fn cross_entropy_forward_matches_cpu() {
    let Some(gpu) = gpu("cross_entropy_forward_matches_cpu") else { return };
    for (i, (n, v)) in ROWS.into_iter().flat_map(|n| VOCAB.map(|v| (n, v))).enumerate() {
        let (x, t) = (logits(n * v, 10 * i as u64), targets(n, v, 10 * i as u64 + 1));
        let mut want_lse = vec![0.0; n];
        let want = cross_entropy_forward(&mut want_lse, &x, &t, IGNORE_INDEX, v);
        let mut lse = gpu.upload(&poison(n)).unwrap();
        let got = loss::cross_entropy_forward(gpu, &mut lse, &gpu.upload(&x).unwrap(), &t, IGNORE_INDEX, v)
            .unwrap();
        assert_close(
            &format!("cross_entropy lse N={n} V={v}"),
            &gpu.download(&lse).unwrap(),
            &want_lse,
            1e-6,
            1e-5,
        );
        assert_close(&format!("cross_entropy loss N={n} V={v}"), &[got], &[want], 1e-6, 1e-5);
    }
}

#[test]
fn cross_entropy_backward_matches_cpu() {
    let Some(gpu) = gpu("cross_entropy_backward_matches_cpu") else { return };
    for (i, (n, v)) in ROWS.into_iter().flat_map(|n| VOCAB.map(|v| (n, v))).enumerate() {
        let seed = 10 * i as u64;
        let (x, t, dlogits) = (logits(n * v, seed), targets(n, v, seed + 1), random(n * v, seed + 2));
        let dloss = 0.7;
        // Both sides use the CPU's lse: this checks the backward alone.
        let mut lse = vec![0.0; n];
        cross_entropy_forward(&mut lse, &x, &t, IGNORE_INDEX, v);
        let mut want = dlogits.clone();
        cross_entropy_backward(&mut want, dloss, &lse, &x, &t, IGNORE_INDEX, v);
        let mut got = gpu.upload(&dlogits).unwrap();
        let (lse, x) = (gpu.upload(&lse).unwrap(), gpu.upload(&x).unwrap());
        loss::cross_entropy_backward(gpu, &mut got, dloss, &lse, &x, &t, IGNORE_INDEX, v).unwrap();
        assert_close(
            &format!("cross_entropy dlogits N={n} V={v}"),
            &gpu.download(&got).unwrap(),
            &want,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn cross_entropy_with_every_row_ignored_is_zero_with_no_gradient() {
    let Some(gpu) = gpu("cross_entropy_with_every_row_ignored_is_zero_with_no_gradient") else { return };
    for (n, v) in [(1, 7), (50, 1000)] {
        let x = logits(n * v, 5);
        let t = vec![IGNORE_INDEX; n];
        let mut want_lse = vec![0.0; n];
        assert_eq!(cross_entropy_forward(&mut want_lse, &x, &t, IGNORE_INDEX, v), 0.0);
        let mut lse = gpu.upload(&poison(n)).unwrap();
        let x_gpu = gpu.upload(&x).unwrap();
        let got = loss::cross_entropy_forward(gpu, &mut lse, &x_gpu, &t, IGNORE_INDEX, v).unwrap();
        assert_eq!(got, 0.0, "cross_entropy loss with every row ignored (N={n} V={v})");
        assert_close(
            &format!("cross_entropy lse, all ignored, N={n}"),
            &gpu.download(&lse).unwrap(),
            &want_lse,
            1e-6,
            1e-5,
        );
        let dlogits = random(n * v, 6);
        let mut got = gpu.upload(&dlogits).unwrap();
        loss::cross_entropy_backward(gpu, &mut got, 1.0, &lse, &x_gpu, &t, IGNORE_INDEX, v).unwrap();
        assert_close(
            &format!("cross_entropy dlogits, all ignored, N={n}"),
            &gpu.download(&got).unwrap(),
            &dlogits,
            0.0,
            0.0,
        );
    }
}
