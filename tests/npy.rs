//! `.npy` reading and writing: byte-exact against files numpy 2.4.6 wrote
//! (tests/golden/npy/make_npy_fixtures.py), round trips for every dtype and shape, the
//! header literal's tolerated spellings, and one test per error a file can cause.

use moe::npy::{self, Npy, NpyData};
use moe::tensor::Tensor;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/npy").join(name)
}

/// A fresh path in the temp directory, unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moe-npy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A `.npy` file with the given version and header text (unpadded), then `data`.
fn file(version: (u8, u8), header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version.0, version.1]);
    if version.0 == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn header(descr: &str, fortran: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n")
}

/// The message of the error parsing `bytes` gives, checked to name the file.
fn error(bytes: &[u8]) -> String {
    let message = match npy::parse(bytes, "bad.npy") {
        Ok(npy) => panic!("expected an error, parsed {npy:?}"),
        Err(e) => e.to_string(),
    };
    assert!(message.starts_with("bad.npy: "), "error does not name the file: {message}");
    message
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "expected {part:?} in the error:\n{message}");
    }
}

// ---- golden files written by numpy

/// The arrays make_npy_fixtures.py saves (all but f4_special, whose NaN needs bitwise ==).
fn golden_arrays() -> Vec<(&'static str, Npy)> {
    let npy = |shape: &[usize], data| Npy { shape: shape.to_vec(), data };
    vec![
        ("f4_2x3.npy", npy(&[2, 3], NpyData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))),
        ("f8_scalar.npy", npy(&[], NpyData::F64(vec![std::f64::consts::PI]))),
        ("i4_2x3x4.npy", npy(&[2, 3, 4], NpyData::I32((-12..12).collect()))),
        ("i8_ids.npy", npy(&[6], NpyData::I64(vec![0, -1, 1 << 40, 50279, i64::MIN, i64::MAX]))),
        ("u4_empty.npy", npy(&[0], NpyData::U32(vec![]))),
        ("u4_1000x0.npy", npy(&[1000, 0], NpyData::U32(vec![]))),
        ("f4_pad64.npy", npy(&[0, 100, 1000, 1000, 1000, 1000, 0, 0, 0, 0], NpyData::F32(vec![]))),
    ]
}

#[test]
fn reads_what_numpy_wrote() {
    for (name, expected) in golden_arrays() {
        assert_eq!(npy::read(&golden(name)).unwrap(), expected, "{name}");
    }
}

#[test]
fn writes_the_bytes_numpy_writes() {
    for (name, array) in golden_arrays() {
        let theirs = std::fs::read(golden(name)).unwrap();
        assert_eq!(npy::to_bytes(&array).unwrap(), theirs, "{name}: to_bytes differs from np.save");
        let path = temp_path(name);
        npy::write(&path, &array).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), theirs, "{name}: write differs from np.save");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn special_floats_survive_bit_for_bit() {
    let expected = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45, f32::MAX, 0.1];
    let bytes = std::fs::read(golden("f4_special.npy")).unwrap();
    let npy = npy::parse(&bytes, "f4_special.npy").unwrap();
    assert_eq!(npy.shape, [7]);
    let NpyData::F32(values) = &npy.data else { panic!("expected f32 data, got {:?}", npy.data) };
    let bits = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(values), bits(&expected));
    assert_eq!(npy::to_bytes(&npy).unwrap(), bytes);
}

#[test]
fn reads_versions_2_and_3() {
    for name in ["v2_f4.npy", "v3_f4.npy"] {
        let npy = npy::read(&golden(name)).unwrap();
        assert_eq!(npy, Npy { shape: vec![5], data: NpyData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0]) }, "{name}");
    }
}

// ---- round trips

fn arrays_of_every_dtype(shape: &[usize]) -> Vec<Npy> {
    let n: usize = shape.iter().product();
    let data = [
        NpyData::F32((0..n).map(|i| i as f32 * 0.5 - 3.0).collect()),
        NpyData::F64((0..n).map(|i| (i as f64).sqrt() - 1e-300).collect()),
        NpyData::I32((0..n).map(|i| i as i32 * -7 + i32::MAX / 2).collect()),
        NpyData::I64((0..n).map(|i| (i as i64 - 3) << 40).collect()),
        NpyData::U32((0..n).map(|i| u32::MAX - i as u32).collect()),
    ];
    data.into_iter().map(|data| Npy { shape: shape.to_vec(), data }).collect()
}

