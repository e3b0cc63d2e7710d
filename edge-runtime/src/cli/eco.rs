//! `thermo eco`: the per-day eco ledger that every answer of `run`, `chat` and `serve` and
//! every `train` run adds to — today's totals (or one day's, or every day's) as a line for
//! people or as JSON for scripts, with the hidden layers' totals (memory, declared upstream,
//! wasted) and the training cost of adapters trained and not served since.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use edge_runtime::eco::footprint::sig3;
use edge_runtime::eco::ledger::{DayTotals, Ledger, utc_date};

/// Flags of `thermo eco`.
#[derive(Debug, Args)]
pub struct EcoArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: EcoCommand,
}

/// `thermo eco` subcommands.
#[derive(Debug, Subcommand)]
pub enum EcoCommand {
    /// Today's (UTC) totals: energy, carbon, water, pollutants, wear, answers, training.
    Today(DayArgs),
    /// Every recorded day, oldest first.
    Days(LedgerArgs),
}

/// Which ledger, and how to print it.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The ledger file (default: `eco-ledger.json` in the thermo cache folder, which
    /// `$THERMO_HOME` moves).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `thermo eco today`.
#[derive(Debug, Args)]
pub struct DayArgs {
    /// Another day than today, `YYYY-MM-DD` (UTC).
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

fn open(args: &LedgerArgs) -> Result<Ledger> {
    Ok(Ledger::new(match &args.ledger {
        Some(p) => p.clone(),
        None => edge_runtime::models::cache_root()?.join(edge_runtime::eco::ledger::LEDGER_FILE),
    }))
}

/// Whether `date` is written `YYYY-MM-DD` with a plausible month and day.
fn is_date(date: &str) -> bool {
    let parts: Vec<&str> = date.split('-').collect();
    let number = |s: &str, len: usize, max: u32| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) && {
            let v: u32 = s.parse().unwrap_or(0);
            (1..=max).contains(&v)
        }
    };
    matches!(parts.as_slice(), [y, m, d] if number(y, 4, 9999) && number(m, 2, 12) && number(d, 2, 31))
}

fn json_day(date: &str, t: &DayTotals) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("date".into(), date.into());
    for (name, value) in t.figures() {
        v.insert(name.into(), value.into());
    }
    v.into()
}

/// The line of adapters trained and not served since, `None` when there is none.
fn unserved_line(ledger: &Ledger) -> Result<Option<String>> {
    let pending = ledger.unserved_adapters()?;
    if pending.is_empty() {
        return Ok(None);
    }
    let j: f64 = pending.iter().map(|(_, e)| e.unserved_j).sum();
    let g: f64 = pending.iter().map(|(_, e)| e.unserved_g_co2e).sum();
    let names: Vec<&str> = pending.iter().map(|(f, _)| f.as_str()).collect();
    Ok(Some(format!(
        "adapters trained and never served since: {} ({} J, {} g CO2e): {}",
        pending.len(),
        sig3(j),
        sig3(g),
        names.join(", ")
    )))
}

/// `thermo eco`.
pub fn eco(args: EcoArgs) -> Result<()> {
    match args.command {
        EcoCommand::Today(a) => {
            let date = match a.date {
                Some(d) if is_date(&d) => d,
                Some(d) => bail!("--date {d:?} is not a date written YYYY-MM-DD"),
                None => utc_date(std::time::SystemTime::now()),
            };
            let ledger = open(&a.ledger)?;
            let t = ledger.day(&date)?;
            if a.ledger.json {
                println!("{}", json_day(&date, &t));
            } else {
                println!("{date} (UTC): {}", t.line());
                if let Some(line) = unserved_line(&ledger)? {
                    println!("{line}");
                }
            }
        }
        EcoCommand::Days(a) => {
            let ledger = open(&a)?;
            let days = ledger.days()?;
            if a.json {
                let list: Vec<serde_json::Value> =
                    days.iter().map(|(d, t)| json_day(d, t)).collect();
                println!("{}", serde_json::Value::from(list));
            } else if days.is_empty() {
                println!("no day recorded in {}", ledger.path().display());
            } else {
                for (d, t) in &days {
                    println!("{d} (UTC): {}", t.line());
                }
                if let Some(line) = unserved_line(&ledger)? {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_written_year_month_day() {
        assert!(is_date("2026-11-29"));
        for bad in [
            "2026-13-01",
            "26-11-29",
            "2026-11-00",
            "2026/11/29",
            "today",
            "",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }

    #[test]
    fn unserved_adapters_are_summed_and_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ledger = Ledger::new(dir.path().join("eco-ledger.json"));
        assert_eq!(unserved_line(&ledger)?, None);
        let fp = |j: f64| edge_runtime::eco::Footprint {
            energy_j: j,
            g_co2e: j / 100.0,
            ..Default::default()
        };
        ledger.adapter_trained("/out/a", "2026-11-29", &fp(30.0))?;
        ledger.adapter_trained("/out/b", "2026-11-29", &fp(12.0))?;
        let line = unserved_line(&ledger)?.unwrap_or_default();
        assert!(
            line.contains(": 2 (42.0 J, 0.420 g CO2e): /out/a, /out/b"),
            "{line}"
        );
        Ok(())
    }

    #[test]
    fn json_names_every_figure_and_the_date() {
        let t = DayTotals {
            joules: 36.0,
            training_steps: 5,
            ..DayTotals::default()
        };
        let v = json_day("2026-11-29", &t);
        assert_eq!(v["date"], "2026-11-29");
        assert_eq!(v["joules"], 36.0);
        assert_eq!(v["training_steps"], 5.0);
        assert_eq!(v["indexing_chunks"], 0.0);
        assert_eq!(v["deferred_jobs"], 0.0);
        assert_eq!(v["deferred_saved_g_co2e"], 0.0);
        assert_eq!(v.as_object().map(|o| o.len()), Some(31));
    }
}
