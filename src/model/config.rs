//! The model's `config.json`: Hugging Face's `OlmoeConfig`, field for field, with its defaults
//! (transformers `configuration_olmoe.py`), plus our own fields for what HF lacks.
//!
//! Two layouts exist in the wild and both load: the hub's (`rope_theta` at top level,
//! `torch_dtype`) and transformers 5's (`rope_parameters: {rope_theta, rope_type}`, `dtype`).
//! We write the hub's.

use crate::error::{Error, Result};
use crate::json::{self, Value};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct OlmoeConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Per-expert FFN width (F). OLMoE-1B-7B: 1024; the HF class default is 2048.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    /// Renormalise the top-k router probabilities to sum to 1 (OLMoE-1B-7B: false).
    pub norm_topk_prob: bool,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub max_position_embeddings: usize,
    /// Clamp q, k, v to ±clip_qkv after the projections (OLMoE-1B-7B: null).
    pub clip_qkv: Option<f32>,
    pub router_aux_loss_coef: f32,
    pub tie_word_embeddings: bool,
    pub initializer_range: f32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// Ours: the router z-loss weight (OLMoE's training yml: moe_zloss_weight 0.001).
    pub router_z_loss_coef: f32,
    /// Ours: how tokens meet experts (model/routing/); config.json `moe_routing` & co.
    pub routing: Routing,
    /// The width of an expert every token passes through, added to the routed experts'
    /// output (OLMoE's shared-expert ablation); None: no shared expert. Qwen2-MoE's key.
    pub shared_expert_intermediate_size: Option<usize>,
}

/// The routing variants (model/routing/ has their math).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Routing {
    /// Each token's top-K experts, all served (OLMoE). `moe_routing: "token_choice"`.
    TokenChoice,
    /// Top-K per token, each expert serving at most a capacity (OpenMoE).
    /// `moe_routing: "token_choice_capacity"`, `moe_capacity_factor` (1.25, training),
    /// `moe_eval_capacity_factor` (2.0, validation and generation), `moe_min_capacity` (4).
    TokenChoiceCapacity { capacity_factor: f32, eval_capacity_factor: f32, min_capacity: usize },
    /// Each expert's top-C tokens. `moe_routing: "expert_choice"`, `moe_capacity_factor` (2.0,
    /// OLMoE's expert-choice ablation).
    ExpertChoice { capacity_factor: f32 },
}

impl Default for OlmoeConfig {
    /// `OlmoeConfig()` in transformers.
    fn default() -> Self {
        OlmoeConfig {
            vocab_size: 50304,
            hidden_size: 2048,
            intermediate_size: 2048,
            num_hidden_layers: 16,
            num_attention_heads: 16,
            num_key_value_heads: 16,
            num_experts: 64,
            num_experts_per_tok: 8,
            norm_topk_prob: false,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 4096,
            clip_qkv: None,
            router_aux_loss_coef: 0.01,
            tie_word_embeddings: false,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: Some(50279),
            pad_token_id: Some(1),
            router_z_loss_coef: 0.001,
            routing: Routing::TokenChoice,
            shared_expert_intermediate_size: None,
        }
    }
}

impl OlmoeConfig {
    /// The config for evaluation (validation, generation): capacity routing switches to its
    /// evaluation capacity factor; everything else is unchanged.
    pub fn for_evaluation(&self) -> OlmoeConfig {
        let mut config = self.clone();
        if let Routing::TokenChoiceCapacity { eval_capacity_factor, min_capacity, .. } = self.routing {
            config.routing = Routing::TokenChoiceCapacity {
                capacity_factor: eval_capacity_factor,
                eval_capacity_factor,
                min_capacity,
            };
        }
        config
    }

