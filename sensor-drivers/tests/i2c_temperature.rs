//! Mock-bus tests for the TMP102 and LM75 drivers. Register addresses and values are re-declared
//! here from the datasheets, so these tests check the drivers against the datasheets rather than
//! against the drivers' own constants.
#![allow(clippy::unwrap_used)]

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use sensor_drivers::i2c::Error;
use sensor_drivers::i2c::lm75::{self, FaultQueue, Lm75, Resolution};
use sensor_drivers::i2c::tmp102::{self, ConversionRate, Tmp102};
use sensor_drivers::{MilliCelsius, SensorError, TempSensor};

const TMP102_ADDR: u8 = 0x48;
const TMP102_TEMP: u8 = 0x00;
const TMP102_CONFIG: u8 = 0x01;
const TMP102_T_LOW: u8 = 0x02;
const TMP102_T_HIGH: u8 = 0x03;

const LM75_ADDR: u8 = 0x4F;
const LM75_TEMP: u8 = 0x00;
const LM75_CONFIG: u8 = 0x01;
const LM75_T_HYST: u8 = 0x02;
const LM75_T_OS: u8 = 0x03;

fn nack() -> ErrorKind {
    ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
}

#[test]
fn tmp102_reads_a_negative_temperature() {
    let mut bus = Mock::new(&[Transaction::write_read(
        TMP102_ADDR,
        vec![TMP102_TEMP],
        vec![0xE7, 0x00],
    )]);
    let mut sensor = Tmp102::new(bus.clone(), tmp102::DEFAULT_ADDRESS);
    assert_eq!(sensor.read_temperature(), Ok(MilliCelsius(-25_000)));
    sensor.release();
    bus.done();
}

#[test]
fn tmp102_config_writes_keep_the_power_on_bits() {
    let mut bus = Mock::new(&[
        // 8 Hz: CR1:CR0 = 11 over the power-on 0x60A0.
        Transaction::write(TMP102_ADDR, vec![TMP102_CONFIG, 0x60, 0xE0]),
        // Extended mode: EM (bit 4).
        Transaction::write(TMP102_ADDR, vec![TMP102_CONFIG, 0x60, 0xF0]),
        // 150 °C in 13-bit mode, with the EM flag in bit 0.
        Transaction::write_read(TMP102_ADDR, vec![TMP102_TEMP], vec![0x4B, 0x01]),
        // Shutdown: SD (bit 8).
        Transaction::write(TMP102_ADDR, vec![TMP102_CONFIG, 0x61, 0xF0]),
        // One-shot: OS (bit 15) on top of shutdown.
        Transaction::write(TMP102_ADDR, vec![TMP102_CONFIG, 0xE1, 0xF0]),
        Transaction::write(TMP102_ADDR, vec![TMP102_CONFIG, 0x60, 0xF0]),
    ]);
    let mut sensor = Tmp102::new(bus.clone(), TMP102_ADDR);
    sensor.set_conversion_rate(ConversionRate::Hz8).unwrap();
    sensor.enable_extended_mode().unwrap();
    assert_eq!(sensor.read_temperature(), Ok(MilliCelsius(150_000)));
    sensor.shutdown().unwrap();
    sensor.trigger_one_shot().unwrap();
    sensor.resume().unwrap();
    bus.done();
}

#[test]
fn tmp102_limits_are_checked_before_any_bus_traffic() {
    let mut bus = Mock::new(&[
        Transaction::write(TMP102_ADDR, vec![TMP102_T_LOW, 0x4B, 0x00]),
        Transaction::write(TMP102_ADDR, vec![TMP102_T_HIGH, 0x50, 0x00]),
    ]);
    let mut sensor = Tmp102::new(bus.clone(), TMP102_ADDR);
    assert_eq!(
        sensor.set_limits(MilliCelsius(80_000), MilliCelsius(75_000)),
        Err(Error::InvalidInput)
    );
    assert_eq!(
        sensor.set_limits(MilliCelsius(0), MilliCelsius(140_000)),
        Err(Error::InvalidInput)
    );
    sensor
        .set_limits(MilliCelsius(75_000), MilliCelsius(80_000))
        .unwrap();
    bus.done();
}