#[test]
fn every_dtype_and_shape_round_trips_through_a_file() {
    let shapes: [&[usize]; 5] = [&[], &[0], &[5], &[2, 3], &[2, 3, 4]];
    for shape in shapes {
        for array in arrays_of_every_dtype(shape) {
            let what = format!("{} {shape:?}", array.data.descr());
            let path = temp_path("round_trip.npy");
            npy::write(&path, &array).unwrap();
            assert!(!temp_path("round_trip.npy.tmp").exists(), "{what}: the .tmp file was left behind");
            let bytes = std::fs::read(&path).unwrap();
            let header_end =
                bytes.len() - array.data.len() * (array.data.descr()[2..].parse::<usize>().unwrap());
            assert_eq!(header_end % 64, 0, "{what}: the data does not start on a multiple of 64");
            assert_eq!(bytes[header_end - 1], b'\n', "{what}: the header does not end with a newline");
            assert_eq!(&bytes[6..8], &[1, 0], "{what}: a small header is version 1.0");
            assert_eq!(npy::read(&path).unwrap(), array, "{what}");
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn a_header_over_64k_is_written_as_version_2() {
    let array = Npy { shape: vec![1; 30_000], data: NpyData::I64(vec![42]) };
    let bytes = npy::to_bytes(&array).unwrap();
    assert_eq!(&bytes[6..8], &[2, 0]);
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert!(header_len > 65535, "header of {header_len} bytes");
    assert_eq!((12 + header_len) % 64, 0);
    assert_eq!(bytes.len(), 12 + header_len + 8);
    assert_eq!(npy::parse(&bytes, "big.npy").unwrap(), array);
}

#[test]
fn the_header_literal_may_be_spelled_many_ways() {
    let data = 7.5f32.to_le_bytes().repeat(6);
    let expected = Npy { shape: vec![2, 3], data: NpyData::F32(vec![7.5; 6]) };
    for text in [
        "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3,)}",
        "  {\t'descr' : '<f4' ,\n'fortran_order':False,'shape':( 2 , 3 ) , }   \n",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", // Python 2 longs
    ] {
        assert_eq!(npy::parse(&file((1, 0), text, &data), "ok.npy").unwrap(), expected, "{text}");
    }
    let one = npy::parse(&file((1, 0), &header("<f4", "False", "(1, )"), &data[..4]), "ok.npy").unwrap();
    assert_eq!(one.shape, [1]);
}

// ---- conversions

#[test]
fn tensors_and_ids_convert() {
    let t = Tensor::new(&[2, 2], vec![1.0, -2.0, 3.5, 0.25]);
    let array = Npy::from_tensor(&t);
    assert_eq!(array.data, NpyData::F32(vec![1.0, -2.0, 3.5, 0.25]));
    let back = array.to_tensor().unwrap();
    assert_eq!((back.shape(), back.data()), (t.shape(), t.data()));

    let f64s = Npy { shape: vec![3], data: NpyData::F64(vec![0.1, 1e40, -2.0]) };
    assert_eq!(f64s.to_tensor().unwrap().data(), [0.1f32, f32::INFINITY, -2.0]);

    let ids =
        [NpyData::I32(vec![0, 5, 50279]), NpyData::I64(vec![0, 5, 50279]), NpyData::U32(vec![0, 5, 50279])];
    for data in ids {
        let array = Npy { shape: vec![3], data };
        assert_eq!(array.i64s().unwrap(), [0, 5, 50279]);
        assert_eq!(array.u32s().unwrap(), [0, 5, 50279]);
        assert_contains(&array.to_tensor().unwrap_err().to_string(), &["expected float values", "i64s()"]);
    }
    assert_contains(&f64s.i64s().unwrap_err().to_string(), &["expected integer values", "'<f8'", "(3,)"]);
    let large = Npy { shape: vec![1], data: NpyData::U32(vec![u32::MAX]) };
    assert_eq!(large.i64s().unwrap(), [u32::MAX as i64]);
    let negative = Npy { shape: vec![2], data: NpyData::I64(vec![1, -1]) };
    assert_contains(&negative.u32s().unwrap_err().to_string(), &["value -1 at flat index 1"]);
    let inconsistent = Npy { shape: vec![2, 2], data: NpyData::F32(vec![1.0]) };
    assert_contains(&inconsistent.to_tensor().unwrap_err().to_string(), &["shape (2, 2)", "1 values"]);
    assert_contains(&npy::to_bytes(&inconsistent).unwrap_err().to_string(), &["shape (2, 2)", "1 values"]);
}

// ---- errors, one per thing a file can get wrong

#[test]
fn error_missing_file_names_it() {
    let path = temp_path("does_not_exist.npy");
    let message = npy::read(&path).unwrap_err().to_string();
    assert_contains(&message, &["does_not_exist.npy"]);
}

#[test]
fn error_bad_magic() {
    let mut bytes = file((1, 0), &header("<f4", "False", "()"), &[0; 4]);
    bytes[1] = b'X';
    assert_contains(&error(&bytes), &["not a .npy file", "expected magic", "\\x93XUMPY"]);
    assert_contains(&error(b"PK\x03\x04"), &["not a .npy file", "PK"]);
}

#[test]
fn error_truncated_preamble() {
    assert_contains(&error(b"\x93NUM"), &["truncated", "4 bytes"]);
    assert_contains(&error(b"\x93NUMPY\x01"), &["truncated", "version"]);
    assert_contains(&error(b"\x93NUMPY\x01\x00\x10"), &["truncated", "header length"]);
}

#[test]
fn error_unknown_version() {
    let bytes = file((4, 0), &header("<f4", "False", "()"), &[0; 4]);
    assert_contains(&error(&bytes), &["unknown .npy version 4.0", "1.0, 2.0, 3.0"]);
    let bytes = file((1, 1), &header("<f4", "False", "()"), &[0; 4]);
    assert_contains(&error(&bytes), &["unknown .npy version 1.1"]);
}

#[test]
fn error_truncated_header() {
    let bytes = file((1, 0), &header("<f4", "False", "(2, 3)"), &[]);
    assert_contains(&error(&bytes[..30]), &["truncated header", "header length says", "only 20 follow"]);
    let bytes = file((2, 0), &header("<f4", "False", "(2, 3)"), &[]);
    assert_contains(&error(&bytes[..13]), &["truncated header", "only 1 follow"]);
}

#[test]
fn error_malformed_header_says_what_was_expected() {
    let cases = [
        ("'descr': '<f4'", "expected '{' opening the header dict at byte 0, found '\\''"),
        ("{'descr' '<f4'}", "expected ':' after the key 'descr'"),
        ("{descr: '<f4'}", "expected a quoted string at byte 1, found 'd'"),
        ("{'descr': '<f4' 'shape': ()}", "expected ',' or '}' after the value of 'descr'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (5)}", "a 1-tuple needs a trailing comma"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}",
            "expected ',' or ')' in the shape tuple",
        ),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "expected a non-negative integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}", "does not fit in"),
        ("{'descr': '<f4', 'fortran_order': false, 'shape': ()}", "expected a quoted string, True/False"),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}", "structured dtype"),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': ()}", "expected a quoted string, True/False"),
        ("{'descr': '<f4', 'fortran_order': 'no', 'shape': ()}", "expected True or False as the value"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': 'x'}",
            "expected a tuple of integers like (2, 3)",
        ),
        ("{'descr': '<f4', 'fortran_order': False}", "the key 'shape' is missing"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}", "unexpected key 'x'"),
        ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}", "'descr' appears twice"),
        (
            "{'descr': '<f4, 'fortran_order': False, 'shape': ()}",
            "expected ',' or '}' after the value of 'descr' at byte 17, found 'f'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': ()} x",
            "expected only spaces after the closing '}'",
        ),
        ("{'descr': '<\\f4', 'fortran_order': False, 'shape': ()}", "without backslash escapes"),
        ("{'descr': '<f4", "never closed"),
    ];
    for (text, expected) in cases {
        let message = error(&file((1, 0), text, &[0; 4]));
        assert_contains(&message, &["malformed header", expected]);
    }
    // version 3.0 headers must be UTF-8
    let mut bytes = file((3, 0), &header("<f4", "False", "()"), &[0; 4]);
    bytes[13] = 0xff;
    assert_contains(&error(&bytes), &["malformed header", "UTF-8"]);
}

