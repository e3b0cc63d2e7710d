//! LM75 register <-> temperature conversions. The temperature register is left-justified two's
//! complement: 9 bits (0.5 °C per count) or 11 bits on the LM75B (0.125 °C per count). The limit
//! registers are always 9 bits.

use super::Resolution;
use crate::units::MilliCelsius;

/// Lowest limit the sensor accepts, in m°C.
pub const MIN_MC: i32 = -55_000;
/// Highest limit the sensor accepts, in m°C.
pub const MAX_MC: i32 = 125_000;

/// Converts the two temperature register bytes.
pub fn millicelsius_from_raw(msb: u8, lsb: u8, resolution: Resolution) -> MilliCelsius {
    let raw = i16::from_be_bytes([msb, lsb]);
    let counts = i32::from(match resolution {
        Resolution::Bits9 => raw >> 7,
        Resolution::Bits11 => raw >> 5,
    });
    let step_mc = match resolution {
        Resolution::Bits9 => 500,
        Resolution::Bits11 => 125,
    };
    MilliCelsius(counts * step_mc)
}

/// Encodes a T_OS / T_HYST limit, rounded to the nearest 0.5 °C; `None` outside -55..=125 °C.
pub fn limit_raw_from_millicelsius(value: MilliCelsius) -> Option<[u8; 2]> {
    if value.0 < MIN_MC || value.0 > MAX_MC {
        return None;
    }
    let counts = crate::units::div_round(i64::from(value.0), 500);
    let raw = i16::try_from(counts << 7).ok()?;
    Some(raw.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datasheet "Temperature Data Format" for the 9-bit LM75: (m°C, 9-bit code).
    const NINE_BIT: [(i32, u16); 7] = [
        (125_000, 0x0FA),
        (25_000, 0x032),
        (500, 0x001),
        (0, 0x000),
        (-500, 0x1FF),
        (-25_000, 0x1CE),
        (-55_000, 0x192),
    ];

    /// LM75B datasheet table for the 11-bit register: (m°C, 11-bit code).
    const ELEVEN_BIT: [(i32, u16); 8] = [
        (127_000, 0x3F8),
        (126_875, 0x3F7),
        (125, 0x001),
        (0, 0x000),
        (-125, 0x7FF),
        (-25_000, 0x738),
        (-54_875, 0x649),
        (-55_000, 0x648),
    ];

    #[test]
    fn nine_bit_codes_decode_per_the_datasheet() {
        for (mc, code) in NINE_BIT {
            let [msb, lsb] = (code << 7).to_be_bytes();
            assert_eq!(
                millicelsius_from_raw(msb, lsb, Resolution::Bits9),
                MilliCelsius(mc),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn eleven_bit_codes_decode_per_the_datasheet() {
        for (mc, code) in ELEVEN_BIT {
            let [msb, lsb] = (code << 5).to_be_bytes();
            assert_eq!(
                millicelsius_from_raw(msb, lsb, Resolution::Bits11),
                MilliCelsius(mc),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn a_nine_bit_part_ignores_the_unused_low_bits() {
        assert_eq!(
            millicelsius_from_raw(0x19, 0x7F, Resolution::Bits9),
            MilliCelsius(25_000)
        );
    }

    #[test]
    fn limits_encode_and_round_to_half_degrees() {
        for (mc, code) in NINE_BIT {
            assert_eq!(
                limit_raw_from_millicelsius(MilliCelsius(mc)),
                Some((code << 7).to_be_bytes()),
                "{mc}"
            );
        }
        assert_eq!(
            limit_raw_from_millicelsius(MilliCelsius(80_240)),
            limit_raw_from_millicelsius(MilliCelsius(80_000))
        );
        assert_eq!(limit_raw_from_millicelsius(MilliCelsius(125_001)), None);
        assert_eq!(limit_raw_from_millicelsius(MilliCelsius(-55_001)), None);
    }
}
