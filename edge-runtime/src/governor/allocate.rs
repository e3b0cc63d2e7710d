//! Turns a power budget into actuator settings: which operating point, how many threads, and
//! the duty of each work class. Pure and exhaustive: every (operating point, thread count)
//! pair is scored with the platform's power and throughput models and the best one wins.
//!
//! Scoring is lexicographic in priority order: the highest-priority class with work gets as
//! much throughput as the budget allows before the next class gets any, so background work is
//! paced and then paused before generation slows at all. Within one class, the search picks
//! the combination with the most work per joule that fits, which on boards whose voltage falls
//! with frequency means lowering the frequency first, then threads, and pacing last.
//!
//! When the highest-priority class is saturated and the budget falls between two adjacent
//! operating points, time-sharing those two points (a [`Dither`], applied by the governor with
//! a sigma-delta modulator across periods) is on the convex hull of the power/throughput
//! points and beats pacing the faster one. It is only used between points at most 50 % apart,
//! so inter-token latency stays within 1.5x of itself.

use std::ops::RangeInclusive;

use super::platform::Platform;
use super::types::{Demand, Priority};

/// One operating point and thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Index into the platform's operating points.
    pub level: usize,
    /// Compute threads.
    pub threads: u16,
}

/// Time-sharing of two adjacent operating points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dither {
    /// The faster operating point (the setting's level is the slower one).
    pub upper_level: usize,
    /// Fraction of periods to spend at the faster point, in `0..1`.
    pub fraction: f32,
}

/// The chosen setting with per-class duties.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allocation {
    /// Operating point and thread count.
    pub setting: Setting,
    /// Time-sharing with the next faster point, when that beats a fixed point.
    pub dither: Option<Dither>,
    /// Duty per class, indexed by [`Priority::index`].
    pub duty: [f32; 3],
    /// Relative throughput granted per class (speed × occupancy), by class index.
    pub throughput: [f32; 3],
    /// Expected power in model W at the classes' current demand.
    pub power_w: f32,
}

/// Weight separating priority ranks in the scalar score (throughputs are at most 1).
const RANK_WEIGHT: f64 = 1000.0;
/// A previous setting is kept while its score is within this fraction of the best.
const KEEP_TOLERANCE: f64 = 0.005;
/// Largest frequency ratio between two points that may be time-shared.
const MAX_DITHER_RATIO: f32 = 1.5;

/// Allocates the dynamic-power budget `dyn_budget_w` (model W above idle) over `levels` and
/// `threads` for `demand`, in the priority order `priorities`. When no class has work, the
/// highest-priority class is assumed to be about to start. `prev` is kept when it scores
/// within half a percent of the best, so the actuators do not chatter.
pub fn allocate(
    platform: &Platform,
    dyn_budget_w: f32,
    demand: &Demand,
    priorities: [Priority; 3],
    levels: RangeInclusive<usize>,
    threads: RangeInclusive<u16>,
    prev: Option<Setting>,
) -> Allocation {
    let any_active = Priority::ALL.iter().any(|&c| demand.of(c) > 0.0);
    let top_speed = platform.speed(*levels.end(), *threads.end());
    // Demand was measured at the previous setting: work that took a share of the pool there
    // takes proportionally more of it at a slower setting.
    let demand_speed = prev.map_or(top_speed, |s| platform.speed(s.level, s.threads));
    let ctx = Context {
        dyn_budget_w,
        demand,
        priorities,
        any_active,
        top_speed,
        demand_speed,
    };
    let mut best: Option<(f64, Allocation)> = None;
    let mut kept: Option<(f64, Allocation)> = None;
    for level in levels.clone() {
        for n in threads.clone() {
            let setting = Setting { level, threads: n };
            let alloc = evaluate(platform, &ctx, setting);
            let score = score_of(&alloc, priorities);
            if prev == Some(setting) {
                kept = Some((score, alloc));
            }
            let better = match &best {
                None => true,
                Some((bs, ba)) => {
                    score > *bs + 1e-6 * bs.abs().max(1e-3)
                        || (score >= *bs - 1e-6 * bs.abs().max(1e-3) && alloc.power_w < ba.power_w)
                }
            };
            if better {
                best = Some((score, alloc));
            }
        }
    }
    let chosen = match (best, kept) {
        (Some((bs, _)), Some((ks, ka))) if ks >= bs * (1.0 - KEEP_TOLERANCE) => Some((ks, ka)),
        (b, _) => b,
    };
    let dithered = best_dither(platform, &ctx, levels.clone(), threads.clone());
    match (chosen, dithered) {
        (Some((cs, _)), Some((ds, da))) if ds > cs * (1.0 + 1e-4) => da,
        (Some((_, ca)), _) => ca,
        // Empty ranges: the lowest point, one thread, everything paused.
        (None, _) => Allocation {
            setting: Setting {
                level: *levels.start(),
                threads: (*threads.start()).max(1),
            },
            dither: None,
            duty: [0.0; 3],
            throughput: [0.0; 3],
            power_w: platform.idle_w(),
        },
    }
}

