//! LoRA adapters in the service: the served model lives in a [`ModelSlot`] that every request
//! reads once, when it is admitted, so an answer runs to its end on the model it started with
//! while later requests get whatever the slot holds then. A swap (`POST /v1/adapter`,
//! `DELETE /v1/adapter`) loads the new model on a blocking thread while the old one keeps
//! serving, and installs it only when it loaded; a folder that is missing, outside the
//! configured adapters folder, or does not fit the model leaves the slot unchanged. Swaps are
//! serialised: one at a time. The adapter is applied by `train::serve::load_adapted`; this
//! module only decides where it comes from, when it is installed and how it is reported.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::Instant;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::ApiError;
use super::http::{App, error_response};
use crate::engine::model::LoadedModel;
use crate::train::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::train::serve::{ServeMode, load_adapted};

/// The adapter applied to the served model.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    /// How clients see it: the folder's path under the adapters folder, or its name.
    pub name: String,
    /// The folder it was read from (canonical).
    pub path: PathBuf,
    /// Merged into the weights or run as a side branch.
    pub mode: ServeMode,
    /// Time it took to load, s.
    pub load_s: f64,
}

impl AdapterInfo {
    /// The `adapter` object of `GET /v1/adapter`.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "path": self.path.display().to_string(),
            "mode": match self.mode {
                ServeMode::Merged => "merged",
                ServeMode::SideBranch => "side_branch",
            },
            "load_s": self.load_s,
        })
    }
}

/// What a request runs on: the model and the adapter applied to it (`None`: the base model).
#[derive(Debug)]
pub struct Served {
    /// The model workers run and handlers tokenize with.
    pub model: Arc<LoadedModel>,
    /// The adapter in `model`.
    pub adapter: Option<AdapterInfo>,
}

impl Served {
    /// The adapter's name, `None` for the base model.
    pub fn adapter_name(&self) -> Option<&str> {
        self.adapter.as_ref().map(|a| a.name.as_str())
    }
}

/// Loads the model folder `base_dir`, with the PEFT adapter in `adapter` applied when given.
/// `name` is how the adapter is reported.
pub fn load_served(base_dir: &Path, adapter: Option<(&Path, String)>) -> Result<Served> {
    let t = Instant::now();
    match adapter {
        None => Ok(Served {
            model: LoadedModel::load(base_dir)?,
            adapter: None,
        }),
        Some((dir, name)) => {
            let (model, mode) = load_adapted(base_dir, dir, None)
                .with_context(|| format!("applying the adapter in {}", dir.display()))?;
            Ok(Served {
                model,
                adapter: Some(AdapterInfo {
                    name,
                    path: dir.to_path_buf(),
                    mode,
                    load_s: t.elapsed().as_secs_f64(),
                }),
            })
        }
    }
}

/// Why a swap was refused; the served model is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// Another swap is loading.
    #[error("another adapter swap is in progress; retry when it has finished")]
    Busy,
    /// The folder is not under the adapters folder.
    #[error("the adapter path {0:?} is outside the adapters folder")]
    Outside(PathBuf),
    /// There is no folder at the path.
    #[error("no adapter folder at {0:?}")]
    NotFound(PathBuf),
    /// The folder's files are not an adapter for this model.
    #[error("the adapter in {path:?} cannot be applied to this model: {message}")]
    Invalid {
        /// The folder.
        path: PathBuf,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The base model could not be loaded again.
    #[error("reloading the base model failed: {0}")]
    Base(String),
}

impl SwapError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            SwapError::Busy => 409,
            SwapError::Outside(_) => 403,
            SwapError::NotFound(_) => 404,
            SwapError::Invalid { .. } => 422,
            SwapError::Base(_) => 500,
        }
    }
}

