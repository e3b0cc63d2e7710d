//! The gateway's link to the broker: follows the boards' presence, routes answer chunks to
//! their requests, re-queues the requests of a board that went offline, and subscribes again
//! after every reconnection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{Event, EventLoop};
use tokio::sync::watch;

use super::flight::Delivery;
use super::{Books, Shared};
use crate::telemetry::work::{
    AnswerChunk, PRESENCE_FILTER, Presence, WorkRequest, cancel_topic, correlation, correlation_id,
    presence_topic, request_topic,
};

/// How often silent boards are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Runs the link until `stop` turns true.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut event_loop: EventLoop,
    mut stop: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = sweep.tick() => {
                let silent = shared.books().boards.sweep(Instant::now());
                for board in silent {
                    log::warn!("gateway: board {board} fell silent; counted offline");
                    lose(&shared, &board);
                }
            }
            ev = event_loop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // A clean session: subscribe again; the retained presence comes back.
                    let a = shared.client.try_subscribe(PRESENCE_FILTER, QoS::AtLeastOnce);
                    let b = shared
                        .client
                        .try_subscribe(shared.answers_topic.clone(), QoS::AtLeastOnce);
                    if a.is_err() || b.is_err() {
                        log::warn!("gateway: could not subscribe after connecting");
                    }
                    shared.connected.store(true, Ordering::Relaxed);
                    log::info!("gateway: connected to the broker");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&shared, p),
                Ok(_) => {}
                Err(e) => {
                    if shared.connected.swap(false, Ordering::Relaxed) {
                        log::warn!("gateway: broker: {e}");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    let _ = shared.client.try_disconnect();
    let flush = async {
        while let Ok(ev) = event_loop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
}

fn on_publish(shared: &Shared, p: Publish) {
    let Ok(topic) = std::str::from_utf8(&p.topic) else {
        return;
    };
    if topic == shared.answers_topic {
        let id = p
            .properties
            .as_ref()
            .and_then(|pr| pr.correlation_data.as_deref())
            .and_then(correlation_id);
        let Some(id) = id else {
            log::debug!("gateway: an answer chunk without our correlation data, dropped");
            return;
        };
        match AnswerChunk::parse(&p.payload) {
            Ok(chunk) => {
                let mut books = shared.books();
                let out = books.flights.on_chunk(id, chunk);
                for d in out {
                    if let Delivery::Done(e) = &d {
                        books.boards.answered(&e.board, e.completion_tokens);
                    }
                    route(&mut books, id, d);
                }
                send_cancels(shared, &mut books);
            }
            Err(e) => log::warn!("gateway: an answer chunk was refused: {e}"),
        }
    } else if topic.starts_with("thermo/fleet/boards/") {
        if p.payload.is_empty() {
            return;
        }
        let presence = match Presence::parse(&p.payload) {
            Ok(pr) if presence_topic(&pr.board).is_ok_and(|t| t == topic) => pr,
            Ok(pr) => {
                log::warn!(
                    "gateway: {topic} carries board {:?}'s presence, ignored",
                    pr.board
                );
                return;
            }
            Err(e) => {
                log::warn!("gateway: presence on {topic} refused: {e}");
                return;
            }
        };
        let lost = shared.books().boards.update(presence, Instant::now());
        if let Some(board) = lost {
            log::warn!("gateway: board {board} went offline");
            lose(shared, &board);
        }
        shared.boards_changed.notify_waiters();
    }
}

/// Sends `d` to request `id`'s handler; a handler gone or overrun loses its request.
pub(super) fn route(books: &mut Books, id: u64, d: Delivery) {
    let Some(tx) = books.routes.get(&id) else {
        return;
    };
    if tx.try_send(d).is_err() {
        books.routes.remove(&id);
        books.flights.remove(id);
    }
}

/// Tells the boards to stop the answers nobody waits for any more.
pub(super) fn send_cancels(shared: &Shared, books: &mut Books) {
    for (id, board) in books.flights.take_cancels() {
        let Ok(topic) = cancel_topic(&board) else {
            continue;
        };
        let props = PublishProperties {
            correlation_data: Some(correlation(id).into()),
            ..PublishProperties::default()
        };
        let payload = shared.answers_topic.clone().into_bytes();
        if let Err(e) = shared.client.try_publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            false,
            payload,
            props,
        ) {
            log::warn!("gateway: could not cancel request {id} on board {board}: {e}");
        }
    }
}

/// Puts what `board` was answering back on the queue, once.
fn lose(shared: &Shared, board: &str) {
    let mut books = shared.books();
    let super::flight::Lost { again, failed } = books.flights.board_lost(board);
    for (id, d) in failed {
        route(&mut books, id, d);
    }
    for (id, request) in again {
        log::info!("gateway: request {id} re-queued after board {board} went offline");
        shared.count(&shared.counters.requeued);
        if let Err(e) = publish(shared, id, &request) {
            route(&mut books, id, Delivery::Failed(e));
        }
    }
}

/// Puts request `id` on the queue with the gateway's response topic.
pub(super) fn publish(shared: &Shared, id: u64, request: &WorkRequest) -> Result<(), String> {
    let topic = request_topic(&shared.opts.model).map_err(|e| e.to_string())?;
    let props = PublishProperties {
        response_topic: Some(shared.answers_topic.clone()),
        correlation_data: Some(correlation(id).into()),
        ..PublishProperties::default()
    };
    shared
        .client
        .try_publish_with_properties(topic, QoS::AtLeastOnce, false, request.to_payload(), props)
        .map_err(|e| format!("the request could not be put on the broker's queue: {e}"))
}
