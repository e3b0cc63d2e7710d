//! `thermo index add|status|search|remove|watch`: the document index, one SQLite file
//! (`$THERMO_HOME/index.sqlite` unless `--index` names another). Indexing runs under the
//! governor at training priority, a permit per batch of chunks; search loads no governor.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use edge_runtime::eco::energy::{Mark, MeterHandle};
use edge_runtime::eco::ledger::utc_date;
use edge_runtime::eco::{EcoConfig, Factors};
use edge_runtime::engine::set_compute_threads;
use edge_runtime::governor::Priority;
use edge_runtime::index::build::{AddOptions, DEFAULT_MAX_FILE_BYTES};
use edge_runtime::index::{
    AddReport, Encoder, Index, Mode, NamedEncoder, Progress, RetrievalOptions, Retriever, Store,
    add, watch_once,
};
use edge_runtime::session::accounting::{cache_ledger, energy_meter};
use edge_runtime::session::governed::Governed;
use edge_runtime::session::rag::{index_path, load_encoder};
use edge_runtime::shutdown::Shutdown;

use super::flags::governor::{GovernorArgs, SetpointArg};
use super::flags::when::{Submission, When, WhenArgs, eco_factors, submit};

/// Flags of `thermo index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: IndexCommand,
    /// The index file (default: index.sqlite in the thermo home).
    #[arg(long, global = true, value_name = "FILE")]
    pub index: Option<PathBuf>,
}

/// The index's subcommands.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index files and folders (text, Markdown, HTML); unchanged chunks are not embedded again.
    Add(AddArgs),
    /// Documents, chunks, sizes and the joules indexing spent and saved.
    Status(StatusArgs),
    /// The chunks that best match a query, with their scores and file:line.
    Search(SearchArgs),
    /// Remove a file, or every file under a folder, from the index.
    Remove(RemoveArgs),
    /// Index paths, then re-index what changes and drop what is deleted until stopped.
    Watch(WatchArgs),
}

/// The sentence encoder flags.
#[derive(Debug, Clone, Args)]
pub struct EncoderArgs {
    /// Encoder folder (sentence-transformers layout); default: all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    pub encoder: Option<PathBuf>,
    /// Compute threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

impl EncoderArgs {
    /// Loads the encoder, returning it with its name.
    pub fn load(&self) -> Result<NamedEncoder> {
        set_compute_threads(self.threads.max(1));
        load_encoder(self.encoder.as_deref())
    }
}

fn display_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
}

/// Flags of `thermo index add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files and folders to index.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Skip files larger than this (MiB).
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES >> 20, value_name = "MIB")]
    pub max_file_mb: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    #[command(flatten)]
    pub governor: GovernorArgs,
    #[command(flatten)]
    pub when: WhenArgs,
}

/// Seconds an indexing run is planned to take at full speed without `--plan-step-s`.
pub const PLAN_INDEX_S: f64 = 600.0;

/// Flags of `thermo index status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// List the skipped files and why.
    #[arg(long)]
    pub skipped: bool,
}

/// Flags of `thermo index search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for.
    #[arg(value_name = "QUERY")]
    pub query: String,
    /// How many chunks.
    #[arg(short, default_value_t = 5)]
    pub k: usize,
    /// Ranking: dense, keyword or hybrid.
    #[arg(long, default_value = "hybrid")]
    pub mode: Mode,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

/// Flags of `thermo index remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// A file or folder as it was indexed.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// Flags of `thermo index watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Files and folders to keep indexed.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Seconds between looks for changes.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Skip files larger than this (MiB).
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES >> 20, value_name = "MIB")]
    pub max_file_mb: u64,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    #[command(flatten)]
    pub governor: GovernorArgs,
}

/// Runs `thermo index`.
pub fn index(args: IndexArgs) -> Result<()> {
    let path = index_path(args.index.as_deref())?;
    match args.command {
        IndexCommand::Add(a) => add_cmd(&path, a),
        IndexCommand::Status(a) => status(&path, &a),
        IndexCommand::Search(a) => search(&path, &a),
        IndexCommand::Remove(a) => remove(&path, &a),
        IndexCommand::Watch(a) => watch(&path, a),
    }
}

/// The governor (unless `--no-governor`), the energy meter and the stop flag of an indexing
/// job.
struct Job {
    governed: Option<Governed>,
    meter: MeterHandle,
    factors: Factors,
    shutdown: Shutdown,
}

