//! Thermal zones: `/sys/class/thermal/thermal_zone*/{type,temp,mode,trip_point_*}`. A zone is
//! a [`TempSensor`] whose reads are range-checked, so a sensor reporting -273 °C or 250 °C is
//! an error, never a cool chip. Zone `mode` can be set to `disabled` so a manual cooling-device
//! write sticks; [`ZoneModeGuard`] puts the previous mode back on restore or drop.

use std::path::{Path, PathBuf};

use super::sysfs::{self, SysfsError};
use crate::error::SensorError;
use crate::health::PlausibleRange;
use crate::traits::TempSensor;
use crate::units::MilliCelsius;

/// The thermal class directory (`/sys/class/thermal` on a device).
#[derive(Debug, Clone)]
pub struct ThermalZones {
    root: PathBuf,
}

impl Default for ThermalZones {
    fn default() -> Self {
        ThermalZones::with_root("/sys/class/thermal")
    }
}

impl ThermalZones {
    /// Zones under `root` (the directory holding `thermal_zone*`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        ThermalZones { root: root.into() }
    }

    /// The directory this reader scans.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every zone, by index; a zone whose `type` cannot be read is listed with type `unknown`.
    pub fn zones(&self) -> Result<Vec<ThermalZone>, SysfsError> {
        Ok(sysfs::indexed_entries(&self.root, "thermal_zone")?
            .into_iter()
            .map(|(index, dir)| ThermalZone::at(index, dir))
            .collect())
    }

    /// The first zone whose `type` is `kind`.
    pub fn zone_by_type(&self, kind: &str) -> Result<Option<ThermalZone>, SysfsError> {
        Ok(self.zones()?.into_iter().find(|zone| zone.kind() == kind))
    }

    /// Every cooling device, by index.
    pub fn cooling_devices(&self) -> Result<Vec<super::CoolingDevice>, SysfsError> {
        Ok(sysfs::indexed_entries(&self.root, "cooling_device")?
            .into_iter()
            .map(|(index, dir)| super::CoolingDevice::at(index, dir))
            .collect())
    }
}

/// Whether the kernel's thermal governor drives a zone's cooling devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneMode {
    /// The kernel governor is active.
    Enabled,
    /// The kernel governor is off: manual cooling-device writes stick.
    Disabled,
}

impl ZoneMode {
    fn as_str(self) -> &'static str {
        match self {
            ZoneMode::Enabled => "enabled",
            ZoneMode::Disabled => "disabled",
        }
    }
}

/// What a trip point triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TripKind {
    /// Active cooling (a fan).
    Active,
    /// Passive cooling (frequency capping).
    Passive,
    /// A userspace notification.
    Hot,
    /// Emergency shutdown.
    Critical,
    /// Any other type string.
    Other(String),
}

impl TripKind {
    fn parse(text: &str) -> Self {
        match text {
            "active" => TripKind::Active,
            "passive" => TripKind::Passive,
            "hot" => TripKind::Hot,
            "critical" => TripKind::Critical,
            other => TripKind::Other(other.to_owned()),
        }
    }
}

/// One trip point of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripPoint {
    /// The trip's index in the zone.
    pub index: u32,
    /// The trip temperature.
    pub temp: MilliCelsius,
    /// What it triggers.
    pub kind: TripKind,
    /// Its hysteresis, when the zone exposes one.
    pub hysteresis: Option<MilliCelsius>,
}

/// One thermal zone.
#[derive(Debug, Clone)]
pub struct ThermalZone {
    index: u32,
    dir: PathBuf,
    kind: String,
    range: PlausibleRange,
}

impl ThermalZone {
    /// The zone in `dir` with index `index`; reads its `type` once.
    pub fn at(index: u32, dir: PathBuf) -> Self {
        let kind = sysfs::read_text(&dir.join("type")).unwrap_or_else(|_| "unknown".to_owned());
        ThermalZone {
            index,
            dir,
            kind,
            range: PlausibleRange::SOC,
        }
    }

    /// Replaces the plausibility range applied to reads (default [`PlausibleRange::SOC`]).
    pub fn with_range(mut self, range: PlausibleRange) -> Self {
        self.range = range;
        self
    }

