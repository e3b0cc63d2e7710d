//! The governor benchmark: every board × scenario × controller on the simulated SoC, offline
//! and much faster than real time (the default 96 half-hour runs take seconds), with the figures
//! the issue asks for (throughput and its fraction of the physical limit, temperatures against
//! the setpoint, firmware throttle events, inter-token latency, energy per token, wear) written
//! as `governor.csv`, `governor_iso.csv`, `governor.md` and one SVG plot per run.
//!
//! The runner only needs the small [`Twin`] / [`TwinBoard`] interface; the adapter over
//! `sensor_drivers::sim` lives in [`sim_boards`]. Each control period the runner reads the
//! twin's sensor as the runtime would, lets the controller decide (timing the call), applies
//! the frequency cap, thread count, pacing and fan level, and advances the compute pool and the
//! twin in small steps. Throughput follows the explicit model in [`workload`]; the physical
//! limit is searched in [`limit`].
//!
//! Goals are checked for `ours` in [`Report::goals`]. "More tokens/s than a baseline at an
//! equal or lower maximum temperature" is judged at equal thermal envelopes: when a baseline
//! ran hotter than ours, ours is re-run with its setpoint raised by the difference (never
//! closer than 0.5 °C to the hard ceiling) and compared there; equal throughput at no higher
//! temperature (demand-bound chats, boards that never reach the setpoint) is reported as a tie.

pub mod bound;
pub mod limit;
pub mod metrics;
pub mod sim_boards;
pub mod workload;

mod iso;
mod report;
mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use self::iso::{CaseRuns, iso_runs};
use self::limit::{Condition, PhysicalLimit, physical_limit};
use self::metrics::RunSummary;
use self::run::run_one;
use self::workload::Scenario;
use crate::bench::svg;
use crate::governor::{
    ActuatorState, ConfigError, Decision, Demand, EcoWeights, GovernorConfig, Observation,
    Platform, TempReading,
};

/// Ambient temperature in °C at the start of every run.
pub const AMBIENT_C: f64 = 25.0;
/// Ambient temperature in °C after the step of [`Scenario::AmbientStep`].
pub const AMBIENT_STEP_C: f64 = 40.0;
/// Training steps per second flat out (one LoRA step every 2 s at full speed).
pub const TRAINING_STEPS_PER_S: f64 = 0.5;

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// Writing an output file failed.
    #[error("writing {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// No simulated profile has this name.
    #[error("unknown board {0:?} (known: rpi4, rpi5, rpi5-active, jetson-orin-nano)")]
    UnknownBoard(String),
    /// The governor rejected its configuration.
    #[error("governor configuration: {0}")]
    Config(ConfigError),
    /// The simulated SoC could not be built.
    #[error("simulated SoC: {0}")]
    Sim(String),
    /// Nothing to run.
    #[error("no board, scenario or controller selected")]
    Empty,
    /// The benchmark's input is not usable.
    #[error("{0}")]
    Invalid(String),
}

impl From<ConfigError> for BenchError {
    fn from(e: ConfigError) -> Self {
        BenchError::Config(e)
    }
}

/// A controller under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerKind {
    /// The adaptive model-predictive governor.
    Ours,
    /// The kernel's `power_allocator`.
    Ipa,
    /// The kernel's `step_wise`.
    StepWise,
    /// No software control.
    Firmware,
    /// Ours with the eco setpoint (`--setpoint auto`).
    Auto,
}

impl ControllerKind {
    /// Every controller, in table order.
    pub const ALL: [ControllerKind; 5] = [
        ControllerKind::Ours,
        ControllerKind::Auto,
        ControllerKind::Ipa,
        ControllerKind::StepWise,
        ControllerKind::Firmware,
    ];

