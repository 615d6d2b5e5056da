//! A training run from start to end, and its resumption: what `moe train` does.
//!
//! ```text
//! weights/<run>/
//!   tokenizer.json            the run's tokenizer (given, or trained on the training split)
//!   data/train.bin, val.bin   the token files training memory-maps (data.rs)
//!   config.json               } the latest checkpoint, in the Hugging Face layout (f32):
//!   model.safetensors         } transformers' OlmoeForCausalLM.from_pretrained reads it
//!   train_state.json          step, data position, options, log length (see `save_state`)
//!   train_state.safetensors   AdamW's moments, by weight name
//!   log.jsonl                 a line per step (losses, lr, tokens/s, expert loads) and per validation
//!   loss.svg                  training and validation loss curves, written at the end
//! ```
//! A checkpoint is several files, so it is committed as a journal: written whole to `.next/`,
//! marked complete, then moved into place file by file. A kill before the mark leaves the
//! previous checkpoint untouched (the partial `.next/` is dropped on resume); a kill after it
//! is finished on resume ([`roll_forward`]). Either way one whole checkpoint survives.
//!
//! Resuming restores the weights (f32, exactly), AdamW's step count and moments, the phase
//! and position of the data stream, and truncates the log to the checkpoint's length: the
//! steps after a resume repeat bit for bit those of an uninterrupted run (same thread count).

use crate::cuda::Device;
use crate::data::{self, Batches, Position, TokenFile};
use crate::error::{Error, Result};
use crate::json::{self, Value};
use crate::model::config::OlmoeConfig;
use crate::model::decode::{borrow_tensors, Decoder};
use crate::model::hf;
use crate::model::olmoe::{HfName, Weights};
use crate::optim::{AdamW, AdamWConfig, AdamWState, Schedule};
use crate::plot::{loss_svg, Curve};
use crate::rng::Rng;
use crate::safetensors::{write_f32, SafeTensors};
use crate::sample::{generate, room, Sampling};
use crate::tensor::Tensor;
use crate::tokenizer::train::SPECIAL_TOKENS;
use crate::tokenizer::Tokenizer;
use crate::train::{train_step, validation_loss, StepStats};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The files of one checkpoint, in the order they are moved into place.
const CHECKPOINT_FILES: [&str; 4] =
    ["config.json", "model.safetensors", "train_state.safetensors", "train_state.json"];
/// Where a checkpoint is written before it is committed, and the mark that commits it.
const NEXT: &str = ".next";
const COMPLETE: &str = "COMPLETE";
/// Salt for the anneal phase's data order: OLMoE's annealing run reshuffled with a new seed.
const ANNEAL_SEED_SALT: u64 = 0x616e_6e65_616c; // "anneal"
/// What the run prints a sample from at the end.
const SAMPLE_PROMPT: &str = "Romeo.\n";
const SAMPLE_TOKENS: usize = 96;

/// Everything that defines a run besides the model's config.json. Saved in
/// `train_state.json`, so `--resume` continues with exactly these.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// A folder of `.txt` documents (data.rs: the validation plays must be among them).
    pub corpus: PathBuf,
    /// The run folder.
    pub out: PathBuf,
    /// A tokenizer.json to use; None trains one on the training split, `vocab_size` entries.
    pub tokenizer: Option<PathBuf>,
    /// A checkpoint folder to start from instead of a random init.
    pub init: Option<PathBuf>,
    /// Whether the model is the dense baseline (see [`dense_twin`]).
    pub dense: bool,
    /// T: tokens per sample.
    pub seq: usize,
    /// Samples per micro-batch (one forward + backward).
    pub micro_batch: usize,
    /// Tokens per optimizer step: a whole number of micro-batches (gradient accumulation).
    pub batch_tokens: usize,
    /// Optimizer steps in all, the anneal included.
    pub steps: u64,
    pub warmup_steps: u64,
    /// The final steps whose learning rate falls linearly to 0, on reshuffled data.
    pub anneal_steps: u64,
    /// AdamW; `lr` is the peak learning rate.
    pub adamw: AdamWConfig,
    pub max_grad_norm: f32,
    /// Validate every N steps (and after the last) on the first `eval_tokens` of the
    /// validation split; the whole split is scored once at the end.
    pub eval_every: u64,
    pub eval_tokens: usize,
    pub checkpoint_every: u64,
    /// Seeds the init and the data order.
    pub seed: u64,
}

