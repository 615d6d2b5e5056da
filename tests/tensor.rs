//! Tensor storage, the seeded PRNG and its initialisers, 16-bit conversions, and the tape's
//! own rules (which leaves get gradients, scalar losses, reshape).

mod common;
use common::*;
use half::{bf16, f16};
use moe::autograd::Tape;
use moe::rng::Rng;
use moe::tensor::Tensor;

#[test]
fn same_seed_same_stream_and_state_resumes_it() {
    let (mut a, mut b) = (Rng::new(42), Rng::new(42));
    let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    assert_ne!(Rng::new(43).next_u64(), Rng::new(42).next_u64());
    let saved = a.state();
    let next: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
    let mut resumed = Rng::from_state(saved);
    assert_eq!(next, (0..10).map(|_| resumed.next_u64()).collect::<Vec<_>>());
}

#[test]
fn distributions_have_their_moments_and_bounds() {
    let mut rng = Rng::new(1);
    let n = 200_000;
    let moments = |xs: &[f64]| {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        (mean, var.sqrt())
    };
    let u: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let (m, s) = moments(&u);
    assert!((m - 0.5).abs() < 0.01 && (s - (1.0f64 / 12.0).sqrt()).abs() < 0.01, "uniform {m} {s}");
    let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let (m, s) = moments(&z);
    assert!(m.abs() < 0.01 && (s - 1.0).abs() < 0.01, "normal mean {m} std {s}");
    // N(0,1) truncated at ±2 has std sqrt(1 − 2·φ(2)·2 / (Φ(2) − Φ(−2))) = 0.8796
    let t: Vec<f64> = (0..n).map(|_| rng.truncated_normal(2.0)).collect();
    assert!(t.iter().all(|x| x.abs() <= 2.0));
    let (m, s) = moments(&t);
    assert!(m.abs() < 0.01 && (s - 0.8796).abs() < 0.01, "truncated normal mean {m} std {s}");
    let below: Vec<usize> = (0..n).map(|_| rng.below(7)).collect();
    for v in 0..7 {
        let share = below.iter().filter(|&&b| b == v).count() as f64 / n as f64;
        assert!((share - 1.0 / 7.0).abs() < 0.01, "below(7) gives {v} with share {share}");
    }
    let mut perm: Vec<usize> = (0..50).collect();
    rng.shuffle(&mut perm);
    assert_ne!(perm, (0..50).collect::<Vec<_>>());
    perm.sort();
    assert_eq!(perm, (0..50).collect::<Vec<_>>());
}

#[test]
fn initialisers_are_seeded_and_scaled() {
    let a = Tensor::trunc_normal(&[100, 100], 0.02, 3.0, &mut Rng::new(9));
    let b = Tensor::trunc_normal(&[100, 100], 0.02, 3.0, &mut Rng::new(9));
    assert_eq!(a.data(), b.data());
    assert!(a.data().iter().all(|x| x.abs() <= 0.06 + 1e-9), "trunc_normal escapes ±3 std");
    let std = (a.data().iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / 1e4).sqrt();
    assert!((std - 0.02 * 0.9866).abs() < 0.001, "trunc_normal std {std}"); // ±3σ truncation: 0.9866σ
    let u = Tensor::uniform(&[1000], -0.5, 0.25, &mut Rng::new(2));
    assert!(u.data().iter().all(|x| (-0.5..0.25).contains(x)));
    let r = Tensor::randn(&[3, 4], 1.0, &mut Rng::new(3));
    assert_eq!(r.shape(), &[3, 4]);
}