    /// Name used in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Ours => "ours",
            ControllerKind::Ipa => "ipa",
            ControllerKind::StepWise => "step_wise",
            ControllerKind::Firmware => "firmware",
            ControllerKind::Auto => "auto",
        }
    }

    /// Parses [`ControllerKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Simulated length of each run.
    pub duration: Duration,
    /// Board profile names.
    pub boards: Vec<String>,
    /// Scenarios.
    pub scenarios: Vec<Scenario>,
    /// Controllers.
    pub controllers: Vec<ControllerKind>,
    /// Seed for chat arrivals and sensor noise.
    pub seed: u64,
    /// Whether to write an SVG per run.
    pub plots: bool,
    /// Control period.
    pub period: Duration,
    /// Integration step of the twin and the pool.
    pub sim_step: Duration,
    /// Standard deviation in °C of the sensor noise in [`Scenario::NoisySensor`].
    pub noise_stddev_c: f64,
    /// Probability that one sensor read fails in [`Scenario::NoisySensor`].
    pub dropout_probability: f64,
    /// Also run ours at fixed setpoints every [`SWEEP_STEP_C`] up to the hard ceiling in the
    /// sustained scenario, for the plot of g CO2e per token against the setpoint.
    pub sweep: bool,
}

/// Spacing of the setpoint sweep, K.
pub const SWEEP_STEP_C: f64 = 2.0;
/// Lowest setpoint of the sweep, °C.
pub const SWEEP_FROM_C: f64 = 45.0;

/// One fixed-setpoint run of ours in the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepPoint {
    /// Board profile.
    pub board: String,
    /// The fixed setpoint, °C.
    pub setpoint_c: f64,
    /// The run's figures.
    pub summary: RunSummary,
}

impl Default for BenchOptions {
    /// 30-minute runs of everything, seed 1, plots on, 250 ms period, 50 ms simulation step,
    /// noisy sensor with σ = 0.5 °C (95 % of readings within ±1 °C) and 1 % dropouts.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(30 * 60),
            boards: sim_boards::BOARDS.iter().map(|b| b.to_string()).collect(),
            scenarios: Scenario::ALL.to_vec(),
            controllers: ControllerKind::ALL.to_vec(),
            seed: 1,
            plots: true,
            period: Duration::from_millis(250),
            sim_step: Duration::from_millis(50),
            noise_stddev_c: 0.5,
            dropout_probability: 0.01,
            sweep: true,
        }
    }
}

/// One simulated board, driven offline.
pub trait Twin {
    /// Advances `dt_s` seconds under `load`.
    fn step(&mut self, dt_s: f64, load: Load) -> TwinSample;
    /// The frequency in kHz the CPU runs at now under `cap_khz`, after firmware throttling.
    fn effective_khz(&self, cap_khz: u32) -> u32;
    /// Reads the governing temperature sensor as the runtime would; `None` on a failed read.
    fn read_temp_c(&mut self) -> Option<f32>;
    /// Reads the board's power sensor, where it has one.
    fn read_power_w(&mut self) -> Option<f32>;
    /// Changes the ambient temperature.
    fn set_ambient_c(&mut self, ambient_c: f64);
    /// Stops the fan for good (no effect on a fanless board).
    fn fail_fan(&mut self);

    /// Reads the sensors as the runtime would into a controller's observation at `now`: the
    /// governing temperature (missing on a failed read), then the power where `spec` has a
    /// power sensor, beside the actuators `in_force` sets with the CPU at `eff_khz`, busy
    /// `utilisation` (0 to 1) of the last period, and that period's `demand`.
    fn observe(
        &mut self,
        spec: &BoardSpec,
        now: Duration,
        in_force: &Decision,
        eff_khz: u32,
        utilisation: f32,
        demand: Demand,
    ) -> Observation {
        let temp = match self.read_temp_c() {
            Some(c) => TempReading::fresh(c, now),
            None => TempReading::missing(now),
        };
        let power_w = if spec.power_sensor {
            self.read_power_w()
        } else {
            None
        };
        Observation {
            temp,
            power_w,
            actuators: ActuatorState {
                freq_khz: Some(eff_khz),
                threads: in_force.threads,
                fan_level: in_force.fan_level,
                utilisation,
            },
            demand,
        }
    }
}

/// What the twin runs during one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// The CPU frequency cap in kHz.
    pub cap_khz: u32,
    /// Compute threads.
    pub threads: u16,
    /// Share of the time each thread is busy, 0 to 1.
    pub duty: f64,
    /// The forced fan level; `None`: the firmware's own curve.
    pub fan_level: Option<u8>,
}

/// The true state after one twin step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwinSample {
    /// True die temperature in °C (not the sensor's reading).
    pub die_c: f64,
    /// True board / heatsink temperature in °C.
    pub board_c: f64,
    /// Board power in W over the step.
    pub power_w: f64,
    /// Firmware throttle events since the twin was built (the twin's own count, re-armed by
    /// its hysteresis).
    pub throttle_events: u64,
}

