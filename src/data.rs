//! The training data: a folder of documents → OLMoE's repetition filter → token files that
//! training memory-maps → shuffled batches that resume exactly.
//!
//! 1. [`read_corpus`]: every `.txt` file of a folder, in sorted order, is one document. The
//!    plays named in [`VALIDATION_PLAYS`] are the validation split, the rest training.
//! 2. [`repeated_ngram`]: OLMoE's quality filter (SPEC.md 2.1, OLMo's `repetition` instance
//!    filter with periods 1..=13 and max count 32).
//! 3. [`prepare`]: tokenize, filter, join and write `train.bin` / `val.bin` ([`write_tokens`]).
//! 4. [`TokenFile`]: a token file through a memory map, viewed as `&[u32]` without a copy.
//! 5. [`Batches`]: training batches, reshuffled every epoch from (seed, epoch);
//!    [`validation_batches`]: a fixed pass in file order.
//!
//! The token file format is the simplest there is: no header, the token ids one after the
//! other as u32 little-endian; the number of tokens is the file size / 4.

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use memmap2::Mmap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The token that follows every document in a token file (dolma's `--tokenizer.eos_token_id`).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// OLMoE's filter settings (`instance_filter`: repetition_min_period 1, repetition_max_period 13,
/// repetition_max_count 32).
pub const REPETITION_MIN_PERIOD: usize = 1;
pub const REPETITION_MAX_PERIOD: usize = 13;
pub const REPETITION_MAX_COUNT: usize = 32;

/// The validation split: whole plays (file stems in `data/shakespeare/`), one tragedy, one
/// history and one comedy: 173,942 + 152,768 + 114,876 = 441,586 bytes, 8.7% of the corpus's 5,057,198.
/// Whole plays, not random lines, because the lines of one play are strongly correlated.
pub const VALIDATION_PLAYS: &[&str] = &["hamlet", "henry_v", "twelfth_night"];

// ---- 1. the corpus

/// One document: a file's stem (`hamlet` for `hamlet.txt`) and its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub name: String,
    pub text: String,
}

/// Reads every `*.txt` file in `dir` (not recursing), sorted by file name, each one document.
/// Errors name the folder when it is missing or holds no `.txt` file, and the file when one
/// is not UTF-8.
pub fn read_corpus(dir: &Path) -> Result<Vec<Document>> {
    let what = || format!("corpus folder {}", dir.display());
    let hint =
        "pass a folder of plain-text .txt files, one document each (the bundled one is data/shakespeare)";
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::invalid(what(), format!("cannot be read: {e}")).with_hint(hint))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "txt") {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(Error::invalid(what(), "holds no .txt file").with_hint(hint));
    }
    paths.sort();
    let mut documents = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            Error::invalid(path.display().to_string(), format!("is not UTF-8 text (bad byte at offset {at})"))
                .with_hint("convert the file to UTF-8, or remove it from the corpus folder")
        })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        documents.push(Document { name, text });
    }
    Ok(documents)
}

/// Whether a document belongs to the validation split.
pub fn is_validation(name: &str) -> bool {
    VALIDATION_PLAYS.contains(&name)
}

/// The texts of the training split: what a tokenizer is trained on when none is given.
pub fn training_texts(documents: &[Document]) -> Vec<String> {
    documents.iter().filter(|d| !is_validation(&d.name)).map(|d| d.text.clone()).collect()
}

// ---- 2. the repetition filter

