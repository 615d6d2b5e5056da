//! `.npy`: NumPy's one-array file format, read and written by hand (golden files, token ids).
//!
//! ```text
//! offset  bytes  field
//! 0       6      magic "\x93NUMPY"
//! 6       2      version major, minor: 1.0, 2.0 or 3.0
//! 8       2 | 4  header length HLEN, little-endian: u16 in 1.0, u32 in 2.0 and 3.0
//! 10 | 12 HLEN   header: a Python dict literal, latin-1 (1.0, 2.0) or UTF-8 (3.0), e.g.
//!                {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//!                padded with spaces and ended by '\n' so that the data starts on a
//!                multiple of 64 bytes
//! then           the data: product(shape) items of the dtype `descr`, row-major (C order)
//! ```
//!
//! `descr` is a byte order ('<' little, '>' big, '|' not applicable) then a kind and an item
//! size: f4 f8 i4 i8 u4 are supported, little-endian only. `shape` is a tuple: `()` is a
//! scalar holding one item, `(5,)` a vector. The header parser below reads exactly that
//! literal subset (quoted strings, True/False, tuples of integers), keys in any order.
//!
//! [`write()`] produces the bytes `np.save` does (its `_write_array_header`, checked against
//! numpy 2.4.6): keys sorted, `repr` of each value, 21 − `len(repr(shape[0]))` spare spaces for
//! in-place growth, then padding; version 1.0 unless the header needs more than 65535 bytes,
//! then 2.0.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// The data starts on a multiple of this many bytes (numpy's `ARRAY_ALIGN`).
const ALIGN: usize = 64;
/// Spare header spaces numpy leaves so the first dimension can grow in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// The first bytes of a file shown when its magic is wrong.
const SHOW_BYTES: usize = 8;

/// The values of an array, by dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
}

/// One array: its shape (row-major; `[]` is a scalar) and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

// ---- dtypes: the supported `descr` strings and their little-endian codecs

trait Item: Copy {
    const SIZE: usize;
    fn from_le(bytes: &[u8]) -> Self;
    fn push_le(self, out: &mut Vec<u8>);
}

macro_rules! item {
    ($t:ty, $n:literal) => {
        impl Item for $t {
            const SIZE: usize = $n;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("chunks_exact yields SIZE bytes"))
            }
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
item!(f32, 4);
item!(f64, 8);
item!(i32, 4);
item!(i64, 8);
item!(u32, 4);

fn decode<T: Item>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::from_le).collect()
}

fn encode<T: Item>(values: &[T], out: &mut Vec<u8>) {
    out.reserve(values.len() * T::SIZE);
    values.iter().for_each(|&x| x.push_le(out));
}

/// Little-endian bytes (a whole number of items) to values.
type Decoder = fn(&[u8]) -> NpyData;

/// The supported `descr` strings, their item sizes, and the decoder for each.
const DTYPES: [(&str, usize, Decoder); 5] = [
    ("<f4", 4, |b| NpyData::F32(decode(b))),
    ("<f8", 8, |b| NpyData::F64(decode(b))),
    ("<i4", 4, |b| NpyData::I32(decode(b))),
    ("<i8", 8, |b| NpyData::I64(decode(b))),
    ("<u4", 4, |b| NpyData::U32(decode(b))),
];

impl NpyData {
    /// The numpy `descr` of this data, e.g. `"<f4"`.
    pub fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::I32(_) => "<i4",
            NpyData::I64(_) => "<i8",
            NpyData::U32(_) => "<u4",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            NpyData::F32(v) => encode(v, out),
            NpyData::F64(v) => encode(v, out),
            NpyData::I32(v) => encode(v, out),
            NpyData::I64(v) => encode(v, out),
            NpyData::U32(v) => encode(v, out),
        }
    }
}

// ---- reading

/// Reads the `.npy` file at `path`.
pub fn read(path: &Path) -> Result<Npy> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse(&bytes, &path.display().to_string())
}

