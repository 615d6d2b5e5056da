//! The GPU side of the tape's ops: each function here is what a tape method in `ops/` runs
//! when its inputs live on a GPU (the CPU body beside it is the twin), returning GPU tensors.
//! Shapes are checked by the tape methods before they get here. The backward side is
//! `cuda/backward.rs`.

use super::gpu::{must, Buf, Gpu, GpuTensor};
use super::{attention, elementwise, embedding, expert_matmul, loss, matmul, rope, rows};
use crate::autograd::Op;
use crate::ops::attention::AttentionDims;
use crate::ops::matmul::MatmulDims;
use crate::tensor::Tensor;
use std::sync::Arc;

/// The GPU values of an op's input (every input of a GPU op lives on the GPU: the tape puts
/// its leaves there).
pub fn on_gpu<'t>(t: &'t Tensor, op: &str) -> &'t GpuTensor {
    t.gpu().unwrap_or_else(|| {
        panic!("{op}: an input {:?} is on the host while the op runs on the GPU", t.shape())
    })
}

/// A new GPU tensor of `shape` on `gpu`, zero-filled, and a launch's result into it.
pub fn new_tensor(
    gpu: &Arc<Gpu>,
    shape: &[usize],
    fill: impl FnOnce(&Gpu, &mut Buf<f32>) -> crate::error::Result<()>,
) -> Tensor {
    let mut out = GpuTensor::zeros(gpu, shape.iter().product());
    must(fill(gpu, &mut out.buf));
    Tensor::from_gpu(shape, out)
}

/// bf16 bit patterns of a GPU tensor's values, on the GPU: the tensor cores' inputs.
pub fn bf16_copy(t: &GpuTensor) -> Buf<u16> {
    let mut out: Buf<u16> = must(t.gpu.zeros(t.buf.len()));
    must(matmul::to_bf16(&t.gpu, &mut out, &t.buf));
    out
}

/// Whether a matmul is a linear layer y = x·Wᵀ (one weight, K and N multiples of 8) that the
/// tensor-core kernel runs as one group, in BF16 with f32 accumulation; other forms run on
/// the f32 `matmul_f32` kernel.
pub fn linear_on_tensor_cores(dims: &MatmulDims) -> bool {
    dims.batch == 1
        && !dims.trans_a
        && dims.trans_b
        && dims.b_shared
        && dims.k.is_multiple_of(8)
        && dims.n.is_multiple_of(8)
}

/// y of x's shape from a launch that reads x: the elementwise and row-wise ops.
fn map(
    x: &Tensor,
    op: &str,
    launch: impl FnOnce(&Gpu, &mut Buf<f32>, &Buf<f32>) -> crate::error::Result<()>,
) -> Tensor {
    let x_gpu = on_gpu(x, op);
    new_tensor(&x_gpu.gpu, x.shape(), |gpu, y| launch(gpu, y, &x_gpu.buf))
}

/// y of a's shape from a launch that reads a and b.
fn zip(
    a: &Tensor,
    b: &Tensor,
    op: &str,
    launch: impl FnOnce(&Gpu, &mut Buf<f32>, &Buf<f32>, &Buf<f32>) -> crate::error::Result<()>,
) -> Tensor {
    let (a_gpu, b_gpu) = (on_gpu(a, op), on_gpu(b, op));
    new_tensor(&a_gpu.gpu, a.shape(), |gpu, y| launch(gpu, y, &a_gpu.buf, &b_gpu.buf))
}

/// The elementwise ops the tape's `unary` / `binary` record: `op` names which (b is the
/// second input of add, mul and swiglu).
pub(crate) fn elementwise(op: &Op, a: &Tensor, b: Option<&Tensor>) -> Tensor {
    let second = || b.expect("elementwise: add, mul and swiglu take two inputs");
    match *op {
        Op::Add { .. } => zip(a, second(), "add", elementwise::add_forward),
        Op::Mul { .. } => zip(a, second(), "mul", elementwise::mul_forward),
        Op::SwiGlu { .. } => zip(a, second(), "swiglu", elementwise::swiglu_forward),
        Op::Silu { .. } => map(a, "silu", elementwise::silu_forward),
        Op::Scale { s, .. } => map(a, "scale", |gpu, y, x| elementwise::scale_forward(gpu, y, x, s)),
        Op::Clamp { lo, hi, .. } => {
            map(a, "clamp", |gpu, y, x| elementwise::clamp_forward(gpu, y, x, lo, hi))
        }
        _ => unreachable!("elementwise: only unary / binary record elementwise ops"),
    }
}

