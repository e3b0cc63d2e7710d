//! embedded-hal 1.0 I2C drivers for board temperature and power sensors: TMP102 and LM75
//! (ambient / heatsink temperature), INA219 and INA226 (supply voltage, current, power; the
//! read path and calibration maths they share are in [`shunt`]). Each driver is generic over
//! [`embedded_hal::i2c::I2c`], owns its bus until [`release`]d, keeps register maps private,
//! checks arguments before any bus traffic, and does its unit maths in a pure `convert`
//! module. This module must stay `no_std` and allocation-free.
//!
//! [`release`]: tmp102::Tmp102::release

use core::fmt;

use embedded_hal::i2c::I2c;

use crate::error::SensorError;

pub mod ina219;
pub mod ina226;
pub mod lm75;
pub mod shunt;
pub mod tmp102;

/// A driver error over the bus error `E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The bus reported an error (NACK, arbitration loss, bus fault).
    I2c(E),
    /// An argument was outside what the chip accepts; nothing was sent.
    InvalidInput,
    /// The calibration parameters are unusable; nothing was sent.
    Calibration(CalibrationError),
    /// The read needs a calibration first; nothing was sent.
    NotCalibrated,
    /// The chip flagged a math overflow: the measurement exceeds the calibrated range.
    Overflow,
    /// The chip at this address identified itself as something else.
    WrongDevice {
        /// The manufacturer ID read.
        manufacturer: u16,
        /// The die ID read.
        die: u16,
    },
}

impl<E> From<CalibrationError> for Error<E> {
    fn from(value: CalibrationError) -> Self {
        Error::Calibration(value)
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::I2c(e) => write!(f, "I2C bus error: {e:?}"),
            Error::InvalidInput => f.write_str("argument out of the chip's range"),
            Error::Calibration(e) => write!(f, "invalid calibration: {e}"),
            Error::NotCalibrated => f.write_str("the chip must be calibrated before this read"),
            Error::Overflow => f.write_str("measurement overflowed the calibrated range"),
            Error::WrongDevice { manufacturer, die } => write!(
                f,
                "unexpected device: manufacturer {manufacturer:#06x}, die {die:#06x}"
            ),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

impl<E: embedded_hal::i2c::Error> From<Error<E>> for SensorError {
    fn from(value: Error<E>) -> Self {
        match value {
            Error::I2c(_) => SensorError::Bus,
            Error::InvalidInput | Error::Calibration(_) | Error::NotCalibrated => {
                SensorError::NotConfigured
            }
            Error::Overflow => SensorError::Overflow,
            Error::WrongDevice { .. } => SensorError::Missing,
        }
    }
}

/// Why a shunt-monitor calibration was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationError {
    /// The shunt resistance is zero.
    ZeroShunt,
    /// The maximum expected current is zero or negative.
    ZeroCurrent,
    /// Maximum current through the shunt gives a voltage beyond the chip's full scale.
    ShuntVoltageOverRange,
    /// The requested current LSB is outside `max / 2^15 ..= max / 2^12`.
    CurrentLsbOutOfRange,
    /// The resulting calibration register value does not fit the register.
    RegisterOutOfRange,
}

impl fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CalibrationError::ZeroShunt => "shunt resistance must be positive",
            CalibrationError::ZeroCurrent => "maximum expected current must be positive",
            CalibrationError::ShuntVoltageOverRange => {
                "shunt voltage at maximum current exceeds the chip's full scale"
            }
            CalibrationError::CurrentLsbOutOfRange => "current LSB outside the datasheet range",
            CalibrationError::RegisterOutOfRange => "calibration value does not fit the register",
        })
    }
}

impl core::error::Error for CalibrationError {}

/// Reads a big-endian 16-bit register.
fn read_u16<I: I2c>(i2c: &mut I, address: u8, register: u8) -> Result<u16, Error<I::Error>> {
    let mut buf = [0u8; 2];
    i2c.write_read(address, &[register], &mut buf)
        .map_err(Error::I2c)?;
    Ok(u16::from_be_bytes(buf))
}

/// Writes a big-endian 16-bit register.
fn write_u16<I: I2c>(
    i2c: &mut I,
    address: u8,
    register: u8,
    value: u16,
) -> Result<(), Error<I::Error>> {
    let [msb, lsb] = value.to_be_bytes();
    i2c.write(address, &[register, msb, lsb])
        .map_err(Error::I2c)
}
