//! `thermo serve --fleet`: the service also answers requests from the fleet's work queue on
//! the broker ([`crate::telemetry::work`]). Once per check period it looks at the governor's
//! headroom and the scheduler: with at least [`FleetOptions::min_headroom_s`] of headroom and
//! no request waiting for a worker it subscribes to `$share/thermo/requests/<model>`, and
//! without them it unsubscribes, so the broker hands the next request to another board. An
//! answer it has taken finishes here: it runs through the same parsing, template, queue and
//! workers as an HTTP request and goes back to the request's response topic as chunks carrying
//! the request's correlation data, chunk 0 (empty) as soon as it is queued. A request that
//! cannot be answered (malformed, too large, refused by the API's checks, no worker free) gets
//! one chunk with its error; one without a usable response topic is logged and dropped.
//!
//! The board's presence (online, taking work, headroom, temperature) is retained on
//! `thermo/fleet/boards/<board>`, published on every connection, whenever it joins or leaves
//! the queue and every [`PRESENCE_EVERY`]; its Last Will, and a clean stop, say it is offline,
//! so a front re-queues what it was answering.
//!
//! `mqtt://` or `mqtts://` with the telemetry's credentials and TLS files; the driver is
//! [`run`], spawned by the service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop};
use tokio::sync::{mpsc, oneshot, watch};

use super::api::{parse_chat, parse_completion};
use super::http::{App, EVENT_BUFFER, tokenize};
use super::queue::Rejected;
use super::worker::{ClientGuard, Event, Job};
use crate::telemetry::broker::{BrokerConfig, BrokerError};
use crate::telemetry::work::{
    AnswerChunk, MAX_CORRELATION_BYTES, Presence, WorkRequest, cancel_topic, presence_topic,
    request_filter,
};

/// Answers in progress a front can cancel, by response topic and correlation data.
type Cancels = Arc<Mutex<HashMap<(String, Vec<u8>), oneshot::Sender<()>>>>;

/// Most answers followed for cancellation at once.
const MAX_CANCELLABLE: usize = 4096;

/// Largest packet the fleet link reads, bytes.
const MAX_PACKET_BYTES: u32 = 256 * 1024;
/// Headroom sent for a board that never reaches its setpoint flat out (JSON has no
/// infinity), seconds.
pub const HEADROOM_CAP_S: f64 = 1e6;
/// How often the presence is sent again while nothing changes.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(5);

/// Where the fleet's broker is and when to take work.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The broker, credentials and TLS (the client id is the fleet link's own).
    pub broker: BrokerConfig,
    /// The board's name in answer chunks and its presence topic.
    pub board: String,
    /// Seconds of flat-out headroom the governor must predict for the board to take work.
    pub min_headroom_s: f64,
    /// How often the headroom is checked.
    pub check: Duration,
}

/// The fleet link's client and event loop for `opts` serving `model`, with the Last Will
/// that marks the board offline (the caller runs [`run`] with them).
pub fn link(opts: &FleetOptions, model: &str) -> Result<(AsyncClient, EventLoop), BrokerError> {
    let will = presence_topic(&opts.board).ok().map(|topic| {
        LastWill::new(
            topic,
            Presence::offline(&opts.board, model).to_payload(),
            QoS::AtLeastOnce,
            true,
            None,
        )
    });
    let o = opts.broker.mqtt5_options(will, MAX_PACKET_BYTES)?;
    Ok(AsyncClient::new(o, 64))
}

