//! The vocabulary shared by every controller: what the runtime observes each control period
//! ([`Observation`]) and what a controller decides ([`Decision`]). Plain data, no behaviour
//! beyond small helpers; time is a monotonic [`Duration`] since the runtime's epoch so that
//! the same controllers run live and in offline simulation.

use std::fmt;
use std::time::Duration;

/// Health of one temperature sample, as judged by the sensor layer (and re-checked by the
/// governor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// A new, plausible sample.
    Fresh,
    /// The sensor answered, but with a sample that is not new.
    Stale,
    /// The value is outside the physically plausible range.
    Implausible,
    /// The value has not changed while it should have.
    Stuck,
    /// The sensor did not answer (read error, dropout, missing file).
    Missing,
}

impl Health {
    /// Short lower-case name for status lines and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Fresh => "fresh",
            Health::Stale => "stale",
            Health::Implausible => "implausible",
            Health::Stuck => "stuck",
            Health::Missing => "missing",
        }
    }
}

impl From<sensor_drivers::Health> for Health {
    /// Maps the sensor layer's health: a failed read counts as missing, a held old value as
    /// stale.
    fn from(h: sensor_drivers::Health) -> Self {
        match h {
            sensor_drivers::Health::Ok => Health::Fresh,
            sensor_drivers::Health::Stale => Health::Stale,
            sensor_drivers::Health::Implausible => Health::Implausible,
            sensor_drivers::Health::Stuck => Health::Stuck,
            sensor_drivers::Health::Missing | sensor_drivers::Health::Error => Health::Missing,
        }
    }
}

/// One reading of the governing temperature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TempReading {
    /// Temperature in °C; meaningless unless `health` is [`Health::Fresh`].
    pub celsius: f32,
    /// What the sensor layer says about this sample.
    pub health: Health,
    /// When the sample was taken, as monotonic time since the runtime's epoch.
    pub sampled_at: Duration,
}

impl TempReading {
    /// A fresh sample of `celsius` taken at `sampled_at`.
    pub fn fresh(celsius: f32, sampled_at: Duration) -> Self {
        Self {
            celsius,
            health: Health::Fresh,
            sampled_at,
        }
    }

    /// A reading with no usable value (dropout, read error) observed at `at`.
    pub fn missing(at: Duration) -> Self {
        Self {
            celsius: f32::NAN,
            health: Health::Missing,
            sampled_at: at,
        }
    }
}

/// Work classes, highest priority first in the default order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Token generation a user is waiting for.
    Interactive = 0,
    /// Background LoRA fine-tuning steps.
    Training = 1,
    /// Batch work nobody is waiting for.
    Batch = 2,
}

impl Priority {
    /// All classes in index order.
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Training, Priority::Batch];

    /// Index into per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Training => "training",
            Priority::Batch => "batch",
        }
    }
}

/// How much of the compute pool each class would use if nothing paced it, as a fraction of
/// wall time over the last control period (0 = idle, 1 = always has work).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    /// Per class, indexed by [`Priority::index`].
    pub occupancy: [f32; 3],
}

impl Demand {
    /// Demand where the listed classes always have work and the others are idle.
    pub fn busy(classes: &[Priority]) -> Self {
        let mut occupancy = [0.0; 3];
        for c in classes {
            occupancy[c.index()] = 1.0;
        }
        Self { occupancy }
    }

    /// Demand of one class, clamped to `0..=1` (NaN reads as idle).
    pub fn of(&self, class: Priority) -> f32 {
        let v = self.occupancy[class.index()];
        if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
    }
}

/// The actuators' state as the runtime last read it back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActuatorState {
    /// Current CPU frequency in kHz (the real one where known, else the requested one).
    pub freq_khz: Option<u32>,
    /// Compute threads the engine is using.
    pub threads: u16,
    /// Current fan level, where a fan exists.
    pub fan_level: Option<u8>,
    /// Fraction of wall time the compute pool was busy over the last period (`0..=1`).
    pub utilisation: f32,
}

/// Everything a controller sees at one control tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The governing temperature.
    pub temp: TempReading,
    /// Measured board or SoC power in W over the last period, where a power sensor exists.
    pub power_w: Option<f32>,
    /// Actuator read-back.
    pub actuators: ActuatorState,
    /// Work waiting per class.
    pub demand: Demand,
}

