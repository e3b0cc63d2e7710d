//! The agent's decision for one job at one time, with no clock and no I/O: the job's rest is
//! planned with [`crate::schedule::cheapest`] on the hours from now to its deadline, and the
//! job starts (or keeps running) when the plan runs it now, pauses when it does not, and
//! runs at once, late, when its deadline is missed or would be.

use crate::schedule::{Plan, Source, Weights, cheapest, hours, run_now};

use super::queue::{Decision, Job, JobState};
use super::rate::HeatModel;

/// Hours past the deadline (or now, when later) the forecast is laid out for the run-now
/// counterfactual, which may run past the deadline.
pub const HORIZON_PAST_DEADLINE_S: i64 = 7 * 24 * 3600;

/// What the agent should do with a job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start (or resume) its process; `late` when it runs because its deadline is missed or
    /// would be.
    Start {
        /// Runs at once because of its deadline, not because the hour is cheap.
        late: bool,
    },
    /// Stop its process at the next step boundary (it checkpoints); the hour is not planned.
    Pause,
    /// Leave it running.
    Keep,
    /// Leave it waiting for a planned hour.
    Wait,
    /// Nothing is left to do: mark it done.
    Finish,
}

/// A job's situation at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// Now, Unix seconds.
    pub now_s: i64,
    /// Units of work left (steps not yet checkpointed).
    pub steps_left: u64,
}

/// The cheapest plan for the rest of `job` from `tick`, and the run-now counterfactual.
pub fn plan_job(
    job: &Job,
    tick: Tick,
    grid: &Source,
    ambient: &Source,
    weights: &Weights,
) -> (Plan, Plan) {
    let need = crate::schedule::Need {
        steps: tick.steps_left,
        now_s: tick.now_s,
        deadline_s: job.deadline_s,
    };
    let to_s = job
        .deadline_s
        .max(tick.now_s)
        .saturating_add(HORIZON_PAST_DEADLINE_S);
    let hs = hours(grid, ambient, tick.now_s, to_s);
    let model: HeatModel = job.model;
    let rate = move |a: f64| model.rate(a);
    (
        cheapest(&need, &hs, &rate, weights),
        run_now(&need, &hs, &rate, weights),
    )
}

/// The plan and its counterfactual as persisted and logged.
pub fn summary(plan: &Plan, now: &Plan, weights: &Weights, at_s: i64) -> Decision {
    Decision {
        at_s,
        first_start_s: plan.slots.first().map(|s| s.start_s),
        windows: plan.slots.len(),
        g_co2e: plan.g_co2e,
        wear_hours: plan.wear_hours,
        finish_s: plan.finish_s,
        now_g_co2e: now.g_co2e,
        now_wear_hours: now.wear_hours,
        now_finish_s: now.finish_s,
        saved_g_co2e: (now.score(weights) - plan.score(weights)).max(0.0),
        misses_deadline: plan.misses_deadline,
    }
}

/// What to do with a job in `state` at `tick`, given its `plan` and deadline.
pub fn decide(state: JobState, plan: &Plan, tick: Tick, deadline_s: i64) -> Action {
    if state.is_final() {
        return Action::Keep;
    }
    let late = plan.misses_deadline || tick.now_s >= deadline_s;
    let planned_now = plan.running_at(tick.now_s).is_some();
    match state {
        JobState::Running if late || planned_now || tick.steps_left == 0 => Action::Keep,
        JobState::Running => Action::Pause,
        _ if tick.steps_left == 0 => Action::Finish,
        _ if late || planned_now => Action::Start { late },
        _ => Action::Wait,
    }
}

