//! The sensor and actuator traits a governor uses without knowing whether it talks to a board,
//! an I2C chip or the simulated SoC. Each trait is small and object-safe; each implementation
//! lives in its own module ([`crate::i2c`], `linux`, `sim`, `rpi`).

use crate::error::{ActuatorError, SensorError};
use crate::throttle::ThrottleFlags;
use crate::units::{KiloHertz, MilliAmps, MilliCelsius, MilliVolts, MilliWatts, Percent, Rpm};

/// A temperature source: an SoC thermal zone, an hwmon channel, an I2C sensor, the twin's die.
pub trait TempSensor {
    /// Reads the current temperature.
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError>;
}

/// One power measurement, with the voltage and current behind it when the source has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub struct PowerReading {
    /// Power drawn.
    pub power: MilliWatts,
    /// Bus (supply) voltage, when measured.
    pub voltage: Option<MilliVolts>,
    /// Current, when measured.
    pub current: Option<MilliAmps>,
}

impl PowerReading {
    /// A reading with power only.
    pub const fn power_only(power: MilliWatts) -> Self {
        PowerReading {
            power,
            voltage: None,
            current: None,
        }
    }
}

/// A power source: an INA219/INA226 on I2C, an INA3221 rail in hwmon, the twin's supply.
pub trait PowerSensor {
    /// Reads the current power draw.
    fn read_power(&mut self) -> Result<PowerReading, SensorError>;
}

/// A CPU frequency ceiling the governor can lower and give back.
pub trait FreqCap {
    /// The frequencies this actuator can apply, ascending.
    fn levels(&self) -> &[KiloHertz];
    /// The ceiling currently in force.
    fn cap(&self) -> KiloHertz;
    /// Applies the highest level at or below `cap` (the lowest level if `cap` is below all of
    /// them) and returns the level applied.
    fn set_cap(&mut self, cap: KiloHertz) -> Result<KiloHertz, ActuatorError>;
    /// Puts back the ceiling that was in force before this actuator first changed it.
    fn restore(&mut self) -> Result<(), ActuatorError>;
}

/// A fan the governor can drive directly.
pub trait Fan {
    /// Sets the duty cycle; returns the duty actually applied (a fan with discrete states
    /// rounds to the nearest state).
    fn set_duty(&mut self, duty: Percent) -> Result<Percent, ActuatorError>;
    /// The duty cycle in force.
    fn duty(&mut self) -> Result<Percent, SensorError>;
    /// The measured speed, when the fan has a tachometer.
    fn speed(&mut self) -> Result<Option<Rpm>, SensorError> {
        Ok(None)
    }
    /// Hands the fan back to its automatic control (or its fail-safe duty when it has none).
    fn restore(&mut self) -> Result<(), ActuatorError>;
}

/// A source of firmware throttle flags (Raspberry Pi `get_throttled`, or the twin's firmware).
pub trait ThrottleSource {
    /// Reads the current flags.
    fn read_throttle(&mut self) -> Result<ThrottleFlags, SensorError>;
}

/// The highest level at or below `cap`, else the lowest level; `None` when `levels` is empty.
/// `levels` must be ascending.
pub fn level_at_or_below(levels: &[KiloHertz], cap: KiloHertz) -> Option<KiloHertz> {
    levels
        .iter()
        .rev()
        .find(|level| **level <= cap)
        .or_else(|| levels.first())
        .copied()
}

impl<T: TempSensor + ?Sized> TempSensor for &mut T {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        (**self).read_temp()
    }
}

impl<T: PowerSensor + ?Sized> PowerSensor for &mut T {
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        (**self).read_power()
    }
}

#[cfg(feature = "std")]
impl<T: TempSensor + ?Sized> TempSensor for Box<T> {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        (**self).read_temp()
    }
}

#[cfg(feature = "std")]
impl<T: PowerSensor + ?Sized> PowerSensor for Box<T> {
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        (**self).read_power()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_selection_picks_the_highest_level_not_above_the_cap() {
        let levels = [
            KiloHertz(600_000),
            KiloHertz(750_000),
            KiloHertz(1_000_000),
            KiloHertz(1_500_000),
        ];
        let cases = [
            (2_000_000, 1_500_000),
            (1_500_000, 1_500_000),
            (1_499_999, 1_000_000),
            (750_000, 750_000),
            (600_000, 600_000),
            (100_000, 600_000),
        ];
        for (cap, expected) in cases {
            assert_eq!(
                level_at_or_below(&levels, KiloHertz(cap)),
                Some(KiloHertz(expected)),
                "cap {cap}"
            );
        }
        assert_eq!(level_at_or_below(&[], KiloHertz(1)), None);
    }
}