impl Job {
    /// Opens (or creates) the index for `encoder`, then starts the job that fills it.
    fn open(
        path: &Path,
        encoder: &dyn Encoder,
        governor: &GovernorArgs,
        threads: usize,
    ) -> Result<(Store, Job)> {
        let store = Store::open(path, &encoder.id())?;
        Ok((store, Job::start(governor, threads)?))
    }

    fn start(governor: &GovernorArgs, threads: usize) -> Result<Job> {
        let shutdown = Shutdown::install()?;
        let governed = governor.start(threads.max(1))?;
        let factors = EcoConfig::default().factors()?;
        let meter = energy_meter(governed.as_ref(), &factors)?;
        Ok(Job {
            governed,
            meter,
            factors,
            shutdown,
        })
    }

    fn mark(&self) -> Mark {
        self.meter.poll();
        self.meter.mark()
    }

    /// The footprint of the work since `from`, added to the day ledger as an indexing run
    /// (a failure to write the ledger is logged, never fatal); returns its summary lines.
    fn account(&self, from: &Mark, chunks: u64, avoided_j: f64) -> (String, Option<String>) {
        self.meter.poll();
        let span = self.meter.since(from);
        let fp = self.factors.footprint(
            span.energy_j,
            &span.source.to_string(),
            span.duration_s,
            0,
            span.wear_hours,
        );
        let today = cache_ledger().and_then(|ledger| {
            ledger
                .record_indexing(
                    &utc_date(std::time::SystemTime::now()),
                    &fp,
                    chunks,
                    avoided_j,
                )
                .map_err(|e| log::warn!("{e}"))
                .ok()
        });
        (fp.line(), today.map(|t| t.line()))
    }

    fn energy_j(&self) -> f64 {
        self.meter.poll();
        self.meter.mark().energy_j
    }

    /// Runs one batch under a training permit; `false` once a stop was asked for.
    fn gate(&self, work: &mut dyn FnMut()) -> bool {
        if self.shutdown.is_requested() {
            return false;
        }
        match &self.governed {
            Some(g) => match g
                .permits()
                .acquire_unless(Priority::Training, self.shutdown.flag())
            {
                Some(_permit) => {
                    work();
                    true
                }
                None => false,
            },
            None => {
                work();
                true
            }
        }
    }

    fn finish(self) {
        if let Some(g) = self.governed {
            g.finish();
        }
    }
}

fn add_cmd(path: &Path, args: AddArgs) -> Result<()> {
    if args.when.agent_job.is_none() {
        match args.when.when {
            When::Auto => {
                let sub = Submission {
                    kind: edge_runtime::deferred::JobKind::Index,
                    steps: 1,
                    out: None,
                    default_step_s: PLAN_INDEX_S,
                    setpoint_c: args
                        .governor
                        .setpoint
                        .and_then(SetpointArg::celsius)
                        .map_or(super::train::PLAN_SETPOINT_C, f64::from),
                };
                return submit(&args.when, sub, &eco_factors(None, None)?);
            }
            When::Now if args.when.deadline.is_some() => {
                bail!("--deadline is for --when auto; with --when now indexing starts at once")
            }
            When::Now => {}
        }
    }
    let encoder = args.encoder.load()?;
    let (mut store, job) = Job::open(path, &encoder, &args.governor, args.encoder.threads)?;
    let opts = AddOptions {
        max_file_bytes: args.max_file_mb.saturating_mul(1 << 20),
        count_unchanged: true,
    };
    let start = job.mark();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = add(
        &mut store,
        &encoder,
        &args.paths,
        &opts,
        &mut |work| job.gate(work),
        &|| job.energy_j(),
        &mut |p| match p {
            Progress::Files(n) => bar.set_length(n as u64),
            Progress::Done(f) => {
                bar.inc(1);
                bar.set_message(display_name(f));
            }
        },
    );
    bar.finish_and_clear();
    let accounted = report
        .as_ref()
        .ok()
        .map(|r| job.account(&start, r.embedded_chunks, r.avoided_j));
    job.finish();
    let report = report?;
    print_report(&report, args.json)?;
    if let Some((footprint, today)) = accounted {
        eprintln!("[footprint: {footprint}]");
        if let Some(today) = today {
            eprintln!("[today: {today}]");
        }
    }
    if report.stopped {
        bail!(
            "stopped before every file was indexed; what was committed stays, run it again to go on"
        );
    }
    Ok(())
}

