//! `moe generate`: a prompt in, a continuation streamed out. The checkpoint is memory-mapped
//! and computed on in its stored dtype (model/decode.rs); the prompt is prefilled in one
//! step, then each token is one KV-cached step (sample.rs).

use crate::cli::{thousands, Args};
use crate::cuda::Device;
use crate::error::{Error, Result};
use crate::init_cmd::param_counts;
use crate::model::config::{OlmoeConfig, Routing};
use crate::model::decode::Decoder;
use crate::model::decode::StoredWeights;
use crate::model::hf;
use crate::model::olmoe::next_token_logits;
use crate::rng::Rng;
use crate::sample::{generate, generate_with, room, Generation, Sampling};
use crate::tokenizer::Tokenizer;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

pub const HELP: &str = r#"moe generate --model DIR (--prompt TEXT | --prompt-ids "1 2 3") [FLAGS]
  Continues the prompt with the checkpoint in DIR (Hugging Face layout: config.json and
  model.safetensors or shards; F32 or BF16, memory-mapped and computed on as stored) and
  streams the text to stdout. Stops at the config's eos_token_id or after N new tokens.
  Ends with a summary on stderr: prompt and generated tokens, prefill and decode tokens/s.
  --prompt TEXT         text, encoded with DIR/tokenizer.json
  --prompt-ids "IDS"    token ids, space-separated (with no tokenizer in DIR, prints ids only)
  --max-new-tokens N    (200)
  --temperature T       0 is greedy (0.8)
  --top-k K             draw among the K most likely tokens; 0: no limit (40)
  --top-p P             draw among the most likely tokens that make up P of the mass (0.95)
  --seed S              the sampling seed (0): same seed, same text
  --print-ids           also print the generated ids, space-separated, on the last line
  --device D            cpu (default) or cuda (GPU 0; cuda:N for GPU N): needs a build with
                        `--features cuda` and a GPU
"#;

const DEFAULT_SAMPLING: Sampling = Sampling { temperature: 0.8, top_k: 40, top_p: 0.95 };
const DEFAULT_MAX_NEW_TOKENS: usize = 200;

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&[
        "model",
        "prompt",
        "prompt-ids",
        "max-new-tokens",
        "temperature",
        "top-k",
        "top-p",
        "seed",
        "print-ids",
        "device",
    ])?;
    let device = Device::from_flag(args.value("device")?)?;
    let dir = Path::new(args.required("model", HELP)?);
    let sampling = sampling_from(args)?;
    let max_new = args.count("max-new-tokens")?.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    let seed = args.whole("seed")?.unwrap_or(0);
    let print_ids = args.has("print-ids");

    let (config, ckpt) = hf::open(dir)?;
    let (text, ids) = (args.value("prompt")?, args.value("prompt-ids")?);
    if text.is_some() == ids.is_some() {
        return Err(
            Error::invalid("moe generate", "give exactly one of --prompt and --prompt-ids").with_hint(HELP)
        );
    }
    let tokenizer = load_tokenizer(dir, text.is_some())?;
    let prompt = match (text, ids, &tokenizer) {
        (Some(text), _, Some(t)) => t.encode(text),
        (_, Some(ids), _) => parse_ids(ids)?,
        _ => unreachable!("exactly one of text and ids; load_tokenizer requires a tokenizer for text"),
    };
    check_prompt(&prompt, &config)?;
    let config = config.for_evaluation();
    match config.routing {
        Routing::TokenChoice => {}
        Routing::TokenChoiceCapacity { capacity_factor, .. } => eprintln!(
            "note: capacity routing at the evaluation capacity factor {capacity_factor}: the prompt is one \
             group; one token at a time, nothing is dropped"
        ),
        Routing::ExpertChoice { .. } => eprintln!(
            "note: expert choice routes whole groups of tokens; the prompt is one group, and each new \
             token, alone in its step, goes to every expert"
        ),
    }
    let stored = hf::views(&ckpt, &config)?;
    describe(dir, &config, &stored);

    let room = room(config.max_position_embeddings, prompt.len());
    if max_new > room {
        eprintln!(
            "note: the model reads at most {} positions (max_position_embeddings); stopping after {room} new tokens",
            config.max_position_embeddings
        );
    }
    let new_tokens = max_new.min(room);
    let mut rng = Rng::new(seed);
    let mut out = std::io::stdout().lock();
    let io = |source| Error::Io { path: "<stdout>".into(), source };
    let eos = config.eos_token_id;
    // With a tokenizer: the prompt's text, then each new token's text as it comes (EOS
    // silent). Without: the new ids on one line. A failed write (a closed pipe) stops it.
    let mut written = match &tokenizer {
        Some(t) => out.write_all(&t.decode_bytes(&prompt)).and_then(|()| out.flush()),
        None => Ok(()),
    };
    let mut count = 0;
    let on_token = |id| {
        written = match &tokenizer {
            Some(_) if Some(id) == eos => Ok(()),
            Some(t) => out.write_all(&t.decode_bytes(&[id])),
            None => write!(out, "{}{id}", if count == 0 { "" } else { " " }),
        }
        .and_then(|()| out.flush());
        count += 1;
        if written.is_ok() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    let generation = match &device {
        Device::Cpu => {
            let mut decoder = Decoder::new(&config, &stored, prompt.len() + new_tokens);
            generate(&mut decoder, &prompt, new_tokens, sampling, eos, &mut rng, on_token)?
        }
        Device::Cuda(_) => {
            eprintln!(
                "note: on {}, each new token runs the whole sequence again (no KV cache there yet)",
                device.describe()
            );
            let weights = hf::load(dir)?.1.map(|w| device.place(w));
            let mut seen = Vec::with_capacity(prompt.len() + new_tokens);
            let step = |ids: &[u32]| {
                seen.extend_from_slice(ids);
                next_token_logits(&config, &weights, &seen)
            };
            generate_with(step, &prompt, new_tokens, sampling, eos, &mut rng, on_token)?
        }
    };
    written.and_then(|()| writeln!(out)).map_err(io)?;
    if print_ids && tokenizer.is_some() {
        writeln!(out, "{}", join_ids(&generation.ids)).map_err(io)?;
    }
    eprintln!("{}", summary(prompt.len(), &generation));
    Ok(())
}

