//! Telemetry: the record schema, the sinks (MQTT with store-and-forward, or a JSON-lines
//! file), the on-disk queue, fleet commands and the fleet view.
//!
//! A [`Telemetry`] handle and a [`TelemetryDriver`] come in pairs (STYLE rule 9): the
//! runtime runs the driver on a thread of its own, and any thread hands records to the handle
//! with [`Telemetry::send`], which never blocks (a bounded in-memory channel with `try_send`;
//! a full channel counts a drop). The driver assigns sequence numbers, encodes, appends to
//! the disk queue (one fsync per batch), publishes with QoS 1 and removes an entry only when
//! the broker acknowledged it; after a reconnect it subscribes again, publishes its birth
//! message and sends the backlog in order. Without a broker the same records go as JSON
//! lines to a file. This module must not import the engine or tract.

pub mod broker;
pub mod command;
pub mod discovery;
#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;
pub mod fleet;
mod mqtt;
pub mod queue;
pub mod schema;
pub mod topics;
pub mod work;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;

pub use broker::{BrokerConfig, BrokerError, BrokerUrl, Secret};
pub use command::{CommandName, CommandTarget, Reply, StatusSnapshot};
pub use queue::{DiskQueue, QueueError};
pub use schema::{
    Body, DayFigures, DayLayerFigures, EcoFigures, Encoding, Event, GovernorState, LayerFigures,
    Power, PowerSource, Record, RecordKind, RequestDone, SchemaError, Tick, TrainingDone, ZoneTemp,
};
pub use topics::{BadDeviceId, Topics};

/// Where records go.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // made once per run
pub enum SinkConfig {
    /// An MQTT broker, with the disk queue in `queue_dir`.
    Mqtt {
        /// The broker.
        broker: BrokerConfig,
        /// Directory of the store-and-forward queue.
        queue_dir: PathBuf,
    },
    /// JSON lines appended to a file.
    File(PathBuf),
}

/// Why telemetry could not start or stopped.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// The device id is not a plain topic level.
    #[error(transparent)]
    DeviceId(#[from] BadDeviceId),
    /// The broker settings are unusable.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The disk queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Encoding failed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The telemetry file failed.
    #[error("telemetry file {path}: {cause}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// An option is out of range.
    #[error("telemetry option: {0}")]
    Option(String),
}

/// Telemetry settings. Required: device id and sink; the rest has defaults.
#[derive(Clone, Debug)]
pub struct TelemetryOptions {
    device: String,
    sink: SinkConfig,
    encoding: Encoding,
    queue_capacity: usize,
    channel_capacity: usize,
    interval: Duration,
    allowed: Vec<CommandName>,
    discovery: bool,
    linger: Duration,
    /// Bytes the disk queue or the telemetry file may still take before writes fail like a
    /// full disk (tests only).
    #[cfg(test)]
    queue_space: Option<Arc<AtomicU64>>,
}

impl TelemetryOptions {
    /// Options for `device` writing to `sink`: JSON, 10 000 queued records, a 1024-record
    /// hand-off channel, 1 s interval, every command allowed, Home Assistant discovery on,
    /// up to 2 s at stop to drain the backlog.
    pub fn new(device: impl Into<String>, sink: SinkConfig) -> Self {
        Self {
            device: device.into(),
            sink,
            encoding: Encoding::Json,
            queue_capacity: 10_000,
            channel_capacity: 1024,
            interval: Duration::from_secs(1),
            allowed: CommandName::ALL.to_vec(),
            discovery: true,
            linger: Duration::from_secs(2),
            #[cfg(test)]
            queue_space: None,
        }
    }

    /// Encoding on the broker (the file sink always writes JSON lines).
    pub fn with_encoding(mut self, e: Encoding) -> Self {
        self.encoding = e;
        self
    }