/// Pacing of one work class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Fraction of wall time the class may keep the pool busy: 1 = unpaced, 0 = paused.
    pub duty: f32,
}

impl Pace {
    /// Not paced.
    pub const FULL: Pace = Pace { duty: 1.0 };
    /// Paused: no steps until the duty rises again.
    pub const PAUSED: Pace = Pace { duty: 0.0 };

    /// Whether the class may not run at all.
    pub fn is_paused(self) -> bool {
        self.duty <= 0.0
    }

    /// Delay to insert after a step that kept the pool busy for `busy`, so that busy time is
    /// `duty` of wall time: `busy * (1 - duty) / duty`. `None` when paused.
    pub fn delay_after(self, busy: Duration) -> Option<Duration> {
        if self.duty >= 1.0 {
            Some(Duration::ZERO)
        } else if self.duty <= 0.0 {
            None
        } else {
            let d = f64::from(self.duty);
            Some(busy.mul_f64((1.0 - d) / d))
        }
    }
}

/// What is limiting work right now, most severe first when several apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limiter {
    /// Nothing is limited.
    None,
    /// The CPU frequency is capped below its maximum.
    Freq,
    /// Fewer compute threads than cores.
    Threads,
    /// Background work (training, batch) is paced.
    PaceTraining,
    /// Background work (training, batch) is paused.
    PauseTraining,
    /// Interactive generation is paced.
    PaceGeneration,
    /// Only the fan is working harder; no work is limited.
    Fan,
    /// The coolest mode, because of a sensor fault or the hard ceiling.
    FailSafe,
}

impl Limiter {
    /// Short lower-case name for status lines and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Limiter::None => "none",
            Limiter::Freq => "freq",
            Limiter::Threads => "threads",
            Limiter::PaceTraining => "pace_training",
            Limiter::PauseTraining => "pause_training",
            Limiter::PaceGeneration => "pace_generation",
            Limiter::Fan => "fan",
            Limiter::FailSafe => "failsafe",
        }
    }
}

impl fmt::Display for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The controller's operating mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No work is limited.
    Unlimited,
    /// Work is limited to hold the temperature at the setpoint.
    Regulating,
    /// Coolest mode: a sensor fault, or the hard ceiling was reached.
    FailSafe,
}

impl Mode {
    /// Short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unlimited => "unlimited",
            Mode::Regulating => "regulating",
            Mode::FailSafe => "failsafe",
        }
    }
}

/// A controller's output for the next control period.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// CPU frequency cap in kHz; `None` when the cap is not an actuator here.
    pub freq_cap_khz: Option<u32>,
    /// Compute threads to use.
    pub threads: u16,
    /// Pacing per class, indexed by [`Priority::index`].
    pub pacing: [Pace; 3],
    /// Fan level to force; `None` leaves the fan to the firmware's own curve (or there is no
    /// fan the governor may drive).
    pub fan_level: Option<u8>,
    /// Operating mode.
    pub mode: Mode,
    /// What is limiting work.
    pub limiter: Limiter,
    /// Human-readable reason for status lines and telemetry.
    pub reason: String,
    /// Power budget in W the decision was sized for (model watts; infinite when unbounded).
    pub power_budget_w: f32,
}

impl Decision {
    /// Pacing of one class.
    pub fn pace(&self, class: Priority) -> Pace {
        self.pacing[class.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_sensor_layer_health_onto_governor_health() {
        use sensor_drivers::Health as S;
        let cases = [
            (S::Ok, Health::Fresh),
            (S::Stale, Health::Stale),
            (S::Implausible, Health::Implausible),
            (S::Stuck, Health::Stuck),
            (S::Missing, Health::Missing),
            (S::Error, Health::Missing),
        ];
        for (s, g) in cases {
            assert_eq!(Health::from(s), g, "{s}");
        }
    }

    #[test]
    fn pacing_delay_spreads_idle_time_after_each_step() {
        let busy = Duration::from_millis(100);
        assert_eq!(Pace::FULL.delay_after(busy), Some(Duration::ZERO));
        assert_eq!(Pace::PAUSED.delay_after(busy), None);
        assert_eq!(
            Pace { duty: 0.25 }.delay_after(busy),
            Some(Duration::from_millis(300))
        );
    }
}
