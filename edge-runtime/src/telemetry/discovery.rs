//! Home Assistant MQTT discovery: one retained config per sensor on
//! `homeassistant/sensor/<device>/<object>/config`, reading the JSON telemetry topic, with
//! the device's status topic as availability, so a board appears in Home Assistant without
//! configuration. Only meaningful with the JSON encoding (Home Assistant cannot read
//! postcard).

use serde_json::{Value, json};

use super::topics::{OFFLINE, ONLINE, Topics};

/// One discovery message: topic and retained JSON payload.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryConfig {
    /// `homeassistant/sensor/<device>/<object>/config`.
    pub topic: String,
    /// The config.
    pub payload: Value,
}

/// The discovery configs of a device: temperature (°C), power (W), energy (Wh,
/// `total_increasing`) and tokens/s.
pub fn configs(topics: &Topics) -> Vec<DiscoveryConfig> {
    let dev = topics.device();
    // Requests and training runs share the telemetry topic: keep the state on those.
    let tick = |expr: &str| {
        format!(
            "{{% if 'tick' in value_json.body %}}{{{{ {expr} }}}}{{% else %}}{{{{ this.state }}}}{{% endif %}}"
        )
    };
    let sensors = [
        (
            "temperature",
            "SoC temperature",
            Some("temperature"),
            Some("measurement"),
            "°C",
            tick("value_json.body.tick.governing_c"),
        ),
        (
            "power",
            "Power",
            Some("power"),
            Some("measurement"),
            "W",
            tick("value_json.body.tick.power.watts if value_json.body.tick.power else none"),
        ),
        (
            "energy",
            "Energy",
            Some("energy"),
            Some("total_increasing"),
            "Wh",
            tick("(value_json.body.tick.energy_j / 3600) | round(4)"),
        ),
        (
            "tokens_per_s",
            "Tokens per second",
            None,
            Some("measurement"),
            "tok/s",
            tick("value_json.body.tick.tokens_per_s"),
        ),
    ];
    sensors
        .into_iter()
        .map(|(object, name, class, state_class, unit, template)| {
            let mut p = json!({
                "name": name,
                "unique_id": format!("thermo_{dev}_{object}"),
                "object_id": format!("thermo_{dev}_{object}"),
                "state_topic": topics.telemetry(),
                "value_template": template,
                "unit_of_measurement": unit,
                "availability_topic": topics.status(),
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "device": {
                    "identifiers": [format!("thermo_{dev}")],
                    "name": format!("thermo {dev}"),
                    "manufacturer": "thermo-adaptive-pipeline",
                },
            });
            if let (Some(c), Some(map)) = (class, p.as_object_mut()) {
                map.insert("device_class".into(), json!(c));
            }
            if let (Some(s), Some(map)) = (state_class, p.as_object_mut()) {
                map.insert("state_class".into(), json!(s));
            }
            DiscoveryConfig {
                topic: format!("homeassistant/sensor/{dev}/{object}/config"),
                payload: p,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn announces_four_sensors_with_units_and_availability() {
        let t = Topics::new("pi-3").unwrap();
        let c = configs(&t);
        let topics: Vec<_> = c.iter().map(|c| c.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/pi-3/temperature/config",
                "homeassistant/sensor/pi-3/power/config",
                "homeassistant/sensor/pi-3/energy/config",
                "homeassistant/sensor/pi-3/tokens_per_s/config",
            ]
        );
        assert_eq!(c[0].payload["unit_of_measurement"], "°C");
        assert_eq!(c[1].payload["unit_of_measurement"], "W");
        assert_eq!(c[2].payload["unit_of_measurement"], "Wh");
        assert_eq!(c[2].payload["state_class"], "total_increasing");
        assert_eq!(c[2].payload["device_class"], "energy");
        for x in &c {
            assert_eq!(x.payload["availability_topic"], "thermo/pi-3/status");
            assert_eq!(x.payload["state_topic"], "thermo/pi-3/telemetry");
        }
    }
}
