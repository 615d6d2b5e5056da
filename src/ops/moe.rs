//! The MoE block's routing and data movement: top-k selection, gather and scatter-add of rows,
//! and per-row scaling. Dispatch gathers each expert's tokens into one contiguous block;
//! combine scales the expert outputs by their router weights and scatter-adds them back to
//! their tokens.

use crate::autograd::{Op, Tape, Var};
use crate::ops;
use crate::tensor::Tensor;

// ---- top-k
//
// Top-k per row.   x: (N, C)   values: (N, K)   indices: (N, K) u32, no gradient
// forward:  idx_n = the K largest x_nc in descending order; ties → the lower index first
//           (compared by f32::total_cmp: −0 < +0, NaN above +∞). values_nj = x_{n, idx_nj}
//           HF: routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
//           (torch leaves the order of ties unspecified; this rule fixes it)
// backward: dx_{n, idx_nj} += dvalues_nj          (unselected entries get nothing)

impl Tape {
    /// The k largest entries of each row of x (any rank, rows along the last dimension) and
    /// their indices (row-major, N·k of them). Only the values carry a gradient.
    pub fn topk(&mut self, x: Var, k: usize) -> (Var, Vec<u32>) {
        let shape = self.shape(x).to_vec();
        let (n, c) = self.value(x).rows_cols();
        assert!((1..=c).contains(&k), "topk: k = {k} must be in 1..={c} for x {shape:?}");
        let values_shape = [&shape[..shape.len().saturating_sub(1)], &[k]].concat();
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let (values, indices) = crate::cuda::ops::topk(self.value(x), k, &values_shape);
            let values = self.push(values, Op::TopK { x, indices: indices.clone() });
            return (values, indices);
        }
        let mut values = vec![0.0; n * k];
        let mut indices = vec![0; n * k];
        topk_forward(&mut values, &mut indices, self.value(x).data(), c, k);
        let values = self.push(Tensor::new(&values_shape, values), Op::TopK { x, indices: indices.clone() });
        (values, indices)
    }
}

pub fn topk_forward(values: &mut [f32], indices: &mut [u32], x: &[f32], c: usize, k: usize) {
    let mut order: Vec<u32> = Vec::with_capacity(c);
    let rows = x.chunks_exact(c).zip(values.chunks_exact_mut(k)).zip(indices.chunks_exact_mut(k));
    for ((x_row, values_row), indices_row) in rows {
        order.clear();
        order.extend((0..c).map(|i| i as u32));
        // A stable sort, largest first: equal values keep their ascending index order.
        order.sort_by(|&i, &j| x_row[j as usize].total_cmp(&x_row[i as usize]));
        indices_row.copy_from_slice(&order[..k]);
        for (value, &i) in values_row.iter_mut().zip(&order[..k]) {
            *value = x_row[i as usize];
        }
    }
}

pub fn topk_backward(dx: &mut [f32], dvalues: &[f32], indices: &[u32], c: usize, k: usize) {
    let rows = dx.chunks_exact_mut(c).zip(dvalues.chunks_exact(k)).zip(indices.chunks_exact(k));
    for ((dx_row, dvalues_row), indices_row) in rows {
        for (&dvalue, &i) in dvalues_row.iter().zip(indices_row) {
            dx_row[i as usize] += dvalue;
        }
    }
}

// ---- gather and scatter-add of rows: each is the other's transpose
//
// gather_rows.        x: (R, C)   idx: (M), each < R   y: (M, C)
// forward:  y_m = x_{idx_m}                     (a row of x may be taken many times, or never)
// backward: dx_{idx_m} += dy_m                  (summed in order of m)
//           HF: current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
//
// scatter_add_rows.   x: (M, C)   idx: (M), each < R   y: (R, C)
// forward:  y_r = Σ_{m : idx_m = r} x_m         (summed in order of m; a row no m hits is 0)
// backward: dx_m += dy_{idx_m}
//           HF: final_hidden_states.index_add_(0, top_x, current_hidden_states)

