//! Dense ops: elementwise arithmetic and activations, RMSNorm, softmax, sum / mean, and the
//! embedding lookup. (…, C) is any shape whose leading dimensions flatten to N rows of C.
//! Row-wise work runs on several threads when it is large (`cpu::threads`); every output
//! element has one writer and reductions over rows add per-thread partials in order, so the
//! same inputs and thread count give the same bits.

use crate::autograd::{Op, Tape, Var};
use crate::cpu::threads::{par_map, par_rows, par_rows2};
use crate::ops::accumulate;
use crate::tensor::Tensor;

/// Row `n` of a matrix of `c`-wide rows.
fn row(x: &[f32], n: usize, c: usize) -> &[f32] {
    &x[n * c..(n + 1) * c]
}

/// `v` must be a vector as long as the rows of `x` (…, C).
fn assert_row_vector(op: &str, x: &[usize], v_name: &str, v: &[usize]) {
    let c = x.last().copied().unwrap_or(1);
    assert!(v == [c], "{op}: x {x:?} and {v_name} {v:?}: {v_name} must have shape [{c}]");
}

/// Row-wise ops need at least one value per row.
fn assert_rows_not_empty(op: &str, x: &[usize]) {
    assert!(x.last() != Some(&0), "{op}: x {x:?} has empty rows");
}

// ---- elementwise: y_i depends on position i of the inputs only

/// y_i = f(i) at every position, in parallel chunks when large.
fn write_each(y: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    par_rows(y, 1, 1, |first, chunk| {
        for (j, y) in chunk.iter_mut().enumerate() {
            *y = f(first + j);
        }
    });
}

/// g_i += f(i) at every position, in parallel chunks when large.
fn add_each(g: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    par_rows(g, 1, 1, |first, chunk| {
        for (j, g) in chunk.iter_mut().enumerate() {
            *g += f(first + j);
        }
    });
}

impl Tape {
    /// Records y = forward(x), y with x's shape.
    fn unary(&mut self, x: Var, forward: impl Fn(&mut [f32], &[f32]), op: Op) -> Var {
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::elementwise(&op, self.value(x), None);
            return self.push(y, op);
        }
        let x_value = self.value(x);
        let mut y = vec![0.0; x_value.numel()];
        forward(&mut y, x_value.data());
        let y = Tensor::new(x_value.shape(), y);
        self.push(y, op)
    }

    /// Records y = forward(a, b) for two inputs of one shape, y with that shape.
    fn binary(&mut self, name: &str, a: Var, b: Var, forward: fn(&mut [f32], &[f32], &[f32]), op: Op) -> Var {
        let (a_value, b_value) = (self.value(a), self.value(b));
        let (sa, sb) = (a_value.shape(), b_value.shape());
        assert!(sa == sb, "{name}: shapes {sa:?} and {sb:?} differ");
        #[cfg(feature = "cuda")]
        if a_value.gpu().is_some() {
            let y = crate::cuda::ops::elementwise(&op, a_value, Some(b_value));
            return self.push(y, op);
        }
        let mut y = vec![0.0; a_value.numel()];
        forward(&mut y, a_value.data(), b_value.data());
        let y = Tensor::new(a_value.shape(), y);
        self.push(y, op)
    }
}

// Add.  a, b, y: same shape
// forward:  y = a + b
// backward: da += dy;  db += dy                      (in autograd.rs)
impl Tape {
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.binary("add", a, b, add_forward, Op::Add { a, b })
    }
}

pub fn add_forward(y: &mut [f32], a: &[f32], b: &[f32]) {
    write_each(y, |i| a[i] + b[i]);
}

// Mul.  a, b, y: same shape
// forward:  y = a ⊙ b
// backward: da += dy ⊙ b;  db += dy ⊙ a              (mul(x, x): dx = 2·x·dy, by the tape)
impl Tape {
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.binary("mul", a, b, mul_forward, Op::Mul { a, b })
    }
}

