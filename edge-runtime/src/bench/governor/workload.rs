//! The benchmark's workload: scenarios, seeded chat arrivals, and a compute pool that runs
//! interactive tokens and training steps the way [`Permits`](crate::pacing::Permits) paces
//! them, with exact completion times.
//!
//! Throughput model (explicit, shared with the governor's planning model): at effective CPU
//! frequency `f` with `n` threads, a class completes `rate_max · (f/f_max) · g(n)/g(cores)`
//! steps per second of pool time, `g` being Amdahl's speed-up (sublinear from two threads on).
//! The pool runs one step at a time, for the highest-priority class that has work and is not
//! paused; after a step that took `t`, that class waits `t·(1 − duty)/duty` before its next
//! step and lower classes wait with it, exactly as permits yield.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::governor::types::Priority;

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Generation without pause for the whole run.
    Sustained,
    /// Chat requests arriving at random (Poisson, seeded), about half the board's capacity.
    BurstyChat,
    /// Sustained generation; the ambient temperature steps from 25 to 40 °C midway.
    AmbientStep,
    /// Sustained generation; the fan stops midway (no change on fanless boards).
    FanFailure,
    /// Sustained generation read through a sensor with ±1 °C noise and 1 % dropouts.
    NoisySensor,
    /// Bursty chat with a LoRA training job always waiting in the background.
    TrainingChat,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Sustained,
        Scenario::BurstyChat,
        Scenario::AmbientStep,
        Scenario::FanFailure,
        Scenario::NoisySensor,
        Scenario::TrainingChat,
    ];

    /// Name used in tables, CSV and file names.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Sustained => "sustained",
            Scenario::BurstyChat => "bursty_chat",
            Scenario::AmbientStep => "ambient_step",
            Scenario::FanFailure => "fan_failure",
            Scenario::NoisySensor => "noisy_sensor",
            Scenario::TrainingChat => "training_chat",
        }
    }

    /// Parses [`Scenario::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether generation never pauses (requests back to back).
    pub fn sustained_generation(self) -> bool {
        matches!(
            self,
            Scenario::Sustained
                | Scenario::AmbientStep
                | Scenario::FanFailure
                | Scenario::NoisySensor
        )
    }

    /// Whether a training job waits in the background.
    pub fn with_training(self) -> bool {
        self == Scenario::TrainingChat
    }
}

/// Chat request arrivals: exponential gaps, token counts uniform in 32..=256, the mean gap
/// twice the mean request's duration at full speed.
#[derive(Clone, Debug)]
struct Arrivals {
    rng: StdRng,
    mean_gap_s: f64,
    next_at_s: f64,
}

impl Arrivals {
    fn new(seed: u64, full_speed_tok_s: f64) -> Self {
        let mean_tokens = (32.0 + 256.0) / 2.0;
        let mut a = Self {
            rng: StdRng::seed_from_u64(seed),
            mean_gap_s: 2.0 * mean_tokens / full_speed_tok_s.max(1e-6),
            next_at_s: 0.0,
        };
        a.next_at_s = a.gap();
        a
    }

    fn gap(&mut self) -> f64 {
        let u: f64 = self.rng.random_range(1e-9..1.0);
        -u.ln() * self.mean_gap_s
    }

    fn tokens(&mut self) -> u32 {
        self.rng.random_range(32..=256)
    }
}

#[derive(Clone, Debug, Default)]
struct ClassState {
    progress: f64,
    step_busy_s: f64,
    last_busy_s: f64,
    since_end_s: f64,
}

/// What happened in the pool during one slice of time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolTick {
    /// Busy time per class in s.
    pub busy_s: [f64; 3],
    /// Time each class had work (running or waiting), in s.
    pub had_work_s: [f64; 3],
    /// Interactive tokens completed: `(time_s, inter-token latency in s if not the first of its
    /// request)`.
    pub tokens: Vec<(f64, Option<f64>)>,
    /// Training steps completed.
    pub training_steps: u32,
}

/// The simulated compute pool with its work queue.
#[derive(Clone, Debug)]
pub struct Pool {
    scenario: Scenario,
    classes: [ClassState; 3],
    arrivals: Option<Arrivals>,
    queue: VecDeque<u32>,
    /// Tokens left in the running request (`u32::MAX` for sustained generation).
    current: Option<u32>,
    last_token_s: Option<f64>,
}

impl Pool {
    /// A pool for `scenario`; chat arrivals are drawn from `seed`, sized for a board that makes
    /// `full_speed_tok_s` tokens per second flat out.
    pub fn new(scenario: Scenario, seed: u64, full_speed_tok_s: f64) -> Self {
        let sustained = scenario.sustained_generation();
        Self {
            scenario,
            classes: Default::default(),
            arrivals: (!sustained).then(|| Arrivals::new(seed, full_speed_tok_s)),
            queue: VecDeque::new(),
            current: sustained.then_some(u32::MAX),
            last_token_s: None,
        }
    }

    fn has_work(&self, c: Priority) -> bool {
        match c {
            Priority::Interactive => self.current.is_some(),
            Priority::Training => self.scenario.with_training(),
            Priority::Batch => false,
        }
    }

