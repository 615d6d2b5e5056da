//! `moe bench --only gpu` (`make bench-gpu`): the two MoE kernels on the GPU beside PyTorch on
//! the same GPU and shapes, run by the python in `MOE_BENCH_PYTHON` (default python3) where it
//! has torch with CUDA.
//!
//! router: `router_topk_forward` (softmax + top-k in one pass) in GB/s of compulsory traffic
//! (read the logits, write the probabilities, the indices and the weights), against the
//! measured device-to-device copy bandwidth (target: 70 %), beside `torch.softmax` +
//! `torch.topk` on the same logits.
//! expert matmul: the grouped BF16 matmul's three products at OLMoE-1B-7B's expert shapes
//! (d 2048, expert width 1024, 64 experts, top-8, 8192 tokens: 1024 rows per expert), in
//! TFLOP/s, beside `torch.matmul` (cuBLAS) on each expert's block in turn (target: 50 %).
//! Times: the median of 5 runs, each 20 launches back to back then one synchronize, after a
//! warm-up.

use crate::error::{Error, Result};

/// The router shapes: (tokens N, experts E, top K).
pub const ROUTER_SHAPES: [(usize, usize, usize); 4] =
    [(8192, 64, 8), (131072, 64, 8), (131072, 8, 2), (32768, 256, 16)];
/// OLMoE-1B-7B's experts: hidden d, expert width F, experts E, top K, tokens.
pub const EXPERTS: (usize, usize, usize, usize, usize) = (2048, 1024, 64, 8, 8192);

#[cfg(not(feature = "cuda"))]
pub fn gpu_table(_reps: usize) -> Result<()> {
    Err(Error::invalid("moe bench --only gpu", "this moe binary was built without the `cuda` feature")
        .with_hint("`make bench-gpu` builds with it and runs this table (on a machine with a GPU)"))
}

#[cfg(feature = "cuda")]
pub use with_cuda::gpu_table;

#[cfg(feature = "cuda")]
mod with_cuda {
    use super::{Error, Result, EXPERTS, ROUTER_SHAPES};
    use crate::bench::run_python;
    use crate::cuda::{expert_matmul, router, Buf, Gpu};
    use crate::rng::Rng;
    use std::time::Instant;

    const INNER: usize = 20;

