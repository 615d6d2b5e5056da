//! Unicode classes and NFC, from the Unicode 14.0.0 tables in unicode_tables.rs (written by
//! tests/golden/tokenizer/make_unicode_tables.py from Python 3.11's `unicodedata`, the version
//! the Python reference is checked with).
//!
//! `\p{L}` / `\p{N}`: General_Category L* / N*, one binary search over merged ranges.
//!
//! NFC (UAX #15), as `unicodedata.normalize('NFC', s)`:
//! ```text
//! 0. quick check   every char NFC_Quick_Check = Yes, and ccc never decreases inside a run of
//!                  non-zero ccc  ⇒  s is already NFC: return it (ASCII always is)
//! 1. decompose     c → D(c), its full recursive canonical decomposition (table), or for a
//!                  Hangul syllable s = SBase + (l·21 + v)·28 + t:
//!                      s → LBase + l, VBase + v, (TBase + t if t > 0)
//!                  SBase 0xAC00, LBase 0x1100, VBase 0x1161, TBase 0x11A7; 19 L, 21 V, 28 T
//! 2. reorder       each maximal run of ccc ≠ 0 is stable-sorted by ccc
//! 3. compose       left to right, S = the last starter (ccc 0) kept so far, C = the next char:
//!                  C is blocked from S if some char kept between them has ccc 0 or ccc ≥ ccc(C);
//!                  if not blocked and (S, C) has a primary composite P, S := P and C is dropped;
//!                  otherwise C is kept (and becomes S if its ccc is 0).
//!                  Pairs: the table, which leaves out the full composition exclusions
//!                  (singletons U+212B, non-starter decompositions U+0344, CompositionExclusions
//!                  U+0958), and Hangul: L + V → LV, LV + T → LVT (T in TBase+1 ..= TBase+27).
//! ```

#[path = "unicode_tables.rs"]
mod tables;

use std::cmp::Ordering;
use tables::{COMBINING_CLASS, COMPOSITION, DECOMPOSITION, LETTER, NFC_NOT_QUICK_YES, NUMBER};

/// `\p{L}`: general category L* (Lu, Ll, Lt, Lm, Lo), exactly as Python's regex module / Rust's
/// `regex` crate define it (not std's `char::is_alphabetic`).
pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    in_ranges(LETTER, c)
}

/// `\p{N}`: general category N* (Nd, Nl, No).
pub fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    in_ranges(NUMBER, c)
}

/// Unicode Normalization Form C, as Python's `unicodedata.normalize('NFC', s)`.
pub fn nfc(s: &str) -> String {
    if s.is_ascii() || is_nfc_quick(s) {
        return s.to_string();
    }
    let mut chars = decompose(s);
    reorder(&mut chars);
    compose(&chars)
}

// ---- lookups

/// Where the inclusive range `first..=last` lies relative to `x`, for a binary search.
fn range_vs(first: u32, last: u32, x: u32) -> Ordering {
    if last < x {
        Ordering::Less
    } else if first > x {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    table.binary_search_by(|&(first, last)| range_vs(first, last, c as u32)).is_ok()
}

/// Canonical_Combining_Class; 0 for starters (every code point below U+0300 is one).
fn combining_class(c: char) -> u8 {
    let x = c as u32;
    if x < 0x300 {
        return 0;
    }
    match COMBINING_CLASS.binary_search_by(|&(first, last, _)| range_vs(first, last, x)) {
        Ok(i) => COMBINING_CLASS[i].2,
        Err(_) => 0,
    }
}

/// The full canonical decomposition of a non-Hangul `c`, if it has one.
fn decomposition(c: char) -> Option<&'static [char]> {
    let x = c as u32;
    if x < 0xC0 {
        return None;
    }
    DECOMPOSITION.binary_search_by_key(&x, |&(k, _)| k).ok().map(|i| DECOMPOSITION[i].1)
}

// ---- Hangul, by arithmetic

