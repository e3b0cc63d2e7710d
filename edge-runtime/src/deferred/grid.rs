//! Grid intensity sent over MQTT, on a region's retained `thermo/grid/<region>` topic or on
//! one device's `thermo/<device>/cmd/grid` ([`GridFeed`]: the device's own message wins over
//! the region's). A message is a JSON object with either the intensity now, `{"g_co2e_per_kwh": 350}`, which then holds for every
//! hour, or an hourly forecast, `{"hours": [{"time": "2026-12-02T06:00Z",
//! "g_co2e_per_kwh": 120}, ...]}` (a time is RFC 3339, a UTC date-time, or Unix seconds).
//! A payload is parsed completely under size and value bounds before it replaces anything.

use serde::Deserialize;

use crate::schedule::forecast::MAX_HOURS;
use crate::schedule::{Series, Source, parse_time};
use crate::telemetry::topics::{BadDeviceId, Topics};

/// Largest payload taken.
pub const MAX_GRID_PAYLOAD: usize = 256 << 10;

/// Highest intensity taken, g CO2e/kWh (above any grid's).
pub const MAX_G_PER_KWH: f64 = 5000.0;

/// The MQTT topic of a region's grid intensity.
pub fn grid_topic(region: &str) -> String {
    format!("thermo/grid/{region}")
}

/// The MQTT topic of one device's own grid intensity, `thermo/<device>/cmd/grid` (the device
/// id checked as telemetry checks it).
pub fn device_grid_topic(device: &str) -> Result<String, BadDeviceId> {
    Ok(Topics::new(device)?.command("grid"))
}

/// Which followed topic a grid message came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GridOrigin {
    /// The device's own topic: a forecast or measurement for this board.
    Device,
    /// The region's topic, shared by the fleet.
    Region,
}

/// The grid intensity followed on a device's topic and its region's: the latest valid message
/// of each is kept, and the device's wins over the region's whenever there is one. A refused
/// message is reported and changes nothing, so it never replaces a good value.
#[derive(Clone, Debug)]
pub struct GridFeed {
    device_topic: String,
    region_topic: String,
    device: Option<Source>,
    region: Option<Source>,
}

impl GridFeed {
    /// Follows `device_topic` (see [`device_grid_topic`]) and `region_topic` (see
    /// [`grid_topic`]); a topic given as both counts as the device's.
    pub fn new(device_topic: String, region_topic: String) -> Self {
        Self {
            device_topic,
            region_topic,
            device: None,
            region: None,
        }
    }

    /// The topics to subscribe to, the device's first.
    pub fn topics(&self) -> [&str; 2] {
        [&self.device_topic, &self.region_topic]
    }

    /// Takes a message received on `topic`. Returns where it came from when it is kept, or
    /// why it is refused (a payload [`parse_grid`] refuses, or a topic not followed).
    pub fn receive(&mut self, topic: &str, payload: &[u8]) -> Result<GridOrigin, String> {
        let origin = if topic == self.device_topic {
            GridOrigin::Device
        } else if topic == self.region_topic {
            GridOrigin::Region
        } else {
            return Err(format!("{topic} is not a followed grid topic"));
        };
        let source = parse_grid(payload)?;
        match origin {
            GridOrigin::Device => self.device = Some(source),
            GridOrigin::Region => self.region = Some(source),
        }
        Ok(origin)
    }

    /// The grid intensity to plan on: the device's latest valid message, else the region's,
    /// else `None` (nothing valid has come yet).
    pub fn current(&self) -> Option<&Source> {
        self.device.as_ref().or(self.region.as_ref())
    }

    /// The latest valid message from `origin`'s topic.
    pub fn latest(&self, origin: GridOrigin) -> Option<&Source> {
        match origin {
            GridOrigin::Device => self.device.as_ref(),
            GridOrigin::Region => self.region.as_ref(),
        }
    }

    /// Whether a valid message has come on the device's topic.
    pub fn has_device(&self) -> bool {
        self.device.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    g_co2e_per_kwh: Option<f64>,
    hours: Option<Vec<HourValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HourValue {
    time: serde_json::Value,
    g_co2e_per_kwh: f64,
}

fn checked(v: f64) -> Result<f64, String> {
    if v.is_finite() && (0.0..=MAX_G_PER_KWH).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{v} g CO2e/kWh is not between 0 and {MAX_G_PER_KWH}"
        ))
    }
}

