//! `thermo bench embed`: sentence-encoder throughput, texts per second, over the texts of a
//! file (one per line) embedded as `thermo embed` does (sorted by length, padded groups),
//! tokenization included; optionally the time per op of the encoder graph.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Args;
use serde::Serialize;

use crate::cli::embed::Precision;
use edge_runtime::engine::embed::Embedder;
use edge_runtime::engine::set_compute_threads;
use edge_runtime::session::rag::encoder_folder;

/// Flags of `thermo bench embed`.
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Encoder folder; default: all-MiniLM-L6-v2, fetched and checked on first use.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// The texts, one per line (empty lines skipped).
    #[arg(long, value_name = "FILE")]
    texts: PathBuf,
    /// Compute threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Weights of the encoder layers.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Timed passes over all the texts after one untimed pass (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also print the time per op of one pass to stderr, longest first.
    #[arg(long)]
    profile: bool,
}

/// One benchmark result.
#[derive(Debug, Serialize)]
pub struct BenchEmbedResult {
    /// Compute threads.
    pub threads: usize,
    /// `f32` or `q8`.
    pub precision: String,
    /// Texts per pass.
    pub texts: usize,
    /// Word pieces per pass, special tokens included.
    pub tokens: usize,
    /// Texts embedded per second, best pass.
    pub texts_per_s: f64,
}

/// Runs `thermo bench embed`, printing one JSON object.
pub fn bench(args: BenchEmbedArgs) -> Result<()> {
    ensure!(args.threads >= 1, "--threads must be at least 1");
    set_compute_threads(args.threads);
    let (dir, _) = encoder_folder(args.model.as_deref())?;
    let encoder = Embedder::load_with(&dir, args.precision.into())?;
    let file = std::fs::read_to_string(&args.texts)
        .with_context(|| format!("reading {}", args.texts.display()))?;
    let texts: Vec<&str> = file.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(!texts.is_empty(), "{} holds no text", args.texts.display());
    let tokens = texts
        .iter()
        .map(|t| encoder.token_ids(t).map(|ids| ids.len()))
        .sum::<Result<usize>>()?;
    encoder.embed_batch(&texts)?;
    let mut best = f64::INFINITY;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        encoder.embed_batch(&texts)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    if args.profile {
        let ids = texts
            .iter()
            .map(|t| encoder.token_ids(t))
            .collect::<Result<Vec<_>>>()?;
        let times = encoder.profile_ids(&ids)?;
        let total: f64 = times.iter().map(|(_, d)| d.as_secs_f64()).sum();
        for (op, d) in times {
            let s = d.as_secs_f64();
            eprintln!("{op:<32} {:>9.2} ms {:>5.1} %", s * 1e3, 100.0 * s / total);
        }
    }
    let r = BenchEmbedResult {
        threads: args.threads,
        precision: format!("{:?}", args.precision).to_lowercase(),
        texts: texts.len(),
        tokens,
        texts_per_s: texts.len() as f64 / best,
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
