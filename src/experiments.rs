//! `moe experiments` (`make experiments`): small-scale versions of the OLMoE paper's ablations
//! (SPEC.md §2.4) on the bundled corpus, each a pair of short runs with equal active compute,
//! and a report: weights/experiments/REPORT.md with the final validation losses, tokens/s and
//! loss curves. A finished run keeps its result.json (steps, config, outcome) and is reused
//! while they match, so an interrupted `make experiments` restarts at the unfinished run.
//! ```text
//! MoE vs dense         16 experts top-4, width F      vs  one expert 4F wide (the dense twin)
//! granularity          8 experts top-1, width 4F      vs  32 experts top-4, width F
//! token vs expert      16 experts top-4, token choice vs  expert choice, capacity factor 1
//!   choice                                                (the same expert rows on average)
//! shared expert        16 experts top-4               vs  15 routed top-3 + a shared one of width F
//! upcycling            8 experts top-1 of width 4F, from scratch  vs  upcycled from the dense
//!                      run above (its 4F MLP copied into every expert), same steps
//! ```

use crate::cli::{thousands, Args};
use crate::error::{Error, Result};
use crate::init_cmd::param_counts;
use crate::json::{self, Value};
use crate::model::config::{OlmoeConfig, Routing};
use crate::plot::{loss_svg, Curve};
use crate::trainer::{self, dense_twin, Event, RunOptions};
use crate::upcycle::upcycle;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const HELP: &str = r"moe experiments [--steps N] [--out DIR]
  Runs small versions of the OLMoE paper's ablations on data/shakespeare, each a pair of
  short runs with equal active compute (MoE vs dense, 8 experts top-1 vs 32 top-4, token vs
  expert choice, a shared expert, upcycled vs from scratch), and writes DIR/REPORT.md
  (default weights/experiments) with final validation losses, tokens/s and loss curves.
  Finished runs are kept and reused. --steps: steps per run (300)
";

const DEFAULT_STEPS: u64 = 300;
/// The experiments' model: make train's at half the width.
fn base() -> OlmoeConfig {
    OlmoeConfig {
        hidden_size: 128,
        intermediate_size: 128,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        ..trainer::default_config()
    }
}

/// One run of an experiment: a name, its config, and (upcycling) the dense run it starts from.
struct Run {
    name: &'static str,
    label: &'static str,
    config: OlmoeConfig,
    upcycled_from: Option<&'static str>,
}

/// The five pairs: (experiment, what the paper found, run A, run B).
fn experiments() -> Vec<(&'static str, &'static str, Run, Run)> {
    let b = base();
    let f = b.intermediate_size;
    let with = |num_experts, k, width| OlmoeConfig {
        num_experts,
        num_experts_per_tok: k,
        intermediate_size: width,
        ..base()
    };
    vec![
        (
            "MoE vs dense",
            "MoE reaches the dense model's loss with about 3x fewer tokens (Fig. 4)",
            Run { name: "moe", label: "16 experts top-4", config: with(16, 4, f), upcycled_from: None },
            Run {
                name: "dense",
                label: "dense (one expert, 4F)",
                config: dense_twin(&with(16, 4, f)),
                upcycled_from: None,
            },
        ),
        (
            "granularity",
            "32 experts top-4 beat 8 experts top-1, by about 10% on downstream tasks (Fig. 5)",
            Run {
                name: "e8-top1",
                label: "8 experts top-1, 4F wide",
                config: with(8, 1, 4 * f),
                upcycled_from: None,
            },
            Run {
                name: "e32-top4",
                label: "32 experts top-4, F wide",
                config: with(32, 4, f),
                upcycled_from: None,
            },
        ),
        (
            "token vs expert choice",
            "token choice better on every task; expert choice ~20% faster (Fig. 7)",
            Run { name: "moe", label: "token choice", config: with(16, 4, f), upcycled_from: None },
            Run {
                name: "expert-choice",
                label: "expert choice, capacity factor 1",
                config: OlmoeConfig {
                    routing: Routing::ExpertChoice { capacity_factor: 1.0 },
                    ..with(16, 4, f)
                },
                upcycled_from: None,
            },
        ),
        (
            "shared expert",
            "similar, the shared expert slightly worse; not used (Fig. 6)",
            Run { name: "moe", label: "16 routed top-4", config: with(16, 4, f), upcycled_from: None },
            Run {
                name: "shared",
                label: "15 routed top-3 + 1 shared",
                config: OlmoeConfig { shared_expert_intermediate_size: Some(f), ..with(15, 3, f) },
                upcycled_from: None,
            },
        ),
        (
            "upcycling",
            "upcycling leads early; from scratch catches up after ~500B tokens (Fig. 8)",
            Run { name: "e8-top1", label: "from scratch", config: with(8, 1, 4 * f), upcycled_from: None },
            Run {
                name: "upcycled",
                label: "upcycled from the dense run",
                config: with(8, 1, 4 * f),
                upcycled_from: Some("dense"),
            },
        ),
    ]
}

