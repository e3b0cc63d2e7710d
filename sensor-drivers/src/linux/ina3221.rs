//! Jetson power rails from the on-module INA3221 (I2C 0x40, 5 mΩ shunts; rails `VDD_IN`,
//! `VDD_CPU_GPU_CV`, `VDD_SOC` on Orin Nano/NX). JetPack 5+ exposes it as an hwmon chip named
//! `ina3221` with `in{N}_label`, `in{N}_input` (mV) and `curr{N}_input` (mA): power is V·I and the
//! "sum of shunt voltages" channel is skipped. JetPack 4 exposes an IIO device with
//! `rail_name_{N}` and `in_power{N}_input` (mW).

use std::path::{Path, PathBuf};

use super::hwmon::HwmonChip;
use super::sysfs::{self, SysfsError};
use crate::error::SensorError;
use crate::traits::{PowerReading, PowerSensor};
use crate::units::{MilliAmps, MilliVolts, MilliWatts};

/// Highest power a single rail of a small board can plausibly draw: 100 W.
const MAX_PLAUSIBLE_MW: i64 = 100_000;

#[derive(Debug, Clone)]
enum Source {
    Hwmon {
        voltage: PathBuf,
        current: PathBuf,
    },
    Iio {
        power: PathBuf,
        voltage: Option<PathBuf>,
        current: Option<PathBuf>,
    },
}

/// One power rail.
#[derive(Debug, Clone)]
pub struct PowerRail {
    name: String,
    source: Source,
}

fn is_sum_channel(label: &str) -> bool {
    label.to_ascii_lowercase().contains("sum")
}

impl PowerRail {
    /// The rails of an `ina3221` hwmon chip (JetPack 5+): every channel with a label, a voltage
    /// and a current, except the sum channel. Empty for other chips.
    pub fn from_hwmon(chip: &HwmonChip) -> Vec<PowerRail> {
        if chip.name() != "ina3221" {
            return Vec::new();
        }
        let mut rails = Vec::new();
        for index in 1..=8 {
            let dir = chip.path();
            let Ok(label) = sysfs::read_text(&dir.join(format!("in{index}_label"))) else {
                continue;
            };
            let voltage = dir.join(format!("in{index}_input"));
            let current = dir.join(format!("curr{index}_input"));
            if is_sum_channel(&label) || !voltage.exists() || !current.exists() {
                continue;
            }
            rails.push(PowerRail {
                name: label,
                source: Source::Hwmon { voltage, current },
            });
        }
        rails
    }

    /// The rails of a JetPack 4 INA3221 IIO directory (`rail_name_{N}`, `in_power{N}_input`).
    pub fn from_iio(dir: &Path) -> Vec<PowerRail> {
        let mut rails = Vec::new();
        for index in 0..8 {
            let Ok(name) = sysfs::read_text(&dir.join(format!("rail_name_{index}"))) else {
                continue;
            };
            let power = dir.join(format!("in_power{index}_input"));
            if is_sum_channel(&name) || !power.exists() {
                continue;
            }
            let optional = |file: String| {
                let path = dir.join(file);
                path.exists().then_some(path)
            };
            rails.push(PowerRail {
                name,
                source: Source::Iio {
                    power,
                    voltage: optional(format!("in_voltage{index}_input")),
                    current: optional(format!("in_current{index}_input")),
                },
            });
        }
        rails
    }

    /// The rail's name, e.g. `VDD_IN`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the rail.
    pub fn read(&self) -> Result<PowerReading, SysfsError> {
        let reading = match &self.source {
            Source::Hwmon { voltage, current } => {
                let mv = MilliVolts(sysfs::read_int(voltage)?);
                let ma = MilliAmps(sysfs::read_int(current)?);
                PowerReading {
                    power: MilliWatts::from_volts_amps(mv, ma),
                    voltage: Some(mv),
                    current: Some(ma),
                }
            }
            Source::Iio {
                power,
                voltage,
                current,
            } => PowerReading {
                power: MilliWatts(sysfs::read_int(power)?),
                voltage: voltage
                    .as_deref()
                    .map(sysfs::read_int)
                    .transpose()?
                    .map(MilliVolts),
                current: current
                    .as_deref()
                    .map(sysfs::read_int)
                    .transpose()?
                    .map(MilliAmps),
            },
        };
        let mw = i64::from(reading.power.0);
        if !(0..=MAX_PLAUSIBLE_MW).contains(&mw) {
            let path = match &self.source {
                Source::Hwmon { current, .. } => current.clone(),
                Source::Iio { power, .. } => power.clone(),
            };
            return Err(SysfsError::Implausible { path, value: mw });
        }
        Ok(reading)
    }
}

impl PowerSensor for PowerRail {
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        self.read().map_err(SensorError::from)
    }
}
