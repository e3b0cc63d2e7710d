//! The planner: which hours between now and a job's deadline to run it in so that its grams of
//! CO2e (energy × the hour's grid intensity) plus a wear term (equivalent wear hours × the
//! board's embodied grams per wear hour) are smallest. A job pauses at any step boundary and
//! resumes from its checkpoint, so each hour is an independent slot whose cost grows linearly
//! with the steps put in it, up to what fits under the setpoint at that hour's ambient: taking
//! the cheapest steps first is then optimal. When the hours before the deadline cannot hold
//! the job, the plan runs every step as soon as possible and says that the deadline is missed.

/// Seconds in an hour.
pub const HOUR_S: i64 = 3600;

/// One hour of the forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hour {
    /// Its start, Unix seconds (a multiple of [`HOUR_S`]).
    pub start_s: i64,
    /// Grid carbon intensity, g CO2e per kWh.
    pub g_per_kwh: f64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
}

/// What the board does for the job at an ambient temperature, held at the setpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Steps per hour that fit under the setpoint.
    pub steps_per_hour: f64,
    /// Board energy per step, J.
    pub j_per_step: f64,
    /// Equivalent wear hours per step.
    pub wear_h_per_step: f64,
}

/// How wear is weighed against grid carbon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Embodied g CO2e of the board per equivalent wear hour (its embodied carbon over its
    /// rated lifetime in hours at the reference temperature).
    pub g_per_wear_hour: f64,
}

/// A job's needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// Steps left.
    pub steps: u64,
    /// Now, Unix seconds.
    pub now_s: i64,
    /// The deadline, Unix seconds.
    pub deadline_s: i64,
}

/// Steps to run in one time window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Start, Unix seconds.
    pub start_s: i64,
    /// End, Unix seconds (the whole window; the steps may finish earlier).
    pub end_s: i64,
    /// Steps planned in it.
    pub steps: f64,
}

/// A plan and what it is expected to cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The windows to run in, in time order.
    pub slots: Vec<Slot>,
    /// Expected operational g CO2e.
    pub g_co2e: f64,
    /// Expected equivalent wear hours.
    pub wear_hours: f64,
    /// Expected board energy, J.
    pub energy_j: f64,
    /// Expected finish, Unix seconds (`None` when the forecast ends first).
    pub finish_s: Option<i64>,
    /// True when the job cannot finish by its deadline.
    pub misses_deadline: bool,
}

impl Plan {
    /// Grams of CO2e with the wear term, the figure the planner minimises.
    pub fn score(&self, w: &Weights) -> f64 {
        self.g_co2e + self.wear_hours * w.g_per_wear_hour
    }

    /// The slot covering `t_s`, if the plan runs then.
    pub fn running_at(&self, t_s: i64) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.start_s <= t_s && t_s < s.end_s && s.steps > 0.0)
    }
}

/// A window of one forecast hour, clipped to `[from, to)`, with its capacity in steps.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_s: i64,
    end_s: i64,
    capacity: f64,
    cost_per_step: f64,
    rate: Rate,
    g_per_kwh: f64,
}

fn windows(
    hours: &[Hour],
    from_s: i64,
    to_s: i64,
    rate: &dyn Fn(f64) -> Rate,
    w: &Weights,
) -> Vec<Window> {
    hours
        .iter()
        .filter_map(|h| {
            let start_s = h.start_s.max(from_s);
            let end_s = (h.start_s + HOUR_S).min(to_s);
            if end_s <= start_s || !h.g_per_kwh.is_finite() || !h.ambient_c.is_finite() {
                return None;
            }
            let r = rate(h.ambient_c);
            if !(r.steps_per_hour > 0.0 && r.j_per_step.is_finite() && r.j_per_step >= 0.0) {
                return None;
            }
            let capacity = r.steps_per_hour * (end_s - start_s) as f64 / HOUR_S as f64;
            let g_per_step = r.j_per_step / 3.6e6 * h.g_per_kwh.max(0.0);
            let cost_per_step = g_per_step + r.wear_h_per_step.max(0.0) * w.g_per_wear_hour;
            Some(Window {
                start_s,
                end_s,
                capacity,
                cost_per_step,
                rate: r,
                g_per_kwh: h.g_per_kwh.max(0.0),
            })
        })
        .collect()
}

