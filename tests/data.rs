//! The data pipeline: OLMoE's repetition filter on hand-made sequences, `prepare` on a small
//! corpus (and on the bundled one), token files, and batches that shuffle per epoch and resume.

use moe::data::{
    self, epoch_order, prepare, read_corpus, repeated_ngram, validation_batches, write_tokens, Batches,
    Position, TokenFile, END_OF_TEXT, VALIDATION_PLAYS,
};
use moe::error::Error;
use moe::tokenizer::train::train;
use moe::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn message(e: Error) -> String {
    e.to_string()
}

// ---- the repetition filter

/// `filler` tokens that never repeat (ids 1000, 1001, …), then `gram` `times` times, then more filler.
fn with_repeats(gram: &[u32], times: usize) -> Vec<u32> {
    let mut tokens: Vec<u32> = (1000..1020).collect();
    for _ in 0..times {
        tokens.extend_from_slice(gram);
    }
    tokens.extend(2000..2020);
    tokens
}

fn olmoe_filter(tokens: &[u32]) -> Option<(usize, usize)> {
    repeated_ngram(tokens, 1, 13, 32)
}

#[test]
fn one_token_repeated_32_times_is_dropped_31_kept() {
    assert_eq!(olmoe_filter(&with_repeats(&[7], 31)), None);
    assert_eq!(olmoe_filter(&with_repeats(&[7], 32)), Some((1, 20)));
    assert_eq!(olmoe_filter(&[7; 32]), Some((1, 0)));
    assert_eq!(olmoe_filter(&[7; 31]), None);
}

#[test]
fn a_13_gram_is_dropped_at_exactly_32_repeats() {
    let gram: Vec<u32> = (1..=13).collect();
    assert_eq!(olmoe_filter(&with_repeats(&gram, 31)), None);
    assert_eq!(olmoe_filter(&with_repeats(&gram, 32)), Some((13, 20)));
    // 31 whole repeats and 12 tokens of the 32nd: still short of 32.
    let mut almost = with_repeats(&gram, 31);
    almost.splice(20 + 31 * 13..20 + 31 * 13, gram[..12].iter().copied());
    assert_eq!(olmoe_filter(&almost), None);
}

#[test]
fn each_period_from_1_to_13_is_caught_and_14_is_not() {
    for n in 1..=13u32 {
        let gram: Vec<u32> = (1..=n).collect();
        assert_eq!(olmoe_filter(&with_repeats(&gram, 31)), None, "n = {n}, 31 repeats");
        assert_eq!(olmoe_filter(&with_repeats(&gram, 32)), Some((n as usize, 20)), "n = {n}, 32 repeats");
    }
    let gram14: Vec<u32> = (1..=14).collect();
    assert_eq!(olmoe_filter(&with_repeats(&gram14, 100)), None);
    assert_eq!(repeated_ngram(&with_repeats(&gram14, 32), 1, 14, 32), Some((14, 20)));
    // min_n: a 1-gram run is not looked for from period 2 up, but it is also a 2-gram run
    // (twice as many tokens needed).
    assert_eq!(repeated_ngram(&with_repeats(&[7], 63), 2, 13, 32), None);
    assert_eq!(repeated_ngram(&with_repeats(&[7], 64), 2, 13, 32), Some((2, 20)));
}

#[test]
fn a_run_broken_in_the_middle_is_kept() {
    let gram = [5, 6, 7];
    let mut tokens = with_repeats(&gram, 40);
    tokens[20 + 20 * 3 + 1] = 99; // one token changed in the 21st repeat: 20 and 19 repeats remain
    assert_eq!(olmoe_filter(&tokens), None);
    // Two 20-repeat runs of the same 1-gram side by side, with one other token between.
    let mut split = vec![4u32; 20];
    split.push(8);
    split.extend([4u32; 20]);
    assert_eq!(olmoe_filter(&split), None);
}

