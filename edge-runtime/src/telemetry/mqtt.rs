//! The MQTT sink: the driver's loop and the network pump.
//!
//! Two threads: the pump owns rumqttc's `Connection` and only forwards its events; the
//! driver owns the disk queue and the `Client`, and never waits on the network (every
//! publish is a `try_publish`, bounded by a window of unacknowledged records).
//!
//! Acknowledgement bookkeeping: rumqttc turns requests into packets in channel order and
//! reports each as `Outgoing::Publish(pkid)`, so the driver matches those events in order to
//! the publishes it made since the last CONNACK, and a later PUBACK of that pkid removes the
//! queue entry. The session is clean: after an error the pump waits until the driver has
//! stopped publishing, then `clean()` moves any request still in the channel into rumqttc's
//! pending list, which the next clean-session CONNACK discards. The driver then sends the
//! whole unacknowledged backlog again from the queue's head, in order; a record may thus
//! arrive twice, never out of order, and subscribers deduplicate by (device, seq).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, Event, Incoming, LastWill, Outgoing, QoS};

use super::command::{self, Command, Reply, StatusSnapshot};
use super::discovery;
use super::queue::{DiskQueue, Pushed, QueueError};
use super::schema::{self, Body, Encoding, Record, RecordKind, SchemaError};
use super::topics::{OFFLINE, ONLINE};
use super::{BrokerConfig, Input, TelemetryDriver, TelemetryError};

/// Most queue records published and not yet acknowledged.
const WINDOW: usize = 32;
/// rumqttc's own in-flight bound (queue window plus birth, discovery and replies).
const INFLIGHT: u16 = 96;
/// Capacity of rumqttc's request channel.
const REQUESTS: usize = 256;
/// Longest wait of the driver's loop when nothing happens.
const IDLE: Duration = Duration::from_millis(200);
/// Shortest gap between two `telemetry_dropped` events.
const DROP_EVENT_GAP: Duration = Duration::from_secs(5);
/// Most command replies waiting for room in rumqttc's request channel; beyond it a reply
/// is dropped, counted and logged.
const REPLY_QUEUE: usize = 2048;
/// Shortest gap between two log lines about dropped replies or oversized commands.
const DROP_LOG_GAP: Duration = Duration::from_secs(1);
/// First wait before writing to a disk queue that failed; it doubles up to the maximum.
const QUEUE_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to write to a failing disk queue.
const QUEUE_RETRY_MAX: Duration = Duration::from_secs(30);

enum Net {
    Event(Event),
    Error(String),
}

/// What a publish carries, for the acknowledgement bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// A disk queue entry (its id).
    Record(u64),
    /// A command reply.
    Reply,
    /// Birth or discovery (published again after every connect).
    Other,
}

struct Link {
    client: Client,
    connected: bool,
    /// Publishes since the last CONNACK not yet seen as `Outgoing::Publish`, in order.
    awaiting: VecDeque<Sent>,
    /// pkid -> what each publish on the wire carries.
    inflight: HashMap<u16, Sent>,
    /// Queue records among `awaiting` and `inflight`.
    outstanding: usize,
    /// The next queue id to publish.
    send_from: u64,
}

impl Link {
    /// Forgets what was on the wire; returns how many replies were not acknowledged.
    fn reset(&mut self) -> u64 {
        let lost = self
            .awaiting
            .iter()
            .chain(self.inflight.values())
            .filter(|s| **s == Sent::Reply)
            .count() as u64;
        self.awaiting.clear();
        self.inflight.clear();
        self.outstanding = 0;
        self.send_from = 0;
        lost
    }

    fn publish(&mut self, topic: String, retain: bool, payload: Vec<u8>, what: Sent) -> bool {
        if !self.connected {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.awaiting.push_back(what);
                if matches!(what, Sent::Record(_)) {
                    self.outstanding += 1;
                }
                true
            }
            Err(e) => {
                log::debug!("telemetry: publish deferred: {e}");
                false
            }
        }
    }
}

fn pump(
    mut conn: rumqttc::Connection,
    tx: flume::Sender<Net>,
    resume: flume::Receiver<()>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match conn.recv() {
            Err(_) => return,
            Ok(Ok(ev)) => {
                if matches!(ev, Event::Incoming(Incoming::ConnAck(_))) {
                    backoff = Duration::from_millis(250);
                }
                if tx.send(Net::Event(ev)).is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                if tx.send(Net::Error(e.to_string())).is_err() || resume.recv().is_err() {
                    return;
                }
                conn.eventloop.clean();
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(4));
            }
        }
    }
}

