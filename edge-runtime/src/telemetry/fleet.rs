//! The fleet view: a subscriber of every device's telemetry, status and events, folded into
//! one table (device, online, temperature, setpoint, tokens/s, energy, throttle events). The
//! model ([`FleetView`]) is plain data fed with `(topic, payload)` pairs, so it is tested
//! without a terminal or a broker; [`watch`] feeds it from a broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Incoming, QoS};

use super::broker::{BrokerConfig, BrokerError};
use super::schema::{Body, Encoding, Record};
use super::topics::{FleetTopic, OFFLINE, ONLINE, ROOT, classify};

/// One device's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceRow {
    /// Device id.
    pub device: String,
    /// Online per its retained status; `None` before any status was seen.
    pub online: Option<bool>,
    /// Governing temperature in °C from the latest tick.
    pub temperature_c: Option<f32>,
    /// Setpoint in °C from the latest tick.
    pub setpoint_c: Option<f32>,
    /// Tokens per second from the latest tick.
    pub tokens_per_s: Option<f32>,
    /// Energy since the device started, in J, from the latest tick.
    pub energy_j: Option<f64>,
    /// Firmware throttle events from the latest tick.
    pub throttle_events: u64,
    /// Highest sequence number seen.
    pub last_seq: Option<u64>,
    /// Distinct records received (deduplicated by sequence number).
    pub records: u64,
    /// Records received again (sequence number not above the highest seen).
    pub duplicates: u64,
    /// Sequence numbers skipped (never received before a higher one).
    pub gaps: u64,
}

/// The table of devices.
#[derive(Clone, Debug, Default)]
pub struct FleetView {
    encoding: Encoding,
    rows: BTreeMap<String, DeviceRow>,
    undecodable: u64,
}

impl FleetView {
    /// An empty view that decodes records as `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            ..Self::default()
        }
    }

    /// Folds one message in. Returns false for a message that is not a fleet message or
    /// does not decode (counted in [`FleetView::undecodable`]).
    pub fn ingest(&mut self, topic: &str, payload: &[u8]) -> bool {
        match classify(topic) {
            FleetTopic::Status(dev) => {
                let online = match payload {
                    p if p == ONLINE.as_bytes() => Some(true),
                    p if p == OFFLINE.as_bytes() => Some(false),
                    _ => {
                        self.undecodable += 1;
                        return false;
                    }
                };
                self.row(dev).online = online;
                true
            }
            FleetTopic::Telemetry(dev) | FleetTopic::Event(dev) => {
                let Ok(r) = Record::decode(payload, self.encoding) else {
                    self.undecodable += 1;
                    return false;
                };
                if r.device != dev {
                    self.undecodable += 1;
                    return false;
                }
                let row = self.row(dev);
                if row.last_seq.is_some_and(|last| r.seq <= last) {
                    row.duplicates += 1;
                    return true;
                }
                let expected = row.last_seq.map_or(r.seq, |l| l + 1);
                row.gaps += r.seq - expected.min(r.seq);
                row.last_seq = Some(r.seq);
                row.records += 1;
                if let Body::Tick(t) = &r.body {
                    row.temperature_c = t.governing_c;
                    row.setpoint_c = Some(t.governor.setpoint_c);
                    row.tokens_per_s = t.tokens_per_s;
                    row.energy_j = Some(t.energy_j);
                    row.throttle_events = t.throttle_events;
                }
                true
            }
            FleetTopic::Other => false,
        }
    }

    fn row(&mut self, dev: &str) -> &mut DeviceRow {
        self.rows
            .entry(dev.to_string())
            .or_insert_with(|| DeviceRow {
                device: dev.to_string(),
                ..DeviceRow::default()
            })
    }

    /// Rows in device order.
    pub fn rows(&self) -> impl Iterator<Item = &DeviceRow> {
        self.rows.values()
    }

    /// One device's row.
    pub fn get(&self, device: &str) -> Option<&DeviceRow> {
        self.rows.get(device)
    }

    /// Messages that did not decode.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Distinct records over all devices.
    pub fn total_records(&self) -> u64 {
        self.rows.values().map(|r| r.records).sum()
    }

    /// The table as text, one device per line after a header.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{:<20} {:>7} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}\n",
            "device", "online", "temp °C", "set °C", "tok/s", "energy Wh", "throttle", "records"
        );
        let opt = |v: Option<f32>| v.map_or("--".to_string(), |v| format!("{v:.1}"));
        for r in self.rows.values() {
            let online = match r.online {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            let _ = writeln!(
                s,
                "{:<20} {:>7} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}",
                r.device,
                online,
                opt(r.temperature_c),
                opt(r.setpoint_c),
                opt(r.tokens_per_s),
                r.energy_j
                    .map_or("--".to_string(), |j| format!("{:.3}", j / 3600.0)),
                r.throttle_events,
                r.records
            );
        }
        s
    }
}

