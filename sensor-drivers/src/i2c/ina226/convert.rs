//! INA226 register <-> unit conversions and calibration maths, per the datasheet's
//! "Programming" section: `Current_LSB = Max_Expected_I / 2^15`,
//! `CAL = trunc(0.00512 / (Current_LSB · R_shunt))`, `Power_LSB = 25 · Current_LSB`.
//! Currents are carried in nanoamps so the maths stays integer.

use crate::i2c::shunt::convert::CalibrationRegister;
use crate::units::{MicroVolts, MilliVolts, div_round};

/// `0.00512` scaled for nanoamp LSBs and micro-ohm shunts; the register's bit 15 is reserved.
pub(super) const CALIBRATION: CalibrationRegister = CalibrationRegister {
    scale: 5_120_000_000_000,
    max: 0x7FFF,
    has_bit0: true,
};
/// The power LSB is 25 current LSBs.
pub(super) const POWER_PER_CURRENT_LSB: u32 = 25;
/// Shunt full scale, 81.92 mV, in nanovolts.
pub const SHUNT_FULL_SCALE_NV: u64 = 81_920_000;

/// The INA226's one shunt range, ±81.92 mV: its calibration's [`Range`](crate::i2c::shunt::Chip::Range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuntRange;

impl ShuntRange {
    /// The range when it covers `shunt_nv`.
    pub const fn covering(shunt_nv: u64) -> Option<ShuntRange> {
        if shunt_nv <= SHUNT_FULL_SCALE_NV {
            Some(ShuntRange)
        } else {
            None
        }
    }
}

/// Shunt voltage register: two's complement, 2.5 µV per count (halves round away from zero).
pub fn shunt_microvolts(raw: u16) -> MicroVolts {
    MicroVolts(div_round(i64::from(raw as i16) * 5, 2) as i32)
}

/// Bus voltage register: 1.25 mV per count (bit 15 is always 0).
pub fn bus_millivolts(raw: u16) -> MilliVolts {
    MilliVolts(div_round(i64::from(raw & 0x7FFF) * 5, 4) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i2c::CalibrationError;
    use crate::i2c::ina226::Calibration;
    use crate::i2c::shunt::convert as shunt;
    use crate::units::{MilliAmps, MilliWatts};

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
                current_lsb_na: 1_000_000,
                range: ShuntRange
            })
        );
    }

    #[test]
    fn finest_calibration_for_a_pi_supply_shunt() {
        assert_eq!(
            Calibration::new(10_000, MilliAmps(5_000)),
            Ok(Calibration {
                register: 3355,
                current_lsb_na: 152_588,
                range: ShuntRange
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
        assert_eq!(shunt::current_milliamps(1_000, 1_000_000), MilliAmps(1_000));
        assert_eq!(
            shunt::current_milliamps(0xFC18, 1_000_000),
            MilliAmps(-1_000)
        );
        assert_eq!(
            shunt::power_milliwatts(480, 1_000_000, POWER_PER_CURRENT_LSB),
            MilliWatts(12_000)
        );
        assert_eq!(
            shunt::power_milliwatts(0xFFFF, 152_588, POWER_PER_CURRENT_LSB),
            MilliWatts(249_996)
        );
    }
}
