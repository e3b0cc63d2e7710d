//! `thermo perplexity`: perplexity of a text file the way llama.cpp's `llama-perplexity`
//! computes it (see `eco::perplexity`), printed as `PPL = x.xxxx`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::flags::ModelArgs;
use edge_runtime::eco::perplexity::{bos_if_added, perplexity, tokenize};
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::set_compute_threads;

/// Flags of `thermo perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long, default_value_t = 512, value_name = "N")]
    ctx: usize,
    /// The text to score (UTF-8).
    file: PathBuf,
}

/// Runs `thermo perplexity`.
pub fn run(args: PerplexityArgs) -> Result<()> {
    set_compute_threads(args.model.threads.max(1));
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let dir = args.model.resolve()?;
    let model = LoadedModel::load(&dir)?;
    let bos = bos_if_added(&model)?;
    let tokens = tokenize(&model, &text, bos)?;
    let mut state = KvState::new(model)?;
    let p = perplexity(&mut state, &tokens, args.ctx, bos, &mut |c, ppl| {
        eprint!("[{c}]{ppl:.4} ");
    })?;
    eprintln!();
    println!(
        "tokens = {}, chunks = {}, scored = {}, add_bos = {}",
        p.tokens,
        p.chunks,
        p.scored,
        bos.is_some()
    );
    println!("PPL = {:.4}", p.ppl);
    Ok(())
}
