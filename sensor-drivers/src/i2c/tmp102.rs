//! Texas Instruments TMP102 digital temperature sensor: 12-bit (13-bit in extended mode),
//! 0.0625 °C per LSB, -55 °C to 150 °C, addresses 0x48-0x4B set by the ADD0 pin.

use embedded_hal::i2c::I2c;

use super::{Error, read_u16, write_u16};
use crate::error::SensorError;
use crate::traits::TempSensor;
use crate::units::MilliCelsius;

pub mod convert;

/// The address with ADD0 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0b100_1000;

const TEMPERATURE: u8 = 0b00;
const CONFIG: u8 = 0b01;
const T_LOW: u8 = 0b10;
const T_HIGH: u8 = 0b11;

const ONE_SHOT: u16 = 0b1000_0000_0000_0000;
const SHUTDOWN: u16 = 0b0000_0001_0000_0000;
const CONVERSION_RATE: u16 = 0b0000_0000_1100_0000;
const EXTENDED_MODE: u16 = 0b0000_0000_0001_0000;
/// Power-on configuration (0x60A0): 12-bit, one fault, comparator mode, 4 Hz, normal mode.
const POWER_ON_CONFIG: u16 = 0b0110_0000_1010_0000;

/// How often the sensor converts in continuous mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversionRate {
    /// One conversion every 4 s.
    Hz0_25,
    /// One conversion per second.
    Hz1,
    /// Four conversions per second (power-on default).
    Hz4,
    /// Eight conversions per second.
    Hz8,
}

impl ConversionRate {
    const fn bits(self) -> u16 {
        match self {
            ConversionRate::Hz0_25 => 0b0000_0000_0000_0000,
            ConversionRate::Hz1 => 0b0000_0000_0100_0000,
            ConversionRate::Hz4 => 0b0000_0000_1000_0000,
            ConversionRate::Hz8 => 0b0000_0000_1100_0000,
        }
    }
}

/// A TMP102 on an I2C bus.
#[derive(Debug)]
pub struct Tmp102<I2C> {
    i2c: I2C,
    address: u8,
    config: u16,
}

impl<I2C: I2c> Tmp102<I2C> {
    /// Takes the bus; assumes the chip is in its power-on configuration. No bus traffic.
    pub fn new(i2c: I2C, address: u8) -> Self {
        Tmp102 {
            i2c,
            address,
            config: POWER_ON_CONFIG,
        }
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// True when the cached configuration selects 13-bit extended mode.
    pub const fn is_extended(&self) -> bool {
        self.config & EXTENDED_MODE != 0
    }

    /// Reads the temperature register.
    pub fn read_temperature(&mut self) -> Result<MilliCelsius, Error<I2C::Error>> {
        let [msb, lsb] = read_u16(&mut self.i2c, self.address, TEMPERATURE)?.to_be_bytes();
        Ok(convert::millicelsius_from_raw(msb, lsb, self.is_extended()))
    }

    /// Sets the continuous conversion rate.
    pub fn set_conversion_rate(&mut self, rate: ConversionRate) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config & !CONVERSION_RATE) | rate.bits())
    }

    /// Selects 13-bit extended mode (range up to 150 °C).
    pub fn enable_extended_mode(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_config(self.config | EXTENDED_MODE)
    }

    /// Selects 12-bit normal mode (range up to 128 °C).
    pub fn disable_extended_mode(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_config(self.config & !EXTENDED_MODE)
    }

    /// Stops continuous conversion (about 1 µA).
    pub fn shutdown(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_config(self.config | SHUTDOWN)
    }

    /// Resumes continuous conversion.
    pub fn resume(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_config(self.config & !SHUTDOWN)
    }

    /// Starts one conversion while shut down. The chip clears the bit itself, so it is not cached.
    pub fn trigger_one_shot(&mut self) -> Result<(), Error<I2C::Error>> {
        let config = self.config | SHUTDOWN;
        write_u16(&mut self.i2c, self.address, CONFIG, config | ONE_SHOT)?;
        self.config = config;
        Ok(())
    }

    /// Sets the thermostat limits. Both must fit the current mode's range and `low < high`;
    /// otherwise nothing is sent.
    pub fn set_limits(
        &mut self,
        low: MilliCelsius,
        high: MilliCelsius,
    ) -> Result<(), Error<I2C::Error>> {
        let extended = self.is_extended();
        let (low_raw, high_raw) = match (
            convert::raw_from_millicelsius(low, extended),
            convert::raw_from_millicelsius(high, extended),
        ) {
            (Some(l), Some(h)) if low < high => (l, h),
            _ => return Err(Error::InvalidInput),
        };
        write_u16(
            &mut self.i2c,
            self.address,
            T_LOW,
            u16::from_be_bytes(low_raw),
        )?;
        write_u16(
            &mut self.i2c,
            self.address,
            T_HIGH,
            u16::from_be_bytes(high_raw),
        )
    }

    /// The one place the configuration register is written; the cache follows only on success.
    fn write_config(&mut self, config: u16) -> Result<(), Error<I2C::Error>> {
        write_u16(&mut self.i2c, self.address, CONFIG, config)?;
        self.config = config;
        Ok(())
    }
}

impl<I2C: I2c> TempSensor for Tmp102<I2C> {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        self.read_temperature().map_err(SensorError::from)
    }
}