/// DIR/tokenizer.json: required for a text prompt; otherwise used when it is there and loads
/// (a file that does not load is noted, and ids are printed instead of text).
fn load_tokenizer(dir: &Path, for_text: bool) -> Result<Option<Tokenizer>> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        if for_text {
            return Err(Error::invalid(
                format!("moe generate: {}", dir.display()),
                "holds no tokenizer.json, so --prompt TEXT cannot be encoded",
            )
            .with_hint(
                "give token ids with --prompt-ids \"1 2 3\", or copy the model's tokenizer.json into it",
            ));
        }
        return Ok(None);
    }
    match Tokenizer::load(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if !for_text => {
            eprintln!("note: printing ids, not text: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn sampling_from(args: &Args) -> Result<Sampling> {
    let mut s = DEFAULT_SAMPLING;
    if let Some(t) = args.number("temperature")? {
        if t < 0.0 {
            return Err(Error::invalid("--temperature", format!("must be ≥ 0 (0 is greedy), got {t}")));
        }
        s.temperature = t as f32;
    }
    if let Some(k) = args.whole("top-k")? {
        s.top_k = k as usize;
    }
    if let Some(p) = args.number("top-p")? {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::invalid("--top-p", format!("must be in (0, 1], got {p}")));
        }
        s.top_p = p as f32;
    }
    Ok(s)
}

/// "1 2 3" (or commas) → ids.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>().map_err(|_| {
                Error::invalid("--prompt-ids", format!("'{s}' is not a token id (a non-negative integer)"))
            })
        })
        .collect()
}

/// A prompt the model can read: not empty, ids in the vocabulary, not past the positions.
fn check_prompt(prompt: &[u32], config: &OlmoeConfig) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::invalid("moe generate: the prompt", "is empty: give at least one token"));
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= config.vocab_size) {
        return Err(Error::invalid(
            "moe generate: the prompt",
            format!("token id {id} is outside the vocabulary (vocab_size {})", config.vocab_size),
        ));
    }
    if prompt.len() > config.max_position_embeddings {
        return Err(Error::invalid(
            "moe generate: the prompt",
            format!(
                "is {} tokens, longer than the {} positions the model reads (max_position_embeddings)",
                prompt.len(),
                config.max_position_embeddings
            ),
        ));
    }
    Ok(())
}

/// One line on stderr: what was loaded, and whether it is all memory-mapped.
fn describe(dir: &Path, config: &OlmoeConfig, stored: &StoredWeights) {
    let (total, active) = param_counts(config);
    let dtype = stored.embed_tokens[0].values().dtype_name();
    let matrices: Vec<_> = stored.named().into_iter().flat_map(|(_, m)| m.iter()).collect();
    let copied = matrices.iter().filter(|m| !m.values().is_borrowed()).count();
    let mapping = match copied {
        0 => "memory-mapped".to_string(),
        n => format!(
            "memory-mapped but for {n} of {} matrices (F16, or unaligned in the file: copied)",
            matrices.len()
        ),
    };
    eprintln!(
        "{}: OLMoE, {} layers, {} experts (top-{}), {} parameters ({} active per token), {dtype}, {mapping}",
        dir.display(),
        config.num_hidden_layers,
        config.num_experts,
        config.num_experts_per_tok,
        thousands(total),
        thousands(active)
    );
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// "prompt 7 tokens | generated 96 tokens | prefill 1,234 tok/s | decode 456.7 tok/s"
pub fn summary(prompt_tokens: usize, g: &Generation) -> String {
    let rate = |tokens: usize, seconds: f64| if seconds > 0.0 { tokens as f64 / seconds } else { 0.0 };
    format!(
        "prompt {prompt_tokens} tokens | generated {} tokens | prefill {:.1} tok/s | decode {:.1} tok/s",
        g.ids.len(),
        rate(prompt_tokens, g.prefill_seconds),
        rate(g.decode_steps, g.decode_seconds)
    )
}