    /// Most records the disk queue holds before it drops the oldest telemetry.
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Most records waiting in memory for the driver.
    pub fn with_channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n;
        self
    }

    /// Initial telemetry interval (the `interval` command changes it).
    pub fn with_interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// The commands accepted; others get an error reply.
    pub fn with_allowed_commands(mut self, allowed: Vec<CommandName>) -> Self {
        self.allowed = allowed;
        self
    }

    /// Whether to publish Home Assistant discovery configs (JSON only).
    pub fn with_discovery(mut self, on: bool) -> Self {
        self.discovery = on;
        self
    }

    /// How long [`Telemetry::stop`] lets the driver drain the backlog while connected.
    pub fn with_linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Lets the disk queue write only `space` more bytes before failing like a full disk.
    #[cfg(test)]
    pub(crate) fn with_queue_space(mut self, space: Arc<AtomicU64>) -> Self {
        self.queue_space = Some(space);
        self
    }

    fn validate(&self) -> Result<Topics, TelemetryError> {
        let topics = Topics::new(&self.device)?;
        if self.channel_capacity == 0 {
            return Err(TelemetryError::Option(
                "channel capacity must be at least 1".into(),
            ));
        }
        let s = self.interval.as_secs_f64();
        if !(command::MIN_INTERVAL_S..=command::MAX_INTERVAL_S).contains(&s) {
            return Err(TelemetryError::Option(format!(
                "interval {s} s is outside {} to {} s",
                command::MIN_INTERVAL_S,
                command::MAX_INTERVAL_S
            )));
        }
        Ok(topics)
    }
}

/// Counters shared by the handle and the driver.
#[derive(Debug, Default)]
struct Shared {
    interval_ms: AtomicU64,
    dropped_channel: AtomicU64,
    dropped_queue: AtomicU64,
    queued: AtomicU64,
    acked: AtomicU64,
    written: AtomicU64,
    connected: AtomicBool,
    connects: AtomicU64,
    training_paused: AtomicBool,
    dropped_unwritable: AtomicU64,
    queue_errors: AtomicU64,
    replies_dropped: AtomicU64,
    oversized_commands: AtomicU64,
    /// Why the disk queue cannot be written, while it cannot.
    degraded: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// Marks telemetry degraded for `why`; true when it was not degraded before.
    fn degrade(&self, why: String) -> bool {
        let mut degraded = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = degraded.is_none();
        *degraded = Some(why);
        fresh
    }

    /// Clears the degraded state; true when it was degraded.
    fn recover(&self) -> bool {
        self.degraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }
}

/// What the driver has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Records waiting in the disk queue.
    pub queued: u64,
    /// Records the broker acknowledged (MQTT) or written to the file.
    pub delivered: u64,
    /// Records dropped because the hand-off channel was full.
    pub dropped_channel: u64,
    /// Telemetry dropped at the disk queue's bound.
    pub dropped_queue: u64,
    /// Records dropped because the disk queue could not be written (a full disk).
    pub dropped_unwritable: u64,
    /// Disk queue writes, syncs or compactions that failed.
    pub queue_errors: u64,
    /// Command replies dropped because the reply queue was full or the link went down.
    pub replies_dropped: u64,
    /// Command messages dropped for being larger than a command may be.
    pub oversized_commands: u64,
    /// Whether the driver is connected to the broker.
    pub connected: bool,
    /// Successful connections so far.
    pub connects: u64,
}

/// Whether telemetry is keeping what it is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TelemetryHealth {
    /// Records are stored (and sent when a broker is reachable).
    Ok,
    /// Records are being dropped (and counted); the reason, e.g. the disk queue's error.
    Degraded(String),
}

#[allow(clippy::large_enum_variant)] // nearly every message is a record
enum Input {
    Record { ts_ms: u64, body: Body },
    Stop,
}

