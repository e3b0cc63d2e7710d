//! The runtime's one configuration file (`/etc/thermo/thermo.toml`), layered
//! defaults < file < `THERMO_*` environment < command-line flags. Each `[section]` is a serde
//! struct with `Default` and a check that appends every problem it finds, with its key path,
//! so an invalid configuration is reported all at once. Adding a section is one line in the
//! [`config_sections!`] invocation below plus a [`Section`] impl; the example file
//! (`edge-runtime/thermo.example.toml`) is generated from the same documentation tables and a
//! test fails when the two drift. This module only parses and checks: it opens no device and
//! no socket.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sensing::SensingConfig;

/// Where the service looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/thermo/thermo.toml";

/// Prefix of the environment variables that override configuration keys
/// (`THERMO_SERVICE_LISTEN` sets `service.listen`).
pub const ENV_PREFIX: &str = "THERMO_";

/// One key's documentation, for the generated example file.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key inside its section.
    pub key: &'static str,
    /// What it means, with its unit.
    pub doc: &'static str,
    /// A value to show, commented out, when the key has no default (it is optional).
    pub example: Option<&'static str>,
}

const fn doc(key: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: None,
    }
}

const fn doc_eg(key: &'static str, doc: &'static str, example: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: Some(example),
    }
}

/// One invalid value: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `service.queue_bound`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The problems a section's check appends to.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records that `path` is invalid.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The problems recorded so far.
    pub fn list(&self) -> &[Problem] {
        &self.list
    }
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{origin} is not valid TOML: {message}")]
    Syntax {
        /// The file (or `--set`/environment source).
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// Values are missing, unknown, of the wrong type or out of range; all of them.
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `[section]` of the configuration file.
pub trait Section: Serialize + DeserializeOwned + Default {
    /// The table name.
    const NAME: &'static str;
    /// One line per key, in file order.
    const DOCS: &'static [KeyDoc];
    /// Appends every semantic problem (ranges, combinations) with its full key path.
    fn check(&self, problems: &mut Problems);
}

/// `[model]`: which model the service loads and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// Model folder (ONNX + tokenizer); `None`: the default model, fetched on first use.
    pub dir: Option<PathBuf>,
    /// Weight format of the default model (`f32`, `q4`).
    pub format: String,
    /// The id clients name in `model`; `None`: the folder's name.
    pub id: Option<String>,
    /// Compute threads per generation.
    pub threads: usize,
    /// PEFT adapter folder (from `thermo train`) applied at start; `None`: the base model.
    pub adapter: Option<PathBuf>,
    /// Folder that adapters swapped in over the API must lie under (relative paths are
    /// resolved against it); `None`: any folder the service can read.
    pub adapters_dir: Option<PathBuf>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            dir: None,
            format: "q4".into(),
            id: None,
            threads: 2,
            adapter: None,
            adapters_dir: None,
        }
    }
}

impl Section for ModelSection {
    const NAME: &'static str = "model";
    const DOCS: &'static [KeyDoc] = &[
        doc_eg(
            "dir",
            "Model folder (ONNX + tokenizer). Unset: the default model (SmolLM2-135M-Instruct) in \
             `format`, fetched and imported into $THERMO_HOME on first use.",
            "\"/var/lib/thermo/models/SmolLM2-135M-Instruct-q4\"",
        ),
        doc(
            "format",
            "Weight format of the default model: \"f32\", \"q4\" or \"ggml\".",
        ),
        doc_eg(
            "id",
            "The model id clients send and /v1/models lists. Unset: the model folder's name.",
            "\"smollm2\"",
        ),
        doc("threads", "Compute threads per generation (1..=64)."),
        doc_eg(
            "adapter",
            "LoRA adapter folder (PEFT files from `thermo train`) applied at start. Unset: the \
             base model. POST /v1/adapter swaps it while the service runs.",
            "\"/var/lib/thermo/adapters/support-v2\"",
        ),
        doc_eg(
            "adapters_dir",
            "Folder that adapters swapped in over the API must lie under; relative paths in \
             requests are resolved against it. Unset: any folder the service can read.",
            "\"/var/lib/thermo/adapters\"",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if !matches!(self.format.as_str(), "f32" | "q4" | "ggml") {
            p.push(
                "model.format",
                format!("must be \"f32\", \"q4\" or \"ggml\", got {:?}", self.format),
            );
        }
        if !(1..=64).contains(&self.threads) {
            p.push(
                "model.threads",
                format!("must be in 1..=64, got {}", self.threads),
            );
        }
        if self.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
            p.push("model.id", "must not be empty");
        }
        if self
            .dir
            .as_deref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            p.push("model.dir", "must not be empty");
        }
        for (key, path) in [
            ("model.adapter", &self.adapter),
            ("model.adapters_dir", &self.adapters_dir),
        ] {
            if path.as_deref().is_some_and(|d| d.as_os_str().is_empty()) {
                p.push(key, "must not be empty");
            }
        }
    }
}

