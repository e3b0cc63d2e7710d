//! `thermo bench llm` (also spelt `thermo bench-llm`): prefill speed on 32- and 128-token prompts, decode speed over 64
//! tokens, and the process's peak resident memory, for one model folder and thread count.
//! Peak RSS is per process, so compare formats and thread counts by running it once for each
//! (`models/bench-llm.sh` does that, beside llama.cpp when it is installed).

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Args;
use serde::Serialize;

use super::process::peak_rss_bytes;
use crate::cli::flags::ModelArgs;
use edge_runtime::engine::model::{KvState, LoadedModel};
use edge_runtime::engine::sampling::argmax;
use edge_runtime::engine::set_compute_threads;

/// Flags of `thermo bench llm`.
#[derive(Debug, Args)]
pub struct BenchLlmArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed repetitions of each measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object instead of a table row.
    #[arg(long)]
    json: bool,
}

/// One benchmark result.
#[derive(Debug, Serialize)]
pub struct BenchLlmResult {
    /// Model folder.
    pub model: String,
    /// Compute threads.
    pub threads: usize,
    /// Prompt tokens per second, 32-token prompt.
    pub prefill32_tps: f64,
    /// Prompt tokens per second, 128-token prompt.
    pub prefill128_tps: f64,
    /// Generated tokens per second over 64 tokens after a 32-token prompt.
    pub decode64_tps: f64,
    /// Peak resident set size of the process, MB.
    pub peak_rss_mb: f64,
    /// Seconds to load the model folder (parse, optimise, plan), this process's one load.
    pub load_s: f64,
}

const TEXT: &str = "The Raspberry Pi is a series of small single-board computers developed in the \
United Kingdom. It is widely used in education, robotics and home automation because it is cheap, \
quiet and draws little power. Running a language model on such a board turns most of that power \
into heat, and the firmware slows the processor down when the chip gets too hot. A governor that \
paces the work can keep the temperature steady and the speed predictable, which is what a user \
of an offline assistant wants. ";

fn prompt_tokens(model: &LoadedModel, n: usize) -> Result<Vec<u32>> {
    let mut ids = vec![];
    while ids.len() < n {
        ids.extend(model.tokenizer.encode(TEXT)?);
    }
    ids.truncate(n);
    Ok(ids)
}

fn best_of<T>(repeat: usize, mut f: impl FnMut() -> Result<(f64, T)>) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..repeat.max(1) {
        best = best.max(f()?.0);
    }
    Ok(best)
}

/// Runs the measurements on a loaded model.
pub fn measure(
    model: &std::sync::Arc<LoadedModel>,
    threads: usize,
    repeat: usize,
    load_s: f64,
) -> Result<BenchLlmResult> {
    let mut state = KvState::new(model.clone())?;
    // Warm-up: first runs allocate and plan.
    state.forward(&prompt_tokens(model, 8)?)?;
    let mut prefill = |n: usize| -> Result<f64> {
        let ids = prompt_tokens(model, n)?;
        best_of(repeat, || {
            state.reset()?;
            let t = Instant::now();
            state.forward(&ids)?;
            Ok((n as f64 / t.elapsed().as_secs_f64(), ()))
        })
    };
    let prefill32_tps = prefill(32)?;
    let prefill128_tps = prefill(128)?;
    let ids = prompt_tokens(model, 32)?;
    let decode64_tps = best_of(repeat, || {
        state.reset()?;
        let mut logits = state.forward(&ids)?;
        let t = Instant::now();
        for _ in 0..64 {
            let next = argmax(&logits);
            logits = state.forward(&[next])?;
        }
        Ok((64.0 / t.elapsed().as_secs_f64(), ()))
    })?;
    let peak_rss_mb =
        peak_rss_bytes().context("peak RSS is not available (no /proc/self/status)")? as f64 / 1e6;
    Ok(BenchLlmResult {
        model: model.dir.display().to_string(),
        threads,
        prefill32_tps,
        prefill128_tps,
        decode64_tps,
        peak_rss_mb,
        load_s,
    })
}

/// `thermo bench llm`.
pub fn bench(args: BenchLlmArgs) -> Result<()> {
    ensure!(args.model.threads >= 1, "--threads must be at least 1");
    set_compute_threads(args.model.threads);
    let dir = args.model.resolve()?;
    let t = Instant::now();
    let model = LoadedModel::load(&dir)?;
    let load_s = t.elapsed().as_secs_f64();
    let r = measure(&model, args.model.threads, args.repeat, load_s)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
            r.model,
            r.threads,
            r.prefill32_tps,
            r.prefill128_tps,
            r.decode64_tps,
            r.peak_rss_mb,
            r.load_s
        );
    }
    Ok(())
}
