//! Per-run metrics of the governor benchmark, accumulated sample by sample: throughput,
//! temperatures against the setpoint, firmware throttle events, inter-token latency
//! percentiles, energy per token and Arrhenius wear relative to running at the setpoint, and
//! the carbon of a token: operational (board energy × grid intensity) and embodied (the
//! board's embodied carbon that wear at the die's temperature spends), per 1000 tokens, a
//! training step counting as the tokens the same compute would have produced.

use crate::eco::factors::DEFAULT_ACTIVATION_EV as ACTIVATION_EV;
use crate::eco::wear::arrhenius_factor;
use crate::governor::EcoWeights;

/// The `q` quantile (0..=1) of `sorted` by nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Accumulates one run.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    setpoint_c: f64,
    elapsed_s: f64,
    tokens: u64,
    training_steps: u64,
    energy_j: f64,
    max_c: f64,
    above_s: f64,
    wear_integral: f64,
    throttle_events_seen: u64,
    throttle_events: u32,
    itl_s: Vec<f64>,
    steady_from_s: f64,
    steady_tokens: u64,
    /// The setpoint in force (it moves with the eco setpoint).
    current_setpoint_c: f64,
    overshoot_c: f64,
    setpoint_integral: f64,
    footprint: Option<(EcoWeights, f64)>,
    /// Seconds at the wear reference temperature that age the die as much as the run did.
    wear_ref_s: f64,
}

/// Final figures of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Interactive tokens per second over the whole run.
    pub tokens_per_s: f64,
    /// Tokens per second over the steady part of the run (see [`RunMetrics::new`]).
    pub steady_tokens_per_s: f64,
    /// Training steps per second over the whole run.
    pub training_steps_per_s: f64,
    /// Highest true die temperature in °C.
    pub max_temp_c: f64,
    /// `max(0, max_temp − setpoint)` in K.
    pub overshoot_c: f64,
    /// Time the true die temperature spent above the setpoint, in s.
    pub seconds_above_setpoint: f64,
    /// Number of times the firmware started throttling.
    pub throttle_events: u32,
    /// Median inter-token latency in ms.
    pub p50_itl_ms: f64,
    /// 99th-percentile inter-token latency in ms.
    pub p99_itl_ms: f64,
    /// Board energy per interactive token in J (NaN without tokens).
    pub energy_per_token_j: f64,
    /// Mean Arrhenius wear factor relative to running at the setpoint the whole time.
    pub wear_vs_setpoint: f64,
    /// Mean setpoint in force over the run, °C.
    pub mean_setpoint_c: f64,
    /// Tokens plus training steps counted as tokens, per second.
    pub work_tokens_per_s: f64,
    /// Operational g CO2e per 1000 work tokens (NaN without footprint factors or work).
    pub grid_g_per_ktok: f64,
    /// Embodied g CO2e per 1000 work tokens that wear spent (NaN likewise).
    pub wear_g_per_ktok: f64,
    /// Hours at the wear reference temperature that aged the die as much as the run.
    pub wear_hours: f64,
}

impl RunSummary {
    /// Total g CO2e per 1000 work tokens.
    pub fn g_per_ktok(&self) -> f64 {
        self.grid_g_per_ktok + self.wear_g_per_ktok
    }
}

impl RunMetrics {
    /// Starts a run held at `setpoint_c`; throughput from `steady_from_s` on is also reported
    /// separately as the steady part.
    pub fn new(setpoint_c: f64, steady_from_s: f64) -> Self {
        Self {
            setpoint_c,
            elapsed_s: 0.0,
            tokens: 0,
            training_steps: 0,
            energy_j: 0.0,
            max_c: f64::NEG_INFINITY,
            above_s: 0.0,
            wear_integral: 0.0,
            throttle_events_seen: 0,
            throttle_events: 0,
            itl_s: Vec::new(),
            steady_from_s,
            steady_tokens: 0,
            current_setpoint_c: setpoint_c,
            overshoot_c: 0.0,
            setpoint_integral: 0.0,
            footprint: None,
            wear_ref_s: 0.0,
        }
    }