/// `[governor]`: the thermal governor every request runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernorSection {
    /// Temperature to hold the SoC at, °C; `None`: 10 °C below the first firmware throttle.
    pub setpoint_c: Option<f32>,
    /// The service reports itself unhealthy (and stops petting the systemd watchdog) when the
    /// governor's last tick is older than this, in seconds.
    pub stale_after_s: f64,
}

impl Default for GovernorSection {
    fn default() -> Self {
        GovernorSection {
            setpoint_c: None,
            stale_after_s: 5.0,
        }
    }
}

impl Section for GovernorSection {
    const NAME: &'static str = "governor";
    const DOCS: &'static [KeyDoc] = &[
        doc_eg(
            "setpoint_c",
            "Temperature to hold the SoC at, in °C. Unset: 10 °C below the board's first \
             firmware throttle point.",
            "70.0",
        ),
        doc(
            "stale_after_s",
            "Seconds without a governor tick after which /healthz fails and the systemd \
             watchdog is no longer petted (0.5..=600).",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if let Some(sp) = self.setpoint_c
            && !(sp.is_finite() && (20.0..=110.0).contains(&sp))
        {
            p.push(
                "governor.setpoint_c",
                format!("must be a temperature in 20..=110 °C, got {sp}"),
            );
        }
        if !(self.stale_after_s.is_finite() && (0.5..=600.0).contains(&self.stale_after_s)) {
            p.push(
                "governor.stale_after_s",
                format!("must be in 0.5..=600 s, got {}", self.stale_after_s),
            );
        }
    }
}

impl Section for SensingConfig {
    const NAME: &'static str = "sensors";
    const DOCS: &'static [KeyDoc] = &[
        doc(
            "root",
            "Filesystem root the sysfs and procfs paths hang from (\"/\" on a device).",
        ),
        doc_eg(
            "zone",
            "Type of the thermal zone that governs. Unset: the board's own (cpu-thermal, \
             tj-thermal).",
            "\"cpu-thermal\"",
        ),
        doc_eg(
            "sim",
            "Force the simulated SoC: rpi4, rpi5, rpi5-active, jetson-orin-nano, or a TOML \
             profile path. Unset: real sensors when present, else the simulated rpi5.",
            "\"rpi5\"",
        ),
        doc(
            "time_scale",
            "Simulated seconds per wall second for the simulated SoC: above 0, at most 1000.",
        ),
        doc_eg(
            "i2c",
            "I2C sensors ([[sensors.i2c]] tables: name, bus, address, chip, role, \
             shunt_micro_ohms, max_current_ma). systemd/thermo.service must allow each bus \
             with DeviceAllow=.",
            "[{ name = \"board\", bus = \"/dev/i2c-1\", address = 0x40, chip = \"ina219\", role = \"board_power\", shunt_micro_ohms = 100000, max_current_ma = 3200 }]",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if let Err(e) = self.validate() {
            p.push("sensors", format!("{e:#}"));
        }
    }
}

