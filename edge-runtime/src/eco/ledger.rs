//! Per-day eco totals: a small JSON file (`eco-ledger.json` in the thermo cache or state
//! folder) keyed by UTC date, holding joules, g CO2e (operational and embodied), mL water,
//! mg NOx/SO2/PM2.5, wear hours, tokens, answers, training runs and their steps, and apart
//! from those the hidden layers' totals: retrieval's memory, the declared upstream share and
//! wasted work. Every answer of `run`, `chat` and `serve` and every `train` run adds to
//! today's entry: read, add, write to a temporary file, rename. Beside the days it keeps
//! each trained adapter's training energy until the adapter is first served, so
//! `thermo eco` can show what adapters never served cost. Writers in one process are
//! serialised by the ledger's lock; two processes writing in the same instant may lose one
//! of the two updates (there is no cross-process lock).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::emissions_csv::iso8601_utc;
use super::footprint::{Footprint, sig3};
use super::layers::{Layers, WasteKind};

/// The per-day eco ledger's file name in the thermo cache (`$THERMO_HOME`; the state
/// directory under systemd).
pub const LEDGER_FILE: &str = "eco-ledger.json";

/// One day's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DayTotals {
    /// Energy at the board, J.
    pub joules: f64,
    /// Operational carbon, g CO2e.
    pub g_co2e: f64,
    /// Embodied carbon amortised over the time worked, g CO2e.
    pub embodied_g_co2e: f64,
    /// Water, mL.
    pub ml_water: f64,
    /// Nitrogen oxides, mg.
    pub mg_nox: f64,
    /// Sulphur dioxide, mg.
    pub mg_so2: f64,
    /// Fine particulate matter, mg.
    pub mg_pm25: f64,
    /// Equivalent wear hours at the reference temperature.
    pub wear_hours: f64,
    /// Tokens the footprints were attributed to.
    pub tokens: u64,
    /// Answers counted.
    pub requests: u64,
    /// Training runs counted (finished or stopped).
    pub training_runs: u64,
    /// Optimizer steps of those runs.
    pub training_steps: u64,
    /// Memory: query embedding and search, J (spent outside the answers' spans).
    pub memory_j: f64,
    /// Memory: estimated prefill of retrieved prompt tokens, J (a part of `joules`).
    pub memory_prompt_j: f64,
    /// Memory: embodied carbon share of the indexes' flash storage, g CO2e.
    pub memory_storage_g_co2e: f64,
    /// Answers that used retrieval.
    pub memory_answers: u64,
    /// Memory: energy of indexing runs (`thermo index add` and `watch`), J (a part of
    /// `joules`).
    pub indexing_j: f64,
    /// Memory: energy that indexing avoided by reusing unchanged chunks, J (not spent).
    pub indexing_avoided_j: f64,
    /// Memory: indexing runs counted.
    pub indexing_runs: u64,
    /// Memory: chunks those runs embedded.
    pub indexing_chunks: u64,
    /// Upstream: declared training and teacher energy amortised over the day's tokens, J.
    pub upstream_declared_j: f64,
    /// Upstream: declared emissions amortised over the day's tokens, g CO2e.
    pub upstream_declared_g_co2e: f64,
    /// Upstream: tokens of models that declare nothing (not counted as zero).
    pub upstream_undeclared_tokens: u64,
    /// Waste: energy of guard-stopped answers and lost training, J (a part of `joules`).
    pub wasted_j: f64,
    /// Waste: its operational carbon, g CO2e (a part of `g_co2e`).
    pub wasted_g_co2e: f64,
    /// Answers the guard stopped as degenerate.
    pub wasted_answers: u64,
    /// Training runs that failed or stopped before saving a step.
    pub wasted_training_runs: u64,
    /// Deferred jobs (`--when auto`) that finished.
    pub deferred_jobs: u64,
    /// Those of them that ran late, at once, because their deadline was missed or would be.
    pub deferred_late_jobs: u64,
    /// Their expected saving against running them at once: g CO2e plus wear in g (the
    /// planner's objective, on the forecast it planned with; not measured).
    pub deferred_saved_g_co2e: f64,
}

