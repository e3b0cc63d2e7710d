//! `thermo serve` against a real broker: the service on the tiny model and the simulated Pi 5
//! publishes tick records, a record per answered request carrying the answer's eco figures,
//! obeys a setpoint command like `run` and `chat` do, and on SIGTERM flushes its telemetry
//! (a clean `offline`) before it exits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::mosquitto::{Mosquitto, Subscriber, publish_once};
use e2e_tests::{terminate, thermo, tiny_model};
use edge_runtime::engine::WeightFormat;
use edge_runtime::telemetry::{Body, Encoding, Record};

const DEVICE: &str = "serve-dev";

/// Sends a raw HTTP/1.1 request with `Connection: close`; the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, rest) = answer.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, rest.to_string()))
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn a_served_request_is_published_with_its_footprint_and_sigterm_flushes_telemetry() -> Result<()> {
    let broker = Mosquitto::start()?;
    let sub = Subscriber::start(broker.port(), "serve-watcher", &["thermo/+/#"], false)?;
    let home = tempfile::tempdir()?;
    let config = home.path().join("thermo.toml");
    std::fs::write(&config, "[telemetry]\ninterval_s = 0.2\n")?;
    let port = free_port()?;
    let mut service = Service(
        Command::new(thermo()?)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--model")
            .arg(tiny_model(WeightFormat::F32))
            .args(["--threads", "1", "--sim", "rpi5"])
            .args(["--mqtt", &broker.url(), "--device-id", DEVICE])
            .env("THERMO_HOME", home.path())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.path().join("stderr.log"))?)
            .spawn()?,
    );
    let log = || std::fs::read_to_string(home.path().join("stderr.log")).unwrap_or_default();
    let t = Instant::now();
    while http(port, "GET", "/healthz", "").is_err() {
        if let Some(status) = service.0.try_wait()? {
            bail!("thermo serve exited with {status}: {}", log());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "no service: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let body = r#"{"model": "tiny", "prompt": "Hello there", "max_tokens": 12, "temperature": 0}"#;
    let (status, answer) = http(port, "POST", "/v1/completions", body)?;
    ensure!(status == 200, "{status}: {answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    let joules = answer["footprint"]["energy_j"]
        .as_f64()
        .context("no energy in the response")?;
    // The hidden layers ride apart from the measured figures: the tiny model's card publishes
    // nothing (not declared, not zero) and the request used no retrieval.
    let upstream = &answer["footprint"]["upstream"];
    ensure!(
        upstream["declared"] == false && upstream["training_j"].is_null(),
        "{answer}"
    );
    ensure!(answer["footprint"]["memory"].is_null(), "{answer}");

    let topic = format!("thermo/{DEVICE}/telemetry");
    let decoded = |m: &[(String, Vec<u8>, bool)]| -> Vec<Record> {
        m.iter()
            .filter(|(t, _, _)| *t == topic)
            .filter_map(|(_, p, _)| Record::decode(p, Encoding::Json).ok())
            .collect()
    };
    let has_request = |m: &[(String, Vec<u8>, bool)]| {
        decoded(m)
            .iter()
            .any(|r| matches!(r.body, Body::Request(_)))
    };
    ensure!(
        sub.wait_for(Duration::from_secs(10), has_request),
        "no request record on {topic}: {}",
        log()
    );
    let records = decoded(&sub.messages());
    let request = records
        .iter()
        .find_map(|r| match &r.body {
            Body::Request(q) => Some(q.clone()),
            _ => None,
        })
        .context("request record vanished")?;
    ensure!(request.generated_tokens > 0, "{request:?}");
    let layers = request
        .layers
        .as_ref()
        .context("no layers in the request record")?;
    ensure!(
        !layers.upstream_declared && layers.upstream_j.is_none() && layers.memory_j.is_none(),
        "{layers:?}"
    );
    let eco = request.eco.as_ref().context("no eco figures")?;
    ensure!(
        (eco.joules - joules).abs() < 1e-9 && eco.g_co2e > 0.0 && eco.ml_water > 0.0,
        "{eco:?} vs {joules} J in the response"
    );
    ensure!(
        records.iter().any(|r| matches!(r.body, Body::Tick(_))),
        "no tick records"
    );

    // A setpoint command reaches the service's governor.
    let reply_topic = format!("thermo/{DEVICE}/cmd/setpoint/reply");
    publish_once(
        broker.port(),
        &format!("thermo/{DEVICE}/cmd/setpoint"),
        br#"{"celsius": 61.5}"#,
    )?;
    ensure!(
        sub.wait_for(Duration::from_secs(10), |m| m.iter().any(|(t, p, _)| *t
            == reply_topic
            && String::from_utf8_lossy(p).contains("\"ok\":true"))),
        "no accepted setpoint reply"
    );
    let t = Instant::now();
    loop {
        let (_, health) = http(port, "GET", "/healthz", "")?;
        let v: serde_json::Value = serde_json::from_str(&health)?;
        if v["governor"]["setpoint_c"].as_f64() == Some(61.5) {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "setpoint not applied: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGTERM: the telemetry is flushed (a clean offline) and the service exits cleanly.
    let status_topic = format!("thermo/{DEVICE}/status");
    let exit = terminate(&mut service.0, Duration::from_secs(30))?;
    ensure!(exit.success(), "{exit}: {}", log());
    ensure!(
        sub.wait_for(Duration::from_secs(5), |m| m
            .iter()
            .any(|(t, p, _)| *t == status_topic && p == b"offline")),
        "no clean offline after SIGTERM"
    );
    let log = log();
    let flushed = log.find("telemetry flushed");
    let stopped = log.find("governor stopped");
    ensure!(
        matches!((flushed, stopped), (Some(f), Some(s)) if f < s),
        "telemetry must be flushed before the governor stops: {log}"
    );
    Ok(())
}
