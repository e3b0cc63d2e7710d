//! Eco accounting of the main job (`run`, `chat`, `train`): the energy meter (the governor's
//! board meter, or RAPL / the power model sampled on a thread of our own when the governor
//! is off), the guard in front of the governor's gate, the `[footprint: ...]` summary line
//! with the hidden layers (retrieval's memory as [`Accounting::set_memory`] reported it, the
//! model's declared upstream share, wasted work), the `emissions.csv` row and the per-day
//! ledger.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::governed::{GOVERNOR_STOPPED, Governed};
use crate::eco::EcoConfig;
use crate::eco::emissions_csv::{self, RunInfo};
use crate::eco::energy::{EnergyMeter, Fallback, MeterHandle, PowerModel};
use crate::eco::guard::{GuardConfig, GuardStop, ZombieGuard};
use crate::eco::layers::{IndexFootprint, Layers, MemoryCost, UpstreamSettings, Waste};
use crate::eco::ledger::{DayTotals, Ledger, utc_date};
use crate::eco::{Factors, Footprint};
use crate::engine::generate::{Gate, GenerateOptions, GenerationStats, StopReason, generate};
use crate::engine::model::KvState;
use crate::governor::platform::Platform;
use crate::shutdown::Shutdown;

/// The CSV the footprint rows go to, when `[eco]` asks for them.
pub fn emissions_csv_path(eco: &EcoConfig) -> Result<Option<PathBuf>> {
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
        .map(|root| Ledger::new(root.join(crate::eco::ledger::LEDGER_FILE)))
}

/// The ledger key of an adapter folder: its canonical path (the path as given when it cannot
/// be resolved).
pub fn adapter_key(folder: &std::path::Path) -> String {
    std::fs::canonicalize(folder)
        .unwrap_or_else(|_| folder.to_path_buf())
        .display()
        .to_string()
}

/// Notes in the cache's ledger that the adapter in `folder` is served from today on, so its
/// training no longer counts as unserved (a failure is logged, never fatal).
pub fn note_adapter_served(folder: &std::path::Path) {
    if let Some(ledger) = cache_ledger()
        && let Err(e) = ledger.adapter_served(
            &adapter_key(folder),
            &utc_date(std::time::SystemTime::now()),
        )
    {
        log::warn!("{e}");
    }
}

/// The board's energy meter when no governor runs: RAPL where the kernel offers it, else the
/// default board's power model times this process's CPU time (wear per `factors`); polled
/// once.
pub fn fallback_meter(factors: &Factors) -> Result<MeterHandle> {
    let profile = sensor_drivers::sim::Profile::builtin(crate::sensing::DEFAULT_TWIN_PROFILE)
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
    Ok(meter)
}

/// The energy meter of a job: the governor's board meter when it runs, else
/// [`fallback_meter`].
pub fn energy_meter(governed: Option<&Governed>, factors: &Factors) -> Result<MeterHandle> {
    match governed {
        Some(g) => Ok(g.meter().clone()),
        None => fallback_meter(factors),
    }
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
    upstream: UpstreamSettings,
    memory: Option<(MemoryCost, Option<IndexFootprint>)>,
    layers: Layers,
}

/// Why the gate stops a generation once SIGTERM or SIGINT arrived.
pub const INTERRUPTED: &str = "interrupted by a signal";

impl Accounting {
    /// Resolves the factors and the meter: the governor's board meter when it runs, else
    /// RAPL or the default board's power model, sampled on a thread every 100 ms. Factors,
    /// guard, budgets and the CSV come from `eco` (the layered `[eco]` section, the flags
    /// already on top).
    pub fn start(eco: &EcoConfig, governed: Option<&Governed>) -> Result<Self> {
        let factors = eco.factors()?;
        let guard = eco.guard_config();
        let csv = emissions_csv_path(eco)?;
        let (meter, sampler) = match governed {
            Some(g) => (g.meter().clone(), None),
            None => {
                let meter = fallback_meter(&factors)?;
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
            upstream: UpstreamSettings::from(eco),
            memory: None,
            layers: Layers::default(),
        })
    }

    /// The factors in force.
    pub fn factors(&self) -> &Factors {
        &self.factors
    }

    /// Joules the meter has counted since it started, read now.
    pub fn energy_j(&self) -> f64 {
        self.meter.poll();
        self.meter.mark().energy_j
    }

