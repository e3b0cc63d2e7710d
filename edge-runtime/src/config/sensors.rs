//! `[sensors]`: the board's sensors, as the sensing layer's own [`SensingConfig`].

use super::{KeyDoc, Problems, Section, doc, doc_eg};
use crate::sensing::SensingConfig;

impl Section for SensingConfig {
    const NAME: &'static str = "sensors";
    const DOCS: &'static [KeyDoc] = &[
        doc(
            "root",
            "Filesystem root the sysfs and procfs paths hang from (\"/\" on a device).",
        ),
        doc_eg(
            "zone",
            "Type of the thermal zone that governs. Unset: the board's own (cpu-thermal, \
             tj-thermal).",
            "\"cpu-thermal\"",
        ),
        doc_eg(
            "sim",
            "Force the simulated SoC: rpi4, rpi5, rpi5-active, jetson-orin-nano, or a TOML \
             profile path. Unset: real sensors when present, else the simulated rpi5.",
            "\"rpi5\"",
        ),
        doc(
            "time_scale",
            "Simulated seconds per wall second for the simulated SoC: above 0, at most 1000.",
        ),
        doc_eg(
            "i2c",
            "I2C sensors ([[sensors.i2c]] tables: name, bus, address, chip, role, \
             shunt_micro_ohms, max_current_ma). systemd/thermo.service must allow each bus \
             with DeviceAllow=.",
            "[{ name = \"board\", bus = \"/dev/i2c-1\", address = 0x40, chip = \"ina219\", role = \"board_power\", shunt_micro_ohms = 100000, max_current_ma = 3200 }]",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if let Err(e) = self.validate() {
            p.push("sensors", format!("{e:#}"));
        }
    }
}
