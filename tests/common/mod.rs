//! The gradient-check harness every op test uses.
//!
//! For an op f with inputs x₁…xₙ (f32) and a plain f64 reference forward `reference`:
//! 1. forward:  our f32 output against reference(x) in f64,
//!    max|ours − ref| ≤ fwd_tol · max(1e-4, max|ref|);
//! 2. backward: with a random upstream gradient g and L(x) = Σ f(x)·g, our backward's dL/dxᵢ
//!    against the central difference (L(x + h·eⱼ) − L(x − h·eⱼ)) / 2h of the *reference*,
//!    max|ours − fd| ≤ bwd_tol · max(1e-4, max|fd|), over every element (or a seeded sample of
//!    `MAX_FD_ELEMENTS` for large inputs);
//! 3. accumulation: the op applied twice to the same inputs, outputs added, must give twice
//!    the gradients, so a backward that overwrites (=) instead of accumulating (+=) fails.
//!
//! The reference runs in f64 so the finite difference itself is accurate to ~1e-9.
#![allow(dead_code)] // each test binary uses part of the harness

use moe::autograd::{Tape, Var};
use moe::model::olmoe::LayerWeights;
use moe::rng::Rng;
use moe::tensor::Tensor;

pub const MAX_FD_ELEMENTS: usize = 300;
pub const FD_STEP: f64 = 1e-5;

/// Default bounds: f32 forward, f32 backward.
pub const FWD_TOL: f64 = 1e-5;
pub const BWD_TOL: f64 = 1e-3;

/// One input of a checked op.
pub struct Input {
    pub value: Tensor,
    /// Checked against finite differences (false for constants such as positions).
    pub differentiable: bool,
}

pub fn param(value: Tensor) -> Input {
    Input { value, differentiable: true }
}

pub fn constant(value: Tensor) -> Input {
    Input { value, differentiable: false }
}

/// Uniform in [-1, 1).
pub fn rand(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::uniform(shape, -1.0, 1.0, rng)
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// max|a − b| / max(1e-4, max|b|): the error every check reports, relative to the largest
/// reference value (the floor only guards an all-zero reference). Any NaN or infinity on
/// either side is an infinite error (`f64::max` alone would skip a NaN).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err: lengths {} vs {}", a.len(), b.len());
    if !a.iter().chain(b).all(|v| v.is_finite()) {
        return f64::INFINITY;
    }
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(1e-4, f64::max);
    diff / scale
}

/// Checks an op's forward against `reference` and its backward against central differences
/// of `reference`. `build` records the op on a tape from the inputs' vars (in order) and
/// returns its output; `reference` maps the inputs (as f64) to the output (as f64, flat).
pub fn check_op(
    name: &str,
    inputs: &[Input],
    build: impl Fn(&mut Tape, &[Var]) -> Var,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    fwd_tol: f64,
    bwd_tol: f64,
) {
    let mut rng = Rng::new(0xC0FFEE);
    let leaves =
        |tape: &mut Tape| -> Vec<Var> {
            inputs
                .iter()
                .map(|i| {
                    if i.differentiable {
                        tape.param(i.value.clone())
                    } else {
                        tape.constant(i.value.clone())
                    }
                })
                .collect()
        };
    let mut tape = Tape::new();
    let vars = leaves(&mut tape);
    let out = build(&mut tape, &vars);
    let out_value = tape.value(out).clone();

    // 1. forward
    let x64: Vec<Vec<f64>> = inputs.iter().map(|i| to_f64(i.value.data())).collect();
    let want = reference(&x64);
    let fwd = rel_err(&to_f64(out_value.data()), &want);
    println!("{name}: forward  rel err {fwd:.2e} (bound {fwd_tol:.0e}), output {:?}", out_value.shape());
    assert!(fwd <= fwd_tol, "{name}: forward rel err {fwd:.3e} > {fwd_tol:.0e}");

    // 2. backward
    let seed = rand(out_value.shape(), &mut rng);
    let g64 = to_f64(seed.data());
    let grads = tape.backward_from(out, seed.clone());
    let mut twice = Tape::new();
    let twice_vars = leaves(&mut twice);
    let (first, second) = (build(&mut twice, &twice_vars), build(&mut twice, &twice_vars));
    let both = twice.add(first, second);
    let twice_grads = twice.backward_from(both, seed);
    let loss = |x: &[Vec<f64>]| -> f64 { reference(x).iter().zip(&g64).map(|(y, g)| y * g).sum() };
    for (i, input) in inputs.iter().enumerate().filter(|(_, i)| i.differentiable) {
        let grad_of = |g: Option<&Tensor>| g.map_or(vec![0.0; input.value.numel()], |g| to_f64(g.data()));
        let ours = grad_of(grads.get(vars[i]));
        let doubled: Vec<f64> = ours.iter().map(|g| 2.0 * g).collect();
        let acc = rel_err(&grad_of(twice_grads.get(twice_vars[i])), &doubled);
        assert!(
            acc <= 1e-5,
            "{name}: input {i}: two uses give {acc:.3e} off twice the gradient (= instead of +=?)"
        );
        let n = input.value.numel();
        let elements: Vec<usize> = if n <= MAX_FD_ELEMENTS {
            (0..n).collect()
        } else {
            (0..MAX_FD_ELEMENTS).map(|_| rng.below(n)).collect()
        };
        let mut x = x64.clone();
        let (mut got, mut fd) = (Vec::new(), Vec::new());
        for &j in &elements {
            let orig = x[i][j];
            let h = FD_STEP * orig.abs().max(1.0);
            x[i][j] = orig + h;
            let up = loss(&x);
            x[i][j] = orig - h;
            let down = loss(&x);
            x[i][j] = orig;
            fd.push((up - down) / (2.0 * h));
            got.push(ours[j]);
        }
        let bwd = rel_err(&got, &fd);
        println!(
            "{name}: backward input {i} {:?} rel err {bwd:.2e} (bound {bwd_tol:.0e}) over {} elements",
            input.value.shape(),
            elements.len()
        );
        assert!(bwd <= bwd_tol, "{name}: backward of input {i} rel err {bwd:.3e} > {bwd_tol:.0e}");
    }
}

