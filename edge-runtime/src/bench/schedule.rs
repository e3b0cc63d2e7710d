//! `thermo bench schedule`: a week of nightly LoRA jobs on the simulated boards, each
//! submitted at 18:00 local time with a day to finish, run at once ("run now") or by the
//! deferring planner. The week's hourly ambient and grid intensity come from a CSV
//! (`models/schedule/week.csv`, its sources in its header). The planner is run the way the
//! agent runs it: every hour it plans the rest of the job on a persistence forecast (the same
//! hour a day earlier) and does this hour's share, up to what fits under the setpoint at the
//! hour's actual ambient; every step is scored on the actual hours.
//!
//! What a step costs is read off the board's twin: at each ambient the fastest steady
//! operating point whose die temperature sits at or under the setpoint
//! ([`physical_limit`]), its dynamic power above idle (the job's marginal energy: the board
//! idles anyway) and its die temperature, whose Arrhenius factor over the idle one's is the
//! wear the job adds.

use std::fmt::Write as _;

use serde::Serialize;

use super::governor::BenchError;
use super::governor::limit::{Condition, physical_limit};
use super::governor::sim_boards::board;
use crate::eco::Factors;
use crate::eco::wear::arrhenius_factor;
use crate::schedule::{HOUR_S, Hour, Need, Rate, Series, Weights, cheapest};

/// The boards the benchmark plans for.
pub const SCHEDULE_BOARDS: [&str; 3] = ["rpi4", "rpi5", "rpi5-active"];

/// The job and the week.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    /// Hourly ambient (°C).
    pub ambient: Series,
    /// Hourly grid intensity (g CO2e/kWh).
    pub grid: Series,
    /// Seconds one training step takes on a board at full speed (every core at the top
    /// frequency).
    pub step_s_full: f64,
    /// Hours the job takes at full speed.
    pub job_hours_full: f64,
    /// Submission hour, as an offset from UTC midnight of each day (18:00 at UTC-5: 23).
    pub submit_utc_hour: i64,
    /// Hours from submission to the deadline.
    pub deadline_h: i64,
    /// Die temperature the governor holds, °C.
    pub setpoint_c: f64,
    /// Footprint factors (wear weighting, Arrhenius constants).
    pub factors: Factors,
}

/// One board's week.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScheduleRow {
    /// Board profile.
    pub board: String,
    /// Jobs run.
    pub jobs: usize,
    /// Run now: operational g CO2e over the week.
    pub now_g_co2e: f64,
    /// Run now: equivalent wear hours the jobs added.
    pub now_wear_hours: f64,
    /// Run now: jobs that missed their deadline.
    pub now_missed: usize,
    /// Run now: mean hours from submission to the end.
    pub now_mean_finish_h: f64,
    /// Deferred: operational g CO2e.
    pub deferred_g_co2e: f64,
    /// Deferred: wear hours added.
    pub deferred_wear_hours: f64,
    /// Deferred: jobs that missed their deadline.
    pub deferred_missed: usize,
    /// Deferred: mean hours from submission to the end.
    pub deferred_mean_finish_h: f64,
    /// Deferred: g CO2e plus wear in g over run now's (the planner's own objective).
    pub score_ratio: f64,
}

impl ScheduleRow {
    /// Deferred g CO2e saved against run now, as a fraction.
    pub fn saving(&self) -> f64 {
        if self.now_g_co2e > 0.0 {
            1.0 - self.deferred_g_co2e / self.now_g_co2e
        } else {
            0.0
        }
    }
}

/// What one job cost when run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Outcome {
    g_co2e: f64,
    wear_hours: f64,
    finish_s: Option<i64>,
}

/// The job's marginal [`Rate`] on `name` at each ambient, from the twin.
fn rate_fn(name: &str, o: &ScheduleOptions) -> Result<impl Fn(f64) -> Rate, BenchError> {
    let b = board(name)?;
    let setpoint_c = o.setpoint_c;
    let step_s = o.step_s_full;
    let (reference_c, ev) = (o.factors.wear_reference_c, o.factors.activation_ev);
    Ok(move |ambient_c: f64| {
        let cond = Condition {
            ambient_c,
            fan_ok: true,
        };
        let lim = physical_limit(b.as_ref(), setpoint_c, cond);
        let p = &b.spec().platform;
        let steps_per_hour = 3600.0 * lim.speed / step_s;
        let busy = f64::from(lim.threads) * lim.duty;
        let khz = p.khz(lim.level);
        let die = b.steady_die_c(khz, busy, ambient_c, true);
        let idle = b.steady_die_c(khz, 0.0, ambient_c, true);
        let extra_wear = (arrhenius_factor(die, reference_c, ev)
            - arrhenius_factor(idle, reference_c, ev))
        .max(0.0);
        Rate {
            steps_per_hour,
            j_per_step: lim.dyn_power_w * 3600.0 / steps_per_hour.max(f64::MIN_POSITIVE),
            wear_h_per_step: extra_wear / steps_per_hour.max(f64::MIN_POSITIVE),
        }
    })
}

