//! `thermo train --mqtt` against a real broker, on the tiny model and the simulated Pi 4:
//! tick records count the training steps, the fleet's `pause_training` command holds the
//! run and `resume_training` lets it go on, SIGTERM during the run checkpoints it and sends
//! one training record (outcome, steps, tokens, losses, energy, eco figures and the day's
//! totals), and `thermo eco today` shows the run in the per-day ledger.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e_tests::mosquitto::{Message, Mosquitto, Subscriber, publish_once};
use e2e_tests::{terminate, thermo, tiny_model};
use edge_runtime::engine::WeightFormat;
use edge_runtime::telemetry::{Body, Encoding, Record, TrainingDone};
use edge_runtime::train::trainer::CHECKPOINT;

const DEVICE: &str = "train-dev";

/// Kills the training process if a check fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn records(messages: &[Message]) -> Vec<Record> {
    let topic = format!("thermo/{DEVICE}/telemetry");
    messages
        .iter()
        .filter(|(t, _, _)| *t == topic)
        .filter_map(|(_, p, _)| Record::decode(p, Encoding::Json).ok())
        .collect()
}

/// Training steps of the newest tick record.
fn steps_now(messages: &[Message]) -> Option<u64> {
    records(messages).iter().rev().find_map(|r| match &r.body {
        Body::Tick(t) => Some(t.steps_total),
        _ => None,
    })
}

fn training_record(messages: &[Message]) -> Option<TrainingDone> {
    records(messages).into_iter().find_map(|r| match r.body {
        Body::Training(t) => Some(t),
        _ => None,
    })
}

/// Publishes `name` and waits for its accepted reply.
fn command(broker: &Mosquitto, sub: &Subscriber, name: &str) -> Result<()> {
    let reply = format!("thermo/{DEVICE}/cmd/{name}/reply");
    publish_once(broker.port(), &format!("thermo/{DEVICE}/cmd/{name}"), b"{}")?;
    ensure!(
        sub.wait_for(Duration::from_secs(10), |m| m.iter().any(|(t, p, _)| *t
            == reply
            && String::from_utf8_lossy(p).contains("\"ok\":true"))),
        "no accepted {name} reply"
    );
    Ok(())
}

#[test]
fn a_training_run_reports_its_steps_obeys_pause_and_resume_and_sends_its_record() -> Result<()> {
    let broker = Mosquitto::start()?;
    let sub = Subscriber::start(broker.port(), "train-watcher", &["thermo/+/#"], false)?;
    let home = tempfile::tempdir()?;
    let data = home.path().join("manual.txt");
    let lines: Vec<String> = (0..24)
        .map(|i| format!("item {i} of the manual says: code {}", 1000 + i * 37))
        .collect();
    std::fs::write(&data, lines.join("\n"))?;
    let out = home.path().join("adapter");
    let child = Command::new(thermo()?)
        .args(["train", "--model"])
        .arg(tiny_model(WeightFormat::F32))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        // More steps than the test lets it take: SIGTERM ends the run.
        .args(["--steps", "1000000", "--seq-len", "96", "--rank", "4"])
        .args(["--eval-every", "0", "--checkpoint-every", "0"])
        .args(["--sim", "rpi4", "--sim-time-scale", "10"])
        .args(["--mqtt", &broker.url(), "--device-id", DEVICE])
        .args(["--telemetry-interval", "0.1"])
        .env("THERMO_HOME", home.path())
        .env("RAYON_NUM_THREADS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut run = Running(child);

    ensure!(
        sub.wait_for(Duration::from_secs(60), |m| steps_now(m)
            .is_some_and(|s| s >= 3)),
        "no tick record counting training steps"
    );

    // Paused: the step count stops (one step may be in flight when the command lands).
    command(&broker, &sub, "pause_training")?;
    std::thread::sleep(Duration::from_millis(400));
    let held = steps_now(&sub.messages()).context("no ticks")?;
    std::thread::sleep(Duration::from_millis(1200));
    let later = steps_now(&sub.messages()).context("no ticks")?;
    ensure!(
        later <= held + 1,
        "training went on while paused: {held} -> {later}"
    );
    ensure!(
        records(&sub.messages()).iter().rev().any(|r| matches!(
            &r.body,
            Body::Tick(t) if t.governor.training_paused
        )),
        "no tick shows training paused"
    );

    // Resumed: steps count up again.
    command(&broker, &sub, "resume_training")?;
    ensure!(
        sub.wait_for(Duration::from_secs(30), |m| steps_now(m)
            .is_some_and(|s| s >= later + 3)),
        "training did not resume after {later} steps"
    );

    // SIGTERM: a checkpoint, one training record, and a clean exit.
    let exit = terminate(&mut run.0, Duration::from_secs(30))?;
    let mut stderr = String::new();
    if let Some(mut e) = run.0.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr)?;
    }
    ensure!(exit.success(), "{exit}: {stderr}");
    ensure!(out.join(CHECKPOINT).is_file(), "no checkpoint: {stderr}");
    ensure!(
        sub.wait_for(Duration::from_secs(10), |m| training_record(m).is_some()),
        "no training record: {stderr}"
    );
    let rec = training_record(&sub.messages()).context("training record vanished")?;
    ensure!(rec.outcome == "stopped", "{rec:?}");
    // Stopped after its steps were saved: nothing of it is waste.
    ensure!(rec.wasted_j.is_none(), "{rec:?}");
    ensure!(
        rec.steps >= later + 3 && rec.steps_planned == 1_000_000,
        "{rec:?}"
    );
    ensure!(rec.tokens > 0 && rec.tokens_per_s > 0.0, "{rec:?}");
    ensure!(rec.loss.is_some_and(f32::is_finite), "{rec:?}");
    let eco = rec.eco.as_ref().context("no eco figures")?;
    ensure!(
        eco.joules > 0.0 && eco.g_co2e > 0.0 && rec.energy_j == Some(eco.joules),
        "{rec:?}"
    );
    let today = rec.today.as_ref().context("no day totals")?;
    ensure!(
        today.training_runs == 1 && today.training_steps == rec.steps,
        "{today:?}"
    );
    ensure!((today.eco.joules - eco.joules).abs() < 1e-6, "{today:?}");
    ensure!(stderr.contains("[today: "), "{stderr}");

    // The per-day ledger the run wrote, as `thermo eco today` shows it.
    let shown = Command::new(thermo()?)
        .args(["eco", "today", "--json"])
        .env("THERMO_HOME", home.path())
        .output()?;
    ensure!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    ensure!(v["training_runs"] == 1.0, "{v}");
    ensure!(
        v["training_steps"].as_f64() == Some(rec.steps as f64),
        "{v}"
    );
    ensure!(v["date"] == today.date.as_str(), "{v}");
    ensure!(v["wasted_j"] == 0.0, "{v}");

    // The adapter it saved has not been served yet: `thermo eco today` lists its cost.
    let shown = Command::new(thermo()?)
        .args(["eco", "today"])
        .env("THERMO_HOME", home.path())
        .output()?;
    let text = String::from_utf8_lossy(&shown.stdout);
    ensure!(
        text.contains("adapters trained and never served since: 1 "),
        "{text}"
    );
    Ok(())
}
