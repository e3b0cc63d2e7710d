//! `thermo agent --mqtt` against a real broker, on the tiny model: a training job queued with
//! `--when auto` (planned on the region's constant factor, so at once) waits while the
//! retained `thermo/grid/world` forecast makes a later hour cleaner, starts when a new
//! forecast makes the current hour the cleanest, and is paused when the agent gets SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::mosquitto::Mosquitto;
use e2e_tests::{terminate, thermo, tiny_model};
use edge_runtime::deferred::queue::QUEUE_FILE;
use edge_runtime::deferred::{JobState, Queue};
use edge_runtime::engine::WeightFormat;

/// Kills a process left running when a check fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Publishes one retained QoS 1 message and waits for the broker's PUBACK.
fn publish_retained(port: u16, topic: &str, payload: &[u8]) -> Result<()> {
    use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
    let mut o = MqttOptions::new(format!("grid-{}", std::process::id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 10);
    client.publish(topic, QoS::AtLeastOnce, true, payload.to_vec())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(200))
        {
            let _ = client.disconnect();
            return Ok(());
        }
    }
    bail!("no PUBACK for {topic}")
}

/// An hourly forecast from an hour ago to a day ahead: `clean` hours from now at 10
/// g CO2e/kWh, the others at 900.
fn forecast(now: i64, clean: &[i64]) -> Vec<u8> {
    let hour = now.div_euclid(3600) * 3600;
    let hours: Vec<String> = (-1..24)
        .map(|h| {
            let g = if clean.contains(&h) { 10 } else { 900 };
            format!(r#"{{"time": {}, "g_co2e_per_kwh": {g}}}"#, hour + h * 3600)
        })
        .collect();
    format!(r#"{{"hours": [{}]}}"#, hours.join(",")).into_bytes()
}

fn state(home: &Path) -> Result<JobState> {
    Queue::load(&home.join(QUEUE_FILE))?
        .jobs
        .first()
        .map(|j| j.state)
        .context("no job")
}

#[test]
fn the_agent_follows_the_grid_forecast_its_broker_retains() -> Result<()> {
    let broker = Mosquitto::start()?;
    let home = tempfile::tempdir()?;
    let home = home.path();
    let data = home.join("manual.txt");
    let lines: Vec<String> = (0..24)
        .map(|i| format!("item {i} of the manual says: code {}", 1000 + i * 37))
        .collect();
    std::fs::write(&data, lines.join("\n"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let submitted = Command::new(thermo()?)
        .args(["train", "--model"])
        .arg(tiny_model(WeightFormat::F32))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(home.join("adapter"))
        .args(["--steps", "1000000", "--seq-len", "96", "--rank", "4"])
        .args([
            "--eval-every",
            "0",
            "--checkpoint-every",
            "0",
            "--no-governor",
        ])
        .args(["--plan-step-s", "0.001", "--region", "world"])
        .args([
            "--when",
            "auto",
            "--deadline",
            &(now + 6 * 3600).to_string(),
        ])
        .env("THERMO_HOME", home)
        .output()?;
    ensure!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    // The next two hours are the cleanest.
    publish_retained(broker.port(), "thermo/grid/world", &forecast(now, &[1, 2]))?;

    let log = home.join("agent.log");
    let mut agent = Running(
        Command::new(thermo()?)
            .args(["agent", "--interval", "0.2", "--region", "world", "--mqtt"])
            .arg(broker.url())
            .env("THERMO_HOME", home)
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let t = Instant::now();
    while !said().contains("grid intensity from thermo/grid/world: 25 hour(s)") {
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "no grid message: {}",
            said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(state(home)? == JobState::Queued, "{}", said());

    // Now the current hour is the cleanest: the job starts.
    publish_retained(broker.port(), "thermo/grid/world", &forecast(now, &[0]))?;
    let t = Instant::now();
    while state(home)? != JobState::Running {
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "not started: {}",
            said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));

    // SIGTERM: the agent pauses the job and exits cleanly.
    let exit = terminate(&mut agent.0, Duration::from_secs(60))?;
    ensure!(exit.success(), "{exit}: {}", said());
    ensure!(state(home)? == JobState::Paused, "{}", said());
    ensure!(said().contains("paused"), "{}", said());
    Ok(())
}
