//! The adaptive, model-predictive governor ("ours"): a pure state machine that turns one
//! [`Observation`] per control period into a [`Decision`].
//!
//! Each tick it (1) judges the reading (fresh, not new, stale, implausible, stuck), (2) updates
//! the online thermal model and the Kalman estimate of temperature and disturbance (see
//! [`super::estimator`]), (3) computes a power budget by predictive functional control, a
//! one-move model-predictive controller: the largest constant power whose predicted temperature
//! meets a reference trajectory towards `setpoint − margin` at the coincidence horizon, the
//! margin growing with the estimate's uncertainty, and (4) allocates the budget to actuators
//! (see [`super::allocate`]). The disturbance state makes it offset-free after ambient changes
//! and on boards it has never seen; the budget is a cap on power, so work that starts between
//! two ticks cannot overshoot the prediction.
//!
//! Fail-safe: an implausible or stuck reading, no fresh reading for two periods, or a
//! temperature at the hard ceiling selects the coolest mode at once, with a reason; without a
//! fresh reading no limit is ever raised. Kernel trip points are never touched (this module
//! has no I/O at all).

use std::time::Duration;

use super::Controller;
use super::allocate::{Efficiency, Setting, allocate, efficient};
use super::config::{ConfigError, GovernorConfig, validate_setpoint};
use super::eco_setpoint::{SetpointChoice, Work, choose, score};
use super::estimator::{Identifier, NoiseEstimator, Observer, Rls, ThermalModel};
use super::types::{
    Decision, Demand, Health, Limiter, Mode, Observation, Pace, Priority, TempReading,
};

/// Seconds to the coincidence point of the predictive controller.
const HORIZON_S: f64 = 1.0;
/// Time constant in seconds of the reference trajectory towards the target.
const REFERENCE_TAU_S: f64 = 2.0;
/// Estimate uncertainty (K) that doubles the horizon and the reference time.
const NOISE_SLOWDOWN_C: f64 = 0.1;
/// Standard deviations of estimate uncertainty added to the margin.
const K_SIGMA: f64 = 2.5;
/// Extra back-off in K at the start of regulation, fading out over [`LEARNING_S`].
const LEARNING_MARGIN_C: f64 = 0.4;
/// Seconds of regulation over which the extra back-off fades out.
const LEARNING_S: f64 = 60.0;
/// Identical readings after which the model stops learning from them.
const FROZEN_AFTER_READINGS: u32 = 8;
/// Consecutive fresh readings needed to leave the fail-safe mode.
const RECOVERY_READINGS: u32 = 2;
/// How long the budget must stay ample before the fan goes back to the firmware's curve.
const FAN_RELEASE_AFTER: Duration = Duration::from_secs(15);
/// Length in seconds of the windows over which the eco setpoint averages temperature and
/// power to re-estimate the die temperature at no dynamic power.
const ECO_WINDOW_S: f64 = 60.0;
/// Two consecutive windows count as a thermal steady state when their mean temperatures
/// differ by at most this many kelvin...
const ECO_STEADY_C: f64 = 0.5;
/// ...and their mean dynamic powers by at most this share of the flat-out dynamic power.
const ECO_STEADY_POWER: f64 = 0.05;
/// A new choice replaces the setpoint in force only when it is cheaper by this share.
const ECO_HYSTERESIS: f64 = 0.005;
/// The eco setpoint leaves the fixed setpoint only for a predicted saving of at least this
/// share: smaller differences are within what the steady-state model can tell apart.
const ECO_MIN_GAIN: f64 = 0.05;
/// Largest fall of the setpoint per choice, K: the die follows without overshooting and
/// generation is not throttled all at once.
const ECO_MAX_FALL_C: f64 = 1.0;
/// Largest rise of the setpoint per choice, K (a rise cannot overshoot).
const ECO_MAX_RISE_C: f64 = 4.0;
/// Time constant in seconds of the eco setpoint's flat-out token rate.
const ECO_RATE_TAU_S: f64 = 10.0;
/// A class counts as having work when its smoothed occupancy is above this share.
const ECO_ACTIVE_SHARE: f32 = 0.05;
/// Time constant in seconds of the demand the eco setpoint weighs.
const ECO_DEMAND_TAU_S: f64 = 300.0;

/// Time constant in seconds of what energy-aware pacing learns of the work (backlog share and
/// work rate): longer than a chat, so the gaps between chats count.
const PACE_TAU_S: f64 = 600.0;
/// Generation counts as time-bound (it never runs dry) when it was backlogged for at least
/// this share of the time.
const PACE_TIME_BOUND_SHARE: f64 = 0.9;
/// Work-bound generation is never slowed so far that the pool would be busy more than this
/// share of the time: queues before a first token grow fast beyond it.
const PACE_MAX_UTILISATION: f64 = 0.75;
/// Default bound of energy-aware pacing: tokens at most this many times slower than flat out.
const PACE_MAX_SLOWDOWN: f64 = 1.5;

