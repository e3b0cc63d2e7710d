//! A board's sensors gathered behind the traits, and the [`Snapshot`] of one control tick: every
//! reading with its [`Health`]. Real boards (`linux::sensors`) and the twin (`sim`) both build a
//! [`SensorSet`], so the governor consumes one type either way. Reads are range-checked per
//! [`Role`] and tracked by a [`HealthMonitor`] each; a failed read keeps the last good value
//! visible but marked [`Health::Stale`], and never yields a made-up one.

use std::fmt;

use crate::error::SensorError;
use crate::health::{Health, HealthMonitor, HealthPolicy, PlausibleRange};
use crate::throttle::{ThrottleFlags, ThrottleTracker};
use crate::traits::{PowerReading, PowerSensor, TempSensor, ThrottleSource};
use crate::units::{MilliCelsius, MilliWatts};

/// What a sensor measures, as declared in the runtime's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The SoC die temperature the governor controls.
    SocTemp,
    /// Another on-chip temperature (GPU, CV, SoC sub-zones).
    ChipTemp,
    /// The air around the board.
    AmbientTemp,
    /// A heatsink or board-surface temperature.
    HeatsinkTemp,
    /// The whole board's supply power.
    BoardPower,
    /// One supply rail's power.
    RailPower,
}

impl Role {
    /// The plausibility range applied to temperatures of this role.
    pub fn plausible_range(self) -> PlausibleRange {
        match self {
            Role::SocTemp | Role::ChipTemp | Role::BoardPower | Role::RailPower => {
                PlausibleRange::SOC
            }
            Role::AmbientTemp | Role::HeatsinkTemp => PlausibleRange::AMBIENT,
        }
    }

    /// The health policy for sensors of this role.
    pub fn health_policy(self) -> HealthPolicy {
        match self {
            Role::SocTemp => HealthPolicy::SOC,
            _ => HealthPolicy::default(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::SocTemp => "soc_temp",
            Role::ChipTemp => "chip_temp",
            Role::AmbientTemp => "ambient_temp",
            Role::HeatsinkTemp => "heatsink_temp",
            Role::BoardPower => "board_power",
            Role::RailPower => "rail_power",
        })
    }
}

/// One temperature in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TempSample {
    /// The sensor's name (zone type, hwmon label, config name).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The fresh value when healthy, the last good value when stale, else `None`.
    pub value: Option<MilliCelsius>,
    /// How far the value can be trusted.
    pub health: Health,
    /// The read error, when the read failed.
    pub error: Option<SensorError>,
}

/// One power reading in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PowerSample {
    /// The sensor's name (rail label, config name).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The reading when healthy, else `None`.
    pub value: Option<PowerReading>,
    /// How far the value can be trusted.
    pub health: Health,
    /// The read error, when the read failed.
    pub error: Option<SensorError>,
}

/// Everything a board's sensors said at one tick.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The time passed to [`SensorSet::snapshot`], in ms.
    pub at_ms: u64,
    /// Temperatures, in the order they were added.
    pub temps: Vec<TempSample>,
    /// Power readings, in the order they were added.
    pub powers: Vec<PowerSample>,
    /// Live firmware throttle flags, when the board has them.
    pub throttle: Option<Result<ThrottleFlags, SensorError>>,
    /// Live throttle conditions seen since the set was built.
    pub throttle_seen: ThrottleFlags,
}

impl Snapshot {
    /// The first SoC temperature sample (the governing one).
    pub fn governing(&self) -> Option<&TempSample> {
        self.temps.iter().find(|t| t.role == Role::SocTemp)
    }

    /// The governing temperature, only when its health is [`Health::Ok`].
    pub fn soc_temp(&self) -> Option<MilliCelsius> {
        self.governing()
            .filter(|t| t.health.is_ok())
            .and_then(|t| t.value)
    }

