//! JSON reader and writer (RFC 8259), written by hand: a recursive-descent parser over the
//! characters of the text that counts lines and columns, so every error points at the
//! character that broke the grammar and says what was expected there.
//!
//! ```text
//! json    = ws value ws                          ws = *( ' ' | '\t' | '\n' | '\r' )
//! value   = object | array | string | number | "true" | "false" | "null"
//! object  = '{' ws [ member *( ws ',' ws member ) ] ws '}'      member = string ws ':' ws value
//! array   = '[' ws [ value *( ws ',' ws value ) ] ws ']'
//! string  = '"' *( char | '\' ( '"' | '\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' | 'u' 4hex ) ) '"'
//! number  = [ '-' ] ( '0' | [1-9] *digit ) [ '.' 1*digit ] [ ( 'e' | 'E' ) [ '+' | '-' ] 1*digit ]
//! ```
//! Rules on top of the grammar: no raw control character (below U+0020) inside a string; a
//! `\u` escape of a UTF-16 surrogate must be a high one followed by a low one; no duplicate
//! key within an object; at most 128 nested arrays/objects. A number is read as the nearest
//! f64 (integers are exact up to 2^53); one too large for an f64 is an error.

use crate::error::Error;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

/// Arrays and objects nested deeper than this are an error (the parser recurses per level).
const MAX_DEPTH: usize = 128;
/// 2^53: every integer of at most this magnitude is exactly an f64.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;
/// The one-letter escapes: `\n` stands for '\n'. The writer uses all but `\/`.
#[rustfmt::skip]
const ESCAPES: [(char, char); 8] =
    [('"', '"'), ('\\', '\\'), ('/', '/'), ('b', '\u{8}'), ('f', '\u{c}'), ('n', '\n'), ('r', '\r'), ('t', '\t')];
const UNTERMINATED: &str = "unterminated string (no closing '\"')";

/// A JSON value. Objects keep their keys in file order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    /// A number the writer always prints with a decimal point or exponent ("1.0", as Python
    /// writes a float), for readers that check types: transformers 5 refuses `"clip_qkv": 1`.
    /// Only for writing; the parser gives `Number`, so it reads back as `Number`.
    Float(f64),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// A syntax error at a 1-based line and column (column counted in characters).
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ParseError {
    /// The crate error for this syntax error in file `path`.
    pub fn in_file(self, path: &Path) -> Error {
        Error::invalid(
            format!("{}: line {}, column {}", path.display(), self.line, self.column),
            self.message,
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it).
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser { text, pos: 0, line: 1, column: 1, depth: 0 };
    p.skip_ws();
    let value = p.value()?;
    p.skip_ws();
    match p.peek() {
        None => Ok(value),
        Some(c) => Err(p.error(format!("trailing characters after the JSON value: found {c:?}"))),
    }
}

// ---- parser

/// A 1-based (line, column) in the text.
type Pos = (usize, usize);

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    /// Line and column (in characters) of the next character.
    line: usize,
    column: usize,
    /// Arrays and objects open around the next character.
    depth: usize,
}

