//! The physical limit as a true upper bound: the most work any controller could do over a run
//! while the die stays at or below a temperature, knowing the whole future (load, ambient,
//! fan), found by Lagrangian duality.
//!
//! The relaxation every real run satisfies:
//! - the twin's two-node heat network, linear in the dynamic power `p_k` held over each step
//!   of [`STEP_S`] (exact for piecewise-constant power; a run's finer changes within a step
//!   shift the die by hundredths of a kelvin, covered by [`SLACK_C`]);
//! - the die at or below `cap_c` at every step boundary only (between them it may be hotter);
//! - the fan at full speed whenever it works (no controller cools better) and no firmware
//!   throttling (it only takes work away);
//! - work per second is the upper concave envelope `S(p)` of the operating points × thread
//!   counts (time-sharing points or pacing a point, which any run does, lies on or under it).
//!
//! Maximising `Σ S(p_k)·Δ` under these linear constraints is a concave program; for any
//! multipliers `λ ≥ 0` on the temperature constraints its Lagrangian dual
//!
//! ```text
//! g(λ) = Σ_k max_p [S(p)·Δ − μ_k·p] + Σ_j λ_j·(cap − f_j),   μ_k = Σ_{j>k} λ_j·∂T_j/∂p_k
//! ```
//!
//! (`f_j` the die temperature with no dynamic power) is an upper bound on it (weak duality).
//! Projected subgradient steps on `λ` (Polyak steps towards the run's own work, a feasible
//! value) make the bound tight; every `g(λ)` evaluated is valid, the smallest is kept.

use super::workload::Scenario;
use super::{AMBIENT_C, AMBIENT_STEP_C, TwinBoard};
use crate::governor::Platform;

/// Length of one decision step in seconds.
pub const STEP_S: f64 = 2.0;
/// Kelvin added to the cap for power that changes within a step.
pub const SLACK_C: f64 = 0.05;
/// Subgradient iterations.
const ITERATIONS: usize = 600;

/// The twin's heat network, as the bound needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThermalNet {
    /// Heat capacity of the die node, J/K.
    pub die_capacity_j_per_k: f64,
    /// Heat capacity of the board/heatsink node, J/K.
    pub board_capacity_j_per_k: f64,
    /// Die to board, K/W.
    pub die_to_board_k_per_w: f64,
    /// Board to ambient with the fan at full speed (or the board's only value), K/W.
    pub board_to_ambient_k_per_w: f64,
    /// Board to ambient with the fan stopped, K/W.
    pub board_to_ambient_fan_off_k_per_w: f64,
    /// Idle power dissipated in the die, W.
    pub idle_die_w: f64,
    /// Idle power dissipated in the board, W.
    pub idle_board_w: f64,
    /// The twin's starting (die, board) temperatures, °C.
    pub start_c: [f64; 2],
}

/// The upper concave envelope of (dynamic W, relative speed) over every operating point and
/// thread count, from the origin: its vertices by rising power.
pub fn work_envelope(p: &Platform) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    for level in 0..=p.top_level() {
        for n in 1..=p.cores() {
            pts.push((
                f64::from(p.pool_dyn_w(level, n)),
                f64::from(p.speed(level, n)),
            ));
        }
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for pt in pts {
        if hull.last().is_some_and(|l| pt.1 <= l.1) {
            continue;
        }
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Drop b when it lies on or under the chord from a to pt.
            let cross = (b.0 - a.0) * (pt.1 - a.1) - (b.1 - a.1) * (pt.0 - a.0);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(pt);
    }
    hull
}

/// One step's linear map of the two-node state `(die, board)`.
#[derive(Clone, Copy, Debug)]
struct StepMap {
    phi: [[f64; 2]; 2],
    /// Response to 1 W of dynamic power in the die.
    gamma: [f64; 2],
    /// Response to the idle power and the ambient from a zero state.
    c: [f64; 2],
}

