//! The two error types every sensor and actuator trait speaks: [`SensorError`] for reads and
//! [`ActuatorError`] for writes. They are small `Copy` enums so that they work without an
//! allocator; richer, path-carrying errors live with each implementation and convert into these.
//! Each sensor error maps to the [`Health`](crate::health::Health) a governor acts on.

use core::fmt;

/// Why a sensor produced no usable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "std",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum SensorError {
    /// The source does not exist: a missing file, device, channel or chip.
    Missing,
    /// The source exists but returned no data (an empty sysfs file).
    Empty,
    /// The source returned data that is not a value in the expected format.
    Malformed,
    /// A value outside the physically plausible range, in the sensor's own unit
    /// (m°C, mW, mV, mA).
    Implausible {
        /// The rejected value.
        value: i64,
    },
    /// The measurement overflowed the sensor's configured range (INA2xx math overflow).
    Overflow,
    /// The device did not answer on its bus (I2C NACK, arbitration loss, bus fault).
    Bus,
    /// The operating system refused access to the source.
    PermissionDenied,
    /// Reading the source failed with an I/O error.
    Io,
    /// The sensor needs configuration (for example INA2xx calibration) before this read.
    NotConfigured,
    /// The value has not changed for longer than the sensor's policy allows.
    Stuck,
    /// No fresh value; the last good one is older than the sensor's policy allows.
    Stale,
    /// The sensor is temporarily unavailable (a dropout, a lock held by a crashed thread).
    Unavailable,
}

impl fmt::Display for SensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SensorError::Missing => f.write_str("sensor missing"),
            SensorError::Empty => f.write_str("sensor returned no data"),
            SensorError::Malformed => f.write_str("sensor returned malformed data"),
            SensorError::Implausible { value } => write!(f, "implausible sensor value {value}"),
            SensorError::Overflow => f.write_str("measurement overflowed the sensor range"),
            SensorError::Bus => f.write_str("sensor did not answer on its bus"),
            SensorError::PermissionDenied => f.write_str("permission denied reading sensor"),
            SensorError::Io => f.write_str("I/O error reading sensor"),
            SensorError::NotConfigured => f.write_str("sensor is not configured for this read"),
            SensorError::Stuck => f.write_str("sensor value is stuck"),
            SensorError::Stale => f.write_str("sensor value is stale"),
            SensorError::Unavailable => f.write_str("sensor temporarily unavailable"),
        }
    }
}

impl core::error::Error for SensorError {}

/// Why an actuator did not take a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "std",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum ActuatorError {
    /// The actuator does not exist.
    Missing,
    /// The operating system refused the write (not root, read-only attribute).
    PermissionDenied,
    /// The requested setting is outside what the actuator accepts; nothing was written.
    OutOfRange,
    /// The actuator does not support this operation.
    Unsupported,
    /// The device did not answer on its bus.
    Bus,
    /// The write failed with an I/O error, or the read-back disagreed.
    Io,
    /// The actuator is temporarily unavailable.
    Unavailable,
}

impl fmt::Display for ActuatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActuatorError::Missing => f.write_str("actuator missing"),
            ActuatorError::PermissionDenied => f.write_str("permission denied writing actuator"),
            ActuatorError::OutOfRange => f.write_str("setting out of the actuator's range"),
            ActuatorError::Unsupported => f.write_str("operation not supported by actuator"),
            ActuatorError::Bus => f.write_str("actuator did not answer on its bus"),
            ActuatorError::Io => f.write_str("I/O error writing actuator"),
            ActuatorError::Unavailable => f.write_str("actuator temporarily unavailable"),
        }
    }
}

impl core::error::Error for ActuatorError {}
