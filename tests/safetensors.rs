//! safetensors files and sharded checkpoints: round trips for every dtype we write, 16-bit →
//! f32 conversion, byte-exact agreement with files the reference library writes, one test per
//! validation rule on hand-built malformed files, and the sharded-index rules.

use half::{bf16, f16};
use moe::checkpoint::Checkpoint;
use moe::json::Value;
use moe::safetensors::{self, parse_header, Dtype, SafeTensors, TensorData, TensorInfo};
use moe::tensor::Tensor;
use std::fs;
use std::path::{Path, PathBuf};

/// An empty folder of its own for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-safetensors-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn le_f32(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---- round trips

#[test]
fn round_trip_every_dtype_with_metadata() {
    let dir = temp_dir("round_trip");
    let path = dir.join("all.safetensors");
    let f32s = le_f32(&[1.0, -2.5, 3.25, 0.0, 1e-8, -7.0]);
    let bf16s: Vec<u8> =
        [1.0f32, -0.5, 3.0, 1024.0].iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect();
    let f16s: Vec<u8> =
        [0.5f32, -1.0, 65504.0, 2.0].iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
    let i64s: Vec<u8> = [i64::MIN, -1, 0, i64::MAX].iter().flat_map(|x| x.to_le_bytes()).collect();
    let u8s: Vec<u8> = vec![0, 1, 2, 254, 255];
    let scalar = le_f32(&[42.0]);
    let tensors = [
        TensorData { name: "w.f32", dtype: Dtype::F32, shape: &[2, 3], data: &f32s },
        TensorData { name: "w.bf16", dtype: Dtype::BF16, shape: &[4], data: &bf16s },
        TensorData { name: "w.f16", dtype: Dtype::F16, shape: &[2, 2], data: &f16s },
        TensorData { name: "ids", dtype: Dtype::I64, shape: &[2, 2], data: &i64s },
        TensorData { name: "bytes", dtype: Dtype::U8, shape: &[5], data: &u8s },
        TensorData { name: "empty", dtype: Dtype::F32, shape: &[0, 3], data: &[] },
        TensorData { name: "scalar", dtype: Dtype::F32, shape: &[], data: &scalar },
    ];
    let metadata = strings(&[("format", "pt"), ("note", "ünïcode \"quoted\"")]);
    safetensors::write(&path, &tensors, &metadata).unwrap();
    assert!(!dir.join("all.safetensors.tmp").exists(), "the temporary file is renamed away");

    let file = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to a multiple of 8 bytes");
    assert!(file[8..8 + n].starts_with(b"{\"__metadata__\""), "metadata is written first");

    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(st.names(), tensors.iter().map(|t| t.name).collect::<Vec<_>>(), "file order kept");
    assert_eq!(st.metadata(), &metadata[..]);
    let mut offset = 0;
    for t in &tensors {
        let info = st.info(t.name).unwrap();
        let end = offset + t.data.len();
        assert_eq!(
            info,
            &TensorInfo { dtype: t.dtype, shape: t.shape.to_vec(), data_offsets: (offset, end) }
        );
        assert_eq!(st.bytes(t.name).unwrap(), t.data, "{}", t.name);
        offset = end;
    }
    assert_eq!(st.to_tensor("w.f32").unwrap().data(), &[1.0, -2.5, 3.25, 0.0, 1e-8, -7.0]);
    assert_eq!(st.to_tensor("w.f32").unwrap().shape(), &[2, 3]);
    assert_eq!(st.to_tensor("w.bf16").unwrap().data(), &[1.0, -0.5, 3.0, 1024.0]);
    assert_eq!(st.to_tensor("w.f16").unwrap().data(), &[0.5, -1.0, 65504.0, 2.0]);
    assert_eq!(st.to_tensor("empty").unwrap().shape(), &[0, 3]);
    assert_eq!(st.to_tensor("scalar").unwrap().item(), 42.0);
    let err = st.to_tensor("ids").unwrap_err().to_string();
    assert!(err.contains("all.safetensors") && err.contains("'ids'") && err.contains("I64"), "{err}");
    let err = st.to_tensor("nope").unwrap_err().to_string();
    assert!(err.contains("'nope'") && err.contains("no such tensor"), "{err}");
    assert!(st.info("nope").is_none() && st.bytes("nope").is_none());
}

