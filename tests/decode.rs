//! Inference (model/decode.rs, cpu/linear.rs): the KV-cached decoder against the training
//! forward pass (model/olmoe.rs, itself checked against transformers in tests/golden.rs), and
//! `linear` against a naive f64 product, for f32 and bf16 weights and every path.

use half::bf16;
use moe::autograd::Tape;
use moe::cpu::gemm::Kernel;
use moe::cpu::linear::{linear_with, with_helpers, Helpers, Matrix, Values, STREAMING_ROWS};
use moe::cpu::threads;
use moe::model::config::OlmoeConfig;
use moe::model::decode::{borrow_tensors, Decoder, StoredWeights};
use moe::model::hf;
use moe::model::olmoe::{forward, Weights};
use moe::rng::Rng;
use moe::tensor::Tensor;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const VARIANTS: [&str; 5] = ["base", "renorm", "gqa", "tied", "clip"];

fn golden(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(variant)
}

/// Logits (seq, V) of the training forward pass on one sequence.
fn full_forward(config: &OlmoeConfig, weights: &Weights<Tensor>, ids: &[u32]) -> Vec<f32> {
    let mut tape = Tape::new();
    let vars = weights.map(|w| tape.constant(w.clone()));
    let out = forward(&mut tape, &vars, config, ids, 1, ids.len());
    tape.value(out.logits).data().to_vec()
}

/// Runs `ids` through a decoder in the chunks `chunks` (prefill, then steps) and checks the
/// logits after each chunk against the full forward pass's row for that position.
fn check_steps(
    name: &str,
    config: &OlmoeConfig,
    stored: &StoredWeights,
    reference: &[f32],
    ids: &[u32],
    chunks: &[usize],
) {
    let v = config.vocab_size;
    let mut decoder = Decoder::new(config, stored, 4);
    let mut at = 0;
    let mut worst = 0.0f32;
    for &len in chunks {
        let logits = decoder.step(&ids[at..at + len], None);
        at += len;
        assert_eq!(decoder.position(), at);
        let want = &reference[(at - 1) * v..at * v];
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let diff = logits.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(diff / scale);
    }
    assert_eq!(at, ids.len(), "chunks cover the ids");
    println!("{name}: worst |cached − full| / max|logit| = {worst:.2e}");
    assert!(worst < 2e-6, "{name}: KV-cached logits differ from the full forward by {worst:e} (relative)");
}

