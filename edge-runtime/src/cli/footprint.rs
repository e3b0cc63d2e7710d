//! The eco-accounting flags of `run`, `chat` and `train` (the configuration file, the
//! region, the `emissions.csv` row, the zombie-compute guard's budgets) and the main job's
//! layered configuration they sit on top of.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use edge_runtime::config::{Config, Layers};

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
