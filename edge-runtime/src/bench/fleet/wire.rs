//! The bench's MQTT 5 links to one real broker: one client per board and one for the front.
//! A [`Wire`] handle and its [`LinkDriver`]s come in pairs (STYLE rule 9): the caller runs
//! each driver (it polls its client's event loop and forwards what arrives, tagged with the
//! link, into one bounded channel); the runner acts through the handle and waits, with a
//! bound, for what its action must cause (an acknowledgement, a delivery), keeping anything
//! else that arrives meanwhile for later. So the broker carries every request and answer while
//! the boards' clocks stay simulated and in lock-step.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;

use super::FleetError;

/// Largest packet a link accepts, bytes.
const MAX_PACKET_BYTES: u32 = 256 * 1024;
/// Events buffered between the drivers and the runner.
const CHANNEL: usize = 1024;

/// What arrived on a link.
#[derive(Clone, Debug, PartialEq)]
pub enum WireEvent {
    /// The broker accepted the connection.
    Connected,
    /// A message: topic, payload, correlation data, response topic.
    Message {
        /// Topic it was published to.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// MQTT 5 correlation data, if any.
        correlation: Option<Vec<u8>>,
        /// MQTT 5 response topic, if any.
        response_topic: Option<String>,
    },
    /// A subscription was acknowledged (`true`: granted).
    SubAck(bool),
    /// An unsubscription was acknowledged.
    UnsubAck,
    /// A QoS 1 publish was acknowledged; `false` when the broker had no matching subscriber.
    PubAck(bool),
    /// The connection failed (the driver keeps reconnecting).
    Down(String),
}

/// Polls one client's event loop and forwards its events.
pub struct LinkDriver {
    link: usize,
    event_loop: EventLoop,
    tx: mpsc::Sender<(usize, WireEvent)>,
}

