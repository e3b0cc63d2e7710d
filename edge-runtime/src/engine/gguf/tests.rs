use super::parse::{Layout, parse_layout};
use super::test_writer::*;
use super::*;

fn parse(bytes: &[u8]) -> Result<Layout, GgufError> {
    parse_layout(bytes, bytes.len() as u64)
}

fn write_and_open(builder: &GgufBuilder) -> (tempfile::TempDir, GgufFile) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = builder.write(dir.path(), "m.gguf");
    let file = GgufFile::open(&path).expect("opens");
    (dir, file)
}

/// A file exercising every metadata value type, a nested array and two tensors.
fn every_type_file() -> GgufBuilder {
    let nested = {
        // array of 2 arrays of u8: [[1, 2], [3]]
        let mut v = T_ARRAY.to_le_bytes().to_vec();
        v.extend(2u64.to_le_bytes());
        for inner in [&[1u8, 2][..], &[3u8][..]] {
            v.extend(T_U8.to_le_bytes());
            v.extend((inner.len() as u64).to_le_bytes());
            v.extend(inner);
        }
        v
    };
    GgufBuilder::new()
        .kv("u8", T_U8, vec![200])
        .kv("i8", T_I8, vec![0xFF])
        .kv("u16", T_U16, 60_000u16.to_le_bytes().to_vec())
        .kv("i16", T_I16, (-300i16).to_le_bytes().to_vec())
        .u32("u32", 4_000_000_000)
        .kv("i32", T_I32, (-5i32).to_le_bytes().to_vec())
        .f32("f32", 1.5)
        .kv("bool", T_BOOL, vec![1])
        .str("string", "héllo")
        .kv("u64", T_U64, (1u64 << 40).to_le_bytes().to_vec())
        .kv("i64", T_I64, (-1i64 << 40).to_le_bytes().to_vec())
        .kv("f64", T_F64, 0.25f64.to_le_bytes().to_vec())
        .str_array("strings", &["a", "", "ü"])
        .i32_array("ints", &[3, -1])
        .kv("nested", T_ARRAY, nested)
        .tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
        .tensor_f32("b", &[2, 2], &[4.0, 5.0, 6.0, 7.0])
}

#[test]
fn reads_every_metadata_value_type_and_tensor_info() {
    let (_dir, f) = write_and_open(&every_type_file());
    assert_eq!(f.version(), 3);
    let md = f.metadata();
    assert_eq!(md.get("u8"), Some(&MetadataValue::U8(200)));
    assert_eq!(md.get("i8"), Some(&MetadataValue::I8(-1)));
    assert_eq!(md.get("u16"), Some(&MetadataValue::U16(60_000)));
    assert_eq!(md.get("i16"), Some(&MetadataValue::I16(-300)));
    assert_eq!(md.get_u32("u32").expect("u32"), 4_000_000_000);
    assert_eq!(md.get("i32"), Some(&MetadataValue::I32(-5)));
    assert_eq!(md.get_f32("f32").expect("f32"), 1.5);
    assert!(md.get_bool("bool").expect("bool"));
    assert_eq!(md.get_str("string").expect("string"), "héllo");
    assert_eq!(md.get_u64("u64").expect("u64"), 1 << 40);
    assert_eq!(md.get("i64"), Some(&MetadataValue::I64(-1 << 40)));
    assert_eq!(md.get_f32("f64").expect("f64 narrows"), 0.25);
    assert_eq!(
        md.get_str_array("strings").expect("strings"),
        ["a", "", "ü"]
    );
    assert_eq!(md.get_int_array("ints").expect("ints"), vec![3, -1]);
    assert_eq!(
        md.get_array("nested").expect("nested"),
        [
            MetadataValue::Array(vec![MetadataValue::U8(1), MetadataValue::U8(2)]),
            MetadataValue::Array(vec![MetadataValue::U8(3)])
        ]
    );
    assert_eq!(md.len(), 15);

    let a = f.tensor("a").expect("a");
    assert_eq!(
        (a.dims.clone(), a.type_id, a.n_bytes),
        (vec![3], 0, Some(12))
    );
    assert_eq!(a.offset, f.data_offset());
    let b = f.tensor("b").expect("b");
    assert_eq!(
        b.offset,
        f.data_offset() + 32,
        "second tensor starts at the next aligned offset"
    );
    assert_eq!(
        f.read_tensor_f32(b).expect("reads b"),
        vec![4.0, 5.0, 6.0, 7.0]
    );
    assert_eq!(f.read_tensor_f32(a).expect("reads a"), vec![1.0, 2.0, 3.0]);
    assert_eq!(f.data_offset() % 32, 0);
}

