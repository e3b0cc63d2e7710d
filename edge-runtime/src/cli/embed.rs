//! `thermo embed TEXT...`: one unit vector per text from the sentence encoder
//! (all-MiniLM-L6-v2 unless `--model` names another folder), printed as JSON in the layout of
//! OpenAI's embeddings response; or the texts' word-piece ids (`--tokenize`), or the encoder's
//! f32 graph as an ONNX file (`--export-onnx`). A closed stdout ends it quietly.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use edge_runtime::engine::embed::{EmbedPrecision, Embedder, export_onnx};
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
    /// Weights of the encoder layers: `f32`, or `q8` (Q8_0 blocks, a quarter of the memory,
    /// decoded to f32 for each product; within cosine 0.995 of f32 at about its speed).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Print each text's word-piece ids (a JSON array of arrays) instead of its vector.
    #[arg(long, hide = true)]
    tokenize: bool,
    /// Write the encoder's f32 graph to FILE as ONNX (inputs `input_ids`, `attention_mask`,
    /// `position_ids`; output `embeddings`) and embed nothing.
    #[arg(long, value_name = "FILE", conflicts_with = "texts")]
    export_onnx: Option<PathBuf>,
    /// The texts to embed, one vector each.
    #[arg(required_unless_present = "export_onnx", value_name = "TEXT")]
    texts: Vec<String>,
}

/// `--precision` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// f32 weights and products.
    F32,
    /// Q8_0 weight blocks, decoded to f32 for each product.
    Q8,
}

impl From<Precision> for EmbedPrecision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => EmbedPrecision::F32,
            Precision::Q8 => EmbedPrecision::Q8,
        }
    }
}

/// Runs `thermo embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    set_compute_threads(args.threads.max(1));
    let (dir, name) = encoder_folder(args.model.as_deref())?;
    if let Some(out) = &args.export_onnx {
        return export_onnx(&dir, out);
    }
    let encoder = Embedder::load_with(&dir, args.precision.into())?;
    let ids = args
        .texts
        .iter()
        .map(|t| encoder.token_ids(t))
        .collect::<Result<Vec<_>>>()?;
    let out = if args.tokenize {
        json!(ids)
    } else {
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let data: Vec<_> = encoder
            .embed_ids(&ids)?
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| {
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        json!({
            "object": "list",
            "model": name,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })
    };
    print_quietly(&out)
}

/// Writes `value` and a newline to stdout; a reader that has gone away (`| head`) is not an
/// error.
fn print_quietly(value: &serde_json::Value) -> Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{value}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
