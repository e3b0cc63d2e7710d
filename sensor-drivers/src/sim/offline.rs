//! Offline driving: the twin runs from a workload model as fast as the CPU allows, for
//! benchmarks and governor comparisons. A control closure is called before every tick with the
//! SoC and the simulated time, and sets the workload, caps or fan as a governor would.

use std::time::Duration;

use super::soc::SimSoc;

/// Totals of an offline run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfflineSummary {
    /// Simulated time covered.
    pub simulated: Duration,
    /// Ticks run.
    pub ticks: u64,
    /// Supply energy during the run (J).
    pub energy_j: f64,
    /// Core-cycles executed during the run.
    pub cycles: f64,
    /// Highest die temperature sampled at tick ends (°C).
    pub peak_die_c: f64,
    /// Mean die temperature over tick ends (°C).
    pub mean_die_c: f64,
    /// Throttle events during the run.
    pub throttle_events: u64,
    /// Seconds the firmware held the clock below the governor's cap during the run.
    pub firmware_limited_s: f64,
}

/// Runs `soc` for `duration` in ticks of `tick`, calling `control(soc, time)` before each.
pub fn run_offline(
    soc: &mut SimSoc,
    duration: Duration,
    tick: Duration,
    mut control: impl FnMut(&mut SimSoc, Duration),
) -> OfflineSummary {
    let start = soc.truth();
    let mut elapsed = Duration::ZERO;
    let mut ticks = 0u64;
    let mut peak = f64::MIN;
    let mut sum = 0.0;
    while elapsed < duration && !tick.is_zero() {
        let dt = tick.min(duration - elapsed);
        control(soc, elapsed);
        soc.step(dt);
        elapsed += dt;
        ticks += 1;
        let die = soc.truth().die_c;
        peak = peak.max(die);
        sum += die;
    }
    let end = soc.truth();
    OfflineSummary {
        simulated: elapsed,
        ticks,
        energy_j: end.energy_j - start.energy_j,
        cycles: end.cycles - start.cycles,
        peak_die_c: if ticks == 0 { end.die_c } else { peak },
        mean_die_c: if ticks == 0 {
            end.die_c
        } else {
            sum / ticks as f64
        },
        throttle_events: end.throttle_events - start.throttle_events,
        firmware_limited_s: end.firmware_limited_s - start.firmware_limited_s,
    }
}
