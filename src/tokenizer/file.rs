//! `tokenizer.json`, the Hugging Face `tokenizers` file: reading one whose model is byte-level
//! BPE (anything else is a clear error naming what was found), and writing one laid out as
//! the OLMo file, which the `tokenizers` library loads.

use super::bpe::{AddedToken, Parts, Tokenizer};
use crate::error::{Error, Result};
use crate::json::{self, Value};
use std::path::Path;

impl Tokenizer {
    /// Reads a Hugging Face `tokenizer.json` whose model is byte-level BPE.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let root = json::parse(&text).map_err(|e| e.in_file(path))?;
        let parts = read_parts(&root, path)?;
        Tokenizer::build(parts).map_err(|e| match e {
            Error::Invalid { what, rule, hint } => {
                Error::Invalid { what: format!("{}: {what}", path.display()), rule, hint }
            }
            other => other,
        })
    }
}

// ---- load

/// The field `name` of `object` (at `field`, for messages), which must be there.
fn required<'a>(object: &'a Value, name: &str, field: &str) -> Result<&'a Value> {
    object.get(name).ok_or_else(|| Error::invalid(field.to_string(), format!("missing field \"{name}\"")))
}

fn expect_str<'a>(v: &'a Value, field: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| Error::invalid(field.to_string(), format!("expected a string, found {}", v.kind())))
}

fn expect_bool(v: &Value, field: &str) -> Result<bool> {
    v.as_bool().ok_or_else(|| {
        Error::invalid(field.to_string(), format!("expected true or false, found {}", v.kind()))
    })
}

fn expect_id(v: &Value, field: &str) -> Result<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| {
        Error::invalid(field.to_string(), format!("expected an id (0..2^32), found {}", v.to_json()))
    })
}

/// The `type` of a component object, "null" for null, "(no type)" for an object without one.
fn type_of(v: &Value) -> &str {
    match v {
        Value::Null => "null",
        _ => v.get("type").and_then(Value::as_str).unwrap_or("(no type)"),
    }
}

const BYTE_LEVEL_HINT: &str = "only GPT-2 style byte-level BPE files (GPT-2, GPT-NeoX, OLMo) can be read: \
     model BPE, pre_tokenizer ByteLevel with the GPT-2 split, decoder ByteLevel";

/// Reads and checks everything but the merge/vocab consistency (left to `build`).
fn read_parts(root: &Value, path: &Path) -> Result<Parts> {
    let bad = |field: &str, rule: String| Error::invalid(format!("{}: {field}", path.display()), rule);
    let field = |name: &str| format!("{}: {name}", path.display());
    if root.as_object().is_none() {
        return Err(bad("(top level)", format!("expected a JSON object, found {}", root.kind())));
    }

    // The model: BPE, with none of the options this implementation leaves out.
    let model = required(root, "model", &field("(top level)"))?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if kind != "BPE" {
        return Err(bad("model.type", format!("the model is {kind}, not BPE")).with_hint(BYTE_LEVEL_HINT));
    }
    for option in ["dropout", "continuing_subword_prefix", "end_of_word_suffix"] {
        match model.get(option) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() && option != "dropout" => {}
            Some(v) => {
                return Err(bad(
                    &format!("model.{option}"),
                    format!("{} is not supported (only null)", v.to_json()),
                ))
            }
        }
    }
    for option in ["byte_fallback", "ignore_merges"] {
        if let Some(v) = model.get(option) {
            if expect_bool(v, &field(&format!("model.{option}")))? {
                return Err(bad(&format!("model.{option}"), "true is not supported (only false)".into()));
            }
        }
    }
    let fuse_unk = match model.get("fuse_unk") {
        Some(v) => expect_bool(v, &field("model.fuse_unk"))?,
        None => false,
    };
    let unk_token = match model.get("unk_token") {
        None | Some(Value::Null) => None,
        Some(v) => Some(expect_str(v, &field("model.unk_token"))?.to_string()),
    };

    let vocab_value = required(model, "vocab", &field("model"))?;
    let Some(entries) = vocab_value.as_object() else {
        return Err(bad(
            "model.vocab",
            format!("expected an object token → id, found {}", vocab_value.kind()),
        ));
    };
    let mut vocab = Vec::with_capacity(entries.len());
    for (token, id) in entries {
        vocab.push((token.clone(), expect_id(id, &field(&format!("model.vocab[{token:?}]")))?));
    }
    let merges_value = required(model, "merges", &field("model"))?;
    let Some(items) = merges_value.as_array() else {
        return Err(bad("model.merges", format!("expected an array, found {}", merges_value.kind())));
    };
    let mut merges = Vec::with_capacity(items.len());
    for (rank, item) in items.iter().enumerate() {
        let pair = match item {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(' ').collect();
                match parts[..] {
                    [a, b] => Some((a.to_string(), b.to_string())),
                    _ => None,
                }
            }
            Value::Array(ab) => match &ab[..] {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        let Some(pair) = pair else {
            let rule = format!("expected \"a b\" or [\"a\", \"b\"], found {}", item.to_json());
            return Err(bad(&format!("model.merges[{rank}]"), rule));
        };
        merges.push(pair);
    }

    // Byte level: the ByteLevel pre-tokenizer (with the GPT-2 split) and decoder.
    let pre = root.get("pre_tokenizer").unwrap_or(&Value::Null);
    let rule = match type_of(pre) {
        "ByteLevel" => None,
        "Sequence" => {
            Some("a Sequence pre-tokenizer (a custom split, then ByteLevel) is not supported".into())
        }
        other => Some(format!("the pre-tokenizer is {other}, not ByteLevel: this BPE is not byte-level")),
    };
    if let Some(rule) = rule {
        return Err(bad("pre_tokenizer", rule).with_hint(BYTE_LEVEL_HINT));
    }
    if let Some(v) = pre.get("use_regex") {
        if !expect_bool(v, &field("pre_tokenizer.use_regex"))? {
            return Err(bad(
                "pre_tokenizer.use_regex",
                "false is not supported (only the GPT-2 split)".into(),
            ));
        }
    }
    let add_prefix_space = match pre.get("add_prefix_space") {
        Some(v) => expect_bool(v, &field("pre_tokenizer.add_prefix_space"))?,
        None => true, // the library's default
    };
    let decoder = root.get("decoder").unwrap_or(&Value::Null);
    if type_of(decoder) != "ByteLevel" {
        let rule = format!("the decoder is {}, not ByteLevel: this BPE is not byte-level", type_of(decoder));
        return Err(bad("decoder", rule).with_hint(BYTE_LEVEL_HINT));
    }
    let normalizer = root.get("normalizer").unwrap_or(&Value::Null);
    let nfc = match type_of(normalizer) {
        "NFC" => true,
        "null" => false,
        other => return Err(bad("normalizer", format!("{other} is not supported (only NFC or null)"))),
    };
    let post = root.get("post_processor").unwrap_or(&Value::Null);
    if !matches!(type_of(post), "ByteLevel" | "null") {
        let rule = format!(
            "{} is not supported (only ByteLevel or null: nothing added around the ids)",
            type_of(post)
        );
        return Err(bad("post_processor", rule));
    }

    let mut added = Vec::new();
    if let Some(list) = root.get("added_tokens") {
        let Some(list) = list.as_array() else {
            return Err(bad("added_tokens", format!("expected an array, found {}", list.kind())));
        };
        for (i, t) in list.iter().enumerate() {
            let at = |name: &str| field(&format!("added_tokens[{i}].{name}"));
            let flag = |name: &str, default: bool| match t.get(name) {
                Some(v) => expect_bool(v, &at(name)),
                None => Ok(default),
            };
            let special = flag("special", false)?;
            added.push(AddedToken {
                id: expect_id(required(t, "id", &field(&format!("added_tokens[{i}]")))?, &at("id"))?,
                content: expect_str(
                    required(t, "content", &field(&format!("added_tokens[{i}]")))?,
                    &at("content"),
                )?
                .to_string(),
                single_word: flag("single_word", false)?,
                lstrip: flag("lstrip", false)?,
                rstrip: flag("rstrip", false)?,
                normalized: flag("normalized", !special)?,
                special,
            });
        }
    }
    Ok(Parts { vocab, merges, added, unk_token, fuse_unk, nfc, add_prefix_space })
}

