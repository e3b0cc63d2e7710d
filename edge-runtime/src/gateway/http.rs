//! The gateway's HTTP side: the OpenAI endpoints of `thermo serve` (chat and completions,
//! whole or streamed), `/v1/models`, `/healthz` and `/metrics`, behind the same host, origin
//! and token checks.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::boards::series;
use super::flight::{Delivery, Ending, FlightError};
use super::link::{publish, send_cancels};
use super::{Counters, Shared};
use crate::serve::accounting::ResponseFootprint;
use crate::serve::api::{
    ApiError, Endpoint, GenRequest, ResponseId, Usage, models_list, parse_chat, parse_completion,
};
use crate::serve::http::{check_bearer, error_response};
use crate::telemetry::work::{SAMPLING_FIELDS, WorkRequest};

/// The router.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let max_body_bytes = shared.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

async fn guard(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match shared
        .policy
        .check(req.method(), req.uri().path(), req.headers())
    {
        Ok(()) => next.run(req).await,
        Err(e) => shared.reject(&e),
    }
}

impl Shared {
    /// The error response, counted by outcome.
    fn reject(&self, e: &ApiError) -> Response {
        let c = &self.counters;
        self.count(match e.status {
            429 | 503 => &c.rejected,
            s if s >= 500 => &c.failed,
            _ => &c.invalid,
        });
        error_response(e)
    }
}

async fn not_found() -> Response {
    error_response(&ApiError {
        status: 404,
        ..ApiError::invalid(None, "No such endpoint.")
    })
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_bearer(shared.api_token.as_deref(), &headers) {
        return error_response(&e);
    }
    axum::Json(models_list(&shared.opts.model, shared.created)).into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let connected = shared.connected.load(Ordering::Relaxed);
    let (online, taking) = shared.books().boards.count(&shared.opts.model);
    let body = json!({
        "status": if connected { "ok" } else { "unhealthy" },
        "model": shared.opts.model,
        "broker": {"connected": connected},
        "boards": {"online": online, "taking_work": taking},
    });
    let code = if connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_bearer(shared.api_token.as_deref(), &headers) {
        return error_response(&e);
    }
    let mut out = String::new();
    let c = &shared.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    series(
        &mut out,
        "thermo_gateway_requests_total",
        "counter",
        "Requests by outcome",
        |s| {
            for (outcome, v) in [
                ("answered", n(&c.answered)),
                ("rejected", n(&c.rejected)),
                ("failed", n(&c.failed)),
                ("invalid", n(&c.invalid)),
            ] {
                let _ = writeln!(
                    s,
                    "thermo_gateway_requests_total{{outcome=\"{outcome}\"}} {v}"
                );
            }
        },
    );
    let books = shared.books();
    let (online, taking) = books.boards.count(&shared.opts.model);
    let singles: [(&str, &str, &str, f64); 8] = [
        (
            "thermo_gateway_requeued_total",
            "counter",
            "Requests put on the queue again after their board went offline or none accepted them",
            n(&c.requeued) as f64,
        ),
        (
            "thermo_gateway_in_flight",
            "gauge",
            "Requests on the queue or being answered",
            books.flights.len() as f64,
        ),
        (
            "thermo_gateway_broker_connected",
            "gauge",
            "1 while the link to the broker is up",
            f64::from(u8::from(shared.connected.load(Ordering::Relaxed))),
        ),
        (
            "thermo_gateway_boards_online",
            "gauge",
            "Boards of the model online",
            online as f64,
        ),
        (
            "thermo_gateway_boards_taking_work",
            "gauge",
            "Boards of the model taking requests",
            taking as f64,
        ),
        (
            "thermo_gateway_tokens_total",
            "counter",
            "Tokens of the answers completed",
            n(&c.tokens) as f64,
        ),
        (
            "thermo_gateway_energy_joules_total",
            "counter",
            "Energy of the answers completed, as the boards measured it",
            n(&c.energy_mj) as f64 / 1e3,
        ),
        (
            "thermo_gateway_co2e_grams_total",
            "counter",
            "Operational emissions of the answers completed, g CO2e",
            n(&c.co2e_ug) as f64 / 1e6,
        ),
    ];
    for (name, kind, help, v) in singles {
        series(&mut out, name, kind, help, |s| {
            let _ = writeln!(s, "{name} {v}");
        });
    }
    books.boards.render(&mut out);
    drop(books);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(shared, Endpoint::Chat, headers, body).await
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(shared, Endpoint::Completions, headers, body).await
}