fn error_at((line, column): Pos, message: impl Into<String>) -> ParseError {
    ParseError { line, column, message: message.into() }
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            (self.line, self.column) = (self.line + 1, 1);
        } else {
            self.column += 1;
        }
        Some(c)
    }

    /// Consumes `c` if it is next.
    fn eat(&mut self, c: char) -> bool {
        let next = self.peek() == Some(c);
        if next {
            self.bump();
        }
        next
    }

    /// Consumes `c`, which must be next (`what` describes it for the error).
    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn here(&self) -> Pos {
        (self.line, self.column)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        error_at(self.here(), message)
    }

    /// "expected WHAT, found 'x'" at the next character, or "unexpected end of input".
    fn expected(&self, what: &str) -> ParseError {
        match self.peek() {
            Some(c) => self.error(format!("expected {what}, found {c:?}")),
            None => self.error(format!("unexpected end of input (expected {what})")),
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some('{') => self.object(),
            Some('[') => self.array(),
            Some('"') => Ok(Value::String(self.string()?)),
            Some('-' | '0'..='9') => Ok(Value::Number(self.number()?)),
            Some(c) if c.is_ascii_alphabetic() => self.literal(),
            _ => Err(self.expected("a JSON value")),
        }
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        let mut items = Vec::new();
        self.sequence(']', "a JSON value", "an array element", |p| {
            items.push(p.value()?);
            Ok(())
        })?;
        Ok(Value::Array(items))
    }

    fn object(&mut self) -> Result<Value, ParseError> {
        let (mut members, mut seen) = (Vec::new(), HashSet::new());
        self.sequence('}', "a string key", "an object member", |p| {
            let at = p.here();
            if p.peek() != Some('"') {
                return Err(p.expected("a string key"));
            }
            let key = p.string()?;
            if !seen.insert(key.clone()) {
                return Err(error_at(at, format!("duplicate key {key:?}")));
            }
            p.skip_ws();
            p.expect(':', "':' after an object key")?;
            p.skip_ws();
            members.push((key, p.value()?));
            Ok(())
        })?;
        Ok(Value::Object(members))
    }

    /// The bracket, then `item (',' item)*` or nothing, then `close`. `item` parses one
    /// element (named `what` in errors; `after` names it once parsed).
    fn sequence(
        &mut self,
        close: char,
        what: &str,
        after: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} arrays/objects")));
        }
        self.depth += 1;
        self.bump();
        self.skip_ws();
        if !self.eat(close) {
            loop {
                self.skip_ws();
                if self.peek() == Some(close) {
                    let message = format!("expected {what}, found {close:?} (JSON allows no trailing comma)");
                    return Err(self.error(message));
                }
                item(self)?;
                self.skip_ws();
                if self.eat(close) {
                    break;
                }
                self.expect(',', &format!("',' or '{close}' after {after}"))?;
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// A string; the opening '"' is next.
    fn string(&mut self) -> Result<String, ParseError> {
        let open = self.here();
        self.bump();
        let mut out = String::new();
        loop {
            let at = self.here();
            match self.bump() {
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape(at, open)?),
                Some(c) if c < ' ' => {
                    let message = format!("control character U+{:04X} in a string must be escaped", c as u32);
                    return Err(error_at(at, message + " (\\n, \\t, \\u00XX)"));
                }
                Some(c) => out.push(c),
                None => return Err(error_at(open, UNTERMINATED)),
            }
        }
    }

    /// The rest of the escape sequence whose '\' was at `at`, in a string opened at `open`.
    fn escape(&mut self, at: Pos, open: Pos) -> Result<char, ParseError> {
        match self.bump() {
            Some('u') => self.unicode_escape(at),
            Some(c) => ESCAPES
                .iter()
                .find(|&&(letter, _)| letter == c)
                .map(|&(_, escaped)| escaped)
                .ok_or_else(|| error_at(at, format!("invalid escape '\\{}'", c.escape_debug()))),
            None => Err(error_at(open, UNTERMINATED)),
        }
    }

    /// The 4 hex digits of a `\u` escape that began at `at`, and its low half if it is the
    /// high half of a UTF-16 surrogate pair (U+1F600 is written \uD83D\uDE00).
    fn unicode_escape(&mut self, at: Pos) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let mut code = first;
        if (0xD800..0xDC00).contains(&first) && self.text[self.pos..].starts_with("\\u") {
            self.bump();
            self.bump();
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                let message = format!("high surrogate \\u{first:04X} followed by \\u{second:04X}, not by a low surrogate \\uDC00-\\uDFFF");
                return Err(error_at(at, message));
            }
            code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        }
        // from_u32 refuses exactly the surrogates: here, a half without its partner.
        char::from_u32(code).ok_or_else(|| {
            error_at(at, format!("lone surrogate \\u{first:04X} (surrogates must come in high-low pairs)"))
        })
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self.peek().and_then(|c| c.to_digit(16));
            let digit = digit.ok_or_else(|| self.expected("4 hex digits after '\\u'"))?;
            self.bump();
            code = code * 16 + digit;
        }
        Ok(code)
    }

    /// A number per the grammar, read as the nearest f64 by Rust's correctly rounded parser.
    fn number(&mut self) -> Result<f64, ParseError> {
        let (start, at) = (self.pos, self.here());
        self.eat('-');
        if self.eat('0') {
            if matches!(self.peek(), Some('0'..='9')) {
                return Err(self.error("leading zeros are not allowed in numbers"));
            }
        } else {
            self.digits("a digit")?;
        }
        if self.eat('.') {
            self.digits("a digit after '.'")?;
        }
        if self.eat('e') || self.eat('E') {
            let _sign = self.eat('+') || self.eat('-');
            self.digits("a digit in the exponent")?;
        }
        let text = &self.text[start..self.pos];
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(error_at(at, format!("number out of range: {text} does not fit in an f64"))),
        }
    }

    /// One or more digits.
    fn digits(&mut self, what: &str) -> Result<(), ParseError> {
        if !matches!(self.peek(), Some('0'..='9')) {
            return Err(self.expected(what));
        }
        while matches!(self.peek(), Some('0'..='9')) {
            self.bump();
        }
        Ok(())
    }

    /// `true`, `false` or `null`; any other word is an error naming the whole word.
    fn literal(&mut self) -> Result<Value, ParseError> {
        let (start, at) = (self.pos, self.here());
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            self.bump();
        }
        match &self.text[start..self.pos] {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            word => Err(error_at(at, format!("invalid literal '{word}' (expected true, false or null)"))),
        }
    }
}

