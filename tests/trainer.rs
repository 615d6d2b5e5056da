//! `moe train`'s run on a tiny model and corpus: the loss falls and the folder is complete; a
//! run stopped (or killed) and resumed repeats the uninterrupted one bit for bit; a NaN loss
//! stops the run and keeps the last good checkpoint; bad input gets a clear error.

use moe::cuda::Device;
use moe::json::{self, Value};
use moe::model::config::OlmoeConfig;
use moe::model::hf;
use moe::trainer::{self, dense_twin, roll_forward, unigram_loss, RunOptions, Summary};
use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first `bytes` bytes of a bundled play (the texts are ASCII).
fn play(name: &str, bytes: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare").join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap();
    text[..bytes.min(text.len())].to_string()
}

/// Seven plays' openings (the three validation plays among them), 120 KB in all.
fn corpus(name: &str) -> PathBuf {
    let dir = temp_dir(&format!("{name}-corpus"));
    for (play_name, kb) in [
        ("hamlet", 10),
        ("henry_v", 8),
        ("twelfth_night", 8),
        ("macbeth", 30),
        ("othello", 30),
        ("tempest", 20),
        ("lear", 14),
    ] {
        std::fs::write(dir.join(format!("{play_name}.txt")), play(play_name, kb * 1000)).unwrap();
    }
    dir
}

fn tiny_config() -> OlmoeConfig {
    OlmoeConfig {
        vocab_size: 512,
        hidden_size: 32,
        intermediate_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_experts: 4,
        num_experts_per_tok: 2,
        max_position_embeddings: 32,
        eos_token_id: None,
        pad_token_id: None,
        ..OlmoeConfig::default()
    }
}

fn tiny_options(corpus: &Path, out: &Path) -> RunOptions {
    RunOptions {
        corpus: corpus.to_path_buf(),
        out: out.to_path_buf(),
        seq: 32,
        micro_batch: 4,
        batch_tokens: 256, // two micro-batches a step
        steps: 12,
        warmup_steps: 2,
        anneal_steps: 4,
        adamw: moe::optim::AdamWConfig { lr: 1e-2, ..Default::default() },
        eval_every: 4,
        eval_tokens: 512,
        checkpoint_every: 3,
        seed: 7,
        ..RunOptions::default()
    }
}

fn quiet() -> impl FnMut(trainer::Event<'_>) {
    |_| {}
}

fn run(options: RunOptions) -> Summary {
    trainer::start(options, tiny_config(), &Device::Cpu, None, &mut quiet()).unwrap().expect("ran to the end")
}

/// The log's lines without their timings (tokens/s differs from run to run).
fn log_without_timing(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let Value::Object(fields) = json::parse(line).unwrap() else { panic!("a log line is an object") };
            Value::Object(fields.into_iter().filter(|(k, _)| k != "tokens_per_s").collect()).to_json()
        })
        .collect()
}

fn state(dir: &Path) -> Value {
    json::parse(&std::fs::read_to_string(dir.join("train_state.json")).unwrap()).unwrap()
}

fn message(e: moe::error::Error) -> String {
    e.to_string()
}

#[test]
fn a_tiny_run_learns_and_leaves_a_complete_folder() {
    let corpus = corpus("learns");
    let out = temp_dir("learns-run");
    let summary =
        run(RunOptions { steps: 36, anneal_steps: 6, eval_every: 12, ..tiny_options(&corpus, &out) });
    let log = log_without_timing(&out);
    let ce: Vec<f64> =
        log.iter().filter_map(|l| json::parse(l).unwrap().get("ce").and_then(Value::as_f64)).collect();
    assert_eq!(ce.len(), 36, "one line per step");
    let vals = log.iter().filter(|l| l.contains("val_loss")).count();
    assert_eq!(vals, 3, "validation at steps 12, 24, 36");
    println!("ce {ce:?}; val {:.3} vs unigram {:.3}", summary.val_loss, summary.unigram_val_loss);
    let last: f64 = ce[31..].iter().sum::<f64>() / 5.0;
    assert!(last < ce[0] - 1.0, "the loss fell: {ce:?}");
    assert!(summary.val_loss < summary.unigram_val_loss, "below the unigram baseline");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_state.json",
        "train_state.safetensors",
        "loss.svg",
        "data/train.bin",
        "data/val.bin",
    ] {
        assert!(out.join(file).exists(), "{file} is missing");
    }
    assert!(!out.join(".next").exists(), "the journal folder is gone after a commit");
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2, "two curves");
    let (config, _) = hf::load(&out).unwrap();
    assert_eq!(config.eos_token_id, Some(0), "<|endoftext|> of the trained tokenizer");
    assert_eq!(state(&out).get("step").and_then(Value::as_u64), Some(36));
    assert!(summary.sample.starts_with("Romeo.\n"), "{:?}", summary.sample);
}

