//! `thermo train`: LoRA fine-tuning of a model folder on a data file. Runs a preflight that
//! lists every problem (data, model, output folder, one dry step) before anything is
//! trained, then trains under the governor (a permit at training priority per optimizer
//! step), prints a progress line, checkpoints every N steps and on SIGTERM/SIGINT, and
//! continues a checkpointed run exactly with `--resume`.
//!
//! Compute threads of the candle matrix products follow `RAYON_NUM_THREADS`, which candle
//! reads from the environment only; `--threads` (default 1: candle's worker threads spin while
//! they wait for each other, so one thread spends the least CPU time per step)
//! sets it by replacing the process with itself, see [`ensure_threads`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::bench::train::{TrainBench, compute_threads};
use super::flags::accounting::FootprintArgs;
use super::flags::governor::{GovernorArgs, SetpointArg};
use super::flags::main_job_config;
use super::flags::telemetry::TelemetryArgs;
use super::flags::when::{Submission, When, WhenArgs, decision_line, submit};
use edge_runtime::config::Config;
use edge_runtime::eco::Factors;
use edge_runtime::eco::energy::Span;
use edge_runtime::eco::layers::{Layers, Waste, WasteKind};
use edge_runtime::eco::ledger::utc_date;
use edge_runtime::engine::import::is_current_import;
use edge_runtime::models::{DEFAULT_MODEL, cache_root, model_dir};
use edge_runtime::pacing::GovernorStatus;
use edge_runtime::session::accounting::fallback_meter;
use edge_runtime::session::accounting::{
    adapter_key, cache_ledger, emissions_csv_path, energy_meter,
};
use edge_runtime::session::governed::Governed;
use edge_runtime::session::model::resolve_model;
use edge_runtime::session::telemetry::{Session, day_figures, eco_figures};
use edge_runtime::telemetry::TrainingDone;
use edge_runtime::train::augment::{self, NotePlan, PairCache};
use edge_runtime::train::data::{DataProblem, Example, TextSide, duplicates, load_examples, split};
use edge_runtime::train::lora::{LoraConfig, Target};
use edge_runtime::train::model::BaseModel;
use edge_runtime::train::notes::{HoldOut, held_notes, note_sets, read_notes};
use edge_runtime::train::optim::{AdamWParams, Schedule};
use edge_runtime::train::source;
use edge_runtime::train::trainer::{
    CHECKPOINT, Outcome, Progress, RunControl, StepReport, TrainOptions, Trainer, run,
};

/// Flags of `thermo train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model folder to adapt (default: the imported default model in `--format`).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Format of the default model folder (f32, q4, ggml); the adapter fits each.
    #[arg(long, default_value = "ggml", value_name = "FORMAT")]
    pub format: String,
    /// GGUF to read the base weights from (default: the one the folder was imported from).
    #[arg(long, value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    /// Training data: plain text (one example per line) or .jsonl (chat/instruction pairs).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Held-out data (default: a seeded split of --data).
    #[arg(long, value_name = "FILE")]
    pub held_out: Option<PathBuf>,
    /// Share of --data held out when --held-out is not given (default 0.1; on a note file
    /// held-out notes are never learned, so by default a note file holds out one generated
    /// question per note instead).
    #[arg(long, value_name = "FRACTION")]
    pub held_out_fraction: Option<f32>,
    /// Question/answer pairs derived from each note of a plain-text file (one note per
    /// line) and trained on beside the notes; 0 trains on the lines as plain text.
    #[arg(long, default_value_t = DEFAULT_AUGMENT, value_name = "N")]
    pub augment: usize,
    /// Folder for the adapter (PEFT files) and the checkpoint.
    #[arg(long, value_name = "ADAPTER_DIR")]
    pub out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Dropout on the adapters' input.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Projections to adapt, comma-separated (q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj). Default: all seven (the recipe measured on the facts test).
    #[arg(
        long,
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        value_delimiter = ','
    )]
    pub targets: Vec<String>,
    /// Adapt only the top N layers; 0 adapts all. Default: the top half. Layers below the
    /// adapted ones run once per example (their states are cached), so a step costs about
    /// the adapted share of a full step.
    #[arg(long, value_name = "N")]
    pub top_layers: Option<usize>,
    /// Optimizer steps (the default is about 4 epochs of the facts test set's 240 training
    /// examples, after which its held-out questions are answered: 3 in 4 after 300 steps).
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Learning-rate shape after warmup.
    #[arg(long, value_enum, default_value_t = Schedule::Cosine)]
    pub schedule: Schedule,
    /// Packed rows per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Tokens per packed row.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Seed of the adapter init, the data order and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Compute threads of the matrix products (default: `RAYON_NUM_THREADS` when set, else
    /// 1, which spends the least CPU time per step: candle's worker threads spin while they
    /// wait for each other, and on a busy board a second thread makes steps slower).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Write a checkpoint every N steps (and always at the end and on SIGTERM).
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: usize,
    /// Evaluate on the held-out data every N steps (and always at the end).
    #[arg(long, default_value_t = 25)]
    pub eval_every: usize,
    /// Continue the run checkpointed in --out.
    #[arg(long)]
    pub resume: bool,
    /// Run the preflight only.
    #[arg(long)]
    pub preflight_only: bool,
    /// Benchmark instead of training: time and energy per optimizer step for adapters on
    /// all layers and on the top `--bench-top` layers, as a Markdown table (writes nothing).
    #[arg(long, hide = true)]
    pub bench: bool,
    /// Measured optimizer steps per benchmark configuration (after one warm-up step).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub bench_steps: usize,
    /// Top layers of the benchmark's second configuration.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub bench_top: usize,
    #[command(flatten)]
    pub footprint: FootprintArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub governor: GovernorArgs,
    #[command(flatten)]
    pub when: WhenArgs,
}

