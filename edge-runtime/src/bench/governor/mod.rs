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

pub mod limit;
pub mod metrics;
pub mod sim_boards;
pub mod svg;
pub mod workload;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use self::limit::{Condition, PhysicalLimit, physical_limit};
use self::metrics::{RunMetrics, RunSummary};
use self::svg::Panel;
use self::workload::{Pool, Scenario};
use super::baseline::{Firmware, PowerAllocator, PowerAllocatorParams, StepWise};
use super::config::{ConfigError, GovernorConfig};
use super::platform::Platform;
use super::types::{
    ActuatorState, Decision, Demand, Limiter, Mode, Observation, Pace, TempReading,
};
use super::{Controller, Governor};

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
}

impl ControllerKind {
    /// Every controller, in table order.
    pub const ALL: [ControllerKind; 4] = [
        ControllerKind::Ours,
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
        }
    }
}

/// One simulated board, driven offline.
pub trait Twin {
    /// Advances `dt_s` seconds with the CPU capped at `cap_khz`, `threads` threads each busy
    /// for `duty` of the time, and the fan at `fan_level` (`None`: the firmware's own curve).
    fn step(
        &mut self,
        dt_s: f64,
        cap_khz: u32,
        threads: u16,
        duty: f64,
        fan_level: Option<u8>,
    ) -> TwinSample;
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
    /// Physical limit in tokens/s for the run's conditions (time-weighted across a step).
    pub limit_tokens_per_s: f64,
    /// Mean tokens/s over the limit.
    pub fraction_of_limit: f64,
    /// Tokens/s over the last third of the run over the limit in force then.
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
    /// Simulated length of each run.
    pub duration: Duration,
    /// Control period.
    pub period: Duration,
    /// Sensor noise (°C standard deviation) and dropout probability of the noisy scenario.
    pub noise: (f64, f64),
}

/// Runs the benchmark over `opts` on the simulated profiles and writes `governor.csv`,
/// `governor.md` and (with `opts.plots`) `plots/<board>_<scenario>_<controller>.svg` into
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
                let row = BenchRow {
                    board: spec.name.clone(),
                    scenario,
                    controller: kind,
                    setpoint_c: setpoint,
                    limit_tokens_per_s: limit_mean,
                    fraction_of_limit: run.summary.tokens_per_s / limit_mean.max(1e-9),
                    steady_fraction_of_limit: run.summary.steady_tokens_per_s / limit_end.max(1e-9),
                    limit_drop: limit_base.tokens_per_s / limit_end.max(1e-9),
                    summary: run.summary,
                    decide_mean_us: run.decide_mean_us,
                    decide_max_us: run.decide_max_us,
                };
                if opts.plots {
                    let title = format!(
                        "{} · {} · {}: {:.2} tok/s, max {:.2} °C (setpoint {:.0} °C)",
                        row.board,
                        scenario.name(),
                        kind.name(),
                        row.summary.tokens_per_s,
                        row.summary.max_temp_c,
                        setpoint
                    );
                    let svg = svg::render(&title, opts.duration.as_secs_f64(), &run.panels);
                    let path = plots_dir.join(format!(
                        "{}_{}_{}.svg",
                        row.board,
                        scenario.name(),
                        kind.name()
                    ));
                    write(&path, &svg)?;
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
    }
    let report = Report {
        rows,
        iso,
        duration: opts.duration,
        period: opts.period,
        noise: (opts.noise_stddev_c, opts.dropout_probability),
    };
    write(&out_dir.join("governor.csv"), &report.to_csv())?;
    write(&out_dir.join("governor_iso.csv"), &report.iso_csv())?;
    write(&out_dir.join("governor.md"), &report.to_markdown())?;
    Ok(report)
}

/// One board and scenario, for extra runs of ours.
struct CaseRuns<'a> {
    board: &'a dyn TwinBoard,
    scenario: Scenario,
    opts: &'a BenchOptions,
    cfg: &'a GovernorConfig,
    limit: &'a PhysicalLimit,
}

