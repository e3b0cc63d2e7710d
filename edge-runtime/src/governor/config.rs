//! Governor configuration and its validation: setpoint, hard ceiling, control period,
//! class priorities, sensor plausibility and the fail-safe floor. Built with
//! [`GovernorConfig::builder`]; every check lives in [`validate_setpoint`] and
//! [`GovernorConfigBuilder::build`] so that run-time changes obey the same rules.

use std::time::Duration;

use super::eco_setpoint::AutoSetpoint;
pub use super::error::ConfigError;
use super::platform::Platform;
use super::types::Priority;

/// Validated governor configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct GovernorConfig {
    pub(crate) platform: Platform,
    pub(crate) firmware_throttle_c: f32,
    pub(crate) setpoint_c: f32,
    pub(crate) ceiling_c: f32,
    pub(crate) period: Duration,
    pub(crate) priorities: [Priority; 3],
    pub(crate) plausible_min_c: f32,
    pub(crate) plausible_max_c: f32,
    pub(crate) max_step_c: f32,
    pub(crate) stale_periods: u32,
    pub(crate) stuck_periods: u32,
    pub(crate) failsafe_interactive_duty: f32,
    pub(crate) margin_c: f32,
    pub(crate) auto: Option<AutoSetpoint>,
    pub(crate) efficient_pacing: Option<EfficientPacing>,
}

/// Energy-aware pacing: while generation is backlogged and nothing waits behind it, the
/// governor runs it at the setting with the fewest joules per token (see
/// [`efficient`](super::allocate::efficient)) rather than flat out, within a latency bound.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EfficientPacing {
    /// The longest mean inter-token latency in ms it may choose; `None`: tokens at most 1.5x
    /// slower than flat out.
    pub max_itl_ms: Option<f64>,
}

impl GovernorConfig {
    /// Starts a configuration for `platform` whose firmware first throttles at
    /// `firmware_throttle_c` °C (Raspberry Pi: 80 °C). Defaults: setpoint 10 °C below that
    /// point, hard ceiling 2 °C below it, 250 ms period, interactive > training > batch,
    /// plausible readings −40 ..= 150 °C, fail-safe interactive duty 0.25, margin 0.1 °C.
    pub fn builder(platform: Platform, firmware_throttle_c: f32) -> GovernorConfigBuilder {
        GovernorConfigBuilder {
            platform,
            firmware_throttle_c,
            setpoint_c: None,
            ceiling_c: None,
            period: Duration::from_millis(250),
            priorities: [Priority::Interactive, Priority::Training, Priority::Batch],
            plausible_min_c: -40.0,
            plausible_max_c: 150.0,
            failsafe_interactive_duty: 0.25,
            margin_c: 0.1,
            auto: None,
            efficient_pacing: None,
        }
    }

    /// The board model.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Setpoint in °C.
    pub fn setpoint_c(&self) -> f32 {
        self.setpoint_c
    }

    /// Hard ceiling in °C: at or above it the governor enters its coolest mode.
    pub fn ceiling_c(&self) -> f32 {
        self.ceiling_c
    }

    /// The firmware's first throttle point in °C.
    pub fn firmware_throttle_c(&self) -> f32 {
        self.firmware_throttle_c
    }

    /// Control period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Classes from highest to lowest priority.
    pub fn priorities(&self) -> [Priority; 3] {
        self.priorities
    }

    /// Interactive duty in the coolest mode.
    pub fn failsafe_interactive_duty(&self) -> f32 {
        self.failsafe_interactive_duty
    }

    /// Readings outside this range (°C) are implausible.
    pub fn plausible_range_c(&self) -> (f32, f32) {
        (self.plausible_min_c, self.plausible_max_c)
    }

    /// The automatic (eco) setpoint's settings, when the setpoint is chosen by the governor.
    pub fn auto_setpoint(&self) -> Option<&AutoSetpoint> {
        self.auto.as_ref()
    }

    /// Energy-aware pacing's settings, when it is on.
    pub fn efficient_pacing(&self) -> Option<&EfficientPacing> {
        self.efficient_pacing.as_ref()
    }
}

