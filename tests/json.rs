//! The JSON reader and writer: every value kind, every escape, the number grammar, round
//! trips, the files this crate reads (config.json, a safetensors header), and one test per
//! kind of syntax error pinning its line, column and message.

use moe::json::{parse, ParseError, Value};
use std::path::Path;

fn num(x: f64) -> Value {
    Value::Number(x)
}
fn s(text: &str) -> Value {
    Value::String(text.to_string())
}
fn obj(members: &[(&str, Value)]) -> Value {
    Value::Object(members.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

/// Parses `text`, which must fail at `line`:`column` with a message containing `message`.
fn assert_error(text: &str, line: usize, column: usize, message: &str) -> ParseError {
    let err = match parse(text) {
        Ok(v) => panic!("{text:?} parsed as {v:?}, expected an error {message:?}"),
        Err(err) => err,
    };
    assert_eq!((err.line, err.column), (line, column), "{text:?}: position of {:?}", err.message);
    assert!(err.message.contains(message), "{text:?}: message {:?} lacks {message:?}", err.message);
    err
}

// ---- values

#[test]
fn every_value_kind() {
    assert_eq!(parse("null"), Ok(Value::Null));
    assert_eq!(parse("true"), Ok(Value::Bool(true)));
    assert_eq!(parse("false"), Ok(Value::Bool(false)));
    assert_eq!(parse("42"), Ok(num(42.0)));
    assert_eq!(parse(r#""hi""#), Ok(s("hi")));
    assert_eq!(parse("[]"), Ok(Value::Array(vec![])));
    assert_eq!(parse("{}"), Ok(Value::Object(vec![])));
    assert_eq!(
        parse(" \t\r\n[ 1 , \"a\" , [ ] , { } , null ]\n "),
        Ok(Value::Array(vec![num(1.0), s("a"), Value::Array(vec![]), Value::Object(vec![]), Value::Null]))
    );
    // Keys keep file order (not sorted).
    let v = parse(r#"{"z": 1, "a": {"b": [true, false]}}"#).unwrap();
    let b = Value::Array(vec![Value::Bool(true), Value::Bool(false)]);
    assert_eq!(v, obj(&[("z", num(1.0)), ("a", obj(&[("b", b)]))]));
}

#[test]
fn accessors() {
    let v = parse(r#"{"n": 3, "x": -1.5, "s": "t", "b": true, "a": [1, 2], "o": {"k": null}}"#).unwrap();
    assert_eq!(v.get("n").and_then(Value::as_u64), Some(3));
    assert_eq!(v.get("x").and_then(Value::as_f64), Some(-1.5));
    assert_eq!(v.get("s").and_then(Value::as_str), Some("t"));
    assert_eq!(v.get("b").and_then(Value::as_bool), Some(true));
    assert_eq!(v.get("a").and_then(Value::as_array).map(<[Value]>::len), Some(2));
    assert_eq!(v.get("o").and_then(|o| o.get("k")), Some(&Value::Null));
    assert_eq!(v.get("o").and_then(Value::as_object).map(|m| m[0].0.as_str()), Some("k"));
    assert_eq!(v.get("missing"), None);
    // Wrong kinds give None, never a conversion.
    assert_eq!(v.get("s").and_then(Value::as_f64), None);
    assert_eq!(v.get("n").and_then(Value::as_str), None);
    assert_eq!(v.get("a").and_then(|a| a.get("n")), None);
    assert_eq!(num(1.0).as_bool(), None);
    assert_eq!(Value::Null.as_array(), None);
    assert_eq!(v.kind(), "object");
    assert_eq!(v.get("a").map(Value::kind), Some("array"));
    // as_u64: non-negative integers up to 2^53 only.
    let two53 = 9_007_199_254_740_992.0;
    assert_eq!(num(0.0).as_u64(), Some(0));
    assert_eq!(num(-0.0).as_u64(), Some(0));
    assert_eq!(num(two53).as_u64(), Some(1 << 53));
    assert_eq!(num(two53 + 2.0).as_u64(), None);
    assert_eq!(num(-1.0).as_u64(), None);
    assert_eq!(num(1.5).as_u64(), None);
    assert_eq!(num(f64::NAN).as_u64(), None);
    assert_eq!(num(f64::INFINITY).as_u64(), None);
    // get takes the first match in a hand-built object (parse rejects duplicates).
    assert_eq!(obj(&[("k", num(1.0)), ("k", num(2.0))]).get("k"), Some(&num(1.0)));
}

// ---- strings

#[test]
fn every_escape() {
    let text = r#""q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u00E9 \u20AC \ud83d\ude00 \uD83D\uDE00 \u0000""#;
    let want = "q\" b\\ s/ \u{8}\u{c}\n\r\t Aéé € 😀 😀 \u{0}";
    assert_eq!(parse(text), Ok(s(want)));
    // Raw non-ASCII passes through; DEL and U+2028 need no escape.
    assert_eq!(parse("\"ĠthéĊ 日本 😀 \u{7f}\u{2028}\""), Ok(s("ĠthéĊ 日本 😀 \u{7f}\u{2028}")));
}

#[test]
fn invalid_escapes() {
    assert_error(r#""ab\qc""#, 1, 4, r"invalid escape '\q'");
    assert_error(r#""\x41""#, 1, 2, r"invalid escape '\x'");
    assert_error(r#""\U0041""#, 1, 2, r"invalid escape '\U'");
    assert_error("\"\\\n\"", 1, 2, r"invalid escape '\\n'");
    assert_error(r#""\u12""#, 1, 6, r#"expected 4 hex digits after '\u', found '"'"#);
    assert_error(r#""\u12G4""#, 1, 6, "expected 4 hex digits after '\\u', found 'G'");
    assert_error(r#""\u12"#, 1, 6, "unexpected end of input (expected 4 hex digits");
    assert_error(r#""ab\"#, 1, 1, "unterminated string");
}

#[test]
fn lone_and_mispaired_surrogates() {
    assert_error(r#""x\ud83d""#, 1, 3, r"lone surrogate \uD83D");
    assert_error(r#""x\ude00\ud83d""#, 1, 3, r"lone surrogate \uDE00");
    assert_error(r#""x\ud83d y""#, 1, 3, r"lone surrogate \uD83D");
    assert_error(r#""x\ud83d\n""#, 1, 3, r"lone surrogate \uD83D");
    assert_error(r#""x\ud83d\u0041""#, 1, 3, r"high surrogate \uD83D followed by \u0041");
    assert_error(r#""x\ud83d\ud83d""#, 1, 3, r"high surrogate \uD83D followed by \uD83D");
}

#[test]
fn control_character_in_string() {
    assert_error("\"tab\there\"", 1, 5, "control character U+0009 in a string must be escaped");
    assert_error("[\"line\nbreak\"]", 1, 7, "control character U+000A");
    assert_error("\"\u{1f}\"", 1, 2, "control character U+001F");
}

#[test]
fn unterminated_string() {
    assert_error(r#"{"a": "never closed"#, 1, 7, "unterminated string");
    assert_error(r#"{"a"#, 1, 2, "unterminated string");
}

// ---- numbers

#[test]
fn numbers_follow_the_grammar() {
    let cases: [(&str, f64); 15] = [
        ("0", 0.0),
        ("-0", -0.0),
        ("7", 7.0),
        ("-12", -12.0),
        ("0.1", 0.1),
        ("1e-5", 1e-5),
        ("1E+2", 100.0),
        ("2e0", 2.0),
        ("-0.0e-0", -0.0),
        ("123456789012", 123456789012.0),
        ("3.14159265358979323846264338327950288", std::f64::consts::PI),
        ("9007199254740993", 9007199254740992.0), // ties to even, correctly rounded
        ("1e-400", 0.0),                          // underflows to zero: still the nearest f64
        ("1.7976931348623157e308", f64::MAX),
        ("4.9e-324", 5e-324),
    ];
    for (text, want) in cases {
        let got = parse(text).unwrap().as_f64().unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{text} parsed as {got:e}, want {want:e}");
    }
}

#[test]
fn numbers_outside_the_grammar() {
    assert_error("01", 1, 2, "leading zeros are not allowed");
    assert_error("[-007]", 1, 4, "leading zeros are not allowed");
    assert_error("+1", 1, 1, "expected a JSON value, found '+'");
    assert_error(".5", 1, 1, "expected a JSON value, found '.'");
    assert_error("1.", 1, 3, "unexpected end of input (expected a digit after '.')");
    assert_error("[1.e5]", 1, 4, "expected a digit after '.', found 'e'");
    assert_error("1e", 1, 3, "unexpected end of input (expected a digit in the exponent)");
    assert_error("1e+", 1, 4, "expected a digit in the exponent");
    assert_error("[-]", 1, 3, "expected a digit, found ']'");
    assert_error("-Infinity", 1, 2, "expected a digit, found 'I'");
    assert_error("NaN", 1, 1, "invalid literal 'NaN'");
    assert_error("Infinity", 1, 1, "invalid literal 'Infinity'");
    assert_error("0x10", 1, 2, "trailing characters after the JSON value: found 'x'");
}

#[test]
fn number_out_of_range() {
    assert_error("1e400", 1, 1, "number out of range: 1e400");
    assert_error("[0, -1e309]", 1, 5, "number out of range");
    assert_error("1e99999999999999999999", 1, 1, "number out of range");
    let huge = format!("{{\"x\": 1{}}}", "0".repeat(400));
    assert_error(&huge, 1, 7, "number out of range");
}

// ---- writer

#[test]
fn writes_numbers_exactly_and_briefly() {
    let cases: [(f64, &str); 14] = [
        (3.0, "3"),
        (-0.0, "-0"),
        (0.0, "0"),
        (-17.0, "-17"),
        (123456789012.0, "123456789012"),
        (10000.0, "10000"),
        (9007199254740991.0, "9007199254740991"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e-5, "1e-5"),
        (1e-6, "1e-6"),
        (1e20, "1e20"),
        (1.5e300, "1.5e300"),
        (5e-324, "5e-324"),
    ];
    for (x, want) in cases {
        assert_eq!(num(x).to_json(), want);
        assert_eq!(parse(want).unwrap().as_f64().unwrap().to_bits(), x.to_bits(), "{want}");
    }
    // JSON has no NaN or infinity: they are written as null.
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(num(x).to_json(), "null");
    }
}

#[test]
fn every_written_number_parses_back_bit_exact() {
    // f64s from a fixed xorshift stream, reinterpreting random bits (all exponents) and
    // scaling random integers (short decimals, integers near 2^53).
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..200_000 {
        let bits = next();
        let x = match i % 3 {
            0 => f64::from_bits(bits),
            1 => (bits >> 11) as f64 / 10f64.powi((bits % 12) as i32),
            _ => (bits >> 10) as f64 * if bits & 1 == 0 { 1.0 } else { -1.0 },
        };
        if !x.is_finite() {
            continue;
        }
        let text = num(x).to_json();
        let back = parse(&text).unwrap_or_else(|e| panic!("{x:e} written as {text:?}: {e}"));
        assert_eq!(back.as_f64().unwrap().to_bits(), x.to_bits(), "{x:e} written as {text:?}");
        assert!(text.len() <= format!("{x}").len() && text.len() <= format!("{x:e}").len().max(17));
    }
}

#[test]
fn writes_strings_with_minimal_escapes() {
    let v = s("q\" b\\ s/ \u{8}\u{c}\n\r\t \u{0}\u{1f} é 😀 \u{7f}");
    let want = "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \\u0000\\u001f é 😀 \u{7f}\"";
    assert_eq!(v.to_json(), want);
    assert_eq!(parse(&v.to_json()), Ok(v));
}

fn nested() -> Value {
    obj(&[
        ("name", s("moe \"tiny\"\n")),
        ("layers", num(16.0)),
        ("eps", num(1e-5)),
        ("ratio", num(-0.375)),
        ("tied", Value::Bool(false)),
        ("none", Value::Null),
        ("empty_list", Value::Array(vec![])),
        ("empty_map", Value::Object(vec![])),
        ("shape", Value::Array(vec![num(2.0), num(3.0), Value::Array(vec![s("é😀"), Value::Null])])),
        ("inner", obj(&[("a", obj(&[("b", Value::Array(vec![Value::Object(vec![])]))]))])),
    ])
}

#[test]
fn compact_and_pretty_text() {
    let v = obj(&[
        ("a", Value::Array(vec![num(1.0), num(2.5)])),
        ("b", obj(&[("c", Value::Null)])),
        ("d", Value::Array(vec![])),
        ("e", Value::Object(vec![])),
        ("f", s("x")),
    ]);
    assert_eq!(v.to_json(), r#"{"a":[1,2.5],"b":{"c":null},"d":[],"e":{},"f":"x"}"#);
    let pretty = "{\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"b\": {\n    \"c\": null\n  },\n  \
                  \"d\": [],\n  \"e\": {},\n  \"f\": \"x\"\n}";
    assert_eq!(v.to_json_pretty(), pretty);
    assert_eq!(Value::Array(vec![]).to_json_pretty(), "[]");
    assert_eq!(num(1.0).to_json_pretty(), "1");
}

#[test]
fn round_trips() {
    let v = nested();
    assert_eq!(parse(&v.to_json()), Ok(v.clone()));
    assert_eq!(parse(&v.to_json_pretty()), Ok(v.clone()));
    // Writing what was read gives the same text back.
    let compact = v.to_json();
    assert_eq!(parse(&compact).unwrap().to_json(), compact);
}

// ---- files this crate reads

const OLMOE_CONFIG: &str = r#"{
  "_name_or_path": "allenai/OLMoE-1B-7B-0924",
  "architectures": [
    "OlmoeForCausalLM"
  ],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "clip_qkv": null,
  "eos_token_id": 50279,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 1024,
  "max_position_embeddings": 4096,
  "model_type": "olmoe",
  "norm_topk_prob": false,
  "num_attention_heads": 16,
  "num_experts": 64,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 16,
  "num_key_value_heads": 16,
  "output_router_logits": false,
  "pad_token_id": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "router_aux_loss_coef": 0.01,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 50304
}
"#;

#[test]
fn hugging_face_config_json() {
    let c = parse(OLMOE_CONFIG).unwrap();
    let u = |k: &str| c.get(k).and_then(Value::as_u64);
    assert_eq!(
        (u("hidden_size"), u("num_experts"), u("num_experts_per_tok")),
        (Some(2048), Some(64), Some(8))
    );
    assert_eq!(
        (u("intermediate_size"), u("vocab_size"), u("eos_token_id")),
        (Some(1024), Some(50304), Some(50279))
    );
    assert_eq!(c.get("rms_norm_eps").and_then(Value::as_f64), Some(1e-5));
    assert_eq!(c.get("rope_theta").and_then(Value::as_u64), Some(10000));
    assert_eq!(c.get("router_aux_loss_coef").and_then(Value::as_f64), Some(0.01));
    assert_eq!(c.get("norm_topk_prob").and_then(Value::as_bool), Some(false));
    assert_eq!(c.get("clip_qkv"), Some(&Value::Null));
    assert_eq!(c.get("model_type").and_then(Value::as_str), Some("olmoe"));
    let arch = c.get("architectures").and_then(Value::as_array).unwrap();
    assert_eq!(arch[0].as_str(), Some("OlmoeForCausalLM"));
    assert_eq!(c.as_object().unwrap().len(), 29);
    // The pretty writer produces the same layout HF does (keys here are already sorted),
    // except HF's exponent style for 1e-05 and 0.0.
    let written = c.to_json_pretty() + "\n";
    let hf = OLMOE_CONFIG
        .replace("1e-05", "1e-5")
        .replace("\"attention_dropout\": 0.0", "\"attention_dropout\": 0");
    assert_eq!(written, hf.replace("10000.0", "10000"));
}

#[test]
fn safetensors_header() {
    let text = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
    let h = parse(text).unwrap();
    assert_eq!(h.get("__metadata__").and_then(|m| m.get("format")).and_then(Value::as_str), Some("pt"));
    let w = h.get("w").unwrap();
    assert_eq!(w.get("dtype").and_then(Value::as_str), Some("F32"));
    let ints = |k: &str| {
        w.get(k).unwrap().as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ints("shape"), vec![2, 3]);
    assert_eq!(ints("data_offsets"), vec![0, 24]);
    assert_eq!(h.to_json(), text);
}

#[test]
fn large_objects_parse_quickly() {
    // A tokenizer vocabulary: 50k keys, each checked against the others for duplicates.
    let body: Vec<String> = (0..50_000).map(|i| format!("\"tok{i}\": {i}")).collect();
    let v = parse(&format!("{{{}}}", body.join(",\n"))).unwrap();
    assert_eq!(v.get("tok49999").and_then(Value::as_u64), Some(49_999));
}

// ---- syntax errors, one per kind

#[test]
fn missing_comma() {
    assert_error(r#"{"a": 1 "b": 2}"#, 1, 9, "expected ',' or '}' after an object member, found '\"'");
    assert_error("[1 2]", 1, 4, "expected ',' or ']' after an array element, found '2'");
    assert_error(r#"{"a": 1x}"#, 1, 8, "expected ',' or '}' after an object member, found 'x'");
}

#[test]
fn missing_colon() {
    assert_error(r#"{"a" 1}"#, 1, 6, "expected ':' after an object key, found '1'");
    assert_error(r#"{"a"}"#, 1, 5, "expected ':' after an object key, found '}'");
}

#[test]
fn non_string_key() {
    assert_error("{a: 1}", 1, 2, "expected a string key, found 'a'");
    assert_error("{1: 1}", 1, 2, "expected a string key, found '1'");
}

#[test]
fn trailing_comma_in_object() {
    assert_error(r#"{"a": 1,}"#, 1, 9, "expected a string key, found '}' (JSON allows no trailing comma)");
    assert_error("{\"a\": 1,\n}", 2, 1, "no trailing comma");
}

#[test]
fn trailing_comma_in_array() {
    assert_error("[1, 2, ]", 1, 8, "expected a JSON value, found ']' (JSON allows no trailing comma)");
    assert_error("[,]", 1, 2, "expected a JSON value, found ','");
}

#[test]
fn bad_literal() {
    assert_error("tru", 1, 1, "invalid literal 'tru' (expected true, false or null)");
    assert_error("[true, nul]", 1, 8, "invalid literal 'nul'");
    assert_error("True", 1, 1, "invalid literal 'True'");
    assert_error("[truex]", 1, 2, "invalid literal 'truex'");
    assert_error("'a'", 1, 1, "expected a JSON value, found '\\''");
}

#[test]
fn trailing_garbage() {
    assert_error("{} x", 1, 4, "trailing characters after the JSON value: found 'x'");
    assert_error("[1]]", 1, 4, "trailing characters after the JSON value: found ']'");
    assert_error("1 2", 1, 3, "trailing characters");
    assert_error("null\n\n  //", 3, 3, "trailing characters after the JSON value: found '/'");
}

#[test]
fn empty_input() {
    assert_error("", 1, 1, "unexpected end of input (expected a JSON value)");
    assert_error("  \n\t ", 2, 3, "unexpected end of input");
    assert_error("[1, ", 1, 5, "unexpected end of input (expected a JSON value)");
    assert_error(r#"{"a": [1"#, 1, 9, "unexpected end of input (expected ',' or ']' after an array element)");
}

#[test]
fn only_json_whitespace() {
    assert_error("\u{c}1", 1, 1, "expected a JSON value, found '\\u{c}'");
    assert_error("[1,\u{a0}2]", 1, 4, r"found '\u{a0}'");
    assert_error("\u{feff}{}", 1, 1, "expected a JSON value");
}

#[test]
fn nesting_deeper_than_128() {
    let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
    assert!(parse(&ok).is_ok());
    let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
    assert_error(&deep, 1, 129, "nesting deeper than 128 arrays/objects");
    let deep_objects = format!("{}1{}", r#"{"k":"#.repeat(200), "}".repeat(200));
    assert_error(&deep_objects, 1, 5 * 128 + 1, "nesting deeper than 128");
    // Far deeper input is the same error, not a stack overflow.
    assert_error(&"[".repeat(1_000_000), 1, 129, "nesting deeper than 128");
}

#[test]
fn duplicate_key() {
    assert_error(r#"{"a": 1, "b": {"a": 2}, "a": 3}"#, 1, 25, "duplicate key \"a\"");
    // Keys compare after unescaping.
    assert_error(r#"{"é": 1, "\u00e9": 2}"#, 1, 10, "duplicate key \"é\"");
}

#[test]
fn line_and_column_on_line_three() {
    let text = "{\n  \"a\": 1,\n  \"b\": [1, 2 3]\n}";
    assert_error(text, 3, 14, "expected ',' or ']' after an array element, found '3'");
    // Columns count characters, not bytes: 'é' and '😀' are one column each.
    let text = "{\n  \"é\": 1,\n  \"😀é\": tru\n}";
    assert_error(text, 3, 9, "invalid literal 'tru'");
    // "\r\n" line ends count as one line break.
    assert_error("[\r\n1,\r\n\"é\" x]", 3, 5, "found 'x'");
}

#[test]
fn error_display_and_in_file() {
    let err = assert_error("[1,]", 1, 4, "trailing comma");
    assert_eq!(
        err.to_string(),
        "line 1, column 4: expected a JSON value, found ']' (JSON allows no trailing comma)"
    );
    let file = err.in_file(Path::new("weights/config.json")).to_string();
    assert!(file.starts_with("weights/config.json: line 1, column 4: expected a JSON value"), "{file}");
}

#[test]
fn floats_are_written_with_a_decimal_point() {
    use moe::json::Value;
    let v =
        Value::Array(vec![Value::Float(1.0), Value::Float(10000.0), Value::Float(1e-5), Value::Float(-0.5)]);
    assert_eq!(v.to_json(), "[1.0,10000.0,1e-5,-0.5]");
    assert_eq!(Value::Float(2.0).as_f64(), Some(2.0));
    assert_eq!(moe::json::parse("1.0").unwrap(), Value::Number(1.0)); // reads back as a Number
}
