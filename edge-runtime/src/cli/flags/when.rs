//! `--when now|auto` and `--deadline` of `thermo train` and `thermo index add`, and the
//! forecast flags the plan uses (shared with `thermo agent`): with `--when auto` the command
//! does not run but is queued, with its whole command line, for the agent, and prints the plan
//! it was given against running it now.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use edge_runtime::config::{Config, Layers};
use edge_runtime::deferred::decide::summary;
use edge_runtime::deferred::queue::{QUEUE_FILE, QueueError, update};
use edge_runtime::deferred::{Decision, HeatModel, Job, JobKind, JobState, Tick, plan_job};
use edge_runtime::eco::Factors;
use edge_runtime::schedule::{Plan, Series, Source, Weights, parse_time};

/// When a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum When {
    /// At once, in this process.
    #[default]
    Now,
    /// Queued for `thermo agent`, which runs it in the cleanest, coolest hours before
    /// `--deadline`.
    Auto,
}

/// Where the plan's hourly grid intensity and ambient come from.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Hourly grid carbon-intensity forecast, CSV (a time column, then g CO2e/kWh); default:
    /// the region's constant factor from the eco configuration, so that only heat decides.
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// Hourly ambient-temperature forecast, CSV (a time column, then °C); default: the
    /// board's `ambient_temp` sensor now (`thermo agent`, when `[sensors]` configures one),
    /// else `--ambient-c`, every hour.
    #[arg(long, value_name = "FILE")]
    pub ambient: Option<PathBuf>,
    /// Ambient temperature the plan assumes without `--ambient`, °C.
    #[arg(long, default_value_t = 20.0, value_name = "CELSIUS")]
    pub ambient_c: f64,
}

/// Column names a grid-intensity forecast's value column may carry.
const GRID_COLUMNS: [&str; 4] = ["carbon_intensity", "intensity", "g_co2", "co2"];
/// Column names an ambient forecast's value column may carry.
const AMBIENT_COLUMNS: [&str; 3] = ["temperature", "ambient", "temp"];

impl PlanArgs {
    /// The grid intensity: the forecast file, else the constant `factor`.
    pub fn grid_source(&self, factor: f64) -> Result<Source> {
        Ok(match &self.grid {
            Some(p) => Source::Hourly(Series::read_csv(p, &GRID_COLUMNS)?),
            None => Source::Constant(factor),
        })
    }

    /// The ambient: the forecast file, else `--ambient-c`.
    pub fn ambient_source(&self) -> Result<Source> {
        if !self.ambient_c.is_finite() {
            bail!("--ambient-c {} is not a temperature", self.ambient_c);
        }
        Ok(match &self.ambient {
            Some(p) => Source::Hourly(Series::read_csv(p, &AMBIENT_COLUMNS)?),
            None => Source::Constant(self.ambient_c),
        })
    }
}

/// Flags of a command that may be deferred.
#[derive(Debug, Clone, Args)]
pub struct WhenArgs {
    /// When to run: `now`, or `auto` to queue the job for `thermo agent`, which runs it in
    /// the hours of least grid carbon and wear before `--deadline`.
    #[arg(long, value_enum, default_value_t = When::Now)]
    pub when: When,
    /// Latest finish for `--when auto`: RFC 3339, a UTC date-time (2026-12-02T06:00), or Unix
    /// seconds.
    #[arg(long, value_name = "TIME")]
    pub deadline: Option<String>,
    /// Seconds one unit of the job takes at full speed, for the plan (default: 2 per
    /// training step; 600 for an indexing run).
    #[arg(long, value_name = "SECONDS")]
    pub plan_step_s: Option<f64>,
    /// Power the job adds to the idle board at full speed, W, for the plan.
    #[arg(long, default_value_t = 4.0, value_name = "WATTS")]
    pub plan_power_w: f64,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// The queued job this process runs for `thermo agent` (set by the agent).
    #[arg(long, hide = true, value_name = "ID")]
    pub agent_job: Option<String>,
}