/// Re-runs ours at the maximum temperature a baseline reached, when the comparison at the
/// default setpoint is not already decided at equal or lower temperature: the setpoint moves
/// by the difference in maximum temperatures (up to [`ISO_STEPS`] times, within the hard
/// ceiling), so both run in the same thermal envelope.
fn iso_runs(case: &CaseRuns<'_>, rows: &[BenchRow]) -> Result<Vec<IsoRun>, BenchError> {
    let name = &case.board.spec().name;
    let find = |kind| {
        rows.iter()
            .find(|r| &r.board == name && r.scenario == case.scenario && r.controller == kind)
    };
    let Some(ours) = find(ControllerKind::Ours) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for baseline in [ControllerKind::Ipa, ControllerKind::StepWise] {
        let Some(b) = find(baseline) else {
            continue;
        };
        if compare(&ours.summary, &b.summary) != GoalStatus::NotMet {
            continue;
        }
        // Move the setpoint by the gap in maximum temperature, twice more to close what is
        // left of it (the margin ours keeps depends a little on where it runs).
        let ceiling = f64::from(case.cfg.ceiling_c()) - ISO_CEILING_GAP_C;
        let mut setpoint = ours.setpoint_c;
        let mut reached = ours.summary.max_temp_c;
        let mut best: Option<IsoRun> = None;
        for _ in 0..ISO_STEPS {
            let next = (setpoint + b.summary.max_temp_c - reached).min(ceiling);
            if (next - setpoint).abs() < 0.01 {
                break;
            }
            setpoint = next;
            let cfg =
                GovernorConfig::builder(case.cfg.platform.clone(), case.cfg.firmware_throttle_c)
                    .with_period(case.opts.period)
                    .with_setpoint_c(setpoint as f32)
                    .build()?;
            let run = run_one(
                case.board,
                case.scenario,
                ControllerKind::Ours,
                case.opts,
                &cfg,
                case.limit,
            )?;
            reached = run.summary.max_temp_c;
            let iso = IsoRun {
                board: name.clone(),
                scenario: case.scenario,
                baseline,
                setpoint_c: setpoint,
                summary: run.summary,
            };
            let done = compare(&iso.summary, &b.summary) != GoalStatus::NotMet
                || (reached - b.summary.max_temp_c).abs() <= SAME_TEMP_C;
            best = Some(iso);
            if done {
                break;
            }
        }
        out.extend(best);
    }
    Ok(out)
}

/// Setpoint adjustments per iso-temperature comparison.
const ISO_STEPS: usize = 3;
/// How far below the hard ceiling an iso-temperature setpoint must stay, in K.
const ISO_CEILING_GAP_C: f64 = 0.5;
/// Maximum temperatures within this many K count as equal.
const SAME_TEMP_C: f64 = 0.05;

