//! The eco setpoint: the die temperature at which one token's whole carbon footprint is
//! smallest, chosen from the board model.
//!
//! Holding a cooler die costs throughput: the idle power is spread over fewer tokens, so the
//! operational carbon per token (board power × grid intensity) rises. A hotter die wears
//! faster (Arrhenius), and wear spends the board's embodied carbon sooner: an hour at
//! `AF(T)` times the ageing rate of the wear reference temperature uses `AF(T)` hours of the
//! board's service life. Per token, at a candidate setpoint `T`:
//!
//! ```text
//! g/token(T) = [ P(T) · g_per_J  +  E_per_s · AF(T_die(T), T_ref) ] / tokens_per_s(T)
//! ```
//!
//! where `P(T)` is the board power the allocator would grant at the steady dynamic power that
//! holds `T` (`(T − T0) / R`, with `T0` the die temperature at no dynamic power and `R` the
//! board's steady die-to-ambient resistance per watt of dynamic power), `tokens_per_s(T)` the
//! work that power buys, and `T_die(T)` the die temperature it actually reaches (cooler than
//! `T` when demand, not heat, limits the work). Training steps count as the tokens the same
//! compute would have produced. The candidates run from the lowest setpoint that keeps the
//! inter-token latency under the user's bound to the hard ceiling minus a safety margin, in
//! 0.5 °C steps; the cheapest wins, a tie going to the cooler one.
//!
//! Pure arithmetic: the governor calls [`choose`] with its estimates, the benchmark with the
//! twin's.

use super::allocate::{Setting, allocate};
use super::platform::Platform;
use super::types::{Demand, Priority};

/// Boltzmann constant in eV/K.
pub const BOLTZMANN_EV_PER_K: f64 = 8.617_333e-5;
/// Candidate spacing in °C.
const STEP_C: f64 = 0.5;
/// At most this many candidates are scored (the range is clamped to fit).
const MAX_CANDIDATES: usize = 400;

/// What the carbon of a token is made of, in the footprint's own factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EcoWeights {
    /// Operational carbon per joule of board energy (g CO2e/J: grid intensity × PUE).
    pub g_co2e_per_j: f64,
    /// The board's embodied carbon amortised per second of service life at the wear reference
    /// temperature (g CO2e/s).
    pub embodied_g_per_s: f64,
    /// The temperature at which the service life is rated (°C).
    pub wear_reference_c: f64,
    /// Activation energy of the Arrhenius wear model (eV).
    pub activation_ev: f64,
    /// Tokens per second with every core at the top frequency (scales relative work to
    /// tokens; per-token figures are only as good as this figure). 0: not known yet (the
    /// governor learns it from generation).
    pub tokens_per_s_max: f64,
}

/// The automatic setpoint's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoSetpoint {
    /// The footprint's factors.
    pub weights: EcoWeights,
    /// Steady die temperature rise per watt of dynamic power (K/W), die to ambient.
    pub steady_k_per_w: f64,
    /// Longest acceptable mean inter-token latency in ms while work is waiting; `None`: no
    /// bound.
    pub max_itl_ms: Option<f64>,
    /// Kelvin kept below the hard ceiling.
    pub safety_c: f64,
    /// Seconds between two choices.
    pub recheck_s: f64,
}

impl AutoSetpoint {
    /// Settings with `weights` and the board's steady resistance, no latency bound, 2 K below
    /// the ceiling, re-chosen every 30 s.
    pub fn new(weights: EcoWeights, steady_k_per_w: f64) -> Self {
        Self {
            weights,
            steady_k_per_w,
            max_itl_ms: None,
            safety_c: 2.0,
            recheck_s: 30.0,
        }
    }
}

/// One scored setpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The setpoint in °C.
    pub setpoint_c: f64,
    /// Steady die temperature the work reaches there (°C).
    pub die_c: f64,
    /// Board power in model W.
    pub power_w: f64,
    /// Tokens per second (training counted as tokens of the same compute).
    pub tokens_per_s: f64,
    /// Operational g CO2e per 1000 tokens.
    pub grid_g_per_ktok: f64,
    /// Embodied g CO2e per 1000 tokens that wear uses up.
    pub wear_g_per_ktok: f64,
}

impl Candidate {
    /// Total g CO2e per 1000 tokens.
    pub fn g_per_ktok(&self) -> f64 {
        self.grid_g_per_ktok + self.wear_g_per_ktok
    }
}

/// The choice and what it was weighed against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SetpointChoice {
    /// The cheapest candidate.
    pub chosen: Candidate,
    /// The fixed default setpoint scored the same way.
    pub reference: Candidate,
    /// Estimated die temperature at no dynamic power (°C).
    pub base_c: f64,
}

impl SetpointChoice {
    /// "62.0 °C: 0.31 g/1k tokens (0.27 grid + 0.04 wear) vs 0.35 at 70.0 °C".
    pub fn explain(&self) -> String {
        let c = &self.chosen;
        format!(
            "{:.1} °C: {} g/1k tokens ({} grid + {} wear) vs {} at {:.1} °C",
            c.setpoint_c,
            sig2(c.g_per_ktok()),
            sig2(c.grid_g_per_ktok),
            sig2(c.wear_g_per_ktok),
            sig2(self.reference.g_per_ktok()),
            self.reference.setpoint_c
        )
    }
}

