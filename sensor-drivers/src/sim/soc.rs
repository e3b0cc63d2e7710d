//! The simulated SoC: state of the two-node thermal model, the inputs of each step (workload,
//! governor frequency cap, fan override, ambient) and the ground truth the sensors sample
//! (temperatures, power, energy, work done, throttle history). [`SimSoc::step`] is
//! deterministic: the same inputs and step sizes give the same trajectory, bit for bit.

use std::collections::VecDeque;
use std::time::Duration;

use super::model::{
    self, HeatInput, board_to_ambient_k_per_w, dynamic_power_mw, fan_step, fan_step_duty,
    firmware_cap_khz,
};
use super::profile::{Profile, ProfileError};
use crate::error::ActuatorError;
use crate::throttle::ThrottleFlags;
use crate::traits::level_at_or_below;
use crate::units::{KiloHertz, MilliCelsius, MilliWatts, Percent};

/// How busy the CPU is during a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Runnable threads; at most one per core counts.
    pub threads: u32,
    /// Fraction of time each of those threads is busy, 0 to 1.
    pub duty: f64,
}

impl Workload {
    /// Nothing running.
    pub const IDLE: Workload = Workload {
        threads: 0,
        duty: 0.0,
    };

    /// `cores` threads, always busy.
    pub const fn all_cores(cores: u32) -> Workload {
        Workload {
            threads: cores,
            duty: 1.0,
        }
    }

    /// The workload that keeps `busy` cores busy on average.
    pub fn from_busy_cores(busy: f64) -> Workload {
        if !(busy.is_finite() && busy > 0.0) {
            return Workload::IDLE;
        }
        let threads = busy.ceil().min(f64::from(u32::MAX)) as u32;
        Workload {
            threads,
            duty: busy / f64::from(threads),
        }
    }

    /// Busy cores on a CPU with `cores` cores.
    pub fn busy_cores(&self, cores: u32) -> f64 {
        let duty = if self.duty.is_finite() {
            self.duty.clamp(0.0, 1.0)
        } else {
            0.0
        };
        f64::from(self.threads.min(cores)) * duty
    }
}

/// What actually happened inside the twin, for tests and energy accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Simulated time since construction.
    pub time: Duration,
    /// Die temperature (°C).
    pub die_c: f64,
    /// Board / heatsink temperature (°C).
    pub board_c: f64,
    /// Ambient temperature (°C).
    pub ambient_c: f64,
    /// Supply power in the last substep (mW).
    pub power_mw: f64,
    /// Supply energy since construction (J).
    pub energy_j: f64,
    /// Clock the busy cores ran at in the last substep (kHz).
    pub effective_khz: f64,
    /// The firmware's ceiling in the last substep (kHz).
    pub firmware_cap_khz: f64,
    /// The governor's ceiling.
    pub governor_cap: KiloHertz,
    /// Fan duty.
    pub fan_duty: Percent,
    /// Busy cores in the last substep.
    pub busy_cores: f64,
    /// Core-cycles executed by busy cores since construction.
    pub cycles: f64,
    /// Times the die crossed the firmware's soft limit (re-armed by the profile's hysteresis).
    pub throttle_events: u64,
    /// Seconds during which the firmware held the clock below the governor's ceiling.
    pub firmware_limited_s: f64,
    /// Highest die temperature since construction (°C).
    pub peak_die_c: f64,
    /// True once the die reached the critical temperature: the board is off.
    pub shut_down: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) t: f64,
    pub(crate) die_c: f64,
    pub(crate) board_c: f64,
    pub(crate) power_mw: f64,
}

/// Seconds of history kept for sensor latency.
const HISTORY_S: f64 = 60.0;

/// Most simulated seconds one [`SimSoc::step`] call advances the model by.
pub const MAX_STEP_S: f64 = 86_400.0;

/// Most substeps one [`SimSoc::step`] call takes.
pub const MAX_SUBSTEPS: u32 = 10_000_000;