#[test]
fn sixteen_bit_conversions_round_to_nearest_even() {
    // Exactly representable values survive the round trip.
    let exact = Tensor::new(&[4], vec![1.0, -2.5, 0.0, 1024.0]);
    assert_eq!(Tensor::from_bf16(&[4], &exact.to_bf16()).data(), exact.data());
    assert_eq!(Tensor::from_f16(&[4], &exact.to_f16()).data(), exact.data());
    // The range ends: f16's largest finite value (65504), bf16 keeps f32's exponent range.
    let big = Tensor::new(&[1], vec![65504.0]);
    assert_eq!(Tensor::from_f16(&[1], &big.to_f16()).data(), big.data());
    let huge = Tensor::new(&[1], vec![2f32.powi(100)]);
    assert_eq!(Tensor::from_bf16(&[1], &huge.to_bf16()).data(), huge.data());
    // 1 + 2⁻⁸ is halfway between two bf16 values (1 and 1 + 2⁻⁷): ties go to even (1).
    let tie = Tensor::new(&[2], vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
    assert_eq!(tie.to_bf16(), vec![bf16::from_f32(1.0), bf16::from_f32(1.0 + 4.0 / 256.0)]);
    // f16: 1 + 2⁻¹¹ is halfway between 1 and 1 + 2⁻¹⁰.
    let tie = Tensor::new(&[1], vec![1.0 + 1.0 / 2048.0]);
    assert_eq!(tie.to_f16(), vec![f16::from_f32(1.0)]);
    assert_eq!(
        Tensor::from_bf16(&[2], &[bf16::from_bits(0x3F80), bf16::from_bits(0xC000)]).data(),
        &[1.0, -2.0]
    );
}

#[test]
fn storage_is_shared_until_written() {
    let a = Tensor::new(&[2, 3], (0..6).map(|x| x as f32).collect());
    let mut b = a.reshape(&[3, 2]);
    assert_eq!(b.rows_cols(), (3, 2));
    b.data_mut()[0] = 100.0;
    assert_eq!(a.data()[0], 0.0, "writing a reshaped copy must not change the original");
    assert_eq!(Tensor::scalar(2.0).rows_cols(), (1, 1));
    assert_eq!(Tensor::scalar(2.0).item(), 2.0);
}

#[test]
#[should_panic(expected = "Tensor::new: shape [2, 3] holds 6 values, got 5")]
fn wrong_length_names_shape_and_count() {
    Tensor::new(&[2, 3], vec![0.0; 5]);
}

#[test]
#[should_panic(expected = "reshape: cannot view shape [2, 3] as [4, 2]")]
fn bad_reshape_names_both_shapes() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[2, 3]));
    t.reshape(x, &[4, 2]);
}

#[test]
fn reshape_passes_gradients_through() {
    let mut rng = Rng::new(4);
    let inputs = [param(rand(&[2, 6], &mut rng)), param(rand(&[3, 5], &mut rng))];
    check_op(
        "reshape then matmul",
        &inputs,
        |t, v| {
            let a = t.reshape(v[0], &[4, 3]);
            t.matmul(a, v[1], false, false)
        },
        |x| matmul_ref(&x[0], &x[1], 4, 3, 5),
        FWD_TOL,
        BWD_TOL,
    );
}

#[test]
fn only_parameters_reached_by_the_loss_get_gradients() {
    let mut t = Tape::new();
    let w = t.param(Tensor::new(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    let x = t.constant(Tensor::new(&[1, 2], vec![1.0, 1.0]));
    let unused = t.param(Tensor::zeros(&[3]));
    let y = t.matmul(x, w, false, false); // (1, 2) = [4, 6]
    assert_eq!(t.value(y).data(), &[4.0, 6.0]);
    let grads = t.backward_from(y, Tensor::new(&[1, 2], vec![1.0, 10.0]));
    // dW = xᵀ·dy = [[1, 10], [1, 10]]
    assert_eq!(grads.get(w).unwrap().data(), &[1.0, 10.0, 1.0, 10.0]);
    assert!(grads.get(x).is_none(), "a constant gets no gradient");
    assert!(grads.get(unused).is_none(), "a parameter the output does not use gets no gradient");
}

#[test]
fn a_value_used_twice_sums_its_gradients() {
    // y = x·W + x·W' (as one matmul of x with [W | W'] would be), through two matmuls on one x.
    let mut t = Tape::new();
    let x = t.param(Tensor::new(&[1, 1], vec![3.0]));
    let w1 = t.constant(Tensor::new(&[1, 1], vec![2.0]));
    let y1 = t.matmul(x, w1, false, false);
    let y2 = t.matmul(y1, x, false, false); // y2 = (x·2)·x = 2x²
    let grads = t.backward_from(y2, Tensor::new(&[1, 1], vec![1.0]));
    assert_eq!(grads.get(x).unwrap().data(), &[12.0]); // d(2x²)/dx = 4x
}

#[test]
#[should_panic(expected = "backward: the loss must be a scalar, got shape [1, 2]")]
fn backward_needs_a_scalar_loss() {
    let mut t = Tape::new();
    let x = t.param(Tensor::zeros(&[1, 2]));
    t.backward(x);
}