fn sig2(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (1 - mag).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

/// Arrhenius acceleration of ageing at `t_c` relative to `ref_c` (both °C), with activation
/// energy `activation_ev` (JEDEC JEP122: `AF = exp[(Ea/k)(1/T_ref − 1/T)]`, kelvin): 1 at the
/// reference, above 1 when hotter. The one implementation: `eco::wear` and the benchmarks use
/// it too.
pub fn arrhenius(t_c: f64, ref_c: f64, activation_ev: f64) -> f64 {
    let (t, r) = (t_c + 273.15, ref_c + 273.15);
    (activation_ev / BOLTZMANN_EV_PER_K * (1.0 / r - 1.0 / t)).exp()
}

/// The work to weigh: the classes' demand, measured at a setting (`None`: flat out), in
/// priority order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Work {
    /// Occupancy per class.
    pub demand: Demand,
    /// The setting the occupancy was measured at.
    pub measured_at: Option<Setting>,
    /// Classes from highest to lowest priority.
    pub priorities: [Priority; 3],
}

impl Work {
    /// The interactive class always busy, measured flat out.
    pub fn backlogged() -> Self {
        Self {
            demand: Demand::busy(&[Priority::Interactive]),
            measured_at: None,
            priorities: [Priority::Interactive, Priority::Training, Priority::Batch],
        }
    }
}

/// Scores the setpoint `setpoint_c` on `platform` whose die sits at `base_c` with no dynamic
/// power, for `work`.
pub fn score(
    platform: &Platform,
    auto: &AutoSetpoint,
    base_c: f64,
    work: &Work,
    setpoint_c: f64,
) -> Candidate {
    let r = auto.steady_k_per_w.max(1e-6);
    let dyn_budget = ((setpoint_c - base_c) / r).max(0.0);
    let alloc = allocate(
        platform,
        dyn_budget as f32,
        &work.demand,
        work.priorities,
        0..=platform.top_level(),
        1..=platform.cores(),
        work.measured_at,
    );
    let w = &auto.weights;
    let speed: f64 = alloc.throughput.iter().map(|&t| f64::from(t)).sum();
    let tokens_per_s = speed * w.tokens_per_s_max;
    let power_w = f64::from(alloc.power_w);
    let die_c = (base_c + r * (power_w - f64::from(platform.idle_w())).max(0.0)).min(setpoint_c);
    let per_ktok = if tokens_per_s > 0.0 {
        1000.0 / tokens_per_s
    } else {
        f64::INFINITY
    };
    Candidate {
        setpoint_c,
        die_c,
        power_w,
        tokens_per_s,
        grid_g_per_ktok: power_w * w.g_co2e_per_j * per_ktok,
        wear_g_per_ktok: w.embodied_g_per_s
            * arrhenius(die_c, w.wear_reference_c, w.activation_ev)
            * per_ktok,
    }
}

/// The lowest setpoint whose throughput keeps the mean inter-token latency of a backlogged
/// interactive class under the bound, or `lo_c` without a bound.
fn latency_floor(
    platform: &Platform,
    auto: &AutoSetpoint,
    base_c: f64,
    lo_c: f64,
    hi_c: f64,
) -> f64 {
    let Some(max_ms) = auto.max_itl_ms.filter(|m| m.is_finite() && *m > 0.0) else {
        return lo_c;
    };
    let need = 1000.0 / max_ms;
    let busy = Work::backlogged();
    let mut t = lo_c;
    while t < hi_c {
        if score(platform, auto, base_c, &busy, t).tokens_per_s >= need {
            return t;
        }
        t += STEP_C;
    }
    hi_c
}