/// The folder a swap request names and how it is reported: under `adapters_dir` when one is
/// configured (relative paths are taken from it, and no path may leave it, also not through
/// a symlink), else the path as given.
pub fn resolve(
    adapters_dir: Option<&Path>,
    requested: &Path,
) -> Result<(PathBuf, String), SwapError> {
    let Some(root) = adapters_dir else {
        let path = std::fs::canonicalize(requested)
            .map_err(|_| SwapError::NotFound(requested.to_path_buf()))?;
        if !path.is_dir() {
            return Err(SwapError::NotFound(requested.to_path_buf()));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        return Ok((path, name));
    };
    // Refused before touching the file system, so a 404 says nothing about the outside.
    let escapes = requested
        .components()
        .any(|c| matches!(c, Component::ParentDir));
    if escapes || (requested.is_absolute() && !requested.starts_with(root)) {
        return Err(SwapError::Outside(requested.to_path_buf()));
    }
    let root =
        std::fs::canonicalize(root).map_err(|_| SwapError::NotFound(requested.to_path_buf()))?;
    let path = std::fs::canonicalize(root.join(requested))
        .map_err(|_| SwapError::NotFound(requested.to_path_buf()))?;
    let Ok(rel) = path.strip_prefix(&root) else {
        return Err(SwapError::Outside(requested.to_path_buf()));
    };
    if rel.as_os_str().is_empty() || !path.is_dir() {
        return Err(SwapError::NotFound(requested.to_path_buf()));
    }
    let name = rel.display().to_string();
    Ok((path, name))
}

/// What a swap did: installed a new model, or found the asked-for base model served.
enum Changed {
    Yes(Arc<Served>),
    No(Arc<Served>),
}

/// The served model and the swaps done to it.
#[derive(Debug)]
pub struct ModelSlot {
    base_dir: PathBuf,
    adapters_dir: Option<PathBuf>,
    current: RwLock<Arc<Served>>,
    swapping: Mutex<()>,
    swaps: AtomicU64,
    failures: AtomicU64,
    on_swap: Option<SwapHook>,
}

/// Told of every swap and every refused swap: an event name (`adapter_swapped`,
/// `adapter_swap_refused`) and a sentence for people (the telemetry event stream).
pub struct SwapHook(pub Box<SwapFn>);

/// The function behind a [`SwapHook`]: event name, then detail.
pub type SwapFn = dyn Fn(&str, &str) + Send + Sync;

impl std::fmt::Debug for SwapHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwapHook")
    }
}

impl ModelSlot {
    /// A slot serving `initial`, built from the model folder `base_dir`. Adapters swapped in
    /// later must lie under `adapters_dir` when it is given.
    pub fn new(base_dir: PathBuf, adapters_dir: Option<PathBuf>, initial: Served) -> Self {
        ModelSlot {
            base_dir,
            adapters_dir,
            current: RwLock::new(Arc::new(initial)),
            swapping: Mutex::new(()),
            swaps: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            on_swap: None,
        }
    }

    /// The same slot, telling `hook` of every swap and refusal.
    pub fn with_on_swap(mut self, hook: Option<SwapHook>) -> Self {
        self.on_swap = hook;
        self
    }

    fn tell(&self, event: &str, detail: &str) {
        if let Some(hook) = &self.on_swap {
            (hook.0)(event, detail);
        }
    }

    /// What a request admitted now runs on.
    pub fn current(&self) -> Arc<Served> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps done so far.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// Swaps refused so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Loads the adapter `requested` names (`None`: the base model) and serves it from now on.
    /// Blocking: run it off the async threads. The old model serves until the new one has
    /// loaded, and keeps serving when it fails to. Asking for the base model while it is
    /// served changes nothing; asking for an adapter loads it again (its files may have been
    /// retrained).
    pub fn swap(&self, requested: Option<&Path>) -> Result<Arc<Served>, SwapError> {
        let result = self.swap_inner(requested);
        match &result {
            Ok(Changed::No(_)) => log::info!("adapter swap: the base model is served already"),
            Ok(Changed::Yes(now)) => {
                self.swaps.fetch_add(1, Ordering::Relaxed);
                let detail = match &now.adapter {
                    Some(a) => format!(
                        "now serving adapter {} from {} ({:?}, loaded in {:.2} s)",
                        a.name,
                        a.path.display(),
                        a.mode,
                        a.load_s
                    ),
                    None => "now serving the base model".to_string(),
                };
                log::info!("adapter swap: {detail}");
                self.tell("adapter_swapped", &detail);
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                log::warn!("adapter swap refused, the served model is unchanged: {e}");
                self.tell("adapter_swap_refused", &e.to_string());
            }
        }
        result.map(|c| match c {
            Changed::Yes(s) | Changed::No(s) => s,
        })
    }

