//! `thermo embed TEXT...`: one unit vector per text from the sentence encoder
//! (all-MiniLM-L6-v2 unless `--model` names another folder), printed as JSON in the layout of
//! OpenAI's embeddings response.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use edge_runtime::engine::embed::Embedder;
use edge_runtime::engine::set_compute_threads;
use edge_runtime::session::rag::encoder_folder;

/// Flags of `thermo embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Encoder folder (sentence-transformers layout); default: all-MiniLM-L6-v2, fetched and
    /// checked on first use.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Compute threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The texts to embed, one vector each.
    #[arg(required = true, value_name = "TEXT")]
    texts: Vec<String>,
}

/// Runs `thermo embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    set_compute_threads(args.threads.max(1));
    let (dir, name) = encoder_folder(args.model.as_deref())?;
    let encoder = Embedder::load(&dir)?;
    let mut data = Vec::with_capacity(args.texts.len());
    let mut tokens = 0;
    for (index, text) in args.texts.iter().enumerate() {
        tokens += encoder.token_ids(text)?.len();
        data.push(json!({
            "object": "embedding",
            "index": index,
            "embedding": encoder.embed(text)?,
        }));
    }
    let out = json!({
        "object": "list",
        "model": name,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    println!("{out}");
    Ok(())
}
