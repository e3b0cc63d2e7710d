//! The HTTP surface (axum): routes, bearer-token check, body limit, the OpenAI endpoints in
//! streaming (server-sent events) and whole-body form, `/v1/models`, `/healthz` and
//! `/metrics`. Handlers check and tokenize a request, admit it to the scheduler and relay the
//! worker's events; they never run the model themselves.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::Extensions;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sensor_drivers::sensor_set::Snapshot;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::api::{
    ApiError, Endpoint, GenRequest, Limits, PromptSpec, ResponseId, models_list, parse_chat,
    parse_completion,
};
use super::metrics::{LoopRefusal, Metrics, MetricsView, Outcome, render};
use super::queue::{Rejected, Scheduler};
use super::worker::{ClientGuard, Event, Job};
use crate::eco::agent_loop::{AgentLoopDetector, Refusal};
use crate::engine::model::LoadedModel;
use crate::pacing::GovernorHandle;
use crate::session::model::prompt_ids;

/// Events buffered between a worker and its handler.
pub(super) const EVENT_BUFFER: usize = 16;

/// Tracks when the governor last ticked, so a hung control loop shows.
#[derive(Debug)]
pub struct Freshness {
    governor: GovernorHandle,
    last: std::sync::Mutex<(u64, Instant)>,
    stale_after: Duration,
}

impl Freshness {
    /// Watches `governor`; it counts as hung after `stale_after` without a tick.
    pub fn new(governor: GovernorHandle, stale_after: Duration) -> Self {
        Freshness {
            governor,
            last: std::sync::Mutex::new((0, Instant::now())),
            stale_after,
        }
    }

    /// Time since the tick count last changed.
    pub fn tick_age(&self) -> Duration {
        let ticks = self.governor.status().ticks;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if ticks != last.0 {
            *last = (ticks, Instant::now());
        }
        last.1.elapsed()
    }

    /// True while the control loop runs and ticked within `stale_after`.
    pub fn healthy(&self) -> bool {
        self.tick_age() <= self.stale_after && self.governor.status().running
    }

    /// The governor's handle.
    pub fn governor(&self) -> &GovernorHandle {
        &self.governor
    }
}

/// Everything the handlers share.
pub struct App {
    /// The served model's id.
    pub model_id: String,
    /// When the service started (Unix s), for `/v1/models`.
    pub created: u64,
    /// The served model (with its adapter); each request reads it once, when admitted.
    pub slot: Arc<super::adapter::ModelSlot>,
    /// Request limits.
    pub limits: Limits,
    /// Bearer token required on `/v1/*` and `/metrics`.
    pub api_token: Option<String>,
    /// Largest body, bytes.
    pub max_body_bytes: usize,
    /// The job queue.
    pub scheduler: Arc<Scheduler<Job>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Governor liveness.
    pub freshness: Arc<Freshness>,
    /// The sensors at the governor's last tick.
    pub snapshot: Arc<dyn Fn() -> Option<Snapshot> + Send + Sync>,
    /// Thermal zone index by type (sysfs), for node_exporter-style labels.
    pub zone_index: Vec<(String, u32)>,
    /// True on the simulated SoC.
    pub simulated: bool,
    /// Request counter, for ids.
    pub serial: AtomicU64,
    /// The agent-loop detector and the clock it counts on; `None`: off.
    pub agent_loop: Option<AgentLoop>,
    /// The eco accounting, for today's totals on `/metrics`.
    pub eco: Option<Arc<super::accounting::EcoAccounting>>,
    /// The telemetry handle, for its health on `/healthz` and counters on `/metrics`.
    pub telemetry: Option<crate::telemetry::Telemetry>,
    /// The document index and the sentence encoder (`[rag]`); `None`: neither is served.
    pub knowledge: Option<Arc<super::rag::Knowledge>>,
    /// Which hosts, origins and content types are accepted (checked before every handler).
    pub policy: super::guard::Policy,
}

/// The agent-loop detector of the API: clients are told apart by address and `user`.
#[derive(Debug)]
pub struct AgentLoop {
    detector: std::sync::Mutex<AgentLoopDetector>,
    origin: Instant,
    window_s: u64,
}

