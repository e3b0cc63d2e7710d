//! Per-day eco totals: a small JSON file (`eco-ledger.json` in the thermo cache or state
//! folder) keyed by UTC date, holding joules, g CO2e, mL water, mg NOx/SO2/PM2.5, wear
//! hours, tokens and requests. Every answer of `run`, `chat` and `serve` adds to today's
//! entry: read, add, write to a temporary file, rename. Writers in one process are
//! serialised by the ledger's lock; two processes writing in the same instant may lose one
//! of the two updates (there is no cross-process lock).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::emissions_csv::iso8601_utc;
use super::footprint::Footprint;

/// One day's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DayTotals {
    /// Energy at the board, J.
    pub joules: f64,
    /// Operational carbon, g CO2e.
    pub g_co2e: f64,
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
}

impl DayTotals {
    /// Adds one answer's footprint.
    pub fn add(&mut self, fp: &Footprint) {
        self.joules += fp.energy_j;
        self.g_co2e += fp.g_co2e;
        self.ml_water += fp.water_ml;
        self.mg_nox += fp.nox_mg;
        self.mg_so2 += fp.so2_mg;
        self.mg_pm25 += fp.pm25_mg;
        self.wear_hours += fp.wear_hours;
        self.tokens += fp.tokens;
        self.requests += 1;
    }

    /// The figures with their names and units, for printing and metrics.
    pub fn figures(&self) -> [(&'static str, f64); 9] {
        [
            ("joules", self.joules),
            ("g_co2e", self.g_co2e),
            ("ml_water", self.ml_water),
            ("mg_nox", self.mg_nox),
            ("mg_so2", self.mg_so2),
            ("mg_pm25", self.mg_pm25),
            ("wear_hours", self.wear_hours),
            ("tokens", self.tokens as f64),
            ("requests", self.requests as f64),
        ]
    }
}

/// Why the ledger could not be read or written.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// Reading or writing the file failed.
    #[error("eco ledger {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    days: BTreeMap<String, DayTotals>,
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

    fn read(&self) -> Result<File, LedgerError> {
        let shown = || self.path.display().to_string();
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| LedgerError::Invalid {
                path: shown(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(source) => Err(LedgerError::Io {
                path: shown(),
                source,
            }),
        }
    }

    /// Adds `fp` to the totals of `date` and returns them.
    pub fn record(&self, date: &str, fp: &Footprint) -> Result<DayTotals, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.read()?;
        let day = file.days.entry(date.to_string()).or_default();
        day.add(fp);
        let totals = *day;
        let io = |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(&file).map_err(|e| LedgerError::Invalid {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(totals)
    }

    /// The totals of `date` (zero when nothing was recorded).
    pub fn day(&self, date: &str) -> Result<DayTotals, LedgerError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.read()?.days.get(date).copied().unwrap_or_default())
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
    fn a_corrupt_ledger_is_an_error_naming_the_file_not_a_panic() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("eco-ledger.json");
        std::fs::write(&path, "{not json").unwrap_or_else(|e| panic!("{e}"));
        let err = Ledger::new(&path)
            .record("2026-11-29", &fp(1.0, 1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("eco-ledger.json"), "{err}");
    }

    #[test]
    fn the_utc_date_is_the_first_ten_characters_of_the_timestamp() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_374_400);
        assert_eq!(utc_date(t), "2025-11-29");
    }
}
