//! Serving a trained adapter in the engine: the model folder's graph is written again from
//! its source weights with the adapter applied, then loaded by the engine like any model.
//! An f32 folder gets the update merged into its weights (`W + scale·B·A`, exact); a 4-bit
//! folder keeps its blocks untouched and gets the update as a low-rank side branch in the
//! graph (`y += scale·(x·Aᵀ)·Bᵀ`), so requantization never drowns the update.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::lora::LoraAdapter;
use super::source;
use crate::engine::WeightFormat;
use crate::engine::import::IMPORT_MARKER;
use crate::engine::model::LoadedModel;
use crate::engine::onnx_export::{LowRank, write_onnx_with};

/// How the adapter reaches the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeMode {
    /// Added into dequantized f32 weights.
    Merged,
    /// A low-rank branch beside the unchanged (4-bit) weights.
    SideBranch,
}

/// Weight format of an imported model folder (from its import marker; f32 when absent).
pub fn folder_format(dir: &Path) -> WeightFormat {
    let marker = std::fs::read_to_string(dir.join(IMPORT_MARKER)).unwrap_or_default();
    if marker.contains("\"Q4\"") {
        WeightFormat::Q4
    } else if marker.contains("\"Ggml\"") {
        WeightFormat::Ggml
    } else {
        WeightFormat::F32
    }
}

/// A temporary model folder, removed on drop.
struct TempFolder(PathBuf);

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The adapter's updates as side branches keyed by base weight name.
pub fn side_branches(adapter: &LoraAdapter) -> Result<BTreeMap<String, LowRank>> {
    let mut out = BTreeMap::new();
    for (l, t) in adapter.keys() {
        let Some(p) = adapter.pair(l, t) else {
            continue;
        };
        out.insert(
            t.weight_name(l),
            LowRank {
                rank: adapter.config.rank,
                a: p.a.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                b: p.b.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                scale: p.scale as f32,
            },
        );
    }
    Ok(out)
}

/// Loads the model folder `model_dir` with the PEFT adapter in `adapter_dir` applied
/// (merged for f32 folders, as a side branch for 4-bit ones). `gguf` overrides where the
/// source weights are read from.
pub fn load_adapted(
    model_dir: &Path,
    adapter_dir: &Path,
    gguf: Option<&Path>,
) -> Result<(Arc<LoadedModel>, ServeMode)> {
    load_adapted_with(model_dir, gguf, |config| {
        LoraAdapter::load_peft(adapter_dir, config)
    })
}

/// Like [`load_adapted`], with the adapter built by `adapter` from the model's config (from
/// bytes already read, say), so that nothing is read from the adapter's folder again.
pub fn load_adapted_with(
    model_dir: &Path,
    gguf: Option<&Path>,
    adapter: impl FnOnce(&crate::engine::llama::LlamaConfig) -> Result<LoraAdapter>,
) -> Result<(Arc<LoadedModel>, ServeMode)> {
    let origin = source::locate(model_dir, gguf)?;
    let mut weights = source::load(&origin)?;
    let adapter = adapter(&weights.config)?;
    let format = folder_format(model_dir);
    let tmp = TempFolder(std::env::temp_dir().join(format!(
        "thermo-adapted-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )));
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
    for name in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let src = model_dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, tmp.0.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    let onnx = tmp.0.join("model.onnx");
    let mode = match format {
        WeightFormat::F32 => {
            adapter.merge_into(&mut weights)?;
            write_onnx_with(&weights, WeightFormat::F32, &BTreeMap::new(), &onnx)?;
            ServeMode::Merged
        }
        WeightFormat::Q4 | WeightFormat::Ggml => {
            write_onnx_with(&weights, format, &side_branches(&adapter)?, &onnx)?;
            ServeMode::SideBranch
        }
    };
    drop(weights);
    let model = LoadedModel::load(&tmp.0)?;
    Ok((model, mode))
}
