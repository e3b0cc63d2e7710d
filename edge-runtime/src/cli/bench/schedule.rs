//! `thermo bench schedule`: a week of nightly LoRA jobs on the simulated boards, run now or
//! deferred by the planner, on the shipped week (`models/schedule/week.csv`: a July week of
//! hourly ambient from NREL's TMY3 record for Greensboro, NC, and a grid intensity modelled
//! from its irradiance around the US mean) or on `--week FILE`. Prints a Markdown table and
//! writes it with the JSON rows to `--out`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use edge_runtime::bench::schedule::{ScheduleOptions, markdown, run_schedule_bench};
use edge_runtime::eco::EcoConfig;
use edge_runtime::schedule::Series;

/// The shipped week.
const WEEK: &str = include_str!("../../../../models/schedule/week.csv");

/// Flags of `thermo bench schedule`.
#[derive(Debug, Args)]
pub struct ScheduleBenchArgs {
    /// A week in the same layout (time, ambient_c, ..., grid_g_co2e_per_kwh) instead of the
    /// shipped one.
    #[arg(long, value_name = "FILE")]
    pub week: Option<PathBuf>,
    /// Hours one job takes at full speed.
    #[arg(long, default_value_t = 2.0)]
    pub job_hours: f64,
    /// Seconds per training step at full speed (sets the step count; the figures scale with
    /// the job's length, not its steps).
    #[arg(long, default_value_t = 2.0)]
    pub step_s: f64,
    /// Hour of submission, UTC (23 is 18:00 at the shipped week's UTC-5).
    #[arg(long, default_value_t = 23)]
    pub submit_utc_hour: i64,
    /// Hours from submission to the deadline.
    #[arg(long, default_value_t = 24)]
    pub deadline_h: i64,
    /// The governor's setpoint, °C.
    #[arg(long, default_value_t = 70.0)]
    pub setpoint: f64,
    /// Folder for schedule.md and schedule.json.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

/// Runs `thermo bench schedule`.
pub fn bench(args: &ScheduleBenchArgs) -> Result<()> {
    let finite_positive = |v: f64| v.is_finite() && v > 0.0;
    if !(finite_positive(args.job_hours) && finite_positive(args.step_s)) {
        bail!("--job-hours and --step-s must be positive numbers");
    }
    if !(0..24).contains(&args.submit_utc_hour) || !(1..=24 * 7).contains(&args.deadline_h) {
        bail!("--submit-utc-hour must be 0-23 and --deadline-h 1-168");
    }
    let text = match &args.week {
        Some(p) => edge_runtime::schedule::forecast::read_bounded(p)
            .with_context(|| p.display().to_string())?,
        None => WEEK.to_string(),
    };
    let series = |names: &[&str]| {
        Series::parse_csv(&text, names)
            .map_err(|(line, m)| anyhow::anyhow!("week, line {line}: {m}"))
    };
    let ambient = series(&["ambient"])?;
    let grid = series(&["grid", "intensity"])?;
    let opts = ScheduleOptions {
        ambient,
        grid,
        step_s_full: args.step_s,
        job_hours_full: args.job_hours,
        submit_utc_hour: args.submit_utc_hour,
        deadline_h: args.deadline_h,
        setpoint_c: args.setpoint,
        factors: EcoConfig::default().factors()?,
    };
    let rows = run_schedule_bench(&opts)?;
    let table = markdown(&rows);
    print!("{table}");
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let md = args.out.join("schedule.md");
    std::fs::write(&md, &table).with_context(|| md.display().to_string())?;
    let json = args.out.join("schedule.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rows)?)
        .with_context(|| json.display().to_string())?;
    eprintln!("wrote {} and {}", md.display(), json.display());
    Ok(())
}