#[test]
fn error_unsupported_dtype_names_it() {
    for descr in ["<f2", "|u1", "<u8", "|b1", "<c8", "=f4", "<U5"] {
        let message = error(&file((1, 0), &header(descr, "False", "()"), &[0; 4]));
        assert_contains(&message, &[&format!("unsupported dtype '{descr}'"), "<f4 <f8 <i4 <i8 <u4", "HINT"]);
    }
}

#[test]
fn error_big_endian() {
    let message = error(&file((1, 0), &header(">f4", "False", "(1,)"), &[0; 4]));
    assert_contains(&message, &["big-endian dtype '>f4'", "only little-endian", "astype('<f4')"]);
}

#[test]
fn error_fortran_order() {
    let message = error(&file((1, 0), &header("<f4", "True", "(2, 2)"), &[0; 16]));
    assert_contains(&message, &["fortran_order is True", "C (row-major)", "ascontiguousarray"]);
}

#[test]
fn error_data_length_says_both_numbers() {
    let message = error(&file((1, 0), &header("<i8", "False", "(2, 3)"), &[0; 47]));
    assert_contains(&message, &["data is 47 bytes", "shape (2, 3) of <i8 needs 6 × 8 = 48 bytes"]);
    let message = error(&file((1, 0), &header("<f4", "False", "()"), &[0; 8]));
    assert_contains(&message, &["data is 8 bytes", "needs 1 × 4 = 4 bytes", "trailing bytes"]);
}

#[test]
fn error_huge_shapes_do_not_panic() {
    let max = usize::MAX;
    let message = error(&file((1, 0), &header("<f4", "False", &format!("({max}, 2)")), &[0; 4]));
    assert_contains(&message, &["more elements than fit in memory", &format!("({max}, 2)")]);
    let message = error(&file((1, 0), &header("<f8", "False", &format!("({},)", max / 4)), &[0; 4]));
    assert_contains(&message, &["data is 4 bytes", &format!("more than {max} bytes")]);
}