struct Driver {
    d: TelemetryDriver,
    queue: DiskQueue,
    link: Link,
    encoding: Encoding,
    last_drop_event: Option<Instant>,
    drops_announced: u64,
    /// While the disk queue fails: when to try it again, and the wait after that.
    queue_retry: Option<(Instant, Duration)>,
    /// Command replies not yet handed to rumqttc, oldest first (at most [`REPLY_QUEUE`]).
    replies: VecDeque<(String, Vec<u8>)>,
    /// When a dropped reply or an oversized command was last logged.
    drop_log: Option<Instant>,
}

pub(super) fn run(
    d: TelemetryDriver,
    broker: &BrokerConfig,
    queue_dir: &Path,
) -> Result<(), TelemetryError> {
    let queue = DiskQueue::open(queue_dir, d.opts.queue_capacity)?;
    #[cfg(test)]
    let queue = match d.opts.queue_space.clone() {
        Some(space) => queue.with_space(space),
        None => queue,
    };
    let will = LastWill::new(d.topics.status(), OFFLINE, QoS::AtLeastOnce, true);
    let mut options = broker.mqtt_options(Some(will))?;
    options.set_inflight(INFLIGHT);
    let (client, mut conn) = Client::new(options, REQUESTS);
    conn.eventloop
        .network_options
        .set_connection_timeout(broker.connect_timeout.as_secs().max(1));
    let (net_tx, net_rx) = flume::unbounded();
    let (resume_tx, resume_rx) = flume::bounded(1);
    let stop = Arc::new(AtomicBool::new(false));
    let pump_stop = stop.clone();
    let (done_tx, done_rx) = flume::bounded::<()>(1);
    std::thread::Builder::new()
        .name("telemetry-net".into())
        .spawn(move || {
            pump(conn, net_tx, resume_rx, pump_stop);
            let _ = done_tx.send(());
        })
        .map_err(|e| TelemetryError::Option(format!("spawning the network thread: {e}")))?;
    log::info!(
        "telemetry: device {} to {} ({} records queued from before)",
        d.topics.device(),
        broker.url,
        queue.len()
    );
    d.shared.queued.store(queue.len() as u64, Ordering::Relaxed);
    let encoding = d.opts.encoding;
    let mut drv = Driver {
        d,
        queue,
        link: Link {
            client,
            connected: false,
            awaiting: VecDeque::new(),
            inflight: HashMap::new(),
            outstanding: 0,
            send_from: 0,
        },
        encoding,
        last_drop_event: None,
        drops_announced: 0,
        queue_retry: None,
        replies: VecDeque::new(),
        drop_log: None,
    };
    let result = drv.main_loop(&net_rx, &resume_tx);
    let unsent = drv.replies.len() as u64;
    drv.drop_replies(unsent, "telemetry stopped before they could be sent");
    stop.store(true, Ordering::Relaxed);
    if drv.link.connected {
        drv.link
            .publish(drv.d.topics.status(), true, OFFLINE.into(), Sent::Other);
        let _ = drv.link.client.try_disconnect();
    }
    drop(drv);
    drop(resume_tx);
    // The pump ends when the client is gone; do not wait for a connect attempt to time out.
    let _ = done_rx.recv_timeout(Duration::from_secs(1));
    result
}