/// Energy-aware pacing of a backlogged leading class: how far it may be slowed and whether the
/// idle power counts against its work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Efficiency {
    /// The lowest throughput, relative to flat out, the leading class may be given.
    pub min_speed: f32,
    /// Time-bound work (generation that never runs dry): more speed is more work done in the
    /// same seconds, so the idle power is shared by the tokens. Work-bound (chats that come
    /// and go): the same tokens are made either way and the board idles between them, so only
    /// the power above idle is the work's.
    pub time_bound: bool,
}

/// The setting with the fewest joules per unit of the leading class's work among those that
/// give it at least `efficiency.min_speed`, when that class is backlogged (or nothing has work
/// and it is about to start) and no lower class is waiting. Joules per unit of work come from
/// the platform's power and throughput models, so whether racing to idle or running slow and
/// steady wins is the board model's answer: on a board whose voltage falls with frequency and
/// whose threads scale sublinearly, work-bound work is cheapest at the slowest setting that
/// still meets the bound, while time-bound work under a binding budget is cheapest at the most
/// throughput the budget allows. `None` when the class is not backlogged (the lowest-power
/// setting that meets its demand is already [`allocate`]'s choice), or when no setting within
/// the budget reaches the bound. `prev` is kept within half a percent of the best.
pub fn efficient(
    platform: &Platform,
    dyn_budget_w: f32,
    demand: &Demand,
    priorities: [Priority; 3],
    (levels, threads): (RangeInclusive<usize>, RangeInclusive<u16>),
    prev: Option<Setting>,
    efficiency: Efficiency,
) -> Option<Allocation> {
    let any_active = Priority::ALL.iter().any(|&c| demand.of(c) > 0.0);
    let rank = priorities
        .iter()
        .position(|&c| demand.of(c) > 0.0)
        .unwrap_or(0);
    let lead = priorities[rank];
    if any_active && demand.of(lead) < 0.98 {
        return None;
    }
    if priorities[rank + 1..].iter().any(|&c| demand.of(c) > 0.0) {
        return None;
    }
    let ctx = Context {
        dyn_budget_w,
        demand,
        priorities,
        any_active,
        top_speed: platform.speed(*levels.end(), *threads.end()),
        demand_speed: platform.speed(*levels.end(), *threads.end()),
    };
    let idle = if efficiency.time_bound {
        platform.idle_w()
    } else {
        0.0
    };
    let cost = |a: &Allocation| {
        let work = a.throughput[lead.index()];
        (a.power_w - platform.idle_w() + idle) / work
    };
    let floor = efficiency.min_speed * (1.0 - 1e-4);
    let mut best: Option<(f32, Allocation)> = None;
    let mut kept: Option<(f32, Allocation)> = None;
    for level in levels.clone() {
        for n in threads.clone() {
            let setting = Setting { level, threads: n };
            let alloc = evaluate(platform, &ctx, setting);
            if !(alloc.throughput[lead.index()] >= floor && alloc.throughput[lead.index()] > 0.0) {
                continue;
            }
            let c = cost(&alloc);
            if prev == Some(setting) {
                kept = Some((c, alloc));
            }
            let better = best.as_ref().is_none_or(|(bc, ba)| {
                c < *bc * (1.0 - 1e-6)
                    || (c <= *bc * (1.0 + 1e-6)
                        && alloc.throughput[lead.index()] > ba.throughput[lead.index()])
            });
            if better {
                best = Some((c, alloc));
            }
        }
    }
    // Time-sharing two points can beat every fixed point when the budget binds.
    if let Some((_, d)) = best_dither(platform, &ctx, levels, threads)
        && d.throughput[lead.index()] >= floor
        && best
            .as_ref()
            .is_none_or(|(bc, _)| cost(&d) < *bc * (1.0 - 1e-4))
    {
        return Some(d);
    }
    match (best, kept) {
        (Some((bc, _)), Some((kc, ka))) if kc <= bc * (1.0 + KEEP_TOLERANCE as f32) => Some(ka),
        (b, _) => b.map(|(_, a)| a),
    }
}

