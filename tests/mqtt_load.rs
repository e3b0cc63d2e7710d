//! Load: one broker, 200 simulated devices publishing a tick at 4 Hz each for 60 s from
//! this process (each device a full telemetry stack: disk queue, driver, MQTT client), and
//! the fleet view (the library behind `thermo fleet`) subscribed to all of them. Nothing is
//! lost (every device's sequence numbers arrive without a gap) and the view has every record
//! within a few seconds of the last publish. Prints the figures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e_tests::mosquitto::Mosquitto;
use edge_runtime::telemetry::fleet::{FleetView, watch};
use edge_runtime::telemetry::{
    Body, BrokerConfig, Encoding, SinkConfig, Telemetry, TelemetryOptions, Tick, fixtures,
};

const DEVICES: usize = 200;
const RATE_HZ: u64 = 4;
const RUN: Duration = Duration::from_secs(60);
/// Longest the view may lag behind the last publish.
const CATCH_UP: Duration = Duration::from_secs(15);

fn tick(n: u64) -> Body {
    let mut tick = Tick {
        governing_c: Some(55.0),
        freq_khz: Some(1_500_000),
        tokens_per_s: Some(12.0),
        energy_j: n as f64 * 1.5,
        ..fixtures::tick(n * 250, n * 3)
    };
    tick.governor.reason = "holding".into();
    Body::Tick(tick)
}

#[test]
fn two_hundred_devices_at_4_hz_for_60_s_lose_nothing_and_the_fleet_view_keeps_up() -> Result<()> {
    let broker = Mosquitto::start()?;
    let url = broker.url();
    let progress = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let view_thread = {
        let cfg = BrokerConfig::new(url.parse()?, "load-fleet");
        let progress = progress.clone();
        std::thread::spawn(move || -> Result<FleetView> {
            let mut view = FleetView::new(Encoding::Json);
            let target = (DEVICES as u64) * RATE_HZ * RUN.as_secs();
            watch(
                &cfg,
                None,
                &mut view,
                Some(RUN + CATCH_UP + Duration::from_secs(30)),
                Duration::from_millis(100),
                |v| {
                    let gaps: u64 = v.rows().map(|r| r.gaps).sum();
                    let dups: u64 = v.rows().map(|r| r.duplicates).sum();
                    if let Ok(mut p) = progress.lock() {
                        *p = (v.total_records(), gaps, dups);
                    }
                    v.total_records() < target
                },
            )?;
            Ok(view)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let queues = tempfile::tempdir()?;
    let mut handles = Vec::new();
    let mut drivers = Vec::new();
    for i in 0..DEVICES {
        let dev = format!("load-{i:03}");
        let opts = TelemetryOptions::new(
            dev.clone(),
            SinkConfig::Mqtt {
                broker: BrokerConfig::new(url.parse()?, format!("thermo-{dev}")),
                queue_dir: queues.path().join(&dev),
            },
        )
        .with_discovery(false);
        let (t, d) = Telemetry::new(opts, None)?;
        handles.push(t);
        drivers.push(std::thread::spawn(move || d.run()));
    }
    // All devices connected before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while handles.iter().any(|t| !t.stats().connected) {
        ensure!(Instant::now() < deadline, "not every device connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let period = Duration::from_millis(1000 / RATE_HZ);
    let rounds = RATE_HZ * RUN.as_secs();
    let mut max_queued = 0u64;
    for n in 0..rounds {
        let due = start + period * u32::try_from(n)?;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        for t in &handles {
            ensure!(t.send(tick(n)), "a hand-off channel was full");
        }
        if n % RATE_HZ == 0 {
            max_queued = max_queued.max(handles.iter().map(|t| t.stats().queued).sum());
        }
    }
    let sent_at = Instant::now();
    let publish_secs = start.elapsed().as_secs_f64();
    let view = view_thread
        .join()
        .map_err(|_| anyhow::anyhow!("fleet view panicked"))??;
    let lag = sent_at.elapsed();
    let total = view.total_records();
    let expected = DEVICES as u64 * rounds;
    let gaps: u64 = view.rows().map(|r| r.gaps).sum();
    let dups: u64 = view.rows().map(|r| r.duplicates).sum();
    let delivered: u64 = handles.iter().map(|t| t.stats().delivered).sum();
    eprintln!(
        "load: {DEVICES} devices x {RATE_HZ} Hz x {}s: sent {expected} in {publish_secs:.1} s \
         ({:.0} rec/s), acked {delivered}, view {total} distinct ({dups} duplicates, {gaps} gaps), \
         view complete {:.2} s after the last publish, most queued at once {max_queued}",
        RUN.as_secs(),
        expected as f64 / publish_secs,
        lag.as_secs_f64()
    );
    ensure!(gaps == 0, "{gaps} records lost");
    ensure!(total == expected, "view has {total} of {expected}");
    ensure!(lag <= CATCH_UP, "the view lagged {lag:?}");
    ensure!(view.rows().count() == DEVICES);
    ensure!(view.rows().all(|r| r.last_seq == Some(rounds - 1)));
    for t in &handles {
        t.stop();
    }
    for d in drivers {
        d.join().map_err(|_| anyhow::anyhow!("driver panicked"))??;
    }
    Ok(())
}

#[test]
fn watchers_in_one_shared_subscription_group_split_the_fleet_between_them() -> Result<()> {
    const N: u64 = 200;
    let broker = Mosquitto::start()?;
    let url = broker.url();
    let watcher = |id: &str| -> Result<std::thread::JoinHandle<Result<FleetView>>> {
        let cfg = BrokerConfig::new(url.parse()?, id);
        Ok(std::thread::spawn(move || -> Result<FleetView> {
            let mut view = FleetView::new(Encoding::Json);
            watch(
                &cfg,
                Some("g1"),
                &mut view,
                Some(Duration::from_secs(12)),
                Duration::from_millis(100),
                |_| true,
            )?;
            Ok(view)
        }))
    };
    let (a, b) = (watcher("share-a")?, watcher("share-b")?);
    std::thread::sleep(Duration::from_secs(2));
    let queue = tempfile::tempdir()?;
    let opts = TelemetryOptions::new(
        "share-dev",
        SinkConfig::Mqtt {
            broker: BrokerConfig::new(url.parse()?, "share-device"),
            queue_dir: queue.path().to_path_buf(),
        },
    )
    .with_discovery(false);
    let (t, d) = Telemetry::new(opts, None)?;
    let th = std::thread::spawn(move || d.run());
    for n in 0..N {
        t.send(tick(n));
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.stats().delivered < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    t.stop();
    th.join()
        .map_err(|_| anyhow::anyhow!("driver panicked"))??;
    let va = a
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    let vb = b
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    let (ra, rb) = (va.total_records(), vb.total_records());
    eprintln!("shared subscription: watcher a {ra} records, watcher b {rb}");
    ensure!(ra + rb == N, "{ra} + {rb} != {N}");
    ensure!(ra > 0 && rb > 0, "one watcher got everything: {ra} / {rb}");
    Ok(())
}
