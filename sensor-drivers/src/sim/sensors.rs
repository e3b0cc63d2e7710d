//! The twin behind the sensor and actuator traits: [`SimBoard`] shares one [`SimSoc`] between
//! its die and board temperature sensors, its supply power sensor, its frequency cap, its fan
//! and its throttle flags, so a governor drives the twin exactly as it drives a board. A lock
//! poisoned by a panicking thread reads as [`SensorError::Unavailable`], never as a value.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::profile::ProfileError;
use super::realism::{SensorRealism, SplitMix64, quantise};
use super::soc::SimSoc;
use crate::error::{ActuatorError, SensorError};
use crate::health::HealthPolicy;
use crate::sensor_set::{Role, SensorSet};
use crate::throttle::ThrottleFlags;
use crate::traits::{Fan, FreqCap, PowerReading, PowerSensor, TempSensor, ThrottleSource};
use crate::units::{KiloHertz, MilliAmps, MilliCelsius, MilliVolts, MilliWatts, Percent};

/// A shareable handle to one simulated SoC.
#[derive(Debug, Clone)]
pub struct SimBoard {
    soc: Arc<Mutex<SimSoc>>,
}

/// Which thermal node a sensor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The SoC die (what `cpu-thermal` / `tj-thermal` report).
    Die,
    /// The board or heatsink.
    Board,
}

impl SimBoard {
    /// Shares `soc`.
    pub fn new(soc: SimSoc) -> SimBoard {
        SimBoard {
            soc: Arc::new(Mutex::new(soc)),
        }
    }

    /// A board running a built-in profile.
    pub fn builtin(name: &str) -> Result<SimBoard, ProfileError> {
        SimSoc::builtin(name).map(SimBoard::new)
    }

    fn lock(&self) -> Option<MutexGuard<'_, SimSoc>> {
        self.soc.lock().ok()
    }

    /// Runs `f` on the SoC; `None` if a thread panicked while holding it.
    pub fn with<R>(&self, f: impl FnOnce(&mut SimSoc) -> R) -> Option<R> {
        self.lock().map(|mut soc| f(&mut soc))
    }

    /// Advances the SoC; returns false if the lock is poisoned.
    pub fn step(&self, dt: Duration) -> bool {
        self.with(|soc| soc.step(dt)).is_some()
    }

    /// A temperature sensor on `node`.
    pub fn temp_sensor(&self, node: Node, realism: SensorRealism) -> SimTempSensor {
        SimTempSensor {
            board: self.clone(),
            node,
            reader: Reader::new(realism),
        }
    }

    /// The supply power sensor.
    pub fn power_sensor(&self, realism: SensorRealism) -> SimPowerSensor {
        SimPowerSensor {
            board: self.clone(),
            reader: Reader::new(realism),
        }
    }

    /// The governor's frequency cap.
    pub fn freq_cap(&self) -> SimFreqCap {
        let (levels, cap) = self
            .with(|soc| (soc.profile().levels(), soc.governor_cap()))
            .unwrap_or_default();
        let top = levels.last().copied().unwrap_or_default();
        SimFreqCap {
            board: self.clone(),
            levels,
            cap,
            top,
        }
    }

    /// The fan, when the profile has one.
    pub fn fan(&self) -> Option<SimFan> {
        self.with(|soc| soc.profile().fan.is_some())
            .unwrap_or(false)
            .then(|| SimFan {
                board: self.clone(),
            })
    }

    /// The firmware throttle flags.
    pub fn throttle(&self) -> SimThrottle {
        SimThrottle {
            board: self.clone(),
        }
    }

    /// A sensor set like a real board's: the die as `soc_temp` (named after the board's
    /// governing zone), the board node as `heatsink_temp`, the supply as `board_power`, and the
    /// throttle flags. `realism` applies to the die sensor; the others are ideal.
    pub fn sensor_set(&self, realism: SensorRealism) -> SensorSet {
        let zone = self
            .with(|soc| soc.profile().governing_zone.clone())
            .unwrap_or_else(|| "sim-die".to_owned());
        let mut set = SensorSet::new();
        set.add_temp(
            zone,
            Role::SocTemp,
            Box::new(self.temp_sensor(Node::Die, realism)),
        );
        set.add_temp_with(
            "sim-board",
            Role::HeatsinkTemp,
            Box::new(self.temp_sensor(Node::Board, SensorRealism::ideal())),
            Role::SocTemp.plausible_range(),
            HealthPolicy::default(),
        );
        set.add_power(
            "sim-supply",
            Role::BoardPower,
            Box::new(self.power_sensor(SensorRealism::ideal())),
        );
        set.set_throttle(Box::new(self.throttle()));
        set
    }
}

#[derive(Debug)]
struct Reader {
    realism: SensorRealism,
    rng: SplitMix64,
    frozen: Option<f64>,
}

