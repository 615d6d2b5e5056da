//! kernels/embedding.ptx against ops/dense.rs (embedding) and ops/moe.rs (gather_rows,
//! scatter_add_rows). The gathers copy or do one add per element and the scatters add each
//! row's contributions to its old value in ascending order, as the CPU twins do: every
//! comparison is bit for bit (atol 0, rtol 0).

use super::{assert_close, gpu, poison, random};
use moe::cuda::embedding;
use moe::ops::{dense, moe as moe_ops};
use moe::rng::Rng;

const ROWS_OUT: [usize; 4] = [1, 3, 50, 783];
const TABLE_ROWS: [usize; 4] = [1, 7, 1000, 50304];
const COLS: [usize; 2] = [8, 100];

/// n indices below `rows`, with repeats: small tables repeat by chance, and the last index
/// repeats the first.
fn indices(n: usize, rows: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut idx: Vec<u32> = (0..n).map(|_| rng.below(rows) as u32).collect();
    if n > 1 {
        idx[n - 1] = idx[0];
    }
    idx
}

/// Every (N, V, C) of the test grid, with a seed of its own.
fn cases() -> impl Iterator<Item = (usize, usize, usize, u64)> {
    let mut seed = 0;
    ROWS_OUT.into_iter().flat_map(move |n| {
        TABLE_ROWS.into_iter().flat_map(move |v| {
            COLS.into_iter().map(move |c| {
                seed += 1;
                (n, v, c, 1000 * seed)
            })
        })
    })
}

