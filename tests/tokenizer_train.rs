//! BPE training: minbpe's Wikipedia example, the incremental trainer against a slow twin that
//! recounts every pair after each merge, the vocabulary layout `tokenizers` uses, and the
//! three tokenizer commands as a user runs them.
//!
//! The check against the Python library itself (same merges, same ids on a held-out play) is
//! a dev-time script: tests/golden/tokenizer/check_trained.py.

use moe::rng::Rng;
use moe::tokenizer::bpe::byte_to_unicode;
use moe::tokenizer::train::{count_words, learn, train, SPECIAL_TOKENS};
use moe::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus(play: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare").join(play);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Three plays for training, a fourth held out.
fn training_texts() -> Vec<String> {
    ["macbeth.txt", "tempest.txt", "sonnets.txt"].iter().map(|p| corpus(p)).collect()
}

/// A byte string in the byte-to-unicode alphabet, as vocab entries and merges are written.
fn bl(s: &str) -> String {
    let table = byte_to_unicode();
    s.bytes().map(|b| table[b as usize]).collect()
}

// ---- the slow twin

/// minbpe's loop on counted words: recount every pair of every word, merge the most frequent
/// (ties: the smaller (left id, right id)), left to right, repeat. Ids: `specials` first, then
/// the 256 byte characters sorted, then one per merge.
fn slow_merges(words: &[(Vec<u8>, u64)], specials: usize, n_merges: usize) -> Vec<(String, String)> {
    let table = byte_to_unicode();
    let mut sorted = table;
    sorted.sort_unstable();
    let mut tokens: Vec<String> = (0..specials).map(|i| format!("<special {i}>")).collect();
    tokens.extend(sorted.iter().map(|c| c.to_string()));
    let id_of = |b: u8| (specials + sorted.iter().position(|&c| c == table[b as usize]).unwrap()) as u32;
    let mut ws: Vec<(Vec<u32>, u64)> =
        words.iter().map(|(w, n)| (w.iter().map(|&b| id_of(b)).collect(), *n)).collect();
    let mut merges = Vec::new();
    for _ in 0..n_merges {
        let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
        for (w, n) in &ws {
            for p in w.windows(2) {
                *counts.entry((p[0], p[1])).or_insert(0) += n;
            }
        }
        let Some((&(a, b), _)) = counts.iter().max_by(|(p, c), (q, d)| c.cmp(d).then(q.cmp(p))) else {
            break;
        };
        let z = tokens.len() as u32;
        tokens.push(format!("{}{}", tokens[a as usize], tokens[b as usize]));
        merges.push((tokens[a as usize].clone(), tokens[b as usize].clone()));
        for (w, _) in &mut ws {
            let mut out = Vec::new();
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(z);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
        }
    }
    merges
}

#[test]
fn wikipedia_example() {
    // https://en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac → Z=aa, Y=ab, X=ZY → XdXac.
    let s = SPECIAL_TOKENS.len();
    let tok = train(&["aaabdaaabac".to_string()], s + 256 + 3, &SPECIAL_TOKENS);
    let trained = learn(&count_words(&["aaabdaaabac".to_string()]), s + 256 + 3, &SPECIAL_TOKENS, 0);
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(trained.merges, [pair("a", "a"), pair("a", "b"), pair("aa", "ab")]);
    let (z, y, x) = (s as u32 + 256, s as u32 + 257, s as u32 + 258);
    assert_eq!((tok.token_id("aa"), tok.token_id("ab"), tok.token_id("aaab")), (Some(z), Some(y), Some(x)));
    let (d, a, c) = (tok.token_id("d").unwrap(), tok.token_id("a").unwrap(), tok.token_id("c").unwrap());
    assert_eq!(tok.encode("aaabdaaabac"), [x, d, x, a, c]);
    // The ids `tokenizers` 0.23.3 gives (BpeTrainer, the same special tokens and alphabet).
    assert_eq!(tok.encode("aaabdaaabac"), [260, 69, 260, 66, 68]);
    assert_eq!(tok.decode(&tok.encode("aaabdaaabac")), "aaabdaaabac");
}

#[test]
fn incremental_counts_match_the_slow_twin_on_random_words() {
    // A three-letter alphabet gives runs ("aaaa", "abab") where pairs overlap and the counts of
    // neighbouring pairs change most.
    let mut rng = Rng::new(7);
    let words: Vec<(Vec<u8>, u64)> = (0..300)
        .map(|_| {
            let len = 1 + rng.below(12);
            ((0..len).map(|_| b"abc"[rng.below(3)]).collect(), 1 + rng.below(5) as u64)
        })
        .collect();
    for specials in [0, 2] {
        let names: Vec<String> = (0..specials).map(|i| format!("<special {i}>")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // Until every pair is merged: the last merges are of pairs that occur once.
        let ours = learn(&words, usize::MAX, &names, 0).merges;
        let slow = slow_merges(&words, specials, usize::MAX);
        assert!(ours.len() > 200, "only {} merges", ours.len());
        assert_eq!(ours, slow, "specials {specials}");
    }
}

#[test]
fn incremental_counts_match_the_slow_twin_on_shakespeare() {
    let words = count_words(&[corpus("macbeth.txt")]);
    let ours = learn(&words, 2 + 256 + 150, &SPECIAL_TOKENS, 0).merges;
    assert_eq!(ours.len(), 150);
    assert_eq!(ours, slow_merges(&words, 2, 150));
    // The first merges on English text: space + t, h + e (as the library learns them).
    assert_eq!(ours[..2], [(bl(" "), "t".to_string()), ("h".to_string(), "e".to_string())]);
}

#[test]
fn vocabulary_layout_is_the_librarys() {
    let tok = train(&training_texts(), 1000, &SPECIAL_TOKENS);
    assert_eq!(tok.vocab_size(), 1000, "the vocabulary size asked for is reached");
    // Special tokens first, then the byte characters in code-point order: '!' (byte 33) is
    // id 2, 'ÿ' (byte 255) id 189, then bytes 0..=32 as U+0100.. ('Ġ' = space is id 222).
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_id("<|padding|>"), Some(1));
    let table = byte_to_unicode();
    assert_eq!(tok.token_id("!"), Some(2));
    assert_eq!(tok.token_id(&table[255].to_string()), Some(189));
    assert_eq!(tok.token_id(&table[0].to_string()), Some(190));
    assert_eq!(tok.token_id(&table[b' ' as usize].to_string()), Some(222));
    // Added tokens are matched in text; the rest is bytes and merges.
    let ids = tok.encode("<|endoftext|>Fair is foul<|padding|>");
    assert_eq!((ids[0], *ids.last().unwrap()), (0, 1));
}

#[test]
fn training_is_deterministic_and_compresses() {
    let texts = training_texts();
    let a = learn(&count_words(&texts), 1500, &SPECIAL_TOKENS, 0);
    let b = learn(&count_words(&texts), 1500, &SPECIAL_TOKENS, 0);
    assert_eq!(a, b);
    assert_eq!(a.merges.len(), 1500 - 258);
    let tok = a.into_tokenizer();
    for text in texts.iter().chain([&corpus("hamlet.txt")]) {
        let ids = tok.encode(text);
        assert!(ids.len() * 2 < text.len(), "{} ids for {} bytes", ids.len(), text.len());
        assert_eq!(tok.decode(&ids), *text);
    }
}

#[test]
fn min_frequency_and_exhaustion_stop_training() {
    let words = count_words(&["ab ab cd".to_string()]);
    // Pairs: (a,b) ×2, (Ġ,a) ×1, (c,d)... min_frequency 2 stops after "ab".
    let two = learn(&words, 1000, &[], 2);
    assert_eq!(two.merges, [("a".to_string(), "b".to_string())]);
    // min_frequency 0 (the library's default) merges until no pair is left.
    let all = learn(&words, 1000, &[], 0);
    assert_eq!(all.vocab.len(), 256 + all.merges.len());
    let tok = all.into_tokenizer();
    assert_eq!(tok.encode("ab ab cd").len(), 3, "ab, ' ab', ' cd'");
}

#[test]
fn save_load_round_trip() {
    let tok = train(&training_texts(), 800, &SPECIAL_TOKENS);
    let path = temp_dir("save_load").join("tokenizer.json");
    tok.save(&path).unwrap();
    let back = Tokenizer::load(&path).unwrap();
    let held_out = corpus("hamlet.txt");
    assert_eq!(back.vocab_size(), tok.vocab_size());
    assert_eq!(back.encode(&held_out), tok.encode(&held_out));
    assert_eq!(back.token_id("<|padding|>"), Some(1));
    // Saving the loaded one gives the same file.
    let again = path.with_file_name("again.json");
    back.save(&again).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
}

// ---- the commands

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-tokenizer-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe")).args(args).env_remove("MOE_THREADS").output().expect("moe runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn commands_train_tokenize_detokenize() {
    let dir = temp_dir("commands");
    // A directory with .txt files in a subfolder (read recursively) and a file that is skipped.
    std::fs::create_dir_all(dir.join("plays/more")).unwrap();
    std::fs::write(dir.join("plays/a.txt"), corpus("macbeth.txt")).unwrap();
    std::fs::write(dir.join("plays/more/b.txt"), corpus("tempest.txt")).unwrap();
    std::fs::write(dir.join("plays/notes.md"), "\u{0}\u{1} not read").unwrap();
    let out_path = dir.join("tok.json");
    let (input, out_s) = (dir.join("plays"), out_path.to_str().unwrap());
    let out =
        moe(&["tokenizer-train", "--input", input.to_str().unwrap(), "--vocab-size", "600", "--out", out_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("read 2 documents"), "{}", stdout(&out));
    assert!(stdout(&out).contains("vocab 600"), "{}", stdout(&out));
    // The same as training in the library on the same documents.
    let lib = train(&[corpus("macbeth.txt"), corpus("tempest.txt")], 600, &SPECIAL_TOKENS);
    let text = "Double, double toil and trouble;\nFire burn and caldron bubble.";
    let ids: Vec<String> = lib.encode(text).iter().map(u32::to_string).collect();

    let out = moe(&["tokenize", "--tokenizer", out_s, "--text", text]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), ids.join(" "));
    let file = dir.join("witches.txt");
    std::fs::write(&file, text).unwrap();
    let out = moe(&["tokenize", "--tokenizer", out_s, "--file", file.to_str().unwrap()]);
    assert_eq!(stdout(&out).trim_end(), ids.join(" "), "{}", stderr(&out));

    let out = moe(&["detokenize", "--tokenizer", out_s, "--ids", &ids.join(" ")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), text);
    let out = moe(&["detokenize", "--tokenizer", out_s, "--ids", &ids.join(",")]);
    assert_eq!(stdout(&out), text);
}

#[test]
fn command_errors_name_what_is_wrong() {
    let dir = temp_dir("errors");
    let tok = dir.join("tok.json");
    let trained = train(&["to be or not to be".to_string()], 300, &SPECIAL_TOKENS);
    trained.save(&tok).unwrap();
    // Every pair merged before 300: the vocabulary stops short.
    let v = trained.vocab_size();
    assert!(v < 300, "vocab {v}");
    let (too_big, too_big_rule) =
        (format!("5 {v}"), format!("id {v} is outside the vocabulary (vocab_size {v})"));
    let tok = tok.to_str().unwrap();
    let missing = dir.join("no_such_play.txt");
    let missing = missing.to_str().unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out_json = dir.join("out.json");
    let out_json = out_json.to_str().unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["tokenizer-train", "--input", missing, "--vocab-size", "300", "--out", out_json],
            format!("--input {missing}: no such file or directory"),
        ),
        (
            vec![
                "tokenizer-train",
                "--input",
                empty.to_str().unwrap(),
                "--vocab-size",
                "300",
                "--out",
                out_json,
            ],
            "a directory with no .txt file in it".to_string(),
        ),
        (vec!["tokenizer-train", "--input", tok, "--out", out_json], "--vocab-size is required".to_string()),
        (
            vec!["tokenizer-train", "--input", tok, "--vocab-size", "100", "--out", out_json],
            "--vocab-size: 100 is below 258".to_string(),
        ),
        (vec!["tokenizer-train", "--input", tok, "--vocab-size", "300"], "--out is required".to_string()),
        (vec!["tokenize", "--tokenizer", tok], "give exactly one of --text and --file".to_string()),
        (
            vec!["tokenize", "--tokenizer", tok, "--text", "a", "--file", tok],
            "give exactly one of --text and --file".to_string(),
        ),
        (vec!["tokenize", "--text", "a"], "--tokenizer is required".to_string()),
        (vec!["tokenize", "--tokenizer", missing, "--text", "a"], missing.to_string()),
        (vec!["tokenize", "--tokenizer", tok, "--file", missing], missing.to_string()),
        (vec!["tokenize", "--tokenizer", tok, "--txt", "a"], "flag --txt: unknown flag".to_string()),
        (vec!["detokenize", "--tokenizer", tok, "--ids", "5 x 7"], "'x' is not a token id".to_string()),
        (vec!["detokenize", "--tokenizer", tok, "--ids", "5 -1"], "'-1' is not a token id".to_string()),
        (vec!["detokenize", "--tokenizer", tok, "--ids", &too_big], too_big_rule),
        (vec!["detokenize", "--tokenizer", tok], "--ids is required".to_string()),
    ];
    for (args, want) in cases {
        let out = moe(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(&want), "{args:?}: want '{want}', got: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?} panicked");
    }
    assert!(!Path::new(out_json).exists(), "no output is written after an error");
    for cmd in ["tokenizer-train", "tokenize", "detokenize"] {
        let out = moe(&[cmd, "--help"]);
        assert!(out.status.success() && stdout(&out).starts_with(&format!("moe {cmd} ")), "{cmd} --help");
    }
}