// ---- accessors

impl Value {
    /// The value of `key` in an object (None for a missing key or a non-object).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(x) | Value::Float(x) => Some(*x),
            _ => None,
        }
    }
    /// A number that is a non-negative integer exactly representable (≤ 2^53).
    pub fn as_u64(&self) -> Option<u64> {
        let x = self.as_f64()?;
        ((0.0..=EXACT_INT).contains(&x) && x.fract() == 0.0).then_some(x as u64)
    }
    pub fn as_str(&self) -> Option<&str> {
        let Value::String(s) = self else { return None };
        Some(s)
    }
    pub fn as_bool(&self) -> Option<bool> {
        let Value::Bool(b) = self else { return None };
        Some(*b)
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        let Value::Array(items) = self else { return None };
        Some(items)
    }
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        let Value::Object(members) = self else { return None };
        Some(members)
    }
    /// The kind of value, for error messages: "null", "bool", "number", "string", "array", "object".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) | Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

// ---- writer

impl Value {
    /// Compact JSON text (no spaces); parse(v.to_json()) == v. JSON has no NaN or infinity:
    /// a non-finite number is written as `null`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_value(self, None, &mut out);
        out
    }
    /// Indented JSON text (2 spaces, `"key": value`, empty `{}` and `[]` on one line, no
    /// final newline), as config.json files are written. A non-finite number is written as `null`.
    pub fn to_json_pretty(&self) -> String {
        let mut out = String::new();
        write_value(self, Some(0), &mut out);
        out
    }
}

/// Appends `v`; `indent` is None for compact text, else the nesting level of `v`.
fn write_value(v: &Value, indent: Option<usize>, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(x) => write_number(*x, out),
        Value::Float(x) => {
            let start = out.len();
            write_number(*x, out);
            if x.is_finite() && !out[start..].contains(['.', 'e']) {
                out.push_str(".0");
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => write_sequence("[]", items.iter().map(|v| (None, v)), indent, out),
        Value::Object(members) => {
            write_sequence("{}", members.iter().map(|(k, v)| (Some(k.as_str()), v)), indent, out)
        }
    }
}

/// Elements (with their keys, for an object) between `brackets`.
fn write_sequence<'a>(
    brackets: &str,
    items: impl Iterator<Item = (Option<&'a str>, &'a Value)>,
    indent: Option<usize>,
    out: &mut String,
) {
    let inner = indent.map(|level| level + 1);
    out.push_str(&brackets[..1]);
    let mut empty = true;
    for (key, value) in items {
        if !empty {
            out.push(',');
        }
        new_line(inner, out);
        if let Some(key) = key {
            write_string(key, out);
            out.push_str(if indent.is_some() { ": " } else { ":" });
        }
        write_value(value, inner, out);
        empty = false;
    }
    if !empty {
        new_line(indent, out);
    }
    out.push_str(&brackets[1..]);
}

/// In pretty mode, a line break and the indent of nesting level `level`.
fn new_line(level: Option<usize>, out: &mut String) {
    if let Some(level) = level {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    }
}

/// Integers below 2^53 in magnitude as integers ("3", "-0"); other numbers as the shorter of
/// Rust's two shortest-round-trip forms `{}` and `{:e}` ("0.1", "1e-5", "1.5e300"), both of
/// which are JSON numbers that parse back to the same f64. A non-finite number as `null`.
fn write_number(x: f64, out: &mut String) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    let plain = format!("{x}"); // never an exponent, never a ".0" on an integer
    let exponent = format!("{x:e}");
    let integer = x.fract() == 0.0 && x.abs() < EXACT_INT;
    out.push_str(if integer || plain.len() <= exponent.len() { &plain } else { &exponent });
}

/// `s` in quotes, escaping only what JSON requires: '"', '\' and control characters.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match ESCAPES.iter().find(|&&(letter, escaped)| escaped == c && letter != '/') {
            Some(&(letter, _)) => out.extend(['\\', letter]),
            None if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            None => out.push(c),
        }
    }
    out.push('"');
}