#[test]
fn tmp102_nack_is_a_bus_error_and_leaves_the_cached_config_alone() {
    let mut bus = Mock::new(&[
        Transaction::write(TMP102_ADDR, vec![TMP102_CONFIG, 0x60, 0xB0]).with_error(nack()),
        Transaction::write_read(TMP102_ADDR, vec![TMP102_TEMP], vec![0x19, 0x00]),
        Transaction::write_read(TMP102_ADDR, vec![TMP102_TEMP], vec![0, 0]).with_error(nack()),
    ]);
    let mut sensor = Tmp102::new(bus.clone(), TMP102_ADDR);
    assert_eq!(sensor.enable_extended_mode(), Err(Error::I2c(nack())));
    assert!(!sensor.is_extended());
    assert_eq!(sensor.read_temp(), Ok(MilliCelsius(25_000)));
    assert_eq!(sensor.read_temp(), Err(SensorError::Bus));
    bus.done();
}

#[test]
fn lm75_reads_nine_and_eleven_bit_parts() {
    let mut bus = Mock::new(&[
        Transaction::write_read(LM75_ADDR, vec![LM75_TEMP], vec![0xFF, 0x80]),
        Transaction::write_read(LM75_ADDR, vec![LM75_TEMP], vec![0xFF, 0xE0]),
    ]);
    let mut nine = Lm75::new(bus.clone(), LM75_ADDR);
    assert_eq!(nine.read_temperature(), Ok(MilliCelsius(-500)));
    let mut eleven = Lm75::new(nine.release(), LM75_ADDR).with_resolution(Resolution::Bits11);
    assert_eq!(eleven.read_temperature(), Ok(MilliCelsius(-125)));
    bus.done();
}

#[test]
fn lm75_configuration_writes_one_byte() {
    let mut bus = Mock::new(&[
        // Fault queue 4: bits 4:3 = 10.
        Transaction::write(LM75_ADDR, vec![LM75_CONFIG, 0b0001_0000]),
        // OS interrupt mode: bit 1.
        Transaction::write(LM75_ADDR, vec![LM75_CONFIG, 0b0001_0010]),
        // OS active high: bit 2.
        Transaction::write(LM75_ADDR, vec![LM75_CONFIG, 0b0001_0110]),
        // Shutdown: bit 0.
        Transaction::write(LM75_ADDR, vec![LM75_CONFIG, 0b0001_0111]),
        Transaction::write(LM75_ADDR, vec![LM75_CONFIG, 0b0001_0110]),
    ]);
    let mut sensor = Lm75::new(bus.clone(), LM75_ADDR);
    sensor.set_fault_queue(FaultQueue::Four).unwrap();
    sensor.set_os_interrupt_mode(true).unwrap();
    sensor.set_os_active_high(true).unwrap();
    sensor.shutdown().unwrap();
    sensor.enable().unwrap();
    bus.done();
}

#[test]
fn lm75_limits_are_range_checked_then_written() {
    let mut bus = Mock::new(&[
        Transaction::write(LM75_ADDR, vec![LM75_T_OS, 0x50, 0x00]),
        Transaction::write(LM75_ADDR, vec![LM75_T_HYST, 0x4B, 0x00]),
    ]);
    let mut sensor = Lm75::new(bus.clone(), lm75::DEFAULT_ADDRESS | 0b111);
    assert_eq!(
        sensor.set_os_limits(MilliCelsius(130_000), MilliCelsius(75_000)),
        Err(Error::InvalidInput)
    );
    assert_eq!(
        sensor.set_os_limits(MilliCelsius(75_000), MilliCelsius(80_000)),
        Err(Error::InvalidInput)
    );
    sensor
        .set_os_limits(MilliCelsius(80_000), MilliCelsius(75_000))
        .unwrap();
    bus.done();
}

#[test]
fn lm75_nack_reads_as_a_bus_error() {
    let mut bus = Mock::new(&[
        Transaction::write_read(LM75_ADDR, vec![LM75_TEMP], vec![0, 0]).with_error(nack()),
    ]);
    let mut sensor = Lm75::new(bus.clone(), LM75_ADDR);
    assert_eq!(sensor.read_temp(), Err(SensorError::Bus));
    assert_eq!(SensorError::Bus.health(), sensor_drivers::Health::Error);
    bus.done();
}
