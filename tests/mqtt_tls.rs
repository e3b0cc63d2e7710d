//! TLS through rustls against a Mosquitto TLS listener that requires client certificates:
//! with the CA file and a client certificate the records arrive; without the certificate, or
//! trusting another CA, the device never connects and keeps its records queued.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e_tests::mosquitto::{Mosquitto, Subscriber, TestPki, dedup_seqs, free_port};
use edge_runtime::telemetry::{
    Body, BrokerConfig, Event, SinkConfig, Telemetry, TelemetryOptions, TelemetryStats,
};

fn run_device(cfg: BrokerConfig, device: &str, n: u64, wait: Duration) -> Result<TelemetryStats> {
    let queue = tempfile::tempdir()?;
    let opts = TelemetryOptions::new(
        device,
        SinkConfig::Mqtt {
            broker: cfg,
            queue_dir: queue.path().to_path_buf(),
        },
    )
    .with_linger(Duration::ZERO);
    let (t, d) = Telemetry::new(opts, None)?;
    let th = std::thread::spawn(move || d.run());
    for i in 0..n {
        t.send(Body::Event(Event {
            name: "tls".into(),
            detail: String::new(),
            count: Some(i),
        }));
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && t.stats().delivered < n {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = t.stats();
    t.stop();
    th.join()
        .map_err(|_| anyhow::anyhow!("driver panicked"))??;
    Ok(stats)
}

#[test]
fn records_cross_a_tls_listener_that_requires_client_certificates() -> Result<()> {
    let pki = TestPki::new()?;
    let tls_port = free_port()?;
    let broker = Mosquitto::start_with(&pki.listener(tls_port))?;
    let sub = Subscriber::start(broker.port(), "tls-watcher", &["thermo/+/event"], false)?;
    let url = format!("mqtts://127.0.0.1:{tls_port}").parse()?;

    let mut good = BrokerConfig::new(url, "tls-good");
    good.ca_file = Some(pki.path("ca.pem"));
    good.client_cert = Some(pki.path("client.pem"));
    good.client_key = Some(pki.path("client.key"));
    let s = run_device(good.clone(), "tls-good", 5, Duration::from_secs(10))?;
    ensure!(s.delivered == 5 && s.connects >= 1, "{s:?}");
    ensure!(
        sub.wait_for(Duration::from_secs(5), |m| dedup_seqs(m, "tls-good")
            == [0, 1, 2, 3, 4]),
        "records did not arrive"
    );

    let mut no_cert = good.clone();
    no_cert.client_id = "tls-nocert".into();
    no_cert.client_cert = None;
    no_cert.client_key = None;
    let s = run_device(no_cert, "tls-nocert", 3, Duration::from_secs(3))?;
    ensure!(
        s.connects == 0 && s.delivered == 0 && s.queued == 3,
        "{s:?}"
    );

    let other = TestPki::new()?;
    let mut wrong_ca = good;
    wrong_ca.client_id = "tls-wrongca".into();
    wrong_ca.ca_file = Some(other.path("ca.pem"));
    let s = run_device(wrong_ca, "tls-wrongca", 3, Duration::from_secs(3))?;
    ensure!(
        s.connects == 0 && s.delivered == 0 && s.queued == 3,
        "{s:?}"
    );
    Ok(())
}