    fn swap_inner(&self, requested: Option<&Path>) -> Result<Changed, SwapError> {
        let _one_at_a_time = match self.swapping.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(SwapError::Busy),
        };
        let served = match requested {
            // Already the base model: nothing to load, nothing to count.
            None if self.current().adapter.is_none() => return Ok(Changed::No(self.current())),
            None => {
                load_served(&self.base_dir, None).map_err(|e| SwapError::Base(format!("{e:#}")))?
            }
            Some(p) => {
                let (path, name) = resolve(self.adapters_dir.as_deref(), p)?;
                // Checked before the base weights are read, which takes seconds on a board.
                if let Some(f) = [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
                    .into_iter()
                    .find(|f| !path.join(f).is_file())
                {
                    return Err(SwapError::Invalid {
                        path: p.to_path_buf(),
                        message: format!("it has no {f}; is it a folder from `thermo train`?"),
                    });
                }
                load_served(&self.base_dir, Some((&path, name))).map_err(|e| {
                    SwapError::Invalid {
                        path: p.to_path_buf(),
                        message: format!("{e:#}"),
                    }
                })?
            }
        };
        let served = Arc::new(served);
        // Requests holding the old model keep it until they finish.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = served.clone();
        Ok(Changed::Yes(served))
    }

    /// The adapter's `/metrics` lines: which adapter is served (`adapter=""`: none), swaps
    /// done and refused.
    pub fn metrics_text(&self) -> String {
        let now = self.current();
        let name = now.adapter_name().unwrap_or("");
        format!(
            "# HELP thermo_adapter_info The LoRA adapter served (empty: the base model).\n\
             # TYPE thermo_adapter_info gauge\n\
             thermo_adapter_info{{adapter=\"{}\"}} 1\n\
             # HELP thermo_adapter_swaps_total Adapter swaps done since start.\n\
             # TYPE thermo_adapter_swaps_total counter\n\
             thermo_adapter_swaps_total {}\n\
             # HELP thermo_adapter_swap_failures_total Adapter swaps refused since start.\n\
             # TYPE thermo_adapter_swap_failures_total counter\n\
             thermo_adapter_swap_failures_total {}\n",
            super::metrics::escape(name),
            self.swaps(),
            self.failures()
        )
    }

    /// The body of `GET /v1/adapter` for the model `model_id`.
    pub fn status_json(&self, model_id: &str) -> Value {
        let now = self.current();
        json!({
            "object": "adapter",
            "model": model_id,
            "adapter": now.adapter.as_ref().map(AdapterInfo::to_json),
            "swaps": self.swaps(),
        })
    }
}

/// `GET /v1/adapter`: the adapter served now.
pub(super) async fn get_adapter(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    axum::Json(app.slot.status_json(&app.model_id)).into_response()
}

/// `DELETE /v1/adapter`: back to the base model.
pub(super) async fn delete_adapter(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorize(&headers) {
        return error_response(&e);
    }
    swap_response(app, None).await
}

/// `POST /v1/adapter` with `{"path": "DIR"}` (swap to that adapter) or `{"path": null}` (back
/// to the base model).
pub(super) async fn post_adapter(
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
    match parse_swap(&body) {
        Ok(path) => swap_response(app, path).await,
        Err(e) => error_response(&e),
    }
}

