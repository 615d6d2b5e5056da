//! `moe bench`: throughput tables. Times are medians over repeats (matmul: after one warm-up
//! run; tokenizer: each encode pass from an empty piece cache, as a first pass over a corpus).
//!
//! matmul: our GEMM in the three forms training uses (C = A·B, A·Bᵀ, Aᵀ·B), and, where the
//! python in `MOE_BENCH_PYTHON` (default python3) has numpy, numpy's BLAS on the same shapes.
//!
//! tokenizer: encode throughput with the OLMo tokenizer and the time to train a 4096-token
//! vocabulary, both on the Shakespeare corpus and on one thread, beside the Python `tokenizers`
//! library's where the python in `MOE_BENCH_PYTHON` (default python3) can import it; and
//! whether both give the same ids and learn the same merges.

use crate::cli::{thousands, Args};
use crate::cpu::gemm::{gemm, Kernel, MatRef};
use crate::cpu::threads;
use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::tokenize_cmd::{read_text, text_files};
use crate::tokenizer::train::{count_words, learn, SPECIAL_TOKENS};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::time::Instant;

pub const HELP: &str = "\
moe bench [--reps N] [--threads N] [--only matmul|tokenizer]
  Prints GFLOP/s of the f32 matmul at the shapes the model uses, beside numpy's where
  $MOE_BENCH_PYTHON (default python3) has numpy. --reps: timed repeats per matmul entry (default 15).
  Then tokenizer encode MB/s and training time (one thread, median of 3) beside the Python
  `tokenizers` library's, run by $MOE_BENCH_PYTHON (default python3), on the corpus in
  data/shakespeare (else ../shared/corpus/shakespeare) with the OLMo tokenizer in
  tests/golden/tokenizer/ (else ../shared/tokenizers/). --only: just one of the two tables.
";

/// (M, K, N): C[M, N] = A[M, K] · B[K, N].
const SHAPES: [(usize, usize, usize); 3] = [(1024, 1024, 1024), (256, 1024, 4096), (4096, 256, 1024)];

/// The operand layouts: "NN" C = A·B (an input gradient, dX = dY·W), "NT" C = A·Bᵀ with B
/// stored (N, K) (a linear layer, y = x·Wᵀ), "TN" C = Aᵀ·B with A stored (K, M) (a weight
/// gradient, dW = dYᵀ·X).
const FORMS: [&str; 3] = ["NN", "NT", "TN"];

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["reps", "only"])?;
    let reps = args.count("reps")?.unwrap_or(15);
    let only = args.value("only")?;
    if let Some(table) = only.filter(|t| !["matmul", "tokenizer"].contains(t)) {
        return Err(crate::error::Error::invalid("--only", format!("no table '{table}'"))
            .with_hint("the tables: matmul, tokenizer"));
    }
    if only != Some("tokenizer") {
        matmul_table(reps)?;
    }
    if only != Some("matmul") {
        if only.is_none() {
            println!();
        }
        tokenizer_table()?;
    }
    Ok(())
}