/// Builder for [`GovernorConfig`]; see [`GovernorConfig::builder`] for the defaults.
#[derive(Clone, Debug)]
pub struct GovernorConfigBuilder {
    platform: Platform,
    firmware_throttle_c: f32,
    setpoint_c: Option<f32>,
    ceiling_c: Option<f32>,
    period: Duration,
    priorities: [Priority; 3],
    plausible_min_c: f32,
    plausible_max_c: f32,
    failsafe_interactive_duty: f32,
    margin_c: f32,
    auto: Option<AutoSetpoint>,
    efficient_pacing: Option<EfficientPacing>,
}

impl GovernorConfigBuilder {
    /// Setpoint in °C.
    pub fn with_setpoint_c(mut self, setpoint_c: f32) -> Self {
        self.setpoint_c = Some(setpoint_c);
        self
    }

    /// Hard ceiling in °C (at most the firmware throttle point).
    pub fn with_ceiling_c(mut self, ceiling_c: f32) -> Self {
        self.ceiling_c = Some(ceiling_c);
        self
    }

    /// Control period (10 ms ..= 10 s).
    pub fn with_period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Classes from highest to lowest priority.
    pub fn with_priorities(mut self, priorities: [Priority; 3]) -> Self {
        self.priorities = priorities;
        self
    }

    /// Readings outside `min_c ..= max_c` are implausible.
    pub fn with_plausible_range_c(mut self, min_c: f32, max_c: f32) -> Self {
        self.plausible_min_c = min_c;
        self.plausible_max_c = max_c;
        self
    }

    /// Interactive duty in the coolest mode (`0..=1`; 0 pauses generation too).
    pub fn with_failsafe_interactive_duty(mut self, duty: f32) -> Self {
        self.failsafe_interactive_duty = duty;
        self
    }

    /// Back-off in °C the controller keeps below the setpoint on a clean sensor (it adds the
    /// estimated sensor noise on top).
    pub fn with_margin_c(mut self, margin_c: f32) -> Self {
        self.margin_c = margin_c;
        self
    }

    /// Lets the governor choose the setpoint with the fewest g CO2e per token and keep
    /// re-choosing it (see [`super::eco_setpoint`]); the fixed setpoint is where it starts and
    /// what each choice is compared with.
    pub fn with_auto_setpoint(mut self, auto: AutoSetpoint) -> Self {
        self.auto = Some(auto);
        self
    }