/// Setpoint (°C) a deferred job is planned with when `--setpoint` is not given.
pub const PLAN_SETPOINT_C: f64 = 70.0;

/// Seconds a training step is planned to take at full speed without `--plan-step-s`.
pub const PLAN_STEP_S: f64 = 2.0;

/// Folder of the cache of derived pairs, under the cache root.
pub const AUGMENT_CACHE: &str = "augment";

/// Pairs derived per note by default (`--augment`).
pub const DEFAULT_AUGMENT: usize = 4;

/// Share of `--data` held out by default when it is not a note file.
pub const DEFAULT_HELD_OUT_FRACTION: f32 = 0.1;

/// Threads when neither `--threads` nor `RAYON_NUM_THREADS` says.
pub const DEFAULT_THREADS: usize = 1;

/// The `RAYON_NUM_THREADS` value `thermo train` should run with, when the current one differs
/// (`None`: keep the process as it is).
fn wanted_threads(flag: Option<usize>, env: Option<&str>) -> Result<Option<usize>> {
    match (flag, env) {
        (Some(0), _) => bail!("--threads must be at least 1"),
        (Some(n), Some(cur)) if cur.trim() == n.to_string() => Ok(None),
        (Some(n), _) => Ok(Some(n)),
        (None, Some(_)) => Ok(None),
        (None, None) => Ok(Some(DEFAULT_THREADS)),
    }
}

/// Makes candle use the threads `args` asks for. candle takes its thread count from
/// `RAYON_NUM_THREADS` in the environment, and a process cannot safely change its own
/// environment once threads may be running; so when the variable needs to change, the
/// binary replaces itself (same PID, same arguments) with it set. Returns only when nothing
/// needs to change, or with the error of a failed replacement. Call it from `main`, before
/// anything else runs.
pub fn ensure_threads(args: &TrainArgs) -> Result<()> {
    let env = std::env::var("RAYON_NUM_THREADS").ok();
    let Some(n) = wanted_threads(args.threads, env.as_deref())? else {
        return Ok(());
    };
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating the thermo binary")?;
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("RAYON_NUM_THREADS", n.to_string())
        .exec();
    Err(err).with_context(|| format!("restarting {} with {n} compute thread(s)", exe.display()))
}

fn model_folder(args: &TrainArgs) -> Result<PathBuf> {
    if let Some(m) = &args.model {
        return Ok(m.clone());
    }
    let root = cache_root()?;
    let dir = model_dir(&root, &DEFAULT_MODEL, &args.format);
    if !is_current_import(&dir) {
        return resolve_model(None, &args.format);
    }
    Ok(dir)
}

/// The adapted top layers of a model with `layers` layers for `--top-layers` (`None`: all).
fn top_layers(flag: Option<usize>, layers: usize) -> Option<usize> {
    match flag {
        None => Some(layers.div_ceil(2)),
        Some(0) => None,
        Some(n) => Some(n),
    }
}

/// Bytes a checkpoint of `params` adapter values takes (adapter + two moments, and the PEFT
/// copy), with headroom.
fn checkpoint_bytes(params: usize) -> u64 {
    (params as u64) * 4 * 4 + (1 << 20)
}

