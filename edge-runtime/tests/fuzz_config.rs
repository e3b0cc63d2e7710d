//! Fuzz target: the configuration loader on random and mutated TOML, read from a file
//! through the same path as `--config` (file, then environment, then flags). Every input ends
//! in a configuration or an error listing problems, never a panic, and the process's peak
//! RSS stays under 512 MB. `THERMO_FUZZ_CASES=N` runs N cases per strategy.

mod fuzz_common;

use std::path::Path;

use edge_runtime::config::{Config, Layers};
use proptest::prelude::*;

/// Loads `text` as the `--config` file does.
fn exercise(path: &Path, text: &[u8]) {
    std::fs::write(path, text).expect("writing the case");
    if let Ok(layers) = Layers::from_process(Some(path), Vec::new()) {
        let _ = Config::load(&layers).map(|c| c.to_toml_redacted());
    }
}

/// Keys, tables and values the real file has, to recombine.
fn fragment() -> impl Strategy<Value = String> {
    let sections = [
        "model",
        "service",
        "governor",
        "sensors",
        "telemetry",
        "eco",
        "nosuch",
    ];
    let keys = [
        "time_scale",
        "setpoint_c",
        "workers",
        "queue_bound",
        "threads",
        "max_tokens_limit",
        "sim",
        "root",
        "interval_ms",
        "listen",
        "api_token",
        "zone",
        "x",
    ];
    let values = [
        "1",
        "-1",
        "0",
        "1e308",
        "-1e308",
        "1e40",
        "nan",
        "inf",
        "-inf",
        "true",
        "\"\"",
        "\"rpi5\"",
        "[]",
        "{}",
        "[1, 2]",
        "18446744073709551616",
        "\"\\u0000\"",
        "0x40",
        "1979-05-27",
        "\"a\"",
    ];
    prop_oneof![
        (0..sections.len()).prop_map(move |i| format!("[{}]\n", sections[i])),
        (0..sections.len()).prop_map(move |i| format!("[[{}.i2c]]\n", sections[i])),
        (0..keys.len(), 0..values.len())
            .prop_map(move |(k, v)| format!("{} = {}\n", keys[k], values[v])),
        "[ -~]{0,24}\n".prop_map(|s| s),
    ]
}

#[test]
fn the_config_loader_survives_random_and_mutated_files_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("thermo.toml");
    let cases = fuzz_common::cases(300);

    fuzz_common::runner(cases)
        .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
            exercise(&path, &bytes);
            Ok(())
        })
        .expect("random bytes");

    fuzz_common::runner(cases)
        .run(&proptest::collection::vec(fragment(), 0..24), |parts| {
            exercise(&path, parts.concat().as_bytes());
            Ok(())
        })
        .expect("recombined TOML");

    let example = Config::example_toml();
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8);
    fuzz_common::runner(cases)
        .run(&edits, |edits| {
            let mut bytes = example.clone().into_bytes();
            let len = bytes.len();
            for (at, b) in edits {
                bytes[at % len] = b;
            }
            exercise(&path, &bytes);
            Ok(())
        })
        .expect("mutated example file");

    fuzz_common::assert_peak_rss_bounded("fuzz_config");
}
