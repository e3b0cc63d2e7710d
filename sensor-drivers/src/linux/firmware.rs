//! Raspberry Pi firmware throttle flags from `get_throttled` (hexadecimal). The file sits under
//! the firmware node, `/sys/devices/platform/soc/soc:firmware/get_throttled` on a Pi 4; other
//! SoCs name the node differently, so [`PiThrottle::locate`] also scans one level of
//! `*firmware` nodes below each platform bus.

use std::fs;
use std::path::{Path, PathBuf};

use super::sysfs::{self, SysfsError};
use crate::error::SensorError;
use crate::throttle::ThrottleFlags;
use crate::traits::ThrottleSource;

/// A `get_throttled` reader.
#[derive(Debug, Clone)]
pub struct PiThrottle {
    path: PathBuf,
}

impl PiThrottle {
    /// Reads the given `get_throttled` file.
    pub fn with_path(path: impl Into<PathBuf>) -> Self {
        PiThrottle { path: path.into() }
    }

    /// Finds `get_throttled` under a filesystem root, or `None` on boards without it.
    pub fn locate(root: &Path) -> Option<PiThrottle> {
        let platform = root.join("sys/devices/platform");
        let classic = platform.join("soc/soc:firmware/get_throttled");
        if classic.exists() {
            return Some(PiThrottle::with_path(classic));
        }
        for bus in fs::read_dir(&platform).ok()?.flatten() {
            let Ok(nodes) = fs::read_dir(bus.path()) else {
                continue;
            };
            for node in nodes.flatten() {
                let candidate = node.path().join("get_throttled");
                let is_firmware = node.file_name().to_string_lossy().ends_with("firmware");
                if is_firmware && candidate.exists() {
                    return Some(PiThrottle::with_path(candidate));
                }
            }
        }
        None
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and decodes the flags.
    pub fn read(&self) -> Result<ThrottleFlags, SysfsError> {
        let text = sysfs::read_text(&self.path)?;
        ThrottleFlags::parse_hex(&text).map_err(|_| SysfsError::malformed(&self.path, &text))
    }
}

impl ThrottleSource for PiThrottle {
    fn read_throttle(&mut self) -> Result<ThrottleFlags, SensorError> {
        self.read().map_err(SensorError::from)
    }
}
