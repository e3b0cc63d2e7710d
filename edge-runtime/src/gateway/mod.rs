//! `thermo gateway`: the fleet's OpenAI-compatible front. It speaks the same API and streaming
//! as `thermo serve`, and puts each request on the broker's shared work queue
//! ([`crate::telemetry::work`]), where the boards running `thermo serve --fleet` take work
//! only while they have thermal headroom; the answer comes back as chunks on the gateway's
//! response topic and goes to the client as it arrives.
//!
//! - **Which boards can answer.** The gateway follows every board's retained presence. A
//!   request waits up to [`GatewayOptions::max_wait`] for a board of the model that takes
//!   work; then it gets 429 with `Retry-After` (503 when no board of the model is online).
//! - **A board lost mid-answer.** A board that goes offline (its Last Will, a clean stop, or
//!   silence longer than [`boards::STALE_AFTER`]) has its requests put on the queue once more,
//!   marked re-queued. The client gets no text twice: of the new board's answer only what
//!   follows the part already sent is passed on, after checking that the part sent is the
//!   same (the seed is the request's, so a board running the same model writes the same
//!   answer); a different answer, or a second loss, ends the request with an error.
//! - **A request nobody took.** One no board accepts within
//!   [`GatewayOptions::accept_timeout`] is published once more, then refused with 503.
//! - **The broker going away.** The link reconnects and subscribes again; requests whose
//!   chunks were lost meanwhile end with an error instead of a hole in the text, and new
//!   requests are served once boards are back.
//! - **`/metrics`**: per board (online, taking work, headroom, temperature, setpoint, answers,
//!   tokens, times lost) and for the fleet (requests by outcome, re-queues, in flight, the
//!   answers' energy and emissions).
//!
//! The listen address, bearer token, allowed hosts and origins, body and token limits and
//! connection limits are `[service]`'s, as for `thermo serve`; the broker's credentials and
//! TLS files are `[telemetry]`'s.

pub mod boards;
pub mod flight;
mod http;
mod link;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::v5::AsyncClient;

use crate::config::Config;
use crate::serve::conn::{self, ConnLimits};
use crate::serve::{api, guard};
use crate::telemetry::broker::BrokerConfig;
use boards::Boards;
use flight::Flights;

/// Largest packet the gateway reads from the broker, bytes (an answer chunk is at most
/// [`crate::telemetry::work::MAX_CHUNK_BYTES`]).
const MAX_PACKET_BYTES: u32 = 256 * 1024;

/// What the gateway needs besides `[service]`.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The broker (the client id is the gateway's own).
    pub broker: BrokerConfig,
    /// The gateway's name: its response topic is `thermo/gateway/<id>/answers`.
    pub id: String,
    /// The model id the boards serve (as their `/v1/models` names it).
    pub model: String,
    /// How long a request waits for a board with headroom before 429.
    pub max_wait: Duration,
    /// How long a published request may go without a board accepting it.
    pub accept_timeout: Duration,
    /// Longest silence between two chunks of an answer.
    pub stall_timeout: Duration,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
}

/// Fleet counters on `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    invalid: AtomicU64,
    requeued: AtomicU64,
    tokens: AtomicU64,
    /// Millijoules, so that the sum stays an integer.
    energy_mj: AtomicU64,
    /// Micrograms CO2e.
    co2e_ug: AtomicU64,
}

/// What the handlers and the link share.
struct Shared {
    opts: GatewayOptions,
    answers_topic: String,
    client: AsyncClient,
    books: Mutex<Books>,
    /// Woken when a board's presence changes.
    boards_changed: tokio::sync::Notify,
    connected: AtomicBool,
    counters: Counters,
    limits: api::Limits,
    api_token: Option<String>,
    max_body_bytes: usize,
    policy: guard::Policy,
    created: u64,
    serial: AtomicU64,
}

/// The boards and the requests in flight, under one lock.
struct Books {
    boards: Boards,
    flights: Flights,
    /// Each request's way to its handler.
    routes: std::collections::HashMap<u64, tokio::sync::mpsc::Sender<flight::Delivery>>,
}

impl Shared {
    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn run(config: &Config, opts: GatewayOptions) -> Result<()> {
    let svc = &config.service;
    let addr: SocketAddr = svc
        .listen_addr()
        .with_context(|| format!("service.listen {:?} is not ADDRESS:PORT", svc.listen))?;
    crate::telemetry::work::request_topic(&opts.model).context("--model")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("thermo-gateway")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, addr, opts, crate::serve::shutdown_signal()))
}

/// Serves on `addr` until `shutdown` completes.
pub async fn serve(
    config: &Config,
    addr: SocketAddr,
    opts: GatewayOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let svc = &config.service;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let mqtt = opts
        .broker
        .mqtt5_options(None, MAX_PACKET_BYTES)
        .context("the broker")?;
    let (client, event_loop) = AsyncClient::new(mqtt, 256);
    let shared = Arc::new(Shared {
        answers_topic: format!("thermo/gateway/{}/answers", opts.id),
        client,
        books: Mutex::new(Books {
            boards: Boards::default(),
            flights: Flights::new(opts.max_in_flight),
            routes: Default::default(),
        }),
        boards_changed: tokio::sync::Notify::new(),
        connected: AtomicBool::new(false),
        counters: Counters::default(),
        limits: api::Limits {
            max_tokens_limit: svc
                .max_tokens_limit
                .min(crate::telemetry::work::MAX_REQUEST_TOKENS as usize),
            default_max_tokens: svc.default_max_tokens,
            max_prompt_tokens: svc.max_prompt_tokens,
        },
        api_token: svc.api_token.clone(),
        max_body_bytes: svc.max_body_bytes,
        policy: guard::Policy::new(
            local,
            &svc.allowed_hosts,
            &svc.allowed_origins,
            svc.api_token.is_some(),
            svc.admin_without_token,
        ),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        serial: AtomicU64::new(0),
        opts,
    });
    log::info!(
        "gateway for {} on http://{local}, broker {}",
        shared.opts.model,
        shared.opts.broker.url
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let link = tokio::spawn(link::run(shared.clone(), event_loop, stop_rx.clone()));
    let limits = ConnLimits {
        header_timeout: Duration::from_secs_f64(svc.header_timeout_s),
        idle_timeout: Duration::from_secs_f64(svc.idle_timeout_s),
        max_connections: svc.connection_cap(),
    };
    let router = http::router(shared.clone());
    let grace = Duration::from_secs_f64(svc.shutdown_grace_s);
    let mut deadline_rx = stop_rx.clone();
    let deadline = async move {
        let _ = deadline_rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = conn::serve(listener, router, limits, stop_rx) => {}
        () = deadline => log::warn!("connections still open after the shutdown grace; closing them"),
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), link).await;
    Ok(())
}

impl Shared {
    fn count(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
