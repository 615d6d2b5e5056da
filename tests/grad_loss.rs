//! Cross-entropy (fused log-softmax, ignore index) against a plain f64 reference, forward
//! and backward (finite differences), with ignored rows, all rows ignored, V = 1, huge
//! logits, and a shape large enough to run the threaded path.

mod common;
use common::*;
use moe::autograd::Tape;
use moe::ops::loss::IGNORE_INDEX;
use moe::rng::Rng;
use moe::tensor::Tensor;

/// mean over the rows whose target is not ignored of (logsumexp(row) − row[target]); 0 if none.
fn cross_entropy_ref(logits: &[f64], targets: &[i32], ignore_index: i32) -> f64 {
    let v = logits.len() / targets.len();
    let (mut total, mut count) = (0.0, 0);
    for (row, &target) in logits.chunks(v).zip(targets) {
        if target == ignore_index {
            continue;
        }
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        total += lse - row[target as usize];
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// One target per row of `shape`, each in 0..V, then every `ignore_every`-th row ignored
/// (0: none).
fn random_targets(shape: &[usize], ignore_every: usize, rng: &mut Rng) -> Vec<i32> {
    let v = *shape.last().unwrap();
    let rows = shape.iter().product::<usize>() / v;
    (0..rows)
        .map(|n| if ignore_every > 0 && n % ignore_every == 0 { IGNORE_INDEX } else { rng.below(v) as i32 })
        .collect()
}

fn check_cross_entropy(name: &str, logits: Tensor, targets: &[i32]) {
    check_op(
        &format!("{name} {:?}", logits.shape()),
        &[param(logits)],
        |t, v| t.cross_entropy(v[0], targets, IGNORE_INDEX),
        |x| vec![cross_entropy_ref(&x[0], targets, IGNORE_INDEX)],
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn cross_entropy_gradients() {
    // (300, 1000): 3·10^5 logits, above 2^18, so rows are split across threads; 4 threads
    // even on a one-core machine.
    moe::cpu::threads::set_num_threads(4);
    let mut rng = Rng::new(1);
    for shape in [&[1, 1][..], &[1, 5], &[3, 5], &[2, 3, 7], &[1, 17], &[300, 1000]] {
        let targets = random_targets(shape, 0, &mut rng);
        let logits = Tensor::uniform(shape, -3.0, 3.0, &mut rng);
        check_cross_entropy("cross_entropy", logits, &targets);
    }
}

#[test]
fn cross_entropy_with_ignored_rows() {
    let mut rng = Rng::new(2);
    for shape in [&[3, 5][..], &[2, 3, 7], &[10, 4]] {
        let targets = random_targets(shape, 3, &mut rng);
        let logits = Tensor::uniform(shape, -3.0, 3.0, &mut rng);
        check_cross_entropy("cross_entropy, every 3rd row ignored", logits, &targets);
    }
}

#[test]
fn cross_entropy_with_every_row_ignored_is_zero() {
    let mut rng = Rng::new(3);
    let logits = Tensor::uniform(&[4, 6], -3.0, 3.0, &mut rng);
    let targets = [IGNORE_INDEX; 4];
    check_cross_entropy("cross_entropy, every row ignored", logits.clone(), &targets);
    let mut t = Tape::new();
    let x = t.param(logits);
    let loss = t.cross_entropy(x, &targets, IGNORE_INDEX);
    assert_eq!(t.value(loss).item(), 0.0);
    let grads = t.backward(loss);
    assert!(grads.get(x).unwrap().data().iter().all(|&g| g == 0.0), "a fully ignored batch has a gradient");
}

#[test]
fn cross_entropy_with_one_class() {
    // V = 1: the only class has probability 1, so the loss and its gradient are 0.
    let mut rng = Rng::new(4);
    check_cross_entropy("cross_entropy V=1", Tensor::uniform(&[5, 1], -3.0, 3.0, &mut rng), &[0; 5]);
}

#[test]
fn cross_entropy_of_huge_logits_is_finite() {
    // exp(1000) overflows even f64: only a max-subtracted logsumexp gets this right.
    let mut rng = Rng::new(5);
    let logits = Tensor::uniform(&[4, 11], 990.0, 1000.0, &mut rng);
    let targets = random_targets(&[4, 11], 0, &mut rng);
    check_cross_entropy("cross_entropy, logits near 1000", logits.clone(), &targets);
    // check_op's max-error fold skips NaN, so check finiteness here
    let mut t = Tape::new();
    let x = t.param(logits);
    let loss = t.cross_entropy(x, &targets, IGNORE_INDEX);
    assert!(t.value(loss).item().is_finite(), "cross_entropy of huge logits: loss {:?}", t.value(loss));
    let grads = t.backward(loss);
    assert!(
        grads.get(x).unwrap().data().iter().all(|g| g.is_finite()),
        "cross_entropy of huge logits: gradient"
    );
}

#[test]
fn cross_entropy_with_another_ignore_index() {
    let mut t = Tape::new();
    let x = t.param(Tensor::new(&[2, 2], vec![0.0, 0.0, 5.0, -5.0]));
    let loss = t.cross_entropy(x, &[1, 7], 7);
    assert!((t.value(loss).item() - std::f32::consts::LN_2).abs() < 1e-6, "row 1 (target 7) was counted");
}

#[test]
#[should_panic(expected = "cross_entropy: logits [2, 3, 4] (6 rows) and targets [5] differ in rows")]
fn cross_entropy_targets_mismatch_names_both_shapes() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[2, 3, 4]));
    t.cross_entropy(x, &[0; 5], IGNORE_INDEX);
}

#[test]
#[should_panic(
    expected = "cross_entropy: target 4 at row 1 is outside 0..4 and is not the ignore_index -100"
)]
fn cross_entropy_target_out_of_range_names_it() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[3, 4]));
    t.cross_entropy(x, &[0, 4, IGNORE_INDEX], IGNORE_INDEX);
}

#[test]
#[should_panic(expected = "cross_entropy: target -1 at row 0 is outside 0..4")]
fn cross_entropy_negative_target_panics() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[1, 4]));
    t.cross_entropy(x, &[-1], IGNORE_INDEX);
}
