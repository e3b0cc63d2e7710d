//! `thermo serve` and `thermo config`: put the flags over the configuration's layers, build
//! the effective configuration (defaults < file < `THERMO_*` < `--set` < flags), then serve
//! it or print it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::merge;
use super::telemetry::TelemetryArgs;
use edge_runtime::config::{Config, Layers};

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
    /// Temperature to hold the SoC at, °C [governor.setpoint_c].
    #[arg(long, value_name = "CELSIUS")]
    pub setpoint: Option<f32>,
    /// Use the simulated SoC with this profile [sensors.sim].
    #[arg(long, value_name = "PROFILE")]
    pub sim: Option<String>,
}

/// Flags of `thermo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on [service.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    #[command(flatten)]
    config: ConfigFlags,
    /// Telemetry flags, on top of the `[telemetry]` section.
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// Flags of `thermo config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the documented example file (every key with its default) instead.
    #[arg(long)]
    pub example: bool,
    /// Print a systemd drop-in allowing exactly the configured I2C buses instead.
    #[arg(long, conflicts_with = "example")]
    pub systemd_devices: bool,
    /// Address and port to listen on [service.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    #[command(flatten)]
    config: ConfigFlags,
}

impl ConfigFlags {
    /// The `--set KEY=VALUE` overrides as (`section.key`, raw value).
    pub fn set_overrides(&self) -> Result<Vec<(String, String)>> {
        self.set
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
                _ => bail!("--set takes KEY=VALUE (e.g. service.queue_bound=4), got {s:?}"),
            })
            .collect()
    }

    /// Puts the dedicated flags that were given (and `listen`) over `config`, so they win over
    /// the file, the environment and `--set`.
    pub fn merge_onto(&self, listen: &Option<String>, config: &mut Config) {
        let model = &mut config.model;
        merge(&mut model.dir, self.model.clone().map(Some));
        merge(&mut model.format, self.format.clone());
        merge(&mut model.threads, self.threads);
        merge(&mut model.adapter, self.adapter.clone().map(Some));
        merge(&mut config.governor.setpoint_c, self.setpoint.map(Some));
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

/// `thermo serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    let config = args.config.load(&args.listen, |config| {
        args.telemetry.merge_onto(&mut config.telemetry);
    })?;
    edge_runtime::serve::run(&config)
}

/// `thermo config`: prints the effective configuration (the token redacted), or the example.
pub fn config(args: ConfigArgs) -> Result<()> {
    if args.example {
        print!("{}", Config::example_toml());
        return Ok(());
    }
    let config = args.config.load(&args.listen, |_| {})?;
    if args.systemd_devices {
        print!("{}", systemd_devices_dropin(&config));
    } else {
        print!("{}", config.to_toml_redacted());
    }
    Ok(())
}

/// A drop-in for `thermo.service` that opens the device policy to exactly the I2C buses of
/// `[[sensors.i2c]]` (and the `i2c` group that owns them on Raspberry Pi OS).
pub fn systemd_devices_dropin(config: &Config) -> String {
    let mut buses: Vec<String> = config
        .sensors
        .i2c
        .iter()
        .map(|s| s.bus.display().to_string())
        .collect();
    buses.sort();
    buses.dedup();
    let mut out = String::from(
        "# Generated by `thermo config --systemd-devices` from [[sensors.i2c]]; install as\n\
         # /etc/systemd/system/thermo.service.d/devices.conf, then `systemctl daemon-reload`.\n\
         [Service]\n",
    );
    if buses.is_empty() {
        out.push_str("# No I2C sensor is configured: the unit's closed device policy stands.\n");
        return out;
    }
    out.push_str("PrivateDevices=no\nDevicePolicy=closed\nSupplementaryGroups=i2c\n");
    for bus in buses {
        out.push_str(&format!("DeviceAllow={bus} rw\n"));
    }
    out
}
