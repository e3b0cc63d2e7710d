//! LoRA adapters in the service: the served model lives in a [`ModelSlot`] that every request
//! reads once, when it is admitted, so an answer runs to its end on the model it started with
//! while later requests get whatever the slot holds then. A swap (`POST /v1/adapter`,
//! `DELETE /v1/adapter`) loads the new model on a blocking thread while the old one keeps
//! serving, and installs it only when it loaded; a folder that is missing, outside the
//! configured adapters folder, or does not fit the model leaves the slot unchanged. Swaps are
//! serialised: one at a time. A swapped-in adapter's files are opened beneath the adapters
//! folder without following symlinks and read through those handles, so a folder swapped
//! for a symlink while the swap runs cannot lead outside. The adapter is applied by
//! `train::serve::load_adapted_with`; this module only decides where it comes from, when it
//! is installed and how it is reported.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::api::ApiError;
use crate::engine::model::LoadedModel;
use crate::train::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraAdapter};
use crate::train::serve::{ServeMode, load_adapted, load_adapted_with};

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

/// Largest `adapter_config.json` read, bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `adapter_model.safetensors` read, bytes.
pub const MAX_WEIGHTS_BYTES: u64 = 2 << 30;

/// An adapter folder opened for a swap: where it is, how it is reported, and its two files'
/// bytes, read through the handles that were checked (never re-opened by path).
#[derive(Debug)]
pub struct OpenedAdapter {
    /// The folder (canonical root joined with the checked relative path).
    pub path: PathBuf,
    /// How clients see it: the path under the adapters folder, or the folder's name.
    pub name: String,
    /// `adapter_config.json`.
    pub config: Vec<u8>,
    /// `adapter_model.safetensors`.
    pub weights: Vec<u8>,
}

/// Opens the folder a swap request names and reads its adapter files. With `adapters_dir`
/// the folder is resolved beneath it one component at a time without following any symlink
/// (a symlinked folder or file is refused as outside, also one swapped in while this runs);
/// relative paths are taken from it and `..` is refused. Without it, the path as given.
pub fn open_adapter(
    adapters_dir: Option<&Path>,
    requested: &Path,
) -> Result<OpenedAdapter, SwapError> {
    let Some(root) = adapters_dir else {
        let path = std::fs::canonicalize(requested)
            .map_err(|_| SwapError::NotFound(requested.to_path_buf()))?;
        let dir = open_dir(&path, true).map_err(|_| SwapError::NotFound(requested.into()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        return read_files(&dir, requested, path, name, true);
    };
    // Refused before touching the file system, so a 404 says nothing about the outside.
    let escapes = requested
        .components()
        .any(|c| matches!(c, Component::ParentDir));
    if escapes || (requested.is_absolute() && !requested.starts_with(root)) {
        return Err(SwapError::Outside(requested.to_path_buf()));
    }
    let rel = requested.strip_prefix(root).unwrap_or(requested);
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        return Err(SwapError::NotFound(requested.to_path_buf()));
    }
    let canonical_root =
        std::fs::canonicalize(root).map_err(|_| SwapError::NotFound(requested.to_path_buf()))?;
    let mut dir =
        open_dir(&canonical_root, true).map_err(|_| SwapError::NotFound(requested.into()))?;
    let mut path = canonical_root;
    for part in &parts {
        dir = open_beneath(&dir, part, true).map_err(|e| refusal(e, requested))?;
        path.push(part);
    }
    let name = parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    read_files(&dir, requested, path, name, false)
}

/// How an `openat` failure under the adapters folder is answered: a symlink is outside.
fn refusal(e: rustix::io::Errno, requested: &Path) -> SwapError {
    if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
        SwapError::Outside(requested.to_path_buf())
    } else {
        SwapError::NotFound(requested.to_path_buf())
    }
}

fn open_dir(path: &Path, follow: bool) -> rustix::io::Result<rustix::fd::OwnedFd> {
    rustix::fs::open(path, dir_flags(follow), rustix::fs::Mode::empty())
}

fn dir_flags(follow: bool) -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if follow {
        flags
    } else {
        flags | OFlags::NOFOLLOW
    }
}

/// Opens `name` in the directory `dir`, as a directory when `is_dir`; never follows a
/// symlink in the last component, and a FIFO does not block the open.
fn open_beneath(
    dir: &rustix::fd::OwnedFd,
    name: &std::ffi::OsStr,
    is_dir: bool,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::OFlags;
    let flags = if is_dir {
        dir_flags(false)
    } else {
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK
    };
    rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty())
}

