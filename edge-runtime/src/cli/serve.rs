//! `thermo serve` and `thermo config`: map the flags onto the configuration's top layer,
//! build the effective configuration (defaults < file < `THERMO_*` < flags), then serve it or
//! print it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

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
    /// The flags as (`section.key`, raw value) overrides, `--set` first so a dedicated flag
    /// wins over a `--set` of the same key.
    pub fn overrides(&self, listen: &Option<String>) -> Result<Vec<(String, String)>> {
        let mut out = vec![];
        for s in &self.set {
            match s.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    out.push((k.trim().to_string(), v.to_string()));
                }
                _ => bail!("--set takes KEY=VALUE (e.g. service.queue_bound=4), got {s:?}"),
            }
        }
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        };
        push(
            "model.dir",
            self.model
                .as_ref()
                .map(|p| format!("{:?}", p.display().to_string())),
        );
        push(
            "model.format",
            self.format.as_ref().map(|f| format!("{f:?}")),
        );
        push("model.threads", self.threads.map(|t| t.to_string()));
        push("model.adapter", self.adapter.as_deref().map(quoted));
        push(
            "governor.setpoint_c",
            self.setpoint.map(|c| format!("{c:?}")),
        );
        push("sensors.sim", self.sim.as_ref().map(|s| format!("{s:?}")));
        push("service.listen", listen.as_ref().map(|l| format!("{l:?}")));
        Ok(out)
    }

    /// The effective configuration.
    pub fn load(&self, listen: &Option<String>) -> Result<Config> {
        self.load_with(listen, vec![])
    }

    /// The effective configuration with `extra` overrides after the flags' own.
    pub fn load_with(
        &self,
        listen: &Option<String>,
        extra: Vec<(String, String)>,
    ) -> Result<Config> {
        let mut overrides = self.overrides(listen)?;
        overrides.extend(extra);
        let layers = Layers::from_process(self.config.as_deref(), overrides)?;
        Ok(Config::load(&layers)?)
    }
}

fn quoted(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The telemetry flags given on the command line as `[telemetry]` overrides.
pub fn telemetry_overrides(t: &TelemetryArgs) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push((format!("telemetry.{k}"), v));
        }
    };
    push("mqtt", t.mqtt.as_ref().map(|u| format!("{u:?}")));
    push("device_id", t.device_id.as_ref().map(|d| format!("{d:?}")));
    push("file", t.telemetry_file.as_deref().map(quoted));
    push("enabled", t.no_telemetry.then(|| "false".into()));
    push("interval_s", t.telemetry_interval.map(|s| format!("{s:?}")));
    push(
        "encoding",
        t.telemetry_encoding.as_ref().map(|e| format!("{e:?}")),
    );
    push("queue_dir", t.telemetry_queue.as_deref().map(quoted));
    push(
        "queue_capacity",
        t.telemetry_queue_capacity.map(|n| n.to_string()),
    );
    push("ca_file", t.mqtt_ca.as_deref().map(quoted));
    push("cert_file", t.mqtt_cert.as_deref().map(quoted));
    push("key_file", t.mqtt_key.as_deref().map(quoted));
    push(
        "username",
        t.mqtt_username.as_ref().map(|u| format!("{u:?}")),
    );
    push("password_file", t.mqtt_password_file.as_deref().map(quoted));
    push(
        "allow",
        (!t.mqtt_allow.is_empty()).then(|| format!("{:?}", t.mqtt_allow)),
    );
    push("discovery", t.no_discovery.then(|| "false".into()));
    out
}

/// `thermo serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    let config = args
        .config
        .load_with(&args.listen, telemetry_overrides(&args.telemetry))?;
    edge_runtime::serve::run(&config)
}

/// `thermo config`: prints the effective configuration (the token redacted), or the example.
pub fn config(args: ConfigArgs) -> Result<()> {
    if args.example {
        print!("{}", Config::example_toml());
        return Ok(());
    }
    let config = args.config.load(&args.listen)?;
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