    /// Runs the pool from `t_s` for `dt_s` with class step rates `rate_per_s` (steps per second
    /// of pool time at the current setting), `duty` per class and priority `order`.
    pub fn advance(
        &mut self,
        t_s: f64,
        dt_s: f64,
        rate_per_s: [f64; 3],
        duty: [f32; 3],
        order: [Priority; 3],
    ) -> PoolTick {
        let mut out = PoolTick::default();
        let end = t_s + dt_s;
        let mut now = t_s;
        while now < end - 1e-12 {
            let mut slice_end = end;
            if let Some(a) = &self.arrivals {
                slice_end = slice_end.min(a.next_at_s.max(now));
            }
            let owner = order
                .into_iter()
                .find(|&c| self.has_work(c) && duty[c.index()] > 0.0);
            let mut elapsed = slice_end - now;
            let mut completed = None;
            let mut computing = None;
            if let Some(c) = owner {
                let d = f64::from(duty[c.index()]).clamp(1e-6, 1.0);
                let st = &self.classes[c.index()];
                let gap = st.last_busy_s * (1.0 - d) / d - st.since_end_s;
                let rate = rate_per_s[c.index()];
                if gap > 1e-12 {
                    elapsed = elapsed.min(gap);
                } else if rate > 0.0 {
                    let need = (1.0 - st.progress) / rate;
                    if need <= elapsed {
                        elapsed = need;
                        completed = Some(c);
                    }
                    computing = Some(c);
                    let st = &mut self.classes[c.index()];
                    st.progress += rate * elapsed;
                    st.step_busy_s += elapsed;
                    out.busy_s[c.index()] += elapsed;
                }
            }
            for c in Priority::ALL {
                if self.has_work(c) {
                    out.had_work_s[c.index()] += elapsed;
                }
                if computing != Some(c) {
                    self.classes[c.index()].since_end_s += elapsed;
                }
            }
            now += elapsed;
            if let Some(c) = completed {
                let st = &mut self.classes[c.index()];
                st.last_busy_s = st.step_busy_s;
                st.step_busy_s = 0.0;
                st.progress = 0.0;
                st.since_end_s = 0.0;
                match c {
                    Priority::Interactive => self.finish_token(now, &mut out),
                    Priority::Training => out.training_steps += 1,
                    Priority::Batch => {}
                }
            }
            self.arrive(now);
        }
        out
    }

    fn finish_token(&mut self, now: f64, out: &mut PoolTick) {
        let itl = self.last_token_s.map(|t| now - t);
        out.tokens.push((now, itl));
        self.last_token_s = Some(now);
        if let Some(left) = self.current {
            if left == u32::MAX {
                return;
            }
            if left <= 1 {
                self.current = self.queue.pop_front();
                self.last_token_s = None;
            } else {
                self.current = Some(left - 1);
            }
        }
    }

    fn arrive(&mut self, now: f64) {
        let Some(a) = &mut self.arrivals else {
            return;
        };
        while a.next_at_s <= now + 1e-12 {
            let tokens = a.tokens();
            a.next_at_s += a.gap();
            if self.current.is_none() {
                self.current = Some(tokens);
                self.last_token_s = None;
            } else {
                self.queue.push_back(tokens);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: [Priority; 3] = [Priority::Interactive, Priority::Training, Priority::Batch];

    #[test]
    fn unpaced_sustained_generation_runs_at_the_step_rate() {
        let mut pool = Pool::new(Scenario::Sustained, 1, 10.0);
        let mut tokens = Vec::new();
        let mut t = 0.0;
        for _ in 0..100 {
            let tick = pool.advance(t, 0.05, [10.0, 1.0, 1.0], [1.0; 3], ORDER);
            tokens.extend(tick.tokens);
            t += 0.05;
        }
        assert!((tokens.len() as i64 - 50).abs() <= 1, "{}", tokens.len());
        assert!(
            tokens
                .iter()
                .skip(1)
                .all(|(_, itl)| itl.is_some_and(|i| (i - 0.1).abs() < 1e-9))
        );
    }

    #[test]
    fn half_duty_spreads_tokens_evenly_at_twice_the_interval() {
        let mut pool = Pool::new(Scenario::Sustained, 1, 10.0);
        let mut itl = Vec::new();
        let mut busy = 0.0;
        let mut t = 0.0;
        for _ in 0..200 {
            let tick = pool.advance(t, 0.05, [10.0, 1.0, 1.0], [0.5, 1.0, 1.0], ORDER);
            busy += tick.busy_s[0];
            itl.extend(tick.tokens.into_iter().filter_map(|(_, i)| i));
            t += 0.05;
        }
        assert!(itl.iter().all(|i| (i - 0.2).abs() < 1e-9), "{itl:?}");
        assert!((busy / t - 0.5).abs() < 0.02);
    }

    #[test]
    fn training_runs_only_while_no_request_is_generating() {
        let mut pool = Pool::new(Scenario::TrainingChat, 7, 10.0);
        let mut t = 0.0;
        let mut overlap = 0.0;
        let (mut tokens, mut steps) = (0, 0);
        for _ in 0..20_000 {
            let tick = pool.advance(t, 0.05, [10.0, 0.5, 0.5], [1.0; 3], ORDER);
            if tick.busy_s[0] > 0.0 && tick.busy_s[1] > 0.0 {
                overlap += 1.0;
            }
            tokens += tick.tokens.len();
            steps += tick.training_steps;
            t += 0.05;
        }
        assert!(
            tokens > 1000 && steps > 50,
            "{tokens} tokens, {steps} steps"
        );
        // Only at the boundary slices where a request ends or starts.
        assert!(overlap < 200.0, "{overlap}");
    }

    #[test]
    fn chat_arrivals_are_seeded_and_load_about_half_the_board() {
        let run = |seed| {
            let mut pool = Pool::new(Scenario::BurstyChat, seed, 10.0);
            let mut t = 0.0;
            let mut busy = 0.0;
            for _ in 0..72_000 {
                busy += pool
                    .advance(t, 0.05, [10.0, 0.0, 0.0], [1.0; 3], ORDER)
                    .busy_s[0];
                t += 0.05;
            }
            busy / t
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert!(a > 0.3 && a < 0.7, "load {a}");
    }
}
