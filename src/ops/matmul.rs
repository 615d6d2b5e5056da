//! Matmul with optionally transposed operands and a batch dimension.
//!
//! C = op(A)·op(B), op = identity or transpose.   A: (…, M, K), or (…, K, M) if trans_a
//!                                                B: (…, K, N), or (…, N, K) if trans_b
//! B may also be 2-D and shared by every batch entry (a weight). C: (…, M, N).
//! A linear layer y = x·Wᵀ with W (out, in) as stored by PyTorch is `matmul(x, w, false, true)`.
//!
//! backward, with A' = op(A), B' = op(B):
//!   dA' += dC·B'ᵀ          (stored transposed when trans_a: dA += B'·dCᵀ)
//!   dB' += A'ᵀ·dC          (stored transposed when trans_b: dB += dCᵀ·A')
//! A shared B sums dB over the batch.

use crate::autograd::{Op, Tape, Var};
use crate::cpu::gemm::{gemm, MatRef};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// B is one matrix used by every batch entry.
    pub b_shared: bool,
}

impl MatmulDims {
    /// op(A) of batch entry i, as an M×K view.
    fn a_view<'a>(&self, a: &'a [f32], i: usize) -> MatRef<'a> {
        let a_i = &a[i * self.m * self.k..(i + 1) * self.m * self.k];
        if self.trans_a {
            MatRef::row_major(a_i, self.k, self.m).t()
        } else {
            MatRef::row_major(a_i, self.m, self.k)
        }
    }

    /// op(B) of batch entry i, as a K×N view.
    fn b_view<'a>(&self, b: &'a [f32], i: usize) -> MatRef<'a> {
        let i = if self.b_shared { 0 } else { i };
        let b_i = &b[i * self.k * self.n..(i + 1) * self.k * self.n];
        if self.trans_b {
            MatRef::row_major(b_i, self.n, self.k).t()
        } else {
            MatRef::row_major(b_i, self.k, self.n)
        }
    }
}

impl Tape {
    /// C = op(A)·op(B); see the module comment for the shapes.
    pub fn matmul(&mut self, a: Var, b: Var, trans_a: bool, trans_b: bool) -> Var {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let fail = |why: &str| -> ! {
            panic!("matmul(trans_a={trans_a}, trans_b={trans_b}): A {sa:?} and B {sb:?}: {why}")
        };
        if sa.len() < 2 || sb.len() < 2 {
            fail("both operands need at least 2 dimensions");
        }
        let (ra, rb) = (sa.len(), sb.len());
        let b_shared = rb == 2;
        if !b_shared && sa[..ra - 2] != sb[..rb - 2] {
            fail("batch dimensions differ");
        }
        let (m, k) = if trans_a { (sa[ra - 1], sa[ra - 2]) } else { (sa[ra - 2], sa[ra - 1]) };
        let (kb, n) = if trans_b { (sb[rb - 1], sb[rb - 2]) } else { (sb[rb - 2], sb[rb - 1]) };
        if k != kb {
            fail(&format!("inner dimensions {k} and {kb} differ"));
        }
        let batch: usize = sa[..ra - 2].iter().product();
        let mut out_shape = sa[..ra - 2].to_vec();
        out_shape.extend([m, n]);
        let mut dims = MatmulDims { batch, m, k, n, trans_a, trans_b, b_shared };
        if b_shared && !trans_a {
            // (batch, M, K) rows are contiguous: one (batch·M)×K product.
            dims.m *= dims.batch;
            dims.batch = 1;
        }
        #[cfg(feature = "cuda")]
        if self.value(a).gpu().is_some() {
            let c = crate::cuda::ops::matmul(self.value(a), self.value(b), &dims, &out_shape);
            return self.push(c, Op::Matmul { a, b, dims });
        }
        let mut c = vec![0.0; batch * m * n];
        matmul_forward(&mut c, self.value(a).data(), self.value(b).data(), &dims);
        self.push(Tensor::new(&out_shape, c), Op::Matmul { a, b, dims })
    }
}

pub fn matmul_forward(c: &mut [f32], a: &[f32], b: &[f32], dims: &MatmulDims) {
    let (m, n) = (dims.m, dims.n);
    for i in 0..dims.batch {
        let c_i = &mut c[i * m * n..(i + 1) * m * n];
        gemm(c_i, n, dims.a_view(a, i), dims.b_view(b, i), false);
    }
}