/// One SwiGLU MLP (an expert, or the shared expert) on one token in f64, as HF writes it:
/// down(silu(gate h) ⊙ up h).  h: (C)  gate, up: (F, C)  down: (C, F)  → (C)
pub fn swiglu_mlp_ref(h: &[f64], gate: &[f64], up: &[f64], down: &[f64]) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let c = h.len();
    let act: Vec<f64> = gate
        .chunks_exact(c)
        .zip(up.chunks_exact(c))
        .map(|(g_row, u_row)| {
            let g = dot(h, g_row);
            g / (1.0 + (-g).exp()) * dot(h, u_row)
        })
        .collect();
    down.chunks_exact(act.len()).map(|d_row| dot(&act, d_row)).collect()
}

/// Plain f64 matrix product of row-major a (m×k) and b (k×n), for references.
pub fn matmul_ref(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                c[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    c
}

/// Row-major transpose of an r×c matrix.
pub fn transpose(x: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = x[i * c + j];
        }
    }
    t
}

/// An MoE layer with the given router and experts (gate, up, down), for tests of the MoE
/// block alone: the attention weights are unused placeholders, no shared expert.
pub fn moe_layer(
    t: &mut Tape,
    router: Var,
    [experts_gate, experts_up, experts_down]: [Var; 3],
) -> LayerWeights<Var> {
    let unused = t.constant(Tensor::zeros(&[1]));
    LayerWeights {
        input_layernorm: unused,
        q_proj: unused,
        k_proj: unused,
        v_proj: unused,
        o_proj: unused,
        q_norm: unused,
        k_norm: unused,
        post_attention_layernorm: unused,
        router,
        experts_gate,
        experts_up,
        experts_down,
        shared_expert: None,
    }
}

/// A tiny random OLMoE (2 layers, width 32, 8 experts top-2, 64 positions) with OLMo's real
/// tokenizer and vocabulary (50,304), written into `dir` by `moe init` (BF16): a model the
/// text commands can run on.
pub fn tiny_model_with_olmo_tokenizer(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = r#"{"model_type": "olmoe", "vocab_size": 50304, "hidden_size": 32, "intermediate_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2,
        "max_position_embeddings": 64, "initializer_range": 0.2, "eos_token_id": 50279, "pad_token_id": 1}"#;
    std::fs::write(dir.join("in.json"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(["init", "--config", dir.join("in.json").to_str().unwrap(), "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "moe init: {}", String::from_utf8_lossy(&out.stderr));
    let tokenizer = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/tokenizer/olmoe-gpt-neox-olmo-dolma-v1_5.json");
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
}