/// A board profile: its planning model and a factory for twins.
pub trait TwinBoard {
    /// Name, planning model and figures.
    fn spec(&self) -> &BoardSpec;
    /// A fresh twin at its idle steady state at [`AMBIENT_C`], its sensor adding Gaussian noise
    /// of `noise.0` °C standard deviation and failing reads with probability `noise.1`, seeded
    /// by `seed`.
    fn twin(&self, noise: (f64, f64), seed: u64) -> Result<Box<dyn Twin>, BenchError>;
    /// Steady true die temperature in °C with the CPU at `khz`, `busy_cores` cores busy on
    /// average, at `ambient_c`, with the fan working (`fan_ok`) or failed, without firmware
    /// throttling.
    fn steady_die_c(&self, khz: u32, busy_cores: f64, ambient_c: f64, fan_ok: bool) -> f64;
    /// The heat network behind the twin, for the foresight bound ([`bound`]).
    fn net(&self) -> bound::ThermalNet;
}

/// What the benchmark needs to know about a board.
#[derive(Clone, Debug, PartialEq)]
pub struct BoardSpec {
    /// Profile name.
    pub name: String,
    /// The governor's planning model of the board (operating points and power model).
    pub platform: Platform,
    /// The firmware's first throttle point in °C.
    pub firmware_throttle_c: f32,
    /// Tokens per second flat out (every core at the top frequency, no pacing).
    pub tokens_per_s_max: f64,
    /// Highest fan level when the governor may drive the fan.
    pub fan_max_level: Option<u8>,
    /// Whether the board has a power sensor the runtime can read.
    pub power_sensor: bool,
    /// Steady die temperature rise per W of dynamic power, die to ambient, with the fan (if
    /// any) on its own curve: what the eco setpoint plans with.
    pub steady_k_per_w: f64,
    /// The footprint's factors for this board: every run is scored with them.
    pub weights: EcoWeights,
}

/// One row of the results.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// Board profile.
    pub board: String,
    /// Scenario.
    pub scenario: Scenario,
    /// Controller.
    pub controller: ControllerKind,
    /// Setpoint in °C.
    pub setpoint_c: f64,
    /// The run's figures.
    pub summary: RunSummary,
    /// The foresight bound in tokens/s (see [`bound`]): the most work any controller could
    /// have done in this run with the die at or below [`BenchRow::limit_cap_c`].
    pub limit_tokens_per_s: f64,
    /// The temperature the bound holds the die at: the setpoint, or the run's own maximum
    /// when it ran hotter.
    pub limit_cap_c: f64,
    /// The run's work (tokens and training steps as tokens) over the bound; never above 1.
    pub fraction_of_limit: f64,
    /// The steady-state limit at the setpoint (time-weighted across a mid-run step), tokens/s:
    /// the best operating point whose steady state sits at the setpoint.
    pub steady_limit_tokens_per_s: f64,
    /// Tokens/s over the last third of the run over the steady-state limit in force then.
    pub steady_fraction_of_limit: f64,
    /// Physical limit at the start of the run over the limit at its end (above 1 when a step
    /// mid-run takes thermal headroom away).
    pub limit_drop: f64,
    /// Mean wall time of one `decide` call in µs.
    pub decide_mean_us: f64,
    /// Longest `decide` call in µs.
    pub decide_max_us: f64,
}

/// Verdict of one goal check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoalStatus {
    /// The goal holds.
    Met,
    /// The goal does not hold.
    NotMet,
    /// The same throughput (demand-bound, or no controller had to limit work) at an equal or
    /// lower maximum temperature: there was nothing more to gain.
    Tie,
}

impl GoalStatus {
    /// Word for the Markdown table.
    pub fn as_str(self) -> &'static str {
        match self {
            GoalStatus::Met => "yes",
            GoalStatus::NotMet => "**no**",
            GoalStatus::Tie => "tie",
        }
    }
}

/// One goal check.
#[derive(Clone, Debug, PartialEq)]
pub struct GoalCheck {
    /// What is checked.
    pub goal: String,
    /// Board and scenario.
    pub case: String,
    /// The verdict.
    pub status: GoalStatus,
    /// The figures behind the verdict.
    pub detail: String,
}

