//! What the governor knows about the board before it has seen a single reading: the CPU's
//! operating points, which actuators it may use, and two explicit models it plans with.
//!
//! Power model (model watts): `P = P_idle + threads · occupancy · P_core · (f/f_max) · (V/V_max)²`,
//! the classic CMOS `P ~ C·f·V²` per busy core. The thermal response to these watts is
//! identified online, so an error in the absolute scale becomes part of the identified gain.
//!
//! Throughput model: work per second (tokens/s for generation, steps/s for training) is
//! proportional to `(f/f_max) · g(threads) · duty` with Amdahl scaling
//! `g(n) = 1 / ((1 − p) + p/n)`, which is sublinear from two threads on. The benchmark uses the
//! same model to turn the simulated SoC's frequency into tokens.

use super::error::ConfigError;

/// One CPU operating point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opp {
    /// Frequency in kHz (the unit of `scaling_available_frequencies`).
    pub khz: u32,
    /// Core voltage in mV at this frequency.
    pub millivolts: u32,
}

/// The board as the governor plans with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Platform {
    opps: Vec<Opp>,
    cores: u16,
    idle_w: f32,
    core_dyn_w: f32,
    parallel_fraction: f32,
    freq_writable: bool,
    threads_adjustable: bool,
    fan_max_level: Option<u8>,
}

impl Platform {
    /// The platform a simulated SoC profile describes: its DVFS table, cores, idle power and
    /// per-core dynamic power (more cores than `u16` holds count as `u16::MAX`).
    pub fn from_profile(profile: &sensor_drivers::sim::Profile) -> Result<Self, ConfigError> {
        let opps = profile
            .power
            .dvfs
            .iter()
            .map(|op| Opp {
                khz: op.khz,
                millivolts: op.mv,
            })
            .collect();
        Platform::new(
            opps,
            u16::try_from(profile.cores).unwrap_or(u16::MAX),
            (profile.power.idle_mw / 1000.0) as f32,
            (profile.power.core_dynamic_mw / 1000.0) as f32,
        )
    }

    /// A platform with operating points `opps` (any order), `cores` compute cores, idle power
    /// `idle_w` in W and the dynamic power `core_dyn_w` in W of one fully busy core at the top
    /// operating point. Frequency cap and thread count are actuators, there is no fan actuator,
    /// and the parallel fraction is 0.9.
    pub fn new(
        mut opps: Vec<Opp>,
        cores: u16,
        idle_w: f32,
        core_dyn_w: f32,
    ) -> Result<Self, ConfigError> {
        if opps.is_empty() {
            return Err(ConfigError::EmptyOppTable);
        }
        opps.sort_by_key(|o| o.khz);
        if opps.windows(2).any(|w| w[0].khz == w[1].khz) || opps.iter().any(|o| o.khz == 0) {
            return Err(ConfigError::InvalidOppTable);
        }
        if opps.iter().any(|o| o.millivolts == 0) {
            return Err(ConfigError::InvalidOppTable);
        }
        if cores == 0 {
            return Err(ConfigError::NoCores);
        }
        if !(idle_w.is_finite() && idle_w >= 0.0 && core_dyn_w.is_finite() && core_dyn_w > 0.0) {
            return Err(ConfigError::InvalidPowerModel);
        }
        Ok(Self {
            opps,
            cores,
            idle_w,
            core_dyn_w,
            parallel_fraction: 0.9,
            freq_writable: true,
            threads_adjustable: true,
            fan_max_level: None,
        })
    }

