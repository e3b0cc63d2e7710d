//! What the governor is doing, as the driver last published it for the handle to read.

use std::fmt::Write as _;
use std::time::Duration;

use crate::governor::{Health, Limiter, Mode, SetpointChoice};

/// What the governor is doing, as of its last tick.
#[derive(Clone, Debug, PartialEq)]
pub struct GovernorStatus {
    /// The controller's name (`ours`, ...).
    pub controller: &'static str,
    /// Ticks run so far.
    pub ticks: u64,
    /// Time of the last tick, since the runtime's epoch.
    pub at: Duration,
    /// The governing temperature in °C as last read (the last good value while stale);
    /// `None` when the sensor gave no value.
    pub temperature_c: Option<f32>,
    /// Health of that reading.
    pub health: Health,
    /// Board power in W, where a power sensor answered.
    pub power_w: Option<f32>,
    /// Setpoint in °C in force.
    pub setpoint_c: f32,
    /// Operating mode.
    pub mode: Mode,
    /// What is limiting work.
    pub limiter: Limiter,
    /// The controller's reason, for humans.
    pub reason: String,
    /// The power budget in W the decision was sized for.
    pub power_budget_w: f32,
    /// The frequency cap in kHz in force (read back from the actuator); `None` without one.
    pub freq_cap_khz: Option<u32>,
    /// Compute threads the engine should use.
    pub threads: u16,
    /// Duty per class (indexed by [`crate::governor::Priority::index`]): 1 unpaced, 0 paused.
    pub duties: [f32; 3],
    /// Fan level the governor forces; `None` when the firmware drives the fan.
    pub fan_level: Option<u8>,
    /// Completed permits per second per class over the last couple of seconds.
    pub steps_per_s: [f32; 3],
    /// Generated tokens per second (interactive permits per second, one per token); `None`
    /// until the first interactive permit.
    pub tokens_per_s: Option<f32>,
    /// The last actuator or setpoint failure, if any happened since the start.
    pub last_error: Option<String>,
    /// Mean wall time of one tick (sensor read, decision, actuator writes).
    pub tick_mean: Duration,
    /// Longest tick.
    pub tick_max: Duration,
    /// False once the driver has stopped (returned from `run`, shut down or dropped).
    pub running: bool,
    /// The eco setpoint's last choice and what it was weighed against, when the setpoint is
    /// automatic.
    pub eco: Option<SetpointChoice>,
    /// Seconds the board could run every core flat out before its estimate reaches the
    /// regulation target (`f64::INFINITY` when flat out settles below it); `None` before the
    /// first fresh reading, in the coolest mode, and for controllers without a model.
    pub headroom_s: Option<f64>,
}
impl GovernorStatus {
    pub(super) fn initial(controller: &'static str, setpoint_c: f32) -> Self {
        Self {
            controller,
            ticks: 0,
            at: Duration::ZERO,
            temperature_c: None,
            health: Health::Missing,
            power_w: None,
            setpoint_c,
            mode: Mode::FailSafe,
            limiter: Limiter::FailSafe,
            reason: "no tick yet".to_string(),
            power_budget_w: 0.0,
            freq_cap_khz: None,
            threads: 1,
            duties: [0.0; 3],
            fan_level: None,
            steps_per_s: [0.0; 3],
            tokens_per_s: None,
            last_error: None,
            tick_mean: Duration::ZERO,
            tick_max: Duration::ZERO,
            running: true,
            eco: None,
            headroom_s: None,
        }
    }

    /// One status line: temperature (with its health when not fresh), setpoint, tokens/s when
    /// known, and what is limiting work, e.g.
    /// `62.4 °C / set 70.0 | 31.2 tok/s | limiting: pace training`.
    pub fn line(&self) -> String {
        let mut s = match self.temperature_c {
            Some(t) if t.is_finite() => format!("{t:.1} °C"),
            _ => "-- °C".to_string(),
        };
        if self.health != Health::Fresh {
            let _ = write!(s, " ({})", self.health.as_str());
        }
        let _ = write!(s, " / set {:.1}", self.setpoint_c);
        if let Some(tps) = self.tokens_per_s {
            let _ = write!(s, " | {tps:.1} tok/s");
        }
        let what = match (self.mode, self.limiter) {
            (Mode::FailSafe, _) | (_, Limiter::FailSafe) => self.reason.clone(),
            (_, Limiter::None) => "limiting: nothing".to_string(),
            (_, Limiter::Fan) => "limiting: nothing (fan boosted)".to_string(),
            (_, l) => format!("limiting: {}", limiter_words(l)),
        };
        let _ = write!(s, " | {what}");
        if let Some(c) = &self.eco {
            let _ = write!(s, " | eco {}", c.explain());
        }
        if !self.running {
            s.push_str(" | stopped");
        }
        s
    }
}

fn limiter_words(l: Limiter) -> &'static str {
    match l {
        Limiter::None => "nothing",
        Limiter::Freq => "cpu frequency",
        Limiter::Threads => "threads",
        Limiter::PaceTraining => "pace training",
        Limiter::PauseTraining => "pause training",
        Limiter::PaceGeneration => "pace generation",
        Limiter::Fan => "fan",
        Limiter::FailSafe => "coolest mode",
    }
}
