//! The benchmark's report: goal checks for ours, the CSV files and the Markdown summary.

use std::fmt::Write as _;

use super::metrics::RunSummary;
use super::workload::Scenario;
use super::{AMBIENT_C, BenchRow, ControllerKind, GoalCheck, GoalStatus, Report, SweepPoint};
use crate::bench::svg::{self, Panel};

/// The plot of g CO2e per 1000 tokens against the fixed setpoint on one board (sustained
/// generation), with the eco setpoint's run marked at the mean setpoint it held.
pub(super) fn sweep_svg(board: &str, points: &[SweepPoint], auto: Option<&BenchRow>) -> String {
    let curve = |f: fn(&RunSummary) -> f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (p.setpoint_c, f(&p.summary)))
            .collect()
    };
    let panels = vec![
        Panel {
            label: "g CO2e/1k tok".to_string(),
            colour: "#2a8a3e",
            points: curve(RunSummary::g_per_ktok),
            references: Vec::new(),
        },
        Panel {
            label: "grid part".to_string(),
            colour: "#1f5fa8",
            points: curve(|s| s.grid_g_per_ktok),
            references: Vec::new(),
        },
        Panel {
            label: "wear part".to_string(),
            colour: "#d04a02",
            points: curve(|s| s.wear_g_per_ktok),
            references: Vec::new(),
        },
    ];
    let marks: Vec<svg::Mark> = auto
        .map(|a| {
            let s = &a.summary;
            vec![
                (
                    0,
                    s.mean_setpoint_c,
                    s.g_per_ktok(),
                    format!("auto {:.1} °C", s.mean_setpoint_c),
                ),
                (1, s.mean_setpoint_c, s.grid_g_per_ktok, "auto".to_string()),
                (2, s.mean_setpoint_c, s.wear_g_per_ktok, "auto".to_string()),
            ]
        })
        .unwrap_or_default();
    let lo = points.first().map_or(50.0, |p| p.setpoint_c);
    let hi = points.last().map_or(80.0, |p| p.setpoint_c);
    svg::render_over(
        &format!("{board} · sustained: g CO2e per 1000 tokens against the setpoint"),
        (lo, hi),
        "°C",
        &panels,
        &marks,
    )
}

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
                        "steady {:.1} % of the steady-state limit {:.3} tok/s (whole run {:.1} % \
                         of the foresight bound {:.3} tok/s)",
                        100.0 * r.steady_fraction_of_limit,
                        r.steady_limit_tokens_per_s,
                        100.0 * r.fraction_of_limit,
                        r.limit_tokens_per_s
                    ),
                });
            }
            for other in [ControllerKind::Ipa, ControllerKind::StepWise] {
                out.extend(self.versus(r, other, &case));
            }
            out.extend(self.eco_goal(r, &case));
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

    /// "The eco setpoint's g CO2e per token is no higher than the best of the fixed setpoint,
    /// IPA, step_wise and firmware only", all scored with the same factors; `None` when the
    /// auto row did not run.
    fn eco_goal(&self, ours: &BenchRow, case: &str) -> Option<GoalCheck> {
        let auto = self.row(&ours.board, ours.scenario, ControllerKind::Auto)?;
        let best = [
            ControllerKind::Ours,
            ControllerKind::Ipa,
            ControllerKind::StepWise,
            ControllerKind::Firmware,
        ]
        .into_iter()
        .filter_map(|k| self.row(&ours.board, ours.scenario, k))
        .min_by(|a, b| a.summary.g_per_ktok().total_cmp(&b.summary.g_per_ktok()))?;
        let (a, b) = (auto.summary.g_per_ktok(), best.summary.g_per_ktok());
        let s = &auto.summary;
        Some(GoalCheck {
            goal: "auto: g CO2e/token <= best of ours, ipa, step_wise, firmware".to_string(),
            case: case.to_string(),
            status: if a <= b * (1.0 + 1e-9) {
                GoalStatus::Met
            } else {
                GoalStatus::NotMet
            },
            detail: format!(
                "{a:.4} vs {b:.4} g/1k tokens ({}); auto held {:.1} °C on average, \
                 overshoot {:.2} °C, {} throttle events",
                best.controller.name(),
                s.mean_setpoint_c,
                s.overshoot_c,
                s.throttle_events
            ),
        })
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

    /// The sweep's CSV file: one row per board and fixed setpoint.
    pub fn sweep_csv(&self) -> String {
        let mut s = String::from(
            "board,setpoint_c,tokens_per_s,max_temp_c,energy_per_token_j,grid_g_per_ktok,wear_g_per_ktok,g_per_ktok\n",
        );
        for p in &self.sweep {
            let m = &p.summary;
            let _ = writeln!(
                s,
                "{},{:.1},{:.4},{:.3},{:.4},{:.5},{:.5},{:.5}",
                p.board,
                p.setpoint_c,
                m.tokens_per_s,
                m.max_temp_c,
                m.energy_per_token_j,
                m.grid_g_per_ktok,
                m.wear_g_per_ktok,
                m.g_per_ktok()
            );
        }
        s
    }

    /// The CSV file: one row per run.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "board,scenario,controller,setpoint_c,tokens_per_s,limit_tokens_per_s,fraction_of_limit,steady_fraction_of_limit,max_temp_c,overshoot_c,seconds_above_setpoint,throttle_events,p50_itl_ms,p99_itl_ms,energy_per_token_j,wear_vs_setpoint,training_steps_per_s,decide_mean_us,decide_max_us,mean_setpoint_c,work_tokens_per_s,grid_g_per_ktok,wear_g_per_ktok,g_per_ktok,wear_hours,limit_cap_c,steady_limit_tokens_per_s\n",
        );
        for r in &self.rows {
            let m = &r.summary;
            let _ = writeln!(
                s,
                "{},{},{},{:.1},{:.4},{:.4},{:.4},{:.4},{:.3},{:.3},{:.1},{},{:.1},{:.1},{:.4},{:.4},{:.4},{:.2},{:.2},{:.2},{:.4},{:.5},{:.5},{:.5},{:.4},{:.2},{:.4}",
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
                r.decide_max_us,
                m.mean_setpoint_c,
                m.work_tokens_per_s,
                m.grid_g_per_ktok,
                m.wear_g_per_ktok,
                m.g_per_ktok(),
                m.wear_hours,
                r.limit_cap_c,
                r.steady_limit_tokens_per_s
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
             `of limit` is the run's work (tokens, and training steps counted as the tokens the same compute \
             makes) against the foresight bound: the most work any controller could have done with the die at \
             or below the setpoint (or the run's own maximum when it ran hotter), knowing the load, the \
             ambient and the fan in advance, from the Lagrangian dual over the twin's heat network, so no \
             run can pass 100 %. `steady` is tokens/s over the last third of the run against the \
             steady-state limit (the best operating point whose steady state sits at the setpoint). \
             Carbon per 1000 work tokens: board energy x the world grid intensity (473 g/kWh, Ember 2024) \
             plus the board's embodied carbon (eco factor table) over a five-year life rated at 50 °C, \
             spent faster by Arrhenius wear (Ea 0.7 eV). `auto` is ours with the eco setpoint. Wear is the mean Arrhenius factor (Ea 0.7 eV) relative to \
             running at the setpoint. The noisy sensor adds Gaussian noise of σ = {} °C and fails \
             {} % of reads.\n",
            self.duration.as_secs(),
            self.period.as_millis(),
            self.noise.0,
            100.0 * self.noise.1
        );
        s.push_str("| board | scenario | controller | setpoint °C | tok/s | of limit | steady | max °C | overshoot °C | s above | throttle events | p50 ms | p99 ms | J/token | wear x | g CO2e/1k tok (grid + wear) |\n");
        s.push_str(
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let m = &r.summary;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.3} | {:.1} % | {:.1} % | {:.2} | {:.2} | {:.0} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.4} ({:.4} + {:.4}) |",
                r.board,
                r.scenario.name(),
                r.controller.name(),
                m.mean_setpoint_c,
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
                m.wear_vs_setpoint,
                m.g_per_ktok(),
                m.grid_g_per_ktok,
                m.wear_g_per_ktok
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
