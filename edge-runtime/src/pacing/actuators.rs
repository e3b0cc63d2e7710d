//! The board's actuators as the driver holds them: the frequency cap and the fan, written from
//! each decision and restored to what they were when the driver stops.

use sensor_drivers::{Fan, FreqCap, KiloHertz, Percent};

use super::error::RunnerError;
use crate::governor::Decision;

/// The actuators the driver writes, and which of them it changed (so it restores only those).
pub(super) struct Actuators {
    freq: Option<Box<dyn FreqCap + Send>>,
    freq_requested_khz: Option<u32>,
    freq_changed: bool,
    fan: Option<Box<dyn Fan + Send>>,
    fan_max_level: u8,
    pub(super) fan_level: Option<u8>,
    fan_changed: bool,
}

impl Actuators {
    /// Holds `freq` and `fan` (level `l` of `fan_max_level` becomes duty `l/max`); nothing is
    /// written until the first decision.
    pub(super) fn new(
        freq: Option<Box<dyn FreqCap + Send>>,
        fan: Option<Box<dyn Fan + Send>>,
        fan_max_level: u8,
    ) -> Self {
        Self {
            freq,
            freq_requested_khz: None,
            freq_changed: false,
            fan,
            fan_max_level,
            fan_level: None,
            fan_changed: false,
        }
    }

    /// Carries out the frequency cap and fan level of `d`; returns the failures.
    pub(super) fn apply(&mut self, d: &Decision) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(freq) = self.freq.as_mut() {
            match d.freq_cap_khz {
                Some(khz) if self.freq_requested_khz != Some(khz) => {
                    self.freq_changed = true;
                    match freq.set_cap(KiloHertz(khz)) {
                        Ok(_) => self.freq_requested_khz = Some(khz),
                        Err(e) => {
                            // Retried at the next tick.
                            self.freq_requested_khz = None;
                            errors.push(format!("frequency cap {khz} kHz: {e}"));
                        }
                    }
                }
                Some(_) => {}
                None if self.freq_changed => match freq.restore() {
                    Ok(()) => {
                        self.freq_changed = false;
                        self.freq_requested_khz = None;
                    }
                    Err(e) => errors.push(format!("restoring the frequency cap: {e}")),
                },
                None => {}
            }
        }
        if let Some(fan) = self.fan.as_mut() {
            match d.fan_level {
                Some(level) if self.fan_level != Some(level) => {
                    self.fan_changed = true;
                    let max = u32::from(self.fan_max_level.max(1));
                    let pct = (u32::from(level.min(self.fan_max_level)) * 100 + max / 2) / max;
                    let duty = Percent::saturating(u8::try_from(pct).unwrap_or(100));
                    match fan.set_duty(duty) {
                        Ok(_) => self.fan_level = Some(level),
                        Err(e) => {
                            self.fan_level = None;
                            errors.push(format!("fan level {level} ({duty}): {e}"));
                        }
                    }
                }
                Some(_) => {}
                None if self.fan_changed => match fan.restore() {
                    Ok(()) => {
                        self.fan_changed = false;
                        self.fan_level = None;
                    }
                    Err(e) => errors.push(format!("handing the fan back: {e}")),
                },
                None => {}
            }
        }
        errors
    }

    /// The cap in force, read back from the actuator.
    pub(super) fn freq_khz(&self) -> Option<u32> {
        self.freq.as_ref().map(|f| f.cap().0)
    }

    /// Restores every actuator this driver changed; tries all of them and returns the first
    /// failure.
    pub(super) fn restore(&mut self) -> Result<(), RunnerError> {
        let mut first = None;
        if self.freq_changed
            && let Some(freq) = self.freq.as_mut()
        {
            match freq.restore() {
                Ok(()) => {
                    self.freq_changed = false;
                    self.freq_requested_khz = None;
                }
                Err(source) => {
                    first.get_or_insert(RunnerError::Restore {
                        actuator: "frequency cap",
                        cause: source,
                    });
                }
            }
        }
        if self.fan_changed
            && let Some(fan) = self.fan.as_mut()
        {
            match fan.restore() {
                Ok(()) => {
                    self.fan_changed = false;
                    self.fan_level = None;
                }
                Err(source) => {
                    first.get_or_insert(RunnerError::Restore {
                        actuator: "fan",
                        cause: source,
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
