//! The calibration maths and register conversions the INA219 and INA226 share, per their
//! datasheets' programming sections: `Current_LSB` lies between `Max_Expected_I / 2^15` and
//! `Max_Expected_I / 2^12`, `CAL = trunc(scale / (Current_LSB · R_shunt))` with the chip's
//! scale, and the power LSB is a fixed multiple of the current LSB. Currents are carried in
//! nanoamps so the maths stays integer.

use crate::i2c::CalibrationError;
use crate::units::{MilliAmps, MilliWatts, clamp_i32, div_round};

/// A chip's calibration register: its scale and which values it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationRegister {
    /// The datasheet's constant (0.04096 on the INA219, 0.00512 on the INA226) scaled for
    /// nanoamp LSBs and micro-ohm shunts: `constant / (1e-9 · 1e-6)`.
    pub scale: u64,
    /// The largest value the register holds.
    pub max: u64,
    /// Whether bit 0 exists (it does not on the INA219: the value is rounded down to even).
    pub has_bit0: bool,
}

impl CalibrationRegister {
    /// The register value for a current LSB in nanoamps and a shunt in µΩ (both positive).
    pub fn value(
        &self,
        current_lsb_na: u32,
        shunt_micro_ohms: u32,
    ) -> Result<u16, CalibrationError> {
        let mut value = self.scale / (u64::from(current_lsb_na) * u64::from(shunt_micro_ohms));
        if !self.has_bit0 {
            value &= !1;
        }
        if value == 0 || value > self.max {
            return Err(CalibrationError::RegisterOutOfRange);
        }
        u16::try_from(value).map_err(|_| CalibrationError::RegisterOutOfRange)
    }
}

/// The finest current LSB in nanoamps for a shunt (µΩ) and a maximum expected current:
/// `max / 2^15` rounded up to a whole nanoamp.
pub fn finest_current_lsb_na(
    shunt_micro_ohms: u32,
    max_current: MilliAmps,
) -> Result<u32, CalibrationError> {
    let max_na = checked_max_na(shunt_micro_ohms, max_current)?;
    Ok(max_na.div_ceil(1 << 15) as u32)
}

/// Checks a shunt (µΩ), a maximum expected current and a current LSB (nA, which must lie in
/// `max / 2^15 ..= max / 2^12`); returns the shunt voltage at the maximum current, in nV.
pub fn checked_shunt_nv(
    shunt_micro_ohms: u32,
    max_current: MilliAmps,
    current_lsb_na: u32,
) -> Result<u64, CalibrationError> {
    let max_na = checked_max_na(shunt_micro_ohms, max_current)?;
    let lsb = u64::from(current_lsb_na);
    if lsb < max_na.div_ceil(1 << 15) || lsb > max_na / (1 << 12) {
        return Err(CalibrationError::CurrentLsbOutOfRange);
    }
    Ok(max_na * u64::from(shunt_micro_ohms) / 1_000_000)
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

/// Current register: two's complement counts of `current_lsb_na`.
pub fn current_milliamps(raw: u16, current_lsb_na: u32) -> MilliAmps {
    let na = i64::from(raw as i16) * i64::from(current_lsb_na);
    MilliAmps(clamp_i32(div_round(na, 1_000_000)))
}

/// Power register: unsigned counts of `power_per_current_lsb · current_lsb_na` nanowatts.
pub fn power_milliwatts(raw: u16, current_lsb_na: u32, power_per_current_lsb: u32) -> MilliWatts {
    let nw = i64::from(raw) * i64::from(power_per_current_lsb) * i64::from(current_lsb_na);
    MilliWatts(clamp_i32(div_round(nw, 1_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_drops_bit_0_only_where_the_chip_lacks_it() {
        let even = CalibrationRegister {
            scale: 40_960_000_000_000,
            max: 0xFFFE,
            has_bit0: false,
        };
        let odd = CalibrationRegister {
            has_bit0: true,
            ..even
        };
        // 40.96e12 / (97_657 nA · 100_000 µΩ) = 4194.27...
        assert_eq!(even.value(97_657, 100_000), Ok(4194));
        // 40.96e12 / (100_003 · 100_000) = 4095.87... -> 4095, made even on the INA219.
        assert_eq!(odd.value(100_003, 100_000), Ok(4095));
        assert_eq!(even.value(100_003, 100_000), Ok(4094));
        assert_eq!(even.value(1, 1), Err(CalibrationError::RegisterOutOfRange));
    }

    #[test]
    fn the_current_lsb_must_lie_between_max_over_2_15_and_max_over_2_12() {
        assert_eq!(finest_current_lsb_na(100_000, MilliAmps(3_200)), Ok(97_657));
        assert_eq!(
            checked_shunt_nv(100_000, MilliAmps(2_000), 100_000),
            Ok(200_000_000)
        );
        assert_eq!(
            checked_shunt_nv(100_000, MilliAmps(2_000), 10_000),
            Err(CalibrationError::CurrentLsbOutOfRange)
        );
        assert_eq!(
            checked_shunt_nv(0, MilliAmps(2_000), 100_000),
            Err(CalibrationError::ZeroShunt)
        );
        assert_eq!(
            finest_current_lsb_na(100_000, MilliAmps(0)),
            Err(CalibrationError::ZeroCurrent)
        );
    }

    #[test]
    fn power_counts_scale_with_the_chips_multiple_of_the_current_lsb() {
        assert_eq!(power_milliwatts(2_500, 100_000, 20), MilliWatts(5_000));
        assert_eq!(power_milliwatts(480, 1_000_000, 25), MilliWatts(12_000));
        assert_eq!(current_milliamps(0xFC18, 1_000_000), MilliAmps(-1_000));
    }
}