/// Parses the bytes of a `.npy` file; `name` (the file) heads every error.
pub fn parse(bytes: &[u8], name: &str) -> Result<Npy> {
    let bad = |rule: String| Error::invalid(name, rule);
    if !bytes.starts_with(MAGIC) {
        if MAGIC.starts_with(bytes) {
            return Err(bad(format!("truncated: {} bytes, shorter than the 6-byte magic", bytes.len())));
        }
        let head = &bytes[..bytes.len().min(SHOW_BYTES)];
        return Err(bad(format!("not a .npy file: expected magic b\"\\x93NUMPY\", found {}", show(head)))
            .with_hint("a .npy file is written by numpy.save"));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return Err(bad("truncated: the file ends before the version bytes".into())),
    };
    let (len_size, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(bad(format!("unknown .npy version {major}.{minor} (known: 1.0, 2.0, 3.0)"))),
    };
    let header_start = 8 + len_size;
    let header_len = match bytes.get(8..header_start) {
        Some(b) if len_size == 2 => u16::from_le_bytes([b[0], b[1]]) as usize,
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
        None => return Err(bad("truncated: the file ends before the header length".into())),
    };
    let data_start =
        header_start.checked_add(header_len).filter(|&end| end <= bytes.len()).ok_or_else(|| {
            bad(format!(
                "truncated header: the header length says {header_len} bytes, but only {} follow",
                bytes.len() - header_start
            ))
        })?;
    let raw = &bytes[header_start..data_start];
    let text: String = if utf8 {
        std::str::from_utf8(raw)
            .map_err(|e| bad(format!("malformed header: version 3.0 needs UTF-8 text ({e})")))?
            .to_string()
    } else {
        raw.iter().map(|&b| b as char).collect() // latin-1
    };
    let header =
        parse_header(&text).map_err(|e| bad(format!("malformed header: {e}; header: {}", clip(&text))))?;

    let Some(&(_, item_size, decode)) = DTYPES.iter().find(|(d, _, _)| *d == header.descr) else {
        return Err(unsupported_dtype(name, &header.descr));
    };
    if header.fortran_order {
        return Err(bad("fortran_order is True: only C (row-major) order is supported".into())
            .with_hint("save np.ascontiguousarray(a) instead of a Fortran-ordered array"));
    }
    let data = &bytes[data_start..];
    let numel = numel(&header.shape).ok_or_else(|| {
        bad(format!("shape {} has more elements than fit in memory", shape_repr(&header.shape)))
    })?;
    let expected = numel.checked_mul(item_size);
    if expected != Some(data.len()) {
        let expected = expected.map_or(format!("more than {} bytes", usize::MAX), |n| format!("{n} bytes"));
        return Err(bad(format!(
            "data is {} bytes, but shape {} of {} needs {numel} × {item_size} = {expected}",
            data.len(),
            shape_repr(&header.shape),
            header.descr
        ))
        .with_hint("the file is truncated or has trailing bytes"));
    }
    Ok(Npy { shape: header.shape, data: decode(data) })
}

fn unsupported_dtype(name: &str, descr: &str) -> Error {
    if let Some(rest) = descr.strip_prefix('>') {
        return Error::invalid(name, format!("big-endian dtype '{descr}': only little-endian is supported"))
            .with_hint(format!("save a.astype('<{rest}') instead"));
    }
    let known: Vec<&str> = DTYPES.iter().map(|d| d.0).collect();
    Error::invalid(name, format!("unsupported dtype '{descr}' (supported: {})", known.join(" ")))
        .with_hint("convert with a.astype(np.float32), or np.int64 for ids")
}

/// The number of elements of `shape`, or None if it overflows.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Bytes as a Python bytes literal, for error messages.
fn show(bytes: &[u8]) -> String {
    let body: String = bytes.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    format!("b\"{body}\"")
}