/// The verdict of "more tokens/s at an equal or lower maximum temperature" for `ours` against
/// `other`: a tie when the throughput is the same (within half a percent: the work was
/// demand-bound or nobody had to limit it) and ours ran no hotter (within [`SAME_TEMP_C`]).
fn compare(ours: &RunSummary, other: &RunSummary) -> GoalStatus {
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

struct RunOutput {
    summary: RunSummary,
    decide_mean_us: f64,
    decide_max_us: f64,
    panels: Vec<Panel>,
}

fn controller_for(
    kind: ControllerKind,
    spec: &BoardSpec,
    cfg: &GovernorConfig,
    limit: &PhysicalLimit,
) -> Box<dyn Controller> {
    let setpoint = cfg.setpoint_c();
    match kind {
        ControllerKind::Ours => {
            let mut cfg = cfg.clone();
            cfg.platform = cfg.platform.clone().with_fan(spec.fan_max_level);
            Box::new(Governor::new(cfg))
        }
        ControllerKind::Ipa => {
            // Switch-on 10 K below the control temperature; sustainable power from the twin's
            // steady state at the setpoint (IPA's best case).
            let params = PowerAllocatorParams::kernel_defaults(
                setpoint - 10.0,
                setpoint,
                limit.dyn_power_w as f32,
            );
            Box::new(PowerAllocator::new(
                spec.platform.clone(),
                params,
                cfg.period(),
            ))
        }
        ControllerKind::StepWise => Box::new(StepWise::new(spec.platform.clone(), setpoint)),
        ControllerKind::Firmware => Box::new(Firmware::new(spec.platform.clone())),
    }
}

fn run_one(
    board: &dyn TwinBoard,
    scenario: Scenario,
    kind: ControllerKind,
    opts: &BenchOptions,
    cfg: &GovernorConfig,
    limit: &PhysicalLimit,
) -> Result<RunOutput, BenchError> {
    let spec = board.spec();
    let p = &spec.platform;
    let setpoint = f64::from(cfg.setpoint_c());
    let order = cfg.priorities();
    let noise = if scenario == Scenario::NoisySensor {
        (opts.noise_stddev_c, opts.dropout_probability)
    } else {
        (0.0, 0.0)
    };
    let mut twin = board.twin(noise, opts.seed)?;
    let mut controller = controller_for(kind, spec, cfg, limit);
    let mut pool = Pool::new(scenario, opts.seed, spec.tokens_per_s_max);
    let duration_s = opts.duration.as_secs_f64();
    let mut metrics = RunMetrics::new(setpoint, duration_s * 2.0 / 3.0);
    let period_s = opts.period.as_secs_f64();
    let n_sub = (period_s / opts.sim_step.as_secs_f64()).round().max(1.0) as u32;
    let dt = period_s / f64::from(n_sub);
    let ticks = (duration_s / period_s).round() as u64;
    let top_khz = p.khz(p.top_level());
    let g_cores = f64::from(p.thread_speedup(p.cores()));

    let mut decision = Decision {
        freq_cap_khz: None,
        threads: p.cores(),
        pacing: [Pace::FULL; 3],
        fan_level: None,
        mode: Mode::Unlimited,
        limiter: Limiter::None,
        reason: String::new(),
        power_budget_w: f32::INFINITY,
    };
    let mut utilisation = 0.0f32;
    let mut demand = Demand::default();
    let mut eff_khz = top_khz;
    let (mut decide_total, mut decide_max) = (Duration::ZERO, Duration::ZERO);
    let mut temp_pts = Vec::new();
    let mut freq_pts = Vec::new();
    let mut tok_pts = Vec::new();
    let mut window_tokens = 0u64;
    let half = duration_s / 2.0;
    let mut events_done = false;

    for tick in 0..ticks {
        let now_s = tick as f64 * period_s;
        let now = Duration::from_secs_f64(now_s);
        if !events_done && now_s >= half {
            events_done = true;
            match scenario {
                Scenario::AmbientStep => twin.set_ambient_c(AMBIENT_STEP_C),
                Scenario::FanFailure => twin.fail_fan(),
                _ => {}
            }
        }
        let temp = match twin.read_temp_c() {
            Some(c) => TempReading::fresh(c, now),
            None => TempReading::missing(now),
        };
        let power_w = if spec.power_sensor {
            twin.read_power_w()
        } else {
            None
        };
        let obs = Observation {
            temp,
            power_w,
            actuators: ActuatorState {
                freq_khz: Some(eff_khz),
                threads: decision.threads,
                fan_level: decision.fan_level,
                utilisation,
            },
            demand,
        };
        let t0 = Instant::now();
        decision = controller.decide(obs, now);
        let spent = t0.elapsed();
        decide_total += spent;
        decide_max = decide_max.max(spent);

        let cap = decision.freq_cap_khz.unwrap_or(top_khz);
        let threads = decision.threads.clamp(1, p.cores());
        let duty = decision.pacing.map(|pace| pace.duty);
        let g = f64::from(p.thread_speedup(threads)) / g_cores;
        let mut busy = 0.0;
        let mut had = [0.0; 3];
        let mut last_die = f64::NAN;
        for sub in 0..n_sub {
            let t = now_s + f64::from(sub) * dt;
            eff_khz = twin.effective_khz(cap);
            let speed = f64::from(eff_khz) / f64::from(top_khz) * g;
            let rates = [
                spec.tokens_per_s_max * speed,
                TRAINING_STEPS_PER_S * speed,
                TRAINING_STEPS_PER_S * speed,
            ];
            let out = pool.advance(t, dt, rates, duty, order);
            for (at, itl) in out.tokens {
                metrics.token(at, itl);
                window_tokens += 1;
            }
            for _ in 0..out.training_steps {
                metrics.training_step();
            }
            let busy_frac = (out.busy_s.iter().sum::<f64>() / dt).clamp(0.0, 1.0);
            busy += out.busy_s.iter().sum::<f64>();
            for (h, o) in had.iter_mut().zip(out.had_work_s) {
                *h += o;
            }
            let s = twin.step(dt, cap, threads, busy_frac, decision.fan_level);
            metrics.step(dt, s.die_c, s.power_w, s.throttle_events);
            last_die = s.die_c;
        }
        utilisation = (busy / period_s).clamp(0.0, 1.0) as f32;
        demand = Demand {
            occupancy: had.map(|h| (h / period_s).clamp(0.0, 1.0) as f32),
        };
        // One plot point per second; tokens/s over a 10 s window.
        if tick % 4 == 3 {
            let t = now_s + period_s;
            temp_pts.push((t, last_die));
            freq_pts.push((t, f64::from(eff_khz) / 1000.0));
            if tick % 40 == 39 {
                tok_pts.push((t, window_tokens as f64 / 10.0));
                window_tokens = 0;
            }
        }
    }
    let panels = vec![
        Panel {
            label: "die °C".to_string(),
            colour: "#d04a02",
            points: temp_pts,
            references: vec![
                (setpoint, format!("setpoint {setpoint:.0} °C")),
                (
                    f64::from(spec.firmware_throttle_c),
                    format!("firmware throttle {:.0} °C", spec.firmware_throttle_c),
                ),
            ],
        },
        Panel {
            label: "CPU MHz".to_string(),
            colour: "#1f5fa8",
            points: freq_pts,
            references: Vec::new(),
        },
        Panel {
            label: "tokens/s".to_string(),
            colour: "#2a8a3e",
            points: tok_pts,
            references: Vec::new(),
        },
    ];
    let calls = ticks.max(1) as f64;
    Ok(RunOutput {
        summary: metrics.summary(),
        decide_mean_us: decide_total.as_secs_f64() * 1e6 / calls,
        decide_max_us: decide_max.as_secs_f64() * 1e6,
        panels,
    })
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
                let Some(o) = self.row(&r.board, r.scenario, other) else {
                    continue;
                };
                let direct = compare(s, &o.summary);
                let iso = self.iso.iter().find(|i| {
                    i.board == r.board && i.scenario == r.scenario && i.baseline == other
                });
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
                            s.tokens_per_s,
                            o.summary.tokens_per_s,
                            s.max_temp_c,
                            o.summary.max_temp_c
                        ),
                    ),
                };
                out.push(GoalCheck {
                    goal: format!("more tokens/s than {} at <= max temperature", other.name()),
                    case: case.clone(),
                    status,
                    detail,
                });
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

#[cfg(test)]
mod tests;