/// Integrates the network over `dt_s` from `x` with `p_w` in the die, by RK4 in fine steps.
fn integrate(
    net: &ThermalNet,
    r_ba: f64,
    ambient_c: f64,
    x: [f64; 2],
    p_w: f64,
    idle: bool,
    dt_s: f64,
) -> [f64; 2] {
    let (id, ib) = if idle {
        (net.idle_die_w, net.idle_board_w)
    } else {
        (0.0, 0.0)
    };
    let f = |x: [f64; 2]| {
        let q = (x[0] - x[1]) / net.die_to_board_k_per_w;
        [
            (p_w + id - q) / net.die_capacity_j_per_k,
            (ib + q - (x[1] - ambient_c) / r_ba) / net.board_capacity_j_per_k,
        ]
    };
    let n = (dt_s / 0.01).ceil().max(1.0) as usize;
    let h = dt_s / n as f64;
    let mut x = x;
    for _ in 0..n {
        let k1 = f(x);
        let k2 = f([x[0] + 0.5 * h * k1[0], x[1] + 0.5 * h * k1[1]]);
        let k3 = f([x[0] + 0.5 * h * k2[0], x[1] + 0.5 * h * k2[1]]);
        let k4 = f([x[0] + h * k3[0], x[1] + h * k3[1]]);
        for i in 0..2 {
            x[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
        }
    }
    x
}

fn step_map(net: &ThermalNet, r_ba: f64, ambient_c: f64, dt_s: f64) -> StepMap {
    let c0 = integrate(net, r_ba, 0.0, [1.0, 0.0], 0.0, false, dt_s);
    let c1 = integrate(net, r_ba, 0.0, [0.0, 1.0], 0.0, false, dt_s);
    StepMap {
        phi: [[c0[0], c1[0]], [c0[1], c1[1]]],
        gamma: integrate(net, r_ba, 0.0, [0.0, 0.0], 1.0, false, dt_s),
        c: integrate(net, r_ba, ambient_c, [0.0, 0.0], 0.0, true, dt_s),
    }
}

impl StepMap {
    fn apply(&self, x: [f64; 2], p_w: f64) -> [f64; 2] {
        [
            self.phi[0][0] * x[0] + self.phi[0][1] * x[1] + self.gamma[0] * p_w + self.c[0],
            self.phi[1][0] * x[0] + self.phi[1][1] * x[1] + self.gamma[1] * p_w + self.c[1],
        ]
    }
}

fn idle_state(net: &ThermalNet) -> [f64; 2] {
    net.start_c
}

/// The most work (relative speed × seconds, 1 = every core flat out for a second) any
/// controller could do on `board` in `scenario` over `duration_s` with the die at or below
/// `cap_c`. `known_work` is a feasible amount (the run's own work) that steers the steps.
pub fn foresight_work(
    board: &dyn TwinBoard,
    scenario: Scenario,
    duration_s: f64,
    cap_c: f64,
    known_work: f64,
) -> f64 {
    let net = board.net();
    let envelope = work_envelope(&board.spec().platform);
    let n = (duration_s / STEP_S).round().max(1.0) as usize;
    let half = n / 2;
    let cap = cap_c + SLACK_C;
    let fan_full = net.board_to_ambient_k_per_w;
    let fan_off = net.board_to_ambient_fan_off_k_per_w;
    let before = step_map(&net, fan_full, AMBIENT_C, STEP_S);
    let after = match scenario {
        Scenario::AmbientStep => step_map(&net, fan_full, AMBIENT_STEP_C, STEP_S),
        Scenario::FanFailure => step_map(&net, fan_off, AMBIENT_C, STEP_S),
        _ => before,
    };
    let map = |k: usize| if k < half { &before } else { &after };
    // Die temperature with no dynamic power, after each step.
    let mut free = Vec::with_capacity(n);
    let mut x = idle_state(&net);
    for k in 0..n {
        x = map(k).apply(x, 0.0);
        free.push(x[0]);
    }
    let mut lambda = vec![0.0f64; n];
    let mut p = vec![0.0f64; n];
    let mut mu = vec![0.0f64; n];
    let mut best = f64::INFINITY;
    for _ in 0..ITERATIONS {
        // μ_k by the adjoint recursion: φ_j = λ_j·e1 + Φ_jᵀ·φ_{j+1}, μ_k = γ_kᵀ·φ_{k+1}.
        let mut phi = [0.0f64; 2];
        for k in (0..n).rev() {
            // φ for the state after step k.
            let m_next = if k + 1 < n { Some(map(k + 1)) } else { None };
            let carried = match m_next {
                Some(m) => [
                    m.phi[0][0] * phi[0] + m.phi[1][0] * phi[1],
                    m.phi[0][1] * phi[0] + m.phi[1][1] * phi[1],
                ],
                None => [0.0, 0.0],
            };
            phi = [lambda[k] + carried[0], carried[1]];
            let g = map(k).gamma;
            mu[k] = g[0] * phi[0] + g[1] * phi[1];
        }
        let mut dual = 0.0;
        for k in 0..n {
            let (mut best_v, mut best_p) = (0.0, 0.0);
            for &(pw, s) in &envelope {
                let v = s * STEP_S - mu[k] * pw;
                if v > best_v {
                    (best_v, best_p) = (v, pw);
                }
            }
            dual += best_v;
            p[k] = best_p;
        }
        // Subgradient: cap − T_j under the maximising powers.
        let mut x = idle_state(&net);
        let mut norm = 0.0;
        let mut grad = Vec::with_capacity(n);
        for k in 0..n {
            x = map(k).apply(x, p[k]);
            dual += lambda[k] * (cap - free[k]);
            let gk = cap - x[0];
            grad.push(gk);
        }
        for (k, &gk) in grad.iter().enumerate() {
            // Only coordinates that can move count towards the step length.
            if lambda[k] > 0.0 || gk < 0.0 {
                norm += gk * gk;
            }
        }
        best = best.min(dual);
        if norm <= 1e-18 {
            break;
        }
        let alpha = ((dual - known_work).max(1e-3 * dual.abs().max(1e-9))) / norm;
        for (l, gk) in lambda.iter_mut().zip(&grad) {
            *l = (*l - alpha * gk).max(0.0);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::ConfigError;
    use crate::governor::platform::Opp;

    #[test]
    fn the_envelope_is_concave_and_starts_at_the_origin() -> Result<(), ConfigError> {
        let opps = vec![
            Opp {
                khz: 600_000,
                millivolts: 800,
            },
            Opp {
                khz: 1_500_000,
                millivolts: 950,
            },
        ];
        let p = Platform::new(opps, 4, 2.0, 1.0)?;
        let hull = work_envelope(&p);
        assert_eq!(hull[0], (0.0, 0.0));
        for w in hull.windows(3) {
            let s1 = (w[1].1 - w[0].1) / (w[1].0 - w[0].0);
            let s2 = (w[2].1 - w[1].1) / (w[2].0 - w[1].0);
            assert!(s2 <= s1 + 1e-12, "{hull:?}");
        }
        let top = hull.last().copied().unwrap_or_default();
        assert!((top.1 - 1.0).abs() < 1e-6, "{hull:?}");
        Ok(())
    }
}
