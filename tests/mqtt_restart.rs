//! Restart: the runtime (a simulated device process) is killed with SIGKILL while records
//! are queued on disk during a broker outage; started again, it delivers the backlog: every
//! sequence number arrives, in order, at a subscriber that deduplicates by (device, seq).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::mosquitto::{Mosquitto, Subscriber, dedup_seqs};

const DEVICE: &str = "restart-dev";

fn device(url: &str, queue: &std::path::Path, count: u64, drain_secs: u64) -> Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_telemetry-device"))
        .args(["--broker", url, "--device", DEVICE, "--hz", "20"])
        .arg("--queue")
        .arg(queue)
        .args(["--count", &count.to_string()])
        .args(["--drain-secs", &drain_secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting telemetry-device")
}

/// Reads progress lines until `pred(sent, queued, delivered)` holds.
fn wait_progress(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    mut pred: impl FnMut(u64, u64, u64) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines {
        let line = line?;
        let num = |key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if pred(num("sent="), num("queued="), num("delivered=")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            break;
        }
    }
    bail!("the device never reached the expected progress")
}

#[test]
fn a_backlog_queued_before_a_kill_9_is_delivered_after_the_restart() -> Result<()> {
    let mut broker = Mosquitto::start()?;
    let sub = Subscriber::start(
        broker.port(),
        "restart-watcher",
        &["thermo/+/telemetry", "thermo/+/event"],
        true,
    )?;
    let queue = tempfile::tempdir()?;
    let mut child = device(&broker.url(), queue.path(), 1_000_000, 0)?;
    let stdout = child.stdout.take().context("device stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // Some records delivered while the broker is up.
    wait_progress(&mut lines, |_, _, delivered| delivered >= 20)?;
    broker.stop()?;
    // A backlog builds up on disk.
    wait_progress(&mut lines, |_, queued, _| queued >= 40)?;
    child.kill()?; // SIGKILL
    let _ = child.wait();
    let seqs_before = dedup_seqs(&sub.messages(), DEVICE);
    broker.restart()?;
    let mut again = device(&broker.url(), queue.path(), 0, 30)?;
    let status = again.wait()?;
    ensure!(status.success(), "second run failed: {status}");
    // Everything the first run queued, including the backlog, arrives in order.
    let ok = sub.wait_for(Duration::from_secs(20), |m| {
        let s = dedup_seqs(m, DEVICE);
        s.len() >= seqs_before.len() + 40
    });
    let seqs = dedup_seqs(&sub.messages(), DEVICE);
    ensure!(ok, "only {} records arrived", seqs.len());
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    ensure!(
        seqs == expected,
        "records missing or out of order: {:?}",
        seqs
    );
    Ok(())
}