impl Driver {
    fn main_loop(
        &mut self,
        net_rx: &flume::Receiver<Net>,
        resume: &flume::Sender<()>,
    ) -> Result<(), TelemetryError> {
        let mut stopping: Option<Instant> = None;
        let mut inputs_open = true;
        loop {
            let woke = if inputs_open {
                flume::Selector::new()
                    .recv(&self.d.rx, |r| {
                        r.map(Wake::Input).unwrap_or(Wake::InputsGone)
                    })
                    .recv(net_rx, |r| r.map(Wake::Net).unwrap_or(Wake::NetGone))
                    .wait_timeout(IDLE)
                    .unwrap_or(Wake::Idle)
            } else {
                match net_rx.recv_timeout(IDLE) {
                    Ok(n) => Wake::Net(n),
                    Err(flume::RecvTimeoutError::Timeout) => Wake::Idle,
                    Err(flume::RecvTimeoutError::Disconnected) => Wake::NetGone,
                }
            };
            let mut inputs = Vec::new();
            match woke {
                Wake::Input(i) => inputs.push(i),
                Wake::InputsGone => {
                    inputs_open = false;
                    stopping = stopping.or(Some(Instant::now()));
                }
                Wake::Net(n) => self.on_net(n, resume)?,
                Wake::NetGone => return Ok(()),
                Wake::Idle => {}
            }
            inputs.extend(self.d.rx.try_iter());
            for input in inputs {
                match input {
                    Input::Record { ts_ms, body } => self.enqueue(ts_ms, body)?,
                    Input::Stop => stopping = stopping.or(Some(Instant::now())),
                }
            }
            while let Ok(n) = net_rx.try_recv() {
                self.on_net(n, resume)?;
            }
            self.announce_drops()?;
            match self.queue.sync() {
                Ok(()) => {}
                Err(e) => self.queue_failed(&e),
            }
            self.send_replies();
            self.send_backlog();
            self.d
                .shared
                .queued
                .store(self.queue.len() as u64, Ordering::Relaxed);
            if let Some(since) = stopping {
                let drained =
                    (self.queue.is_empty() && self.replies.is_empty()) || !self.link.connected;
                if drained || since.elapsed() >= self.d.opts.linger {
                    return Ok(());
                }
            }
        }
    }

