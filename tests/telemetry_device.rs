//! A simulated device for the telemetry tests: publishes tick records at a fixed rate
//! through the runtime's telemetry (MQTT sink, disk queue) and reports its progress on
//! stdout, one `progress sent=N queued=Q delivered=D connected=B` line per record.
//!
//! `telemetry-device --broker URL --device ID --queue DIR --hz F --count N [--drain-secs S]`:
//! sends N ticks at F per second, then waits up to S seconds (default 0) for the queue to
//! drain while connected, then stops.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edge_runtime::telemetry::{
    Body, BrokerConfig, SinkConfig, Telemetry, TelemetryOptions, Tick, fixtures,
};

fn tick(n: u64) -> Body {
    Body::Tick(Tick {
        governing_c: Some(50.0 + (n % 20) as f32 * 0.5),
        tokens_per_s: Some(10.0),
        energy_j: n as f64,
        ..fixtures::tick(n * 100, n)
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Result<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .with_context(|| format!("missing {name}"))
    };
    let broker: edge_runtime::telemetry::BrokerUrl = get("--broker")?.parse()?;
    let device = get("--device")?;
    let queue = PathBuf::from(get("--queue")?);
    let hz: f64 = get("--hz")?.parse()?;
    let count: u64 = get("--count")?.parse()?;
    let drain: f64 = get("--drain-secs").ok().map_or(Ok(0.0), |s| s.parse())?;
    if !hz.is_finite() || hz <= 0.0 {
        bail!("--hz must be positive");
    }
    let cfg = BrokerConfig::new(broker, format!("thermo-{device}"));
    let opts = TelemetryOptions::new(
        device.clone(),
        SinkConfig::Mqtt {
            broker: cfg,
            queue_dir: queue,
        },
    )
    .with_discovery(false)
    .with_linger(Duration::ZERO);
    let (t, driver) = Telemetry::new(opts, None)?;
    let th = std::thread::spawn(move || driver.run());
    let mut out = std::io::stdout();
    let period = Duration::from_secs_f64(1.0 / hz);
    let start = Instant::now();
    let report = |out: &mut std::io::Stdout, sent: u64| {
        let s = t.stats();
        let _ = writeln!(
            out,
            "progress sent={sent} queued={} delivered={} connected={}",
            s.queued, s.delivered, s.connected
        );
        let _ = out.flush();
    };
    for n in 0..count {
        let due = start + period.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if !t.send(tick(n)) {
            bail!("the hand-off channel was full");
        }
        // Report once the driver has the record on disk (queued) or delivered.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = t.stats();
            if s.queued + s.delivered > n || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        report(&mut out, n + 1);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(drain);
    while Instant::now() < deadline {
        let s = t.stats();
        if s.queued == 0 && s.connected {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report(&mut out, count);
    t.stop();
    th.join()
        .map_err(|_| anyhow::anyhow!("telemetry thread panicked"))??;
    Ok(())
}
