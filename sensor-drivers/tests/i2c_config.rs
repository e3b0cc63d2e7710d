//! Configured I2C sensors: validation before bus traffic, calibration on open, and opening on
//! buses that do not exist on this machine (`/dev/i2c-N`, the Pi's controller, GPIO).
#![cfg(feature = "std")]
#![allow(clippy::unwrap_used)]

use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use sensor_drivers::i2c_config::{Chip, I2cConfigError, I2cSensorConfig, OpenedSensor, open_on};
use sensor_drivers::sensor_set::{Role, SensorSet};
use sensor_drivers::{MilliCelsius, MilliWatts};

#[derive(serde::Deserialize)]
struct File {
    sensors: Vec<I2cSensorConfig>,
}

const CONFIG: &str = r#"
[[sensors]]
name = "supply"
bus = "/dev/i2c-1"
address = 0x40
chip = "ina226"
role = "board_power"
shunt_micro_ohms = 10000
max_current_ma = 5000

[[sensors]]
name = "case-air"
bus = "/dev/i2c-1"
address = 0x48
chip = "tmp102"
role = "ambient_temp"
"#;

fn configs() -> Vec<I2cSensorConfig> {
    toml::from_str::<File>(CONFIG).unwrap().sensors
}

#[test]
fn configured_sensors_open_calibrated_and_join_a_sensor_set() {
    let [supply, air] = <[I2cSensorConfig; 2]>::try_from(configs()).unwrap();
    assert_eq!(supply.chip, Chip::Ina226);
    let mut bus = Mock::new(&[
        // INA226 calibration register (0x05) = 3355 for 10 mΩ / 5 A.
        Transaction::write(0x40, vec![0x05, 0x0D, 0x1B]),
        // TMP102 temperature register: 25 °C.
        Transaction::write_read(0x48, vec![0x00], vec![0x19, 0x00]),
        // INA226 bus 5.1 V (4080 counts), current 1000 mA (6554 counts of 152.588 µA),
        // power 5.1 W (1337 counts of 25 · 152.588 µW).
        Transaction::write_read(0x40, vec![0x02], vec![0x0F, 0xF0]),
        Transaction::write_read(0x40, vec![0x04], vec![0x19, 0x9A]),
        Transaction::write_read(0x40, vec![0x03], vec![0x05, 0x39]),
    ]);
    let mut set = SensorSet::new();
    open_on(bus.clone(), &supply)
        .unwrap()
        .add_to(&mut set, &supply);
    open_on(bus.clone(), &air).unwrap().add_to(&mut set, &air);
    let snapshot = set.snapshot(0);
    assert_eq!(snapshot.temps[0].value, Some(MilliCelsius(25_000)));
    assert_eq!(snapshot.temps[0].role, Role::AmbientTemp);
    assert_eq!(snapshot.board_power(), Some(MilliWatts(5_100)));
    bus.done();
}

#[test]
fn misdeclared_sensors_are_refused_before_any_bus_traffic() {
    let base = configs().remove(0);
    let mut bus = Mock::new(&[]);
    let wrong_role = I2cSensorConfig {
        role: Role::SocTemp,
        ..base.clone()
    };
    assert!(matches!(
        open_on(bus.clone(), &wrong_role),
        Err(I2cConfigError::Role { .. })
    ));
    let no_shunt = I2cSensorConfig {
        shunt_micro_ohms: None,
        ..base.clone()
    };
    assert!(matches!(
        open_on(bus.clone(), &no_shunt),
        Err(I2cConfigError::MissingCalibration { .. })
    ));
    let wide = I2cSensorConfig {
        address: 0x80,
        ..base.clone()
    };
    assert!(matches!(
        open_on(bus.clone(), &wide),
        Err(I2cConfigError::Address { .. })
    ));
    let saturating = I2cSensorConfig {
        shunt_micro_ohms: Some(100_000),
        ..base
    };
    let error = open_on(bus.clone(), &saturating).unwrap_err();
    assert!(error.to_string().contains("full scale"), "{error}");
    bus.done();
}

#[test]
fn a_power_chip_as_a_temperature_role_is_rejected_and_vice_versa() {
    let air = configs().remove(1);
    let as_power = I2cSensorConfig {
        role: Role::BoardPower,
        ..air
    };
    let mut bus = Mock::new(&[]);
    assert!(matches!(
        open_on(bus.clone(), &as_power),
        Err(I2cConfigError::Role { .. })
    ));
    bus.done();
}

#[test]
fn opened_sensor_kinds_match_their_chips() {
    let air = configs().remove(1);
    let mut bus = Mock::new(&[]);
    assert!(matches!(
        open_on(bus.clone(), &air).unwrap(),
        OpenedSensor::Temp(_)
    ));
    let lm75b = I2cSensorConfig {
        chip: Chip::Lm75b,
        ..air
    };
    assert!(matches!(
        open_on(bus.clone(), &lm75b).unwrap(),
        OpenedSensor::Temp(_)
    ));
    bus.done();
}

#[cfg(feature = "linux-i2c")]
#[test]
fn a_missing_dev_i2c_bus_is_a_typed_error() {
    let mut air = configs().remove(1);
    air.bus = "/dev/i2c-does-not-exist".into();
    let error = sensor_drivers::linux_i2c::open_sensor(&air).unwrap_err();
    assert!(matches!(error, I2cConfigError::Bus { .. }), "{error}");
}

#[cfg(all(feature = "rpi", target_os = "linux"))]
#[test]
fn without_pi_hardware_rppal_opens_fail_with_typed_errors() {
    use sensor_drivers::rpi::{RpiError, SoftPwmPin, gpio_fan, open_i2c};
    assert!(matches!(
        SoftPwmPin::new(18, 0.0),
        Err(RpiError::Frequency(_))
    ));
    if !std::path::Path::new("/dev/gpiomem").exists() {
        assert!(gpio_fan(18, 25_000.0, sensor_drivers::Percent::ZERO).is_err());
    }
    if !std::path::Path::new("/dev/i2c-1").exists() {
        assert!(matches!(open_i2c(1), Err(RpiError::I2c(_))));
    }
}
