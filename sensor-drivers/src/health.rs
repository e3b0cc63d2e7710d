//! Sensor health: the state a governor acts on when a reading is missing, old, absurd or frozen,
//! so that bad input is never mistaken for a cool chip. Holds the plausibility range check and a
//! clock-free [`HealthMonitor`] that turns a stream of read results into a [`Health`] per tick.

use core::fmt;

use crate::error::SensorError;
use crate::units::MilliCelsius;

impl SensorError {
    /// The health state this error puts the sensor in.
    pub const fn health(self) -> Health {
        match self {
            SensorError::Missing => Health::Missing,
            SensorError::Implausible { .. } | SensorError::Overflow => Health::Implausible,
            SensorError::Stuck => Health::Stuck,
            SensorError::Stale => Health::Stale,
            SensorError::Empty
            | SensorError::Malformed
            | SensorError::Bus
            | SensorError::PermissionDenied
            | SensorError::Io
            | SensorError::NotConfigured
            | SensorError::Unavailable => Health::Error,
        }
    }
}

/// How far a sensor's latest value can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "std",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Health {
    /// A fresh, plausible value.
    Ok,
    /// The sensor is absent.
    Missing,
    /// No fresh value this tick; the last good value is recent enough to hold (see
    /// [`HealthMonitor::last_good`]).
    Stale,
    /// The value is outside the physically plausible range.
    Implausible,
    /// The value has not changed for longer than the policy allows.
    Stuck,
    /// The read failed (bus error, I/O error, malformed data).
    Error,
}

impl Health {
    /// True only for [`Health::Ok`]: the value may be used as is.
    pub const fn is_ok(self) -> bool {
        matches!(self, Health::Ok)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Ok => "ok",
            Health::Missing => "missing",
            Health::Stale => "stale",
            Health::Implausible => "implausible",
            Health::Stuck => "stuck",
            Health::Error => "error",
        })
    }
}

/// An inclusive range of temperatures a working sensor of some role can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub struct PlausibleRange {
    /// Lowest plausible value.
    pub min: MilliCelsius,
    /// Highest plausible value.
    pub max: MilliCelsius,
}

impl PlausibleRange {
    /// An SoC die sensor: -40 °C (industrial minimum) to 130 °C (above every board's critical
    /// trip, so a real overheat is still reported, while 250 °C or -273 °C is rejected).
    pub const SOC: PlausibleRange = PlausibleRange {
        min: MilliCelsius(-40_000),
        max: MilliCelsius(130_000),
    };
    /// An ambient or heatsink sensor: -40 °C to 100 °C.
    pub const AMBIENT: PlausibleRange = PlausibleRange {
        min: MilliCelsius(-40_000),
        max: MilliCelsius(100_000),
    };

    /// Checks one value against this range.
    pub const fn check(self, value: MilliCelsius) -> Result<MilliCelsius, SensorError> {
        check_plausible(value, self)
    }
}

impl Default for PlausibleRange {
    fn default() -> Self {
        Self::SOC
    }
}

/// Returns the temperature if it lies in `range`, else [`SensorError::Implausible`].
pub const fn check_plausible(
    value: MilliCelsius,
    range: PlausibleRange,
) -> Result<MilliCelsius, SensorError> {
    if value.0 < range.min.0 || value.0 > range.max.0 {
        Err(SensorError::Implausible {
            value: value.0 as i64,
        })
    } else {
        Ok(value)
    }
}

/// When a [`HealthMonitor`] calls a sensor stale or stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub struct HealthPolicy {
    /// After a failed read, the last good value is held (health [`Health::Stale`]) for this many
    /// milliseconds; after that the failure's own health is reported.
    pub stale_after_ms: u64,
    /// This many consecutive identical values make the sensor [`Health::Stuck`]; 0 disables the
    /// check. Coarse sensors in a steady room legitimately repeat, so keep this off for ambient
    /// sensors and generous for die sensors.
    pub stuck_after_reads: u32,
}

impl HealthPolicy {
    /// A die sensor polled about once a second: hold values for 3 s, stuck after 300
    /// identical reads (five minutes of a frozen value under a changing load).
    pub const SOC: HealthPolicy = HealthPolicy {
        stale_after_ms: 3_000,
        stuck_after_reads: 300,
    };
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            stale_after_ms: 3_000,
            stuck_after_reads: 0,
        }
    }
}

