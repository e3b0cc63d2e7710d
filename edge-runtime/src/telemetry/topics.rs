//! The topic namespace of one device. Everything a device publishes or accepts lives under
//! `thermo/<device>/`:
//!
//! | topic | direction | retained | payload |
//! | --- | --- | --- | --- |
//! | `thermo/<device>/telemetry` | device → fleet | no | [`Record`](super::schema::Record) (tick, request, training) |
//! | `thermo/<device>/event` | device → fleet | no | [`Record`](super::schema::Record) with an event body |
//! | `thermo/<device>/status` | device → fleet | yes | `online` (birth) / `offline` (Last Will, clean stop) |
//! | `thermo/<device>/cmd/<name>` | fleet → device | no | JSON command ([`super::command`]) |
//! | `thermo/<device>/cmd/<name>/reply` | device → fleet | no | JSON reply |
//!
//! Home Assistant discovery configs go to `homeassistant/sensor/<device>/<object>/config`.

use thiserror::Error;

/// Root of the namespace.
pub const ROOT: &str = "thermo";
/// Payload of the retained birth message.
pub const ONLINE: &str = "online";
/// Payload of the Last Will and of the clean-stop status.
pub const OFFLINE: &str = "offline";

/// A device id that is not a single, wildcard-free topic level.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "device id {0:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.' (one topic level, no wildcards)"
)]
pub struct BadDeviceId(pub String);

/// Checks that a device id is one safe topic level.
pub fn validate_device_id(id: &str) -> Result<(), BadDeviceId> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(BadDeviceId(id.to_string()))
    }
}

/// The topics of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    device: String,
    base: String,
}

impl Topics {
    /// The namespace of `device` (validated with [`validate_device_id`]).
    pub fn new(device: &str) -> Result<Self, BadDeviceId> {
        validate_device_id(device)?;
        Ok(Self {
            device: device.to_string(),
            base: format!("{ROOT}/{device}"),
        })
    }

    /// The device id.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// `thermo/<device>/telemetry`.
    pub fn telemetry(&self) -> String {
        format!("{}/telemetry", self.base)
    }

    /// `thermo/<device>/event`.
    pub fn event(&self) -> String {
        format!("{}/event", self.base)
    }

    /// `thermo/<device>/status` (retained `online`/`offline`).
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// `thermo/<device>/cmd/+`: the subscription for commands. A single-level wildcard, so the
    /// device does not receive its own replies on `cmd/<name>/reply`.
    pub fn command_filter(&self) -> String {
        format!("{}/cmd/+", self.base)
    }

    /// `thermo/<device>/cmd/<name>`.
    pub fn command(&self, name: &str) -> String {
        format!("{}/cmd/{name}", self.base)
    }

    /// `thermo/<device>/cmd/<name>/reply`.
    pub fn reply(&self, name: &str) -> String {
        format!("{}/cmd/{name}/reply", self.base)
    }

    /// The command name of a topic on this device's `cmd/<name>`; `None` for any other topic
    /// (another device's, a reply, a deeper level).
    pub fn command_name<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/cmd/")?;
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }
}

/// What a topic under `thermo/` is, for a subscriber of the whole fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetTopic<'t> {
    /// `thermo/<device>/telemetry`.
    Telemetry(&'t str),
    /// `thermo/<device>/event`.
    Event(&'t str),
    /// `thermo/<device>/status`.
    Status(&'t str),
    /// Anything else (commands, replies, unknown).
    Other,
}

/// Classifies a topic received on a fleet subscription.
pub fn classify(topic: &str) -> FleetTopic<'_> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(ROOT), Some(dev), Some("telemetry"), None) => FleetTopic::Telemetry(dev),
        (Some(ROOT), Some(dev), Some("event"), None) => FleetTopic::Event(dev),
        (Some(ROOT), Some(dev), Some("status"), None) => FleetTopic::Status(dev),
        _ => FleetTopic::Other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn builds_the_documented_namespace() {
        let t = Topics::new("pi-7").unwrap();
        assert_eq!(t.telemetry(), "thermo/pi-7/telemetry");
        assert_eq!(t.event(), "thermo/pi-7/event");
        assert_eq!(t.status(), "thermo/pi-7/status");
        assert_eq!(t.command("setpoint"), "thermo/pi-7/cmd/setpoint");
        assert_eq!(t.reply("setpoint"), "thermo/pi-7/cmd/setpoint/reply");
        assert_eq!(t.command_filter(), "thermo/pi-7/cmd/+");
    }

    #[test]
    fn accepts_commands_only_on_the_devices_own_topic() {
        let t = Topics::new("pi-7").unwrap();
        assert_eq!(t.command_name("thermo/pi-7/cmd/setpoint"), Some("setpoint"));
        assert_eq!(t.command_name("thermo/pi-8/cmd/setpoint"), None);
        assert_eq!(t.command_name("thermo/pi-77/cmd/setpoint"), None);
        assert_eq!(t.command_name("thermo/pi-7/cmd/setpoint/reply"), None);
        assert_eq!(t.command_name("thermo/pi-7/cmd/"), None);
        assert_eq!(t.command_name("thermo/pi-7/telemetry"), None);
    }

    #[test]
    fn rejects_device_ids_that_are_not_one_plain_topic_level() {
        for bad in ["", "a/b", "+", "#", "pi 1", &"x".repeat(65)] {
            assert!(Topics::new(bad).is_err(), "{bad:?}");
        }
        assert!(Topics::new("rpi4-lab_2.a").is_ok());
    }

    #[test]
    fn classifies_fleet_topics() {
        assert_eq!(classify("thermo/a/telemetry"), FleetTopic::Telemetry("a"));
        assert_eq!(classify("thermo/a/status"), FleetTopic::Status("a"));
        assert_eq!(classify("thermo/a/event"), FleetTopic::Event("a"));
        assert_eq!(classify("thermo/a/cmd/x"), FleetTopic::Other);
        assert_eq!(classify("other/a/telemetry"), FleetTopic::Other);
    }
}
