//! The footprint of the main job: `thermo run` / `thermo chat` flags for eco accounting and
//! the zombie-compute guard, the energy meter (the governor's board meter, or RAPL / the
//! power model sampled on a thread of our own when the governor is off), the guard in front
//! of the governor's gate, the `[footprint: ...]` summary line and the `emissions.csv` row.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::governed::{GOVERNOR_STOPPED, Governed};
use crate::config::{Config, EcoSection, Layers};
use crate::eco::emissions_csv::{self, RunInfo};
use crate::eco::energy::{EnergyMeter, Fallback, MeterHandle, PowerModel};
use crate::eco::guard::{GuardConfig, GuardStop, ZombieGuard};
use crate::eco::ledger::{DayTotals, Ledger, utc_date};
use crate::eco::{Factors, Footprint};
use crate::engine::generate::{Gate, GenerateOptions, GenerationStats, StopReason, generate};
use crate::engine::model::KvState;
use crate::governor::platform::Platform;
use crate::shutdown::Shutdown;

/// Footprint flags of `run`, `chat` and `train`: the configuration file, the region and the
/// `emissions.csv` row.
#[derive(Debug, Clone, Args)]
pub struct FootprintArgs {
    /// Read the configuration from this file instead of /etc/thermo/thermo.toml (the `[eco]`
    /// and `[telemetry]` sections apply; `thermo config --example` prints every key).
    #[arg(long = "config", alias = "eco-config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Grid region for the carbon and water factors (world, us, cn, in, jp, de).
    #[arg(long, value_name = "CODE")]
    pub region: Option<String>,
    /// Append a CodeCarbon-compatible row per answer or training run to this CSV (default:
    /// `emissions.csv` in the thermo cache folder).
    #[arg(long, value_name = "FILE")]
    pub emissions_csv: Option<PathBuf>,
    /// Write no emissions.csv.
    #[arg(long)]
    pub no_emissions_csv: bool,
}

/// Eco-accounting and guard flags of `run` and `chat`.
#[derive(Debug, Clone, Args)]
pub struct EcoArgs {
    #[command(flatten)]
    pub footprint: FootprintArgs,
    /// Do not stop degenerate (looping) answers.
    #[arg(long)]
    pub no_guard: bool,
    /// Stop an answer after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub max_seconds: Option<f64>,
    /// Stop an answer after this many joules at the board.
    #[arg(long, value_name = "JOULES")]
    pub max_joules: Option<f64>,
    /// Stop an answer after this many grams of CO2e.
    #[arg(long, value_name = "GRAMS")]
    pub max_g_co2e: Option<f64>,
}

/// `eco.<key>` overrides from flags that were given.
fn push(out: &mut Vec<(String, String)>, key: &str, value: Option<String>) {
    if let Some(v) = value {
        out.push((format!("eco.{key}"), v));
    }
}

impl FootprintArgs {
    /// The flags as `[eco]` overrides of the layered configuration.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        push(
            &mut out,
            "region",
            self.region.as_ref().map(|r| format!("{r:?}")),
        );
        push(
            &mut out,
            "emissions_csv",
            self.emissions_csv
                .as_ref()
                .map(|p| format!("{:?}", p.display().to_string())),
        );
        push(
            &mut out,
            "write_emissions_csv",
            self.no_emissions_csv.then(|| "false".into()),
        );
        out
    }
}

impl EcoArgs {
    /// The flags as `[eco]` overrides of the layered configuration.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out = self.footprint.overrides();
        push(&mut out, "guard", self.no_guard.then(|| "false".into()));
        push(
            &mut out,
            "max_seconds",
            self.max_seconds.map(|v| format!("{v:?}")),
        );
        push(
            &mut out,
            "max_joules",
            self.max_joules.map(|v| format!("{v:?}")),
        );
        push(
            &mut out,
            "max_g_co2e",
            self.max_g_co2e.map(|v| format!("{v:?}")),
        );
        out
    }
}

/// The main job's configuration: the `--config` file, else `/etc/thermo/thermo.toml` when
/// it exists (the service's file) < `THERMO_<SECTION>_<KEY>` < the flags (`eco` holds the
/// `[eco]` overrides). `run`, `chat` and `train` use its `[eco]` and `[telemetry]` sections.
pub fn main_job_config(
    footprint: &FootprintArgs,
    eco: Vec<(String, String)>,
    telemetry: &super::telemetry::TelemetryArgs,
) -> Result<Config> {
    let mut overrides = eco;
    overrides.extend(super::serve::telemetry_overrides(telemetry));
    let layers = Layers::from_process(footprint.config.as_deref(), overrides)?;
    Ok(Config::load(&layers)?)
}

/// The CSV the footprint rows go to, when `[eco]` asks for them.
pub fn emissions_csv_path(eco: &EcoSection) -> Result<Option<PathBuf>> {
    if !eco.write_emissions_csv {
        return Ok(None);
    }
    Ok(Some(match &eco.emissions_csv {
        Some(p) => p.clone(),
        None => crate::models::cache_root()?.join("emissions.csv"),
    }))
}

/// The per-day ledger of `run`, `chat` and `train`, next to the CSV's default place (the
/// cache); `None` when there is no cache folder.
pub fn cache_ledger() -> Option<Ledger> {
    crate::models::cache_root()
        .ok()
        .map(|root| Ledger::new(root.join(crate::serve::LEDGER_FILE)))
}

/// Eco accounting over one `run` or `chat` session.
pub struct Accounting {
    factors: Factors,
    meter: MeterHandle,
    sampler: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    guard: Option<GuardConfig>,
    csv: Option<PathBuf>,
    ledger: Option<Ledger>,
    session: Footprint,
    today: Option<DayTotals>,
}