#[test]
fn overlapping_periods_report_the_first_run_to_complete() {
    // "a b a b …" is a run of period 2 and also of period 4 and 6: the 2-gram completes first.
    let tokens = with_repeats(&[1, 2], 32);
    assert_eq!(olmoe_filter(&tokens), Some((2, 20)));
    // A 1-gram run of 64 is found as the 1-gram (at 32), not as a 2-gram.
    assert_eq!(olmoe_filter(&[3; 64]), Some((1, 0)));
    // "1 1 2" repeated: the 1-gram runs are length 2, the 3-gram run is the one caught.
    assert_eq!(olmoe_filter(&with_repeats(&[1, 1, 2], 32)), Some((3, 20)));
    // The run may start on any token: shifted by one filler token, the start moves with it.
    let mut shifted = vec![999u32];
    shifted.extend(with_repeats(&[1, 1, 2], 32));
    assert_eq!(olmoe_filter(&shifted), Some((3, 21)));
    // A run that starts mid-gram: "2 | 1 1 2 1 1 2 …" is also "2 1 1" repeated, from token 0.
    let mut mid = vec![2u32];
    for _ in 0..31 {
        mid.extend([1, 1, 2]);
    }
    mid.extend([1, 1]); // 2 + 31 * 3 + 2 = 96 = 32 * 3 tokens of period 3
    assert_eq!(olmoe_filter(&mid), Some((3, 0)));
    mid.pop();
    assert_eq!(olmoe_filter(&mid), None);
}

#[test]
fn empty_and_short_inputs_are_kept() {
    assert_eq!(olmoe_filter(&[]), None);
    assert_eq!(olmoe_filter(&[1]), None);
    assert_eq!(olmoe_filter(&(0..5000).collect::<Vec<u32>>()), None);
}

// ---- prepare on a small corpus

/// The first `bytes` bytes of a bundled play (the texts are ASCII).
fn play(name: &str, bytes: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare").join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap();
    text[..bytes.min(text.len())].to_string()
}

/// A corpus of five short documents, the three validation plays among them, and one made of a
/// repeated phrase.
fn small_corpus(dir: &Path) -> Vec<(String, String)> {
    let chorus = "fa la la ".repeat(60);
    let docs = vec![
        ("a_macbeth".to_string(), play("macbeth", 3000)),
        ("b_tempest".to_string(), play("tempest", 2000)),
        ("chorus".to_string(), chorus),
        ("hamlet".to_string(), play("hamlet", 2500)),
        ("henry_v".to_string(), play("henry_v", 1500)),
        ("twelfth_night".to_string(), play("twelfth_night", 1800)),
    ];
    for (name, text) in &docs {
        std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    }
    std::fs::write(dir.join("README.md"), "not a document").unwrap();
    docs
}

fn tiny_tokenizer(docs: &[(String, String)]) -> Tokenizer {
    let texts: Vec<String> = docs.iter().map(|(_, t)| t.clone()).collect();
    train(&texts, 300, &["<|endoftext|>", "<|padding|>"])
}

