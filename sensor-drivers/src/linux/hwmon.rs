//! hwmon chips: `/sys/class/hwmon/hwmon*/{name,temp*,in*,curr*,power*,fan*,pwm*}` with their
//! `*_label`s. Values are converted from the hwmon ABI units (m°C, mV, mA, µW, RPM, 0-255 PWM)
//! into this crate's unit types.

use std::fs;
use std::path::{Path, PathBuf};

use super::sysfs::{self, SysfsError};
use crate::error::SensorError;
use crate::health::PlausibleRange;
use crate::traits::TempSensor;
use crate::units::{MilliAmps, MilliCelsius, MilliVolts, MilliWatts, Rpm, clamp_i32, div_round};

/// The hwmon class directory (`/sys/class/hwmon` on a device).
#[derive(Debug, Clone)]
pub struct Hwmon {
    root: PathBuf,
}

impl Default for Hwmon {
    fn default() -> Self {
        Hwmon::with_root("/sys/class/hwmon")
    }
}

impl Hwmon {
    /// Chips under `root` (the directory holding `hwmon*`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Hwmon { root: root.into() }
    }

    /// Every chip, by index; a chip whose `name` cannot be read is listed as `unknown`.
    pub fn chips(&self) -> Result<Vec<HwmonChip>, SysfsError> {
        Ok(sysfs::indexed_entries(&self.root, "hwmon")?
            .into_iter()
            .map(|(index, dir)| HwmonChip::at(index, dir))
            .collect())
    }

    /// The first chip named `name`.
    pub fn chip_by_name(&self, name: &str) -> Result<Option<HwmonChip>, SysfsError> {
        Ok(self.chips()?.into_iter().find(|chip| chip.name() == name))
    }
}

/// The quantity a channel measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    /// `temp*_input`, m°C.
    Temp,
    /// `in*_input`, mV.
    Voltage,
    /// `curr*_input`, mA.
    Current,
    /// `power*_input`, µW.
    Power,
    /// `fan*_input`, RPM.
    Fan,
    /// `pwm*`, 0-255.
    Pwm,
}

impl ChannelKind {
    const ALL: [(ChannelKind, &'static str); 6] = [
        (ChannelKind::Temp, "temp"),
        (ChannelKind::Voltage, "in"),
        (ChannelKind::Current, "curr"),
        (ChannelKind::Power, "power"),
        (ChannelKind::Fan, "fan"),
        (ChannelKind::Pwm, "pwm"),
    ];

    /// The file-name prefix (`temp`, `in`, ...).
    pub fn prefix(self) -> &'static str {
        match self {
            ChannelKind::Temp => "temp",
            ChannelKind::Voltage => "in",
            ChannelKind::Current => "curr",
            ChannelKind::Power => "power",
            ChannelKind::Fan => "fan",
            ChannelKind::Pwm => "pwm",
        }
    }

    /// Splits `temp3_input` / `pwm1` into kind and index.
    fn parse(file: &str) -> Option<(ChannelKind, u32)> {
        for (kind, prefix) in Self::ALL {
            let Some(rest) = file.strip_prefix(prefix) else {
                continue;
            };
            let digits = if kind == ChannelKind::Pwm {
                rest
            } else {
                let Some(digits) = rest.strip_suffix("_input") else {
                    continue;
                };
                digits
            };
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return digits.parse().ok().map(|index| (kind, index));
            }
        }
        None
    }
}

/// A value read from a channel, in this crate's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwmonValue {
    /// A temperature.
    Temp(MilliCelsius),
    /// A voltage.
    Voltage(MilliVolts),
    /// A current.
    Current(MilliAmps),
    /// A power (converted from µW, rounded).
    Power(MilliWatts),
    /// A fan speed.
    Fan(Rpm),
    /// A PWM duty, 0-255.
    Pwm(u8),
}

/// One measurement channel of a chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwmonChannel {
    /// What it measures.
    pub kind: ChannelKind,
    /// Its index (`temp3_input` has index 3).
    pub index: u32,
    /// Its `*_label`, when the driver provides one.
    pub label: Option<String>,
    /// The value file.
    pub input: PathBuf,
}