#[test]
fn write_f32_round_trips_tensors_and_to_bytes_makes_16_bit_copies() {
    let dir = temp_dir("write_f32");
    let path = dir.join("model.safetensors");
    let a = Tensor::new(&[2, 3], vec![0.1, -0.2, 0.3, 1e30, -1e-30, 7.0]);
    let b = Tensor::new(&[3], vec![1.0, 2.0, 3.0]);
    safetensors::write_f32(&path, &[("a", &a), ("b", &b)], &[]).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert!(st.metadata().is_empty());
    assert_eq!(st.to_tensor("a").unwrap().data(), a.data());
    assert_eq!(st.to_tensor("a").unwrap().shape(), a.shape());
    assert_eq!(st.to_tensor("b").unwrap().data(), b.data());

    // Overwriting a file that is open leaves the open mapping on the old bytes (atomic rename).
    let c = Tensor::new(&[1], vec![9.0]);
    safetensors::write_f32(&path, &[("c", &c)], &[]).unwrap();
    assert_eq!(st.to_tensor("a").unwrap().data(), a.data());
    assert_eq!(SafeTensors::open(&path).unwrap().names(), ["c"]);

    for dtype in [Dtype::BF16, Dtype::F16] {
        let bytes = safetensors::to_bytes(&a, dtype).unwrap();
        let data = [TensorData { name: "a", dtype, shape: a.shape(), data: &bytes }];
        safetensors::write(&path, &data, &[]).unwrap();
        let back = SafeTensors::open(&path).unwrap().to_tensor("a").unwrap();
        let want = match dtype {
            Dtype::BF16 => Tensor::from_bf16(a.shape(), &a.to_bf16()),
            _ => Tensor::from_f16(a.shape(), &a.to_f16()),
        };
        assert_eq!(back.data(), want.data(), "{dtype}");
    }
    let err = safetensors::to_bytes(&a, Dtype::I32).unwrap_err().to_string();
    assert!(err.contains("I32"), "{err}");
}

#[test]
fn bf16_and_f16_bit_patterns_convert_to_f32() {
    let dir = temp_dir("half_bits");
    let path = dir.join("half.safetensors");
    // bf16: 1.0, −2.0, 171/512 (1/3 rounded), +inf, smallest normal 2^-126
    let bf: Vec<u8> =
        [0x3F80u16, 0xC000, 0x3EAB, 0x7F80, 0x0080].iter().flat_map(|x| x.to_le_bytes()).collect();
    // f16: 1.0, −2.0, 1365/4096 (1/3 rounded), 65504 (max), smallest subnormal 2^-24
    let fp: Vec<u8> =
        [0x3C00u16, 0xC000, 0x3555, 0x7BFF, 0x0001].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = [
        TensorData { name: "bf", dtype: Dtype::BF16, shape: &[5], data: &bf },
        TensorData { name: "fp", dtype: Dtype::F16, shape: &[5], data: &fp },
    ];
    safetensors::write(&path, &tensors, &[]).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    let bf = st.to_tensor("bf").unwrap();
    assert_eq!(bf.data(), &[1.0, -2.0, 171.0 / 512.0, f32::INFINITY, 2f32.powi(-126)]);
    let fp = st.to_tensor("fp").unwrap();
    assert_eq!(fp.data(), &[1.0, -2.0, 1365.0 / 4096.0, 65504.0, 2f32.powi(-24)]);
}

#[test]
fn f32_data_at_an_unaligned_offset_reads_correctly() {
    // A 1-byte U8 tensor first puts the F32 tensor at an odd address in the mapping.
    let dir = temp_dir("unaligned");
    let path = dir.join("odd.safetensors");
    let f = le_f32(&[1.5, -3.0, 8.0]);
    let tensors = [
        TensorData { name: "pad", dtype: Dtype::U8, shape: &[1], data: &[7] },
        TensorData { name: "x", dtype: Dtype::F32, shape: &[3], data: &f },
    ];
    safetensors::write(&path, &tensors, &[]).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(st.bytes("x").unwrap().as_ptr() as usize % 4, 1);
    assert_eq!(st.to_tensor("x").unwrap().data(), &[1.5, -3.0, 8.0]);
}

// ---- byte-exact agreement with the reference library