#[test]
fn a_stopped_and_resumed_run_repeats_the_uninterrupted_one_bit_for_bit() {
    let corpus = corpus("resume");
    let whole = temp_dir("resume-whole");
    run(tiny_options(&corpus, &whole));
    // Stopped at steps 5 and 10: after the checkpoints at 3 and 9, so steps 4-5 and 10 are
    // redone; the second stretch crosses into the anneal (step 9 onwards).
    let parts = temp_dir("resume-parts");
    let stopped =
        trainer::start(tiny_options(&corpus, &parts), tiny_config(), &Device::Cpu, Some(5), &mut quiet())
            .unwrap();
    assert!(stopped.is_none());
    assert_eq!(state(&parts).get("step").and_then(Value::as_u64), Some(3), "the last checkpoint");
    // A kill while writing the next checkpoint leaves a partial journal: it is dropped.
    std::fs::create_dir_all(parts.join(".next")).unwrap();
    std::fs::write(parts.join(".next/model.safetensors"), b"half a file").unwrap();
    assert!(trainer::resume(&parts, &Device::Cpu, Some(10), &mut quiet()).unwrap().is_none());
    assert_eq!(state(&parts).get("annealing").and_then(Value::as_bool), Some(true));
    let summary = trainer::resume(&parts, &Device::Cpu, None, &mut quiet()).unwrap().unwrap();
    assert_eq!(log_without_timing(&whole), log_without_timing(&parts));
    for file in ["model.safetensors", "train_state.safetensors"] {
        let (a, b) = (std::fs::read(whole.join(file)).unwrap(), std::fs::read(parts.join(file)).unwrap());
        assert!(a == b, "{file} differs");
    }
    assert_eq!(summary.steps, 12);
    // Resuming a finished run trains no more and reports the same.
    let again = trainer::resume(&parts, &Device::Cpu, None, &mut quiet()).unwrap().unwrap();
    assert_eq!(again.val_loss.to_bits(), summary.val_loss.to_bits());
}