/// A simulated SoC.
#[derive(Debug, Clone)]
pub struct SimSoc {
    profile: Profile,
    max_substep_s: f64,
    time_s: f64,
    die_c: f64,
    board_c: f64,
    ambient_c: f64,
    workload: Workload,
    governor_cap: KiloHertz,
    fan_step: usize,
    fan_override: Option<Percent>,
    fan_duty: f64,
    power_mw: f64,
    effective_khz: f64,
    firmware_cap_khz: f64,
    busy_cores: f64,
    energy_j: f64,
    cycles: f64,
    throttled: bool,
    throttle_events: u64,
    firmware_limited_s: f64,
    peak_die_c: f64,
    shut_down: bool,
    history: VecDeque<Sample>,
}

impl SimSoc {
    /// A twin of `profile`, idle, at its default ambient and in idle steady state.
    pub fn new(profile: Profile) -> Result<SimSoc, ProfileError> {
        profile.validate()?;
        let t = &profile.thermal;
        let r_min = profile
            .fan
            .as_ref()
            .map_or(t.board_to_ambient_k_per_w, |f| {
                f.full_speed_board_to_ambient_k_per_w
            });
        let die_rate = 1.0 / (t.die_capacity_j_per_k * t.die_to_board_k_per_w);
        let board_rate = (1.0 / t.die_to_board_k_per_w + 1.0 / r_min) / t.board_capacity_j_per_k;
        let max_substep_s = (0.25 / die_rate.max(board_rate)).min(0.1);
        let top = profile.max_khz();
        let ambient_c = f64::from(profile.ambient_mc) / 1000.0;
        let mut soc = SimSoc {
            max_substep_s,
            time_s: 0.0,
            die_c: ambient_c,
            board_c: ambient_c,
            ambient_c,
            workload: Workload::IDLE,
            governor_cap: top,
            fan_step: 0,
            fan_override: None,
            fan_duty: 0.0,
            power_mw: profile.power.idle_mw,
            effective_khz: f64::from(top.0),
            firmware_cap_khz: f64::from(top.0),
            busy_cores: 0.0,
            energy_j: 0.0,
            cycles: 0.0,
            throttled: false,
            throttle_events: 0,
            firmware_limited_s: 0.0,
            peak_die_c: ambient_c,
            shut_down: false,
            history: VecDeque::new(),
            profile,
        };
        soc.settle();
        Ok(soc)
    }

