//! TMP102 register <-> temperature conversions. The temperature register is left-justified two's
//! complement: 12 bits in normal mode, 13 bits in extended mode, 0.0625 °C (62.5 m°C) per count.

use crate::units::{MilliCelsius, div_round};

/// Lowest temperature the sensor specifies, in m°C.
pub const MIN_MC: i32 = -55_000;
/// Highest 12-bit value, 127.9375 °C, rounded to whole m°C.
pub const MAX_NORMAL_MC: i32 = 127_938;
/// Highest specified temperature in extended mode, in m°C.
pub const MAX_EXTENDED_MC: i32 = 150_000;

/// Converts the two temperature register bytes; halves of a milli-degree round away from zero.
pub fn millicelsius_from_raw(msb: u8, lsb: u8, extended: bool) -> MilliCelsius {
    let raw = i16::from_be_bytes([msb, lsb]);
    let counts = if extended { raw >> 3 } else { raw >> 4 };
    MilliCelsius(div_round(i64::from(counts) * 125, 2) as i32)
}

/// Encodes a limit for the T_LOW / T_HIGH registers, or `None` outside the mode's range.
pub fn raw_from_millicelsius(value: MilliCelsius, extended: bool) -> Option<[u8; 2]> {
    let max = if extended {
        MAX_EXTENDED_MC
    } else {
        MAX_NORMAL_MC
    };
    if value.0 < MIN_MC || value.0 > max {
        return None;
    }
    let counts = div_round(i64::from(value.0) * 2, 125);
    let shift = if extended { 3 } else { 4 };
    let raw = i16::try_from(counts << shift).ok()?;
    Some(raw.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datasheet table "Temperature Data Format": (°C in m°C, 12-bit digital output).
    const NORMAL: [(i32, u16); 11] = [
        (127_938, 0x7FF),
        (100_000, 0x640),
        (80_000, 0x500),
        (75_000, 0x4B0),
        (50_000, 0x320),
        (25_000, 0x190),
        (250, 0x004),
        (0, 0x000),
        (-250, 0xFFC),
        (-25_000, 0xE70),
        (-55_000, 0xC90),
    ];

    /// Datasheet extended-mode table: (m°C, 13-bit digital output).
    const EXTENDED: [(i32, u16); 6] = [
        (150_000, 0x0960),
        (128_000, 0x0800),
        (127_938, 0x07FF),
        (0, 0x0000),
        (-250, 0x1FFC),
        (-55_000, 0x1C90),
    ];

    #[test]
    fn normal_mode_decodes_the_datasheet_table() {
        for (mc, code) in NORMAL {
            let [msb, lsb] = (code << 4).to_be_bytes();
            assert_eq!(
                millicelsius_from_raw(msb, lsb, false),
                MilliCelsius(mc),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn extended_mode_decodes_the_datasheet_table_with_the_mode_flag_set() {
        for (mc, code) in EXTENDED {
            let [msb, lsb] = ((code << 3) | 1).to_be_bytes();
            assert_eq!(
                millicelsius_from_raw(msb, lsb, true),
                MilliCelsius(mc),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn one_count_below_zero_is_minus_62_and_a_half_rounded_away_from_zero() {
        assert_eq!(millicelsius_from_raw(0xFF, 0xF0, false), MilliCelsius(-63));
        assert_eq!(millicelsius_from_raw(0x00, 0x10, false), MilliCelsius(63));
    }

    #[test]
    fn limits_encode_back_to_the_datasheet_codes() {
        for (mc, code) in NORMAL {
            assert_eq!(
                raw_from_millicelsius(MilliCelsius(mc), false),
                Some((code << 4).to_be_bytes()),
                "{mc}"
            );
        }
        for (mc, code) in EXTENDED {
            assert_eq!(
                raw_from_millicelsius(MilliCelsius(mc), true),
                Some((code << 3).to_be_bytes()),
                "{mc}"
            );
        }
    }

    #[test]
    fn limits_outside_the_mode_range_are_refused() {
        assert_eq!(raw_from_millicelsius(MilliCelsius(127_939), false), None);
        assert_eq!(raw_from_millicelsius(MilliCelsius(150_001), true), None);
        assert_eq!(raw_from_millicelsius(MilliCelsius(-55_001), true), None);
    }
}
