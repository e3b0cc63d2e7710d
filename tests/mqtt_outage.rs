//! Outage: the broker stops for 30 s in the middle of a run and starts again on the same
//! port. Every sequence number published arrives exactly once, in order, at a subscriber
//! that deduplicates by (device, seq); the device subscribes to its commands again after
//! the reconnect and answers one.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e_tests::mosquitto::{Mosquitto, Subscriber, dedup_seqs, publish_once};
use edge_runtime::telemetry::{Body, BrokerConfig, Event, SinkConfig, Telemetry, TelemetryOptions};

const DEVICE: &str = "outage-dev";
const RATE_HZ: f64 = 10.0;
const BEFORE: Duration = Duration::from_secs(5);
const OUTAGE: Duration = Duration::from_secs(30);
const AFTER: Duration = Duration::from_secs(5);

fn record(n: u64) -> Body {
    Body::Event(Event {
        name: "outage_test".into(),
        detail: String::new(),
        count: Some(n),
    })
}

#[test]
fn every_record_arrives_once_in_order_across_a_30_s_broker_outage() -> Result<()> {
    let mut broker = Mosquitto::start()?;
    let sub = Subscriber::start(
        broker.port(),
        "outage-watcher",
        &[
            "thermo/+/telemetry",
            "thermo/+/event",
            "thermo/+/status",
            "thermo/+/cmd/+/reply",
        ],
        true,
    )?;
    let queue = tempfile::tempdir()?;
    let cfg = BrokerConfig::new(broker.url().parse()?, "outage-device");
    let opts = TelemetryOptions::new(
        DEVICE,
        SinkConfig::Mqtt {
            broker: cfg,
            queue_dir: queue.path().to_path_buf(),
        },
    );
    let (t, driver) = Telemetry::new(opts, None)?;
    let th = std::thread::spawn(move || driver.run());
    let period = Duration::from_secs_f64(1.0 / RATE_HZ);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut send_until = |t: &Telemetry, until: Duration| {
        while start.elapsed() < until {
            assert!(t.send(record(sent)), "send refused");
            sent += 1;
            std::thread::sleep(period);
        }
    };
    send_until(&t, BEFORE);
    broker.stop()?;
    let worst_send = Instant::now();
    send_until(&t, BEFORE + OUTAGE);
    ensure!(
        worst_send.elapsed() < OUTAGE + Duration::from_secs(2),
        "sending stalled during the outage"
    );
    let queued_in_outage = t.stats().queued;
    ensure!(
        queued_in_outage >= (RATE_HZ * 25.0) as u64,
        "only {queued_in_outage} queued during the outage"
    );
    broker.restart()?;
    send_until(&t, BEFORE + OUTAGE + AFTER);
    let delivered = sub.wait_for(Duration::from_secs(30), |m| {
        dedup_seqs(m, DEVICE).len() as u64 >= sent
    });
    let seqs = dedup_seqs(&sub.messages(), DEVICE);
    ensure!(delivered, "{} of {sent} records arrived", seqs.len());
    let expected: Vec<u64> = (0..sent).collect();
    ensure!(seqs == expected, "missing or out of order: {seqs:?}");
    // The device resubscribed to its commands after the reconnect.
    publish_once(
        broker.port(),
        &format!("thermo/{DEVICE}/cmd/status"),
        b"{\"id\":\"after\"}",
    )?;
    let replied = sub.wait_for(Duration::from_secs(10), |m| {
        m.iter().any(|(topic, p, _)| {
            topic == &format!("thermo/{DEVICE}/cmd/status/reply")
                && String::from_utf8_lossy(p).contains("\"after\"")
        })
    });
    ensure!(replied, "no reply to a command after the reconnect");
    ensure!(t.stats().connects >= 2, "{:?}", t.stats());
    t.stop();
    th.join()
        .map_err(|_| anyhow::anyhow!("driver panicked"))??;
    Ok(())
}
