//! STUB — to be written: top-k, gather/scatter-add rows, row scaling (MoE dispatch/combine).
use crate::autograd::{Tape, Var};

impl Tape {
    pub fn topk(&mut self, x: Var, k: usize) -> (Var, Vec<u32>) {
        let _ = (x, k);
        todo!()
    }
    pub fn gather_rows(&mut self, x: Var, idx: &[u32]) -> Var {
        let _ = (x, idx);
        todo!()
    }
    pub fn scatter_add_rows(&mut self, x: Var, idx: &[u32], rows: usize) -> Var {
        let _ = (x, idx, rows);
        todo!()
    }
    pub fn scale_rows(&mut self, x: Var, w: Var) -> Var {
        let _ = (x, w);
        todo!()
    }
}
pub fn topk_backward(dx: &mut [f32], dvalues: &[f32], indices: &[u32], c: usize, k: usize) {
    let _ = (dx, dvalues, indices, c, k);
    todo!()
}
pub fn gather_rows_backward(dx: &mut [f32], dy: &[f32], idx: &[u32], c: usize) {
    let _ = (dx, dy, idx, c);
    todo!()
}
pub fn scatter_add_rows_backward(dx: &mut [f32], dy: &[f32], idx: &[u32], c: usize) {
    let _ = (dx, dy, idx, c);
    todo!()
}
pub fn scale_rows_backward(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], c: usize) {
    let _ = (dx, dw, dy, x, w, c);
    todo!()
}
