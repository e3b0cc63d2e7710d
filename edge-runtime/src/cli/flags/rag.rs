//! The retrieval flags of `run` and `chat`: answer from the document index that
//! `thermo index add` built, citing its passages.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use edge_runtime::index::retrieve::DEFAULT_BUDGET_TOKENS;
use edge_runtime::index::{Mode, RetrievalOptions, Retriever};
use edge_runtime::session::rag::open_retriever;

/// Retrieval flags.
#[derive(Debug, Clone, Args)]
pub struct RagArgs {
    /// Put the document index's best passages into the prompt and cite them as [1] file:line
    /// (default index: index.sqlite in the thermo home; another one with --rag=FILE).
    #[arg(long, value_name = "INDEX", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub rag: Option<PathBuf>,
    /// Ranking of the passages: dense, keyword or hybrid.
    #[arg(long, default_value = "hybrid", value_name = "MODE")]
    pub rag_mode: Mode,
    /// Passages fetched (as many as fit --rag-tokens go into the prompt).
    #[arg(long, default_value_t = edge_runtime::index::rag::DEFAULT_PASSAGES, value_name = "N")]
    pub rag_k: usize,
    /// Tokens the passages may add to the prompt.
    #[arg(long, default_value_t = DEFAULT_BUDGET_TOKENS, value_name = "N")]
    pub rag_tokens: usize,
    /// Encoder folder the index was built with; default: all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    pub encoder: Option<PathBuf>,
}

impl RagArgs {
    /// The retriever when `--rag` was given.
    pub fn open(&self) -> Result<Option<Retriever>> {
        let Some(index) = &self.rag else {
            return Ok(None);
        };
        let index = (!index.as_os_str().is_empty()).then_some(index.as_path());
        let options = RetrievalOptions {
            mode: self.rag_mode,
            k: self.rag_k,
            budget_tokens: self.rag_tokens,
        };
        Ok(Some(open_retriever(
            index,
            self.encoder.as_deref(),
            options,
        )?))
    }
}
