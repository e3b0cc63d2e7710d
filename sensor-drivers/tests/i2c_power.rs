//! Mock-bus tests for the INA219 and INA226 drivers. Register addresses, power-on values and the
//! datasheet calibration examples are re-declared here.
#![allow(clippy::unwrap_used)]

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use sensor_drivers::i2c::ina219::{self, Adc, BusRange, Ina219};
use sensor_drivers::i2c::ina226::{self, Averaging, ConversionTime, Ina226};
use sensor_drivers::i2c::{CalibrationError, Error};
use sensor_drivers::{
    MicroVolts, MilliAmps, MilliVolts, MilliWatts, PowerReading, PowerSensor, SensorError,
};

const ADDR: u8 = 0x40;
const CONFIGURATION: u8 = 0x00;
const SHUNT: u8 = 0x01;
const BUS: u8 = 0x02;
const POWER: u8 = 0x03;
const CURRENT: u8 = 0x04;
const CALIBRATION: u8 = 0x05;
const INA226_MANUFACTURER: u8 = 0xFE;
const INA226_DIE: u8 = 0xFF;

fn nack() -> ErrorKind {
    ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)
}

#[test]
fn ina219_calibrates_per_the_datasheet_example_and_reads_power() {
    // 0.1 Ω shunt, 3.2 A max: 320 mV needs gain /8 (PG = 11, already the power-on 0x399F);
    // Cal = trunc(0.04096 / (97.657 µA · 0.1 Ω)) = 4194 = 0x1062.
    let mut bus = Mock::new(&[
        Transaction::write(ADDR, vec![CONFIGURATION, 0x39, 0x9F]),
        Transaction::write(ADDR, vec![CALIBRATION, 0x10, 0x62]),
        // 5.04 V bus, conversion ready.
        Transaction::write_read(ADDR, vec![BUS], vec![0x27, 0x62]),
        // 10240 counts of 97.657 µA = 1000 mA.
        Transaction::write_read(ADDR, vec![CURRENT], vec![0x28, 0x00]),
        // 2580 counts of 20 · 97.657 µW = 5039 mW.
        Transaction::write_read(ADDR, vec![POWER], vec![0x0A, 0x14]),
        Transaction::write_read(ADDR, vec![SHUNT], vec![0x27, 0x10]),
    ]);
    let mut monitor = Ina219::new(bus.clone(), ina219::DEFAULT_ADDRESS);
    let calibration = monitor.calibrate(100_000, MilliAmps(3_200)).unwrap();
    assert_eq!(calibration.register, 4194);
    assert_eq!(
        monitor.read_power(),
        Ok(PowerReading {
            power: MilliWatts(5_039),
            voltage: Some(MilliVolts(5_040)),
            current: Some(MilliAmps(1_000)),
        })
    );
    assert_eq!(monitor.shunt_voltage(), Ok(MicroVolts(100_000)));
    bus.done();
}

#[test]
fn ina219_small_shunt_voltage_selects_the_40_millivolt_range() {
    // 0.1 Ω, 400 mA: 40 mV fits gain /1 (PG = 00): 0x399F -> 0x219F.
    let mut bus = Mock::new(&[
        Transaction::write(ADDR, vec![CONFIGURATION, 0x21, 0x9F]),
        Transaction::write(ADDR, vec![CALIBRATION, 0x83, 0x0E]),
    ]);
    let mut monitor = Ina219::new(bus.clone(), ADDR);
    let calibration = monitor.calibrate(100_000, MilliAmps(400)).unwrap();
    assert_eq!(calibration.register, 0x830E);
    bus.done();
}

#[test]
fn ina219_rejects_bad_calibration_and_uncalibrated_reads_without_bus_traffic() {
    let mut bus = Mock::new(&[]);
    let mut monitor = Ina219::new(bus.clone(), ADDR);
    assert_eq!(
        monitor.calibrate(0, MilliAmps(1_000)),
        Err(Error::Calibration(CalibrationError::ZeroShunt))
    );
    assert_eq!(
        monitor.calibrate(100_000, MilliAmps(5_000)),
        Err(Error::Calibration(CalibrationError::ShuntVoltageOverRange))
    );
    assert_eq!(monitor.current(), Err(Error::NotCalibrated));
    assert_eq!(monitor.power(), Err(Error::NotCalibrated));
    assert_eq!(monitor.read_power(), Err(SensorError::NotConfigured));
    bus.done();
}

#[test]
fn ina219_configuration_writes_and_reset() {
    let mut bus = Mock::new(&[
        // BRNG off: 0x399F -> 0x199F.
        Transaction::write(ADDR, vec![CONFIGURATION, 0x19, 0x9F]),
        // BADC = 1111 (128 samples), SADC = 1010 (4 samples).
        Transaction::write(ADDR, vec![CONFIGURATION, 0x1F, 0xD7]),
        // Reset bit 15.
        Transaction::write(ADDR, vec![CONFIGURATION, 0x80, 0x00]),
        Transaction::write(ADDR, vec![CONFIGURATION, 0x39, 0x9F]),
    ]);
    let mut monitor = Ina219::new(bus.clone(), ADDR);
    monitor.set_bus_range(BusRange::V16).unwrap();
    monitor.set_adc(Adc::Samples128, Adc::Samples4).unwrap();
    monitor.reset().unwrap();
    monitor.set_bus_range(BusRange::V32).unwrap();
    assert_eq!(monitor.calibration(), None);
    bus.done();
}