impl Default for RunOptions {
    /// `make train`'s run: sized for a 2-core machine (about 10 minutes).
    fn default() -> RunOptions {
        RunOptions {
            corpus: PathBuf::from("data/shakespeare"),
            out: PathBuf::from("weights/shakespeare-moe"),
            tokenizer: None,
            init: None,
            dense: false,
            seq: 256,
            micro_batch: 8,
            batch_tokens: 2048,
            steps: 600,
            warmup_steps: 30,
            anneal_steps: 60,
            adamw: AdamWConfig { lr: 2e-3, ..AdamWConfig::default() },
            max_grad_norm: 1.0,
            eval_every: 50,
            eval_tokens: 32768,
            checkpoint_every: 100,
            seed: 6198,
        }
    }
}

/// The default model: OLMoE's architecture at a size a 2-core CPU trains in minutes.
pub fn default_config() -> OlmoeConfig {
    OlmoeConfig {
        vocab_size: 4096,
        hidden_size: 256,
        intermediate_size: 256,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        num_experts: 16,
        num_experts_per_tok: 4,
        max_position_embeddings: 256,
        ..OlmoeConfig::default()
    }
}

/// The dense baseline of an MoE config: one expert, always chosen (its router weight is
/// softmax over one logit = 1), K times as wide, so the active parameters match up to the
/// router's. No aux losses: there is nothing to balance. It is still an OLMoE checkpoint,
/// which transformers loads.
pub fn dense_twin(config: &OlmoeConfig) -> OlmoeConfig {
    OlmoeConfig {
        intermediate_size: config.intermediate_size * config.num_experts_per_tok,
        num_experts: 1,
        num_experts_per_tok: 1,
        router_aux_loss_coef: 0.0,
        router_z_loss_coef: 0.0,
        ..config.clone()
    }
}

impl RunOptions {
    /// Micro-batches per optimizer step.
    pub fn accumulation(&self) -> usize {
        self.batch_tokens / (self.micro_batch * self.seq)
    }

    pub fn schedule(&self) -> Result<Schedule> {
        Schedule::olmoe(self.adamw.lr, self.warmup_steps, self.steps - self.anneal_steps, self.anneal_steps)
    }

    /// Errors for sizes that do not fit together (with `config`'s).
    pub fn check(&self, config: &OlmoeConfig) -> Result<()> {
        let bad = |what: &str, rule: String| Err(Error::invalid(format!("moe train: {what}"), rule));
        if self.seq < 2 {
            return bad("--seq", format!("{} leaves no next token to predict (at least 2)", self.seq));
        }
        if self.seq > config.max_position_embeddings {
            return Err(Error::invalid(
                "moe train: --seq",
                format!(
                    "{} is longer than the model's max_position_embeddings {}",
                    self.seq, config.max_position_embeddings
                ),
            )
            .with_hint("use a shorter --seq, or a config with a larger max_position_embeddings"));
        }
        let micro_tokens = self.micro_batch * self.seq;
        if self.batch_tokens < micro_tokens || !self.batch_tokens.is_multiple_of(micro_tokens) {
            return Err(Error::invalid(
                "moe train: --batch-tokens",
                format!(
                    "{} is not a whole number of micro-batches of {} × {} = {micro_tokens} tokens",
                    self.batch_tokens, self.micro_batch, self.seq
                ),
            )
            .with_hint(format!("use a multiple of {micro_tokens}")));
        }
        if self.anneal_steps >= self.steps {
            return bad(
                "--anneal",
                format!("{} anneal steps leave none of {} for the main phase", self.anneal_steps, self.steps),
            );
        }
        if self.warmup_steps > self.steps - self.anneal_steps {
            return bad(
                "--warmup",
                format!(
                    "{} warmup steps do not fit the {} steps before the anneal",
                    self.warmup_steps,
                    self.steps - self.anneal_steps
                ),
            );
        }
        for (name, v) in [("--eval-every", self.eval_every), ("--checkpoint-every", self.checkpoint_every)] {
            if v == 0 {
                return bad(name, "must be at least 1".into());
            }
        }
        if self.eval_tokens < self.seq {
            return bad(
                "--eval-tokens",
                format!("{} is less than one sample of {} tokens", self.eval_tokens, self.seq),
            );
        }
        if !(self.max_grad_norm > 0.0 && self.max_grad_norm.is_finite()) {
            return bad(
                "--clip",
                format!("the gradient norm bound must be positive, got {}", self.max_grad_norm),
            );
        }
        let a = &self.adamw;
        if !(a.weight_decay >= 0.0
            && (0.0..1.0).contains(&a.beta1)
            && (0.0..1.0).contains(&a.beta2)
            && a.eps > 0.0)
        {
            return bad("AdamW", format!("needs weight_decay ≥ 0, betas in [0, 1), eps > 0; got {a:?}"));
        }
        self.schedule().map(|_| ())
    }

