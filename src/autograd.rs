//! Reverse-mode autograd as a tape (a Wengert list).
//!
//! Every op appends a node: its output value and an `Op` naming its inputs and what it
//! saved for backward. `backward` walks the nodes in reverse, popping each one, so the graph
//! is gone when it returns; only the gradients of leaves that need them come back.
//! The ops' tape methods (`tape.rmsnorm(x, w, eps)`) live beside their math in `ops/*.rs`;
//! this file holds the tape and the one `match` from a recorded op to its backward.

use crate::ops::{self, attention, dense, loss, matmul, moe};
use crate::tensor::Tensor;

/// A value on the tape (an index into its nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// What produced a node: its inputs, and what the forward saved for the backward.
pub(crate) enum Op {
    Leaf,
    Reshape { x: Var },
    Matmul { a: Var, b: Var, dims: matmul::MatmulDims },
    GroupedMatmul { x: Var, w: Var, offsets: Vec<usize> },
    Add { a: Var, b: Var },
    Mul { a: Var, b: Var },
    Scale { x: Var, s: f32 },
    AddRow { x: Var, bias: Var },
    Silu { x: Var },
    SwiGlu { gate: Var, up: Var },
    RmsNorm { x: Var, w: Var, rstd: Tensor },
    Softmax { x: Var },
    LogSumExpRows { x: Var },
    Clamp { x: Var, lo: f32, hi: f32 },
    Sum { x: Var },
    Mean { x: Var },
    Embedding { table: Var, ids: Vec<u32>, padding_idx: Option<u32> },
    CrossEntropy { logits: Var, targets: Vec<i32>, ignore_index: i32, lse: Tensor },
    Rope { x: Var, pos0: usize, theta: f32 },
    CausalAttention { q: Var, k: Var, v: Var, lse: Tensor },
    TopK { x: Var, indices: Vec<u32> },
    GatherRows { x: Var, idx: Vec<u32> },
    ScatterAddRows { x: Var, idx: Vec<u32> },
    ScaleRows { x: Var, w: Var },
    RenormalizeRows { x: Var },
}

impl Op {
    pub(crate) fn inputs(&self) -> Vec<Var> {
        use Op::*;
        match self {
            Leaf => vec![],
            Reshape { x } | Scale { x, .. } | Silu { x } | Softmax { x } | Sum { x } | Mean { x } => {
                vec![*x]
            }
            LogSumExpRows { x } | Clamp { x, .. } | RenormalizeRows { x } => vec![*x],
            Rope { x, .. } | TopK { x, .. } | GatherRows { x, .. } | ScatterAddRows { x, .. } => {
                vec![*x]
            }
            Matmul { a, b, .. } | Add { a, b } | Mul { a, b } => vec![*a, *b],
            AddRow { x, bias } => vec![*x, *bias],
            SwiGlu { gate, up } => vec![*gate, *up],
            RmsNorm { x, w, .. } | ScaleRows { x, w } | GroupedMatmul { x, w, .. } => vec![*x, *w],
            Embedding { table, .. } => vec![*table],
            CrossEntropy { logits, .. } => vec![*logits],
            CausalAttention { q, k, v, .. } => vec![*q, *k, *v],
        }
    }
}

pub(crate) struct Node {
    pub(crate) value: Tensor,
    pub(crate) op: Op,
    pub(crate) needs_grad: bool,
}

#[derive(Default)]
pub struct Tape {
    nodes: Vec<Node>,
    /// The GPU the leaves are put on (then every op runs there); None: the host.
    #[cfg(feature = "cuda")]
    gpu: Option<std::sync::Arc<crate::cuda::Gpu>>,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// A tape whose leaves go where `like` lives (host or GPU), so that every op runs there.
    pub fn beside(like: &Tensor) -> Tape {
        #[cfg(feature = "cuda")]
        if let Some(t) = like.gpu() {
            return Tape { nodes: Vec::new(), gpu: Some(std::sync::Arc::clone(&t.gpu)) };
        }
        let _ = like;
        Tape::new()
    }

