//! The CUDA context, its stream, the PTX modules (loaded once each, on first use) and the
//! few buffer moves everything else is written in.

use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, DriverError, LaunchConfig,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::sync::{Arc, Mutex};

/// A buffer in device memory.
pub type Buf<T> = CudaSlice<T>;

/// One `kernels/*.ptx` file: a family of kernels loaded as one module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Router,
    ExpertMatmul,
    Matmul,
    Elementwise,
    Rows,
    Attention,
    Rope,
    Embedding,
    Loss,
    Optim,
}

impl Family {
    const ALL: [Family; 10] = [
        Family::Router,
        Family::ExpertMatmul,
        Family::Matmul,
        Family::Elementwise,
        Family::Rows,
        Family::Attention,
        Family::Rope,
        Family::Embedding,
        Family::Loss,
        Family::Optim,
    ];

    /// The file under `kernels/`.
    pub fn file(self) -> &'static str {
        match self {
            Family::Router => "router.ptx",
            Family::ExpertMatmul => "expert_matmul.ptx",
            Family::Matmul => "matmul.ptx",
            Family::Elementwise => "elementwise.ptx",
            Family::Rows => "rows.ptx",
            Family::Attention => "attention.ptx",
            Family::Rope => "rope.ptx",
            Family::Embedding => "embedding.ptx",
            Family::Loss => "loss.ptx",
            Family::Optim => "optim.ptx",
        }
    }

    /// The PTX text, embedded in the binary.
    pub fn ptx(self) -> &'static str {
        match self {
            Family::Router => include_str!("../../kernels/router.ptx"),
            Family::ExpertMatmul => include_str!("../../kernels/expert_matmul.ptx"),
            Family::Matmul => include_str!("../../kernels/matmul.ptx"),
            Family::Elementwise => include_str!("../../kernels/elementwise.ptx"),
            Family::Rows => include_str!("../../kernels/rows.ptx"),
            Family::Attention => include_str!("../../kernels/attention.ptx"),
            Family::Rope => include_str!("../../kernels/rope.ptx"),
            Family::Embedding => include_str!("../../kernels/embedding.ptx"),
            Family::Loss => include_str!("../../kernels/loss.ptx"),
            Family::Optim => include_str!("../../kernels/optim.ptx"),
        }
    }

    fn index(self) -> usize {
        Family::ALL.iter().position(|&f| f == self).expect("every family is in ALL")
    }
}

/// One GPU: its context, the stream every kernel runs on (in order), and the modules.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<[Option<Arc<CudaModule>>; Family::ALL.len()]>,
}

/// Turns a driver error into ours, naming what was being done.
pub(crate) fn driver(what: impl Into<String>) -> impl FnOnce(DriverError) -> Error {
    let what = what.into();
    move |e| Error::invalid(format!("CUDA: {what}"), format!("{e:?}"))
}

impl Gpu {
    /// Opens GPU `ordinal`. Without a CUDA driver (libcuda) or without a GPU this is an
    /// error saying which, never a panic (cudarc panics if asked for a missing library, so
    /// the library is looked for first).
    pub fn open(ordinal: usize) -> Result<Gpu> {
        // SAFETY: is_culib_present only tries to dlopen the driver library by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::invalid(
                "--device cuda",
                "no CUDA driver found (libcuda.so could not be loaded)",
            )
            .with_hint("install the NVIDIA driver, or run on the CPU with --device cpu (the default)"));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            Error::invalid(format!("--device cuda (GPU {ordinal})"), format!("could not open the GPU: {e:?}"))
                .with_hint("check `nvidia-smi`; CUDA_VISIBLE_DEVICES may hide it")
        })?;
        let stream = ctx.default_stream();
        Ok(Gpu { ctx, stream, modules: Mutex::new(Default::default()) })
    }

    /// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
    pub fn describe(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "an unnamed GPU".into());
        let (major, minor) = self.ctx.compute_capability().unwrap_or((0, 0));
        let total = self.ctx.mem_get_info().map(|(_, total)| total).unwrap_or(0);
        format!("{name} (sm_{major}{minor}, {:.1} GiB)", total as f64 / (1u64 << 30) as f64)
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Kernel `name` of `family`, loading the family's module on first use.
    pub fn function(&self, family: Family, name: &str) -> Result<CudaFunction> {
        let module = {
            let mut modules = self.modules.lock().expect("the module cache is never poisoned");
            let slot = &mut modules[family.index()];
            match slot {
                Some(module) => Arc::clone(module),
                None => {
                    let module = (self.ctx.load_module(Ptx::from_src(family.ptx())))
                        .map_err(driver(format!("loading kernels/{}", family.file())))?;
                    *slot = Some(Arc::clone(&module));
                    module
                }
            }
        };
        module.load_function(name).map_err(driver(format!("kernel {name} in kernels/{}", family.file())))
    }

    /// A copy of `host` in device memory.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<Buf<T>> {
        self.stream.clone_htod(host).map_err(driver(format!("copying {} values to the GPU", host.len())))
    }

    /// A copy of `buf` in host memory (waits for the kernels before it).
    pub fn download<T: DeviceRepr>(&self, buf: &Buf<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(driver(format!("copying {} values from the GPU", buf.len())))
    }

    /// `len` zeros in device memory.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<Buf<T>> {
        self.stream.alloc_zeros(len).map_err(driver(format!("allocating {len} values on the GPU")))
    }

    /// Waits for every kernel launched so far.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("waiting for the GPU"))
    }
}

/// A tensor's values in device memory, and the GPU that holds them. Failures to allocate or
/// copy panic with the driver's message: they happen mid-op, where the math has no `Result`.
pub struct GpuTensor {
    pub gpu: Arc<Gpu>,
    pub buf: Buf<f32>,
}

impl Clone for GpuTensor {
    /// A copy in new device memory.
    fn clone(&self) -> GpuTensor {
        let mut copy = GpuTensor::zeros(&self.gpu, self.buf.len());
        must(
            self.gpu
                .stream
                .memcpy_dtod(&self.buf, &mut copy.buf)
                .map_err(driver("copying a tensor on the GPU")),
        );
        copy
    }
}

impl GpuTensor {
    pub fn upload(gpu: &Arc<Gpu>, host: &[f32]) -> GpuTensor {
        GpuTensor { gpu: Arc::clone(gpu), buf: must(gpu.upload(host)) }
    }

    pub fn zeros(gpu: &Arc<Gpu>, len: usize) -> GpuTensor {
        GpuTensor { gpu: Arc::clone(gpu), buf: must(gpu.zeros(len)) }
    }

    pub fn download(&self) -> Vec<f32> {
        must(self.gpu.download(&self.buf))
    }
}

/// The value of a GPU call inside an op, or a panic with the driver's message.
pub fn must<T>(result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A 1-D launch over `n` items, `block` threads a block.
pub fn grid_for(n: usize, block: u32) -> LaunchConfig {
    let blocks = n.div_ceil(block as usize).max(1);
    let blocks = u32::try_from(blocks).expect("grid_for: more than 2^32 blocks");
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}