/// Takes the request off the books when its handler or stream ends.
struct Booking {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Booking {
    fn drop(&mut self) {
        let mut books = self.shared.books();
        books.flights.remove(self.id);
        books.routes.remove(&self.id);
        send_cancels(&self.shared, &mut books);
    }
}

async fn handle(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match admit(&shared, endpoint, &headers, body).await {
        Ok((req, booking, rx, board)) => {
            let rid = ResponseId::new(
                endpoint,
                shared.serial.fetch_add(1, Ordering::Relaxed),
                unix_now(),
                &req.model,
            );
            let mut resp = if req.stream {
                stream(shared, booking, rx, rid, req.include_usage)
            } else {
                whole(shared, booking, rx, rid).await
            };
            if let Ok(v) = HeaderValue::from_str(&board) {
                resp.headers_mut().insert("x-thermo-board", v);
            }
            resp
        }
        Err(e) => shared.reject(&e),
    }
}

type Admitted = (GenRequest, Booking, mpsc::Receiver<Delivery>, String);

/// Checks the request, waits for a board with headroom, puts it on the queue and waits for
/// a board to accept it.
async fn admit(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Admitted, ApiError> {
    check_bearer(shared.api_token.as_deref(), headers)?;
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(shared.max_body_bytes)
        } else {
            ApiError::invalid(None, format!("The request body could not be read: {rej}"))
        }
    })?;
    let model = &shared.opts.model;
    let req = match endpoint {
        Endpoint::Chat => parse_chat(&body, model, &shared.limits)?,
        Endpoint::Completions => parse_completion(&body, model, &shared.limits)?,
    };
    let work = work_request(&body, &req)?;
    wait_for_board(shared).await?;
    let capacity = work.max_tokens as usize + 16;
    let (tx, mut rx) = mpsc::channel(capacity);
    let id = {
        let mut books = shared.books();
        let id = books
            .flights
            .insert(work.clone(), req.stream)
            .map_err(|FlightError::Full| busy(1))?;
        books.routes.insert(id, tx);
        id
    };
    let booking = Booking {
        shared: shared.clone(),
        id,
    };
    publish(shared, id, &work).map_err(unavailable)?;
    loop {
        match tokio::time::timeout(shared.opts.accept_timeout, rx.recv()).await {
            Ok(Some(Delivery::Accepted(board))) => return Ok((req, booking, rx, board)),
            Ok(Some(Delivery::Failed(m))) => return Err(unavailable(m)),
            Ok(Some(_)) => {}
            Ok(None) => return Err(unavailable("the request was dropped".into())),
            Err(_) => {
                let again = shared.books().flights.requeue_unaccepted(id);
                match again {
                    Some(r) => {
                        shared.count(&shared.counters.requeued);
                        publish(shared, id, &r).map_err(unavailable)?;
                    }
                    None => {
                        return Err(unavailable(format!(
                            "no board took the request within {:.0} s, twice",
                            shared.opts.accept_timeout.as_secs_f64()
                        )));
                    }
                }
            }
        }
    }
}

/// The queued request for a checked OpenAI body.
fn work_request(body: &[u8], req: &GenRequest) -> Result<WorkRequest, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("The request body is not JSON: {e}")))?;
    let sampling = SAMPLING_FIELDS
        .iter()
        .filter_map(|k| {
            v.get(*k)
                .filter(|x| !x.is_null())
                .map(|x| (k.to_string(), x.clone()))
        })
        .collect();
    let prompt = match (&req.endpoint, v.get("prompt")) {
        (Endpoint::Chat, _) => None,
        (Endpoint::Completions, Some(Value::String(p))) => Some(p.clone()),
        (Endpoint::Completions, Some(Value::Array(a))) => {
            a.first().and_then(Value::as_str).map(str::to_string)
        }
        (Endpoint::Completions, _) => None,
    };
    Ok(WorkRequest {
        messages: v.get("messages").cloned().unwrap_or(Value::Null),
        prompt,
        max_tokens: u32::try_from(req.options.max_tokens).unwrap_or(u32::MAX),
        sampling,
        requeued: false,
    })
}

/// Waits up to the bound for a board of the model that takes work.
async fn wait_for_board(shared: &Shared) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + shared.opts.max_wait;
    loop {
        let changed = shared.boards_changed.notified();
        let (online, taking) = shared.books().boards.count(&shared.opts.model);
        if taking > 0 {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            let wait = shared.opts.max_wait.as_secs().max(1);
            return Err(if online > 0 {
                ApiError {
                    message: format!(
                        "No board has thermal headroom for `{}` now ({online} online, all at \
                         their setpoint); retry after {wait} s (Retry-After).",
                        shared.opts.model
                    ),
                    code: Some("no_headroom"),
                    ..busy(wait)
                }
            } else {
                ApiError {
                    status: 503,
                    kind: "server_error",
                    message: format!("No board serving `{}` is online.", shared.opts.model),
                    code: Some("no_board"),
                    ..busy(wait)
                }
            });
        }
        let _ = tokio::time::timeout(left, changed).await;
    }
}