// ---- save

impl Tokenizer {
    /// Writes a `tokenizer.json` that the `tokenizers` library loads (atomically: a temporary
    /// file next to it, then a rename), laid out as the OLMo file: vocab by id, merges as pairs.
    pub fn save(&self, path: &Path) -> Result<()> {
        let s = |x: &str| Value::String(x.to_string());
        let num = |x: u32| Value::Number(x as f64);
        let byte_level = || {
            Value::Object(vec![
                ("type".into(), s("ByteLevel")),
                ("add_prefix_space".into(), Value::Bool(self.add_prefix_space)),
                ("trim_offsets".into(), Value::Bool(true)),
                ("use_regex".into(), Value::Bool(true)),
            ])
        };
        let mut added: Vec<&AddedToken> = self.added.iter().collect();
        added.sort_by_key(|t| t.id);
        let added = added
            .into_iter()
            .map(|t| {
                Value::Object(vec![
                    ("id".into(), num(t.id)),
                    ("content".into(), s(&t.content)),
                    ("single_word".into(), Value::Bool(t.single_word)),
                    ("lstrip".into(), Value::Bool(t.lstrip)),
                    ("rstrip".into(), Value::Bool(t.rstrip)),
                    ("normalized".into(), Value::Bool(t.normalized)),
                    ("special".into(), Value::Bool(t.special)),
                ])
            })
            .collect();
        let mut vocab: Vec<(&String, u32)> = self.vocab.iter().map(|(t, &id)| (t, id)).collect();
        vocab.sort_by_key(|&(_, id)| id);
        let vocab = vocab.into_iter().map(|(t, id)| (t.clone(), num(id))).collect();
        let merges = self.merge_list.iter().map(|(a, b)| Value::Array(vec![s(a), s(b)])).collect();
        let model = Value::Object(vec![
            ("type".into(), s("BPE")),
            ("dropout".into(), Value::Null),
            ("unk_token".into(), self.unk.as_ref().map_or(Value::Null, |(t, _)| s(t))),
            ("continuing_subword_prefix".into(), Value::Null),
            ("end_of_word_suffix".into(), Value::Null),
            ("fuse_unk".into(), Value::Bool(self.fuse_unk)),
            ("byte_fallback".into(), Value::Bool(false)),
            ("vocab".into(), Value::Object(vocab)),
            ("merges".into(), Value::Array(merges)),
        ]);
        let normalizer = if self.nfc { Value::Object(vec![("type".into(), s("NFC"))]) } else { Value::Null };
        let root = Value::Object(vec![
            ("version".into(), s("1.0")),
            ("truncation".into(), Value::Null),
            ("padding".into(), Value::Null),
            ("added_tokens".into(), Value::Array(added)),
            ("normalizer".into(), normalizer),
            ("pre_tokenizer".into(), byte_level()),
            ("post_processor".into(), byte_level()),
            ("decoder".into(), byte_level()),
            ("model".into(), model),
        ]);
        let mut text = root.to_json_pretty();
        text.push('\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        std::fs::write(tmp, text).map_err(|source| Error::Io { path: tmp.to_path_buf(), source })?;
        std::fs::rename(tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}