/// Runs `script` in the benchmark's Python (`$MOE_BENCH_PYTHON`, default python3) with `args`
/// and `env`; returns its stdout, or why there is none (not runnable, `module` not installed,
/// or its last error line).
fn run_python(
    script: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    module: &str,
) -> std::result::Result<String, String> {
    let python = std::env::var("MOE_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("{python} not runnable ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        return Err(if last.contains(&format!("No module named '{module}'")) {
            format!("{python} has no `{module}`: pip install {module}, or set MOE_BENCH_PYTHON")
        } else {
            format!("{python} failed: {last}")
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ours_gflops(m: usize, k: usize, n: usize, form: &str, reps: usize) -> f64 {
    let mut rng = Rng::new(1);
    let a = Tensor::uniform(&[m * k], -1.0, 1.0, &mut rng);
    let b = Tensor::uniform(&[k * n], -1.0, 1.0, &mut rng);
    let a_view = match form {
        "TN" => MatRef::row_major(a.data(), k, m).t(),
        _ => MatRef::row_major(a.data(), m, k),
    };
    let b_view = match form {
        "NT" => MatRef::row_major(b.data(), n, k).t(),
        _ => MatRef::row_major(b.data(), k, n),
    };
    let mut c = vec![0.0f32; m * n];
    let secs = median_seconds(reps, || gemm(&mut c, n, a_view, b_view, false));
    2.0 * (m * k * n) as f64 / secs / 1e9
}

/// numpy's GFLOP/s for one (shape, form), or why there is none. Timed right before ours for
/// the same entry, so both see the same machine load.
fn numpy_gflops(m: usize, k: usize, n: usize, form: &str, reps: usize) -> std::result::Result<f64, String> {
    let script = format!(
        r#"
import time, numpy as np
rng = np.random.default_rng(1)
m, k, n, form = {m}, {k}, {n}, "{form}"
a = rng.uniform(-1, 1, (k, m) if form == "TN" else (m, k)).astype(np.float32)
b = rng.uniform(-1, 1, (n, k) if form == "NT" else (k, n)).astype(np.float32)
A = a.T if form == "TN" else a
B = b.T if form == "NT" else b
A @ B
ts = []
for _ in range({reps}):
    t = time.perf_counter(); A @ B; ts.append(time.perf_counter() - t)
print(2 * m * k * n / sorted(ts)[len(ts) // 2] / 1e9)
"#
    );
    let text = run_python(&script, &[], &[], "numpy")?;
    text.trim().parse::<f64>().map_err(|_| format!("unexpected numpy output '{}'", text.trim()))
}

fn matmul_table(reps: usize) -> Result<()> {
    println!(
        "matmul f32, C[M,N] = A[M,K]·B[K,N]; kernel {:?}, {} threads, median of {reps}",
        Kernel::detect(),
        threads::num_threads()
    );
    println!("| M×K×N | form | ours GFLOP/s | numpy GFLOP/s | ours/numpy |");
    println!("|---|---|---:|---:|---:|");
    let mut numpy_missing = None;
    for (m, k, n) in SHAPES {
        for form in FORMS {
            let numpy =
                if numpy_missing.is_none() { numpy_gflops(m, k, n, form, reps) } else { Err(String::new()) };
            let ours = ours_gflops(m, k, n, form, reps);
            let (np_cell, ratio) = match numpy {
                Ok(np) => (format!("{np:.1}"), format!("{:.2}", ours / np)),
                Err(why) => {
                    numpy_missing.get_or_insert(why);
                    ("–".to_string(), "–".to_string())
                }
            };
            println!("| {m}×{k}×{n} | {form} | {ours:.1} | {np_cell} | {ratio} |");
        }
    }
    if let Some(why) = numpy_missing {
        println!("(numpy column empty: {why})");
    }
    Ok(())
}

// ---- tokenizer

/// The corpus: the repository's copy, else the shared one beside the repository.
const CORPUS_DIRS: [&str; 2] = ["data/shakespeare", "../shared/corpus/shakespeare"];
/// The OLMo tokenizer: the test suite's copy, else the shared one.
const OLMO_TOKENIZERS: [&str; 2] = [
    "tests/golden/tokenizer/olmoe-gpt-neox-olmo-dolma-v1_5.json",
    "../shared/tokenizers/olmoe-gpt-neox-olmo-dolma-v1_5.json",
];
/// Timed repeats per tokenizer entry (one encode of the corpus takes seconds in Python).
const TOKENIZER_REPS: usize = 3;
const TRAIN_VOCAB: usize = 4096;

/// What the `tokenizers` library did on the same corpus.
struct Library {
    version: String,
    encode_s: f64,
    train_s: f64,
    ids: Vec<u32>,
    merges: Vec<(String, String)>,
}

/// Runs the library in `$MOE_BENCH_PYTHON` (default python3) on one thread: encode every
/// document with the OLMo tokenizer, and train a 4096 vocabulary as `moe tokenizer-train`
/// does; medians of `TOKENIZER_REPS`, each encode pass with a freshly loaded tokenizer (an
/// empty word cache). Prints the version, the two times, the ids, then the merges one per
/// line (byte-level tokens never contain a space).
fn library_tokenizer(
    corpus: &[std::path::PathBuf],
    tokenizer: &Path,
) -> std::result::Result<Library, String> {
    let script = format!(
        r#"
import json, sys, time
import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
docs = [open(f, encoding="utf-8").read() for f in sys.argv[2:]]
def median(f, setup=lambda: None):
    ts = []
    for _ in range({TOKENIZER_REPS}):
        x = setup(); t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]
# Training first: after the encoding below the same training runs ~1.4x slower here.
def train(_):
    global trained
    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.NFC()
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size={TRAIN_VOCAB}, special_tokens={SPECIAL_TOKENS:?},
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    trained.train_from_iterator(docs, trainer)
train_s = median(train)
merges = json.loads(trained.to_str())["model"]["merges"]
# A freshly loaded tokenizer each time: its word cache starts empty, as on a first pass.
load = lambda: Tokenizer.from_file(sys.argv[1])
encode_s = median(lambda olmo: [olmo.encode(d).ids for d in docs], load)
ids = [i for d in docs for i in load().encode(d).ids]
print(tokenizers.__version__)
print(encode_s)
print(train_s)
print(" ".join(map(str, ids)))
for m in merges:
    print(" ".join(m) if isinstance(m, list) else m)
"#
    );
    let mut args = vec![tokenizer.as_os_str()];
    args.extend(corpus.iter().map(|p| p.as_os_str()));
    let env = [("TOKENIZERS_PARALLELISM", "false"), ("RAYON_NUM_THREADS", "1")];
    let text = run_python(&script, &args, &env, "tokenizers")?;
    let mut lines = text.lines();
    let mut next = |what: &str| lines.next().ok_or(format!("library output ends before {what}"));
    let version = next("the version")?.to_string();
    let seconds = |s: &str| s.trim().parse::<f64>().map_err(|_| format!("unexpected library output '{s}'"));
    let encode_s = seconds(next("the encode time")?)?;
    let train_s = seconds(next("the train time")?)?;
    let ids = next("the ids")?
        .split_whitespace()
        .map(|i| i.parse::<u32>().map_err(|_| format!("unexpected library id '{i}'")))
        .collect::<std::result::Result<Vec<u32>, String>>()?;
    let merges = lines
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or("unexpected library merge line")?;
    Ok(Library { version, encode_s, train_s, ids, merges })
}

fn tokenizer_table() -> Result<()> {
    let Some(corpus_dir) = CORPUS_DIRS.iter().find(|d| Path::new(d).is_dir()) else {
        println!(
            "tokenizer: skipped, no corpus at {} (run from the repository root)",
            CORPUS_DIRS.join(" or ")
        );
        return Ok(());
    };
    let Some(olmo_path) = OLMO_TOKENIZERS.iter().map(Path::new).find(|p| p.is_file()) else {
        println!(
            "tokenizer: skipped, no OLMo tokenizer at {} (run from the repository root)",
            OLMO_TOKENIZERS.join(" or ")
        );
        return Ok(());
    };
    let files = text_files(corpus_dir)?;
    let docs = files.iter().map(|f| read_text(f)).collect::<Result<Vec<String>>>()?;
    let mb = docs.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    let olmo = Tokenizer::load(olmo_path)?;
    let library = library_tokenizer(&files, olmo_path);

    let threads_before = threads::num_threads();
    threads::set_num_threads(1);
    // Each pass with a fresh clone: our piece cache starts empty, as the library's does.
    let mut times: Vec<f64> = (0..TOKENIZER_REPS)
        .map(|_| {
            let fresh = olmo.clone();
            let start = Instant::now();
            for d in &docs {
                std::hint::black_box(fresh.encode(d));
            }
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let encode_s = times[times.len() / 2];
    let ids: Vec<u32> = docs.iter().flat_map(|d| olmo.encode(d)).collect();
    let mut merges = Vec::new();
    let train_s = median_seconds(TOKENIZER_REPS, || {
        merges = learn(&count_words(&docs), TRAIN_VOCAB, &SPECIAL_TOKENS, 0).merges;
    });
    threads::set_num_threads(threads_before);

    let lib_name = library.as_ref().map_or("tokenizers".to_string(), |l| format!("tokenizers {}", l.version));
    println!(
        "tokenizer: OLMo tokenizer.json on {corpus_dir} ({} files, {mb:.2} MB); one thread, median of {TOKENIZER_REPS}",
        docs.len()
    );
    println!("| task | ours | {lib_name} | ours vs library | result |");
    println!("|---|---:|---:|---:|---|");
    let (lib_encode, lib_train, same_ids, same_merges) = match &library {
        Ok(l) => (
            format!("{:.2}", mb / l.encode_s),
            format!("{:.2}", l.train_s),
            if l.ids == ids {
                "identical".to_string()
            } else {
                format!("DIFFERENT ({} ids from the library)", thousands(l.ids.len()))
            },
            {
                let agree = merges.iter().zip(&l.merges).take_while(|(a, b)| a == b).count();
                if l.merges == merges {
                    "identical".to_string()
                } else {
                    format!("DIFFERENT (first {agree} agree; library learned {})", l.merges.len())
                }
            },
        ),
        Err(_) => ("–".to_string(), "–".to_string(), "not compared".to_string(), "not compared".to_string()),
    };
    // How many times faster ours is (rates: bigger is better).
    let speedup = |ours: f64, theirs: Option<f64>| {
        theirs.map_or("–".to_string(), |t| {
            if ours >= t {
                format!("{:.1}x faster", ours / t)
            } else {
                format!("{:.1}x slower", t / ours)
            }
        })
    };
    let lib = library.as_ref().ok();
    println!(
        "| encode, MB/s | {:.2} | {lib_encode} | {} | {} ids, {same_ids} |",
        mb / encode_s,
        speedup(mb / encode_s, lib.map(|l| mb / l.encode_s)),
        thousands(ids.len())
    );
    println!(
        "| train {TRAIN_VOCAB} vocab, s | {train_s:.2} | {lib_train} | {} | {} merges, {same_merges} |",
        speedup(1.0 / train_s, lib.map(|l| 1.0 / l.train_s)),
        thousands(merges.len())
    );
    if let Err(why) = library {
        println!("(tokenizers column empty: {why})");
    }
    Ok(())
}
