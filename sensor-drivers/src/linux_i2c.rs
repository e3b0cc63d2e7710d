//! `/dev/i2c-N` buses through linux-embedded-hal's [`I2cdev`], and the configured I2C sensors
//! opened on them.

pub use linux_embedded_hal::I2cdev;

use crate::i2c_config::{I2cConfigError, I2cSensorConfig, OpenedSensor, open_on, validate};

/// Opens the bus named in `config` and builds its sensor (validated before the bus is opened).
pub fn open_sensor(config: &I2cSensorConfig) -> Result<OpenedSensor, I2cConfigError> {
    validate(config)?;
    let bus = I2cdev::new(&config.bus).map_err(|e| I2cConfigError::Bus {
        name: config.name.clone(),
        bus: config.bus.clone(),
        message: e.to_string(),
    })?;
    open_on(bus, config)
}