    /// Appends a record to the disk queue. While the queue fails (until its next retry) the
    /// record is dropped and counted; a failure drops and counts it too.
    fn enqueue(&mut self, ts_ms: u64, body: Body) -> Result<(), TelemetryError> {
        if self.queue_retry.is_some_and(|(at, _)| Instant::now() < at) {
            self.d
                .shared
                .dropped_unwritable
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let kind = body.kind();
        let mut r = Record::new(self.d.topics.device(), self.queue.next_id(), ts_ms, body);
        r.dropped_total = self.d.dropped_total(self.queue.dropped());
        let payload = r.encode(self.encoding)?;
        match self.queue.push(kind, payload) {
            Ok(Pushed::Stored) => self.queue_recovered(),
            Ok(Pushed::DroppedOldest(_) | Pushed::DroppedNew) => {
                self.queue_recovered();
                self.d
                    .shared
                    .dropped_queue
                    .store(self.queue.dropped(), Ordering::Relaxed);
            }
            Err(e) => {
                self.d
                    .shared
                    .dropped_unwritable
                    .fetch_add(1, Ordering::Relaxed);
                self.queue_failed(&e);
            }
        }
        Ok(())
    }

    /// Counts a failed queue operation, marks telemetry degraded and backs off.
    fn queue_failed(&mut self, e: &QueueError) {
        self.d.shared.queue_errors.fetch_add(1, Ordering::Relaxed);
        let wait = self
            .queue_retry
            .map_or(QUEUE_RETRY_MIN, |(_, w)| (w * 2).min(QUEUE_RETRY_MAX));
        self.queue_retry = Some((Instant::now() + wait, wait));
        if self.d.shared.degrade(e.to_string()) {
            log::error!(
                "telemetry degraded, records are dropped and counted until it recovers: {e}"
            );
        }
    }

    /// Clears the degraded state after a queue write succeeded.
    fn queue_recovered(&mut self) {
        if self.queue_retry.take().is_none() {
            return;
        }
        self.d.shared.recover();
        log::warn!(
            "telemetry recovered: the disk queue takes records again ({} dropped while it \
             could not)",
            self.d.shared.dropped_unwritable.load(Ordering::Relaxed)
        );
    }

    /// Queues a `telemetry_dropped` event with the running total when it changed, at most
    /// once per [`DROP_EVENT_GAP`] and at once after a reconnect.
    fn announce_drops(&mut self) -> Result<(), TelemetryError> {
        let total = self.d.dropped_total(self.queue.dropped());
        if total == self.drops_announced
            || self
                .last_drop_event
                .is_some_and(|t| t.elapsed() < DROP_EVENT_GAP)
        {
            return Ok(());
        }
        self.drops_announced = total;
        self.last_drop_event = Some(Instant::now());
        self.enqueue(
            schema::unix_ms_now(),
            Body::Event(schema::Event {
                name: "telemetry_dropped".into(),
                detail: format!(
                    "{} at the disk queue's bound, {} with the hand-off channel full, {} with \
                     the disk queue unwritable",
                    self.queue.dropped(),
                    self.d.shared.dropped_channel.load(Ordering::Relaxed),
                    self.d.shared.dropped_unwritable.load(Ordering::Relaxed)
                ),
                count: Some(total),
            }),
        )
    }

    fn send_backlog(&mut self) {
        while self.link.connected && self.link.outstanding < WINDOW {
            let Some(e) = self.queue.first_from(self.link.send_from) else {
                break;
            };
            let (id, topic) = match e.kind {
                RecordKind::Telemetry => (e.id, self.d.topics.telemetry()),
                RecordKind::Event => (e.id, self.d.topics.event()),
            };
            let payload = e.payload.clone();
            if !self.link.publish(topic, false, payload, Sent::Record(id)) {
                break;
            }
            self.link.send_from = id + 1;
        }
    }

    fn on_net(&mut self, n: Net, resume: &flume::Sender<()>) -> Result<(), TelemetryError> {
        match n {
            Net::Error(e) => {
                if self.link.connected {
                    log::warn!("telemetry: broker connection lost: {e}");
                } else {
                    log::debug!("telemetry: broker unreachable: {e}");
                }
                self.link.connected = false;
                let lost = self.link.reset();
                self.drop_replies(
                    lost,
                    "the link went down before the broker acknowledged them",
                );
                self.d.shared.connected.store(false, Ordering::Relaxed);
                let _ = resume.try_send(());
            }
            Net::Event(Event::Incoming(Incoming::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    log::warn!("telemetry: broker refused the connection: {:?}", ack.code);
                    return Ok(());
                }
                self.link.connected = true;
                let lost = self.link.reset();
                self.drop_replies(lost, "a new session began before they were acknowledged");
                // A fresh connection hears the current drop count at once.
                self.last_drop_event = None;
                self.d.shared.connected.store(true, Ordering::Relaxed);
                self.d.shared.connects.fetch_add(1, Ordering::Relaxed);
                let filter = self.d.topics.command_filter();
                if let Err(e) = self.link.client.try_subscribe(filter, QoS::AtLeastOnce) {
                    log::warn!("telemetry: subscribing to commands: {e}");
                }
                self.link
                    .publish(self.d.topics.status(), true, ONLINE.into(), Sent::Other);
                if self.d.opts.discovery && self.encoding == Encoding::Json {
                    for c in discovery::configs(&self.d.topics) {
                        let payload = serde_json::to_vec(&c.payload).map_err(SchemaError::from)?;
                        self.link.publish(c.topic, true, payload, Sent::Other);
                    }
                }
                log::info!("telemetry: connected; {} records to send", self.queue.len());
            }
            Net::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(what) = self.link.awaiting.pop_front()
                    && pkid != 0
                {
                    self.link.inflight.insert(pkid, what);
                }
            }
            Net::Event(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(Sent::Record(id)) = self.link.inflight.remove(&ack.pkid) {
                    self.link.outstanding = self.link.outstanding.saturating_sub(1);
                    // A failed removal still leaves the entry acknowledged in memory; after
                    // a restart it may be sent once more.
                    match self.queue.remove(id) {
                        Ok(false) => {}
                        Ok(true) => {
                            self.d.shared.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.d.shared.acked.fetch_add(1, Ordering::Relaxed);
                            self.queue_failed(&e);
                        }
                    }
                }
            }
            Net::Event(Event::Incoming(Incoming::Publish(p))) => {
                self.on_command(&p.topic, p.retain, &p.payload)?;
            }
            Net::Event(_) => {}
        }
        Ok(())
    }

    fn snapshot(&self) -> StatusSnapshot {
        let mut s = match &self.d.target {
            Some(t) => t.snapshot(),
            None => StatusSnapshot::default(),
        };
        s.interval_s =
            Duration::from_millis(self.d.shared.interval_ms.load(Ordering::Relaxed)).as_secs_f64();
        s
    }

