//! SIGTERM and SIGINT end the main job in order: the answer stops at a token boundary, the
//! governor stops (restoring whatever it changed) and prints its last status, and the process
//! exits with success instead of dying mid-write.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;

fn tiny(dir: &Path) -> String {
    let p = dir.join("tiny");
    write_tiny_model(&p, 3, WeightFormat::F32).expect("tiny model");
    p.display().to_string()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} failed");
}

/// Collects stderr on a thread and reports each line.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return;
            }
        }
    }
    panic!("no {needle:?} on stderr: {seen:#?}");
}

fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for thermo") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("thermo did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chat(model: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args(["chat", "--model", model, "--sim", "rpi4", "--threads", "1"])
        .args(["--no-telemetry", "--no-emissions-csv"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting thermo chat")
}

#[test]
fn sigterm_at_the_chat_prompt_stops_the_governor_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = tiny(dir.path());
    let mut child = chat(&model);
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    wait_for(&lines, "governor acting through", &mut seen);
    signal(&child, "TERM");
    let status = exit_within(&mut child, Duration::from_secs(10));
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        seen.push(line);
    }
    assert!(status.success(), "{status:?}: {seen:#?}");
    let last = seen
        .iter()
        .rev()
        .find(|l| l.starts_with("[governor:"))
        .unwrap_or_else(|| panic!("no final governor line: {seen:#?}"));
    assert!(last.ends_with("| stopped]"), "{last}");
    // stdin is still open: only the signal can have ended the session.
    drop(child.stdin.take());
}

#[test]
fn sigint_mid_answer_stops_generation_at_a_token_and_reports_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = tiny(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_thermo"))
        .args([
            "run",
            "--model",
            &model,
            "--raw",
            "--no-governor",
            "--no-guard",
            "--no-telemetry",
            "--no-emissions-csv",
            "--max-tokens",
            "100000",
            "--stop",
            "this string is never generated",
            "hello",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting thermo run");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let lines = stderr_lines(&mut child);
    // Wait for the answer to start streaming, then interrupt it.
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("the answer starts");
    signal(&child, "INT");
    let status = exit_within(&mut child, Duration::from_secs(10));
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let seen: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{status:?}: {seen:#?}");
    let summary = seen
        .iter()
        .find(|l| l.contains("generated;"))
        .unwrap_or_else(|| panic!("no summary: {seen:#?}"));
    assert!(
        summary.contains("stop: stopped: interrupted by a signal")
            || summary.contains("stop: context full"),
        "{summary}"
    );
}
