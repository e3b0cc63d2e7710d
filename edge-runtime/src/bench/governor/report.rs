//! The benchmark's report: goal checks for ours, the CSV files and the Markdown summary.

use std::fmt::Write as _;

use super::metrics::RunSummary;
use super::workload::Scenario;
use super::{AMBIENT_C, BenchRow, ControllerKind, GoalCheck, GoalStatus, Report};

/// How far below the hard ceiling an iso-temperature setpoint must stay, in K.
pub(super) const ISO_CEILING_GAP_C: f64 = 0.5;

/// Maximum temperatures within this many K count as equal.
pub(super) const SAME_TEMP_C: f64 = 0.05;

/// The verdict of "more tokens/s at an equal or lower maximum temperature" for `ours` against
/// `other`: a tie when the throughput is the same (within half a percent: the work was
/// demand-bound or nobody had to limit it) and ours ran no hotter (within [`SAME_TEMP_C`]).
pub(super) fn compare(ours: &RunSummary, other: &RunSummary) -> GoalStatus {
    let cooler = ours.max_temp_c <= other.max_temp_c + SAME_TEMP_C;
    let same_tokens =
        (ours.tokens_per_s - other.tokens_per_s).abs() <= TIE * other.tokens_per_s.max(1e-9);
    if same_tokens && cooler {
        GoalStatus::Tie
    } else if cooler && ours.tokens_per_s > other.tokens_per_s {
        GoalStatus::Met
    } else {
        GoalStatus::NotMet
    }
}

/// Tolerance under which two throughputs count as equal (demand-bound runs).
const TIE: f64 = 0.005;

impl Report {
    /// The row for one run.
    pub fn row(&self, board: &str, scenario: Scenario, kind: ControllerKind) -> Option<&BenchRow> {
        self.rows
            .iter()
            .find(|r| r.board == board && r.scenario == scenario && r.controller == kind)
    }

    /// Checks the goals for `ours` on every board and scenario present. The
    /// comparison with a baseline that ran hotter uses ours' iso-temperature re-run.
    pub fn goals(&self) -> Vec<GoalCheck> {
        let mut out = Vec::new();
        let verdict = |met: bool| {
            if met {
                GoalStatus::Met
            } else {
                GoalStatus::NotMet
            }
        };
        for r in self
            .rows
            .iter()
            .filter(|r| r.controller == ControllerKind::Ours)
        {
            let case = format!("{} / {}", r.board, r.scenario.name());
            let s = &r.summary;
            out.push(GoalCheck {
                goal: "overshoot <= 0.5 °C, no throttle events".to_string(),
                case: case.clone(),
                status: verdict(s.overshoot_c <= 0.5 && s.throttle_events == 0),
                detail: format!(
                    "overshoot {:.2} °C, {} throttle events",
                    s.overshoot_c, s.throttle_events
                ),
            });
            if r.scenario == Scenario::Sustained {
                out.push(GoalCheck {
                    goal: ">= 97 % of the physical limit".to_string(),
                    case: case.clone(),
                    status: verdict(r.steady_fraction_of_limit >= 0.97),
                    detail: format!(
                        "steady {:.1} % (whole run {:.1} %) of {:.3} tok/s",
                        100.0 * r.steady_fraction_of_limit,
                        100.0 * r.fraction_of_limit,
                        r.limit_tokens_per_s
                    ),
                });
            }
            for other in [ControllerKind::Ipa, ControllerKind::StepWise] {
                out.extend(self.versus(r, other, &case));
            }
            out.push(GoalCheck {
                goal: "p99 inter-token latency <= 1.5 x p50".to_string(),
                case,
                status: verdict(s.p99_itl_ms <= 1.5 * s.p50_itl_ms),
                detail: if r.limit_drop > 1.0 + TIE {
                    format!(
                        "p50 {:.0} ms, p99 {:.0} ms; the physical limit itself falls ×{:.2} \
                         mid-run, so holding the setpoint stretches tokens by that much",
                        s.p50_itl_ms, s.p99_itl_ms, r.limit_drop
                    )
                } else {
                    format!("p50 {:.0} ms, p99 {:.0} ms", s.p50_itl_ms, s.p99_itl_ms)
                },
            });
        }
        out
    }

    /// "More tokens/s than `other` at an equal or lower maximum temperature" for ours' row
    /// `r`, judged on ours' iso-temperature re-run where ours ran hotter at the default
    /// setpoint; `None` when `other` did not run.
    fn versus(&self, r: &BenchRow, other: ControllerKind, case: &str) -> Option<GoalCheck> {
        let o = self.row(&r.board, r.scenario, other)?;
        let s = &r.summary;
        let direct = compare(s, &o.summary);
        let iso = self
            .iso
            .iter()
            .find(|i| i.board == r.board && i.scenario == r.scenario && i.baseline == other);
        let (status, detail) = match (direct, iso) {
            (GoalStatus::NotMet, Some(i)) => (
                compare(&i.summary, &o.summary),
                format!(
                    "at setpoint {:.1} °C: {:.3} vs {:.3} tok/s, max {:.2} vs {:.2} °C \
                     (at {:.0} °C: {:.3} tok/s, max {:.2} °C)",
                    i.setpoint_c,
                    i.summary.tokens_per_s,
                    o.summary.tokens_per_s,
                    i.summary.max_temp_c,
                    o.summary.max_temp_c,
                    r.setpoint_c,
                    s.tokens_per_s,
                    s.max_temp_c
                ),
            ),
            _ => (
                direct,
                format!(
                    "{:.3} vs {:.3} tok/s, max {:.2} vs {:.2} °C",
                    s.tokens_per_s, o.summary.tokens_per_s, s.max_temp_c, o.summary.max_temp_c
                ),
            ),
        };
        Some(GoalCheck {
            goal: format!("more tokens/s than {} at <= max temperature", other.name()),
            case: case.to_string(),
            status,
            detail,
        })
    }