impl AgentLoop {
    /// A detector with `cfg`.
    pub fn new(cfg: crate::eco::agent_loop::AgentLoopConfig) -> Self {
        AgentLoop {
            detector: std::sync::Mutex::new(AgentLoopDetector::new(cfg)),
            origin: Instant::now(),
            window_s: cfg.window.as_secs().max(1),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut AgentLoopDetector, Duration) -> R) -> R {
        let mut d = self.detector.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d, self.origin.elapsed())
    }

    /// Records a request of `client` and says whether to serve it; old entries expire.
    pub fn admit(&self, client: &str, body: &[u8]) -> Result<(), Refusal> {
        let text = String::from_utf8_lossy(body);
        self.with(|d, now| {
            d.expire(now);
            d.admit(client, &text, now)
        })
    }

    /// Records that the last request of `client` failed with `message`.
    pub fn error(&self, client: &str, message: &str) {
        self.with(|d, now| d.record_error(client, message, now));
    }
}

/// Who sent a request, for the agent-loop detector: the peer's IP address and the body's
/// `user` field when it has one.
fn client_key(peer: Option<SocketAddr>, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct UserOnly {
        #[serde(default)]
        user: Option<Value>,
    }
    let user = serde_json::from_slice::<UserOnly>(body)
        .ok()
        .and_then(|u| u.user)
        .and_then(|u| u.as_str().map(str::to_string))
        .unwrap_or_default();
    let ip = peer.map(|p| p.ip().to_string()).unwrap_or_default();
    format!("{ip} {user}")
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("model_id", &self.model_id)
            .finish()
    }
}

/// The router of the service.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/v1/adapter",
            get(get_adapter).post(post_adapter).delete(delete_adapter),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Refuses what the [`super::guard::Policy`] refuses, before any handler runs.
