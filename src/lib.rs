//! moe: a from-scratch Rust reference implementation of Mixture-of-Experts language models
//! (OLMoE, OpenMoE). Modules in layer order, lowest first (see ARCHITECTURE in README.md).

// 1 formats and shared plumbing
pub mod checkpoint;
pub mod error;
pub mod json;
pub mod npy;
pub mod rng;
pub mod safetensors;
pub mod tokenizer;
// 2 tensors, ops and the CPU machinery
pub mod cpu;
pub mod cuda;
pub mod ops;
pub mod tensor;
// 3 autograd
pub mod autograd;
// 4 training
pub mod data;
pub mod optim;
pub mod plot;
// 5 model
pub mod model;
pub mod sample;
// 6 commands
pub mod analyze;
pub mod bench;
pub mod bench_decode;
pub mod bench_gpu;
pub mod cli;
pub mod experiments;
pub mod forward;
pub mod generate;
pub mod init_cmd;
pub mod tokenize_cmd;
pub mod train;
pub mod train_cmd;
pub mod trainer;
pub mod upcycle;
