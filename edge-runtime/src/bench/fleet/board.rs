//! One board of the fleet: a twin of a simulated profile at its own ambient, our governor
//! deciding once per control period, and the answers it has taken, generated one after the
//! other at the rate the governor's decision allows. Pure simulation: the messages that bring
//! the answers in and carry them out are the runner's business.
//!
//! Token model (as in the governor benchmark): at effective frequency `f` with `n` threads a
//! board makes `rate_max · (f/f_max) · g(n)/g(cores)` tokens per second of busy time, and the
//! interactive pace's duty is the share of time it is busy.

use std::collections::VecDeque;
use std::time::Duration;

use sensor_drivers::sim::Profile;

use crate::bench::governor::metrics::{RunMetrics, RunSummary};
use crate::bench::governor::sim_boards::SimTwinBoard;
use crate::bench::governor::{BenchError, BoardSpec, Load, TRAINING_STEPS_PER_S, Twin, TwinBoard};
use crate::governor::{Controller, Decision, Demand, Governor, GovernorConfig, Priority};

/// A board of the fleet: a built-in profile at an ambient temperature.
#[derive(Clone, Debug, PartialEq)]
pub struct BoardSetup {
    /// Built-in profile name (`rpi4`, `rpi5`, `rpi5-active`, `jetson-orin-nano`).
    pub profile: String,
    /// Ambient temperature in °C.
    pub ambient_c: f64,
}

impl BoardSetup {
    /// Parses `name@ambient`, e.g. `rpi4@40`.
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        let (name, ambient) = s
            .split_once('@')
            .ok_or_else(|| BenchError::Invalid(format!("board {s:?}: expected NAME@AMBIENT_C")))?;
        let ambient_c: f64 = ambient
            .parse()
            .map_err(|_| BenchError::Invalid(format!("board {s:?}: ambient is not a number")))?;
        if !(-20.0..=60.0).contains(&ambient_c) {
            return Err(BenchError::Invalid(format!(
                "board {s:?}: ambient must be -20 to 60 °C"
            )));
        }
        Ok(Self {
            profile: name.to_string(),
            ambient_c,
        })
    }

    /// `name@ambient` as the tables print it.
    pub fn label(&self) -> String {
        format!("{}@{:.0}", self.profile, self.ambient_c)
    }

    /// The twin's board: the built-in profile with its ambient set.
    pub fn twin_board(&self) -> Result<SimTwinBoard, BenchError> {
        let mut profile = Profile::builtin(&self.profile)
            .map_err(|_| BenchError::UnknownBoard(self.profile.clone()))?;
        profile.ambient_mc = (self.ambient_c * 1000.0).round() as i32;
        SimTwinBoard::new(profile)
    }
}

/// An answer a board has taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Request id.
    pub id: u64,
    /// Tokens to generate.
    pub tokens: u32,
    /// When the request reached the front, simulated s.
    pub arrived_s: f64,
    /// Tokens generated so far.
    pub done: u32,
    /// Highest true die temperature while it was generated, °C.
    pub max_die_c: f64,
}

/// A finished answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Request id.
    pub id: u64,
    /// Tokens generated.
    pub tokens: u32,
    /// When the request reached the front, simulated s.
    pub arrived_s: f64,
    /// When its last token was made, simulated s.
    pub finished_s: f64,
    /// Highest true die temperature while it was generated, °C.
    pub max_die_c: f64,
}

/// One simulated board with its governor.
pub struct FleetBoard {
    label: String,
    spec: BoardSpec,
    setpoint_c: f64,
    period_s: f64,
    n_sub: u32,
    twin: Box<dyn Twin>,
    governor: Governor,
    decision: Decision,
    eff_khz: u32,
    utilisation: f32,
    had_work: f32,
    jobs: VecDeque<Job>,
    progress: f64,
    metrics: RunMetrics,
    last_die_c: f64,
}

