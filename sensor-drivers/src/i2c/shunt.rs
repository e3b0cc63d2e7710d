//! The driver the INA219 and INA226 shunt monitors share: the register map from the
//! configuration to the calibration register, a cached configuration written in one place,
//! calibration, and shunt voltage, bus voltage, current and power reads (current and power
//! only under a calibration). What differs between the chips (configuration fields, gain,
//! identity, register formats, calibration limits) is a [`Chip`]; the calibration maths they
//! share is in [`convert`]. Use the chips' names: [`Ina219`](super::ina219::Ina219) and
//! [`Ina226`](super::ina226::Ina226).

use core::fmt::Debug;

use embedded_hal::i2c::I2c;

use super::{CalibrationError, Error, read_u16, write_u16};
use crate::error::SensorError;
use crate::traits::{PowerReading, PowerSensor};
use crate::units::{MicroVolts, MilliAmps, MilliVolts, MilliWatts};

pub mod convert;

const CONFIGURATION: u8 = 0x00;
const SHUNT_VOLTAGE: u8 = 0x01;
const BUS_VOLTAGE: u8 = 0x02;
const POWER: u8 = 0x03;
const CURRENT: u8 = 0x04;
const CALIBRATION: u8 = 0x05;

const RESET: u16 = 0b1000_0000_0000_0000;

pub(super) mod sealed {
    pub trait Sealed {}
}

/// What one chip of the family brings to the shared driver. Sealed: implemented by the
/// INA219 and INA226 only.
pub trait Chip: sealed::Sealed {
    /// The chip's checked calibration.
    type Calibration: Copy + Debug + PartialEq;
    /// The configuration register after reset.
    const POWER_ON_CONFIG: u16;
    /// The power register's LSB as a multiple of the current LSB.
    const POWER_PER_CURRENT_LSB: u32;

    /// The finest calibration for a shunt (µΩ) and a maximum expected current.
    fn calibration(
        shunt_micro_ohms: u32,
        max_current: MilliAmps,
    ) -> Result<Self::Calibration, CalibrationError>;
    /// The calibration register value.
    fn register(calibration: &Self::Calibration) -> u16;
    /// The current register's LSB in nanoamps.
    fn current_lsb_na(calibration: &Self::Calibration) -> u32;
    /// The configuration to write before the calibration, when it changes it (the INA219's
    /// gain).
    fn config_for(config: u16, calibration: &Self::Calibration) -> Option<u16>;
    /// The shunt voltage register's value.
    fn shunt_microvolts(raw: u16) -> MicroVolts;
    /// The bus voltage register's value; an error when the register flags one.
    fn bus_millivolts<E>(raw: u16) -> Result<MilliVolts, Error<E>>;
}

/// A shunt monitor of the family `C` on an I2C bus.
#[derive(Debug)]
pub struct ShuntMonitor<I2C, C: Chip> {
    i2c: I2C,
    address: u8,
    config: u16,
    calibration: Option<C::Calibration>,
}

impl<I2C: I2c, C: Chip> ShuntMonitor<I2C, C> {
    /// Takes the bus; assumes the power-on configuration and no calibration. No bus traffic.
    pub fn new(i2c: I2C, address: u8) -> Self {
        ShuntMonitor {
            i2c,
            address,
            config: C::POWER_ON_CONFIG,
            calibration: None,
        }
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// The calibration in force, if any.
    pub const fn calibration(&self) -> Option<C::Calibration> {
        self.calibration
    }

    /// Resets every register to its power-on value (this clears the calibration).
    pub fn reset(&mut self) -> Result<(), Error<I2C::Error>> {
        write_u16(&mut self.i2c, self.address, CONFIGURATION, RESET)?;
        self.config = C::POWER_ON_CONFIG;
        self.calibration = None;
        Ok(())
    }

    /// Calibrates for a shunt (µΩ) and a maximum expected current with the finest current
    /// LSB. The parameters are checked before any bus traffic.
    pub fn calibrate(
        &mut self,
        shunt_micro_ohms: u32,
        max_current: MilliAmps,
    ) -> Result<C::Calibration, Error<I2C::Error>> {
        let calibration = C::calibration(shunt_micro_ohms, max_current)?;
        self.apply_calibration(calibration)?;
        Ok(calibration)
    }

    /// Applies a calibration computed elsewhere (for example with a rounder current LSB): the
    /// configuration first where the calibration changes it, then the calibration register.
    pub fn apply_calibration(
        &mut self,
        calibration: C::Calibration,
    ) -> Result<(), Error<I2C::Error>> {
        if let Some(config) = C::config_for(self.config, &calibration) {
            self.write_config(config)?;
        }
        let register = C::register(&calibration);
        write_u16(&mut self.i2c, self.address, CALIBRATION, register)?;
        self.calibration = Some(calibration);
        Ok(())
    }

    /// Reads the shunt voltage.
    pub fn shunt_voltage(&mut self) -> Result<MicroVolts, Error<I2C::Error>> {
        let raw = self.read(SHUNT_VOLTAGE)?;
        Ok(C::shunt_microvolts(raw))
    }

    /// Reads the bus voltage; on the INA219, fails with [`Error::Overflow`] when the chip
    /// flags a math overflow.
    pub fn bus_voltage(&mut self) -> Result<MilliVolts, Error<I2C::Error>> {
        let raw = self.read(BUS_VOLTAGE)?;
        C::bus_millivolts(raw)
    }

    /// Reads the current; needs a calibration.
    pub fn current(&mut self) -> Result<MilliAmps, Error<I2C::Error>> {
        let calibration = self.calibration.ok_or(Error::NotCalibrated)?;
        let raw = self.read(CURRENT)?;
        Ok(convert::current_milliamps(
            raw,
            C::current_lsb_na(&calibration),
        ))
    }

    /// Reads the power; needs a calibration.
    pub fn power(&mut self) -> Result<MilliWatts, Error<I2C::Error>> {
        let calibration = self.calibration.ok_or(Error::NotCalibrated)?;
        let raw = self.read(POWER)?;
        let lsb = C::current_lsb_na(&calibration);
        Ok(convert::power_milliwatts(
            raw,
            lsb,
            C::POWER_PER_CURRENT_LSB,
        ))
    }

    /// The configuration register as last written.
    pub(super) const fn config(&self) -> u16 {
        self.config
    }

    /// Reads one 16-bit register.
    pub(super) fn read(&mut self, register: u8) -> Result<u16, Error<I2C::Error>> {
        read_u16(&mut self.i2c, self.address, register)
    }

    /// The one place the configuration register is written; the cache follows only on success.
    pub(super) fn write_config(&mut self, config: u16) -> Result<(), Error<I2C::Error>> {
        write_u16(&mut self.i2c, self.address, CONFIGURATION, config)?;
        self.config = config;
        Ok(())
    }
}

impl<I2C: I2c, C: Chip> PowerSensor for ShuntMonitor<I2C, C> {
    /// Bus voltage, current and power; without a calibration nothing is read.
    fn read_power(&mut self) -> Result<PowerReading, SensorError> {
        if self.calibration.is_none() {
            return Err(SensorError::NotConfigured);
        }
        let voltage = self.bus_voltage()?;
        let current = self.current()?;
        let power = self.power()?;
        Ok(PowerReading {
            power,
            voltage: Some(voltage),
            current: Some(current),
        })
    }
}
