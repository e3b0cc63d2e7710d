//! The governor's driver: a handle + driver pair that feeds a pure [`Controller`]
//! once per control period and carries out its decisions. The driver reads the sensors
//! through an [`ObservationSource`], builds the [`Observation`] (temperature, power, actuator
//! read-back, demand and utilisation from the [`Permits`] counters), lets the controller
//! decide, writes the frequency cap and fan through the `sensor_drivers` actuator traits,
//! publishes the pacing through [`Permits::apply`] and updates a [`GovernorStatus`] that the
//! [`GovernorHandle`] reads from any thread.
//!
//! This module spawns nothing (STYLE rule 9): the binary runs [`GovernorDriver::run`] on a
//! thread of its own, or calls [`GovernorDriver::tick`] from its own loop. Every actuator the
//! driver changed is restored when the driver stops or is dropped, so also while a panic
//! unwinds through it; the binary must turn SIGTERM and SIGINT into [`GovernorHandle::stop`]
//! (or its own stop flag) so that the driver returns from `run` and restores. After the driver
//! stops, [`Permits`] keep the pacing last applied: the work must stop before the governor.
//! The driver never touches the kernel's trip points; it writes only the actuators it is given.

/// Why the token loop stops when the governor's control loop has ended under it: a
/// generation never goes on ungoverned.
pub const GOVERNOR_STOPPED: &str = "the governor's control loop stopped";

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sensor_drivers::{Fan, FreqCap};

use super::actuators::Actuators;
use super::permit::{PermitStats, Permits};
use super::source::ObservationSource;
use super::status::GovernorStatus;
use crate::governor::config::validate_setpoint;
use crate::governor::{
    ActuatorState, ConfigError, Controller, Demand, Governor, GovernorConfig, Health, Observation,
    Priority, SetpointChoice,
};

/// Fastest time scale the driver accepts (board seconds per wall second): the simulated
/// board's own bound, which keeps a 10 ms control period at 10 µs of wall time or more.
pub use super::error::RunnerError;
pub use sensor_drivers::sim::MAX_TIME_SCALE;

/// Span over which steps per second (tokens/s) are averaged for the status.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Longest single sleep of [`GovernorDriver::run`], so a stop request is seen promptly even
/// with a long control period.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Shortest wall time between two ticks of [`GovernorDriver::run`], whatever the time scale.
const MIN_WALL_PERIOD: Duration = Duration::from_micros(10);

/// A controller the runner can drive: it decides, exposes the configuration it runs with,
/// and accepts setpoint changes at run time.
pub trait Regulator: Controller + Send {
    /// The configuration in force (setpoint, ceiling, period, platform).
    fn config(&self) -> &GovernorConfig;

    /// Changes the setpoint; a rejected value leaves the old one in force.
    fn set_setpoint_c(&mut self, setpoint_c: f32) -> Result<(), ConfigError>;

    /// The eco setpoint's last choice, when the setpoint is automatic.
    fn setpoint_choice(&self) -> Option<SetpointChoice> {
        None
    }

    /// The tokens per second generated over the last couple of seconds (the eco setpoint
    /// learns the board's flat-out token rate from it).
    fn observe_tokens_per_s(&mut self, _tokens_per_s: f32) {}

    /// Seconds the board could run flat out before reaching its setpoint, by the
    /// controller's own model (see [`Governor::headroom_s`]); `None` when it cannot tell.
    fn headroom_s(&self) -> Option<f64> {
        None
    }
}

impl Regulator for Governor {
    fn config(&self) -> &GovernorConfig {
        Governor::config(self)
    }

    fn set_setpoint_c(&mut self, setpoint_c: f32) -> Result<(), ConfigError> {
        Governor::set_setpoint_c(self, setpoint_c)
    }

    fn setpoint_choice(&self) -> Option<SetpointChoice> {
        Governor::setpoint_choice(self).copied()
    }

    fn observe_tokens_per_s(&mut self, tokens_per_s: f32) {
        Governor::observe_tokens_per_s(self, tokens_per_s);
    }

    fn headroom_s(&self) -> Option<f64> {
        Governor::headroom_s(self)
    }
}

