//! I2C sensors declared in configuration (bus, address, chip, role, shunt) turned into trait
//! objects for a [`SensorSet`], over any embedded-hal bus: `linux_i2c` opens `/dev/i2c-N`,
//! `rpi` opens the Pi's controller, tests pass a mock. INA2xx parts are calibrated on open;
//! every parameter is checked before any bus traffic.

use std::fmt;
use std::path::PathBuf;

use embedded_hal::i2c::I2c;
use serde::{Deserialize, Serialize};

use crate::i2c::{self, ina219::Ina219, ina226::Ina226, lm75::Lm75, tmp102::Tmp102};
use crate::sensor_set::{Role, SensorSet};
use crate::traits::{PowerSensor, TempSensor};
use crate::units::MilliAmps;

/// A supported chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chip {
    /// TI TMP102 temperature sensor.
    Tmp102,
    /// LM75 temperature sensor, 9-bit.
    Lm75,
    /// LM75B temperature sensor, 11-bit.
    Lm75b,
    /// TI INA219 power monitor.
    Ina219,
    /// TI INA226 power monitor.
    Ina226,
}

impl Chip {
    fn measures_power(self) -> bool {
        matches!(self, Chip::Ina219 | Chip::Ina226)
    }
}

/// One I2C sensor as declared in the runtime's TOML config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct I2cSensorConfig {
    /// Name shown in listings and telemetry.
    pub name: String,
    /// The bus device, e.g. `/dev/i2c-1`.
    pub bus: PathBuf,
    /// The 7-bit address.
    pub address: u8,
    /// The chip.
    pub chip: Chip,
    /// What it measures.
    pub role: Role,
    /// Shunt resistance in µΩ (INA2xx only).
    #[serde(default)]
    pub shunt_micro_ohms: Option<u32>,
    /// Maximum expected current in mA (INA2xx only).
    #[serde(default)]
    pub max_current_ma: Option<i32>,
}

/// A configured sensor could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum I2cConfigError {
    /// The address is not a 7-bit address.
    #[error("{name}: address {address:#04x} is not a 7-bit I2C address")]
    Address {
        /// The sensor.
        name: String,
        /// The address given.
        address: u8,
    },
    /// The role does not match what the chip measures.
    #[error("{name}: a {chip:?} cannot serve as {role}")]
    Role {
        /// The sensor.
        name: String,
        /// The chip.
        chip: Chip,
        /// The role given.
        role: Role,
    },
    /// A power monitor lacks its shunt or maximum current.
    #[error("{name}: {chip:?} needs shunt_micro_ohms and max_current_ma")]
    MissingCalibration {
        /// The sensor.
        name: String,
        /// The chip.
        chip: Chip,
    },
    /// The chip refused its configuration or calibration.
    #[error("{name}: {message}")]
    Device {
        /// The sensor.
        name: String,
        /// The driver's error.
        message: String,
    },
    /// The bus could not be opened.
    #[error("{name}: opening {bus}: {message}")]
    Bus {
        /// The sensor.
        name: String,
        /// The bus device.
        bus: PathBuf,
        /// The OS error.
        message: String,
    },
}

/// An opened sensor.
pub enum OpenedSensor {
    /// A temperature sensor.
    Temp(Box<dyn TempSensor + Send>),
    /// A power sensor.
    Power(Box<dyn PowerSensor + Send>),
}

impl fmt::Debug for OpenedSensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenedSensor::Temp(_) => "OpenedSensor::Temp",
            OpenedSensor::Power(_) => "OpenedSensor::Power",
        })
    }
}

impl OpenedSensor {
    /// Adds the sensor to `set` under the config's name and role.
    pub fn add_to(self, set: &mut SensorSet, config: &I2cSensorConfig) {
        match self {
            OpenedSensor::Temp(sensor) => set.add_temp(config.name.clone(), config.role, sensor),
            OpenedSensor::Power(sensor) => set.add_power(config.name.clone(), config.role, sensor),
        }
    }
}

/// Checks a config without touching any bus.
pub fn validate(config: &I2cSensorConfig) -> Result<(), I2cConfigError> {
    if config.address > 0x7F {
        return Err(I2cConfigError::Address {
            name: config.name.clone(),
            address: config.address,
        });
    }
    let power_role = matches!(config.role, Role::BoardPower | Role::RailPower);
    if power_role != config.chip.measures_power() {
        return Err(I2cConfigError::Role {
            name: config.name.clone(),
            chip: config.chip,
            role: config.role,
        });
    }
    if config.chip.measures_power()
        && (config.shunt_micro_ohms.is_none() || config.max_current_ma.is_none())
    {
        return Err(I2cConfigError::MissingCalibration {
            name: config.name.clone(),
            chip: config.chip,
        });
    }
    Ok(())
}

fn device<E: fmt::Debug>(config: &I2cSensorConfig, error: i2c::Error<E>) -> I2cConfigError {
    I2cConfigError::Device {
        name: config.name.clone(),
        message: error.to_string(),
    }
}

/// Builds the driver for `config` on `bus`, calibrating INA2xx parts.
pub fn open_on<B>(bus: B, config: &I2cSensorConfig) -> Result<OpenedSensor, I2cConfigError>
where
    B: I2c + Send + 'static,
{
    validate(config)?;
    let address = config.address;
    let shunt = config.shunt_micro_ohms.unwrap_or(0);
    let max = MilliAmps(config.max_current_ma.unwrap_or(0));
    Ok(match config.chip {
        Chip::Tmp102 => OpenedSensor::Temp(Box::new(Tmp102::new(bus, address))),
        Chip::Lm75 => OpenedSensor::Temp(Box::new(Lm75::new(bus, address))),
        Chip::Lm75b => OpenedSensor::Temp(Box::new(
            Lm75::new(bus, address).with_resolution(i2c::lm75::Resolution::Bits11),
        )),
        Chip::Ina219 => {
            let mut chip = Ina219::new(bus, address);
            chip.calibrate(shunt, max).map_err(|e| device(config, e))?;
            OpenedSensor::Power(Box::new(chip))
        }
        Chip::Ina226 => {
            let mut chip = Ina226::new(bus, address);
            chip.calibrate(shunt, max).map_err(|e| device(config, e))?;
            OpenedSensor::Power(Box::new(chip))
        }
    })
}