#[test]
fn prepare_filters_joins_and_splits() {
    let corpus = temp_dir("prepare-corpus");
    let out = temp_dir("prepare-out").join("nested");
    let docs = small_corpus(&corpus);
    let tokenizer = tiny_tokenizer(&docs);
    let eot = tokenizer.token_id(END_OF_TEXT).unwrap();
    assert_eq!(eot, 0);

    let report = prepare(&corpus, &tokenizer, &out).unwrap();
    let encoded = |name: &str| tokenizer.encode(&docs.iter().find(|(n, _)| n == name).unwrap().1);
    let joined = |names: &[&str]| -> Vec<u32> {
        names.iter().flat_map(|n| encoded(n).into_iter().chain([eot])).collect()
    };
    let train_expected = joined(&["a_macbeth", "b_tempest"]);
    let val_expected = joined(&["hamlet", "henry_v", "twelfth_night"]);

    // The repeated phrase is the one document dropped, with its token count.
    assert_eq!(report.dropped.len(), 1, "{report}");
    assert_eq!(report.dropped[0].name, "chorus");
    assert_eq!(report.dropped[0].tokens, encoded("chorus").len());
    // The run it reports is one: 32 repeats of its n-gram from its start.
    let (n, start, chorus) = (report.dropped[0].period, report.dropped[0].start, encoded("chorus"));
    assert!(n <= 13 && start + 32 * n <= chorus.len(), "{:?}", report.dropped);
    assert!((start + n..start + 32 * n).all(|i| chorus[i] == chorus[i - n]), "{:?}", report.dropped);
    assert_eq!(report.dropped_documents(), 1);
    assert_eq!(report.dropped_tokens(), encoded("chorus").len());

    assert_eq!((report.train_documents, report.val_documents), (2, 3));
    assert_eq!(report.train_tokens, train_expected.len());
    assert_eq!(report.val_tokens, val_expected.len());

    // The files hold exactly the kept documents, in name order, each followed by <|endoftext|>.
    let train_file = TokenFile::open(&out.join("train.bin")).unwrap();
    let val_file = TokenFile::open(&out.join("val.bin")).unwrap();
    assert_eq!(train_file.tokens(), &train_expected[..]);
    assert_eq!(val_file.tokens(), &val_expected[..]);
    assert_eq!(train_file.tokens().iter().filter(|&&t| t == eot).count(), 2);
    assert_eq!(val_file.tokens().iter().filter(|&&t| t == eot).count(), 3);
    assert_eq!(std::fs::metadata(out.join("train.bin")).unwrap().len(), 4 * train_expected.len() as u64);
    // The validation plays' text is in val.bin and not in train.bin.
    let hamlet_start = &encoded("hamlet")[..20];
    assert!(val_file.tokens().windows(20).any(|w| w == hamlet_start));
    assert!(!train_file.tokens().windows(20).any(|w| w == hamlet_start));
    // Written through a temporary name, none left behind.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["train.bin", "val.bin"]);

    // Preparing again gives the same bytes.
    prepare(&corpus, &tokenizer, &out).unwrap();
    assert_eq!(TokenFile::open(&out.join("train.bin")).unwrap().tokens(), &train_expected[..]);
}

#[test]
fn corpus_errors_name_the_problem() {
    let docs = vec![("x".to_string(), "To be, or not to be".to_string())];
    let tokenizer = tiny_tokenizer(&docs);
    let out = temp_dir("errors-out");

    let missing = std::env::temp_dir().join(format!("moe-data-{}-no-such-dir", std::process::id()));
    let e = message(prepare(&missing, &tokenizer, &out).unwrap_err());
    assert!(e.contains("no-such-dir") && e.contains("cannot be read") && e.contains("HINT"), "{e}");

    let empty = temp_dir("errors-empty");
    let e = message(read_corpus(&empty).unwrap_err());
    assert!(e.contains("errors-empty") && e.contains("no .txt file"), "{e}");
    std::fs::write(empty.join("notes.md"), "hello").unwrap();
    let e = message(prepare(&empty, &tokenizer, &out).unwrap_err());
    assert!(e.contains("no .txt file"), "{e}");

    let bad = temp_dir("errors-utf8");
    std::fs::write(bad.join("ok.txt"), "fine").unwrap();
    std::fs::write(bad.join("latin1.txt"), b"caf\xe9").unwrap();
    let e = message(read_corpus(&bad).unwrap_err());
    assert!(e.contains("latin1.txt") && e.contains("not UTF-8") && e.contains("offset 3"), "{e}");

    // A corpus without the validation plays.
    let e = message(prepare(&temp_dir_with(&[("ok", "fine")]), &tokenizer, &out).unwrap_err());
    assert!(e.contains("hamlet.txt") && e.contains("validation"), "{e}");

    // A tokenizer without <|endoftext|>.
    let no_eot = train(&["To be, or not to be".to_string()], 280, &["<|padding|>"]);
    let corpus = temp_dir("errors-corpus");
    small_corpus(&corpus);
    let e = message(prepare(&corpus, &no_eot, &out).unwrap_err());
    assert!(e.contains(END_OF_TEXT), "{e}");

    // An output folder that cannot be made: a file stands where it should be.
    let blocker = out.join("file");
    std::fs::write(&blocker, "x").unwrap();
    assert!(matches!(prepare(&corpus, &tokenizer, &blocker.join("sub")), Err(Error::Io { .. })));
}

fn temp_dir_with(files: &[(&str, &str)]) -> PathBuf {
    let dir = temp_dir("with");
    for (name, text) in files {
        std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    }
    dir
}