    /// Scores the run's carbon with `weights`, a training step counting as `tokens_per_step`
    /// tokens.
    pub fn with_footprint(mut self, weights: EcoWeights, tokens_per_step: f64) -> Self {
        self.footprint = Some((weights, tokens_per_step));
        self
    }

    /// The setpoint in force from now on (the eco setpoint moves it).
    pub fn set_setpoint(&mut self, setpoint_c: f64) {
        if setpoint_c.is_finite() {
            self.current_setpoint_c = setpoint_c;
        }
    }

    /// One simulation step of `dt_s` at true die temperature `die_c` and board power
    /// `power_w`; `throttle_events` is the twin's running count of firmware throttle events.
    pub fn step(&mut self, dt_s: f64, die_c: f64, power_w: f64, throttle_events: u64) {
        self.elapsed_s += dt_s;
        self.energy_j += power_w * dt_s;
        self.max_c = self.max_c.max(die_c);
        let over = die_c - self.current_setpoint_c;
        if over > 0.0 {
            self.above_s += dt_s;
        }
        self.overshoot_c = self.overshoot_c.max(over);
        self.setpoint_integral += self.current_setpoint_c * dt_s;
        self.wear_integral += arrhenius_factor(die_c, self.setpoint_c, ACTIVATION_EV) * dt_s;
        if let Some((w, _)) = &self.footprint {
            self.wear_ref_s += arrhenius_factor(die_c, w.wear_reference_c, w.activation_ev) * dt_s;
        }
        if throttle_events > self.throttle_events_seen {
            let new = throttle_events - self.throttle_events_seen;
            self.throttle_events = self
                .throttle_events
                .saturating_add(u32::try_from(new).unwrap_or(u32::MAX));
            self.throttle_events_seen = throttle_events;
        }
    }

    /// One interactive token completed at `at_s`; `itl_s` is the time since the previous
    /// token of the same request (None for a request's first token).
    pub fn token(&mut self, at_s: f64, itl_s: Option<f64>) {
        self.tokens += 1;
        if at_s >= self.steady_from_s {
            self.steady_tokens += 1;
        }
        if let Some(itl) = itl_s {
            self.itl_s.push(itl);
        }
    }

    /// One training step completed.
    pub fn training_step(&mut self) {
        self.training_steps += 1;
    }