pub fn mul_forward(y: &mut [f32], a: &[f32], b: &[f32]) {
    write_each(y, |i| a[i] * b[i]);
}

pub fn mul_backward(da: &mut [f32], db: &mut [f32], dy: &[f32], a: &[f32], b: &[f32]) {
    add_each(da, |i| dy[i] * b[i]);
    add_each(db, |i| dy[i] * a[i]);
}

// Scale.  x, y: same shape   s: a constant
// forward:  y = s · x
// backward: dx += s · dy
impl Tape {
    pub fn scale(&mut self, x: Var, s: f32) -> Var {
        self.unary(x, |y, x| scale_forward(y, x, s), Op::Scale { x, s })
    }
}

pub fn scale_forward(y: &mut [f32], x: &[f32], s: f32) {
    write_each(y, |i| s * x[i]);
}

pub fn scale_backward(dx: &mut [f32], dy: &[f32], s: f32) {
    add_each(dx, |i| s * dy[i]);
}

// Add a row vector.  x, y: (N, C)  bias: (C)
// forward:  y_n = x_n + bias
// backward: dx += dy;  dbias += Σ_n dy_n
impl Tape {
    pub fn add_row(&mut self, x: Var, bias: Var) -> Var {
        assert_row_vector("add_row", self.shape(x), "bias", self.shape(bias));
        let (x_value, bias_value) = (self.value(x), self.value(bias));
        #[cfg(feature = "cuda")]
        if x_value.gpu().is_some() {
            let y = crate::cuda::ops::add_row(x_value, bias_value);
            return self.push(y, Op::AddRow { x, bias });
        }
        let mut y = vec![0.0; x_value.numel()];
        add_row_forward(&mut y, x_value.data(), bias_value.data());
        let y = Tensor::new(x_value.shape(), y);
        self.push(y, Op::AddRow { x, bias })
    }
}

pub fn add_row_forward(y: &mut [f32], x: &[f32], bias: &[f32]) {
    let c = bias.len();
    write_each(y, |i| x[i] + bias[i % c]);
}

pub fn add_row_backward(dx: &mut [f32], dbias: &mut [f32], dy: &[f32], c: usize) {
    accumulate(dx, dy);
    let rows = dy.len() / c.max(1);
    sum_over_rows(dbias, rows, c, |n, dbias_part| accumulate(dbias_part, row(dy, n, c)));
}

/// total += Σ_n (row n's term), where `add_term(n, partial)` adds row n's term to a partial
/// sum. Each thread sums a contiguous range of rows; the partials are added in range order.
fn sum_over_rows(
    total: &mut [f32],
    rows: usize,
    work_per_row: usize,
    add_term: impl Fn(usize, &mut [f32]) + Sync,
) {
    let len = total.len();
    let partials = par_map(rows, work_per_row, |range| {
        let mut partial = vec![0.0; len];
        for n in range {
            add_term(n, &mut partial);
        }
        partial
    });
    for partial in &partials {
        accumulate(total, partial);
    }
}

