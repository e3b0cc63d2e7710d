//! The thermal governor: keeps the SoC at a setpoint below the firmware's throttle points by
//! pacing token generation and training steps, capping the CPU frequency, choosing the thread
//! count and, where it may, driving the fan.
//!
//! Everything here is pure control logic: readings and monotonic time in, decisions out
//! (like rumqttc's `state.rs`). The runtime side lives in [`crate::pacing`]: it owns the clock,
//! the sensors and the sysfs writes, calls [`Controller::decide`] once per period, applies the
//! [`Decision`], and publishes its pacing through `pacing::Permits`, the cheap handle the
//! engine and the trainer consult before every token or step. The benchmark that runs these
//! controllers on the simulated SoC is `crate::bench::governor`. This module must not import
//! the engine, tract, or any I/O (no files, no sleeps, no clock reads); from `sensor_drivers`
//! it takes plain data only (sensor health, a simulated board's profile), never a reader or an
//! actuator.
//!
//! Controllers sharing the [`Controller`] interface: [`Governor`] (ours, adaptive and
//! model-predictive) and the baselines in [`baseline`] (the kernel's `step_wise` and
//! `power_allocator`, and firmware-only).

pub mod adaptive;
pub mod allocate;
pub mod baseline;
pub mod config;
pub mod eco_setpoint;
mod error;
pub mod estimator;
pub mod platform;
pub mod types;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use adaptive::{Estimate, Governor};
pub use config::{ConfigError, EfficientPacing, GovernorConfig, GovernorConfigBuilder};
pub use eco_setpoint::{AutoSetpoint, EcoWeights, SetpointChoice};
pub use platform::{Opp, Platform};
pub use types::{
    ActuatorState, Decision, Demand, Health, Limiter, Mode, Observation, Pace, Priority,
    TempReading,
};

/// A thermal controller: one observation per control period in, one decision out.
/// Implementations are pure: no clock, no I/O.
pub trait Controller {
    /// Short name used in benchmark tables (`ours`, `ipa`, `step_wise`, `firmware`).
    fn name(&self) -> &'static str;

    /// Decides the actuator settings for the next period from `obs`, observed at `now`
    /// (monotonic time since the runtime's epoch).
    fn decide(&mut self, obs: Observation, now: Duration) -> Decision;

    /// The setpoint in force in °C, for controllers that hold one.
    fn setpoint_c(&self) -> Option<f32> {
        None
    }
}
