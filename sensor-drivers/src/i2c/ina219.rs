//! Texas Instruments INA219 high-side current/power monitor: 12-bit ADC, shunt voltage LSB
//! 10 µV (±40/80/160/320 mV by gain), bus voltage LSB 4 mV (16 V or 32 V range), current and
//! power from a calibration register computed from the shunt resistance and the maximum
//! expected current. Addresses 0x40-0x4F.

use embedded_hal::i2c::I2c;

use super::Error;
pub use super::shunt::Mode;
use super::shunt::convert::CalibrationRegister;
use super::shunt::{self, ShuntMonitor};
use crate::units::{MicroVolts, MilliVolts};

pub mod convert;

pub use convert::Gain;

/// A checked INA219 calibration; its range is the [`Gain`].
pub type Calibration = shunt::Calibration<Chip>;

/// The address with A1 and A0 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0b100_0000;

const BUS_RANGE_32V: u16 = 0b0010_0000_0000_0000;
const GAIN: u16 = 0b0001_1000_0000_0000;
const BUS_ADC: u16 = 0b0000_0111_1000_0000;
const SHUNT_ADC: u16 = 0b0000_0000_0111_1000;
/// Power-on configuration (0x399F): 32 V, gain /8, 12-bit both, shunt and bus continuous.
const POWER_ON_CONFIG: u16 = 0b0011_1001_1001_1111;

/// Bus voltage full-scale range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusRange {
    /// 16 V.
    V16,
    /// 32 V (power-on default).
    V32,
}

/// ADC resolution or averaging for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adc {
    /// 9-bit, 84 µs.
    Bits9,
    /// 10-bit, 148 µs.
    Bits10,
    /// 11-bit, 276 µs.
    Bits11,
    /// 12-bit, 532 µs (power-on default).
    Bits12,
    /// 12-bit averaged over 2 samples.
    Samples2,
    /// 4 samples.
    Samples4,
    /// 8 samples.
    Samples8,
    /// 16 samples.
    Samples16,
    /// 32 samples.
    Samples32,
    /// 64 samples.
    Samples64,
    /// 128 samples, 68.1 ms.
    Samples128,
}

impl Adc {
    const fn code(self) -> u16 {
        match self {
            Adc::Bits9 => 0b0000,
            Adc::Bits10 => 0b0001,
            Adc::Bits11 => 0b0010,
            Adc::Bits12 => 0b0011,
            Adc::Samples2 => 0b1001,
            Adc::Samples4 => 0b1010,
            Adc::Samples8 => 0b1011,
            Adc::Samples16 => 0b1100,
            Adc::Samples32 => 0b1101,
            Adc::Samples64 => 0b1110,
            Adc::Samples128 => 0b1111,
        }
    }
}

/// An INA219 on an I2C bus: the family's driver ([`ShuntMonitor`]) with the INA219's
/// configuration fields below.
pub type Ina219<I2C> = ShuntMonitor<I2C, Chip>;

/// The INA219 as a [`shunt::Chip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chip;

impl shunt::sealed::Sealed for Chip {}

impl shunt::Chip for Chip {
    type Range = Gain;
    const POWER_ON_CONFIG: u16 = POWER_ON_CONFIG;
    const POWER_PER_CURRENT_LSB: u32 = convert::POWER_PER_CURRENT_LSB;
    const CALIBRATION: CalibrationRegister = convert::CALIBRATION;

    fn range_covering(shunt_nv: u64) -> Option<Gain> {
        Gain::covering(shunt_nv)
    }

    /// The gain that covers the shunt voltage at the maximum current.
    fn config_for(config: u16, gain: Gain) -> Option<u16> {
        Some((config & !GAIN) | (gain.code() << 11))
    }

    fn shunt_microvolts(raw: u16) -> MicroVolts {
        convert::shunt_microvolts(raw)
    }

    fn bus_millivolts<E>(raw: u16) -> Result<MilliVolts, Error<E>> {
        if convert::math_overflow(raw) {
            return Err(Error::Overflow);
        }
        Ok(convert::bus_millivolts(raw))
    }
}

impl<I2C: I2c> ShuntMonitor<I2C, Chip> {
    /// Selects the bus voltage range.
    pub fn set_bus_range(&mut self, range: BusRange) -> Result<(), Error<I2C::Error>> {
        let config = match range {
            BusRange::V16 => self.config() & !BUS_RANGE_32V,
            BusRange::V32 => self.config() | BUS_RANGE_32V,
        };
        self.write_config(config)
    }

    /// Selects resolution or averaging for the bus and the shunt ADC.
    pub fn set_adc(&mut self, bus: Adc, shunt: Adc) -> Result<(), Error<I2C::Error>> {
        let config =
            (self.config() & !(BUS_ADC | SHUNT_ADC)) | (bus.code() << 7) | (shunt.code() << 3);
        self.write_config(config)
    }
}