#[test]
fn typed_getters_report_missing_keys_and_wrong_types() {
    let (_dir, f) = write_and_open(&every_type_file());
    let md = f.metadata();
    assert!(matches!(md.get_str("absent"), Err(GgufError::MissingKey { key }) if key == "absent"));
    assert!(matches!(
        md.get_str("u32"),
        Err(GgufError::WrongType {
            expected: "string",
            ..
        })
    ));
    assert!(
        matches!(md.get_u32("i32"), Err(GgufError::WrongType { .. })),
        "negative is not u32"
    );
    assert!(
        matches!(md.get_u32("u64"), Err(GgufError::WrongType { .. })),
        "2^40 is not u32"
    );
    assert_eq!(md.get_u32("u16").expect("widens"), 60_000);
    assert!(matches!(
        md.get_str_array("ints"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        md.get_f32("string"),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn reads_version_2_files() {
    let mut b = every_type_file();
    b.version = 2;
    let (_dir, f) = write_and_open(&b);
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 2);
}

#[test]
fn honours_general_alignment() {
    let mut b = every_type_file().u32("general.alignment", 64);
    b.alignment = 64;
    let (_dir, f) = write_and_open(&b);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    let b_info = f.tensor("b").expect("b");
    assert_eq!(b_info.offset, f.data_offset() + 64);
    assert_eq!(
        f.read_tensor_f32(b_info).expect("reads"),
        vec![4.0, 5.0, 6.0, 7.0]
    );
}

#[test]
fn rejects_bad_magic() {
    let mut bytes = every_type_file().build();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(parse(&bytes), Err(GgufError::BadMagic { found }) if &found == b"GGML"));
}

#[test]
fn rejects_unsupported_versions() {
    for version in [1u32, 4, 99] {
        let mut b = every_type_file();
        b.version = version;
        assert!(
            matches!(parse(&b.build()), Err(GgufError::UnsupportedVersion { version: v }) if v == version),
            "version {version}"
        );
    }
}

#[test]
fn names_big_endian_files() {
    let mut bytes = every_type_file().build();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::BigEndian { version: 3 })
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = every_type_file().build();
    for len in 0..bytes.len() {
        let result = parse(&bytes[..len]);
        assert!(
            matches!(
                result,
                Err(GgufError::Truncated { .. })
                    | Err(GgufError::CountTooLarge { .. })
                    | Err(GgufError::TensorOutOfBounds { .. })
            ),
            "prefix of {len} bytes gave {:?}",
            result.err()
        );
    }
    assert!(parse(&bytes).is_ok());
}

#[test]
fn reports_truncated_tensor_data_with_offsets() {
    let mut bytes = every_type_file().build();
    bytes.truncate(bytes.len() - 1);
    match parse(&bytes) {
        Err(GgufError::TensorOutOfBounds {
            name,
            end,
            file_len,
        }) => {
            assert_eq!(name, "b");
            assert_eq!(end, file_len + 1);
        }
        other => panic!("expected TensorOutOfBounds, got {:?}", other.err()),
    }
}

/// Header of a file with no tensors and one key whose value bytes follow.
fn one_kv_header(key: &str, type_id: u32) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    v.extend(string(key));
    v.extend(type_id.to_le_bytes());
    v
}

#[test]
fn rejects_absurd_counts_before_allocating() {
    // Array of u64::MAX / 2 strings.
    let mut bytes = one_kv_header("k", T_ARRAY);
    bytes.extend(T_STRING.to_le_bytes());
    bytes.extend((u64::MAX / 2).to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::CountTooLarge {
            what: "array length",
            ..
        })
    ));

    // String of 2^62 bytes.
    let mut bytes = one_kv_header("k", T_STRING);
    bytes.extend((1u64 << 62).to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::CountTooLarge {
            what: "metadata string",
            ..
        })
    ));

    // 2^60 tensors and 2^60 keys.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend((1u64 << 60).to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::CountTooLarge {
            what: "tensor count",
            ..
        })
    ));
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend((1u64 << 60).to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::CountTooLarge {
            what: "metadata entry count",
            ..
        })
    ));
}

