//! safetensors: the Hugging Face tensor file format, read through a memory map and written
//! atomically. Sharded checkpoints (`model.safetensors.index.json`) are in `checkpoint.rs`.
//!
//! ```text
//! bytes 0..8        N, u64 little-endian: the header length
//! bytes 8..8+N      UTF-8 JSON object, padded with spaces to a multiple of 8 by writers:
//!                   {"__metadata__": {"k": "v", …},                       (optional)
//!                    "name": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [begin, end]}, …}
//! bytes 8+N..       the data section; a tensor's bytes are data[begin..end], row-major, LE
//! ```
//! A file is accepted exactly when the reference implementation (huggingface/safetensors,
//! `safetensors/src/tensor.rs`) accepts it: N ≤ 100,000,000; end − begin = numel × dtype size;
//! sorted by offset, the tensors tile the data section from 0 to its last byte with no gap or
//! overlap. We are stricter in one place: a name given twice in the header is an error
//! (crate::json refuses duplicate keys; the reference silently keeps one). This module knows nothing of the model.

use crate::error::{Error, Result};
use crate::json::{self, ParseError, Value};
use crate::tensor::Tensor;
use half::{bf16, f16};
use memmap2::Mmap;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The reference implementation refuses headers larger than this (bytes).
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

// ---- dtypes

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    U64,
    U32,
    U16,
}

impl Dtype {
    pub const ALL: [Dtype; 13] = [
        Dtype::F64,
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U8,
        Dtype::Bool,
        Dtype::U64,
        Dtype::U32,
        Dtype::U16,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The name in a safetensors header.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
            Dtype::U64 => "U64",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
        }
    }

    /// The dtype a header names; an unknown name is an error that quotes it.
    pub fn from_name(name: &str) -> Result<Dtype> {
        Dtype::lookup(name).ok_or_else(|| Error::invalid(format!("dtype \"{name}\""), unknown_dtype(name)))
    }

    fn lookup(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn unknown_dtype(name: &str) -> String {
    let known: Vec<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
    format!("unknown dtype \"{name}\" (known: {})", known.join(", "))
}

/// Where one tensor lives: `data_offsets` are relative to the start of the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data_offsets: (usize, usize),
}

// ---- header validation

/// Tensors in file order, and the `__metadata__` pairs.
pub type Header = (Vec<(String, TensorInfo)>, Vec<(String, String)>);

/// Validates a whole safetensors file held in `bytes`; `name` labels the errors. Returns the
/// tensors in header order and the `__metadata__` pairs. Never panics, never reads past
/// `bytes`.
pub fn parse_header(bytes: &[u8], name: &str) -> Result<Header> {
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        let rule = format!("file is {} bytes, shorter than the 8-byte header length", bytes.len());
        return Err(Error::invalid(name, rule));
    };
    let n = u64::from_le_bytes(*len_bytes);
    if n > MAX_HEADER_SIZE {
        let rule = format!("header length {n} bytes exceeds the limit of {MAX_HEADER_SIZE} bytes");
        return Err(Error::invalid(name, rule).with_hint("is this a safetensors file?"));
    }
    let header_end = usize::try_from(n).ok().and_then(|n| n.checked_add(8));
    let Some(header) = header_end.and_then(|end| bytes.get(8..end)) else {
        let rule = format!(
            "header length {n} bytes runs past the end of the file ({} bytes follow the length; \
             truncated file?)",
            bytes.len() - 8
        );
        return Err(Error::invalid(name, rule));
    };
    let text = std::str::from_utf8(header).map_err(|e| {
        Error::invalid(
            name,
            format!("header is not UTF-8 (invalid byte at header offset {})", e.valid_up_to()),
        )
    })?;
    let root = json::parse(text).map_err(|e| {
        let message = format!("header is not valid JSON (line/column within the header): {}", e.message);
        ParseError { message, ..e }.in_file(Path::new(name))
    })?;
    let Value::Object(entries) = root else {
        return Err(Error::invalid(name, format!("header must be a JSON object, got {}", short(&root))));
    };

    let mut tensors: Vec<(String, TensorInfo)> = Vec::with_capacity(entries.len());
    let mut metadata = Vec::new();
    for (key, value) in &entries {
        // Names are unique: crate::json refuses an object with a key given twice.
        if key == "__metadata__" {
            metadata = parse_metadata(value, name)?;
        } else {
            tensors.push((key.clone(), parse_tensor_info(value, name, key)?));
        }
    }
    let data_len = bytes.len() - 8 - header.len();
    check_layout(&tensors, data_len, name)?;
    Ok((tensors, metadata))
}

