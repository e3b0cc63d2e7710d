//! `thermo embed TEXT...`: one unit vector per text from the sentence encoder
//! (all-MiniLM-L6-v2 unless `--model` names another folder), printed as JSON in the layout of
//! OpenAI's embeddings response.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::json;

use edge_runtime::engine::embed::Embedder;
use edge_runtime::engine::set_compute_threads;
use edge_runtime::models::{EMBED_MODEL, cache_root, ensure_embed_model};

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

/// The encoder folder `model` names (else the default, fetched and checked on first use)
/// and its name.
pub fn encoder_folder(model: Option<&Path>) -> Result<(PathBuf, String)> {
    Ok(match model {
        Some(dir) => {
            let name = dir
                .file_name()
                .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
            (dir.to_path_buf(), name)
        }
        None => (
            ensure_embed_model(&cache_root()?, &EMBED_MODEL)?,
            EMBED_MODEL.name.to_string(),
        ),
    })
}

/// Runs `thermo embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    set_compute_threads(args.threads.max(1));
    let (dir, name) = encoder_folder(args.model.as_deref())?;
    let encoder = Embedder::load(&dir)?;
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let ids = texts
        .iter()
        .map(|t| encoder.token_ids(t))
        .collect::<Result<Vec<_>>>()?;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let data: Vec<_> = encoder
        .embed_ids(&ids)?
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| {
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let out = json!({
        "object": "list",
        "model": name,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    println!("{out}");
    Ok(())
}