// SiLU.  x, y: same shape
// forward:  y = x · σ(x),   σ(x) = 1 / (1 + e^−x)
// backward: dx += dy · σ(x) · (1 + x · (1 − σ(x)))
impl Tape {
    pub fn silu(&mut self, x: Var) -> Var {
        self.unary(x, silu_forward, Op::Silu { x })
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// d silu(x) / dx
fn silu_slope(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

pub fn silu_forward(y: &mut [f32], x: &[f32]) {
    write_each(y, |i| silu(x[i]));
}

pub fn silu_backward(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    add_each(dx, |i| dy[i] * silu_slope(x[i]));
}

// SwiGLU, the expert MLP's gate.  gate, up, y: same shape, (N, F) in the model
// forward:  y = silu(gate) ⊙ up                     (HF: act_fn(gate_proj(x)) * up_proj(x))
// backward: dgate += dy ⊙ up ⊙ silu'(gate);  dup += dy ⊙ silu(gate)
impl Tape {
    pub fn swiglu(&mut self, gate: Var, up: Var) -> Var {
        self.binary("swiglu", gate, up, swiglu_forward, Op::SwiGlu { gate, up })
    }
}

pub fn swiglu_forward(y: &mut [f32], gate: &[f32], up: &[f32]) {
    write_each(y, |i| silu(gate[i]) * up[i]);
}

pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dy: &[f32], gate: &[f32], up: &[f32]) {
    add_each(dgate, |i| dy[i] * up[i] * silu_slope(gate[i]));
    add_each(dup, |i| dy[i] * silu(gate[i]));
}

// ---- RMSNorm, as Hugging Face's OlmoeRMSNorm computes it in f32:
//        variance = hidden_states.pow(2).mean(-1, keepdim=True)
//        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
//        return self.weight * hidden_states.to(input_dtype)
// RMSNorm.  x, y: (N, C)  w: (C)  rstd: (N)
// forward:  r = 1/sqrt(Σ_c x_c²/C + eps);   y_c = w_c · (r · x_c)
// backward: g_c = w_c · dy_c
//           dx_c += r · (g_c − x_c · r² · Σ_j g_j x_j / C)
//           dw_c += Σ_rows dy_c · r · x_c            (saves rstd, not x̂)
impl Tape {
    pub fn rmsnorm(&mut self, x: Var, w: Var, eps: f32) -> Var {
        assert_row_vector("rmsnorm", self.shape(x), "w", self.shape(w));
        assert_rows_not_empty("rmsnorm", self.shape(x));
        let (x_value, w_value) = (self.value(x), self.value(w));
        #[cfg(feature = "cuda")]
        if x_value.gpu().is_some() {
            let (y, rstd) = crate::cuda::ops::rmsnorm(x_value, w_value, eps);
            return self.push(y, Op::RmsNorm { x, w, rstd });
        }
        let (n, c) = x_value.rows_cols();
        let (mut y, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm_forward(&mut y, &mut rstd, x_value.data(), w_value.data(), c, eps);
        let y = Tensor::new(x_value.shape(), y);
        self.push(y, Op::RmsNorm { x, w, rstd: Tensor::new(&[n], rstd) })
    }
}

pub fn rmsnorm_forward(y: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], c: usize, eps: f32) {
    par_rows2(y, c, rstd, 1, c, |first, y, rstd| {
        for (i, (y_row, r)) in y.chunks_exact_mut(c).zip(rstd).enumerate() {
            let x_row = row(x, first + i, c);
            let variance = x_row.iter().map(|v| v * v).sum::<f32>() / c as f32;
            *r = 1.0 / (variance + eps).sqrt();
            for ((y, &x), &w) in y_row.iter_mut().zip(x_row).zip(w) {
                *y = w * (*r * x);
            }
        }
    });
}

pub fn rmsnorm_backward(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    rstd: &[f32],
    x: &[f32],
    w: &[f32],
    c: usize,
) {
    par_rows(dx, c, c, |first, dx| {
        for (i, dx_row) in dx.chunks_exact_mut(c).enumerate() {
            let n = first + i;
            let (x_row, dy_row, r) = (row(x, n, c), row(dy, n, c), rstd[n]);
            let g = |j: usize| w[j] * dy_row[j];
            let g_dot_x_mean = (0..c).map(|j| g(j) * x_row[j]).sum::<f32>() / c as f32;
            for (j, dx) in dx_row.iter_mut().enumerate() {
                *dx += r * (g(j) - x_row[j] * r * r * g_dot_x_mean);
            }
        }
    });
    sum_over_rows(dw, rstd.len(), c, |n, dw_part| {
        let (x_row, dy_row, r) = (row(x, n, c), row(dy, n, c), rstd[n]);
        for ((dw, &dy), &x) in dw_part.iter_mut().zip(dy_row).zip(x_row) {
            *dw += dy * r * x;
        }
    });
}

// ---- Softmax over the last dimension.  x, y: (N, C)
// forward:  y_c = exp(x_c − max x) / Σ_j exp(x_j − max x)
// backward: dx_c += y_c · (dy_c − Σ_j dy_j y_j)      (uses the output y, not x)
impl Tape {
    pub fn softmax(&mut self, x: Var) -> Var {
        assert_rows_not_empty("softmax", self.shape(x));
        let x_value = self.value(x);
        #[cfg(feature = "cuda")]
        if x_value.gpu().is_some() {
            let y = crate::cuda::ops::softmax(x_value);
            return self.push(y, Op::Softmax { x });
        }
        let c = x_value.rows_cols().1;
        let mut y = vec![0.0; x_value.numel()];
        softmax_forward(&mut y, x_value.data(), c);
        let y = Tensor::new(x_value.shape(), y);
        self.push(y, Op::Softmax { x })
    }
}

pub fn softmax_forward(y: &mut [f32], x: &[f32], c: usize) {
    par_rows(y, c, c, |first, y| {
        for (i, y_row) in y.chunks_exact_mut(c).enumerate() {
            let x_row = row(x, first + i, c);
            let max = x_row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (y, &x) in y_row.iter_mut().zip(x_row) {
                *y = (x - max).exp();
            }
            let total: f32 = y_row.iter().sum();
            y_row.iter_mut().for_each(|y| *y /= total);
        }
    });
}

pub fn softmax_backward(dx: &mut [f32], dy: &[f32], y: &[f32], c: usize) {
    par_rows(dx, c, c, |first, dx| {
        for (i, dx_row) in dx.chunks_exact_mut(c).enumerate() {
            let (y_row, dy_row) = (row(y, first + i, c), row(dy, first + i, c));
            let dy_dot_y: f32 = dy_row.iter().zip(y_row).map(|(dy, y)| dy * y).sum();
            for ((dx, &dy), &y) in dx_row.iter_mut().zip(dy_row).zip(y_row) {
                *dx += y * (dy - dy_dot_y);
            }
        }
    });
}

// ---- Log-sum-exp over the last dimension.  x: (N, C)   y: (N)   (the router z-loss's log Z)
// forward:  y = log Σ_c exp(x_c)                     (max-shifted)
// backward: dx_c += dy · exp(x_c − y)                (= dy · softmax(x)_c; uses the output y)
impl Tape {
    pub fn logsumexp_rows(&mut self, x: Var) -> Var {
        assert_rows_not_empty("logsumexp_rows", self.shape(x));
        let x_value = self.value(x);
        let shape = &x_value.shape()[..x_value.shape().len() - 1];
        #[cfg(feature = "cuda")]
        if x_value.gpu().is_some() {
            let y = crate::cuda::ops::logsumexp_rows(x_value, shape);
            return self.push(y, Op::LogSumExpRows { x });
        }
        let (rows, c) = x_value.rows_cols();
        let mut y = vec![0.0; rows];
        logsumexp_rows_forward(&mut y, x_value.data(), c);
        let y = Tensor::new(shape, y);
        self.push(y, Op::LogSumExpRows { x })
    }
}

pub fn logsumexp_rows_forward(y: &mut [f32], x: &[f32], c: usize) {
    par_rows(y, 1, c, |first, y| {
        for (i, y) in y.iter_mut().enumerate() {
            *y = crate::ops::logsumexp(row(x, first + i, c));
        }
    });
}

pub fn logsumexp_rows_backward(dx: &mut [f32], dy: &[f32], y: &[f32], x: &[f32], c: usize) {
    par_rows(dx, c, c, |first, dx| {
        for (i, dx_row) in dx.chunks_exact_mut(c).enumerate() {
            let n = first + i;
            for (dx, &x) in dx_row.iter_mut().zip(row(x, n, c)) {
                *dx += dy[n] * (x - y[n]).exp();
            }
        }
    });
}

// ---- Clamp.  x, y: same shape   (OLMoE's clip_qkv)
// forward:  y = min(max(x, lo), hi)
// backward: dx += dy where lo ≤ x ≤ hi, else 0       (PyTorch's clamp: the bounds pass gradient)
impl Tape {
    pub fn clamp(&mut self, x: Var, lo: f32, hi: f32) -> Var {
        assert!(lo <= hi, "clamp: lo {lo} > hi {hi}");
        self.unary(x, |y, x| clamp_forward(y, x, lo, hi), Op::Clamp { x, lo, hi })
    }
}

pub fn clamp_forward(y: &mut [f32], x: &[f32], lo: f32, hi: f32) {
    write_each(y, |i| x[i].clamp(lo, hi));
}

pub fn clamp_backward(dx: &mut [f32], dy: &[f32], x: &[f32], lo: f32, hi: f32) {
    add_each(dx, |i| if (lo..=hi).contains(&x[i]) { dy[i] } else { 0.0 });
}

// ---- Sum and mean of every element.  x: any shape   y: a scalar, shape []
// forward:  y = Σ x   or   y = Σ x / numel          (in f64, in order; numel 0 counts as 1)
// backward: dx += dy  or   dx += dy / numel         (in autograd.rs)
impl Tape {
    pub fn sum(&mut self, x: Var) -> Var {
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::sum(self.value(x), false);
            return self.push(y, Op::Sum { x });
        }
        let y = sum_forward(self.value(x).data());
        self.push(Tensor::scalar(y), Op::Sum { x })
    }

    pub fn mean(&mut self, x: Var) -> Var {
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::sum(self.value(x), true);
            return self.push(y, Op::Mean { x });
        }
        let y = mean_forward(self.value(x).data());
        self.push(Tensor::scalar(y), Op::Mean { x })
    }
}