    /// D: the width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<OlmoeConfig> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let value = json::parse(&text).map_err(|e| e.in_file(path))?;
        OlmoeConfig::from_json(&value, &path.display().to_string())
    }

    /// The config from a parsed `config.json` (`file` names it in errors).
    pub fn from_json(v: &Value, file: &str) -> Result<OlmoeConfig> {
        let bad = |name: &str, rule: &str| Error::invalid(format!("{file}: field '{name}'"), rule);
        if v.as_object().is_none() {
            return Err(Error::invalid(file, "config.json must hold a JSON object"));
        }
        match v.get("model_type").and_then(Value::as_str) {
            Some("olmoe") => {}
            Some(other) => {
                return Err(bad("model_type", &format!("'{other}' is not an OLMoE model (expected 'olmoe')")))
            }
            None => return Err(bad("model_type", "missing (expected 'olmoe')")),
        }
        let d = OlmoeConfig::default();
        let count = |name: &str, default: usize| -> Result<usize> {
            match v.get(name) {
                None => Ok(default),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| bad(name, "expected a positive integer")),
            }
        };
        let real = |name: &str, default: f32| -> Result<f32> {
            match v.get(name) {
                None => Ok(default),
                Some(x) => x.as_f64().map(|f| f as f32).ok_or_else(|| bad(name, "expected a number")),
            }
        };
        let flag = |name: &str, default: bool| -> Result<bool> {
            match v.get(name) {
                None => Ok(default),
                Some(x) => x.as_bool().ok_or_else(|| bad(name, "expected true or false")),
            }
        };
        let token = |name: &str, default: Option<u32>| -> Result<Option<u32>> {
            match v.get(name) {
                None => Ok(default),
                Some(Value::Null) => Ok(None),
                Some(x) => match x.as_u64() {
                    Some(n) if n <= u32::MAX as u64 => Ok(Some(n as u32)),
                    // A list of eos ids (some HF configs): the first is the one generation stops at.
                    _ => match x.as_array().and_then(|a| a.first()).and_then(Value::as_u64) {
                        Some(n) if n <= u32::MAX as u64 => Ok(Some(n as u32)),
                        _ => Err(bad(name, "expected a token id, a list of them, or null")),
                    },
                },
            }
        };
        let num_attention_heads = count("num_attention_heads", d.num_attention_heads)?;
        let clip_qkv = match v.get("clip_qkv") {
            None | Some(Value::Null) => None,
            Some(x) => Some(
                x.as_f64()
                    .filter(|&c| c > 0.0)
                    .ok_or_else(|| bad("clip_qkv", "expected a positive number or null"))?
                    as f32,
            ),
        };
        let config = OlmoeConfig {
            vocab_size: count("vocab_size", d.vocab_size)?,
            hidden_size: count("hidden_size", d.hidden_size)?,
            intermediate_size: count("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: count("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads,
            num_key_value_heads: match v.get("num_key_value_heads") {
                None | Some(Value::Null) => num_attention_heads,
                Some(_) => count("num_key_value_heads", num_attention_heads)?,
            },
            num_experts: count("num_experts", d.num_experts)?,
            num_experts_per_tok: count("num_experts_per_tok", d.num_experts_per_tok)?,
            norm_topk_prob: flag("norm_topk_prob", d.norm_topk_prob)?,
            rope_theta: rope_theta(v, file, d.rope_theta)?,
            rms_norm_eps: real("rms_norm_eps", d.rms_norm_eps)?,
            max_position_embeddings: count("max_position_embeddings", d.max_position_embeddings)?,
            clip_qkv,
            router_aux_loss_coef: real("router_aux_loss_coef", d.router_aux_loss_coef)?,
            tie_word_embeddings: flag("tie_word_embeddings", d.tie_word_embeddings)?,
            initializer_range: real("initializer_range", d.initializer_range)?,
            bos_token_id: token("bos_token_id", d.bos_token_id)?,
            eos_token_id: token("eos_token_id", d.eos_token_id)?,
            pad_token_id: token("pad_token_id", d.pad_token_id)?,
            router_z_loss_coef: real("router_z_loss_coef", d.router_z_loss_coef)?,
            routing: routing(v, file)?,
            shared_expert_intermediate_size: match v.get("shared_expert_intermediate_size") {
                None | Some(Value::Null) => None,
                Some(_) => Some(count("shared_expert_intermediate_size", 1)?),
            },
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(bad("hidden_act", &format!("'{act}' is not implemented (OLMoE uses 'silu')")));
            }
        }
        if v.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err(bad("attention_bias", "true is not implemented (OLMoE has no biases)"));
        }
        config.validate(file)?;
        Ok(config)
    }

    /// Sizes that must agree with each other.
    pub fn validate(&self, file: &str) -> Result<()> {
        let fail = |rule: String| Err(Error::invalid(file, rule));
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!(
                "head dim {} (hidden_size / num_attention_heads) must be even for RoPE",
                self.head_dim()
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.norm_topk_prob && matches!(self.routing, Routing::TokenChoiceCapacity { .. }) {
            return fail(
                "capacity routing combines raw probabilities (OpenMoE): norm_topk_prob must be false".into(),
            );
        }
        if self.num_experts_per_tok > self.num_experts {
            return fail(format!(
                "num_experts_per_tok {} exceeds num_experts {}",
                self.num_experts_per_tok, self.num_experts
            ));
        }
        for (name, id) in [("bos", self.bos_token_id), ("eos", self.eos_token_id), ("pad", self.pad_token_id)]
        {
            if id.is_some_and(|id| id as usize >= self.vocab_size) {
                return fail(format!(
                    "{name}_token_id {} is outside vocab_size {}",
                    id.unwrap(),
                    self.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// `config.json` in the hub's layout, loadable by transformers' `OlmoeForCausalLM`.
    pub fn to_json(&self) -> Value {
        let n = |x: usize| Value::Number(x as f64);
        let r = |x: f32| Value::Float(x as f64);
        let id = |x: Option<u32>| x.map_or(Value::Null, |i| Value::Number(i as f64));
        let mut fields: Vec<(&str, Value)> = vec![
            ("architectures", Value::Array(vec![Value::String("OlmoeForCausalLM".into())])),
            ("model_type", Value::String("olmoe".into())),
            ("vocab_size", n(self.vocab_size)),
            ("hidden_size", n(self.hidden_size)),
            ("intermediate_size", n(self.intermediate_size)),
            ("num_hidden_layers", n(self.num_hidden_layers)),
            ("num_attention_heads", n(self.num_attention_heads)),
            ("num_key_value_heads", n(self.num_key_value_heads)),
            ("num_experts", n(self.num_experts)),
            ("num_experts_per_tok", n(self.num_experts_per_tok)),
            ("norm_topk_prob", Value::Bool(self.norm_topk_prob)),
            ("hidden_act", Value::String("silu".into())),
            ("rope_theta", r(self.rope_theta)),
            ("rope_scaling", Value::Null),
            ("rms_norm_eps", r(self.rms_norm_eps)),
            ("max_position_embeddings", n(self.max_position_embeddings)),
            ("clip_qkv", self.clip_qkv.map_or(Value::Null, r)),
            ("router_aux_loss_coef", r(self.router_aux_loss_coef)),
            ("output_router_logits", Value::Bool(false)),
            ("tie_word_embeddings", Value::Bool(self.tie_word_embeddings)),
            ("initializer_range", r(self.initializer_range)),
            ("attention_bias", Value::Bool(false)),
            ("attention_dropout", Value::Float(0.0)),
            ("use_cache", Value::Bool(true)),
            ("bos_token_id", id(self.bos_token_id)),
            ("eos_token_id", id(self.eos_token_id)),
            ("pad_token_id", id(self.pad_token_id)),
            ("torch_dtype", Value::String("float32".into())),
            ("router_z_loss_coef", r(self.router_z_loss_coef)),
        ];
        // Written only when not OLMoE's: a plain OLMoE config stays what transformers writes.
        if let Some(fs) = self.shared_expert_intermediate_size {
            fields.push(("shared_expert_intermediate_size", n(fs)));
        }
        match self.routing {
            Routing::TokenChoice => {}
            Routing::TokenChoiceCapacity { capacity_factor, eval_capacity_factor, min_capacity } => fields
                .extend([
                    ("moe_routing", Value::String("token_choice_capacity".into())),
                    ("moe_capacity_factor", r(capacity_factor)),
                    ("moe_eval_capacity_factor", r(eval_capacity_factor)),
                    ("moe_min_capacity", n(min_capacity)),
                ]),
            Routing::ExpertChoice { capacity_factor } => fields.extend([
                ("moe_routing", Value::String("expert_choice".into())),
                ("moe_capacity_factor", r(capacity_factor)),
            ]),
        }
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

/// `moe_routing` and its settings; absent means OLMoE's dropless token choice.
fn routing(v: &Value, file: &str) -> Result<Routing> {
    let bad = |name: &str, rule: String| Error::invalid(format!("{file}: field '{name}'"), rule);
    let factor = |name: &str, default: f32| -> Result<f32> {
        match v.get(name) {
            None => Ok(default),
            Some(x) => x
                .as_f64()
                .filter(|&f| f > 0.0 && f.is_finite())
                .map(|f| f as f32)
                .ok_or_else(|| bad(name, "expected a positive number".into())),
        }
    };
    match v.get("moe_routing").map(|x| x.as_str()) {
        None | Some(Some("token_choice")) => Ok(Routing::TokenChoice),
        Some(Some("token_choice_capacity")) => Ok(Routing::TokenChoiceCapacity {
            capacity_factor: factor("moe_capacity_factor", 1.25)?,
            eval_capacity_factor: factor("moe_eval_capacity_factor", 2.0)?,
            min_capacity: match v.get("moe_min_capacity") {
                None => 4,
                Some(x) => x
                    .as_u64()
                    .filter(|&c| c > 0)
                    .map(|c| c as usize)
                    .ok_or_else(|| bad("moe_min_capacity", "expected a positive whole number".into()))?,
            },
        }),
        Some(Some("expert_choice")) => {
            Ok(Routing::ExpertChoice { capacity_factor: factor("moe_capacity_factor", 2.0)? })
        }
        Some(other) => Err(bad(
            "moe_routing",
            format!(
                "{} is not a routing (known: \"token_choice\", \"token_choice_capacity\", \"expert_choice\")",
                other.map_or("a non-string".to_string(), |s| format!("\"{s}\""))
            ),
        )),
    }
}

/// `rope_theta` from either layout; a RoPE type other than the default is refused.
fn rope_theta(v: &Value, file: &str, default: f32) -> Result<f32> {
    let refuse = |what: &str, kind: &str| {
        Err(Error::invalid(
            format!("{file}: field '{what}'"),
            format!("RoPE type '{kind}' is not implemented"),
        )
        .with_hint("only the default RoPE (no scaling) is built"))
    };
    if let Some(scaling) = v.get("rope_scaling").filter(|s| **s != Value::Null) {
        let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str);
        if kind != Some("default") {
            return refuse("rope_scaling", kind.unwrap_or("unknown"));
        }
    }
    let (source, holder) = match v.get("rope_parameters") {
        Some(params) => {
            if let Some(kind) = params.get("rope_type").and_then(Value::as_str).filter(|k| *k != "default") {
                return refuse("rope_parameters", kind);
            }
            ("rope_parameters.rope_theta", params)
        }
        None => ("rope_theta", v),
    };
    match holder.get("rope_theta") {
        None => Ok(default),
        Some(x) => {
            x.as_f64().filter(|&t| t > 0.0).map(|t| t as f32).ok_or_else(|| {
                Error::invalid(format!("{file}: field '{source}'"), "expected a positive number")
            })
        }
    }
}
