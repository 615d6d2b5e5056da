//! The language-model loss: cross-entropy over the vocabulary, fused with its log-softmax.

use crate::autograd::{Op, Tape, Var};
use crate::cpu::threads::par_rows;
use crate::ops;
use crate::tensor::Tensor;

/// The target that marks a row as not counted (Hugging Face's / PyTorch's default).
pub const IGNORE_INDEX: i32 = -100;

// Cross-entropy with an ignore index.  logits: (N, V)  targets: (N)  lse: (N)  loss: scalar []
// forward:  lse_n = m + ln Σ_v exp(logits_nv − m),  m = max_v logits_nv
//           loss  = (1/count) · Σ_{n counted} (lse_n − logits_n[target_n])
//           counted: target_n ≠ ignore_index;  loss = 0 when count = 0
// backward: dlogits_nv += dloss/count · (exp(logits_nv − lse_n) − [v = target_n])   (counted n)
impl Tape {
    pub fn cross_entropy(&mut self, logits: Var, targets: &[i32], ignore_index: i32) -> Var {
        let shape = self.shape(logits);
        assert!(shape.last() != Some(&0), "cross_entropy: logits {shape:?} have no classes");
        let (n, v) = self.value(logits).rows_cols();
        assert!(
            targets.len() == n,
            "cross_entropy: logits {shape:?} ({n} rows) and targets [{}] differ in rows",
            targets.len()
        );
        for (row, &t) in targets.iter().enumerate() {
            assert!(
                t == ignore_index || is_class(t, v),
                "cross_entropy: target {t} at row {row} is outside 0..{v} and is not the ignore_index {ignore_index}"
            );
        }
        #[cfg(feature = "cuda")]
        if self.value(logits).gpu().is_some() {
            let (loss, lse) = crate::cuda::ops::cross_entropy(self.value(logits), targets, ignore_index);
            return self
                .push(loss, Op::CrossEntropy { logits, targets: targets.to_vec(), ignore_index, lse });
        }
        let mut lse = vec![0.0; n];
        let loss = cross_entropy_forward(&mut lse, self.value(logits).data(), targets, ignore_index, v);
        let op =
            Op::CrossEntropy { logits, targets: targets.to_vec(), ignore_index, lse: Tensor::new(&[n], lse) };
        self.push(Tensor::scalar(loss), op)
    }
}

fn is_class(target: i32, v: usize) -> bool {
    usize::try_from(target).is_ok_and(|t| t < v)
}

/// Rows whose target is not `ignore_index`: the loss's denominator.
fn counted_rows(targets: &[i32], ignore_index: i32) -> usize {
    targets.iter().filter(|&&t| t != ignore_index).count()
}

/// Writes each row's logsumexp to `lse` and returns the mean loss over the counted rows.
pub fn cross_entropy_forward(
    lse: &mut [f32],
    logits: &[f32],
    targets: &[i32],
    ignore_index: i32,
    v: usize,
) -> f32 {
    par_rows(lse, 1, v, |first, lse| {
        for (i, lse) in lse.iter_mut().enumerate() {
            let n = first + i;
            *lse = ops::logsumexp(&logits[n * v..(n + 1) * v]);
        }
    });
    let count = counted_rows(targets, ignore_index);
    if count == 0 {
        return 0.0;
    }
    let total: f64 = (targets.iter().enumerate())
        .filter(|&(_, &t)| t != ignore_index)
        .map(|(n, &t)| lse[n] as f64 - logits[n * v + t as usize] as f64)
        .sum();
    (total / count as f64) as f32
}

pub fn cross_entropy_backward(
    dlogits: &mut [f32],
    dloss: f32,
    lse: &[f32],
    logits: &[f32],
    targets: &[i32],
    ignore_index: i32,
    v: usize,
) {
    let count = counted_rows(targets, ignore_index);
    if count == 0 {
        return;
    }
    let dloss_per_row = dloss / count as f32;
    par_rows(dlogits, v, v, |first, dlogits| {
        for (i, drow) in dlogits.chunks_exact_mut(v).enumerate() {
            let n = first + i;
            let target = targets[n];
            if target == ignore_index {
                continue;
            }
            let logits_row = &logits[n * v..(n + 1) * v];
            for (class, (d, &logit)) in drow.iter_mut().zip(logits_row).enumerate() {
                let one_hot = if class == target as usize { 1.0 } else { 0.0 };
                *d += dloss_per_row * ((logit - lse[n]).exp() - one_hot);
            }
        }
    });
}
