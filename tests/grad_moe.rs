//! The MoE routing ops (top-k, gather_rows, scatter_add_rows, scale_rows) against plain f64
//! loops and finite differences, the top-k tie rule and boundary, and the whole combine path
//! on a hand-worked example.

mod common;
use common::*;
use moe::autograd::Tape;
use moe::rng::Rng;
use moe::tensor::Tensor;

// ---- top-k

/// The k largest of each row of c, largest first, ties to the lower index.
fn topk_ref(x: &[f64], c: usize, k: usize) -> Vec<f64> {
    let mut values = Vec::new();
    for row in x.chunks(c) {
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&i, &j| row[j].partial_cmp(&row[i]).unwrap().then(i.cmp(&j)));
        values.extend(order[..k].iter().map(|&i| row[i]));
    }
    values
}

/// Rows that are shuffles of levels 0.2 apart plus noise under ±0.05: every pair of entries is
/// at least 0.1 apart, so no finite-difference step changes which ones are selected.
fn separated_rows(shape: &[usize], rng: &mut Rng) -> Tensor {
    let c = *shape.last().unwrap();
    let rows: usize = shape.iter().product::<usize>() / c;
    let mut data = Vec::new();
    for _ in 0..rows {
        let mut row: Vec<f32> =
            (0..c).map(|j| 0.2 * j as f32 - 0.1 * c as f32 + 0.1 * (rng.uniform() as f32 - 0.5)).collect();
        rng.shuffle(&mut row);
        data.extend(row);
    }
    Tensor::new(shape, data)
}