pub(crate) fn tensor_what(file: &str, tensor: &str) -> String {
    format!("{file}: tensor '{tensor}'")
}

/// A JSON value for an error message, cut to a readable length.
pub(crate) fn short(value: &Value) -> String {
    let text = value.to_json();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn parse_metadata(value: &Value, file: &str) -> Result<Vec<(String, String)>> {
    let what = format!("{file}: __metadata__");
    let Some(pairs) = value.as_object() else {
        return Err(Error::invalid(
            what,
            format!("must be an object of string → string, got {}", short(value)),
        ));
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let Some(text) = value.as_str() else {
            return Err(Error::invalid(
                what,
                format!("value of '{key}' must be a string, got {}", short(value)),
            ));
        };
        out.push((key.clone(), text.to_string()));
    }
    Ok(out)
}

fn parse_tensor_info(value: &Value, file: &str, tensor: &str) -> Result<TensorInfo> {
    let err = |rule: String| Error::invalid(tensor_what(file, tensor), rule);
    if value.as_object().is_none() {
        let rule = "entry must be an object with \"dtype\", \"shape\" and \"data_offsets\"";
        return Err(err(format!("{rule}, got {}", short(value))));
    }
    let dtype = match value.get("dtype") {
        Some(Value::String(s)) => Dtype::lookup(s).ok_or_else(|| err(unknown_dtype(s)))?,
        Some(other) => return Err(err(format!("\"dtype\" must be a string, got {}", short(other)))),
        None => return Err(err("missing \"dtype\"".into())),
    };
    let shape = value.get("shape").and_then(usize_array).ok_or_else(|| {
        let got = value.get("shape").map_or("nothing".into(), short);
        err(format!("\"shape\" must be an array of non-negative integers, got {got}"))
    })?;
    let (begin, end) = match value.get("data_offsets").and_then(usize_array).as_deref() {
        Some(&[begin, end]) => (begin, end),
        _ => {
            let got = value.get("data_offsets").map_or("nothing".into(), short);
            return Err(err(format!(
                "\"data_offsets\" must be [begin, end], two non-negative integers, got {got}"
            )));
        }
    };
    if begin > end {
        return Err(err(format!("data_offsets [{begin}, {end}] have begin > end")));
    }
    let nbytes = byte_size(&shape, dtype).ok_or_else(|| {
        err(format!("shape {shape:?} of {dtype} overflows: its byte size does not fit in usize"))
    })?;
    if end - begin != nbytes {
        let rule = format!(
            "data_offsets [{begin}, {end}] span {} bytes, but shape {shape:?} of {dtype} ({} bytes each) \
             needs {nbytes}",
            end - begin,
            dtype.size()
        );
        return Err(err(rule));
    }
    Ok(TensorInfo { dtype, shape, data_offsets: (begin, end) })
}

fn usize_array(value: &Value) -> Option<Vec<usize>> {
    value.as_array()?.iter().map(|v| v.as_u64().and_then(|x| usize::try_from(x).ok())).collect()
}

/// numel × dtype size, or None on overflow.
fn byte_size(shape: &[usize], dtype: Dtype) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?.checked_mul(dtype.size())
}

/// Sorted by offset, the tensors must tile the data section exactly: from 0, no gap, no
/// overlap, and the last one ending on its last byte.
fn check_layout(tensors: &[(String, TensorInfo)], data_len: usize, file: &str) -> Result<()> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].1.data_offsets);
    let (mut end, mut prev): (usize, Option<&str>) = (0, None);
    for &i in &order {
        let (name, info) = &tensors[i];
        let (b, e) = info.data_offsets;
        let err = |rule: String| Error::invalid(tensor_what(file, name), rule);
        if b < end {
            let prev = prev.unwrap_or_default();
            return Err(err(format!("data_offsets [{b}, {e}] overlap tensor '{prev}', which ends at {end}")));
        }
        if b > end {
            return Err(err(match prev {
                Some(p) => format!("gap of {} bytes: begins at {b} but tensor '{p}' ends at {end}", b - end),
                None => format!("gap of {b} bytes: the first tensor must begin at offset 0, begins at {b}"),
            }));
        }
        (end, prev) = (e, Some(name.as_str()));
    }
    if end > data_len {
        let rule = format!(
            "data_offsets end {end} is past the end of the data section ({data_len} bytes after the \
             header; truncated file?)"
        );
        return Err(Error::invalid(tensor_what(file, prev.unwrap_or_default()), rule));
    }
    if end < data_len {
        let rule = format!(
            "{} trailing bytes: the data section is {data_len} bytes but the tensors end at {end}",
            data_len - end
        );
        return Err(Error::invalid(file, rule));
    }
    Ok(())
}

