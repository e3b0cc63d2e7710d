//! The driver the INA219 and INA226 shunt monitors share: the register map from the
//! configuration to the calibration register, a cached configuration written in one place,
//! calibration, and shunt voltage, bus voltage, current and power reads (current and power
//! only under a calibration). What differs between the chips (configuration fields, gain,
//! identity, register formats, calibration limits) is a [`Chip`]; the calibration maths they
//! share is in [`convert`]. Use the chips' names: [`Ina219`](super::ina219::Ina219) and
//! [`Ina226`](super::ina226::Ina226).

use core::fmt::Debug;

use embedded_hal::i2c::I2c;

use self::convert::CalibrationRegister;
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
const MODE: u16 = 0b0000_0000_0000_0111;

/// The operating mode, a field both chips lay out alike.
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
    /// ADC off (INA219); the INA226 powers down on this code.
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

pub(super) mod sealed {
    pub trait Sealed {}
}

/// What one chip of the family brings to the shared driver. Sealed: implemented by the
/// INA219 and INA226 only.
pub trait Chip: sealed::Sealed + Copy + Debug + PartialEq + Eq {
    /// The shunt voltage range a calibration selects (the INA219's gain; the INA226 has one).
    type Range: Copy + Debug + PartialEq + Eq;
    /// The configuration register after reset.
    const POWER_ON_CONFIG: u16;
    /// The power register's LSB as a multiple of the current LSB.
    const POWER_PER_CURRENT_LSB: u32;
    /// The calibration register's scale and the values it holds.
    const CALIBRATION: CalibrationRegister;

    /// The smallest shunt range that covers a shunt voltage in nV, or `None` above them all.
    fn range_covering(shunt_nv: u64) -> Option<Self::Range>;
    /// The configuration to write before the calibration, when its range changes it (the
    /// INA219's gain).
    fn config_for(config: u16, range: Self::Range) -> Option<u16>;
    /// The shunt voltage register's value.
    fn shunt_microvolts(raw: u16) -> MicroVolts;
    /// The bus voltage register's value; an error when the register flags one.
    fn bus_millivolts<E>(raw: u16) -> Result<MilliVolts, Error<E>>;
}

/// A checked calibration of the chip `C`: the register value, the current LSB it gives and
/// the shunt range that covers the maximum current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration<C: Chip> {
    /// The calibration register value.
    pub register: u16,
    /// The current register's LSB in nanoamps (the power LSB is the chip's multiple of it, in
    /// nanowatts).
    pub current_lsb_na: u32,
    /// The shunt range selected to cover the shunt voltage at the maximum current.
    pub range: C::Range,
}

impl<C: Chip> Calibration<C> {
    /// The finest calibration for a shunt (µΩ) and a maximum expected current: the current LSB
    /// is `max / 2^15` rounded up to a whole nanoamp.
    pub fn new(shunt_micro_ohms: u32, max_current: MilliAmps) -> Result<Self, CalibrationError> {
        let lsb = convert::finest_current_lsb_na(shunt_micro_ohms, max_current)?;
        Self::with_current_lsb(shunt_micro_ohms, max_current, lsb)
    }

    /// A calibration with a chosen (typically round) current LSB in nanoamps, which must lie in
    /// the datasheets' range `max / 2^15 ..= max / 2^12`.
    pub fn with_current_lsb(
        shunt_micro_ohms: u32,
        max_current: MilliAmps,
        current_lsb_na: u32,
    ) -> Result<Self, CalibrationError> {
        let shunt_nv = convert::checked_shunt_nv(shunt_micro_ohms, max_current, current_lsb_na)?;
        let range = C::range_covering(shunt_nv).ok_or(CalibrationError::ShuntVoltageOverRange)?;
        Ok(Calibration {
            register: C::CALIBRATION.value(current_lsb_na, shunt_micro_ohms)?,
            current_lsb_na,
            range,
        })
    }
}

/// A shunt monitor of the family `C` on an I2C bus.
#[derive(Debug)]
pub struct ShuntMonitor<I2C, C: Chip> {
    i2c: I2C,
    address: u8,
    config: u16,
    calibration: Option<Calibration<C>>,
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
    pub const fn calibration(&self) -> Option<Calibration<C>> {
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
    ) -> Result<Calibration<C>, Error<I2C::Error>> {
        let calibration = Calibration::new(shunt_micro_ohms, max_current)?;
        self.apply_calibration(calibration)?;
        Ok(calibration)
    }

    /// Applies a calibration computed elsewhere (for example with a rounder current LSB): the
    /// configuration first where the calibration changes it, then the calibration register.
    pub fn apply_calibration(
        &mut self,
        calibration: Calibration<C>,
    ) -> Result<(), Error<I2C::Error>> {
        if let Some(config) = C::config_for(self.config, calibration.range) {
            self.write_config(config)?;
        }
        write_u16(
            &mut self.i2c,
            self.address,
            CALIBRATION,
            calibration.register,
        )?;
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
        Ok(convert::current_milliamps(raw, calibration.current_lsb_na))
    }

    /// Reads the power; needs a calibration.
    pub fn power(&mut self) -> Result<MilliWatts, Error<I2C::Error>> {
        let calibration = self.calibration.ok_or(Error::NotCalibrated)?;
        let raw = self.read(POWER)?;
        Ok(convert::power_milliwatts(
            raw,
            calibration.current_lsb_na,
            C::POWER_PER_CURRENT_LSB,
        ))
    }

    /// Selects the operating mode.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config & !MODE) | mode.code())
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
