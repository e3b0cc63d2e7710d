//! Physical units as types. Every reading and setpoint in this crate travels in one of these
//! newtypes, so a milliwatt can never be passed where a milli-degree is expected. The unit is in
//! the type's name and stated in its doc comment; the integer resolutions match what sysfs and the
//! I2C sensors report, so no float rounding happens on the read path.

use core::fmt;

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident($inner:ty), $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", self.0, $suffix)
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }
    };
}

unit!(
    /// Temperature in thousandths of a degree Celsius (m°C), the unit of sysfs `temp` files.
    MilliCelsius(i32),
    "m°C"
);
unit!(
    /// Electrical power in milliwatts (mW). Signed: a shunt monitor reports reverse flow as negative.
    MilliWatts(i32),
    "mW"
);
unit!(
    /// Electrical potential in millivolts (mV), the unit of hwmon `in*_input` files.
    MilliVolts(i32),
    "mV"
);
unit!(
    /// Electrical potential in microvolts (µV); used for shunt voltages.
    MicroVolts(i32),
    "µV"
);
unit!(
    /// Electrical current in milliamperes (mA), the unit of hwmon `curr*_input` files.
    MilliAmps(i32),
    "mA"
);
unit!(
    /// Clock frequency in kilohertz (kHz), the unit of cpufreq files.
    KiloHertz(u32),
    "kHz"
);
unit!(
    /// Fan speed in revolutions per minute (RPM), the unit of hwmon `fan*_input` files.
    Rpm(u32),
    "RPM"
);

/// A duty cycle or fraction in whole percent, 0 to 100 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "std",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "u8", into = "u8")
)]
pub struct Percent(u8);

impl Percent {
    /// 0 %.
    pub const ZERO: Percent = Percent(0);
    /// 100 %.
    pub const FULL: Percent = Percent(100);

    /// A percentage, or `None` above 100.
    pub const fn new(value: u8) -> Option<Self> {
        if value <= 100 {
            Some(Self(value))
        } else {
            None
        }
    }

    /// A percentage, saturating at 100.
    pub const fn saturating(value: u8) -> Self {
        if value <= 100 { Self(value) } else { Self(100) }
    }

    /// The whole-percent value, 0 to 100.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The value as a fraction between 0.0 and 1.0.
    pub fn fraction(self) -> f32 {
        f32::from(self.0) / 100.0
    }
}

impl TryFrom<u8> for Percent {
    type Error = OutOfRange;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Percent::new(value).ok_or(OutOfRange)
    }
}

impl From<Percent> for u8 {
    fn from(value: Percent) -> Self {
        value.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", self.0)
    }
}

/// A value was outside the range its type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value out of range")
    }
}

impl core::error::Error for OutOfRange {}

impl MilliCelsius {
    /// Whole degrees Celsius as milli-degrees.
    pub const fn from_celsius(celsius: i32) -> Self {
        Self(celsius.saturating_mul(1000))
    }

    /// The temperature in degrees Celsius as a float (for display and models, not comparisons).
    pub fn celsius(self) -> f32 {
        self.0 as f32 / 1000.0
    }
}

impl KiloHertz {
    /// Megahertz as kilohertz.
    pub const fn from_mhz(mhz: u32) -> Self {
        Self(mhz.saturating_mul(1000))
    }
}

impl MilliWatts {
    /// Power from a bus voltage and a current: `mV · mA / 1000`, rounded to the nearest mW and
    /// saturating at the `i32` range.
    pub fn from_volts_amps(voltage: MilliVolts, current: MilliAmps) -> Self {
        let micro_watts = i64::from(voltage.0) * i64::from(current.0);
        let milli = div_round(micro_watts, 1000);
        Self(clamp_i32(milli))
    }

    /// The power in watts as a float (for display and energy integration).
    pub fn watts(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

/// Integer division rounding half away from zero. `den` must be positive.
pub(crate) const fn div_round(num: i64, den: i64) -> i64 {
    if num >= 0 {
        (num + den / 2) / den
    } else {
        (num - den / 2) / den
    }
}

/// Narrows an `i64` to `i32`, saturating.
pub(crate) const fn clamp_i32(value: i64) -> i32 {
    if value > i32::MAX as i64 {
        i32::MAX
    } else if value < i32::MIN as i64 {
        i32::MIN
    } else {
        value as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_from_volts_and_amps_rounds_to_the_nearest_milliwatt() {
        let cases = [
            (5000, 1000, 5000),
            (5080, 987, 5014),
            (4999, 1, 5),
            (0, 3000, 0),
            (5000, -200, -1000),
            (1, 499, 0),
            (1, 500, 1),
        ];
        for (mv, ma, mw) in cases {
            assert_eq!(
                MilliWatts::from_volts_amps(MilliVolts(mv), MilliAmps(ma)),
                MilliWatts(mw),
                "{mv} mV x {ma} mA"
            );
        }
    }

    #[test]
    fn percent_rejects_values_above_one_hundred() {
        assert_eq!(Percent::new(100).map(Percent::get), Some(100));
        assert_eq!(Percent::new(101), None);
        assert_eq!(Percent::saturating(250), Percent::FULL);
        assert!(Percent::try_from(101).is_err());
    }

    #[test]
    fn rounding_division_is_symmetric_around_zero() {
        assert_eq!(div_round(125, 2), 63);
        assert_eq!(div_round(-125, 2), -63);
        assert_eq!(div_round(124, 2), 62);
        assert_eq!(div_round(-1, 4), 0);
    }
}