/// Ours re-run with its setpoint moved to the maximum temperature a baseline reached.
#[derive(Clone, Debug, PartialEq)]
pub struct IsoRun {
    /// Board profile.
    pub board: String,
    /// Scenario.
    pub scenario: Scenario,
    /// The baseline whose maximum temperature was matched.
    pub baseline: ControllerKind,
    /// The setpoint ours ran at, in °C.
    pub setpoint_c: f64,
    /// Ours' figures at that setpoint.
    pub summary: RunSummary,
}

/// All results.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// One row per board × scenario × controller.
    pub rows: Vec<BenchRow>,
    /// Iso-temperature re-runs of ours (see [`run_governor_bench`]).
    pub iso: Vec<IsoRun>,
    /// Ours at fixed setpoints in the sustained scenario (with [`BenchOptions::sweep`]).
    pub sweep: Vec<SweepPoint>,
    /// Simulated length of each run.
    pub duration: Duration,
    /// Control period.
    pub period: Duration,
    /// Sensor noise (°C standard deviation) and dropout probability of the noisy scenario.
    pub noise: (f64, f64),
}

/// Runs the benchmark over `opts` on the simulated profiles and writes `governor.csv`,
/// `governor.md`, with `opts.sweep` `eco_setpoint.csv`, and with `opts.plots`
/// `plots/<board>_<scenario>_<controller>.svg` and `plots/eco_setpoint_<board>.svg` into
/// `out_dir`, which is created if needed.
pub fn run_governor_bench(out_dir: &Path, opts: &BenchOptions) -> Result<Report, BenchError> {
    let mut boards: Vec<Box<dyn TwinBoard>> = Vec::new();
    for name in &opts.boards {
        boards.push(sim_boards::board(name)?);
    }
    run_bench_on(out_dir, opts, &boards)
}

/// [`run_governor_bench`] over any set of boards.
pub fn run_bench_on(
    out_dir: &Path,
    opts: &BenchOptions,
    boards: &[Box<dyn TwinBoard>],
) -> Result<Report, BenchError> {
    if boards.is_empty() || opts.scenarios.is_empty() || opts.controllers.is_empty() {
        return Err(BenchError::Empty);
    }
    let plots_dir = out_dir.join("plots");
    create_dir(out_dir)?;
    if opts.plots {
        create_dir(&plots_dir)?;
    }
    let mut rows = Vec::new();
    let mut iso = Vec::new();
    let mut sweep = Vec::new();
    for board in boards {
        let spec = board.spec();
        let cfg = GovernorConfig::builder(spec.platform.clone(), spec.firmware_throttle_c)
            .with_period(opts.period)
            .build()?;
        let setpoint = f64::from(cfg.setpoint_c());
        let limit_base = physical_limit(board.as_ref(), setpoint, Condition::nominal());
        for &scenario in &opts.scenarios {
            let (limit_mean, limit_end) =
                scenario_limits(board.as_ref(), setpoint, scenario, &limit_base);
            for &kind in &opts.controllers {
                let run = run_one(board.as_ref(), scenario, kind, opts, &cfg, &limit_base)?;
                let duration_s = opts.duration.as_secs_f64();
                let work_s = run.summary.work_tokens_per_s * duration_s / spec.tokens_per_s_max;
                let cap_c = setpoint.max(run.summary.max_temp_c);
                let bound_work =
                    bound::foresight_work(board.as_ref(), scenario, duration_s, cap_c, work_s);
                let limit_tokens_per_s = bound_work / duration_s * spec.tokens_per_s_max;
                let row = BenchRow {
                    board: spec.name.clone(),
                    scenario,
                    controller: kind,
                    setpoint_c: setpoint,
                    limit_tokens_per_s,
                    limit_cap_c: cap_c,
                    fraction_of_limit: run.summary.work_tokens_per_s / limit_tokens_per_s.max(1e-9),
                    steady_limit_tokens_per_s: limit_mean,
                    steady_fraction_of_limit: run.summary.steady_tokens_per_s / limit_end.max(1e-9),
                    limit_drop: limit_base.tokens_per_s / limit_end.max(1e-9),
                    summary: run.summary,
                    decide_mean_us: run.decide_mean_us,
                    decide_max_us: run.decide_max_us,
                };
                if opts.plots {
                    write_plot(&plots_dir, &row, opts.duration, &run.panels)?;
                }
                rows.push(row);
            }
            if opts.controllers.contains(&ControllerKind::Ours) {
                let case = CaseRuns {
                    board: board.as_ref(),
                    scenario,
                    opts,
                    cfg: &cfg,
                    limit: &limit_base,
                };
                iso.extend(iso_runs(&case, &rows)?);
            }
        }
        if opts.sweep && opts.scenarios.contains(&Scenario::Sustained) {
            let points = sweep_board(board.as_ref(), opts, &cfg, &limit_base)?;
            if opts.plots {
                let auto = rows.iter().find(|r| {
                    r.board == spec.name
                        && r.scenario == Scenario::Sustained
                        && r.controller == ControllerKind::Auto
                });
                let svg = report::sweep_svg(&spec.name, &points, auto);
                write(
                    &plots_dir.join(format!("eco_setpoint_{}.svg", spec.name)),
                    &svg,
                )?;
            }
            sweep.extend(points);
        }
    }
    let report = Report {
        rows,
        iso,
        sweep,
        duration: opts.duration,
        period: opts.period,
        noise: (opts.noise_stddev_c, opts.dropout_probability),
    };
    write(&out_dir.join("governor.csv"), &report.to_csv())?;
    write(&out_dir.join("governor_iso.csv"), &report.iso_csv())?;
    write(&out_dir.join("governor.md"), &report.to_markdown())?;
    if !report.sweep.is_empty() {
        write(&out_dir.join("eco_setpoint.csv"), &report.sweep_csv())?;
    }
    Ok(report)
}

