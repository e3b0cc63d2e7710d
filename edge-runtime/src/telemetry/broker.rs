//! Where the broker is and how to reach it: `mqtt://` / `mqtts://` URLs, TLS through rustls
//! (CA file, optional client certificate and key), username and password. The password is a
//! [`Secret`]: it has no `Display`, its `Debug` prints `***`, and it is never part of a URL
//! (a URL with a password is rejected, so it cannot leak through logs or process lists).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Largest packet read from the broker (bytes). A larger one makes rumqttc drop the
/// connection, so this sits far above any command ([`super::command::MAX_COMMAND_BYTES`]):
/// commands between the two are received, refused and counted with the link kept. Set the
/// broker's `max_packet_size` at or below it to keep larger ones from reaching the device.
pub const MAX_INCOMING_PACKET: usize = 16 << 20;
/// Largest packet sent (bytes).
pub const MAX_OUTGOING_PACKET: usize = 1 << 20;

/// Default port of `mqtt://`.
pub const MQTT_PORT: u16 = 1883;
/// Default port of `mqtts://`.
pub const MQTTS_PORT: u16 = 8883;
/// CA bundle used for `mqtts://` when no CA file is given.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A password: kept out of `Debug`, logs and telemetry.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The password itself, for the one place that sends it to the broker.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a broker URL or TLS setting is unusable.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The URL is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("broker URL {url:?}: {why}")]
    Url {
        /// The URL as given (never contains a password: such URLs are refused before).
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A certificate or key file could not be read or parsed.
    #[error("{what} {path}: {why}")]
    Pem {
        /// CA file, client certificate or client key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// A client certificate without a key or the reverse.
    #[error("a client certificate needs both --mqtt-cert and --mqtt-key")]
    HalfClientAuth,
    /// TLS options on a plain `mqtt://` URL.
    #[error("TLS files were given but the URL is mqtt://; use mqtts://")]
    TlsOnPlain,
}

impl From<rustls::Error> for BrokerError {
    fn from(e: rustls::Error) -> Self {
        BrokerError::Tls(e)
    }
}

/// A parsed broker address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`: connect with TLS.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::str::FromStr for BrokerUrl {
    type Err = BrokerError;

    fn from_str(url: &str) -> Result<Self, BrokerError> {
        let err = |why| BrokerError::Url {
            url: redact_url(url),
            why,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(err("must start with mqtt:// or mqtts://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(err(
                "credentials do not belong in the URL; use --mqtt-username and THERMO_MQTT_PASSWORD or --mqtt-password-file",
            ));
        }
        if authority.contains('/') || authority.contains('?') || authority.contains('#') {
            return Err(err("must be only scheme://host[:port]"));
        }
        let default_port = if tls { MQTTS_PORT } else { MQTT_PORT };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = match after {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .ok_or_else(|| err("junk after ']'"))?
                    .parse()
                    .map_err(|_| err("the port must be 1 to 65535"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| err("the port must be 1 to 65535"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        if port == 0 {
            return Err(err("the port must be 1 to 65535"));
        }
        Ok(Self { tls, host, port })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Replaces anything between `://` and `@` so a URL with credentials can be quoted in errors.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***{}", &url[..s + 3], &url[a..]),
        _ => url.to_string(),
    }
}

/// Everything needed to connect: address, identity, credentials, TLS files.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The broker.
    pub url: BrokerUrl,
    /// MQTT client id.
    pub client_id: String,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password (never logged).
    pub password: Option<Secret>,
    /// PEM file with the CA certificates to trust (mqtts; default: the system bundle).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require client certificates.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl BrokerConfig {
    /// A plain configuration for `url` as `client_id`, no credentials, no client certificate.
    pub fn new(url: BrokerUrl, client_id: impl Into<String>) -> Self {
        Self {
            url,
            client_id: client_id.into(),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// rumqttc options: address, keep-alive, credentials, TLS, the Last Will and a clean
    /// session (the caller's disk queue, not the broker session, carries what is unacked).
    pub fn mqtt_options(&self, will: Option<LastWill>) -> Result<MqttOptions, BrokerError> {
        let mut o = MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(5)));
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if let Some(w) = will {
            o.set_last_will(w);
        }
        if let Some(user) = &self.username {
            let pass = self.password.as_ref().map(Secret::expose).unwrap_or("");
            o.set_credentials(user, pass);
        }
        if let Some(t) = self.transport()? {
            o.set_transport(t);
        }
        Ok(o)
    }

    /// rumqttc's MQTT 5 options, as [`BrokerConfig::mqtt_options`]: address, keep-alive,
    /// credentials, TLS, the Last Will and a clean start; packets read are capped at
    /// `max_packet` bytes.
    pub fn mqtt5_options(
        &self,
        will: Option<rumqttc::v5::mqttbytes::v5::LastWill>,
        max_packet: u32,
    ) -> Result<rumqttc::v5::MqttOptions, BrokerError> {
        let mut o = rumqttc::v5::MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(5)));
        o.set_clean_start(true);
        o.set_max_packet_size(Some(max_packet));
        if let Some(w) = will {
            o.set_last_will(w);
        }
        if let Some(user) = &self.username {
            let pass = self.password.as_ref().map(Secret::expose).unwrap_or("");
            o.set_credentials(user, pass);
        }
        if let Some(t) = self.transport()? {
            o.set_transport(t);
        }
        Ok(o)
    }

    /// TLS for `mqtts://`; `None` for `mqtt://`, where TLS files are an error.
    fn transport(&self) -> Result<Option<Transport>, BrokerError> {
        if self.url.tls {
            Ok(Some(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(self.rustls_config()?),
            ))))
        } else if self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()
        {
            Err(BrokerError::TlsOnPlain)
        } else {
            Ok(None)
        }
    }

    /// The rustls client configuration (ring provider, the CA file's roots, optional client
    /// certificate).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, BrokerError> {
        let ca_path = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&ca_path, "CA file")? {
            roots.add(cert).map_err(|e| BrokerError::Pem {
                what: "CA file",
                path: ca_path.clone(),
                why: e.to_string(),
            })?;
        }
        if roots.is_empty() {
            return Err(BrokerError::Pem {
                what: "CA file",
                path: ca_path,
                why: "no certificate in it".into(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        Ok(match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "client certificate")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| BrokerError::Pem {
                    what: "client key",
                    path: key.clone(),
                    why: e.to_string(),
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => return Err(BrokerError::HalfClientAuth),
        })
    }
}

fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let pem = |why: String| BrokerError::Pem {
        what,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(s: &str) -> Result<BrokerUrl, BrokerError> {
        s.parse()
    }

    #[test]
    fn parses_plain_and_tls_urls_with_default_ports() {
        let u = parse("mqtt://broker.lan").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.lan", 1883)
        );
        let u = parse("mqtts://broker.lan").unwrap();
        assert_eq!((u.tls, u.port), (true, 8883));
        let u = parse("mqtt://127.0.0.1:18830/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 18830));
        let u = parse("mqtts://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.to_string(), "mqtts://[::1]:9000");
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://h:port",
            "mqtt://h/topic",
            "mqtt://[::1",
            "tcp://h:1883",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_a_password_in_the_url_without_echoing_it() {
        let e = parse("mqtt://alice:hunter2@broker:1883").unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("credentials"), "{text}");
    }

    #[test]
    fn never_shows_the_password_in_debug_output() {
        let mut c = BrokerConfig::new(parse("mqtt://h").unwrap(), "dev");
        c.username = Some("alice".into());
        c.password = Some(Secret::new("hunter2"));
        let dbg = format!("{c:?} {:?}", c.password);
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
        assert!(c.mqtt_options(None).is_ok());
    }

    #[test]
    fn mqtt5_options_take_the_same_checks_and_the_last_will() {
        let mut c = BrokerConfig::new(parse("mqtt://h:1884").unwrap(), "fleet");
        let will = rumqttc::v5::mqttbytes::v5::LastWill::new(
            "t",
            b"gone".to_vec(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            None,
        );
        let o = c.mqtt5_options(Some(will), 1024).unwrap();
        assert_eq!(o.broker_address(), ("h".to_string(), 1884));
        assert!(o.last_will().is_some());
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            c.mqtt5_options(None, 1024),
            Err(BrokerError::TlsOnPlain)
        ));
        let mut t = BrokerConfig::new(parse("mqtts://h").unwrap(), "fleet");
        t.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            t.mqtt5_options(None, 1024),
            Err(BrokerError::Pem { .. })
        ));
    }

    #[test]
    fn tls_settings_need_an_mqtts_url_and_both_client_files() {
        let mut c = BrokerConfig::new(parse("mqtt://h").unwrap(), "dev");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(c.mqtt_options(None), Err(BrokerError::TlsOnPlain)));
        let mut c = BrokerConfig::new(parse("mqtts://h").unwrap(), "dev");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(c.mqtt_options(None), Err(BrokerError::Pem { .. })));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        c.ca_file = Some(empty);
        assert!(matches!(c.mqtt_options(None), Err(BrokerError::Pem { .. })));
    }
}