#[derive(Debug)]
struct Shared {
    status: Mutex<GovernorStatus>,
    pending_setpoint_c: Mutex<Option<f32>>,
    stop: AtomicBool,
    ceiling_c: f32,
    plausible_min_c: f32,
}

/// Recovers the data of a lock a panicking thread held: status and pending setpoint are plain
/// values that are never left half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cheap, cloneable handle to a running governor: status, run-time setpoint, stop.
#[derive(Clone, Debug)]
pub struct GovernorHandle {
    shared: Arc<Shared>,
}

impl GovernorHandle {
    /// The status as of the last tick.
    pub fn status(&self) -> GovernorStatus {
        lock(&self.shared.status).clone()
    }

    /// Asks for a new setpoint in °C. It is validated now against the hard ceiling and the
    /// plausible range (same rules as the configuration) and applied at the next tick.
    pub fn set_setpoint_c(&self, setpoint_c: f32) -> Result<(), ConfigError> {
        validate_setpoint(
            setpoint_c,
            self.shared.ceiling_c,
            self.shared.plausible_min_c,
        )?;
        *lock(&self.shared.pending_setpoint_c) = Some(setpoint_c);
        Ok(())
    }

    /// Asks the driver's [`GovernorDriver::run`] loop to return (restoring the actuators).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Whether [`GovernorHandle::stop`] was called.
    pub fn is_stop_requested(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// False once the driver has stopped, returned or died (its status is marked stopped
    /// when it is dropped, also while a panic unwinds through it).
    pub fn is_running(&self) -> bool {
        lock(&self.shared.status).running
    }
}

/// Builder for the handle + driver pair; see [`GovernorRunner::new`].
pub struct GovernorRunner {
    controller: Box<dyn Regulator>,
    permits: Permits,
    source: Box<dyn ObservationSource + Send>,
    freq: Option<Box<dyn FreqCap + Send>>,
    fan: Option<Box<dyn Fan + Send>>,
    time_scale: f64,
}

impl GovernorRunner {
    /// Starts a runner for `controller`, publishing its pacing through `permits` and reading
    /// the board through `source`. Actuators are optional: add them with
    /// [`GovernorRunner::with_freq_cap`] and [`GovernorRunner::with_fan`].
    pub fn new(
        controller: Box<dyn Regulator>,
        permits: Permits,
        source: Box<dyn ObservationSource + Send>,
    ) -> Self {
        Self {
            controller,
            permits,
            source,
            freq: None,
            fan: None,
            time_scale: 1.0,
        }
    }

    /// Board seconds per wall second, for a simulated board that runs time-compressed:
    /// [`GovernorDriver::run`] then ticks every `period / scale` of wall time and passes the
    /// board's time to the controller, so the control period stays one period of board time.
    /// [`GovernorRunner::build`] accepts scales above 0 and at most [`MAX_TIME_SCALE`].
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// The cpufreq cap the governor writes (required when the platform declares a writable
    /// frequency).
    pub fn with_freq_cap(mut self, freq: Box<dyn FreqCap + Send>) -> Self {
        self.freq = Some(freq);
        self
    }

    /// The fan the governor drives (required when the platform declares fan levels; level `l`
    /// of `max` becomes duty `l/max`).
    pub fn with_fan(mut self, fan: Box<dyn Fan + Send>) -> Self {
        self.fan = Some(fan);
        self
    }