/// Finds a run of `max_count` or more back-to-back repeats of one n-gram, for any n in
/// `min_n..=max_n`: returns (n, start) of the first such run to complete (smallest end, then
/// smallest n), or None.
///
/// "The n-gram repeats 32 times back to back" means a stretch of at least 32·n tokens with
/// period n: `tokens[i] == tokens[i - n]` for every i in the stretch past its first n tokens.
/// This is OLMo's `find_periodic_sequences`, which reports a maximal stretch of period n and
/// length L as `times = L / n` (rounded down) repeats, and the `repetition` instance filter,
/// which drops an instance when some `times >= repetition_max_count`. (OLMo finds stretches
/// by comparing rows of the sequence reshaped to width n, which can miss stretches of fewer
/// than 3 repeats; at 32 repeats there is no difference.) OLMo filters 4096-token training
/// instances; here whole documents are filtered, before joining: a run inside an instance
/// is a run inside its document, so every document whose instances OLMo would drop is dropped.
///
/// One pass, O(len · max_n): for each period n, `run[n]` counts the consecutive positions
/// ending here where the token equals the one n back. A stretch of period n ending at i
/// spans `run[n] + n` tokens, so 32 repeats are reached when `run[n] + n >= 32·n`.
pub fn repeated_ngram(
    tokens: &[u32],
    min_n: usize,
    max_n: usize,
    max_count: usize,
) -> Option<(usize, usize)> {
    assert!(min_n >= 1 && min_n <= max_n, "repeated_ngram: need 1 <= min_n <= max_n, got {min_n}..={max_n}");
    assert!(max_count >= 2, "repeated_ngram: max_count must be at least 2, got {max_count}");
    let mut run = vec![0usize; max_n + 1];
    for i in 0..tokens.len() {
        for n in min_n..=max_n.min(i) {
            if tokens[i] != tokens[i - n] {
                run[n] = 0;
                continue;
            }
            run[n] += 1;
            if run[n] + n >= max_count * n {
                return Some((n, i + 1 - max_count * n));
            }
        }
    }
    None
}

/// OLMoE's filter: whether `tokens` holds a 1..=13-gram repeated 32 or more times in a row.
pub fn fails_repetition_filter(tokens: &[u32]) -> Option<(usize, usize)> {
    repeated_ngram(tokens, REPETITION_MIN_PERIOD, REPETITION_MAX_PERIOD, REPETITION_MAX_COUNT)
}

// ---- 3. preparation: documents → filtered, joined token files

/// A document the repetition filter dropped: its name, token count, and the first run found
/// (period n, start token).
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    pub name: String,
    pub tokens: usize,
    pub period: usize,
    pub start: usize,
}

/// What [`prepare`] did: documents and tokens per split (tokens include one
/// `<|endoftext|>` per document), and what the filter dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct PrepReport {
    pub train_path: PathBuf,
    pub val_path: PathBuf,
    pub train_documents: usize,
    pub val_documents: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub dropped: Vec<Dropped>,
}

impl PrepReport {
    pub fn dropped_documents(&self) -> usize {
        self.dropped.len()
    }

    pub fn dropped_tokens(&self) -> usize {
        self.dropped.iter().map(|d| d.tokens).sum()
    }
}

impl fmt::Display for PrepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "train {} documents, {} tokens; validation {} documents, {} tokens; \
             repetition filter dropped {} documents, {} tokens",
            self.train_documents,
            self.train_tokens,
            self.val_documents,
            self.val_tokens,
            self.dropped_documents(),
            self.dropped_tokens()
        )
    }
}

/// Prepares `corpus_dir` for training with `tokenizer`: reads the documents ([`read_corpus`]),
/// tokenizes each, drops those failing the repetition filter, and writes the rest, each
/// followed by `<|endoftext|>` (as dolma appends the EOS id to every document), in file
/// order to `out_dir/train.bin` and `out_dir/val.bin` (the [`VALIDATION_PLAYS`]).
///
/// What the filter drops from the bundled corpus depends on the tokenizer (measured): with
/// OLMoE's, nothing (train 39 plays, 1,425,707 tokens; validation 3, 135,759 tokens); with a
/// BPE trained on the training split, nothing at 4096 tokens, one poem at 1024
/// (`rape_of_lucrece`: a rule of underscores) and 8 plays at 300 (runs of indenting spaces,
/// one token per space).
pub fn prepare(corpus_dir: &Path, tokenizer: &Tokenizer, out_dir: &Path) -> Result<PrepReport> {
    let eot = tokenizer.token_id(END_OF_TEXT).ok_or_else(|| {
        Error::invalid("tokenizer", format!("has no {END_OF_TEXT} token to join documents with"))
            .with_hint(format!("train the tokenizer with {END_OF_TEXT} as a special token"))
    })?;
    let documents = read_corpus(corpus_dir)?;
    for play in VALIDATION_PLAYS {
        if !documents.iter().any(|d| d.name == *play) {
            return Err(Error::invalid(
                format!("corpus folder {}", corpus_dir.display()),
                format!("has no {play}.txt, which the validation split needs"),
            )
            .with_hint(format!("the validation plays are {}", VALIDATION_PLAYS.join(", "))));
        }
    }
    let ids = encode_all(tokenizer, &documents);

    let (mut train, mut val) = (Vec::new(), Vec::new());
    let (mut train_documents, mut val_documents) = (0, 0);
    let mut dropped = Vec::new();
    for (doc, ids) in documents.iter().zip(ids) {
        if let Some((period, start)) = fails_repetition_filter(&ids) {
            dropped.push(Dropped { name: doc.name.clone(), tokens: ids.len(), period, start });
            continue;
        }
        let (out, count) = if is_validation(&doc.name) {
            (&mut val, &mut val_documents)
        } else {
            (&mut train, &mut train_documents)
        };
        out.extend_from_slice(&ids);
        out.push(eot);
        *count += 1;
    }

    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io { path: out_dir.to_path_buf(), source })?;
    let (train_path, val_path) = (out_dir.join("train.bin"), out_dir.join("val.bin"));
    write_tokens(&train_path, &train)?;
    write_tokens(&val_path, &val)?;
    Ok(PrepReport {
        train_path,
        val_path,
        train_documents,
        val_documents,
        train_tokens: train.len(),
        val_tokens: val.len(),
        dropped,
    })
}

