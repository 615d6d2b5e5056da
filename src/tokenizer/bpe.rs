//! The byte-level BPE Tokenizer, as Hugging Face's `tokenizers` runs a GPT-2 / GPT-NeoX / OLMo
//! `tokenizer.json`, id for id:
//!
//! ```text
//! text ─ split on added tokens with normalized: false (raw text)
//!      ─ NFC each remaining segment
//!      ─ split on added tokens with normalized: true (their content NFC'd too)
//!      ─ add_prefix_space: a space before each remaining segment not starting with one
//!      ─ GPT-2 split (pretokenize.rs) ─ each piece: bytes → one symbol per byte
//!      ─ merge the adjacent pair of lowest rank until none is in the merge table ─ ids
//! ```
//! Added tokens are found as the library's Aho-Corasick automaton finds them: leftmost
//! match first, the longest content at that position, the search going on after it. Then per
//! match: `single_word` drops it if a word character touches either side (the match is still
//! consumed), `lstrip` / `rstrip` widen it over the whitespace before / after it.
//!
//! Decoding: each id's bytes (a vocab token's characters mapped back through the byte table;
//! an added token's content as it is), joined, invalid UTF-8 replaced by U+FFFD.

use super::pretokenize;
use super::unicode::nfc;
use crate::error::{Error, Result};
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// An added token, with the `tokenizers` library's flags.
#[derive(Clone, Debug, PartialEq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: bool,
    pub special: bool,
}

impl AddedToken {
    /// A special token as `tokenizers` adds them by default (special, not normalized, no flags).
    pub fn special(id: u32, content: &str) -> AddedToken {
        AddedToken {
            id,
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }
}

/// Ids must be below this (2^24; the largest vocabularies in use have about 2^18).
const MAX_IDS: usize = 1 << 24;
/// The piece cache is cleared when it holds this many pieces.
const CACHE_CAPACITY: usize = 1 << 18;

/// A byte-level BPE tokenizer (see the module comment for the pipeline).
#[derive(Clone)]
pub struct Tokenizer {
    /// Token (in the byte-to-unicode alphabet) → id, as the file's `model.vocab`.
    pub(super) vocab: HashMap<String, u32>,
    /// The merges in rank order, as read (for `save`).
    pub(super) merge_list: Vec<(String, String)>,
    /// (left id, right id) → (rank, id of the merged token).
    merges: FastMap<u64, (u32, u32)>,
    /// The id of each byte's one-character token (None: not in the vocab).
    byte_ids: [Option<u32>; 256],
    /// `model.unk_token`'s id and `fuse_unk`: what a byte outside the vocab becomes.
    pub(super) unk: Option<(String, u32)>,
    pub(super) fuse_unk: bool,
    pub(super) added: Vec<AddedToken>,
    /// Added tokens matched in the raw text / in the NFC text.
    raw_matcher: Matcher,
    normalized_matcher: Matcher,
    /// The normalizer is NFC (else none).
    pub(super) nfc: bool,
    pub(super) add_prefix_space: bool,
    /// The bytes of id i are `decoded[spans[i].0 .. spans[i].1]`; (0, 0) for an unused id.
    decoded: Vec<u8>,
    spans: Vec<(usize, usize)>,
    cache: SharedCache,
}

/// Piece → its ids, shared by the `encode` calls of one thread at a time; a clone starts empty.
#[derive(Default)]
struct SharedCache(Mutex<PieceCache>);

impl Clone for SharedCache {
    fn clone(&self) -> SharedCache {
        SharedCache::default()
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab.len())
            .field("merges", &self.merge_list.len())
            .field("added", &self.added.len())
            .field("nfc", &self.nfc)
            .field("add_prefix_space", &self.add_prefix_space)
            .finish()
    }
}

/// Everything a tokenizer is built from; `load` reads it from a file, `from_bpe` is given it.
pub(super) struct Parts {
    pub(super) vocab: Vec<(String, u32)>,
    pub(super) merges: Vec<(String, String)>,
    pub(super) added: Vec<AddedToken>,
    pub(super) unk_token: Option<String>,
    pub(super) fuse_unk: bool,
    pub(super) nfc: bool,
    pub(super) add_prefix_space: bool,
}