impl Tape {
    /// Rows `idx[0]`, `idx[1]`, … of x (any rank, rows along the last dimension): (len(idx), C).
    pub fn gather_rows(&mut self, x: Var, idx: &[u32]) -> Var {
        let (rows, c) = self.value(x).rows_cols();
        check_indices("gather_rows", idx, rows, &format!("x {:?}", self.shape(x)));
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::take_rows(self.value(x), idx, false);
            return self.push(y, Op::GatherRows { x, idx: idx.to_vec() });
        }
        let mut y = vec![0.0; idx.len() * c];
        gather_rows_forward(&mut y, self.value(x).data(), idx, c);
        self.push(Tensor::new(&[idx.len(), c], y), Op::GatherRows { x, idx: idx.to_vec() })
    }

    /// Row m of x (any rank, rows along the last dimension) added into row `idx[m]` of a
    /// (rows, C) zero matrix.
    pub fn scatter_add_rows(&mut self, x: Var, idx: &[u32], rows: usize) -> Var {
        let (m, c) = self.value(x).rows_cols();
        assert!(
            idx.len() == m,
            "scatter_add_rows: x {:?} and idx [{}]: one index per row of x ({m})",
            self.shape(x),
            idx.len()
        );
        check_indices("scatter_add_rows", idx, rows, &format!("the output [{rows}, {c}]"));
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::scatter_add_rows(self.value(x), idx, rows);
            return self.push(y, Op::ScatterAddRows { x, idx: idx.to_vec() });
        }
        let mut y = vec![0.0; rows * c];
        scatter_add_rows_forward(&mut y, self.value(x).data(), idx, c);
        self.push(Tensor::new(&[rows, c], y), Op::ScatterAddRows { x, idx: idx.to_vec() })
    }
}

/// Panics naming `op` and `target` (what idx points into) unless every index is below `rows`.
fn check_indices(op: &str, idx: &[u32], rows: usize, target: &str) {
    if let Some((m, r)) = idx.iter().enumerate().find(|&(_, &r)| r as usize >= rows) {
        panic!("{op}: idx[{m}] = {r} is out of range: {target} has {rows} rows");
    }
}

pub fn gather_rows_forward(y: &mut [f32], x: &[f32], idx: &[u32], c: usize) {
    take_rows(y, x, idx, c, <[f32]>::copy_from_slice);
}

pub fn gather_rows_backward(dx: &mut [f32], dy: &[f32], idx: &[u32], c: usize) {
    add_rows_into(dx, dy, idx, c);
}

pub fn scatter_add_rows_forward(y: &mut [f32], x: &[f32], idx: &[u32], c: usize) {
    y.fill(0.0);
    add_rows_into(y, x, idx, c);
}

pub fn scatter_add_rows_backward(dx: &mut [f32], dy: &[f32], idx: &[u32], c: usize) {
    take_rows(dx, dy, idx, c, ops::accumulate);
}

/// dst_m ← src_{idx_m} for every m, where `put` copies or adds the row.
fn take_rows(dst: &mut [f32], src: &[f32], idx: &[u32], c: usize, put: fn(&mut [f32], &[f32])) {
    assert_eq!(
        dst.len(),
        idx.len() * c,
        "take_rows: {} destination values for {} rows of {c}",
        dst.len(),
        idx.len()
    );
    for (dst_row, &r) in dst.chunks_exact_mut(c).zip(idx) {
        put(dst_row, &src[r as usize * c..][..c]);
    }
}

/// dst_{idx_m} += src_m, in order of m.
fn add_rows_into(dst: &mut [f32], src: &[f32], idx: &[u32], c: usize) {
    assert_eq!(
        src.len(),
        idx.len() * c,
        "add_rows_into: {} source values for {} rows of {c}",
        src.len(),
        idx.len()
    );
    for (src_row, &r) in src.chunks_exact(c).zip(idx) {
        ops::accumulate(&mut dst[r as usize * c..][..c], src_row);
    }
}

