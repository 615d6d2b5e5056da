//! Generation against transformers: greedy ids identical to
//! `OlmoeForCausalLM.generate(do_sample=False, use_cache=True)` on the small random checkpoints
//! (tests/golden/make_generate_golden.py), F32 single-file and BF16 sharded; and `moe generate`
//! as a user meets it: streamed text, --print-ids, seeds, and bad input.

mod common;

use moe::json::{self, Value};
use moe::model::decode::Decoder;
use moe::model::hf;
use moe::model::olmoe::next_token_logits;
use moe::rng::Rng;
use moe::sample::{generate, generate_with, Sampling};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// (prompt, generated, max_new_tokens) from one expected-output file.
fn expected(path: &Path) -> (Vec<u32>, Vec<u32>, usize) {
    let v = json::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        v.get(key).and_then(Value::as_array).unwrap().iter().map(|x| x.as_f64().unwrap() as u32).collect()
    };
    let max_new = v.get("max_new_tokens").and_then(Value::as_f64).unwrap() as usize;
    (ids("prompt"), ids("generated"), max_new)
}

/// Greedy generation from the model in `dir`, through the memory-mapped weights.
fn greedy(dir: &Path, prompt: &[u32], max_new: usize) -> Vec<u32> {
    let (config, ckpt) = hf::open(dir).unwrap();
    let weights = hf::views(&ckpt, &config).unwrap();
    let mut decoder = Decoder::new(&config, &weights, prompt.len() + max_new);
    let mut rng = Rng::new(0);
    let eos = config.eos_token_id;
    generate(&mut decoder, prompt, max_new, Sampling::GREEDY, eos, &mut rng, |_| ControlFlow::Continue(()))
        .unwrap()
        .ids
}

#[test]
fn greedy_ids_equal_transformers_generate() {
    let mut cases: Vec<(PathBuf, PathBuf)> = ["base", "renorm", "gqa", "tied", "clip"]
        .iter()
        .map(|v| (golden().join(v), golden().join("generate").join(format!("{v}.json"))))
        .collect();
    let sharded = golden().join("generate/bf16_sharded");
    cases.push((sharded.clone(), sharded.join("expected.json")));
    for (dir, want) in cases {
        let (prompt, want, max_new) = expected(&want);
        let got = greedy(&dir, &prompt, max_new);
        println!("{}: {} tokens, identical: {}", dir.display(), got.len(), got == want);
        assert_eq!(got, want, "{}: greedy ids differ from transformers", dir.display());
    }
    // The renorm case stops at EOS before max_new_tokens: stopping is checked too.
    let (_, renorm, max_new) = expected(&golden().join("generate/renorm.json"));
    assert!(renorm.len() < max_new && renorm.last() == Some(&95), "renorm's golden run ends at EOS (95)");
}

// ---- the binary

