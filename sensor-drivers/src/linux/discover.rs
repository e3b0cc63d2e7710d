//! What a sysfs root holds, for the `thermo sensors` listing: board, thermal zones (with
//! temperature, mode and trips), hwmon chips and their channels, cooling devices, cpufreq
//! policies, Pi throttle flags and INA3221 rails. Discovery never fails: unreadable items are
//! listed with their error, and a root with none of them is [`Discovery::is_empty`].

use std::fmt;
use std::path::PathBuf;

use super::SysRoot;
use super::board::{BoardInfo, choose_governing_zone, detect_board};
use super::firmware::PiThrottle;
use super::hwmon::{HwmonChannel, HwmonValue};
use super::ina3221::PowerRail;
use super::thermal::{TripPoint, ZoneMode};
use crate::MilliCelsius;
use crate::error::SensorError;
use crate::throttle::ThrottleFlags;
use crate::units::KiloHertz;

/// A thermal zone as listed.
#[derive(Debug)]
pub struct ZoneInfo {
    /// `thermal_zoneN` index.
    pub index: u32,
    /// Zone type.
    pub kind: String,
    /// Current temperature, or why it could not be read.
    pub temp: Result<MilliCelsius, SensorError>,
    /// Kernel governor mode, when readable.
    pub mode: Option<ZoneMode>,
    /// Trip points.
    pub trips: Vec<TripPoint>,
}

/// An hwmon chip as listed.
#[derive(Debug)]
pub struct ChipInfo {
    /// `hwmonN` index.
    pub index: u32,
    /// Chip name.
    pub name: String,
    /// Channels with their current values.
    pub channels: Vec<(HwmonChannel, Result<HwmonValue, SensorError>)>,
}

/// A cooling device as listed.
#[derive(Debug)]
pub struct CoolingInfo {
    /// `cooling_deviceN` index.
    pub index: u32,
    /// Device type.
    pub kind: String,
    /// Current state.
    pub cur_state: Result<u32, SensorError>,
    /// Highest state.
    pub max_state: Result<u32, SensorError>,
}

/// A cpufreq policy as listed.
#[derive(Debug)]
pub struct PolicyInfo {
    /// `policyN` index.
    pub index: u32,
    /// CPUs in the policy.
    pub cpus: Vec<u32>,
    /// Available frequencies, ascending.
    pub levels: Vec<KiloHertz>,
    /// `scaling_max_freq`.
    pub max: Option<KiloHertz>,
    /// `scaling_cur_freq` (requested, not necessarily real).
    pub cur: Option<KiloHertz>,
    /// `scaling_governor`.
    pub governor: Option<String>,
}

/// Everything found under one root.
#[derive(Debug)]
pub struct Discovery {
    /// The board.
    pub board: BoardInfo,
    /// The zone type that would govern by default.
    pub governing_zone: Option<String>,
    /// Thermal zones.
    pub zones: Vec<ZoneInfo>,
    /// hwmon chips.
    pub hwmon: Vec<ChipInfo>,
    /// Cooling devices.
    pub cooling: Vec<CoolingInfo>,
    /// cpufreq policies.
    pub cpufreq: Vec<PolicyInfo>,
    /// The Pi `get_throttled` file and its current flags.
    pub throttle: Option<(PathBuf, Result<ThrottleFlags, SensorError>)>,
    /// INA3221 power rail names.
    pub power_rails: Vec<String>,
}

impl Discovery {
    /// True when the root holds no zone, chip, cooling device, policy or throttle file.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
            && self.hwmon.is_empty()
            && self.cooling.is_empty()
            && self.cpufreq.is_empty()
            && self.throttle.is_none()
    }
}

/// Lists what `root` holds.
pub fn discover(root: &SysRoot) -> Discovery {
    let board = detect_board(root.path());
    let thermal = root.thermal_zones();
    let zone_list = thermal.zones().unwrap_or_default();
    let governing_zone =
        choose_governing_zone(board.kind, &zone_list, None).map(|z| z.kind().to_owned());
    let zones = zone_list
        .iter()
        .map(|zone| ZoneInfo {
            index: zone.index(),
            kind: zone.kind().to_owned(),
            temp: zone.temperature().map_err(SensorError::from),
            mode: zone.mode().ok(),
            trips: zone.trip_points().unwrap_or_default(),
        })
        .collect();
    let chips = root.hwmon_chips().chips().unwrap_or_default();
    let power_rails = chips
        .iter()
        .flat_map(PowerRail::from_hwmon)
        .map(|rail| rail.name().to_owned())
        .collect();
    let hwmon = chips
        .iter()
        .map(|chip| ChipInfo {
            index: chip.index(),
            name: chip.name().to_owned(),
            channels: chip
                .channels()
                .unwrap_or_default()
                .into_iter()
                .map(|channel| {
                    let value = channel.read().map_err(SensorError::from);
                    (channel, value)
                })
                .collect(),
        })
        .collect();
    let cooling = thermal
        .cooling_devices()
        .unwrap_or_default()
        .into_iter()
        .map(|device| CoolingInfo {
            index: device.index(),
            kind: device.kind().to_owned(),
            cur_state: device.cur_state().map_err(SensorError::from),
            max_state: device.max_state().map_err(SensorError::from),
        })
        .collect();
    let cpufreq = root
        .cpu_freq()
        .policies()
        .unwrap_or_default()
        .into_iter()
        .map(|policy| PolicyInfo {
            index: policy.index(),
            cpus: policy.cpus().unwrap_or_default(),
            levels: policy.available_frequencies().unwrap_or_default(),
            max: policy.max_freq().ok(),
            cur: policy.cur_freq().ok(),
            governor: policy.governor().ok(),
        })
        .collect();
    let throttle = PiThrottle::locate(root.path()).map(|throttle| {
        let flags = throttle.read().map_err(SensorError::from);
        (throttle.path().to_path_buf(), flags)
    });
    Discovery {
        board,
        governing_zone,
        zones,
        hwmon,
        cooling,
        cpufreq,
        throttle,
        power_rails,
    }
}