/// The bundled corpus with OLMoE's own tokenizer: what the filter drops, and the split.
#[test]
fn bundled_corpus_with_the_olmo_tokenizer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tokenizer =
        Tokenizer::load(&root.join("tests/golden/tokenizer/olmoe-gpt-neox-olmo-dolma-v1_5.json")).unwrap();
    let out = temp_dir("bundled");
    let report = prepare(&root.join("data/shakespeare"), &tokenizer, &out).unwrap();
    println!("{report}");
    assert_eq!(report.train_documents + report.val_documents + report.dropped_documents(), 42);
    assert_eq!(report.val_documents, VALIDATION_PLAYS.len());
    assert_eq!(report.dropped, []);
    let share = report.val_tokens as f64 / (report.train_tokens + report.val_tokens) as f64;
    assert!((0.07..0.11).contains(&share), "validation share {share}");
    let _ = std::fs::remove_dir_all(&out);
}

// ---- token files

#[test]
fn token_file_round_trip() {
    let dir = temp_dir("tokenfile");
    let path = dir.join("t.bin");
    let tokens: Vec<u32> = vec![0, 1, 50279, u32::MAX, 7, 123_456];
    write_tokens(&path, &tokens).unwrap();
    assert_eq!(std::fs::read(&path).unwrap()[..12], [0, 0, 0, 0, 1, 0, 0, 0, 0x67, 0xc4, 0, 0]);
    let file = TokenFile::open(&path).unwrap();
    assert_eq!(file.tokens(), &tokens[..]);
    assert_eq!((file.len(), file.is_empty()), (6, false));
    assert_eq!(file.path(), path);

    write_tokens(&path, &[]).unwrap();
    let empty = TokenFile::open(&path).unwrap();
    assert!(empty.is_empty() && empty.tokens().is_empty());

    std::fs::write(&path, [1u8, 2, 3, 4, 5, 6, 7]).unwrap();
    let e = message(TokenFile::open(&path).unwrap_err());
    assert!(e.contains("7 bytes") && e.contains("t.bin"), "{e}");
    assert!(matches!(TokenFile::open(&dir.join("absent.bin")), Err(Error::Io { .. })));
}

// ---- batches

/// A token file whose token at position p is p, so a sample is known by its first token.
fn counting_file(name: &str, len: u32) -> TokenFile {
    let path = temp_dir(name).join("tokens.bin");
    write_tokens(&path, &(0..len).collect::<Vec<u32>>()).unwrap();
    TokenFile::open(&path).unwrap()
}

const SEQ: usize = 4;

/// The sample numbers of a batch, checking each row is one whole window.
fn samples_of(ids: &[u32]) -> Vec<usize> {
    ids.chunks(SEQ)
        .map(|row| {
            let k = row[0] as usize / SEQ;
            assert_eq!(row, [0, 1, 2, 3].map(|j| (k * SEQ + j) as u32), "a row is not one window");
            k
        })
        .collect()
}

/// `batches` batches as one stream of sample numbers.
fn stream(batches: &mut Batches, count: usize) -> Vec<usize> {
    (0..count).flat_map(|_| samples_of(&batches.next_batch().ids)).collect()
}