    pub fn to_json(&self) -> Value {
        let path = |p: &Path| Value::String(p.display().to_string());
        let opt_path = |p: &Option<PathBuf>| p.as_deref().map_or(Value::Null, path);
        let int = |n: u64| Value::Number(n as f64);
        let float = |x: f64| Value::Float(x);
        Value::Object(vec![
            ("corpus".into(), path(&self.corpus)),
            ("out".into(), path(&self.out)),
            ("tokenizer".into(), opt_path(&self.tokenizer)),
            ("init".into(), opt_path(&self.init)),
            ("dense".into(), Value::Bool(self.dense)),
            ("seq".into(), int(self.seq as u64)),
            ("micro_batch".into(), int(self.micro_batch as u64)),
            ("batch_tokens".into(), int(self.batch_tokens as u64)),
            ("steps".into(), int(self.steps)),
            ("warmup_steps".into(), int(self.warmup_steps)),
            ("anneal_steps".into(), int(self.anneal_steps)),
            ("lr".into(), float(self.adamw.lr)),
            ("beta1".into(), float(self.adamw.beta1)),
            ("beta2".into(), float(self.adamw.beta2)),
            ("eps".into(), float(self.adamw.eps)),
            ("weight_decay".into(), float(self.adamw.weight_decay)),
            ("max_grad_norm".into(), float(self.max_grad_norm as f64)),
            ("eval_every".into(), int(self.eval_every)),
            ("eval_tokens".into(), int(self.eval_tokens as u64)),
            ("checkpoint_every".into(), int(self.checkpoint_every)),
            // A string: a u64 seed need not fit an f64 exactly.
            ("seed".into(), Value::String(self.seed.to_string())),
        ])
    }

    pub fn from_json(v: &Value, file: &str) -> Result<RunOptions> {
        let field =
            |key: &str| v.get(key).ok_or_else(|| Error::invalid(format!("{file}: options.{key}"), "missing"));
        let wrong = |key: &str, want: &str| {
            Error::invalid(format!("{file}: options.{key}"), format!("expected {want}"))
        };
        let int = |key: &str| field(key)?.as_u64().ok_or_else(|| wrong(key, "a non-negative integer"));
        let float = |key: &str| field(key)?.as_f64().ok_or_else(|| wrong(key, "a number"));
        let path = |key: &str| field(key)?.as_str().map(PathBuf::from).ok_or_else(|| wrong(key, "a path"));
        let opt_path = |key: &str| match field(key)? {
            Value::Null => Ok(None),
            p => p.as_str().map(|s| Some(PathBuf::from(s))).ok_or_else(|| wrong(key, "a path or null")),
        };
        Ok(RunOptions {
            corpus: path("corpus")?,
            out: path("out")?,
            tokenizer: opt_path("tokenizer")?,
            init: opt_path("init")?,
            dense: field("dense")?.as_bool().ok_or_else(|| wrong("dense", "true or false"))?,
            seq: int("seq")? as usize,
            micro_batch: int("micro_batch")? as usize,
            batch_tokens: int("batch_tokens")? as usize,
            steps: int("steps")?,
            warmup_steps: int("warmup_steps")?,
            anneal_steps: int("anneal_steps")?,
            adamw: AdamWConfig {
                lr: float("lr")?,
                beta1: float("beta1")?,
                beta2: float("beta2")?,
                eps: float("eps")?,
                weight_decay: float("weight_decay")?,
            },
            max_grad_norm: float("max_grad_norm")? as f32,
            eval_every: int("eval_every")?,
            eval_tokens: int("eval_tokens")? as usize,
            checkpoint_every: int("checkpoint_every")?,
            seed: field("seed")?
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| wrong("seed", "a u64 as a string"))?,
        })
    }
}

