//! `[service]`: the HTTP API of `thermo serve` (listen address, token, workers, queue,
//! limits, timeouts, connection cap, allowed origins and hosts).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{KeyDoc, Problems, Section, doc, doc_eg};

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
