//! The dense ops (elementwise, RMSNorm, softmax, sum / mean, embedding) against plain f64
//! references, forward and backward (finite differences), on ragged and size-1 shapes and
//! on one shape large enough to run their threaded paths.

mod common;
use common::*;
use moe::autograd::{Tape, Var};
use moe::rng::Rng;
use moe::tensor::Tensor;

/// (300, 1000): 3·10^5 elements, above 2^18, so row-wise and elementwise work is split
/// across threads (`cpu::threads::MIN_WORK_PER_THREAD` = 2^16 per thread).
const THREADED: &[usize] = &[300, 1000];
const SHAPES: [&[usize]; 6] = [&[1, 1], &[3, 5], &[2, 3, 7], &[1, 17], &[4, 1], THREADED];

/// At least two threads, even on a one-core machine, so THREADED really runs threaded.
fn use_threads() {
    moe::cpu::threads::set_num_threads(4);
}

/// The last dimension of a shape (the row width C).
fn cols(shape: &[usize]) -> usize {
    *shape.last().unwrap()
}

// ---- elementwise

/// Checks y = op(x) against y_i = f(x_i) on every shape.
fn check_unary(name: &str, op: impl Fn(&mut Tape, Var) -> Var, f: impl Fn(f64) -> f64) {
    use_threads();
    let mut rng = Rng::new(1);
    for shape in SHAPES {
        let inputs = [param(rand(shape, &mut rng))];
        let reference = |x: &[Vec<f64>]| x[0].iter().map(|&v| f(v)).collect();
        check_op(&format!("{name} {shape:?}"), &inputs, |t, v| op(t, v[0]), reference, FWD_TOL, BWD_TOL);
    }
}

/// Checks y = op(a, b) against y_i = f(a_i, b_i) on every shape.
fn check_binary(name: &str, op: impl Fn(&mut Tape, Var, Var) -> Var, f: impl Fn(f64, f64) -> f64) {
    use_threads();
    let mut rng = Rng::new(2);
    for shape in SHAPES {
        let inputs = [param(rand(shape, &mut rng)), param(rand(shape, &mut rng))];
        let reference = |x: &[Vec<f64>]| x[0].iter().zip(&x[1]).map(|(&a, &b)| f(a, b)).collect();
        check_op(
            &format!("{name} {shape:?}"),
            &inputs,
            |t, v| op(t, v[0], v[1]),
            reference,
            FWD_TOL,
            BWD_TOL,
        );
    }
}

fn silu_ref(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

#[test]
fn add_gradients() {
    check_binary("add", |t, a, b| t.add(a, b), |a, b| a + b);
}

#[test]
fn mul_gradients() {
    check_binary("mul", |t, a, b| t.mul(a, b), |a, b| a * b);
}

#[test]
fn mul_of_a_var_with_itself_gets_both_gradients() {
    // y = x·x through one var: the tape must add both inputs' gradients, dx = 2·x·dy.
    check_unary("mul(x, x)", |t, x| t.mul(x, x), |x| x * x);
}

#[test]
fn scale_gradients() {
    check_unary("scale", |t, x| t.scale(x, -1.75), |x| -1.75 * x);
}

#[test]
fn silu_gradients() {
    check_unary("silu", |t, x| t.silu(x), silu_ref);
    // rand is in [-1, 1): scaled by 4 to reach silu's tails too
    check_unary(
        "silu of 4x",
        |t, x| {
            let x4 = t.scale(x, 4.0);
            t.silu(x4)
        },
        |x| silu_ref(4.0 * x),
    );
}

#[test]
fn swiglu_gradients() {
    check_binary("swiglu", |t, gate, up| t.swiglu(gate, up), |gate, up| silu_ref(gate) * up);
}

#[test]
fn add_row_gradients() {
    use_threads();
    let mut rng = Rng::new(3);
    for shape in SHAPES {
        let c = cols(shape);
        let inputs = [param(rand(shape, &mut rng)), param(rand(&[c], &mut rng))];
        let reference = |x: &[Vec<f64>]| x[0].iter().enumerate().map(|(i, v)| v + x[1][i % c]).collect();
        check_op(
            &format!("add_row {shape:?}"),
            &inputs,
            |t, v| t.add_row(v[0], v[1]),
            reference,
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [3, 2] differ")]
fn elementwise_shape_mismatch_names_both_shapes() {
    let mut t = Tape::new();
    let a = t.param(Tensor::zeros(&[2, 3]));
    let b = t.param(Tensor::zeros(&[3, 2]));
    t.add(a, b);
}

#[test]
#[should_panic(expected = "add_row: x [2, 3] and bias [2]: bias must have shape [3]")]
fn add_row_shape_mismatch_names_both_shapes() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[2, 3]));
    let bias = t.param(Tensor::zeros(&[2]));
    t.add_row(x, bias);
}

// ---- RMSNorm

fn rmsnorm_ref(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let c = w.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let mean_square = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
        let r = 1.0 / (mean_square + eps).sqrt();
        y.extend(row.iter().zip(w).map(|(x, w)| w * x * r));
    }
    y
}