fn sum_f64(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

pub fn sum_forward(x: &[f32]) -> f32 {
    sum_f64(x) as f32
}

pub fn mean_forward(x: &[f32]) -> f32 {
    (sum_f64(x) / x.len().max(1) as f64) as f32
}

// ---- Embedding lookup.  table: (V, C)  ids: (N)  y: (N, C)
// forward:  y_n = table[ids_n]
// backward: dtable[ids_n] += dy_n                    (in order: repeated ids sum their rows)
//           except ids_n == padding_idx, whose row gets no gradient (PyTorch's
//           nn.Embedding(padding_idx=…), which HF's OLMoE builds with pad_token_id)
impl Tape {
    pub fn embedding(&mut self, table: Var, ids: &[u32], padding_idx: Option<u32>) -> Var {
        let table_value = self.value(table);
        let &[v, c] = table_value.shape() else {
            panic!("embedding: table must be (V, C), got shape {:?}", table_value.shape());
        };
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
            panic!("embedding: id {bad} is out of range for a table of V = {v} rows");
        }
        #[cfg(feature = "cuda")]
        if table_value.gpu().is_some() {
            let y = crate::cuda::ops::take_rows(table_value, ids, true);
            return self.push(y, Op::Embedding { table, ids: ids.to_vec(), padding_idx });
        }
        let mut y = vec![0.0; ids.len() * c];
        embedding_forward(&mut y, table_value.data(), ids, c);
        self.push(Tensor::new(&[ids.len(), c], y), Op::Embedding { table, ids: ids.to_vec(), padding_idx })
    }
}

pub fn embedding_forward(y: &mut [f32], table: &[f32], ids: &[u32], c: usize) {
    for (n, &id) in ids.iter().enumerate() {
        y[n * c..(n + 1) * c].copy_from_slice(row(table, id as usize, c));
    }
}

pub fn embedding_backward(dtable: &mut [f32], dy: &[f32], ids: &[u32], padding_idx: Option<u32>, c: usize) {
    for (n, &id) in ids.iter().enumerate().filter(|(_, &id)| Some(id) != padding_idx) {
        let id = id as usize;
        accumulate(&mut dtable[id * c..(id + 1) * c], row(dy, n, c));
    }
}