impl Tokenizer {
    /// A byte-level BPE with an NFC normalizer and ByteLevel pre-tokenizer/decoder
    /// (add_prefix_space false, as OLMo's). `vocab`: (token in the byte-to-unicode alphabet, id);
    /// `merges`: pairs of tokens in rank order (rank 0 merges first).
    /// Panics if a merge names a token (or makes one) that is not in `vocab`, or a token is
    /// listed twice: the trainer's output never does that.
    pub fn from_bpe(
        vocab: Vec<(String, u32)>,
        merges: Vec<(String, String)>,
        added: Vec<AddedToken>,
    ) -> Tokenizer {
        let parts = Parts {
            vocab,
            merges,
            added,
            unk_token: None,
            fuse_unk: false,
            nfc: true,
            add_prefix_space: false,
        };
        match Tokenizer::build(parts) {
            Ok(t) => t,
            Err(e) => panic!("Tokenizer::from_bpe: {e}"),
        }
    }

    /// Checks the parts and builds the lookup tables. Errors name the field (not the file).
    pub(super) fn build(parts: Parts) -> Result<Tokenizer> {
        let mut vocab = HashMap::with_capacity(parts.vocab.len());
        let mut size = 0usize;
        for (token, id) in &parts.vocab {
            if vocab.insert(token.clone(), *id).is_some() {
                return Err(Error::invalid("model.vocab", format!("token {token:?} appears twice")));
            }
            size = size.max(*id as usize + 1);
        }
        for t in &parts.added {
            size = size.max(t.id as usize + 1);
        }
        if size > MAX_IDS {
            let rule =
                format!("id {} is too large (ids must be below {MAX_IDS}: a table is kept per id)", size - 1);
            return Err(Error::invalid("model.vocab / added_tokens", rule));
        }
        let mut merges = FastMap::default();
        for (rank, (a, b)) in parts.merges.iter().enumerate() {
            let find = |t: &str| {
                vocab.get(t).copied().ok_or_else(|| {
                    Error::invalid(
                        format!("model.merges[{rank}]"),
                        format!("the merge {a:?} + {b:?} names {t:?}, which is not in model.vocab"),
                    )
                })
            };
            let (left, right, merged) = (find(a)?, find(b)?, find(&format!("{a}{b}"))?);
            // A repeated pair keeps its last rank, as the library's HashMap does.
            merges.insert(pair_key(left, right), (rank as u32, merged));
        }
        let table = byte_to_unicode();
        let byte_ids = std::array::from_fn(|b| vocab.get(table[b].to_string().as_str()).copied());
        let unk = match parts.unk_token {
            None => None,
            Some(t) => match vocab.get(&t) {
                Some(&id) => Some((t, id)),
                None => {
                    return Err(Error::invalid("model.unk_token", format!("{t:?} is not in model.vocab")))
                }
            },
        };

        // Decoding table: vocab tokens through the byte table, then added tokens as they are.
        let char_byte: HashMap<char, u8> = table.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let mut decoded = Vec::new();
        let mut spans = vec![(0, 0); size];
        for (token, &id) in &vocab {
            let start = decoded.len();
            match token.chars().map(|c| char_byte.get(&c).copied()).collect::<Option<Vec<u8>>>() {
                Some(bytes) => decoded.extend_from_slice(&bytes),
                // As the library's ByteLevel decoder: a token with a character outside the
                // byte alphabet decodes to its own UTF-8.
                None => decoded.extend_from_slice(token.as_bytes()),
            }
            spans[id as usize] = (start, decoded.len());
        }
        let mut added = Vec::new();
        for t in parts.added.into_iter().filter(|t| !t.content.is_empty()) {
            let start = decoded.len();
            decoded.extend_from_slice(t.content.as_bytes());
            spans[t.id as usize] = (start, decoded.len());
            added.push(t);
        }
        let raw: Vec<(String, usize)> = added
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.normalized)
            .map(|(i, t)| (t.content.clone(), i))
            .collect();
        let normalized: Vec<(String, usize)> = added
            .iter()
            .enumerate()
            .filter(|(_, t)| t.normalized)
            .map(|(i, t)| (if parts.nfc { nfc(&t.content) } else { t.content.clone() }, i))
            .collect();
        Ok(Tokenizer {
            vocab,
            merge_list: parts.merges,
            merges,
            byte_ids,
            unk,
            fuse_unk: parts.fuse_unk,
            raw_matcher: Matcher::new(&raw),
            normalized_matcher: Matcher::new(&normalized),
            added,
            nfc: parts.nfc,
            add_prefix_space: parts.add_prefix_space,
            decoded,
            spans,
            cache: SharedCache::default(),
        })
    }

    /// Number of ids (the largest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.spans.len()
    }

    /// The id of a token (a vocab entry in the byte-to-unicode alphabet, or an added token).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        let added = self.added.iter().find(|t| t.content == token).map(|t| t.id);
        added.or_else(|| self.vocab.get(token).copied())
    }

    /// The added tokens (with their flags), in file order.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }
}