    /// Reports what retrieval cost the next answer: call it once, after retrieving and
    /// before [`Accounting::generate`], which takes it into that answer's memory layer (the
    /// footprint line, the CSV row, the ledger and [`Accounting::layers`]). `index` is the
    /// searched index's own footprint (its store's `indexing_j` meta value, its file's bytes
    /// on disk and the bytes its search holds in memory), when known. A figure that is
    /// negative or not finite is logged and counted as 0.
    pub fn set_memory(&mut self, cost: MemoryCost, index: Option<IndexFootprint>) {
        if let Some((name, v)) = cost.invalid() {
            log::warn!("retrieval reported {name} = {v}; counted as 0");
        }
        self.memory = Some((cost, index));
    }

    /// The hidden layers of the last answer.
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// The layers of an answer of `fp` that ran on `model` and ended with `stop`, with the
    /// `memory` [`Accounting::set_memory`] reported for it.
    fn answer_layers(
        &self,
        memory: Option<(MemoryCost, Option<IndexFootprint>)>,
        fp: &Footprint,
        stats: &GenerationStats,
        model: &std::path::Path,
        stop: Option<&GuardStop>,
    ) -> Layers {
        let name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Layers {
            memory: memory.map(|(cost, index)| {
                let cost = cost.with_answer_prefill(
                    fp.energy_j,
                    stats.prefill_time.as_secs_f64(),
                    stats.decode_time.as_secs_f64(),
                    stats.prompt_tokens,
                );
                self.factors.memory(&cost, index.as_ref(), fp.duration_s)
            }),
            upstream: Some(self.upstream.resolve(&name).share(fp.tokens)),
            waste: Waste::of_answer(fp, stop),
        }
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
        // Retrieval's cost belongs to this answer only, even when it fails.
        let memory = self.memory.take();
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
        let stop = guard.and_then(|g| g.stopped().cloned());
        let layers = self.answer_layers(memory, &fp, &stats, &state.model().dir, stop.as_ref());
        if let Some(path) = &self.csv
            && let Err(e) = emissions_csv::append_with_layers(
                path,
                &RunInfo::now("thermo"),
                &fp,
                &layers,
                &self.factors,
            )
        {
            log::warn!("{e}");
        }
        if let Some(ledger) = &self.ledger {
            match ledger.record_with_layers(&utc_date(std::time::SystemTime::now()), &fp, &layers) {
                Ok(today) => self.today = Some(today),
                Err(e) => log::warn!("{e}"),
            }
        }
        self.layers = layers;
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
        Accounting::line_with_layers(fp, stop, &Layers::default())
    }

    /// The `[footprint: ...]` line of one answer with its hidden layers after a `|`, apart
    /// from the measured figures.
    pub fn line_with_layers(fp: &Footprint, stop: Option<&GuardStop>, layers: &Layers) -> String {
        let mut text = fp.line();
        if let Some(j) = stop.and_then(|s| s.avoided_j) {
            text.push_str(&format!("; guard avoided {j:.1} J"));
        }
        if let Some(l) = layers.line() {
            text.push_str(&format!(" | {l}"));
        }
        format!("[footprint: {text}]")
    }

    /// The `[footprint: ...]` line of the last answer (`fp` and `stop` as
    /// [`Accounting::generate`] returned them), with its hidden layers.
    pub fn answer_line(&self, fp: &Footprint, stop: Option<&GuardStop>) -> String {
        Accounting::line_with_layers(fp, stop, &self.layers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eco::guard::GuardKind;
    use crate::eco::layers::{UpstreamSettings, WasteKind};

    #[test]
    fn the_footprint_line_shows_the_layers_apart_after_the_measured_figures() {
        let fp = Factors::default().footprint(36.0, "t", 1.0, 10, 0.0);
        let stop = GuardStop {
            kind: GuardKind::Cycle,
            reason: String::new(),
            at_token: 10,
            loop_start: Some(2),
            avoided_j: Some(5.0),
        };
        let layers = Layers {
            upstream: Some(UpstreamSettings::default().resolve("Llama-2-7b").share(10)),
            waste: Waste::of_answer(&fp, Some(&stop)),
            ..Layers::default()
        };
        let line = Accounting::line_with_layers(&fp, Some(&stop), &layers);
        let (measured, hidden) = line.split_once(" | ").unwrap_or_default();
        assert!(measured.contains("guard avoided 5.0 J"), "{line}");
        assert!(hidden.contains("upstream Llama 2 7B (declared"), "{line}");
        assert!(hidden.contains(WasteKind::GuardStopped.as_str()), "{line}");
        assert!(!Accounting::line(&fp, None).contains('|'));
    }
}
