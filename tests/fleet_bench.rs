//! `thermo bench fleet` on a real Mosquitto on loopback: a small mixed fleet (a passive Pi 4
//! in a warm room, a passive Pi 5, an actively cooled Pi 5) on a short workload. Headroom pull
//! answers every request at more fleet tokens/s than round robin in the same run, never lets
//! a die go over its setpoint, and no answer reaches the front twice. Without Mosquitto the
//! command says so and fails.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use e2e_tests::mosquitto::Mosquitto;
use e2e_tests::thermo;
use serde_json::Value;

fn run_of<'a>(report: &'a Value, dispatcher: &str) -> Result<&'a Value> {
    report["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["dispatcher"] == dispatcher))
        .with_context(|| format!("no {dispatcher} run in {report}"))
}

fn num(v: &Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("no number {key} in {v}"))
}

#[test]
fn headroom_pull_outruns_round_robin_on_a_mixed_fleet_without_going_over_the_setpoint() -> Result<()>
{
    let broker = Mosquitto::start()?;
    let out = tempfile::tempdir()?;
    let status = Command::new(thermo()?)
        .args(["bench", "fleet", "--broker", &broker.url()])
        .args(["--boards", "rpi4@40,rpi5@30,rpi5-active@25"])
        .args(["--dispatchers", "round_robin,headroom_pull"])
        .args(["--minutes", "8", "--seed", "1"])
        .arg("--out")
        .arg(out.path())
        .status()
        .context("running thermo bench fleet")?;
    ensure!(status.success(), "thermo bench fleet failed: {status}");
    let report: Value = serde_json::from_slice(&std::fs::read(out.path().join("fleet.json"))?)?;
    let rr = run_of(&report, "round_robin")?;
    let pull = run_of(&report, "headroom_pull")?;
    let requests = num(&report, "requests")?;
    ensure!(requests >= 10.0, "only {requests} requests");
    for run in [rr, pull] {
        ensure!(num(run, "duplicates")? == 0.0, "duplicated answers: {run}");
    }
    ensure!(num(pull, "answered")? == requests, "unanswered: {pull}");
    ensure!(num(pull, "answers_over_setpoint")? == 0.0, "{pull}");
    let boards = pull["boards"].as_array().context("no boards")?;
    for b in boards {
        ensure!(
            num(b, "max_temp_c")? <= num(b, "setpoint_c")?,
            "over the setpoint: {b}"
        );
    }
    let (pull_tps, rr_tps) = (
        num(pull, "fleet_tokens_per_s")?,
        num(rr, "fleet_tokens_per_s")?,
    );
    ensure!(
        pull_tps > rr_tps,
        "headroom pull {pull_tps} tokens/s vs round robin {rr_tps}"
    );
    ensure!(out.path().join("fleet.md").exists() && out.path().join("fleet.svg").exists());
    Ok(())
}

#[test]
fn the_fleet_bench_says_so_when_mosquitto_is_missing() -> Result<()> {
    let out = tempfile::tempdir()?;
    let run = Command::new(thermo()?)
        .args(["bench", "fleet", "--mosquitto", "/nonexistent/mosquitto"])
        .arg("--out")
        .arg(out.path())
        .output()
        .context("running thermo bench fleet")?;
    ensure!(!run.status.success(), "succeeded without a broker");
    let err = String::from_utf8_lossy(&run.stderr);
    ensure!(err.contains("needs Mosquitto"), "stderr: {err}");
    Ok(())
}
