//! `Tensor`: a shape and contiguous row-major f32 storage, in host memory or (with the `cuda`
//! feature) in a GPU's memory.
//!
//! Storage is shared (`Arc`), so handing a parameter to the autograd tape or reshaping is
//! free; writing through [`Tensor::data_mut`] copies only if the storage is shared.
//! bf16/f16 are storage formats (weights on disk, GPU matrix inputs): compute is f32.
//! Ops pick the CPU or the GPU by where their inputs live (`ops/`); `data()` is for host
//! tensors, and `to_host()` brings a GPU tensor back.

use crate::rng::Rng;
use half::{bf16, f16};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

#[derive(Clone)]
enum Storage {
    Host(Arc<Vec<f32>>),
    #[cfg(feature = "cuda")]
    Gpu(Arc<crate::cuda::GpuTensor>),
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(data) = self.host() else {
            return write!(f, "Tensor{:?} (on the GPU)", self.shape);
        };
        let head: Vec<f32> = data.iter().take(6).copied().collect();
        write!(f, "Tensor{:?} {:?}", self.shape, head)?;
        if data.len() > head.len() {
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
        Tensor { shape: shape.to_vec(), storage: Storage::Host(Arc::new(data)) }
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
        self.shape.iter().product()
    }

    /// (rows, cols): the last dimension is `cols`, all the others multiply into `rows`.
    /// A scalar is (1, 1).
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.split_last() {
            Some((&cols, leading)) => (leading.iter().product(), cols),
            None => (1, 1),
        }
    }

    /// The values, when they are in host memory.
    fn host(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Host(data) => Some(data),
            #[cfg(feature = "cuda")]
            Storage::Gpu(_) => None,
        }
    }

    /// The values of a host tensor (a GPU tensor panics: see [`Tensor::host_data`]).
    pub fn data(&self) -> &[f32] {
        self.host().unwrap_or_else(|| on_gpu_panic(&self.shape, "data"))
    }

    /// Mutable access to a host tensor; copies the storage first if another tensor shares it.
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Host(data) => Arc::make_mut(data).as_mut_slice(),
            #[cfg(feature = "cuda")]
            Storage::Gpu(_) => on_gpu_panic(&self.shape, "data_mut"),
        }
    }

    /// The values wherever they live: borrowed on the host, copied back from a GPU.
    pub fn host_data(&self) -> Cow<'_, [f32]> {
        match &self.storage {
            Storage::Host(data) => Cow::Borrowed(data),
            #[cfg(feature = "cuda")]
            Storage::Gpu(t) => Cow::Owned(t.download()),
        }
    }

    /// The storage, without a copy when this host tensor is its only owner.
    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Host(data) => Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone()),
            #[cfg(feature = "cuda")]
            Storage::Gpu(t) => t.download(),
        }
    }

    /// The single value of a one-element tensor (copied back if it is on a GPU).
    pub fn item(&self) -> f32 {
        assert_eq!(self.numel(), 1, "Tensor::item on shape {:?}", self.shape);
        self.host_data()[0]
    }

    /// Same storage, another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let numel: usize = shape.iter().product();
        assert_eq!(numel, self.numel(), "reshape: cannot view shape {:?} as {shape:?}", self.shape);
        Tensor { shape: shape.to_vec(), storage: self.storage.clone() }
    }

    /// Zeros of this tensor's shape, where this tensor lives.
    pub fn zeros_like(&self) -> Tensor {
        match &self.storage {
            Storage::Host(_) => Tensor::zeros(&self.shape),
            #[cfg(feature = "cuda")]
            Storage::Gpu(t) => {
                Tensor::from_gpu(&self.shape, crate::cuda::GpuTensor::zeros(&t.gpu, self.numel()))
            }
        }
    }

    /// self += other, element by element, where self lives (other must live there too).
    pub fn accumulate_from(&mut self, other: &Tensor) {
        assert_eq!(
            self.shape, other.shape,
            "accumulate_from: shapes {:?} and {:?} differ",
            self.shape, other.shape
        );
        #[cfg(feature = "cuda")]
        if let Some(t) = self.gpu_mut() {
            let d = crate::cuda::ops::on_gpu(other, "accumulate_from");
            return crate::cuda::must(crate::cuda::elementwise::accumulate(&t.gpu, &mut t.buf, &d.buf));
        }
        crate::ops::accumulate(self.data_mut(), other.data());
    }

    /// A host tensor with the same shape and values (a copy back if this one is on a GPU).
    pub fn to_host(&self) -> Tensor {
        match &self.storage {
            Storage::Host(_) => self.clone(),
            #[cfg(feature = "cuda")]
            Storage::Gpu(t) => Tensor::new(&self.shape, t.download()),
        }
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
        self.data().iter().map(|&x| bf16::from_f32(x)).collect()
    }

    pub fn from_bf16(shape: &[usize], values: &[bf16]) -> Tensor {
        Tensor::new(shape, values.iter().map(|x| x.to_f32()).collect())
    }

    pub fn to_f16(&self) -> Vec<f16> {
        self.data().iter().map(|&x| f16::from_f32(x)).collect()
    }

    pub fn from_f16(shape: &[usize], values: &[f16]) -> Tensor {
        Tensor::new(shape, values.iter().map(|x| x.to_f32()).collect())
    }
}

// ---- tensors in GPU memory

#[cfg(feature = "cuda")]
impl Tensor {
    /// The GPU values, when this tensor lives on a GPU.
    pub fn gpu(&self) -> Option<&crate::cuda::GpuTensor> {
        match &self.storage {
            Storage::Host(_) => None,
            Storage::Gpu(t) => Some(t),
        }
    }

    /// Mutable GPU values, when this tensor lives on a GPU; copies them first (on the GPU) if
    /// another tensor shares them.
    pub fn gpu_mut(&mut self) -> Option<&mut crate::cuda::GpuTensor> {
        match &mut self.storage {
            Storage::Host(_) => None,
            Storage::Gpu(t) => Some(Arc::make_mut(t)),
        }
    }

    /// A tensor of `shape` over GPU values.
    pub fn from_gpu(shape: &[usize], values: crate::cuda::GpuTensor) -> Tensor {
        let numel: usize = shape.iter().product();
        assert_eq!(
            numel,
            values.buf.len(),
            "Tensor::from_gpu: shape {shape:?} holds {numel} values, got {}",
            values.buf.len()
        );
        Tensor { shape: shape.to_vec(), storage: Storage::Gpu(Arc::new(values)) }
    }

    /// This tensor on `gpu` (a copy, unless it is there already).
    pub fn to_gpu(&self, gpu: &Arc<crate::cuda::Gpu>) -> Tensor {
        match &self.storage {
            Storage::Gpu(t) if Arc::ptr_eq(&t.gpu, gpu) => self.clone(),
            _ => Tensor::from_gpu(&self.shape, crate::cuda::GpuTensor::upload(gpu, &self.host_data())),
        }
    }
}

fn on_gpu_panic(shape: &[usize], method: &str) -> ! {
    panic!("Tensor::{method}: this {shape:?} tensor is on the GPU; to_host() copies it back")
}
