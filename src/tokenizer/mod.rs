//! Byte-level BPE, as GPT-2 / GPT-NeoX / OLMo use it: NFC → added tokens → the GPT-2
//! pre-tokenizer split → bytes mapped to printable characters → merges by rank.
//!
//! unicode.rs     \p{L} / \p{N} classes and NFC, from generated tables (unicode_tables.rs)
//! pretokenize.rs the GPT-2 split pattern as a hand-written scanner
//! bpe.rs         the Tokenizer: encode, decode, added tokens
//! file.rs        tokenizer.json: load (byte-level BPE only) and save
//! train.rs       training a tokenizer with incremental pair counts

pub mod bpe;
pub mod file;
pub mod pretokenize;
pub mod train;
pub mod unicode;

pub use bpe::{AddedToken, Tokenizer};
