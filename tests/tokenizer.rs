//! The byte-level BPE tokenizer against Hugging Face's `tokenizers` 0.23.3 with the real OLMo
//! tokenizer file: golden ids and pre-tokenizer pieces written by
//! tests/golden/tokenizer/make_tokenizer_golden.py, plus round trips, save → load, hand-made
//! merge tables and the errors for files this implementation refuses.

use moe::json::{parse, Value};
use moe::rng::Rng;
use moe::tokenizer::bpe::byte_to_unicode;
use moe::tokenizer::pretokenize::split;
use moe::tokenizer::unicode::nfc;
use moe::tokenizer::{AddedToken, Tokenizer};
use std::path::{Path, PathBuf};

const OLMO: &str = "olmoe-gpt-neox-olmo-dolma-v1_5.json";

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tokenizer").join(name)
}

fn golden(name: &str) -> Value {
    let path = golden_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn olmo() -> Tokenizer {
    Tokenizer::load(&golden_path(OLMO)).unwrap_or_else(|e| panic!("{e}"))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids array").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

fn text_of(case: &Value) -> &str {
    case.get("text").and_then(Value::as_str).expect("text")
}

/// A fresh directory under the system temp dir for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-tokenizer-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Describes the first difference between our ids and the golden ones, with the tokens
/// around it; None when equal.
fn first_mismatch(tok: &Tokenizer, text: &str, ours: &[u32], want: &[u32]) -> Option<String> {
    if ours == want {
        return None;
    }
    let i = ours.iter().zip(want).take_while(|(a, b)| a == b).count();
    let window = |ids: &[u32]| {
        let lo = i.saturating_sub(3);
        let hi = (i + 4).min(ids.len());
        ids[lo..hi].iter().map(|&id| format!("{id}={:?}", tok.decode(&[id]))).collect::<Vec<_>>().join(" ")
    };
    let shown: String = text.chars().take(120).collect();
    Some(format!(
        "text {shown:?} ({} bytes): first difference at id #{i} (ours {} ids, golden {})\n  ours:   {}\n  golden: {}",
        text.len(),
        ours.len(),
        want.len(),
        window(ours),
        window(want)
    ))
}

// ---- golden ids

#[test]
fn olmo_ids_match_the_library() {
    let tok = olmo();
    let cases = golden("olmo_ids.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 300, "only {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in cases {
        let text = text_of(case);
        let want = ids_of(case.get("ids").unwrap());
        if let Some(m) = first_mismatch(&tok, text, &tok.encode(text), &want) {
            wrong.push(m);
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases differ; first:\n{}", wrong.len(), cases.len(), wrong[0]);
}

#[test]
fn corpus_ids_match_the_library() {
    let g = golden("corpus_ids.json");
    let mut data = Vec::new();
    for f in g.get("files").and_then(Value::as_array).unwrap() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare").join(f.as_str().unwrap());
        data.extend(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    let n = g.get("bytes").and_then(Value::as_u64).unwrap() as usize;
    let text = std::str::from_utf8(&data[..n]).unwrap();
    let want = ids_of(g.get("ids").unwrap());
    let tok = olmo();
    let ours = tok.encode(text);
    if let Some(m) = first_mismatch(&tok, text, &ours, &want) {
        panic!("{m}");
    }
    assert_eq!(tok.decode(&ours), text, "corpus round trip");
}

#[test]
fn pieces_match_the_library() {
    let cases = golden("pretokenize.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 400);
    for case in cases {
        let text = text_of(case);
        let want: Vec<&str> = case
            .get("pieces")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(split(text), want, "split({text:?})");
    }
}

/// Sets `obj[key] = value` in a JSON object.
fn set(obj: &mut Value, key: &str, value: Value) {
    let Value::Object(members) = obj else { panic!("not an object") };
    match members.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => members.push((key.to_string(), value)),
    }
}

fn get_mut<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    let Value::Object(members) = obj else { panic!("not an object") };
    &mut members.iter_mut().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key}")).1
}

#[test]
fn variant_flags_match_the_library() {
    // The OLMo file with add_prefix_space and added tokens using lstrip/rstrip/single_word,
    // normalized with a non-NFC content, and overlapping contents.
    let g = golden("variant_ids.json");
    let mut spec = golden(OLMO);
    set(get_mut(&mut spec, "pre_tokenizer"), "add_prefix_space", g.get("add_prefix_space").unwrap().clone());
    let Value::Array(added) = get_mut(&mut spec, "added_tokens") else { panic!() };
    added.extend(g.get("added_tokens").and_then(Value::as_array).unwrap().iter().cloned());
    let dir = temp_dir("variant");
    let path = dir.join("variant.json");
    std::fs::write(&path, spec.to_json()).unwrap();
    let tok = Tokenizer::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for case in g.get("cases").and_then(Value::as_array).unwrap() {
        let text = text_of(case);
        if let Some(m) = first_mismatch(&tok, text, &tok.encode(text), &ids_of(case.get("ids").unwrap())) {
            panic!("{m}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn olmo_vocabulary() {
    let tok = olmo();
    assert_eq!(tok.vocab_size(), 50280);
    assert_eq!(tok.token_id("<|endoftext|>"), Some(50279));
    assert_eq!(tok.token_id("<|padding|>"), Some(1));
    assert_eq!(tok.token_id("Ġthe"), Some(253));
    assert_eq!(tok.token_id(" the"), None, "vocab entries are in the byte alphabet");
    assert_eq!(tok.encode("x    ="), [89, 50274, 30], "the 4-space added token wins");
    assert_eq!(tok.decode(&[89, 50274, 30]), "x    =");
    assert_eq!(tok.decode(&[50279, 1]), "<|endoftext|><|padding|>");
    assert_eq!(tok.decode(&[12092, 1533, 999_999]), "Hello world", "an unknown id is skipped");
    // "é" split as 0xC3 | 0xA9 over two ids decodes to U+FFFD alone, whole together.
    let e = tok.encode("\u{e9}");
    assert_eq!(tok.decode(&e), "\u{e9}");
    assert_eq!(tok.decode_bytes(&e), "\u{e9}".as_bytes());
}

// ---- round trips

/// Random text from a pool of ASCII, whitespace of every kind, combining marks, CJK, Hangul
/// jamo, emoji (with ZWJ) and the special tokens.
fn random_text(rng: &mut Rng) -> String {
    const POOL: &[&str] = &[
        "a",
        "b",
        "z",
        "Q",
        "0",
        "7",
        "'",
        "'s",
        "!",
        ".",
        "-",
        "_",
        "<",
        "|",
        " ",
        " ",
        " ",
        "  ",
        "    ",
        "\t",
        "\n",
        "\r\n",
        "\u{a0}",
        "\u{2003}",
        "\u{3000}",
        "\u{85}",
        "\u{1c}",
        "e",
        "\u{301}",
        "\u{308}",
        "\u{316}",
        "\u{e9}",
        "\u{212b}",
        "\u{4e2d}",
        "\u{6587}",
        "\u{1100}",
        "\u{1161}",
        "\u{11a8}",
        "\u{ac00}",
        "\u{1f600}",
        "\u{200d}",
        "\u{1f469}",
        "\u{feff}",
        "\u{663}",
        "\u{bd}",
        "<|endoftext|>",
        "<|padding|>",
        "|||IP_ADDRESS|||",
        "Hello",
        " world",
    ];
    let n = rng.below(40);
    (0..n).map(|_| POOL[rng.below(POOL.len())]).collect()
}

#[test]
fn decode_encode_is_nfc() {
    // The NFC normalizer changes non-NFC input (e + U+0301 → é, U+212B Å → U+00C5), so the
    // round trip gives nfc(s), not s. (Every character here composes or reorders only with
    // its neighbours inside a segment: no added token ends in a character that composes.)
    let tok = olmo();
    let mut rng = Rng::new(4);
    for _ in 0..2000 {
        let s = random_text(&mut rng);
        let ids = tok.encode(&s);
        assert_eq!(tok.decode(&ids), nfc(&s), "decode(encode({s:?})) (ids {ids:?})");
    }
}

#[test]
fn save_then_load_gives_the_same_ids() {
    let tok = olmo();
    let dir = temp_dir("save");
    let path = dir.join("tokenizer.json");
    tok.save(&path).unwrap();
    assert!(!dir.join("tokenizer.json.tmp").exists(), "the temporary file is renamed");
    let back = Tokenizer::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.vocab_size(), tok.vocab_size());
    assert_eq!(back.added_tokens(), tok.added_tokens());
    let saved = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let model = saved.get("model").unwrap();
    assert_eq!(model.get("type").and_then(Value::as_str), Some("BPE"));
    assert_eq!(
        model.get("merges").and_then(Value::as_array).map(|m| m[0].to_json()),
        Some("[\"Ġ\",\"Ġ\"]".into())
    );
    assert_eq!(saved.get("normalizer").map(|v| v.to_json()), Some("{\"type\":\"NFC\"}".into()));
    for case in golden("olmo_ids.json").as_array().unwrap() {
        let text = text_of(case);
        assert_eq!(back.encode(text), tok.encode(text), "{text:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- hand-made merge tables

/// The 256 byte tokens, then `extra` tokens; merges given as pairs of token strings.
fn small(extra: &[&str], merges: &[(&str, &str)], added: Vec<AddedToken>) -> Tokenizer {
    let table = byte_to_unicode();
    let mut vocab: Vec<(String, u32)> = (0..256).map(|b| (table[b].to_string(), b as u32)).collect();
    vocab.extend(extra.iter().enumerate().map(|(i, t)| (t.to_string(), 256 + i as u32)));
    let merges = merges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    Tokenizer::from_bpe(vocab, merges, added)
}

#[test]
fn merges_apply_by_rank_then_position() {
    // minbpe's Wikipedia example: aaabdaaabac with Z=aa, Y=ab, X=ZY.
    let tok = small(&["aa", "ab", "aaab"], &[("a", "a"), ("a", "b"), ("aa", "ab")], vec![]);
    let (a, b, c, d) = (97, 98, 99, 100);
    assert_eq!(tok.encode("aaabdaaabac"), [258, d, 258, a, c]);
    // Ties in rank go left first: aaa is aa + a, not a + aa.
    assert_eq!(tok.encode("aaa"), [256, a]);
    assert_eq!(tok.encode("aaaa"), [256, 256]);
    // A lower rank wins wherever it is: bc (rank 0) before ab (rank 1) in "abc".
    let tok = small(&["bc", "ab"], &[("b", "c"), ("a", "b")], vec![]);
    assert_eq!(tok.encode("abc"), [a, 256]);
    assert_eq!(tok.encode("ab"), [257]);
    assert_eq!(tok.encode("abd"), [257, d]);
    let _ = b;
}

#[test]
fn from_bpe_save_load_round_trip() {
    let added = vec![AddedToken::special(259, "<|endoftext|>")];
    let tok = small(&["Ġt", "he", "Ġthe"], &[("Ġ", "t"), ("h", "e"), ("Ġt", "he")], added);
    let text = "the the<|endoftext|> then";
    let ids = tok.encode(text);
    assert_eq!(ids, [116, 257, 258, 259, 258, 110]);
    assert_eq!(tok.decode(&ids), text);
    let dir = temp_dir("small");
    let path = dir.join("small.json");
    tok.save(&path).unwrap();
    let back = Tokenizer::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.encode(text), ids);
    assert_eq!(back.token_id("<|endoftext|>"), Some(259));
    assert_eq!(back.vocab_size(), 260);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn byte_table_is_gpt2s() {
    let table = byte_to_unicode();
    assert_eq!(table[b' ' as usize], 'Ġ');
    assert_eq!(table[b'\n' as usize], 'Ċ');
    assert_eq!(table[b'\t' as usize], 'ĉ');
    assert_eq!(table[b'a' as usize], 'a');
    assert_eq!(table[0], 'Ā');
    assert_eq!(table[0xAD], 'Ń');
    assert_eq!(table[0xFF], 'ÿ');
    let mut seen: Vec<char> = table.to_vec();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 256, "a bijection");
}

#[test]
fn split_edge_cases() {
    assert_eq!(split(""), Vec::<&str>::new());
    assert_eq!(split("x    ="), ["x", "   ", " ="]);
    assert_eq!(split("a \u{a0}b"), ["a", " ", "\u{a0}", "b"]);
    assert_eq!(split("it's IT'S"), ["it", "'s", " IT", "'", "S"]);
    assert_eq!(split("  \n"), ["  \n"]);
    assert_eq!(split("\u{3000}\u{3000}x"), ["\u{3000}", "\u{3000}", "x"]);
}

// ---- files we refuse

/// Loads `json` written to a file named `name`; the error message.
fn load_error(name: &str, json: &str) -> String {
    let dir = temp_dir("errors");
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    let result = Tokenizer::load(&path);
    std::fs::remove_file(&path).unwrap();
    match result {
        Ok(_) => panic!("{name} loaded, expected an error"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(name), "the error names the file: {message}");
            message
        }
    }
}

const BYTE_LEVEL: &str =
    r#"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#;

fn bpe_file(model_extra: &str, merges: &str) -> String {
    format!(
        r#"{{"version": "1.0", "added_tokens": [], "normalizer": {{"type": "NFC"}},
            "pre_tokenizer": {BYTE_LEVEL}, "post_processor": null, "decoder": {BYTE_LEVEL},
            "model": {{"type": "BPE", {model_extra} "vocab": {{"a": 0, "b": 1, "ab": 2}}, "merges": {merges}}}}}"#
    )
}

#[test]
fn load_refuses_what_it_cannot_run() {
    let wordpiece = r###"{"version": "1.0", "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "BertPreTokenizer"}, "decoder": {"type": "WordPiece", "prefix": "##"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1, "##b": 2}}}"###;
    let m = load_error("wordpiece.json", wordpiece);
    assert!(m.contains("WordPiece") && m.contains("model.type"), "{m}");

    let unigram = r#"{"version": "1.0", "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["▁a", -1.5]], "byte_fallback": false}}"#;
    let m = load_error("unigram.json", unigram);
    assert!(m.contains("Unigram"), "{m}");

    let metaspace_bpe = r#"{"version": "1.0", "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "vocab": {"<unk>": 0, "▁": 1, "a": 2, "▁a": 3},
                  "merges": ["▁ a"]}}"#;
    let m = load_error("metaspace.json", metaspace_bpe);
    assert!(m.contains("Metaspace") && m.contains("not byte-level"), "{m}");

    let m = load_error("malformed.json", r#"{"model": {"type": "BPE", "vocab": {"a": 0,}}}"#);
    assert!(m.contains("line 1"), "{m}");

    let m = load_error("unknown_merge.json", &bpe_file("", r#"["a b", "a c"]"#));
    assert!(m.contains("model.merges[1]") && m.contains("\"c\""), "{m}");

    let m = load_error("bad_merge.json", &bpe_file("", r#"["a b c"]"#));
    assert!(m.contains("model.merges[0]"), "{m}");

    let m = load_error("dropout.json", &bpe_file(r#""dropout": 0.1,"#, r#"[["a", "b"]]"#));
    assert!(m.contains("model.dropout") && m.contains("not supported"), "{m}");

    let m = load_error("fallback.json", &bpe_file(r#""byte_fallback": true,"#, r#"[["a", "b"]]"#));
    assert!(m.contains("model.byte_fallback"), "{m}");

    let m = load_error("suffix.json", &bpe_file(r#""end_of_word_suffix": "</w>","#, r#"[["a", "b"]]"#));
    assert!(m.contains("model.end_of_word_suffix"), "{m}");

    let huge = bpe_file("", "[]").replace(r#""ab": 2"#, r#""ab": 4000000000"#);
    let m = load_error("huge_id.json", &huge);
    assert!(m.contains("id 4000000000 is too large"), "{m}");

    let no_vocab = bpe_file("", "[]").replace(r#""vocab": {"a": 0, "b": 1, "ab": 2},"#, "");
    let m = load_error("no_vocab.json", &no_vocab);
    assert!(m.contains("missing field \"vocab\""), "{m}");

    // The same file without the problems loads, in both merge forms.
    let dir = temp_dir("good");
    for merges in [r#"["a b"]"#, r#"[["a", "b"]]"#] {
        let path = dir.join("good.json");
        std::fs::write(&path, bpe_file("", merges)).unwrap();
        let tok = Tokenizer::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tok.encode("ab"), [2]);
        assert_eq!(tok.encode("ba"), [1, 0]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