fn moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe")).args(args).env("MOE_THREADS", "2").output().expect("moe runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn prompt_ids_without_a_tokenizer_print_only_ids() {
    let dir = golden().join("generate/bf16_sharded");
    let (prompt, want, max_new) = expected(&dir.join("expected.json"));
    let prompt: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let max_new = max_new.to_string();
    let args = [
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &prompt.join(" "),
        "--temperature",
        "0",
    ];
    let out = moe(&[&args[..], &["--max-new-tokens", &max_new]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: Vec<String> = want.iter().map(u32::to_string).collect();
    assert_eq!(text(&out.stdout), want.join(" ") + "\n");
    let err = text(&out.stderr);
    assert!(err.contains("BF16, memory-mapped"), "{err}");
    assert!(err.contains(&format!("prompt 5 tokens | generated {} tokens | prefill ", want.len())), "{err}");
    assert!(err.contains("decode ") && err.contains(" tok/s"), "{err}");
}

/// A tiny random model with the real OLMoE tokenizer (vocab 50304) in a temporary folder.
fn model_with_tokenizer(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-generate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::tiny_model_with_olmo_tokenizer(&dir);
    dir
}

#[test]
fn text_prompts_stream_text_and_print_ids_and_seeds_repeat() {
    let dir = model_with_tokenizer("text");
    let model = dir.to_str().unwrap();
    let run = |seed: &str| {
        let args =
            ["generate", "--model", model, "--prompt", "Romeo.\n", "--max-new-tokens", "12", "--seed", seed];
        let out = moe(&[&args[..], &["--print-ids"]].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = run("1");
    assert_eq!(first, run("1"), "same seed, same text");
    assert_ne!(first, run("2"), "another seed, another text");
    // The text is the prompt, then the decoded new ids; the last line holds the ids.
    let (body, ids_line) = first.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let ids: Vec<u32> = ids_line.split(' ').map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids.len(), 12, "{first:?}");
    let tokenizer = moe::tokenizer::Tokenizer::load(&dir.join("tokenizer.json")).unwrap();
    let eos = 50279;
    let shown: Vec<u32> = ids.iter().copied().filter(|&id| id != eos).collect();
    assert_eq!(body, format!("Romeo.\n{}", tokenizer.decode(&shown)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gets_a_clear_error() {
    let base = golden().join("base");
    let base = base.to_str().unwrap();
    let long: Vec<String> = (0..65).map(|i| (i % 90 + 2).to_string()).collect();
    let long = long.join(" ");
    let cases: [(&[&str], &str); 8] = [
        (&["--prompt", "hi"], "holds no tokenizer.json, so --prompt TEXT cannot be encoded"),
        (&["--prompt-ids", "3 96"], "token id 96 is outside the vocabulary (vocab_size 96)"),
        (&["--prompt-ids", "3 x"], "--prompt-ids: 'x' is not a token id"),
        (&["--prompt-ids", &long], "is 65 tokens, longer than the 64 positions the model reads"),
        (&["--prompt-ids", ""], "the prompt: is empty: give at least one token"),
        (&["--prompt", "a", "--prompt-ids", "3"], "give exactly one of --prompt and --prompt-ids"),
        (&["--prompt-ids", "3", "--top-p", "1.5"], "--top-p: must be in (0, 1]"),
        (&["--prompt-ids", "3", "--temperature", "-1"], "--temperature: must be ≥ 0"),
    ];
    for (flags, message) in cases {
        let out = moe(&[&["generate", "--model", base][..], flags].concat());
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(text(&out.stderr).contains(message), "{flags:?}: {}", text(&out.stderr));
    }
    // A prompt that fills every position still gets its one token (drawn from the last
    // position's logits), with a note.
    let full: Vec<String> = (0..64).map(|i| (i % 90 + 2).to_string()).collect();
    let out = moe(&["generate", "--model", base, "--prompt-ids", &full.join(" "), "--max-new-tokens", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("stopping after 1 new tokens"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).split_whitespace().count(), 1);
    let out = moe(&["generate", "--model", "no/such/dir", "--prompt-ids", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no/such/dir/config.json"), "{}", text(&out.stderr));
}

#[test]
fn a_checkpoint_with_nan_weights_is_an_error_not_a_token() {
    let (config, mut weights) = hf::load(&golden().join("base")).unwrap();
    weights.norm.data_mut()[0] = f32::NAN;
    let dir = std::env::temp_dir().join(format!("moe-generate-nan-{}", std::process::id()));
    hf::save(&dir, &config, &weights).unwrap();
    let out = moe(&["generate", "--model", dir.to_str().unwrap(), "--prompt-ids", "3 4 5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("generation: the logits for new token 1: hold NaN"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same greedy ids through `next_token_logits`, one whole forward pass per new token:
/// how `moe generate --device cuda` steps, checked here on the host.
#[test]
fn recomputing_the_whole_sequence_gives_the_same_greedy_ids() {
    for v in ["base", "renorm", "gqa", "tied", "clip"] {
        let (prompt, want, max_new) = expected(&golden().join("generate").join(format!("{v}.json")));
        let (config, weights) = hf::load(&golden().join(v)).unwrap();
        let config = config.for_evaluation();
        let mut seen = Vec::new();
        let step = |ids: &[u32]| {
            seen.extend_from_slice(ids);
            next_token_logits(&config, &weights, &seen)
        };
        let eos = config.eos_token_id;
        let got = generate_with(step, &prompt, max_new, Sampling::GREEDY, eos, &mut Rng::new(0), |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .ids;
        assert_eq!(got, want, "{v}: greedy ids by recomputation differ from transformers");
    }
}