// ---- reading: one file through a memory map

/// An open, validated safetensors file. Tensor bytes are slices of the mapping: no copy.
#[derive(Debug)]
pub struct SafeTensors {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: Vec<(String, TensorInfo)>,
    index: HashMap<String, usize>,
    metadata: Vec<(String, String)>,
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<SafeTensors> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and we treat the file as immutable while it is open.
        // Caveat: nothing can stop another process from writing to or truncating the file in
        // place meanwhile; that would change these bytes under us (or make reads fault with
        // SIGBUS). This crate never does so: `write` goes to `<path>.tmp` and renames, which
        // leaves an open mapping of the old file intact.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (tensors, metadata) = parse_header(&mmap, &path.display().to_string())?;
        let total_data: usize = tensors.iter().map(|(_, info)| info.data_offsets.1).max().unwrap_or(0);
        let data_start = mmap.len() - total_data; // validated: 8 + N + data section == file length
        let index = tensors.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();
        Ok(SafeTensors { path: path.to_path_buf(), mmap, data_start, tensors, index, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in header order.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|(name, _)| name.as_str()).collect()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }

    /// The tensor's raw little-endian bytes, borrowed from the mapping.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let (begin, end) = self.info(name)?.data_offsets;
        self.mmap.get(self.data_start + begin..self.data_start + end)
    }

    /// The `__metadata__` pairs, in file order (empty when the file has none).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// An F32, BF16 or F16 tensor as an f32 [`Tensor`].
    pub fn to_tensor(&self, name: &str) -> Result<Tensor> {
        let what = tensor_what(&self.path.display().to_string(), name);
        match (self.info(name), self.bytes(name)) {
            (Some(info), Some(bytes)) => decode_f32(info, bytes, &what),
            _ => Err(Error::invalid(what, "no such tensor in the file")),
        }
    }
}

/// f32 values from F32/BF16/F16 little-endian bytes. The bytes may sit at any address in the
/// mapping, so each value is assembled from its bytes, never cast in place.
fn decode_f32(info: &TensorInfo, bytes: &[u8], what: &str) -> Result<Tensor> {
    let values: Vec<f32> = match info.dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(Error::invalid(
                what,
                format!("dtype {other} cannot be read as f32 (F32, BF16, F16 can)"),
            ))
        }
    };
    Ok(Tensor::new(&info.shape, values))
}

