//! The kernel's `power_allocator` (IPA) governor as `Documentation/driver-api/thermal/
//! power_allocator.rst` and its code describe it, with the CPU cluster as the single actor.
//!
//! Below the switch-on trip `T_on` the PID state is reset and power is not limited. Above it,
//! with `e = T_set − T`: `P = clamp(SP + k_p·e + k_i·Σe + k_d·Δe/Δt, 0, P_max)` where
//! `k_p = k_po` when `e < 0` (over temperature) and `k_pu` otherwise. Default constants from
//! the sustainable power `SP`: `k_pu = 2·SP/(T_set − T_on)`, `k_po = SP/(T_set − T_on)`,
//! `k_i = k_pu/10`, `k_d = 0`. The error is summed only while `e < integral_cutoff` (default 0)
//! and only while `|k_i·Σe|` stays below the maximum power. The budget becomes a cooling state
//! the way `cpufreq_power2state` does: divide by the summed CPU load to get a per-CPU budget and
//! pick the fastest operating point whose per-CPU dynamic power fits. Powers are the dynamic
//! power of the CPUs (the actor), in W; temperatures in °C.

use std::time::Duration;

use super::freq_only;
use crate::governor::Controller;
use crate::governor::platform::Platform;
use crate::governor::types::{Decision, Health, Observation};

/// Tunables of [`PowerAllocator`], named as in the kernel documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerAllocatorParams {
    /// Switch-on trip in °C (the first passive trip).
    pub switch_on_c: f32,
    /// Desired (control) temperature in °C (the last passive trip).
    pub control_c: f32,
    /// Sustainable power in W the zone can dissipate at the control temperature.
    pub sustainable_w: f32,
    /// Proportional gain when over temperature, W/K.
    pub k_po: f32,
    /// Proportional gain when under temperature, W/K.
    pub k_pu: f32,
    /// Integral gain, W/K per sample.
    pub k_i: f32,
    /// Derivative gain, W·s/K.
    pub k_d: f32,
    /// Errors below this (K) are integrated.
    pub integral_cutoff_c: f32,
}

impl PowerAllocatorParams {
    /// The kernel's default constants for `sustainable_w` between `switch_on_c` and
    /// `control_c`.
    pub fn kernel_defaults(switch_on_c: f32, control_c: f32, sustainable_w: f32) -> Self {
        let range = (control_c - switch_on_c).max(1e-3);
        let k_pu = 2.0 * sustainable_w / range;
        Self {
            switch_on_c,
            control_c,
            sustainable_w,
            k_po: sustainable_w / range,
            k_pu,
            k_i: k_pu / 10.0,
            k_d: 0.0,
            integral_cutoff_c: 0.0,
        }
    }
}

/// The IPA baseline.
#[derive(Clone, Debug)]
pub struct PowerAllocator {
    platform: Platform,
    params: PowerAllocatorParams,
    period_s: f32,
    err_integral: f32,
    prev_err: f32,
    level: usize,
    budget_w: f32,
}

impl PowerAllocator {
    /// IPA on `platform` with `params`, polled every `period`.
    pub fn new(platform: Platform, params: PowerAllocatorParams, period: Duration) -> Self {
        let level = platform.top_level();
        Self {
            platform,
            params,
            period_s: period.as_secs_f32().max(1e-3),
            err_integral: 0.0,
            prev_err: 0.0,
            level,
            budget_w: f32::INFINITY,
        }
    }

    /// The tunables in force.
    pub fn params(&self) -> PowerAllocatorParams {
        self.params
    }

    /// Maximum dynamic power of the actor in W (every core busy at the top point).
    fn max_power_w(&self) -> f32 {
        self.platform
            .pool_dyn_w(self.platform.top_level(), self.platform.cores())
    }

    /// The PID step; returns the power budget in W.
    fn pid(&mut self, t_c: f32) -> f32 {
        let p = self.params;
        let max = self.max_power_w();
        let err = p.control_c - t_c;
        let k_p = if err < 0.0 { p.k_po } else { p.k_pu };
        let prop = k_p * err;
        let mut integ = p.k_i * self.err_integral;
        if err < p.integral_cutoff_c {
            let next = integ + p.k_i * err;
            if next.abs() < max {
                integ = next;
                self.err_integral += err;
            }
        }
        let deriv = p.k_d * (err - self.prev_err) / self.period_s;
        self.prev_err = err;
        (p.sustainable_w + prop + integ + deriv).clamp(0.0, max)
    }