#[test]
fn ina219_math_overflow_is_reported_not_read_as_a_voltage() {
    let mut bus = Mock::new(&[Transaction::write_read(ADDR, vec![BUS], vec![0x27, 0x63])]);
    let mut monitor = Ina219::new(bus.clone(), ADDR);
    assert_eq!(monitor.bus_voltage(), Err(Error::Overflow));
    bus.done();
}

#[test]
fn ina219_nack_during_calibration_keeps_it_uncalibrated() {
    let mut bus = Mock::new(&[
        Transaction::write(ADDR, vec![CONFIGURATION, 0x39, 0x9F]),
        Transaction::write(ADDR, vec![CALIBRATION, 0x10, 0x62]).with_error(nack()),
    ]);
    let mut monitor = Ina219::new(bus.clone(), ADDR);
    assert_eq!(
        monitor.calibrate(100_000, MilliAmps(3_200)),
        Err(Error::I2c(nack()))
    );
    assert_eq!(monitor.calibration(), None);
    bus.done();
}

#[test]
fn ina226_verifies_identity_and_calibrates_per_the_datasheet_example() {
    // 2 mΩ shunt with a 1 mA LSB: CAL = 0.00512 / (0.001 · 0.002) = 2560 = 0x0A00.
    let calibration =
        ina226::Calibration::with_current_lsb(2_000, MilliAmps(15_000), 1_000_000).unwrap();
    let mut bus = Mock::new(&[
        Transaction::write_read(ADDR, vec![INA226_MANUFACTURER], vec![0x54, 0x49]),
        Transaction::write_read(ADDR, vec![INA226_DIE], vec![0x22, 0x60]),
        Transaction::write(ADDR, vec![CALIBRATION, 0x0A, 0x00]),
        // 12.0 V = 9600 counts of 1.25 mV.
        Transaction::write_read(ADDR, vec![BUS], vec![0x25, 0x80]),
        // 1000 counts of 1 mA.
        Transaction::write_read(ADDR, vec![CURRENT], vec![0x03, 0xE8]),
        // 480 counts of 25 mW.
        Transaction::write_read(ADDR, vec![POWER], vec![0x01, 0xE0]),
        // -2.5 µV: one negative count.
        Transaction::write_read(ADDR, vec![SHUNT], vec![0xFF, 0xFF]),
    ]);
    let mut monitor = Ina226::new(bus.clone(), ina226::DEFAULT_ADDRESS);
    monitor.verify_identity().unwrap();
    monitor.apply_calibration(calibration).unwrap();
    assert_eq!(
        monitor.read_power(),
        Ok(PowerReading {
            power: MilliWatts(12_000),
            voltage: Some(MilliVolts(12_000)),
            current: Some(MilliAmps(1_000)),
        })
    );
    assert_eq!(monitor.shunt_voltage(), Ok(MicroVolts(-3)));
    bus.done();
}

#[test]
fn ina226_calibrate_computes_the_register_from_shunt_and_max_current() {
    // 10 mΩ, 5 A: LSB 152.588 µA, CAL = trunc(0.00512 / (152.588e-6 · 0.01)) = 3355 = 0x0D1B.
    let mut bus = Mock::new(&[Transaction::write(ADDR, vec![CALIBRATION, 0x0D, 0x1B])]);
    let mut monitor = Ina226::new(bus.clone(), ADDR);
    let calibration = monitor.calibrate(10_000, MilliAmps(5_000)).unwrap();
    assert_eq!(calibration.current_lsb_na, 152_588);
    bus.done();
}

#[test]
fn ina226_rejects_a_shunt_that_saturates_the_adc_before_any_bus_traffic() {
    let mut bus = Mock::new(&[]);
    let mut monitor = Ina226::new(bus.clone(), ADDR);
    assert_eq!(
        monitor.calibrate(100_000, MilliAmps(1_000)),
        Err(Error::Calibration(CalibrationError::ShuntVoltageOverRange))
    );
    assert_eq!(monitor.read_power(), Err(SensorError::NotConfigured));
    bus.done();
}

#[test]
fn ina226_configuration_writes_keep_the_other_fields() {
    let mut bus = Mock::new(&[
        // AVG = 011 (64) over 0x4127.
        Transaction::write(ADDR, vec![CONFIGURATION, 0x47, 0x27]),
        // VBUSCT = 000 (140 µs), VSHCT = 111 (8.244 ms).
        Transaction::write(ADDR, vec![CONFIGURATION, 0x46, 0x3F]),
        Transaction::write(ADDR, vec![CONFIGURATION, 0x80, 0x00]),
    ]);
    let mut monitor = Ina226::new(bus.clone(), ADDR);
    monitor.set_averaging(Averaging::X64).unwrap();
    monitor
        .set_conversion_times(ConversionTime::Us140, ConversionTime::Us8244)
        .unwrap();
    monitor.reset().unwrap();
    bus.done();
}

#[test]
fn ina226_wrong_identity_and_nack_are_typed_errors() {
    let mut bus = Mock::new(&[
        Transaction::write_read(ADDR, vec![INA226_MANUFACTURER], vec![0x54, 0x49]),
        Transaction::write_read(ADDR, vec![INA226_DIE], vec![0x32, 0x20]),
        Transaction::write_read(ADDR, vec![INA226_MANUFACTURER], vec![0, 0]).with_error(nack()),
    ]);
    let mut monitor = Ina226::new(bus.clone(), ADDR);
    assert_eq!(
        monitor.verify_identity(),
        Err(Error::WrongDevice {
            manufacturer: 0x5449,
            die: 0x3220
        })
    );
    assert_eq!(monitor.verify_identity(), Err(Error::I2c(nack())));
    bus.done();
}
