//! The GPU walk of the tape: `Tape::backward_from` + `backward_node` of `autograd.rs` with
//! every value, saved tensor and gradient in one GPU's memory. Same walk, same order, same
//! gradient store (a zero buffer on first use, a fresh one for an input used twice, added
//! back by `put`); each arm calls the GPU twin of the CPU arm's backward function, and every
//! one of them accumulates (+=) into its input gradients, as the CPU functions do.
//! Saved indices stay on the host: they are uploaded where a kernel reads them on the device.

use super::gpu::{driver, must, Buf, Gpu, GpuTensor};
use super::ops::{bf16_copy, linear_on_tensor_cores};
use super::{attention, elementwise, embedding, expert_matmul, loss, matmul, rope, rows};
use crate::autograd::{Node, Op, Var};
use crate::ops::attention::AttentionDims;
use crate::tensor::Tensor;
use std::fmt;
use std::sync::Arc;

/// Backpropagates `seed` (the gradient of node `out`, same shape) through `nodes` (the tape
/// cut after `out`) on the GPU that holds `out`, and returns the gradients of the leaves that
/// need one, as (node index, gradient of the leaf's shape on that GPU).
pub(crate) fn backward(nodes: Vec<Node>, out: usize, seed: Tensor) -> Vec<(usize, Tensor)> {
    let mut nodes = nodes;
    assert_eq!(nodes.len(), out + 1, "backward on the GPU: {} nodes for output node {out}", nodes.len());
    let gpu = Arc::clone(&on_gpu(&nodes[out].value, format_args!("output node {out}")).gpu);
    let seed = seed.to_gpu(&gpu);
    let seed = &on_gpu(&seed, "the seed").buf;
    let seed = must(gpu.stream().clone_dtod(seed).map_err(driver("copying the backward seed")));
    let mut store = GradStore {
        gpu: Arc::clone(&gpu),
        grads: (0..=out).map(|_| None).collect(),
        nodes_needing_grad: nodes.iter().map(|n| n.needs_grad).collect(),
    };
    store.grads[out] = Some(seed);
    let mut leaves = Vec::new();
    while let Some(node) = nodes.pop() {
        let id = nodes.len();
        let Some(dy) = store.grads[id].take() else { continue };
        if let Op::Leaf = node.op {
            if node.needs_grad {
                let grad = GpuTensor { gpu: Arc::clone(&gpu), buf: dy };
                leaves.push((id, Tensor::from_gpu(node.value.shape(), grad)));
            }
            continue;
        }
        backward_node(&gpu, &nodes, &mut store, node, &dy);
    }
    leaves
}

/// The GPU values of `t`, or a panic naming `what`: on a GPU tape every value lives there.
fn on_gpu(t: &Tensor, what: impl fmt::Display) -> &GpuTensor {
    t.gpu().unwrap_or_else(|| {
        panic!(
            "backward on the GPU: {what} {:?} is on the host; a GPU tape keeps every value on the GPU",
            t.shape()
        )
    })
}

/// The GPU values of node `v`.
fn value(nodes: &[Node], v: Var) -> &GpuTensor {
    on_gpu(&nodes[v.0].value, format_args!("node {}", v.0))
}

/// bf16 bit patterns of a gradient on `gpu`: the tensor cores' input.
fn bf16_of(gpu: &Gpu, x: &Buf<f32>) -> Buf<u16> {
    let mut out: Buf<u16> = must(gpu.zeros(x.len()));
    must(matmul::to_bf16(gpu, &mut out, x));
    out
}

/// Gradient buffers during backward, one per node, allocated on the GPU on first use.
struct GradStore {
    gpu: Arc<Gpu>,
    grads: Vec<Option<Buf<f32>>>,
    nodes_needing_grad: Vec<bool>,
}

impl GradStore {
    /// The accumulator for `v` (zeros the first time), taken out so several can be
    /// borrowed mutably at once. An input used twice (mul(x, x)) gets a fresh zero buffer
    /// the second time; [`GradStore::put`] adds it back in.
    fn take(&mut self, v: Var, nodes: &[Node]) -> Buf<f32> {
        self.grads[v.0].take().unwrap_or_else(|| must(self.gpu.zeros(nodes[v.0].value.numel())))
    }