impl HwmonChannel {
    /// The channel's name as `node_exporter` would print it: the label, else `temp3` etc.
    pub fn display_name(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("{}{}", self.kind.prefix(), self.index))
    }

    /// Reads and converts the value.
    pub fn read(&self) -> Result<HwmonValue, SysfsError> {
        let raw = sysfs::read_i64(&self.input)?;
        let narrow = |v: i64| {
            i32::try_from(v).map_err(|_| SysfsError::Implausible {
                path: self.input.clone(),
                value: raw,
            })
        };
        Ok(match self.kind {
            ChannelKind::Temp => HwmonValue::Temp(MilliCelsius(narrow(raw)?)),
            ChannelKind::Voltage => HwmonValue::Voltage(MilliVolts(narrow(raw)?)),
            ChannelKind::Current => HwmonValue::Current(MilliAmps(narrow(raw)?)),
            ChannelKind::Power => HwmonValue::Power(MilliWatts(clamp_i32(div_round(raw, 1000)))),
            ChannelKind::Fan => HwmonValue::Fan(Rpm(u32::try_from(raw).map_err(|_| {
                SysfsError::Implausible {
                    path: self.input.clone(),
                    value: raw,
                }
            })?)),
            ChannelKind::Pwm => {
                HwmonValue::Pwm(u8::try_from(raw).map_err(|_| SysfsError::Implausible {
                    path: self.input.clone(),
                    value: raw,
                })?)
            }
        })
    }
}

/// One hwmon chip.
#[derive(Debug, Clone)]
pub struct HwmonChip {
    index: u32,
    dir: PathBuf,
    name: String,
}

impl HwmonChip {
    /// The chip in `dir` with index `index`; reads its `name` once.
    pub fn at(index: u32, dir: PathBuf) -> Self {
        let name = sysfs::read_text(&dir.join("name")).unwrap_or_else(|_| "unknown".to_owned());
        HwmonChip { index, dir, name }
    }

    /// The chip's index (`hwmonN`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The chip's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The chip's `name`, e.g. `cpu_thermal`, `pwmfan`, `ina3221`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every channel with a value file, sorted by kind then index.
    pub fn channels(&self) -> Result<Vec<HwmonChannel>, SysfsError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| SysfsError::from_io(&self.dir, e))?;
        let mut channels = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some((kind, index)) = ChannelKind::parse(file) else {
                continue;
            };
            let label =
                sysfs::read_text(&self.dir.join(format!("{}{}_label", kind.prefix(), index))).ok();
            channels.push(HwmonChannel {
                kind,
                index,
                label,
                input: entry.path(),
            });
        }
        channels.sort_by_key(|c| (c.kind, c.index));
        Ok(channels)
    }

    /// The channel of `kind` with `index`, if present.
    pub fn channel(&self, kind: ChannelKind, index: u32) -> Option<HwmonChannel> {
        let file = match kind {
            ChannelKind::Pwm => format!("pwm{index}"),
            _ => format!("{}{index}_input", kind.prefix()),
        };
        let input = self.dir.join(file);
        if !input.exists() {
            return None;
        }
        let label =
            sysfs::read_text(&self.dir.join(format!("{}{index}_label", kind.prefix()))).ok();
        Some(HwmonChannel {
            kind,
            index,
            label,
            input,
        })
    }

    /// A range-checked temperature sensor over the chip's `temp{index}_input`.
    pub fn temp_sensor(&self, index: u32) -> Option<HwmonTemp> {
        self.channel(ChannelKind::Temp, index)
            .map(|channel| HwmonTemp {
                channel,
                range: PlausibleRange::SOC,
            })
    }
}

/// A [`TempSensor`] over one hwmon temperature channel.
#[derive(Debug, Clone)]
pub struct HwmonTemp {
    channel: HwmonChannel,
    range: PlausibleRange,
}

impl HwmonTemp {
    /// Replaces the plausibility range (default [`PlausibleRange::SOC`]).
    pub fn with_range(mut self, range: PlausibleRange) -> Self {
        self.range = range;
        self
    }

    /// The channel read.
    pub fn channel(&self) -> &HwmonChannel {
        &self.channel
    }
}

impl TempSensor for HwmonTemp {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        match self.channel.read()? {
            HwmonValue::Temp(t) => self.range.check(t),
            _ => Err(SensorError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_file_names_parse_into_kind_and_index() {
        let cases = [
            ("temp1_input", Some((ChannelKind::Temp, 1))),
            ("in7_input", Some((ChannelKind::Voltage, 7))),
            ("curr2_input", Some((ChannelKind::Current, 2))),
            ("power1_input", Some((ChannelKind::Power, 1))),
            ("fan1_input", Some((ChannelKind::Fan, 1))),
            ("pwm1", Some((ChannelKind::Pwm, 1))),
            ("pwm1_enable", None),
            ("temp1_label", None),
            ("temp_input", None),
            ("in1_crit", None),
            ("name", None),
        ];
        for (file, expected) in cases {
            assert_eq!(ChannelKind::parse(file), expected, "{file}");
        }
    }
}
