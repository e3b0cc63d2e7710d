//! Fine-tuning from plain notes, as a user does it: `thermo train --model DIR --data
//! notes.txt --out ADAPTER` with the default recipe on invented facts (one sentence per
//! note, two attributes of a named thing each; `tests/data/notes/tune.txt`), then asked
//! hand-written questions (`tune_questions.jsonl`, wording the training data does not hold)
//! through `thermo run --adapter`. A second run on the same notes takes every generated pair
//! from the cache.
//!
//! The test trains on the first [`CI_NOTES`] notes to stay within CI time; set
//! `THERMO_NOTES_FACTS=20` to train on all twenty.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use e2e_tests::{real_model_dir, thermo};
use edge_runtime::engine::WeightFormat;

/// Notes the test trains on by default.
const CI_NOTES: usize = 12;

/// Share of the hand-written questions the adapter must answer.
const MIN_RECALL: f64 = 0.8;

fn notes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/notes")
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().context("spawning thermo")?;
    ensure!(
        out.status.success(),
        "thermo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The first `n` notes and their questions (question, answer).
fn facts(n: usize) -> Result<(String, Vec<(String, String)>)> {
    let notes = std::fs::read_to_string(notes_dir().join("tune.txt"))?;
    let questions = std::fs::read_to_string(notes_dir().join("tune_questions.jsonl"))?;
    let notes: Vec<&str> = notes.lines().take(n).collect();
    let questions = questions
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let field = |k: &str| v[k].as_str().map(str::to_string).context("a string field");
            Ok((field("question")?, field("answer")?))
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(notes.len() == n && questions.len() == n, "{n} facts");
    Ok((notes.join("\n") + "\n", questions))
}

#[test]
fn notes_trained_with_the_default_recipe_answer_hand_written_questions() -> Result<()> {
    let n = std::env::var("THERMO_NOTES_FACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_NOTES);
    let (notes, questions) = facts(n)?;
    let home = tempfile::tempdir()?;
    let data = home.path().join("notes.txt");
    std::fs::write(&data, notes)?;
    let model = real_model_dir(WeightFormat::Ggml);
    let thermo = thermo()?;
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&thermo);
        c.args(&args[..1])
            .arg("--model")
            .arg(&model)
            .args(&args[1..])
            .env("THERMO_HOME", home.path())
            .env("RUST_LOG", "warn");
        c
    };
    let adapter = home.path().join("adapter");
    let started = Instant::now();
    let out = run(cmd(&["train", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&adapter))?;
    let train_s = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    ensure!(
        log.contains(&format!("{n} note(s) trained as text")),
        "no preflight account of the notes"
    );
    ensure!(
        log.contains(&format!("pairs of {n} note(s) derived")),
        "the augmentation's share is not shown apart"
    );

    let mut hits = 0;
    for (q, want) in &questions {
        let out = run(
            cmd(&["run", "--no-governor", "--max-tokens", "40", "--adapter"])
                .arg(&adapter)
                .arg(q),
        )?;
        let answer = String::from_utf8_lossy(&out.stdout);
        let hit = answer.to_lowercase().contains(&want.to_lowercase());
        hits += usize::from(hit);
        eprintln!(
            "{} {q} -> {}",
            if hit { "hit " } else { "miss" },
            answer.trim()
        );
    }
    let recall = hits as f64 / n as f64;
    eprintln!(
        "recall {hits}/{n} ({:.0} %) through thermo run; training run {train_s:.0} s",
        100.0 * recall
    );
    ensure!(recall >= MIN_RECALL, "recall {recall}");

    let again = run(cmd(&["train", "--preflight-only", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(home.path().join("again")))?;
    let again = String::from_utf8_lossy(&again.stderr);
    ensure!(
        again.contains(&format!("0 derived now, {n} from the cache")),
        "a second run derived pairs again: {again}"
    );
    Ok(())
}
