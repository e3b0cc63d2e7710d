//! Fuzz target: the GGUF reader and the Llama importer on random bytes and on mutations of a
//! valid small file from the reader's own writer. Every input ends in a value or an error,
//! never a panic, and the process's peak RSS stays under 512 MB. `THERMO_FUZZ_CASES=N` runs
//! N cases per strategy (default: a few seconds' worth).

mod fuzz_common;

use std::path::Path;

use edge_runtime::engine::gguf::GgufFile;
use edge_runtime::engine::gguf::test_writer::small_llama;
use proptest::prelude::*;

/// Opens `bytes` as a GGUF file and reads everything the importer would.
fn exercise(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("writing the case");
    let Ok(file) = GgufFile::open(path) else {
        return;
    };
    let _ = file.llama_config();
    for info in file.tensors() {
        let _ = info.hf_shape();
        let _ = file.read_tensor_f32(info);
    }
    let _ = file.load_llama();
}

/// Values that make counts and sizes absurd when written over a field.
const INTERESTING: [u64; 8] = [
    0,
    1,
    0xFF,
    0xFFFF_FFFF,
    1 << 20,
    1 << 32,
    u64::MAX,
    u64::MAX / 2,
];

/// One change to a valid file: overwrite one byte, overwrite 4 or 8 bytes with an
/// interesting value, or truncate.
#[derive(Clone, Debug)]
enum Mutation {
    Byte(usize, u8),
    Word(usize, u64, bool),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
        (any::<usize>(), 0..INTERESTING.len(), any::<bool>())
            .prop_map(|(at, i, wide)| Mutation::Word(at, INTERESTING[i], wide)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match *m {
        Mutation::Byte(at, b) => {
            if let Some(slot) = bytes.get_mut(at % len) {
                *slot = b;
            }
        }
        Mutation::Word(at, v, wide) => {
            let le = v.to_le_bytes();
            let width = if wide { 8 } else { 4 };
            let start = at % len;
            for (i, b) in le.iter().take(width).enumerate() {
                if let Some(slot) = bytes.get_mut(start + i) {
                    *slot = *b;
                }
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
    }
}

#[test]
fn the_gguf_reader_survives_random_and_mutated_files_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("case.gguf");
    let cases = fuzz_common::cases(300);

    let random = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(|tail| {
            let mut bytes = b"GGUF\x03\0\0\0".to_vec();
            bytes.extend(tail);
            bytes
        }),
    ];
    fuzz_common::runner(cases)
        .run(&random, |bytes| {
            exercise(&path, &bytes);
            Ok(())
        })
        .expect("random bytes");

    let valid = small_llama().build();
    std::fs::write(&path, &valid).expect("writing the valid file");
    let loaded = GgufFile::open(&path)
        .map_err(Into::into)
        .and_then(|f| f.load_llama());
    assert!(
        loaded.is_ok(),
        "the unmutated file loads: {:?}",
        loaded.err()
    );
    let mutations = proptest::collection::vec(mutation(), 1..6);
    fuzz_common::runner(cases)
        .run(&mutations, |ms| {
            let mut bytes = valid.clone();
            for m in &ms {
                apply(&mut bytes, m);
            }
            exercise(&path, &bytes);
            Ok(())
        })
        .expect("mutated files");

    fuzz_common::assert_peak_rss_bounded("fuzz_gguf");
}
