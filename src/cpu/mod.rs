//! CPU performance machinery: the blocked SIMD GEMM, the thread helpers, malloc tuning.

pub mod dot;
pub mod gemm;
pub mod linear;
pub mod memory;
pub mod threads;
