//! Service mode (`thermo serve`): an OpenAI-compatible HTTP API over one loaded model, every
//! token under the thermal governor. This module owns the service's lifecycle — load the
//! model once, start one governor, spawn the worker threads that run the blocking engine,
//! serve HTTP on tokio, tell systemd (READY, STATUS, WATCHDOG while the governor ticks,
//! STOPPING), and shut down on SIGTERM/SIGINT: stop admitting, give in-flight answers a
//! bounded grace, cancel the rest, then stop the governor, which restores what it changed.
//! `api` is the wire format, `queue` admission and fairness, `worker` the token loop,
//! `metrics` the Prometheus page, `accounting` the per-request eco footprint, `adapter` the
//! slot holding the served model and its LoRA adapter swaps, `rag` the document index and
//! the sentence encoder (retrieval for chat, `/v1/embeddings`).

pub mod accounting;
pub mod adapter;
pub mod api;
pub mod conn;
pub mod fleet;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod rag;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use sensor_drivers::linux::SysRoot;

use crate::config::{Config, SetpointMode};
use crate::eco::Footprint as EcoFootprint;
use crate::engine::generate::GenerationStats;
use crate::engine::set_compute_threads;
use crate::sensing::Source;
use crate::session::governed::{EcoSetpointOptions, Governed, GovernorOptions};
use crate::session::model::resolve_model;
use crate::session::telemetry::Session;
use accounting::EcoAccounting;
use http::{App, Freshness};
use metrics::Metrics;
use queue::Scheduler;
use worker::{Job, WorkerContext};

/// Extra time after the shutdown grace for cancelled answers to end before the server stops
/// waiting for their connections.
const CANCEL_DRAIN: Duration = Duration::from_secs(3);

/// The model folder `config` names (the default model fetched on first use) and its id.
pub fn resolve(config: &Config) -> Result<(std::path::PathBuf, String)> {
    let dir = resolve_model(config.model.dir.as_deref(), &config.model.format)?;
    let id = match &config.model.id {
        Some(id) => id.clone(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("cannot name the model folder {}", dir.display()))?,
    };
    Ok((dir, id))
}

/// Thermal zone index by type under `root` (empty when there is no thermal class).
fn zone_index(root: &Path) -> Vec<(String, u32)> {
    SysRoot::new(root)
        .thermal_zones()
        .zones()
        .map(|zones| {
            zones
                .iter()
                .map(|z| (z.kind().to_owned(), z.index()))
                .collect()
        })
        .unwrap_or_default()
}