    /// Checks that the actuators match what the controller's platform plans with, and builds
    /// the pair. Nothing is read or written yet.
    pub fn build(self) -> Result<(GovernorHandle, GovernorDriver), RunnerError> {
        if !(self.time_scale.is_finite()
            && self.time_scale > 0.0
            && self.time_scale <= MAX_TIME_SCALE)
        {
            return Err(RunnerError::InvalidTimeScale(self.time_scale));
        }
        let cfg = self.controller.config();
        let platform = cfg.platform();
        match (platform.freq_writable(), self.freq.is_some()) {
            (true, false) => return Err(RunnerError::MissingFreqCap),
            (false, true) => return Err(RunnerError::UnusedActuator("frequency cap")),
            _ => {}
        }
        let fan_max_level = match (platform.fan_max_level(), self.fan.is_some()) {
            (Some(max), false) => return Err(RunnerError::MissingFan(max)),
            (None, true) => return Err(RunnerError::UnusedActuator("fan")),
            (max, _) => max.unwrap_or(0),
        };
        let (plausible_min_c, _) = cfg.plausible_range_c();
        let shared = Arc::new(Shared {
            status: Mutex::new(GovernorStatus::initial(
                self.controller.name(),
                cfg.setpoint_c(),
            )),
            pending_setpoint_c: Mutex::new(None),
            stop: AtomicBool::new(false),
            ceiling_c: cfg.ceiling_c(),
            plausible_min_c,
        });
        let period = cfg.period();
        let stats = self.permits.stats();
        let driver = GovernorDriver {
            controller: self.controller,
            permits: self.permits,
            source: self.source,
            actuators: Actuators::new(self.freq, self.fan, fan_max_level),
            shared: Arc::clone(&shared),
            period,
            time_scale: self.time_scale,
            epoch: Instant::now(),
            last_stats: stats,
            window: VecDeque::from([stats]),
            last_fresh_at: None,
            ticks: 0,
            tick_total: Duration::ZERO,
            tick_max: Duration::ZERO,
            last_error: None,
        };
        Ok((GovernorHandle { shared }, driver))
    }
}

/// The part that does the work, one control period at a time. Owns the controller, the
/// sensor source and the actuators; restores the actuators when it stops or is dropped.
pub struct GovernorDriver {
    controller: Box<dyn Regulator>,
    permits: Permits,
    source: Box<dyn ObservationSource + Send>,
    actuators: Actuators,
    shared: Arc<Shared>,
    period: Duration,
    time_scale: f64,
    epoch: Instant,
    last_stats: PermitStats,
    window: VecDeque<PermitStats>,
    last_fresh_at: Option<Duration>,
    ticks: u64,
    tick_total: Duration,
    tick_max: Duration,
    last_error: Option<String>,
}

impl GovernorDriver {
    /// The control period from the controller's configuration.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// One control period at `now` (monotonic time since the runtime's epoch; must not go
    /// backwards between calls): applies a pending setpoint, reads the source, builds the
    /// observation, decides, writes the actuators, publishes the pacing and the status.
    pub fn tick(&mut self, now: Duration) {
        let started = Instant::now();
        let pending = lock(&self.shared.pending_setpoint_c).take();
        if let Some(sp) = pending
            && let Err(e) = self.controller.set_setpoint_c(sp)
        {
            self.record_error(format!("setpoint {sp} °C rejected: {e}"));
        }

        let reading = self.source.observe(now);
        let mut temp = reading.temp;
        if temp.health == Health::Fresh && temp.celsius.is_finite() {
            self.last_fresh_at = Some(temp.sampled_at);
        } else {
            // Not a new sample: it carries the time of the last good one (the epoch if none).
            temp.sampled_at = self.last_fresh_at.unwrap_or(Duration::ZERO);
        }

        let stats = self.permits.stats();
        let demand = Demand {
            occupancy: stats.demand_since(&self.last_stats),
        };
        let utilisation = stats.utilisation_since(&self.last_stats);
        self.last_stats = stats;
        let obs = Observation {
            temp,
            power_w: reading.power_w.filter(|w| w.is_finite()),
            actuators: ActuatorState {
                freq_khz: self.actuators.freq_khz(),
                threads: self.permits.threads(),
                fan_level: self.actuators.fan_level,
                utilisation,
            },
            demand,
        };
        let decision = self.controller.decide(obs, now);
        for e in self.actuators.apply(&decision) {
            self.record_error(e);
        }
        self.permits.apply(&decision);

        let steps_per_s = self.rates(stats);
        let elapsed = started.elapsed();
        self.ticks += 1;
        self.tick_total += elapsed;
        self.tick_max = self.tick_max.max(elapsed);
        let mean = self.tick_total / u32::try_from(self.ticks).unwrap_or(u32::MAX);
        let status = GovernorStatus {
            controller: self.controller.name(),
            ticks: self.ticks,
            at: now,
            temperature_c: Some(reading.temp.celsius).filter(|c| c.is_finite()),
            health: reading.temp.health,
            power_w: obs.power_w,
            setpoint_c: self.controller.config().setpoint_c(),
            mode: decision.mode,
            limiter: decision.limiter,
            reason: decision.reason,
            power_budget_w: decision.power_budget_w,
            freq_cap_khz: self.actuators.freq_khz(),
            threads: self.permits.threads(),
            duties: Priority::ALL.map(|c| self.permits.duty(c)),
            fan_level: self.actuators.fan_level,
            steps_per_s,
            tokens_per_s: (stats.steps[Priority::Interactive.index()] > 0)
                .then_some(steps_per_s[Priority::Interactive.index()]),
            last_error: self.last_error.clone(),
            tick_mean: mean,
            tick_max: self.tick_max,
            running: true,
            eco: self.controller.setpoint_choice(),
            headroom_s: self.controller.headroom_s(),
        };
        if let Some(tps) = status.tokens_per_s {
            self.controller.observe_tokens_per_s(tps);
        }
        *lock(&self.shared.status) = status;
    }

