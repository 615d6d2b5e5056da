//! RoPE and fused causal attention against plain f64 loops; their gradients against finite
//! differences of those loops.

mod common;
use common::*;
use moe::autograd::Tape;
use moe::rng::Rng;
use moe::tensor::Tensor;

const THETA: f32 = 10_000.0;

// ---- RoPE

/// RoPE in f64, written out per element. inv_freq and the angle are rounded to f32 as Hugging
/// Face computes them (an f64 angle differs by ~pos·6e-8 rad); cos and sin are then in f64.
fn rope_ref(x: &[f64], [b, t, h, d]: [usize; 4], pos0: usize, theta: f32) -> Vec<f64> {
    let half = d / 2;
    let mut y = vec![0.0; x.len()];
    for bi in 0..b {
        for ti in 0..t {
            let pos = pos0 + ti;
            for hi in 0..h {
                let base = ((bi * t + ti) * h + hi) * d;
                for i in 0..half {
                    let inv_freq = 1.0f32 / theta.powf((2 * i) as f32 / d as f32);
                    let angle = (pos as f32 * inv_freq) as f64;
                    let (x1, x2) = (x[base + i], x[base + i + half]);
                    y[base + i] = x1 * angle.cos() - x2 * angle.sin();
                    y[base + i + half] = x2 * angle.cos() + x1 * angle.sin();
                }
            }
        }
    }
    y
}

