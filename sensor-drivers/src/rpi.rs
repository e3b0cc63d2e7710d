//! Raspberry Pi peripherals through rppal: the SoC's I2C controller for the I2C drivers, and
//! a fan on a GPIO pin driven by software PWM for boards without a kernel fan driver. Compiled
//! only for Linux targets.

use embedded_hal::pwm::{ErrorKind, ErrorType, SetDutyCycle};
use rppal::gpio::{Gpio, OutputPin};
use rppal::i2c::I2c;

use crate::i2c_config::{I2cConfigError, I2cSensorConfig, OpenedSensor, open_on, validate};
use crate::pwm_fan::PwmFan;
use crate::units::Percent;

/// Resolution of the software PWM duty exposed through [`SetDutyCycle`].
const DUTY_STEPS: u16 = 1000;

/// A Raspberry Pi peripheral could not be opened or driven.
#[derive(Debug, thiserror::Error)]
pub enum RpiError {
    /// GPIO access failed.
    #[error("GPIO: {0}")]
    Gpio(rppal::gpio::Error),
    /// I2C access failed.
    #[error("I2C: {0}")]
    I2c(rppal::i2c::Error),
    /// The PWM frequency is not a positive number.
    #[error("PWM frequency must be positive, got {0} Hz")]
    Frequency(f64),
}

impl From<rppal::i2c::Error> for RpiError {
    fn from(e: rppal::i2c::Error) -> Self {
        RpiError::I2c(e)
    }
}

impl From<rppal::gpio::Error> for RpiError {
    fn from(e: rppal::gpio::Error) -> Self {
        RpiError::Gpio(e)
    }
}

/// Opens I2C bus `bus` (1 on the 40-pin header).
pub fn open_i2c(bus: u8) -> Result<I2c, RpiError> {
    Ok(I2c::with_bus(bus)?)
}

/// Opens a configured sensor on the Pi's I2C controller; `bus_number` is the controller
/// (the config's `bus` path is informational here).
pub fn open_sensor(
    bus_number: u8,
    config: &I2cSensorConfig,
) -> Result<OpenedSensor, I2cConfigError> {
    validate(config)?;
    let bus = I2c::with_bus(bus_number).map_err(|e| I2cConfigError::Bus {
        name: config.name.clone(),
        bus: config.bus.clone(),
        message: e.to_string(),
    })?;
    open_on(bus, config)
}

/// A software-PWM error from rppal.
#[derive(Debug)]
pub struct PwmPinError(pub rppal::gpio::Error);

impl embedded_hal::pwm::Error for PwmPinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// A GPIO output pin with software PWM at a fixed frequency, as an embedded-hal PWM output.
#[derive(Debug)]
pub struct SoftPwmPin {
    pin: OutputPin,
    frequency_hz: f64,
}

impl SoftPwmPin {
    /// Takes BCM GPIO `pin` as an output at `frequency_hz`.
    pub fn new(pin: u8, frequency_hz: f64) -> Result<Self, RpiError> {
        if !(frequency_hz.is_finite() && frequency_hz > 0.0) {
            return Err(RpiError::Frequency(frequency_hz));
        }
        let pin = Gpio::new()?.get(pin)?.into_output();
        Ok(SoftPwmPin { pin, frequency_hz })
    }
}

impl ErrorType for SoftPwmPin {
    type Error = PwmPinError;
}

impl SetDutyCycle for SoftPwmPin {
    fn max_duty_cycle(&self) -> u16 {
        DUTY_STEPS
    }

    fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Self::Error> {
        let fraction = f64::from(duty.min(DUTY_STEPS)) / f64::from(DUTY_STEPS);
        self.pin
            .set_pwm_frequency(self.frequency_hz, fraction)
            .map_err(PwmPinError)
    }
}

/// A fan on a GPIO pin.
pub type GpioFan = PwmFan<SoftPwmPin>;

/// A fan on BCM GPIO `pin` at `frequency_hz`, raising non-zero duties below `min_running`.
pub fn gpio_fan(pin: u8, frequency_hz: f64, min_running: Percent) -> Result<GpioFan, RpiError> {
    Ok(PwmFan::new(
        SoftPwmPin::new(pin, frequency_hz)?,
        min_running,
    ))
}