/// Chooses the setpoint in `lo_c ..= ceiling_c − safety` with the fewest g CO2e per token,
/// and scores `default_c` for comparison. `base_c` is the die temperature the board would
/// settle at with no dynamic power (ambient plus the idle power's rise).
pub fn choose(
    platform: &Platform,
    auto: &AutoSetpoint,
    base_c: f64,
    work: &Work,
    (lo_c, ceiling_c): (f64, f64),
    default_c: f64,
) -> SetpointChoice {
    let hi = (ceiling_c - auto.safety_c.max(0.0)).max(lo_c);
    let lo =
        latency_floor(platform, auto, base_c, lo_c, hi).max(hi - STEP_C * MAX_CANDIDATES as f64);
    let reference = score(platform, auto, base_c, work, default_c);
    let mut best = score(platform, auto, base_c, work, lo);
    let mut t = lo + STEP_C;
    while t <= hi + 1e-9 {
        let c = score(platform, auto, base_c, work, t);
        // Strictly cheaper by a thousandth: a flat stretch keeps the cooler setpoint.
        if c.g_per_ktok() < best.g_per_ktok() * (1.0 - 1e-3) {
            best = c;
        }
        t += STEP_C;
    }
    SetpointChoice {
        chosen: best,
        reference,
        base_c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::config::ConfigError;
    use crate::governor::platform::Opp;

    /// One core, one operating point: work is proportional to duty, dynamic power 4 W flat out,
    /// idle 2 W.
    fn duty_board() -> Result<Platform, ConfigError> {
        Platform::new(
            vec![Opp {
                khz: 1_000_000,
                millivolts: 900,
            }],
            1,
            2.0,
            4.0,
        )
    }

    /// With duty `d` at `R = 10 K/W` over `T0 = 30 °C`: `T = 30 + 40 d`, power `2 + 4 d`,
    /// 10 tok/s flat out. With 1 g/J-equivalent weights chosen so both terms matter,
    /// `g/ktok(T) = 100 · [(2 + 4d) · a + b · AF(T)] / d` for `d = (T − 30) / 40`.
    #[test]
    fn the_optimum_of_a_hand_calculated_board() -> Result<(), ConfigError> {
        let p = duty_board()?;
        let weights = EcoWeights {
            g_co2e_per_j: 1e-4,
            embodied_g_per_s: 1e-4,
            wear_reference_c: 50.0,
            activation_ev: 0.7,
            tokens_per_s_max: 10.0,
        };
        let auto = AutoSetpoint::new(weights, 10.0);
        let busy = Work::backlogged();
        // By hand at 62 °C: d = 0.8, AF(62, 50) = exp(8123.16 · (1/323.15 − 1/335.15)) = 2.4597,
        // g/ktok = 100 · [5.2e-4 + 2.4597e-4] / 0.8 = 0.095746.
        let at62 = score(&p, &auto, 30.0, &busy, 62.0);
        assert!((at62.g_per_ktok() - 0.095_746).abs() < 2e-5, "{at62:?}");
        // The same formula over 40..=70 °C in 0.5 °C steps is lowest at 58 °C (0.094792;
        // 0.094816 at 57.5, 0.094801 at 58.5) and 0.10328 at 70 °C (d = 1). A flat stretch
        // keeps the cooler point, so the choice lands within a thousandth of the minimum.
        let choice = choose(&p, &auto, 30.0, &busy, (40.0, 72.0), 70.0);
        assert!((choice.chosen.setpoint_c - 58.0).abs() <= 1.5, "{choice:?}");
        assert!(
            choice.chosen.g_per_ktok() <= 0.094_792 * 1.001 + 1e-6,
            "{choice:?}"
        );
        assert!(
            (choice.reference.g_per_ktok() - 0.10328).abs() < 2e-5,
            "{choice:?}"
        );
        let text = choice.explain();
        assert!(
            text.contains("g/1k tokens") && text.contains("at 70.0 °C"),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn wear_free_carbon_runs_as_hot_as_allowed() -> Result<(), ConfigError> {
        let p = duty_board()?;
        let w = EcoWeights {
            g_co2e_per_j: 473.0 / 3.6e6,
            embodied_g_per_s: 0.0,
            wear_reference_c: 50.0,
            activation_ev: 0.7,
            tokens_per_s_max: 10.0,
        };
        let auto = AutoSetpoint::new(w, 10.0);
        let busy = Work::backlogged();
        let c = choose(&p, &auto, 30.0, &busy, (40.0, 72.0), 60.0);
        // Ceiling 72 minus the 2 K safety margin, and duty 1 is reached at 70 °C anyway.
        assert!(c.chosen.setpoint_c <= 70.0 + 1e-9, "{c:?}");
        assert!(c.chosen.setpoint_c >= 69.5, "{c:?}");
        Ok(())
    }

    #[test]
    fn a_latency_bound_raises_the_lowest_setpoint() -> Result<(), ConfigError> {
        let p = duty_board()?;
        let w = EcoWeights {
            g_co2e_per_j: 0.0,
            embodied_g_per_s: 1e-3,
            wear_reference_c: 50.0,
            activation_ev: 0.7,
            tokens_per_s_max: 10.0,
        };
        // Only wear counts: AF(T) / d is lowest near 42 °C (3 tok/s), below what the bound
        // allows.
        let mut auto = AutoSetpoint::new(w, 10.0);
        let busy = Work::backlogged();
        let free = choose(&p, &auto, 30.0, &busy, (35.0, 72.0), 60.0);
        assert!((free.chosen.setpoint_c - 42.0).abs() <= 1.0, "{free:?}");
        assert!(free.chosen.tokens_per_s < 5.0);
        // 200 ms per token needs 5 tok/s: d = 0.5, T = 50 °C.
        auto.max_itl_ms = Some(200.0);
        let bound = choose(&p, &auto, 30.0, &busy, (35.0, 72.0), 60.0);
        assert!((bound.chosen.setpoint_c - 50.0).abs() < 0.6, "{bound:?}");
        assert!(bound.chosen.tokens_per_s >= 5.0 - 1e-9);
        Ok(())
    }
}
