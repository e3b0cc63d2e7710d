//! Why a governor configuration, a platform description or a run-time change to either was
//! rejected: the one error of the controller, shared by its configuration and its platform.

use std::time::Duration;

use thiserror::Error;

/// Why a configuration (or a run-time change to it) was rejected.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ConfigError {
    /// The setpoint is NaN or infinite.
    #[error("setpoint {0} °C is not a finite number")]
    SetpointNotFinite(f32),
    /// The setpoint is at or above the hard ceiling.
    #[error("setpoint {setpoint_c} °C is not below the hard ceiling {ceiling_c} °C")]
    SetpointAboveCeiling {
        /// Requested setpoint in °C.
        setpoint_c: f32,
        /// Hard ceiling in °C.
        ceiling_c: f32,
    },
    /// The setpoint is below the lowest plausible reading, so it could never be met.
    #[error("setpoint {setpoint_c} °C is below the plausible range starting at {min_c} °C")]
    SetpointBelowPlausible {
        /// Requested setpoint in °C.
        setpoint_c: f32,
        /// Lowest plausible reading in °C.
        min_c: f32,
    },
    /// The ceiling is NaN, infinite or above the firmware's first throttle point.
    #[error(
        "hard ceiling {ceiling_c} °C must be finite and at most the firmware throttle point {firmware_c} °C"
    )]
    InvalidCeiling {
        /// Requested ceiling in °C.
        ceiling_c: f32,
        /// The firmware's first throttle point in °C.
        firmware_c: f32,
    },
    /// The firmware throttle point is not a finite temperature.
    #[error("firmware throttle point {0} °C is not a finite number")]
    InvalidFirmwareThrottle(f32),
    /// The control period is outside 10 ms ..= 10 s.
    #[error("control period {0:?} is outside 10 ms ..= 10 s")]
    PeriodOutOfRange(Duration),
    /// The priority order does not name each class exactly once.
    #[error("priorities must name interactive, training and batch exactly once")]
    PrioritiesNotAPermutation,
    /// The plausible range is empty or not finite.
    #[error("plausible range {min_c} ..= {max_c} °C is empty or not finite")]
    InvalidPlausibleRange {
        /// Lower bound in °C.
        min_c: f32,
        /// Upper bound in °C.
        max_c: f32,
    },
    /// The fail-safe interactive duty is outside `0..=1`.
    #[error("fail-safe interactive duty {0} is outside 0..=1")]
    InvalidFailsafeDuty(f32),
    /// The operating-point table is empty.
    #[error("the operating-point table is empty")]
    EmptyOppTable,
    /// The operating-point table has duplicate or zero entries.
    #[error("the operating-point table has duplicate or zero entries")]
    InvalidOppTable,
    /// The platform has no cores.
    #[error("the platform has no cores")]
    NoCores,
    /// A power-model figure is negative, zero where it must not be, or not finite.
    #[error("the power model has a negative, zero or non-finite figure")]
    InvalidPowerModel,
}