    fn put(&mut self, v: Var, grad: Buf<f32>) {
        if !self.nodes_needing_grad[v.0] {
            return;
        }
        match &mut self.grads[v.0] {
            Some(existing) => must(elementwise::accumulate(&self.gpu, existing, &grad)),
            slot => *slot = Some(grad),
        }
    }
}

/// One step of the chain rule on the GPU: adds node's contribution (given its output gradient
/// `dy`) to the gradients of its inputs. `nodes` are the nodes before it (its inputs among them).
fn backward_node(gpu: &Gpu, nodes: &[Node], g: &mut GradStore, node: Node, dy: &Buf<f32>) {
    let val = |v: &Var| &value(nodes, *v).buf;
    let out = &on_gpu(&node.value, "the node's output").buf;
    let cols = node.value.rows_cols().1;
    match &node.op {
        Op::Leaf => unreachable!("leaves are handled by backward"),
        // y = x viewed in another shape; y = a + b:  dx += dy
        Op::Reshape { x } => {
            let mut dx = g.take(*x, nodes);
            must(elementwise::accumulate(gpu, &mut dx, dy));
            g.put(*x, dx);
        }
        Op::Add { a, b } => {
            for v in [a, b] {
                let mut dv = g.take(*v, nodes);
                must(elementwise::accumulate(gpu, &mut dv, dy));
                g.put(*v, dv);
            }
        }
        // C = op(A)·op(B):  dA' += dC·B'ᵀ;  dB' += A'ᵀ·dC   (only the gradients needed)
        Op::Matmul { a, b, dims } => {
            let need_a = g.nodes_needing_grad[a.0];
            let need_b = g.nodes_needing_grad[b.0];
            let mut da = need_a.then(|| g.take(*a, nodes));
            let mut db = need_b.then(|| g.take(*b, nodes));
            if linear_on_tensor_cores(dims) {
                // y = x·wᵀ, one group on the tensor cores (bf16 in, f32 sums):
                //   dx += dy·w;  dw += dyᵀ·x
                let (offsets, dy16) = ([0, dims.m], bf16_of(gpu, dy));
                if let Some(dx) = da.as_mut() {
                    let w16 = bf16_copy(value(nodes, *b));
                    let (k, n) = (dims.k, dims.n);
                    must(expert_matmul::grouped_matmul_backward_input(gpu, dx, &dy16, &w16, &offsets, k, n));
                }
                if let Some(dw) = db.as_mut() {
                    let x16 = bf16_copy(value(nodes, *a));
                    let (k, n) = (dims.k, dims.n);
                    must(expert_matmul::grouped_matmul_backward_weight(gpu, dw, &dy16, &x16, &offsets, k, n));
                }
            } else {
                must(matmul::matmul_backward(gpu, da.as_mut(), db.as_mut(), dy, val(a), val(b), dims));
            }
            if let Some(da) = da {
                g.put(*a, da);
            }
            if let Some(db) = db {
                g.put(*b, db);
            }
        }
        // y[rows_e] = x[rows_e]·w[e]ᵀ:  dx[rows_e] += dy[rows_e]·w[e];  dw[e] += dy[rows_e]ᵀ·x[rows_e]
        Op::GroupedMatmul { x, w, offsets } => {
            let (mut dx, mut dw) = (g.take(*x, nodes), g.take(*w, nodes));
            let [_, n, k] = nodes[w.0].value.shape() else { unreachable!("checked by grouped_matmul") };
            let (dy16, x16, w16) =
                (bf16_of(gpu, dy), bf16_copy(value(nodes, *x)), bf16_copy(value(nodes, *w)));
            must(expert_matmul::grouped_matmul_backward_input(gpu, &mut dx, &dy16, &w16, offsets, *k, *n));
            must(expert_matmul::grouped_matmul_backward_weight(gpu, &mut dw, &dy16, &x16, offsets, *k, *n));
            g.put(*x, dx);
            g.put(*w, dw);
        }
        // y = a ⊙ b:  da += dy ⊙ b;  db += dy ⊙ a
        Op::Mul { a, b } => {
            let (mut da, mut db) = (g.take(*a, nodes), g.take(*b, nodes));
            must(elementwise::mul_backward(gpu, &mut da, &mut db, dy, val(a), val(b)));
            g.put(*a, da);
            g.put(*b, db);
        }
        // y = s · x:  dx += s · dy
        Op::Scale { x, s } => {
            let mut dx = g.take(*x, nodes);
            must(elementwise::scale_backward(gpu, &mut dx, dy, *s));
            g.put(*x, dx);
        }
        // y_n = x_n + bias:  dx += dy;  dbias += Σ_n dy_n
        Op::AddRow { x, bias } => {
            let (mut dx, mut dbias) = (g.take(*x, nodes), g.take(*bias, nodes));
            must(elementwise::add_row_backward(gpu, &mut dx, &mut dbias, dy, cols));
            g.put(*x, dx);
            g.put(*bias, dbias);
        }
        // y = x · σ(x):  dx += dy · σ(x) · (1 + x · (1 − σ(x)))
        Op::Silu { x } => {
            let mut dx = g.take(*x, nodes);
            must(elementwise::silu_backward(gpu, &mut dx, dy, val(x)));
            g.put(*x, dx);
        }
        // y = silu(gate) ⊙ up:  dgate += dy ⊙ up ⊙ silu'(gate);  dup += dy ⊙ silu(gate)
        Op::SwiGlu { gate, up } => {
            let (mut dgate, mut dup) = (g.take(*gate, nodes), g.take(*up, nodes));
            must(elementwise::swiglu_backward(gpu, &mut dgate, &mut dup, dy, val(gate), val(up)));
            g.put(*gate, dgate);
            g.put(*up, dup);
        }
        // y_c = w_c · r · x_c:  dx_c += r · (g_c − x_c · r² · Σ_j g_j x_j / C), g_c = w_c · dy_c;
        // dw_c += Σ_rows dy_c · r · x_c
        Op::RmsNorm { x, w, rstd } => {
            let (mut dx, mut dw) = (g.take(*x, nodes), g.take(*w, nodes));
            let rstd = &on_gpu(rstd, "RmsNorm's saved rstd").buf;
            must(rows::rmsnorm_backward(gpu, &mut dx, &mut dw, dy, rstd, val(x), val(w), cols));
            g.put(*x, dx);
            g.put(*w, dw);
        }
        // y = softmax(x):  dx_c += y_c · (dy_c − Σ_j dy_j y_j)   (uses the output y)
        Op::Softmax { x } => {
            let mut dx = g.take(*x, nodes);
            must(rows::softmax_backward(gpu, &mut dx, dy, out, cols));
            g.put(*x, dx);
        }
        // y = log Σ_c exp(x_c):  dx_c += dy · exp(x_c − y)   (uses the output y)
        Op::LogSumExpRows { x } => {
            let mut dx = g.take(*x, nodes);
            let c = nodes[x.0].value.rows_cols().1;
            must(rows::logsumexp_rows_backward(gpu, &mut dx, dy, out, val(x), c));
            g.put(*x, dx);
        }
        // y = min(max(x, lo), hi):  dx += dy where lo ≤ x ≤ hi, else 0
        Op::Clamp { x, lo, hi } => {
            let mut dx = g.take(*x, nodes);
            must(elementwise::clamp_backward(gpu, &mut dx, dy, val(x), *lo, *hi));
            g.put(*x, dx);
        }
        // y_i = x_i / S, S = Σ_j x_j:  dx_i += (dy_i − Σ_j dy_j y_j) / S   (uses the output y)
        Op::RenormalizeRows { x } => {
            let mut dx = g.take(*x, nodes);
            must(rows::renormalize_rows_backward(gpu, &mut dx, dy, out, val(x), cols));
            g.put(*x, dx);
        }
        // y = Σ x or (Σ x) / n:  dx += dy or dy / n
        Op::Sum { x } | Op::Mean { x } => {
            let mut dx = g.take(*x, nodes);
            if matches!(node.op, Op::Mean { .. }) {
                must(rows::mean_all_backward(gpu, &mut dx, dy));
            } else {
                must(rows::sum_all_backward(gpu, &mut dx, dy));
            }
            g.put(*x, dx);
        }
        // y_n = table[ids_n]:  dtable[ids_n] += dy_n, except ids_n == padding_idx
        Op::Embedding { table, ids, padding_idx } => {
            let mut dtable = g.take(*table, nodes);
            must(embedding::embedding_backward(gpu, &mut dtable, dy, ids, *padding_idx, cols));
            g.put(*table, dtable);
        }
        // loss = mean over counted n of lse_n − logits_n[target_n]:
        //   dlogits_nv += dloss/count · (exp(logits_nv − lse_n) − [v = target_n])
        Op::CrossEntropy { logits, targets, ignore_index, lse } => {
            let mut dlogits = g.take(*logits, nodes);
            let v = nodes[logits.0].value.rows_cols().1;
            let dloss = must(gpu.download(dy))[0];
            let lse = &on_gpu(lse, "CrossEntropy's saved lse").buf;
            must(loss::cross_entropy_backward(
                gpu,
                &mut dlogits,
                dloss,
                lse,
                val(logits),
                targets,
                *ignore_index,
                v,
            ));
            g.put(*logits, dlogits);
        }
        // y = x rotated by a_i = p · inv_freq_i:  dx += dy rotated by −a_i
        Op::Rope { x, pos0, theta } => {
            let mut dx = g.take(*x, nodes);
            let bthd = crate::ops::attention::bthd(node.value.shape(), "rope");
            must(rope::rope_backward(gpu, &mut dx, dy, *pos0, *theta, bthd));
            g.put(*x, dx);
        }
        // P_ij = exp(q_i · k_j / √D − lse_i) (causal), out_i = Σ_j P_ij · v_j:
        //   δ_i = dout_i · out_i;   dv_j += Σ_i P_ij · dout_i;   dS_ij = P_ij · (dout_i · v_j − δ_i)
        //   dq_i += Σ_j dS_ij · k_j / √D;   dk_j += Σ_i dS_ij · q_i / √D
        Op::CausalAttention { q, k, v, lse } => {
            let (mut dq, mut dk, mut dv) = (g.take(*q, nodes), g.take(*k, nodes), g.take(*v, nodes));
            let dims = AttentionDims::of(nodes[q.0].value.shape(), nodes[k.0].value.shape());
            let lse = &on_gpu(lse, "CausalAttention's saved lse").buf;
            let (q_val, k_val, v_val) = (val(q), val(k), val(v));
            must(attention::attention_backward(
                gpu, &mut dq, &mut dk, &mut dv, dy, lse, out, q_val, k_val, v_val, dims,
            ));
            g.put(*q, dq);
            g.put(*k, dk);
            g.put(*v, dv);
        }
        // values_nj = x_{n, idx_nj}:  dx_{n, idx_nj} += dvalues_nj
        Op::TopK { x, indices } => {
            let mut dx = g.take(*x, nodes);
            let c = nodes[x.0].value.rows_cols().1;
            let indices = must(gpu.upload(indices));
            must(elementwise::topk_backward(gpu, &mut dx, dy, &indices, c, cols));
            g.put(*x, dx);
        }
        // y_m = x_{idx_m}:  dx_{idx_m} += dy_m   (in order of m)
        Op::GatherRows { x, idx } => {
            let mut dx = g.take(*x, nodes);
            must(embedding::gather_rows_backward(gpu, &mut dx, dy, idx, cols));
            g.put(*x, dx);
        }
        // y_r = Σ_{m: idx_m = r} x_m:  dx_m += dy_{idx_m}
        Op::ScatterAddRows { x, idx } => {
            let mut dx = g.take(*x, nodes);
            let idx = must(gpu.upload(idx));
            must(embedding::scatter_add_rows_backward(gpu, &mut dx, dy, &idx, cols));
            g.put(*x, dx);
        }
        // y_m = w_m · x_m:  dx_m += w_m · dy_m;  dw_m += Σ_c dy_mc · x_mc
        Op::ScaleRows { x, w } => {
            let (mut dx, mut dw) = (g.take(*x, nodes), g.take(*w, nodes));
            must(elementwise::scale_rows_backward(gpu, &mut dx, &mut dw, dy, val(x), val(w), cols));
            g.put(*x, dx);
            g.put(*w, dw);
        }
    }
}