    /// Interactive tokens so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The run's figures.
    pub fn summary(&self) -> RunSummary {
        let mut itl = self.itl_s.clone();
        itl.sort_by(f64::total_cmp);
        let t = self.elapsed_s.max(1e-9);
        let steady_span = (self.elapsed_s - self.steady_from_s).max(1e-9);
        let (work, grid, wear) = match &self.footprint {
            Some((w, per_step)) => {
                let work = self.tokens as f64 + self.training_steps as f64 * per_step;
                let per_ktok = if work > 0.0 { 1000.0 / work } else { f64::NAN };
                (
                    work,
                    self.energy_j * w.g_co2e_per_j * per_ktok,
                    self.wear_ref_s * w.embodied_g_per_s * per_ktok,
                )
            }
            None => (self.tokens as f64, f64::NAN, f64::NAN),
        };
        RunSummary {
            tokens_per_s: self.tokens as f64 / t,
            steady_tokens_per_s: self.steady_tokens as f64 / steady_span,
            training_steps_per_s: self.training_steps as f64 / t,
            max_temp_c: self.max_c,
            overshoot_c: self.overshoot_c.max(0.0),
            seconds_above_setpoint: self.above_s,
            throttle_events: self.throttle_events,
            p50_itl_ms: quantile(&itl, 0.5) * 1e3,
            p99_itl_ms: quantile(&itl, 0.99) * 1e3,
            energy_per_token_j: if self.tokens > 0 {
                self.energy_j / self.tokens as f64
            } else {
                f64::NAN
            },
            wear_vs_setpoint: self.wear_integral / t,
            mean_setpoint_c: self.setpoint_integral / t,
            work_tokens_per_s: work / t,
            grid_g_per_ktok: grid,
            wear_g_per_ktok: wear,
            wear_hours: self.wear_ref_s / 3600.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrhenius_doubles_wear_from_seventy_to_eighty_degrees() {
        // FACTS.md: with 0.7 eV, 70 -> 80 °C is about x1.96.
        let af = arrhenius_factor(80.0, 70.0, 0.7);
        assert!((af - 1.96).abs() < 0.03, "{af}");
        assert!((arrhenius_factor(70.0, 70.0, 0.7) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn counts_the_twins_new_throttle_events() {
        let mut m = RunMetrics::new(70.0, 0.0);
        for total in [0, 1, 1, 1, 2, 2] {
            m.step(1.0, 71.0, 5.0, total);
        }
        let s = m.summary();
        assert_eq!(s.throttle_events, 2);
        assert_eq!(s.seconds_above_setpoint, 6.0);
        assert!((s.overshoot_c - 1.0).abs() < 1e-12);
    }

    #[test]
    fn energy_per_token_divides_board_energy_by_tokens() {
        let mut m = RunMetrics::new(70.0, 5.0);
        for k in 0..10 {
            m.step(1.0, 60.0, 4.0, 0);
            m.token(f64::from(k), (k > 0).then_some(1.0));
        }
        let s = m.summary();
        assert!((s.energy_per_token_j - 4.0).abs() < 1e-12);
        assert!((s.tokens_per_s - 1.0).abs() < 1e-12);
        assert!((s.steady_tokens_per_s - 1.0).abs() < 1e-12);
        assert_eq!(s.p50_itl_ms, 1000.0);
        assert!(s.wear_vs_setpoint < 1.0);
    }

    #[test]
    fn carbon_per_token_splits_into_grid_and_wear() {
        let w = EcoWeights {
            g_co2e_per_j: 1e-4,
            embodied_g_per_s: 1e-3,
            wear_reference_c: 50.0,
            activation_ev: 0.7,
            tokens_per_s_max: 1.0,
        };
        // 100 s at 50 °C and 5 W, 40 tokens and 3 training steps of 20 tokens each.
        let mut m = RunMetrics::new(70.0, 0.0).with_footprint(w, 20.0);
        for k in 0..100 {
            m.step(1.0, 50.0, 5.0, 0);
            if k < 40 {
                m.token(f64::from(k), None);
            }
        }
        for _ in 0..3 {
            m.training_step();
        }
        let s = m.summary();
        // 500 J x 1e-4 g/J = 0.05 g and 100 s x 1e-3 g/s = 0.1 g over 100 work tokens.
        assert!((s.grid_g_per_ktok - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.wear_g_per_ktok - 1.0).abs() < 1e-9, "{s:?}");
        assert!((s.g_per_ktok() - 1.5).abs() < 1e-9);
        assert!((s.work_tokens_per_s - 1.0).abs() < 1e-9);
        assert!((s.wear_hours - 100.0 / 3600.0).abs() < 1e-12);
    }

    #[test]
    fn overshoot_follows_the_setpoint_in_force() {
        let mut m = RunMetrics::new(70.0, 0.0);
        m.step(1.0, 69.0, 5.0, 0);
        m.set_setpoint(65.0);
        m.step(1.0, 65.3, 5.0, 0);
        let s = m.summary();
        assert!((s.overshoot_c - 0.3).abs() < 1e-9, "{s:?}");
        assert!((s.mean_setpoint_c - 67.5).abs() < 1e-9);
        assert_eq!(s.seconds_above_setpoint, 1.0);
    }
}