// ---- encode

/// Reused buffers of one `encode` call.
#[derive(Default)]
struct Scratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
    prefixed: String,
}

/// One symbol of a piece being merged: a token id in a doubly linked list over positions.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    /// Positions of the neighbours (usize::MAX: none).
    prev: usize,
    next: usize,
    /// Merged into its left neighbour.
    gone: bool,
}

/// A possible merge of the symbol at `pos` with the next one. The heap pops the lowest rank
/// first, then the leftmost position (the library's `Merge` order); an entry is stale when its
/// symbols have changed since it was pushed, and is then skipped.
#[derive(PartialEq, Eq)]
struct Candidate {
    rank: u32,
    pos: usize,
    merged: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.rank, other.pos).cmp(&(self.rank, self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Tokenizer {
    /// The ids of `text`, as the library's `encode(text).ids` (nothing added around them).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        // One thread at a time uses the shared cache; another encodes with a fresh one.
        match self.cache.0.try_lock() {
            Ok(mut cache) => self.encode_into(text, &mut cache, &mut scratch, &mut ids),
            Err(_) => self.encode_into(text, &mut FastMap::default(), &mut scratch, &mut ids),
        }
        ids
    }

    fn encode_into(&self, text: &str, cache: &mut PieceCache, scratch: &mut Scratch, ids: &mut Vec<u32>) {
        for raw in self.raw_matcher.split(text, &self.added) {
            let raw = match raw {
                Segment::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Segment::Text(raw) => raw,
            };
            let normalized = if self.nfc { nfc(raw) } else { raw.to_string() };
            for segment in self.normalized_matcher.split(&normalized, &self.added) {
                match segment {
                    Segment::Token(id) => ids.push(id),
                    Segment::Text(t) => self.encode_segment(t, cache, scratch, ids),
                }
            }
        }
    }

    /// Pre-tokenizes one normalized segment without added tokens and encodes its pieces.
    fn encode_segment(
        &self,
        segment: &str,
        cache: &mut PieceCache,
        scratch: &mut Scratch,
        ids: &mut Vec<u32>,
    ) {
        let mut prefixed = std::mem::take(&mut scratch.prefixed);
        let segment = if self.add_prefix_space && !segment.starts_with(' ') {
            prefixed.clear();
            prefixed.push(' ');
            prefixed.push_str(segment);
            prefixed.as_str()
        } else {
            segment
        };
        for piece in pretokenize::pieces(segment) {
            if let Some(cached) = cache.get(piece) {
                ids.extend_from_slice(cached);
                continue;
            }
            let start = ids.len();
            self.merge_piece(piece.as_bytes(), scratch, ids);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(piece.to_string(), ids[start..].to_vec());
        }
        scratch.prefixed = prefixed;
    }

    /// BPE on one piece: a symbol per byte, then the lowest-rank merge first until none
    /// applies (the library's `Word::merge_all`). Appends the ids to `ids`.
    fn merge_piece(&self, bytes: &[u8], scratch: &mut Scratch, ids: &mut Vec<u32>) {
        let symbols = &mut scratch.symbols;
        symbols.clear();
        // A byte outside the vocab becomes unk_token (consecutive ones fused with fuse_unk),
        // or is dropped when there is none, as the library does.
        let mut last_unk = false;
        for &b in bytes {
            let id = match (self.byte_ids[b as usize], &self.unk) {
                (Some(id), _) => id,
                (None, Some((_, unk))) if !(self.fuse_unk && last_unk) => *unk,
                _ => continue,
            };
            last_unk = self.byte_ids[b as usize].is_none();
            let n = symbols.len();
            symbols.push(Symbol { id, prev: n.wrapping_sub(1), next: n + 1, gone: false });
        }
        let Some(last) = symbols.last_mut() else { return };
        last.next = usize::MAX;

        let heap = &mut scratch.heap;
        heap.clear();
        for pos in 0..symbols.len().saturating_sub(1) {
            if let Some(&(rank, merged)) = self.merges.get(&pair_key(symbols[pos].id, symbols[pos + 1].id)) {
                heap.push(Candidate { rank, pos, merged });
            }
        }
        while let Some(Candidate { pos, merged, .. }) = heap.pop() {
            let next = symbols[pos].next;
            if symbols[pos].gone || next == usize::MAX {
                continue;
            }
            // Stale: the pair at `pos` is no longer the one this entry was pushed for.
            match self.merges.get(&pair_key(symbols[pos].id, symbols[next].id)) {
                Some(&(_, m)) if m == merged => {}
                _ => continue,
            }
            // Merge: `pos` becomes the merged token, `next` leaves the list; then the two new
            // pairs it forms with its neighbours become candidates.
            let id = merged;
            symbols[pos].id = id;
            symbols[next].gone = true;
            let after = symbols[next].next;
            symbols[pos].next = after;
            if after != usize::MAX {
                symbols[after].prev = pos;
            }
            let prev = symbols[pos].prev;
            if prev != usize::MAX {
                if let Some(&(rank, merged)) = self.merges.get(&pair_key(symbols[prev].id, id)) {
                    heap.push(Candidate { rank, pos: prev, merged });
                }
            }
            if after != usize::MAX {
                if let Some(&(rank, merged)) = self.merges.get(&pair_key(id, symbols[after].id)) {
                    heap.push(Candidate { rank, pos, merged });
                }
            }
        }
        ids.extend(symbols.iter().filter(|s| !s.gone).map(|s| s.id));
    }
}

type PieceCache = FastMap<String, Vec<u32>>;

fn pair_key(left: u32, right: u32) -> u64 {
    (left as u64) << 32 | right as u64
}

// ---- added tokens

/// Finds added tokens in a text as the library's Aho-Corasick automaton (MatchKind::
/// LeftmostLongest) does, with a byte trie: at each position, the longest content starting
/// there; the first position with one wins; the search resumes after it.
#[derive(Clone, Debug, Default)]
struct Matcher {
    /// Trie nodes; node 0 is the root. `children` sorted by byte.
    nodes: Vec<TrieNode>,
    /// The root's child for each first byte (0: none).
    first: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    /// Index into the tokenizer's added tokens of the content ending here.
    token: Option<usize>,
}

impl Matcher {
    /// A matcher for (content, index of the added token) pairs.
    fn new(contents: &[(String, usize)]) -> Matcher {
        let mut nodes = vec![TrieNode::default()];
        for (content, index) in contents {
            let mut node = 0;
            for &b in content.as_bytes() {
                node = match nodes[node].children.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(i) => nodes[node].children[i].1 as usize,
                    Err(i) => {
                        nodes.push(TrieNode::default());
                        let new = nodes.len() - 1;
                        nodes[node].children.insert(i, (b, new as u32));
                        new
                    }
                };
            }
            // Two tokens with the same content: the first one listed wins.
            nodes[node].token.get_or_insert(*index);
        }
        let mut first = vec![0u32; 256];
        for &(b, child) in &nodes[0].children {
            first[b as usize] = child;
        }
        Matcher { nodes, first }
    }

    /// The longest content starting at byte `i`: (end, token index).
    fn longest_at(&self, bytes: &[u8], i: usize) -> Option<(usize, usize)> {
        let mut node = self.first[bytes[i] as usize] as usize;
        if node == 0 {
            return None;
        }
        let mut best = None;
        let mut j = i + 1;
        loop {
            if let Some(token) = self.nodes[node].token {
                best = Some((j, token));
            }
            let Some(&b) = bytes.get(j) else { break };
            match self.nodes[node].children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(k) => node = self.nodes[node].children[k].1 as usize,
                Err(_) => break,
            }
            j += 1;
        }
        best
    }

    /// Splits `text` into segments of plain text (`Text`) and added tokens (`Token`), as the
    /// library's `AddedVocabulary::find_matches`; no empty text segment. Like the library, the
    /// search resumes where a match ended before its rstrip widening.
    fn split<'a>(&self, text: &'a str, added: &[AddedToken]) -> Vec<Segment<'a>> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut done = 0; // end of what `out` covers
        let mut i = 0;
        while self.nodes.len() > 1 && i < bytes.len() {
            let Some((stop, index)) = self.longest_at(bytes, i) else {
                i += 1;
                continue;
            };
            let (mut start, mut end) = (i, stop);
            i = stop;
            let token = &added[index];
            if token.single_word {
                let word_before = text[..start].chars().next_back().is_some_and(is_word_char);
                let word_after = text[end..].chars().next().is_some_and(is_word_char);
                if word_before || word_after {
                    continue; // dropped, but its text is not searched again
                }
            }
            if token.lstrip {
                start = text[..start].trim_end_matches(char::is_whitespace).len().max(done);
            }
            if token.rstrip {
                end = text.len() - text[end..].trim_start_matches(char::is_whitespace).len();
            }
            if done < start {
                out.push(Segment::Text(&text[done..start]));
            }
            out.push(Segment::Token(token.id));
            done = end;
        }
        if done < text.len() {
            out.push(Segment::Text(&text[done..]));
        }
        out
    }
}