/// Tracks one sensor's read results over time. It has no clock: the caller passes the time of
/// each observation in milliseconds from any fixed origin.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    policy: HealthPolicy,
    last_good: Option<(i64, u64)>,
    repeats: u32,
    health: Health,
}

impl HealthMonitor {
    /// A monitor with the given policy and no history.
    pub const fn new(policy: HealthPolicy) -> Self {
        HealthMonitor {
            policy,
            last_good: None,
            repeats: 0,
            health: Health::Missing,
        }
    }

    /// Records one read result at `now_ms` and returns the sensor's health after it.
    pub fn observe(&mut self, result: Result<i64, SensorError>, now_ms: u64) -> Health {
        self.health = match result {
            Ok(value) => {
                let same = matches!(self.last_good, Some((last, _)) if last == value);
                self.repeats = if same {
                    self.repeats.saturating_add(1)
                } else {
                    0
                };
                self.last_good = Some((value, now_ms));
                if self.policy.stuck_after_reads > 0
                    && self.repeats >= self.policy.stuck_after_reads
                {
                    Health::Stuck
                } else {
                    Health::Ok
                }
            }
            Err(SensorError::Implausible { .. }) => {
                self.repeats = 0;
                Health::Implausible
            }
            Err(error) => match self.last_good {
                Some((_, at)) if now_ms.saturating_sub(at) <= self.policy.stale_after_ms => {
                    Health::Stale
                }
                _ => error.health(),
            },
        };
        self.health
    }

    /// The health after the latest observation ([`Health::Missing`] before any).
    pub const fn health(&self) -> Health {
        self.health
    }

    /// The last good value and the time it was read, if any.
    pub const fn last_good(&self) -> Option<(i64, u64)> {
        self.last_good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausibility_rejects_absolute_zero_and_boiling_silicon() {
        let cases = [
            (-273_150, false),
            (-40_001, false),
            (-40_000, true),
            (0, true),
            (45_000, true),
            (104_500, true),
            (130_000, true),
            (130_001, false),
            (250_000, false),
        ];
        for (mc, ok) in cases {
            assert_eq!(
                check_plausible(MilliCelsius(mc), PlausibleRange::SOC).is_ok(),
                ok,
                "{mc} m°C"
            );
        }
        assert_eq!(
            check_plausible(MilliCelsius(250_000), PlausibleRange::SOC),
            Err(SensorError::Implausible { value: 250_000 })
        );
    }

    #[test]
    fn a_failed_read_holds_the_last_value_as_stale_then_reports_the_failure() {
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        assert_eq!(monitor.observe(Ok(50_000), 0), Health::Ok);
        assert_eq!(monitor.observe(Err(SensorError::Bus), 1_000), Health::Stale);
        assert_eq!(monitor.observe(Err(SensorError::Bus), 3_000), Health::Stale);
        assert_eq!(monitor.observe(Err(SensorError::Bus), 3_001), Health::Error);
        assert_eq!(monitor.last_good(), Some((50_000, 0)));
        assert_eq!(
            monitor.observe(Err(SensorError::Missing), 9_000),
            Health::Missing
        );
    }

    #[test]
    fn a_sensor_that_never_read_is_not_stale() {
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        assert_eq!(monitor.health(), Health::Missing);
        assert_eq!(monitor.observe(Err(SensorError::Io), 0), Health::Error);
    }

    #[test]
    fn implausible_values_are_never_masked_by_a_recent_good_value() {
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        monitor.observe(Ok(60_000), 0);
        let health = monitor.observe(Err(SensorError::Implausible { value: -273_000 }), 10);
        assert_eq!(health, Health::Implausible);
    }

    #[test]
    fn identical_values_become_stuck_only_when_the_policy_asks() {
        let policy = HealthPolicy {
            stale_after_ms: 1_000,
            stuck_after_reads: 3,
        };
        let mut monitor = HealthMonitor::new(policy);
        let healths: [Health; 5] = core::array::from_fn(|i| monitor.observe(Ok(42_000), i as u64));
        assert_eq!(
            healths,
            [
                Health::Ok,
                Health::Ok,
                Health::Ok,
                Health::Stuck,
                Health::Stuck
            ]
        );
        assert_eq!(monitor.observe(Ok(42_500), 6), Health::Ok);

        let mut relaxed = HealthMonitor::new(HealthPolicy::default());
        for t in 0..1_000 {
            assert_eq!(relaxed.observe(Ok(42_000), t), Health::Ok);
        }
    }
}