fn rope_case(shape: [usize; 4], pos0: usize) {
    let mut rng = Rng::new(17);
    let name = format!("rope {shape:?} pos0={pos0}");
    check_op(
        &name,
        &[param(rand(&shape, &mut rng))],
        |tape, v| tape.rope(v[0], pos0, THETA),
        |x| rope_ref(&x[0], shape, pos0, THETA),
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn rope_gradients() {
    for pos0 in [0, 37, 4093] {
        rope_case([1, 1, 1, 2], pos0);
        rope_case([2, 3, 2, 2], pos0);
        rope_case([1, 5, 3, 16], pos0);
        rope_case([2, 4, 1, 16], pos0);
    }
    // 1024 token rows of 128 values: enough work for the threaded path
    rope_case([4, 256, 8, 16], 37);
}

#[test]
#[should_panic(expected = "rope: head dim D must be even and positive, got D = 3")]
fn rope_odd_head_dim_panics() {
    let mut tape = Tape::new();
    let x = tape.param(Tensor::zeros(&[1, 2, 1, 3]));
    tape.rope(x, 0, THETA);
}

// ---- causal attention

/// (B, T, S, H, Hkv, D)
type Dims = [usize; 6];

/// Causal grouped-query attention in f64 as explicit loops over b, h, i, j: query i sits at
/// position S − T + i and sees keys 0..=S − T + i; query head h reads kv head h / (H / Hkv).
fn attention_ref(q: &[f64], k: &[f64], v: &[f64], [b, t, s, h, hkv, d]: Dims) -> Vec<f64> {
    let mut out = vec![0.0; b * t * h * d];
    for bi in 0..b {
        for hi in 0..h {
            let g = hi / (h / hkv);
            for i in 0..t {
                let q_i = &q[((bi * t + i) * h + hi) * d..][..d];
                let key = |j: usize| ((bi * s + j) * hkv + g) * d;
                let visible = s - t + i + 1;
                let scores: Vec<f64> = (0..visible)
                    .map(|j| (0..d).map(|c| q_i[c] * k[key(j) + c]).sum::<f64>() / (d as f64).sqrt())
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                let out_i = &mut out[((bi * t + i) * h + hi) * d..][..d];
                for (j, e) in exps.iter().enumerate() {
                    for c in 0..d {
                        out_i[c] += e / total * v[key(j) + c];
                    }
                }
            }
        }
    }
    out
}

fn attention_case(dims: Dims) {
    let [b, t, s, h, hkv, d] = dims;
    let mut rng = Rng::new(23);
    let inputs = [
        param(rand(&[b, t, h, d], &mut rng)),
        param(rand(&[b, s, hkv, d], &mut rng)),
        param(rand(&[b, s, hkv, d], &mut rng)),
    ];
    check_op(
        &format!("causal_attention (B, T, S, H, Hkv, D) = {dims:?}"),
        &inputs,
        |tape, v| tape.causal_attention(v[0], v[1], v[2]),
        |x| attention_ref(&x[0], &x[1], &x[2], dims),
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn attention_gradients() {
    attention_case([1, 1, 1, 1, 1, 2]); // size 1
    attention_case([2, 5, 5, 4, 2, 8]); // grouped-query, 2 query heads per kv head
    attention_case([1, 4, 4, 3, 3, 6]); // multi-head, ragged sizes
    attention_case([2, 3, 3, 4, 1, 4]); // multi-query
    attention_case([1, 3, 7, 2, 1, 4]); // S > T: 3 queries after 4 cached keys
    attention_case([2, 1, 5, 4, 2, 8]); // decoding one token after a cache
}

#[test]
fn attention_gradients_threaded() {
    attention_case([2, 64, 64, 4, 2, 16]);
}

/// x reaches the output by two paths, so the inner op's backward finds x's gradient already
/// holding the outer op's share: it must add to it, not overwrite it.
#[test]
fn backwards_add_to_an_existing_gradient() {
    let dims = [1, 4, 4, 2, 2, 4];
    let shape = [1, 4, 2, 4];
    let x = rand(&shape, &mut Rng::new(29));
    check_op(
        "causal_attention(rope(x), x, x)",
        &[param(x.clone())],
        |tape, v| {
            let rotated = tape.rope(v[0], 3, THETA);
            tape.causal_attention(rotated, v[0], v[0])
        },
        |x| attention_ref(&rope_ref(&x[0], shape, 3, THETA), &x[0], &x[0], dims),
        FWD_TOL,
        BWD_TOL,
    );
    check_op(
        "causal_attention(causal_attention(x, x, x), x, x)",
        &[param(x)],
        |tape, v| {
            let inner = tape.causal_attention(v[0], v[0], v[0]);
            tape.causal_attention(inner, v[0], v[0])
        },
        |x| attention_ref(&attention_ref(&x[0], &x[0], &x[0], dims), &x[0], &x[0], dims),
        FWD_TOL,
        BWD_TOL,
    );
}

/// Runs attention forward and backward with a fixed seed gradient; returns the bits of
/// out, dq, dk, dv.
fn attention_bits(dims: Dims) -> Vec<Vec<u32>> {
    let [b, t, s, h, hkv, d] = dims;
    let mut rng = Rng::new(31);
    let mut tape = Tape::new();
    let q = tape.param(rand(&[b, t, h, d], &mut rng));
    let k = tape.param(rand(&[b, s, hkv, d], &mut rng));
    let v = tape.param(rand(&[b, s, hkv, d], &mut rng));
    let out = tape.causal_attention(q, k, v);
    let out_bits: Vec<u32> = tape.value(out).data().iter().map(|x| x.to_bits()).collect();
    let grads = tape.backward_from(out, rand(&[b, t, h, d], &mut rng));
    let mut bits = vec![out_bits];
    for var in [q, k, v] {
        bits.push(
            grads.get(var).expect("a param gets a gradient").data().iter().map(|x| x.to_bits()).collect(),
        );
    }
    bits
}

#[test]
fn threaded_attention_is_bit_identical_run_to_run() {
    // More threads than this machine may have cores, so the work really is split.
    moe::cpu::threads::set_num_threads(4);
    let dims = [2, 64, 64, 4, 2, 16];
    assert!(attention_bits(dims) == attention_bits(dims), "two runs of attention {dims:?} differ");
}

#[test]
#[should_panic(expected = "causal_attention: q [1, 2, 4, 8] and k [1, 3, 2, 6]: head dims 8 and 6 differ")]
fn attention_head_dim_mismatch_names_both_shapes() {
    let mut tape = Tape::new();
    let q = tape.param(Tensor::zeros(&[1, 2, 4, 8]));
    let k = tape.param(Tensor::zeros(&[1, 3, 2, 6]));
    let v = tape.param(Tensor::zeros(&[1, 3, 2, 6]));
    tape.causal_attention(q, k, v);
}

#[test]
#[should_panic(expected = "causal_attention: q [1, 4, 4, 8] and k [1, 3, 2, 8]: 4 queries but only 3 keys")]
fn attention_fewer_keys_than_queries_panics() {
    let mut tape = Tape::new();
    let q = tape.param(Tensor::zeros(&[1, 4, 4, 8]));
    let k = tape.param(Tensor::zeros(&[1, 3, 2, 8]));
    let v = tape.param(Tensor::zeros(&[1, 3, 2, 8]));
    tape.causal_attention(q, k, v);
}

#[test]
#[should_panic(expected = "causal_attention: k [1, 3, 2, 8] and v [1, 3, 1, 8] differ in shape")]
fn attention_kv_mismatch_names_both_shapes() {
    let mut tape = Tape::new();
    let q = tape.param(Tensor::zeros(&[1, 3, 4, 8]));
    let k = tape.param(Tensor::zeros(&[1, 3, 2, 8]));
    let v = tape.param(Tensor::zeros(&[1, 3, 1, 8]));
    tape.causal_attention(q, k, v);
}