    /// `cpufreq_power2state`: the fastest point whose per-CPU power fits the budget divided
    /// by the summed load (in CPUs).
    fn power_to_level(&self, budget_w: f32, load_cpus: f32) -> usize {
        if load_cpus <= 1e-3 {
            return self.platform.top_level();
        }
        let per_cpu = budget_w / load_cpus;
        (0..=self.platform.top_level())
            .rev()
            .find(|&l| self.platform.pool_dyn_w(l, 1) <= per_cpu)
            .unwrap_or(0)
    }
}

impl Controller for PowerAllocator {
    fn name(&self) -> &'static str {
        "ipa"
    }

    fn decide(&mut self, obs: Observation, _now: Duration) -> Decision {
        let t = obs.temp.celsius;
        if obs.temp.health == Health::Fresh && t.is_finite() {
            if t < self.params.switch_on_c {
                self.err_integral = 0.0;
                self.prev_err = 0.0;
                self.level = self.platform.top_level();
                self.budget_w = f32::INFINITY;
            } else {
                let budget = self.pid(t);
                let threads = f32::from(obs.actuators.threads.max(1));
                let util = obs.actuators.utilisation.clamp(0.0, 1.0);
                self.level = self.power_to_level(budget, threads * util);
                self.budget_w = budget;
            }
        }
        freq_only(
            &self.platform,
            Some(self.level),
            format!("ipa: budget {:.2} W", self.budget_w),
            self.budget_w,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::config::ConfigError;
    use crate::governor::platform::Opp;
    use crate::governor::types::{ActuatorState, Demand, TempReading};

    fn platform() -> Result<Platform, ConfigError> {
        let opps = (1..=4)
            .map(|i| Opp {
                khz: 500_000 * i,
                millivolts: 1000,
            })
            .collect();
        // Per-core power at the top point 1 W, so level l costs (l+1)/4 W per core.
        Platform::new(opps, 4, 2.0, 1.0)
    }

    fn obs(t: f32) -> Observation {
        Observation {
            temp: TempReading::fresh(t, Duration::ZERO),
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

    #[test]
    fn kernel_default_gains_follow_the_documented_formulas() {
        let p = PowerAllocatorParams::kernel_defaults(60.0, 70.0, 3.0);
        assert!((p.k_pu - 0.6).abs() < 1e-6);
        assert!((p.k_po - 0.3).abs() < 1e-6);
        assert!((p.k_i - 0.06).abs() < 1e-6);
        assert_eq!(p.k_d, 0.0);
    }

    #[test]
    fn at_the_control_temperature_the_budget_is_the_sustainable_power() -> Result<(), ConfigError> {
        let params = PowerAllocatorParams::kernel_defaults(60.0, 70.0, 2.0);
        let mut g = PowerAllocator::new(platform()?, params, Duration::from_millis(250));
        let d = g.decide(obs(70.0), Duration::ZERO);
        assert!((d.power_budget_w - 2.0).abs() < 1e-5);
        // 2 W over 4 busy CPUs = 0.5 W each: level 1 (1.0 GHz).
        assert_eq!(d.freq_cap_khz, Some(1_000_000));
        Ok(())
    }

    #[test]
    fn integrates_only_over_temperature_with_the_default_cutoff() -> Result<(), ConfigError> {
        let params = PowerAllocatorParams::kernel_defaults(60.0, 70.0, 2.0);
        let mut g = PowerAllocator::new(platform()?, params, Duration::from_millis(250));
        g.decide(obs(65.0), Duration::ZERO);
        assert_eq!(g.err_integral, 0.0);
        g.decide(obs(72.0), Duration::ZERO);
        assert!((g.err_integral + 2.0).abs() < 1e-6);
        // Over temperature: 2 + 0.2 * (-1) + 0.04 * (-2 - 1).
        let d = g.decide(obs(71.0), Duration::ZERO);
        assert!(
            (d.power_budget_w - (2.0 - 0.2 - 0.12)).abs() < 1e-5,
            "{}",
            d.power_budget_w
        );
        // Below switch-on: reset and unlimited.
        let d = g.decide(obs(50.0), Duration::ZERO);
        assert_eq!(g.err_integral, 0.0);
        assert_eq!(d.freq_cap_khz, Some(2_000_000));
        Ok(())
    }
}