    fn on_command(
        &mut self,
        topic: &str,
        retain: bool,
        payload: &[u8],
    ) -> Result<(), TelemetryError> {
        let Some(name) = self.d.topics.command_name(topic).map(str::to_string) else {
            return Ok(());
        };
        if command::OTHER_PROCESS_COMMANDS.contains(&name.as_str()) {
            return Ok(());
        }
        let reply = if payload.len() > command::MAX_COMMAND_BYTES {
            let n = self
                .d
                .shared
                .oversized_commands
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if self.drop_log.is_none_or(|t| t.elapsed() >= DROP_LOG_GAP) {
                self.drop_log = Some(Instant::now());
                log::warn!(
                    "telemetry: refused a {} byte {name} command, over the {} byte limit ({n} \
                     oversized so far)",
                    payload.len(),
                    command::MAX_COMMAND_BYTES
                );
            }
            Reply::error(
                &name,
                None,
                format!(
                    "payload of {} bytes is over the {} byte limit",
                    payload.len(),
                    command::MAX_COMMAND_BYTES
                ),
            )
        } else if retain {
            Reply::error(&name, None, "retained commands are refused")
        } else {
            let snap = self.snapshot();
            match command::parse(&name, payload, &self.d.opts.allowed, &snap) {
                Err(r) => *r,
                Ok((cmd, id)) => self.apply(&name, cmd, id)?,
            }
        };
        if !reply.ok {
            log::info!(
                "telemetry: refused command {name}: {}",
                reply.error.as_deref().unwrap_or("")
            );
        }
        let bytes = serde_json::to_vec(&reply).map_err(SchemaError::from)?;
        if self.replies.len() >= REPLY_QUEUE {
            self.drop_replies(1, "the reply queue is full");
        } else {
            self.replies.push_back((self.d.topics.reply(&name), bytes));
        }
        self.send_replies();
        Ok(())
    }

    /// Publishes waiting replies, in order, while rumqttc's request channel has room.
    fn send_replies(&mut self) {
        while let Some((topic, bytes)) = self.replies.pop_front() {
            if !self.link.connected {
                self.replies.push_front((topic, bytes));
                return;
            }
            // try_publish consumes its arguments; keep a copy to retry after a refusal.
            if !self
                .link
                .publish(topic.clone(), false, bytes.clone(), Sent::Reply)
            {
                self.replies.push_front((topic, bytes));
                return;
            }
        }
    }

    /// Counts `n` lost replies and logs them (at most one line per [`DROP_LOG_GAP`]).
    fn drop_replies(&mut self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        let total = self
            .d
            .shared
            .replies_dropped
            .fetch_add(n, Ordering::Relaxed)
            + n;
        if self.drop_log.is_none_or(|t| t.elapsed() >= DROP_LOG_GAP) {
            self.drop_log = Some(Instant::now());
            log::warn!("telemetry: {n} command reply/replies dropped: {why} ({total} so far)");
        }
    }

    fn apply(
        &mut self,
        name: &str,
        cmd: Command,
        id: Option<String>,
    ) -> Result<Reply, TelemetryError> {
        let no_target = || "no governor runs on this device".to_string();
        let target = self.d.target.clone();
        let outcome: Result<Option<String>, String> = match &cmd {
            Command::Setpoint(c) => target
                .as_ref()
                .ok_or_else(no_target)
                .and_then(|t| t.set_setpoint_c(*c))
                .map(|()| Some(format!("setpoint {c} °C"))),
            Command::PauseTraining => target
                .as_ref()
                .ok_or_else(no_target)
                .and_then(|t| t.pause_training())
                .map(|()| {
                    self.d.shared.training_paused.store(true, Ordering::Relaxed);
                    Some("training paused".to_string())
                }),
            Command::ResumeTraining => target
                .as_ref()
                .ok_or_else(no_target)
                .and_then(|t| t.resume_training())
                .map(|()| {
                    self.d
                        .shared
                        .training_paused
                        .store(false, Ordering::Relaxed);
                    Some("training resumed".to_string())
                }),
            Command::Interval(s) => {
                let ms = (s * 1000.0).round() as u64;
                self.d.shared.interval_ms.store(ms, Ordering::Relaxed);
                Ok(Some(format!("telemetry interval {s} s")))
            }
            Command::Status => Ok(None),
        };
        Ok(match outcome {
            Err(why) => Reply::error(name, id, why),
            Ok(applied) => {
                if let Some(detail) = applied {
                    self.enqueue(
                        schema::unix_ms_now(),
                        Body::Event(schema::Event {
                            name: "command_applied".into(),
                            detail,
                            count: None,
                        }),
                    )?;
                }
                Reply {
                    command: name.to_string(),
                    id,
                    ok: true,
                    error: None,
                    status: Some(self.snapshot()),
                }
            }
        })
    }
}

#[allow(clippy::large_enum_variant)] // nearly every wake is an input, and inputs are records
enum Wake {
    Input(Input),
    InputsGone,
    Net(Net),
    NetGone,
    Idle,
}
