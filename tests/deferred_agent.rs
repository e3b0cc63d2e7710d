//! Deferred work end to end on the real default model: `thermo train --when auto` queues a
//! short run and prints its plan against running now, on a grid forecast whose next two hours
//! are the cleanest. `thermo agent` leaves it queued in the current hour; an agent whose
//! clock is an hour ahead starts it; that agent is killed with SIGKILL part way, and a new
//! one stops the training process the first one left behind (it checkpoints), resumes the job
//! from its checkpoint, and finishes it. The day ledger counts every step once and the job
//! once with its saving, and the output folder holds the job's record.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e_tests::{real_model_dir, thermo};
use edge_runtime::deferred::queue::{DEFERRED_RECORD, QUEUE_FILE};
use edge_runtime::deferred::{JobState, Queue};
use edge_runtime::engine::WeightFormat;
use edge_runtime::train::trainer::{CHECKPOINT, checkpoint_progress};

/// Optimizer steps of the queued run.
const STEPS: usize = 10;

/// Kills a process left running when a check fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A forecast from two hours ago to two days ahead: the next two hours at 10 g CO2e/kWh,
/// every other hour (the current one too) at 900.
fn grid_forecast(path: &Path, now: i64) -> Result<()> {
    let hour = now.div_euclid(3600) * 3600;
    let mut text = String::from("time,carbon_intensity\n");
    for h in -2..48 {
        let t = hour + h * 3600;
        let g = if h == 1 || h == 2 { 10 } else { 900 };
        text.push_str(&format!("{t},{g}\n"));
    }
    Ok(std::fs::write(path, text)?)
}

/// `thermo agent` on `grid`, its clock `ahead_s` seconds ahead, logging to `log`.
fn agent(home: &Path, grid: &Path, log: &Path, ahead_s: i64) -> Result<Running> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Running(
        Command::new(thermo()?)
            .args([
                "agent",
                "--interval",
                "0.2",
                "--stop-timeout",
                "60",
                "--grid",
            ])
            .arg(grid)
            .arg(format!("--clock-offset-s={ahead_s}"))
            .env("THERMO_HOME", home)
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    ))
}

fn the_job(home: &Path) -> Result<edge_runtime::deferred::Job> {
    Queue::load(&home.join(QUEUE_FILE))?
        .jobs
        .into_iter()
        .next()
        .context("no job in the queue")
}

fn wait_for(what: &str, timeout: Duration, log: &Path, mut ok: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > timeout {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("{what}: not within {timeout:?}; the agents said:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn ledger_figure(home: &Path, name: &str) -> Result<f64> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("eco-ledger.json"))?)?;
    Ok(v["days"]
        .as_object()
        .context("no days in the ledger")?
        .values()
        .map(|d| d[name].as_f64().unwrap_or(0.0))
        .sum())
}

#[test]
fn a_deferred_run_survives_a_killed_agent_and_counts_its_steps_once() -> Result<()> {
    let started = Instant::now();
    let home = tempfile::tempdir()?;
    let home = home.path();
    let model: PathBuf = real_model_dir(WeightFormat::Ggml);
    let data = home.join("manual.txt");
    let lines: Vec<String> = (0..24)
        .map(|i| format!("item {i} of the manual says: code {}", 1000 + i * 37))
        .collect();
    std::fs::write(&data, lines.join("\n"))?;
    let grid = home.join("grid.csv");
    let now = now_s();
    grid_forecast(&grid, now)?;
    let out = home.join("adapter");
    let log = home.join("agent.log");

    let submitted = Command::new(thermo()?)
        .args(["train", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args([
            "--steps",
            &STEPS.to_string(),
            "--seq-len",
            "64",
            "--rank",
            "4",
        ])
        .args([
            "--eval-every",
            "0",
            "--checkpoint-every",
            "2",
            "--no-governor",
        ])
        .args([
            "--when",
            "auto",
            "--deadline",
            &(now + 6 * 3600).to_string(),
        ])
        .arg("--grid")
        .arg(&grid)
        .env("THERMO_HOME", home)
        .env("RAYON_NUM_THREADS", "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&submitted.stdout);
    ensure!(
        submitted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    for needle in ["queued train-", "plan: ", "run now: ", "saving: "] {
        ensure!(stdout.contains(needle), "{needle:?} not in {stdout}");
    }
    ensure!(!out.exists(), "--when auto trained at once");
    let job = the_job(home)?;
    ensure!(job.state == JobState::Queued, "{job:?}");
    ensure!(!job.argv.iter().any(|a| a == "--when"), "{:?}", job.argv);
    let d = job.decision.context("no decision")?;
    let next_hour = now.div_euclid(3600) * 3600 + 3600;
    ensure!(
        !d.misses_deadline && d.first_start_s == Some(next_hour),
        "{d:?}"
    );
    ensure!(
        d.saved_g_co2e > 0.0 && d.now_g_co2e > 10.0 * d.g_co2e,
        "{d:?}"
    );

    // In the current hour the agent leaves the job waiting.
    let mut idle = agent(home, &grid, &log, 0)?;
    std::thread::sleep(Duration::from_millis(1500));
    idle.0.kill()?;
    idle.0.wait()?;
    ensure!(the_job(home)?.state == JobState::Queued);
    ensure!(!out.exists(), "the agent trained outside the planned hours");

    // An hour later it starts the job; it is killed with SIGKILL once the run has
    // checkpointed a step.
    let mut first = agent(home, &grid, &log, 3600)?;
    let ckpt = out.join(CHECKPOINT);
    wait_for("a first checkpoint", Duration::from_secs(40), &log, || {
        checkpoint_progress(&ckpt).is_ok_and(|p| p.step >= 2)
    })?;
    first.0.kill()?;
    first.0.wait()?;
    let left = the_job(home)?;
    ensure!(left.state == JobState::Running, "{left:?}");
    let orphan = left.pid.context("no process recorded")?;

    // A new agent stops the orphan, resumes the job from its checkpoint and finishes it.
    let _second = agent(home, &grid, &log, 3600)?;
    wait_for("the job done", Duration::from_secs(60), &log, || {
        the_job(home).is_ok_and(|j| j.state.is_final())
    })?;
    let job = the_job(home)?;
    let said = std::fs::read_to_string(&log)?;
    ensure!(job.state == JobState::Done, "{job:?}\n{said}");
    ensure!(job.starts == 2, "{} starts\n{said}", job.starts);
    ensure!(
        said.contains(&format!("process {orphan} of a previous agent still runs")),
        "{said}"
    );
    ensure!(said.contains("resumes from its checkpoint"), "{said}");
    // Each run of the job prints the plan it belongs to.
    ensure!(said.contains("[deferred train-"), "{said}");
    ensure!(checkpoint_progress(&ckpt)?.step == STEPS);

    // Every step once in the ledger, over the two runs; the job once, with its saving.
    ensure!(ledger_figure(home, "training_steps")? == STEPS as f64);
    ensure!(ledger_figure(home, "training_runs")? == 2.0);
    ensure!(ledger_figure(home, "deferred_jobs")? == 1.0);
    ensure!(ledger_figure(home, "deferred_late_jobs")? == 0.0);
    let saved = ledger_figure(home, "deferred_saved_g_co2e")?;
    ensure!((saved - d.saved_g_co2e).abs() < 1e-9, "{saved} vs {d:?}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(DEFERRED_RECORD))?)?;
    ensure!(
        record["state"] == "done" && record["starts"] == 2,
        "{record}"
    );
    ensure!(
        record["decision"]["saved_g_co2e"].as_f64() > Some(0.0),
        "{record}"
    );
    eprintln!(
        "deferred run end to end in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
