//! Pacing: the governor's runtime side, the part that touches the board and the clock. The
//! [`runner`] feeds a pure [`crate::governor::Controller`] one observation per control period
//! (sensors through an [`ObservationSource`], monotonic time from its own clock), writes the
//! frequency cap and the fan through the `sensor_drivers` actuator traits, and
//! publishes the decided pace through [`Permits`], the cheap handle the engine, the trainer and
//! the service consult before every token or step (where work sleeps to keep its duty).
//!
//! This module spawns nothing (the binary runs the driver on a thread of its own) and must not
//! import the engine, tract, the trainer or the command line.

mod actuators;
mod error;
pub mod permit;
pub mod runner;
pub mod source;
pub mod status;

pub use permit::{Permit, PermitStats, Permits};
pub use runner::{
    GOVERNOR_STOPPED, GovernorDriver, GovernorHandle, GovernorRunner, MAX_TIME_SCALE, Regulator,
    RunnerError,
};
pub use source::{ObservationSource, SourceReading, reading_from_snapshot};
pub use status::GovernorStatus;
