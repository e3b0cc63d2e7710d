//! `thermo train` on the seeded tiny model: a run killed with `kill -9` resumes to the
//! adapter of an uninterrupted run, bad input is refused with file and line before anything
//! is trained, and `thermo run --adapter` serves (or refuses) what was trained.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;
use edge_runtime::train::lora::read_safetensors;

fn thermo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_thermo")
}

/// The seeded tiny model folder (f32), written once per test process.
fn tiny() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tiny");
        write_tiny_model(&path, 7, WeightFormat::F32).expect("tiny model");
        (dir, path)
    })
    .1
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Trains a few steps with `thermo train` into a new temp folder; returns it.
fn cli_adapter() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = text_data(tmp.path());
    let out = tmp.path().join("adapter");
    let o = train_cmd(&data, &out, 3, &[]).output().expect("train");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    tmp
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n")).expect("write data");
    p
}

fn text_data(dir: &Path) -> PathBuf {
    let lines: Vec<String> = (0..24)
        .map(|i| format!("item {i} of the manual says: code {}", 1000 + i * 37))
        .collect();
    write_lines(dir, "data.txt", &lines)
}

fn train_cmd(data: &Path, out: &Path, steps: usize, extra: &[&str]) -> Command {
    let mut c = Command::new(thermo_bin());
    c.args(["train", "--model"])
        .arg(tiny())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--steps",
            &steps.to_string(),
            "--seq-len",
            "96",
            "--rank",
            "4",
        ])
        .args([
            "--checkpoint-every",
            "10",
            "--eval-every",
            "0",
            "--no-governor",
        ])
        .args(["--seed", "5", "--dropout", "0.1", "--accum", "2"])
        .arg("--emissions-csv")
        .arg(emissions_csv(out))
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The emissions CSV of a run into `out`: beside it, so that `out` holds only the adapter.
fn emissions_csv(out: &Path) -> PathBuf {
    out.with_extension("emissions.csv")
}

fn adapter_tensors(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).expect("adapter file");
    read_safetensors(&bytes).expect("safetensors").0
}

fn checkpoint_step(out: &Path) -> Option<u64> {
    let bytes = std::fs::read(out.join("checkpoint.safetensors")).ok()?;
    let (_, md) = read_safetensors(&bytes).ok()?;
    let v: serde_json::Value = serde_json::from_str(md.get("thermo.checkpoint")?).ok()?;
    v["progress"]["step"].as_u64()
}

#[test]
fn a_killed_run_resumes_to_the_adapter_of_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = text_data(tmp.path());
    let steps = 400;
    let straight = tmp.path().join("straight");
    let out = train_cmd(&data, &straight, steps, &[])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = tmp.path().join("killed");
    let mut child = train_cmd(&data, &killed, steps, &[])
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let mut killed_at = None;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(s) = checkpoint_step(&killed)
            && s >= 20
        {
            child.kill().expect("kill -9");
            killed_at = Some(s);
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    let killed_at = killed_at.expect("the run was killed mid-way");
    assert!(killed_at < steps as u64, "killed at {killed_at}");
    let out = train_cmd(&data, &killed, steps, &["--resume"])
        .output()
        .expect("resume");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("resuming at step"), "{log}");
    let a = adapter_tensors(&straight);
    let b = adapter_tensors(&killed);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, (_, va)) in &a {
        let d = max_abs_diff(va, &b[name].1);
        assert!(d <= 1e-6, "{name}: max |diff| {d}");
    }
}

/// Runs `thermo train` expecting failure; returns stderr.
fn train_fails(data: &Path, out: &Path, extra: &[&str]) -> String {
    let o = train_cmd(data, out, 5, extra).output().expect("run");
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "must fail: {log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

fn assert_nothing_written(out: &Path) {
    assert!(
        !out.exists() || std::fs::read_dir(out).expect("ls").next().is_none(),
        "{} holds files",
        out.display()
    );
}

#[test]
fn an_empty_data_file_is_refused_before_training() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = write_lines(tmp.path(), "empty.txt", &[]);
    let out = tmp.path().join("out");
    let log = train_fails(&data, &out, &[]);
    assert!(
        log.contains("empty.txt: no examples: the file is empty"),
        "{log}"
    );
    assert!(log.contains("nothing was trained"), "{log}");
    assert_nothing_written(&out);
}

#[test]
fn binary_garbage_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("garbage.txt");
    std::fs::write(&data, [b'o', b'k', b'\n', 0xff, 0x00, 0xc3, b'\n']).expect("write");
    let out = tmp.path().join("out");
    let log = train_fails(&data, &out, &[]);
    assert!(log.contains("garbage.txt:2: not UTF-8"), "{log}");
    assert_nothing_written(&out);
}

