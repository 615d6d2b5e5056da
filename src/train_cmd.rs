//! `moe train`: flags → a run (trainer.rs), and the run's progress on the terminal: one line
//! that updates in place on a terminal, or a line every few steps when the output is a file.

use crate::cli::{thousands, Args};
use crate::cuda::Device;
use crate::error::{Error, Result};
use crate::init_cmd::param_counts;
use crate::model::config::OlmoeConfig;
use crate::trainer::{self, default_config, Event, RunOptions, Summary};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub const HELP: &str = r"moe train [FLAGS]               start a run (defaults: `make train`'s)
moe train --resume DIR          continue the run in DIR from its last checkpoint
  Pretrains an OLMoE-style MoE on a folder of text documents with OLMoE's recipe: AdamW
  (betas 0.9/0.95, eps 1e-8, weight decay on every parameter), truncated-normal init, linear
  warmup from 0.1·lr, cosine to 0.1·lr, a final linear anneal to 0 on reshuffled data,
  clipping at global norm 1, loss = CE + 0.01·load balance + 0.001·router z-loss.
  Writes DIR: tokenizer.json, data/, config.json + model.safetensors (Hugging Face layout),
  train_state.*, log.jsonl, loss.svg.
  --corpus DIR          .txt documents; hamlet, henry_v, twelfth_night are validation (data/shakespeare)
  --out DIR             the run folder (weights/shakespeare-moe)
  --config FILE         the model's config.json (default: d 256, 4 layers, 16 experts top-4, vocab 4096)
  --dense               the dense baseline: one expert K times as wide (same active parameters)
  --tokenizer FILE      a tokenizer.json (default: train a BPE of the config's vocab_size)
  --init DIR            start from this checkpoint's weights and config
  --seq T               tokens per sample (256)
  --micro-batch B       samples per forward/backward (8)
  --batch-tokens N      tokens per optimizer step, a multiple of B·T (default B·T = 2048: no accumulation)
  --steps N             optimizer steps in all (600)
  --warmup N            warmup steps (30)
  --anneal N            final anneal steps (60)
  --lr X                peak learning rate (2e-3)
  --weight-decay X      (0.1)     --clip X     gradient norm bound (1.0)
  --beta1 X (0.9)  --beta2 X (0.95)  --eps X (1e-8)
  --eval-every N        validate every N steps (50) on the first --eval-tokens (32768) tokens
  --checkpoint-every N  (100)
  --seed S              init and data order (6198)
  --device D            cpu (default) or cuda (GPU 0; cuda:N for GPU N): needs a build with
                        `--features cuda` and a GPU
";

const RUN_FLAGS: &[&str] = &[
    "corpus",
    "out",
    "config",
    "dense",
    "tokenizer",
    "init",
    "seq",
    "micro-batch",
    "batch-tokens",
    "steps",
    "warmup",
    "anneal",
    "lr",
    "weight-decay",
    "clip",
    "beta1",
    "beta2",
    "eps",
    "eval-every",
    "eval-tokens",
    "checkpoint-every",
    "seed",
    "device",
];

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    let device = Device::from_flag(args.value("device")?)?;
    if let Device::Cuda(_) = device {
        eprintln!("moe train: on {}", device.describe());
    }
    let mut progress = Progress::new();
    let summary = match args.value("resume")? {
        Some(dir) => {
            args.check(&["resume", "device"]).map_err(|e| match e {
                Error::Invalid { what, rule, .. } => Error::Invalid {
                    what,
                    rule,
                    hint: Some(
                        "--resume continues with the run's own settings; it takes only --threads and --device".into(),
                    ),
                },
                other => other,
            })?;
            trainer::resume(Path::new(dir), &device, None, &mut |e| progress.show(e))?
        }
        None => {
            args.check(RUN_FLAGS)?;
            let (options, config) = options_from(args)?;
            let (total, active) =
                param_counts(&if options.dense { trainer::dense_twin(&config) } else { config.clone() });
            eprintln!(
                "moe train → {}: {} parameters, {} active per token; {} steps of {} tokens",
                options.out.display(),
                thousands(total),
                thousands(active),
                options.steps,
                thousands(options.batch_tokens)
            );
            trainer::start(options, config, &device, None, &mut |e| progress.show(e))?
        }
    };
    progress.finish();
    if let Some(s) = summary {
        report(&s);
    }
    Ok(())
}