async fn guard(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match app
        .policy
        .check(req.method(), req.uri().path(), req.headers())
    {
        Ok(()) => next.run(req).await,
        Err(e) => {
            log::info!(
                "refused {} {}: {}",
                req.method(),
                req.uri().path(),
                e.message
            );
            app.reject(e)
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The HTTP response for an API error (with `Retry-After` when it has one).
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(e.body())).into_response();
    if let Some(s) = e.retry_after_s
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Compares two byte strings in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's bearer token against `token`, when one is configured.
pub fn check_bearer(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same_secret(g.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

impl App {
    /// Checks the bearer token, when one is configured.
    pub(super) fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        check_bearer(self.api_token.as_deref(), headers)
    }

    fn reject(&self, e: ApiError) -> Response {
        let outcome = match e.status {
            429 | 503 => Outcome::Rejected,
            s if s >= 500 => Outcome::Failed,
            _ => Outcome::Invalid,
        };
        self.metrics.add_request(outcome);
        error_response(&e)
    }
}

async fn not_found() -> Response {
    error_response(&ApiError {
        status: 404,
        ..ApiError::invalid(None, "No such endpoint.")
    })
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    let mut list = models_list(&app.model_id, app.created);
    if let Some(a) = app.slot.current().adapter_name() {
        list["data"][0]["adapter"] = json!(a);
    }
    axum::Json(list).into_response()
}

/// The `telemetry` field of `/healthz`: `off`, `ok`, or `degraded` with the reason and the
/// records dropped so far. A degraded telemetry does not make the service unhealthy.
fn telemetry_health(t: Option<&crate::telemetry::Telemetry>) -> Value {
    let Some(t) = t else {
        return json!({"status": "off"});
    };
    let s = t.stats();
    let dropped = s.dropped_channel + s.dropped_queue + s.dropped_unwritable;
    match t.health() {
        crate::telemetry::TelemetryHealth::Ok => json!({"status": "ok", "dropped": dropped}),
        crate::telemetry::TelemetryHealth::Degraded(reason) => {
            json!({"status": "degraded", "reason": reason, "dropped": dropped})
        }
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let status = app.freshness.governor().status();
    let age = app.freshness.tick_age();
    let ok = app.freshness.healthy();
    let load = app.scheduler.load();
    let body = json!({
        "status": if ok { "ok" } else { "unhealthy" },
        "model": app.model_id,
        "governor": {
            "running": status.running,
            "last_tick_age_s": age.as_secs_f64(),
            "temperature_c": status.temperature_c,
            "setpoint_c": status.setpoint_c,
            "limiter": status.limiter.as_str(),
        },
        "requests": {"processing": load.running, "waiting": load.waiting},
        "telemetry": telemetry_health(app.telemetry.as_ref()),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    let status = app.freshness.governor().status();
    let age = app.freshness.tick_age().as_secs_f64();
    let snapshot = (app.snapshot)();
    let load = app.scheduler.load();
    let text = render(&MetricsView {
        metrics: &app.metrics,
        processing: load.running,
        deferred: load.waiting,
        governor: &status,
        governor_tick_age_s: age,
        snapshot: snapshot.as_ref(),
        zone_index: &app.zone_index,
        simulated: app.simulated,
        today: app.eco.as_ref().and_then(|e| e.today()),
        telemetry: app.telemetry.as_ref().map(|t| (t.stats(), t.health())),
    }) + &app.slot.metrics_text();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn peer(ext: &Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

async fn chat(
    State(app): State<Arc<App>>,
    ext: Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(app, Endpoint::Chat, peer(&ext), headers, body).await
}

async fn completions(
    State(app): State<Arc<App>>,
    ext: Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(app, Endpoint::Completions, peer(&ext), headers, body).await
}

async fn handle(
    app: Arc<App>,
    endpoint: Endpoint,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let client = match (&app.agent_loop, &body) {
        (Some(_), Ok(b)) => client_key(peer, b),
        _ => String::new(),
    };
    let response = handle_admitted(app.clone(), endpoint, &client, headers, body).await;
    if let Some(lp) = &app.agent_loop
        && !client.is_empty()
        && response.status().is_client_error()
        && response.status() != StatusCode::TOO_MANY_REQUESTS
    {
        // Agents retry on errors: the same error for the same request counts.
        lp.error(&client, &format!("HTTP {}", response.status()));
    }
    response
}

async fn handle_admitted(
    app: Arc<App>,
    endpoint: Endpoint,
    client: &str,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return app.reject(e);
    }
    if !app.freshness.governor().is_running() {
        return app.reject(ApiError::governor_stopped());
    }
    let body = match read_body(&app, body) {
        Ok(b) => b,
        Err(e) => return app.reject(e),
    };
    if let Some(lp) = &app.agent_loop
        && let Err(refusal) = lp.admit(client, &body)
    {
        let why = match refusal {
            Refusal::RepeatedRequest { .. } => LoopRefusal::RepeatedRequest,
            Refusal::RepeatedError { .. } => LoopRefusal::RepeatedError,
        };
        app.metrics.add_loop_refusal(why);
        log::info!("agent loop refused: {refusal}");
        return app.reject(ApiError::agent_loop(&refusal.to_string(), lp.window_s));
    }
    let parsed = match endpoint {
        Endpoint::Chat => parse_chat(&body, &app.model_id, &app.limits),
        Endpoint::Completions => parse_completion(&body, &app.model_id, &app.limits),
    };
    let mut req = match parsed {
        Ok(r) => r,
        Err(e) => return app.reject(e),
    };
    let served = app.slot.current();
    let augmented = match retrieve(&app, &served.model, &mut req).await {
        Ok(a) => a,
        Err(e) => return app.reject(e),
    };
    let citations = augmented
        .as_ref()
        .map(|(a, _)| super::rag::citations(&a.used));
    let ids = match tokenize(&served.model, &req, app.limits.max_prompt_tokens).await {
        Ok(ids) => ids,
        Err(e) => return app.reject(e),
    };
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let (mut job, guard) = Job::new(ids, req.options.clone(), tx, served.model.clone());
    if let Some((a, index)) = augmented {
        job = job.with_memory(a.memory_cost(), index);
    }
    let client = req.user.clone().unwrap_or_default();
    match app.scheduler.submit(&client, job) {
        Ok(()) => {}
        Err((Rejected::Full { retry_after_s }, _)) => {
            return app.reject(ApiError::queue_full(retry_after_s));
        }
        Err((Rejected::Closed, _)) => return app.reject(ApiError::shutting_down()),
    }
    let serial = app.serial.fetch_add(1, Ordering::Relaxed);
    let rid = ResponseId::new(endpoint, serial, unix_now(), &req.model)
        .with_adapter(served.adapter_name());
    if req.stream {
        let stream = ChunkStream {
            rx,
            guard,
            rid,
            citations,
            app: app.clone(),
            include_usage: req.include_usage,
            first: true,
            pending: VecDeque::new(),
            finished: false,
            done_sent: false,
        };
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        whole(app, rx, guard, rid, citations).await
    }
}

/// The body, or the error for one too large or unreadable.
fn read_body(app: &App, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    match body {
        Ok(b) => Ok(b),
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::too_large(app.max_body_bytes))
        }
        Err(rej) => Err(ApiError::invalid(
            None,
            format!("The request body could not be read: {rej}"),
        )),
    }
}

/// When the request (or `[rag] chat_default`) asks for it, retrieves passages for the last
/// user message and puts them into it, off the async threads; the passages used, or `None`.
async fn retrieve(
    app: &Arc<App>,
    model: &Arc<LoadedModel>,
    req: &mut GenRequest,
) -> Result<
    Option<(
        crate::session::rag::Augmented,
        Option<crate::eco::IndexFootprint>,
    )>,
    ApiError,
> {
    let Some(knowledge) = &app.knowledge else {
        return match req.rag {
            Some(true) => Err(ApiError::invalid(
                Some("rag"),
                "this server has no document index",
            )),
            _ => Ok(None),
        };
    };
    if !req.rag.unwrap_or(knowledge.chat_default()) {
        return Ok(None);
    }
    let PromptSpec::Chat(messages) = &req.prompt else {
        return Ok(None);
    };
    let Some(question) = messages
        .last()
        .filter(|m| m.role == crate::engine::chat::Role::User)
        .map(|m| m.content.clone())
    else {
        return Err(ApiError::invalid(
            Some("messages"),
            "retrieval needs the last message to be the user's question",
        ));
    };
    let (knowledge, model, history) = (knowledge.clone(), model.clone(), messages.clone());
    let (max_tokens, max_prompt) = (req.options.max_tokens, app.limits.max_prompt_tokens);
    let augmented = tokio::task::spawn_blocking(move || {
        // Room for the user turn: the context and the prompt limit, less the answer and the
        // chat template around the question.
        let base = prompt_ids(&model, &None, &history, None)
            .map_err(|e| ApiError::invalid(Some("messages"), format!("{e:#}")))?
            .len();
        let asked = model
            .tokenizer
            .encode(&question)
            .map_err(|e| ApiError::invalid(Some("messages"), format!("{e:#}")))?
            .len();
        let template = base.saturating_sub(asked);
        let room = model
            .context_length()
            .saturating_sub(max_tokens + template)
            .min(max_prompt.saturating_sub(template));
        knowledge.augment(&question, &model.tokenizer, room)
    })
    .await
    .map_err(|e| ApiError::internal(format!("retrieval task failed: {e}")))??;
    if let PromptSpec::Chat(messages) = &mut req.prompt
        && let Some(last) = messages.last_mut()
    {
        last.content = augmented.0.prompt.clone();
    }
    log::info!("{}", augmented.0.line());
    Ok(Some(augmented))
}

/// `POST /v1/embeddings`: unit vectors of the texts from the sentence encoder.
async fn embeddings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return app.reject(e);
    }
    let Some(knowledge) = app.knowledge.clone().filter(|k| k.embeddings_enabled()) else {
        return app.reject(ApiError {
            status: 404,
            ..ApiError::invalid(
                None,
                "Embeddings are off on this server ([rag] embeddings).",
            )
        });
    };
    let body = match read_body(&app, body) {
        Ok(b) => b,
        Err(e) => return app.reject(e),
    };
    let model = knowledge.encoder_id();
    let req = match super::rag::parse_embeddings(&body, &model) {
        Ok(r) => r,
        Err(e) => return app.reject(e),
    };
    let done = tokio::task::spawn_blocking(move || {
        req.check_dimensions(knowledge.dim()?)?;
        let (vectors, tokens) = knowledge.embed(&req.input)?;
        Ok::<_, ApiError>(super::rag::embeddings_response(
            &model, &vectors, tokens, req.base64,
        ))
    })
    .await;
    match done {
        Ok(Ok(v)) => {
            app.metrics.add_request(Outcome::Ok);
            axum::Json(v).into_response()
        }
        Ok(Err(e)) => app.reject(e),
        Err(e) => app.reject(ApiError::internal(format!("embedding task failed: {e}"))),
    }
}

/// Renders and tokenizes the prompt off the async threads, and checks it fits the context
/// and `max_prompt_tokens`.
pub(super) async fn tokenize(
    model: &Arc<LoadedModel>,
    req: &GenRequest,
    max_prompt_tokens: usize,
) -> Result<Vec<u32>, ApiError> {
    let context = model.context_length();
    let model = model.clone();
    let prompt = req.prompt.clone();
    let ids = tokio::task::spawn_blocking(move || match &prompt {
        PromptSpec::Chat(messages) => prompt_ids(&model, &None, messages, None),
        PromptSpec::Raw(text) => prompt_ids(&model, &None, &[], Some(text)),
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
    .map_err(|e| {
        ApiError::invalid(
            Some("messages"),
            format!("The prompt could not be rendered: {e:#}"),
        )
    })?;
    if ids.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "The prompt is empty."));
    }
    if ids.len() > max_prompt_tokens {
        let param = match req.prompt {
            PromptSpec::Chat(_) => "messages",
            PromptSpec::Raw(_) => "prompt",
        };
        return Err(ApiError::invalid(
            Some(param),
            format!(
                "The prompt has {} tokens; this server accepts at most {max_prompt_tokens} \
                 (service.max_prompt_tokens).",
                ids.len()
            ),
        )
        .with_code("prompt_too_long"));
    }
    if ids.len() >= context {
        return Err(ApiError::invalid(
            Some("messages"),
            format!(
                "The prompt has {} tokens; the model's context holds {context} (prompt plus answer).",
                ids.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(ids)
}

/// Collects the whole answer. Dropping this future (the client went away) drops the guard,
/// which stops the worker at the next token.
async fn whole(
    app: Arc<App>,
    mut rx: mpsc::Receiver<Event>,
    guard: ClientGuard,
    rid: ResponseId,
    citations: Option<Value>,
) -> Response {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(f)) => {
                guard.delivered();
                app.metrics.add_request(Outcome::Ok);
                let mut body = rid.response(&text, f.finish_reason, f.usage, &f.footprint);
                if let Some(c) = citations {
                    body["citations"] = c;
                }
                return axum::Json(body).into_response();
            }
            Some(Event::Failed(m)) => {
                guard.delivered();
                return error_response(&ApiError::internal(format!("generation failed: {m}")));
            }
            None => {
                guard.delivered();
                return app.reject(ApiError::shutting_down());
            }
        }
    }
}

/// The server-sent-event stream of one answer: OpenAI chunks, then `[DONE]`.
struct ChunkStream {
    rx: mpsc::Receiver<Event>,
    guard: ClientGuard,
    rid: ResponseId,
    citations: Option<Value>,
    app: Arc<App>,
    include_usage: bool,
    first: bool,
    pending: VecDeque<Value>,
    finished: bool,
    done_sent: bool,
}

impl ChunkStream {
    fn on_event(&mut self, ev: Option<Event>) {
        match ev {
            Some(Event::Text(t)) => {
                self.pending.push_back(self.rid.text_chunk(&t, self.first));
                self.first = false;
            }
            Some(Event::Done(f)) => {
                if self.first {
                    self.pending.push_back(self.rid.text_chunk("", true));
                    self.first = false;
                }
                let mut last = self.rid.final_chunk(f.finish_reason, &f.footprint);
                if let Some(c) = self.citations.take() {
                    last["citations"] = c;
                }
                self.pending.push_back(last);
                if self.include_usage {
                    self.pending
                        .push_back(self.rid.usage_chunk(f.usage, &f.footprint));
                }
                self.guard.delivered();
                self.app.metrics.add_request(Outcome::Ok);
                self.finished = true;
            }
            Some(Event::Failed(m)) => {
                self.pending
                    .push_back(ApiError::internal(format!("generation failed: {m}")).body());
                self.guard.delivered();
                self.finished = true;
            }
            None => {
                self.pending.push_back(ApiError::shutting_down().body());
                self.guard.delivered();
                self.app.metrics.add_request(Outcome::Rejected);
                self.finished = true;
            }
        }
    }
}

impl Stream for ChunkStream {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(SseEvent::default().data(v.to_string()))));
            }
            if self.finished {
                // `[DONE]` once, then the end of the stream.
                if !self.done_sent {
                    self.done_sent = true;
                    return Poll::Ready(Some(Ok(SseEvent::default().data("[DONE]"))));
                }
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(ev) => self.on_event(ev),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// `GET /v1/adapter`: the adapter served now.
async fn get_adapter(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    axum::Json(app.slot.status_json(&app.model_id)).into_response()
}

/// `DELETE /v1/adapter`: back to the base model.
async fn delete_adapter(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    swap_response(app, None).await
}

/// `POST /v1/adapter` with `{"path": "DIR"}` (swap to that adapter) or `{"path": null}` (back
/// to the base model).
async fn post_adapter(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            return error_response(&ApiError {
                status: rej.status().as_u16(),
                ..ApiError::invalid(None, format!("The request body could not be read: {rej}"))
            });
        }
    };
    match super::adapter::parse_swap(&body) {
        Ok(path) => swap_response(app, path).await,
        Err(e) => error_response(&e),
    }
}