#[test]
fn embedding_forward_matches_cpu() {
    let Some(gpu) = gpu("embedding_forward_matches_cpu") else { return };
    for (n, v, c, seed) in cases() {
        let (table, ids) = (random(v * c, seed), indices(n, v, seed + 1));
        let mut want = vec![0.0; n * c];
        dense::embedding_forward(&mut want, &table, &ids, c);
        let mut y = gpu.upload(&poison(n * c)).unwrap();
        embedding::embedding_forward(
            gpu,
            &mut y,
            &gpu.upload(&table).unwrap(),
            &gpu.upload(&ids).unwrap(),
            c,
        )
        .unwrap();
        assert_close(
            &format!("embedding_forward N={n} V={v} C={c}"),
            &gpu.download(&y).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn embedding_backward_matches_cpu() {
    let Some(gpu) = gpu("embedding_backward_matches_cpu") else { return };
    for (n, v, c, seed) in cases() {
        let (dtable, dy, ids) = (random(v * c, seed), random(n * c, seed + 1), indices(n, v, seed + 2));
        // No padding; a padding id that occurs (ids[1], or the only id); one that does not.
        for padding_idx in [None, Some(ids[1 % n]), Some(v as u32)] {
            let mut want = dtable.clone();
            dense::embedding_backward(&mut want, &dy, &ids, padding_idx, c);
            let mut got = gpu.upload(&dtable).unwrap();
            embedding::embedding_backward(gpu, &mut got, &gpu.upload(&dy).unwrap(), &ids, padding_idx, c)
                .unwrap();
            let what = format!("embedding_backward N={n} V={v} C={c} padding_idx={padding_idx:?}");
            assert_close(&what, &gpu.download(&got).unwrap(), &want, 0.0, 0.0);
        }
    }
}

#[test]
fn embedding_backward_of_only_padding_changes_nothing() {
    let Some(gpu) = gpu("embedding_backward_of_only_padding_changes_nothing") else { return };
    let (v, c) = (7, 100);
    let dtable = random(v * c, 1);
    let mut got = gpu.upload(&dtable).unwrap();
    let dy = gpu.upload(&random(5 * c, 2)).unwrap();
    embedding::embedding_backward(gpu, &mut got, &dy, &[3; 5], Some(3), c).unwrap();
    assert_close("embedding_backward, all padding", &gpu.download(&got).unwrap(), &dtable, 0.0, 0.0);
}

#[test]
fn gather_rows_forward_matches_cpu() {
    let Some(gpu) = gpu("gather_rows_forward_matches_cpu") else { return };
    for (m, r, c, seed) in cases() {
        let (x, idx) = (random(r * c, seed), indices(m, r, seed + 1));
        let mut want = vec![0.0; m * c];
        moe_ops::gather_rows_forward(&mut want, &x, &idx, c);
        let mut y = gpu.upload(&poison(m * c)).unwrap();
        embedding::gather_rows_forward(gpu, &mut y, &gpu.upload(&x).unwrap(), &gpu.upload(&idx).unwrap(), c)
            .unwrap();
        assert_close(
            &format!("gather_rows_forward M={m} R={r} C={c}"),
            &gpu.download(&y).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn gather_rows_backward_matches_cpu() {
    let Some(gpu) = gpu("gather_rows_backward_matches_cpu") else { return };
    for (m, r, c, seed) in cases() {
        let (dx, dy, idx) = (random(r * c, seed), random(m * c, seed + 1), indices(m, r, seed + 2));
        let mut want = dx.clone();
        moe_ops::gather_rows_backward(&mut want, &dy, &idx, c);
        let mut got = gpu.upload(&dx).unwrap();
        embedding::gather_rows_backward(gpu, &mut got, &gpu.upload(&dy).unwrap(), &idx, c).unwrap();
        assert_close(
            &format!("gather_rows_backward M={m} R={r} C={c}"),
            &gpu.download(&got).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn scatter_add_rows_forward_matches_cpu() {
    let Some(gpu) = gpu("scatter_add_rows_forward_matches_cpu") else { return };
    for (m, r, c, seed) in cases() {
        let (x, idx) = (random(m * c, seed), indices(m, r, seed + 1));
        let mut want = vec![0.0; r * c];
        moe_ops::scatter_add_rows_forward(&mut want, &x, &idx, c);
        // Poisoned: rows no m hits must come out 0.
        let mut y = gpu.upload(&poison(r * c)).unwrap();
        embedding::scatter_add_rows_forward(gpu, &mut y, &gpu.upload(&x).unwrap(), &idx, c).unwrap();
        let what = format!("scatter_add_rows_forward M={m} R={r} C={c}");
        assert_close(&what, &gpu.download(&y).unwrap(), &want, 0.0, 0.0);
    }
}

#[test]
fn scatter_add_rows_backward_matches_cpu() {
    let Some(gpu) = gpu("scatter_add_rows_backward_matches_cpu") else { return };
    for (m, r, c, seed) in cases() {
        let (dx, dy, idx) = (random(m * c, seed), random(r * c, seed + 1), indices(m, r, seed + 2));
        let mut want = dx.clone();
        moe_ops::scatter_add_rows_backward(&mut want, &dy, &idx, c);
        let mut got = gpu.upload(&dx).unwrap();
        embedding::scatter_add_rows_backward(
            gpu,
            &mut got,
            &gpu.upload(&dy).unwrap(),
            &gpu.upload(&idx).unwrap(),
            c,
        )
        .unwrap();
        let what = format!("scatter_add_rows_backward M={m} R={r} C={c}");
        assert_close(&what, &gpu.download(&got).unwrap(), &want, 0.0, 0.0);
    }
}

#[test]
fn gather_of_an_out_of_range_row_is_nan_not_a_wild_read() {
    let Some(gpu) = gpu("gather_of_an_out_of_range_row_is_nan_not_a_wild_read") else { return };
    let (r, c) = (4, 8);
    let x = random(r * c, 3);
    let mut y = gpu.upload(&poison(2 * c)).unwrap();
    embedding::gather_rows_forward(
        gpu,
        &mut y,
        &gpu.upload(&x).unwrap(),
        &gpu.upload(&[2u32, 4]).unwrap(),
        c,
    )
    .unwrap();
    let y = gpu.download(&y).unwrap();
    assert_close("gather_rows_forward, the in-range row", &y[..c], &x[2 * c..3 * c], 0.0, 0.0);
    assert!(y[c..].iter().all(|v| v.is_nan()), "row idx = R = {r} should be NaN, got {:?}", &y[c..]);
}
