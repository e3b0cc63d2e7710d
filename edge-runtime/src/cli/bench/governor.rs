//! `thermo bench governor`: runs the governor benchmark on the simulated SoC (every board ×
//! scenario × controller, offline and faster than real time), writes `governor.csv`,
//! `governor_iso.csv`, `governor.md` and the SVG plots into the output folder, and prints the
//! Markdown report and the verdict on the goals.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use edge_runtime::bench::governor::{BenchOptions, GoalCheck, GoalStatus, run_governor_bench};

/// Simulated length of each run with `--quick`.
const QUICK_RUN: Duration = Duration::from_secs(5 * 60);

/// Flags of `thermo bench governor`.
#[derive(Debug, Args)]
pub struct GovernorBenchArgs {
    /// Write governor.csv, governor_iso.csv, governor.md and plots/ into this folder.
    #[arg(long, value_name = "DIR", default_value = "governor-bench")]
    pub out: PathBuf,
    /// Run 5 simulated minutes per case instead of 30 (a smoke run: the goal figures are
    /// defined on the full runs).
    #[arg(long)]
    pub quick: bool,
}

/// The options `thermo bench governor` runs with.
pub fn options(args: &GovernorBenchArgs) -> BenchOptions {
    let mut opts = BenchOptions::default();
    if args.quick {
        opts.duration = QUICK_RUN;
    }
    opts
}

/// Runs the governor benchmark, writes its files and prints the report and the verdict.
pub fn bench(args: &GovernorBenchArgs) -> Result<()> {
    let opts = options(args);
    let runs = opts.boards.len() * opts.scenarios.len() * opts.controllers.len();
    log::info!(
        "governor benchmark: {runs} runs of {} simulated s into {}",
        opts.duration.as_secs(),
        args.out.display()
    );
    let started = Instant::now();
    let report = run_governor_bench(&args.out, &opts)
        .with_context(|| format!("running the governor benchmark into {}", args.out.display()))?;
    println!("{}", report.to_markdown());
    println!("{}", verdict(&report.goals()));
    eprintln!(
        "{} runs in {:.1} s; wrote {}",
        report.rows.len(),
        started.elapsed().as_secs_f64(),
        written(&args.out, &opts).join(", ")
    );
    Ok(())
}

/// The files a run writes, for the closing message.
fn written(out: &Path, opts: &BenchOptions) -> Vec<String> {
    let mut files: Vec<String> = ["governor.csv", "governor_iso.csv", "governor.md"]
        .iter()
        .map(|f| out.join(f).display().to_string())
        .collect();
    if opts.plots {
        files.push(format!("{}/*.svg", out.join("plots").display()));
    }
    files
}

/// One line saying whether every goal holds, followed by one line per goal that does not.
pub fn verdict(goals: &[GoalCheck]) -> String {
    let count = |s: GoalStatus| goals.iter().filter(|g| g.status == s).count();
    let (met, ties, missed) = (
        count(GoalStatus::Met),
        count(GoalStatus::Tie),
        count(GoalStatus::NotMet),
    );
    if missed == 0 {
        return format!(
            "Verdict: all {} goal checks hold ({met} met, {ties} ties).",
            goals.len()
        );
    }
    let mut s = format!(
        "Verdict: {missed} of {} goal checks do not hold ({met} met, {ties} ties):",
        goals.len()
    );
    for g in goals.iter().filter(|g| g.status == GoalStatus::NotMet) {
        s.push_str(&format!("\n- {} / {}: {}", g.goal, g.case, g.detail));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: GoalStatus, goal: &str) -> GoalCheck {
        GoalCheck {
            goal: goal.to_string(),
            case: "rpi4 / sustained".to_string(),
            status,
            detail: "figures".to_string(),
        }
    }

    #[test]
    fn the_verdict_counts_ties_as_holding_and_lists_each_miss() {
        let all = [check(GoalStatus::Met, "a"), check(GoalStatus::Tie, "b")];
        assert_eq!(
            verdict(&all),
            "Verdict: all 2 goal checks hold (1 met, 1 ties)."
        );
        let some = [
            check(GoalStatus::Met, "a"),
            check(GoalStatus::NotMet, "overshoot"),
        ];
        assert_eq!(
            verdict(&some),
            "Verdict: 1 of 2 goal checks do not hold (1 met, 0 ties):\n\
             - overshoot / rpi4 / sustained: figures"
        );
    }

    #[test]
    fn a_quick_run_writes_one_csv_row_per_board_scenario_and_controller() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("nested").join("bench");
        bench(&GovernorBenchArgs {
            out: out.clone(),
            quick: true,
        })?;
        let csv = std::fs::read_to_string(out.join("governor.csv"))?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        for column in [
            "board",
            "scenario",
            "controller",
            "overshoot_c",
            "fraction_of_limit",
        ] {
            assert!(header.contains(&column), "{column} missing from {header:?}");
        }
        let controller = header
            .iter()
            .position(|c| *c == "controller")
            .unwrap_or(usize::MAX);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 4 * 6 * 5);
        for name in ["ours", "auto", "ipa", "step_wise", "firmware"] {
            let n = rows
                .iter()
                .filter(|r| r.get(controller) == Some(&name))
                .count();
            assert_eq!(n, 24, "{name}");
        }
        let md = std::fs::read_to_string(out.join("governor.md"))?;
        assert!(md.starts_with("# Governor benchmark"));
        let plots = std::fs::read_dir(out.join("plots"))?.count();
        assert_eq!(
            plots,
            120 + 4,
            "a plot per run and a setpoint sweep per board"
        );
        let sweep = std::fs::read_to_string(out.join("eco_setpoint.csv"))?;
        assert!(sweep.starts_with("board,setpoint_c,"));
        assert_eq!(sweep.lines().count(), 1 + 3 * 17 + 24);
        Ok(())
    }

    #[test]
    fn quick_shortens_the_runs_and_keeps_every_case() {
        let full = options(&GovernorBenchArgs {
            out: PathBuf::from("x"),
            quick: false,
        });
        let quick = options(&GovernorBenchArgs {
            out: PathBuf::from("x"),
            quick: true,
        });
        assert_eq!(full.duration, Duration::from_secs(30 * 60));
        assert_eq!(quick.duration, QUICK_RUN);
        assert_eq!(quick.boards, full.boards);
        assert_eq!(quick.scenarios, full.scenarios);
        assert_eq!(quick.controllers, full.controllers);
    }
}