    /// The hottest healthy on-chip temperature.
    pub fn hottest_chip_temp(&self) -> Option<MilliCelsius> {
        self.temps
            .iter()
            .filter(|t| matches!(t.role, Role::SocTemp | Role::ChipTemp) && t.health.is_ok())
            .filter_map(|t| t.value)
            .max()
    }

    /// The board power: the first healthy `BoardPower` sample.
    pub fn board_power(&self) -> Option<MilliWatts> {
        self.powers
            .iter()
            .find(|p| p.role == Role::BoardPower && p.health.is_ok())
            .and_then(|p| p.value)
            .map(|p| p.power)
    }

    /// The worst health among all samples ([`Health::Ok`] when there are none).
    pub fn worst_health(&self) -> Health {
        let rank = |h: Health| match h {
            Health::Ok => 0,
            Health::Stale => 1,
            Health::Stuck => 2,
            Health::Error => 3,
            Health::Implausible => 4,
            Health::Missing => 5,
        };
        self.temps
            .iter()
            .map(|t| t.health)
            .chain(self.powers.iter().map(|p| p.health))
            .max_by_key(|h| rank(*h))
            .unwrap_or(Health::Ok)
    }
}

struct TempEntry {
    name: String,
    role: Role,
    range: PlausibleRange,
    sensor: Box<dyn TempSensor + Send>,
    monitor: HealthMonitor,
}

struct PowerEntry {
    name: String,
    role: Role,
    sensor: Box<dyn PowerSensor + Send>,
    monitor: HealthMonitor,
}

/// A board's sensors, read together once per tick.
#[derive(Default)]
pub struct SensorSet {
    temps: Vec<TempEntry>,
    powers: Vec<PowerEntry>,
    throttle: Option<(Box<dyn ThrottleSource + Send>, ThrottleTracker)>,
}

impl fmt::Debug for SensorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SensorSet")
            .field(
                "temps",
                &self
                    .temps
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "powers",
                &self
                    .powers
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("throttle", &self.throttle.is_some())
            .finish()
    }
}

impl SensorSet {
    /// An empty set.
    pub fn new() -> Self {
        SensorSet::default()
    }

    /// Adds a temperature sensor with its role's range and health policy.
    pub fn add_temp(
        &mut self,
        name: impl Into<String>,
        role: Role,
        sensor: Box<dyn TempSensor + Send>,
    ) {
        self.add_temp_with(
            name,
            role,
            sensor,
            role.plausible_range(),
            role.health_policy(),
        );
    }

    /// Adds a temperature sensor with an explicit range and health policy.
    pub fn add_temp_with(
        &mut self,
        name: impl Into<String>,
        role: Role,
        sensor: Box<dyn TempSensor + Send>,
        range: PlausibleRange,
        policy: HealthPolicy,
    ) {
        self.temps.push(TempEntry {
            name: name.into(),
            role,
            range,
            sensor,
            monitor: HealthMonitor::new(policy),
        });
    }

    /// Adds a power sensor.
    pub fn add_power(
        &mut self,
        name: impl Into<String>,
        role: Role,
        sensor: Box<dyn PowerSensor + Send>,
    ) {
        self.powers.push(PowerEntry {
            name: name.into(),
            role,
            sensor,
            monitor: HealthMonitor::new(role.health_policy()),
        });
    }

    /// Sets the throttle-flag source.
    pub fn set_throttle(&mut self, source: Box<dyn ThrottleSource + Send>) {
        self.throttle = Some((source, ThrottleTracker::new()));
    }

    /// True when the set holds no sensor at all.
    pub fn is_empty(&self) -> bool {
        self.temps.is_empty() && self.powers.is_empty() && self.throttle.is_none()
    }

    /// Names and roles of the temperature sensors, in order.
    pub fn temp_names(&self) -> impl Iterator<Item = (&str, Role)> {
        self.temps.iter().map(|t| (t.name.as_str(), t.role))
    }