/// The eco accounting `config` asks for: its factors, and the `emissions.csv` (the cache's
/// unless `eco.emissions_csv` names one; none when `eco.write_emissions_csv` is off).
pub fn eco_accounting(config: &Config) -> Result<EcoAccounting> {
    let factors = config.eco.factors()?;
    let csv = crate::session::accounting::emissions_csv_path(&config.eco)?;
    let ledger = crate::eco::ledger::Ledger::new(
        crate::models::cache_root()?.join(crate::eco::ledger::LEDGER_FILE),
    );
    Ok(EcoAccounting::new(factors, csv)
        .with_ledger(ledger)
        .with_upstream(crate::eco::layers::UpstreamSettings::from(&config.eco)))
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(config: &Config) -> Result<()> {
    run_with_fleet(config, None)
}

/// [`run`], also answering requests from the fleet's work queue with `fleet` (see
/// [`fleet`]).
pub fn run_with_fleet(config: &Config, fleet: Option<fleet::FleetOptions>) -> Result<()> {
    let eco = Arc::new(eco_accounting(config)?);
    let addr: SocketAddr = config.service.listen_addr().with_context(|| {
        format!(
            "service.listen {:?} is not ADDRESS:PORT",
            config.service.listen
        )
    })?;
    set_compute_threads(config.model.threads);
    let (dir, model_id) = resolve(config)?;
    let served = load(config, &dir)?;
    let governed = Arc::new(Governed::start_with(
        &config.sensors,
        &GovernorOptions {
            setpoint_c: config.governor.setpoint_c,
            eco_setpoint: match config.governor.setpoint {
                SetpointMode::Auto => Some(EcoSetpointOptions {
                    weights: config.eco.factors()?.eco_weights(),
                    max_itl_ms: config.governor.eco_max_itl_ms,
                }),
                SetpointMode::Fixed => None,
            },
            eco_max_itl_ms: config.governor.eco_max_itl_ms,
            ..GovernorOptions::default()
        },
        config.model.threads,
    )?);
    let telemetry = Session::start(&config.telemetry, Some(governed.probe()))?.map(Arc::new);
    let on_swap = telemetry.clone().map(|t| {
        adapter::SwapHook(Box::new(move |event: &str, detail: &str| {
            t.event(event, detail)
        }))
    });
    let slot = Arc::new(
        adapter::ModelSlot::new(dir, config.model.adapters_dir.clone(), served)
            .with_on_swap(on_swap)
            .with_on_served(adapter::ServedHook(Box::new(
                crate::session::accounting::note_adapter_served,
            ))),
    );
    let on_done = telemetry.clone().map(|t| done_hook(t, eco.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("thermo-http")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(serve(
        config,
        addr,
        slot,
        model_id,
        governed.clone(),
        eco,
        on_done,
        telemetry.as_ref().map(|t| t.handle().clone()),
        fleet,
        shutdown_signal(),
    ));
    runtime.shutdown_timeout(Duration::from_secs(1));
    stop_after_serving(telemetry, governed);
    served
}

/// Loads the model in `dir` with the adapter `[model]` names, if any.
fn load(config: &Config, dir: &Path) -> Result<adapter::Served> {
    notify::status(&format!("loading {}", dir.display()));
    let t = std::time::Instant::now();
    let adapter = match config.model.adapter.as_deref() {
        Some(a) => {
            let path = std::fs::canonicalize(a)
                .with_context(|| format!("no adapter folder at {}", a.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            Some((path, name))
        }
        None => None,
    };
    let served =
        adapter::load_served(dir, adapter.as_ref().map(|(p, n)| (p.as_path(), n.clone())))?;
    match &served.adapter {
        Some(a) => log::info!(
            "loaded {} with the adapter {} ({:?}) in {:.2} s",
            dir.display(),
            a.path.display(),
            a.mode,
            t.elapsed().as_secs_f64()
        ),
        None => log::info!(
            "loaded {} in {:.2} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        ),
    }
    Ok(served)
}

/// Records every finished request in telemetry, with its footprint and today's totals.
fn done_hook(t: Arc<Session>, eco: Arc<EcoAccounting>) -> worker::DoneHook {
    Arc::new(
        move |stats: &GenerationStats,
              wall: Duration,
              fp: Option<&EcoFootprint>,
              layers: &crate::eco::layers::Layers| {
            // Without a footprint no energy is attributed to the request (0 J since now).
            let today = fp.and_then(|_| eco.today());
            t.request_done(stats, wall, t.energy_j(), fp, today.as_ref(), Some(layers));
        },
    )
}

/// After the server stopped: flushes telemetry (the backlog, then a clean `offline`) while
/// the governor still runs, then stops the control loop, which restores every actuator it
/// changed.
fn stop_after_serving(telemetry: Option<Arc<Session>>, governed: Arc<Governed>) {
    match telemetry.map(Arc::try_unwrap) {
        Some(Ok(t)) => {
            t.finish();
            log::info!("telemetry flushed");
        }
        Some(Err(_)) => log::warn!("telemetry still in use at shutdown; not flushed"),
        None => {}
    }
    match Arc::try_unwrap(governed) {
        Ok(g) => log::info!("governor stopped: {}", g.finish().line()),
        Err(g) => {
            g.handle().stop();
            log::info!("governor stopping: {}", g.status().line());
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => log::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
                }
            }
            Err(e) => {
                log::warn!("cannot watch SIGTERM ({e}); only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        log::info!("interrupt: shutting down");
    }
}

/// Serves the model in `slot` on `addr` until `shutdown` resolves, then drains within the
/// configured grace. The governor must already run; the caller stops it afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    config: &Config,
    addr: SocketAddr,
    slot: Arc<adapter::ModelSlot>,
    model_id: String,
    governed: Arc<Governed>,
    eco: Arc<EcoAccounting>,
    on_done: Option<worker::DoneHook>,
    telemetry: Option<crate::telemetry::Telemetry>,
    fleet: Option<fleet::FleetOptions>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let svc = &config.service;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let scheduler = Arc::new(Scheduler::<Job>::new(svc.workers, svc.queue_bound));
    let metrics = Arc::new(Metrics::default());
    let cancel_all = Arc::new(AtomicBool::new(false));
    let ctx = WorkerContext {
        permits: governed.permits().clone(),
        governor: governed.handle().clone(),
        metrics: metrics.clone(),
        eco: eco.clone(),
        meter: governed.meter().clone(),
        guard: config.eco.guard_config(),
        on_done,
        cancel_all: cancel_all.clone(),
        active: Arc::new(AtomicUsize::new(0)),
        scheduler: scheduler.clone(),
    };
    let workers = spawn_workers(&ctx, svc.workers)?;
    let app = Arc::new(build_app(
        config,
        local,
        &model_id,
        slot.clone(),
        &governed,
        &ctx,
        telemetry,
    ));
    let freshness = app.freshness.clone();
    let adapter_note = slot
        .current()
        .adapter_name()
        .map(|a| format!(" with adapter {a}"))
        .unwrap_or_default();
    let status_line = format!(
        "serving {model_id}{adapter_note} on {local} ({} worker(s), queue {}); governor: {}",
        svc.workers,
        svc.queue_bound,
        governed.source()
    );
    log::info!("{status_line}");
    notify::ready(&status_line);
    let watchdog = notify::watchdog_interval().map(|every| {
        tokio::spawn(notify::pet_while_healthy(
            every,
            freshness.clone(),
            scheduler.clone(),
            metrics.clone(),
        ))
    });
    let stop_rx = relay_stop(shutdown);
    let fleet_task = match fleet {
        Some(opts) => {
            let (client, event_loop) =
                fleet::link(&opts, &app.model_id).context("the fleet's broker")?;
            Some(tokio::spawn(fleet::run(
                app.clone(),
                opts,
                client,
                event_loop,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let grace = Duration::from_secs_f64(svc.shutdown_grace_s);
    let drained = spawn_drain(
        stop_rx.clone(),
        scheduler.clone(),
        cancel_all.clone(),
        grace,
    );
    let served = serve_connections(listener, http::router(app), svc, stop_rx, grace).await;
    if let Some(t) = fleet_task {
        let _ = tokio::time::timeout(grace + Duration::from_secs(3), t).await;
    }
    wind_down(&ctx, drained, watchdog, workers).await;
    served
}

/// The HTTP application: the model, the limits and token of `[service]`, the queue and
/// counters the workers share (`ctx`), the governor's freshness and sensors, the eco
/// accounting and the host and origin policy for `local`.
fn build_app(
    config: &Config,
    local: SocketAddr,
    model_id: &str,
    slot: Arc<adapter::ModelSlot>,
    governed: &Arc<Governed>,
    ctx: &WorkerContext,
    telemetry: Option<crate::telemetry::Telemetry>,
) -> App {
    let svc = &config.service;
    let simulated = matches!(governed.source(), Source::Simulated { .. });
    let snap_gov = governed.clone();
    App {
        model_id: model_id.to_string(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        slot,
        limits: api::Limits {
            max_tokens_limit: svc.max_tokens_limit,
            default_max_tokens: svc.default_max_tokens,
            max_prompt_tokens: svc.max_prompt_tokens,
        },
        api_token: svc.api_token.clone(),
        max_body_bytes: svc.max_body_bytes,
        scheduler: ctx.scheduler.clone(),
        metrics: ctx.metrics.clone(),
        freshness: Arc::new(Freshness::new(
            governed.handle().clone(),
            Duration::from_secs_f64(config.governor.stale_after_s),
        )),
        snapshot: Arc::new(move || snap_gov.latest_snapshot()),
        zone_index: if simulated {
            vec![]
        } else {
            zone_index(&config.sensors.root)
        },
        simulated,
        serial: AtomicU64::new(0),
        agent_loop: config.eco.agent_loop().map(http::AgentLoop::new),
        eco: Some(ctx.eco.clone()),
        telemetry,
        knowledge: Some(Arc::new(rag::Knowledge::new(
            config.rag.clone(),
            ctx.meter.clone(),
        ))),
        policy: guard::Policy::new(
            local,
            &svc.allowed_hosts,
            &svc.allowed_origins,
            svc.api_token.is_some(),
            svc.admin_without_token,
        ),
    }
}

/// After the server stopped: cancels what still runs, closes the queue, stops the drain
/// and watchdog tasks and joins the workers.
async fn wind_down(
    ctx: &WorkerContext,
    drained: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
) {
    ctx.cancel_all.store(true, Ordering::Release);
    ctx.scheduler.close();
    drained.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    if joined.is_err() {
        log::error!("a worker thread panicked");
    }
    log::info!(
        "stopped after {} generated tokens",
        ctx.metrics.tokens_predicted()
    );
}

/// Starts `n` worker threads running the token loop on `ctx`.
fn spawn_workers(ctx: &WorkerContext, n: usize) -> Result<Vec<std::thread::JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("thermo-worker-{i}"))
                .spawn(move || worker::work(ctx))
                .context("spawning a worker thread")
        })
        .collect()
}

/// A receiver that turns true once `shutdown` resolves (after telling systemd STOPPING).
fn relay_stop(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        // Before anything else reacts: the server may finish (and abort the drain task)
        // as soon as the stop is seen.
        notify::stopping();
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Once the stop is seen: refuses the waiting requests (503), gives the running ones
/// `grace`, then cancels what still runs.
fn spawn_drain(
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
    scheduler: Arc<Scheduler<Job>>,
    cancel_all: Arc<AtomicBool>,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
        let refused = scheduler.close();
        if !refused.is_empty() {
            log::info!("refused {} waiting request(s)", refused.len());
        }
        drop(refused);
        let sched = scheduler.clone();
        let idle = tokio::task::spawn_blocking(move || sched.wait_idle(grace))
            .await
            .unwrap_or(false);
        if !idle {
            log::warn!(
                "in-flight generations still running after {:.1} s; cancelling them",
                grace.as_secs_f64()
            );
            cancel_all.store(true, Ordering::Release);
        }
    })
}

/// Serves connections on `listener` until the stop, closing those still open `grace` plus
/// [`CANCEL_DRAIN`] after it.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    svc: &crate::config::ServiceConfig,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> Result<()> {
    let limits = conn::ConnLimits {
        header_timeout: Duration::from_secs_f64(svc.header_timeout_s),
        idle_timeout: Duration::from_secs_f64(svc.idle_timeout_s),
        max_connections: svc.connection_cap(),
    };
    log::info!(
        "connections: at most {}, headers within {:.1} s, idle for {:.1} s",
        limits.max_connections,
        svc.header_timeout_s,
        svc.idle_timeout_s
    );
    let server = conn::serve(listener, router, limits, stop_rx.clone());
    let mut deadline_rx = stop_rx;
    let deadline = async move {
        let _ = deadline_rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace + CANCEL_DRAIN).await;
    };
    tokio::select! {
        () = server => {}
        () = deadline => {
            log::warn!("connections still open after the shutdown grace; closing them");
        }
    }
    Ok(())
}