/// A file as the format spec lays it out: N (u64 LE), the header, then the data.
fn spec_file(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

#[test]
fn writes_the_same_bytes_as_the_reference_library() {
    let dir = temp_dir("reference");
    let path = dir.join("ref.safetensors");
    let data = le_f32(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let check = |tensors: &[TensorData], metadata: &[(String, String)], header: &[u8]| {
        safetensors::write(&path, tensors, metadata).unwrap();
        let expected = spec_file(header, &tensors.iter().flat_map(|t| t.data.to_vec()).collect::<Vec<u8>>());
        assert_eq!(fs::read(&path).unwrap(), expected, "{}", String::from_utf8_lossy(header));
    };
    // safetensors.torch.save_file({"attn0": arange(6.).reshape(1, 1, 2, 3)}): a 65-byte JSON
    // header padded with 7 spaces to 72.
    let header = br#"{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       "#;
    assert_eq!(header.len(), 72);
    check(&[TensorData { name: "attn0", dtype: Dtype::F32, shape: &[1, 1, 2, 3], data: &data }], &[], header);
    // A 64-byte header needs no padding.
    let header = br#"{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}"#;
    assert_eq!(header.len(), 64);
    check(&[TensorData { name: "attn.0", dtype: Dtype::F32, shape: &[1, 2, 3], data: &data }], &[], header);
    // No tensors: "{}" padded to 8; with metadata {"framework": "pt"}: 35 bytes padded to 40.
    check(&[], &[], b"{}      ");
    check(&[], &strings(&[("framework", "pt")]), br#"{"__metadata__":{"framework":"pt"}}     "#);
}

#[test]
fn reads_unpadded_headers_written_by_others() {
    // The reference's documentation example: a 60-byte header, an I32 (2, 2) tensor of zeros.
    let header = br#"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#;
    assert_eq!(header.len(), 60);
    let (tensors, metadata) = parse_header(&spec_file(header, &[0; 16]), "doc.safetensors").unwrap();
    assert!(metadata.is_empty());
    assert_eq!(
        tensors,
        [("test".into(), TensorInfo { dtype: Dtype::I32, shape: vec![2, 2], data_offsets: (0, 16) })]
    );
    // Offsets in any order in the header, and several empty tensors at one offset.
    let header = r#"{"b":{"dtype":"BOOL","shape":[3],"data_offsets":[2,5]},
                     "e1":{"dtype":"F64","shape":[0],"data_offsets":[2,2]},
                     "a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},
                     "e2":{"dtype":"I8","shape":[4,0],"data_offsets":[2,2]}}"#;
    let (tensors, _) = parse_header(&spec_file(header.as_bytes(), &[0; 5]), "any.safetensors").unwrap();
    assert_eq!(tensors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b", "e1", "a", "e2"]);
}

#[test]
fn dtype_names_sizes_and_unknown_names() {
    for dtype in Dtype::ALL {
        assert_eq!(Dtype::from_name(dtype.name()).unwrap(), dtype);
    }
    let sizes: Vec<usize> = Dtype::ALL.iter().map(|d| d.size()).collect();
    assert_eq!(sizes, [8, 4, 2, 2, 8, 4, 2, 1, 1, 1, 8, 4, 2]);
    assert_eq!(Dtype::Bool.name(), "BOOL");
    let err = Dtype::from_name("float32").unwrap_err().to_string();
    assert!(err.contains("\"float32\"") && err.contains("unknown dtype"), "{err}");
}

#[test]
fn write_refuses_inconsistent_tensors() {
    let dir = temp_dir("write_refuses");
    let path = dir.join("bad.safetensors");
    let err = |tensors: &[TensorData]| safetensors::write(&path, tensors, &[]).unwrap_err().to_string();
    let e = err(&[TensorData { name: "x", dtype: Dtype::F32, shape: &[3], data: &[0; 8] }]);
    assert!(e.contains("'x'") && e.contains("needs 12"), "{e}");
    let t = TensorData { name: "x", dtype: Dtype::U8, shape: &[1], data: &[0] };
    let e = err(&[t, t]);
    assert!(e.contains("'x'") && e.contains("unique"), "{e}");
    let e = err(&[TensorData { name: "__metadata__", ..t }]);
    assert!(e.contains("__metadata__"), "{e}");
    assert!(!path.exists() && !dir.join("bad.safetensors.tmp").exists());
}

// ---- one test per validation rule, on hand-built files

const FILE: &str = "bad.safetensors";

/// A file with header `header` (unpadded) followed by `data_len` zero bytes.
fn with_header(header: &str, data_len: usize) -> Vec<u8> {
    spec_file(header.as_bytes(), &vec![0; data_len])
}

/// The error for `bytes`, which must name the file and contain each of `needles`.
fn rejects(bytes: &[u8], needles: &[&str]) -> String {
    let err = parse_header(bytes, FILE).expect_err("a malformed file was accepted").to_string();
    assert!(err.starts_with(FILE), "the error names the file: {err}");
    for needle in needles {
        assert!(err.contains(needle), "error lacks {needle:?}: {err}");
    }
    err
}

/// Two F32 (2) tensors, "a" then "b", with the given offsets.
fn two(a: (usize, usize), b: (usize, usize)) -> String {
    format!(
        r#"{{"a":{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}},"b":{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}}}}"#,
        a.0, a.1, b.0, b.1
    )
}

#[test]
fn the_helpers_build_a_valid_file() {
    // So each rule test below fails for its one broken rule, not for a broken baseline.
    let (tensors, _) = parse_header(&with_header(&two((0, 8), (8, 16)), 16), FILE).unwrap();
    assert_eq!(tensors.len(), 2);
}

#[test]
fn rule_file_shorter_than_8_bytes() {
    rejects(&[1, 0, 0, 0, 0], &["5 bytes", "shorter than the 8-byte header length"]);
    rejects(&[], &["0 bytes"]);
}

#[test]
fn rule_header_length_over_100_mb() {
    let mut bytes = 100_000_001u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    rejects(&bytes, &["header length 100000001 bytes", "limit of 100000000"]);
    rejects(&u64::MAX.to_le_bytes(), &["18446744073709551615"]);
}

#[test]
fn rule_header_length_past_end_of_file() {
    let mut bytes = with_header("{}", 0);
    bytes[0] = 100; // claims a 100-byte header, 2 follow
    rejects(&bytes, &["header length 100 bytes", "past the end of the file", "truncated"]);
}

#[test]
fn rule_header_not_utf8() {
    rejects(&spec_file(b"{\"a\xff\":1}", &[]), &["not UTF-8", "offset 3"]);
}

#[test]
fn rule_header_not_json() {
    let err = rejects(&with_header("{\"a\":\n  {\"dtype\": }", 0), &["line 2, column", "not valid JSON"]);
    assert!(err.starts_with(&format!("{FILE}: line 2")), "{err}");
}

#[test]
fn rule_header_not_an_object() {
    rejects(&with_header("[1, 2]", 0), &["must be a JSON object", "[1,2]"]);
}

#[test]
fn rule_tensor_entry_not_an_object() {
    rejects(&with_header(r#"{"w":[0,4]}"#, 4), &["tensor 'w'", "must be an object"]);
}

#[test]
fn rule_unknown_dtype() {
    let header = r#"{"w":{"dtype":"complex64","shape":[1],"data_offsets":[0,8]}}"#;
    rejects(&with_header(header, 8), &["tensor 'w'", "unknown dtype \"complex64\"", "BF16"]);
    let header = r#"{"w":{"shape":[1],"data_offsets":[0,8]}}"#;
    rejects(&with_header(header, 8), &["tensor 'w'", "missing \"dtype\""]);
}

#[test]
fn rule_shape_not_non_negative_integers() {
    for shape in ["[2,\"3\"]", "[2,-1]", "[1.5]", "3", "null"] {
        let header = format!(r#"{{"w":{{"dtype":"U8","shape":{shape},"data_offsets":[0,1]}}}}"#);
        rejects(
            &with_header(&header, 1),
            &["tensor 'w'", "\"shape\" must be an array of non-negative integers"],
        );
    }
}

#[test]
fn rule_data_offsets_two_integers() {
    for offsets in ["[0]", "[0,4,8]", "[0,\"4\"]", "{}"] {
        let header = format!(r#"{{"w":{{"dtype":"F32","shape":[1],"data_offsets":{offsets}}}}}"#);
        rejects(&with_header(&header, 4), &["tensor 'w'", "\"data_offsets\" must be [begin, end]"]);
    }
}

#[test]
fn rule_data_offsets_begin_after_end() {
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#;
    rejects(&with_header(header, 4), &["tensor 'w'", "[4, 0] have begin > end"]);
}

#[test]
fn rule_byte_size_is_shape_times_dtype_size() {
    let header = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    rejects(&with_header(header, 8), &["tensor 'w'", "span 8 bytes", "needs 12"]);
    let header = r#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}}"#;
    rejects(&with_header(header, 8), &["tensor 'w'", "span 8 bytes", "needs 4"]);
}

#[test]
fn rule_byte_size_overflow_is_an_error() {
    let header = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
    rejects(&with_header(header, 8), &["tensor 'w'", "overflows"]);
    let header = r#"{"w":{"dtype":"F64","shape":[4294967296,1073741824],"data_offsets":[0,8]}}"#;
    rejects(&with_header(header, 8), &["tensor 'w'", "overflows"]); // numel fits, bytes do not
}

#[test]
fn rule_tensors_do_not_overlap() {
    rejects(&with_header(&two((0, 8), (4, 12)), 12), &["tensor 'b'", "overlap tensor 'a'", "ends at 8"]);
    rejects(&with_header(&two((0, 8), (0, 8)), 8), &["overlap"]);
}

#[test]
fn rule_no_gap_between_tensors() {
    rejects(&with_header(&two((0, 8), (12, 20)), 20), &["tensor 'b'", "gap of 4 bytes", "'a' ends at 8"]);
    rejects(&with_header(&two((4, 12), (12, 20)), 20), &["tensor 'a'", "must begin at offset 0"]);
}

#[test]
fn rule_data_section_shorter_than_offsets() {
    rejects(
        &with_header(&two((0, 8), (8, 16)), 12),
        &["tensor 'b'", "past the end of the data section", "12"],
    );
}

#[test]
fn rule_data_section_longer_than_offsets() {
    let err = rejects(&with_header(&two((0, 8), (8, 16)), 19), &["3 trailing bytes", "end at 16"]);
    assert!(!err.contains("tensor '"), "{err}");
}

#[test]
fn rule_metadata_values_are_strings() {
    let header = r#"{"__metadata__":{"ok":"yes","step":1}}"#;
    rejects(&with_header(header, 0), &["__metadata__", "'step' must be a string", "got 1"]);
    rejects(&with_header(r#"{"__metadata__":["a"]}"#, 0), &["__metadata__", "must be an object"]);
}

#[test]
fn rule_tensor_names_unique() {
    let header = r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    rejects(&with_header(header, 2), &["line 1, column", "duplicate key \"w\""]);
}

#[test]
fn never_panics_on_truncated_or_corrupted_files() {
    let valid = with_header(&two((0, 8), (8, 16)), 16);
    for len in 0..valid.len() {
        assert!(parse_header(&valid[..len], FILE).is_err(), "prefix of {len} bytes accepted");
    }
    for i in 0..valid.len() {
        for byte in [0u8, b'9', b'"', b'{', b']', 0xff] {
            let mut bad = valid.clone();
            bad[i] = byte;
            let _ = parse_header(&bad, FILE); // any Result, no panic
        }
    }
}

#[test]
fn open_reports_io_and_format_errors_with_the_path() {
    let dir = temp_dir("open_errors");
    let missing = dir.join("missing.safetensors");
    let err = SafeTensors::open(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
    let short = dir.join("short.safetensors");
    fs::write(&short, [1, 2, 3]).unwrap();
    let err = SafeTensors::open(&short).unwrap_err().to_string();
    assert!(err.contains("short.safetensors") && err.contains("shorter than"), "{err}");
    let empty = dir.join("empty.safetensors");
    fs::write(&empty, []).unwrap();
    assert!(SafeTensors::open(&empty).unwrap_err().to_string().contains("0 bytes"));
}

// ---- sharded checkpoints

/// Writes `shards` (file → F32 tensors) and an index mapping `weight_map` (tensor → file).
fn sharded(test: &str, shards: &[(&str, &[(&str, &Tensor)])], weight_map: &[(&str, &str)]) -> PathBuf {
    let dir = temp_dir(test);
    for (file, tensors) in shards {
        safetensors::write_f32(&dir.join(file), tensors, &strings(&[("format", "pt")])).unwrap();
    }
    let map = weight_map.iter().map(|(t, f)| (t.to_string(), Value::String(f.to_string()))).collect();
    let index = Value::Object(vec![
        ("metadata".into(), Value::Object(vec![("total_size".into(), Value::Number(40.0))])),
        ("weight_map".into(), Value::Object(map)),
    ]);
    fs::write(dir.join("model.safetensors.index.json"), index.to_json_pretty()).unwrap();
    dir
}

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

fn checkpoint_err(dir: &Path) -> String {
    Checkpoint::open(dir).unwrap_err().to_string()
}

#[test]
fn sharded_checkpoint_round_trip() {
    let a = Tensor::new(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let b = Tensor::new(&[3], vec![5.0, 6.0, 7.0]);
    let c = Tensor::new(&[1, 3], vec![-1.0, -2.0, -3.0]);
    let dir = sharded(
        "sharded_ok",
        &[(SHARD1, &[("a", &a), ("c", &c)]), (SHARD2, &[("b", &b)])],
        &[("a", SHARD1), ("b", SHARD2), ("c", SHARD1)],
    );
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.names(), ["a", "b", "c"]);
    assert_eq!(ckpt.metadata(), &strings(&[("total_size", "40")])[..]);
    for (name, t) in [("a", &a), ("b", &b), ("c", &c)] {
        let back = ckpt.to_tensor(name).unwrap();
        assert_eq!((back.shape(), back.data()), (t.shape(), t.data()), "{name}");
        assert_eq!(ckpt.info(name).unwrap().shape, t.shape());
        assert_eq!(ckpt.bytes(name).unwrap(), &le_f32(t.data())[..]);
    }
    let err = ckpt.to_tensor("d").unwrap_err().to_string();
    assert!(err.contains("'d'") && err.contains("no such tensor"), "{err}");

    // The same tensors as one model.safetensors, found by directory or by file.
    let single = temp_dir("sharded_single");
    let path = single.join("model.safetensors");
    safetensors::write_f32(&path, &[("a", &a), ("b", &b)], &strings(&[("format", "pt")])).unwrap();
    for ckpt in [Checkpoint::open(&single).unwrap(), Checkpoint::open(&path).unwrap()] {
        assert_eq!(ckpt.names(), ["a", "b"]);
        assert_eq!(ckpt.to_tensor("b").unwrap().data(), b.data());
        assert_eq!(ckpt.metadata(), &strings(&[("format", "pt")])[..]);
    }
}

#[test]
fn sharded_directory_without_either_file() {
    let dir = temp_dir("sharded_neither");
    let err = checkpoint_err(&dir);
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("model.safetensors ") && err.contains("model.safetensors.index.json"), "{err}");
}

#[test]
fn sharded_missing_shard_file() {
    let a = Tensor::new(&[1], vec![1.0]);
    let dir = sharded("sharded_missing_file", &[(SHARD1, &[("a", &a)])], &[("a", SHARD1), ("b", SHARD2)]);
    let err = checkpoint_err(&dir);
    assert!(err.contains(SHARD2) && err.contains("missing"), "{err}");
}

#[test]
fn sharded_tensor_missing_from_its_shard() {
    let a = Tensor::new(&[1], vec![1.0]);
    let b = Tensor::new(&[1], vec![2.0]);
    let dir = sharded(
        "sharded_missing_tensor",
        &[(SHARD1, &[("a", &a)]), (SHARD2, &[("b", &b)])],
        &[("a", SHARD1), ("b", SHARD2), ("c", SHARD2)],
    );
    let err = checkpoint_err(&dir);
    assert!(err.contains("tensor 'c'") && err.contains(SHARD2) && err.contains("does not hold it"), "{err}");
}

#[test]
fn sharded_tensor_in_two_shards() {
    let a = Tensor::new(&[1], vec![1.0]);
    let dir = sharded(
        "sharded_duplicate",
        &[(SHARD1, &[("a", &a)]), (SHARD2, &[("a", &a), ("b", &a)])],
        &[("a", SHARD1), ("b", SHARD2)],
    );
    let err = checkpoint_err(&dir);
    assert!(err.contains("tensor 'a'") && err.contains("two shards") && err.contains(SHARD2), "{err}");
}

#[test]
fn sharded_index_rules() {
    let a = Tensor::new(&[1], vec![1.0]);
    let b = Tensor::new(&[1], vec![2.0]);
    // A shard holding a tensor the index does not list.
    let dir = sharded("sharded_unlisted", &[(SHARD1, &[("a", &a), ("b", &b)])], &[("a", SHARD1)]);
    let err = checkpoint_err(&dir);
    assert!(err.contains("tensor 'b'") && err.contains("not listed"), "{err}");
    // A shard name that leaves the directory.
    let dir = sharded("sharded_escape", &[(SHARD1, &[("a", &a)])], &[("a", "../model.safetensors")]);
    let err = checkpoint_err(&dir);
    assert!(err.contains("tensor 'a'") && err.contains("plain file name"), "{err}");
    // An index that is not JSON, or has no weight_map.
    fs::write(dir.join("model.safetensors.index.json"), "{\"weight_map\": {,}}").unwrap();
    let err = checkpoint_err(&dir);
    assert!(err.contains("model.safetensors.index.json: line 1"), "{err}");
    fs::write(dir.join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
    assert!(checkpoint_err(&dir).contains("\"weight_map\""));
}