/// The grid intensity a payload carries, or why it is refused.
pub fn parse_grid(payload: &[u8]) -> Result<Source, String> {
    if payload.len() > MAX_GRID_PAYLOAD {
        return Err(format!(
            "{} bytes, more than the {MAX_GRID_PAYLOAD} a grid message may take",
            payload.len()
        ));
    }
    let p: Payload = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    match (p.g_co2e_per_kwh, p.hours) {
        (Some(v), None) => Ok(Source::Constant(checked(v)?)),
        (None, Some(hours)) => {
            if hours.is_empty() || hours.len() > MAX_HOURS {
                return Err(format!(
                    "{} hours; a forecast holds 1 to {MAX_HOURS}",
                    hours.len()
                ));
            }
            let mut points = Vec::with_capacity(hours.len());
            for h in hours {
                let t = match &h.time {
                    serde_json::Value::Number(n) => n
                        .as_i64()
                        .ok_or_else(|| format!("{n} is not Unix seconds"))?,
                    serde_json::Value::String(s) => parse_time(s)?,
                    other => return Err(format!("{other} is not a time")),
                };
                points.push((t, checked(h.g_co2e_per_kwh)?));
            }
            Ok(Source::Hourly(Series::from_points(points)))
        }
        _ => Err("give either g_co2e_per_kwh or hours".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_or_an_hourly_forecast_is_taken() {
        assert_eq!(
            parse_grid(br#"{"g_co2e_per_kwh": 350}"#),
            Ok(Source::Constant(350.0))
        );
        let s = parse_grid(
            br#"{"hours": [{"time": "2026-12-02T06:00Z", "g_co2e_per_kwh": 120},
                           {"time": 1796194800, "g_co2e_per_kwh": 80}]}"#,
        );
        let Ok(Source::Hourly(series)) = s else {
            panic!("{s:?}");
        };
        assert_eq!(series.len(), 2);
        assert_eq!(series.at(1_796_191_200), Some(120.0));
        assert_eq!(series.at(1_796_194_800 + 60), Some(80.0));
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        for (bad, why) in [
            (&br#"{"g_co2e_per_kwh": -1}"#[..], "not between"),
            (br#"{"g_co2e_per_kwh": 1e9}"#, "not between"),
            (br#"{"hours": []}"#, "1 to"),
            (br#"{}"#, "either"),
            (br#"{"g_co2e_per_kwh": 1, "hours": []}"#, "either"),
            (br#"{"g_co2e_per_kwh": 1, "extra": 2}"#, "unknown field"),
            (
                br#"{"hours": [{"time": true, "g_co2e_per_kwh": 1}]}"#,
                "not a time",
            ),
            (
                br#"{"hours": [{"time": "soon", "g_co2e_per_kwh": 1}]}"#,
                "is not a time",
            ),
            (b"not json", "expected"),
        ] {
            let e = parse_grid(bad).err().unwrap_or_default();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(bad));
        }
        let big = vec![b' '; MAX_GRID_PAYLOAD + 1];
        assert!(parse_grid(&big).is_err_and(|e| e.contains("more than")));
    }

    #[test]
    fn the_device_topic_is_the_grid_command_of_a_valid_device_id() {
        assert_eq!(
            device_grid_topic("pi-7").as_deref(),
            Ok("thermo/pi-7/cmd/grid")
        );
        for bad in ["", "a/b", "a+", "#", &"x".repeat(65)] {
            assert!(device_grid_topic(bad).is_err(), "{bad:?}");
        }
    }

    fn feed() -> GridFeed {
        GridFeed::new("thermo/pi-7/cmd/grid".into(), "thermo/grid/de".into())
    }

    #[test]
    fn the_device_message_wins_over_the_region_message_in_either_order() {
        let (dev, reg) = ("thermo/pi-7/cmd/grid", "thermo/grid/de");
        let mut f = feed();
        assert_eq!(f.topics(), [dev, reg]);
        assert_eq!(f.current(), None);
        assert_eq!(
            f.receive(reg, br#"{"g_co2e_per_kwh": 300}"#),
            Ok(GridOrigin::Region)
        );
        assert_eq!(f.current(), Some(&Source::Constant(300.0)));
        assert!(!f.has_device());
        assert_eq!(
            f.receive(dev, br#"{"g_co2e_per_kwh": 40}"#),
            Ok(GridOrigin::Device)
        );
        assert_eq!(f.current(), Some(&Source::Constant(40.0)));
        // A newer region message is kept but does not replace the device's.
        assert_eq!(
            f.receive(reg, br#"{"g_co2e_per_kwh": 500}"#),
            Ok(GridOrigin::Region)
        );
        assert_eq!(f.current(), Some(&Source::Constant(40.0)));
        assert_eq!(f.latest(GridOrigin::Region), Some(&Source::Constant(500.0)));

        let mut f = feed();
        f.receive(dev, br#"{"g_co2e_per_kwh": 40}"#).ok();
        f.receive(reg, br#"{"g_co2e_per_kwh": 300}"#).ok();
        assert_eq!(f.current(), Some(&Source::Constant(40.0)));
        assert!(f.has_device());
    }

    #[test]
    fn a_refused_message_never_replaces_a_good_value() {
        let (dev, reg) = ("thermo/pi-7/cmd/grid", "thermo/grid/de");
        let mut f = feed();
        assert!(f.receive(dev, b"not json").is_err());
        assert!(!f.has_device());
        assert_eq!(f.current(), None);
        f.receive(reg, br#"{"g_co2e_per_kwh": 300}"#).ok();
        // An invalid device message does not hide the region's good value.
        assert!(f.receive(dev, br#"{"g_co2e_per_kwh": -5}"#).is_err());
        assert_eq!(f.current(), Some(&Source::Constant(300.0)));
        f.receive(dev, br#"{"g_co2e_per_kwh": 40}"#).ok();
        // Nor does an invalid message replace the device's or the region's.
        assert!(f.receive(dev, br#"{"hours": []}"#).is_err());
        assert!(f.receive(reg, br#"{"g_co2e_per_kwh": 1e9}"#).is_err());
        assert_eq!(f.current(), Some(&Source::Constant(40.0)));
        // Nor does a message on a topic not followed.
        let e = f.receive("thermo/pi-8/cmd/grid", br#"{"g_co2e_per_kwh": 1}"#);
        assert!(e.is_err_and(|e| e.contains("not a followed")));
        assert_eq!(f.current(), Some(&Source::Constant(40.0)));
    }

    #[test]
    fn a_topic_given_as_both_counts_as_the_device_topic() {
        let mut f = GridFeed::new("t".into(), "t".into());
        assert_eq!(
            f.receive("t", br#"{"g_co2e_per_kwh": 1}"#),
            Ok(GridOrigin::Device)
        );
    }
}
