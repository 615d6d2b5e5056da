//! Every PTX kernel against its CPU twin, on fresh random inputs at several sizes (ragged
//! expert groups, empty experts, sizes that are not multiples of a tile). Outputs are
//! poisoned with NaN before each launch, so an element a kernel forgets to write fails.
//! Tolerances (the device tool's METHOD.md): f32 math 1e-5 relative; bf16 inputs 1e-2.
//!
//! Build with `--features cuda` (`make test` does). Without a GPU, each test writes
//! "SKIP <test>: <why>" to stderr (past the test harness's capture) and passes.

#![cfg(feature = "cuda")]

mod attention;
mod elementwise;
mod embedding;
mod expert_matmul;
mod loss;
mod matmul;
mod model;
mod optim;
mod rope;
mod router;
mod rows;

use moe::cuda::Gpu;
use moe::rng::Rng;
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// The GPU, or None after saying why the calling test is skipped.
pub fn gpu(test: &str) -> Option<&'static Gpu> {
    shared_gpu(test).map(|gpu| &**gpu)
}

/// The GPU as the tensors hold it (shared), or None after saying why the test is skipped.
pub fn shared_gpu(test: &str) -> Option<&'static Arc<Gpu>> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    match GPU.get_or_init(|| Gpu::open(0).map(Arc::new).map_err(|e| e.to_string().replace('\n', " "))) {
        Ok(gpu) => Some(gpu),
        Err(why) => {
            // Straight to the stream: the harness captures print!/eprint!, not this.
            let _ = writeln!(std::io::stderr(), "SKIP {test}: no GPU ({why})");
            None
        }
    }
}

/// n values uniform in [-1, 1), from `seed`.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect()
}

/// n NaNs: the contents of an output buffer before a kernel writes it.
pub fn poison(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// Fails unless |got − want| ≤ atol + rtol·|want| everywhere; prints the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        assert!(excess <= 0.0 && !g.is_nan(), "{what}[{i}]: GPU {g} vs CPU {w} (atol {atol}, rtol {rtol})");
        if (g - w).abs() > worst.1 {
            worst = (i, (g - w).abs());
        }
    }
    let _ = writeln!(std::io::stderr(), "{what}: worst |gpu - cpu| = {:.3e} at {}", worst.1, worst.0);
}
