//! `thermo gateway`: the fleet's OpenAI-compatible front on the broker's work queue (see
//! [`edge_runtime::gateway`]). `[service]` of the configuration gives the listen address,
//! token, hosts, origins and limits; the flags below give the broker and the fleet's model.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use edge_runtime::config::{Config, Layers};
use edge_runtime::gateway::GatewayOptions;
use edge_runtime::session::telemetry::{broker_config, default_device_id};
use edge_runtime::telemetry::topics::validate_device_id;

use super::flags::config::set_overrides;
use super::flags::merge;

/// Flags of `thermo gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The fleet's broker: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// Address and port to listen on [service.listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The model id the boards serve, as their /v1/models names it.
    #[arg(long, value_name = "ID")]
    pub model: String,
    /// The gateway's name on the broker (default: thermo-gateway-<host>).
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Seconds a request waits for a board with thermal headroom before 429.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub max_wait_s: f64,
    /// Seconds a queued request may go without a board accepting it (then once more).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub accept_timeout_s: f64,
    /// Longest silence between two parts of an answer, seconds.
    #[arg(long, value_name = "S", default_value_t = 120.0)]
    pub stall_timeout_s: f64,
    /// Most requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Configuration file for `[service]` and the broker credentials of `[telemetry]`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set service.api_token=...` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// PEM file of the CA certificates for mqtts:// [telemetry.ca_file].
    #[arg(long, value_name = "PEM")]
    pub mqtt_ca: Option<PathBuf>,
    /// PEM client certificate [telemetry.cert_file].
    #[arg(long, value_name = "PEM")]
    pub mqtt_cert: Option<PathBuf>,
    /// PEM key of the client certificate [telemetry.key_file].
    #[arg(long, value_name = "PEM")]
    pub mqtt_key: Option<PathBuf>,
    /// Broker username [telemetry.username].
    #[arg(long, value_name = "USER")]
    pub mqtt_username: Option<String>,
    /// File whose first line is the broker password [telemetry.password_file].
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        bail!("{flag} must be a number of seconds above 0 and at most a day, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// `thermo gateway`.
pub fn gateway(args: GatewayArgs) -> Result<()> {
    let layers = Layers::from_process(args.config.as_deref(), set_overrides(&args.set)?)?;
    let config = Config::load_with(&layers, |c| {
        merge(&mut c.service.listen, args.listen.clone());
        let t = &mut c.telemetry;
        merge(&mut t.ca_file, args.mqtt_ca.clone().map(Some));
        merge(&mut t.cert_file, args.mqtt_cert.clone().map(Some));
        merge(&mut t.key_file, args.mqtt_key.clone().map(Some));
        merge(&mut t.username, args.mqtt_username.clone().map(Some));
        merge(
            &mut t.password_file,
            args.mqtt_password_file.clone().map(Some),
        );
    })?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("thermo-gateway-{}", default_device_id()));
    validate_device_id(&id).context("--id")?;
    if args.max_in_flight == 0 {
        bail!("--max-in-flight must be 1 or more");
    }
    let opts = GatewayOptions {
        broker: broker_config(&config.telemetry, &args.broker, &id).context("--broker")?,
        id,
        model: args.model.clone(),
        max_wait: seconds("--max-wait-s", args.max_wait_s)?,
        accept_timeout: seconds("--accept-timeout-s", args.accept_timeout_s)?,
        stall_timeout: seconds("--stall-timeout-s", args.stall_timeout_s)?,
        max_in_flight: args.max_in_flight,
    };
    edge_runtime::gateway::run(&config, opts)
}
