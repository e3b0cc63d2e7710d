//! Bad input to the `thermo` binary gives a clear message and a non-zero exit, never a panic.

use std::path::Path;
use std::process::{Command, Output};

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;

fn thermo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running thermo")
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "stderr does not mention {needle:?}: {stderr}"
    );
}

fn tiny(dir: &Path) -> String {
    let p = dir.join("tiny");
    write_tiny_model(&p, 3, WeightFormat::F32).expect("tiny model");
    p.display().to_string()
}

#[test]
fn run_with_a_missing_model_folder_fails_cleanly() {
    let out = thermo(&["run", "--model", "/nonexistent/model", "hello"]);
    assert_clean_failure(&out, "does not exist");
}

#[test]
fn run_with_an_empty_prompt_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let out = thermo(&["run", "--model", &model, "   "]);
    assert_clean_failure(&out, "prompt is empty");
}

#[test]
fn run_with_an_over_long_prompt_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let prompt = "word ".repeat(400);
    let out = thermo(&["run", "--model", &model, "--raw", &prompt]);
    assert_clean_failure(&out, "context");
}

#[test]
fn run_with_out_of_range_sampling_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let out = thermo(&["run", "--model", &model, "--top-p", "1.5", "hi"]);
    assert_clean_failure(&out, "top-p");
}

#[test]
fn run_on_the_tiny_model_streams_an_answer_and_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let out = thermo(&["run", "--model", &model, "--max-tokens", "8", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("generated") && stderr.contains("decode"),
        "{stderr}"
    );
}

#[test]
fn import_of_a_file_that_is_not_gguf_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, b"definitely not a gguf file").expect("write");
    let out_dir = dir.path().join("out");
    let out = thermo(&[
        "import-gguf",
        bogus.to_str().expect("utf8"),
        out_dir.to_str().expect("utf8"),
    ]);
    assert_clean_failure(&out, "bogus.gguf");
    assert!(!out_dir.exists(), "nothing half-written is left");
}

#[test]
fn import_with_an_unknown_format_fails_cleanly() {
    let out = thermo(&[
        "import-gguf",
        "x.gguf",
        "/tmp/never-written",
        "--format",
        "q3",
    ]);
    assert_clean_failure(&out, "unknown weight format");
}