/// What energy-aware pacing has learnt of the work.
#[derive(Clone, Debug, Default)]
struct PaceState {
    /// Smoothed share of periods in which the leading class was backlogged.
    backlog: Option<f64>,
    /// Smoothed work done per second, relative to flat out.
    work: Option<f64>,
    /// Flat-out token rate, tokens/s (0: not seen yet).
    tokens_per_s_max: f64,
    /// The pacing in force this period, for the reason.
    chosen: Option<(Efficiency, f32)>,
}

/// What the eco setpoint has learnt between choices.
#[derive(Clone, Debug, Default)]
struct EcoState {
    /// Die temperature at no dynamic power, °C: from the first reading (the board idle), then
    /// from each pair of windows in thermal steady state. Mid-transient readings would bias it
    /// (a heatsink still warming up makes the die look cooler than its power implies).
    base_c: Option<f64>,
    /// The current window: seconds, Σ temperature·dt, Σ dynamic power·dt.
    window: (f64, f64, f64),
    /// Mean temperature and dynamic power of the previous window.
    last_window: Option<(f64, f64)>,
    /// Smoothed demand per class.
    demand: Option<[f32; 3]>,
    /// Time of the next choice in s.
    next_at_s: f64,
    /// The last choice.
    choice: Option<SetpointChoice>,
}

/// What the governor currently believes about the board, for status and telemetry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Estimated governing temperature in °C.
    pub temperature_c: f64,
    /// Standard deviation of that estimate in K.
    pub temperature_std_c: f64,
    /// Identified time constant of the fast thermal response in s.
    pub tau_s: f64,
    /// Identified steady-state gain of the fast response in K per W.
    pub gain_k_per_w: f64,
    /// Estimated sensor noise standard deviation in K.
    pub noise_std_c: f64,
}

#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Fresh(f64),
    NotNew(&'static str),
    Fault(String),
}

/// The adaptive governor. Construct with [`Governor::new`] and call
/// [`Controller::decide`] once per control period.
#[derive(Clone, Debug)]
pub struct Governor {
    cfg: GovernorConfig,
    h_s: f64,
    id: Identifier,
    obs: Observer,
    noise: NoiseEstimator,
    /// Measured power ≈ c0 + s · model dynamic power.
    power_cal: Rls<2>,
    last_now: Option<Duration>,
    last_sample_at: Option<Duration>,
    last_raw: Option<f32>,
    stuck_run: u32,
    /// Temperature change the model attributes to power changes since the current reading
    /// first appeared, and the power at that moment.
    stuck_pred: Option<(f64, f64)>,
    /// Largest magnitude that change reached during the current run of identical readings, K.
    stuck_dev: f64,
    /// Smallest change seen between consecutive readings: the sensor's resolution, in K.
    resolution_c: f64,
    /// Power of the period before the current one, in W.
    prev_u_w: f64,
    /// The model when the current reading first appeared.
    stuck_model: ThermalModel,
    failsafe: Option<String>,
    recovery: u32,
    prev: Decision,
    prev_setting: Option<Setting>,
    fan_boost: bool,
    fan_changed_at: Duration,
    dither_acc: f32,
    regulating_s: f64,
    /// The configured setpoint: where the eco setpoint starts and what it is compared with.
    fixed_setpoint_c: f32,
    /// Model dynamic power of the last period, W.
    last_dyn_w: f64,
    /// Pool utilisation of the last period, 0 to 1.
    last_util: f64,
    eco: EcoState,
    pace: PaceState,
}

impl Governor {
    /// A governor for `cfg`, starting in the coolest mode until its first fresh reading.
    pub fn new(cfg: GovernorConfig) -> Self {
        let h_s = cfg.period.as_secs_f64();
        let platform = &cfg.platform;
        let max_w = f64::from(platform.max_power_w());
        let idle_w = f64::from(platform.idle_w());
        // Prior for an unseen board: a 15 s die time constant (the built-in profiles span
        // 8-32 s), and full load taking the die from 25 °C to the firmware throttle point.
        let gain0 = (f64::from(cfg.firmware_throttle_c) - 25.0).max(10.0) / max_w.max(0.1);
        let prior = ThermalModel::from_physical(15.0, gain0, h_s);
        let mut g = Self {
            id: Identifier::new(prior, h_s),
            obs: Observer::new(0.03, 0.2),
            noise: NoiseEstimator::new(1.0, 0.0004),
            power_cal: Rls::new([idle_w, 1.0], [1.0, 0.1], 0.99, 10.0),
            h_s,
            last_now: None,
            last_sample_at: None,
            last_raw: None,
            stuck_run: 0,
            stuck_pred: None,
            stuck_dev: 0.0,
            resolution_c: f64::INFINITY,
            prev_u_w: 0.0,
            stuck_model: prior,
            failsafe: Some("no reading yet".to_string()),
            recovery: 0,
            prev: Decision {
                freq_cap_khz: None,
                threads: 1,
                pacing: [Pace::PAUSED; 3],
                fan_level: None,
                mode: Mode::FailSafe,
                limiter: Limiter::FailSafe,
                reason: String::new(),
                power_budget_w: 0.0,
            },
            prev_setting: None,
            fan_boost: true,
            fan_changed_at: Duration::ZERO,
            dither_acc: 0.0,
            regulating_s: 0.0,
            fixed_setpoint_c: cfg.setpoint_c,
            last_dyn_w: 0.0,
            last_util: 0.0,
            eco: EcoState::default(),
            pace: PaceState {
                tokens_per_s_max: cfg.auto.map_or(0.0, |a| a.weights.tokens_per_s_max),
                ..PaceState::default()
            },
            cfg,
        };
        g.prev = g.coolest("no reading yet".to_string(), 0.0);
        g
    }