    /// The zone's index (`thermal_zoneN`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The zone's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The zone's `type`, e.g. `cpu-thermal` or `tj-thermal`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Reads `temp`, rejecting values outside the plausibility range.
    pub fn temperature(&self) -> Result<MilliCelsius, SysfsError> {
        let path = self.dir.join("temp");
        let value = sysfs::read_i64(&path)?;
        let temp = i32::try_from(value)
            .map(MilliCelsius)
            .map_err(|_| SysfsError::Implausible {
                path: path.clone(),
                value,
            })?;
        self.range
            .check(temp)
            .map_err(|_| SysfsError::Implausible { path, value })
    }

    /// Reads `mode`.
    pub fn mode(&self) -> Result<ZoneMode, SysfsError> {
        let path = self.dir.join("mode");
        match sysfs::read_text(&path)?.as_str() {
            "enabled" => Ok(ZoneMode::Enabled),
            "disabled" => Ok(ZoneMode::Disabled),
            other => Err(SysfsError::malformed(&path, other)),
        }
    }

    /// True when this process may write the zone's `mode`.
    pub fn mode_writable(&self) -> bool {
        sysfs::is_writable(&self.dir.join("mode"))
    }

    /// Writes `mode` (needs root).
    pub fn set_mode(&self, mode: ZoneMode) -> Result<(), SysfsError> {
        sysfs::write_text(&self.dir.join("mode"), mode.as_str())
    }

    /// Disables the kernel governor for this zone until the guard is restored or dropped.
    pub fn disable_governor(&self) -> Result<ZoneModeGuard, SysfsError> {
        let previous = self.mode()?;
        if previous != ZoneMode::Disabled {
            self.set_mode(ZoneMode::Disabled)?;
        }
        Ok(ZoneModeGuard {
            zone: self.clone(),
            previous,
            restored: false,
        })
    }

    /// Reads every `trip_point_N_{temp,type,hyst}`; trips with unreadable temperatures are
    /// skipped.
    pub fn trip_points(&self) -> Result<Vec<TripPoint>, SysfsError> {
        let mut trips = Vec::new();
        for index in 0.. {
            let temp_path = self.dir.join(format!("trip_point_{index}_temp"));
            if !temp_path.exists() {
                break;
            }
            let Ok(temp) = sysfs::read_int::<i32>(&temp_path) else {
                continue;
            };
            let kind = sysfs::read_text(&self.dir.join(format!("trip_point_{index}_type")))
                .map(|t| TripKind::parse(&t))
                .unwrap_or(TripKind::Other("unknown".to_owned()));
            let hysteresis =
                sysfs::read_int::<i32>(&self.dir.join(format!("trip_point_{index}_hyst")))
                    .ok()
                    .map(MilliCelsius);
            trips.push(TripPoint {
                index,
                temp: MilliCelsius(temp),
                kind,
                hysteresis,
            });
        }
        Ok(trips)
    }
}

impl TempSensor for ThermalZone {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        self.temperature().map_err(SensorError::from)
    }
}

/// Keeps a zone's kernel governor disabled; restores the previous mode on
/// [`restore`](Self::restore) or drop.
#[derive(Debug)]
pub struct ZoneModeGuard {
    zone: ThermalZone,
    previous: ZoneMode,
    restored: bool,
}

impl ZoneModeGuard {
    /// The mode the zone had before the guard.
    pub fn previous(&self) -> ZoneMode {
        self.previous
    }

    /// The guarded zone.
    pub fn zone(&self) -> &ThermalZone {
        &self.zone
    }

    /// Writes the previous mode back. Idempotent; a failure leaves the guard armed so drop
    /// tries again.
    pub fn restore(&mut self) -> Result<(), SysfsError> {
        if self.restored {
            return Ok(());
        }
        if self.previous != ZoneMode::Disabled {
            self.zone.set_mode(self.previous)?;
        }
        self.restored = true;
        Ok(())
    }
}

impl Drop for ZoneModeGuard {
    fn drop(&mut self) {
        // Drop cannot report; callers who need the outcome call `restore` first.
        let _ = self.restore();
    }
}