const S_BASE: u32 = 0xAC00;
const L_BASE: u32 = 0x1100;
const V_BASE: u32 = 0x1161;
const T_BASE: u32 = 0x11A7;
const L_COUNT: u32 = 19;
const V_COUNT: u32 = 21;
const T_COUNT: u32 = 28;
const N_COUNT: u32 = V_COUNT * T_COUNT; // 588 syllables per leading consonant
const S_COUNT: u32 = L_COUNT * N_COUNT; // 11172

fn char_of(x: u32) -> char {
    char::from_u32(x).expect("Hangul jamo and syllables are valid chars")
}

/// The primary composite of `first` + `second`, if there is one (Hangul or table).
fn composite(first: char, second: char) -> Option<char> {
    let (a, b) = (first as u32, second as u32);
    if (L_BASE..L_BASE + L_COUNT).contains(&a) && (V_BASE..V_BASE + V_COUNT).contains(&b) {
        return Some(char_of(S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT));
    }
    if (S_BASE..S_BASE + S_COUNT).contains(&a)
        && (a - S_BASE).is_multiple_of(T_COUNT)
        && (T_BASE + 1..T_BASE + T_COUNT).contains(&b)
    {
        return Some(char_of(a + (b - T_BASE)));
    }
    COMPOSITION.binary_search_by_key(&(a, b), |&(k, _)| k).ok().map(|i| COMPOSITION[i].1)
}

// ---- the three steps

/// True when `s` is certainly in NFC: no char has NFC_Quick_Check No or Maybe and the
/// combining classes of each run of non-starters are in order. (False means "maybe not".)
fn is_nfc_quick(s: &str) -> bool {
    let mut last_class = 0;
    for c in s.chars() {
        if (c as u32) < 0x300 {
            // Below U+0300 every char is a starter with NFC_Quick_Check Yes (checked by the
            // table script).
            last_class = 0;
            continue;
        }
        let class = combining_class(c);
        if (class != 0 && last_class > class) || in_ranges(NFC_NOT_QUICK_YES, c) {
            return false;
        }
        last_class = class;
    }
    true
}

/// Step 1: every char replaced by its full canonical decomposition, with its combining class.
fn decompose(s: &str) -> Vec<(char, u8)> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let x = c as u32;
        if (S_BASE..S_BASE + S_COUNT).contains(&x) {
            let i = x - S_BASE;
            out.push((char_of(L_BASE + i / N_COUNT), 0));
            out.push((char_of(V_BASE + (i % N_COUNT) / T_COUNT), 0));
            if !i.is_multiple_of(T_COUNT) {
                out.push((char_of(T_BASE + i % T_COUNT), 0));
            }
        } else if let Some(parts) = decomposition(c) {
            out.extend(parts.iter().map(|&p| (p, combining_class(p))));
        } else {
            out.push((c, combining_class(c)));
        }
    }
    out
}

/// Step 2: canonical ordering, a stable sort by class of each run of non-zero classes.
fn reorder(chars: &mut [(char, u8)]) {
    let mut i = 0;
    while i < chars.len() {
        if chars[i].1 == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].1 != 0 {
            i += 1;
        }
        if i - start > 1 {
            chars[start..i].sort_by_key(|&(_, class)| class);
        }
    }
}

/// Step 3: canonical composition of a decomposed, reordered sequence.
fn compose(chars: &[(char, u8)]) -> String {
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    // Index in `out` of the last starter, and the class of the last char kept after it
    // (0 while the starter is the last char kept: nothing blocks).
    let mut starter: Option<usize> = None;
    let mut last_class = 0u8;
    for &(c, class) in chars {
        if let Some(si) = starter {
            let blocked = last_class != 0 && last_class >= class;
            if !blocked {
                if let Some(p) = composite(out[si], c) {
                    out[si] = p;
                    continue;
                }
            }
        }
        if class == 0 {
            starter = Some(out.len());
        }
        last_class = class;
        out.push(c);
    }
    out.into_iter().collect()
}