/// Checks that `out` can take the run's files: writable, with `room` bytes free (probed by
/// writing and removing a file of that size). Creates nothing that stays.
fn check_out_dir(out: &Path, room: u64, resume: bool, problems: &mut Vec<DataProblem>) {
    let problem = |message: String| DataProblem {
        file: out.to_path_buf(),
        line: None,
        message,
    };
    if out.exists() && !out.is_dir() {
        problems.push(problem("exists and is not a folder".into()));
        return;
    }
    let has_ckpt = out.join(CHECKPOINT).is_file();
    if resume && !has_ckpt {
        problems.push(problem(format!(
            "--resume, but there is no {CHECKPOINT} here"
        )));
    }
    if !resume && has_ckpt {
        problems.push(problem(format!(
            "already holds a {CHECKPOINT}: pass --resume to continue it, or choose another folder"
        )));
    }
    // The folder itself, or the nearest existing ancestor it would be created in.
    let mut probe_dir = out.to_path_buf();
    while !probe_dir.exists() {
        match probe_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe_dir = p.to_path_buf(),
            _ => {
                probe_dir = PathBuf::from(".");
                break;
            }
        }
    }
    let probe = probe_dir.join(format!(".thermo-train-probe-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&probe)?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = room;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = result {
        problems.push(problem(format!(
            "cannot write {} bytes of checkpoints in {}: {e}",
            room,
            probe_dir.display()
        )));
    }
}

fn parse_targets(names: &[String], problems: &mut Vec<DataProblem>) -> Vec<Target> {
    let mut out = vec![];
    for n in names {
        match Target::from_module(n.trim()) {
            Some(t) => out.push(t),
            None => problems.push(DataProblem {
                file: PathBuf::from("--targets"),
                line: None,
                message: format!("unknown module {n:?}"),
            }),
        }
    }
    out
}

/// `thermo train`.
pub fn train(args: TrainArgs) -> Result<()> {
    // The configuration first: a bad [eco] or [telemetry] value stops before the model loads.
    let config = main_job_config(
        &args.footprint,
        |eco| args.footprint.merge_onto(eco),
        &args.telemetry,
    )?;
    let factors = config.eco.factors()?;
    if args.when.agent_job.is_none() {
        match args.when.when {
            When::Auto => {
                let sub = Submission {
                    kind: edge_runtime::deferred::JobKind::Train,
                    steps: args.steps as u64,
                    out: Some(args.out.clone()),
                    default_step_s: PLAN_STEP_S,
                    setpoint_c: args
                        .governor
                        .setpoint
                        .and_then(SetpointArg::celsius)
                        .map_or(PLAN_SETPOINT_C, f64::from),
                };
                return submit(&args.when, sub, &factors);
            }
            When::Now if args.when.deadline.is_some() => {
                bail!("--deadline is for --when auto; with --when now the run starts at once")
            }
            When::Now => {}
        }
    }
    let dir = model_folder(&args)?;
    let mut problems: Vec<DataProblem> = vec![];
    let (base, origin, side) = load_model(&args, &dir, &mut problems);
    let (train_set, held_set, notes) = match &side {
        Some(side) => load_data(&args, side, &factors, &mut problems),
        None => (vec![], vec![], None),
    };
    let options = base
        .as_ref()
        .and_then(|b| train_options(&args, b, &mut problems));
    let bench_data = if args.bench {
        train_set.clone()
    } else {
        vec![]
    };
    let trainer = match (&base, options) {
        (Some(base), Some(options)) if !train_set.is_empty() => dry_run(
            &args,
            &dir,
            base,
            options,
            train_set,
            held_set,
            &mut problems,
        ),
        _ => {
            check_out_dir(&args.out, 1 << 20, args.resume, &mut problems);
            None
        }
    };
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "preflight found {} problem(s); nothing was trained",
            problems.len()
        );
    }
    let Some(mut trainer) = trainer else {
        bail!("preflight found no training examples; nothing was trained");
    };
    eprintln!(
        "preflight ok: {} adapter parameters on {} layer(s), weights from {}",
        trainer.adapter.parameter_count(),
        trainer.options.lora.layers.len(),
        origin.map(|o| o.to_string()).unwrap_or_default()
    );
    if let Some(n) = &notes {
        eprintln!("{}", n.preflight_line(args.augment));
        if n.recall {
            trainer = trainer.with_recall_stop();
        }
    }
    if args.preflight_only {
        return Ok(());
    }
    if args.bench {
        let Some(base) = &base else {
            bail!("no model to benchmark");
        };
        return run_bench(&args, base, &trainer.options, &bench_data, &factors);
    }
    prepare_out(&args, &mut trainer)?;
    train_governed(&args, &config, &factors, &dir, &mut trainer, notes.as_ref())
}

/// A problem with the model folder `dir`.
fn model_problem(dir: &Path, message: String) -> DataProblem {
    DataProblem {
        file: dir.to_path_buf(),
        line: None,
        message,
    }
}

