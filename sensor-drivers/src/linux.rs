//! Linux sysfs readers and actuators: thermal zones, cooling devices, hwmon chips (including
//! Jetson INA3221 rails), cpufreq policies, Raspberry Pi throttle flags and board detection.
//! Every reader takes an injectable root so tests run on fake trees in a tempdir; `Default`
//! reads the real paths. Nothing here panics on bad files: each problem becomes a
//! [`SysfsError`] that converts into the traits' [`crate::SensorError`] / [`crate::ActuatorError`].

use std::path::{Path, PathBuf};

pub mod board;
pub mod cooling;
pub mod cpufreq;
pub mod discover;
pub mod firmware;
#[cfg(feature = "test-util")]
pub mod fixtures;
pub mod hwmon;
pub mod ina3221;
pub mod sensors;
pub mod sysfs;
pub mod system;
pub mod thermal;

pub use board::{BoardInfo, BoardKind, detect_board};
pub use cooling::{CoolingDevice, KernelFan};
pub use cpufreq::{CpuFreq, CpufreqCap, CpufreqPolicy, PolicyCap};
pub use discover::{Discovery, discover};
pub use firmware::PiThrottle;
pub use hwmon::{ChannelKind, Hwmon, HwmonChannel, HwmonChip, HwmonValue};
pub use ina3221::PowerRail;
pub use sysfs::SysfsError;
pub use thermal::{ThermalZone, ThermalZones, TripKind, TripPoint, ZoneMode, ZoneModeGuard};

/// The filesystem root the readers hang their well-known paths from: `/` on a device, a
/// tempdir in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot {
            root: PathBuf::from("/"),
        }
    }
}

impl SysRoot {
    /// A root at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SysRoot { root: path.into() }
    }

    /// The root itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<root>/sys/class/thermal`.
    pub fn thermal(&self) -> PathBuf {
        self.root.join("sys/class/thermal")
    }

    /// `<root>/sys/class/hwmon`.
    pub fn hwmon(&self) -> PathBuf {
        self.root.join("sys/class/hwmon")
    }

    /// `<root>/sys/devices/system/cpu/cpufreq`.
    pub fn cpufreq(&self) -> PathBuf {
        self.root.join("sys/devices/system/cpu/cpufreq")
    }

    /// `<root>/proc`.
    pub fn proc(&self) -> PathBuf {
        self.root.join("proc")
    }

    /// Thermal zones under this root.
    pub fn thermal_zones(&self) -> ThermalZones {
        ThermalZones::with_root(self.thermal())
    }

    /// hwmon chips under this root.
    pub fn hwmon_chips(&self) -> Hwmon {
        Hwmon::with_root(self.hwmon())
    }

    /// cpufreq policies under this root.
    pub fn cpu_freq(&self) -> CpuFreq {
        CpuFreq::with_root(self.cpufreq())
    }
}