/// Runs one job from `submit_s`: every hour, `plan` says how many steps to do in it (given
/// the steps left and the hour's start); the hour does them up to its actual capacity.
fn run_job(
    submit_s: i64,
    steps: f64,
    o: &ScheduleOptions,
    rate: &dyn Fn(f64) -> Rate,
    plan: &mut dyn FnMut(f64, i64) -> f64,
) -> Outcome {
    let mut left = steps;
    let mut out = Outcome::default();
    let mut t = submit_s;
    // A bound on the hours a job may take (the week's data ends; the last hour repeats).
    for _ in 0..24 * 14 {
        if left <= 1e-9 {
            break;
        }
        let hour_end = (t.div_euclid(HOUR_S) + 1) * HOUR_S;
        let ambient = o.ambient.at(t).unwrap_or(f64::NAN);
        let grid = o.grid.at(t).unwrap_or(f64::NAN);
        let r = rate(ambient);
        let fraction = (hour_end - t) as f64 / HOUR_S as f64;
        let capacity = r.steps_per_hour * fraction;
        let want = plan(left, t).min(capacity).min(left);
        if want > 0.0 {
            out.g_co2e += want * r.j_per_step / 3.6e6 * grid;
            out.wear_hours += want * r.wear_h_per_step;
            left -= want;
            if left <= 1e-9 {
                let used = want / capacity.max(f64::MIN_POSITIVE);
                out.finish_s = Some(t + (used * (hour_end - t) as f64).ceil() as i64);
            }
        }
        t = hour_end;
    }
    out
}

/// The persistence forecast at `t_s`: the same hour a day earlier (the first day's own
/// values where there is no earlier day).
fn persistence(s: &Series, t_s: i64) -> f64 {
    let start = s.span().map_or(t_s, |(a, _)| a);
    let back = if t_s - 24 * HOUR_S >= start {
        t_s - 24 * HOUR_S
    } else {
        t_s
    };
    s.at(back).unwrap_or(f64::NAN)
}

