//! INA219 register <-> unit conversions and calibration maths, per the datasheet's
//! "Programming the Calibration Register" section:
//! `Current_LSB = Max_Expected_I / 2^15`, `Cal = trunc(0.04096 / (Current_LSB · R_shunt))`,
//! `Power_LSB = 20 · Current_LSB`. Currents are carried in nanoamps so the maths stays integer.

use crate::i2c::shunt::convert::CalibrationRegister;
use crate::units::{MicroVolts, MilliVolts};

/// `0.04096` scaled for nanoamp LSBs and micro-ohm shunts; the register's bit 0 does not
/// exist.
pub(super) const CALIBRATION: CalibrationRegister = CalibrationRegister {
    scale: 40_960_000_000_000,
    max: 0xFFFE,
    has_bit0: false,
};
/// The power LSB is 20 current LSBs.
pub(super) const POWER_PER_CURRENT_LSB: u32 = 20;

/// The programmable gain, i.e. the shunt full-scale range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gain {
    /// /1, ±40 mV.
    Div1,
    /// /2, ±80 mV.
    Div2,
    /// /4, ±160 mV.
    Div4,
    /// /8, ±320 mV (power-on default).
    Div8,
}

impl Gain {
    /// The shunt full-scale voltage in nanovolts.
    pub const fn full_scale_nv(self) -> u64 {
        match self {
            Gain::Div1 => 40_000_000,
            Gain::Div2 => 80_000_000,
            Gain::Div4 => 160_000_000,
            Gain::Div8 => 320_000_000,
        }
    }

    pub(crate) const fn code(self) -> u16 {
        match self {
            Gain::Div1 => 0b00,
            Gain::Div2 => 0b01,
            Gain::Div4 => 0b10,
            Gain::Div8 => 0b11,
        }
    }

    /// The smallest range that covers `shunt_nv`, or `None` above 320 mV.
    pub const fn covering(shunt_nv: u64) -> Option<Gain> {
        if shunt_nv <= Gain::Div1.full_scale_nv() {
            Some(Gain::Div1)
        } else if shunt_nv <= Gain::Div2.full_scale_nv() {
            Some(Gain::Div2)
        } else if shunt_nv <= Gain::Div4.full_scale_nv() {
            Some(Gain::Div4)
        } else if shunt_nv <= Gain::Div8.full_scale_nv() {
            Some(Gain::Div8)
        } else {
            None
        }
    }
}

/// Shunt voltage register: two's complement, 10 µV per count.
pub const fn shunt_microvolts(raw: u16) -> MicroVolts {
    MicroVolts(raw as i16 as i32 * 10)
}

/// Bus voltage register: bits 15..3, 4 mV per count.
pub const fn bus_millivolts(raw: u16) -> MilliVolts {
    MilliVolts((raw >> 3) as i32 * 4)
}

/// Bus voltage register bit 0: the power or current calculation overflowed.
pub const fn math_overflow(raw: u16) -> bool {
    raw & 0b01 != 0
}

/// Bus voltage register bit 1: a conversion completed since the last power read.
pub const fn conversion_ready(raw: u16) -> bool {
    raw & 0b10 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i2c::CalibrationError;
    use crate::i2c::ina219::Calibration;
    use crate::i2c::shunt::convert as shunt;
    use crate::units::{MilliAmps, MilliWatts};

    #[test]
    fn shunt_voltage_follows_the_datasheet_examples() {
        let cases: [(u16, i32); 6] = [
            (0x7D00, 320_000),
            (0x0FA0, 40_000),
            (0x0001, 10),
            (0x0000, 0),
            (0xFFFF, -10),
            (0x8300, -320_000),
        ];
        for (raw, uv) in cases {
            assert_eq!(shunt_microvolts(raw), MicroVolts(uv), "{raw:#06x}");
        }
    }

    #[test]
    fn bus_voltage_drops_the_status_bits() {
        let cases: [(u16, i32, bool, bool); 4] = [
            (0x5DC0, 12_000, false, false),
            (0x5DC2, 12_000, true, false),
            (0x2760, 5_040, false, false),
            (0xFA03, 32_000, true, true),
        ];
        for (raw, mv, ready, overflow) in cases {
            assert_eq!(bus_millivolts(raw), MilliVolts(mv), "{raw:#06x}");
            assert_eq!(conversion_ready(raw), ready);
            assert_eq!(math_overflow(raw), overflow);
        }
    }

    #[test]
    fn datasheet_example_gives_calibration_4096() {
        let cal = Calibration::with_current_lsb(100_000, MilliAmps(2_000), 100_000);
        assert_eq!(
            cal,
            Ok(Calibration {
                register: 4096,
                current_lsb_na: 100_000,
                range: Gain::Div8
            })
        );
    }

    #[test]
    fn finest_calibration_uses_max_over_two_to_the_fifteen() {
        let cal = Calibration::new(100_000, MilliAmps(3_200));
        assert_eq!(
            cal,
            Ok(Calibration {
                register: 4194,
                current_lsb_na: 97_657,
                range: Gain::Div8
            })
        );
        let small = Calibration::new(100_000, MilliAmps(400));
        assert_eq!(small.map(|c| c.range), Ok(Gain::Div1));
    }

    #[test]
    fn calibration_rejects_impossible_parameters() {
        let cases = [
            (0, 1_000, CalibrationError::ZeroShunt),
            (100_000, 0, CalibrationError::ZeroCurrent),
            (100_000, -5, CalibrationError::ZeroCurrent),
            (100_000, 3_300, CalibrationError::ShuntVoltageOverRange),
            (1, 1, CalibrationError::RegisterOutOfRange),
        ];
        for (shunt, max, error) in cases {
            assert_eq!(
                Calibration::new(shunt, MilliAmps(max)),
                Err(error),
                "{shunt} µΩ {max} mA"
            );
        }
        assert_eq!(
            Calibration::with_current_lsb(100_000, MilliAmps(2_000), 10_000),
            Err(CalibrationError::CurrentLsbOutOfRange)
        );
        assert_eq!(
            Calibration::with_current_lsb(100_000, MilliAmps(2_000), 500_000),
            Err(CalibrationError::CurrentLsbOutOfRange)
        );
    }

    #[test]
    fn current_and_power_scale_with_the_lsb() {
        let cases: [(u16, u32, i32); 4] = [
            (10_000, 100_000, 1_000),
            (0xFFFF, 100_000, 0),
            (0xD8F0, 100_000, -1_000),
            (5, 97_657, 0),
        ];
        for (raw, lsb, ma) in cases {
            assert_eq!(
                shunt::current_milliamps(raw, lsb),
                MilliAmps(ma),
                "{raw:#06x}"
            );
        }
        assert_eq!(
            shunt::power_milliwatts(2_500, 100_000, POWER_PER_CURRENT_LSB),
            MilliWatts(5_000)
        );
        assert_eq!(
            shunt::power_milliwatts(0xFFFF, 100_000, POWER_PER_CURRENT_LSB),
            MilliWatts(131_070)
        );
    }
}