/// `[service]`: the HTTP API of `thermo serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Bearer token required on `/v1/*` and `/metrics`; mandatory off loopback.
    pub api_token: Option<String>,
    /// Generations run at once (one worker thread each).
    pub workers: usize,
    /// Requests that may wait for a worker; one more gets 429.
    pub queue_bound: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// `max_tokens` of a request that names none.
    pub default_max_tokens: usize,
    /// On SIGTERM, in-flight generations get this long to finish before they are cancelled, s.
    pub shutdown_grace_s: f64,
    /// Most prompt tokens a request may have (after the chat template).
    pub max_prompt_tokens: usize,
    /// `Origin`s besides the service's own allowed to call it (e.g. `http://localhost:3000`).
    pub allowed_origins: Vec<String>,
    /// `Host` names (optionally `:PORT`) accepted besides the listen address and loopback.
    pub allowed_hosts: Vec<String>,
    /// Allow `POST`/`DELETE /v1/adapter` without `api_token` (off: only with a token).
    pub admin_without_token: bool,
    /// Time a client has to send a request's headers, counted from the connection's opening
    /// or from the end of the previous answer, s.
    pub header_timeout_s: f64,
    /// A keep-alive connection with no request in flight is closed after this long, s.
    pub idle_timeout_s: f64,
    /// Most open client connections; more are closed at once. Unset: the soft open-files
    /// limit minus a reserve for the governor, sensors, model files and telemetry.
    pub max_connections: Option<usize>,
}

/// File descriptors kept back from client connections for the governor, sensors, model
/// files, telemetry and the process itself.
pub const FD_RESERVE: u64 = 128;

/// `service.max_connections` when it is unset: the soft `RLIMIT_NOFILE` minus
/// [`FD_RESERVE`], at least 8 and at most 16384.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let n = soft.saturating_sub(FD_RESERVE).clamp(8, 16_384);
    usize::try_from(n).unwrap_or(16_384)
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "127.0.0.1:8080".into(),
            api_token: None,
            workers: 1,
            queue_bound: 16,
            max_body_bytes: 1 << 20,
            max_tokens_limit: 2048,
            default_max_tokens: 256,
            shutdown_grace_s: 10.0,
            max_prompt_tokens: 2048,
            allowed_origins: vec![],
            allowed_hosts: vec![],
            admin_without_token: false,
            header_timeout_s: 10.0,
            idle_timeout_s: 5.0,
            max_connections: None,
        }
    }
}

impl ServiceConfig {
    /// The listen address, when it parses.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// `max_connections`, or its default from the open-files limit.
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(default_max_connections)
    }
}

