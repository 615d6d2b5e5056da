//! STUB — to be written: elementwise ops, RMSNorm, softmax, sum/mean, embedding.
use crate::autograd::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let _ = (a, b, Op::Leaf, Tensor::scalar(0.0));
        todo!()
    }
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let _ = (a, b);
        todo!()
    }
    pub fn scale(&mut self, x: Var, s: f32) -> Var {
        let _ = (x, s);
        todo!()
    }
    pub fn add_row(&mut self, x: Var, bias: Var) -> Var {
        let _ = (x, bias);
        todo!()
    }
    pub fn silu(&mut self, x: Var) -> Var {
        let _ = x;
        todo!()
    }
    pub fn swiglu(&mut self, gate: Var, up: Var) -> Var {
        let _ = (gate, up);
        todo!()
    }
    pub fn rmsnorm(&mut self, x: Var, w: Var, eps: f32) -> Var {
        let _ = (x, w, eps);
        todo!()
    }
    pub fn softmax(&mut self, x: Var) -> Var {
        let _ = x;
        todo!()
    }
    pub fn sum(&mut self, x: Var) -> Var {
        let _ = x;
        todo!()
    }
    pub fn mean(&mut self, x: Var) -> Var {
        let _ = x;
        todo!()
    }
    pub fn embedding(&mut self, table: Var, ids: &[u32]) -> Var {
        let _ = (table, ids);
        todo!()
    }
}
pub fn mul_backward(da: &mut [f32], db: &mut [f32], dy: &[f32], a: &[f32], b: &[f32]) {
    let _ = (da, db, dy, a, b);
    todo!()
}
pub fn scale_backward(dx: &mut [f32], dy: &[f32], s: f32) {
    let _ = (dx, dy, s);
    todo!()
}
pub fn add_row_backward(dx: &mut [f32], dbias: &mut [f32], dy: &[f32], c: usize) {
    let _ = (dx, dbias, dy, c);
    todo!()
}
pub fn silu_backward(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    let _ = (dx, dy, x);
    todo!()
}
pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dy: &[f32], gate: &[f32], up: &[f32]) {
    let _ = (dgate, dup, dy, gate, up);
    todo!()
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
    let _ = (dx, dw, dy, rstd, x, w, c);
    todo!()
}
pub fn softmax_backward(dx: &mut [f32], dy: &[f32], y: &[f32], c: usize) {
    let _ = (dx, dy, y, c);
    todo!()
}
pub fn embedding_backward(dtable: &mut [f32], dy: &[f32], ids: &[u32], c: usize) {
    let _ = (dtable, dy, ids, c);
    todo!()
}