    /// Paces backlogged generation at the setting with the fewest joules per token within
    /// the latency bound of `pacing`, instead of flat out. On by default with the automatic
    /// setpoint (bounded by its `max_itl_ms`).
    pub fn with_efficient_pacing(mut self, pacing: EfficientPacing) -> Self {
        self.efficient_pacing = Some(pacing);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<GovernorConfig, ConfigError> {
        let fw = self.firmware_throttle_c;
        if !fw.is_finite() {
            return Err(ConfigError::InvalidFirmwareThrottle(fw));
        }
        let (min_c, max_c) = (self.plausible_min_c, self.plausible_max_c);
        if !(min_c.is_finite() && max_c.is_finite() && min_c < max_c) {
            return Err(ConfigError::InvalidPlausibleRange { min_c, max_c });
        }
        let ceiling_c = self.ceiling_c.unwrap_or(fw - 2.0);
        if !ceiling_c.is_finite() || ceiling_c > fw {
            return Err(ConfigError::InvalidCeiling {
                ceiling_c,
                firmware_c: fw,
            });
        }
        let setpoint_c = self.setpoint_c.unwrap_or(fw - 10.0);
        validate_setpoint(setpoint_c, ceiling_c, min_c)?;
        if self.period < Duration::from_millis(10) || self.period > Duration::from_secs(10) {
            return Err(ConfigError::PeriodOutOfRange(self.period));
        }
        let mut seen = [false; 3];
        for p in self.priorities {
            seen[p.index()] = true;
        }
        if seen.iter().any(|s| !s) {
            return Err(ConfigError::PrioritiesNotAPermutation);
        }
        let duty = self.failsafe_interactive_duty;
        if !(0.0..=1.0).contains(&duty) {
            return Err(ConfigError::InvalidFailsafeDuty(duty));
        }
        let margin_c = if self.margin_c.is_finite() {
            self.margin_c.clamp(0.0, 5.0)
        } else {
            0.1
        };
        Ok(GovernorConfig {
            platform: self.platform,
            firmware_throttle_c: fw,
            setpoint_c,
            ceiling_c,
            period: self.period,
            priorities: self.priorities,
            plausible_min_c: min_c,
            plausible_max_c: max_c,
            max_step_c: 25.0,
            stale_periods: 2,
            stuck_periods: 40,
            failsafe_interactive_duty: duty,
            margin_c,
            auto: self.auto,
            efficient_pacing: self.efficient_pacing.or_else(|| {
                self.auto.map(|a| EfficientPacing {
                    max_itl_ms: a.max_itl_ms,
                })
            }),
        })
    }
}

/// Checks a setpoint against the hard ceiling and the plausible range: it must be finite,
/// strictly below `ceiling_c` and above `plausible_min_c`.
pub fn validate_setpoint(
    setpoint_c: f32,
    ceiling_c: f32,
    plausible_min_c: f32,
) -> Result<(), ConfigError> {
    if !setpoint_c.is_finite() {
        return Err(ConfigError::SetpointNotFinite(setpoint_c));
    }
    if setpoint_c >= ceiling_c {
        return Err(ConfigError::SetpointAboveCeiling {
            setpoint_c,
            ceiling_c,
        });
    }
    if setpoint_c <= plausible_min_c {
        return Err(ConfigError::SetpointBelowPlausible {
            setpoint_c,
            min_c: plausible_min_c,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::platform::Opp;

    fn platform() -> Result<Platform, ConfigError> {
        Platform::new(
            vec![Opp {
                khz: 1_500_000,
                millivolts: 900,
            }],
            4,
            2.0,
            1.0,
        )
    }

    #[test]
    fn defaults_the_setpoint_to_ten_degrees_below_the_firmware_throttle_point()
    -> Result<(), ConfigError> {
        let cfg = GovernorConfig::builder(platform()?, 80.0).build()?;
        assert_eq!(cfg.setpoint_c(), 70.0);
        assert_eq!(cfg.ceiling_c(), 78.0);
        assert_eq!(cfg.period(), Duration::from_millis(250));
        Ok(())
    }

    #[test]
    fn rejects_a_setpoint_at_or_above_the_ceiling() -> Result<(), ConfigError> {
        let err = GovernorConfig::builder(platform()?, 80.0)
            .with_setpoint_c(78.0)
            .build();
        assert!(matches!(err, Err(ConfigError::SetpointAboveCeiling { .. })));
        Ok(())
    }

    #[test]
    fn rejects_a_nan_setpoint_and_a_ceiling_above_the_firmware_point() -> Result<(), ConfigError> {
        let nan = GovernorConfig::builder(platform()?, 80.0)
            .with_setpoint_c(f32::NAN)
            .build();
        assert!(matches!(nan, Err(ConfigError::SetpointNotFinite(_))));
        let high = GovernorConfig::builder(platform()?, 80.0)
            .with_ceiling_c(81.0)
            .build();
        assert!(matches!(high, Err(ConfigError::InvalidCeiling { .. })));
        Ok(())
    }

    #[test]
    fn rejects_priorities_that_repeat_a_class() -> Result<(), ConfigError> {
        let err = GovernorConfig::builder(platform()?, 80.0)
            .with_priorities([Priority::Training, Priority::Training, Priority::Batch])
            .build();
        assert_eq!(err, Err(ConfigError::PrioritiesNotAPermutation));
        Ok(())
    }

    #[test]
    fn rejects_a_period_outside_ten_milliseconds_to_ten_seconds() -> Result<(), ConfigError> {
        let err = GovernorConfig::builder(platform()?, 80.0)
            .with_period(Duration::from_millis(1))
            .build();
        assert!(matches!(err, Err(ConfigError::PeriodOutOfRange(_))));
        Ok(())
    }
}
