//! `moe tokenizer-train`, `moe tokenize`, `moe detokenize`: train a byte-level BPE tokenizer
//! on text files, and turn text into ids and ids back into text with any `tokenizer.json`.

use crate::cli::Args;
use crate::error::{Error, Result};
use crate::tokenizer::train::{count_words, learn, SPECIAL_TOKENS};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const TRAIN_HELP: &str = "\
moe tokenizer-train --input FILES_OR_DIR --vocab-size N --out tokenizer.json
  Trains a byte-level BPE tokenizer (NFC, the GPT-2 split, 256 byte tokens) with the special
  tokens <|endoftext|> (id 0) and <|padding|> (id 1); learns the merges `tokenizers`' BpeTrainer
  learns on the same documents.
  --input       .txt files and/or directories, separated by commas; a directory gives every
                .txt file below it, in sorted path order. Each file is one document.
  --vocab-size  entries in all, the 2 special and 256 byte tokens included (at least 258)
  --out         the tokenizer.json to write (Hugging Face format: tokenizers loads it)
";

pub const TOKENIZE_HELP: &str = "\
moe tokenize --tokenizer FILE (--text TEXT | --file PATH)
  Prints the token ids of TEXT (or of the file's contents), separated by spaces.
  FILE: a Hugging Face tokenizer.json with a byte-level BPE model.
";

pub const DETOKENIZE_HELP: &str = "\
moe detokenize --tokenizer FILE --ids \"1 2 3\"
  Prints the text of the ids (separated by spaces or commas) exactly, with no newline added;
  bytes that are not valid UTF-8 print as U+FFFD, as `tokenizers` decodes them.
";

// ---- moe tokenizer-train

pub fn run_train(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{TRAIN_HELP}");
        return Ok(());
    }
    args.check(&["input", "vocab-size", "out"])?;
    let (input, out) = (args.required("input", TRAIN_HELP)?, Path::new(args.required("out", TRAIN_HELP)?));
    let vocab_size = args.count("vocab-size")?.ok_or_else(|| args.missing("vocab-size", TRAIN_HELP))?;
    let floor = SPECIAL_TOKENS.len() + 256;
    if vocab_size < floor {
        return Err(Error::invalid("--vocab-size", format!("{vocab_size} is below {floor}")).with_hint(
            format!(
                "the vocabulary holds the {} special tokens and the 256 byte tokens",
                SPECIAL_TOKENS.len()
            ),
        ));
    }
    u32::try_from(vocab_size)
        .map_err(|_| Error::invalid("--vocab-size", format!("{vocab_size} does not fit 32-bit token ids")))?;

    let start = Instant::now();
    let files = text_files(input)?;
    let texts = files.iter().map(|f| read_text(f)).collect::<Result<Vec<String>>>()?;
    let bytes: usize = texts.iter().map(String::len).sum();
    let words = count_words(&texts);
    println!(
        "read {} documents, {:.2} MB: {} distinct words ({:.2} s)",
        texts.len(),
        bytes as f64 / 1e6,
        words.len(),
        start.elapsed().as_secs_f64()
    );
    let merge_start = Instant::now();
    let trained = learn(&words, vocab_size, &SPECIAL_TOKENS, 0);
    let (vocab, merges) = (trained.vocab.len(), trained.merges.len());
    println!("learned {merges} merges ({:.2} s)", merge_start.elapsed().as_secs_f64());
    trained.into_tokenizer().save(out)?;
    let short = if vocab < vocab_size { " (every pair merged: the corpus allows no more)" } else { "" };
    println!(
        "wrote {}: vocab {vocab}{short} = {} special + 256 bytes + {merges} merges, {:.2} s in all",
        out.display(),
        SPECIAL_TOKENS.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The files `--input` names: each comma-separated entry a file, or a directory searched
/// recursively for `.txt` files (in sorted path order).
pub fn text_files(input: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in input.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let path = Path::new(entry);
        if path.is_dir() {
            let mut found = Vec::new();
            txt_files_under(path, &mut found)?;
            if found.is_empty() {
                return Err(Error::invalid(
                    format!("--input {entry}"),
                    "a directory with no .txt file in it",
                ));
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.to_path_buf());
        } else {
            return Err(Error::invalid(format!("--input {entry}"), "no such file or directory"));
        }
    }
    if files.is_empty() {
        return Err(Error::invalid("--input", "names no file"));
    }
    Ok(files)
}

fn txt_files_under(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            txt_files_under(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "txt") {
            found.push(path);
        }
    }
    Ok(())
}

/// A file's contents as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

// ---- moe tokenize

pub fn run_tokenize(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{TOKENIZE_HELP}");
        return Ok(());
    }
    args.check(&["tokenizer", "text", "file"])?;
    let tokenizer = load(args, TOKENIZE_HELP)?;
    let text = match (args.value("text")?, args.value("file")?) {
        (Some(text), None) => text.to_string(),
        (None, Some(path)) => read_text(Path::new(path))?,
        _ => {
            return Err(Error::invalid("moe tokenize", "give exactly one of --text and --file")
                .with_hint(TOKENIZE_HELP))
        }
    };
    let ids: Vec<String> = tokenizer.encode(&text).iter().map(u32::to_string).collect();
    println!("{}", ids.join(" "));
    Ok(())
}

// ---- moe detokenize

pub fn run_detokenize(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{DETOKENIZE_HELP}");
        return Ok(());
    }
    args.check(&["tokenizer", "ids"])?;
    let tokenizer = load(args, DETOKENIZE_HELP)?;
    let ids = args.required("ids", DETOKENIZE_HELP)?;
    let ids = parse_ids(ids, tokenizer.vocab_size())?;
    print!("{}", tokenizer.decode(&ids));
    Ok(())
}

/// Token ids separated by spaces or commas, each below `vocab_size`.
pub fn parse_ids(text: &str, vocab_size: usize) -> Result<Vec<u32>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u32>() {
            Ok(id) if (id as usize) < vocab_size => Ok(id),
            Ok(id) => Err(Error::invalid(
                "--ids",
                format!("id {id} is outside the vocabulary (vocab_size {vocab_size})"),
            )),
            Err(_) => Err(Error::invalid(
                "--ids",
                format!("'{s}' is not a token id (expected non-negative integers separated by spaces)"),
            )),
        })
        .collect()
}

fn load(args: &Args, help: &str) -> Result<Tokenizer> {
    let path = args.required("tokenizer", help)?;
    Tokenizer::load(Path::new(path))
}
