//! Texas Instruments INA219 high-side current/power monitor: 12-bit ADC, shunt voltage LSB
//! 10 µV (±40/80/160/320 mV by gain), bus voltage LSB 4 mV (16 V or 32 V range), current and
//! power from a calibration register computed from the shunt resistance and the maximum
//! expected current. Addresses 0x40-0x4F.

use embedded_hal::i2c::I2c;

use super::shunt::{self, ShuntMonitor};
use super::{CalibrationError, Error};
use crate::units::{MicroVolts, MilliAmps, MilliVolts};

pub mod convert;

pub use convert::{Calibration, Gain};

/// The address with A1 and A0 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0b100_0000;

const BUS_RANGE_32V: u16 = 0b0010_0000_0000_0000;
const GAIN: u16 = 0b0001_1000_0000_0000;
const BUS_ADC: u16 = 0b0000_0111_1000_0000;
const SHUNT_ADC: u16 = 0b0000_0000_0111_1000;
const MODE: u16 = 0b0000_0000_0000_0111;
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

/// Operating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Power-down.
    PowerDown,
    /// Shunt voltage, triggered.
    ShuntTriggered,
    /// Bus voltage, triggered.
    BusTriggered,
    /// Shunt and bus, triggered.
    ShuntAndBusTriggered,
    /// ADC off.
    AdcOff,
    /// Shunt voltage, continuous.
    ShuntContinuous,
    /// Bus voltage, continuous.
    BusContinuous,
    /// Shunt and bus, continuous (power-on default).
    ShuntAndBusContinuous,
}

impl Mode {
    const fn code(self) -> u16 {
        match self {
            Mode::PowerDown => 0b000,
            Mode::ShuntTriggered => 0b001,
            Mode::BusTriggered => 0b010,
            Mode::ShuntAndBusTriggered => 0b011,
            Mode::AdcOff => 0b100,
            Mode::ShuntContinuous => 0b101,
            Mode::BusContinuous => 0b110,
            Mode::ShuntAndBusContinuous => 0b111,
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
    type Calibration = Calibration;
    const POWER_ON_CONFIG: u16 = POWER_ON_CONFIG;
    const POWER_PER_CURRENT_LSB: u32 = convert::POWER_PER_CURRENT_LSB;

    fn calibration(
        shunt_micro_ohms: u32,
        max_current: MilliAmps,
    ) -> Result<Calibration, CalibrationError> {
        Calibration::new(shunt_micro_ohms, max_current)
    }

    fn register(calibration: &Calibration) -> u16 {
        calibration.register
    }

    fn current_lsb_na(calibration: &Calibration) -> u32 {
        calibration.current_lsb_na
    }

    /// The gain that covers the shunt voltage at the maximum current.
    fn config_for(config: u16, calibration: &Calibration) -> Option<u16> {
        Some((config & !GAIN) | (calibration.gain.code() << 11))
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

    /// Selects the operating mode.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config() & !MODE) | mode.code())
    }
}
