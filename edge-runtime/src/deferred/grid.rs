//! Grid intensity sent over MQTT (the retained `thermo/grid/<region>` topic): a JSON object
//! with either the intensity now, `{"g_co2e_per_kwh": 350}`, which then holds for every
//! hour, or an hourly forecast, `{"hours": [{"time": "2026-12-02T06:00Z",
//! "g_co2e_per_kwh": 120}, ...]}` (a time is RFC 3339, a UTC date-time, or Unix seconds).
//! A payload is parsed completely under size and value bounds before it replaces anything.

use serde::Deserialize;

use crate::schedule::forecast::MAX_HOURS;
use crate::schedule::{Series, Source, parse_time};

/// Largest payload taken.
pub const MAX_GRID_PAYLOAD: usize = 256 << 10;

/// Highest intensity taken, g CO2e/kWh (above any grid's).
pub const MAX_G_PER_KWH: f64 = 5000.0;

/// The MQTT topic of a region's grid intensity.
pub fn grid_topic(region: &str) -> String {
    format!("thermo/grid/{region}")
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
}