impl LinkDriver {
    /// Runs until the [`Wire`] is dropped.
    pub async fn run(mut self) {
        loop {
            let ev = match self.event_loop.poll().await {
                Ok(Event::Incoming(p)) => match p {
                    Packet::ConnAck(_) => Some(WireEvent::Connected),
                    Packet::Publish(p) => {
                        let props = p.properties.unwrap_or_default();
                        Some(WireEvent::Message {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            correlation: props.correlation_data.map(|c| c.to_vec()),
                            response_topic: props.response_topic,
                        })
                    }
                    Packet::SubAck(a) => Some(WireEvent::SubAck(a.return_codes.iter().all(|c| {
                        matches!(
                            c,
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                        )
                    }))),
                    Packet::UnsubAck(_) => Some(WireEvent::UnsubAck),
                    Packet::PubAck(a) => Some(WireEvent::PubAck(!matches!(
                        a.reason,
                        PubAckReason::NoMatchingSubscribers
                    ))),
                    _ => None,
                },
                Ok(Event::Outgoing(_)) => None,
                Err(e) => {
                    if self
                        .tx
                        .send((self.link, WireEvent::Down(e.to_string())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    None
                }
            };
            if let Some(ev) = ev
                && self.tx.send((self.link, ev)).await.is_err()
            {
                return;
            }
        }
    }
}

/// The runner's side of the links.
pub struct Wire {
    clients: Vec<AsyncClient>,
    rx: mpsc::Receiver<(usize, WireEvent)>,
    kept: VecDeque<(usize, WireEvent)>,
    bound: Duration,
}

impl Wire {
    /// `links` clients named `<prefix>-<n>` to the broker at `host:port`, each waiting for
    /// an answer at most `bound`; returns the handle and one driver per link.
    pub fn new(
        host: &str,
        port: u16,
        prefix: &str,
        links: usize,
        bound: Duration,
    ) -> (Self, Vec<LinkDriver>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let mut clients = Vec::with_capacity(links);
        let mut drivers = Vec::with_capacity(links);
        for link in 0..links {
            let mut o = MqttOptions::new(format!("{prefix}-{link}"), host, port);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_clean_start(true);
            o.set_max_packet_size(Some(MAX_PACKET_BYTES));
            let (client, event_loop) = AsyncClient::new(o, 64);
            clients.push(client);
            drivers.push(LinkDriver {
                link,
                event_loop,
                tx: tx.clone(),
            });
        }
        (
            Self {
                clients,
                rx,
                kept: VecDeque::new(),
                bound,
            },
            drivers,
        )
    }

    /// Waits until every link is connected.
    pub async fn connected(&mut self) -> Result<(), FleetError> {
        for link in 0..self.clients.len() {
            self.expect(
                |l, e| l == link && *e == WireEvent::Connected,
                "a connection",
            )
            .await?;
        }
        Ok(())
    }

    /// Subscribes `link` to `filter` at QoS 1 and waits for the grant.
    pub async fn subscribe(&mut self, link: usize, filter: &str) -> Result<(), FleetError> {
        self.client(link)?
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| FleetError::Broker(e.to_string()))?;
        let (_, ev) = self
            .expect(
                |l, e| l == link && matches!(e, WireEvent::SubAck(_)),
                "a SUBACK",
            )
            .await?;
        match ev {
            WireEvent::SubAck(true) => Ok(()),
            _ => Err(FleetError::Broker(format!(
                "subscription to {filter} refused"
            ))),
        }
    }

    /// Unsubscribes `link` from `filter` and waits for the acknowledgement.
    pub async fn unsubscribe(&mut self, link: usize, filter: &str) -> Result<(), FleetError> {
        self.client(link)?
            .unsubscribe(filter)
            .await
            .map_err(|e| FleetError::Broker(e.to_string()))?;
        self.expect(|l, e| l == link && *e == WireEvent::UnsubAck, "an UNSUBACK")
            .await
            .map(|_| ())
    }

    /// Publishes at QoS 1 from `link` with MQTT 5 correlation data and response topic, waits
    /// for the PUBACK and returns whether a subscriber matched.
    pub async fn publish(
        &mut self,
        link: usize,
        topic: &str,
        payload: Vec<u8>,
        correlation: Vec<u8>,
        response_topic: Option<String>,
    ) -> Result<bool, FleetError> {
        let props = PublishProperties {
            correlation_data: Some(correlation.into()),
            response_topic,
            ..PublishProperties::default()
        };
        self.client(link)?
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
            .await
            .map_err(|e| FleetError::Broker(e.to_string()))?;
        let (_, ev) = self
            .expect(
                |l, e| l == link && matches!(e, WireEvent::PubAck(_)),
                "a PUBACK",
            )
            .await?;
        Ok(ev == WireEvent::PubAck(true))
    }

    /// Waits for a message on `topic` at any link but `from`; returns the link and the event.
    pub async fn delivery(
        &mut self,
        topic: &str,
        not_from: Option<usize>,
    ) -> Result<(usize, WireEvent), FleetError> {
        self.expect(
            |l, e| {
                Some(l) != not_from
                    && matches!(e, WireEvent::Message { topic: t, .. } if t == topic)
            },
            "a delivery",
        )
        .await
    }

    /// Disconnects every link.
    pub async fn close(&self) {
        for c in &self.clients {
            let _ = c.disconnect().await;
        }
    }

    fn client(&self, link: usize) -> Result<&AsyncClient, FleetError> {
        self.clients
            .get(link)
            .ok_or_else(|| FleetError::Broker(format!("no link {link}")))
    }

    /// The first event, kept or new, that `want` accepts, within the bound; others are kept.
    async fn expect(
        &mut self,
        want: impl Fn(usize, &WireEvent) -> bool,
        what: &str,
    ) -> Result<(usize, WireEvent), FleetError> {
        if let Some(i) = self.kept.iter().position(|(l, e)| want(*l, e))
            && let Some(found) = self.kept.remove(i)
        {
            return Ok(found);
        }
        let deadline = tokio::time::Instant::now() + self.bound;
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            match next {
                Ok(Some((l, e))) if want(l, &e) => return Ok((l, e)),
                Ok(Some((l, WireEvent::Down(m)))) => {
                    return Err(FleetError::Broker(format!(
                        "link {l} lost the broker while waiting for {what}: {m}"
                    )));
                }
                Ok(Some(other)) => {
                    if self.kept.len() >= CHANNEL {
                        self.kept.pop_front();
                    }
                    self.kept.push_back(other);
                }
                Ok(None) => return Err(FleetError::Broker("every link stopped".to_string())),
                Err(_) => {
                    return Err(FleetError::Broker(format!(
                        "no {what} within {:?}",
                        self.bound
                    )));
                }
            }
        }
    }
}
