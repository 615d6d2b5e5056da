//! `\p{L}`, `\p{N}` and NFC against Python 3.11's `unicodedata` (Unicode 14.0.0): the cases in
//! tests/golden/tokenizer/{unicode_classes,nfc_cases}.json, written by make_nfc_cases.py, and a
//! few hand-picked ones spelled out here.

use moe::json::{parse, Value};
use moe::tokenizer::unicode::{is_letter, is_number, nfc};

fn golden(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/golden/tokenizer/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value = parse(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"));
    assert_eq!(value.get("unicode").and_then(Value::as_str), Some("14.0.0"), "{path}: Unicode version");
    value.get("cases").and_then(Value::as_array).unwrap_or_else(|| panic!("{path}: no cases")).to_vec()
}

fn hex(s: &str) -> String {
    s.chars().map(|c| format!("{:04X}", c as u32)).collect::<Vec<_>>().join(" ")
}

// ---- classes

#[test]
fn tricky_classes() {
    // (char, is \p{L}, is \p{N}, why)
    let cases = [
        ('a', true, false, "ASCII letter"),
        ('Z', true, false, "ASCII letter"),
        ('7', false, true, "ASCII digit"),
        ('_', false, false, "Pc, neither"),
        (' ', false, false, "Zs"),
        ('\u{AA}', true, false, "ª is Lo"),
        ('\u{B5}', true, false, "µ is Ll"),
        ('\u{B2}', false, true, "² is No"),
        ('\u{BC}', false, true, "¼ is No"),
        ('\u{D7}', false, false, "× is Sm"),
        ('\u{2C6}', true, false, "ˆ is Lm"),
        ('\u{300}', false, false, "combining grave is Mn"),
        ('\u{345}', false, false, "combining ypogegrammeni is Mn (std calls it alphabetic)"),
        ('\u{661}', false, true, "Arabic-Indic one is Nd"),
        ('\u{2160}', false, true, "Ⅰ is Nl (std: not alphabetic either way)"),
        ('\u{3007}', false, true, "〇 is Nl"),
        ('\u{4E00}', true, false, "CJK ideograph is Lo"),
        ('\u{AC00}', true, false, "Hangul syllable is Lo"),
        ('\u{FF10}', false, true, "fullwidth zero is Nd"),
        ('\u{1D7CE}', false, true, "math bold zero is Nd"),
        ('\u{1F600}', false, false, "emoji is So"),
        ('\u{10FFFF}', false, false, "noncharacter is Cn"),
    ];
    for (c, letter, number, why) in cases {
        assert_eq!(is_letter(c), letter, "is_letter(U+{:04X}): {why}", c as u32);
        assert_eq!(is_number(c), number, "is_number(U+{:04X}): {why}", c as u32);
    }
}

#[test]
fn classes_match_python() {
    let cases = golden("unicode_classes.json");
    assert!(cases.len() > 3000, "only {} class cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let pair = case.as_array().expect("[code point, category]");
        let cp = pair[0].as_u64().expect("code point") as u32;
        let category = pair[1].as_str().expect("category");
        let c = char::from_u32(cp).expect("no surrogates in the cases");
        let want = (category.starts_with('L'), category.starts_with('N'));
        if (is_letter(c), is_number(c)) != want {
            wrong.push(format!(
                "U+{cp:04X} ({category}): is_letter {}, is_number {}",
                is_letter(c),
                is_number(c)
            ));
        }
    }
    assert!(wrong.is_empty(), "{} of {} classes wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

// ---- NFC

#[test]
fn nfc_hand_picked() {
    let cases = [
        ("", ""),
        ("plain ASCII stays", "plain ASCII stays"),
        ("e\u{301}", "\u{E9}"),                           // composes
        ("\u{E9}", "\u{E9}"),                             // already NFC
        ("\u{212B}", "\u{C5}"),                           // Å sign: singleton → Å
        ("\u{2126}", "\u{3A9}"),                          // Ω ohm: singleton → Ω
        ("\u{958}", "\u{915}\u{93C}"),                    // excluded: stays decomposed
        ("\u{344}", "\u{308}\u{301}"),                    // non-starter decomposition
        ("a\u{301}\u{323}", "\u{1EA1}\u{301}"),           // reorder 230/220, then ạ + acute
        ("a\u{323}\u{301}", "\u{1EA1}\u{301}"),           // same
        ("\u{1E0B}\u{323}", "\u{1E0D}\u{307}"),           // ḋ + dot below → ḍ + dot above
        ("a\u{301}\u{301}", "\u{E1}\u{301}"),             // second acute blocked by the first
        ("\u{1100}\u{1161}\u{11A8}", "\u{AC01}"),         // Hangul L V T
        ("\u{AC00}\u{11A8}", "\u{AC01}"),                 // LV + T
        ("\u{1100}\u{1161}\u{11A7}", "\u{AC00}\u{11A7}"), // U+11A7 is not a T jamo
        ("\u{304B}\u{3099}", "\u{304C}"),                 // か + voiced mark → が
        ("\u{DD9}\u{DCF}\u{DCA}", "\u{DDD}"),             // starter as second, twice
        ("\u{301}a", "\u{301}a"),                         // leading non-starter
    ];
    for (input, want) in cases {
        assert_eq!(nfc(input), want, "nfc({}) (hex {})", input.escape_unicode(), hex(input));
    }
}

#[test]
fn nfc_matches_python() {
    let cases = golden("nfc_cases.json");
    assert!(cases.len() > 10000, "only {} NFC cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let pair = case.as_array().expect("[input, expected]");
        let (input, want) = (pair[0].as_str().expect("input"), pair[1].as_str().expect("expected"));
        let got = nfc(input);
        if got != want {
            wrong.push(format!("[{}] -> got [{}], want [{}]", hex(input), hex(&got), hex(want)));
        }
        assert_eq!(nfc(&got), got, "nfc is not idempotent on [{}]", hex(input));
    }
    let shown = wrong.iter().take(30).cloned().collect::<Vec<_>>().join("\n");
    assert!(wrong.is_empty(), "{} of {} NFC cases wrong; first ones:\n{shown}", wrong.len(), cases.len());
}

#[test]
fn nfc_every_hangul_syllable() {
    // Each of the 11172 syllables, spelled as jamo, composes back to itself; alone it stays.
    for s in 0xAC00..=0xD7A3u32 {
        let i = s - 0xAC00;
        let mut jamo = String::new();
        jamo.push(char::from_u32(0x1100 + i / 588).unwrap());
        jamo.push(char::from_u32(0x1161 + (i % 588) / 28).unwrap());
        if i % 28 != 0 {
            jamo.push(char::from_u32(0x11A7 + i % 28).unwrap());
        }
        let syllable = char::from_u32(s).unwrap().to_string();
        assert_eq!(nfc(&jamo), syllable, "jamo {}", hex(&jamo));
        assert_eq!(nfc(&syllable), syllable, "U+{s:04X}");
    }
}