/// The state of a job whose process ended: paused when the agent stopped it, or when it
/// ended well with work `unfinished` (a training run stopped by a signal the agent did not
/// send: it resumes from its checkpoint); done when it ended well with nothing left; failed
/// otherwise.
pub fn ended(stopped_by_agent: bool, success: bool, unfinished: bool) -> JobState {
    match (stopped_by_agent, success, unfinished) {
        (true, _, _) | (false, true, true) => JobState::Paused,
        (false, true, false) => JobState::Done,
        (false, false, _) => JobState::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deferred::queue::tests::job;
    use crate::schedule::{HOUR_S, Series};

    /// Hour 0 at 500 g/kWh, hour 1 at 50, hour 2 at 400, hour 3 at 300, then 450; 20 °C.
    fn grid() -> Source {
        let values = [500.0, 50.0, 400.0, 300.0, 450.0, 450.0, 450.0, 450.0];
        Source::Hourly(Series::from_points(
            values
                .iter()
                .enumerate()
                .map(|(i, &g)| (i as i64 * HOUR_S, g)),
        ))
    }

    const W: Weights = Weights {
        g_per_wear_hour: 0.0,
    };

    /// The decision for a job of `steps` due at `deadline_h`, in `state` at `now_s`.
    fn at(state: JobState, now_s: i64, steps: u64, deadline_h: i64) -> (Action, Plan) {
        let mut j = job("t", state);
        j.submit_s = 0;
        j.deadline_s = deadline_h * HOUR_S;
        let tick = Tick {
            now_s,
            steps_left: steps,
        };
        let (plan, _) = plan_job(&j, tick, &grid(), &Source::Constant(20.0), &W);
        (decide(state, &plan, tick, j.deadline_s), plan)
    }

    #[test]
    fn a_queued_job_waits_for_its_planned_hour_then_starts() {
        // 100 steps of 2 s fit in the clean hour 1, well before the deadline at hour 6.
        let (a, plan) = at(JobState::Queued, 600, 100, 6);
        assert_eq!(a, Action::Wait);
        assert_eq!(plan.slots.first().map(|s| s.start_s), Some(HOUR_S));
        assert_eq!(
            at(JobState::Queued, HOUR_S + 60, 100, 6).0,
            Action::Start { late: false }
        );
        assert_eq!(
            at(JobState::Paused, HOUR_S + 60, 100, 6).0,
            Action::Start { late: false }
        );
    }

    #[test]
    fn a_running_job_keeps_running_in_its_hour_and_pauses_outside_it() {
        assert_eq!(at(JobState::Running, HOUR_S + 60, 100, 6).0, Action::Keep);
        // In hour 2 the rest fits in hour 3 (cleaner) before the deadline: pause.
        assert_eq!(
            at(JobState::Running, 2 * HOUR_S + 5, 100, 6).0,
            Action::Pause
        );
        assert_eq!(at(JobState::Queued, 2 * HOUR_S + 5, 100, 6).0, Action::Wait);
    }

    #[test]
    fn a_missed_or_unreachable_deadline_runs_the_job_at_once_and_says_so() {
        // Past the deadline: start now, late.
        assert_eq!(
            at(JobState::Queued, 7 * HOUR_S, 100, 6).0,
            Action::Start { late: true }
        );
        // 3 hours of work (5400 steps of 2 s) cannot fit before a deadline 2 hours away.
        let (a, plan) = at(JobState::Paused, 600, 5400, 2);
        assert_eq!(a, Action::Start { late: true });
        assert!(plan.misses_deadline);
        assert_eq!(at(JobState::Running, 600, 5400, 2).0, Action::Keep);
    }

    #[test]
    fn a_job_with_nothing_left_is_finished_and_final_jobs_stay_as_they_are() {
        assert_eq!(at(JobState::Paused, 600, 0, 6).0, Action::Finish);
        assert_eq!(at(JobState::Done, HOUR_S + 60, 100, 6).0, Action::Keep);
        assert_eq!(at(JobState::Failed, 7 * HOUR_S, 100, 6).0, Action::Keep);
    }

    #[test]
    fn a_stopped_process_pauses_its_job_and_one_that_ends_alone_finishes_or_fails_it() {
        // Training exits 0 on SIGTERM, indexing 1: both are paused.
        assert_eq!(ended(true, true, true), JobState::Paused);
        assert_eq!(ended(true, false, true), JobState::Paused);
        assert_eq!(ended(false, true, false), JobState::Done);
        assert_eq!(ended(false, false, true), JobState::Failed);
        // A run that a terminal's Ctrl-C or systemd stopped, with steps left: paused.
        assert_eq!(ended(false, true, true), JobState::Paused);
    }

    #[test]
    fn the_summary_counts_the_saving_against_running_now() {
        let mut j = job("t", JobState::Queued);
        j.deadline_s = 6 * HOUR_S;
        let tick = Tick {
            now_s: 0,
            steps_left: 1800,
        };
        let (plan, now) = plan_job(&j, tick, &grid(), &Source::Constant(20.0), &W);
        let d = summary(&plan, &now, &W, 0);
        // 1800 steps × 8 J = 4 Wh: 0.2 g in hour 1 against 2 g in hour 0.
        assert!((d.g_co2e - 0.2).abs() < 1e-9, "{d:?}");
        assert!((d.now_g_co2e - 2.0).abs() < 1e-9, "{d:?}");
        assert!((d.saved_g_co2e - 1.8).abs() < 1e-9, "{d:?}");
        assert_eq!(d.finish_s, Some(2 * HOUR_S));
        assert_eq!(d.now_finish_s, Some(HOUR_S));
        assert!(!d.misses_deadline);
    }
}