/// A tensor's values as `dtype` little-endian bytes (F32, BF16 or F16; rounding to nearest
/// even on the way down): the inverse of `to_tensor`, for writing 16-bit checkpoints.
pub fn to_bytes(tensor: &Tensor, dtype: Dtype) -> Result<Vec<u8>> {
    let data = tensor.data();
    match dtype {
        Dtype::F32 => Ok(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Dtype::BF16 => Ok(data.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect()),
        Dtype::F16 => Ok(data.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()),
        other => {
            Err(Error::invalid(format!("dtype {other}"), "an f32 tensor can be stored as F32, BF16 or F16"))
        }
    }
}

// ---- writing

/// One tensor to write: its raw little-endian bytes, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct TensorData<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// Writes a safetensors file: the header (compact JSON, `__metadata__` first when there is
/// any, padded with spaces to a multiple of 8 bytes as the reference does), then the tensors'
/// bytes in the order given. Written to `<path>.tmp`, then renamed over `path`.
pub fn write(path: &Path, tensors: &[TensorData<'_>], metadata: &[(String, String)]) -> Result<()> {
    let entries: Vec<HeaderEntry> =
        tensors.iter().map(|t| (t.name, t.dtype, t.shape, Some(t.data.len()))).collect();
    let header = header_json(path, &entries, metadata)?;
    write_atomic(path, &header, |put| tensors.iter().try_for_each(|t| put(t.data)))
}

/// Writes a safetensors file whose tensors are made one at a time: `tensors` gives each one's
/// (name, dtype, shape); `fill(i, buf)` is then called for each in order, with `buf` empty, and
/// must leave exactly that tensor's bytes in it. Only one tensor is held in memory. Header,
/// layout and the atomic `<path>.tmp` + rename are as in [`write()`].
pub fn write_streaming(
    path: &Path,
    tensors: &[(String, Dtype, Vec<usize>)],
    metadata: &[(String, String)],
    mut fill: impl FnMut(usize, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let entries: Vec<HeaderEntry> =
        tensors.iter().map(|(n, d, s)| (n.as_str(), *d, s.as_slice(), None)).collect();
    let header = header_json(path, &entries, metadata)?;
    let file = path.display().to_string();
    let mut buf = Vec::new();
    write_atomic(path, &header, |put| {
        for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
            buf.clear();
            fill(i, &mut buf)?;
            let want = byte_size(shape, *dtype).expect("checked by header_json");
            if buf.len() != want {
                let rule =
                    format!("fill gave {} bytes, but shape {shape:?} of {dtype} needs {want}", buf.len());
                return Err(Error::invalid(tensor_what(&file, name), rule));
            }
            put(&buf)?;
        }
        Ok(())
    })
}

/// Writes the 8-byte length, `header`, then whatever `body` puts, to `<path>.tmp`; syncs it and
/// renames it over `path`. On any error the temporary file is removed.
fn write_atomic(
    path: &Path,
    header: &[u8],
    body: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let tmp = {
        let mut name = path.as_os_str().to_owned();
        name.push(".tmp");
        PathBuf::from(name)
    };
    let io = |source| Error::Io { path: tmp.clone(), source };
    let written = (|| -> Result<()> {
        let mut out = BufWriter::new(File::create(&tmp).map_err(io)?);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(header).map_err(io)?;
        body(&mut |bytes: &[u8]| out.write_all(bytes).map_err(io))?;
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// One header entry: name, dtype, shape, and the byte count of the data given, when given
/// (checked against the shape).
type HeaderEntry<'a> = (&'a str, Dtype, &'a [usize], Option<usize>);

/// The padded header bytes, after checking every tensor's byte count against its shape.
fn header_json(path: &Path, tensors: &[HeaderEntry<'_>], metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let file = path.display().to_string();
    let mut entries: Vec<(String, Value)> = Vec::with_capacity(tensors.len() + 1);
    if !metadata.is_empty() {
        let pairs = metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        entries.push(("__metadata__".to_string(), Value::Object(pairs)));
    }
    let mut seen = HashSet::with_capacity(tensors.len());
    let mut offset = 0usize;
    for &(name, dtype, shape, given) in tensors {
        let err = |rule: String| Error::invalid(tensor_what(&file, name), rule);
        if name == "__metadata__" || !seen.insert(name) {
            return Err(err("a tensor name must be unique and not \"__metadata__\"".into()));
        }
        let nbytes = byte_size(shape, dtype)
            .ok_or_else(|| err(format!("shape {shape:?} of {dtype} overflows usize bytes")))?;
        if let Some(n) = given.filter(|&n| n != nbytes) {
            return Err(err(format!("{n} data bytes given, but shape {shape:?} of {dtype} needs {nbytes}")));
        }
        let end = offset.checked_add(nbytes).filter(|&e| e as u64 <= 1 << 53);
        let end = end.ok_or_else(|| err("data section beyond 2^53 bytes".into()))?;
        let numbers = |xs: &[usize]| Value::Array(xs.iter().map(|&x| Value::Number(x as f64)).collect());
        let info = vec![
            ("dtype".to_string(), Value::String(dtype.name().to_string())),
            ("shape".to_string(), numbers(shape)),
            ("data_offsets".to_string(), numbers(&[offset, end])),
        ];
        entries.push((name.to_string(), Value::Object(info)));
        offset = end;
    }
    let mut header = Value::Object(entries).to_json().into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_SIZE {
        let rule = format!("header of {} bytes exceeds the {MAX_HEADER_SIZE}-byte limit", header.len());
        return Err(Error::invalid(file, rule));
    }
    Ok(header)
}

/// Writes f32 tensors as F32.
pub fn write_f32(path: &Path, tensors: &[(&str, &Tensor)], metadata: &[(String, String)]) -> Result<()> {
    let bytes: Vec<Cow<[u8]>> = tensors.iter().map(|(_, t)| f32_le_bytes(t.data())).collect();
    let views: Vec<TensorData> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), data)| TensorData { name, dtype: Dtype::F32, shape: t.shape(), data })
        .collect();
    write(path, &views, metadata)
}

/// f32 values as little-endian bytes: borrowed on little-endian machines, copied elsewhere.
fn f32_le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}