    /// The configuration in force.
    pub fn config(&self) -> &GovernorConfig {
        &self.cfg
    }

    /// Changes the setpoint at run time; rejects NaN, values at or above the hard ceiling and
    /// values below the plausible range, leaving the old setpoint in force.
    pub fn set_setpoint_c(&mut self, setpoint_c: f32) -> Result<(), ConfigError> {
        validate_setpoint(setpoint_c, self.cfg.ceiling_c, self.cfg.plausible_min_c)?;
        self.cfg.setpoint_c = setpoint_c;
        self.fixed_setpoint_c = setpoint_c;
        Ok(())
    }

    /// The eco setpoint's last choice and what it was weighed against (`None` with a fixed
    /// setpoint, or before the first fresh reading).
    pub fn setpoint_choice(&self) -> Option<&SetpointChoice> {
        self.eco.choice.as_ref()
    }

    /// Seconds the board could run every core flat out at the top operating point, from now,
    /// before its estimated temperature reaches the regulation target (the setpoint less the
    /// margin), by the identified model and the estimated disturbance: the headroom a fleet
    /// dispatcher weighs. Zero at or above the target, `f64::INFINITY` when flat out settles
    /// below it, `None` before the first fresh reading and in the coolest mode.
    pub fn headroom_s(&self) -> Option<f64> {
        if !self.obs.is_ready() || self.failsafe.is_some() {
            return None;
        }
        let p = &self.cfg.platform;
        let flat_out_w = self.calibrated_w(f64::from(p.pool_dyn_w(p.top_level(), p.cores())));
        let m = self.id.model();
        let a = m.a.clamp(1e-9, 1.0 - 1e-9);
        let x = self.obs.temperature();
        let target = f64::from(self.cfg.setpoint_c) - self.margin_c();
        if !(x.is_finite() && target.is_finite()) {
            return None;
        }
        if x >= target {
            return Some(0.0);
        }
        // x_n = steady + (x - steady)·aⁿ under constant power.
        let steady = (m.b * flat_out_w + self.obs.disturbance()) / (1.0 - a);
        if !steady.is_finite() || steady <= target {
            return Some(f64::INFINITY);
        }
        let an = (steady - target) / (steady - x);
        Some(an.ln() / a.ln() * self.h_s)
    }

    /// Learns the flat-out token rate the eco setpoint scores with from the tokens per second
    /// generated while the pool was at least half busy (the rate over the relative speed of
    /// the setting in force times the utilisation), smoothed over about ten seconds.
    pub fn observe_tokens_per_s(&mut self, tokens_per_s: f32) {
        let Some(setting) = self.prev_setting else {
            return;
        };
        let speed = f64::from(self.cfg.platform.speed(setting.level, setting.threads));
        let busy = speed * self.last_util;
        let tps = f64::from(tokens_per_s);
        if !(tps.is_finite() && tps > 0.0 && self.last_util >= 0.5 && busy > 1e-3) {
            return;
        }
        let sample = tps / busy;
        let rate = &mut self.pace.tokens_per_s_max;
        *rate = if *rate > 0.0 {
            let alpha = (self.h_s / ECO_RATE_TAU_S).min(1.0);
            *rate + alpha * (sample - *rate)
        } else {
            sample
        };
        if let Some(auto) = self.cfg.auto.as_mut() {
            auto.weights.tokens_per_s_max = *rate;
        }
    }

    /// Learns how backlogged the leading class is and how much work arrives, for
    /// energy-aware pacing, over `dt_s` seconds.
    fn update_pace(&mut self, o: &Observation, dt_s: f64) {
        if self.cfg.efficient_pacing.is_none() {
            return;
        }
        let lead = self
            .cfg
            .priorities
            .into_iter()
            .find(|&c| o.demand.of(c) > 0.0);
        // Nothing is known of the work before it first shows up.
        if lead.is_none() && self.pace.backlog.is_none() {
            return;
        }
        let backlogged = lead.is_some_and(|c| o.demand.of(c) >= 0.98);
        let speed = self.prev_setting.map_or(1.0, |s| {
            f64::from(self.cfg.platform.speed(s.level, s.threads))
        });
        let occupancy: f64 = Priority::ALL
            .iter()
            .map(|&c| f64::from(o.demand.of(c)))
            .sum::<f64>()
            .min(1.0);
        let beta = (dt_s / PACE_TAU_S).clamp(0.0, 1.0);
        let smooth = |old: Option<f64>, now: f64| Some(old.map_or(now, |v| v + beta * (now - v)));
        self.pace.backlog = smooth(self.pace.backlog, f64::from(u8::from(backlogged)));
        self.pace.work = smooth(self.pace.work, occupancy * speed);
    }