impl Section for ServiceConfig {
    const NAME: &'static str = "service";
    const DOCS: &'static [KeyDoc] = &[
        doc(
            "listen",
            "Address and port the HTTP API listens on. Anything but loopback needs api_token.",
        ),
        doc_eg(
            "api_token",
            "Bearer token required on /v1/* and /metrics (/healthz stays open). Prefer the \
             THERMO_SERVICE_API_TOKEN environment variable to keep it out of this file.",
            "\"change-me\"",
        ),
        doc(
            "workers",
            "Generations that run at once, one worker thread each (1..=64).",
        ),
        doc(
            "queue_bound",
            "Requests that may wait for a worker; beyond that a request gets 429 with \
             Retry-After (0..=100000).",
        ),
        doc(
            "max_body_bytes",
            "Largest request body accepted, in bytes (1024..=67108864).",
        ),
        doc(
            "max_tokens_limit",
            "Largest max_tokens a request may ask for (1..=1048576).",
        ),
        doc(
            "default_max_tokens",
            "max_tokens of a request that names none (1..=max_tokens_limit).",
        ),
        doc(
            "shutdown_grace_s",
            "On SIGTERM/SIGINT, seconds in-flight requests get to finish before they are \
             cancelled (0..=300).",
        ),
        doc(
            "max_prompt_tokens",
            "Most prompt tokens a request may have after the chat template; a longer prompt \
             gets 400 (1..=1048576). Bounds the memory and time one prefill takes.",
        ),
        doc(
            "allowed_origins",
            "Browser origins (scheme://host:port) allowed to call the API besides the \
             service's own; a request with any other Origin header gets 403.",
        ),
        doc(
            "allowed_hosts",
            "Host header values (name or name:port) accepted besides the listen address, \
             localhost, 127.0.0.1 and [::1]; any other Host gets 403 (DNS rebinding). Not \
             checked when listening on 0.0.0.0 or [::] with this list empty.",
        ),
        doc(
            "admin_without_token",
            "Allow POST and DELETE /v1/adapter (adapter swaps) without api_token. Off: they \
             get 403 unless api_token is set.",
        ),
        doc(
            "header_timeout_s",
            "Seconds a client has to send a request's headers, counted from the connection's \
             opening or from the end of the previous answer; then the connection is closed \
             (0.1..=300).",
        ),
        doc(
            "idle_timeout_s",
            "Seconds a keep-alive connection may wait with no request in flight before it is \
             closed (0.1..=3600); header_timeout_s also applies, whichever ends first.",
        ),
        doc_eg(
            "max_connections",
            "Most open client connections; more are closed at once (1..=1048576). Unset: the \
             soft open-files limit (LimitNOFILE=) minus 128 kept for the governor, sensors, \
             model files and telemetry.",
            "512",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        match self.listen_addr() {
            None => p.push(
                "service.listen",
                format!(
                    "must be ADDRESS:PORT (e.g. 127.0.0.1:8080), got {:?}",
                    self.listen
                ),
            ),
            Some(addr) if !addr.ip().is_loopback() && self.api_token.is_none() => p.push(
                "service.listen",
                format!(
                    "{addr} is not a loopback address: set service.api_token \
                     (THERMO_SERVICE_API_TOKEN) so other hosts must authenticate"
                ),
            ),
            Some(_) => {}
        }
        if let Some(token) = &self.api_token
            && (token.len() < 8 || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            p.push(
                "service.api_token",
                "must be at least 8 characters without whitespace",
            );
        }
        if !(1..=64).contains(&self.workers) {
            p.push(
                "service.workers",
                format!("must be in 1..=64, got {}", self.workers),
            );
        }
        if self.queue_bound > 100_000 {
            p.push(
                "service.queue_bound",
                format!("must be at most 100000, got {}", self.queue_bound),
            );
        }
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            p.push(
                "service.max_body_bytes",
                format!("must be in 1024..=67108864, got {}", self.max_body_bytes),
            );
        }
        if !(1..=1 << 20).contains(&self.max_tokens_limit) {
            p.push(
                "service.max_tokens_limit",
                format!("must be in 1..=1048576, got {}", self.max_tokens_limit),
            );
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_limit {
            p.push(
                "service.default_max_tokens",
                format!(
                    "must be in 1..=service.max_tokens_limit ({}), got {}",
                    self.max_tokens_limit, self.default_max_tokens
                ),
            );
        }
        if !(self.shutdown_grace_s.is_finite() && (0.0..=300.0).contains(&self.shutdown_grace_s)) {
            p.push(
                "service.shutdown_grace_s",
                format!("must be in 0..=300 s, got {}", self.shutdown_grace_s),
            );
        }
        self.check_connections(p);
    }
}

impl ServiceConfig {
    fn check_connections(&self, p: &mut Problems) {
        if !(1..=1 << 20).contains(&self.max_prompt_tokens) {
            p.push(
                "service.max_prompt_tokens",
                format!("must be in 1..=1048576, got {}", self.max_prompt_tokens),
            );
        }
        for (key, v, max) in [
            ("service.header_timeout_s", self.header_timeout_s, 300.0),
            ("service.idle_timeout_s", self.idle_timeout_s, 3600.0),
        ] {
            if !(v.is_finite() && (0.1..=max).contains(&v)) {
                p.push(key, format!("must be in 0.1..={max} s, got {v}"));
            }
        }
        if let Some(n) = self.max_connections
            && !(1..=1 << 20).contains(&n)
        {
            p.push(
                "service.max_connections",
                format!("must be in 1..=1048576, got {n}"),
            );
        }
        for (key, list) in [
            ("service.allowed_origins", &self.allowed_origins),
            ("service.allowed_hosts", &self.allowed_hosts),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|v| v.is_empty() || v.len() > 253 || v.chars().any(|c| c.is_whitespace()))
            {
                p.push(
                    key,
                    format!("entries must be non-empty names without spaces, got {bad:?}"),
                );
            }
        }
    }
}

mod sections;
pub use sections::{EcoSection, TelemetrySection};

