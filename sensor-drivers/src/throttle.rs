//! Raspberry Pi firmware throttle flags (`get_throttled`), decoded, and a tracker that
//! remembers which conditions occurred. The kernel's raspberrypi-hwmon driver clears the sticky
//! "since boot" bits 16-19 every two seconds, so only the live bits 0-3 are trusted and the
//! history is kept here instead.

use core::fmt;

const UNDER_VOLTAGE: u32 = 0b0001;
const FREQ_CAPPED: u32 = 0b0010;
const THROTTLED: u32 = 0b0100;
const SOFT_TEMP_LIMIT: u32 = 0b1000;
const LIVE_BITS: u32 = 0b1111;

/// The raw `get_throttled` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "std",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct ThrottleFlags(pub u32);

/// The text was not a hexadecimal `get_throttled` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseThrottleError;

impl fmt::Display for ParseThrottleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a hexadecimal throttle word")
    }
}

impl core::error::Error for ParseThrottleError {}

impl ThrottleFlags {
    /// Parses the sysfs text: hexadecimal with or without `0x`, surrounding whitespace allowed.
    pub fn parse_hex(text: &str) -> Result<Self, ParseThrottleError> {
        let trimmed = text.trim();
        let digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        if digits.is_empty() {
            return Err(ParseThrottleError);
        }
        u32::from_str_radix(digits, 16)
            .map(ThrottleFlags)
            .map_err(|_| ParseThrottleError)
    }

    /// Bit 0: the supply is below 4.63 V now.
    pub const fn under_voltage(self) -> bool {
        self.0 & UNDER_VOLTAGE != 0
    }
    /// Bit 1: the ARM frequency is capped now.
    pub const fn freq_capped(self) -> bool {
        self.0 & FREQ_CAPPED != 0
    }
    /// Bit 2: the SoC is throttled now.
    pub const fn throttled(self) -> bool {
        self.0 & THROTTLED != 0
    }
    /// Bit 3: the soft temperature limit is active now.
    pub const fn soft_temp_limit(self) -> bool {
        self.0 & SOFT_TEMP_LIMIT != 0
    }
    /// The live bits 0-3 only.
    pub const fn live(self) -> ThrottleFlags {
        ThrottleFlags(self.0 & LIVE_BITS)
    }
    /// True when any live condition is present.
    pub const fn any_live(self) -> bool {
        self.0 & LIVE_BITS != 0
    }
    /// Builds a word from the four live conditions, with the sticky bits 16-19 mirroring them.
    pub const fn from_conditions(
        under_voltage: bool,
        freq_capped: bool,
        throttled: bool,
        soft_temp_limit: bool,
    ) -> Self {
        let live = ((under_voltage as u32) * UNDER_VOLTAGE)
            | ((freq_capped as u32) * FREQ_CAPPED)
            | ((throttled as u32) * THROTTLED)
            | ((soft_temp_limit as u32) * SOFT_TEMP_LIMIT);
        ThrottleFlags(live | (live << 16))
    }
}

/// Remembers which live conditions occurred and counts how often each began.
#[derive(Debug, Clone, Default)]
pub struct ThrottleTracker {
    last: u32,
    seen: u32,
    onsets: [u32; 4],
}

impl ThrottleTracker {
    /// A tracker with no history.
    pub const fn new() -> Self {
        ThrottleTracker {
            last: 0,
            seen: 0,
            onsets: [0; 4],
        }
    }

    /// Records one reading.
    pub fn observe(&mut self, flags: ThrottleFlags) {
        let live = flags.0 & LIVE_BITS;
        let rising = live & !self.last;
        for (bit, count) in self.onsets.iter_mut().enumerate() {
            if rising & (1 << bit) != 0 {
                *count = count.saturating_add(1);
            }
        }
        self.seen |= live;
        self.last = live;
    }

    /// The conditions seen at least once, as live bits 0-3.
    pub const fn seen(&self) -> ThrottleFlags {
        ThrottleFlags(self.seen)
    }

    /// How many times the condition on live bit `bit` (0-3) began; 0 for other bits.
    pub fn onsets(&self, bit: u8) -> u32 {
        self.onsets.get(usize::from(bit)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_throttled_words_with_and_without_prefix() {
        let cases = [
            ("0x0\n", Some(0)),
            ("0x50005", Some(0x50005)),
            ("80008", Some(0x80008)),
            ("  0XE000F ", Some(0xE000F)),
            ("", None),
            ("0x", None),
            ("throttled", None),
            ("-1", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                ThrottleFlags::parse_hex(text).ok().map(|f| f.0),
                expected,
                "{text:?}"
            );
        }
    }

    #[test]
    fn decodes_each_live_bit() {
        let flags = ThrottleFlags(0x50005);
        assert!(flags.under_voltage());
        assert!(!flags.freq_capped());
        assert!(flags.throttled());
        assert!(!flags.soft_temp_limit());
        assert_eq!(flags.live(), ThrottleFlags(0x5));
        let soft = ThrottleFlags(0x8);
        assert!(soft.soft_temp_limit() && soft.any_live());
        assert!(!ThrottleFlags(0xF0000).any_live());
    }

    #[test]
    fn tracker_counts_onsets_and_ignores_sticky_bits() {
        let mut tracker = ThrottleTracker::new();
        for word in [0x0, 0x8, 0x8, 0x0, 0xA, 0x80000, 0x2] {
            tracker.observe(ThrottleFlags(word));
        }
        assert_eq!(tracker.onsets(3), 2);
        assert_eq!(tracker.onsets(1), 2);
        assert_eq!(tracker.onsets(0), 0);
        assert_eq!(tracker.onsets(9), 0);
        assert_eq!(tracker.seen(), ThrottleFlags(0xA));
    }

    #[test]
    fn conditions_build_the_same_word_the_firmware_reports() {
        assert_eq!(
            ThrottleFlags::from_conditions(false, true, false, true),
            ThrottleFlags(0xA000A)
        );
        assert_eq!(
            ThrottleFlags::from_conditions(false, false, false, false),
            ThrottleFlags(0)
        );
    }
}