#[test]
fn rejects_deeply_nested_arrays() {
    let mut bytes = one_kv_header("k", T_ARRAY);
    for _ in 0..(MAX_ARRAY_DEPTH + 1) {
        bytes.extend(T_ARRAY.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
    }
    bytes.extend(T_U8.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend([0u8; 64]);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::NestingTooDeep { .. })
    ));
}

#[test]
fn rejects_unknown_value_types_and_bad_booleans() {
    let mut bytes = one_kv_header("k", 13);
    bytes.extend([0u8; 16]);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::UnknownValueType { type_id: 13, .. })
    ));
    let mut bytes = one_kv_header("k", T_BOOL);
    bytes.push(2);
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::InvalidBool { value: 2, .. })
    ));
    let mut bytes = one_kv_header("k", T_STRING);
    bytes.extend(2u64.to_le_bytes());
    bytes.extend([0xC3, 0x28]);
    assert!(matches!(parse(&bytes), Err(GgufError::InvalidUtf8 { .. })));
}

#[test]
fn rejects_duplicate_keys_and_tensors() {
    let mut b = every_type_file();
    b.kvs.push(("u8".to_owned(), T_U8, vec![1]));
    assert!(matches!(parse(&b.build()), Err(GgufError::DuplicateKey(k)) if k == "u8"));
    let mut b = every_type_file();
    b.tensors.push(RawTensor {
        name: "a".to_owned(),
        dims: vec![1],
        type_id: 0,
        data: vec![0; 4],
    });
    assert!(matches!(parse(&b.build()), Err(GgufError::DuplicateTensor(n)) if n == "a"));
}

#[test]
fn rejects_bad_alignment_values() {
    for alignment in [0u32, 48] {
        let b = every_type_file().u32("general.alignment", alignment);
        assert!(
            matches!(parse(&b.build()), Err(GgufError::BadAlignment(a)) if a == u64::from(alignment))
        );
    }
}

#[test]
fn rejects_misaligned_tensor_offsets() {
    let mut bytes = every_type_file().build();
    // Patch tensor "b"'s relative offset (last 8 bytes of its info) from 32 to 36.
    let needle: Vec<u8> = [string("b"), 2u32.to_le_bytes().to_vec()].concat();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("tensor info of b");
    let offset_at = at + needle.len() + 16 + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&36u64.to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(GgufError::TensorMisaligned { offset: 36, .. })
    ));
}

#[test]
fn rejects_impossible_tensor_shapes() {
    let b = GgufBuilder::new().tensor("t", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::BadTensorShape { .. })
    ));
    let b = GgufBuilder::new().tensor("t", &[4, 0], 0, vec![]);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::BadTensorShape { .. })
    ));
    let b = GgufBuilder::new().tensor("t", &[u64::MAX, 4], 0, vec![]);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::BadTensorShape { .. })
    ));
    // Q8_0 rows of 16 values are half a block.
    let b = GgufBuilder::new().tensor("t", &[16, 2], 8, vec![0; 34]);
    assert!(matches!(
        parse(&b.build()),
        Err(GgufError::BadTensorShape { .. })
    ));
}

#[test]
fn open_reports_missing_files_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = GgufFile::open(dir.path().join("nope.gguf")).expect_err("missing");
    assert!(matches!(&err, GgufError::Io { .. }));
    assert!(err.to_string().contains("nope.gguf"), "{err}");
}

#[test]
fn metadata_written_back_with_the_encoder_reads_the_same() {
    let (_dir, f) = write_and_open(&every_type_file());
    let mut copy = GgufBuilder::new();
    for (key, value) in f.metadata().iter() {
        copy = copy.value(key, value);
    }
    let (_dir2, g) = write_and_open(&copy);
    assert_eq!(g.metadata(), f.metadata());
}
