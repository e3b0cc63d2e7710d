//! `thermo agent --mqtt` against a real broker, on the tiny model: a training job queued with
//! `--when auto` (planned on the region's constant factor, so at once) waits while the
//! retained `thermo/grid/world` forecast makes a later hour cleaner, starts when a new
//! forecast makes the current hour the cleanest, and is paused when the agent gets SIGTERM.
//! With a forecast on the device's own `thermo/<device>/cmd/grid` too, the device's wins:
//! the job waits for the hours the device's forecast makes cleanest, whatever the region's
//! says, and an invalid device message does not undo that.

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

/// Queues a long training job on the tiny model with `--when auto` and a deadline six hours
/// on, in the thermo home `home`; returns the time it was queued, Unix seconds.
fn queue_training_job(home: &Path) -> Result<i64> {
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
    Ok(now)
}

/// A broker and a thermo home with a training job queued (see [`queue_training_job`]).
fn broker_and_job() -> Result<(Mosquitto, tempfile::TempDir, i64)> {
    let broker = Mosquitto::start()?;
    let home = tempfile::tempdir()?;
    let now = queue_training_job(home.path())?;
    Ok((broker, home, now))
}

/// Starts `thermo agent` for the region `world` on the broker at `url` with `extra` flags,
/// logging into `log`.
fn start_agent(home: &Path, url: &str, extra: &[&str], log: &Path) -> Result<Running> {
    Ok(Running(
        Command::new(thermo()?)
            .args(["agent", "--interval", "0.2", "--region", "world", "--mqtt"])
            .arg(url)
            .args(extra)
            .env("THERMO_HOME", home)
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?,
    ))
}

/// Waits up to 15 s until `log` holds every one of `lines`.
fn wait_for_log(log: &Path, lines: &[&str]) -> Result<()> {
    let said = || std::fs::read_to_string(log).unwrap_or_default();
    let t = Instant::now();
    while !lines.iter().all(|l| said().contains(l)) {
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "no {lines:?} in the log: {}",
            said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits up to 15 s until the job is running.
fn wait_running(home: &Path, log: &Path) -> Result<()> {
    let t = Instant::now();
    while state(home)? != JobState::Running {
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "not started: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Checks that the job is still queued 1.5 s on.
fn stays_queued(home: &Path, log: &Path) -> Result<()> {
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(
        state(home)? == JobState::Queued,
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Ok(())
}

/// Stops the agent with SIGTERM and checks that it exits cleanly with the job paused.
fn stop_agent(mut agent: Running, home: &Path, log: &Path) -> Result<()> {
    let said = || std::fs::read_to_string(log).unwrap_or_default();
    let exit = terminate(&mut agent.0, Duration::from_secs(60))?;
    ensure!(exit.success(), "{exit}: {}", said());
    ensure!(state(home)? == JobState::Paused, "{}", said());
    ensure!(said().contains("paused"), "{}", said());
    Ok(())
}

#[test]
fn the_agent_follows_the_grid_forecast_its_broker_retains() -> Result<()> {
    let (broker, home, now) = broker_and_job()?;
    let home = home.path();
    // The next two hours are the cleanest.
    publish_retained(broker.port(), "thermo/grid/world", &forecast(now, &[1, 2]))?;

    let log = home.join("agent.log");
    let agent = start_agent(home, &broker.url(), &[], &log)?;
    wait_for_log(&log, &["grid intensity from thermo/grid/world: 25 hour(s)"])?;
    stays_queued(home, &log)?;

    // Now the current hour is the cleanest: the job starts.
    publish_retained(broker.port(), "thermo/grid/world", &forecast(now, &[0]))?;
    wait_running(home, &log)?;
    std::thread::sleep(Duration::from_millis(1500));

    // SIGTERM: the agent pauses the job and exits cleanly.
    stop_agent(agent, home, &log)
}

#[test]
fn the_device_grid_topic_wins_over_the_region_topic() -> Result<()> {
    let (broker, home, now) = broker_and_job()?;
    let home = home.path();
    let device_topic = "thermo/board-7/cmd/grid";
    // The region says now is the cleanest hour; the device's own forecast says the next two.
    publish_retained(broker.port(), "thermo/grid/world", &forecast(now, &[0]))?;
    publish_retained(broker.port(), device_topic, &forecast(now, &[1, 2]))?;

    let log = home.join("agent.log");
    let agent = start_agent(home, &broker.url(), &["--device-id", "board-7"], &log)?;
    wait_for_log(
        &log,
        &[
            "grid intensity from thermo/board-7/cmd/grid: 25 hour(s)",
            "grid intensity from thermo/grid/world: 25 hour(s)",
        ],
    )?;
    stays_queued(home, &log)?;

    // An invalid device message is refused; the device's good forecast still holds, and so
    // does a newer region message.
    publish_retained(broker.port(), device_topic, br#"{"g_co2e_per_kwh": -1}"#)?;
    publish_retained(broker.port(), "thermo/grid/world", &forecast(now, &[0]))?;
    wait_for_log(
        &log,
        &[
            "thermo/board-7/cmd/grid refused",
            "the device's own still holds",
        ],
    )?;
    stays_queued(home, &log)?;

    // The device's forecast now makes the current hour the cleanest: the job starts.
    publish_retained(broker.port(), device_topic, &forecast(now, &[0]))?;
    wait_running(home, &log)?;
    stop_agent(agent, home, &log)
}