impl DayTotals {
    /// Adds one answer's footprint.
    pub fn add(&mut self, fp: &Footprint) {
        self.add_figures(fp);
        self.tokens = self.tokens.saturating_add(fp.tokens);
        self.requests = self.requests.saturating_add(1);
    }

    /// Adds one training run's footprint (its tokens are trained, not generated, and are not
    /// counted as tokens).
    pub fn add_training(&mut self, fp: &Footprint, steps: u64) {
        self.add_figures(fp);
        self.training_runs = self.training_runs.saturating_add(1);
        self.training_steps = self.training_steps.saturating_add(steps);
    }

    /// Adds one indexing run's footprint: `chunks` embedded, `avoided_j` saved by reusing
    /// unchanged chunks. Its energy is real board energy (in `joules`) and the memory layer's.
    pub fn add_indexing(&mut self, fp: &Footprint, chunks: u64, avoided_j: f64) {
        self.add_figures(fp);
        self.indexing_j += fp.energy_j;
        self.indexing_avoided_j += avoided_j.max(0.0);
        self.indexing_runs = self.indexing_runs.saturating_add(1);
        self.indexing_chunks = self.indexing_chunks.saturating_add(chunks);
    }

    /// Adds one answer's or run's hidden layers.
    pub fn add_layers(&mut self, layers: &Layers) {
        if let Some(m) = &layers.memory {
            self.memory_j += m.query_embed_j + m.search_j;
            self.memory_prompt_j += m.extra_prompt_j;
            self.memory_storage_g_co2e += m.storage_embodied_g_co2e;
            self.memory_answers = self.memory_answers.saturating_add(1);
        }
        if let Some(u) = &layers.upstream {
            match (u.energy_j(), u.g_co2e()) {
                (None, None) => {
                    self.upstream_undeclared_tokens =
                        self.upstream_undeclared_tokens.saturating_add(u.tokens)
                }
                (j, g) => {
                    self.upstream_declared_j += j.unwrap_or(0.0);
                    self.upstream_declared_g_co2e += g.unwrap_or(0.0);
                }
            }
        }
        if let Some(w) = &layers.waste {
            self.wasted_j += w.energy_j;
            self.wasted_g_co2e += w.g_co2e;
            match w.kind {
                WasteKind::GuardStopped => {
                    self.wasted_answers = self.wasted_answers.saturating_add(1)
                }
                WasteKind::TrainingFailed | WasteKind::TrainingStoppedEarly => {
                    self.wasted_training_runs = self.wasted_training_runs.saturating_add(1)
                }
            }
        }
    }

    /// Adds one finished deferred job, expected to save `saved_g_co2e` against running at
    /// once; `late` when it ran late.
    pub fn add_deferred(&mut self, saved_g_co2e: f64, late: bool) {
        self.deferred_jobs = self.deferred_jobs.saturating_add(1);
        self.deferred_late_jobs = self.deferred_late_jobs.saturating_add(u64::from(late));
        self.deferred_saved_g_co2e += saved_g_co2e.max(0.0);
    }

    fn add_figures(&mut self, fp: &Footprint) {
        self.joules += fp.energy_j;
        self.g_co2e += fp.g_co2e;
        self.embodied_g_co2e += fp.embodied_g_co2e;
        self.ml_water += fp.water_ml;
        self.mg_nox += fp.nox_mg;
        self.mg_so2 += fp.so2_mg;
        self.mg_pm25 += fp.pm25_mg;
        self.wear_hours += fp.wear_hours;
    }

