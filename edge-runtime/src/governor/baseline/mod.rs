//! Baseline controllers the benchmark compares against, behind the same [`Controller`]
//! interface as ours: the Linux kernel's `step_wise` and `power_allocator` (IPA) governors
//! driving a cpufreq cooling device, and `firmware` (no software control at all). They
//! reproduce the kernel's documented algorithms in floating point; they never pace work, never
//! change threads, and leave the fan to the firmware.
//!
//! [`Controller`]: super::Controller

pub mod firmware;
pub mod ipa;
pub mod step_wise;

pub use firmware::Firmware;
pub use ipa::{PowerAllocator, PowerAllocatorParams};
pub use step_wise::StepWise;

use super::platform::Platform;
use super::types::{Decision, Limiter, Mode, Pace};

/// A decision that only caps the frequency at operating point `level` (`None`: no cap).
fn freq_only(platform: &Platform, level: Option<usize>, reason: String, budget_w: f32) -> Decision {
    let top = platform.top_level();
    let capped = level.is_some_and(|l| l < top);
    Decision {
        freq_cap_khz: level.map(|l| platform.khz(l)),
        threads: platform.cores(),
        pacing: [Pace::FULL; 3],
        fan_level: None,
        mode: if capped {
            Mode::Regulating
        } else {
            Mode::Unlimited
        },
        limiter: if capped { Limiter::Freq } else { Limiter::None },
        reason,
        power_budget_w: budget_w,
    }
}
