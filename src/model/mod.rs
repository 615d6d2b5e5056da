//! The network: OLMoE (`OlmoeForCausalLM`), as a function of its weights and token ids.

pub mod attention;
pub mod config;
pub mod decode;
pub mod hf;
pub mod moe;
pub mod olmoe;
pub mod routing;