fn show<T: fmt::Display>(value: &Result<T, SensorError>) -> String {
    match value {
        Ok(v) => v.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

fn celsius(t: MilliCelsius) -> String {
    format!("{:.1} °C", f64::from(t.0) / 1000.0)
}

impl Discovery {
    /// The thermal zones, one line each, the governing one marked.
    fn write_zones(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "thermal zones: {}", self.zones.len())?;
        for zone in &self.zones {
            let marker = if self.governing_zone.as_deref() == Some(zone.kind.as_str()) {
                " [governing]"
            } else {
                ""
            };
            let temp = match zone.temp {
                Ok(t) => celsius(t),
                Err(e) => format!("<{e}>"),
            };
            let mode = match zone.mode {
                Some(ZoneMode::Enabled) => "enabled",
                Some(ZoneMode::Disabled) => "disabled",
                None => "?",
            };
            writeln!(
                f,
                "  thermal_zone{} {}: {temp}, mode {mode}, {} trips{marker}",
                zone.index,
                zone.kind,
                zone.trips.len()
            )?;
        }
        Ok(())
    }

    /// The hwmon chips, each with one line per channel.
    fn write_hwmon(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "hwmon chips: {}", self.hwmon.len())?;
        for chip in &self.hwmon {
            writeln!(f, "  hwmon{} {}", chip.index, chip.name)?;
            for (channel, value) in &chip.channels {
                let value = match value {
                    Ok(HwmonValue::Temp(t)) => celsius(*t),
                    Ok(HwmonValue::Voltage(v)) => v.to_string(),
                    Ok(HwmonValue::Current(c)) => c.to_string(),
                    Ok(HwmonValue::Power(p)) => p.to_string(),
                    Ok(HwmonValue::Fan(r)) => r.to_string(),
                    Ok(HwmonValue::Pwm(d)) => format!("pwm {d}/255"),
                    Err(e) => format!("<{e}>"),
                };
                writeln!(f, "    {}: {value}", channel.display_name())?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = self
            .board
            .model
            .as_deref()
            .unwrap_or("no device-tree model");
        writeln!(f, "board: {} ({model})", self.board.kind)?;
        if self.is_empty() {
            return writeln!(
                f,
                "no thermal zones, hwmon chips, cooling devices or cpufreq policies found"
            );
        }
        self.write_zones(f)?;
        self.write_hwmon(f)?;
        if !self.power_rails.is_empty() {
            writeln!(f, "power rails: {}", self.power_rails.join(", "))?;
        }
        writeln!(f, "cooling devices: {}", self.cooling.len())?;
        for device in &self.cooling {
            writeln!(
                f,
                "  cooling_device{} {}: state {} of {}",
                device.index,
                device.kind,
                show(&device.cur_state),
                show(&device.max_state)
            )?;
        }
        writeln!(f, "cpufreq policies: {}", self.cpufreq.len())?;
        for policy in &self.cpufreq {
            let khz =
                |k: Option<KiloHertz>| k.map_or("?".to_owned(), |k| format!("{} MHz", k.0 / 1000));
            writeln!(
                f,
                "  policy{} cpus {:?}: {} levels {}-{}, max {}, cur {}, governor {}",
                policy.index,
                policy.cpus,
                policy.levels.len(),
                khz(policy.levels.first().copied()),
                khz(policy.levels.last().copied()),
                khz(policy.max),
                khz(policy.cur),
                policy.governor.as_deref().unwrap_or("?")
            )?;
        }
        if let Some((path, flags)) = &self.throttle {
            let flags = match flags {
                Ok(flags) => format!("{:#x}", flags.0),
                Err(e) => format!("<{e}>"),
            };
            writeln!(f, "throttle flags: {flags} ({})", path.display())?;
        }
        Ok(())
    }
}
