//! `thermo run` takes its `[eco]` and `[telemetry]` settings from the layered configuration
//! (`THERMO_<SECTION>_<KEY>` here, the file on a device) with its flags on top, and a bad
//! value stops it before any work with the key path named.

use std::path::Path;
use std::process::{Command, Output};

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;

fn run(home: &Path, model: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thermo"));
    cmd.arg("run")
        .arg("--model")
        .arg(model)
        .args([
            "--threads",
            "1",
            "--sim",
            "rpi4",
            "--max-tokens",
            "4",
            "--raw",
        ])
        .args(extra)
        .arg("Hello")
        .env("THERMO_HOME", home)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running thermo: {e}"))
}

#[test]
fn run_reads_eco_and_telemetry_from_the_environment_with_flags_on_top() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = home.path().join("tiny");
    write_tiny_model(&model, 7, WeightFormat::F32).unwrap_or_else(|e| panic!("{e}"));

    // A bad value is refused with its key path, before the model runs.
    let out = run(
        home.path(),
        &model,
        &[("THERMO_ECO_REGION", "atlantis"), ("THERMO_ECO_PUE", "-2")],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("eco.region") && err.contains("atlantis"),
        "{err}"
    );
    assert!(err.contains("eco.pue"), "{err}");

    // The flag wins over the environment; the environment's other keys apply.
    let out = run(
        home.path(),
        &model,
        &[
            ("THERMO_ECO_REGION", "atlantis"),
            ("THERMO_ECO_WRITE_EMISSIONS_CSV", "false"),
            ("THERMO_TELEMETRY_DEVICE_ID", "env-dev"),
        ],
        &["--region", "jp"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("[footprint:"), "{err}");
    assert!(!home.path().join("emissions.csv").exists());
    let records = std::fs::read_to_string(home.path().join("telemetry").join("env-dev.jsonl"))
        .unwrap_or_default();
    assert!(records.contains("generated_tokens"), "{records}");

    // By default each answer appends a CSV row, here with Germany's factors.
    let out = run(home.path(), &model, &[("THERMO_ECO_REGION", "de")], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(home.path().join("emissions.csv")).unwrap_or_default();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("DEU") || csv.contains("Germany"), "{csv}");
    // Both successful runs added to today's totals in the ledger.
    let ledger = std::fs::read_to_string(home.path().join("eco-ledger.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&ledger).unwrap_or_default();
    let days = v["days"].as_object().cloned().unwrap_or_default();
    let requests: u64 = days.values().filter_map(|d| d["requests"].as_u64()).sum();
    assert_eq!(requests, 2, "{ledger}");
}