/// The subscription filters of a fleet watcher, optionally as a `$share/<group>/` shared
/// subscription so several watchers split the load.
pub fn filters(share: Option<&str>) -> Vec<String> {
    ["telemetry", "status", "event"]
        .iter()
        .map(|leaf| {
            let f = format!("{ROOT}/+/{leaf}");
            match share {
                Some(g) => format!("$share/{g}/{f}"),
                None => f,
            }
        })
        .collect()
}

/// Subscribes to the fleet and folds messages into `view` until `for_how_long` has passed
/// (forever when `None`) or `on_tick` returns false; `on_tick` runs about once per `refresh`.
/// Resubscribes after every reconnect.
pub fn watch(
    broker: &BrokerConfig,
    share: Option<&str>,
    view: &mut FleetView,
    for_how_long: Option<Duration>,
    refresh: Duration,
    mut on_tick: impl FnMut(&FleetView) -> bool,
) -> Result<(), BrokerError> {
    let mut options = broker.mqtt_options(None)?;
    options.set_inflight(100);
    let (client, mut conn) = Client::new(options, 64);
    let start = Instant::now();
    let mut last_tick = Instant::now();
    let filters = filters(share);
    loop {
        if for_how_long.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                for f in &filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        log::warn!("fleet: subscribing to {f}: {e}");
                    }
                }
            }
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                view.ingest(&p.topic, &p.payload);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                log::warn!("fleet: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= refresh {
            if !on_tick(view) {
                break;
            }
            last_tick = Instant::now();
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::telemetry::fixtures;
    use crate::telemetry::schema::Tick;

    fn tick(dev: &str, seq: u64, temp: f32) -> Vec<u8> {
        let body = Body::Tick(Tick {
            governing_c: Some(temp),
            tokens_per_s: Some(10.0),
            energy_j: 7200.0,
            throttle_events: 2,
            ..fixtures::tick(0, 0)
        });
        Record::new(dev, seq, 0, body)
            .encode(Encoding::Json)
            .unwrap()
    }

    #[test]
    fn folds_ticks_and_status_into_rows_and_counts_duplicates_and_gaps() {
        let mut v = FleetView::new(Encoding::Json);
        assert!(v.ingest("thermo/a/status", b"online"));
        assert!(v.ingest("thermo/a/telemetry", &tick("a", 0, 60.0)));
        assert!(v.ingest("thermo/a/telemetry", &tick("a", 1, 61.0)));
        assert!(v.ingest("thermo/a/telemetry", &tick("a", 1, 61.0)));
        assert!(v.ingest("thermo/a/telemetry", &tick("a", 4, 62.0)));
        assert!(v.ingest("thermo/b/telemetry", &tick("b", 9, 50.0)));
        assert!(v.ingest("thermo/b/status", b"offline"));
        let a = v.get("a").unwrap();
        assert_eq!(a.online, Some(true));
        assert_eq!((a.records, a.duplicates, a.gaps), (3, 1, 2));
        assert_eq!(a.temperature_c, Some(62.0));
        let b = v.get("b").unwrap();
        assert_eq!((b.online, b.records, b.gaps), (Some(false), 1, 0));
        let table = v.render();
        assert!(table.lines().count() == 3, "{table}");
        assert!(table.contains("62.0") && table.contains("2.000"), "{table}");
    }

    #[test]
    fn ignores_junk_and_records_claiming_another_device() {
        let mut v = FleetView::new(Encoding::Json);
        assert!(!v.ingest("thermo/a/telemetry", b"{not json"));
        assert!(!v.ingest("thermo/a/telemetry", &tick("b", 0, 1.0)));
        assert!(!v.ingest("thermo/a/status", b"maybe"));
        assert!(!v.ingest("thermo/a/cmd/setpoint", b"{}"));
        assert_eq!(v.undecodable(), 3);
        assert_eq!(v.total_records(), 0);
    }

    #[test]
    fn shared_subscriptions_prefix_every_filter() {
        assert_eq!(filters(None)[0], "thermo/+/telemetry");
        assert_eq!(filters(Some("g1"))[2], "$share/g1/thermo/+/event");
    }
}