/// Runs the week on every board of [`SCHEDULE_BOARDS`].
pub fn run_schedule_bench(o: &ScheduleOptions) -> Result<Vec<ScheduleRow>, BenchError> {
    let Some((first, last)) = o.ambient.span() else {
        return Err(BenchError::Invalid("the ambient series is empty".into()));
    };
    let day0 = first.div_euclid(86_400) * 86_400;
    let submits: Vec<i64> = (0..)
        .map(|d| day0 + d * 86_400 + o.submit_utc_hour * HOUR_S)
        .take_while(|&s| s + o.deadline_h * HOUR_S <= last + HOUR_S)
        .filter(|&s| s >= first)
        .collect();
    if submits.is_empty() {
        return Err(BenchError::Invalid(
            "the week is too short for one job and its deadline".into(),
        ));
    }
    let weights = Weights {
        g_per_wear_hour: o.factors.embodied_g_per_hour(),
    };
    let mut rows = vec![];
    for name in SCHEDULE_BOARDS {
        let rate = rate_fn(name, o)?;
        let full = rate(-50.0).steps_per_hour.max(f64::MIN_POSITIVE);
        let steps = (full * o.job_hours_full).round();
        let mut now_all = vec![];
        let mut deferred_all = vec![];
        for &submit in &submits {
            let deadline = submit + o.deadline_h * HOUR_S;
            now_all.push(run_job(submit, steps, o, &rate, &mut |left, _| left));
            let mut plan = |left: f64, t: i64| -> f64 {
                let until = deadline.max(t + HOUR_S);
                let forecast: Vec<Hour> = (0..)
                    .map(|i| t.div_euclid(HOUR_S) * HOUR_S + i * HOUR_S)
                    .take_while(|&h| h < until)
                    .map(|h| Hour {
                        start_s: h,
                        // This hour is seen; later hours are forecast.
                        g_per_kwh: if h <= t {
                            o.grid.at(t).unwrap_or(f64::NAN)
                        } else {
                            persistence(&o.grid, h)
                        },
                        ambient_c: if h <= t {
                            o.ambient.at(t).unwrap_or(f64::NAN)
                        } else {
                            persistence(&o.ambient, h)
                        },
                    })
                    .collect();
                let need = Need {
                    steps: left.ceil() as u64,
                    now_s: t,
                    deadline_s: until,
                };
                let p = cheapest(&need, &forecast, &rate, &weights);
                p.slots
                    .iter()
                    .filter(|s| s.start_s <= t && t < s.end_s)
                    .map(|s| s.steps)
                    .sum()
            };
            deferred_all.push(run_job(submit, steps, o, &rate, &mut plan));
        }
        let sum = |v: &[Outcome], f: fn(&Outcome) -> f64| v.iter().map(f).sum::<f64>();
        let missed = |v: &[Outcome]| {
            v.iter()
                .zip(&submits)
                .filter(|(x, s)| x.finish_s.is_none_or(|f| f > *s + o.deadline_h * HOUR_S))
                .count()
        };
        let mean_finish = |v: &[Outcome]| {
            let n = v.len().max(1) as f64;
            v.iter()
                .zip(&submits)
                .map(|(x, s)| (x.finish_s.unwrap_or(last + HOUR_S) - s) as f64 / 3600.0)
                .sum::<f64>()
                / n
        };
        let score = |v: &[Outcome]| {
            sum(v, |x| x.g_co2e) + sum(v, |x| x.wear_hours) * weights.g_per_wear_hour
        };
        rows.push(ScheduleRow {
            board: name.to_string(),
            jobs: submits.len(),
            now_g_co2e: sum(&now_all, |x| x.g_co2e),
            now_wear_hours: sum(&now_all, |x| x.wear_hours),
            now_missed: missed(&now_all),
            now_mean_finish_h: mean_finish(&now_all),
            deferred_g_co2e: sum(&deferred_all, |x| x.g_co2e),
            deferred_wear_hours: sum(&deferred_all, |x| x.wear_hours),
            deferred_missed: missed(&deferred_all),
            deferred_mean_finish_h: mean_finish(&deferred_all),
            score_ratio: score(&deferred_all) / score(&now_all).max(f64::MIN_POSITIVE),
        });
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[ScheduleRow]) -> String {
    let mut s = String::from(
        "| board | jobs | run now g CO2e | deferred g CO2e | saving | run now wear h | deferred \
         wear h | score deferred / now | missed (now / deferred) | mean finish h (now / \
         deferred) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:.1} % | {:.4} | {:.4} | {:.3} | {} / {} | {:.1} / {:.1} |",
            r.board,
            r.jobs,
            r.now_g_co2e,
            r.deferred_g_co2e,
            100.0 * r.saving(),
            r.now_wear_hours,
            r.deferred_wear_hours,
            r.score_ratio,
            r.now_missed,
            r.deferred_missed,
            r.now_mean_finish_h,
            r.deferred_mean_finish_h,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eco::EcoConfig;

    fn options(grid: impl Fn(i64) -> f64, ambient: impl Fn(i64) -> f64) -> ScheduleOptions {
        let hours: Vec<i64> = (0..24 * 4).map(|h| h * HOUR_S).collect();
        ScheduleOptions {
            ambient: Series::from_points(hours.iter().map(|&t| (t, ambient(t)))),
            grid: Series::from_points(hours.iter().map(|&t| (t, grid(t)))),
            step_s_full: 2.0,
            job_hours_full: 2.0,
            submit_utc_hour: 18,
            deadline_h: 24,
            setpoint_c: 70.0,
            factors: EcoConfig::default()
                .factors()
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    #[test]
    fn a_clean_window_before_the_deadline_is_used_and_no_deadline_is_missed() {
        // A grid that is clean from 06:00 to 10:00 UTC and dirty otherwise; constant ambient.
        let o = options(
            |t| {
                let h = (t / HOUR_S) % 24;
                if (6..10).contains(&h) { 50.0 } else { 500.0 }
            },
            |_| 25.0,
        );
        let rows = run_schedule_bench(&o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), SCHEDULE_BOARDS.len());
        for r in &rows {
            assert_eq!(r.jobs, 3, "{r:?}");
            assert_eq!((r.now_missed, r.deferred_missed), (0, 0), "{r:?}");
            assert!(r.saving() > 0.8, "{r:?}");
            assert!(r.deferred_mean_finish_h > r.now_mean_finish_h, "{r:?}");
        }
    }

    #[test]
    fn a_flat_grid_and_ambient_leave_nothing_to_gain() {
        let o = options(|_| 300.0, |_| 25.0);
        let rows = run_schedule_bench(&o).unwrap_or_else(|e| panic!("{e}"));
        for r in &rows {
            assert!((r.saving()).abs() < 1e-6, "{r:?}");
            assert!((r.score_ratio - 1.0).abs() < 1e-6, "{r:?}");
            assert_eq!(r.deferred_missed, 0);
        }
        let md = markdown(&rows);
        assert!(md.contains("| rpi4 | 3 |"), "{md}");
    }
}