pub fn matmul_backward(
    mut da: Option<&mut [f32]>,
    mut db: Option<&mut [f32]>,
    dc: &[f32],
    a: &[f32],
    b: &[f32],
    dims: &MatmulDims,
) {
    let (m, k, n) = (dims.m, dims.k, dims.n);
    for i in 0..dims.batch {
        let dc_i = MatRef::row_major(&dc[i * m * n..(i + 1) * m * n], m, n);
        let (a_i, b_i) = (dims.a_view(a, i), dims.b_view(b, i));
        if let Some(da) = da.as_deref_mut() {
            let da_i = &mut da[i * m * k..(i + 1) * m * k];
            if dims.trans_a {
                gemm(da_i, m, b_i, dc_i.t(), true); // (K, M) += B'·dCᵀ
            } else {
                gemm(da_i, k, dc_i, b_i.t(), true); // (M, K) += dC·B'ᵀ
            }
        }
        if let Some(db) = db.as_deref_mut() {
            let j = if dims.b_shared { 0 } else { i };
            let db_j = &mut db[j * k * n..(j + 1) * k * n];
            if dims.trans_b {
                gemm(db_j, k, dc_i.t(), a_i, true); // (N, K) += dCᵀ·A'
            } else {
                gemm(db_j, n, a_i.t(), dc_i, true); // (K, N) += A'ᵀ·dC
            }
        }
    }
}

// ---- Grouped matmul: one weight matrix per expert over rows already sorted by expert.
// x: (M, K)  w: (E, N, K), each w[e] stored like a PyTorch Linear (out, in)  y: (M, N)
// offsets: (E + 1), rows offsets[e]..offsets[e+1] of x belong to expert e (may be empty)
// forward:  y[rows_e] = x[rows_e] · w[e]ᵀ
// backward: dx[rows_e] += dy[rows_e] · w[e];   dw[e] += dy[rows_e]ᵀ · x[rows_e]
impl Tape {
    pub fn grouped_matmul(&mut self, x: Var, w: Var, offsets: &[usize]) -> Var {
        let (sx, sw) = (self.shape(x), self.shape(w));
        let fail = |why: &str| -> ! { panic!("grouped_matmul: x {sx:?} and w {sw:?}: {why}") };
        let (&[m, k], &[e, n, kw]) = (sx, sw) else { fail("x must be (M, K) and w (E, N, K)") };
        if k != kw {
            fail(&format!("inner dimensions {k} and {kw} differ"));
        }
        if offsets.len() != e + 1
            || offsets[0] != 0
            || offsets[e] != m
            || offsets.windows(2).any(|p| p[0] > p[1])
        {
            fail(&format!("offsets {offsets:?} must rise from 0 to M = {m} in E + 1 = {} steps", e + 1));
        }
        #[cfg(feature = "cuda")]
        if self.value(x).gpu().is_some() {
            let y = crate::cuda::ops::grouped_matmul(self.value(x), self.value(w), offsets, k, n);
            return self.push(y, Op::GroupedMatmul { x, w, offsets: offsets.to_vec() });
        }
        let mut y = vec![0.0; m * n];
        grouped_matmul_forward(&mut y, self.value(x).data(), self.value(w).data(), offsets, k, n);
        let offsets = offsets.to_vec();
        self.push(Tensor::new(&[m, n], y), Op::GroupedMatmul { x, w, offsets })
    }
}

/// Each non-empty expert's block: (e, its rows, x[rows], w[e]) as views.
fn expert_blocks<'a>(
    x: &'a [f32],
    w: &'a [f32],
    offsets: &'a [usize],
    k: usize,
    n: usize,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>, MatRef<'a>, MatRef<'a>)> {
    offsets.windows(2).enumerate().filter(|(_, r)| r[1] > r[0]).map(move |(e, r)| {
        let x_e = MatRef::row_major(&x[r[0] * k..r[1] * k], r[1] - r[0], k);
        let w_e = MatRef::row_major(&w[e * n * k..(e + 1) * n * k], n, k);
        (e, r[0]..r[1], x_e, w_e)
    })
}

pub fn grouped_matmul_forward(y: &mut [f32], x: &[f32], w: &[f32], offsets: &[usize], k: usize, n: usize) {
    for (_, rows, x_e, w_e) in expert_blocks(x, w, offsets, k, n) {
        gemm(&mut y[rows.start * n..rows.end * n], n, x_e, w_e.t(), false);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn grouped_matmul_backward(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    offsets: &[usize],
    k: usize,
    n: usize,
) {
    for (e, rows, x_e, w_e) in expert_blocks(x, w, offsets, k, n) {
        let dy_e = MatRef::row_major(&dy[rows.start * n..rows.end * n], rows.len(), n);
        gemm(&mut dx[rows.start * k..rows.end * k], k, dy_e, w_e, true);
        gemm(&mut dw[e * n * k..(e + 1) * n * k], k, dy_e.t(), x_e, true);
    }
}