/// The run's options and model config from the flags (defaults: `RunOptions::default`).
pub fn options_from(args: &Args) -> Result<(RunOptions, OlmoeConfig)> {
    let mut o = RunOptions::default();
    let path = |name: &str| -> Result<Option<PathBuf>> { Ok(args.value(name)?.map(PathBuf::from)) };
    let float = |name: &str| args.number(name);
    let steps = |name: &str| args.whole(name);
    o.corpus = path("corpus")?.unwrap_or(o.corpus);
    o.out = path("out")?.unwrap_or(o.out);
    o.tokenizer = path("tokenizer")?;
    o.init = path("init")?;
    o.dense = args.has("dense");
    o.seq = args.count("seq")?.unwrap_or(o.seq);
    o.micro_batch = args.count("micro-batch")?.unwrap_or(o.micro_batch);
    o.batch_tokens = args.count("batch-tokens")?.unwrap_or(o.micro_batch * o.seq);
    o.steps = args.count("steps")?.map_or(o.steps, |n| n as u64);
    o.warmup_steps = steps("warmup")?.unwrap_or(o.warmup_steps);
    o.anneal_steps = steps("anneal")?.unwrap_or(o.anneal_steps);
    o.adamw.lr = float("lr")?.unwrap_or(o.adamw.lr);
    o.adamw.weight_decay = float("weight-decay")?.unwrap_or(o.adamw.weight_decay);
    o.adamw.beta1 = float("beta1")?.unwrap_or(o.adamw.beta1);
    o.adamw.beta2 = float("beta2")?.unwrap_or(o.adamw.beta2);
    o.adamw.eps = float("eps")?.unwrap_or(o.adamw.eps);
    o.max_grad_norm = float("clip")?.map_or(o.max_grad_norm, |x| x as f32);
    o.eval_every = steps("eval-every")?.unwrap_or(o.eval_every);
    o.eval_tokens = args.count("eval-tokens")?.unwrap_or(o.eval_tokens);
    o.checkpoint_every = steps("checkpoint-every")?.unwrap_or(o.checkpoint_every);
    if let Some(seed) = args.value("seed")? {
        o.seed = seed
            .parse()
            .map_err(|_| Error::invalid("--seed", format!("\"{seed}\" is not an unsigned integer")))?;
    }
    if o.init.is_some() && (args.has("config") || o.dense) {
        return Err(Error::invalid("moe train: --init", "takes its model from the checkpoint")
            .with_hint("leave out --config and --dense with --init"));
    }
    let config = match path("config")? {
        Some(file) => OlmoeConfig::load(&file)?,
        None => default_config(),
    };
    Ok((o, config))
}

/// The progress line. On a terminal it is rewritten in place; otherwise a line is printed
/// every twentieth of the run, and at each validation.
struct Progress {
    terminal: bool,
    last_val: Option<f64>,
    line_open: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), last_val: None, line_open: false }
    }

    fn show(&mut self, event: Event<'_>) {
        let mut err = std::io::stderr().lock();
        match event {
            Event::Note(text) => {
                self.close_line(&mut err);
                let _ = writeln!(err, "{text}");
            }
            Event::Step { step, total, stats, lr, tokens_per_s, eta_s } => {
                let val = self.last_val.map_or("-".to_string(), |v| format!("{v:.3}"));
                let (layer, imbalance) = stats.worst_imbalance();
                let line = format!(
                    "step {step}/{total} | loss {:.3} | val {val} | lr {lr:.2e} | {} tok/s | ETA {} | imbalance {imbalance:.2} (layer {layer})",
                    stats.ce,
                    thousands(tokens_per_s as usize),
                    duration(eta_s),
                );
                if self.terminal {
                    let _ = write!(err, "\r{line}\x1b[K");
                    self.line_open = true;
                } else if step.is_multiple_of((total / 20).max(1)) || step == total {
                    let _ = writeln!(err, "{line}");
                }
            }
            Event::Validation { step, loss } => {
                self.last_val = Some(loss);
                self.close_line(&mut err);
                let _ = writeln!(err, "step {step}: validation loss {loss:.4}");
            }
            Event::Checkpoint { .. } => {}
        }
        let _ = err.flush();
    }

    fn close_line(&mut self, err: &mut impl Write) {
        if self.line_open {
            let _ = writeln!(err);
            self.line_open = false;
        }
    }

    fn finish(&mut self) {
        self.close_line(&mut std::io::stderr());
    }
}

fn report(s: &Summary) {
    println!(
        "done: {} steps in {} of training; last training loss {:.3}",
        s.steps,
        duration(s.train_seconds),
        s.last_train_ce
    );
    println!(
        "validation loss {:.4} (the whole split) vs {:.4} for a unigram model: {:.2} nats better",
        s.val_loss,
        s.unigram_val_loss,
        s.unigram_val_loss - s.val_loss
    );
    println!("sample:\n{}", s.sample);
}

/// 3725 → "1h02m05s", 65 → "1m05s", 7 → "7s".
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}
