//! Texas Instruments INA226 current/power monitor: 16-bit ADC, shunt voltage LSB 2.5 µV
//! (±81.92 mV), bus voltage LSB 1.25 mV (0-36 V), current and power from a calibration register
//! computed from the shunt resistance and the maximum expected current; averaging and
//! conversion times are programmable. Addresses 0x40-0x4F.

use embedded_hal::i2c::I2c;

use super::Error;
pub use super::shunt::Mode;
use super::shunt::convert::CalibrationRegister;
use super::shunt::{self, ShuntMonitor};
use crate::units::{MicroVolts, MilliVolts};

pub mod convert;

pub use convert::ShuntRange;

/// A checked INA226 calibration.
pub type Calibration = shunt::Calibration<Chip>;

/// The address with A1 and A0 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0b100_0000;

const MANUFACTURER_ID: u8 = 0xFE;
const DIE_ID: u8 = 0xFF;

const TEXAS_INSTRUMENTS: u16 = 0x5449;
const INA226_DIE: u16 = 0x2260;

const AVERAGING: u16 = 0b0000_1110_0000_0000;
const BUS_CONVERSION_TIME: u16 = 0b0000_0001_1100_0000;
const SHUNT_CONVERSION_TIME: u16 = 0b0000_0000_0011_1000;
/// Power-on configuration (0x4127): 1 sample, 1.1 ms conversions, shunt and bus continuous.
const POWER_ON_CONFIG: u16 = 0b0100_0001_0010_0111;

/// Samples averaged per reported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Averaging {
    /// 1 (power-on default).
    X1,
    /// 4.
    X4,
    /// 16.
    X16,
    /// 64.
    X64,
    /// 128.
    X128,
    /// 256.
    X256,
    /// 512.
    X512,
    /// 1024.
    X1024,
}

impl Averaging {
    const fn code(self) -> u16 {
        match self {
            Averaging::X1 => 0b000,
            Averaging::X4 => 0b001,
            Averaging::X16 => 0b010,
            Averaging::X64 => 0b011,
            Averaging::X128 => 0b100,
            Averaging::X256 => 0b101,
            Averaging::X512 => 0b110,
            Averaging::X1024 => 0b111,
        }
    }
}

/// ADC conversion time for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversionTime {
    /// 140 µs.
    Us140,
    /// 204 µs.
    Us204,
    /// 332 µs.
    Us332,
    /// 588 µs.
    Us588,
    /// 1.1 ms (power-on default).
    Us1100,
    /// 2.116 ms.
    Us2116,
    /// 4.156 ms.
    Us4156,
    /// 8.244 ms.
    Us8244,
}

impl ConversionTime {
    const fn code(self) -> u16 {
        match self {
            ConversionTime::Us140 => 0b000,
            ConversionTime::Us204 => 0b001,
            ConversionTime::Us332 => 0b010,
            ConversionTime::Us588 => 0b011,
            ConversionTime::Us1100 => 0b100,
            ConversionTime::Us2116 => 0b101,
            ConversionTime::Us4156 => 0b110,
            ConversionTime::Us8244 => 0b111,
        }
    }
}

/// An INA226 on an I2C bus: the family's driver ([`ShuntMonitor`]) with the INA226's
/// identity check and configuration fields below.
pub type Ina226<I2C> = ShuntMonitor<I2C, Chip>;

/// The INA226 as a [`shunt::Chip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chip;

impl shunt::sealed::Sealed for Chip {}

impl shunt::Chip for Chip {
    type Range = ShuntRange;
    const POWER_ON_CONFIG: u16 = POWER_ON_CONFIG;
    const POWER_PER_CURRENT_LSB: u32 = convert::POWER_PER_CURRENT_LSB;
    const CALIBRATION: CalibrationRegister = convert::CALIBRATION;

    fn range_covering(shunt_nv: u64) -> Option<ShuntRange> {
        ShuntRange::covering(shunt_nv)
    }

    /// The INA226's shunt range is fixed: the configuration stays as it is.
    fn config_for(_config: u16, _range: ShuntRange) -> Option<u16> {
        None
    }

    fn shunt_microvolts(raw: u16) -> MicroVolts {
        convert::shunt_microvolts(raw)
    }

    fn bus_millivolts<E>(raw: u16) -> Result<MilliVolts, Error<E>> {
        Ok(convert::bus_millivolts(raw))
    }
}

impl<I2C: I2c> ShuntMonitor<I2C, Chip> {
    /// Checks the manufacturer (Texas Instruments) and die (INA226) ID registers.
    pub fn verify_identity(&mut self) -> Result<(), Error<I2C::Error>> {
        let manufacturer = self.read(MANUFACTURER_ID)?;
        let die = self.read(DIE_ID)?;
        if manufacturer == TEXAS_INSTRUMENTS && die == INA226_DIE {
            Ok(())
        } else {
            Err(Error::WrongDevice { manufacturer, die })
        }
    }

    /// Sets how many samples are averaged.
    pub fn set_averaging(&mut self, averaging: Averaging) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config() & !AVERAGING) | (averaging.code() << 9))
    }

    /// Sets the bus and the shunt conversion times.
    pub fn set_conversion_times(
        &mut self,
        bus: ConversionTime,
        shunt: ConversionTime,
    ) -> Result<(), Error<I2C::Error>> {
        let config = (self.config() & !(BUS_CONVERSION_TIME | SHUNT_CONVERSION_TIME))
            | (bus.code() << 6)
            | (shunt.code() << 3);
        self.write_config(config)
    }
}