/// The base model's weights (and where they came from) and its tokenizer side; what does not
/// load is a problem.
fn load_model(
    args: &TrainArgs,
    dir: &Path,
    problems: &mut Vec<DataProblem>,
) -> (
    Option<BaseModel>,
    Option<source::WeightsOrigin>,
    Option<TextSide>,
) {
    let base = source::locate(dir, args.gguf.as_deref())
        .and_then(|o| Ok((source::load(&o)?, o)))
        .and_then(|(w, o)| Ok((BaseModel::from_weights(w)?, o)));
    let (base, origin) = match base {
        Ok(b) => (Some(b.0), Some(b.1)),
        Err(e) => {
            problems.push(model_problem(
                dir,
                format!("the model does not load: {e:#}"),
            ));
            (None, None)
        }
    };
    let context = base
        .as_ref()
        .map_or(usize::MAX, |b| b.config.max_position_embeddings);
    let side = match TextSide::load(dir, context) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(model_problem(
                dir,
                format!("the tokenizer does not load: {e:#}"),
            ));
            None
        }
    };
    (base, origin, side)
}

/// Whether `path` is read as JSONL (by its extension).
fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
}

/// What a note file became: its notes and pairs, what deriving the pairs cost, and how the
/// run is measured.
struct NoteRun {
    /// The notes and their generated pairs.
    plan: NotePlan,
    /// Energy and time of deriving the pairs not found in the cache (the teacher's share).
    span: Option<Span>,
    /// Held-out examples.
    held: usize,
    /// Notes held out whole (never learned).
    held_notes: usize,
    /// Whether held-out recall on generated questions measures the run and may stop it.
    recall: bool,
}

impl NoteRun {
    /// The preflight's account of what will be trained and evaluated.
    fn preflight_line(&self, per_note: usize) -> String {
        let p = &self.plan;
        let mut s = format!(
            "notes: {} note(s) trained as text plus {} generated question/answer pair(s) \
             (up to {per_note} per note; {} derived now, {} from the cache, {} without a pair); ",
            p.notes.len() - self.held_notes,
            p.trained_pairs(),
            p.derived,
            p.cached,
            p.unparsed
        );
        if self.recall {
            s.push_str(&format!(
                "evaluated on {} generated question(s) held out, one per note: recall and loss",
                self.held
            ));
        } else if self.held_notes > 0 {
            s.push_str(&format!(
                "evaluated on {} held-out note(s) and their pairs: loss only",
                self.held_notes
            ));
        } else {
            s.push_str(&format!(
                "evaluated on {} held-out example(s): loss only",
                self.held
            ));
        }
        s
    }
}

/// The training and held-out examples (`--held-out`, else a split of `--data`), with every
/// problem of the files and the duplicates between the two sets. A plain-text file with
/// `--augment` above 0 is a note file (see [`load_notes`]).
fn load_data(
    args: &TrainArgs,
    side: &TextSide,
    factors: &Factors,
    problems: &mut Vec<DataProblem>,
) -> (Vec<Example>, Vec<Example>, Option<NoteRun>) {
    if args.augment > 0 && !is_jsonl(&args.data) {
        let mut note_problems = vec![];
        let (train_set, held_set, run) = load_notes(args, side, factors, &mut note_problems);
        if run.plan.trained_pairs() > 0 && (!held_set.is_empty() || args.held_out.is_some()) {
            problems.extend(note_problems);
            problems.extend(duplicates(&train_set, &held_set));
            return (train_set, held_set, Some(run));
        }
        eprintln!(
            "{}: no line reads as a note a question can be asked about; trained as plain text",
            args.data.display()
        );
    }
    let (examples, p) = load_examples(&args.data, side, args.seq_len);
    problems.extend(p);
    let fraction = args.held_out_fraction.unwrap_or(DEFAULT_HELD_OUT_FRACTION);
    let (train_set, held_set) = match &args.held_out {
        Some(h) => {
            let (eval, p) = load_examples(h, side, args.seq_len);
            problems.extend(p);
            (examples, eval)
        }
        None if examples.len() >= 2 => split(examples, fraction, args.seed),
        None => {
            if !examples.is_empty() {
                problems.push(DataProblem {
                    file: args.data.clone(),
                    line: None,
                    message: "one example cannot be split into train and held-out sets; \
                              add examples or pass --held-out"
                        .into(),
                });
            }
            (vec![], vec![])
        }
    };
    problems.extend(duplicates(&train_set, &held_set));
    (train_set, held_set, None)
}