/// What a finished run leaves in result.json.
struct Outcome {
    val_loss: f64,
    tokens_per_s: f64,
    /// (step, validation loss) from log.jsonl.
    curve: Vec<(f64, f64)>,
}

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["steps", "out"])?;
    let steps = args.count("steps")?.map_or(DEFAULT_STEPS, |s| s as u64);
    let out = PathBuf::from(args.value("out")?.unwrap_or("weights/experiments"));
    std::fs::create_dir_all(&out).map_err(|source| Error::Io { path: out.clone(), source })?;
    let started = Instant::now();
    let mut report = String::new();
    let _ = writeln!(report, "# Ablations at small scale\n");
    let _ = writeln!(
        report,
        "`moe experiments --steps {steps}`: make train's recipe and corpus, {steps} steps of 8 × 256 tokens per run \
         (warmup {}, anneal {}), model width {}, 4 layers, vocab 4096, seed 6198. Validation loss: the whole held-out \
         split (Hamlet, Henry V, Twelfth Night), nats per token.\n",
        steps / 20,
        steps / 10,
        base().hidden_size
    );
    let _ = writeln!(
        report,
        "| experiment | run | active / total parameters | validation loss | tokens/s | paper |"
    );
    let _ = writeln!(report, "|---|---|---:|---:|---:|---|");
    let mut findings = String::new();
    for (i, (experiment, paper, a, b)) in experiments().into_iter().enumerate() {
        let (ra, rb) = (train(&a, steps, &out)?, train(&b, steps, &out)?);
        for (run, r, paper) in [(&a, &ra, paper), (&b, &rb, "")] {
            let (total, active) = param_counts(&run.config);
            let _ = writeln!(
                report,
                "| {} | {} | {} / {} | {:.4} | {} | {paper} |",
                if paper.is_empty() { "" } else { experiment },
                run.label,
                thousands(active),
                thousands(total),
                r.val_loss,
                thousands(r.tokens_per_s.round() as usize)
            );
        }
        let (better, by) = if ra.val_loss <= rb.val_loss {
            (a.label, rb.val_loss - ra.val_loss)
        } else {
            (b.label, ra.val_loss - rb.val_loss)
        };
        let _ = writeln!(findings, "- {experiment}: **{better}** lower by {by:.4} nats (paper: {paper}).");
        let svg = loss_svg(
            &format!("{experiment}: validation loss"),
            &[
                Curve { label: a.label, color: "#1f77b4", points: &ra.curve },
                Curve { label: b.label, color: "#d62728", points: &rb.curve },
            ],
        );
        let file = format!("{}-{}.svg", i + 1, experiment.replace(' ', "-"));
        std::fs::write(out.join(&file), svg).map_err(|source| Error::Io { path: out.join(&file), source })?;
        let _ = writeln!(findings, "  ![{experiment}]({file})");
    }
    let _ = writeln!(report, "\nWhich way each went here (one run each: differences of a few hundredths are within run-to-run noise):\n\n{findings}");
    let _ = writeln!(
        report,
        "Wall time of this invocation: {:.1} min (finished runs are reused).",
        started.elapsed().as_secs_f64() / 60.0
    );
    let path = out.join("REPORT.md");
    std::fs::write(&path, &report).map_err(|source| Error::Io { path: path.clone(), source })?;
    print!("{report}");
    println!("wrote {}", path.display());
    Ok(())
}

/// Trains `run` for `steps` into out/run.name, or reads its result.json if it finished before.
fn train(run: &Run, steps: u64, out: &Path) -> Result<Outcome> {
    let dir = out.join(run.name);
    let result_path = dir.join("result.json");
    if let Ok(text) = std::fs::read_to_string(&result_path) {
        let v = json::parse(&text).map_err(|e| e.in_file(&result_path))?;
        let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        // Reused only if it is this very run: same steps, same model (its config.json text).
        let config = run.config.to_json().to_json();
        if num("steps") == steps as f64 && v.get("config").and_then(Value::as_str) == Some(config.as_str()) {
            return Ok(Outcome {
                val_loss: num("val_loss"),
                tokens_per_s: num("tokens_per_s"),
                curve: curve(&dir)?,
            });
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    }
    let init = match run.upcycled_from {
        None => None,
        Some(dense) => {
            let from = out.join(dense);
            let init = out.join(format!("{}-init", run.name));
            upcycle(&from, &init, run.config.num_experts, run.config.num_experts_per_tok, false, 0)?;
            Some(init)
        }
    };
    let options = RunOptions {
        out: dir.clone(),
        init,
        steps,
        warmup_steps: steps / 20,
        anneal_steps: steps / 10,
        eval_every: (steps / 6).max(1),
        checkpoint_every: steps,
        ..RunOptions::default()
    };
    let batch_tokens = options.batch_tokens;
    eprintln!("experiments: {} ({}), {steps} steps", run.name, run.label);
    let summary = trainer::start(options, run.config.clone(), &crate::cuda::Device::Cpu, None, &mut |e| {
        if let Event::Validation { step, loss } = e {
            eprintln!("  step {step}: validation loss {loss:.4}");
        }
    })?
    .ok_or_else(|| Error::invalid(format!("moe experiments: {}", run.name), "stopped before its end"))?;
    let tokens_per_s = (steps as usize * batch_tokens) as f64 / summary.train_seconds.max(1e-9);
    let result = Value::Object(vec![
        ("steps".into(), Value::Number(steps as f64)),
        ("config".into(), Value::String(run.config.to_json().to_json())),
        ("val_loss".into(), Value::Float(summary.val_loss)),
        ("tokens_per_s".into(), Value::Float(tokens_per_s)),
    ]);
    std::fs::write(&result_path, result.to_json_pretty())
        .map_err(|source| Error::Io { path: result_path, source })?;
    Ok(Outcome { val_loss: summary.val_loss, tokens_per_s, curve: curve(&dir)? })
}

/// (step, validation loss) points of a run's log.jsonl.
fn curve(dir: &Path) -> Result<Vec<(f64, f64)>> {
    let path = dir.join("log.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    Ok(text
        .lines()
        .filter_map(|line| json::parse(line).ok())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get("val_loss")?.as_f64()?)))
        .collect())
}
