//! config.json: HF defaults, both layouts in the wild, and clear errors; checkpoints that do
//! not fit their config.

use moe::json;
use moe::model::config::OlmoeConfig;
use moe::model::hf;
use std::path::{Path, PathBuf};

fn parse(text: &str) -> Result<OlmoeConfig, String> {
    OlmoeConfig::from_json(&json::parse(text).unwrap(), "config.json").map_err(|e| e.to_string())
}

#[test]
fn defaults_are_transformers_defaults() {
    let c = parse(r#"{"model_type": "olmoe"}"#).unwrap();
    assert_eq!(c, OlmoeConfig::default());
    assert_eq!(
        (c.intermediate_size, c.num_experts, c.num_experts_per_tok, c.norm_topk_prob),
        (2048, 64, 8, false)
    );
    assert_eq!((c.eos_token_id, c.pad_token_id, c.bos_token_id), (Some(50279), Some(1), None));
}

#[test]
fn hub_and_transformers_5_layouts_both_load() {
    let hub = parse(
        r#"{"model_type": "olmoe", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 32,
            "rope_theta": 500000.0, "rope_scaling": null, "torch_dtype": "bfloat16", "clip_qkv": null,
            "num_key_value_heads": null, "eos_token_id": 50279}"#,
    )
    .unwrap();
    let v5 = parse(
        r#"{"model_type": "olmoe", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 32,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "dtype": "bfloat16",
            "eos_token_id": [50279]}"#,
    )
    .unwrap();
    assert_eq!(hub, v5);
    assert_eq!((hub.rope_theta, hub.num_key_value_heads, hub.head_dim()), (500000.0, 4, 16));
    // What we write reads back the same.
    assert_eq!(parse(&hub.to_json().to_json_pretty()).unwrap(), hub);
}

#[test]
fn wrong_configs_are_named_errors() {
    let cases = [
        (r#"{"model_type": "llama"}"#, "field 'model_type': 'llama' is not an OLMoE model"),
        (r#"{"hidden_size": 8}"#, "field 'model_type': missing"),
        (
            r#"{"model_type": "olmoe", "hidden_size": 100, "num_attention_heads": 16}"#,
            "hidden_size 100 is not a multiple of num_attention_heads 16",
        ),
        (
            r#"{"model_type": "olmoe", "num_attention_heads": 16, "num_key_value_heads": 5}"#,
            "not a multiple of num_key_value_heads 5",
        ),
        (r#"{"model_type": "olmoe", "num_experts": 4}"#, "num_experts_per_tok 8 exceeds num_experts 4"),
        (r#"{"model_type": "olmoe", "vocab_size": 0}"#, "field 'vocab_size': expected a positive integer"),
        (r#"{"model_type": "olmoe", "vocab_size": 100}"#, "eos_token_id 50279 is outside vocab_size 100"),
        (
            r#"{"model_type": "olmoe", "rope_scaling": {"rope_type": "yarn", "factor": 4}}"#,
            "RoPE type 'yarn' is not implemented",
        ),
        (
            r#"{"model_type": "olmoe", "rope_parameters": {"rope_theta": 1e4, "rope_type": "llama3"}}"#,
            "RoPE type 'llama3' is not implemented",
        ),
        (r#"{"model_type": "olmoe", "hidden_act": "gelu"}"#, "field 'hidden_act': 'gelu' is not implemented"),
        (
            r#"{"model_type": "olmoe", "norm_topk_prob": "yes"}"#,
            "field 'norm_topk_prob': expected true or false",
        ),
        (
            r#"{"model_type": "olmoe", "clip_qkv": -1}"#,
            "field 'clip_qkv': expected a positive number or null",
        ),
        (r#"[1, 2]"#, "config.json must hold a JSON object"),
    ];
    for (text, want) in cases {
        let err = parse(text).expect_err(text);
        assert!(err.contains(want), "{text}: got '{err}', want '{want}'");
        assert!(err.starts_with("config.json"), "{text}: the error must name the file: {err}");
    }
}

#[test]
fn a_config_json_syntax_error_names_file_line_and_column() {
    let dir = scratch("syntax");
    std::fs::write(dir.join("config.json"), "{\n  \"model_type\": \"olmoe\",\n}").unwrap();
    let err = OlmoeConfig::load(&dir.join("config.json")).unwrap_err().to_string();
    assert!(err.contains("config.json: line 3, column 1"), "{err}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The base golden checkpoint with its config edited.
fn with_config(name: &str, edit: impl Fn(&mut OlmoeConfig)) -> PathBuf {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/base");
    let dir = scratch(name);
    let (mut config, _) = hf::load(&golden).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_json().to_json_pretty()).unwrap();
    std::fs::copy(golden.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn checkpoints_that_do_not_fit_their_config_name_the_tensor() {
    // (scratch folder, the config edit, the message the load error must contain)
    type Case = (&'static str, fn(&mut OlmoeConfig), &'static str);
    let cases: [Case; 4] = [
        ("layers", |c| c.num_hidden_layers = 3, "tensor 'model.layers.2.input_layernorm.weight': missing"),
        ("fewer-layers", |c| c.num_hidden_layers = 1, "tensor 'model.layers.1."),
        ("width", |c| c.intermediate_size = 8, "has shape [16, 32], the config implies [8, 32]"),
        ("experts", |c| c.num_experts = 9, "tensor 'model.layers.0.mlp.gate.weight': has shape [8, 32]"),
    ];
    for (name, edit, want) in cases {
        let dir = with_config(name, edit);
        let err = hf::load(&dir).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: got '{err}', want '{want}'");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
