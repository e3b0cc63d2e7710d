//! INA226 register <-> unit conversions and calibration maths, per the datasheet's
//! "Programming" section: `Current_LSB = Max_Expected_I / 2^15`,
//! `CAL = trunc(0.00512 / (Current_LSB · R_shunt))`, `Power_LSB = 25 · Current_LSB`.
//! Currents are carried in nanoamps so the maths stays integer.

use crate::i2c::CalibrationError;
use crate::units::{MicroVolts, MilliAmps, MilliVolts, MilliWatts, clamp_i32, div_round};

/// `0.00512` scaled for nanoamp LSBs and micro-ohm shunts: `0.00512 / (1e-9 · 1e-6)`.
const CAL_SCALE: u64 = 5_120_000_000_000;
/// The calibration register's bit 15 is reserved.
const CAL_MAX: u64 = 0x7FFF;
/// Shunt full scale, 81.92 mV, in nanovolts.
pub const SHUNT_FULL_SCALE_NV: u64 = 81_920_000;

/// A checked calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// The calibration register value.
    pub register: u16,
    /// The current register's LSB in nanoamps (the power LSB is 25 times this, in nanowatts).
    pub current_lsb_na: u32,
}

impl Calibration {
    /// The finest calibration for a shunt (µΩ) and a maximum expected current: the current LSB
    /// is `max / 2^15` rounded up to a whole nanoamp.
    pub fn new(shunt_micro_ohms: u32, max_current: MilliAmps) -> Result<Self, CalibrationError> {
        let max_na = checked_max_na(shunt_micro_ohms, max_current)?;
        Self::with_current_lsb(
            shunt_micro_ohms,
            max_current,
            max_na.div_ceil(1 << 15) as u32,
        )
    }

    /// A calibration with a chosen current LSB in nanoamps, which must lie in
    /// `max / 2^15 ..= max / 2^12`.
    pub fn with_current_lsb(
        shunt_micro_ohms: u32,
        max_current: MilliAmps,
        current_lsb_na: u32,
    ) -> Result<Self, CalibrationError> {
        let max_na = checked_max_na(shunt_micro_ohms, max_current)?;
        let lsb = u64::from(current_lsb_na);
        if lsb < max_na.div_ceil(1 << 15) || lsb > max_na / (1 << 12) {
            return Err(CalibrationError::CurrentLsbOutOfRange);
        }
        if max_na * u64::from(shunt_micro_ohms) / 1_000_000 > SHUNT_FULL_SCALE_NV {
            return Err(CalibrationError::ShuntVoltageOverRange);
        }
        let register = CAL_SCALE / (lsb * u64::from(shunt_micro_ohms));
        if register == 0 || register > CAL_MAX {
            return Err(CalibrationError::RegisterOutOfRange);
        }
        Ok(Calibration {
            register: register as u16,
            current_lsb_na,
        })
    }
}

fn checked_max_na(shunt_micro_ohms: u32, max_current: MilliAmps) -> Result<u64, CalibrationError> {
    if shunt_micro_ohms == 0 {
        return Err(CalibrationError::ZeroShunt);
    }
    if max_current.0 <= 0 {
        return Err(CalibrationError::ZeroCurrent);
    }
    Ok(max_current.0 as u64 * 1_000_000)
}

/// Shunt voltage register: two's complement, 2.5 µV per count (halves round away from zero).
pub fn shunt_microvolts(raw: u16) -> MicroVolts {
    MicroVolts(div_round(i64::from(raw as i16) * 5, 2) as i32)
}

/// Bus voltage register: 1.25 mV per count (bit 15 is always 0).
pub fn bus_millivolts(raw: u16) -> MilliVolts {
    MilliVolts(div_round(i64::from(raw & 0x7FFF) * 5, 4) as i32)
}

/// Current register: two's complement counts of `current_lsb_na`.
pub fn current_milliamps(raw: u16, current_lsb_na: u32) -> MilliAmps {
    let na = i64::from(raw as i16) * i64::from(current_lsb_na);
    MilliAmps(clamp_i32(div_round(na, 1_000_000)))
}

/// Power register: unsigned counts of `25 · current_lsb_na` nanowatts.
pub fn power_milliwatts(raw: u16, current_lsb_na: u32) -> MilliWatts {
    let nw = i64::from(raw) * 25 * i64::from(current_lsb_na);
    MilliWatts(clamp_i32(div_round(nw, 1_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shunt_voltage_has_a_2_5_microvolt_lsb() {
        let cases: [(u16, i32); 6] = [
            (0x7FFF, 81_918),
            (0x0001, 3),
            (0x0002, 5),
            (0x0000, 0),
            (0xFFFF, -3),
            (0x8000, -81_920),
        ];
        for (raw, uv) in cases {
            assert_eq!(shunt_microvolts(raw), MicroVolts(uv), "{raw:#06x}");
        }
    }

    #[test]
    fn bus_voltage_has_a_1_25_millivolt_lsb() {
        let cases: [(u16, i32); 4] = [(0x2580, 12_000), (0x0FF0, 5_100), (0x7FFF, 40_959), (0, 0)];
        for (raw, mv) in cases {
            assert_eq!(bus_millivolts(raw), MilliVolts(mv), "{raw:#06x}");
        }
    }

    #[test]
    fn datasheet_example_gives_calibration_2560() {
        assert_eq!(
            Calibration::with_current_lsb(2_000, MilliAmps(15_000), 1_000_000),
            Ok(Calibration {
                register: 2560,
                current_lsb_na: 1_000_000
            })
        );
    }

    #[test]
    fn finest_calibration_for_a_pi_supply_shunt() {
        assert_eq!(
            Calibration::new(10_000, MilliAmps(5_000)),
            Ok(Calibration {
                register: 3355,
                current_lsb_na: 152_588
            })
        );
    }

    #[test]
    fn calibration_rejects_impossible_parameters() {
        let cases = [
            (0, 1_000, CalibrationError::ZeroShunt),
            (10_000, 0, CalibrationError::ZeroCurrent),
            (100_000, 1_000, CalibrationError::ShuntVoltageOverRange),
            (1, 1, CalibrationError::RegisterOutOfRange),
        ];
        for (shunt, max, error) in cases {
            assert_eq!(
                Calibration::new(shunt, MilliAmps(max)),
                Err(error),
                "{shunt} µΩ {max} mA"
            );
        }
    }

    #[test]
    fn current_and_power_scale_with_the_lsb() {
        assert_eq!(current_milliamps(1_000, 1_000_000), MilliAmps(1_000));
        assert_eq!(current_milliamps(0xFC18, 1_000_000), MilliAmps(-1_000));
        assert_eq!(power_milliwatts(480, 1_000_000), MilliWatts(12_000));
        assert_eq!(power_milliwatts(0xFFFF, 152_588), MilliWatts(249_996));
    }
}