#[test]
fn an_invalid_jsonl_line_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lines: Vec<String> = vec![
        r#"{"prompt": "What is the code?", "completion": "4471"}"#.into(),
        r#"{"prompt": "And the other?", "completion": "9120"}"#.into(),
        r#"{"prompt": "broken", "completion": }"#.into(),
    ];
    let data = write_lines(tmp.path(), "pairs.jsonl", &lines);
    let out = tmp.path().join("out");
    let log = train_fails(&data, &out, &[]);
    assert!(log.contains("pairs.jsonl:3: invalid JSON"), "{log}");
    assert_nothing_written(&out);
}

#[test]
fn a_line_longer_than_the_context_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lines: Vec<String> = (0..4).map(|i| format!("short line {i}")).collect();
    lines.push("x".repeat(300));
    let data = write_lines(tmp.path(), "long.txt", &lines);
    let out = tmp.path().join("out");
    let log = train_fails(&data, &out, &[]);
    assert!(
        log.contains("long.txt:5: 300 tokens, longer than the model's context of 256"),
        "{log}"
    );
    assert_nothing_written(&out);
}

#[test]
fn a_read_only_output_folder_is_refused_before_training() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = text_data(tmp.path());
    // Nobody, not even root, can create files under /proc.
    let out = PathBuf::from("/proc/thermo-train-test-out");
    let log = train_fails(&data, &out, &[]);
    assert!(log.contains("cannot write"), "{log}");
    assert!(!out.exists());
}

#[test]
fn an_adapter_with_the_wrong_rank_is_refused_by_run() {
    let tmp = cli_adapter();
    let dir = tmp.path().join("adapter");
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).expect("cfg");
    std::fs::write(&cfg_path, text.replace("\"r\": 4", "\"r\": 8")).expect("write");
    let o = Command::new(thermo_bin())
        .args(["run", "--no-governor", "--max-tokens", "4", "--model"])
        .arg(tiny())
        .arg("--adapter")
        .arg(&dir)
        .arg("hello")
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{log}");
    assert!(log.contains("does not fit this model"), "{log}");
    assert!(log.contains("rank 8"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn thermo_train_writes_a_peft_adapter_that_thermo_run_serves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = text_data(tmp.path());
    let out = tmp.path().join("adapter");
    let o = train_cmd(&data, &out, 6, &[]).output().expect("train");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("step 6/6 | loss"), "{log}");
    assert!(log.contains("J/step"), "{log}");
    assert!(log.contains("[footprint: "), "{log}");
    let csv = std::fs::read_to_string(emissions_csv(&out)).expect("emissions.csv");
    assert_eq!(
        csv.lines().count(),
        2,
        "a header and one row for the run: {csv}"
    );
    assert!(csv.contains("thermo train"), "{csv}");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter_config.json")).expect("cfg"),
    )
    .expect("json");
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    // The default adapts every projection of the top half of the layers (1 of 2 here).
    let names: Vec<String> = adapter_tensors(&out).into_keys().collect();
    assert!(
        names.contains(
            &"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight".to_string()
        ) && names
            .contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("layers.0.")), "{names:?}");
    let o = Command::new(thermo_bin())
        .args([
            "run",
            "--no-governor",
            "--raw",
            "--max-tokens",
            "4",
            "--model",
        ])
        .arg(tiny())
        .arg("--adapter")
        .arg(&out)
        .arg("item 3")
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The thread count the benchmark table reports for `thermo train --bench` with `extra` flags
/// and `RAYON_NUM_THREADS` as given (`None`: unset).
fn bench_threads(rayon: Option<&str>, extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = text_data(tmp.path());
    let mut c = Command::new(thermo_bin());
    c.args(["train", "--model"])
        .arg(tiny())
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("adapter"))
        .args(["--seq-len", "96", "--rank", "4", "--no-governor"])
        .args(["--bench", "--bench-steps", "1", "--bench-top", "1"])
        .args(extra)
        .env_remove("RAYON_NUM_THREADS");
    if let Some(v) = rayon {
        c.env("RAYON_NUM_THREADS", v);
    }
    let o = c.output().expect("thermo train --bench");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    table
        .split("tokens, ")
        .nth(1)
        .and_then(|rest| rest.split(" compute thread").next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn training_uses_one_compute_thread_unless_told_otherwise() {
    assert_eq!(bench_threads(None, &[]), "1");
    assert_eq!(bench_threads(Some("2"), &[]), "2");
    assert_eq!(bench_threads(None, &["--threads", "2"]), "2");
    assert_eq!(bench_threads(Some("2"), &["--threads", "1"]), "1");
}