    /// Names and roles of the power sensors, in order.
    pub fn power_names(&self) -> impl Iterator<Item = (&str, Role)> {
        self.powers.iter().map(|p| (p.name.as_str(), p.role))
    }

    /// Reads every sensor once. `now_ms` is the caller's clock (any fixed origin).
    pub fn snapshot(&mut self, now_ms: u64) -> Snapshot {
        let temps = self
            .temps
            .iter_mut()
            .map(|entry| {
                let result = entry.sensor.read_temp().and_then(|t| entry.range.check(t));
                let health = entry
                    .monitor
                    .observe(result.map(|t| i64::from(t.0)), now_ms);
                let value = match (result, health) {
                    (Ok(t), Health::Ok | Health::Stuck) => Some(t),
                    (Err(_), Health::Stale) => entry
                        .monitor
                        .last_good()
                        .and_then(|(v, _)| i32::try_from(v).ok())
                        .map(MilliCelsius),
                    _ => None,
                };
                TempSample {
                    name: entry.name.clone(),
                    role: entry.role,
                    value: if health == Health::Stuck { None } else { value },
                    health,
                    error: result.err(),
                }
            })
            .collect();
        let powers = self
            .powers
            .iter_mut()
            .map(|entry| {
                let result = entry.sensor.read_power();
                let health = entry
                    .monitor
                    .observe(result.map(|p| i64::from(p.power.0)), now_ms);
                PowerSample {
                    name: entry.name.clone(),
                    role: entry.role,
                    value: result.ok().filter(|_| health.is_ok()),
                    health,
                    error: result.err(),
                }
            })
            .collect();
        let (throttle, throttle_seen) = match &mut self.throttle {
            Some((source, tracker)) => {
                let flags = source.read_throttle();
                if let Ok(flags) = flags {
                    tracker.observe(flags);
                }
                (Some(flags), tracker.seen())
            }
            None => (None, ThrottleFlags::default()),
        };
        Snapshot {
            at_ms: now_ms,
            temps,
            powers,
            throttle,
            throttle_seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(Vec<Result<MilliCelsius, SensorError>>);

    impl TempSensor for Scripted {
        fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
            if self.0.is_empty() {
                Err(SensorError::Missing)
            } else {
                self.0.remove(0)
            }
        }
    }

    #[test]
    fn absurd_temperatures_never_read_as_a_cool_chip() {
        let mut set = SensorSet::new();
        set.add_temp(
            "cpu",
            Role::SocTemp,
            Box::new(Scripted(vec![
                Ok(MilliCelsius(-273_000)),
                Ok(MilliCelsius(250_000)),
                Ok(MilliCelsius(61_000)),
            ])),
        );
        let first = set.snapshot(0);
        assert_eq!(first.soc_temp(), None);
        assert_eq!(first.temps[0].health, Health::Implausible);
        assert_eq!(first.temps[0].value, None);
        assert_eq!(set.snapshot(1).temps[0].health, Health::Implausible);
        assert_eq!(set.snapshot(2).soc_temp(), Some(MilliCelsius(61_000)));
    }

    #[test]
    fn a_dropout_shows_the_last_value_as_stale_then_as_an_error() {
        let mut set = SensorSet::new();
        set.add_temp(
            "cpu",
            Role::SocTemp,
            Box::new(Scripted(vec![
                Ok(MilliCelsius(70_000)),
                Err(SensorError::Io),
                Err(SensorError::Io),
            ])),
        );
        set.snapshot(0);
        let stale = set.snapshot(1_000);
        assert_eq!(stale.temps[0].health, Health::Stale);
        assert_eq!(stale.temps[0].value, Some(MilliCelsius(70_000)));
        assert_eq!(stale.soc_temp(), None);
        let failed = set.snapshot(10_000);
        assert_eq!(failed.temps[0].health, Health::Error);
        assert_eq!(failed.temps[0].value, None);
        assert_eq!(failed.worst_health(), Health::Error);
    }
}