async fn swap_response(app: Arc<App>, path: Option<PathBuf>) -> Response {
    let slot = app.slot.clone();
    // The whole swap runs on the blocking thread, so a client that hangs up does not stop it
    // halfway.
    let done = tokio::task::spawn_blocking(move || slot.swap(path.as_deref())).await;
    match done {
        Ok(Ok(_)) => axum::Json(app.slot.status_json(&app.model_id)).into_response(),
        Ok(Err(e)) => {
            let status = e.status();
            let err = if status >= 500 {
                ApiError::internal(e.to_string())
            } else {
                ApiError {
                    status,
                    ..ApiError::invalid(Some("path"), e.to_string())
                }
            };
            error_response(&err)
        }
        Err(e) => error_response(&ApiError::internal(format!(
            "the adapter load failed: {e}; the served model is unchanged"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::types::TempReading;
    use crate::governor::{Governor, GovernorConfig, Opp, Platform};
    use crate::pacing::{GovernorRunner, Permits, SourceReading};

    #[test]
    fn healthz_reports_telemetry_off_ok_then_degraded_on_a_full_disk_queue() {
        use crate::telemetry::{BrokerConfig, SinkConfig, Telemetry, TelemetryOptions};
        assert_eq!(telemetry_health(None)["status"], "off");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("mqtt://127.0.0.1:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let space = Arc::new(AtomicU64::new(0));
        let opts = TelemetryOptions::new(
            "health",
            SinkConfig::Mqtt {
                broker: BrokerConfig::new(url, "health"),
                queue_dir: dir.path().to_path_buf(),
            },
        )
        .with_linger(Duration::ZERO)
        .with_queue_space(space);
        let (t, d) = Telemetry::new(opts, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(telemetry_health(Some(&t))["status"], "ok");
        let th = std::thread::spawn(move || d.run());
        let event = crate::telemetry::Body::Event(crate::telemetry::Event {
            name: "t".into(),
            detail: String::new(),
            count: None,
        });
        t.send(event);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while telemetry_health(Some(&t))["status"] != "degraded" {
            assert!(std::time::Instant::now() < end, "never degraded");
            std::thread::sleep(Duration::from_millis(20));
        }
        let h = telemetry_health(Some(&t));
        assert!(
            h["reason"].as_str().is_some_and(|r| r.contains("No space")),
            "{h}"
        );
        assert!(h["dropped"].as_u64().is_some_and(|n| n >= 1), "{h}");
        t.stop();
        assert!(th.join().is_ok_and(|r| r.is_ok()));
    }

    #[test]
    fn the_governor_counts_as_hung_once_its_ticks_stop() {
        let platform = Platform::new(
            vec![Opp {
                khz: 1_000_000,
                millivolts: 900,
            }],
            2,
            2.0,
            1.0,
        )
        .expect("platform")
        .with_freq_writable(false)
        .with_threads_adjustable(false)
        .with_fan(None);
        let cfg = GovernorConfig::builder(platform, 80.0)
            .build()
            .expect("config");
        let source = |now: Duration| SourceReading {
            temp: TempReading::fresh(50.0, now),
            power_w: Some(3.0),
        };
        let (handle, mut driver) = GovernorRunner::new(
            Box::new(Governor::new(cfg)),
            Permits::new(2),
            Box::new(source),
        )
        .build()
        .expect("runner");
        let fresh = Freshness::new(handle, Duration::from_millis(60));
        driver.tick(Duration::from_millis(1));
        assert!(fresh.healthy(), "just ticked");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!fresh.healthy(), "no tick for 100 ms with a 60 ms bound");
        driver.tick(Duration::from_millis(200));
        assert!(fresh.healthy(), "ticking again");
        drop(driver);
        assert!(!fresh.healthy(), "a stopped driver is not healthy");
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret(b"abcdefgh", b"abcdefgh"));
        assert!(!same_secret(b"abcdefgh", b"abcdefgx"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
