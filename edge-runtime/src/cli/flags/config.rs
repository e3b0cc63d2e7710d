//! The configuration flags of `thermo serve` and `thermo config`: which file, `--set`
//! overrides, and the dedicated flags put over the layers.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use edge_runtime::config::{Config, Layers, SetpointMode};

use super::governor::SetpointArg;
use super::merge;

/// Where the configuration comes from and the flags that override it.
#[derive(Debug, Clone, Args)]
pub struct ConfigFlags {
    /// Configuration file (default: /etc/thermo/thermo.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set service.queue_bound=4` (repeatable; wins over the file
    /// and the environment).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Model folder (ONNX + tokenizer) [model.dir].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Weight format of the default model: f32, q4 or ggml [model.format].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Compute threads [model.threads].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Apply the LoRA adapter (PEFT folder) from `thermo train` [model.adapter].
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Temperature to hold the SoC at, °C [governor.setpoint_c], or `auto` for the eco
    /// setpoint [governor.setpoint].
    #[arg(long, value_name = "CELSIUS|auto", value_parser = super::governor::parse_setpoint)]
    pub setpoint: Option<SetpointArg>,
    /// Use the simulated SoC with this profile [sensors.sim].
    #[arg(long, value_name = "PROFILE")]
    pub sim: Option<String>,
}

/// `--set KEY=VALUE` flags as (`section.key`, raw value).
pub fn set_overrides(set: &[String]) -> Result<Vec<(String, String)>> {
    set.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => bail!("--set takes KEY=VALUE (e.g. service.queue_bound=4), got {s:?}"),
        })
        .collect()
}

impl ConfigFlags {
    /// The `--set KEY=VALUE` overrides as (`section.key`, raw value).
    pub fn set_overrides(&self) -> Result<Vec<(String, String)>> {
        set_overrides(&self.set)
    }

    /// Puts the dedicated flags that were given (and `listen`) over `config`, so they win over
    /// the file, the environment and `--set`.
    pub fn merge_onto(&self, listen: &Option<String>, config: &mut Config) {
        let model = &mut config.model;
        merge(&mut model.dir, self.model.clone().map(Some));
        merge(&mut model.format, self.format.clone());
        merge(&mut model.threads, self.threads);
        merge(&mut model.adapter, self.adapter.clone().map(Some));
        match self.setpoint {
            Some(SetpointArg::Auto) => config.governor.setpoint = SetpointMode::Auto,
            Some(SetpointArg::Celsius(c)) => config.governor.setpoint_c = Some(c),
            None => {}
        }
        merge(&mut config.sensors.sim, self.sim.clone().map(Some));
        merge(&mut config.service.listen, listen.clone());
    }

    /// The effective configuration: defaults < file < `THERMO_*` < `--set` < these flags <
    /// `more` (other flags of the command, merged the same way).
    pub fn load(&self, listen: &Option<String>, more: impl FnOnce(&mut Config)) -> Result<Config> {
        let layers = Layers::from_process(self.config.as_deref(), self.set_overrides()?)?;
        Ok(Config::load_with(&layers, |config| {
            self.merge_onto(listen, config);
            more(config);
        })?)
    }
}