fn busy(retry_after_s: u64) -> ApiError {
    ApiError::queue_full(retry_after_s)
}

fn unavailable(message: String) -> ApiError {
    ApiError {
        status: 503,
        kind: "server_error",
        message,
        param: None,
        code: Some("fleet_unavailable"),
        retry_after_s: Some(5),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The next delivery, or a failure after the stall timeout.
async fn next(rx: &mut mpsc::Receiver<Delivery>, stall: Duration) -> Delivery {
    match tokio::time::timeout(stall, rx.recv()).await {
        Ok(Some(d)) => d,
        Ok(None) => Delivery::Failed("the answer was dropped".into()),
        Err(_) => Delivery::Failed(format!(
            "no part of the answer arrived for {:.0} s",
            stall.as_secs_f64()
        )),
    }
}

/// Counts a completed answer and returns its footprint for the response.
fn account(c: &Counters, e: &Ending) -> ResponseFootprint {
    c.answered.fetch_add(1, Ordering::Relaxed);
    c.tokens
        .fetch_add(u64::from(e.completion_tokens), Ordering::Relaxed);
    let figure = |k: &str, scale: f64| {
        e.footprint
            .as_ref()
            .and_then(|f| f.get(k))
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| (v * scale).min(u64::MAX as f64) as u64)
    };
    if let Some(mj) = figure("energy_j", 1e3) {
        c.energy_mj.fetch_add(mj, Ordering::Relaxed);
    }
    if let Some(ug) = figure("co2e_g", 1e6) {
        c.co2e_ug.fetch_add(ug, Ordering::Relaxed);
    }
    ResponseFootprint::default()
}

/// `v` with the board's footprint in place of the placeholder.
fn with_footprint(mut v: Value, e: &Ending) -> Value {
    if let Some(f) = &e.footprint {
        v["footprint"] = f.clone();
    }
    v["board"] = json!(e.board);
    v
}

async fn whole(
    shared: Arc<Shared>,
    booking: Booking,
    mut rx: mpsc::Receiver<Delivery>,
    rid: ResponseId,
) -> Response {
    let mut text = String::new();
    loop {
        match next(&mut rx, shared.opts.stall_timeout).await {
            Delivery::Text(t) => text.push_str(&t),
            Delivery::Restart => text.clear(),
            Delivery::Accepted(_) => {}
            Delivery::Done(e) => {
                drop(booking);
                let fp = account(&shared.counters, &e);
                let usage = Usage::new(e.prompt_tokens as usize, e.completion_tokens as usize);
                let body = rid.response(&text, &e.finish_reason, usage, &fp);
                return axum::Json(with_footprint(body, &e)).into_response();
            }
            Delivery::Failed(m) => {
                drop(booking);
                return shared.reject(&ApiError::internal(m));
            }
        }
    }
}

/// The answer as server-sent events, fed by a task that ends when the client goes away.
fn stream(
    shared: Arc<Shared>,
    booking: Booking,
    mut rx: mpsc::Receiver<Delivery>,
    rid: ResponseId,
    include_usage: bool,
) -> Response {
    let (out_tx, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let _booking = booking;
        let send = |v: Value| {
            let tx = out_tx.clone();
            async move {
                tx.send(Ok(SseEvent::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        let mut first = true;
        loop {
            match next(&mut rx, shared.opts.stall_timeout).await {
                Delivery::Text(t) => {
                    if !send(rid.text_chunk(&t, first)).await {
                        return;
                    }
                    first = false;
                }
                Delivery::Accepted(_) | Delivery::Restart => {}
                Delivery::Done(e) => {
                    if first {
                        send(rid.text_chunk("", true)).await;
                    }
                    let fp = account(&shared.counters, &e);
                    send(with_footprint(rid.final_chunk(&e.finish_reason, &fp), &e)).await;
                    if include_usage {
                        let usage =
                            Usage::new(e.prompt_tokens as usize, e.completion_tokens as usize);
                        send(with_footprint(rid.usage_chunk(usage, &fp), &e)).await;
                    }
                    break;
                }
                Delivery::Failed(m) => {
                    shared.count(&shared.counters.failed);
                    send(ApiError::internal(m).body()).await;
                    break;
                }
            }
        }
        let _ = out_tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out_rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
