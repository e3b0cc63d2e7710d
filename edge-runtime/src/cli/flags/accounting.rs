//! The eco-accounting flags of `run`, `chat` and `train` (the configuration file, the
//! region, the `emissions.csv` row, the zombie-compute guard's budgets), put over `[eco]`.

use std::path::PathBuf;

use clap::Args;

use edge_runtime::eco::EcoConfig;

use super::merge;

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
pub struct AccountingArgs {
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

impl FootprintArgs {
    /// Puts the flags that were given over `[eco]`.
    pub fn merge_onto(&self, eco: &mut EcoConfig) {
        merge(&mut eco.region, self.region.clone());
        merge(&mut eco.emissions_csv, self.emissions_csv.clone().map(Some));
        merge(
            &mut eco.write_emissions_csv,
            self.no_emissions_csv.then_some(false),
        );
    }
}

impl AccountingArgs {
    /// Puts the flags that were given over `[eco]`.
    pub fn merge_onto(&self, eco: &mut EcoConfig) {
        self.footprint.merge_onto(eco);
        merge(&mut eco.guard, self.no_guard.then_some(false));
        merge(&mut eco.max_seconds, self.max_seconds.map(Some));
        merge(&mut eco.max_joules, self.max_joules.map(Some));
        merge(&mut eco.max_g_co2e, self.max_g_co2e.map(Some));
    }
}
