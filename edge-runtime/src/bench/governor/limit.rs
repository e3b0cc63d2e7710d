//! The physical limit of a board: the highest throughput whose steady state sits exactly at
//! the setpoint, found by searching operating point × threads × duty on the twin's own
//! steady-state temperature (bisection on the duty for each operating point and thread count).

use super::{AMBIENT_C, TwinBoard};

/// Conditions the limit is computed for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    /// Ambient temperature in °C.
    pub ambient_c: f64,
    /// Whether the fan works.
    pub fan_ok: bool,
}

impl Condition {
    /// [`AMBIENT_C`] with a working fan.
    pub fn nominal() -> Self {
        Self {
            ambient_c: AMBIENT_C,
            fan_ok: true,
        }
    }
}

/// The best steady operating point at the setpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhysicalLimit {
    /// Relative throughput (`speed × duty`, 1 = every core flat out).
    pub speed: f64,
    /// The same in tokens per second.
    pub tokens_per_s: f64,
    /// Dynamic CPU power in W there (the planning model's watts): IPA's sustainable power.
    pub dyn_power_w: f64,
    /// Operating point index.
    pub level: usize,
    /// Threads.
    pub threads: u16,
    /// Duty.
    pub duty: f64,
}

/// Searches the limit of `board` at `setpoint_c` under `cond`.
pub fn physical_limit(board: &dyn TwinBoard, setpoint_c: f64, cond: Condition) -> PhysicalLimit {
    let spec = board.spec();
    let p = &spec.platform;
    let mut best = PhysicalLimit {
        speed: 0.0,
        tokens_per_s: 0.0,
        dyn_power_w: 0.0,
        level: 0,
        threads: 1,
        duty: 0.0,
    };
    let steady = |khz: u32, busy: f64| board.steady_die_c(khz, busy, cond.ambient_c, cond.fan_ok);
    for level in 0..=p.top_level() {
        let khz = p.khz(level);
        for n in 1..=p.cores() {
            let cores = f64::from(n);
            let duty = if steady(khz, cores) <= setpoint_c {
                1.0
            } else if steady(khz, 0.0) >= setpoint_c {
                0.0
            } else {
                let (mut lo, mut hi) = (0.0, 1.0);
                for _ in 0..40 {
                    let mid = 0.5 * (lo + hi);
                    if steady(khz, cores * mid) <= setpoint_c {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                lo
            };
            let speed = f64::from(p.speed(level, n)) * duty;
            if speed > best.speed {
                best = PhysicalLimit {
                    speed,
                    tokens_per_s: spec.tokens_per_s_max * speed,
                    dyn_power_w: f64::from(p.pool_dyn_w(level, n)) * duty,
                    level,
                    threads: n,
                    duty,
                };
            }
        }
    }
    best
}
