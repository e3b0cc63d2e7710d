//! `thermo run` and `thermo fleet` against a real broker: the main job on the tiny model and
//! the simulated Pi 4 publishes its birth message, Home Assistant discovery, a tick record
//! per telemetry interval with the governor's state, one record for the finished request,
//! and a clean `offline` at the end; `thermo fleet --for` prints the device's row.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e_tests::mosquitto::{Mosquitto, Subscriber};
use e2e_tests::{thermo, tiny_model};
use edge_runtime::engine::WeightFormat;
use edge_runtime::telemetry::{Body, Encoding, Record};

const DEVICE: &str = "run-dev";

#[test]
fn thermo_run_publishes_ticks_a_request_record_and_a_clean_offline() -> Result<()> {
    let broker = Mosquitto::start()?;
    let sub = Subscriber::start(
        broker.port(),
        "run-watcher",
        &["thermo/+/#", "homeassistant/#"],
        false,
    )?;
    let queue = tempfile::tempdir()?;
    let model = tiny_model(WeightFormat::F32);
    let out = Command::new(thermo()?)
        .arg("run")
        .arg("--model")
        .arg(model)
        .args(["--threads", "1", "--sim", "rpi4", "--sim-time-scale", "10"])
        .args(["--max-tokens", "48", "--raw"])
        .args(["--mqtt", &broker.url(), "--device-id", DEVICE])
        .args(["--telemetry-interval", "0.2", "--no-emissions-csv"])
        .arg("--telemetry-queue")
        .arg(queue.path())
        .arg("Hello there")
        .env("RUST_LOG", "warn")
        .output()?;
    ensure!(
        out.status.success(),
        "thermo run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status_topic = format!("thermo/{DEVICE}/status");
    ensure!(
        sub.wait_for(Duration::from_secs(10), |m| m
            .iter()
            .any(|(t, p, _)| *t == status_topic && p == b"offline")),
        "no clean offline"
    );
    let msgs = sub.messages();
    ensure!(
        msgs.iter()
            .any(|(t, p, _)| *t == status_topic && p == b"online")
    );
    ensure!(
        msgs.iter()
            .any(|(t, _, _)| t == &format!("homeassistant/sensor/{DEVICE}/temperature/config")),
        "no Home Assistant discovery"
    );
    let records: Vec<Record> = msgs
        .iter()
        .filter(|(t, _, _)| *t == format!("thermo/{DEVICE}/telemetry"))
        .filter_map(|(_, p, _)| Record::decode(p, Encoding::Json).ok())
        .collect();
    let ticks: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Tick(t) => Some(t),
            _ => None,
        })
        .collect();
    ensure!(!ticks.is_empty(), "no tick records");
    let last = ticks[ticks.len() - 1];
    ensure!(
        last.governing_c.is_some() && !last.temps.is_empty(),
        "{last:?}"
    );
    ensure!(last.governor.setpoint_c > 30.0, "{last:?}");
    ensure!(last.power.is_some() && last.energy_j >= 0.0, "{last:?}");
    let requests: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Request(q) => Some(q),
            _ => None,
        })
        .collect();
    ensure!(requests.len() == 1, "{} request records", requests.len());
    ensure!(requests[0].generated_tokens > 0, "{:?}", requests[0]);
    // The request record carries the answer's footprint from the eco accounting.
    let eco = requests[0]
        .eco
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no eco figures: {:?}", requests[0]))?;
    ensure!(
        eco.joules > 0.0 && eco.g_co2e > 0.0 && eco.ml_water > 0.0,
        "{eco:?}"
    );
    ensure!(
        requests[0].energy_j == Some(eco.joules),
        "{:?}",
        requests[0]
    );
    // Its hidden layers travel apart: the tiny model declares no training figures.
    let layers = requests[0]
        .layers
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no layers: {:?}", requests[0]))?;
    ensure!(
        !layers.upstream_declared && layers.upstream_model.is_some(),
        "{layers:?}"
    );
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The fleet view sees the device (retained status) and prints its row.
    let fleet = Command::new(thermo()?)
        .args(["fleet", "--broker", &broker.url(), "--for", "1.5"])
        .output()?;
    ensure!(
        fleet.status.success(),
        "{}",
        String::from_utf8_lossy(&fleet.stderr)
    );
    let table = String::from_utf8_lossy(&fleet.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(DEVICE))
        .with_context(|| format!("no row for {DEVICE}: {table}"))?;
    ensure!(row.split_whitespace().nth(1) == Some("no"), "{row}");
    Ok(())
}

#[test]
fn the_broker_password_never_appears_in_logs_or_telemetry() -> Result<()> {
    const PASSWORD: &str = "pw-4f9c1e-never-print";
    let broker = Mosquitto::start()?;
    let sub = Subscriber::start(broker.port(), "pw-watcher", &["#"], false)?;
    let queue = tempfile::tempdir()?;
    let out = Command::new(thermo()?)
        .arg("run")
        .arg("--model")
        .arg(tiny_model(WeightFormat::F32))
        .args([
            "--threads",
            "1",
            "--sim",
            "rpi4",
            "--max-tokens",
            "8",
            "--raw",
        ])
        .args(["--mqtt", &broker.url(), "--device-id", "pw-dev"])
        .args(["--mqtt-username", "alice", "--telemetry-interval", "0.2"])
        .arg("--telemetry-queue")
        .arg(queue.path())
        .arg("Hi")
        .env("THERMO_MQTT_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "thermo run failed: {stderr}");
    ensure!(
        sub.wait_for(Duration::from_secs(10), |m| m
            .iter()
            .any(|(t, p, _)| t == "thermo/pw-dev/status" && p == b"offline")),
        "the device never finished cleanly"
    );
    ensure!(!stderr.contains(PASSWORD), "the password is in the log");
    ensure!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
    let leaked = sub
        .messages()
        .iter()
        .any(|(_, p, _)| String::from_utf8_lossy(p).contains(PASSWORD));
    ensure!(!leaked, "the password was published");
    ensure!(sub.messages().len() > 3, "too little traffic to judge");
    Ok(())
}
