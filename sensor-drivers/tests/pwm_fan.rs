//! Mock-PWM tests for the embedded-hal PWM fan.
#![allow(clippy::unwrap_used)]

use embedded_hal_mock::eh1::MockError;
use embedded_hal_mock::eh1::pwm::{Mock, Transaction};
use sensor_drivers::pwm_fan::PwmFan;
use sensor_drivers::{ActuatorError, Fan, Percent, SensorError};

fn pct(value: u8) -> Percent {
    Percent::new(value).unwrap()
}

#[test]
fn raises_stalling_duties_to_the_minimum_and_restores_full_speed() {
    let mut pwm = Mock::new(&[
        Transaction::max_duty_cycle(1000),
        Transaction::set_duty_cycle(250),
        Transaction::max_duty_cycle(1000),
        Transaction::set_duty_cycle(0),
        Transaction::max_duty_cycle(1000),
        Transaction::set_duty_cycle(600),
        Transaction::max_duty_cycle(1000),
        Transaction::set_duty_cycle(1000),
    ]);
    let mut fan = PwmFan::new(pwm.clone(), pct(25));
    assert_eq!(fan.duty(), Err(SensorError::NotConfigured));
    assert_eq!(fan.set_duty(pct(10)), Ok(pct(25)));
    assert_eq!(fan.set_duty(Percent::ZERO), Ok(Percent::ZERO));
    assert_eq!(fan.set_duty(pct(60)), Ok(pct(60)));
    assert_eq!(fan.duty(), Ok(pct(60)));
    fan.restore().unwrap();
    assert_eq!(fan.duty(), Ok(Percent::FULL));
    pwm.done();
}

#[test]
fn a_failing_pwm_output_is_an_io_error_and_keeps_the_old_duty() {
    let mut pwm = Mock::new(&[
        Transaction::max_duty_cycle(255),
        Transaction::set_duty_cycle(127),
        Transaction::max_duty_cycle(255),
        Transaction::set_duty_cycle(255)
            .with_error(MockError::Io(std::io::ErrorKind::NotConnected)),
    ]);
    let mut fan = PwmFan::new(pwm.clone(), Percent::ZERO).with_fail_safe(Percent::FULL);
    assert_eq!(fan.set_duty(pct(50)), Ok(pct(50)));
    assert_eq!(fan.set_duty(Percent::FULL), Err(ActuatorError::Io));
    assert_eq!(fan.duty(), Ok(pct(50)));
    pwm.done();
}