/// Reads the adapter's two files from the opened folder `dir` (following symlinks only when
/// `follow`), each a regular file within its size bound.
fn read_files(
    dir: &rustix::fd::OwnedFd,
    requested: &Path,
    path: PathBuf,
    name: String,
    follow: bool,
) -> Result<OpenedAdapter, SwapError> {
    let invalid = |message: String| SwapError::Invalid {
        path: requested.to_path_buf(),
        message,
    };
    let read = |file: &str, limit: u64| -> Result<Vec<u8>, SwapError> {
        use rustix::fs::OFlags;
        let opened = if follow {
            let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
            rustix::fs::openat(dir, file, flags, rustix::fs::Mode::empty())
        } else {
            open_beneath(dir, std::ffi::OsStr::new(file), false)
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if !follow && e == rustix::io::Errno::LOOP => {
                return Err(SwapError::Outside(requested.join(file)));
            }
            Err(rustix::io::Errno::NOENT) => {
                return Err(invalid(format!(
                    "it has no {file}; is it a folder from `thermo train`?"
                )));
            }
            Err(e) => return Err(invalid(format!("cannot open {file}: {e}"))),
        };
        let file_handle = std::fs::File::from(fd);
        let meta = file_handle
            .metadata()
            .map_err(|e| invalid(format!("cannot read {file}: {e}")))?;
        if !meta.is_file() {
            return Err(invalid(format!("{file} is not a regular file")));
        }
        if meta.len() > limit {
            return Err(invalid(format!(
                "{file} has {} bytes; at most {limit} are read",
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&file_handle, limit + 1),
            &mut bytes,
        )
        .map_err(|e| invalid(format!("cannot read {file}: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(invalid(format!(
                "{file} grew beyond {limit} bytes while read"
            )));
        }
        Ok(bytes)
    };
    let config = read(ADAPTER_CONFIG, MAX_CONFIG_BYTES)?;
    let weights = read(ADAPTER_WEIGHTS, MAX_WEIGHTS_BYTES)?;
    Ok(OpenedAdapter {
        path,
        name,
        config,
        weights,
    })
}

/// Loads the model folder `base_dir` with the adapter `opened` applied, from its bytes.
pub fn load_opened(base_dir: &Path, opened: OpenedAdapter) -> Result<Served> {
    let t = Instant::now();
    let OpenedAdapter {
        path,
        name,
        config,
        weights,
    } = opened;
    let (model, mode) = load_adapted_with(base_dir, None, |model| {
        LoraAdapter::from_peft_bytes(&config, &weights, &path, model)
    })
    .with_context(|| format!("applying the adapter in {}", path.display()))?;
    Ok(Served {
        model,
        adapter: Some(AdapterInfo {
            name,
            path,
            mode,
            load_s: t.elapsed().as_secs_f64(),
        }),
    })
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
    on_served: Option<ServedHook>,
}

/// Told of the folder of every adapter the slot starts serving (the eco ledger's
/// never-served count).
pub struct ServedHook(pub Box<dyn Fn(&Path) + Send + Sync>);

impl std::fmt::Debug for ServedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServedHook")
    }
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
            on_served: None,
        }
    }

    /// The same slot, telling `hook` of every swap and refusal.
    pub fn with_on_swap(mut self, hook: Option<SwapHook>) -> Self {
        self.on_swap = hook;
        self
    }

    /// The same, telling `hook` the folder of every adapter it starts serving, the one it
    /// starts with included.
    pub fn with_on_served(self, hook: ServedHook) -> Self {
        if let Some(a) = &self.current().adapter {
            (hook.0)(&a.path);
        }
        ModelSlot {
            on_served: Some(hook),
            ..self
        }
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
                if let (Some(hook), Some(a)) = (&self.on_served, &now.adapter) {
                    (hook.0)(&a.path);
                }
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
                // Opened and read before the base weights are, which takes seconds on a board.
                let opened = open_adapter(self.adapters_dir.as_deref(), p)?;
                load_opened(&self.base_dir, opened).map_err(|e| SwapError::Invalid {
                    path: p.to_path_buf(),
                    message: format!("{e:#}"),
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

    /// Writes stand-in adapter files whose bytes say `tag`.
    fn fake_adapter(dir: &Path, tag: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(ADAPTER_CONFIG), tag).expect("config");
        std::fs::write(dir.join(ADAPTER_WEIGHTS), tag).expect("weights");
    }

    #[test]
    fn adapters_outside_the_adapters_folder_are_refused_also_through_symlinks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("adapters");
        fake_adapter(&root.join("team/support-v2"), "inside");
        fake_adapter(&tmp.path().join("secret"), "outside");
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("link")).expect("link");
        std::fs::create_dir(root.join("team/deep")).expect("mkdir");
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("team/deep/link"))
            .expect("nested link");
        let r = Some(root.as_path());
        let opened = open_adapter(r, Path::new("team/support-v2")).expect("inside");
        assert_eq!(opened.name, "team/support-v2");
        assert!(opened.path.ends_with("adapters/team/support-v2"));
        assert_eq!(opened.config, b"inside");
        let opened = open_adapter(r, &root.join("team/support-v2")).expect("absolute inside");
        assert_eq!(opened.name, "team/support-v2");
        for (asked, status) in [
            (PathBuf::from("../secret"), 403),
            (PathBuf::from("team/../../secret"), 403),
            (tmp.path().join("secret"), 403),
            (PathBuf::from("link"), 403),
            (PathBuf::from("team/deep/link"), 403),
            (PathBuf::from("missing"), 404),
            (PathBuf::from("."), 404),
        ] {
            let e = open_adapter(r, &asked).expect_err("refused");
            assert_eq!(e.status(), status, "{asked:?}: {e}");
        }
        let opened = open_adapter(None, &tmp.path().join("secret")).expect("unconfined");
        assert_eq!(opened.name, "secret");
        let e = open_adapter(None, &tmp.path().join("nothing")).expect_err("missing");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn refuses_a_symlinked_adapter_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("adapters");
        let outside = tmp.path().join("outside");
        fake_adapter(&outside, "outside");
        std::fs::create_dir_all(root.join("filelink")).expect("mkdir");
        for f in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
            std::os::unix::fs::symlink(outside.join(f), root.join("filelink").join(f))
                .expect("file link");
        }
        let e = open_adapter(Some(&root), Path::new("filelink")).expect_err("file symlinks");
        assert_eq!(e.status(), 403, "{e}");
        // Only the weights linked: refused as well.
        fake_adapter(&root.join("half"), "inside");
        std::fs::remove_file(root.join("half").join(ADAPTER_WEIGHTS)).expect("rm");
        std::os::unix::fs::symlink(
            outside.join(ADAPTER_WEIGHTS),
            root.join("half").join(ADAPTER_WEIGHTS),
        )
        .expect("weights link");
        let e = open_adapter(Some(&root), Path::new("half")).expect_err("weights symlink");
        assert_eq!(e.status(), 403, "{e}");
        // A FIFO in place of a file is refused, without blocking.
        fake_adapter(&root.join("fifo"), "inside");
        std::fs::remove_file(root.join("fifo").join(ADAPTER_CONFIG)).expect("rm");
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo").join(ADAPTER_CONFIG))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if made {
            let e = open_adapter(Some(&root), Path::new("fifo")).expect_err("fifo");
            assert_eq!(e.status(), 422, "{e}");
        }
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_while_it_is_opened_never_yields_the_outside_files() {
        use std::sync::atomic::AtomicBool;
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("adapters");
        fake_adapter(&root.join("race"), "inside");
        fake_adapter(&tmp.path().join("outside"), "outside");
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("spare"))
            .expect("spare link");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, root) = (stop.clone(), root.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                // race <-> spare through a third name, as fast as it goes.
                while !stop.load(Ordering::Relaxed) {
                    let ok = std::fs::rename(root.join("race"), root.join("tmp")).is_ok()
                        && std::fs::rename(root.join("spare"), root.join("race")).is_ok()
                        && std::fs::rename(root.join("tmp"), root.join("spare")).is_ok();
                    swaps += u64::from(ok);
                }
                swaps
            })
        };
        let t = Instant::now();
        let (mut inside, mut refused, mut outside) = (0u64, 0u64, 0u64);
        while t.elapsed() < std::time::Duration::from_secs(3) {
            match open_adapter(Some(&root), Path::new("race")) {
                Ok(a) if a.config == b"inside" && a.weights == b"inside" => inside += 1,
                Ok(_) => outside += 1,
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().expect("swapper");
        assert_eq!(
            outside, 0,
            "outside files read ({inside} inside, {refused} refused)"
        );
        assert!(
            swaps > 0 && inside > 0 && refused > 0,
            "{swaps} swaps, {inside}/{refused}"
        );
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