fn print_report(r: &AddReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    for (path, why) in &r.skipped {
        println!("skipped {path}: {why}");
    }
    println!(
        "{} files: {} indexed, {} unchanged, {} skipped; {} chunks embedded, {} reused; {:.1} J spent, {:.1} J avoided by reuse",
        r.files,
        r.indexed,
        r.unchanged,
        r.skipped.len(),
        r.embedded_chunks,
        r.reused_chunks,
        r.spent_j,
        r.avoided_j
    );
    Ok(())
}

fn status(path: &Path, args: &StatusArgs) -> Result<()> {
    let index = Index::open(path)?;
    let s = index.store().status()?;
    let resident = index.resident_bytes();
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["resident_bytes"] = resident.into();
        println!("{v}");
    } else {
        println!("index        {}", s.path.display());
        println!("encoder      {} ({} dimensions)", s.encoder, s.dim);
        println!(
            "documents    {} ({} bytes), {} skipped",
            s.documents, s.source_bytes, s.skipped
        );
        println!("chunks       {}", s.chunks);
        println!(
            "on disk      {} bytes; vectors table {} bytes for {} bytes of vectors ({:.2}x)",
            s.disk_bytes,
            s.vector_table_bytes,
            s.raw_vector_bytes,
            s.vector_table_bytes as f64 / (s.raw_vector_bytes.max(1)) as f64
        );
        println!("resident     {resident} bytes (vectors)");
        println!(
            "energy       {:.1} J spent indexing ({} chunks embedded), {:.1} J avoided by reuse",
            s.indexing_j, s.embedded_chunks, s.avoided_j
        );
    }
    if args.skipped {
        for (p, why) in index.store().skipped()? {
            println!("skipped {p}: {why}");
        }
    }
    Ok(())
}

fn search(path: &Path, args: &SearchArgs) -> Result<()> {
    let options = RetrievalOptions {
        mode: args.mode,
        k: args.k,
        ..RetrievalOptions::default()
    };
    let retriever = Retriever::open(path, options, || args.encoder.load())?;
    let found = retriever.retrieve(&args.query, &mut || 0.0)?;
    let (hits, ms) = (found.hits, found.search_s * 1e3);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"mode": args.mode, "search_ms": ms, "hits": hits})
        );
        return Ok(());
    }
    for (i, h) in hits.iter().enumerate() {
        let first: String = h
            .text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(100)
            .collect();
        println!("[{}] {:.4}  {}\n    {first}", i + 1, h.score, h.citation());
    }
    eprintln!("{} hits in {ms:.1} ms ({})", hits.len(), args.mode.name());
    Ok(())
}

fn remove(path: &Path, args: &RemoveArgs) -> Result<()> {
    let mut store = Store::open_existing(path)?;
    let target = std::fs::canonicalize(&args.path).unwrap_or_else(|_| args.path.clone());
    let target = target
        .to_str()
        .context("the path is not UTF-8, so it was never indexed")?;
    let n = store.remove(target)?;
    if n == 0 {
        bail!("{target} is not in {}", path.display());
    }
    println!("removed {n} documents under {target}");
    Ok(())
}

fn watch(path: &Path, args: WatchArgs) -> Result<()> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        bail!("--interval must be a positive number of seconds");
    }
    let encoder = args.encoder.load()?;
    let (mut store, job) = Job::open(path, &encoder, &args.governor, args.encoder.threads)?;
    let opts = AddOptions {
        max_file_bytes: args.max_file_mb.saturating_mul(1 << 20),
        count_unchanged: false,
    };
    let interval = Duration::from_secs_f64(args.interval);
    log::info!("watching {} path(s) every {:?}", args.paths.len(), interval);
    let result = loop {
        let start = job.mark();
        let pass = watch_once(
            &mut store,
            &encoder,
            &args.paths,
            &opts,
            &mut |work| job.gate(work),
            &|| job.energy_j(),
        );
        match pass {
            Ok(r) if r.indexed + r.removed + r.skipped.len() > 0 => {
                for (p, why) in &r.skipped {
                    log::warn!("skipped {p}: {why}");
                }
                log::info!(
                    "{} indexed, {} removed; {} chunks embedded ({:.1} J), {} reused",
                    r.indexed,
                    r.removed,
                    r.embedded_chunks,
                    r.spent_j,
                    r.reused_chunks
                );
                let (footprint, _) = job.account(&start, r.embedded_chunks, r.avoided_j);
                log::info!("footprint: {footprint}");
            }
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
        let until = Instant::now() + interval;
        while Instant::now() < until && !job.shutdown.is_requested() {
            std::thread::sleep(Duration::from_millis(100).min(interval));
        }
        if job.shutdown.is_requested() {
            break Ok(());
        }
    };
    job.finish();
    result
}