/// Why the gate stops a generation once SIGTERM or SIGINT arrived.
pub const INTERRUPTED: &str = "interrupted by a signal";

impl Accounting {
    /// Resolves the factors and the meter: the governor's board meter when it runs, else
    /// RAPL or the default board's power model, sampled on a thread every 100 ms. Factors,
    /// guard, budgets and the CSV come from `eco` (the layered `[eco]` section, the flags
    /// already on top, see [`main_job_config`]).
    pub fn start(eco: &EcoSection, governed: Option<&Governed>) -> Result<Self> {
        let factors = eco.factors()?;
        let guard = eco.guard_config();
        let csv = emissions_csv_path(eco)?;
        let (meter, sampler) = match governed {
            Some(g) => (g.meter().clone(), None),
            None => {
                let profile =
                    sensor_drivers::sim::Profile::builtin(crate::sensing::DEFAULT_TWIN_PROFILE)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                let platform = Platform::from_profile(&profile)?;
                let model = PowerModel::from_platform(&platform, platform.top_level());
                let meter = MeterHandle::new(EnergyMeter::new(
                    Some(Fallback::detect(
                        std::path::Path::new("/sys/class/powercap"),
                        model,
                    )),
                    factors.wear_reference_c,
                    factors.activation_ev,
                ));
                meter.poll();
                let stop = Arc::new(AtomicBool::new(false));
                let (m, s) = (meter.clone(), stop.clone());
                let thread = std::thread::Builder::new()
                    .name("energy".into())
                    .spawn(move || m.sample_until(Duration::from_millis(100), &s))
                    .context("spawning the energy sampler")?;
                (meter, Some((stop, thread)))
            }
        };
        Ok(Accounting {
            factors,
            meter,
            sampler,
            guard,
            csv,
            ledger: cache_ledger(),
            session: Footprint::default(),
            today: None,
        })
    }

    /// The factors in force.
    pub fn factors(&self) -> &Factors {
        &self.factors
    }

    /// Generates one answer under the guard (when on) and the governor's gate (when on),
    /// stopping at the next token once `shutdown` is requested, then accounts for it: prints
    /// the footprint line and appends the CSV row.
    pub fn generate(
        &mut self,
        state: &mut KvState,
        prompt: &[u32],
        opts: &GenerateOptions,
        governed: Option<&Governed>,
        shutdown: &Shutdown,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(GenerationStats, Footprint, Option<GuardStop>)> {
        self.meter.poll();
        let start = self.meter.mark();
        let mut guard = self.guard.clone().map(|mut cfg| {
            cfg.budget.max_tokens = Some(opts.max_tokens);
            ZombieGuard::new(cfg, self.factors.g_co2e_per_j()[0])
        });
        let mut gov_gate = governed.map(|g| g.gate());
        let stats = {
            let mut guard_gate = guard
                .as_mut()
                .map(|g| g.gate(Some(&self.meter), Some(start)));
            let mut gate = |ev: crate::engine::generate::TokenEvent<'_>| {
                if shutdown.is_requested() {
                    return Gate::Stop(INTERRUPTED.to_owned());
                }
                if let Some(g) = guard_gate.as_mut()
                    && let Gate::Stop(why) = g(ev)
                {
                    return Gate::Stop(why);
                }
                match gov_gate.as_mut() {
                    Some(g) => g(ev),
                    None => Gate::Continue,
                }
            };
            generate(state, prompt, opts, &mut gate, on_text)?
        };
        drop(gov_gate);
        if stats.stop == StopReason::Stopped(GOVERNOR_STOPPED.to_owned()) {
            bail!(
                "{GOVERNOR_STOPPED} during the answer; it was cut off after {} tokens rather \
                 than generated ungoverned",
                stats.generated_tokens
            );
        }
        self.meter.poll();
        let span = self.meter.since(&start);
        let tokens = stats.generated_tokens as u64;
        let fp = self.factors.footprint(
            span.energy_j,
            &span.source.to_string(),
            span.duration_s,
            tokens,
            span.wear_hours,
        );
        self.session.add(&fp);
        if let Some(path) = &self.csv
            && let Err(e) = emissions_csv::append(path, &RunInfo::now("thermo"), &fp, &self.factors)
        {
            log::warn!("{e}");
        }
        if let Some(ledger) = &self.ledger {
            match ledger.record(&utc_date(std::time::SystemTime::now()), &fp) {
                Ok(today) => self.today = Some(today),
                Err(e) => log::warn!("{e}"),
            }
        }
        let stop = guard.and_then(|g| g.stopped().cloned());
        Ok((stats, fp, stop))
    }

    /// The footprint of the whole session so far.
    pub fn session(&self) -> &Footprint {
        &self.session
    }

    /// Today's (UTC) totals after the last answer, when the ledger is kept and writable.
    pub fn today(&self) -> Option<&DayTotals> {
        self.today.as_ref()
    }

    /// The `[footprint: ...]` line of one answer.
    pub fn line(fp: &Footprint, stop: Option<&GuardStop>) -> String {
        match stop.and_then(|s| s.avoided_j) {
            Some(j) => format!("[footprint: {}; guard avoided {j:.1} J]", fp.line()),
            None => format!("[footprint: {}]", fp.line()),
        }
    }

    /// Stops the sampler thread.
    pub fn finish(mut self) {
        self.stop_sampler();
    }

    fn stop_sampler(&mut self) {
        if let Some((stop, thread)) = self.sampler.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.stop_sampler();
    }
}