fn score_of(alloc: &Allocation, priorities: [Priority; 3]) -> f64 {
    let mut score = 0.0;
    for c in priorities {
        score = score * RANK_WEIGHT + f64::from(alloc.throughput[c.index()]);
    }
    score
}

struct Context<'a> {
    dyn_budget_w: f32,
    demand: &'a Demand,
    priorities: [Priority; 3],
    any_active: bool,
    top_speed: f32,
    demand_speed: f32,
}

/// Duties and throughput for one setting. A class gets pool time only while every class
/// above it runs at full speed with all the time it wants: background work is paused before
/// generation is slowed by any actuator.
fn evaluate(platform: &Platform, ctx: &Context<'_>, setting: Setting) -> Allocation {
    let pool_w = platform.pool_dyn_w(setting.level, setting.threads);
    let occupancy = if pool_w > 0.0 {
        (ctx.dyn_budget_w.max(0.0) / pool_w).min(1.0)
    } else {
        1.0
    };
    let speed = platform.speed(setting.level, setting.threads);
    let full_speed = speed >= ctx.top_speed * (1.0 - 1e-6);
    let stretch = if speed > 0.0 {
        ctx.demand_speed / speed
    } else {
        1.0
    };
    let mut used = 0.0f32;
    let mut starved = false;
    let mut duty = [0.0; 3];
    let mut throughput = [0.0; 3];
    for (rank, c) in ctx.priorities.into_iter().enumerate() {
        let measured = if ctx.any_active {
            ctx.demand.of(c)
        } else if rank == 0 {
            1.0
        } else {
            0.0
        };
        let avail = if starved {
            0.0
        } else {
            (occupancy - used).max(0.0)
        };
        if measured > 0.0 {
            // A class that had work all the time is backlogged: its need is at least the
            // whole pool whatever the setting.
            let dem = if measured >= 0.98 {
                1.0
            } else {
                (measured * stretch).min(1.0)
            };
            let occ = dem.min(avail);
            used += occ;
            let satisfied = occ >= dem - 1e-4;
            duty[c.index()] = if satisfied { 1.0 } else { occ };
            throughput[c.index()] = speed * occ;
            starved |= !(satisfied && full_speed);
        } else {
            // Idle class: what it would get if it started now, ahead of lower classes.
            duty[c.index()] = avail.min(1.0);
        }
    }
    Allocation {
        setting,
        dither: None,
        duty,
        throughput,
        power_w: platform.idle_w() + pool_w * used,
    }
}

