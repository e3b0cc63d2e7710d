//! A fan driven by any embedded-hal 1.0 PWM output ([`embedded_hal::pwm::SetDutyCycle`]), for
//! boards without a kernel fan driver (a GPIO pin through rppal, a PWM chip). Fans stall below
//! a minimum duty, so non-zero requests below it are raised to it; `restore` applies the
//! fail-safe duty, because nothing else will drive this fan once the runtime lets go.

use embedded_hal::pwm::SetDutyCycle;

use crate::error::{ActuatorError, SensorError};
use crate::traits::Fan;
use crate::units::Percent;

/// A PWM-driven fan.
#[derive(Debug)]
pub struct PwmFan<P> {
    pwm: P,
    min_running: Percent,
    fail_safe: Percent,
    duty: Option<Percent>,
}

impl<P: SetDutyCycle> PwmFan<P> {
    /// Takes the PWM output. Non-zero duties below `min_running` are raised to it; `restore`
    /// sets 100 %. No output is changed until the first `set_duty`.
    pub fn new(pwm: P, min_running: Percent) -> Self {
        PwmFan {
            pwm,
            min_running,
            fail_safe: Percent::FULL,
            duty: None,
        }
    }

    /// Changes the duty applied by `restore` (default 100 %).
    pub fn with_fail_safe(mut self, fail_safe: Percent) -> Self {
        self.fail_safe = fail_safe;
        self
    }

    /// Gives the PWM output back.
    pub fn release(self) -> P {
        self.pwm
    }

    fn apply(&mut self, duty: Percent) -> Result<Percent, ActuatorError> {
        let applied = if duty.get() > 0 && duty < self.min_running {
            self.min_running
        } else {
            duty
        };
        self.pwm
            .set_duty_cycle_percent(applied.get())
            .map_err(|_| ActuatorError::Io)?;
        self.duty = Some(applied);
        Ok(applied)
    }
}

impl<P: SetDutyCycle> Fan for PwmFan<P> {
    fn set_duty(&mut self, duty: Percent) -> Result<Percent, ActuatorError> {
        self.apply(duty)
    }

    fn duty(&mut self) -> Result<Percent, SensorError> {
        self.duty.ok_or(SensorError::NotConfigured)
    }

    fn restore(&mut self) -> Result<(), ActuatorError> {
        self.apply(self.fail_safe).map(|_| ())
    }
}
