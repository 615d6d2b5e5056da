//! CPU performance machinery: the blocked SIMD GEMM and the thread helpers.

pub mod gemm;
pub mod threads;