    /// A parameter: a leaf whose gradient `backward` returns.
    pub fn param(&mut self, value: Tensor) -> Var {
        self.leaf(value, true)
    }

    /// A constant input: a leaf that gets no gradient.
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.leaf(value, false)
    }

    fn leaf(&mut self, value: Tensor, needs_grad: bool) -> Var {
        #[cfg(feature = "cuda")]
        let value = match &self.gpu {
            Some(gpu) => value.to_gpu(gpu),
            None => value,
        };
        self.nodes.push(Node { value, op: Op::Leaf, needs_grad });
        Var(self.nodes.len() - 1)
    }

    /// Records an op's output. Called by the ops' tape methods after their forward.
    pub(crate) fn push(&mut self, value: Tensor, op: Op) -> Var {
        let needs_grad = op.inputs().iter().any(|v| self.nodes[v.0].needs_grad);
        self.nodes.push(Node { value, op, needs_grad });
        Var(self.nodes.len() - 1)
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    pub fn shape(&self, v: Var) -> &[usize] {
        self.nodes[v.0].value.shape()
    }

    /// The same values viewed with another shape (same element count).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let y = self.value(x).reshape(shape);
        self.push(y, Op::Reshape { x })
    }

    /// Backpropagates from a scalar loss (d loss / d loss = 1).
    pub fn backward(self, loss: Var) -> Gradients {
        assert_eq!(
            self.value(loss).numel(),
            1,
            "backward: the loss must be a scalar, got shape {:?}",
            self.shape(loss)
        );
        self.backward_from(loss, Tensor::scalar(1.0))
    }

    /// Backpropagates a given gradient `seed` of `out` (same shape as `out`): the
    /// vector-Jacobian product that the gradient checks use.
    pub fn backward_from(mut self, out: Var, seed: Tensor) -> Gradients {
        assert_eq!(
            seed.shape(),
            self.shape(out),
            "backward_from: seed shape {:?} vs output shape {:?}",
            seed.shape(),
            self.shape(out)
        );
        self.nodes.truncate(out.0 + 1);
        #[cfg(feature = "cuda")]
        if self.value(out).gpu().is_some() {
            return Gradients { leaves: crate::cuda::backward::backward(self.nodes, out.0, seed) };
        }
        let mut store = GradStore {
            grads: (0..=out.0).map(|_| None).collect(),
            nodes_needing_grad: self.nodes.iter().map(|n| n.needs_grad).collect(),
        };
        store.grads[out.0] = Some(seed.into_vec());
        let mut leaves = Vec::new();
        while let Some(node) = self.nodes.pop() {
            let id = self.nodes.len();
            let Some(dy) = store.grads[id].take() else { continue };
            if let Op::Leaf = node.op {
                if node.needs_grad {
                    leaves.push((id, Tensor::new(node.value.shape(), dy)));
                }
                continue;
            }
            backward_node(&self.nodes, &mut store, node, &dy);
        }
        Gradients { leaves }
    }
}

/// Gradients of the leaves that needed them, after `backward`.
pub struct Gradients {
    leaves: Vec<(usize, Tensor)>,
}

impl Gradients {
    /// The gradient of a leaf; `None` for a constant or a leaf the loss does not depend on.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.leaves.iter().find(|(id, _)| *id == v.0).map(|(_, g)| g)
    }
}

/// Gradient buffers during backward, one per node, allocated on first use.
struct GradStore {
    grads: Vec<Option<Vec<f32>>>,
    nodes_needing_grad: Vec<bool>,
}

impl GradStore {
    /// The accumulator for `v` (zeros the first time), taken out so several can be
    /// borrowed mutably at once. An input used twice (mul(x, x)) gets a fresh zero buffer
    /// the second time; [`GradStore::put`] adds it back in.
    fn take(&mut self, v: Var, values: &[Node]) -> Vec<f32> {
        self.grads[v.0].take().unwrap_or_else(|| vec![0.0; values[v.0].value.numel()])
    }

