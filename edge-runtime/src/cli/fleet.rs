//! `thermo fleet`: subscribes to every device on a broker (optionally as a `$share/` group
//! member) and shows the fleet table, refreshed in place, or printed once after a while.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use edge_runtime::config::TelemetrySection;
use edge_runtime::session::telemetry::broker_config;
use edge_runtime::telemetry::Encoding;
use edge_runtime::telemetry::fleet::{FleetView, watch};

/// Flags of `thermo fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The broker: mqtt://host[:port] or mqtts://host[:port].
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// Join this shared-subscription group ($share/GROUP/...) so several viewers split the load.
    #[arg(long, value_name = "GROUP")]
    pub share: Option<String>,
    /// Watch for this many seconds, then print the table once and exit.
    #[arg(long = "for", value_name = "SECONDS")]
    pub for_secs: Option<f64>,
    /// Decode records as json or postcard.
    #[arg(long, default_value = "json", value_name = "ENCODING")]
    pub encoding: String,
    /// TLS and login flags (the same as `thermo run`'s).
    #[command(flatten)]
    pub tls: FleetTlsArgs,
}

/// TLS and login flags of `thermo fleet`.
#[derive(Debug, Args)]
pub struct FleetTlsArgs {
    /// Trust the CA certificates in this PEM file (mqtts; default: the system's).
    #[arg(long, value_name = "PEM")]
    pub mqtt_ca: Option<std::path::PathBuf>,
    /// Present this PEM client certificate chain (with --mqtt-key).
    #[arg(long, value_name = "PEM")]
    pub mqtt_cert: Option<std::path::PathBuf>,
    /// Use this PEM private key for the client certificate.
    #[arg(long, value_name = "PEM")]
    pub mqtt_key: Option<std::path::PathBuf>,
    /// Log in as this user (password from --mqtt-password-file or THERMO_MQTT_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub mqtt_username: Option<String>,
    /// Read the broker password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub mqtt_password_file: Option<std::path::PathBuf>,
}

/// `thermo fleet --broker URL`.
pub fn fleet(args: FleetArgs) -> Result<()> {
    if let Some(g) = &args.share
        && (g.is_empty() || g.contains(['/', '+', '#']))
    {
        bail!("--share must be one topic level without wildcards");
    }
    let for_how_long = match args.for_secs {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => bail!("--for must be a positive number of seconds"),
        None => None,
    };
    let encoding: Encoding = args.encoding.parse()?;
    let t = &args.tls;
    let as_telemetry = TelemetrySection {
        encoding: args.encoding.clone(),
        ca_file: t.mqtt_ca.clone(),
        cert_file: t.mqtt_cert.clone(),
        key_file: t.mqtt_key.clone(),
        username: t.mqtt_username.clone(),
        password_file: t.mqtt_password_file.clone(),
        discovery: false,
        ..TelemetrySection::default()
    };
    let client_id = format!("thermo-fleet-{}", std::process::id());
    let cfg = broker_config(&as_telemetry, &args.broker, &client_id)?;
    let mut view = FleetView::new(encoding);
    let live = for_how_long.is_none();
    watch(
        &cfg,
        args.share.as_deref(),
        &mut view,
        for_how_long,
        Duration::from_secs(1),
        |v| {
            if live {
                let mut out = std::io::stdout().lock();
                // Clear the screen and home the cursor, then the table.
                let _ = write!(out, "\x1b[2J\x1b[H{}", v.render());
                let _ = out.flush();
            }
            true
        },
    )?;
    if !live {
        print!("{}", view.render());
    }
    Ok(())
}