    /// Energy-aware pacing for this period: the lowest relative speed allowed (the latency
    /// bound, and enough to keep up with the work that arrives) and whether the work is
    /// time-bound. `None` when it is off.
    fn efficiency(&self) -> Option<Efficiency> {
        let pacing = self.cfg.efficient_pacing?;
        let by_latency = match pacing.max_itl_ms.filter(|m| m.is_finite() && *m > 0.0) {
            // An absolute bound needs the flat-out rate: flat out until it has been seen.
            Some(ms) if self.pace.tokens_per_s_max > 0.0 => {
                1000.0 / ms / self.pace.tokens_per_s_max
            }
            Some(_) => 1.0,
            None => 1.0 / PACE_MAX_SLOWDOWN,
        };
        let keep_up = self.pace.work.unwrap_or(1.0) / PACE_MAX_UTILISATION;
        Some(Efficiency {
            min_speed: by_latency.max(keep_up).min(1.0) as f32,
            time_bound: self.pace.backlog.unwrap_or(1.0) >= PACE_TIME_BOUND_SHARE,
        })
    }

    /// Learns the die temperature at no dynamic power and the demand, and at each re-check
    /// moves the setpoint to the one with the fewest g CO2e per token; `dt_s` is the time since
    /// the last period.
    fn update_eco(&mut self, o: &Observation, now: Duration, dt_s: f64) {
        let Some(auto) = self.cfg.auto else {
            return;
        };
        let x = self.obs.temperature();
        if !(x.is_finite() && self.last_dyn_w.is_finite()) {
            return;
        }
        let r = auto.steady_k_per_w;
        let base = *self.eco.base_c.get_or_insert(x - r * self.last_dyn_w);
        let w = &mut self.eco.window;
        w.0 += dt_s;
        w.1 += x * dt_s;
        w.2 += self.last_dyn_w * dt_s;
        let mut base = base;
        if w.0 >= ECO_WINDOW_S {
            let (mean_x, mean_p) = (w.1 / w.0, w.2 / w.0);
            self.eco.window = (0.0, 0.0, 0.0);
            let p = &self.cfg.platform;
            let full = f64::from(p.pool_dyn_w(p.top_level(), p.cores()));
            if let Some((lx, lp)) = self.eco.last_window
                && (mean_x - lx).abs() <= ECO_STEADY_C
                && (mean_p - lp).abs() <= ECO_STEADY_POWER * full
            {
                base = mean_x - r * mean_p;
                self.eco.base_c = Some(base);
            }
            self.eco.last_window = Some((mean_x, mean_p));
        }
        let beta = (dt_s / ECO_DEMAND_TAU_S).clamp(0.0, 1.0) as f32;
        let now_demand = Priority::ALL.map(|c| o.demand.of(c));
        let demand = match self.eco.demand {
            Some(d) => std::array::from_fn(|i| d[i] + beta * (now_demand[i] - d[i])),
            None => now_demand,
        };
        self.eco.demand = Some(demand);
        let t = now.as_secs_f64();
        // Per-token figures need the board's token rate: with none given, the setpoint stays
        // where it is until generation has shown it.
        if t < self.eco.next_at_s || auto.weights.tokens_per_s_max <= 0.0 {
            return;
        }
        self.eco.next_at_s = t + auto.recheck_s.max(self.h_s);
        // The setpoint binds when work is waiting: each class that has had work lately is
        // scored as backlogged (a per-token cost that includes the idle gaps between chats
        // would favour whatever setpoint the last gap happened to fall under).
        let busy = demand.map(|d| if d > ECO_ACTIVE_SHARE { 1.0 } else { 0.0 });
        let work = Work {
            demand: Demand { occupancy: busy },
            measured_at: None,
            priorities: self.cfg.priorities,
        };
        let lo = base.max(f64::from(self.cfg.plausible_min_c)) + 1.0;
        let ceiling = f64::from(self.cfg.ceiling_c);
        let fixed = f64::from(self.fixed_setpoint_c);
        let choice = choose(&self.cfg.platform, &auto, base, &work, (lo, ceiling), fixed);
        let (c, reference) = (choice.chosen.g_per_ktok(), choice.reference.g_per_ktok());
        let target = if c < reference * (1.0 - ECO_MIN_GAIN) {
            choice.chosen.setpoint_c
        } else {
            fixed
        };
        // Keep the setpoint in force unless the target is clearly cheaper there, and move
        // towards the target by at most ECO_MAX_FALL_C down or ECO_MAX_RISE_C up per choice.
        let current = f64::from(self.cfg.setpoint_c);
        let held = score(&self.cfg.platform, &auto, base, &work, current);
        let target_score = score(&self.cfg.platform, &auto, base, &work, target);
        let next = if target_score.g_per_ktok() >= held.g_per_ktok() * (1.0 - ECO_HYSTERESIS)
            && (target - current).abs() > 1e-9
            && target != fixed
        {
            current
        } else {
            current + (target - current).clamp(-ECO_MAX_FALL_C, ECO_MAX_RISE_C)
        };
        let next = next.min(ceiling - auto.safety_c);
        let setpoint = next as f32;
        if validate_setpoint(setpoint, self.cfg.ceiling_c, self.cfg.plausible_min_c).is_ok() {
            self.cfg.setpoint_c = setpoint;
            let chosen = score(&self.cfg.platform, &auto, base, &work, next);
            self.eco.choice = Some(SetpointChoice { chosen, ..choice });
        }
    }