    /// Steps per second per class over the last [`RATE_WINDOW`].
    fn rates(&mut self, stats: PermitStats) -> [f32; 3] {
        self.window.push_back(stats);
        while self.window.len() > 2
            && self
                .window
                .get(1)
                .is_some_and(|s| stats.at.saturating_sub(s.at) >= RATE_WINDOW)
        {
            self.window.pop_front();
        }
        let Some(first) = self.window.front() else {
            return [0.0; 3];
        };
        let span = stats.at.saturating_sub(first.at).as_secs_f64();
        if span <= 0.0 {
            return [0.0; 3];
        }
        std::array::from_fn(|i| {
            (stats.steps[i].saturating_sub(first.steps[i]) as f64 / span) as f32
        })
    }

    fn record_error(&mut self, e: String) {
        if self.last_error.as_ref() != Some(&e) {
            log::warn!("governor: {e}");
        }
        self.last_error = Some(e);
    }

    /// Ticks every control period on the calling thread until `stop` is set or
    /// [`GovernorHandle::stop`] is called, then restores the actuators. Time is measured from
    /// when the pair was built, in board time (wall time × the time scale). A late tick is not
    /// caught up: the next one follows one period after it.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), RunnerError> {
        let stopping =
            |shared: &Shared| stop.load(Ordering::Acquire) || shared.stop.load(Ordering::Acquire);
        let wall_period = scaled(self.period, 1.0 / self.time_scale).max(MIN_WALL_PERIOD);
        let mut next = Instant::now();
        while !stopping(&self.shared) {
            let tick_at = Instant::now();
            let now = scaled(tick_at.duration_since(self.epoch), self.time_scale);
            self.tick(now);
            // On schedule, the next tick is one period after this one was due; after a late
            // tick, one period after it ran.
            next = (next + wall_period).max(tick_at + wall_period);
            while !stopping(&self.shared) {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(STOP_POLL));
            }
        }
        self.shutdown()
    }

    /// Restores every actuator this driver changed and marks the status stopped.
    pub fn shutdown(mut self) -> Result<(), RunnerError> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<(), RunnerError> {
        let result = self.actuators.restore();
        let mut status = lock(&self.shared.status);
        status.running = false;
        status.freq_cap_khz = self.actuators.freq_khz();
        status.fan_level = self.actuators.fan_level;
        if let Err(e) = &result {
            status.last_error = Some(e.to_string());
        }
        result
    }
}

/// `d × factor`, saturating at [`Duration::MAX`] (and zero for a factor that is not a
/// positive number) instead of panicking.
fn scaled(d: Duration, factor: f64) -> Duration {
    match Duration::try_from_secs_f64(d.as_secs_f64() * factor) {
        Ok(d) => d,
        Err(_) if factor > 0.0 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

impl Drop for GovernorDriver {
    /// Restores the actuators (again a no-op after [`GovernorDriver::shutdown`]); also runs
    /// while a panic unwinds through the driver's owner.
    fn drop(&mut self) {
        if let Err(e) = self.stop_now() {
            log::error!("governor: {e}");
        }
    }
}

impl std::fmt::Debug for GovernorDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernorDriver")
            .field("controller", &self.controller.name())
            .field("period", &self.period)
            .field("ticks", &self.ticks)
            .finish()
    }
}

impl std::fmt::Debug for GovernorRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernorRunner")
            .field("controller", &self.controller.name())
            .field("freq_cap", &self.freq.is_some())
            .field("fan", &self.fan.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests;