/// Tokenizes the documents on all cores, one document per task (the longest first).
fn encode_all(tokenizer: &Tokenizer, documents: &[Document]) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(documents.len()).max(1);
    let mut order: Vec<usize> = (0..documents.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(documents[i].text.len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); documents.len()];
    let done: Vec<Vec<(usize, Vec<u32>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = order.get(k) else { break };
                        out.push((i, tokenizer.encode(&documents[i].text)));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a tokenizer thread panicked")).collect()
    });
    for (i, doc_ids) in done.into_iter().flatten() {
        ids[i] = doc_ids;
    }
    ids
}

/// Writes `tokens` as a token file (u32 little-endian, no header) to `<path>.tmp`, then
/// renames it over `path`, so a kill never leaves a half-written file under the real name.
pub fn write_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        for id in tokens {
            out.write_all(&id.to_le_bytes())?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io { path: tmp, source });
    }
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

// ---- 4. reading a token file

/// A token file opened through a memory map: the ids are read in place, never copied whole.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// None for an empty file (nothing to map).
    mmap: Option<Mmap>,
}

impl TokenFile {
    pub fn open(path: &Path) -> Result<TokenFile> {
        let what = || path.display().to_string();
        if cfg!(target_endian = "big") {
            return Err(Error::invalid(what(), "token files are little-endian; this machine is big-endian"));
        }
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size % 4 != 0 {
            return Err(Error::invalid(
                what(),
                format!("is {size} bytes, not a whole number of u32 token ids"),
            )
            .with_hint("the file is truncated or not a token file; run the data preparation again"));
        }
        if size == 0 {
            return Ok(TokenFile { path: path.to_path_buf(), mmap: None });
        }
        // SAFETY: the mapping is read-only and we treat the file as immutable while it is open.
        // Nothing can stop another process from changing or truncating it in place meanwhile
        // (the bytes would change under us, or reads fault with SIGBUS); this crate never does:
        // `write_tokens` writes `<path>.tmp` and renames, which leaves an open mapping intact.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        // A mapping starts on a page boundary, so the cast to u32 cannot fail; check anyway.
        bytemuck::try_cast_slice::<u8, u32>(&mmap)
            .map_err(|e| Error::invalid(what(), format!("cannot be read as u32 ids: {e}")))?;
        Ok(TokenFile { path: path.to_path_buf(), mmap: Some(mmap) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All the token ids, read in place.
    pub fn tokens(&self) -> &[u32] {
        match &self.mmap {
            Some(mmap) => bytemuck::cast_slice(mmap), // checked in `open`
            None => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.tokens().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---- 5. batches

/// Where the batch stream stands: the next sample is number `index` of epoch `epoch`'s order
/// (`index` < samples per epoch; `index == samples` is accepted on resuming and read as the
/// start of the next epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub epoch: u64,
    pub index: usize,
}

/// One training batch: `ids` holds `batch` samples of `seq` tokens, row after row, and
/// `start` is where the stream stood before it (save it, or `after`, to resume).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub start: Position,
    pub after: Position,
}

/// Training batches from a token file.
///
/// The samples are the non-overlapping windows `tokens[k·seq .. (k+1)·seq]` (the last partial
/// window is left out). Each holds `seq` tokens: the model shifts targets within a sequence
/// (`model::olmoe::next_token_targets`), so the last position predicts nothing. Each epoch
/// visits every sample once in an order shuffled by `Rng::new(seed ^ mix(epoch + 1))`, so the
/// order of any epoch is known from (seed, epoch) alone and a [`Position`] resumes exactly.
/// The batches are read off the concatenation of the epochs' orders: a batch at the end of
/// an epoch takes its last samples from the next one, and no sample is skipped.
#[derive(Debug)]
pub struct Batches {
    file: TokenFile,
    seq: usize,
    batch: usize,
    seed: u64,
    position: Position,
    /// The sample order of `position.epoch`.
    order: Vec<usize>,
}

impl Batches {
    /// Batches of `batch` samples of `seq` tokens, from the start of epoch 0. An error when
    /// the file holds fewer than `batch` samples.
    pub fn new(file: TokenFile, seq: usize, batch: usize, seed: u64) -> Result<Batches> {
        Batches::from_position(file, seq, batch, seed, Position { epoch: 0, index: 0 })
    }

    /// As [`Batches::new`], continuing from a position that an earlier stream reported.
    pub fn from_position(
        file: TokenFile,
        seq: usize,
        batch: usize,
        seed: u64,
        position: Position,
    ) -> Result<Batches> {
        if seq == 0 || batch == 0 {
            return Err(Error::invalid(
                "batches",
                format!("sequence length {seq} and batch size {batch} must both be at least 1"),
            ));
        }
        let samples = file.len() / seq;
        if samples < batch {
            return Err(Error::invalid(
                file.path().display().to_string(),
                format!(
                    "holds {} tokens = {samples} samples of {seq} tokens, fewer than one batch of {batch}",
                    file.len()
                ),
            )
            .with_hint("use a larger corpus, or a smaller batch size or sequence length"));
        }
        if position.index > samples {
            return Err(Error::invalid(
                "batch position",
                format!("sample {} is past the {samples} samples of an epoch", position.index),
            )
            .with_hint("resume with the same token file and sequence length as the saved run"));
        }
        let order = epoch_order(seed, position.epoch, samples);
        let mut batches = Batches { file, seq, batch, seed, position, order };
        batches.turn_epoch_if_done();
        Ok(batches)
    }

    /// Samples per epoch.
    pub fn samples(&self) -> usize {
        self.order.len()
    }

    /// The position of the next sample.
    pub fn position(&self) -> Position {
        self.position
    }

    pub fn next_batch(&mut self) -> Batch {
        let start = self.position;
        let mut ids = Vec::with_capacity(self.batch * self.seq);
        for _ in 0..self.batch {
            let k = self.order[self.position.index];
            ids.extend_from_slice(&self.file.tokens()[k * self.seq..(k + 1) * self.seq]);
            self.position.index += 1;
            self.turn_epoch_if_done();
        }
        Batch { ids, start, after: self.position }
    }

    /// At the end of an epoch, moves to the start of the next (so a position is never
    /// `index == samples`) with its new order.
    fn turn_epoch_if_done(&mut self) {
        if self.position.index == self.order.len() {
            self.position = Position { epoch: self.position.epoch + 1, index: 0 };
            self.order = epoch_order(self.seed, self.position.epoch, self.order.len());
        }
    }
}

/// The order of the samples in `epoch`: 0..samples shuffled by a generator seeded from
/// (seed, epoch). `mix` is SplitMix64's finalizer, so nearby epochs get unrelated seeds.
pub fn epoch_order(seed: u64, epoch: u64, samples: usize) -> Vec<usize> {
    let mix = |x: u64| {
        let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..samples).collect();
    Rng::new(seed ^ mix(epoch.wrapping_add(1))).shuffle(&mut order);
    order
}

/// Validation batches: the samples of `seq` tokens in file order, `batch` at a time, the last
/// batch holding what is left (whole samples only). The same pass every time; slices of the
/// file, no copy. An error when `tokens` holds no whole sample.
pub fn validation_batches(tokens: &[u32], seq: usize, batch: usize) -> Result<std::slice::Chunks<'_, u32>> {
    if seq == 0 || batch == 0 {
        return Err(Error::invalid(
            "validation batches",
            format!("sequence length {seq} and batch size {batch} must both be at least 1"),
        ));
    }
    let samples = tokens.len() / seq;
    if samples == 0 {
        return Err(Error::invalid(
            "validation tokens",
            format!("{} tokens are fewer than one sample of {seq}", tokens.len()),
        )
        .with_hint("use a larger validation split or a shorter sequence length"));
    }
    Ok(tokens[..samples * seq].chunks(batch * seq))
}