    /// The twin of a built-in profile.
    pub fn builtin(name: &str) -> Result<SimSoc, ProfileError> {
        SimSoc::new(Profile::builtin(name)?)
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Puts both nodes at the steady state of the current workload and ambient (fan on its
    /// automatic curve), without advancing time.
    pub fn settle(&mut self) {
        let busy = self.workload.busy_cores(self.profile.cores);
        let khz = f64::from(self.governor_cap.0);
        let heat = self.heat(busy, khz);
        let fan = self.profile.fan.clone();
        let mut step = 0;
        let mut state = (self.ambient_c, self.ambient_c);
        // The fan step depends on the temperature it produces: iterate to a fixed point.
        for _ in 0..=fan.as_ref().map_or(0, |f| f.points.len()) {
            let duty = fan
                .as_ref()
                .map_or(0.0, |f| f64::from(fan_step_duty(f, step)) / 100.0);
            let r = board_to_ambient_k_per_w(&self.profile.thermal, fan.as_ref(), duty);
            state = model::steady_state(&self.profile.thermal, self.ambient_c, heat, r);
            match &fan {
                Some(f) => {
                    let next = fan_step(f, step, state.0 * 1000.0);
                    if next == step {
                        break;
                    }
                    step = next;
                }
                None => break,
            }
        }
        self.die_c = state.0;
        self.board_c = state.1;
        self.fan_step = step;
        self.peak_die_c = self.peak_die_c.max(self.die_c);
        self.history.clear();
        self.record();
    }

    fn heat(&self, busy: f64, khz: f64) -> HeatInput {
        let p = &self.profile.power;
        let idle_w = p.idle_mw / 1000.0;
        let share = self.profile.thermal.die_share_of_idle;
        HeatInput {
            die_w: idle_w * share + dynamic_power_mw(p, busy, khz) / 1000.0,
            board_w: idle_w * (1.0 - share),
        }
    }

    /// Sets the workload for the following steps.
    pub fn set_workload(&mut self, workload: Workload) {
        self.workload = workload;
    }

    /// The workload in force.
    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// Sets the ambient temperature for the following steps.
    pub fn set_ambient(&mut self, ambient: MilliCelsius) {
        self.ambient_c = f64::from(ambient.0) / 1000.0;
    }

    /// Sets the governor's ceiling to the highest DVFS level at or below `cap` (the lowest
    /// level if below all) and returns it.
    pub fn set_governor_cap(&mut self, cap: KiloHertz) -> KiloHertz {
        let levels = self.profile.levels();
        let level = level_at_or_below(&levels, cap).unwrap_or(cap);
        self.governor_cap = level;
        level
    }

    /// The governor's ceiling in force.
    pub fn governor_cap(&self) -> KiloHertz {
        self.governor_cap
    }

    /// Drives the fan at a fixed duty (`Some`) or hands it back to the firmware curve (`None`).
    /// Boards without a fan refuse with [`ActuatorError::Unsupported`].
    pub fn set_fan_override(&mut self, duty: Option<Percent>) -> Result<(), ActuatorError> {
        if self.profile.fan.is_none() {
            return Err(ActuatorError::Unsupported);
        }
        self.fan_override = duty;
        if let Some(duty) = duty {
            self.fan_duty = f64::from(duty.get()) / 100.0;
        }
        Ok(())
    }

    /// The fan duty in force.
    pub fn fan_duty(&self) -> Percent {
        Percent::saturating((self.fan_duty * 100.0).round() as u8)
    }

    /// Advances the model by `dt` in fixed substeps no longer than the model's stability limit.
    /// One call simulates at most [`MAX_STEP_S`] seconds in at most [`MAX_SUBSTEPS`] substeps;
    /// a longer `dt` advances the model by that much only.
    pub fn step(&mut self, dt: Duration) {
        let mut remaining = dt.as_secs_f64().min(MAX_STEP_S);
        let mut substeps = 0;
        while remaining > 1e-12 && substeps < MAX_SUBSTEPS {
            let h = remaining.min(self.max_substep_s);
            self.substep(h);
            remaining -= h;
            substeps += 1;
        }
        self.record();
    }

    fn substep(&mut self, h: f64) {
        let die_mc = self.die_c * 1000.0;
        let top = f64::from(self.profile.max_khz().0);
        let (heat, power_mw, khz, busy, fw_cap) = if self.shut_down {
            (
                HeatInput {
                    die_w: 0.0,
                    board_w: 0.0,
                },
                0.0,
                0.0,
                0.0,
                0.0,
            )
        } else {
            let fw_cap = firmware_cap_khz(&self.profile.firmware, top, die_mc);
            if let Some(fan) = &self.profile.fan {
                match self.fan_override {
                    Some(duty) => self.fan_duty = f64::from(duty.get()) / 100.0,
                    None => {
                        self.fan_step = fan_step(fan, self.fan_step, die_mc);
                        self.fan_duty = f64::from(fan_step_duty(fan, self.fan_step)) / 100.0;
                    }
                }
            }
            let governor = f64::from(self.governor_cap.0);
            let khz = governor.min(fw_cap);
            let busy = self.workload.busy_cores(self.profile.cores);
            let heat = self.heat(busy, khz);
            let p = &self.profile.power;
            let power = p.idle_mw + dynamic_power_mw(p, busy, khz) + p.fan_max_mw * self.fan_duty;
            if fw_cap < governor {
                self.firmware_limited_s += h;
            }
            (heat, power, khz, busy, fw_cap)
        };
        let fan_duty = if self.shut_down { 0.0 } else { self.fan_duty };
        let r =
            board_to_ambient_k_per_w(&self.profile.thermal, self.profile.fan.as_ref(), fan_duty);
        let (d_die, d_board) = model::derivatives(
            &self.profile.thermal,
            self.die_c,
            self.board_c,
            self.ambient_c,
            heat,
            r,
        );
        self.die_c += h * d_die;
        self.board_c += h * d_board;
        self.time_s += h;
        self.energy_j += power_mw / 1000.0 * h;
        self.cycles += busy * khz * 1000.0 * h;
        self.power_mw = power_mw;
        self.effective_khz = khz;
        self.firmware_cap_khz = fw_cap;
        self.busy_cores = busy;
        self.peak_die_c = self.peak_die_c.max(self.die_c);

        let fw = &self.profile.firmware;
        let die_mc = self.die_c * 1000.0;
        if !self.throttled && die_mc >= f64::from(fw.soft_limit_mc) {
            self.throttled = true;
            self.throttle_events += 1;
        } else if self.throttled
            && die_mc < f64::from(fw.soft_limit_mc) - f64::from(fw.rearm_hysteresis_mc)
        {
            self.throttled = false;
        }
        if let Some(critical) = fw.critical_mc
            && die_mc >= f64::from(critical)
        {
            self.shut_down = true;
        }
    }

    fn record(&mut self) {
        self.history.push_back(Sample {
            t: self.time_s,
            die_c: self.die_c,
            board_c: self.board_c,
            power_mw: self.power_mw,
        });
        while self
            .history
            .front()
            .is_some_and(|s| s.t < self.time_s - HISTORY_S)
            && self.history.len() > 1
        {
            self.history.pop_front();
        }
    }

    /// The state recorded at the latest step at or before `t` seconds (the oldest kept if `t`
    /// is older than the history).
    pub(crate) fn sample_at(&self, t: f64) -> Sample {
        let after = self.history.partition_point(|s| s.t <= t);
        let index = after.saturating_sub(1);
        self.history.get(index).copied().unwrap_or(Sample {
            t: self.time_s,
            die_c: self.die_c,
            board_c: self.board_c,
            power_mw: self.power_mw,
        })
    }

    /// Simulated seconds since construction.
    pub fn time_s(&self) -> f64 {
        self.time_s
    }

    /// The die temperature now.
    pub fn die_temp(&self) -> MilliCelsius {
        MilliCelsius((self.die_c * 1000.0).round() as i32)
    }

    /// The board / heatsink temperature now.
    pub fn board_temp(&self) -> MilliCelsius {
        MilliCelsius((self.board_c * 1000.0).round() as i32)
    }

    /// The supply power now.
    pub fn power(&self) -> MilliWatts {
        MilliWatts(self.power_mw.round() as i32)
    }

    /// True once the die reached the critical temperature.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// The firmware's `get_throttled` word as a Raspberry Pi would report it now.
    pub fn throttle_flags(&self) -> ThrottleFlags {
        let fw = &self.profile.firmware;
        let die_mc = self.die_c * 1000.0;
        let soft = die_mc >= f64::from(fw.soft_limit_mc);
        let hard = die_mc >= f64::from(fw.hard_limit_mc);
        ThrottleFlags::from_conditions(false, soft, hard, soft)
    }

    /// Everything the twin knows about itself.
    pub fn truth(&self) -> GroundTruth {
        GroundTruth {
            time: Duration::from_secs_f64(self.time_s.max(0.0)),
            die_c: self.die_c,
            board_c: self.board_c,
            ambient_c: self.ambient_c,
            power_mw: self.power_mw,
            energy_j: self.energy_j,
            effective_khz: self.effective_khz,
            firmware_cap_khz: self.firmware_cap_khz,
            governor_cap: self.governor_cap,
            fan_duty: self.fan_duty(),
            busy_cores: self.busy_cores,
            cycles: self.cycles,
            throttle_events: self.throttle_events,
            firmware_limited_s: self.firmware_limited_s,
            peak_die_c: self.peak_die_c,
            shut_down: self.shut_down,
        }
    }
}
