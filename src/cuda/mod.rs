//! The GPU: one CUDA context and stream, the hand-written PTX in `kernels/`, and one launch
//! wrapper per kernel. Every kernel has a CPU twin in `ops/` (or `optim.rs`) that is its
//! golden reference: `tests/kernels/` runs both on the same random inputs.
//!
//! Built only with `--features cuda`. Without it, this module is a stub whose `Gpu::open`
//! says how to get the real one, so the crate builds and every CPU test passes on a machine
//! with no CUDA at all.

#[cfg(feature = "cuda")]
mod gpu;
#[cfg(feature = "cuda")]
pub use gpu::{grid_for, must, Buf, Family, Gpu, GpuTensor};

#[cfg(feature = "cuda")]
pub mod attention;
#[cfg(feature = "cuda")]
pub(crate) mod backward;
#[cfg(feature = "cuda")]
pub mod elementwise;
#[cfg(feature = "cuda")]
pub mod embedding;
#[cfg(feature = "cuda")]
pub mod expert_matmul;
#[cfg(feature = "cuda")]
pub mod loss;
#[cfg(feature = "cuda")]
pub mod matmul;
#[cfg(feature = "cuda")]
pub mod ops;
#[cfg(feature = "cuda")]
pub mod optim;
#[cfg(feature = "cuda")]
pub mod rope;
#[cfg(feature = "cuda")]
pub mod router;
#[cfg(feature = "cuda")]
pub mod rows;

#[cfg(not(feature = "cuda"))]
mod stub {
    use crate::error::{Error, Result};

    /// Stands in for the GPU in a build without the `cuda` feature: it cannot be opened.
    pub struct Gpu(());

    impl Gpu {
        pub fn open(_ordinal: usize) -> Result<Gpu> {
            Err(Error::invalid("--device cuda", "this moe binary was built without the `cuda` feature")
                .with_hint(
                    "rebuild with `cargo build --release --features cuda` (or `make ... DEVICE=cuda`)",
                ))
        }

        pub fn describe(&self) -> String {
            unreachable!("a stub Gpu is never constructed")
        }
    }
}
#[cfg(not(feature = "cuda"))]
pub use stub::Gpu;

use crate::error::{Error, Result};

/// Where a command computes: `--device cpu` (the default) or `--device cuda` (GPU 0;
/// `cuda:N` for GPU N).
pub enum Device {
    Cpu,
    Cuda(std::sync::Arc<Gpu>),
}

impl Device {
    /// The device a `--device` flag names (absent: the CPU). Opening a GPU that is not there
    /// is an error saying why (no `cuda` feature, no driver, no such GPU).
    pub fn from_flag(value: Option<&str>) -> Result<Device> {
        match value {
            None | Some("cpu") => Ok(Device::Cpu),
            Some("cuda") => Ok(Device::Cuda(std::sync::Arc::new(Gpu::open(0)?))),
            Some(other) => {
                let ordinal = other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok());
                match ordinal {
                    Some(n) => Ok(Device::Cuda(std::sync::Arc::new(Gpu::open(n)?))),
                    None => Err(Error::invalid(format!("--device {other}"), "unknown device")
                        .with_hint("cpu (the default), cuda, or cuda:N for GPU N")),
                }
            }
        }
    }

    /// "the CPU", or the GPU's name, compute capability and memory.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "the CPU".into(),
            Device::Cuda(gpu) => gpu.describe(),
        }
    }

    /// `t` on this device (the same tensor when it is there already).
    pub fn place(&self, t: &crate::tensor::Tensor) -> crate::tensor::Tensor {
        match self {
            Device::Cpu => t.to_host(),
            #[cfg(feature = "cuda")]
            Device::Cuda(gpu) => t.to_gpu(gpu),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => unreachable!("a build without `cuda` never opens a GPU"),
        }
    }
}
