//! Texas Instruments INA219 high-side current/power monitor: 12-bit ADC, shunt voltage LSB
//! 10 µV (±40/80/160/320 mV by gain), bus voltage LSB 4 mV (16 V or 32 V range), current and
//! power from a calibration register computed from the shunt resistance and the maximum
//! expected current. Addresses 0x40-0x4F.

use embedded_hal::i2c::I2c;

use super::{Error, read_u16, write_u16};
use crate::error::SensorError;
use crate::traits::{PowerReading, PowerSensor};
use crate::units::{MicroVolts, MilliAmps, MilliVolts, MilliWatts};

pub mod convert;

pub use convert::{Calibration, Gain};

/// The address with A1 and A0 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0b100_0000;

const CONFIGURATION: u8 = 0b000;
const SHUNT_VOLTAGE: u8 = 0b001;
const BUS_VOLTAGE: u8 = 0b010;
const POWER: u8 = 0b011;
const CURRENT: u8 = 0b100;
const CALIBRATION: u8 = 0b101;

const RESET: u16 = 0b1000_0000_0000_0000;
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

/// An INA219 on an I2C bus.
#[derive(Debug)]
pub struct Ina219<I2C> {
    i2c: I2C,
    address: u8,
    config: u16,
    calibration: Option<Calibration>,
}

impl<I2C: I2c> Ina219<I2C> {
    /// Takes the bus; assumes the power-on configuration and no calibration. No bus traffic.
    pub fn new(i2c: I2C, address: u8) -> Self {
        Ina219 {
            i2c,
            address,
            config: POWER_ON_CONFIG,
            calibration: None,
        }
    }

    /// Gives the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// The calibration in force, if any.
    pub const fn calibration(&self) -> Option<Calibration> {
        self.calibration
    }

    /// Resets every register to its power-on value (this clears the calibration).
    pub fn reset(&mut self) -> Result<(), Error<I2C::Error>> {
        write_u16(&mut self.i2c, self.address, CONFIGURATION, RESET)?;
        self.config = POWER_ON_CONFIG;
        self.calibration = None;
        Ok(())
    }

    /// Selects the bus voltage range.
    pub fn set_bus_range(&mut self, range: BusRange) -> Result<(), Error<I2C::Error>> {
        let config = match range {
            BusRange::V16 => self.config & !BUS_RANGE_32V,
            BusRange::V32 => self.config | BUS_RANGE_32V,
        };
        self.write_config(config)
    }

    /// Selects resolution or averaging for the bus and the shunt ADC.
    pub fn set_adc(&mut self, bus: Adc, shunt: Adc) -> Result<(), Error<I2C::Error>> {
        let config =
            (self.config & !(BUS_ADC | SHUNT_ADC)) | (bus.code() << 7) | (shunt.code() << 3);
        self.write_config(config)
    }

    /// Selects the operating mode.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config & !MODE) | mode.code())
    }

    /// Calibrates for a shunt (µΩ) and a maximum expected current. The parameters are checked
    /// before any bus traffic; then the gain that covers the shunt voltage is written to the
    /// configuration and the calibration value to its register.
    pub fn calibrate(
        &mut self,
        shunt_micro_ohms: u32,
        max_current: MilliAmps,
    ) -> Result<Calibration, Error<I2C::Error>> {
        let calibration = Calibration::new(shunt_micro_ohms, max_current)?;
        self.apply_calibration(calibration)?;
        Ok(calibration)
    }

    /// Applies a calibration computed elsewhere (for example with a rounder current LSB).
    pub fn apply_calibration(&mut self, calibration: Calibration) -> Result<(), Error<I2C::Error>> {
        self.write_config((self.config & !GAIN) | (calibration.gain.code() << 11))?;
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
        let raw = read_u16(&mut self.i2c, self.address, SHUNT_VOLTAGE)?;
        Ok(convert::shunt_microvolts(raw))
    }

    /// Reads the bus voltage; fails with [`Error::Overflow`] when the chip flags a math overflow.
    pub fn bus_voltage(&mut self) -> Result<MilliVolts, Error<I2C::Error>> {
        let raw = read_u16(&mut self.i2c, self.address, BUS_VOLTAGE)?;
        if convert::math_overflow(raw) {
            return Err(Error::Overflow);
        }
        Ok(convert::bus_millivolts(raw))
    }

    /// Reads the current; needs a calibration.
    pub fn current(&mut self) -> Result<MilliAmps, Error<I2C::Error>> {
        let calibration = self.calibration.ok_or(Error::NotCalibrated)?;
        let raw = read_u16(&mut self.i2c, self.address, CURRENT)?;
        Ok(convert::current_milliamps(raw, calibration.current_lsb_na))
    }

    /// Reads the power; needs a calibration.
    pub fn power(&mut self) -> Result<MilliWatts, Error<I2C::Error>> {
        let calibration = self.calibration.ok_or(Error::NotCalibrated)?;
        let raw = read_u16(&mut self.i2c, self.address, POWER)?;
        Ok(convert::power_milliwatts(raw, calibration.current_lsb_na))
    }

    /// The one place the configuration register is written; the cache follows only on success.
    fn write_config(&mut self, config: u16) -> Result<(), Error<I2C::Error>> {
        write_u16(&mut self.i2c, self.address, CONFIGURATION, config)?;
        self.config = config;
        Ok(())
    }
}

impl<I2C: I2c> PowerSensor for Ina219<I2C> {
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