impl FleetBoard {
    /// A board for `setup` with a governor ticking every `period`, its twin stepped every
    /// `sim_step`, idle at its ambient.
    pub fn new(
        setup: &BoardSetup,
        period: Duration,
        sim_step: Duration,
    ) -> Result<Self, BenchError> {
        let board = setup.twin_board()?;
        let spec = board.spec().clone();
        let cfg = GovernorConfig::builder(
            spec.platform.clone().with_fan(spec.fan_max_level),
            spec.firmware_throttle_c,
        )
        .with_period(period)
        .build()?;
        let setpoint_c = f64::from(cfg.setpoint_c());
        let governor = Governor::new(cfg);
        let decision = governor_start(&spec);
        let period_s = period.as_secs_f64();
        Ok(Self {
            label: setup.label(),
            twin: board.twin((0.0, 0.0), 1)?,
            governor,
            decision,
            eff_khz: spec.platform.khz(spec.platform.top_level()),
            utilisation: 0.0,
            had_work: 0.0,
            jobs: VecDeque::new(),
            progress: 0.0,
            metrics: RunMetrics::new(setpoint_c, 0.0)
                .with_footprint(spec.weights, spec.tokens_per_s_max / TRAINING_STEPS_PER_S),
            last_die_c: f64::NAN,
            n_sub: (period_s / sim_step.as_secs_f64()).round().max(1.0) as u32,
            period_s,
            setpoint_c,
            spec,
        })
    }

    /// `profile@ambient`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The governor's setpoint, °C.
    pub fn setpoint_c(&self) -> f64 {
        self.setpoint_c
    }

    /// True die temperature after the last step, °C.
    pub fn die_c(&self) -> f64 {
        self.last_die_c
    }

    /// Tokens per second flat out.
    pub fn tokens_per_s_max(&self) -> f64 {
        self.spec.tokens_per_s_max
    }

    /// Answers taken and not finished (the one generating included).
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// Tokens still to generate for the answers taken.
    pub fn committed_tokens(&self) -> f64 {
        self.jobs
            .iter()
            .map(|j| f64::from(j.tokens.saturating_sub(j.done)))
            .sum::<f64>()
            - self.progress
    }

    /// Tokens the governor predicts the board can make flat out before it reaches the
    /// setpoint ([`Governor::headroom_s`] times the flat-out token rate); zero before the
    /// governor has a reading.
    pub fn headroom_tokens(&self) -> f64 {
        self.governor
            .headroom_s()
            .map_or(0.0, |s| (s * self.spec.tokens_per_s_max).min(1e9))
    }

    /// Whether the board should be on the shared queue: fewer than `max_in_flight` answers
    /// taken, and headroom for at least `min_tokens` more tokens after those it has taken.
    pub fn wants_work(&self, min_tokens: f64, max_in_flight: usize) -> bool {
        self.jobs.len() < max_in_flight
            && self.headroom_tokens() - self.committed_tokens() >= min_tokens
    }

    /// Takes an answer; it is generated after those already taken.
    pub fn take(&mut self, id: u64, tokens: u32, arrived_s: f64) {
        self.jobs.push_back(Job {
            id,
            tokens: tokens.max(1),
            arrived_s,
            done: 0,
            max_die_c: f64::NEG_INFINITY,
        });
    }

    /// Lets the governor decide at `now_s` from the twin's sensor, as the runtime would.
    pub fn decide(&mut self, now_s: f64) {
        let now = Duration::from_secs_f64(now_s.max(0.0));
        let mut occupancy = [0.0; 3];
        occupancy[Priority::Interactive.index()] = self.had_work;
        let obs = self.twin.observe(
            &self.spec,
            now,
            &self.decision,
            self.eff_khz,
            self.utilisation,
            Demand { occupancy },
        );
        self.decision = self.governor.decide(obs, now);
    }

    /// Advances one control period from `now_s` under the decision in force; returns the
    /// answers finished in it.
    pub fn advance(&mut self, now_s: f64) -> Vec<Finished> {
        let p = &self.spec.platform;
        let top_khz = p.khz(p.top_level());
        let cap = self.decision.freq_cap_khz.unwrap_or(top_khz);
        let threads = self.decision.threads.clamp(1, p.cores());
        let g = f64::from(p.thread_speedup(threads)) / f64::from(p.thread_speedup(p.cores()));
        let duty = f64::from(self.decision.pace(Priority::Interactive).duty).clamp(0.0, 1.0);
        let dt = self.period_s / f64::from(self.n_sub);
        let (mut busy, mut had) = (0.0, 0.0);
        let mut finished = Vec::new();
        for sub in 0..self.n_sub {
            let t = now_s + f64::from(sub) * dt;
            self.eff_khz = self.twin.effective_khz(cap);
            let working = !self.jobs.is_empty();
            let share = if working { duty } else { 0.0 };
            if working {
                had += dt;
                busy += dt * share;
                let rate =
                    self.spec.tokens_per_s_max * f64::from(self.eff_khz) / f64::from(top_khz) * g;
                self.progress += rate * share * dt;
                self.make_tokens(t + dt, &mut finished);
            }
            let s = self.twin.step(
                dt,
                Load {
                    cap_khz: cap,
                    threads,
                    duty: share,
                    fan_level: self.decision.fan_level,
                },
            );
            self.metrics.step(dt, s.die_c, s.power_w, s.throttle_events);
            self.last_die_c = s.die_c;
            if let Some(j) = self.jobs.front_mut() {
                j.max_die_c = j.max_die_c.max(s.die_c);
            }
        }
        self.utilisation = (busy / self.period_s).clamp(0.0, 1.0) as f32;
        self.had_work = (had / self.period_s).clamp(0.0, 1.0) as f32;
        finished
    }