/// At most the first 200 characters of a header, for error messages.
fn clip(text: &str) -> String {
    let text = text.trim_end();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

// ---- the header dict

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` and its padding.
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let mut p = Parser { s: text, pos: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.ws();
    p.expect(b'{', "'{' opening the header dict")?;
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key_at = p.pos;
        let key = p.string()?;
        p.ws();
        p.expect(b':', &format!("':' after the key '{key}'"))?;
        p.ws();
        let already = match key.as_str() {
            "descr" => descr.is_some(),
            "fortran_order" => fortran_order.is_some(),
            "shape" => shape.is_some(),
            _ => return Err(format!("unexpected key '{key}' (expected descr, fortran_order, shape)")),
        };
        if already {
            return Err(format!("the key '{key}' appears twice (byte {key_at})"));
        }
        let value = p.value()?;
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran_order = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            (_, value) => {
                let want = match key.as_str() {
                    "descr" => "a quoted dtype string like '<f4'",
                    "fortran_order" => "True or False",
                    _ => "a tuple of integers like (2, 3)",
                };
                return Err(format!("expected {want} as the value of '{key}', found {}", value.kind()));
            }
        }
        p.ws();
        if p.eat(b'}') {
            break;
        }
        p.expect(b',', &format!("',' or '}}' after the value of '{key}'"))?;
    }
    p.ws();
    if p.pos < p.s.len() {
        return Err(format!(
            "expected only spaces after the closing '}}', found {} at byte {}",
            p.found(),
            p.pos
        ));
    }
    let missing = |key: &str| format!("the key '{key}' is missing");
    Ok(Header {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Tuple(_) => "a tuple",
        }
    }
}

/// A cursor over the header text; errors say what was expected, where, and what was found.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn found(&self) -> String {
        match self.s[self.pos..].chars().next() {
            Some(c) => format!("{c:?}"),
            None => "the end of the header".to_string(),
        }
    }

    fn error(&self, expected: &str) -> String {
        format!("expected {expected} at byte {}, found {}", self.pos, self.found())
    }

    /// Python whitespace between tokens (the padding is spaces and a final '\n').
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.pos += hit as usize;
        hit
    }

    fn expect(&mut self, byte: u8, expected: &str) -> std::result::Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// A quoted string, 'single' or "double", without escapes.
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("a quoted string")),
        };
        let start = self.pos + 1;
        let bytes = self.s.as_bytes();
        let mut end = start;
        while end < bytes.len() && bytes[end] != quote {
            if bytes[end] == b'\\' {
                self.pos = end;
                return Err(self.error("a string without backslash escapes"));
            }
            end += 1;
        }
        if end == bytes.len() {
            return Err(format!("the string opened at byte {} is never closed", self.pos));
        }
        self.pos = end + 1;
        Ok(self.s[start..end].to_string())
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        let rest = &self.s[self.pos..];
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Value::Str),
            Some(b'(') => self.tuple().map(Value::Tuple),
            _ if rest.starts_with("True") => {
                self.pos += 4;
                Ok(Value::Bool(true))
            }
            _ if rest.starts_with("False") => {
                self.pos += 5;
                Ok(Value::Bool(false))
            }
            Some(b'[') => {
                let expected = self.error("a quoted string, True/False or a tuple");
                Err(format!("{expected} (a list here is a structured dtype: not supported)"))
            }
            _ => Err(self.error("a quoted string, True/False or a tuple of integers")),
        }
    }

    /// `()`, `(5,)`, `(2, 3)`, `(2, 3,)`; `(5)` is not a tuple in Python and is refused.
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        let open = self.pos;
        self.expect(b'(', "'('")?;
        let mut dims = Vec::new();
        let mut after_comma = false;
        loop {
            self.ws();
            if self.eat(b')') {
                if dims.len() == 1 && !after_comma {
                    let d = dims[0];
                    return Err(format!(
                        "the shape at byte {open} is ({d}), an integer: \
                         a 1-tuple needs a trailing comma, like ({d},)"
                    ));
                }
                return Ok(dims);
            }
            if !dims.is_empty() && !after_comma {
                return Err(self.error("',' or ')' in the shape tuple"));
            }
            dims.push(self.int()?);
            self.ws();
            after_comma = self.eat(b',');
        }
    }

    /// A non-negative decimal integer (a Python 2 long's 'L' suffix is allowed).
    fn int(&mut self) -> std::result::Result<usize, String> {
        let start = self.pos;
        let mut n: usize = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10).and_then(|n| n.checked_add((d - b'0') as usize)).ok_or_else(|| {
                format!("the dimension at byte {start} does not fit in {} bits", usize::BITS)
            })?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("a non-negative integer dimension"));
        }
        self.eat(b'L');
        Ok(n)
    }
}

// ---- writing

/// Writes `npy` to `path` as `np.save` would (via `<path>.tmp`, then a rename).
pub fn write(path: &Path, npy: &Npy) -> Result<()> {
    let bytes = to_bytes(npy).map_err(|e| match e {
        Error::Invalid { rule, hint, .. } => Error::Invalid { what: path.display().to_string(), rule, hint },
        other => other,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, &bytes).map_err(|source| Error::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The bytes of `npy` as a `.npy` file, identical to what `np.save` writes.
pub fn to_bytes(npy: &Npy) -> Result<Vec<u8>> {
    let numel = numel(&npy.shape);
    if numel != Some(npy.data.len()) {
        return Err(Error::invalid(
            "npy",
            format!("shape {} does not hold the {} values given", shape_repr(&npy.shape), npy.data.len()),
        ));
    }
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        npy.data.descr(),
        shape_repr(&npy.shape)
    );
    if let Some(first) = npy.shape.first() {
        let digits = first.to_string().len();
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // numpy: hlen = header + '\n'; pad = 64 − (magic + version + len field + hlen) % 64, in 1..=64.
    let (mut len_size, mut version) = (2, 1u8);
    let mut hlen = header.len() + 1;
    let mut pad = ALIGN - (8 + len_size + hlen) % ALIGN;
    if hlen + pad > u16::MAX as usize {
        (len_size, version) = (4, 2);
        pad = ALIGN - (8 + len_size + hlen) % ALIGN;
    }
    hlen += pad;
    let hlen32 = u32::try_from(hlen)
        .map_err(|_| Error::invalid("npy", format!("a header of {hlen} bytes does not fit the format")))?;

    let mut out = Vec::with_capacity(8 + len_size + hlen);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(hlen32 as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&hlen32.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    npy.data.encode(&mut out);
    Ok(out)
}

/// A shape as Python's `repr` of a tuple: `()`, `(5,)`, `(2, 3)`.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

// ---- conversions

impl Npy {
    /// An f32 array with the tensor's shape and values.
    pub fn from_tensor(tensor: &Tensor) -> Npy {
        Npy { shape: tensor.shape().to_vec(), data: NpyData::F32(tensor.data().to_vec()) }
    }

    /// The array as a tensor: f32 as is, f64 rounded to f32; integer arrays are refused.
    pub fn to_tensor(&self) -> Result<Tensor> {
        self.check_len()?;
        let values = match &self.data {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            _ => {
                return Err(self
                    .wrong_kind("float values (f4 or f8)")
                    .with_hint("read integer ids with i64s()"))
            }
        };
        Ok(Tensor::new(&self.shape, values))
    }

    /// Integer values (ids) as i64, from i4, i8 or u4 data; float arrays are refused.
    pub fn i64s(&self) -> Result<Vec<i64>> {
        self.check_len()?;
        match &self.data {
            NpyData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            NpyData::I64(v) => Ok(v.clone()),
            NpyData::U32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            _ => Err(self.wrong_kind("integer values (i4, i8 or u4)")),
        }
    }

    /// Integer values (token ids) as u32; a value outside 0..=u32::MAX is an error.
    pub fn u32s(&self) -> Result<Vec<u32>> {
        self.i64s()?
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                u32::try_from(x).map_err(|_| {
                    Error::invalid("npy array", format!("value {x} at flat index {i} is not a valid u32 id"))
                })
            })
            .collect()
    }

    fn check_len(&self) -> Result<()> {
        match numel(&self.shape) {
            Some(n) if n == self.data.len() => Ok(()),
            _ => Err(Error::invalid(
                "npy array",
                format!(
                    "shape {} does not hold the {} values given",
                    shape_repr(&self.shape),
                    self.data.len()
                ),
            )),
        }
    }

    fn wrong_kind(&self, expected: &str) -> Error {
        Error::invalid(
            "npy array",
            format!(
                "expected {expected}, found '{}' data of shape {}",
                self.data.descr(),
                shape_repr(&self.shape)
            ),
        )
    }
}
