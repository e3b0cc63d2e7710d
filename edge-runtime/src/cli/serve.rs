//! `thermo serve`: the configuration flags and the telemetry flags over the configuration's
//! layers, then the service; with `--fleet`, also the fleet's work queue on the telemetry
//! broker.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use edge_runtime::serve::fleet::FleetOptions;
use edge_runtime::session::telemetry::{broker_config, default_device_id};

use super::flags::config::ConfigFlags;
use super::flags::telemetry::TelemetryArgs;

/// Flags of `thermo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on [service.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Also answer requests from the fleet's work queue on the telemetry broker (`--mqtt`,
    /// with its credentials and TLS files), taking them only while the governor predicts
    /// headroom.
    #[arg(long)]
    pub fleet: bool,
    /// Seconds the board must be able to run flat out before reaching its setpoint to take
    /// requests from the queue.
    #[arg(long, value_name = "S", default_value_t = 5.0, requires = "fleet")]
    pub fleet_min_headroom_s: f64,
    #[command(flatten)]
    config: ConfigFlags,
    /// Telemetry flags, on top of the `[telemetry]` section.
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// `thermo serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    let config = args.config.load(&args.listen, |config| {
        args.telemetry.merge_onto(&mut config.telemetry);
    })?;
    if !args.fleet {
        return edge_runtime::serve::run(&config);
    }
    let Some(url) = config.telemetry.mqtt.as_deref() else {
        bail!("--fleet takes its requests from the telemetry broker: pass --mqtt URL");
    };
    let h = args.fleet_min_headroom_s;
    if !(h.is_finite() && h >= 0.0) {
        bail!("--fleet-min-headroom-s must be a number of seconds, 0 or more");
    }
    let device = config
        .telemetry
        .device_id
        .clone()
        .unwrap_or_else(default_device_id);
    let broker = broker_config(&config.telemetry, url, &format!("thermo-fleet-{device}"))
        .context("--mqtt")?;
    let fleet = FleetOptions {
        broker,
        board: device,
        min_headroom_s: h,
        check: Duration::from_millis(250),
    };
    edge_runtime::serve::run_with_fleet(&config, Some(fleet))
}