/// x uniform in ±x_range, w around 1 (as trained norms are).
fn check_rmsnorm(shape: &[usize], x_range: f32, eps: f32, rng: &mut Rng) {
    let c = cols(shape);
    let x = Tensor::uniform(shape, -x_range, x_range, rng);
    let w = Tensor::uniform(&[c], 0.5, 1.5, rng);
    check_op(
        &format!("rmsnorm eps={eps:e} {shape:?}"),
        &[param(x), param(w)],
        |t, v| t.rmsnorm(v[0], v[1], eps),
        |x| rmsnorm_ref(&x[0], &x[1], eps as f64),
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn rmsnorm_gradients() {
    use_threads();
    let mut rng = Rng::new(4);
    // C = 1 with a tiny eps is left to the test below: there y ≈ w·sign(x) and dx ≈
    // w·eps/|x|³ (~1e-4) is a difference of two O(1) f32 terms, so the check would measure
    // f32 cancellation (~1e-7 absolute) against the 1e-4 floor, not the op.
    for shape in SHAPES.into_iter().filter(|s| cols(s) > 1) {
        check_rmsnorm(shape, 1.0, 1e-5, &mut rng); // OLMoE's rms_norm_eps
    }
}

#[test]
fn rmsnorm_with_a_large_eps() {
    // mean x² ≈ 0.0033 for x in ±0.1: eps = 0.01 dominates, so a misplaced eps shows.
    let mut rng = Rng::new(5);
    for shape in [&[1, 1][..], &[4, 1], &[3, 5], &[2, 3, 7]] {
        check_rmsnorm(shape, 0.1, 0.01, &mut rng);
    }
}

#[test]
fn rmsnorm_backward_is_deterministic_at_threaded_size() {
    use_threads();
    let mut rng = Rng::new(6);
    let x = rand(THREADED, &mut rng);
    let w = rand(&[cols(THREADED)], &mut rng);
    let dy = rand(THREADED, &mut rng);
    let gradient_bits = || {
        let mut t = Tape::new();
        let (xv, wv) = (t.param(x.clone()), t.param(w.clone()));
        let y = t.rmsnorm(xv, wv, 1e-5);
        let grads = t.backward_from(y, dy.clone());
        let bits = |v: Var| grads.get(v).unwrap().data().iter().map(|g| g.to_bits()).collect::<Vec<u32>>();
        (bits(xv), bits(wv))
    };
    let first = gradient_bits();
    for _ in 0..3 {
        assert!(gradient_bits() == first, "rmsnorm backward: two runs gave different bits");
    }
}

#[test]
#[should_panic(expected = "rmsnorm: x [4, 8] and w [4]: w must have shape [8]")]
fn rmsnorm_shape_mismatch_names_both_shapes() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[4, 8]));
    let w = t.param(Tensor::zeros(&[4]));
    t.rmsnorm(x, w, 1e-5);
}

// ---- softmax

fn softmax_ref(x: &[f64], c: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(c) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = row.iter().map(|v| (v - max).exp()).sum();
        y.extend(row.iter().map(|v| (v - max).exp() / total));
    }
    y
}