/// Fills `chosen` windows (time-ordered) with `steps` and totals the plan.
fn total(chosen: Vec<(Window, f64)>, steps: f64, deadline_s: i64) -> Plan {
    let mut plan = Plan {
        slots: vec![],
        g_co2e: 0.0,
        wear_hours: 0.0,
        energy_j: 0.0,
        finish_s: None,
        misses_deadline: false,
    };
    let mut placed = 0.0;
    for (win, n) in chosen {
        if n <= 0.0 {
            continue;
        }
        let j = n * win.rate.j_per_step;
        plan.energy_j += j;
        plan.g_co2e += j / 3.6e6 * win.g_per_kwh;
        plan.wear_hours += n * win.rate.wear_h_per_step.max(0.0);
        plan.slots.push(Slot {
            start_s: win.start_s,
            end_s: win.end_s,
            steps: n,
        });
        placed += n;
        if placed >= steps - 1e-9 && plan.finish_s.is_none() {
            let used = n / win.capacity.max(f64::MIN_POSITIVE);
            let span = (win.end_s - win.start_s) as f64;
            plan.finish_s = Some(win.start_s + (used.min(1.0) * span).ceil() as i64);
        }
    }
    plan.misses_deadline = plan.finish_s.is_none_or(|f| f > deadline_s);
    plan
}

/// Runs every step as soon as possible from `need.now_s`, at full capacity (the counterfactual
/// "run now"), using the forecast to the end whatever the deadline.
pub fn run_now(need: &Need, hours: &[Hour], rate: &dyn Fn(f64) -> Rate, w: &Weights) -> Plan {
    let steps = need.steps as f64;
    let mut left = steps;
    let mut chosen = vec![];
    for win in windows(hours, need.now_s, i64::MAX, rate, w) {
        if left <= 0.0 {
            break;
        }
        let n = win.capacity.min(left);
        left -= n;
        chosen.push((win, n));
    }
    total(chosen, steps, need.deadline_s)
}