pub fn add_row(x: &Tensor, bias: &Tensor) -> Tensor {
    zip(x, bias, "add_row", elementwise::add_row_forward)
}

pub fn scale_rows(x: &Tensor, w: &Tensor) -> Tensor {
    let c = x.rows_cols().1;
    zip(x, w, "scale_rows", |gpu, y, x, w| elementwise::scale_rows_forward(gpu, y, x, w, c))
}

/// (y, rstd): rstd (N) is what the backward needs.
pub fn rmsnorm(x: &Tensor, w: &Tensor, eps: f32) -> (Tensor, Tensor) {
    let (n, c) = x.rows_cols();
    let (x_gpu, w_gpu) = (on_gpu(x, "rmsnorm"), on_gpu(w, "rmsnorm"));
    let mut rstd = GpuTensor::zeros(&x_gpu.gpu, n);
    let y = new_tensor(&x_gpu.gpu, x.shape(), |gpu, y| {
        rows::rmsnorm_forward(gpu, y, &mut rstd.buf, &x_gpu.buf, &w_gpu.buf, c, eps)
    });
    (y, Tensor::from_gpu(&[n], rstd))
}

pub fn softmax(x: &Tensor) -> Tensor {
    let c = x.rows_cols().1;
    map(x, "softmax", |gpu, y, x| rows::softmax_forward(gpu, y, x, c))
}

/// One value per row: shape `shape` (x's shape without its last dimension).
pub fn logsumexp_rows(x: &Tensor, shape: &[usize]) -> Tensor {
    let c = x.rows_cols().1;
    let x_gpu = on_gpu(x, "logsumexp_rows");
    new_tensor(&x_gpu.gpu, shape, |gpu, y| rows::logsumexp_rows_forward(gpu, y, &x_gpu.buf, c))
}

pub fn renormalize_rows(x: &Tensor) -> Tensor {
    let c = x.rows_cols().1;
    map(x, "renormalize_rows", |gpu, y, x| rows::renormalize_rows_forward(gpu, y, x, c))
}

/// Σ x (or the mean) as a scalar [].
pub fn sum(x: &Tensor, mean: bool) -> Tensor {
    let x_gpu = on_gpu(x, "sum");
    let launch = if mean { rows::mean_all } else { rows::sum_all };
    new_tensor(&x_gpu.gpu, &[], |gpu, y| launch(gpu, y, &x_gpu.buf))
}

/// Rows `ids` of the (R, C) table: (len(ids), C).
pub fn take_rows(table: &Tensor, ids: &[u32], embedding: bool) -> Tensor {
    let c = table.rows_cols().1;
    let t_gpu = on_gpu(table, "take_rows");
    let ids_gpu = must(t_gpu.gpu.upload(ids));
    new_tensor(&t_gpu.gpu, &[ids.len(), c], |gpu, y| {
        if embedding {
            embedding::embedding_forward(gpu, y, &t_gpu.buf, &ids_gpu, c)
        } else {
            embedding::gather_rows_forward(gpu, y, &t_gpu.buf, &ids_gpu, c)
        }
    })
}

/// Row m of x added into row idx[m] of a (rows, C) zero matrix.
pub fn scatter_add_rows(x: &Tensor, idx: &[u32], rows: usize) -> Tensor {
    let c = x.rows_cols().1;
    let x_gpu = on_gpu(x, "scatter_add_rows");
    new_tensor(&x_gpu.gpu, &[rows, c], |gpu, y| {
        embedding::scatter_add_rows_forward(gpu, y, &x_gpu.buf, idx, c)
    })
}

