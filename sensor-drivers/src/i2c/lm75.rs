//! LM75-family digital temperature sensors: the classic 9-bit part (0.5 °C per LSB) and the
//! 11-bit LM75B (0.125 °C per LSB), -55 °C to 125 °C, addresses 0x48-0x4F. Over-temperature
//! (T_OS) and hysteresis (T_HYST) limits are 9-bit on both.

use embedded_hal::i2c::I2c;

use super::{Error, read_u16, write_u16};
use crate::error::SensorError;
use crate::traits::TempSensor;
use crate::units::MilliCelsius;

pub mod convert;

/// The address with A2..A0 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0b100_1000;

const TEMPERATURE: u8 = 0b00;
const CONFIG: u8 = 0b01;
const T_HYST: u8 = 0b10;
const T_OS: u8 = 0b11;

const SHUTDOWN: u8 = 0b0000_0001;
const OS_INTERRUPT_MODE: u8 = 0b0000_0010;
const OS_ACTIVE_HIGH: u8 = 0b0000_0100;
const FAULT_QUEUE: u8 = 0b0001_1000;
const POWER_ON_CONFIG: u8 = 0b0000_0000;

/// How many bits of the temperature register the part fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Classic LM75: 9 bits, 0.5 °C.
    Bits9,
    /// LM75B: 11 bits, 0.125 °C.
    Bits11,
}

/// Consecutive faults needed to trip the OS output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultQueue {
    /// One fault (power-on default).
    One,
    /// Two faults.
    Two,
    /// Four faults.
    Four,
    /// Six faults.
    Six,
}

impl FaultQueue {
    const fn bits(self) -> u8 {
        match self {
            FaultQueue::One => 0b0000_0000,
            FaultQueue::Two => 0b0000_1000,
            FaultQueue::Four => 0b0001_0000,
            FaultQueue::Six => 0b0001_1000,
        }
    }
}

/// An LM75 on an I2C bus.
#[derive(Debug)]
pub struct Lm75<I2C> {
    i2c: I2C,
    address: u8,
    resolution: Resolution,
    config: u8,
}

impl<I2C: I2c> Lm75<I2C> {
    /// Takes the bus; assumes a 9-bit part in its power-on configuration. No bus traffic.
    pub fn new(i2c: I2C, address: u8) -> Self {
        Lm75 {
            i2c,
            address,
            resolution: Resolution::Bits9,
            config: POWER_ON_CONFIG,
        }
    }

    /// Declares the part's resolution (the chip cannot report it). No bus traffic.
    pub fn with_resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = resolution;
        self
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// Reads the temperature register.
    pub fn read_temperature(&mut self) -> Result<MilliCelsius, Error<I2C::Error>> {
        let [msb, lsb] = read_u16(&mut self.i2c, self.address, TEMPERATURE)?.to_be_bytes();
        Ok(convert::millicelsius_from_raw(msb, lsb, self.resolution))
    }

    /// Stops conversions (the I2C interface stays active).
    pub fn shutdown(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_config(self.config | SHUTDOWN)
    }

    /// Resumes conversions.
    pub fn enable(&mut self) -> Result<(), Error<I2C::Error>> {
        self.write_config(self.config & !SHUTDOWN)
    }

    /// Sets how many consecutive faults trip the OS output.
    pub fn set_fault_queue(&mut self, queue: FaultQueue) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config & !FAULT_QUEUE) | queue.bits())
    }

    /// Selects interrupt (`true`) or comparator (`false`) mode for the OS output.
    pub fn set_os_interrupt_mode(&mut self, interrupt: bool) -> Result<(), Error<I2C::Error>> {
        self.write_config(set_bit(self.config, OS_INTERRUPT_MODE, interrupt))
    }

    /// Selects an active-high (`true`) or active-low (`false`) OS output.
    pub fn set_os_active_high(&mut self, active_high: bool) -> Result<(), Error<I2C::Error>> {
        self.write_config(set_bit(self.config, OS_ACTIVE_HIGH, active_high))
    }

    /// Sets the over-temperature limit and its hysteresis (both -55 °C to 125 °C in 0.5 °C steps,
    /// hysteresis below the limit); nothing is sent otherwise.
    pub fn set_os_limits(
        &mut self,
        over_temperature: MilliCelsius,
        hysteresis: MilliCelsius,
    ) -> Result<(), Error<I2C::Error>> {
        let (os, hyst) = match (
            convert::limit_raw_from_millicelsius(over_temperature),
            convert::limit_raw_from_millicelsius(hysteresis),
        ) {
            (Some(os), Some(hyst)) if hysteresis < over_temperature => (os, hyst),
            _ => return Err(Error::InvalidInput),
        };
        write_u16(&mut self.i2c, self.address, T_OS, u16::from_be_bytes(os))?;
        write_u16(
            &mut self.i2c,
            self.address,
            T_HYST,
            u16::from_be_bytes(hyst),
        )
    }

    /// The one place the configuration register is written; the cache follows only on success.
    fn write_config(&mut self, config: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address, &[CONFIG, config])
            .map_err(Error::I2c)?;
        self.config = config;
        Ok(())
    }
}

const fn set_bit(value: u8, bit: u8, on: bool) -> u8 {
    if on { value | bit } else { value & !bit }
}

impl<I2C: I2c> TempSensor for Lm75<I2C> {
    fn read_temp(&mut self) -> Result<MilliCelsius, SensorError> {
        self.read_temperature().map_err(SensorError::from)
    }
}