/// The flags of [`WhenArgs`] and [`PlanArgs`] that take a value and belong to the submission,
/// not to the queued command.
const SUBMIT_FLAGS: [&str; 7] = [
    "--when",
    "--deadline",
    "--plan-step-s",
    "--plan-power-w",
    "--grid",
    "--ambient",
    "--ambient-c",
];

/// `args` without the submission's own flags (`--when auto`, `--deadline ..` and the plan's).
pub fn queued_argv(args: &[String]) -> Vec<String> {
    let mut out = vec![];
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if SUBMIT_FLAGS.contains(&a.as_str()) {
            skip_value = true;
            continue;
        }
        if SUBMIT_FLAGS
            .iter()
            .any(|f| a.strip_prefix(f).is_some_and(|rest| rest.starts_with('=')))
        {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// What a command submits.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The kind of job.
    pub kind: JobKind,
    /// Units of work (training steps; 1 for an indexing run).
    pub steps: u64,
    /// The training output folder.
    pub out: Option<PathBuf>,
    /// Seconds per unit at full speed without `--plan-step-s`.
    pub default_step_s: f64,
    /// The setpoint the governor holds, °C.
    pub setpoint_c: f64,
}

/// Now, Unix seconds.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A time as `2026-12-02T06:00:00Z`.
pub fn show_time(t_s: i64) -> String {
    jiff::Timestamp::from_second(t_s).map_or_else(|_| format!("{t_s} s"), |t| t.to_string())
}

/// The configuration (`--config` or the service's file < `THERMO_*`), with `region` over
/// its `[eco]` region.
pub fn load_config(config: Option<&Path>, region: Option<&str>) -> Result<Config> {
    let layers = Layers::from_process(config, vec![])?;
    Ok(Config::load_with(&layers, |c| {
        if let Some(r) = region {
            c.eco.region = r.to_string();
        }
    })?)
}

/// The eco configuration's factors (see [`load_config`]).
pub fn eco_factors(config: Option<&Path>, region: Option<&str>) -> Result<Factors> {
    Ok(load_config(config, region)?.eco.factors()?)
}

/// The wear weighting of the plan.
pub fn weights(factors: &Factors) -> Weights {
    Weights {
        g_per_wear_hour: factors.embodied_g_per_hour(),
    }
}

/// Queues the command for `thermo agent` and prints its plan against running it now.
pub fn submit(when: &WhenArgs, sub: Submission, factors: &Factors) -> Result<()> {
    let Some(deadline) = &when.deadline else {
        bail!("--when auto needs --deadline TIME (the latest the job may finish)");
    };
    let deadline_s = parse_time(deadline).map_err(|e| anyhow::anyhow!("--deadline: {e}"))?;
    let now = now_s();
    if deadline_s <= now {
        bail!("--deadline {} is not in the future", show_time(deadline_s));
    }
    let model = HeatModel {
        setpoint_c: sub.setpoint_c,
        step_s: when.plan_step_s.unwrap_or(sub.default_step_s),
        power_w: when.plan_power_w,
        idle_rise_c: 10.0,
        reference_c: factors.wear_reference_c,
        activation_ev: factors.activation_ev,
    };
    if let Some(p) = model.problem() {
        bail!("the plan's figures make no sense: {p}");
    }
    let grid = when.plan.grid_source(factors.grid_g_co2e_per_kwh[0])?;
    let ambient = when.plan.ambient_source()?;
    let mut argv = vec![];
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(a) => bail!("the argument {a:?} is not UTF-8, so it cannot be queued"),
        }
    }
    let mut job = Job {
        id: String::new(),
        kind: sub.kind,
        argv: queued_argv(&argv),
        cwd: std::env::current_dir().context("reading the working folder")?,
        out: sub.out,
        submit_s: now,
        deadline_s,
        steps: sub.steps,
        model,
        state: JobState::Queued,
        pid: None,
        starts: 0,
        decision: None,
        note: None,
        ended_s: None,
    };
    let w = weights(factors);
    let tick = Tick {
        now_s: now,
        steps_left: sub.steps,
    };
    let (plan, now_plan) = plan_job(&job, tick, &grid, &ambient, &w);
    let decision = summary(&plan, &now_plan, &w, now);
    job.decision = Some(decision);
    let path = edge_runtime::models::cache_root()?.join(QUEUE_FILE);
    let folder = job.out.as_ref().map(|o| job.cwd.join(o));
    let id = update(&path, |q| {
        if let Some(other) = q.jobs.iter().find(|j| {
            !j.state.is_final()
                && folder.is_some()
                && j.out.as_ref().map(|o| j.cwd.join(o)) == folder
        }) {
            return Err(QueueError::Refused {
                path: path.display().to_string(),
                message: format!(
                    "job {} ({:?}) already trains into {}; wait for it or choose another --out",
                    other.id,
                    other.state,
                    folder
                        .as_ref()
                        .map_or(String::new(), |f| f.display().to_string())
                ),
            });
        }
        job.id = q.new_id(job.kind, now);
        let id = job.id.clone();
        q.push(job, &path)?;
        Ok((id, true))
    })?;
    println!(
        "queued {id} in {} for thermo agent; deadline {}",
        path.display(),
        show_time(deadline_s)
    );
    for line in plan_lines(&plan, &decision, &w) {
        println!("{line}");
    }
    log::info!("{id}: {}", decision_line(&decision));
    Ok(())
}