/// Declares the whole configuration: one `field: Type` line per section, in file order.
macro_rules! config_sections {
    ($($field:ident : $ty:ty),+ $(,)?) => {
        /// The effective configuration, one field per `[section]`.
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $(
                #[doc = concat!("`[", stringify!($field), "]`.")]
                pub $field: $ty,
            )+
        }

        /// Names of the sections, in file order.
        pub const SECTIONS: &[&str] = &[$(<$ty as Section>::NAME),+];

        impl Config {
            fn from_layers(merged: &toml::Table, p: &mut Problems) -> Config {
                Config {
                    $($field: section_from::<$ty>(merged, p),)+
                }
            }

            fn check_all(&self, p: &mut Problems) {
                $(self.$field.check(p);)+
            }

            /// Whether `section.key = value` deserialises (on top of the defaults).
            fn accepts(section: &str, key: &str, value: &toml::Value) -> bool {
                $(
                    if section == <$ty as Section>::NAME {
                        return probe::<$ty>(key, value);
                    }
                )+
                false
            }

            fn docs() -> Vec<(&'static str, &'static [KeyDoc], toml::Table)> {
                vec![$((<$ty as Section>::NAME, <$ty as Section>::DOCS, default_table::<$ty>())),+]
            }
        }
    };
}

config_sections! {
    model: ModelSection,
    governor: GovernorSection,
    sensors: SensingConfig,
    service: ServiceConfig,
    eco: EcoSection,
    telemetry: TelemetrySection,
}

/// The section's default values as a TOML table (unset options are absent).
fn default_table<S: Section>() -> toml::Table {
    match toml::Value::try_from(S::default()) {
        Ok(toml::Value::Table(t)) => t,
        // A section whose default does not serialise to a table is a programming error that
        // the example-file test catches; an empty table keeps the layering going.
        _ => toml::Table::new(),
    }
}

fn probe<S: Section>(key: &str, value: &toml::Value) -> bool {
    let mut t = default_table::<S>();
    t.insert(key.to_string(), value.clone());
    toml::Value::Table(t).try_into::<S>().is_ok()
}

/// Builds section `S` from the merged layers. Each key is tried alone on top of the defaults,
/// so every unknown key and every mistyped value is reported, not just the first; the
/// section is then built from its valid keys, so its range checks still run on them.
fn section_from<S: Section>(merged: &toml::Table, p: &mut Problems) -> S {
    let table = match merged.get(S::NAME) {
        None => return S::default(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(other) => {
            p.push(
                S::NAME,
                format!("must be a table, got a {}", other.type_str()),
            );
            return S::default();
        }
    };
    let mut good = default_table::<S>();
    for (key, value) in table {
        let mut probe = good.clone();
        probe.insert(key.clone(), value.clone());
        match toml::Value::Table(probe).try_into::<S>() {
            Ok(_) => {
                good.insert(key, value);
            }
            Err(e) => p.push(format!("{}.{key}", S::NAME), first_line(&e.to_string())),
        }
    }
    match toml::Value::Table(good).try_into::<S>() {
        Ok(s) => s,
        Err(e) => {
            p.push(S::NAME, first_line(&e.to_string()));
            S::default()
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(s)
        .to_string()
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets a dotted `path` to `value` in `table`, creating tables on the way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().filter(|l| !l.is_empty()).ok_or("empty key")?;
    let mut cur = table;
    for part in parts {
        if part.is_empty() {
            return Err("empty key segment".into());
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{part} is not a table")),
        };
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// Reads a raw override value: a TOML literal (`8`, `true`, `"x"`, `[1, 2]`) when it parses as
/// one, else the text itself as a string. A key whose current value is a string takes the
/// raw text unless it is a quoted TOML string, so `THERMO_SERVICE_API_TOKEN=12345678` stays
/// a string.
fn parse_override(current: Option<&toml::Value>, raw: &str) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match (current, parsed) {
        (Some(toml::Value::String(_)), Some(v @ toml::Value::String(_))) => v,
        (Some(toml::Value::String(_)), _) => toml::Value::String(raw.to_string()),
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.to_string()),
    }
}

fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut cur = table.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_table()?.get(part)?;
    }
    Some(cur)
}

/// Where the layers come from; [`Config::load`] applies them in field order.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The configuration file's text and its name for messages; `None`: no file.
    pub file: Option<(String, String)>,
    /// Environment variables (name, value); only `THERMO_<SECTION>_<KEY>` ones are used.
    pub env: Vec<(String, String)>,
    /// Command-line overrides as (`section.key`, raw value).
    pub cli: Vec<(String, String)>,
}

