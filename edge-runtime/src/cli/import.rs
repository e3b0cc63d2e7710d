//! `thermo import-gguf` and `thermo fetch-model`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::import::{import_gguf, is_current_import};
use edge_runtime::models::{DEFAULT_MODEL, cache_root, model_dir};
use edge_runtime::session::model::fetch_and_import;

/// Flags of `thermo import-gguf`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The GGUF file (Llama architecture).
    pub gguf: PathBuf,
    /// The model folder to create (must not exist, or be empty).
    pub out_dir: PathBuf,
    /// Weight storage: f32 (lossless), q4 (4-bit blocks kept exact) or ggml (GGUF blocks as
    /// stored, integer-dot products with int8 activations).
    #[arg(long, default_value = "ggml")]
    pub format: String,
}

/// Flags of `thermo fetch-model`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Weight format to import the default model in (f32, q4, ggml).
    #[arg(long, default_value = "ggml")]
    pub format: String,
}

/// `thermo import-gguf FILE OUT_DIR`.
pub fn import(args: ImportArgs) -> Result<()> {
    let format: WeightFormat = args.format.parse()?;
    let t = std::time::Instant::now();
    let report = import_gguf(&args.gguf, &args.out_dir, format)?;
    eprintln!(
        "imported {} parameters into {} ({:.1} MB graph and weights, {:?}) in {:.1} s",
        report.parameters,
        report.dir.display(),
        report.onnx_bytes as f64 / 1e6,
        format,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `thermo fetch-model`.
pub fn fetch(args: FetchArgs) -> Result<()> {
    let format: WeightFormat = args.format.parse()?;
    let root = cache_root()?;
    let dir = model_dir(&root, &DEFAULT_MODEL, &args.format);
    if is_current_import(&dir) {
        eprintln!(
            "{} is already imported at {}",
            DEFAULT_MODEL.name,
            dir.display()
        );
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fetch_and_import(&root, format, &dir)?;
    eprintln!("{}", dir.display());
    Ok(())
}