#[test]
fn topk_gradients() {
    let mut rng = Rng::new(41);
    for (shape, k) in [
        (vec![1, 1], 1),    // size 1
        (vec![5, 4], 1),    // k = 1
        (vec![5, 4], 4),    // k = C
        (vec![7, 6], 2),    // ragged
        (vec![3, 64], 8),   // OLMoE: 64 experts, 8 per token
        (vec![2, 3, 5], 3), // rank 3
    ] {
        let c = *shape.last().unwrap();
        check_op(
            &format!("topk {shape:?} k={k}"),
            &[param(separated_rows(&shape, &mut rng))],
            |tape, v| tape.topk(v[0], k).0,
            |x| topk_ref(&x[0], c, k),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
fn topk_ties_go_to_the_lower_index() {
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::new(
        &[3, 5],
        vec![
            1.0, 3.0, 3.0, 2.0, 3.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, //
            -1.0, 5.0, -1.0, 5.0, 4.0,
        ],
    ));
    let (values, indices) = tape.topk(x, 4);
    assert_eq!(indices, [1, 2, 4, 3, 0, 1, 2, 3, 1, 3, 4, 0]);
    assert_eq!(tape.value(values).data(), [3.0, 3.0, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 4.0, -1.0]);
    assert_eq!(tape.shape(values), [3, 4]);
}

#[test]
fn topk_unselected_entries_get_exactly_zero_gradient() {
    let mut tape = Tape::new();
    // 0.49 sits just below the boundary between the 2nd (0.5) and 3rd largest.
    let x = tape.param(Tensor::new(&[2, 5], vec![0.1, 0.9, 0.5, 0.49, 0.2, 0.3, -0.2, 0.3, 0.7, 0.0]));
    let (values, indices) = tape.topk(x, 2);
    assert_eq!(indices, [1, 2, 3, 0]);
    let grads = tape.backward_from(values, Tensor::new(&[2, 2], vec![1.5, -2.0, 0.25, 4.0]));
    let dx = grads.get(x).unwrap().data();
    assert_eq!(dx, [0.0, 1.5, -2.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.25, 0.0]);
}

#[test]
#[should_panic(expected = "topk: k = 6 must be in 1..=5 for x [2, 5]")]
fn topk_k_larger_than_row_panics() {
    let mut tape = Tape::new();
    let x = tape.param(Tensor::zeros(&[2, 5]));
    tape.topk(x, 6);
}

// ---- gather and scatter-add of rows

fn gather_ref(x: &[f64], idx: &[u32], c: usize) -> Vec<f64> {
    let mut y = Vec::new();
    for &r in idx {
        y.extend_from_slice(&x[r as usize * c..(r as usize + 1) * c]);
    }
    y
}

fn scatter_add_ref(x: &[f64], idx: &[u32], rows: usize, c: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * c];
    for (m, &r) in idx.iter().enumerate() {
        for j in 0..c {
            y[r as usize * c + j] += x[m * c + j];
        }
    }
    y
}

#[test]
fn gather_rows_gradients() {
    let mut rng = Rng::new(43);
    // Rows taken several times (4, 0) and never (1, 3); a rank-3 x; size 1.
    for (shape, idx) in
        [(vec![5, 3], vec![4, 0, 4, 2, 4, 0]), (vec![2, 3, 4], vec![5, 0, 5, 2]), (vec![1, 1], vec![0, 0])]
    {
        let c = *shape.last().unwrap();
        check_op(
            &format!("gather_rows {shape:?} idx {idx:?}"),
            &[param(rand(&shape, &mut rng))],
            |tape, v| tape.gather_rows(v[0], &idx),
            |x| gather_ref(&x[0], &idx, c),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
fn scatter_add_rows_gradients() {
    let mut rng = Rng::new(47);
    // Output rows hit several times (4, 0) and never (1, 3); size 1 into 3 rows.
    for (shape, idx, rows) in [
        (vec![6, 3], vec![4, 0, 4, 2, 4, 0], 5),
        (vec![2, 2, 5], vec![1, 1, 0, 1], 2),
        (vec![1, 1], vec![2], 3),
    ] {
        let c = *shape.last().unwrap();
        check_op(
            &format!("scatter_add_rows {shape:?} idx {idx:?} rows {rows}"),
            &[param(rand(&shape, &mut rng))],
            |tape, v| tape.scatter_add_rows(v[0], &idx, rows),
            |x| scatter_add_ref(&x[0], &idx, rows, c),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
#[should_panic(expected = "gather_rows: idx[2] = 5 is out of range: x [5, 3] has 5 rows")]
fn gather_rows_index_out_of_range_panics() {
    let mut tape = Tape::new();
    let x = tape.param(Tensor::zeros(&[5, 3]));
    tape.gather_rows(x, &[0, 4, 5]);
}

#[test]
#[should_panic(expected = "scatter_add_rows: x [4, 3] and idx [3]: one index per row of x (4)")]
fn scatter_add_rows_index_count_mismatch_names_both_shapes() {
    let mut tape = Tape::new();
    let x = tape.param(Tensor::zeros(&[4, 3]));
    tape.scatter_add_rows(x, &[0, 1, 2], 3);
}

// ---- scale_rows

fn scale_rows_ref(x: &[f64], w: &[f64], c: usize) -> Vec<f64> {
    x.iter().enumerate().map(|(i, &x)| w[i / c] * x).collect()
}

#[test]
fn scale_rows_gradients() {
    let mut rng = Rng::new(53);
    for (x_shape, w_shape) in [(vec![4, 3], vec![4]), (vec![1, 1], vec![1]), (vec![2, 3, 5], vec![6, 1])] {
        let c = *x_shape.last().unwrap();
        check_op(
            &format!("scale_rows x {x_shape:?} w {w_shape:?}"),
            &[param(rand(&x_shape, &mut rng)), param(rand(&w_shape, &mut rng))],
            |tape, v| tape.scale_rows(v[0], v[1]),
            |x| scale_rows_ref(&x[0], &x[1], c),
            FWD_TOL,
            BWD_TOL,
        );
    }
}

#[test]
#[should_panic(expected = "scale_rows: x [4, 3] and w [5]: w needs one value per row of x (4)")]
fn scale_rows_shape_mismatch_names_both_shapes() {
    let mut tape = Tape::new();
    let x = tape.param(Tensor::zeros(&[4, 3]));
    let w = tape.param(Tensor::zeros(&[5]));
    tape.scale_rows(x, w);
}

// ---- accumulation

/// y = scale_rows(x, f(x)): x reaches y by two paths, so f's backward finds x's gradient
/// already holding scale_rows' share: it must add to it, not overwrite it.
#[test]
fn backwards_add_to_an_existing_gradient() {
    let x = rand(&[4, 1], &mut Rng::new(59));
    let idx = [3, 0, 3, 1];
    check_op(
        "scale_rows(x, gather_rows(x))",
        &[param(x.clone())],
        |tape, v| {
            let w = tape.gather_rows(v[0], &idx);
            tape.scale_rows(v[0], w)
        },
        |x| scale_rows_ref(&x[0], &gather_ref(&x[0], &idx, 1), 1),
        FWD_TOL,
        BWD_TOL,
    );
    check_op(
        "scale_rows(x, scatter_add_rows(x))",
        &[param(x.clone())],
        |tape, v| {
            let w = tape.scatter_add_rows(v[0], &idx, 4);
            tape.scale_rows(v[0], w)
        },
        |x| scale_rows_ref(&x[0], &scatter_add_ref(&x[0], &idx, 4, 1), 1),
        FWD_TOL,
        BWD_TOL,
    );
    check_op(
        "scale_rows(x, topk(x, 1))",
        &[param(x)],
        |tape, v| {
            let w = tape.topk(v[0], 1).0;
            tape.scale_rows(v[0], w)
        },
        |x| x[0].iter().map(|v| v * v).collect(),
        FWD_TOL,
        BWD_TOL,
    );
}

// ---- the whole combine path

/// 2 tokens, 3 experts, top-2. Expert e multiplies its input by e + 1.
///   probs  t0: [0.5, 0.2, 0.3] → experts 0 (0.5), 2 (0.3)
///          t1: [0.1, 0.6, 0.3] → experts 1 (0.6), 2 (0.3)
///   assignments a = token·2 + slot, sorted by expert: a0 (e0, t0), a2 (e1, t1), a1 (e2, t0), a3 (e2, t1)
///   out t0 = 0.5·1·h0 + 0.3·3·h0 = 1.4·h0       out t1 = 0.6·2·h1 + 0.3·3·h1 = 2.1·h1
/// With d out = 1: dh0 = 1.4, dh1 = 2.1 per entry, and d prob(t, e) = (e + 1) · Σ_c h_t,c
/// for the selected pairs: Σ h0 = −1, Σ h1 = 4.5 → dprobs [[−1, 0, −3], [0, 9, 13.5]].
#[test]
fn moe_combine_path_by_hand() {
    let mut tape = Tape::new();
    let h = tape.param(Tensor::new(&[2, 2], vec![1.0, -2.0, 0.5, 4.0]));
    let probs = tape.param(Tensor::new(&[2, 3], vec![0.5, 0.2, 0.3, 0.1, 0.6, 0.3]));

    let (weights, experts) = tape.topk(probs, 2);
    assert_eq!(experts, [0, 2, 1, 2]);
    // Dispatch: the assignments sorted (stably) by expert, and the token of each.
    let mut order: Vec<u32> = (0..4).collect();
    order.sort_by_key(|&a| experts[a as usize]);
    assert_eq!(order, [0, 2, 1, 3]);
    let tokens: Vec<u32> = order.iter().map(|a| a / 2).collect();
    let expert_in = tape.gather_rows(h, &tokens);
    // The experts: expert e scales by e + 1.
    let factors =
        tape.constant(Tensor::new(&[4], order.iter().map(|&a| (experts[a as usize] + 1) as f32).collect()));
    let expert_out = tape.scale_rows(expert_in, factors);
    // Combine: scale by the router weight of each assignment, add back to its token.
    let weights = tape.reshape(weights, &[4, 1]);
    let weights = tape.gather_rows(weights, &order);
    let weighted = tape.scale_rows(expert_out, weights);
    let out = tape.scatter_add_rows(weighted, &tokens, 2);

    let close = |got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6), "got {got:?}, want {want:?}");
    };
    close(tape.value(out).data(), &[1.4, -2.8, 1.05, 8.4]);
    let grads = tape.backward_from(out, Tensor::full(&[2, 2], 1.0));
    close(grads.get(h).unwrap().data(), &[1.4, 1.4, 2.1, 2.1]);
    close(grads.get(probs).unwrap().data(), &[-1.0, 0.0, -3.0, 0.0, 9.0, 13.5]);
}

#[test]
fn renormalize_rows_gradients() {
    let mut rng = Rng::new(31);
    for shape in [&[1, 1][..], &[4, 2], &[3, 8]] {
        let c = *shape.last().unwrap();
        let x = Tensor::uniform(shape, 0.05, 1.0, &mut rng); // router probabilities: positive
        check_op(
            &format!("renormalize_rows {shape:?}"),
            &[param(x)],
            |t, v| t.renormalize_rows(v[0]),
            |x| {
                x[0].chunks(c)
                    .flat_map(|r| {
                        let s: f64 = r.iter().sum();
                        r.iter().map(move |v| v / s)
                    })
                    .collect()
            },
            FWD_TOL,
            BWD_TOL,
        );
    }
}