/// What the run reports as it goes (the command prints these; tests ignore them).
pub enum Event<'a> {
    /// Preparation: tokenizer, data, model.
    Note(String),
    Step {
        step: u64,
        total: u64,
        stats: &'a StepStats,
        lr: f32,
        tokens_per_s: f64,
        eta_s: f64,
    },
    Validation {
        step: u64,
        loss: f64,
    },
    Checkpoint {
        step: u64,
    },
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    /// The training CE of the last step.
    pub last_train_ce: f32,
    /// Cross-entropy on the whole validation split, and what a unigram model (the training
    /// split's token frequencies, add-one smoothed) scores on the same tokens.
    pub val_loss: f64,
    pub unigram_val_loss: f64,
    /// Seconds spent in training steps, over every session of the run.
    pub train_seconds: f64,
    pub sample: String,
}

/// Starts a new run in `options.out`, training on `device`; with `stop_after`, returns after
/// that step's checkpoint as if killed there (for tests of resuming).
pub fn start(
    options: RunOptions,
    config: OlmoeConfig,
    device: &Device,
    stop_after: Option<u64>,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Option<Summary>> {
    let dir = options.out.clone();
    if dir.join("train_state.json").exists() || dir.join(NEXT).exists() {
        return Err(Error::invalid(format!("run folder {}", dir.display()), "already holds a run")
            .with_hint(format!(
                "continue it with `moe train --resume {}`, or pick another --out",
                dir.display()
            )));
    }
    fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;

    // The starting weights decide the config when they come from a checkpoint.
    let (mut config, weights) = match &options.init {
        Some(init) => {
            let (config, weights) = hf::load(init)?;
            on(Event::Note(format!("starting from the weights in {}", init.display())));
            (config, Some(weights))
        }
        None if options.dense => (dense_twin(&config), None),
        None => (config, None),
    };
    let tokenizer_file = options.tokenizer.clone().or_else(|| {
        let beside_init = options.init.as_ref().map(|d| d.join("tokenizer.json"));
        beside_init.filter(|p| p.exists())
    });
    let tokenizer = match &tokenizer_file {
        Some(path) => Tokenizer::load(path)?,
        None => {
            let documents = data::read_corpus(&options.corpus)?;
            let clock = Instant::now();
            let tokenizer = crate::tokenizer::train::train(
                &data::training_texts(&documents),
                config.vocab_size,
                &SPECIAL_TOKENS,
            );
            on(Event::Note(format!(
                "trained a {}-token BPE tokenizer on the training split ({:.1} s)",
                tokenizer.vocab_size(),
                clock.elapsed().as_secs_f64()
            )));
            tokenizer
        }
    };
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::invalid(
            "moe train: model config",
            format!(
                "vocab_size {} is smaller than the tokenizer's {} tokens",
                config.vocab_size,
                tokenizer.vocab_size()
            ),
        )
        .with_hint("use a config whose vocab_size is at least the tokenizer's"));
    }
    config.eos_token_id = tokenizer.token_id(data::END_OF_TEXT);
    config.pad_token_id = tokenizer.token_id(SPECIAL_TOKENS[1]);
    config.validate("moe train: model config")?;
    options.check(&config)?;
    tokenizer.save(&dir.join("tokenizer.json"))?;

    let report = data::prepare(&options.corpus, &tokenizer, &dir.join("data"))?;
    on(Event::Note(format!("data: {report}")));
    let weights = weights.unwrap_or_else(|| Weights::init(&config, &mut Rng::new(options.seed)));
    let optimizer = AdamW::new(options.adamw);
    let mut run = Run::new(options, config, weights, device, optimizer, RunState::fresh())?;
    File::create(dir.join("log.jsonl"))
        .map_err(|source| Error::Io { path: dir.join("log.jsonl"), source })?;
    run.save_checkpoint()?;
    run.go(stop_after, on)
}

