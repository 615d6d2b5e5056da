//! Training a byte-level BPE tokenizer the way the `tokenizers` library's `BpeTrainer` does with
//! the NFC normalizer and the ByteLevel pre-tokenizer, so that both learn the same merges:
//!
//! 1. words: NFC each document, split it by the GPT-2 pattern, count the distinct pieces
//!    ("words"); a word is a list of byte-token ids (special/added tokens are not looked for
//!    in the training text, as in the library).
//! 2. the starting vocabulary: the special tokens (ids 0, 1, …), then the 256 byte tokens in
//!    the order of their byte-to-unicode characters ('!' = byte 33 first, then '"' …, and
//!    'Ā' = byte 0 after 'ÿ'): BpeTrainer adds the special tokens, then the alphabet sorted.
//! 3. merges, minbpe's loop: take the most frequent adjacent pair, give the joined token the
//!    next id, replace the pair in every word; until the vocabulary is full or no pair is left.
//!
//! Ties between pairs of equal count go to the smaller (left id, right id), as in `tokenizers`.
//! Pairs are counted over overlapping windows ("aaa" holds the pair (a, a) twice) and replaced
//! left to right ("aaa" → "aa a"), also as there. One corner is not copied: if a merge makes a
//! token that already exists (x + yz after xy + z), the library keeps a separate, partial list
//! of words per heap entry and can repeat a merge; here counts stay exact. On the Shakespeare
//! corpus no merge ever makes an existing token, up to a 47,855-token vocabulary (all pairs).

use super::bpe::{byte_to_unicode, AddedToken, Tokenizer};
use super::{pretokenize, unicode};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// The special tokens `moe tokenizer-train` adds, with ids 0 and 1.
pub const SPECIAL_TOKENS: [&str; 2] = ["<|endoftext|>", "<|padding|>"];

/// Trains on `texts` (documents) to `vocab_size` entries including the 256 byte tokens and
/// `special_tokens` (given ids 0, 1, … in order, as `tokenizers`' BpeTrainer does).
/// Stops early when no adjacent pair is left; never has fewer than the special and byte tokens.
pub fn train(texts: &[String], vocab_size: usize, special_tokens: &[&str]) -> Tokenizer {
    learn(&count_words(texts), vocab_size, special_tokens, 0).into_tokenizer()
}

/// What training learned, in `Tokenizer::from_bpe`'s terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Trained {
    /// Every token (in the byte-to-unicode alphabet; special tokens as they are) with its id,
    /// in id order.
    pub vocab: Vec<(String, u32)>,
    /// The merges in the order learned (rank 0 first).
    pub merges: Vec<(String, String)>,
    /// The special tokens, as added tokens.
    pub added: Vec<AddedToken>,
}

impl Trained {
    pub fn into_tokenizer(self) -> Tokenizer {
        Tokenizer::from_bpe(self.vocab, self.merges, self.added)
    }
}

// ---- 1. words

/// The distinct pre-tokenized pieces of `texts` (as bytes, after NFC) with how often each
/// occurs, sorted by bytes so that everything after is deterministic.
pub fn count_words(texts: &[String]) -> Vec<(Vec<u8>, u64)> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let normalized: Vec<String> = texts.iter().map(|t| unicode::nfc(t)).collect();
    for text in &normalized {
        for piece in pretokenize::split(text) {
            *counts.entry(piece).or_insert(0) += 1;
        }
    }
    let mut words: Vec<(Vec<u8>, u64)> =
        counts.into_iter().map(|(w, n)| (w.as_bytes().to_vec(), n)).collect();
    words.sort_unstable();
    words
}

// ---- 2 and 3. the vocabulary and the merge loop

type Pair = (u32, u32);