    fn put(&mut self, v: Var, grad: Vec<f32>) {
        if !self.nodes_needing_grad[v.0] {
            return;
        }
        match &mut self.grads[v.0] {
            Some(existing) => ops::accumulate(existing, &grad),
            slot => *slot = Some(grad),
        }
    }
}

/// One step of the chain rule: adds node's contribution (given its output gradient `dy`) to
/// the gradients of its inputs. `nodes` are the nodes before it (its inputs among them).
fn backward_node(nodes: &[Node], g: &mut GradStore, node: Node, dy: &[f32]) {
    let val = |v: &Var| nodes[v.0].value.data();
    let cols = node.value.rows_cols().1;
    match &node.op {
        Op::Leaf => unreachable!("leaves are handled by backward"),
        // y = x viewed in another shape; y = a + b:  dx += dy
        Op::Reshape { x } => {
            let mut dx = g.take(*x, nodes);
            ops::accumulate(&mut dx, dy);
            g.put(*x, dx);
        }
        Op::Add { a, b } => {
            for v in [a, b] {
                let mut dv = g.take(*v, nodes);
                ops::accumulate(&mut dv, dy);
                g.put(*v, dv);
            }
        }
        Op::Matmul { a, b, dims } => {
            let need_a = g.nodes_needing_grad[a.0];
            let need_b = g.nodes_needing_grad[b.0];
            let mut da = if need_a { g.take(*a, nodes) } else { Vec::new() };
            let mut db = if need_b { g.take(*b, nodes) } else { Vec::new() };
            matmul::matmul_backward(
                need_a.then_some(&mut da[..]),
                need_b.then_some(&mut db[..]),
                dy,
                val(a),
                val(b),
                dims,
            );
            if need_a {
                g.put(*a, da);
            }
            if need_b {
                g.put(*b, db);
            }
        }
        Op::GroupedMatmul { x, w, offsets } => {
            let (mut dx, mut dw) = (g.take(*x, nodes), g.take(*w, nodes));
            let [_, n, k] = nodes[w.0].value.shape() else { unreachable!("checked by grouped_matmul") };
            matmul::grouped_matmul_backward(&mut dx, &mut dw, dy, val(x), val(w), offsets, *k, *n);
            g.put(*x, dx);
            g.put(*w, dw);
        }
        Op::Mul { a, b } => {
            let (mut da, mut db) = (g.take(*a, nodes), g.take(*b, nodes));
            dense::mul_backward(&mut da, &mut db, dy, val(a), val(b));
            g.put(*a, da);
            g.put(*b, db);
        }
        Op::Scale { x, s } => {
            let mut dx = g.take(*x, nodes);
            dense::scale_backward(&mut dx, dy, *s);
            g.put(*x, dx);
        }
        Op::AddRow { x, bias } => {
            let (mut dx, mut dbias) = (g.take(*x, nodes), g.take(*bias, nodes));
            dense::add_row_backward(&mut dx, &mut dbias, dy, cols);
            g.put(*x, dx);
            g.put(*bias, dbias);
        }
        Op::Silu { x } => {
            let mut dx = g.take(*x, nodes);
            dense::silu_backward(&mut dx, dy, val(x));
            g.put(*x, dx);
        }
        Op::SwiGlu { gate, up } => {
            let (mut dgate, mut dup) = (g.take(*gate, nodes), g.take(*up, nodes));
            dense::swiglu_backward(&mut dgate, &mut dup, dy, val(gate), val(up));
            g.put(*gate, dgate);
            g.put(*up, dup);
        }
        Op::RmsNorm { x, w, rstd } => {
            let (mut dx, mut dw) = (g.take(*x, nodes), g.take(*w, nodes));
            dense::rmsnorm_backward(&mut dx, &mut dw, dy, rstd.data(), val(x), val(w), cols);
            g.put(*x, dx);
            g.put(*w, dw);
        }
        Op::Softmax { x } => {
            let mut dx = g.take(*x, nodes);
            dense::softmax_backward(&mut dx, dy, node.value.data(), cols);
            g.put(*x, dx);
        }
        Op::LogSumExpRows { x } => {
            let mut dx = g.take(*x, nodes);
            let c = nodes[x.0].value.rows_cols().1;
            dense::logsumexp_rows_backward(&mut dx, dy, node.value.data(), val(x), c);
            g.put(*x, dx);
        }
        Op::Clamp { x, lo, hi } => {
            let mut dx = g.take(*x, nodes);
            dense::clamp_backward(&mut dx, dy, val(x), *lo, *hi);
            g.put(*x, dx);
        }
        Op::RenormalizeRows { x } => {
            let mut dx = g.take(*x, nodes);
            moe::renormalize_rows_backward(&mut dx, dy, node.value.data(), val(x), cols);
            g.put(*x, dx);
        }
        // y = Σ x or (Σ x) / n:  dx += dy or dy / n
        Op::Sum { x } | Op::Mean { x } => {
            let mut dx = g.take(*x, nodes);
            let n = dx.len().max(1) as f32;
            let d = if matches!(node.op, Op::Mean { .. }) { dy[0] / n } else { dy[0] };
            dx.iter_mut().for_each(|v| *v += d);
            g.put(*x, dx);
        }
        Op::Embedding { table, ids, padding_idx } => {
            let mut dtable = g.take(*table, nodes);
            dense::embedding_backward(&mut dtable, dy, ids, *padding_idx, cols);
            g.put(*table, dtable);
        }
        Op::CrossEntropy { logits, targets, ignore_index, lse } => {
            let mut dlogits = g.take(*logits, nodes);
            let v = nodes[logits.0].value.rows_cols().1;
            loss::cross_entropy_backward(
                &mut dlogits,
                dy[0],
                lse.data(),
                val(logits),
                targets,
                *ignore_index,
                v,
            );
            g.put(*logits, dlogits);
        }
        Op::Rope { x, pos0, theta } => {
            let mut dx = g.take(*x, nodes);
            let bthd = attention::bthd(node.value.shape(), "rope");
            attention::rope_backward(&mut dx, dy, *pos0, *theta, bthd);
            g.put(*x, dx);
        }
        Op::CausalAttention { q, k, v, lse } => {
            let (mut dq, mut dk, mut dv) = (g.take(*q, nodes), g.take(*k, nodes), g.take(*v, nodes));
            let dims = attention::AttentionDims::of(nodes[q.0].value.shape(), nodes[k.0].value.shape());
            let (out, q_val, k_val, v_val) = (node.value.data(), val(q), val(k), val(v));
            attention::attention_backward(
                &mut dq,
                &mut dk,
                &mut dv,
                dy,
                lse.data(),
                out,
                q_val,
                k_val,
                v_val,
                dims,
            );
            g.put(*q, dq);
            g.put(*k, dk);
            g.put(*v, dv);
        }
        Op::TopK { x, indices } => {
            let mut dx = g.take(*x, nodes);
            let c = nodes[x.0].value.rows_cols().1;
            moe::topk_backward(&mut dx, dy, indices, c, cols);
            g.put(*x, dx);
        }
        Op::GatherRows { x, idx } => {
            let mut dx = g.take(*x, nodes);
            moe::gather_rows_backward(&mut dx, dy, idx, cols);
            g.put(*x, dx);
        }
        Op::ScatterAddRows { x, idx } => {
            let mut dx = g.take(*x, nodes);
            moe::scatter_add_rows_backward(&mut dx, dy, idx, cols);
            g.put(*x, dx);
        }
        Op::ScaleRows { x, w } => {
            let (mut dx, mut dw) = (g.take(*x, nodes), g.take(*w, nodes));
            moe::scale_rows_backward(&mut dx, &mut dw, dy, val(x), val(w), cols);
            g.put(*x, dx);
            g.put(*w, dw);
        }
    }
}