/// Continues the run in `dir` from its last checkpoint, training on `device`.
pub fn resume(
    dir: &Path,
    device: &Device,
    stop_after: Option<u64>,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Option<Summary>> {
    if !dir.join("train_state.json").exists() && !dir.join(NEXT).join(COMPLETE).exists() {
        return Err(Error::invalid(
            format!("moe train --resume {}", dir.display()),
            "holds no train_state.json",
        )
        .with_hint("start a run with `moe train --out DIR` first"));
    }
    roll_forward(dir)?;
    let state_path = dir.join("train_state.json");
    let file = state_path.display().to_string();
    let text =
        fs::read_to_string(&state_path).map_err(|source| Error::Io { path: state_path.clone(), source })?;
    let value = json::parse(&text).map_err(|e| e.in_file(&state_path))?;
    let options_value = value.get("options").ok_or_else(|| Error::invalid(&file, "has no \"options\""))?;
    let mut options = RunOptions::from_json(options_value, &file)?;
    options.out = dir.to_path_buf(); // the folder may have moved since
    let state = RunState::from_json(&value, &file)?;
    let (config, weights) = hf::load(dir)?;
    let moments = SafeTensors::open(&dir.join("train_state.safetensors"))?;
    let names = param_names(&weights);
    let read = |kind: &str| -> Result<Vec<Tensor>> {
        if state.adam_steps == 0 {
            return Ok(Vec::new());
        }
        names.iter().map(|n| moments.to_tensor(&format!("{kind}.{n}"))).collect()
    };
    let adam =
        AdamWState { step: state.adam_steps, exp_avg: read("exp_avg")?, exp_avg_sq: read("exp_avg_sq")? };
    let optimizer = AdamW::from_state(options.adamw, adam)?;
    options.check(&config)?;
    // Drop what the log gained after the checkpoint: those steps are about to be redone.
    let log = dir.join("log.jsonl");
    OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(state.log_bytes))
        .map_err(|source| Error::Io { path: log.clone(), source })?;
    on(Event::Note(format!("resuming {} at step {} of {}", dir.display(), state.step, options.steps)));
    Run::new(options, config, weights, device, optimizer, state)?.go(stop_after, on)
}

/// Where a run stands: what `train_state.json` holds besides the options.
#[derive(Clone, Debug)]
struct RunState {
    /// Optimizer steps done.
    step: u64,
    /// AdamW's t (equals `step` unless the run started from a checkpoint's moments).
    adam_steps: u64,
    /// Whether the data stream is the anneal phase's reshuffled one.
    annealing: bool,
    /// The next sample of the data stream.
    position: Position,
    /// Bytes of log.jsonl that belong to the steps up to `step`.
    log_bytes: u64,
    train_seconds: f64,
}

impl RunState {
    fn fresh() -> RunState {
        RunState {
            step: 0,
            adam_steps: 0,
            annealing: false,
            position: Position { epoch: 0, index: 0 },
            log_bytes: 0,
            train_seconds: 0.0,
        }
    }