fn test_ids(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

#[test]
fn kv_cached_steps_equal_the_full_forward_pass() {
    for variant in VARIANTS {
        let (config, weights) = hf::load(&golden(variant)).unwrap();
        let ids = test_ids(config.vocab_size, 20, 3);
        let reference = full_forward(&config, &weights, &ids);
        let stored = borrow_tensors(&weights);
        // A prefill of 7 tokens (the GEMM path), a chunk of 3 (the streaming path), then one
        // token at a time; and a run that is one token at a time from the start.
        let mut chunks = vec![7, 3];
        chunks.extend([1; 10]);
        check_steps(&format!("{variant} 7+3+1…"), &config, &stored, &reference, &ids, &chunks);
        check_steps(&format!("{variant} 1…"), &config, &stored, &reference, &ids, &[1; 20]);
    }
}

#[test]
fn memory_mapped_weights_equal_loaded_ones_for_f32_and_bf16() {
    // The memory-mapped view of a checkpoint computes what hf::load's f32 tensors do; for a
    // bf16 file, what its values widened to f32 do.
    let tmp = std::env::temp_dir().join(format!("moe-decode-bf16-{}", std::process::id()));
    let base = golden("base");
    let config = OlmoeConfig::load(&base.join("config.json")).unwrap();
    moe::init_cmd::init(&tmp, &config, moe::safetensors::Dtype::BF16, 11).unwrap();
    for dir in [base.as_path(), tmp.as_path(), &golden("generate/bf16_sharded")] {
        let (config, weights) = hf::load(dir).unwrap();
        let ids = test_ids(config.vocab_size, 12, 5);
        let reference = full_forward(&config, &weights, &ids);
        let (config, ckpt) = hf::open(dir).unwrap();
        let stored = hf::views(&ckpt, &config).unwrap();
        let dtype = stored.embed_tokens[0].values().dtype_name();
        // Nothing copied: every weight is a view of the memory map.
        for (_, matrices) in stored.named() {
            assert!(
                matrices.iter().all(|m| m.values().is_borrowed()),
                "{}: a weight was copied",
                dir.display()
            );
        }
        let expected = if dir == base.as_path() { "F32" } else { "BF16" };
        assert_eq!(dtype, expected, "{}: stored dtype", dir.display());
        let mut chunks = vec![5];
        chunks.extend([1; 7]);
        check_steps(&format!("{} ({dtype})", dir.display()), &config, &stored, &reference, &ids, &chunks);
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The logits of a prefill of 3 tokens, then of each further token.
fn decode_all<'w, 'a>(
    config: &'w OlmoeConfig,
    stored: &'w StoredWeights<'a>,
    ids: &[u32],
    helpers: Option<&Helpers<'w, 'a>>,
) -> Vec<Vec<f32>> {
    let mut decoder = Decoder::new(config, stored, ids.len());
    let mut logits = vec![decoder.step(&ids[..3], helpers)];
    logits.extend(ids[3..].iter().map(|id| decoder.step(&[*id], helpers)));
    logits
}

#[test]
fn helper_threads_change_no_bit() {
    // Matrices big enough to be shared (≥ 16,384 weights), on two helpers; a shared expert too.
    threads::set_num_threads(3);
    let config = OlmoeConfig {
        vocab_size: 512,
        hidden_size: 128,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        num_experts: 4,
        num_experts_per_tok: 2,
        max_position_embeddings: 64,
        initializer_range: 0.2,
        eos_token_id: None,
        shared_expert_intermediate_size: Some(64),
        ..OlmoeConfig::default()
    };
    let weights = Weights::init(&config, &mut Rng::new(2));
    let stored = borrow_tensors(&weights);
    let ids = test_ids(config.vocab_size, 12, 9);
    let alone = decode_all(&config, &stored, &ids, None);
    let shared = with_helpers(|helpers| {
        assert!(helpers.is_some(), "three threads give two helpers");
        decode_all(&config, &stored, &ids, helpers)
    });
    assert!(alone == shared, "logits with helpers differ from logits without");
    // And both are the full forward pass's.
    let reference = full_forward(&config, &weights, &ids);
    let v = config.vocab_size;
    for (i, logits) in shared.iter().enumerate() {
        let at = i + 3;
        let want = &reference[(at - 1) * v..at * v];
        let worst = logits.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-4, "position {at}: cached logits differ by {worst:e}");
    }
}

/// `products` random products with and without helpers: bit-identical.
fn check_products<'w, 'a>(
    matrices: &'w [Matrix<'a>],
    helpers: Option<&Helpers<'w, 'a>>,
    seed: u64,
    products: usize,
) {
    let mut rng = Rng::new(seed);
    for i in 0..products {
        let w = &matrices[rng.below(matrices.len())];
        let t = 1 + rng.below(STREAMING_ROWS);
        let x: Vec<f32> = (0..t * w.cols()).map(|_| rng.normal() as f32).collect();
        let (mut alone, mut shared) = (vec![f32::NAN; t * w.rows()], vec![f32::NAN; t * w.rows()]);
        linear_with(Kernel::detect(), None, &mut alone, &x, w, t);
        linear_with(Kernel::detect(), helpers, &mut shared, &x, w, t);
        assert!(alone == shared, "product {i}: helpers changed the result");
        if i % 50 == 49 {
            std::thread::sleep(std::time::Duration::from_millis(1)); // the helpers park
        }
    }
}

#[test]
fn helpers_match_no_helpers_across_sleeps_and_two_callers() {
    // Many products of ragged shapes, f32 and bf16, T 1–4, with pauses long enough for the
    // helpers to fall asleep; then two threads posting to one set of helpers at once (the
    // second must fall back to its own thread, not garble the mailboxes). Bit-identical.
    threads::set_num_threads(3);
    let mut rng = Rng::new(4);
    let shapes = [(128, 128), (1, 20000), (257, 129), (1000, 64), (7, 4096)];
    let data: Vec<(Vec<f32>, Vec<bf16>, usize, usize)> = shapes
        .iter()
        .map(|&(n, k)| {
            let f: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
            let b = f.iter().map(|&v| bf16::from_f32(v)).collect();
            (f, b, n, k)
        })
        .collect();
    let matrices: Vec<Matrix> = data
        .iter()
        .flat_map(|(f, b, n, k)| {
            [
                Matrix::new(Values::F32(Cow::Borrowed(f)), *n, *k),
                Matrix::new(Values::BF16(Cow::Borrowed(b)), *n, *k),
            ]
        })
        .collect();
    with_helpers(|helpers| {
        assert!(helpers.is_some());
        check_products(&matrices, helpers, 1, 400);
        std::thread::scope(|s| {
            s.spawn(|| check_products(&matrices, helpers, 2, 200));
            check_products(&matrices, helpers, 3, 200);
        });
    });
}

// ---- linear

fn naive(x: &[f32], w: &[f32], t: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; t * n];
    for i in 0..t {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
        }
    }
    y
}

#[test]
fn linear_matches_a_naive_product_for_f32_and_bf16_on_every_path() {
    let mut rng = Rng::new(1);
    // Ragged sizes: K around the 16- and 32-wide SIMD steps, N past one 64-row block.
    let sizes = [
        (1, 3, 5),
        (1, 50, 783),
        (2, 65, 33),
        (3, 7, 48),
        (1, 5, 50),
        (2, 9, 2067),
        (STREAMING_ROWS, 70, 64),
        (5, 130, 37),
        (9, 3, 100),
    ];
    for (t, n, k) in sizes {
        let x: Vec<f32> = (0..t * k).map(|_| rng.normal() as f32).collect();
        let w32: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
        let w16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        let widened: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        for kernel in [Kernel::Scalar, Kernel::detect()] {
            for (dtype, w, values) in [
                ("f32", &w32, Values::F32(Cow::Borrowed(&w32))),
                ("bf16", &widened, Values::BF16(Cow::Borrowed(&w16))),
            ] {
                let want = naive(&x, w, t, n, k);
                let mut y = vec![f32::NAN; t * n];
                linear_with(kernel, None, &mut y, &x, &Matrix::new(values, n, k), t);
                for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                    let bound = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                    assert!(
                        (got as f64 - want).abs() <= bound,
                        "linear {dtype} T {t} N {n} K {k} ({kernel:?}): y[{i}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}