impl Layers {
    /// The file at `path` (`None`: [`DEFAULT_CONFIG_PATH`] when it exists, else no file),
    /// the process environment, and `cli`.
    pub fn from_process(
        path: Option<&Path>,
        cli: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => Some(read_file(p)?),
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                if p.is_file() {
                    Some(read_file(p)?)
                } else {
                    None
                }
            }
        };
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Ok(Layers { file, env, cli })
    }
}

fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    Ok((text, path.display().to_string()))
}

/// The key path an environment variable names, when it names one:
/// `THERMO_SERVICE_QUEUE_BOUND` → `service.queue_bound`. Variables of other programs' or
/// other modules' (`THERMO_HOME`) do not start with a section name and are ignored.
pub fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        let key = rest.strip_prefix(section)?.strip_prefix('_')?;
        (!key.is_empty()).then(|| format!("{section}.{key}"))
    })
}

impl Config {
    /// Applies the layers over the defaults and checks the result; every problem is in the
    /// error, each with its key path.
    pub fn load(layers: &Layers) -> Result<Config, ConfigError> {
        let mut merged = toml::Table::new();
        for (name, _, table) in Config::docs() {
            merged.insert(name.to_string(), toml::Value::Table(table));
        }
        let mut p = Problems::default();
        if let Some((text, origin)) = &layers.file {
            let file: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
                origin: origin.clone(),
                message: first_line(&e.to_string()),
            })?;
            for key in file.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    p.push(
                        key.clone(),
                        format!("unknown section (known: {})", SECTIONS.join(", ")),
                    );
                }
            }
            merge(&mut merged, file);
        }
        let overrides = layers
            .env
            .iter()
            .filter_map(|(k, v)| Some((env_key(k)?, v.clone(), k.clone())))
            .chain(
                layers
                    .cli
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone(), k.clone())),
            );
        for (path, raw, origin) in overrides {
            // A problem is listed under its key path: name the source only when it differs
            // (an environment variable), so a `--set` key is not said twice.
            let from = if origin == path {
                String::new()
            } else {
                format!("{origin}: ")
            };
            if !SECTIONS.contains(&path.split('.').next().unwrap_or_default()) {
                p.push(
                    path.clone(),
                    format!("{from}unknown section (known: {})", SECTIONS.join(", ")),
                );
                continue;
            }
            let mut value = parse_override(lookup(&merged, &path), &raw);
            // An optional string key has no default to say it is a string: a raw value that
            // parsed as a number or boolean is taken as text when only text fits.
            if !value.is_str()
                && let Some((section, key)) = path.split_once('.')
                && !Config::accepts(section, key, &value)
                && Config::accepts(section, key, &toml::Value::String(raw.clone()))
            {
                value = toml::Value::String(raw.clone());
            }
            if let Err(e) = set_path(&mut merged, &path, value) {
                p.push(path.clone(), format!("{from}{e}"));
            }
        }
        merged.retain(|k, _| SECTIONS.contains(&k));
        let config = Config::from_layers(&merged, &mut p);
        config.check_all(&mut p);
        if p.list.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(p.list))
        }
    }

    /// Parses a configuration file's text on top of the defaults (no environment, no flags).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::load(&Layers {
            file: Some((text.to_string(), "config".into())),
            ..Layers::default()
        })
    }

    /// The configuration as TOML, with the API token replaced by `"<redacted>"`.
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        if shown.service.api_token.is_some() {
            shown.service.api_token = Some("<redacted>".into());
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// The documented example file: every key with its documentation and default value
    /// (optional keys commented out with an example). `thermo config --example` prints it.
    pub fn example_toml() -> String {
        let mut out = String::from(
            "# thermo configuration: /etc/thermo/thermo.toml (or `thermo serve --config FILE`).\n\
             # Layers: built-in defaults < this file < THERMO_<SECTION>_<KEY> environment\n\
             # variables < command-line flags. Every key below shows its default.\n\
             # Generated by `thermo config --example`; a test keeps it in step with the code.\n",
        );
        for (name, docs, defaults) in Config::docs() {
            out.push_str(&format!("\n[{name}]\n"));
            for d in docs {
                for line in wrap(d.doc, 92) {
                    out.push_str(&format!("# {line}\n"));
                }
                match defaults.get(d.key) {
                    Some(v) => out.push_str(&format!("{} = {}\n", d.key, inline(v))),
                    None => {
                        out.push_str(&format!("# {} = {}\n", d.key, d.example.unwrap_or("\"\"")))
                    }
                }
            }
        }
        out
    }
}

fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Array(a) if a.is_empty() => "[]".into(),
        other => {
            let mut t = toml::Table::new();
            t.insert("v".into(), other.clone());
            toml::to_string(&t)
                .ok()
                .and_then(|s| s.trim().strip_prefix("v = ").map(str::to_string))
                .unwrap_or_default()
        }
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![];
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/thermo.example.toml");

    fn problems(r: Result<Config, ConfigError>) -> Vec<Problem> {
        match r {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn the_example_file_matches_the_code() {
        let on_disk = std::fs::read_to_string(EXAMPLE_PATH).unwrap_or_default();
        let generated = Config::example_toml();
        if std::env::var_os("THERMO_WRITE_EXAMPLE").is_some() {
            std::fs::write(EXAMPLE_PATH, &generated).expect("writing the example");
            return;
        }
        assert!(
            on_disk == generated,
            "edge-runtime/thermo.example.toml is out of date: regenerate it with \
             `cargo run -p edge-runtime --bin thermo -- config --example > edge-runtime/thermo.example.toml`"
        );
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let cfg = Config::from_toml_str(&Config::example_toml()).expect("example parses");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn every_key_of_every_section_is_documented() {
        for (name, docs, defaults) in Config::docs() {
            for key in defaults.keys() {
                assert!(
                    docs.iter().any(|d| d.key == key),
                    "{name}.{key} has no documentation line"
                );
            }
            for d in docs {
                assert!(
                    defaults.contains_key(d.key) || d.example.is_some(),
                    "{name}.{} is optional but has no example",
                    d.key
                );
            }
        }
    }

    #[test]
    fn commented_examples_of_optional_keys_parse_and_validate() {
        let mut text = String::new();
        for (name, docs, _) in Config::docs() {
            text.push_str(&format!("[{name}]\n"));
            for d in docs {
                if let Some(eg) = d.example {
                    text.push_str(&format!("{} = {eg}\n", d.key));
                }
            }
        }
        // The token example turns listening off loopback legal; the bus path must exist
        // nowhere for validation, which opens nothing.
        let cfg = Config::from_toml_str(&text).expect("examples are valid");
        assert_eq!(cfg.model.id.as_deref(), Some("smollm2"));
        assert_eq!(cfg.sensors.i2c.len(), 1);
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_cli() {
        let layers = Layers {
            file: Some((
                "[service]\nqueue_bound = 3\nworkers = 2\nlisten = \"127.0.0.1:9000\"\n".into(),
                "f".into(),
            )),
            env: vec![
                ("THERMO_SERVICE_WORKERS".into(), "4".into()),
                ("THERMO_SERVICE_LISTEN".into(), "127.0.0.1:9100".into()),
                ("THERMO_HOME".into(), "/elsewhere".into()),
                ("PATH".into(), "/bin".into()),
            ],
            cli: vec![("service.listen".into(), "127.0.0.1:9200".into())],
        };
        let cfg = Config::load(&layers).expect("valid");
        assert_eq!(cfg.service.queue_bound, 3, "file over default");
        assert_eq!(cfg.service.workers, 4, "env over file");
        assert_eq!(cfg.service.listen, "127.0.0.1:9200", "cli over env");
        assert_eq!(cfg.service.max_body_bytes, 1 << 20, "default kept");
    }

    #[test]
    fn a_numeric_looking_token_from_the_environment_stays_a_string() {
        let layers = Layers {
            env: vec![("THERMO_SERVICE_API_TOKEN".into(), "1234567890".into())],
            ..Layers::default()
        };
        let cfg = Config::load(&layers).expect("valid");
        assert_eq!(cfg.service.api_token.as_deref(), Some("1234567890"));
        assert!(!cfg.to_toml_redacted().contains("1234567890"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let text = "[service]\nworkers = 0\nqueue_bound = \"many\"\nlisten = \"nowhere\"\nbogus = 1\n\
                    [model]\nthreads = 0\nformat = \"q8\"\n[governor]\nsetpoint_c = 500.0\n\
                    [sensors]\ntime_scale = -1.0\n[telemetryy]\nx = 1\n";
        let found = problems(Config::from_toml_str(text));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "service.queue_bound",
            "service.bogus",
            "telemetryy",
            "model.threads",
            "model.format",
            "governor.setpoint_c",
            "sensors",
        ] {
            assert!(paths.contains(&want), "{want} missing from {found:?}");
        }
        // Range problems of the same section as a type error are in the same report.
        assert!(paths.contains(&"service.workers"), "{found:?}");
        assert!(paths.contains(&"service.listen"), "{found:?}");
    }

    #[test]
    fn connection_and_prompt_limits_out_of_range_are_reported_by_key() {
        let text = "[service]\nheader_timeout_s = 0.0\nidle_timeout_s = inf\n\
                    max_connections = 0\nmax_prompt_tokens = 0\nallowed_hosts = [\"\"]\n\
                    allowed_origins = [\"http://a b\"]\n";
        let found = problems(Config::from_toml_str(text));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "service.header_timeout_s",
            "service.idle_timeout_s",
            "service.max_connections",
            "service.max_prompt_tokens",
            "service.allowed_hosts",
            "service.allowed_origins",
        ] {
            assert!(paths.contains(&want), "{want} missing from {found:?}");
        }
        let cap = ServiceConfig::default().connection_cap();
        assert!((8..=16_384).contains(&cap), "{cap}");
    }

    #[test]
    fn listening_off_loopback_needs_a_token() {
        let found = problems(Config::from_toml_str(
            "[service]\nlisten = \"0.0.0.0:8080\"\n",
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "service.listen");
        let ok = Config::from_toml_str(
            "[service]\nlisten = \"0.0.0.0:8080\"\napi_token = \"s3cret-token\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn environment_names_map_to_key_paths() {
        assert_eq!(
            env_key("THERMO_SERVICE_QUEUE_BOUND").as_deref(),
            Some("service.queue_bound")
        );
        assert_eq!(
            env_key("THERMO_GOVERNOR_SETPOINT_C").as_deref(),
            Some("governor.setpoint_c")
        );
        assert_eq!(env_key("THERMO_HOME"), None);
        assert_eq!(env_key("THERMO_SERVICE_"), None);
        assert_eq!(env_key("HOME"), None);
    }

    #[test]
    fn a_syntax_error_names_the_file() {
        let r = Config::load(&Layers {
            file: Some(("[service\n".into(), "/etc/thermo/thermo.toml".into())),
            ..Layers::default()
        });
        match r {
            Err(ConfigError::Syntax { origin, .. }) => {
                assert_eq!(origin, "/etc/thermo/thermo.toml")
            }
            other => panic!("{other:?}"),
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_map(|v| format!("{v:?}")),
                any::<bool>().prop_map(|v| v.to_string()),
                "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
                Just("[1, \"a\"]".to_string()),
                Just("{ a = 1 }".to_string()),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("listen".to_string()),
                Just("workers".to_string()),
                Just("queue_bound".to_string()),
                Just("threads".to_string()),
                Just("setpoint_c".to_string()),
                Just("time_scale".to_string()),
                Just("i2c".to_string()),
                "[a-z_]{1,10}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
                let _ = Config::from_toml_str(&text);
            }

            #[test]
            fn arbitrary_tables_are_accepted_or_reported_with_paths(
                entries in proptest::collection::vec(
                    (prop_oneof![Just("model"), Just("governor"), Just("sensors"), Just("service"), Just("other")], key(), value()),
                    0..8,
                )
            ) {
                let mut text = String::new();
                for (section, key, value) in &entries {
                    text.push_str(&format!("[{section}]\n{key} = {value}\n"));
                }
                match Config::from_toml_str(&text) {
                    Ok(cfg) => prop_assert!(Config::from_toml_str(&toml::to_string(&cfg).unwrap_or_default()).is_ok()),
                    Err(ConfigError::Invalid(list)) => {
                        prop_assert!(!list.is_empty());
                        for p in list {
                            prop_assert!(!p.path.is_empty());
                        }
                    }
                    Err(ConfigError::Syntax { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }
}
