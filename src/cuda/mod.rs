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
pub use gpu::{grid_for, Buf, Family, Gpu};

#[cfg(feature = "cuda")]
pub mod attention;
#[cfg(feature = "cuda")]
pub mod elementwise;
#[cfg(feature = "cuda")]
pub mod embedding;
#[cfg(feature = "cuda")]
pub mod expert_matmul;
#[cfg(feature = "cuda")]
pub mod loss;
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
    Cuda(Gpu),
}

impl Device {
    /// The device a `--device` flag names (absent: the CPU). Opening a GPU that is not there
    /// is an error saying why (no `cuda` feature, no driver, no such GPU).
    pub fn from_flag(value: Option<&str>) -> Result<Device> {
        match value {
            None | Some("cpu") => Ok(Device::Cpu),
            Some("cuda") => Ok(Device::Cuda(Gpu::open(0)?)),
            Some(other) => {
                let ordinal = other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok());
                match ordinal {
                    Some(n) => Ok(Device::Cuda(Gpu::open(n)?)),
                    None => Err(Error::invalid(format!("--device {other}"), "unknown device")
                        .with_hint("cpu (the default), cuda, or cuda:N for GPU N")),
                }
            }
        }
    }

    /// For a command whose model path runs on the CPU only so far: an error naming the GPU
    /// that was found. The GPU kernels exist and are checked by `tests/kernels/`; the model's
    /// tensors do not live on the GPU yet.
    pub fn require_cpu(&self, command: &str) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(gpu) => Err(Error::invalid(
                format!("{command} --device cuda"),
                format!("found {}, but this command's model path does not run on the GPU yet", gpu.describe()),
            )
            .with_hint("run it with --device cpu (the default); `cargo test --features cuda --test kernels` checks the GPU kernels")),
        }
    }
}