    /// Turns whole units of progress into tokens of the answers in order.
    fn make_tokens(&mut self, at_s: f64, finished: &mut Vec<Finished>) {
        while self.progress >= 1.0 {
            let Some(j) = self.jobs.front_mut() else {
                self.progress = 0.0;
                return;
            };
            self.progress -= 1.0;
            j.done += 1;
            self.metrics.token(at_s, None);
            if j.done >= j.tokens {
                finished.push(Finished {
                    id: j.id,
                    tokens: j.tokens,
                    arrived_s: j.arrived_s,
                    finished_s: at_s,
                    max_die_c: j.max_die_c.max(self.last_die_c),
                });
                self.jobs.pop_front();
            }
        }
        if self.jobs.is_empty() {
            self.progress = 0.0;
        }
    }

    /// The board's figures so far.
    pub fn summary(&self) -> RunSummary {
        self.metrics.summary()
    }
}

/// The decision before the governor's first: every core at the top, nothing paced.
fn governor_start(spec: &BoardSpec) -> Decision {
    use crate::governor::{Limiter, Mode, Pace};
    Decision {
        freq_cap_khz: None,
        threads: spec.platform.cores(),
        pacing: [Pace::FULL; 3],
        fan_level: None,
        mode: Mode::Unlimited,
        limiter: Limiter::None,
        reason: String::new(),
        power_budget_w: f32::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_setups_parse_and_reject_nonsense() {
        let b = BoardSetup::parse("rpi4@40");
        assert_eq!(
            b.as_ref().map(BoardSetup::label).ok(),
            Some("rpi4@40".to_string())
        );
        for bad in ["rpi4", "rpi4@hot", "rpi4@400", "@"] {
            assert!(BoardSetup::parse(bad).is_err(), "{bad}");
        }
        assert!(
            BoardSetup::parse("rpi3@25")
                .and_then(|b| b.twin_board())
                .is_err()
        );
    }

    #[test]
    fn a_busy_passive_board_loses_its_headroom_and_an_idle_one_regains_it() -> Result<(), BenchError>
    {
        let setup = BoardSetup::parse("rpi5@25")?;
        let period = Duration::from_millis(250);
        let mut b = FleetBoard::new(&setup, period, Duration::from_millis(50))?;
        let run = |b: &mut FleetBoard, from: f64, seconds: f64| {
            let mut t = from;
            let mut finished = 0;
            while t < from + seconds {
                b.decide(t);
                finished += b.advance(t).len();
                t += 0.25;
            }
            finished
        };
        run(&mut b, 0.0, 120.0);
        let idle = b.headroom_tokens();
        b.take(1, 2_000, 120.0);
        assert_eq!(run(&mut b, 120.0, 400.0), 0);
        let busy = b.headroom_tokens();
        assert!(!b.wants_work(1.0, 4), "busy headroom {busy} tokens");
        assert_eq!(run(&mut b, 520.0, 1500.0), 1, "the answer finishes");
        let rested = b.headroom_tokens();
        assert!(idle > 32.0, "idle headroom {idle} tokens");
        assert!(busy < idle / 4.0, "busy headroom {busy} vs idle {idle}");
        assert!(
            rested > busy * 4.0,
            "rested headroom {rested} vs busy {busy}"
        );
        let max = b.summary().max_temp_c;
        assert!(max <= b.setpoint_c(), "{max} °C");
        Ok(())
    }
}