/// A note file: each note with `--augment` derived pairs (from the cache when it has them,
/// the derivation metered apart), held out as generated questions by default, as whole
/// notes with `--held-out-fraction` (with a warning), or from `--held-out`.
fn load_notes(
    args: &TrainArgs,
    side: &TextSide,
    factors: &Factors,
    problems: &mut Vec<DataProblem>,
) -> (Vec<Example>, Vec<Example>, NoteRun) {
    let (notes, p) = read_notes(&args.data);
    problems.extend(p);
    let hold = match (&args.held_out, args.held_out_fraction) {
        (Some(_), _) => HoldOut::Nothing,
        (None, Some(fraction)) => HoldOut::Notes {
            fraction,
            seed: args.seed,
        },
        (None, None) => HoldOut::Questions,
    };
    let held_lines = held_notes(&notes, hold);
    if !held_lines.is_empty() {
        eprintln!(
            "warning: --held-out-fraction on a note file holds out {} whole note(s) (lines {}): \
             they are never learned; without it one generated question per note is held out \
             and every note is trained on",
            held_lines.len(),
            held_lines
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let cache = cache_root()
        .ok()
        .map(|r| PairCache::with_root(r.join(AUGMENT_CACHE)));
    let meter = fallback_meter(factors)
        .map_err(|e| log::warn!("{e:#}"))
        .ok();
    let mark = meter.as_ref().map(|m| m.mark());
    let plan = augment::plan(&notes, args.augment, cache.as_ref());
    let span = match (&meter, &mark) {
        (Some(m), Some(mark)) if plan.derived > 0 => {
            m.poll();
            Some(m.since(mark))
        }
        _ => None,
    };
    let (sets, p) = note_sets(&args.data, side, args.seq_len, &plan, hold, &held_lines);
    problems.extend(p);
    if sets.dropped_pairs > 0 {
        eprintln!(
            "warning: {} generated pair(s) left out: longer than --seq-len {}",
            sets.dropped_pairs, args.seq_len
        );
    }
    let mut held_set = sets.held;
    if let Some(h) = &args.held_out {
        let (eval, p) = load_examples(h, side, args.seq_len);
        problems.extend(p);
        held_set = eval;
    }
    let run = NoteRun {
        span,
        held: held_set.len(),
        held_notes: held_lines.len(),
        recall: hold == HoldOut::Questions && !held_set.is_empty(),
        plan,
    };
    (sets.train, held_set, run)
}

/// The adapter and optimiser options of the flags for `base`.
fn train_options(
    args: &TrainArgs,
    base: &BaseModel,
    problems: &mut Vec<DataProblem>,
) -> Option<TrainOptions> {
    let targets = parse_targets(&args.targets, problems);
    let layers = base.config.num_hidden_layers;
    let lora = match LoraConfig::new(
        args.rank,
        args.alpha,
        args.dropout,
        targets,
        layers,
        top_layers(args.top_layers, layers),
    ) {
        Ok(c) => c,
        Err(e) => {
            problems.push(DataProblem {
                file: PathBuf::from("flags"),
                line: None,
                message: format!("{e:#}"),
            });
            return None;
        }
    };
    Some(TrainOptions {
        lora,
        steps: args.steps,
        lr: args.lr,
        warmup: args.warmup,
        schedule: args.schedule,
        accum: args.accum,
        seq_len: args.seq_len,
        adamw: AdamWParams {
            weight_decay: args.weight_decay,
            ..AdamWParams::default()
        },
        max_grad_norm: 1.0,
        seed: args.seed,
    })
}

/// The trainer, once the output folder can take its files and one dry step gave finite
/// gradients; every failure is a problem.
fn dry_run<'m>(
    args: &TrainArgs,
    dir: &Path,
    base: &'m BaseModel,
    options: TrainOptions,
    train_set: Vec<Example>,
    held_set: Vec<Example>,
    problems: &mut Vec<DataProblem>,
) -> Option<Trainer<'m>> {
    let mut t = match Trainer::new(base, options, train_set, held_set) {
        Ok(t) => t,
        Err(e) => {
            problems.push(model_problem(dir, format!("{e:#}")));
            return None;
        }
    };
    check_out_dir(
        &args.out,
        checkpoint_bytes(t.adapter.parameter_count()),
        args.resume,
        problems,
    );
    match t.probe_gradients() {
        Ok(g) if g.iter().all(|(_, n)| n.is_finite()) => {}
        Ok(_) => problems.push(model_problem(
            dir,
            "the dry step gave non-finite gradients".into(),
        )),
        Err(e) => problems.push(model_problem(dir, format!("the dry step failed: {e:#}"))),
    }
    Some(t)
}

