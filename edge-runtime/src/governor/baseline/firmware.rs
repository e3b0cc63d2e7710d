//! `firmware`: no software control. Every frequency, all threads, no pacing; only the
//! board's firmware (and its fan curve) protects the chip.

use std::time::Duration;

use super::freq_only;
use crate::governor::Controller;
use crate::governor::platform::Platform;
use crate::governor::types::{Decision, Observation};

/// The no-control baseline.
#[derive(Clone, Debug)]
pub struct Firmware {
    platform: Platform,
}

impl Firmware {
    /// A baseline that never limits anything on `platform`.
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }
}

impl Controller for Firmware {
    fn name(&self) -> &'static str {
        "firmware"
    }

    fn decide(&mut self, _obs: Observation, _now: Duration) -> Decision {
        freq_only(
            &self.platform,
            None,
            "no software control".to_string(),
            f32::INFINITY,
        )
    }
}