/// Ours at fixed setpoints from [`SWEEP_FROM_C`] up to 0.5 K under the hard ceiling, in the
/// sustained scenario.
fn sweep_board(
    board: &dyn TwinBoard,
    opts: &BenchOptions,
    cfg: &GovernorConfig,
    limit: &PhysicalLimit,
) -> Result<Vec<SweepPoint>, BenchError> {
    let top = f64::from(cfg.ceiling_c()) - 0.5;
    let mut out = Vec::new();
    let mut setpoint = SWEEP_FROM_C.min(top);
    while setpoint <= top + 1e-9 {
        let fixed = GovernorConfig::builder(cfg.platform.clone(), cfg.firmware_throttle_c)
            .with_period(opts.period)
            .with_setpoint_c(setpoint as f32)
            .build()?;
        let run = run_one(
            board,
            Scenario::Sustained,
            ControllerKind::Ours,
            opts,
            &fixed,
            limit,
        )?;
        out.push(SweepPoint {
            board: board.spec().name.clone(),
            setpoint_c: setpoint,
            summary: run.summary,
        });
        setpoint += SWEEP_STEP_C;
    }
    Ok(out)
}

/// Writes the plot of one run as `<board>_<scenario>_<controller>.svg` into `dir`.
fn write_plot(
    dir: &Path,
    row: &BenchRow,
    duration: Duration,
    panels: &[svg::Panel],
) -> Result<(), BenchError> {
    let (scenario, kind) = (row.scenario.name(), row.controller.name());
    let title = format!(
        "{} · {scenario} · {kind}: {:.2} tok/s, max {:.2} °C (setpoint {:.0} °C)",
        row.board, row.summary.tokens_per_s, row.summary.max_temp_c, row.setpoint_c
    );
    let svg = svg::render(&title, duration.as_secs_f64(), panels);
    write(
        &dir.join(format!("{}_{scenario}_{kind}.svg", row.board)),
        &svg,
    )
}

fn create_dir(path: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(path).map_err(|cause| BenchError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|cause| BenchError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Mean limit over the run and the limit in force at its end.
fn scenario_limits(
    board: &dyn TwinBoard,
    setpoint: f64,
    scenario: Scenario,
    base: &PhysicalLimit,
) -> (f64, f64) {
    let after = match scenario {
        Scenario::AmbientStep => Some(Condition {
            ambient_c: AMBIENT_STEP_C,
            fan_ok: true,
        }),
        Scenario::FanFailure => Some(Condition {
            ambient_c: AMBIENT_C,
            fan_ok: false,
        }),
        _ => None,
    };
    match after {
        Some(c) => {
            let l = physical_limit(board, setpoint, c);
            (0.5 * (base.tokens_per_s + l.tokens_per_s), l.tokens_per_s)
        }
        None => (base.tokens_per_s, base.tokens_per_s),
    }
}

#[cfg(test)]
mod tests;
