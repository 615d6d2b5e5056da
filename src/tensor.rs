//! `Tensor`: a shape and contiguous row-major f32 storage.
//!
//! Storage is shared (`Arc`), so handing a parameter to the autograd tape or reshaping is
//! free; writing through [`Tensor::data_mut`] copies only if the storage is shared.
//! bf16/f16 are storage formats (weights on disk, GPU matrix inputs): compute is f32.

use crate::rng::Rng;
use half::{bf16, f16};
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<Vec<f32>>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: Vec<f32> = self.data.iter().take(6).copied().collect();
        write!(f, "Tensor{:?} {:?}", self.shape, head)?;
        if self.data.len() > head.len() {
            write!(f, "…")?;
        }
        Ok(())
    }
}

impl Tensor {
    /// A tensor of `shape` holding `data` (row-major). The empty shape `[]` is a scalar.
    pub fn new(shape: &[usize], data: Vec<f32>) -> Tensor {
        let numel: usize = shape.iter().product();
        assert_eq!(
            numel,
            data.len(),
            "Tensor::new: shape {shape:?} holds {numel} values, got {}",
            data.len()
        );
        Tensor { shape: shape.to_vec(), data: Arc::new(data) }
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::new(shape, vec![value; shape.iter().product()])
    }

    pub fn scalar(value: f32) -> Tensor {
        Tensor::new(&[], vec![value])
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// (rows, cols): the last dimension is `cols`, all the others multiply into `rows`.
    /// A scalar is (1, 1).
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.split_last() {
            Some((&cols, leading)) => (leading.iter().product(), cols),
            None => (1, 1),
        }
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable access; copies the storage first if another tensor shares it.
    pub fn data_mut(&mut self) -> &mut [f32] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// The storage, without a copy when this tensor is its only owner.
    pub fn into_vec(self) -> Vec<f32> {
        Arc::try_unwrap(self.data).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> f32 {
        assert_eq!(self.numel(), 1, "Tensor::item on shape {:?}", self.shape);
        self.data[0]
    }

    /// Same storage, another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let numel: usize = shape.iter().product();
        assert_eq!(numel, self.numel(), "reshape: cannot view shape {:?} as {shape:?}", self.shape);
        Tensor { shape: shape.to_vec(), data: Arc::clone(&self.data) }
    }

    // ---- seeded initialisation

    /// i.i.d. N(0, std²).
    pub fn randn(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
        Tensor::from_fn(shape, || (rng.normal() * std as f64) as f32)
    }

    /// i.i.d. uniform in [lo, hi).
    pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
        let (lo, hi) = (lo as f64, hi as f64);
        Tensor::from_fn(shape, || (lo + (hi - lo) * rng.uniform()) as f32)
    }

    /// i.i.d. N(0, std²) truncated to ±cutoff·std (OLMoE: std 0.02, cutoff 3).
    pub fn trunc_normal(shape: &[usize], std: f32, cutoff: f32, rng: &mut Rng) -> Tensor {
        Tensor::from_fn(shape, || (rng.truncated_normal(cutoff as f64) * std as f64) as f32)
    }

    fn from_fn(shape: &[usize], mut f: impl FnMut() -> f32) -> Tensor {
        let numel: usize = shape.iter().product();
        Tensor::new(shape, (0..numel).map(|_| f()).collect())
    }

    // ---- 16-bit storage formats (round to nearest even on the way down)

    pub fn to_bf16(&self) -> Vec<bf16> {
        self.data.iter().map(|&x| bf16::from_f32(x)).collect()
    }

    pub fn from_bf16(shape: &[usize], values: &[bf16]) -> Tensor {
        Tensor::new(shape, values.iter().map(|x| x.to_f32()).collect())
    }

    pub fn to_f16(&self) -> Vec<f16> {
        self.data.iter().map(|&x| f16::from_f32(x)).collect()
    }

    pub fn from_f16(shape: &[usize], values: &[f16]) -> Tensor {
        Tensor::new(shape, values.iter().map(|x| x.to_f32()).collect())
    }
}
