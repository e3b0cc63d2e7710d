//! `[rag]`: retrieval from the document index in `thermo serve` (which index, which encoder,
//! whether chat requests retrieve unless they say otherwise, how many passages in how many
//! tokens) and the `/v1/embeddings` endpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{KeyDoc, Problems, Section, doc, doc_eg};

/// Rankings a search may use.
pub const RAG_MODES: [&str; 3] = ["dense", "keyword", "hybrid"];

/// `[rag]`: retrieval in the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagSection {
    /// The index file; `None`: `index.sqlite` in the thermo home.
    pub index: Option<PathBuf>,
    /// Encoder folder the index was built with; `None`: all-MiniLM-L6-v2.
    pub encoder: Option<PathBuf>,
    /// Chat requests retrieve unless they send `"rag": false`.
    pub chat_default: bool,
    /// Ranking: `dense`, `keyword` or `hybrid`.
    pub mode: String,
    /// Passages fetched per question.
    pub passages: usize,
    /// Tokens the passages may add to a prompt.
    pub budget_tokens: usize,
    /// Serve `POST /v1/embeddings`.
    pub embeddings: bool,
}

impl Default for RagSection {
    fn default() -> Self {
        RagSection {
            index: None,
            encoder: None,
            chat_default: false,
            mode: "hybrid".into(),
            passages: 3,
            budget_tokens: 768,
            embeddings: true,
        }
    }
}

impl Section for RagSection {
    const NAME: &'static str = "rag";
    const DOCS: &'static [KeyDoc] = &[
        doc_eg(
            "index",
            "The document index file `thermo index add` builds. Unset: index.sqlite in \
             $THERMO_HOME. Opened on the first request that retrieves; changes made by \
             `thermo index watch` are picked up on the next one.",
            "\"/var/lib/thermo/index.sqlite\"",
        ),
        doc_eg(
            "encoder",
            "Sentence-encoder folder the index was built with. Unset: all-MiniLM-L6-v2, \
             fetched and checked on first use.",
            "\"/var/lib/thermo/embed/all-MiniLM-L6-v2\"",
        ),
        doc(
            "chat_default",
            "Chat requests retrieve passages and cite them unless they send \"rag\": false. \
             Off: only requests that send \"rag\": true retrieve.",
        ),
        doc(
            "mode",
            "Ranking of the passages: \"dense\", \"keyword\" or \"hybrid\" (both, fused).",
        ),
        doc("passages", "Passages fetched per question (1..=20)."),
        doc(
            "budget_tokens",
            "Tokens the passages and their instruction may add to a prompt (16..=32768); \
             service.max_prompt_tokens and the model's context bound it too.",
        ),
        doc(
            "embeddings",
            "Serve POST /v1/embeddings (OpenAI-compatible) with the encoder.",
        ),
    ];

    fn check(&self, p: &mut Problems) {
        if !RAG_MODES.contains(&self.mode.as_str()) {
            p.push(
                "rag.mode",
                format!(
                    "must be \"dense\", \"keyword\" or \"hybrid\", got {:?}",
                    self.mode
                ),
            );
        }
        if !(1..=20).contains(&self.passages) {
            p.push(
                "rag.passages",
                format!("must be in 1..=20, got {}", self.passages),
            );
        }
        if !(16..=32_768).contains(&self.budget_tokens) {
            p.push(
                "rag.budget_tokens",
                format!("must be in 16..=32768, got {}", self.budget_tokens),
            );
        }
        for (key, path) in [("rag.index", &self.index), ("rag.encoder", &self.encoder)] {
            if path.as_deref().is_some_and(|d| d.as_os_str().is_empty()) {
                p.push(key, "must not be empty");
            }
        }
    }
}
