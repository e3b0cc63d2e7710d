//! The telemetry flags of the main job (`--mqtt`, `--device-id`, the TLS files, the queue),
//! which sit on top of the configuration's `[telemetry]` section.

use std::path::PathBuf;

use clap::Args;

/// Telemetry flags of the main job.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Publish telemetry to this MQTT broker: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Name this device in the fleet (topics thermo/<ID>/...; default: the host name).
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// Without a broker, append telemetry as JSON lines to this file (default: the cache's
    /// telemetry/<device>.jsonl).
    #[arg(long, value_name = "FILE")]
    pub telemetry_file: Option<PathBuf>,
    /// Send no telemetry at all.
    #[arg(long)]
    pub no_telemetry: bool,
    /// Seconds between telemetry records (0.1 to 3600, default 1; the `interval` command
    /// changes it).
    #[arg(long, value_name = "SECONDS")]
    pub telemetry_interval: Option<f64>,
    /// Encode records on the broker as json (default) or postcard.
    #[arg(long, value_name = "ENCODING")]
    pub telemetry_encoding: Option<String>,
    /// Keep the store-and-forward queue in this directory (default: the cache's
    /// telemetry/<device>/queue).
    #[arg(long, value_name = "DIR")]
    pub telemetry_queue: Option<PathBuf>,
    /// Most records the queue keeps while the broker is away (the oldest telemetry goes first;
    /// events are kept; default 10000).
    #[arg(long, value_name = "N")]
    pub telemetry_queue_capacity: Option<usize>,
    /// Trust the CA certificates in this PEM file (mqtts; default: the system's).
    #[arg(long, value_name = "PEM")]
    pub mqtt_ca: Option<PathBuf>,
    /// Present this PEM client certificate chain (with --mqtt-key).
    #[arg(long, value_name = "PEM")]
    pub mqtt_cert: Option<PathBuf>,
    /// Use this PEM private key for the client certificate.
    #[arg(long, value_name = "PEM")]
    pub mqtt_key: Option<PathBuf>,
    /// Log in to the broker as this user (password from --mqtt-password-file or
    /// THERMO_MQTT_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub mqtt_username: Option<String>,
    /// Read the broker password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,
    /// Accept only these commands, comma-separated (setpoint, pause_training,
    /// resume_training, interval, status; default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub mqtt_allow: Vec<String>,
    /// Do not publish Home Assistant discovery configs.
    #[arg(long)]
    pub no_discovery: bool,
}