/// Follows the headroom and answers queued requests until `stop` turns true.
pub async fn run(
    app: Arc<App>,
    opts: FleetOptions,
    client: AsyncClient,
    mut event_loop: EventLoop,
    mut stop: watch::Receiver<bool>,
) {
    let (filter, presence, cancel) = match (
        request_filter(&app.model_id),
        presence_topic(&opts.board),
        cancel_topic(&opts.board),
    ) {
        (Ok(f), Ok(p), Ok(c)) => (f, p, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            log::error!("fleet: {e}; not taking work from the queue");
            return;
        }
    };
    let cancels: Cancels = Arc::default();
    let mut subscribed = false;
    let mut connected = false;
    let mut told: Option<(bool, Instant)> = None;
    let mut check = tokio::time::interval(opts.check);
    let mut answers = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = answers.join_next(), if !answers.is_empty() => {}
            _ = check.tick() => {
                let wants = wants_work(&app, opts.min_headroom_s);
                if connected && wants != subscribed {
                    let sent = if wants {
                        client.subscribe(filter.clone(), QoS::AtLeastOnce).await
                    } else {
                        client.unsubscribe(filter.clone()).await
                    };
                    if sent.is_ok() {
                        subscribed = wants;
                        log::info!("fleet: {} the queue", if wants { "joined" } else { "left" });
                    }
                }
                let due = told.is_none_or(|(t, at)| t != subscribed || at.elapsed() >= PRESENCE_EVERY);
                if connected && due {
                    let p = presence_now(&app, &opts.board, subscribed);
                    if client.publish(presence.clone(), QoS::AtLeastOnce, true, p.to_payload()).await.is_ok() {
                        told = Some((subscribed, Instant::now()));
                    }
                }
            }
            ev = event_loop.poll() => match ev {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) if p.topic == cancel.as_bytes() => {
                    cancel_answer(&cancels, &p);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let c = cancels.clone();
                    answers.spawn(answer(app.clone(), client.clone(), opts.board.clone(), p, c));
                }
                // A new session has no subscription and no fresh presence: the next check
                // subscribes and tells again.
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    if client.try_subscribe(cancel.clone(), QoS::AtLeastOnce).is_err() {
                        log::warn!("fleet: could not follow {cancel}");
                    }
                    connected = true;
                    subscribed = false;
                    told = None;
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("fleet: broker: {e}");
                    connected = false;
                    subscribed = false;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    if subscribed {
        let _ = client.unsubscribe(filter).await;
    }
    // Answers in progress finish here (the service's drain bounds them); requests that
    // arrive meanwhile are refused with an error chunk by the closed queue.
    while !answers.is_empty() {
        tokio::select! {
            _ = answers.join_next() => {}
            ev = event_loop.poll() => match ev {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) if p.topic == cancel.as_bytes() => {
                    cancel_answer(&cancels, &p);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let c = cancels.clone();
                    answers.spawn(answer(app.clone(), client.clone(), opts.board.clone(), p, c));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            },
        }
    }
    let gone = Presence::offline(&opts.board, &app.model_id).to_payload();
    let _ = client.publish(presence, QoS::AtLeastOnce, true, gone).await;
    let _ = client.disconnect().await;
    // Lets the event loop send the offline presence and the disconnect.
    let flush = async {
        while let Ok(ev) = event_loop.poll().await {
            if matches!(ev, MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
}

/// The board's presence now.
fn presence_now(app: &App, board: &str, taking: bool) -> Presence {
    let status = app.freshness.governor().status();
    let load = app.scheduler.load();
    Presence {
        board: board.to_string(),
        model: app.model_id.clone(),
        online: true,
        taking,
        headroom_s: status.headroom_s.map(|h| h.min(HEADROOM_CAP_S)),
        temperature_c: status.temperature_c.map(f64::from),
        setpoint_c: Some(f64::from(status.setpoint_c)),
        running: u32::try_from(load.running).unwrap_or(u32::MAX),
        waiting: u32::try_from(load.waiting).unwrap_or(u32::MAX),
    }
}

/// Whether the board should be on the queue: the governor predicts at least
/// `min_headroom_s` of flat-out headroom and no request waits for a worker.
fn wants_work(app: &App, min_headroom_s: f64) -> bool {
    let status = app.freshness.governor().status();
    let headroom = status.headroom_s.unwrap_or(0.0);
    app.freshness.healthy() && headroom >= min_headroom_s && app.scheduler.load().waiting == 0
}

/// Stops the answer a front cancelled (its client is gone): the payload is the request's
/// response topic, the correlation data the request's.
fn cancel_answer(cancels: &Cancels, p: &Publish) {
    let Ok(topic) = std::str::from_utf8(&p.payload) else {
        return;
    };
    let correlation = p
        .properties
        .as_ref()
        .and_then(|pr| pr.correlation_data.as_ref())
        .map(|c| c.to_vec());
    let key = (topic.to_string(), correlation.unwrap_or_default());
    let stop = cancels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
    if let Some(stop) = stop {
        log::info!("fleet: the front cancelled an answer (its client is gone)");
        let _ = stop.send(());
    }
}

/// Answers one queued request on its response topic.
async fn answer(app: Arc<App>, client: AsyncClient, board: String, p: Publish, cancels: Cancels) {
    let props = p.properties.unwrap_or_default();
    let Some(topic) = props
        .response_topic
        .filter(|t| !t.is_empty() && !t.contains(['+', '#']) && t.len() <= 1024)
    else {
        log::warn!("fleet: a queued request without a usable response topic, dropped");
        return;
    };
    let correlation = props
        .correlation_data
        .filter(|c| c.len() <= MAX_CORRELATION_BYTES)
        .map(|c| c.to_vec());
    let mut reply = Reply {
        client,
        topic,
        correlation,
        board,
        seq: 0,
    };
    let (rx, guard) = match admit(&app, &p.payload).await {
        Ok(r) => r,
        Err(message) => {
            reply.error(message).await;
            return;
        }
    };
    let key = (
        reply.topic.clone(),
        reply.correlation.clone().unwrap_or_default(),
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    {
        let mut c = cancels.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() < MAX_CANCELLABLE {
            c.insert(key.clone(), stop_tx);
        }
    }
    // Chunk 0, empty: the request is queued here.
    reply.send(AnswerChunk::default()).await;
    reply.stream(rx, guard, stop_rx).await;
    cancels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
}

/// Parses and queues the request as the HTTP API would; the job's events and the guard whose
/// drop before the end stops it, or why not.
async fn admit(app: &App, payload: &[u8]) -> Result<(mpsc::Receiver<Event>, ClientGuard), String> {
    let work = WorkRequest::parse(payload).map_err(|e| e.to_string())?;
    let body = work.openai_body(&app.model_id).to_string();
    let parsed = match work.prompt {
        Some(_) => parse_completion(body.as_bytes(), &app.model_id, &app.limits),
        None => parse_chat(body.as_bytes(), &app.model_id, &app.limits),
    };
    let req = parsed.map_err(|e| {
        e.body()["error"]["message"]
            .as_str()
            .unwrap_or("invalid request")
            .to_string()
    })?;
    let served = app.slot.current();
    let ids = tokenize(&served.model, &req, app.limits.max_prompt_tokens)
        .await
        .map_err(|e| {
            e.body()["error"]["message"]
                .as_str()
                .unwrap_or("invalid prompt")
                .to_string()
        })?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let (job, guard) = Job::new(ids, req.options.clone(), tx, served.model.clone());
    match app.scheduler.submit("fleet", job) {
        Ok(()) => {}
        Err((Rejected::Full { .. }, _)) => return Err("busy: no worker free".to_string()),
        Err((Rejected::Closed, _)) => return Err("shutting down".to_string()),
    }
    Ok((rx, guard))
}

/// The chunks of one answer.
struct Reply {
    client: AsyncClient,
    topic: String,
    correlation: Option<Vec<u8>>,
    board: String,
    seq: u32,
}

impl Reply {
    /// Sends `chunk` as this board's next one.
    async fn send(&mut self, chunk: AnswerChunk) {
        let chunk = AnswerChunk {
            board: self.board.clone(),
            seq: self.seq,
            ..chunk
        };
        self.seq += 1;
        let props = PublishProperties {
            correlation_data: self.correlation.clone().map(Into::into),
            ..PublishProperties::default()
        };
        if let Err(e) = self
            .client
            .publish_with_properties(
                self.topic.clone(),
                QoS::AtLeastOnce,
                false,
                chunk.to_payload(),
                props,
            )
            .await
        {
            log::warn!("fleet: an answer chunk could not be queued: {e}");
        }
    }

    async fn error(&mut self, message: String) {
        log::info!("fleet: refused a queued request: {message}");
        self.send(AnswerChunk {
            done: true,
            error: Some(message),
            ..AnswerChunk::default()
        })
        .await;
    }

    /// Streams the answer until it ends, or until the front cancels it (then `guard` drops
    /// undelivered and the worker stops at the next token).
    async fn stream(
        &mut self,
        mut rx: mpsc::Receiver<Event>,
        guard: ClientGuard,
        mut cancelled: oneshot::Receiver<()>,
    ) {
        let mut tokens = 0u32;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                Ok(()) = &mut cancelled => return,
            };
            if matches!(ev, Some(Event::Done(_) | Event::Failed(_)) | None) {
                guard.delivered();
            }
            match ev {
                Some(Event::Text(text)) => {
                    tokens = tokens.saturating_add(1);
                    self.send(AnswerChunk {
                        text,
                        tokens,
                        ..AnswerChunk::default()
                    })
                    .await;
                }
                Some(Event::Done(f)) => {
                    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
                    self.send(AnswerChunk {
                        tokens: n(f.usage.completion_tokens),
                        done: true,
                        finish_reason: Some(f.finish_reason.to_string()),
                        prompt_tokens: Some(n(f.usage.prompt_tokens)),
                        footprint: serde_json::to_value(&f.footprint).ok(),
                        ..AnswerChunk::default()
                    })
                    .await;
                    return;
                }
                Some(Event::Failed(m)) => {
                    return self.error(format!("generation failed: {m}")).await;
                }
                None => return self.error("shutting down".to_string()).await,
            }
        }
    }
}
