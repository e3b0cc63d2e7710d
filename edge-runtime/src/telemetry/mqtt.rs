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
use super::queue::{DiskQueue, Pushed};
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

enum Net {
    Event(Event),
    Error(String),
}

struct Link {
    client: Client,
    connected: bool,
    /// Publishes since the last CONNACK not yet seen as `Outgoing::Publish`, in order: the
    /// queue id, or `None` for birth, discovery and replies.
    awaiting: VecDeque<Option<u64>>,
    /// pkid -> queue id of publishes on the wire.
    inflight: HashMap<u16, Option<u64>>,
    /// Queue records among `awaiting` and `inflight`.
    outstanding: usize,
    /// The next queue id to publish.
    send_from: u64,
}

impl Link {
    fn reset(&mut self) {
        self.awaiting.clear();
        self.inflight.clear();
        self.outstanding = 0;
        self.send_from = 0;
    }

    fn publish(&mut self, topic: String, retain: bool, payload: Vec<u8>, id: Option<u64>) -> bool {
        if !self.connected {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.awaiting.push_back(id);
                if id.is_some() {
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
}

pub(super) fn run(
    d: TelemetryDriver,
    broker: &BrokerConfig,
    queue_dir: &Path,
) -> Result<(), TelemetryError> {
    let queue = DiskQueue::open(queue_dir, d.opts.queue_capacity)?;
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
    };
    let result = drv.main_loop(&net_rx, &resume_tx);
    stop.store(true, Ordering::Relaxed);
    if drv.link.connected {
        drv.link
            .publish(drv.d.topics.status(), true, OFFLINE.into(), None);
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
            self.queue.sync()?;
            self.send_backlog();
            self.d
                .shared
                .queued
                .store(self.queue.len() as u64, Ordering::Relaxed);
            if let Some(since) = stopping {
                let drained = self.queue.is_empty() || !self.link.connected;
                if drained || since.elapsed() >= self.d.opts.linger {
                    return Ok(());
                }
            }
        }
    }

    fn enqueue(&mut self, ts_ms: u64, body: Body) -> Result<(), TelemetryError> {
        let kind = body.kind();
        let mut r = Record::new(self.d.topics.device(), self.queue.next_id(), ts_ms, body);
        r.dropped_total = self.d.dropped_total(self.queue.dropped());
        let payload = r.encode(self.encoding)?;
        match self.queue.push(kind, payload)? {
            Pushed::Stored => {}
            Pushed::DroppedOldest(_) | Pushed::DroppedNew => {
                self.d
                    .shared
                    .dropped_queue
                    .store(self.queue.dropped(), Ordering::Relaxed);
            }
        }
        Ok(())
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
                    "{} at the disk queue's bound, {} with the hand-off channel full",
                    self.queue.dropped(),
                    total - self.queue.dropped()
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
            if !self.link.publish(topic, false, payload, Some(id)) {
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
                self.link.reset();
                self.d.shared.connected.store(false, Ordering::Relaxed);
                let _ = resume.try_send(());
            }
            Net::Event(Event::Incoming(Incoming::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    log::warn!("telemetry: broker refused the connection: {:?}", ack.code);
                    return Ok(());
                }
                self.link.connected = true;
                self.link.reset();
                // A fresh connection hears the current drop count at once.
                self.last_drop_event = None;
                self.d.shared.connected.store(true, Ordering::Relaxed);
                self.d.shared.connects.fetch_add(1, Ordering::Relaxed);
                let filter = self.d.topics.command_filter();
                if let Err(e) = self.link.client.try_subscribe(filter, QoS::AtLeastOnce) {
                    log::warn!("telemetry: subscribing to commands: {e}");
                }
                self.link
                    .publish(self.d.topics.status(), true, ONLINE.into(), None);
                if self.d.opts.discovery && self.encoding == Encoding::Json {
                    for c in discovery::configs(&self.d.topics) {
                        let payload = serde_json::to_vec(&c.payload).map_err(SchemaError::from)?;
                        self.link.publish(c.topic, true, payload, None);
                    }
                }
                log::info!("telemetry: connected; {} records to send", self.queue.len());
            }
            Net::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(id) = self.link.awaiting.pop_front()
                    && pkid != 0
                {
                    self.link.inflight.insert(pkid, id);
                }
            }
            Net::Event(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(Some(id)) = self.link.inflight.remove(&ack.pkid) {
                    self.link.outstanding = self.link.outstanding.saturating_sub(1);
                    if self.queue.remove(id)? {
                        self.d.shared.acked.fetch_add(1, Ordering::Relaxed);
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
        let reply = if retain {
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
        self.link
            .publish(self.d.topics.reply(&name), false, bytes, None);
        Ok(())
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

enum Wake {
    Input(Input),
    InputsGone,
    Net(Net),
    NetGone,
    Idle,
}
