//! `moe bench`: throughput tables. Times are medians over repeats after one warm-up run.
//!
//! matmul: our GEMM in the three forms training uses (C = A·B, A·Bᵀ, Aᵀ·B), and, where
//! `python3` has numpy, numpy's BLAS on the same shapes in the same run.

use crate::cli::Args;
use crate::cpu::gemm::{gemm, Kernel, MatRef};
use crate::cpu::threads;
use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::time::Instant;

pub const HELP: &str = "moe bench [--reps N] [--threads N]\n\
  Prints GFLOP/s of the f32 matmul at the shapes the model uses, beside numpy's where\n\
  python3 with numpy is installed. --reps: timed repeats per entry (default 15).\n";

/// (M, K, N): C[M, N] = A[M, K] · B[K, N].
const SHAPES: [(usize, usize, usize); 3] = [(1024, 1024, 1024), (256, 1024, 4096), (4096, 256, 1024)];

/// The operand layouts: "NN" C = A·B (an input gradient, dX = dY·W), "NT" C = A·Bᵀ with B
/// stored (N, K) (a linear layer, y = x·Wᵀ), "TN" C = Aᵀ·B with A stored (K, M) (a weight
/// gradient, dW = dYᵀ·X).
const FORMS: [&str; 3] = ["NN", "NT", "TN"];

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["reps"])?;
    let reps = args.count("reps")?.unwrap_or(15);
    matmul_table(reps)
}

fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ours_gflops(m: usize, k: usize, n: usize, form: &str, reps: usize) -> f64 {
    let mut rng = Rng::new(1);
    let a = Tensor::uniform(&[m * k], -1.0, 1.0, &mut rng);
    let b = Tensor::uniform(&[k * n], -1.0, 1.0, &mut rng);
    let a_view = match form {
        "TN" => MatRef::row_major(a.data(), k, m).t(),
        _ => MatRef::row_major(a.data(), m, k),
    };
    let b_view = match form {
        "NT" => MatRef::row_major(b.data(), n, k).t(),
        _ => MatRef::row_major(b.data(), k, n),
    };
    let mut c = vec![0.0f32; m * n];
    let secs = median_seconds(reps, || gemm(&mut c, n, a_view, b_view, false));
    2.0 * (m * k * n) as f64 / secs / 1e9
}

/// numpy's GFLOP/s for one (shape, form), or why there is none. Timed right before ours for
/// the same entry, so both see the same machine load.
fn numpy_gflops(m: usize, k: usize, n: usize, form: &str, reps: usize) -> std::result::Result<f64, String> {
    let script = format!(
        r#"
import time, numpy as np
rng = np.random.default_rng(1)
m, k, n, form = {m}, {k}, {n}, "{form}"
a = rng.uniform(-1, 1, (k, m) if form == "TN" else (m, k)).astype(np.float32)
b = rng.uniform(-1, 1, (n, k) if form == "NT" else (k, n)).astype(np.float32)
A = a.T if form == "TN" else a
B = b.T if form == "NT" else b
A @ B
ts = []
for _ in range({reps}):
    t = time.perf_counter(); A @ B; ts.append(time.perf_counter() - t)
print(2 * m * k * n / sorted(ts)[len(ts) // 2] / 1e9)
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("python3 not runnable ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(if last.contains("No module named 'numpy'") {
            "numpy not installed (pip install numpy)".to_string()
        } else {
            format!("python3 failed: {last}")
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse::<f64>().map_err(|_| format!("unexpected numpy output '{}'", text.trim()))
}

fn matmul_table(reps: usize) -> Result<()> {
    println!(
        "matmul f32, C[M,N] = A[M,K]·B[K,N]; kernel {:?}, {} threads, median of {reps}",
        Kernel::detect(),
        threads::num_threads()
    );
    println!("| M×K×N | form | ours GFLOP/s | numpy GFLOP/s | ours/numpy |");
    println!("|---|---|---:|---:|---:|");
    let mut numpy_missing = None;
    for (m, k, n) in SHAPES {
        for form in FORMS {
            let numpy =
                if numpy_missing.is_none() { numpy_gflops(m, k, n, form, reps) } else { Err(String::new()) };
            let ours = ours_gflops(m, k, n, form, reps);
            let (np_cell, ratio) = match numpy {
                Ok(np) => (format!("{np:.1}"), format!("{:.2}", ours / np)),
                Err(why) => {
                    numpy_missing.get_or_insert(why);
                    ("–".to_string(), "–".to_string())
                }
            };
            println!("| {m}×{k}×{n} | {form} | {ours:.1} | {np_cell} | {ratio} |");
        }
    }
    if let Some(why) = numpy_missing {
        println!("(numpy column empty: {why})");
    }
    Ok(())
}