/// The folder a swap body names: `{"path": "DIR"}`, or `{"path": null}` for the base model.
pub fn parse_swap(body: &[u8]) -> Result<Option<PathBuf>, ApiError> {
    const SHAPE: &str = "The body must be {\"path\": \"DIR\"} or {\"path\": null}.";
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("The body is not JSON: {e}. {SHAPE}")))?;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::invalid(None, SHAPE));
    };
    if let Some(k) = obj.keys().find(|k| *k != "path") {
        return Err(ApiError::invalid(
            Some(k),
            format!("Unknown field `{k}`. {SHAPE}"),
        ));
    }
    match obj.get("path") {
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(PathBuf::from(s))),
        _ => Err(ApiError::invalid(Some("path"), SHAPE)),
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

    #[test]
    fn a_swap_while_another_loads_is_refused_and_a_failed_or_idle_one_changes_nothing() {
        use crate::engine::WeightFormat;
        use crate::engine::import::write_tiny_model;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("tiny");
        write_tiny_model(&dir, 7, WeightFormat::F32).expect("tiny model");
        let served = load_served(&dir, None).expect("base");
        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = told.clone();
        let slot = ModelSlot::new(dir, Some(tmp.path().to_path_buf()), served).with_on_swap(Some(
            SwapHook(Box::new(move |event: &str, detail: &str| {
                if let Ok(mut t) = sink.lock() {
                    t.push(format!("{event}: {detail}"));
                }
            })),
        ));
        let before = slot.current();
        {
            let _loading = slot.swapping.lock().expect("lock");
            let e = slot.swap(None).expect_err("busy");
            assert_eq!(e.status(), 409, "{e}");
        }
        std::fs::create_dir(tmp.path().join("empty")).expect("mkdir");
        let e = slot
            .swap(Some(Path::new("empty")))
            .expect_err("no adapter files");
        assert_eq!(e.status(), 422, "{e}");
        assert!(e.to_string().contains("has no adapter_config.json"), "{e}");
        assert!(
            Arc::ptr_eq(&before, &slot.current()),
            "the model was replaced"
        );
        assert_eq!((slot.swaps(), slot.failures()), (0, 2));
        let after = slot.swap(None).expect("the base model again");
        assert!(after.adapter.is_none());
        assert!(
            Arc::ptr_eq(&before, &slot.current()),
            "reloaded the served base"
        );
        assert_eq!(slot.swaps(), 0);
        assert!(
            slot.metrics_text()
                .contains("thermo_adapter_info{adapter=\"\"} 1\n")
        );
        // Both refusals reached the event hook; the no-op did not.
        let told = told.lock().expect("events").clone();
        assert_eq!(told.len(), 2, "{told:?}");
        assert!(told.iter().all(|t| t.starts_with("adapter_swap_refused: ")));
        assert!(told[1].contains("has no adapter_config.json"), "{told:?}");
    }

    #[test]
    fn a_swapped_out_model_is_released_once_its_last_request_ends() {
        use crate::engine::WeightFormat;
        use crate::engine::import::write_tiny_model;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("tiny");
        write_tiny_model(&dir, 7, WeightFormat::F32).expect("tiny model");
        let mut served = load_served(&dir, None).expect("base");
        // Labelled as adapted, so that asking for the base model loads it again.
        served.adapter = Some(AdapterInfo {
            name: "labelled".into(),
            path: dir.clone(),
            mode: ServeMode::Merged,
            load_s: 0.0,
        });
        let slot = ModelSlot::new(dir, None, served);
        let in_flight = slot.current().model.clone();
        assert_eq!(Arc::strong_count(&in_flight), 2, "the slot and the request");
        let now = slot.swap(None).expect("swap");
        assert!(now.adapter.is_none());
        assert!(!Arc::ptr_eq(&in_flight, &now.model));
        assert_eq!(
            Arc::strong_count(&in_flight),
            1,
            "only the request holds it"
        );
        assert!(
            slot.metrics_text()
                .contains("thermo_adapter_swaps_total 1\n")
        );
    }

    #[test]
    fn adapters_outside_the_adapters_folder_are_refused_also_through_symlinks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("adapters");
        std::fs::create_dir_all(root.join("team/support-v2")).expect("mkdir");
        std::fs::create_dir_all(tmp.path().join("secret")).expect("mkdir");
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("link")).expect("link");
        let r = Some(root.as_path());
        let (path, name) = resolve(r, Path::new("team/support-v2")).expect("inside");
        assert_eq!(name, "team/support-v2");
        assert!(path.ends_with("adapters/team/support-v2"));
        let (_, name) = resolve(r, &root.join("team/support-v2")).expect("absolute inside");
        assert_eq!(name, "team/support-v2");
        for (asked, status) in [
            (PathBuf::from("../secret"), 403),
            (PathBuf::from("team/../../secret"), 403),
            (tmp.path().join("secret"), 403),
            (PathBuf::from("link"), 403),
            (PathBuf::from("missing"), 404),
            (PathBuf::from("."), 404),
        ] {
            let e = resolve(r, &asked).expect_err("refused");
            assert_eq!(e.status(), status, "{asked:?}: {e}");
        }
        let (_, name) = resolve(None, &tmp.path().join("secret")).expect("unconfined");
        assert_eq!(name, "secret");
        let e = resolve(None, &tmp.path().join("nothing")).expect_err("missing");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn swap_bodies_name_a_folder_or_null_and_nothing_else() {
        assert_eq!(
            parse_swap(br#"{"path":"a/b"}"#).expect("path"),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(parse_swap(br#"{"path":null}"#).expect("null"), None);
        for bad in [
            &br#"{}"#[..],
            br#"{"path":""}"#,
            br#"{"path":7}"#,
            br#"{"path":"a","x":1}"#,
            br#"["a"]"#,
            b"not json",
        ] {
            let e = parse_swap(bad).expect_err("refused");
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(bad));
        }
    }
}