#[test]
fn every_sample_once_per_epoch_in_a_new_order() {
    // 43 tokens: 10 whole samples of 4, the last 3 tokens left out.
    let mut batches = Batches::new(counting_file("epochs", 43), SEQ, 3, 42).unwrap();
    assert_eq!(batches.samples(), 10);
    let all = stream(&mut batches, 10); // 30 samples: 3 epochs, batches straddling epoch ends
    let epochs: Vec<&[usize]> = all.chunks(10).collect();
    for epoch in &epochs {
        let mut sorted = epoch.to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    assert_ne!(epochs[0], (0..10).collect::<Vec<_>>(), "epoch 0 is not shuffled");
    assert_eq!(epochs[1], epoch_order(42, 1, 10));
    assert_eq!(batches.position(), Position { epoch: 3, index: 0 });

    // The same seed gives the same stream, another seed another.
    let mut again = Batches::new(counting_file("epochs-again", 43), SEQ, 3, 42).unwrap();
    assert_eq!(stream(&mut again, 10), all);
    let mut other = Batches::new(counting_file("epochs-other", 43), SEQ, 3, 43).unwrap();
    assert_ne!(stream(&mut other, 10), all);
}

#[test]
fn batches_report_their_positions() {
    let mut batches = Batches::new(counting_file("positions", 40), SEQ, 4, 1).unwrap();
    let b = batches.next_batch();
    assert_eq!(b.ids.len(), 4 * SEQ);
    assert_eq!((b.start, b.after), (Position { epoch: 0, index: 0 }, Position { epoch: 0, index: 4 }));
    batches.next_batch();
    let b = batches.next_batch(); // samples 8, 9 of epoch 0, then 0, 1 of epoch 1
    assert_eq!((b.start, b.after), (Position { epoch: 0, index: 8 }, Position { epoch: 1, index: 2 }));
    let mut expected = epoch_order(1, 0, 10)[8..].to_vec();
    expected.extend_from_slice(&epoch_order(1, 1, 10)[..2]);
    assert_eq!(samples_of(&b.ids), expected);
}

#[test]
fn resuming_from_a_position_continues_identically() {
    let mut full = Batches::new(counting_file("resume-full", 4 * 13), SEQ, 5, 7).unwrap();
    let uninterrupted = stream(&mut full, 12);
    for stop in [0, 1, 2, 3, 7] {
        let mut first = Batches::new(counting_file("resume-a", 4 * 13), SEQ, 5, 7).unwrap();
        let mut got = stream(&mut first, stop);
        let saved = first.position();
        drop(first);
        let mut resumed =
            Batches::from_position(counting_file("resume-b", 4 * 13), SEQ, 5, 7, saved).unwrap();
        assert_eq!(resumed.position(), saved);
        got.extend(stream(&mut resumed, 12 - stop));
        assert_eq!(got, uninterrupted, "resumed after {stop} batches");
    }
    // The end of an epoch is a valid position too: it continues with the next epoch.
    let end = Position { epoch: 0, index: 13 };
    let mut at_end = Batches::from_position(counting_file("resume-end", 4 * 13), SEQ, 5, 7, end).unwrap();
    assert_eq!(at_end.position(), Position { epoch: 1, index: 0 });
    assert_eq!(samples_of(&at_end.next_batch().ids), epoch_order(7, 1, 13)[..5]);
}

#[test]
fn too_small_corpora_and_bad_positions_are_errors() {
    // 10 samples cannot make a batch of 11.
    let e = message(Batches::new(counting_file("small", 43), SEQ, 11, 0).unwrap_err());
    assert!(e.contains("43 tokens") && e.contains("10 samples") && e.contains("one batch of 11"), "{e}");
    assert!(Batches::new(counting_file("small-ok", 43), SEQ, 10, 0).is_ok());
    // Fewer tokens than one sample; an empty file.
    assert!(Batches::new(counting_file("tiny", 3), SEQ, 1, 0).is_err());
    assert!(Batches::new(counting_file("empty", 0), SEQ, 1, 0).is_err());
    assert!(Batches::new(counting_file("zero", 40), 0, 1, 0).is_err());
    assert!(Batches::new(counting_file("zero-batch", 40), SEQ, 0, 0).is_err());
    let past = Position { epoch: 2, index: 11 };
    let e = message(Batches::from_position(counting_file("past", 40), SEQ, 2, 0, past).unwrap_err());
    assert!(e.contains("sample 11") && e.contains("10 samples"), "{e}");
}

#[test]
fn validation_batches_are_a_fixed_pass_in_file_order() {
    let tokens: Vec<u32> = (0..43).collect();
    let batches: Vec<&[u32]> = validation_batches(&tokens, SEQ, 3).unwrap().collect();
    assert_eq!(batches.len(), 4);
    assert_eq!(batches[0], &tokens[0..12]);
    assert_eq!(batches[3], &tokens[36..40], "the last batch holds the one whole sample left");
    let again: Vec<&[u32]> = validation_batches(&tokens, SEQ, 3).unwrap().collect();
    assert_eq!(again, batches);
    assert!(validation_batches(&tokens[..3], SEQ, 3).is_err());
    assert!(validation_batches(&tokens, 0, 3).is_err());
    assert!(data::is_validation("hamlet") && !data::is_validation("macbeth"));
}
