//! `[model]`: which model the service loads, in which weight format, on how many threads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{KeyDoc, Problems, Section, doc, doc_eg};

/// `[model]`: which model the service loads and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// Model folder (ONNX + tokenizer); `None`: the default model, fetched on first use.
    pub dir: Option<PathBuf>,
    /// Weight format of the default model (`f32`, `q4`, `ggml`).
    pub format: String,
    /// The id clients name in `model`; `None`: the folder's name.
    pub id: Option<String>,
    /// Compute threads per generation.
    pub threads: usize,
    /// PEFT adapter folder (from `thermo train`) applied at start; `None`: the base model.
    pub adapter: Option<PathBuf>,
    /// Folder that adapters swapped in over the API must lie under (relative paths are
    /// resolved against it); `None`: any folder the service can read.
    pub adapters_dir: Option<PathBuf>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            dir: None,
            format: "ggml".into(),
            id: None,
            threads: 2,
            adapter: None,
            adapters_dir: None,
        }
    }
}

impl Section for ModelSection {
    const NAME: &'static str = "model";
    const DOCS: &'static [KeyDoc] = &[
        doc_eg(
            "dir",
            "Model folder (ONNX + tokenizer). Unset: the default model (SmolLM2-135M-Instruct) in \
             `format`, fetched and imported into $THERMO_HOME on first use.",
            "\"/var/lib/thermo/models/SmolLM2-135M-Instruct-ggml\"",
        ),
        doc(
            "format",
            "Weight format of the default model: \"f32\", \"q4\" or \"ggml\".",
        ),
        doc_eg(
            "id",
            "The model id clients send and /v1/models lists. Unset: the model folder's name.",
            "\"smollm2\"",
        ),
        doc("threads", "Compute threads per generation (1..=64)."),
        doc_eg(
            "adapter",
            "LoRA adapter folder (PEFT files from `thermo train`) applied at start. Unset: the \
             base model. POST /v1/adapter swaps it while the service runs.",
            "\"/var/lib/thermo/adapters/support-v2\"",
        ),
        doc_eg(
            "adapters_dir",
            "Folder that adapters swapped in over the API must lie under; relative paths in \
             requests are resolved against it. Unset: any folder the service can read.",
            "\"/var/lib/thermo/adapters\"",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if !matches!(self.format.as_str(), "f32" | "q4" | "ggml") {
            p.push(
                "model.format",
                format!("must be \"f32\", \"q4\" or \"ggml\", got {:?}", self.format),
            );
        }
        if !(1..=64).contains(&self.threads) {
            p.push(
                "model.threads",
                format!("must be in 1..=64, got {}", self.threads),
            );
        }
        if self.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
            p.push("model.id", "must not be empty");
        }
        if self
            .dir
            .as_deref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            p.push("model.dir", "must not be empty");
        }
        for (key, path) in [
            ("model.adapter", &self.adapter),
            ("model.adapters_dir", &self.adapters_dir),
        ] {
            if path.as_deref().is_some_and(|d| d.as_os_str().is_empty()) {
                p.push(key, "must not be empty");
            }
        }
    }
}