    fn from_json(v: &Value, file: &str) -> Result<RunState> {
        let int = |key: &str| {
            v.get(key).and_then(Value::as_u64).ok_or_else(|| {
                Error::invalid(format!("{file}: {key}"), "missing, or not a non-negative integer")
            })
        };
        Ok(RunState {
            step: int("step")?,
            adam_steps: int("adam_steps")?,
            annealing: v
                .get("annealing")
                .and_then(Value::as_bool)
                .ok_or_else(|| Error::invalid(format!("{file}: annealing"), "missing, or not true/false"))?,
            position: Position { epoch: int("data_epoch")?, index: int("data_index")? as usize },
            log_bytes: int("log_bytes")?,
            train_seconds: v.get("train_seconds").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }
}

/// A run in memory: the model, the optimizer and the data stream.
struct Run {
    options: RunOptions,
    config: OlmoeConfig,
    weights: Weights<Tensor>,
    optimizer: AdamW,
    state: RunState,
    schedule: Schedule,
    batches: Batches,
    val: TokenFile,
}

impl Run {
    /// The run with its weights on `device` (the optimizer's moments follow them there).
    fn new(
        options: RunOptions,
        config: OlmoeConfig,
        weights: Weights<Tensor>,
        device: &Device,
        optimizer: AdamW,
        state: RunState,
    ) -> Result<Run> {
        let data_dir = options.out.join("data");
        let batches = open_batches(&options, &data_dir, state.annealing, state.position)?;
        let val = TokenFile::open(&data_dir.join("val.bin"))?;
        // Fails early when the validation split holds no whole sample.
        let _ = data::validation_batches(val.tokens(), options.seq, options.micro_batch)?;
        let schedule = options.schedule()?;
        let weights = weights.map(|w| device.place(w)); // on the host: the same storage
        Ok(Run { options, config, weights, optimizer, state, schedule, batches, val })
    }

    /// Trains to the last step (or to `stop_after`), then scores and samples the model.
    fn go(mut self, stop_after: Option<u64>, on: &mut dyn FnMut(Event<'_>)) -> Result<Option<Summary>> {
        let total = self.options.steps;
        let main_steps = total - self.options.anneal_steps;
        let step_tokens = self.options.batch_tokens as f64;
        let session = Instant::now();
        let (session_start_step, mut last_ce) = (self.state.step, f32::NAN);
        while self.state.step < total {
            if self.state.step == main_steps && !self.state.annealing {
                // OLMoE's anneal: the data reshuffled under a new seed, from its start.
                self.state.annealing = true;
                let data_dir = self.options.out.join("data");
                self.batches = open_batches(&self.options, &data_dir, true, Position { epoch: 0, index: 0 })?;
            }
            let micro: Vec<Vec<u32>> =
                (0..self.options.accumulation()).map(|_| self.batches.next_batch().ids).collect();
            let lr = self.schedule.lr(self.state.step);
            let clock = Instant::now();
            let outcome = train_step(
                &self.config,
                &mut self.weights,
                &mut self.optimizer,
                &micro,
                self.options.seq,
                lr,
                self.options.max_grad_norm,
            );
            let seconds = clock.elapsed().as_secs_f64();
            let stats = outcome.map_err(|bad| self.non_finite(&bad))?;
            self.state.step += 1;
            self.state.adam_steps = self.optimizer.steps();
            self.state.train_seconds += seconds;
            last_ce = stats.ce;
            let step = self.state.step;
            let tokens_per_s = step_tokens / seconds;
            self.log(&step_line(step, &stats, lr, tokens_per_s))?;
            let done_here = (step - session_start_step) as f64;
            let eta_s = session.elapsed().as_secs_f64() / done_here * (total - step) as f64;
            on(Event::Step { step, total, stats: &stats, lr, tokens_per_s, eta_s });
            if step.is_multiple_of(self.options.eval_every) || step == total {
                let loss = self.validate(Some(self.options.eval_tokens));
                self.log(&Value::Object(vec![
                    ("step".into(), Value::Number(step as f64)),
                    ("val_loss".into(), Value::Float(loss)),
                ]))?;
                on(Event::Validation { step, loss });
            }
            if step.is_multiple_of(self.options.checkpoint_every) || step == total {
                self.save_checkpoint()?;
                on(Event::Checkpoint { step });
            }
            if stop_after == Some(step) && step < total {
                return Ok(None);
            }
        }
        self.finish(last_ce, on).map(Some)
    }

    /// The end of a run: the whole validation split, the unigram baseline, the loss curves
    /// and a sample.
    fn finish(&self, last_train_ce: f32, on: &mut dyn FnMut(Event<'_>)) -> Result<Summary> {
        on(Event::Note("scoring the whole validation split".into()));
        let val_loss = self.validate(None);
        let train = TokenFile::open(&self.options.out.join("data").join("train.bin"))?;
        let unigram_val_loss =
            unigram_loss(train.tokens(), self.val.tokens(), self.options.seq, self.config.vocab_size);
        self.write_svg()?;
        let tokenizer = Tokenizer::load(&self.options.out.join("tokenizer.json"))?;
        let prompt = tokenizer.encode(SAMPLE_PROMPT);
        let sampling = Sampling { temperature: 0.8, top_k: 40, top_p: 1.0 };
        let mut rng = Rng::new(self.options.seed);
        let host = self.host_weights();
        let weights = borrow_tensors(&host);
        let new_tokens = SAMPLE_TOKENS.min(room(self.config.max_position_embeddings, prompt.len()));
        let config = self.config.for_evaluation();
        let mut decoder = Decoder::new(&config, &weights, prompt.len() + new_tokens);
        let eos = self.config.eos_token_id;
        let generation = generate(&mut decoder, &prompt, new_tokens, sampling, eos, &mut rng, |_| {
            ControlFlow::Continue(())
        })?;
        let ids = [prompt, generation.ids].concat();
        Ok(Summary {
            steps: self.state.step,
            last_train_ce,
            val_loss,
            unigram_val_loss,
            train_seconds: self.state.train_seconds,
            sample: tokenizer.decode(&ids),
        })
    }

    /// Mean CE on the first `tokens` of the validation split (all of it for None).
    fn validate(&self, tokens: Option<usize>) -> f64 {
        let (seq, micro) = (self.options.seq, self.options.micro_batch);
        let all = data::validation_batches(self.val.tokens(), seq, micro).expect("checked in Run::new");
        let batches = tokens.map_or(usize::MAX, |t| t.div_ceil(seq * micro));
        validation_loss(&self.config, &self.weights, all.take(batches), seq)
    }

    fn non_finite(&self, stats: &StepStats) -> Error {
        let step = self.state.step + 1;
        let last = self.state.step / self.options.checkpoint_every * self.options.checkpoint_every;
        Error::invalid(
            format!("moe train: step {step}"),
            format!(
                "the loss is {} (cross-entropy {}, gradient norm {}); training stopped before updating the weights",
                stats.loss, stats.ce, stats.grad_norm
            ),
        )
        .with_hint(format!(
            "the last good checkpoint (step {last}) is in {}; a lower --lr or a smaller --clip may help",
            self.options.out.display()
        ))
    }

    fn log(&mut self, line: &Value) -> Result<()> {
        let path = self.options.out.join("log.jsonl");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io { path: path.clone(), source })?;
        file.write_all((line.to_json() + "\n").as_bytes())
            .map_err(|source| Error::Io { path: path.clone(), source })?;
        self.state.log_bytes = file.metadata().map_err(|source| Error::Io { path, source })?.len();
        Ok(())
    }

    /// Writes the checkpoint of the current step: to `.next/`, marked complete, moved in place.
    fn save_checkpoint(&mut self) -> Result<()> {
        let dir = &self.options.out;
        let next = dir.join(NEXT);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        if next.exists() {
            fs::remove_dir_all(&next).map_err(io(&next))?;
        }
        fs::create_dir_all(&next).map_err(io(&next))?;
        hf::save(&next, &self.config, &self.host_weights())?;
        let names = param_names(&self.weights);
        let adam = self.optimizer.state();
        let mut moments: Vec<(String, &Tensor)> = Vec::new();
        for (kind, tensors) in [("exp_avg", &adam.exp_avg), ("exp_avg_sq", &adam.exp_avg_sq)] {
            moments.extend(names.iter().zip(tensors).map(|(n, t)| (format!("{kind}.{n}"), t)));
        }
        let refs: Vec<(&str, &Tensor)> = moments.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        write_f32(&next.join("train_state.safetensors"), &refs, &[])?;
        let state = self.state_json().to_json_pretty() + "\n";
        let state_path = next.join("train_state.json");
        fs::write(&state_path, state).map_err(io(&state_path))?;
        File::open(&state_path).and_then(|f| f.sync_all()).map_err(io(&state_path))?;
        let mark = next.join(COMPLETE);
        File::create(&mark).and_then(|f| f.sync_all()).map_err(io(&mark))?;
        roll_forward(dir)
    }

    /// The weights in host memory (no copy when they live there).
    fn host_weights(&self) -> Weights<Tensor> {
        self.weights.map(Tensor::to_host)
    }

    fn state_json(&self) -> Value {
        let s = &self.state;
        let int = |n: u64| Value::Number(n as f64);
        Value::Object(vec![
            ("format".into(), Value::String("moe train state".into())),
            ("version".into(), int(1)),
            ("step".into(), int(s.step)),
            ("adam_steps".into(), int(s.adam_steps)),
            ("annealing".into(), Value::Bool(s.annealing)),
            ("data_epoch".into(), int(self.batches.position().epoch)),
            ("data_index".into(), int(self.batches.position().index as u64)),
            ("log_bytes".into(), int(s.log_bytes)),
            ("train_seconds".into(), Value::Float(s.train_seconds)),
            ("options".into(), self.options.to_json()),
        ])
    }

    /// log.jsonl → loss.svg.
    fn write_svg(&self) -> Result<()> {
        let log_path = self.options.out.join("log.jsonl");
        let text =
            fs::read_to_string(&log_path).map_err(|source| Error::Io { path: log_path.clone(), source })?;
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for line in text.lines() {
            let Ok(v) = json::parse(line) else { continue };
            let step = v.get("step").and_then(Value::as_f64).unwrap_or(f64::NAN);
            if let Some(ce) = v.get("ce").and_then(Value::as_f64) {
                train.push((step, ce));
            }
            if let Some(loss) = v.get("val_loss").and_then(Value::as_f64) {
                val.push((step, loss));
            }
        }
        let title = format!("{}: cross-entropy", self.options.out.display());
        let svg = loss_svg(
            &title,
            &[
                Curve { label: "train", color: "#1f77b4", points: &train },
                Curve { label: "validation", color: "#d62728", points: &val },
            ],
        );
        let path = self.options.out.join("loss.svg");
        fs::write(&path, svg).map_err(|source| Error::Io { path, source })
    }
}

/// The training stream of `phase`, continuing from `position`.
fn open_batches(
    options: &RunOptions,
    data_dir: &Path,
    annealing: bool,
    position: Position,
) -> Result<Batches> {
    let seed = if annealing { options.seed ^ ANNEAL_SEED_SALT } else { options.seed };
    let file = TokenFile::open(&data_dir.join("train.bin"))?;
    Batches::from_position(file, options.seq, options.micro_batch, seed, position)
}

/// Finishes a checkpoint committed to `.next/` (moves its files into place), or drops one
/// that was never marked complete.
pub fn roll_forward(dir: &Path) -> Result<()> {
    let next = dir.join(NEXT);
    if !next.exists() {
        return Ok(());
    }
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    if next.join(COMPLETE).exists() {
        for name in CHECKPOINT_FILES {
            let from = next.join(name);
            if from.exists() {
                fs::rename(&from, dir.join(name)).map_err(io(from.clone()))?;
            }
        }
        fs::remove_file(next.join(COMPLETE)).map_err(io(next.join(COMPLETE)))?;
    }
    fs::remove_dir_all(&next).map_err(io(next))
}

/// One name per weight tensor (experts fused: `….mlp.experts.gate_proj.weight`), in
/// `Weights::named` order: the keys of AdamW's moments in train_state.safetensors.
fn param_names(weights: &Weights<Tensor>) -> Vec<String> {
    weights
        .named()
        .into_iter()
        .map(|(name, _)| match name {
            HfName::Single(name) => name,
            HfName::Experts { prefix, suffix } => format!("{prefix}.{suffix}"),
        })
        .collect()
}

/// A log.jsonl line for a step.
fn step_line(step: u64, s: &StepStats, lr: f32, tokens_per_s: f64) -> Value {
    let f = |x: f32| Value::Float(x as f64);
    let loads = s.expert_load.iter().map(|l| Value::Array(l.iter().map(|&x| f(x)).collect())).collect();
    Value::Object(vec![
        ("step".into(), Value::Number(step as f64)),
        ("loss".into(), f(s.loss)),
        ("ce".into(), f(s.ce)),
        ("aux".into(), f(s.aux)),
        ("z".into(), f(s.z)),
        ("grad_norm".into(), f(s.grad_norm)),
        ("lr".into(), f(lr)),
        ("tokens_per_s".into(), Value::Float(tokens_per_s)),
        ("expert_load".into(), Value::Array(loads)),
    ])
}

/// The cross-entropy of a unigram model on the validation targets: p(t) = (count_t + 1) /
/// (N + V) from the training tokens, scored on the tokens `validation_loss` predicts (every
/// token of a sample but its first).
pub fn unigram_loss(train: &[u32], val: &[u32], seq: usize, vocab: usize) -> f64 {
    let mut counts = vec![0u64; vocab];
    train.iter().for_each(|&t| counts[t as usize] += 1);
    let denominator = (train.len() + vocab) as f64;
    let (mut sum, mut n) = (0.0, 0usize);
    for sample in val.chunks_exact(seq) {
        for &t in &sample[1..] {
            sum -= ((counts[t as usize] + 1) as f64 / denominator).ln();
            n += 1;
        }
    }
    sum / n.max(1) as f64
}
