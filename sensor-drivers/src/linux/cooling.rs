//! Cooling devices (`/sys/class/thermal/cooling_device*/{type,cur_state,max_state}`) and a
//! [`Fan`] over a kernel fan device. The kernel governor overwrites manual `cur_state` writes
//! within a second or two unless the governing zone's `mode` is `disabled`, so [`KernelFan`]
//! disables it before its first write and restores mode and state on restore or drop.

use std::path::{Path, PathBuf};

use super::sysfs::{self, SysfsError};
use super::thermal::{ThermalZone, ZoneModeGuard};
use crate::error::{ActuatorError, SensorError};
use crate::traits::Fan;
use crate::units::{Percent, Rpm};

/// One cooling device.
#[derive(Debug, Clone)]
pub struct CoolingDevice {
    index: u32,
    dir: PathBuf,
    kind: String,
}

impl CoolingDevice {
    /// The device in `dir` with index `index`; reads its `type` once.
    pub fn at(index: u32, dir: PathBuf) -> Self {
        let kind = sysfs::read_text(&dir.join("type")).unwrap_or_else(|_| "unknown".to_owned());
        CoolingDevice { index, dir, kind }
    }

    /// The device's index (`cooling_deviceN`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The device's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The device's `type`, e.g. `pwm-fan` or `cpufreq-cpu0`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Reads `cur_state`.
    pub fn cur_state(&self) -> Result<u32, SysfsError> {
        sysfs::read_int(&self.dir.join("cur_state"))
    }

    /// Reads `max_state`.
    pub fn max_state(&self) -> Result<u32, SysfsError> {
        sysfs::read_int(&self.dir.join("max_state"))
    }

    /// Writes `cur_state` after checking it against `max_state`.
    pub fn set_state(&self, state: u32) -> Result<(), SysfsError> {
        let max = self.max_state()?;
        let path = self.dir.join("cur_state");
        if state > max {
            return Err(SysfsError::OutOfRange {
                path,
                value: i64::from(state),
                min: 0,
                max: i64::from(max),
            });
        }
        sysfs::write_text(&path, &state.to_string())
    }
}

/// The state nearest to `duty` on a device with states `0..=max_state`.
pub fn state_for_duty(duty: Percent, max_state: u32) -> u32 {
    let state = (u64::from(duty.get()) * u64::from(max_state) + 50) / 100;
    u32::try_from(state).unwrap_or(max_state)
}

/// The duty a state stands for on a device with states `0..=max_state`.
pub fn duty_for_state(state: u32, max_state: u32) -> Percent {
    if max_state == 0 {
        return Percent::ZERO;
    }
    let pct =
        (u64::from(state.min(max_state)) * 100 + u64::from(max_state) / 2) / u64::from(max_state);
    Percent::saturating(u8::try_from(pct).unwrap_or(100))
}

/// A kernel fan cooling device driven manually.
#[derive(Debug)]
pub struct KernelFan {
    device: CoolingDevice,
    zone: Option<ThermalZone>,
    tachometer: Option<PathBuf>,
    guard: Option<ZoneModeGuard>,
    original_state: Option<u32>,
}

impl KernelFan {
    /// A fan over `device`, with the zone whose governor drives it (if any). Nothing is written
    /// until the first `set_duty`.
    pub fn new(device: CoolingDevice, governing_zone: Option<ThermalZone>) -> Self {
        KernelFan {
            device,
            zone: governing_zone,
            tachometer: None,
            guard: None,
            original_state: None,
        }
    }

    /// Reads speed from an hwmon `fan*_input` file.
    pub fn with_tachometer(mut self, fan_input: PathBuf) -> Self {
        self.tachometer = Some(fan_input);
        self
    }

    /// The cooling device.
    pub fn device(&self) -> &CoolingDevice {
        &self.device
    }

    /// True when this process may write the device's `cur_state` and the zone's `mode`.
    pub fn is_writable(&self) -> bool {
        sysfs::is_writable(&self.device.dir.join("cur_state"))
            && self.zone.as_ref().is_none_or(ThermalZone::mode_writable)
    }

    /// True while the zone's governor is held disabled by this fan.
    pub fn is_manual(&self) -> bool {
        self.guard.is_some()
    }

    fn take_control(&mut self) -> Result<(), SysfsError> {
        if self.original_state.is_none() {
            self.original_state = Some(self.device.cur_state()?);
        }
        if self.guard.is_none()
            && let Some(zone) = &self.zone
        {
            self.guard = Some(zone.disable_governor()?);
        }
        Ok(())
    }
}

impl Fan for KernelFan {
    fn set_duty(&mut self, duty: Percent) -> Result<Percent, ActuatorError> {
        let max = self.device.max_state()?;
        self.take_control()?;
        let state = state_for_duty(duty, max);
        self.device.set_state(state)?;
        Ok(duty_for_state(state, max))
    }

    fn duty(&mut self) -> Result<Percent, SensorError> {
        let max = self.device.max_state()?;
        let state = self.device.cur_state()?;
        if state > max {
            return Err(SensorError::Implausible {
                value: i64::from(state),
            });
        }
        Ok(duty_for_state(state, max))
    }

    fn speed(&mut self) -> Result<Option<Rpm>, SensorError> {
        match &self.tachometer {
            Some(path) => Ok(Some(Rpm(sysfs::read_int(path)?))),
            None => Ok(None),
        }
    }

    /// Writes the original state back, then hands the zone back to the kernel governor. Both
    /// are attempted even if the first fails; the first failure is returned.
    fn restore(&mut self) -> Result<(), ActuatorError> {
        let state = match self.original_state {
            Some(state) => self.device.set_state(state),
            None => Ok(()),
        };
        let mode = match &mut self.guard {
            Some(guard) => guard.restore(),
            None => Ok(()),
        };
        if mode.is_ok() {
            self.guard = None;
        }
        if state.is_ok() {
            self.original_state = None;
        }
        state?;
        mode?;
        Ok(())
    }
}

impl Drop for KernelFan {
    fn drop(&mut self) {
        // Drop cannot report; callers who need the outcome call `restore` first.
        let _ = Fan::restore(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_maps_to_the_nearest_of_five_fan_states() {
        let cases = [
            (0, 0),
            (12, 0),
            (13, 1),
            (30, 1),
            (50, 2),
            (70, 3),
            (87, 3),
            (88, 4),
            (100, 4),
        ];
        for (duty, state) in cases {
            assert_eq!(
                state_for_duty(Percent::saturating(duty), 4),
                state,
                "{duty} %"
            );
        }
        assert_eq!(duty_for_state(2, 4), Percent::saturating(50));
        assert_eq!(duty_for_state(9, 4), Percent::FULL);
        assert_eq!(duty_for_state(1, 0), Percent::ZERO);
        assert_eq!(state_for_duty(Percent::FULL, u32::MAX), u32::MAX);
    }
}
