//! `[telemetry]`: where records go (an MQTT broker, else JSON lines in a file) and how.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{KeyDoc, Problems, Section, doc, doc_eg};

/// `[telemetry]`: where records go (an MQTT broker, else JSON lines in a file) and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// Send telemetry at all.
    pub enabled: bool,
    /// Broker URL, `mqtt://host[:port]` or `mqtts://host[:port]`; `None`: the file.
    pub mqtt: Option<String>,
    /// Device id (one topic level); `None`: the host name.
    pub device_id: Option<String>,
    /// The JSON-lines file without a broker; `None`: the cache's `telemetry/<device>.jsonl`.
    pub file: Option<PathBuf>,
    /// Seconds between records.
    pub interval_s: f64,
    /// `json` or `postcard`, on the broker.
    pub encoding: String,
    /// The store-and-forward queue's folder; `None`: the cache's.
    pub queue_dir: Option<PathBuf>,
    /// Most records the queue keeps while the broker is away.
    pub queue_capacity: usize,
    /// CA certificates (PEM) for mqtts.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Broker user name.
    pub username: Option<String>,
    /// File whose first line is the broker password.
    pub password_file: Option<PathBuf>,
    /// Commands accepted (empty: all).
    pub allow: Vec<String>,
    /// Publish Home Assistant discovery configs.
    pub discovery: bool,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            enabled: true,
            mqtt: None,
            device_id: None,
            file: None,
            interval_s: 1.0,
            encoding: "json".into(),
            queue_dir: None,
            queue_capacity: 10_000,
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: None,
            allow: vec![],
            discovery: true,
        }
    }
}

impl Section for TelemetrySection {
    const NAME: &'static str = "telemetry";
    const DOCS: &'static [KeyDoc] = &[
        doc(
            "enabled",
            "Send telemetry (a record per governor interval and per answer).",
        ),
        doc_eg(
            "mqtt",
            "MQTT broker, mqtt://host[:port] or mqtts://host[:port]. Unset: JSON lines to `file`.",
            "\"mqtt://127.0.0.1:1883\"",
        ),
        doc_eg(
            "device_id",
            "Device id, one topic level of thermo/<device>/... Unset: the host name.",
            "\"pi-kitchen\"",
        ),
        doc_eg(
            "file",
            "Without a broker, append records as JSON lines here. Unset: the cache's \
             telemetry/<device>.jsonl.",
            "\"/var/lib/thermo/telemetry.jsonl\"",
        ),
        doc("interval_s", "Seconds between records (0.1..=3600)."),
        doc(
            "encoding",
            "Encoding on the broker: \"json\" or \"postcard\".",
        ),
        doc_eg(
            "queue_dir",
            "Folder of the store-and-forward queue. Unset: the cache's telemetry/<device>/queue.",
            "\"/var/lib/thermo/queue\"",
        ),
        doc(
            "queue_capacity",
            "Most records queued while the broker is away; the oldest telemetry goes first, \
             events are kept (1..=10000000).",
        ),
        doc_eg(
            "ca_file",
            "CA certificates (PEM) trusted for mqtts.",
            "\"/etc/thermo/ca.pem\"",
        ),
        doc_eg(
            "cert_file",
            "Client certificate chain (PEM), with key_file.",
            "\"/etc/thermo/client.pem\"",
        ),
        doc_eg(
            "key_file",
            "Client private key (PEM).",
            "\"/etc/thermo/client.key\"",
        ),
        doc_eg("username", "Broker user name.", "\"thermo\""),
        doc_eg(
            "password_file",
            "File whose first line is the broker password (or set THERMO_MQTT_PASSWORD).",
            "\"/etc/thermo/mqtt.password\"",
        ),
        doc(
            "allow",
            "Commands accepted (setpoint, pause_training, resume_training, interval, status); \
             empty: all.",
        ),
        doc(
            "discovery",
            "Publish Home Assistant MQTT discovery configs.",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if let Some(url) = &self.mqtt
            && let Err(e) = url.parse::<crate::telemetry::BrokerUrl>()
        {
            p.push("telemetry.mqtt", e.to_string());
        }
        if let Some(id) = &self.device_id
            && let Err(e) = crate::telemetry::topics::validate_device_id(id)
        {
            p.push("telemetry.device_id", e.to_string());
        }
        let (lo, hi) = (
            crate::telemetry::command::MIN_INTERVAL_S,
            crate::telemetry::command::MAX_INTERVAL_S,
        );
        if !(self.interval_s.is_finite() && (lo..=hi).contains(&self.interval_s)) {
            p.push(
                "telemetry.interval_s",
                format!("must be in {lo}..={hi} s, got {}", self.interval_s),
            );
        }
        if let Err(e) = self.encoding.parse::<crate::telemetry::Encoding>() {
            p.push("telemetry.encoding", e.to_string());
        }
        if !(1..=10_000_000).contains(&self.queue_capacity) {
            p.push(
                "telemetry.queue_capacity",
                format!("must be in 1..=10000000, got {}", self.queue_capacity),
            );
        }
        for (i, name) in self.allow.iter().enumerate() {
            if name.parse::<crate::telemetry::CommandName>().is_err() {
                p.push(
                    format!("telemetry.allow[{i}]"),
                    format!("unknown command {name:?}"),
                );
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push("telemetry.key_file", "cert_file and key_file go together");
        }
        if self.password_file.is_some() && self.username.is_none() {
            p.push("telemetry.username", "a password_file needs a username");
        }
    }
}