/// The cheap, cloneable handle: send records, read the interval and counters, stop.
#[derive(Clone)]
pub struct Telemetry {
    tx: flume::Sender<Input>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The driver: run it on a thread of its own with [`TelemetryDriver::run`].
pub struct TelemetryDriver {
    opts: TelemetryOptions,
    topics: Topics,
    rx: flume::Receiver<Input>,
    shared: Arc<Shared>,
    target: Option<Arc<dyn CommandTarget>>,
}

impl Telemetry {
    /// Validates `opts` and makes the handle + driver pair. Commands act on `target`; without
    /// one, only `interval` and `status` are served.
    pub fn new(
        opts: TelemetryOptions,
        target: Option<Arc<dyn CommandTarget>>,
    ) -> Result<(Telemetry, TelemetryDriver), TelemetryError> {
        let topics = opts.validate()?;
        let (tx, rx) = flume::bounded(opts.channel_capacity);
        let shared = Arc::new(Shared::default());
        shared.interval_ms.store(
            u64::try_from(opts.interval.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok((
            Telemetry {
                tx,
                shared: shared.clone(),
            },
            TelemetryDriver {
                opts,
                topics,
                rx,
                shared,
                target,
            },
        ))
    }

    /// Hands a record to the driver without blocking. Returns false (and counts a drop) when
    /// the channel is full or the driver has stopped.
    pub fn send(&self, body: Body) -> bool {
        let ok = self
            .tx
            .try_send(Input::Record {
                ts_ms: schema::unix_ms_now(),
                body,
            })
            .is_ok();
        if !ok {
            self.shared.dropped_channel.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The telemetry interval in force (set by options or the `interval` command).
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.shared.interval_ms.load(Ordering::Relaxed).max(1))
    }

    /// Whether a `pause_training` command is in force (as last applied by the driver).
    pub fn training_paused(&self) -> bool {
        self.shared.training_paused.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> TelemetryStats {
        let s = &self.shared;
        TelemetryStats {
            queued: s.queued.load(Ordering::Relaxed),
            delivered: s.acked.load(Ordering::Relaxed) + s.written.load(Ordering::Relaxed),
            dropped_channel: s.dropped_channel.load(Ordering::Relaxed),
            dropped_queue: s.dropped_queue.load(Ordering::Relaxed),
            dropped_unwritable: s.dropped_unwritable.load(Ordering::Relaxed),
            queue_errors: s.queue_errors.load(Ordering::Relaxed),
            replies_dropped: s.replies_dropped.load(Ordering::Relaxed),
            oversized_commands: s.oversized_commands.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
        }
    }

    /// Whether records are being kept; degraded while the disk queue or the file cannot be
    /// written.
    pub fn health(&self) -> TelemetryHealth {
        let reason = self
            .shared
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match reason {
            None => TelemetryHealth::Ok,
            Some(r) => TelemetryHealth::Degraded(r),
        }
    }

    /// Asks the driver to finish: records already sent are kept (queued on disk or written),
    /// the backlog drains for up to the linger time, a clean `offline` status is published.
    /// Blocks only if the channel is full.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }
}

impl TelemetryDriver {
    /// Runs until [`Telemetry::stop`] or until every handle is dropped.
    pub fn run(self) -> Result<(), TelemetryError> {
        match self.opts.sink.clone() {
            SinkConfig::File(path) => run_file(self, &path),
            SinkConfig::Mqtt { broker, queue_dir } => mqtt::run(self, &broker, &queue_dir),
        }
    }

    fn dropped_total(&self, queue_dropped: u64) -> u64 {
        queue_dropped
            + self.shared.dropped_channel.load(Ordering::Relaxed)
            + self.shared.dropped_unwritable.load(Ordering::Relaxed)
    }
}

/// The last sequence number in a JSON-lines file, from its last complete line.
fn last_seq_in(file: &mut std::fs::File) -> Option<u64> {
    let len = file.seek(SeekFrom::End(0)).ok()?;
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = String::new();
    file.read_to_string(&mut tail).ok()?;
    tail.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Record>(l).ok())
        .map(|r| r.seq)
}

fn run_file(d: TelemetryDriver, path: &std::path::Path) -> Result<(), TelemetryError> {
    let ferr = |cause| TelemetryError::File {
        path: path.to_path_buf(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(ferr)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(ferr)?;
    let mut seq = last_seq_in(&mut file).map_or(0, |s| s + 1);
    loop {
        let first = match d.rx.recv() {
            Ok(i) => i,
            Err(_) => return Ok(()),
        };
        let mut batch = vec![first];
        batch.extend(d.rx.try_iter());
        let mut out = Vec::new();
        let mut lines = 0u64;
        let mut stop = false;
        for input in batch {
            match input {
                Input::Stop => stop = true,
                Input::Record { ts_ms, body } => {
                    let mut r = Record::new(d.topics.device(), seq, ts_ms, body);
                    r.dropped_total = d.dropped_total(0);
                    seq += 1;
                    out.extend(r.encode(Encoding::Json)?);
                    out.push(b'\n');
                    lines += 1;
                }
            }
        }
        if !out.is_empty() {
            append_lines(&d, &mut file, &out, lines, path);
        }
        if stop {
            return Ok(());
        }
    }
}

/// Appends whole lines to the telemetry file. A failed write (a full disk) is cut back to the
/// last whole line, its records are counted as dropped and telemetry is degraded until a later
/// write succeeds; the driver keeps running.
fn append_lines(
    d: &TelemetryDriver,
    file: &mut std::fs::File,
    out: &[u8],
    lines: u64,
    path: &std::path::Path,
) {
    let before = file.metadata().map(|m| m.len()).ok();
    let written = write_room(d, file, out).and_then(|()| file.sync_data());
    match written {
        Ok(()) => {
            d.shared.written.fetch_add(lines, Ordering::Relaxed);
            if d.shared.recover() {
                log::warn!(
                    "telemetry recovered: {} takes records again ({} dropped while it could not)",
                    path.display(),
                    d.shared.dropped_unwritable.load(Ordering::Relaxed)
                );
            }
        }
        Err(e) => {
            if let Some(len) = before {
                // A partial line would make the next record unreadable.
                let _ = file.set_len(len);
            }
            d.shared
                .dropped_unwritable
                .fetch_add(lines, Ordering::Relaxed);
            d.shared.queue_errors.fetch_add(1, Ordering::Relaxed);
            let why = format!("telemetry file {}: {e}", path.display());
            if d.shared.degrade(why.clone()) {
                log::error!("{why}; records are dropped and counted until it recovers");
            }
        }
    }
}

/// Writes `out`, failing like a full disk past the test's room.
fn write_room(d: &TelemetryDriver, file: &mut std::fs::File, out: &[u8]) -> std::io::Result<()> {
    #[cfg(test)]
    if let Some(space) = &d.opts.queue_space {
        let left = space.load(Ordering::SeqCst);
        let granted = left.min(out.len() as u64);
        space.store(left - granted, Ordering::SeqCst);
        file.write_all(&out[..granted as usize])?;
        if (granted as usize) < out.len() {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        return Ok(());
    }
    #[cfg(not(test))]
    let _ = d;
    file.write_all(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(n: u64) -> Body {
        Body::Event(Event {
            name: "test".into(),
            detail: String::new(),
            count: Some(n),
        })
    }

    #[test]
    fn the_file_sink_writes_json_lines_and_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        for round in 0..2u64 {
            let opts = TelemetryOptions::new("dev-1", SinkConfig::File(path.clone()));
            let (t, d) = Telemetry::new(opts, None).unwrap();
            let th = std::thread::spawn(move || d.run());
            for n in 0..3 {
                assert!(t.send(event(round * 10 + n)));
            }
            t.stop();
            th.join().unwrap().unwrap();
            assert_eq!(t.stats().delivered, 3);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert!(recs.iter().all(|r| r.device == "dev-1"));
    }

    #[test]
    fn send_never_blocks_and_counts_what_a_full_channel_drops() {
        let opts = TelemetryOptions::new("d", SinkConfig::File("/nonexistent/x".into()))
            .with_channel_capacity(2);
        let (t, _driver_not_running) = Telemetry::new(opts, None).unwrap();
        let start = std::time::Instant::now();
        let sent = (0..100).filter(|&n| t.send(event(n))).count();
        assert!(start.elapsed() < Duration::from_millis(200));
        assert_eq!(sent, 2);
        assert_eq!(t.stats().dropped_channel, 98);
    }

    fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_full_disk_queue_degrades_telemetry_counts_drops_and_resumes_when_room_returns() {
        let dir = tempfile::tempdir().unwrap();
        // A loopback port nothing listens on: records stay in the disk queue.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url: BrokerUrl = format!("mqtt://127.0.0.1:{port}").parse().unwrap();
        let sink = SinkConfig::Mqtt {
            broker: BrokerConfig::new(url, "disk-full"),
            queue_dir: dir.path().join("q"),
        };
        let space = Arc::new(AtomicU64::new(0));
        let opts = TelemetryOptions::new("disk-full", sink)
            .with_linger(Duration::ZERO)
            .with_queue_space(space.clone());
        let (t, d) = Telemetry::new(opts, None).unwrap();
        let th = std::thread::spawn(move || d.run());
        let mut sent = 0u64;
        for n in 0..20 {
            sent += u64::from(t.send(event(n)));
        }
        wait_until("the queue to fail", || t.stats().dropped_unwritable >= sent);
        let s = t.stats();
        assert!(s.queue_errors >= 1, "{s:?}");
        assert_eq!(s.queued, 0);
        let TelemetryHealth::Degraded(why) = t.health() else {
            panic!("not degraded: {:?}", t.health());
        };
        assert!(why.contains("No space left"), "{why}");
        // Room again: after the back-off, records are kept and the state is ok.
        space.store(u64::MAX, Ordering::SeqCst);
        let mut n = 100;
        wait_until("telemetry to resume", || {
            n += 1;
            t.send(event(n));
            std::thread::sleep(Duration::from_millis(50));
            t.health() == TelemetryHealth::Ok && t.stats().queued > 0
        });
        let dropped = t.stats().dropped_unwritable;
        for k in 0..5 {
            assert!(t.send(event(1000 + k)));
        }
        wait_until("the new records to be queued", || t.stats().queued >= 6);
        assert_eq!(t.stats().dropped_unwritable, dropped);
        t.stop();
        th.join().unwrap().unwrap();
        let q = DiskQueue::open(&dir.path().join("q"), 10_000).unwrap();
        assert!(q.len() >= 6, "{}", q.len());
        let last: Record = serde_json::from_slice(&q.iter().last().unwrap().payload).unwrap();
        assert!(last.dropped_total >= sent, "{}", last.dropped_total);
    }

    #[test]
    fn a_full_disk_under_the_file_sink_drops_and_counts_records_and_resumes_when_room_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let space = Arc::new(AtomicU64::new(0));
        let opts = TelemetryOptions::new("dev-1", SinkConfig::File(path.clone()))
            .with_queue_space(space.clone());
        let (t, d) = Telemetry::new(opts, None).unwrap();
        let th = std::thread::spawn(move || d.run());
        for n in 0..3 {
            assert!(t.send(event(n)));
        }
        wait_until("the writes to fail", || t.stats().dropped_unwritable >= 3);
        let TelemetryHealth::Degraded(why) = t.health() else {
            panic!("not degraded: {:?}", t.health());
        };
        assert!(why.contains("No space left"), "{why}");
        // Room for half a line: the partial line is cut back, not left in the file.
        space.store(20, Ordering::SeqCst);
        assert!(t.send(event(3)));
        wait_until("the partial write to fail", || {
            t.stats().dropped_unwritable >= 4
        });
        space.store(u64::MAX, Ordering::SeqCst);
        assert!(t.send(event(4)));
        wait_until("telemetry to recover", || t.health() == TelemetryHealth::Ok);
        t.stop();
        th.join().unwrap().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 1, "{text}");
        assert_eq!(records[0].dropped_total, 4);
        assert_eq!(t.stats().delivered, 1);
    }

    #[test]
    fn rejects_bad_options() {
        let sink = SinkConfig::File("x".into());
        assert!(Telemetry::new(TelemetryOptions::new("a/b", sink.clone()), None).is_err());
        let o = TelemetryOptions::new("a", sink.clone()).with_interval(Duration::from_millis(1));
        assert!(Telemetry::new(o, None).is_err());
        let o = TelemetryOptions::new("a", sink).with_channel_capacity(0);
        assert!(Telemetry::new(o, None).is_err());
    }
}