/// Learns merges on counted `words` (from [`count_words`]) until the vocabulary has
/// `vocab_size` entries, or no pair occurs at least `max(1, min_frequency)` times
/// (`tokenizers`' BpeTrainer defaults to min_frequency 0).
pub fn learn(
    words: &[(Vec<u8>, u64)],
    vocab_size: usize,
    special_tokens: &[&str],
    min_frequency: u64,
) -> Trained {
    let mut vocab = Vocab::default();
    let added: Vec<AddedToken> =
        special_tokens.iter().map(|s| AddedToken::special(vocab.add(s.to_string()), s)).collect();
    let mut alphabet = byte_to_unicode();
    alphabet.sort_unstable();
    for c in alphabet {
        vocab.add(c.to_string());
    }
    let byte_id: Vec<u32> = byte_to_unicode().iter().map(|c| vocab.add(c.to_string())).collect();

    let freq: Vec<i64> = words.iter().map(|(_, n)| i64::try_from(*n).expect("word count fits i64")).collect();
    let mut words: Vec<Vec<u32>> =
        words.iter().map(|(w, _)| w.iter().map(|&b| byte_id[b as usize]).collect()).collect();

    // The merge loop with incremental pair counts.
    //
    // minbpe recounts every pair of every word after each merge: the whole corpus per merge.
    // Here three structures are kept up to date instead:
    //   count[p]     Σ over words of freq(word) · (occurrences of pair p in the word)
    //   words_of[p]  the words p occurs in (a superset: a word stays listed after p left it)
    //   heap         (count, p) entries, largest count first, then smallest pair; an entry may
    //                be stale (p's count has dropped since it was pushed)
    // Merging (a, b) → z visits only words_of[(a, b)]. In a word of frequency f, each
    // occurrence  x a b y → x z y  changes four counts locally:
    //   count[(x, a)] −= f   count[(x, z)] += f   count[(b, y)] −= f   count[(z, y)] += f
    // Counts of existing pairs only fall; the pairs that grow contain the new token z, and
    // each gets a heap entry with its count once the step is done. A popped entry whose count
    // is stale goes back with the current one (lazy invalidation): every entry is at least
    // its pair's true count, so the first entry that matches is the true maximum.
    let mut count: HashMap<Pair, i64> = HashMap::new();
    let mut words_of: HashMap<Pair, HashSet<u32>> = HashMap::new();
    for (w, word) in words.iter().enumerate() {
        for pair in word.windows(2).map(|p| (p[0], p[1])) {
            *count.entry(pair).or_insert(0) += freq[w];
            words_of.entry(pair).or_default().insert(u32::try_from(w).expect("word count fits u32"));
        }
    }
    let mut heap: BinaryHeap<(i64, Reverse<Pair>)> = count.iter().map(|(&p, &n)| (n, Reverse(p))).collect();
    let min_count = i64::try_from(min_frequency.max(1)).unwrap_or(i64::MAX);
    let mut merges: Vec<(String, String)> = Vec::new();

    while vocab.ids.len() < vocab_size {
        let Some((n, Reverse(pair))) = heap.pop() else { break };
        let current = count.get(&pair).copied().unwrap_or(0);
        if n != current {
            if current > 0 {
                heap.push((current, Reverse(pair)));
            }
            continue;
        }
        if n < min_count {
            break;
        }
        let (a, b) = pair;
        let (left, right) = (vocab.tokens[a as usize].clone(), vocab.tokens[b as usize].clone());
        let z = vocab.add(format!("{left}{right}"));
        merges.push((left, right));

        let mut grown: HashSet<Pair> = HashSet::new();
        for w in words_of.remove(&pair).unwrap_or_default() {
            let f = freq[w as usize];
            merge_word(&mut words[w as usize], pair, z, |p, change| {
                *count.entry(p).or_insert(0) += change * f;
                if change > 0 {
                    words_of.entry(p).or_default().insert(w);
                    grown.insert(p);
                }
            });
        }
        count.remove(&pair);
        for p in grown {
            if count[&p] > 0 {
                heap.push((count[&p], Reverse(p)));
            }
        }
    }

    let vocab = vocab.tokens.into_iter().enumerate().map(|(id, t)| (t, id as u32)).collect();
    Trained { vocab, merges, added }
}

/// Tokens by id and ids by token.
#[derive(Default)]
struct Vocab {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// The id of `token`, given the next one if it is new (an existing token keeps its id, as
    /// in the library: the vocabulary does not grow then).
    fn add(&mut self, token: String) -> u32 {
        if let Some(&id) = self.ids.get(&token) {
            return id;
        }
        let id = u32::try_from(self.tokens.len()).expect("vocabulary fits u32 ids");
        self.ids.insert(token.clone(), id);
        self.tokens.push(token);
        id
    }
}

/// Replaces every (a, b) in `word` by `z`, left to right, and reports each pair that appears
/// (`change(pair, +1)`) or disappears (`change(pair, −1)`) next to a replaced one; (a, b)
/// itself is not reported.
fn merge_word(word: &mut Vec<u32>, (a, b): Pair, z: u32, mut change: impl FnMut(Pair, i64)) {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if word[i] == a && word.get(i + 1) == Some(&b) {
            if let Some(&x) = out.last() {
                change((x, a), -1);
                change((x, z), 1);
            }
            if let Some(&y) = word.get(i + 2) {
                change((b, y), -1);
                change((z, y), 1);
            }
            out.push(z);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    *word = out;
}
