//! The kernel's `step_wise` governor with one passive trip at the setpoint bound to the
//! cpufreq cooling device (state 0 = top frequency, state n = n operating points lower).
//!
//! Per the kernel's `get_target_state`: above the trip and rising, one state up; above the
//! trip and falling, one state down but not below the lowest mitigating state; above the trip
//! and stable, unchanged; below the trip and falling, straight back to no mitigation; below the
//! trip otherwise, unchanged. The trend compares the reading with the previous one. Throttling
//! starts at the trip temperature and, with hysteresis, ends below `trip − hysteresis`.

use std::time::Duration;

use super::freq_only;
use crate::governor::Controller;
use crate::governor::platform::Platform;
use crate::governor::types::{Decision, Health, Observation};

/// The `step_wise` baseline.
#[derive(Clone, Debug)]
pub struct StepWise {
    platform: Platform,
    trip_c: f32,
    hysteresis_c: f32,
    state: usize,
    last_c: Option<f32>,
    throttling: bool,
}

impl StepWise {
    /// A governor on `platform` with its passive trip at `trip_c` °C and no hysteresis.
    pub fn new(platform: Platform, trip_c: f32) -> Self {
        Self {
            platform,
            trip_c,
            hysteresis_c: 0.0,
            state: 0,
            last_c: None,
            throttling: false,
        }
    }

    /// Sets the trip's hysteresis in K.
    pub fn with_hysteresis_c(mut self, hysteresis_c: f32) -> Self {
        self.hysteresis_c = hysteresis_c.max(0.0);
        self
    }

    /// Current cooling state (0 = no mitigation).
    pub fn state(&self) -> usize {
        self.state
    }

    fn max_state(&self) -> usize {
        self.platform.top_level()
    }
}

impl Controller for StepWise {
    fn name(&self) -> &'static str {
        "step_wise"
    }

    fn decide(&mut self, obs: Observation, _now: Duration) -> Decision {
        let t = obs.temp.celsius;
        if obs.temp.health == Health::Fresh && t.is_finite() {
            let threshold = if self.throttling {
                self.trip_c - self.hysteresis_c
            } else {
                self.trip_c
            };
            let throttle = t >= threshold;
            self.throttling = throttle;
            let rising = self.last_c.is_some_and(|l| t > l);
            let dropping = self.last_c.is_some_and(|l| t < l);
            let upper = self.max_state();
            let lower = 0usize;
            if self.last_c.is_none() {
                // Not yet initialised: the kernel takes one step when it starts hot.
                if throttle {
                    self.state = (self.state + 1).clamp(lower, upper);
                }
            } else if throttle {
                if rising {
                    self.state = (self.state + 1).clamp(lower, upper);
                } else if dropping {
                    let floor = (lower + 1).min(upper);
                    self.state = self.state.saturating_sub(1).clamp(floor, upper);
                }
            } else if dropping {
                self.state = lower;
            }
            self.last_c = Some(t);
        }
        let level = self.max_state() - self.state;
        freq_only(
            &self.platform,
            Some(level),
            format!(
                "step_wise: cooling state {} of {}",
                self.state,
                self.max_state()
            ),
            f32::NAN,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::config::ConfigError;
    use crate::governor::platform::Opp;
    use crate::governor::types::{ActuatorState, Demand, TempReading};

    fn obs(t: f32, k: u64) -> Observation {
        Observation {
            temp: TempReading::fresh(t, Duration::from_millis(250 * k)),
            power_w: None,
            actuators: ActuatorState {
                freq_khz: None,
                threads: 4,
                fan_level: None,
                utilisation: 1.0,
            },
            demand: Demand::default(),
        }
    }

    fn platform() -> Result<Platform, ConfigError> {
        let opps = (1..=4)
            .map(|i| Opp {
                khz: 500_000 * i,
                millivolts: 800 + 50 * i,
            })
            .collect();
        Platform::new(opps, 4, 2.0, 1.0)
    }

    #[test]
    fn steps_up_while_rising_above_the_trip_and_releases_when_falling_below()
    -> Result<(), ConfigError> {
        let mut g = StepWise::new(platform()?, 70.0);
        let trace = [65.0, 71.0, 72.0, 73.0, 72.5, 72.5, 69.0];
        let states: Vec<usize> = trace
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                g.decide(obs(t, k as u64), Duration::ZERO);
                g.state()
            })
            .collect();
        // 71 rising: 1; 72: 2; 73: 3 (max); 72.5 falling: 2; stable: 2; 69 below and falling: 0.
        assert_eq!(states, vec![0, 1, 2, 3, 2, 2, 0]);
        Ok(())
    }

    #[test]
    fn keeps_one_state_of_mitigation_while_falling_above_the_trip() -> Result<(), ConfigError> {
        let mut g = StepWise::new(platform()?, 70.0);
        for (k, t) in [71.0, 72.0, 71.5, 71.0, 70.5].into_iter().enumerate() {
            g.decide(obs(t, k as u64), Duration::ZERO);
        }
        assert_eq!(g.state(), 1);
        let d = g.decide(obs(70.2, 9), Duration::ZERO);
        assert_eq!(d.freq_cap_khz, Some(1_500_000));
        Ok(())
    }
}