/// The best time-shared pair of adjacent points for a saturated leading class, if any.
fn best_dither(
    platform: &Platform,
    ctx: &Context<'_>,
    levels: RangeInclusive<usize>,
    threads: RangeInclusive<u16>,
) -> Option<(f64, Allocation)> {
    let lead = if ctx.any_active {
        ctx.priorities
            .into_iter()
            .find(|&c| ctx.demand.of(c) > 0.0)?
    } else {
        ctx.priorities[0]
    };
    if ctx.any_active && ctx.demand.of(lead) < 0.98 {
        return None;
    }
    let mut best: Option<(f64, Allocation)> = None;
    for n in threads {
        for lo in *levels.start()..*levels.end() {
            let hi = lo + 1;
            if platform.khz(hi) as f32 > platform.khz(lo) as f32 * MAX_DITHER_RATIO {
                continue;
            }
            let (p_lo, p_hi) = (platform.pool_dyn_w(lo, n), platform.pool_dyn_w(hi, n));
            let b = ctx.dyn_budget_w;
            if !(b > p_lo && b < p_hi) {
                continue;
            }
            let fraction = (b - p_lo) / (p_hi - p_lo);
            let thr = (1.0 - fraction) * platform.speed(lo, n) + fraction * platform.speed(hi, n);
            let mut duty = [0.0; 3];
            let mut throughput = [0.0; 3];
            duty[lead.index()] = 1.0;
            throughput[lead.index()] = thr;
            let alloc = Allocation {
                setting: Setting {
                    level: lo,
                    threads: n,
                },
                dither: Some(Dither {
                    upper_level: hi,
                    fraction,
                }),
                duty,
                throughput,
                power_w: platform.idle_w() + b,
            };
            let score = score_of(&alloc, ctx.priorities);
            if best.as_ref().is_none_or(|(bs, _)| score > *bs) {
                best = Some((score, alloc));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::config::ConfigError;
    use crate::governor::platform::Opp;

    const ORDER: [Priority; 3] = [Priority::Interactive, Priority::Training, Priority::Batch];

    fn platform() -> Result<Platform, ConfigError> {
        Platform::new(
            vec![
                Opp {
                    khz: 600_000,
                    millivolts: 800,
                },
                Opp {
                    khz: 1_000_000,
                    millivolts: 850,
                },
                Opp {
                    khz: 1_500_000,
                    millivolts: 950,
                },
            ],
            4,
            2.0,
            1.0,
        )
    }

    #[test]
    fn an_ample_budget_runs_everything_flat_out() -> Result<(), ConfigError> {
        let p = platform()?;
        let d = Demand::busy(&[Priority::Interactive]);
        let a = allocate(&p, 100.0, &d, ORDER, 0..=2, 1..=4, None);
        assert_eq!(
            a.setting,
            Setting {
                level: 2,
                threads: 4
            }
        );
        assert_eq!(a.duty, [1.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn background_work_gives_way_before_interactive_work() -> Result<(), ConfigError> {
        let p = platform()?;
        let mut d = Demand::default();
        d.occupancy[Priority::Interactive.index()] = 0.5;
        d.occupancy[Priority::Training.index()] = 1.0;
        let full = p.pool_dyn_w(2, 4);
        // Budget for 0.7 of the pool: interactive keeps its 0.5, training gets the rest.
        let a = allocate(&p, 0.7 * full, &d, ORDER, 0..=2, 1..=4, None);
        assert_eq!(
            a.setting,
            Setting {
                level: 2,
                threads: 4
            }
        );
        assert_eq!(a.duty[Priority::Interactive.index()], 1.0);
        assert!((a.duty[Priority::Training.index()] - 0.2).abs() < 1e-4);
        Ok(())
    }

    #[test]
    fn a_tight_budget_lowers_frequency_before_pacing() -> Result<(), ConfigError> {
        let p = platform()?;
        let d = Demand::busy(&[Priority::Interactive]);
        let budget = p.pool_dyn_w(1, 4);
        let a = allocate(&p, budget, &d, ORDER, 0..=2, 1..=4, None);
        assert_eq!(
            a.setting,
            Setting {
                level: 1,
                threads: 4
            }
        );
        assert_eq!(a.duty[0], 1.0);
        assert!(a.power_w <= p.idle_w() + budget + 1e-4);
        Ok(())
    }

    #[test]
    fn keeps_the_previous_setting_when_it_is_nearly_as_good() -> Result<(), ConfigError> {
        let p = platform()?;
        let d = Demand::busy(&[Priority::Interactive]);
        let budget = p.pool_dyn_w(1, 4) * 1.001;
        let prev = Setting {
            level: 1,
            threads: 4,
        };
        let a = allocate(&p, budget, &d, ORDER, 0..=2, 1..=4, Some(prev));
        assert_eq!(a.setting, prev);
        Ok(())
    }

    #[test]
    fn time_shares_close_operating_points_instead_of_pacing() -> Result<(), ConfigError> {
        let opps = (0..5)
            .map(|i| Opp {
                khz: 1_000_000 + 100_000 * i,
                millivolts: 800 + 25 * i,
            })
            .collect();
        let p = Platform::new(opps, 4, 2.0, 1.0)?;
        let d = Demand::busy(&[Priority::Interactive]);
        let budget = 0.5 * (p.pool_dyn_w(2, 4) + p.pool_dyn_w(3, 4));
        let a = allocate(&p, budget, &d, ORDER, 0..=4, 1..=4, None);
        let dither = a.dither.ok_or(ConfigError::NoCores)?;
        assert_eq!((a.setting.level, dither.upper_level), (2, 3));
        assert!((dither.fraction - 0.5).abs() < 1e-4);
        assert_eq!(a.duty[0], 1.0);
        // Points twice as far apart are never time-shared.
        let coarse = Platform::new(
            vec![
                Opp {
                    khz: 700_000,
                    millivolts: 800,
                },
                Opp {
                    khz: 1_500_000,
                    millivolts: 950,
                },
            ],
            4,
            2.0,
            1.0,
        )?;
        let budget = 0.5 * (coarse.pool_dyn_w(0, 4) + coarse.pool_dyn_w(1, 4));
        assert!(
            allocate(&coarse, budget, &d, ORDER, 0..=1, 1..=4, None)
                .dither
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn a_zero_budget_pauses_every_class() -> Result<(), ConfigError> {
        let p = platform()?;
        let d = Demand::busy(&[Priority::Interactive, Priority::Training]);
        let a = allocate(&p, 0.0, &d, ORDER, 0..=2, 1..=4, None);
        assert_eq!(a.duty, [0.0, 0.0, 0.0]);
        assert_eq!(
            a.setting,
            Setting {
                level: 0,
                threads: 1
            }
        );
        Ok(())
    }

    fn work_bound(min_speed: f32) -> Efficiency {
        Efficiency {
            min_speed,
            time_bound: false,
        }
    }

    #[test]
    fn work_bound_chats_run_at_the_cheapest_setting_that_meets_the_bound() -> Result<(), ConfigError>
    {
        // By hand, dynamic W per unit of work at speed >= 2/3: 1500 MHz x4 threads 4.0,
        // x3 3.69; 1000 MHz x4 (speed 0.667, 4 x 0.667 x (850/950)^2 = 2.14 W) 3.20.
        let p = platform()?;
        let d = Demand::busy(&[Priority::Interactive]);
        let ranges = (0..=2, 1..=4);
        let a = efficient(&p, 100.0, &d, ORDER, ranges, None, work_bound(2.0 / 3.0))
            .ok_or(ConfigError::NoCores)?;
        assert_eq!(
            a.setting,
            Setting {
                level: 1,
                threads: 4
            }
        );
        let flat = allocate(&p, 100.0, &d, ORDER, 0..=2, 1..=4, None);
        let per_work = |x: &Allocation| (x.power_w - p.idle_w()) / x.throughput[0];
        assert!((per_work(&a) - 3.202).abs() < 0.01, "{}", per_work(&a));
        assert!((per_work(&flat) - 4.0).abs() < 1e-4);
        assert!(a.throughput[0] >= 2.0 / 3.0 - 1e-4);
        // A looser bound goes slower still.
        let b = efficient(&p, 100.0, &d, ORDER, (0..=2, 1..=4), None, work_bound(0.2))
            .ok_or(ConfigError::NoCores)?;
        assert!(per_work(&b) < per_work(&a));
        Ok(())
    }

    #[test]
    fn time_bound_work_under_a_binding_budget_gets_the_most_throughput() -> Result<(), ConfigError>
    {
        let p = platform()?;
        let d = Demand::busy(&[Priority::Interactive]);
        let budget = 0.8 * p.pool_dyn_w(1, 4);
        let e = Efficiency {
            min_speed: 0.1,
            time_bound: true,
        };
        let a = efficient(&p, budget, &d, ORDER, (0..=2, 1..=4), None, e)
            .ok_or(ConfigError::NoCores)?;
        let flat = allocate(&p, budget, &d, ORDER, 0..=2, 1..=4, None);
        assert!(
            (a.throughput[0] - flat.throughput[0]).abs() < 1e-4,
            "{} vs {}",
            a.throughput[0],
            flat.throughput[0]
        );
        Ok(())
    }

    #[test]
    fn efficient_pacing_stands_aside_when_it_does_not_apply() -> Result<(), ConfigError> {
        let p = platform()?;
        let e = work_bound(0.5);
        // Not backlogged: allocate already picks the lowest power that meets the demand.
        let mut half = Demand::default();
        half.occupancy[0] = 0.5;
        assert!(efficient(&p, 100.0, &half, ORDER, (0..=2, 1..=4), None, e).is_none());
        // Training waits behind the chat: it fills the pool, nothing idles.
        let both = Demand::busy(&[Priority::Interactive, Priority::Training]);
        assert!(efficient(&p, 100.0, &both, ORDER, (0..=2, 1..=4), None, e).is_none());
        // No setting within a tiny budget reaches the bound.
        let busy = Demand::busy(&[Priority::Interactive]);
        assert!(efficient(&p, 0.05, &busy, ORDER, (0..=2, 1..=4), None, e).is_none());
        Ok(())
    }
}