/// A part of a text: plain text, or an added token's id.
enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

/// `\w` as the `regex` crate defines it (the library's single_word test), approximated with
/// std's classes: Alphabetic, Numeric, connector punctuation and the joiners. (The regex's
/// `\w` also has every combining mark and only decimal digits, not numbers such as '½'.)
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(
            c,
            '_' | '\u{203f}' | '\u{2040}' | '\u{2054}' | '\u{fe33}' | '\u{fe34}' | '\u{fe4d}'..='\u{fe4f}'
        )
        || matches!(c, '\u{ff3f}' | '\u{200c}' | '\u{200d}')
}

// ---- decode

impl Tokenizer {
    /// The bytes the ids stand for (added tokens as their content). An id that is neither in
    /// the vocab nor an added token is skipped, as the library skips it.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(&(start, end)) = self.spans.get(id as usize) {
                out.extend_from_slice(&self.decoded[start..end]);
            }
        }
        out
    }

    /// The text of `ids` (invalid UTF-8 replaced by U+FFFD, as `tokenizers` does).
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }
}

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to U+0100….
/// Printable: '!'..='~', '¡'..='¬', '®'..='ÿ' (188 bytes); the other 68, in byte order, get
/// U+0100, U+0101, …: space (0x20) is 'Ġ' (U+0120), '\n' is 'Ċ' (U+010A).
pub fn byte_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100..U+0143 are characters")
        };
    }
    table
}

// ---- a fast hash for the merge table and the piece cache

/// FxHash (rustc's hasher): one multiply per word. Not DoS-resistant; the keys are ours.
#[derive(Clone, Copy, Default)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("chunks of 8")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.add(x as u64);
    }
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