/// The cheapest plan that finishes `need` by its deadline; when none can, the "run now" plan,
/// marked as missing the deadline.
pub fn cheapest(need: &Need, hours: &[Hour], rate: &dyn Fn(f64) -> Rate, w: &Weights) -> Plan {
    let steps = need.steps as f64;
    let wins = windows(hours, need.now_s, need.deadline_s, rate, w);
    let room: f64 = wins.iter().map(|w| w.capacity).sum();
    if steps <= 0.0 {
        return Plan {
            slots: vec![],
            g_co2e: 0.0,
            wear_hours: 0.0,
            energy_j: 0.0,
            finish_s: Some(need.now_s),
            misses_deadline: need.now_s > need.deadline_s,
        };
    }
    if room < steps {
        return run_now(need, hours, rate, w);
    }
    let mut order: Vec<usize> = (0..wins.len()).collect();
    // Cheapest first; among equals the earlier, so a tie finishes sooner.
    order.sort_by(|&a, &b| {
        wins[a]
            .cost_per_step
            .total_cmp(&wins[b].cost_per_step)
            .then(wins[a].start_s.cmp(&wins[b].start_s))
    });
    let mut take = vec![0.0; wins.len()];
    let mut left = steps;
    for i in order {
        if left <= 0.0 {
            break;
        }
        let n = wins[i].capacity.min(left);
        take[i] = n;
        left -= n;
    }
    let chosen = wins.into_iter().zip(take).collect();
    total(chosen, steps, need.deadline_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(steps_per_hour: f64) -> impl Fn(f64) -> Rate {
        move |_| Rate {
            steps_per_hour,
            j_per_step: 3600.0,
            wear_h_per_step: 0.0,
        }
    }

    fn day(intensities: &[f64]) -> Vec<Hour> {
        intensities
            .iter()
            .enumerate()
            .map(|(i, &g)| Hour {
                start_s: i as i64 * HOUR_S,
                g_per_kwh: g,
                ambient_c: 20.0,
            })
            .collect()
    }

    const NO_WEAR: Weights = Weights {
        g_per_wear_hour: 0.0,
    };

    #[test]
    fn the_cleanest_hours_before_the_deadline_are_chosen() {
        // 1 kWh per hour at full rate (1000 steps × 3600 J); the job needs two hours.
        let hours = day(&[500.0, 400.0, 100.0, 300.0, 50.0, 10.0]);
        let need = Need {
            steps: 2000,
            now_s: 0,
            deadline_s: 5 * HOUR_S,
        };
        let p = cheapest(&need, &hours, &flat(1000.0), &NO_WEAR);
        let starts: Vec<i64> = p.slots.iter().map(|s| s.start_s / HOUR_S).collect();
        // Hours 2 and 4; hour 5 (the cleanest) lies past the deadline.
        assert_eq!(starts, vec![2, 4]);
        assert!((p.g_co2e - 150.0).abs() < 1e-9, "{}", p.g_co2e);
        assert_eq!(p.finish_s, Some(5 * HOUR_S));
        assert!(!p.misses_deadline);
        let now = run_now(&need, &hours, &flat(1000.0), &NO_WEAR);
        assert!((now.g_co2e - 900.0).abs() < 1e-9, "{}", now.g_co2e);
        assert_eq!(now.finish_s, Some(2 * HOUR_S));
        assert!(p.running_at(2 * HOUR_S + 10).is_some());
        assert!(p.running_at(HOUR_S).is_none());
    }

    #[test]
    fn a_hot_hour_holds_fewer_steps_and_wear_can_outweigh_a_cleaner_grid() {
        // Hour 0 is cool and dirtier; hour 1 is hot (half the rate, much more wear) and cleaner.
        let hours = vec![
            Hour {
                start_s: 0,
                g_per_kwh: 300.0,
                ambient_c: 15.0,
            },
            Hour {
                start_s: HOUR_S,
                g_per_kwh: 250.0,
                ambient_c: 35.0,
            },
        ];
        let rate = |ambient: f64| Rate {
            steps_per_hour: if ambient > 30.0 { 500.0 } else { 1000.0 },
            j_per_step: 3600.0,
            wear_h_per_step: if ambient > 30.0 { 0.004 } else { 0.001 },
        };
        let need = Need {
            steps: 500,
            now_s: 0,
            deadline_s: 2 * HOUR_S,
        };
        // Without wear the cleaner hour wins; with 100 g per wear hour the cool one does
        // (0.3 + 0.1 g per step against 0.25 + 0.4).
        let p = cheapest(&need, &hours, &rate, &NO_WEAR);
        assert_eq!(p.slots.len(), 1);
        assert_eq!(p.slots[0].start_s, HOUR_S);
        let w = Weights {
            g_per_wear_hour: 100.0,
        };
        let p = cheapest(&need, &hours, &rate, &w);
        assert_eq!(p.slots[0].start_s, 0);
        assert!((p.score(&w) - 200.0).abs() < 1e-9, "{}", p.score(&w));
        // 1200 steps do not fit before the deadline (1000 + 500 do): both hours are used.
        let need = Need {
            steps: 1200,
            ..need
        };
        let p = cheapest(&need, &hours, &rate, &w);
        assert_eq!(p.slots.len(), 2);
        assert!(!p.misses_deadline);
    }

    #[test]
    fn a_job_that_cannot_fit_runs_now_and_says_it_misses_the_deadline() {
        let hours = day(&[100.0, 100.0, 10.0, 10.0]);
        let need = Need {
            steps: 2500,
            now_s: HOUR_S / 2,
            deadline_s: 2 * HOUR_S,
        };
        let p = cheapest(&need, &hours, &flat(1000.0), &NO_WEAR);
        assert!(p.misses_deadline);
        // The rest of hour 0, then hours 1 and 2: as soon as possible.
        assert_eq!(p.slots.first().map(|s| s.start_s), Some(HOUR_S / 2));
        assert_eq!(p.slots.len(), 3);
        assert_eq!(p.finish_s, Some(3 * HOUR_S));
        // A forecast too short for the job: no finish, missed.
        let need = Need {
            steps: 10_000,
            ..need
        };
        let p = cheapest(&need, &hours, &flat(1000.0), &NO_WEAR);
        assert_eq!(p.finish_s, None);
        assert!(p.misses_deadline);
    }

    #[test]
    fn bad_forecast_hours_are_left_out_not_trusted() {
        let mut hours = day(&[f64::NAN, 10.0, 500.0]);
        hours[2].ambient_c = f64::INFINITY;
        let need = Need {
            steps: 500,
            now_s: 0,
            deadline_s: 3 * HOUR_S,
        };
        let p = cheapest(&need, &hours, &flat(1000.0), &NO_WEAR);
        assert_eq!(p.slots.len(), 1);
        assert_eq!(p.slots[0].start_s, HOUR_S);
        let none = Need { steps: 0, ..need };
        let p = cheapest(&none, &hours, &flat(1000.0), &NO_WEAR);
        assert!(p.slots.is_empty() && !p.misses_deadline);
    }
}
