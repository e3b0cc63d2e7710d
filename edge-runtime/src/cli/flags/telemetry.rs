//! The telemetry flags of the main job (`--mqtt`, `--device-id`, the TLS files, the queue),
//! which sit on top of the configuration's `[telemetry]` section.

use std::path::PathBuf;

use clap::Args;
use edge_runtime::config::TelemetrySection;

use super::merge;

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

impl TelemetryArgs {
    /// Puts the flags that were given over `[telemetry]` (the file and environment layers).
    pub fn merge_onto(&self, s: &mut TelemetrySection) {
        merge(&mut s.mqtt, self.mqtt.clone().map(Some));
        merge(&mut s.device_id, self.device_id.clone().map(Some));
        merge(&mut s.file, self.telemetry_file.clone().map(Some));
        merge(&mut s.enabled, self.no_telemetry.then_some(false));
        merge(&mut s.interval_s, self.telemetry_interval);
        merge(&mut s.encoding, self.telemetry_encoding.clone());
        merge(&mut s.queue_dir, self.telemetry_queue.clone().map(Some));
        merge(&mut s.queue_capacity, self.telemetry_queue_capacity);
        merge(&mut s.ca_file, self.mqtt_ca.clone().map(Some));
        merge(&mut s.cert_file, self.mqtt_cert.clone().map(Some));
        merge(&mut s.key_file, self.mqtt_key.clone().map(Some));
        merge(&mut s.username, self.mqtt_username.clone().map(Some));
        merge(
            &mut s.password_file,
            self.mqtt_password_file.clone().map(Some),
        );
        merge(
            &mut s.allow,
            (!self.mqtt_allow.is_empty()).then(|| self.mqtt_allow.clone()),
        );
        merge(&mut s.discovery, self.no_discovery.then_some(false));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;
    use edge_runtime::config::{Config, ConfigError, Layers};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        t: TelemetryArgs,
    }

    fn parse(args: &[&str]) -> TelemetryArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .t
    }

    fn from_file() -> TelemetrySection {
        TelemetrySection {
            mqtt: Some("mqtt://file.example:1883".into()),
            device_id: Some("from-file".into()),
            interval_s: 5.0,
            allow: vec!["status".into()],
            ..TelemetrySection::default()
        }
    }

    #[test]
    fn given_flags_replace_the_sections_values_and_absent_ones_keep_them() {
        let mut s = from_file();
        parse(&[
            "--device-id",
            "d1",
            "--no-discovery",
            "--mqtt-allow",
            "setpoint,status",
        ])
        .merge_onto(&mut s);
        assert_eq!(s.mqtt, from_file().mqtt);
        assert_eq!(s.device_id.as_deref(), Some("d1"));
        assert_eq!(s.interval_s, 5.0);
        assert!(!s.discovery);
        assert_eq!(s.allow, ["setpoint", "status"]);
        assert!(s.enabled);
        parse(&["--no-telemetry"]).merge_onto(&mut s);
        assert!(!s.enabled);
    }

    #[test]
    fn no_flags_leave_the_section_as_the_file_said() {
        let mut s = from_file();
        parse(&[]).merge_onto(&mut s);
        assert_eq!(s, from_file());
    }

    #[test]
    fn bad_telemetry_flags_are_reported_under_their_key_paths() {
        for (flags, path) in [
            (&["--mqtt", "http://x"][..], "telemetry.mqtt"),
            (&["--device-id", "a/b"], "telemetry.device_id"),
            (&["--mqtt-allow", "reboot"], "telemetry.allow[0]"),
            (&["--telemetry-interval", "0"], "telemetry.interval_s"),
            (&["--telemetry-encoding", "xml"], "telemetry.encoding"),
        ] {
            let args = parse(flags);
            let got = Config::load_with(&Layers::default(), |c| {
                args.merge_onto(&mut c.telemetry);
            });
            match got {
                Err(ConfigError::Invalid(list)) => {
                    assert!(list.iter().any(|p| p.path == path), "{flags:?}: {list:?}");
                }
                other => panic!("{flags:?} accepted: {other:?}"),
            }
        }
    }
}