    /// The iso-temperature CSV file: one row per re-run of ours.
    pub fn iso_csv(&self) -> String {
        let mut s = String::from(
            "board,scenario,baseline,setpoint_c,tokens_per_s,max_temp_c,baseline_tokens_per_s,baseline_max_temp_c\n",
        );
        for i in &self.iso {
            let b = self.row(&i.board, i.scenario, i.baseline);
            let _ = writeln!(
                s,
                "{},{},{},{:.2},{:.4},{:.3},{:.4},{:.3}",
                i.board,
                i.scenario.name(),
                i.baseline.name(),
                i.setpoint_c,
                i.summary.tokens_per_s,
                i.summary.max_temp_c,
                b.map_or(f64::NAN, |r| r.summary.tokens_per_s),
                b.map_or(f64::NAN, |r| r.summary.max_temp_c)
            );
        }
        s
    }

    /// The CSV file: one row per run.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "board,scenario,controller,setpoint_c,tokens_per_s,limit_tokens_per_s,fraction_of_limit,steady_fraction_of_limit,max_temp_c,overshoot_c,seconds_above_setpoint,throttle_events,p50_itl_ms,p99_itl_ms,energy_per_token_j,wear_vs_setpoint,training_steps_per_s,decide_mean_us,decide_max_us\n",
        );
        for r in &self.rows {
            let m = &r.summary;
            let _ = writeln!(
                s,
                "{},{},{},{:.1},{:.4},{:.4},{:.4},{:.4},{:.3},{:.3},{:.1},{},{:.1},{:.1},{:.4},{:.4},{:.4},{:.2},{:.2}",
                r.board,
                r.scenario.name(),
                r.controller.name(),
                r.setpoint_c,
                m.tokens_per_s,
                r.limit_tokens_per_s,
                r.fraction_of_limit,
                r.steady_fraction_of_limit,
                m.max_temp_c,
                m.overshoot_c,
                m.seconds_above_setpoint,
                m.throttle_events,
                m.p50_itl_ms,
                m.p99_itl_ms,
                m.energy_per_token_j,
                m.wear_vs_setpoint,
                m.training_steps_per_s,
                r.decide_mean_us,
                r.decide_max_us
            );
        }
        s
    }

    /// The Markdown report: results table, goal checks, governor overhead.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Governor benchmark\n\nSimulated SoC, {} s per run, control period {} ms, ambient {AMBIENT_C} °C. \
             `limit` is the physical limit: the highest throughput whose steady state sits at the setpoint, \
             searched over frequency x threads x duty on the twin. `steady` is the last third of the run \
             against the limit in force then. Wear is the mean Arrhenius factor (Ea 0.7 eV) relative to \
             running at the setpoint. The noisy sensor adds Gaussian noise of σ = {} °C and fails \
             {} % of reads.\n",
            self.duration.as_secs(),
            self.period.as_millis(),
            self.noise.0,
            100.0 * self.noise.1
        );
        s.push_str("| board | scenario | controller | tok/s | of limit | steady | max °C | overshoot °C | s above | throttle events | p50 ms | p99 ms | J/token | wear x |\n");
        s.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let m = &r.summary;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.1} % | {:.1} % | {:.2} | {:.2} | {:.0} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
                r.board,
                r.scenario.name(),
                r.controller.name(),
                m.tokens_per_s,
                100.0 * r.fraction_of_limit,
                100.0 * r.steady_fraction_of_limit,
                m.max_temp_c,
                m.overshoot_c,
                m.seconds_above_setpoint,
                m.throttle_events,
                m.p50_itl_ms,
                m.p99_itl_ms,
                m.energy_per_token_j,
                m.wear_vs_setpoint
            );
        }
        let goals = self.goals();
        let count = |st| goals.iter().filter(|g| g.status == st).count();
        let _ = writeln!(
            s,
            "\n## Goals ({} met, {} not met, {} ties: same throughput, demand-bound or unlimited, at no higher temperature)\n\n\
             Against a baseline that ran hotter, ours is re-run with its setpoint raised by the \
             difference in maximum temperature (at most to {ISO_CEILING_GAP_C} °C under the hard \
             ceiling) and compared at that equal thermal envelope.\n",
            count(GoalStatus::Met),
            count(GoalStatus::NotMet),
            count(GoalStatus::Tie)
        );
        s.push_str("| goal | case | met | figures |\n|---|---|---|---|\n");
        for g in &goals {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                g.goal,
                g.case,
                g.status.as_str(),
                g.detail
            );
        }
        let ours: Vec<&BenchRow> = self
            .rows
            .iter()
            .filter(|r| r.controller == ControllerKind::Ours)
            .collect();
        if !ours.is_empty() {
            let mean = ours.iter().map(|r| r.decide_mean_us).sum::<f64>() / ours.len() as f64;
            let max = ours.iter().map(|r| r.decide_max_us).fold(0.0, f64::max);
            let share = mean / (self.period.as_secs_f64() * 1e6) * 100.0;
            let _ = writeln!(
                s,
                "\n## Governor overhead\n\n`decide` takes {mean:.1} µs per call on average (longest {max:.0} µs), \
                 {share:.4} % of one core at a {} ms period.",
                self.period.as_millis()
            );
        }
        s
    }
}