// ---- scale_rows
//
// scale_rows.   x, y: (M, C)   w: M values (any shape, e.g. (M) or (M, 1))
// forward:  y_m = w_m · x_m
// backward: dx_m += w_m · dy_m;   dw_m += Σ_c dy_mc · x_mc
//           HF: current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]

impl Tape {
    /// Each row of x (any rank, rows along the last dimension) times its weight in w.
    pub fn scale_rows(&mut self, x: Var, w: Var) -> Var {
        let (m, c) = self.value(x).rows_cols();
        assert!(
            self.value(w).numel() == m,
            "scale_rows: x {:?} and w {:?}: w needs one value per row of x ({m})",
            self.shape(x),
            self.shape(w)
        );
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::scale_rows(self.value(x), self.value(w));
            return self.push(y, Op::ScaleRows { x, w });
        }
        let mut y = vec![0.0; m * c];
        scale_rows_forward(&mut y, self.value(x).data(), self.value(w).data(), c);
        let shape = self.shape(x).to_vec();
        self.push(Tensor::new(&shape, y), Op::ScaleRows { x, w })
    }
}

pub fn scale_rows_forward(y: &mut [f32], x: &[f32], w: &[f32], c: usize) {
    for ((y_row, x_row), &w_m) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(w) {
        for (y, &x) in y_row.iter_mut().zip(x_row) {
            *y = w_m * x;
        }
    }
}

pub fn scale_rows_backward(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], c: usize) {
    let rows = dx.chunks_exact_mut(c).zip(dw.iter_mut()).zip(dy.chunks_exact(c).zip(x.chunks_exact(c)));
    for (((dx_row, dw_m), (dy_row, x_row)), &w_m) in rows.zip(w) {
        for ((dx, &dy), &x) in dx_row.iter_mut().zip(dy_row).zip(x_row) {
            *dx += w_m * dy;
            *dw_m += dy * x;
        }
    }
}

// ---- Renormalise rows to sum to one.  x, y: (N, K)   (norm_topk_prob: the top-k weights)
// forward:  S = Σ_j x_j;   y_i = x_i / S
//           HF: routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
// backward: dx_i += (dy_i − Σ_j dy_j y_j) / S        (uses the output y)
impl Tape {
    pub fn renormalize_rows(&mut self, x: Var) -> Var {
        let x_value = self.value(x);
        let c = x_value.rows_cols().1;
        assert!(c > 0, "renormalize_rows: x {:?} has empty rows", x_value.shape());
        #[cfg(feature = "cuda")]
        if x_value.gpu().is_some() {
            let y = crate::cuda::ops::renormalize_rows(x_value);
            return self.push(y, Op::RenormalizeRows { x });
        }
        let mut y = vec![0.0; x_value.numel()];
        renormalize_rows_forward(&mut y, x_value.data(), c);
        let y = Tensor::new(x_value.shape(), y);
        self.push(y, Op::RenormalizeRows { x })
    }
}

pub fn renormalize_rows_forward(y: &mut [f32], x: &[f32], c: usize) {
    for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let total: f32 = x.iter().sum();
        y.iter_mut().zip(x).for_each(|(y, x)| *y = x / total);
    }
}

pub fn renormalize_rows_backward(dx: &mut [f32], dy: &[f32], y: &[f32], x: &[f32], c: usize) {
    for (((dx, dy), y), x) in
        dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(y.chunks_exact(c)).zip(x.chunks_exact(c))
    {
        let total: f32 = x.iter().sum();
        let dy_dot_y: f32 = dy.iter().zip(y).map(|(a, b)| a * b).sum();
        for (dx, dy) in dx.iter_mut().zip(dy) {
            *dx += (dy - dy_dot_y) / total;
        }
    }
}