    /// Seconds per call of `f`: the median over `reps` runs of INNER calls and one synchronize.
    fn seconds(gpu: &Gpu, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        f()?;
        gpu.synchronize()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            for _ in 0..INNER {
                f()?;
            }
            gpu.synchronize()?;
            times.push(start.elapsed().as_secs_f64() / INNER as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    fn random_bf16_bits(n: usize, scale: f32, rng: &mut Rng) -> Vec<u16> {
        (0..n).map(|_| half::bf16::from_f32((rng.normal() as f32) * scale).to_bits()).collect()
    }

    /// torch's seconds per call for each line of `script`'s output, keyed by its first words.
    const TORCH_SCRIPT: &str = r#"
import sys, torch
assert torch.cuda.is_available(), "torch has no CUDA device"
reps, inner = int(sys.argv[1]), 20
def seconds(f):
    f(); torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True); end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner): f()
        end.record(); end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return sorted(times)[len(times) // 2]
for shape in sys.argv[2].split(","):
    n, e, k = map(int, shape.split("x"))
    logits = torch.randn(n, e, device="cuda")
    def route():
        p = torch.softmax(logits, dim=-1)
        return torch.topk(p, k, dim=-1)
    print(f"router {shape} {seconds(route)}")
d, f, e, rows = map(int, sys.argv[3].split("x"))
x = torch.randn(e, rows, d, device="cuda", dtype=torch.bfloat16)
w = torch.randn(e, f, d, device="cuda", dtype=torch.bfloat16)
dy = torch.randn(e, rows, f, device="cuda", dtype=torch.bfloat16)
forms = {
    "forward": lambda: [torch.matmul(x[i], w[i].t()) for i in range(e)],
    "input": lambda: [torch.matmul(dy[i], w[i]) for i in range(e)],
    "weight": lambda: [torch.matmul(dy[i].t(), x[i]) for i in range(e)],
}
for name, fn in forms.items():
    print(f"matmul {name} {seconds(fn)}")
"#;

    pub fn gpu_table(reps: usize) -> Result<()> {
        let gpu = Gpu::open(0)?;
        println!("GPU kernels on {} (median of {reps} runs of {INNER} launches)", gpu.describe());
        let (d, f, e, k, tokens) = EXPERTS;
        let rows = tokens * k / e;
        let shapes: Vec<String> = ROUTER_SHAPES.iter().map(|(n, e, k)| format!("{n}x{e}x{k}")).collect();
        let torch = run_python(
            TORCH_SCRIPT,
            &[reps.to_string().as_ref(), shapes.join(",").as_ref(), format!("{d}x{f}x{e}x{rows}").as_ref()],
            &[],
            "torch",
        );
        let torch_seconds = |key: &str| -> Option<f64> {
            let out = torch.as_ref().ok()?;
            out.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        };
        if let Err(why) = &torch {
            println!("(no torch column: {why})");
        }

        // The copy bandwidth every memory-bound kernel is measured against: 1 GiB, read + write.
        let copy_len = 1 << 28;
        let src: Buf<f32> = gpu.zeros(copy_len)?;
        let mut dst: Buf<f32> = gpu.zeros(copy_len)?;
        let copy = seconds(&gpu, reps, || {
            gpu.stream()
                .memcpy_dtod(&src, &mut dst)
                .map_err(|e| Error::invalid("CUDA: copy", format!("{e:?}")))
        })?;
        let copy_gbs = 2.0 * (copy_len * 4) as f64 / copy / 1e9;
        drop((src, dst));
        println!("device-to-device copy: {copy_gbs:.0} GB/s\n");

        println!("| router_topk_forward N×E, K | ours ms | GB/s | % of copy | torch softmax+topk ms | ours / torch |");
        println!("|---|---|---|---|---|---|");
        let mut rng = Rng::new(8);
        for (n, e, k) in ROUTER_SHAPES {
            let logits: Vec<f32> = (0..n * e).map(|_| rng.normal() as f32).collect();
            let logits = gpu.upload(&logits)?;
            let mut probs: Buf<f32> = gpu.zeros(n * e)?;
            let mut idx: Buf<u32> = gpu.zeros(n * k)?;
            let mut w: Buf<f32> = gpu.zeros(n * k)?;
            let s = seconds(&gpu, reps, || {
                router::router_topk_forward(&gpu, &mut probs, &mut idx, &mut w, &logits, n, e, k, false)
            })?;
            let bytes = (2 * n * e * 4 + n * k * 8) as f64;
            let gbs = bytes / s / 1e9;
            let theirs = torch_seconds(&format!("router {n}x{e}x{k}"));
            println!(
                "| {n}×{e}, {k} | {:.4} | {gbs:.0} | {:.0} % | {} | {} |",
                s * 1e3,
                100.0 * gbs / copy_gbs,
                theirs.map_or("-".into(), |t| format!("{:.4}", t * 1e3)),
                theirs.map_or("-".into(), |t| format!("{:.2}×", t / s)),
            );
        }

        println!();
        println!("| grouped expert matmul, {e} experts × {rows} rows, d {d}, F {f} | ours ms | TFLOP/s | torch.matmul per expert ms | TFLOP/s | ours / cuBLAS |");
        println!("|---|---|---|---|---|---|");
        let m = e * rows;
        let offsets: Vec<usize> = (0..=e).map(|i| i * rows).collect();
        let x = gpu.upload(&random_bf16_bits(m * d, 1.0, &mut rng))?;
        let w = gpu.upload(&random_bf16_bits(e * f * d, 0.02, &mut rng))?;
        let dy = gpu.upload(&random_bf16_bits(m * f, 1.0, &mut rng))?;
        let mut y: Buf<f32> = gpu.zeros(m * f)?;
        let mut dx: Buf<f32> = gpu.zeros(m * d)?;
        let mut dw: Buf<f32> = gpu.zeros(e * f * d)?;
        let flops = 2.0 * (m * f * d) as f64;
        let forms: [(&str, &str, f64); 3] = [
            (
                "forward",
                "Y = X·Wᵀ",
                seconds(&gpu, reps, || {
                    expert_matmul::grouped_matmul_forward(&gpu, &mut y, &x, &w, &offsets, d, f)
                })?,
            ),
            (
                "input",
                "dX = dY·W",
                seconds(&gpu, reps, || {
                    expert_matmul::grouped_matmul_backward_input(&gpu, &mut dx, &dy, &w, &offsets, d, f)
                })?,
            ),
            (
                "weight",
                "dW = dYᵀ·X",
                seconds(&gpu, reps, || {
                    expert_matmul::grouped_matmul_backward_weight(&gpu, &mut dw, &dy, &x, &offsets, d, f)
                })?,
            ),
        ];
        for (key, what, s) in forms {
            let theirs = torch_seconds(&format!("matmul {key}"));
            println!(
                "| {what} | {:.3} | {:.0} | {} | {} | {} |",
                s * 1e3,
                flops / s / 1e12,
                theirs.map_or("-".into(), |t| format!("{:.3}", t * 1e3)),
                theirs.map_or("-".into(), |t| format!("{:.0}", flops / t / 1e12)),
                theirs.map_or("-".into(), |t| format!("{:.0} %", 100.0 * t / s)),
            );
        }
        println!(
            "\ntraining step on the GPU: not measured; the model's tensors do not live on the GPU yet \
             (`moe train --device cuda` says so)"
        );
        Ok(())
    }
}