/// (loss [], lse (N)): the mean over counted rows is summed on the host in f64, as on the CPU.
pub fn cross_entropy(logits: &Tensor, targets: &[i32], ignore_index: i32) -> (Tensor, Tensor) {
    let (n, v) = logits.rows_cols();
    let l_gpu = on_gpu(logits, "cross_entropy");
    let mut lse = GpuTensor::zeros(&l_gpu.gpu, n);
    let loss =
        must(loss::cross_entropy_forward(&l_gpu.gpu, &mut lse.buf, &l_gpu.buf, targets, ignore_index, v));
    (Tensor::from_gpu(&[], GpuTensor::upload(&l_gpu.gpu, &[loss])), Tensor::from_gpu(&[n], lse))
}

pub fn rope(x: &Tensor, pos0: usize, theta: f32, bthd: [usize; 4]) -> Tensor {
    map(x, "rope", |gpu, y, x| rope::rope_forward(gpu, y, x, pos0, theta, bthd))
}

/// (out of q's shape, lse (B·H·T)).
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, dims: AttentionDims) -> (Tensor, Tensor) {
    let (q_gpu, k_gpu, v_gpu) = (on_gpu(q, "attention"), on_gpu(k, "attention"), on_gpu(v, "attention"));
    let mut lse = GpuTensor::zeros(&q_gpu.gpu, dims.b * dims.h * dims.t);
    let out = new_tensor(&q_gpu.gpu, q.shape(), |gpu, out| {
        attention::attention_forward(gpu, out, &mut lse.buf, &q_gpu.buf, &k_gpu.buf, &v_gpu.buf, dims)
    });
    (out, Tensor::from_gpu(&[dims.b * dims.h * dims.t], lse))
}

/// C = op(A)·op(B) of shape `shape`: linear layers on the tensor cores (BF16 inputs, f32
/// accumulation), every other form on the f32 kernel.
pub fn matmul(a: &Tensor, b: &Tensor, dims: &MatmulDims, shape: &[usize]) -> Tensor {
    let (a_gpu, b_gpu) = (on_gpu(a, "matmul"), on_gpu(b, "matmul"));
    new_tensor(&a_gpu.gpu, shape, |gpu, c| {
        if linear_on_tensor_cores(dims) {
            let (x, w) = (bf16_copy(a_gpu), bf16_copy(b_gpu));
            expert_matmul::grouped_matmul_forward(gpu, c, &x, &w, &[0, dims.m], dims.k, dims.n)
        } else {
            matmul::matmul_forward(gpu, c, &a_gpu.buf, &b_gpu.buf, dims)
        }
    })
}

/// y (M, N) = x[rows_e] · w[e]ᵀ per expert, on the tensor cores.
pub fn grouped_matmul(x: &Tensor, w: &Tensor, offsets: &[usize], k: usize, n: usize) -> Tensor {
    let (x_gpu, w_gpu) = (on_gpu(x, "grouped_matmul"), on_gpu(w, "grouped_matmul"));
    let m = x.rows_cols().0;
    new_tensor(&x_gpu.gpu, &[m, n], |gpu, y| {
        expert_matmul::grouped_matmul_forward(gpu, y, &bf16_copy(x_gpu), &bf16_copy(w_gpu), offsets, k, n)
    })
}

/// Top-k per row, chosen on the host (the router's probabilities go there for routing
/// anyway): (values on the GPU, indices).
pub fn topk(x: &Tensor, k: usize, values_shape: &[usize]) -> (Tensor, Vec<u32>) {
    let (n, c) = x.rows_cols();
    let (mut values, mut indices) = (vec![0.0; n * k], vec![0; n * k]);
    crate::ops::moe::topk_forward(&mut values, &mut indices, &x.host_data(), c, k);
    let x_gpu = on_gpu(x, "topk");
    (Tensor::from_gpu(values_shape, GpuTensor::upload(&x_gpu.gpu, &values)), indices)
}