    /// The first figure that is not a finite number, with its name.
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        self.figures().into_iter().find(|(_, v)| !v.is_finite())
    }

    /// The figures with their names and units, for printing and metrics.
    pub fn figures(&self) -> [(&'static str, f64); 30] {
        [
            ("joules", self.joules),
            ("g_co2e", self.g_co2e),
            ("embodied_g_co2e", self.embodied_g_co2e),
            ("ml_water", self.ml_water),
            ("mg_nox", self.mg_nox),
            ("mg_so2", self.mg_so2),
            ("mg_pm25", self.mg_pm25),
            ("wear_hours", self.wear_hours),
            ("tokens", self.tokens as f64),
            ("requests", self.requests as f64),
            ("training_runs", self.training_runs as f64),
            ("training_steps", self.training_steps as f64),
            ("memory_j", self.memory_j),
            ("memory_prompt_j", self.memory_prompt_j),
            ("memory_storage_g_co2e", self.memory_storage_g_co2e),
            ("memory_answers", self.memory_answers as f64),
            ("indexing_j", self.indexing_j),
            ("indexing_avoided_j", self.indexing_avoided_j),
            ("indexing_runs", self.indexing_runs as f64),
            ("indexing_chunks", self.indexing_chunks as f64),
            ("upstream_declared_j", self.upstream_declared_j),
            ("upstream_declared_g_co2e", self.upstream_declared_g_co2e),
            (
                "upstream_undeclared_tokens",
                self.upstream_undeclared_tokens as f64,
            ),
            ("wasted_j", self.wasted_j),
            ("wasted_g_co2e", self.wasted_g_co2e),
            ("wasted_answers", self.wasted_answers as f64),
            ("wasted_training_runs", self.wasted_training_runs as f64),
            ("deferred_jobs", self.deferred_jobs as f64),
            ("deferred_late_jobs", self.deferred_late_jobs as f64),
            ("deferred_saved_g_co2e", self.deferred_saved_g_co2e),
        ]
    }

    /// The hidden layers' totals as one line, `None` when none was recorded.
    pub fn layers_line(&self) -> Option<String> {
        let mut parts = vec![];
        if self.memory_answers > 0 {
            parts.push(format!(
                "memory {} J embed+search outside answers, ~{} J of retrieved prompt inside \
                 them, {} g embodied storage share over {} answer(s)",
                sig3(self.memory_j),
                sig3(self.memory_prompt_j),
                sig3(self.memory_storage_g_co2e),
                self.memory_answers
            ));
        }
        if self.indexing_runs > 0 {
            parts.push(format!(
                "indexing {} J over {} run(s), {} chunk(s) embedded, {} J avoided by reuse",
                sig3(self.indexing_j),
                self.indexing_runs,
                self.indexing_chunks,
                sig3(self.indexing_avoided_j)
            ));
        }
        if self.upstream_declared_j > 0.0 || self.upstream_declared_g_co2e > 0.0 {
            parts.push(format!(
                "upstream (declared) {} J, {} g CO2e",
                sig3(self.upstream_declared_j),
                sig3(self.upstream_declared_g_co2e)
            ));
        }
        if self.upstream_undeclared_tokens > 0 {
            parts.push(format!(
                "upstream not declared for {} token(s)",
                self.upstream_undeclared_tokens
            ));
        }
        if self.wasted_answers > 0 || self.wasted_training_runs > 0 {
            parts.push(format!(
                "wasted {} J, {} g CO2e ({} guard-stopped answer(s), {} lost training run(s))",
                sig3(self.wasted_j),
                sig3(self.wasted_g_co2e),
                self.wasted_answers,
                self.wasted_training_runs
            ));
        }
        if self.deferred_jobs > 0 {
            parts.push(format!(
                "deferred {} job(s) ({} late), ~{} g CO2e+wear expected saved against running at once",
                self.deferred_jobs,
                self.deferred_late_jobs,
                sig3(self.deferred_saved_g_co2e)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The day's totals as one summary line; the hidden layers' totals, when any, follow a
    /// `|`, apart from the measured figures.
    pub fn line(&self) -> String {
        let measured = format!(
            "{} J ({} Wh), {} g CO2e + {} g embodied, {} mL water, {} mg NOx, {} mg SO2, \
             {} mg PM2.5, aged like {} h; {} answer(s), {} token(s), {} training run(s), \
             {} step(s)",
            sig3(self.joules),
            sig3(self.joules / 3600.0),
            sig3(self.g_co2e),
            sig3(self.embodied_g_co2e),
            sig3(self.ml_water),
            sig3(self.mg_nox),
            sig3(self.mg_so2),
            sig3(self.mg_pm25),
            sig3(self.wear_hours),
            self.requests,
            self.tokens,
            self.training_runs,
            self.training_steps,
        );
        match self.layers_line() {
            Some(layers) => format!("{measured} | {layers}"),
            None => measured,
        }
    }
}

/// Why the ledger could not be read or written.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// Reading or writing the file failed.
    #[error("eco ledger {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A figure to add, or the day's total after adding it, is not a finite number; nothing
    /// was written.
    #[error("eco ledger {path}: {figure} is not finite ({value}); not counted")]
    NonFinite {
        /// The file.
        path: String,
        /// The figure's name.
        figure: &'static str,
        /// Its value.
        value: f64,
    },
    /// The file is not a ledger.
    #[error("eco ledger {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
}

/// A trained adapter's training cost not yet followed by serving it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdapterEntry {
    /// The UTC day it was last trained.
    pub trained: String,
    /// Training energy since it was last served (or since it was first trained), J.
    pub unserved_j: f64,
    /// Its operational carbon, g CO2e.
    pub unserved_g_co2e: f64,
    /// The UTC day it was last served, when it was.
    pub served: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    days: BTreeMap<String, DayTotals>,
    /// Trained adapters by their folder's canonical path.
    #[serde(default)]
    adapters: BTreeMap<String, AdapterEntry>,
}

/// The ledger file and the lock its writers in this process share.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    lock: Mutex<()>,
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn utc_date(t: SystemTime) -> String {
    iso8601_utc(t).chars().take(10).collect()
}

impl Ledger {
    /// The ledger at `path` (created on the first answer).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Ledger {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's days; a file that does not parse is renamed to
    /// `<name>.corrupt-<unix seconds>` beside it (with a warning naming both paths) and the
    /// ledger starts empty.
    fn read(&self) -> Result<File, LedgerError> {
        let io = |cause| LedgerError::Io {
            path: self.path.display().to_string(),
            cause,
        };
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
            Err(e) => return Err(io(e)),
        };
        let problem = match serde_json::from_str::<File>(&text) {
            Ok(file) => match file
                .days
                .iter()
                .find_map(|(d, t)| Some((d.as_str(), t.non_finite()?)))
                .or_else(|| {
                    file.adapters.iter().find_map(|(a, e)| {
                        [
                            ("unserved_j", e.unserved_j),
                            ("unserved_g_co2e", e.unserved_g_co2e),
                        ]
                        .into_iter()
                        .find(|(_, v)| !v.is_finite())
                        .map(|f| (a.as_str(), f))
                    })
                }) {
                None => return Ok(file),
                Some((day, (figure, v))) => format!("{day}: {figure} is {v}"),
            },
            Err(e) => e.to_string(),
        };
        let aside = self.aside_path();
        std::fs::rename(&self.path, &aside).map_err(io)?;
        log::warn!(
            "eco ledger {} is not valid ({problem}); kept it as {} and started a new ledger",
            self.path.display(),
            aside.display()
        );
        Ok(File::default())
    }

    /// A free `<name>.corrupt-<unix seconds>[-n]` path beside the ledger.
    fn aside_path(&self) -> PathBuf {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".corrupt-{secs}"));
        let first = PathBuf::from(name);
        if !first.exists() {
            return first;
        }
        (1..1000)
            .map(|n| PathBuf::from(format!("{}-{n}", first.display())))
            .find(|p| !p.exists())
            .unwrap_or(first)
    }

    /// Adds one answer's `fp` to the totals of `date` and returns them.
    pub fn record(&self, date: &str, fp: &Footprint) -> Result<DayTotals, LedgerError> {
        self.update(date, |day| day.add(fp))
    }

    /// Adds one answer's `fp` and its hidden `layers` to the totals of `date` and returns
    /// them; a non-finite layer figure is refused like a non-finite footprint.
    pub fn record_with_layers(
        &self,
        date: &str,
        fp: &Footprint,
        layers: &Layers,
    ) -> Result<DayTotals, LedgerError> {
        self.refuse_non_finite(layers)?;
        self.update(date, |day| {
            day.add(fp);
            day.add_layers(layers);
        })
    }

    /// Adds one training run with its `layers` (its waste) to the totals of `date`.
    pub fn record_training_with_layers(
        &self,
        date: &str,
        fp: &Footprint,
        steps: u64,
        layers: &Layers,
    ) -> Result<DayTotals, LedgerError> {
        self.refuse_non_finite(layers)?;
        self.update(date, |day| {
            day.add_training(fp, steps);
            day.add_layers(layers);
        })
    }

    fn refuse_non_finite(&self, layers: &Layers) -> Result<(), LedgerError> {
        match layers.non_finite() {
            Some((figure, value)) => Err(LedgerError::NonFinite {
                path: self.path.display().to_string(),
                figure,
                value,
            }),
            None => Ok(()),
        }
    }

    /// Adds one indexing run (`chunks` embedded, `avoided_j` saved by reuse) to the totals of
    /// `date` and returns them.
    pub fn record_indexing(
        &self,
        date: &str,
        fp: &Footprint,
        chunks: u64,
        avoided_j: f64,
    ) -> Result<DayTotals, LedgerError> {
        if !avoided_j.is_finite() {
            return Err(LedgerError::NonFinite {
                path: self.path.display().to_string(),
                figure: "indexing_avoided_j",
                value: avoided_j,
            });
        }
        self.update(date, |day| day.add_indexing(fp, chunks, avoided_j))
    }

    /// Adds one finished deferred job (expected saving `saved_g_co2e`, `late` when it ran
    /// late) to the totals of `date` and returns them.
    pub fn record_deferred(
        &self,
        date: &str,
        saved_g_co2e: f64,
        late: bool,
    ) -> Result<DayTotals, LedgerError> {
        if !saved_g_co2e.is_finite() {
            return Err(LedgerError::NonFinite {
                path: self.path.display().to_string(),
                figure: "deferred_saved_g_co2e",
                value: saved_g_co2e,
            });
        }
        self.update(date, |day| day.add_deferred(saved_g_co2e, late))
    }

    /// Adds one training run of `steps` optimizer steps to the totals of `date` and returns
    /// them.
    pub fn record_training(
        &self,
        date: &str,
        fp: &Footprint,
        steps: u64,
    ) -> Result<DayTotals, LedgerError> {
        self.update(date, |day| day.add_training(fp, steps))
    }

    /// Records that the adapter in `folder` (its canonical path) was trained on `date` at the
    /// cost of `fp`: its unserved energy grows until [`Ledger::adapter_served`].
    pub fn adapter_trained(
        &self,
        folder: &str,
        date: &str,
        fp: &Footprint,
    ) -> Result<(), LedgerError> {
        if let Some((figure, value)) = fp.non_finite() {
            return Err(LedgerError::NonFinite {
                path: self.path.display().to_string(),
                figure,
                value,
            });
        }
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let entry = file.adapters.entry(folder.to_string()).or_default();
        entry.trained = date.to_string();
        entry.unserved_j += fp.energy_j;
        entry.unserved_g_co2e += fp.g_co2e;
        self.write(&file)
    }

    /// Records that the adapter in `folder` is served from `date` on; `false` (and nothing
    /// written) when the ledger holds no unserved training of it.
    pub fn adapter_served(&self, folder: &str, date: &str) -> Result<bool, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let Some(entry) = file.adapters.get_mut(folder) else {
            return Ok(false);
        };
        if entry.unserved_j == 0.0 && entry.served.as_deref() == Some(date) {
            return Ok(false);
        }
        entry.unserved_j = 0.0;
        entry.unserved_g_co2e = 0.0;
        entry.served = Some(date.to_string());
        self.write(&file)?;
        Ok(true)
    }

    /// Adapters trained and not served since, with their unserved training cost.
    pub fn unserved_adapters(&self) -> Result<Vec<(String, AdapterEntry)>, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self
            .read()?
            .adapters
            .into_iter()
            .filter(|(_, e)| e.unserved_j > 0.0 || e.unserved_g_co2e > 0.0)
            .collect())
    }

    fn update(
        &self,
        date: &str,
        change: impl FnOnce(&mut DayTotals),
    ) -> Result<DayTotals, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let day = file.days.entry(date.to_string()).or_default();
        change(day);
        let totals = *day;
        if let Some((figure, value)) = totals.non_finite() {
            return Err(LedgerError::NonFinite {
                path: self.path.display().to_string(),
                figure,
                value,
            });
        }
        self.write(&file)?;
        Ok(totals)
    }

    /// Writes `file` to a temporary file beside the ledger and renames it over the ledger.
    fn write(&self, file: &File) -> Result<(), LedgerError> {
        let io = |cause| LedgerError::Io {
            path: self.path.display().to_string(),
            cause,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(file).map_err(|e| LedgerError::Invalid {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// The totals of `date` (zero when nothing was recorded).
    pub fn day(&self, date: &str) -> Result<DayTotals, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.read()?.days.get(date).copied().unwrap_or_default())
    }

    /// Every recorded day, oldest first.
    pub fn days(&self) -> Result<Vec<(String, DayTotals)>, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.read()?.days.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(j: f64, tokens: u64) -> Footprint {
        Footprint {
            energy_j: j,
            g_co2e: j * 1e-4,
            water_ml: j * 1e-3,
            nox_mg: 0.5,
            so2_mg: 0.25,
            pm25_mg: 0.125,
            wear_hours: 0.01,
            tokens,
            ..Footprint::default()
        }
    }

    #[test]
    fn answers_add_up_per_utc_day_and_survive_a_new_ledger_on_the_same_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state").join("eco-ledger.json");
        let l = Ledger::new(&path);
        l.record("2026-11-28", &fp(10.0, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        l.record("2026-11-29", &fp(2.0, 3))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Ledger::new(&path)
            .record("2026-11-29", &fp(4.0, 7))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.joules, t.tokens, t.requests), (6.0, 10, 2));
        assert!((t.mg_nox - 1.0).abs() < 1e-12 && (t.wear_hours - 0.02).abs() < 1e-12);
        let old = l.day("2026-11-28").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((old.joules, old.requests), (10.0, 1));
        assert_eq!(l.day("2020-01-01").map(|d| d.requests).ok(), Some(0));
    }

    #[test]
    fn finished_deferred_jobs_count_with_their_expected_saving_and_lateness() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(dir.path().join("eco-ledger.json"));
        l.record_deferred("2026-12-02", 1.5, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let t = l
            .record_deferred("2026-12-02", 0.25, true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.deferred_jobs, t.deferred_late_jobs), (2, 1));
        assert!((t.deferred_saved_g_co2e - 1.75).abs() < 1e-12);
        assert_eq!((t.training_runs, t.joules), (0, 0.0));
        let line = t.line();
        assert!(
            line.contains("deferred 2 job(s) (1 late), ~1.75 g"),
            "{line}"
        );
        assert!(matches!(
            l.record_deferred("2026-12-02", f64::NAN, false),
            Err(LedgerError::NonFinite { .. })
        ));
    }

    #[test]
    fn a_training_run_adds_its_footprint_and_steps_but_no_answer_or_tokens() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(dir.path().join("eco-ledger.json"));
        l.record("2026-11-29", &fp(3.0, 4))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = l
            .record_training("2026-11-29", &fp(100.0, 9000), 120)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.joules, t.tokens, t.requests), (103.0, 4, 1));
        assert_eq!((t.training_runs, t.training_steps), (1, 120));
        assert!((t.mg_nox - 1.0).abs() < 1e-12);
        let line = t.line();
        assert!(line.starts_with("103 J (0.0286 Wh)"), "{line}");
        assert!(line.contains("1 training run(s), 120 step(s)"), "{line}");
        let days = l.days().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].0, "2026-11-29");
    }

    #[test]
    fn a_ledger_written_before_training_was_counted_still_reads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("eco-ledger.json");
        std::fs::write(
            &path,
            r#"{"days":{"2026-11-28":{"joules":5.0,"g_co2e":0.1,"tokens":7,"requests":2}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let d = Ledger::new(&path)
            .day("2026-11-28")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.joules, d.tokens, d.requests, d.training_runs),
            (5.0, 7, 2, 0)
        );
    }

    #[test]
    fn an_unreadable_ledger_is_an_error_naming_the_file_not_a_panic() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("eco-ledger.json");
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{e}"));
        let err = Ledger::new(&path)
            .record("2026-11-29", &fp(1.0, 1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("eco-ledger.json"), "{err}");
    }

    #[test]
    fn a_ledger_that_fails_to_parse_is_kept_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("eco-ledger.json");
        let bad = r#"{"days":{"2026-11-28":{"joules":null}}}"#;
        std::fs::write(&path, bad).unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(&path);
        let t = l
            .record("2026-11-29", &fp(1.0, 1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.joules, t.requests), (1.0, 1));
        let kept: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains("eco-ledger.json.corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(std::fs::read_to_string(&kept[0]).ok().as_deref(), Some(bad));
        assert_eq!(l.day("2026-11-29").map(|d| d.requests).ok(), Some(1));
        assert_eq!(l.days().map(|d| d.len()).ok(), Some(1));
    }

    #[test]
    fn a_non_finite_figure_is_refused_and_the_ledger_keeps_counting() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("eco-ledger.json");
        let l = Ledger::new(&path);
        l.record("2026-11-29", &fp(1.0, 1))
            .unwrap_or_else(|e| panic!("{e}"));
        let hostile = [
            Footprint {
                embodied_g_co2e: f64::INFINITY,
                ..fp(1.0, 1)
            },
            Footprint {
                g_co2e: f64::NAN,
                ..fp(1.0, 1)
            },
            Footprint {
                water_ml: f64::NEG_INFINITY,
                ..fp(1.0, 1)
            },
            Footprint {
                wear_hours: f64::MAX,
                ..fp(1.0, 1)
            },
        ];
        l.record("2026-11-29", &hostile[3])
            .unwrap_or_else(|e| panic!("{e}"));
        for h in &hostile {
            let err = l.record("2026-11-29", h).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("not finite")),
                "{err:?}"
            );
            let err = l.record_training("2026-11-29", h, 3).err();
            assert!(err.is_some());
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("null"), "{text}");
        let t = l
            .record("2026-11-29", &fp(1.0, 1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.joules, t.requests), (3.0, 3));
    }

    #[test]
    fn an_indexing_run_adds_board_energy_and_the_memory_layers_indexing_totals() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(dir.path().join("eco-ledger.json"));
        l.record("2026-12-03", &fp(3.0, 4))
            .unwrap_or_else(|e| panic!("{e}"));
        l.record_indexing("2026-12-03", &fp(20.0, 0), 150, 5.0)
            .unwrap_or_else(|e| panic!("{e}"));
        let t = l
            .record_indexing("2026-12-03", &fp(2.0, 0), 10, 18.0)
            .unwrap_or_else(|e| panic!("{e}"));
        // Board energy includes indexing; answers and tokens do not.
        assert_eq!((t.joules, t.requests, t.tokens), (25.0, 1, 4));
        assert_eq!((t.indexing_j, t.indexing_avoided_j), (22.0, 23.0));
        assert_eq!((t.indexing_runs, t.indexing_chunks), (2, 160));
        let line = t.line();
        assert!(
            line.contains("indexing 22.0 J over 2 run(s), 160 chunk(s) embedded, 23.0 J avoided"),
            "{line}"
        );
        let figures = t.figures();
        assert!(figures.contains(&("indexing_j", 22.0)), "{figures:?}");
        let err = l
            .record_indexing("2026-12-03", &fp(1.0, 0), 1, f64::NAN)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not finite")));
        assert_eq!(l.day("2026-12-03").map(|d| d.indexing_runs).ok(), Some(2));
    }

    #[test]
    fn hidden_layers_are_kept_apart_per_day_and_an_old_ledger_reads_them_as_zero() {
        use crate::eco::layers::{MemoryFootprint, UpstreamSettings, Waste};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("eco-ledger.json");
        std::fs::write(
            &path,
            r#"{"days":{"2026-11-29":{"joules":5.0,"requests":1}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(&path);
        let answer = fp(10.0, 4);
        let layers = Layers {
            memory: Some(MemoryFootprint {
                query_embed_j: 0.5,
                search_j: 0.25,
                extra_prompt_j: 2.0,
                storage_embodied_g_co2e: 0.001,
                ..MemoryFootprint::default()
            }),
            upstream: Some(UpstreamSettings::default().resolve("SmolLM2").share(4)),
            waste: Waste::of_answer(
                &answer,
                Some(&crate::eco::guard::GuardStop {
                    kind: crate::eco::guard::GuardKind::StuckToken,
                    reason: String::new(),
                    at_token: 4,
                    loop_start: Some(0),
                    avoided_j: None,
                }),
            ),
        };
        let t = l
            .record_with_layers("2026-11-29", &answer, &layers)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.joules, t.requests), (15.0, 2));
        assert!((t.memory_j - 0.75).abs() < 1e-12 && (t.memory_prompt_j - 2.0).abs() < 1e-12);
        assert_eq!((t.memory_answers, t.upstream_undeclared_tokens), (1, 4));
        assert_eq!(t.upstream_declared_j, 0.0);
        assert_eq!((t.wasted_j, t.wasted_answers), (10.0, 1));
        let line = t.layers_line().unwrap_or_default();
        assert!(line.contains("not declared for 4 token(s)"), "{line}");
        assert!(line.contains("1 guard-stopped answer(s)"), "{line}");
        let run = fp(100.0, 0);
        let lost = Layers {
            waste: Some(Waste::of_run(&run, WasteKind::TrainingFailed, 0.5)),
            ..Layers::default()
        };
        let t = l
            .record_training_with_layers("2026-11-29", &run, 3, &lost)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.wasted_j, t.wasted_training_runs), (60.0, 1));
        assert_eq!(DayTotals::default().layers_line(), None);
    }

    #[test]
    fn an_adapter_costs_unserved_energy_until_it_is_served_and_again_after_retraining() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(dir.path().join("eco-ledger.json"));
        l.record("2026-11-29", &fp(1.0, 1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!l.adapter_served("/a", "2026-11-29").unwrap_or(true));
        for (folder, j) in [("/a", 100.0), ("/b", 40.0), ("/a", 20.0)] {
            l.adapter_trained(folder, "2026-11-29", &fp(j, 0))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let pending = l.unserved_adapters().unwrap_or_default();
        let a = pending
            .iter()
            .find(|(f, _)| f == "/a")
            .map(|(_, e)| e.unserved_j);
        assert_eq!((pending.len(), a), (2, Some(120.0)));
        assert!(l.adapter_served("/a", "2026-11-30").unwrap_or(false));
        let pending = l.unserved_adapters().unwrap_or_default();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, "/b");
        l.adapter_trained("/a", "2026-12-01", &fp(5.0, 0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.unserved_adapters().map(|p| p.len()).ok(), Some(2));
        // The days are untouched by the adapter entries.
        assert_eq!(l.day("2026-11-29").map(|d| d.requests).ok(), Some(1));
    }

    #[test]
    fn a_non_finite_layer_figure_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = Ledger::new(dir.path().join("eco-ledger.json"));
        let layers = Layers {
            waste: Some(crate::eco::layers::Waste {
                kind: WasteKind::GuardStopped,
                energy_j: f64::INFINITY,
                g_co2e: 0.0,
            }),
            ..Layers::default()
        };
        let err = l
            .record_with_layers("2026-11-29", &fp(1.0, 1), &layers)
            .err();
        assert!(err.is_some_and(|e| e.to_string().contains("waste.energy_j")));
        assert_eq!(l.day("2026-11-29").map(|d| d.requests).ok(), Some(0));
    }

    #[test]
    fn the_utc_date_is_the_first_ten_characters_of_the_timestamp() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_374_400);
        assert_eq!(utc_date(t), "2025-11-29");
    }
}