    /// Sets the Amdahl parallel fraction `p` in `0..=1` of the throughput model.
    pub fn with_parallel_fraction(mut self, p: f32) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(ConfigError::InvalidPowerModel);
        }
        self.parallel_fraction = p;
        Ok(self)
    }

    /// Whether the cpufreq cap may be written (false: pacing and threads only).
    pub fn with_freq_writable(mut self, writable: bool) -> Self {
        self.freq_writable = writable;
        self
    }

    /// Whether the engine's thread count may be changed.
    pub fn with_threads_adjustable(mut self, adjustable: bool) -> Self {
        self.threads_adjustable = adjustable;
        self
    }

    /// Gives the governor a fan with levels `0..=max_level` (None: the firmware keeps the fan).
    pub fn with_fan(mut self, max_level: Option<u8>) -> Self {
        self.fan_max_level = max_level.filter(|&m| m > 0);
        self
    }

    /// Operating points, ascending by frequency.
    pub fn opps(&self) -> &[Opp] {
        &self.opps
    }

    /// Number of compute cores.
    pub fn cores(&self) -> u16 {
        self.cores
    }

    /// Idle power in W.
    pub fn idle_w(&self) -> f32 {
        self.idle_w
    }

    /// Dynamic power in W of one fully busy core at the top operating point.
    pub fn core_dyn_w(&self) -> f32 {
        self.core_dyn_w
    }

    /// Whether the cpufreq cap is an actuator.
    pub fn freq_writable(&self) -> bool {
        self.freq_writable
    }

    /// Whether the thread count is an actuator.
    pub fn threads_adjustable(&self) -> bool {
        self.threads_adjustable
    }

    /// Highest fan level, where the fan is an actuator.
    pub fn fan_max_level(&self) -> Option<u8> {
        self.fan_max_level
    }

    /// Index of the top operating point.
    pub fn top_level(&self) -> usize {
        self.opps.len() - 1
    }

    /// Frequency in kHz of operating point `level` (clamped to the table).
    pub fn khz(&self, level: usize) -> u32 {
        self.opp(level).khz
    }

    fn opp(&self, level: usize) -> Opp {
        let top = self.opps.len() - 1;
        self.opps[level.min(top)]
    }

    /// Index of the highest operating point at or below `khz` (the lowest one if none is).
    pub fn level_at_or_below(&self, khz: u32) -> usize {
        self.opps.iter().rposition(|o| o.khz <= khz).unwrap_or(0)
    }

    /// Amdahl speed-up of `threads` threads over one (`g(n)`).
    pub fn thread_speedup(&self, threads: u16) -> f32 {
        let n = f32::from(threads.max(1));
        let p = self.parallel_fraction;
        1.0 / ((1.0 - p) + p / n)
    }

    /// Relative throughput in `0..=1` at `level` with `threads` threads and no pacing:
    /// `(f/f_max) · g(threads)/g(cores)`.
    pub fn speed(&self, level: usize, threads: u16) -> f32 {
        let top = self.opp(self.top_level());
        let f = self.opp(level).khz as f32 / top.khz as f32;
        f * self.thread_speedup(threads) / self.thread_speedup(self.cores)
    }

    /// Dynamic power in W of `threads` busy cores at `level` (occupancy 1).
    pub fn pool_dyn_w(&self, level: usize, threads: u16) -> f32 {
        let top = self.opp(self.top_level());
        let o = self.opp(level);
        let f = o.khz as f32 / top.khz as f32;
        let v = o.millivolts as f32 / top.millivolts as f32;
        f32::from(threads) * self.core_dyn_w * f * v * v
    }

    /// Total power in W at `level` with `threads` threads busy for `occupancy` of the time.
    pub fn power_w(&self, level: usize, threads: u16, occupancy: f32) -> f32 {
        self.idle_w + self.pool_dyn_w(level, threads) * occupancy.clamp(0.0, 1.0)
    }

    /// Power in W with every core busy at the top operating point.
    pub fn max_power_w(&self) -> f32 {
        self.power_w(self.top_level(), self.cores, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pi4_like() -> Result<Platform, ConfigError> {
        Platform::new(
            vec![
                Opp {
                    khz: 1_500_000,
                    millivolts: 900,
                },
                Opp {
                    khz: 600_000,
                    millivolts: 800,
                },
                Opp {
                    khz: 1_000_000,
                    millivolts: 850,
                },
            ],
            4,
            2.5,
            0.9,
        )
    }

    #[test]
    fn sorts_operating_points_by_frequency() -> Result<(), ConfigError> {
        let p = pi4_like()?;
        let khz: Vec<u32> = p.opps().iter().map(|o| o.khz).collect();
        assert_eq!(khz, vec![600_000, 1_000_000, 1_500_000]);
        Ok(())
    }

    #[test]
    fn rejects_an_empty_or_duplicated_opp_table() {
        assert_eq!(
            Platform::new(vec![], 4, 1.0, 1.0),
            Err(ConfigError::EmptyOppTable)
        );
        let dup = vec![
            Opp {
                khz: 1,
                millivolts: 1,
            },
            Opp {
                khz: 1,
                millivolts: 2,
            },
        ];
        assert_eq!(
            Platform::new(dup, 4, 1.0, 1.0),
            Err(ConfigError::InvalidOppTable)
        );
    }

    #[test]
    fn power_scales_with_frequency_and_voltage_squared() -> Result<(), ConfigError> {
        let p = pi4_like()?;
        // Top point, 4 cores: 4 * 0.9 W.
        assert!((p.pool_dyn_w(2, 4) - 3.6).abs() < 1e-5);
        // 600 MHz at 800 mV: 0.4 * (8/9)^2 of the top per core.
        let expected = 0.9 * 0.4 * (800.0f32 / 900.0).powi(2);
        assert!((p.pool_dyn_w(0, 1) - expected).abs() < 1e-5);
        assert!((p.power_w(2, 4, 0.5) - (2.5 + 1.8)).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn thread_scaling_is_sublinear_from_two_threads() -> Result<(), ConfigError> {
        let p = pi4_like()?;
        let g2 = p.thread_speedup(2);
        assert!(g2 > 1.5 && g2 < 2.0, "g(2) = {g2}");
        assert!((p.speed(2, 4) - 1.0).abs() < 1e-6);
        assert!(p.speed(2, 3) < 1.0 && p.speed(2, 3) > 0.75);
        Ok(())
    }

    #[test]
    fn finds_the_operating_point_at_or_below_a_frequency() -> Result<(), ConfigError> {
        let p = pi4_like()?;
        assert_eq!(p.level_at_or_below(1_200_000), 1);
        assert_eq!(p.level_at_or_below(100), 0);
        assert_eq!(p.level_at_or_below(9_000_000), 2);
        Ok(())
    }
}