/// The plan's windows, its expected cost, the run-now counterfactual and the saving.
pub fn plan_lines(plan: &Plan, d: &Decision, w: &Weights) -> Vec<String> {
    let mut lines = vec![];
    for s in &plan.slots {
        let steps = if s.steps >= 10.0 {
            format!("{:.0}", s.steps)
        } else {
            format!("{:.2}", s.steps)
        };
        lines.push(format!(
            "  run {} .. {}: {steps} unit(s) of work",
            show_time(s.start_s),
            show_time(s.end_s),
        ));
    }
    lines.push(format!(
        "plan: {}",
        figures(d.g_co2e, d.wear_hours, d.finish_s)
    ));
    lines.push(format!(
        "run now: {}",
        figures(d.now_g_co2e, d.now_wear_hours, d.now_finish_s)
    ));
    let now_score = d.now_g_co2e + d.now_wear_hours * w.g_per_wear_hour;
    let share = if now_score > 0.0 {
        100.0 * d.saved_g_co2e / now_score
    } else {
        0.0
    };
    lines.push(format!(
        "saving: {:.3} g CO2e+wear ({share:.0} %), wear weighed at {:.3} g per wear-hour",
        d.saved_g_co2e, w.g_per_wear_hour
    ));
    if d.misses_deadline {
        lines.push(
            "the deadline cannot be met: the agent runs the job at once, as soon as it sees it"
                .into(),
        );
    }
    lines
}

fn figures(g: f64, wear_h: f64, finish_s: Option<i64>) -> String {
    format!(
        "{g:.3} g CO2e, {wear_h:.4} wear-hours, finish {}",
        finish_s.map_or("past the forecast".into(), show_time)
    )
}

/// The decision as one log line.
pub fn decision_line(d: &Decision) -> String {
    format!(
        "plan {} window(s) from {}: {}; run now: {}; saving {:.3} g CO2e+wear{}",
        d.windows,
        d.first_start_s.map_or("--".into(), show_time),
        figures(d.g_co2e, d.wear_hours, d.finish_s),
        figures(d.now_g_co2e, d.now_wear_hours, d.now_finish_s),
        d.saved_g_co2e,
        if d.misses_deadline {
            "; the deadline cannot be met, it runs at once"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queued_command_keeps_every_flag_but_the_submissions_own() {
        let args: Vec<String> = [
            "train",
            "--data",
            "d.txt",
            "--when",
            "auto",
            "--deadline=2026-12-02T06:00",
            "--grid",
            "g.csv",
            "--out",
            "a",
            "--ambient-c=30",
            "--steps",
            "8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            queued_argv(&args),
            ["train", "--data", "d.txt", "--out", "a", "--steps", "8"]
        );
    }
}