    /// Judges one reading. Updates the plausibility bookkeeping (last raw value, stuck run).
    fn judge(&mut self, r: &TempReading, now: Duration, u_w: f64) -> Verdict {
        match r.health {
            Health::Implausible => {
                return Verdict::Fault(format!(
                    "sensor reports an implausible value ({:.1} °C)",
                    r.celsius
                ));
            }
            Health::Stuck => return Verdict::Fault("sensor reports a stuck value".to_string()),
            Health::Missing => return Verdict::NotNew("sensor reading missing"),
            Health::Stale => return Verdict::NotNew("sensor reading not new"),
            Health::Fresh => {}
        }
        let (lo, hi) = (self.cfg.plausible_min_c, self.cfg.plausible_max_c);
        if !r.celsius.is_finite() || r.celsius < lo || r.celsius > hi {
            return Verdict::Fault(format!(
                "implausible reading {:.1} °C (plausible {lo:.0} ..= {hi:.0} °C)",
                r.celsius
            ));
        }
        if self.last_sample_at.is_some_and(|t| r.sampled_at <= t) {
            return Verdict::NotNew("no new sample");
        }
        if now.saturating_sub(r.sampled_at).as_secs_f64() > self.stale_after_s() {
            return Verdict::NotNew("sample too old");
        }
        let y = f64::from(r.celsius);
        if let Some(prev) = self.last_raw {
            let near_prev = (r.celsius - prev).abs() <= self.cfg.max_step_c;
            let near_est = !self.obs.is_ready()
                || (y - self.obs.temperature()).abs() <= f64::from(self.cfg.max_step_c);
            self.last_raw = Some(r.celsius);
            if !near_prev && !near_est {
                self.stuck_run = 0;
                return Verdict::Fault(format!(
                    "implausible jump to {:.1} °C from {prev:.1} °C",
                    r.celsius
                ));
            }
            if r.celsius.to_bits() == prev.to_bits() {
                // How far the power changes since the reading froze should have moved the
                // die, by the model: e[k] = a·e[k-1] + b·(u[k] − u[start]). A sensor that does
                // not move while that reaches several of its steps is stuck; a steady load
                // legitimately holds a coarse sensor still.
                self.stuck_run += 1;
                let (e, u0) = self.stuck_pred.unwrap_or((0.0, u_w));
                let m = self.stuck_model;
                let e = m.a * e + m.b * (u_w - u0);
                self.stuck_pred = Some((e, u0));
                self.stuck_dev = self.stuck_dev.max(e.abs());
                let threshold = (3.0 * self.resolution_c).max(2.0);
                if self.stuck_run >= self.cfg.stuck_periods && self.stuck_dev >= threshold {
                    return Verdict::Fault(format!(
                        "reading stuck at {:.1} °C for {} readings while the power should have moved it {:.1} K",
                        r.celsius, self.stuck_run, self.stuck_dev
                    ));
                }
            } else {
                self.resolution_c = self.resolution_c.min((y - f64::from(prev)).abs());
                self.stuck_run = 0;
                // The new value reflects the power before this period; changes from there on
                // should show up in the next readings, by the model as it stands now.
                self.stuck_pred = Some((0.0, self.prev_u_w));
                self.stuck_model = self.id.model();
                self.stuck_dev = 0.0;
            }
        } else {
            self.last_raw = Some(r.celsius);
        }
        Verdict::Fresh(y)
    }

    fn stale_after_s(&self) -> f64 {
        (f64::from(self.cfg.stale_periods) - 0.5) * self.h_s
    }