#[test]
fn a_committed_journal_is_rolled_forward_and_an_uncommitted_one_dropped() {
    let dir = temp_dir("journal");
    for name in ["config.json", "model.safetensors", "train_state.safetensors", "train_state.json"] {
        std::fs::write(dir.join(name), "old").unwrap();
    }
    // Killed halfway through moving a committed checkpoint: two files moved, two not.
    let next = dir.join(".next");
    std::fs::create_dir_all(&next).unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::write(dir.join(name), "new").unwrap();
    }
    for name in ["train_state.safetensors", "train_state.json"] {
        std::fs::write(next.join(name), "new").unwrap();
    }
    std::fs::write(next.join("COMPLETE"), "").unwrap();
    roll_forward(&dir).unwrap();
    for name in ["config.json", "model.safetensors", "train_state.safetensors", "train_state.json"] {
        assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), "new", "{name}");
    }
    assert!(!next.exists());
    // Not marked complete: the old checkpoint stays.
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(next.join("model.safetensors"), "newer").unwrap();
    roll_forward(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("model.safetensors")).unwrap(), "new");
    assert!(!next.exists());
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let corpus = corpus("nan");
    // A starting checkpoint with one NaN weight: the first step's loss is NaN.
    let init = temp_dir("nan-init");
    let config = OlmoeConfig { eos_token_id: Some(0), pad_token_id: Some(1), ..tiny_config() };
    let mut weights = moe::model::olmoe::Weights::init(&config, &mut moe::rng::Rng::new(3));
    weights.norm.data_mut()[0] = f32::NAN;
    hf::save(&init, &config, &weights).unwrap();
    let out = temp_dir("nan-run");
    let options = RunOptions { init: Some(init), ..tiny_options(&corpus, &out) };
    let err = message(trainer::start(options, tiny_config(), &Device::Cpu, None, &mut quiet()).unwrap_err());
    println!("{err}");
    assert!(
        err.contains("step 1") && err.contains("NaN") && err.contains("last good checkpoint (step 0)"),
        "{err}"
    );
    assert_eq!(state(&out).get("step").and_then(Value::as_u64), Some(0));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let corpus = corpus("errors");
    let out = |name: &str| temp_dir(&format!("errors-{name}"));
    let start = |options: RunOptions, config: OlmoeConfig| {
        message(trainer::start(options, config, &Device::Cpu, None, &mut quiet()).unwrap_err())
    };
    let cases: Vec<(&str, RunOptions, OlmoeConfig, &str)> = vec![
        (
            "missing corpus",
            RunOptions { corpus: PathBuf::from("/nonexistent/corpus"), ..tiny_options(&corpus, &out("a")) },
            tiny_config(),
            "/nonexistent/corpus",
        ),
        ("empty corpus", tiny_options(&temp_dir("empty-corpus"), &out("b")), tiny_config(), "no .txt"),
        (
            "seq past the positions",
            RunOptions { seq: 64, batch_tokens: 256, ..tiny_options(&corpus, &out("c")) },
            tiny_config(),
            "max_position_embeddings 32",
        ),
        (
            "batch not whole micro-batches",
            RunOptions { batch_tokens: 200, ..tiny_options(&corpus, &out("d")) },
            tiny_config(),
            "not a whole number of micro-batches",
        ),
        (
            "vocab smaller than the tokenizer",
            RunOptions {
                tokenizer: Some(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/golden/tokenizer/olmoe-gpt-neox-olmo-dolma-v1_5.json"),
                ),
                ..tiny_options(&corpus, &out("e"))
            },
            tiny_config(),
            "vocab_size 512 is smaller than the tokenizer's",
        ),
        (
            "corpus smaller than a batch",
            RunOptions { micro_batch: 4000, batch_tokens: 4000 * 32, ..tiny_options(&corpus, &out("f")) },
            tiny_config(),
            "fewer than one batch",
        ),
        (
            "heads do not divide the width",
            tiny_options(&corpus, &out("g")),
            OlmoeConfig { num_attention_heads: 5, ..tiny_config() },
            "num_attention_heads",
        ),
    ];
    for (what, options, config, expect) in cases {
        let err = start(options, config);
        println!("{what}: {err}");
        assert!(err.contains(expect), "{what}: {err}");
    }
    // An output folder that cannot be made (its parent is a file).
    let file = out("h").join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = start(tiny_options(&corpus, &file.join("run")), tiny_config());
    assert!(err.contains("a-file"), "{err}");
    // A folder that already holds a run.
    let done = out("i");
    run(RunOptions { steps: 6, anneal_steps: 1, ..tiny_options(&corpus, &done) });
    let err = start(tiny_options(&corpus, &done), tiny_config());
    assert!(err.contains("already holds a run") && err.contains("--resume"), "{err}");
    let err = message(trainer::resume(&out("j"), &Device::Cpu, None, &mut quiet()).unwrap_err());
    assert!(err.contains("no train_state.json"), "{err}");
}