/// Creates the output folder; with `--resume`, clears interrupted writes and restores the
/// checkpoint, else prints the held-out loss before training.
fn prepare_out(args: &TrainArgs, trainer: &mut Trainer<'_>) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.resume {
        // Temp files of a write that a `kill -9` interrupted.
        if let Ok(entries) = std::fs::read_dir(&args.out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let p = args.out.join(CHECKPOINT);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        trainer
            .restore(&bytes)
            .with_context(|| format!("resuming from {}", p.display()))?;
        eprintln!("resuming at step {}", trainer.progress.step);
    } else if let Some(l) = trainer.eval_loss()? {
        eprintln!(
            "held-out loss before training {l:.4} (perplexity {:.2})",
            l.exp()
        );
    }
    Ok(())
}

/// Trains under the governor (unless `--no-governor`) and telemetry, printing a line per
/// step, then accounts for the run.
fn train_governed(
    args: &TrainArgs,
    config: &Config,
    factors: &Factors,
    dir: &Path,
    trainer: &mut Trainer<'_>,
    notes: Option<&NoteRun>,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    let governed = args.governor.start(1)?;
    let telemetry = Session::start(&config.telemetry, governed.as_ref().map(Governed::probe))?;
    let meter = energy_meter(governed.as_ref(), factors)?;
    meter.poll();
    let run_mark = meter.mark();
    let mut step_mark = run_mark;
    let steps = trainer.options.steps;
    let first = (trainer.progress.step, trainer.progress.tokens);
    let started = Instant::now();
    let mut last_loss = None;
    // Energy of this process's steps up to the last one a checkpoint saved (the run saves
    // after every `checkpoint_every`-th step and the last): what a failure cannot lose.
    let (mut run_j, mut saved_j) = (0.0f64, 0.0f64);
    let checkpoint_every = args.checkpoint_every;
    let mut on_step = |r: &StepReport, p: &Progress| -> f64 {
        let status = governed.as_ref().map(Governed::status);
        meter.poll();
        let joules = meter.since(&step_mark).energy_j;
        step_mark = meter.mark();
        run_j += joules;
        if (checkpoint_every > 0 && r.step.is_multiple_of(checkpoint_every)) || r.step == steps {
            saved_j = run_j;
        }
        last_loss = Some(r.loss);
        eprintln!("{}", step_line(r, p, steps, status.as_ref(), joules));
        joules
    };
    let base_name = Some(
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let mut ctl = RunControl {
        permits: governed.as_ref().map(Governed::permits),
        stop: &stop,
        checkpoint_every: args.checkpoint_every,
        eval_every: args.eval_every,
        on_step: &mut on_step,
        base_model: base_name,
    };
    let result = run(trainer, &args.out, &mut ctl);
    let wall = started.elapsed();
    meter.poll();
    let span = meter.since(&run_mark);
    let failed = result.as_ref().err().map(|e| format!("{e:#}"));
    let done = RunEnd {
        outcome: *result.as_ref().unwrap_or(&Outcome::Stopped),
        wall,
        first,
        steps,
        last_loss,
        failed,
        saved_j,
        augment: notes.map(|n| (n.plan.derived, n.plan.cached, n.span.clone())),
    };
    finish_run(args, config, factors, trainer, &done, &span, telemetry)?;
    result?;
    if let Some(g) = governed {
        eprintln!("[governor: {}]", g.finish().line());
    }
    Ok(())
}

/// The progress line of one optimizer step.
fn step_line(
    r: &StepReport,
    p: &Progress,
    steps: usize,
    status: Option<&GovernorStatus>,
    joules: f64,
) -> String {
    let temp = status
        .and_then(|s| s.temperature_c)
        .map_or("-- °C".to_string(), |t| format!("{t:.1} °C"));
    let mut eval = p
        .eval_loss
        .map_or("--".to_string(), |l| format!("{l:.3} (ppl {:.2})", l.exp()));
    if let Some(r) = p.recall.last() {
        eval.push_str(&format!(", recall {:.0} %", 100.0 * r));
    }
    format!(
        "step {}/{steps} | loss {:.3} | held-out {eval} | {:.0} tok/s | {:.2} s/step | {temp} | {:.1} J/step | {:.1} J",
        r.step,
        r.loss,
        r.tokens as f64 / r.seconds.max(1e-9),
        r.seconds,
        joules,
        p.energy_j + joules
    )
}

/// How a training run ended: its outcome, wall time, where it started (step, tokens), the
/// steps planned, the last loss, the error when it failed, and the energy of its steps up to
/// the last checkpoint it saved.
struct RunEnd {
    outcome: Outcome,
    wall: std::time::Duration,
    first: (usize, u64),
    steps: usize,
    last_loss: Option<f64>,
    failed: Option<String>,
    saved_j: f64,
    /// For a note file: notes whose pairs were derived now, notes whose pairs came from the
    /// cache, and what deriving them cost.
    augment: Option<(usize, usize, Option<Span>)>,
}

/// The waste of a run: a failed run loses its energy after its last checkpoint; a run that
/// stopped before finishing a step saved nothing new; otherwise none.
fn run_waste(done: &RunEnd, fp: &edge_runtime::eco::Footprint, run_steps: u64) -> Option<Waste> {
    if done.failed.is_some() {
        let share = if fp.energy_j > 0.0 {
            (fp.energy_j - done.saved_j).max(0.0) / fp.energy_j
        } else {
            1.0
        };
        return Some(Waste::of_run(fp, WasteKind::TrainingFailed, share));
    }
    (done.outcome == Outcome::Stopped && run_steps == 0)
        .then(|| Waste::of_run(fp, WasteKind::TrainingStoppedEarly, 1.0))
}

/// Prints how the run ended and its footprint, appends the CSV row and the ledger entry,
/// and sends the training record.
fn finish_run(
    args: &TrainArgs,
    config: &Config,
    factors: &Factors,
    trainer: &Trainer<'_>,
    done: &RunEnd,
    span: &Span,
    telemetry: Option<Session>,
) -> Result<()> {
    let p = &trainer.progress;
    match (&done.failed, done.outcome) {
        (Some(e), _) => eprintln!("failed at step {}: {e}", p.step),
        (None, Outcome::Finished) => eprintln!(
            "done: {} steps in {:.1} s, held-out loss {}, {:.1} J; adapter in {}",
            p.step,
            done.wall.as_secs_f64(),
            p.eval_loss
                .map_or("--".into(), |l| format!("{l:.4} (ppl {:.2})", l.exp())),
            p.energy_j,
            args.out.display()
        ),
        (None, Outcome::Stopped) => eprintln!(
            "stopped at step {}; checkpoint in {} (continue with --resume)",
            p.step,
            args.out.display()
        ),
        (None, Outcome::Saturated) => eprintln!("{}", saturated_line(args, p, done)),
    }
    let trained_tokens = p.tokens.saturating_sub(done.first.1);
    let fp = factors.footprint(
        span.energy_j,
        &span.source.to_string(),
        span.duration_s,
        trained_tokens,
        span.wear_hours,
    );
    let run_steps = (p.step as u64).saturating_sub(done.first.0 as u64);
    let layers = Layers {
        waste: run_waste(done, &fp, run_steps),
        ..Layers::default()
    };
    match layers.line() {
        Some(l) => eprintln!("[footprint: {} | {l}]", fp.line()),
        None => eprintln!("[footprint: {}]", fp.line()),
    }
    if let Some((derived, cached, span)) = &done.augment {
        eprintln!(
            "{}",
            augment_line(factors, *derived, *cached, span.as_ref())
        );
    }
    if let Some(path) = emissions_csv_path(&config.eco)?
        && let Err(e) = edge_runtime::eco::emissions_csv::append_with_layers(
            &path,
            &edge_runtime::eco::emissions_csv::RunInfo::now("thermo train"),
            &fp,
            &layers,
            factors,
        )
    {
        log::warn!("{e}");
    }
    let today = cache_ledger().and_then(|ledger| {
        ledger
            .record_training_with_layers(
                &utc_date(std::time::SystemTime::now()),
                &fp,
                run_steps,
                &layers,
            )
            .map_err(|e| log::warn!("{e}"))
            .ok()
    });
    if done.failed.is_none()
        && run_steps > 0
        && let Some(ledger) = cache_ledger()
        && let Err(e) = ledger.adapter_trained(
            &adapter_key(&args.out),
            &utc_date(std::time::SystemTime::now()),
            &fp,
        )
    {
        log::warn!("{e}");
    }
    if let Some(today) = &today {
        eprintln!("[today: {}]", today.line());
    }
    if let Some(id) = &args.when.agent_job {
        deferred_line(id);
    }
    if let Some(t) = telemetry {
        t.training_done(TrainingDone {
            outcome: match (&done.failed, done.outcome) {
                (Some(_), _) => "failed",
                (None, Outcome::Finished) => "finished",
                (None, Outcome::Stopped) => "stopped",
                (None, Outcome::Saturated) => "saturated",
            }
            .into(),
            steps: p.step as u64,
            steps_planned: done.steps as u64,
            tokens: p.tokens,
            loss: done.last_loss.map(|l| l as f32),
            eval_loss: p.eval_loss.map(|l| l as f32),
            tokens_per_s: (trained_tokens as f64 / done.wall.as_secs_f64().max(1e-9)) as f32,
            wall_ms: u64::try_from(done.wall.as_millis()).unwrap_or(u64::MAX),
            energy_j: Some(fp.energy_j),
            eco: Some(eco_figures(&fp)),
            today: today.as_ref().map(day_figures),
            wasted_j: layers.waste.map(|w| w.energy_j),
        });
        t.finish();
    }
    Ok(())
}

/// How a run that stopped on saturated recall ended: the recall, the step, and the steps
/// and joules it did not spend (at this run's mean energy per step).
fn saturated_line(args: &TrainArgs, p: &Progress, done: &RunEnd) -> String {
    let avoided = done.steps.saturating_sub(p.step);
    let j_per_step = p.energy_j / p.step.max(1) as f64;
    format!(
        "done: held-out recall saturated at {:.0} % at step {}/{}: {avoided} steps avoided \
         (~{:.0} J at {:.1} J/step); {:.1} s, held-out loss {}, {:.1} J; adapter in {}",
        100.0 * p.recall.last().copied().unwrap_or(0.0),
        p.step,
        done.steps,
        avoided as f64 * j_per_step,
        j_per_step,
        done.wall.as_secs_f64(),
        p.eval_loss
            .map_or("--".into(), |l| format!("{l:.4} (ppl {:.2})", l.exp())),
        p.energy_j,
        args.out.display()
    )
}

/// The augmentation's share of the footprint, apart from the training's: what deriving the
/// question/answer pairs cost (nothing when every note's pairs came from the cache).
fn augment_line(factors: &Factors, derived: usize, cached: usize, span: Option<&Span>) -> String {
    match span {
        Some(s) => {
            let fp = factors.footprint(
                s.energy_j,
                &s.source.to_string(),
                s.duration_s,
                0,
                s.wear_hours,
            );
            format!(
                "[augmentation (teacher's share, apart from the above): pairs of {derived} \
                 note(s) derived by templates, {cached} from the cache; {:.3} J, {:.2e} g CO2e, \
                 {:.3} s]",
                fp.energy_j, fp.g_co2e, s.duration_s
            )
        }
        None => format!(
            "[augmentation (teacher's share, apart from the above): pairs of {cached} note(s) \
             from the cache, {derived} derived; 0 J]"
        ),
    }
}

/// Prints the plan of the queued job `id` this run belongs to, against running it now.
fn deferred_line(id: &str) {
    let queue = edge_runtime::models::cache_root()
        .map(|root| root.join(edge_runtime::deferred::queue::QUEUE_FILE))
        .map_err(|e| format!("{e:#}"))
        .and_then(|path| edge_runtime::deferred::Queue::load(&path).map_err(|e| e.to_string()));
    match queue {
        Ok(q) => match q.get(id).and_then(|j| j.decision) {
            Some(d) => eprintln!("[deferred {id}: {}]", decision_line(&d)),
            None => log::warn!("deferred job {id} has no plan in the queue"),
        },
        Err(e) => log::warn!("{e}"),
    }
}

/// `thermo train --bench` (`thermo bench train`): all layers, then the top `--bench-top`,
/// under the governor's meter (or one of our own with `--no-governor`).
fn run_bench(
    args: &TrainArgs,
    base: &BaseModel,
    options: &TrainOptions,
    data: &[Example],
    factors: &Factors,
) -> Result<()> {
    let governed = args.governor.start(compute_threads())?;
    let meter = energy_meter(governed.as_ref(), factors)?;
    let bench = TrainBench {
        rank: args.rank,
        alpha: args.alpha,
        dropout: args.dropout,
        top: args.bench_top,
        steps: args.bench_steps,
    };
    super::bench::train::run(&bench, base, options, data, &meter)?;
    if let Some(g) = governed {
        eprintln!("[governor: {}]", g.finish().line());
    }
    Ok(())
}

/// `thermo bench train`: `thermo train --bench` under the benchmark's name.
pub fn bench(mut args: TrainArgs) -> Result<()> {
    args.bench = true;
    train(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_comes_from_the_flag_then_the_environment_then_one() {
        assert_eq!(wanted_threads(None, None).ok(), Some(Some(1)));
        assert_eq!(wanted_threads(None, Some("2")).ok(), Some(None));
        assert_eq!(wanted_threads(Some(2), Some("2")).ok(), Some(None));
        assert_eq!(wanted_threads(Some(2), Some("1")).ok(), Some(Some(2)));
        assert_eq!(wanted_threads(Some(3), None).ok(), Some(Some(3)));
        assert!(wanted_threads(Some(0), None).is_err());
    }
}
