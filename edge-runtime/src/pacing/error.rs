//! Why the runner could not be built, or could not put an actuator back: the one error of
//! the pacing layer, shared by the runner and the actuators it restores.

use sensor_drivers::ActuatorError;
use sensor_drivers::sim::MAX_TIME_SCALE;
use thiserror::Error;

/// Why the runner could not be built, or could not put an actuator back.
#[derive(Debug, Error)]
pub enum RunnerError {
    /// The platform lets the governor cap the CPU frequency, but no cap actuator was given.
    #[error(
        "the platform declares a writable CPU frequency but no frequency-cap actuator was given"
    )]
    MissingFreqCap,
    /// The platform gives the governor a fan, but no fan actuator was given.
    #[error("the platform declares a fan with levels 0..={0} but no fan actuator was given")]
    MissingFan(u8),
    /// An actuator was given that the platform does not let the governor use.
    #[error("a {0} actuator was given but the platform does not let the governor use it")]
    UnusedActuator(&'static str),
    /// The time scale is not above 0 and at most [`MAX_TIME_SCALE`].
    #[error("the time scale must be above 0 and at most {MAX_TIME_SCALE}, not {0}")]
    InvalidTimeScale(f64),
    /// Putting an actuator back failed.
    #[error("restoring the {actuator}: {cause}")]
    Restore {
        /// Which actuator (`frequency cap` or `fan`).
        actuator: &'static str,
        /// The actuator's error.
        cause: ActuatorError,
    },
}