#[test]
fn the_dense_twin_has_the_active_parameters_of_the_moe() {
    let moe_config = moe::trainer::default_config();
    let dense = dense_twin(&moe_config);
    let (_, moe_active) = moe::init_cmd::param_counts(&moe_config);
    let (dense_total, dense_active) = moe::init_cmd::param_counts(&dense);
    assert_eq!(dense_total, dense_active, "a dense model uses every parameter");
    // Only the routers differ: (E − 1)·C per layer.
    let routers = (moe_config.num_experts - 1) * moe_config.hidden_size * moe_config.num_hidden_layers;
    assert_eq!(moe_active, dense_active + routers);
    // And it trains in the same code path.
    let corpus = corpus("dense");
    let out = temp_dir("dense-run");
    let summary = run(RunOptions { dense: true, ..tiny_options(&corpus, &out) });
    let (config, _) = hf::load(&out).unwrap();
    assert_eq!((config.num_experts, config.num_experts_per_tok, config.intermediate_size), (1, 1, 32));
    assert!(summary.val_loss.is_finite());

    // Upcycled with the binary (4 experts, top-2), then trained on with `--init`: a fresh
    // optimizer, the dense run's tokenizer, and a loss that keeps falling.
    let upcycled = temp_dir("dense-upcycled");
    let bin =
        |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_moe")).args(args).output().unwrap();
    let done = bin(&[
        "upcycle",
        "--dense",
        out.to_str().unwrap(),
        "--num-experts",
        "4",
        "--top-k",
        "2",
        "--noise",
        "--out",
        upcycled.to_str().unwrap(),
    ]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("4 experts per layer, top-2"));
    assert!(upcycled.join("tokenizer.json").is_file());
    let (moe_config, _) = hf::load(&upcycled).unwrap();
    let continued = temp_dir("dense-upcycled-run");
    let options = RunOptions { init: Some(upcycled), ..tiny_options(&corpus, &continued) };
    let after = trainer::start(options, moe_config, &Device::Cpu, None, &mut quiet())
        .unwrap()
        .expect("ran to the end");
    assert!(
        after.val_loss < summary.val_loss + 0.5,
        "upcycled {} vs dense {}",
        after.val_loss,
        summary.val_loss
    );
}

#[test]
fn unigram_loss_by_hand() {
    // Train: 0 0 1, vocab 3 → p = (3/6, 2/6, 1/6). Val samples of 2: [2 0] [1 1] → targets 0, 1.
    let got = unigram_loss(&[0, 0, 1], &[2, 0, 1, 1], 2, 3);
    let want = -((3.0f64 / 6.0).ln() + (2.0f64 / 6.0).ln()) / 2.0;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

/// The binary, killed at a random moment (SIGKILL, possibly mid-checkpoint) and resumed,
/// ends with the log and weights of an uninterrupted run.
#[test]
fn the_command_killed_and_resumed_matches_an_uninterrupted_run() {
    let corpus = corpus("kill");
    let config_dir = temp_dir("kill-config");
    let config_path = config_dir.join("config.json");
    std::fs::write(&config_path, tiny_config().to_json().to_json_pretty()).unwrap();
    let flags = |out: &Path| -> Vec<String> {
        let mut flags: Vec<String> = [
            "train",
            "--corpus",
            corpus.to_str().unwrap(),
            "--config",
            config_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--seq",
            "32",
            "--micro-batch",
            "4",
            "--steps",
            "120",
            "--warmup",
            "5",
            "--anneal",
            "20",
            "--lr",
            "1e-2",
            "--eval-every",
            "40",
            "--eval-tokens",
            "512",
            "--checkpoint-every",
            "7",
            "--threads",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.shrink_to_fit();
        flags
    };
    let moe = env!("CARGO_BIN_EXE_moe");
    let whole = temp_dir("kill-whole");
    let status = Command::new(moe).args(flags(&whole.join("run"))).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let parts = temp_dir("kill-parts").join("run");
    let mut child =
        Command::new(moe).args(flags(&parts)).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Wait for a few checkpoints, then kill without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let step = std::fs::read_to_string(parts.join("train_state.json"))
            .ok()
            .and_then(|t| json::parse(&t).ok())
            .and_then(|v| v.get("step").and_then(Value::as_u64));
        if step.is_some_and(|s| s >= 21) || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let killed = child.wait().unwrap();
    println!("killed: {killed:?}, train_state step {:?}", state(&parts).get("step"));
    let resumed = Command::new(moe)
        .args(["train", "--resume", parts.to_str().unwrap(), "--threads", "2"])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(log_without_timing(&whole.join("run")), log_without_timing(&parts));
    let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(read(&whole.join("run")) == read(&parts), "the final weights differ");
    // --resume takes the run's own settings: other flags are refused.
    let refused = Command::new(moe)
        .args(["train", "--resume", parts.to_str().unwrap(), "--steps", "5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("--steps") && err.contains("takes only --threads"),
        "{err}"
    );
}
