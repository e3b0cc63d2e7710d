//! `thermo serve --fleet`: the service also answers requests from the fleet's work queue on
//! the broker ([`crate::telemetry::work`]). Once per check period it looks at the governor's
//! headroom and the scheduler: with at least [`FleetOptions::min_headroom_s`] of headroom and
//! no request waiting for a worker it subscribes to `$share/thermo/requests/<model>`, and
//! without them it unsubscribes, so the broker hands the next request to another board. An
//! answer it has taken finishes here: it runs through the same parsing, template, queue and
//! workers as an HTTP request and goes back to the request's response topic as chunks carrying
//! the request's correlation data. A request that cannot be answered (malformed, too large,
//! refused by the API's checks, no worker free) gets one chunk with its error; one without a
//! usable response topic is logged and dropped.
//!
//! Plain `mqtt://` only; the driver is [`run`], spawned by the service.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::api::parse_chat;
use super::http::{App, EVENT_BUFFER, tokenize};
use super::queue::Rejected;
use super::worker::{Event, Job};
use crate::telemetry::work::{AnswerChunk, MAX_CORRELATION_BYTES, WorkRequest, request_filter};

/// Largest packet the fleet link reads, bytes.
const MAX_PACKET_BYTES: u32 = 256 * 1024;

/// Where the fleet's broker is and when to take work.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// The board's name in answer chunks.
    pub board: String,
    /// Seconds of flat-out headroom the governor must predict for the board to take work.
    pub min_headroom_s: f64,
    /// How often the headroom is checked.
    pub check: Duration,
}

/// The fleet link's client and event loop for `opts` (the caller runs [`run`] with them).
pub fn link(opts: &FleetOptions) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(&opts.client_id, &opts.host, opts.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_start(true);
    o.set_max_packet_size(Some(MAX_PACKET_BYTES));
    AsyncClient::new(o, 64)
}

/// Follows the headroom and answers queued requests until `stop` turns true.
pub async fn run(
    app: Arc<App>,
    opts: FleetOptions,
    client: AsyncClient,
    mut event_loop: EventLoop,
    mut stop: watch::Receiver<bool>,
) {
    let filter = match request_filter(&app.model_id) {
        Ok(f) => f,
        Err(e) => {
            log::error!("fleet: {e}; not taking work from the queue");
            return;
        }
    };
    let mut subscribed = false;
    let mut check = tokio::time::interval(opts.check);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = check.tick() => {
                let wants = wants_work(&app, opts.min_headroom_s);
                if wants != subscribed {
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
            }
            ev = event_loop.poll() => match ev {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    tokio::spawn(answer(app.clone(), client.clone(), opts.board.clone(), p));
                }
                // A new session has no subscription: the next check subscribes again.
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => subscribed = false,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("fleet: broker: {e}");
                    subscribed = false;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    if subscribed {
        let _ = client.unsubscribe(filter).await;
    }
    let _ = client.disconnect().await;
}

/// Whether the board should be on the queue: the governor predicts at least
/// `min_headroom_s` of flat-out headroom and no request waits for a worker.
fn wants_work(app: &App, min_headroom_s: f64) -> bool {
    let status = app.freshness.governor().status();
    let headroom = status.headroom_s.unwrap_or(0.0);
    app.freshness.healthy() && headroom >= min_headroom_s && app.scheduler.load().waiting == 0
}

/// Answers one queued request on its response topic.
async fn answer(app: Arc<App>, client: AsyncClient, board: String, p: Publish) {
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
    let rx = match admit(&app, &p.payload).await {
        Ok(rx) => rx,
        Err(message) => {
            reply.error(message).await;
            return;
        }
    };
    reply.stream(rx).await;
}

/// Parses and queues the request as the HTTP API would; the job's events, or why not.
async fn admit(app: &App, payload: &[u8]) -> Result<mpsc::Receiver<Event>, String> {
    let work = WorkRequest::parse(payload).map_err(|e| e.to_string())?;
    let body = json!({
        "model": app.model_id,
        "messages": work.messages,
        "max_tokens": work.max_tokens,
    });
    let req = parse_chat(body.to_string().as_bytes(), &app.model_id, &app.limits).map_err(|e| {
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
    // No client connection to lose: the chunks go to the broker's session whatever happens
    // to the link, so the job never counts as a client gone.
    guard.delivered();
    Ok(rx)
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
    async fn send(&mut self, text: String, tokens: u32, done: bool, error: Option<String>) {
        let chunk = AnswerChunk {
            board: self.board.clone(),
            seq: self.seq,
            text,
            tokens,
            done,
            error,
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
        self.send(String::new(), 0, true, Some(message)).await;
    }

    async fn stream(&mut self, mut rx: mpsc::Receiver<Event>) {
        let mut tokens = 0u32;
        loop {
            match rx.recv().await {
                Some(Event::Text(t)) => {
                    tokens = tokens.saturating_add(1);
                    self.send(t, tokens, false, None).await;
                }
                Some(Event::Done(f)) => {
                    let n = u32::try_from(f.usage.completion_tokens).unwrap_or(u32::MAX);
                    self.send(String::new(), n, true, None).await;
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