#[test]
fn softmax_gradients() {
    use_threads();
    let mut rng = Rng::new(7);
    for shape in SHAPES {
        let c = cols(shape);
        // logits of a few units, as a router's are
        let inputs = [param(Tensor::uniform(shape, -4.0, 4.0, &mut rng))];
        check_op(
            &format!("softmax {shape:?}"),
            &inputs,
            |t, v| t.softmax(v[0]),
            |x| softmax_ref(&x[0], c),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
fn softmax_of_large_logits_is_finite() {
    // exp(100) overflows f32: only a max-subtracted softmax gets this right.
    let mut rng = Rng::new(8);
    let x = Tensor::uniform(&[3, 9], 90.0, 100.0, &mut rng);
    check_op(
        "softmax large",
        &[param(x.clone())],
        |t, v| t.softmax(v[0]),
        |x| softmax_ref(&x[0], 9),
        FWD_TOL,
        BWD_TOL,
    );
    // check_op's max-error fold skips NaN, so check finiteness here
    let mut t = Tape::new();
    let xv = t.param(x);
    let y = t.softmax(xv);
    assert!(t.value(y).data().iter().all(|v| v.is_finite()), "softmax of large logits: {:?}", t.value(y));
    let grads = t.backward_from(y, Tensor::full(&[3, 9], 0.5));
    assert!(grads.get(xv).unwrap().data().iter().all(|g| g.is_finite()), "softmax of large logits: gradient");
}

// ---- sum and mean

#[test]
fn sum_and_mean_gradients() {
    let mut rng = Rng::new(9);
    for shape in SHAPES {
        let inputs = [param(rand(shape, &mut rng))];
        let n = inputs[0].value.numel() as f64;
        let sum = |x: &[Vec<f64>]| vec![x[0].iter().sum::<f64>()];
        let mean = |x: &[Vec<f64>]| vec![x[0].iter().sum::<f64>() / n];
        check_op(&format!("sum {shape:?}"), &inputs, |t, v| t.sum(v[0]), sum, FWD_TOL, BWD_TOL);
        check_op(&format!("mean {shape:?}"), &inputs, |t, v| t.mean(v[0]), mean, FWD_TOL, BWD_TOL);
    }
}

#[test]
fn sum_and_mean_are_scalars() {
    let mut t = Tape::new();
    let x = t.param(Tensor::full(&[2, 3], 1.5));
    let (sum, mean) = (t.sum(x), t.mean(x));
    assert_eq!(t.shape(sum), &[] as &[usize]);
    assert_eq!((t.value(sum).item(), t.value(mean).item()), (9.0, 1.5));
}

// ---- embedding

fn embedding_ref(table: &[f64], ids: &[u32], c: usize) -> Vec<f64> {
    ids.iter().flat_map(|&id| table[id as usize * c..(id as usize + 1) * c].iter().copied()).collect()
}

fn check_embedding(name: &str, v: usize, c: usize, ids: &[u32], rng: &mut Rng) {
    check_op(
        &format!("{name} table [{v}, {c}] ids {}", ids.len()),
        &[param(rand(&[v, c], rng))],
        |t, vars| t.embedding(vars[0], ids, None),
        |x| embedding_ref(&x[0], ids, c),
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn embedding_gradients() {
    let mut rng = Rng::new(10);
    check_embedding("embedding", 1, 1, &[0], &mut rng);
    check_embedding("embedding", 5, 3, &[4, 0, 2], &mut rng);
    check_embedding("embedding", 7, 17, &[6], &mut rng);
    let many: Vec<u32> = (0..500).map(|_| rng.below(1000) as u32).collect();
    check_embedding("embedding", 1000, 300, &many, &mut rng);
}

#[test]
fn embedding_repeated_ids_add_their_gradients() {
    let mut rng = Rng::new(11);
    check_embedding("embedding repeated ids", 4, 6, &[2, 0, 2, 2, 3, 0], &mut rng);
    // and exactly: a table row looked up k times with dy = 1 gets gradient k
    let mut t = Tape::new();
    let table = t.param(Tensor::zeros(&[3, 2]));
    let y = t.embedding(table, &[1, 1, 0, 1], None);
    let grads = t.backward_from(y, Tensor::full(&[4, 2], 1.0));
    assert_eq!(grads.get(table).unwrap().data(), &[1.0, 1.0, 3.0, 3.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "embedding: id 5 is out of range for a table of V = 5 rows")]
fn embedding_id_out_of_range_names_the_id_and_v() {
    let mut t = Tape::new();
    let table = t.param(Tensor::zeros(&[5, 3]));
    t.embedding(table, &[0, 5], None);
}

#[test]
#[should_panic(expected = "embedding: table must be (V, C), got shape [5, 3, 2]")]
fn embedding_table_must_be_two_dimensional() {
    let mut t = Tape::new();
    let table = t.param(Tensor::zeros(&[5, 3, 2]));
    t.embedding(table, &[0], None);
}

#[test]
fn logsumexp_rows_gradients() {
    let mut rng = Rng::new(21);
    for shape in [&[1, 1][..], &[3, 5], &[2, 3, 7], &[4, 64]] {
        let c = *shape.last().unwrap();
        let x = Tensor::uniform(shape, -4.0, 4.0, &mut rng);
        check_op(
            &format!("logsumexp_rows {shape:?}"),
            &[param(x)],
            |t, v| t.logsumexp_rows(v[0]),
            |x| x[0].chunks(c).map(|r| r.iter().map(|v| v.exp()).sum::<f64>().ln()).collect(),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
fn clamp_gradients() {
    // Values kept 0.05 away from the bounds ±0.5: finite differences must not cross one.
    let mut rng = Rng::new(22);
    let values: Vec<f32> = (0..40)
        .map(|_| {
            let v = rng.uniform() as f32 * 2.0 - 1.0;
            if (v.abs() - 0.5).abs() < 0.05 {
                v * 0.5
            } else {
                v
            }
        })
        .collect();
    check_op(
        "clamp ±0.5",
        &[param(Tensor::new(&[5, 8], values))],
        |t, v| t.clamp(v[0], -0.5, 0.5),
        |x| x[0].iter().map(|v| v.clamp(-0.5, 0.5)).collect(),
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn the_padding_row_gets_no_gradient() {
    let mut t = Tape::new();
    let table = t.param(Tensor::new(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let y = t.embedding(table, &[1, 2, 1, 0], Some(1));
    assert_eq!(
        t.value(y).data(),
        &[3.0, 4.0, 5.0, 6.0, 3.0, 4.0, 1.0, 2.0],
        "the lookup itself is unchanged"
    );
    let grads = t.backward_from(y, Tensor::full(&[4, 2], 1.0));
    assert_eq!(grads.get(table).unwrap().data(), &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
}