    /// Mean power of the period that just ended, in the governor's watts (measured where a
    /// power sensor answers, else the platform model calibrated against past measurements).
    fn period_power_w(&mut self, o: &Observation) -> f64 {
        let p = &self.cfg.platform;
        let level = match o.actuators.freq_khz {
            Some(khz) => p.level_at_or_below(khz),
            None => self.prev_setting.map_or(p.top_level(), |s| s.level),
        };
        let threads = o.actuators.threads.clamp(1, p.cores());
        let util = if o.actuators.utilisation.is_finite() {
            o.actuators.utilisation.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let dyn_model = f64::from(p.pool_dyn_w(level, threads) * util);
        self.last_dyn_w = dyn_model;
        self.last_util = f64::from(util);
        match o.power_w {
            Some(w) if w.is_finite() && w >= 0.0 => {
                let w = f64::from(w);
                self.power_cal.update(&[1.0, dyn_model], w);
                let [c0, s] = self.power_cal.theta();
                let max = f64::from(p.max_power_w()) * 3.0;
                self.power_cal
                    .set_theta([c0.clamp(0.0, max), s.clamp(0.3, 3.0)]);
                w
            }
            _ => self.calibrated_w(dyn_model),
        }
    }

    fn calibrated_w(&self, dyn_model_w: f64) -> f64 {
        let [c0, s] = self.power_cal.theta();
        c0 + s * dyn_model_w
    }

    /// Largest constant power (governor W) whose prediction meets the reference trajectory
    /// at the coincidence horizon.
    fn power_budget_w(&self) -> f64 {
        let m = self.id.model();
        let (a, b) = (m.a, m.b.max(1e-9));
        // A noisy estimate slows the loop down in proportion, so noise does not become power
        // swings: the disturbances it must follow (ambient, heatsink, fan) are slow anyway.
        let slow = 1.0 + self.obs.temperature_std() / NOISE_SLOWDOWN_C;
        let n = (HORIZON_S * slow / self.h_s).round().max(1.0);
        let an = a.powf(n);
        let x = self.obs.temperature();
        let d = self.obs.disturbance();
        let target = f64::from(self.cfg.setpoint_c) - self.margin_c();
        let reference = target - (target - x) * (-n * self.h_s / (REFERENCE_TAU_S * slow)).exp();
        ((reference - an * x) * (1.0 - a) / (1.0 - an).max(1e-12) - d) / b
    }

    /// Back-off below the setpoint: the configured margin, the estimate's uncertainty, and
    /// during the first [`LEARNING_S`] of regulation (the first approach to the setpoint, when
    /// the model has seen the least and a noisy estimate lags a fast heat-up most) up to
    /// [`LEARNING_MARGIN_C`] plus one sensor-noise standard deviation more.
    fn margin_c(&self) -> f64 {
        let learning = (1.0 - self.regulating_s / LEARNING_S).max(0.0);
        let noise = self.noise.variance().sqrt();
        f64::from(self.cfg.margin_c)
            + K_SIGMA * self.obs.temperature_std()
            + (LEARNING_MARGIN_C + noise) * learning
    }

    /// The coolest mode: lowest operating point, one thread, background paused, interactive
    /// at its fail-safe duty, fan at maximum.
    fn coolest(&self, reason: String, budget_w: f64) -> Decision {
        let p = &self.cfg.platform;
        let mut pacing = [Pace::PAUSED; 3];
        pacing[Priority::Interactive.index()] = Pace {
            duty: self.cfg.failsafe_interactive_duty,
        };
        Decision {
            freq_cap_khz: p.freq_writable().then(|| p.khz(0)),
            threads: if p.threads_adjustable() { 1 } else { p.cores() },
            pacing,
            fan_level: p.fan_max_level(),
            mode: Mode::FailSafe,
            limiter: Limiter::FailSafe,
            reason,
            power_budget_w: budget_w as f32,
        }
    }

    /// Fan policy, ahead of every work limit because cooling costs no work: full speed as
    /// soon as the budget comes within 5 % of what full demand would draw, back to the
    /// firmware's own curve once the budget has been 50 % above it, 3 °C under the setpoint,
    /// for [`FAN_RELEASE_AFTER`]. Never below the firmware's curve, so the fan never makes the
    /// board hotter than it would be without the governor.
    fn update_fan(&mut self, budget_w: f64, now: Duration) {
        if self.cfg.platform.fan_max_level().is_none() {
            return;
        }
        let p = &self.cfg.platform;
        let full_w = self.calibrated_w(f64::from(p.pool_dyn_w(p.top_level(), p.cores())));
        let x = self.obs.temperature();
        let relaxed = budget_w > full_w * 1.5 && x < f64::from(self.cfg.setpoint_c) - 3.0;
        if budget_w < full_w * 1.05 {
            self.fan_boost = true;
            self.fan_changed_at = now;
        } else if self.fan_boost && !relaxed {
            self.fan_changed_at = now;
        } else if self.fan_boost && now.saturating_sub(self.fan_changed_at) >= FAN_RELEASE_AFTER {
            self.fan_boost = false;
        }
    }

    /// Lowers nothing and raises nothing beyond the previous decision (no fresh reading).
    fn no_raise(&self, mut d: Decision) -> Decision {
        let prev = &self.prev;
        if let (Some(new), Some(old)) = (d.freq_cap_khz, prev.freq_cap_khz) {
            d.freq_cap_khz = Some(new.min(old));
        }
        d.threads = d.threads.min(prev.threads);
        for (p, old) in d.pacing.iter_mut().zip(prev.pacing) {
            p.duty = p.duty.min(old.duty);
        }
        // The fan only goes back to the firmware's curve on a fresh reading.
        if let Some(old) = prev.fan_level {
            d.fan_level = Some(d.fan_level.map_or(old, |new| new.max(old)));
        }
        d
    }

    fn limiter_of(&self, d: &Decision, demand: &Demand) -> Limiter {
        let p = &self.cfg.platform;
        let order = self.cfg.priorities;
        let active: Vec<Priority> = {
            let a: Vec<Priority> = order.into_iter().filter(|&c| demand.of(c) > 0.0).collect();
            if a.is_empty() { vec![order[0]] } else { a }
        };
        let pace_of = |c: Priority, paused: bool| match (c, paused) {
            (Priority::Interactive, _) => Limiter::PaceGeneration,
            (_, true) => Limiter::PauseTraining,
            (_, false) => Limiter::PaceTraining,
        };
        let lead = active[0];
        let lead_duty = d.pace(lead).duty;
        if lead_duty < 1.0 {
            return pace_of(lead, lead_duty <= 0.0);
        }
        if p.threads_adjustable() && d.threads < p.cores() {
            return Limiter::Threads;
        }
        if d.freq_cap_khz.is_some_and(|k| k < p.khz(p.top_level())) {
            return Limiter::Freq;
        }
        let mut worst = None;
        for &c in &active[1..] {
            let duty = d.pace(c).duty;
            if duty <= 0.0 {
                return pace_of(c, true);
            }
            if duty < 1.0 {
                worst = Some(pace_of(c, false));
            }
        }
        if let Some(l) = worst {
            return l;
        }
        if d.fan_level.is_some_and(|f| f > 0) {
            return Limiter::Fan;
        }
        Limiter::None
    }
    /// Learns from a fresh reading (observer, noise, model identification) and says what
    /// forces the coolest mode, if anything: the hard ceiling reached, a faulty reading, or no
    /// fresh reading for too long.
    fn learn(
        &mut self,
        verdict: &Verdict,
        o: &Observation,
        now: Duration,
        model: ThermalModel,
        u: f64,
    ) -> Option<String> {
        match verdict {
            Verdict::Fresh(y) => {
                let y = *y;
                let consecutive = self.last_sample_at.is_some_and(|t| {
                    (o.temp.sampled_at.saturating_sub(t)).as_secs_f64() < 1.5 * self.h_s
                });
                if !consecutive {
                    self.id.break_sequence();
                    self.noise.break_sequence();
                }
                self.last_sample_at = Some(o.temp.sampled_at);
                let r = self.noise.variance();
                if self.obs.is_ready() {
                    self.noise.observe(y);
                    self.obs.update(y, r);
                    // A reading that has not moved for a while says nothing about dynamics
                    // (and a frozen sensor would teach the model that power does nothing).
                    if self.stuck_run < FROZEN_AFTER_READINGS {
                        self.id.observe(y, u, r);
                        self.obs.rebase(model, self.id.model(), u);
                    }
                } else {
                    self.obs.reset(y, u, model, r);
                    self.id.observe(y, u, r);
                }
                (y >= f64::from(self.cfg.ceiling_c)).then(|| {
                    format!(
                        "at the hard ceiling: {y:.1} °C >= {:.1} °C",
                        self.cfg.ceiling_c
                    )
                })
            }
            Verdict::Fault(reason) => Some(reason.clone()),
            Verdict::NotNew(why) => {
                let age = self
                    .last_sample_at
                    .map(|t| now.saturating_sub(t).as_secs_f64());
                match age {
                    Some(a) if a <= self.stale_after_s() => None,
                    Some(a) => Some(format!("stale: no fresh reading for {a:.2} s ({why})")),
                    None => Some(format!("no fresh reading yet ({why})")),
                }
            }
        }
    }

    /// Splits the power budget (W) into an operating point and per-class pacing, dithering
    /// between two points across periods, and keeps the interactive class at the fail-safe
    /// duty or above.
    fn split_budget(&mut self, o: &Observation, budget: f64) -> (Setting, [Pace; 3]) {
        let p = &self.cfg.platform;
        let [c0, s] = self.power_cal.theta();
        let dyn_budget = ((budget - c0) / s.max(1e-3)) as f32;
        let current_level = match o.actuators.freq_khz {
            Some(khz) => p.level_at_or_below(khz),
            None => p.top_level(),
        };
        let levels = if p.freq_writable() {
            0..=p.top_level()
        } else {
            current_level..=current_level
        };
        let threads = if p.threads_adjustable() {
            1..=p.cores()
        } else {
            p.cores()..=p.cores()
        };
        let paced = self.efficiency().and_then(|e| {
            efficient(
                p,
                dyn_budget,
                &o.demand,
                self.cfg.priorities,
                (levels.clone(), threads.clone()),
                self.prev_setting,
                e,
            )
            .map(|a| (e, a))
        });
        self.pace.chosen = paced.map(|(e, a)| (e, a.throughput.iter().sum()));
        let alloc = match paced {
            Some((_, a)) => a,
            None => allocate(
                p,
                dyn_budget,
                &o.demand,
                self.cfg.priorities,
                levels,
                threads,
                self.prev_setting,
            ),
        };
        let floor = self.cfg.failsafe_interactive_duty;
        let mut pacing = alloc.duty.map(|duty| Pace { duty });
        let mut setting = alloc.setting;
        // Sigma-delta across periods between the two points of a dither.
        match alloc.dither {
            Some(d) => {
                self.dither_acc += d.fraction;
                if self.dither_acc >= 1.0 {
                    self.dither_acc -= 1.0;
                    setting.level = d.upper_level;
                }
            }
            None => self.dither_acc = 0.0,
        }
        let i = Priority::Interactive.index();
        if pacing[i].duty < floor {
            if o.demand.of(Priority::Interactive) > 0.0 {
                // Never cooler than the coolest mode: the bottom of the ladder.
                setting = Setting {
                    level: 0,
                    threads: if p.threads_adjustable() { 1 } else { p.cores() },
                };
                pacing = [Pace::PAUSED; 3];
            }
            // A chat that starts before the next tick gets at least the fail-safe pace.
            pacing[i] = Pace { duty: floor };
        }
        (setting, pacing)
    }

    /// The decision's reason, for humans.
    fn reason(&self, verdict: &Verdict, mode: Mode, limiter: Limiter, budget: f64) -> String {
        let mut why = self.regulation_reason(verdict, mode, limiter, budget);
        if let Some((e, speed)) = self.pace.chosen
            && speed < 0.999
        {
            why = format!(
                "{why}; paced for fewest J/token at {:.0} % of flat out ({}-bound work)",
                speed * 100.0,
                if e.time_bound { "time" } else { "work" }
            );
        }
        match &self.eco.choice {
            Some(c) => format!("eco setpoint {}; {why}", c.explain()),
            None => why,
        }
    }

    fn regulation_reason(
        &self,
        verdict: &Verdict,
        mode: Mode,
        limiter: Limiter,
        budget: f64,
    ) -> String {
        let x = self.obs.temperature();
        match (verdict, mode) {
            (Verdict::NotNew(why), _) => {
                format!("holding limits: {why}; estimate {x:.1} °C")
            }
            (_, Mode::Unlimited) => format!(
                "below setpoint {:.1} °C: estimate {x:.1} °C, budget {budget:.1} W",
                self.cfg.setpoint_c
            ),
            _ => format!(
                "holding {:.1} °C: estimate {x:.1} °C, budget {budget:.1} W, limiting {}",
                self.cfg.setpoint_c, limiter
            ),
        }
    }
}

impl Controller for Governor {
    fn name(&self) -> &'static str {
        "ours"
    }

