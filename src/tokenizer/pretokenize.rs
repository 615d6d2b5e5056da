//! The GPT-2 pre-tokenizer split, as a hand-written scanner (no regex engine):
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//! The `tokenizers` library runs this pattern with Oniguruma (its `SysRegex`) and keeps every
//! match as a piece ("isolated"). The alternatives are tried in order at each position, the
//! first that matches wins (leftmost-first), each `+` is greedy. Read as a scanner, at a
//! position holding character `c`:
//!
//! 1. `'` followed by `s t m d` or `re ve ll` (lowercase only): that contraction.
//! 2. a space (U+0020 only) followed by a letter, number or other: the space joins the run
//!    of that class after it (` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`).
//! 3. a letter, number or other: the maximal run of its class. An "other" run swallows
//!    apostrophes, so `''s` is `''` + `s`.
//! 4. whitespace: the maximal run of whitespace. At the end of the text, all of it. Before a
//!    non-space, `\s+(?!\S)` backtracks by one character, so the run minus its last character
//!    (whose space then starts the next piece by rule 2: `"x    ="` is `x`, `"   "`, `" ="`);
//!    a single whitespace character there is `\s+` alone.
//!
//! Classes: `\p{L}` and `\p{N}` from unicode.rs; `\s` is Unicode White_Space (U+0009..U+000D,
//! U+0020, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000):
//! what Oniguruma's `\s` matches in UTF-8 (its doc: 0009..000D, 0085 and the Zs/Zl/Zp
//! categories); checked against the library over every code point when this was written, and
//! tests/golden/tokenizer/pretokenize.json has most of them in random strings. It is not Python's
//! `str.isspace` (which adds U+001C..U+001F) and leaves out U+200B and U+FEFF.

use super::unicode::{is_letter, is_number};

/// Splits `text` by the GPT-2 pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// into consecutive pieces that concatenate back to `text`.
pub fn split(text: &str) -> Vec<&str> {
    pieces(text).collect()
}

/// The pieces of `text`, lazily (what `split` collects).
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { text, pos: 0 }
}

/// Iterator over the pieces of a text; see [`pieces`].
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        self.pos = piece_end(self.text, start);
        Some(&self.text[start..self.pos])
    }
}

// ---- the scanner

/// What a character is to the pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t'..='\r' | ' ' => Class::Space,
            _ => Class::Other,
        };
    }
    if is_white_space(c) {
        Class::Space
    } else if is_letter(c) {
        Class::Letter
    } else if is_number(c) {
        Class::Number
    } else {
        Class::Other
    }
}

/// Unicode White_Space (`\s` in Oniguruma and in Rust's `regex`).
fn is_white_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// The character starting at byte `i` of `text` (a character boundary below `text.len()`).
fn char_at(text: &str, i: usize) -> char {
    let b = text.as_bytes()[i];
    if b < 0x80 {
        return b as char;
    }
    text[i..].chars().next().expect("char_at: position inside the text")
}

/// The end of the run of characters of class `class` starting at byte `i`.
fn run_end(text: &str, mut i: usize, want: Class) -> usize {
    while i < text.len() {
        let c = char_at(text, i);
        if class(c) != want {
            break;
        }
        i += c.len_utf8();
    }
    i
}

/// The end (byte offset) of the piece that starts at byte `start`.
fn piece_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let c = char_at(text, start);
    // 1. contractions
    if c == '\'' {
        let rest = &bytes[start + 1..];
        if let [b's' | b't' | b'm' | b'd', ..] = rest {
            return start + 2;
        }
        if let [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] = rest {
            return start + 3;
        }
    }
    let cls = class(c);
    // 2. a space joins the non-space run after it
    if c == ' ' && start + 1 < text.len() {
        let next = class(char_at(text, start + 1));
        if next != Class::Space {
            return run_end(text, start + 1, next);
        }
    }
    // 3. a run of letters, numbers or others
    if cls != Class::Space {
        return run_end(text, start, cls);
    }
    // 4. whitespace: all of it at the end, else all but the last character (if that leaves one)
    let end = run_end(text, start, Class::Space);
    if end == text.len() {
        return end;
    }
    let last = text[start..end].chars().next_back().expect("a run has a character");
    let shorter = end - last.len_utf8();
    if shorter > start {
        shorter
    } else {
        end
    }
}