impl Reader {
    fn new(realism: SensorRealism) -> Self {
        let rng = SplitMix64::new(realism.seed);
        Reader {
            realism,
            rng,
            frozen: None,
        }
    }

    /// Applies dropout, latency, noise, quantisation and sticking to the node value picked by
    /// `pick` from the SoC's history.
    fn read(
        &mut self,
        soc: &SimSoc,
        pick: impl Fn(&super::soc::Sample) -> f64,
    ) -> Result<f64, SensorError> {
        if soc.is_shut_down() {
            return Err(SensorError::Unavailable);
        }
        if self.realism.dropout_probability > 0.0
            && self.rng.next_f64() < self.realism.dropout_probability
        {
            return Err(SensorError::Unavailable);
        }
        let now = soc.time_s();
        if let (Some(at), Some(frozen)) = (self.realism.stuck_after, self.frozen)
            && now >= at.as_secs_f64()
        {
            return Ok(frozen);
        }
        let sample = soc.sample_at(now - self.realism.latency.as_secs_f64());
        let mut value = pick(&sample);
        if self.realism.noise_stddev > 0.0 {
            value += self.realism.noise_stddev * self.rng.next_gaussian();
        }
        let value = quantise(value, self.realism.quantum);
        self.frozen = Some(value);
        Ok(value)
    }
}

fn to_i32(value: f64) -> Result<i32, SensorError> {
    let rounded = value.round();
    if rounded.is_finite() && rounded >= f64::from(i32::MIN) && rounded <= f64::from(i32::MAX) {
        Ok(rounded as i32)
    } else {
        Err(SensorError::Malformed)
    }
}

/// A twin temperature sensor.
#[derive(Debug)]
pub struct SimTempSensor {
    board: SimBoard,
    node: Node,
    reader: Reader,
}

impl TempSensor for SimTempSensor {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        let soc = self.board.lock().ok_or(SensorError::Unavailable)?;
        let node = self.node;
        let value = self.reader.read(&soc, |s| match node {
            Node::Die => s.die_c * 1000.0,
            Node::Board => s.board_c * 1000.0,
        })?;
        to_i32(value).map(MilliCelsius)
    }
}

/// The twin's supply power sensor (bus voltage from the profile, current derived).
#[derive(Debug)]
pub struct SimPowerSensor {
    board: SimBoard,
    reader: Reader,
}

impl PowerSensor for SimPowerSensor {
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        let soc = self.board.lock().ok_or(SensorError::Unavailable)?;
        let mw = to_i32(self.reader.read(&soc, |s| s.power_mw)?.max(0.0))?;
        let mv =
            i32::try_from(soc.profile().power.supply_mv).map_err(|_| SensorError::Malformed)?;
        let ma = if mv > 0 {
            (i64::from(mw) * 1000 / i64::from(mv)) as i32
        } else {
            0
        };
        Ok(PowerReading {
            power: MilliWatts(mw),
            voltage: Some(MilliVolts(mv)),
            current: Some(MilliAmps(ma)),
        })
    }
}

/// The twin's governor frequency cap.
#[derive(Debug)]
pub struct SimFreqCap {
    board: SimBoard,
    levels: Vec<KiloHertz>,
    cap: KiloHertz,
    top: KiloHertz,
}

impl FreqCap for SimFreqCap {
    fn levels(&self) -> &[KiloHertz] {
        &self.levels
    }

    fn cap(&self) -> KiloHertz {
        self.cap
    }

    fn set_cap(&mut self, cap: KiloHertz) -> Result<KiloHertz, ActuatorError> {
        let applied = self
            .board
            .with(|soc| soc.set_governor_cap(cap))
            .ok_or(ActuatorError::Unavailable)?;
        self.cap = applied;
        Ok(applied)
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        self.set_cap(self.top).map(|_| ())
    }
}

/// The twin's fan, overriding the firmware curve until restored.
#[derive(Debug)]
pub struct SimFan {
    board: SimBoard,
}

impl Fan for SimFan {
    fn set_duty(&mut self, duty: Percent) -> Result<Percent, ActuatorError> {
        self.board
            .with(|soc| soc.set_fan_override(Some(duty)))
            .ok_or(ActuatorError::Unavailable)??;
        Ok(duty)
    }

    fn duty(&mut self) -> Result<Percent, SensorError> {
        self.board
            .with(|soc| soc.fan_duty())
            .ok_or(SensorError::Unavailable)
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        self.board
            .with(|soc| soc.set_fan_override(None))
            .ok_or(ActuatorError::Unavailable)?
    }
}

/// The twin's firmware throttle flags.
#[derive(Debug)]
pub struct SimThrottle {
    board: SimBoard,
}

impl ThrottleSource for SimThrottle {
    fn read_throttle(&mut self) -> Result<ThrottleFlags, SensorError> {
        self.board
            .with(|soc| soc.throttle_flags())
            .ok_or(SensorError::Unavailable)
    }
}