    fn setpoint_c(&self) -> Option<f32> {
        Some(self.cfg.setpoint_c)
    }

    fn decide(&mut self, o: Observation, now: Duration) -> Decision {
        let ratio = match self.last_now {
            Some(t) => (now.saturating_sub(t).as_secs_f64() / self.h_s).clamp(0.05, 40.0),
            None => 1.0,
        };
        self.last_now = Some(now);
        let u = self.period_power_w(&o);
        let model = self.id.model();
        self.obs.predict(model, u, ratio);
        let verdict = self.judge(&o.temp, now, u);
        self.prev_u_w = u;
        let fresh = matches!(verdict, Verdict::Fresh(_));
        let fault = self.learn(&verdict, &o, now, model, u);

        // Fail-safe bookkeeping: enter at once, leave after consecutive fresh readings.
        if let Some(reason) = fault {
            self.failsafe = Some(reason);
            self.recovery = 0;
        } else if self.failsafe.is_some() && fresh {
            self.recovery += 1;
            if self.recovery >= RECOVERY_READINGS {
                self.failsafe = None;
            }
        }

        if fresh && self.failsafe.is_none() && self.obs.is_ready() {
            self.update_eco(&o, now, ratio * self.h_s);
        }
        self.update_pace(&o, ratio * self.h_s);
        let budget = if self.obs.is_ready() {
            self.power_budget_w()
        } else {
            0.0
        };
        if let Some(reason) = &self.failsafe {
            self.fan_boost = true;
            self.fan_changed_at = now;
            let d = self.coolest(format!("coolest mode: {reason}"), budget);
            self.prev = d.clone();
            self.prev_setting = Some(Setting {
                level: 0,
                threads: d.threads,
            });
            return d;
        }

        let (setting, pacing) = self.split_budget(&o, budget);
        if fresh {
            self.update_fan(budget, now);
        }
        let p = &self.cfg.platform;
        let mut d = Decision {
            freq_cap_khz: p.freq_writable().then(|| p.khz(setting.level)),
            threads: setting.threads,
            pacing,
            fan_level: p.fan_max_level().filter(|_| self.fan_boost),
            mode: Mode::Regulating,
            limiter: Limiter::None,
            reason: String::new(),
            power_budget_w: budget as f32,
        };
        if !fresh {
            d = self.no_raise(d);
        }
        d.limiter = self.limiter_of(&d, &o.demand);
        d.mode = match d.limiter {
            Limiter::None | Limiter::Fan => Mode::Unlimited,
            _ => Mode::Regulating,
        };
        if d.mode == Mode::Regulating {
            self.regulating_s += ratio * self.h_s;
        }
        d.reason = self.reason(&verdict, d.mode, d.limiter, budget);
        let p = &self.cfg.platform;
        self.prev_setting = Some(Setting {
            level: d
                .freq_cap_khz
                .map_or(setting.level, |k| p.level_at_or_below(k)),
            threads: d.threads,
        });
        self.prev = d.clone();
        d
    }
}
