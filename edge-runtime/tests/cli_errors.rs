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

/// The message's `: `-separated parts, with any two neighbours that say the same thing.
fn repeated_part(message: &str) -> Option<String> {
    let parts: Vec<&str> = message.split(": ").map(str::trim).collect();
    parts
        .windows(2)
        .find(|w| !w[0].is_empty() && w[0] == w[1])
        .map(|w| w[0].to_owned())
}

#[test]
fn refuses_out_of_range_and_non_finite_time_scales_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    for scale in [
        "1e308", "1e40", "1e20", "1e14", "1000.5", "inf", "NaN", "0", "-2",
    ] {
        let flag = format!("--sim-time-scale={scale}");
        let out = thermo(&[
            "run",
            "--model",
            &model,
            "--sim",
            "rpi5",
            &flag,
            "--max-tokens",
            "4",
            "hi",
        ]);
        assert_clean_failure(&out, "at most 1000");
        assert!(out.stdout.is_empty(), "{scale}: answered anyway");
    }
}

#[test]
fn a_config_file_with_an_out_of_range_time_scale_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("thermo.toml");
    for scale in ["1e40", "1e308", "1e14", "0.0"] {
        std::fs::write(&file, format!("[sensors]\ntime_scale = {scale}\n")).expect("write");
        let out = thermo(&["config", "--config", &file.display().to_string()]);
        assert_clean_failure(&out, "sensors.time_scale");
    }
}

#[test]
fn the_fastest_time_scale_answers_and_exits_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args([
            "run",
            "--model",
            &model,
            "--sim",
            "rpi5",
            "--sim-time-scale",
            "1000",
            "--max-tokens",
            "8",
            "hi",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning thermo");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break Some(status);
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let status = status.expect("thermo did not exit within 120 s");
    assert!(status.success(), "{status}");
}

#[test]
fn a_toml_profile_file_named_with_its_suffix_runs_the_simulated_soc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let template = sensor_drivers::sim::Profile::builtin_toml("rpi4").expect("rpi4 template");
    // A name that is neither built in nor a file: the profile must be used as loaded.
    let custom = template.replacen("name = \"rpi4\"", "name = \"my-board\"", 1);
    assert_ne!(custom, template);
    let profile = dir.path().join("board.toml");
    std::fs::write(&profile, custom).expect("writing the profile");
    let out = thermo(&[
        "run",
        "--model",
        &model,
        "--sim",
        &profile.display().to_string(),
        "--max-tokens",
        "4",
        "hi",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("No such file"), "{stderr}");
}

#[test]
fn error_messages_do_not_repeat_their_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_utf8 = dir.path().join("binary.toml");
    std::fs::write(&not_utf8, [0xff, 0xfe, 0x00, 0x80]).expect("write");
    let not_utf8 = not_utf8.display().to_string();
    let missing_gguf = dir.path().join("nosuch.gguf").display().to_string();
    let out_dir = dir.path().join("out").display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["import-gguf", &missing_gguf, &out_dir], "No such file"),
        (
            &["config", "--config", "/nonexistent/thermo.toml"],
            "No such file",
        ),
        (&["config", "--set", "nosuch.key=1"], "unknown section"),
        (&["config", "--config", &not_utf8], "UTF-8"),
        (
            &[
                "run",
                "--sim",
                "/nonexistent/board.toml",
                "--model",
                "/nonexistent",
                "hi",
            ],
            "exist",
        ),
    ];
    for (args, needle) in cases {
        let out = thermo(args);
        assert_clean_failure(&out, needle);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            assert_eq!(repeated_part(line), None, "{args:?}: {line}");
        }
    }
}

#[test]
fn embed_with_a_folder_that_is_not_an_encoder_fails_cleanly() {
    let out = thermo(&["embed", "--model", "/nonexistent/encoder", "hello"]);
    assert_clean_failure(&out, "config.json");
    let dir = tempfile::tempdir().expect("tempdir");
    // An LLM folder is not a BERT encoder: its config lacks the encoder's fields.
    let model = tiny(dir.path());
    let out = thermo(&["embed", "--model", &model, "hello"]);
    assert_clean_failure(&out, "config.json");
    let out = thermo(&["embed"]);
    assert!(!out.status.success(), "no text to embed");
}
