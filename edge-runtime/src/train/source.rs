//! Where the base weights of a model folder come from. The engine's folder holds an ONNX
//! graph, which is not a convenient training source; the weights are read again from what the
//! folder was imported from: the GGUF named in its import marker (or given explicitly), the
//! default model's cached GGUF, or the seed of a tiny test model. Nothing is downloaded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::engine::gguf::GgufFile;
use crate::engine::import::{IMPORT_MARKER, MARKER_SOURCE_GGUF, MARKER_TINY_SEED, tiny_weights};
use crate::engine::llama::LlamaWeights;
use crate::models::{DEFAULT_MODEL, cache_root, gguf_path, model_dir};

/// Where the weights were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// A GGUF file.
    Gguf(PathBuf),
    /// The seeded tiny test model.
    Tiny(u64),
}

impl std::fmt::Display for WeightsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightsOrigin::Gguf(p) => write!(f, "{}", p.display()),
            WeightsOrigin::Tiny(seed) => write!(f, "tiny model (seed {seed})"),
        }
    }
}

/// Finds the weights of the model folder `dir`: `gguf` when given, else the folder's import
/// marker, else the default model's cached GGUF when `dir` is one of its imports.
pub fn locate(dir: &Path, gguf: Option<&Path>) -> Result<WeightsOrigin> {
    if let Some(g) = gguf {
        return Ok(WeightsOrigin::Gguf(g.to_path_buf()));
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(IMPORT_MARKER))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        if let Some(seed) = v.get(MARKER_TINY_SEED).and_then(serde_json::Value::as_u64) {
            return Ok(WeightsOrigin::Tiny(seed));
        }
        if let Some(p) = v
            .get(MARKER_SOURCE_GGUF)
            .and_then(serde_json::Value::as_str)
            && Path::new(p).is_file()
        {
            return Ok(WeightsOrigin::Gguf(PathBuf::from(p)));
        }
    }
    if let Ok(root) = cache_root() {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        let here = canon(dir);
        for format in ["f32", "q4", "ggml"] {
            if here.is_some() && here == canon(&model_dir(&root, &DEFAULT_MODEL, format)) {
                let g = gguf_path(&root, &DEFAULT_MODEL);
                if g.is_file() {
                    return Ok(WeightsOrigin::Gguf(g));
                }
            }
        }
    }
    bail!(
        "cannot find the weights {} was imported from; pass the GGUF with --gguf",
        dir.display()
    )
}

/// Loads the weights from `origin` (block formats stay as they are in the file).
pub fn load(origin: &WeightsOrigin) -> Result<LlamaWeights> {
    match origin {
        WeightsOrigin::Tiny(seed) => Ok(tiny_weights(*seed)),
        WeightsOrigin::Gguf(p) => GgufFile::open(p)
            .map_err(Into::into)
            .and_then(|f| f.load_llama())
            .with_context(|| format!("loading {}", p.display())),
    }
}
