//! `thermo bench train` (also spelt `thermo train --bench`): seconds, CPU seconds and estimated joules per optimizer step on
//! the run's model and data, for adapters on all layers against adapters on the top N
//! layers, with the peak resident memory of each, as a Markdown table. Nothing is written
//! to the output folder.
//!
//! Joules come from the governor's board meter when the governor runs (a power sensor,
//! RAPL, or the board's power model times CPU time, whichever the board offers), otherwise
//! from a meter of the same kind opened here; the table names the source used.

use std::time::Instant;

use anyhow::{Context, Result};

use super::process::{cpu_seconds, peak_rss_bytes, reset_peak_rss};

use edge_runtime::eco::energy::MeterHandle;
use edge_runtime::train::data::Example;
use edge_runtime::train::lora::LoraConfig;
use edge_runtime::train::model::BaseModel;
use edge_runtime::train::trainer::{TrainOptions, Trainer};

/// One configuration's figures.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Adapted layers, e.g. `all 30` or `top 4`.
    pub layers: String,
    /// Measured optimizer steps.
    pub steps: usize,
    /// Mean tokens per step.
    pub tokens_per_step: f64,
    /// Mean wall seconds per step.
    pub seconds_per_step: f64,
    /// Mean CPU seconds per step (all threads).
    pub cpu_seconds_per_step: Option<f64>,
    /// Mean estimated joules per step.
    pub joules_per_step: f64,
    /// Where the joules came from.
    pub energy_source: String,
    /// Peak resident memory while this configuration ran, MB.
    pub peak_rss_mb: Option<f64>,
}

/// Runs `steps` measured optimizer steps (after one unmeasured warm-up step) of a fresh
/// trainer with `lora` and `options`, metered by `meter`.
pub fn bench_config(
    model: &BaseModel,
    options: &TrainOptions,
    lora: LoraConfig,
    train: &[Example],
    steps: usize,
    meter: &MeterHandle,
) -> Result<BenchRow> {
    let layers = if lora.layers.len() == model.config.num_hidden_layers {
        format!("all {}", lora.layers.len())
    } else {
        format!("top {}", lora.layers.len())
    };
    let options = TrainOptions {
        lora,
        steps: steps + 1,
        ..options.clone()
    };
    let rss_reset = reset_peak_rss();
    let mut trainer = Trainer::new(model, options, train.to_vec(), vec![])?;
    trainer
        .warm_frozen_cache()
        .context("caching the frozen layers' states")?;
    trainer.step().context("the warm-up step")?;
    meter.poll();
    let mark = meter.mark();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tokens = 0usize;
    for _ in 0..steps {
        tokens += trainer.step()?.tokens;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / steps as f64),
        _ => None,
    };
    meter.poll();
    let span = meter.since(&mark);
    Ok(BenchRow {
        layers,
        steps,
        tokens_per_step: tokens as f64 / steps as f64,
        seconds_per_step: wall / steps as f64,
        cpu_seconds_per_step: cpu,
        joules_per_step: span.energy_j / steps as f64,
        energy_source: span.source.to_string(),
        peak_rss_mb: if rss_reset {
            peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0))
        } else {
            None
        },
    })
}

/// The Markdown table of `rows`.
pub fn markdown(rows: &[BenchRow], seq_len: usize, threads: usize) -> String {
    let mut out = format!(
        "Training step benchmark: packed rows of up to {seq_len} tokens, {threads} compute \
         thread(s)\n\n\
         | adapted layers | steps | tokens/step | s/step | CPU s/step | J/step (est.) | energy source | peak RSS (MB) |\n\
         |---|---:|---:|---:|---:|---:|---|---:|\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {} | {:.1} | {} | {} |\n",
            r.layers,
            r.steps,
            r.tokens_per_step,
            r.seconds_per_step,
            r.cpu_seconds_per_step
                .map_or("n/a".into(), |c| format!("{c:.2}")),
            r.joules_per_step,
            r.energy_source,
            r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0}")),
        ));
    }
    out
}

/// The LoRA shape and the length of the training benchmark.
#[derive(Debug, Clone, Copy)]
pub struct TrainBench {
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f32,
    /// Dropout on the adapters' input.
    pub dropout: f32,
    /// Top layers of the second configuration.
    pub top: usize,
    /// Measured optimizer steps per configuration (after one warm-up step).
    pub steps: usize,
}

/// Benchmarks adapters on the top `bench.top` layers, then on all layers, of `base` with
/// `options` on `data`, metered by `meter`, and prints the table.
pub fn run(
    bench: &TrainBench,
    base: &BaseModel,
    options: &TrainOptions,
    data: &[Example],
    meter: &MeterHandle,
) -> Result<()> {
    let layers = base.config.num_hidden_layers;
    let targets = options.lora.targets.clone();
    let mut rows = vec![];
    // Top-N first: the peak RSS of the second configuration includes what the first left.
    for top in [Some(bench.top.min(layers)), None] {
        let lora = LoraConfig::new(
            bench.rank,
            bench.alpha,
            bench.dropout,
            targets.clone(),
            layers,
            top,
        )?;
        eprintln!("benchmarking {} adapted layer(s) ...", lora.layers.len());
        rows.push(bench_config(
            base,
            options,
            lora,
            data,
            bench.steps.max(1),
            meter,
        )?);
    }
    print!("{}", markdown(&rows, options.seq_len, compute_threads()));
    Ok(())
}

/// Compute threads candle's matrix products use (`RAYON_NUM_THREADS`, else all cores).
pub fn compute_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_configuration() {
        let row = |layers: &str, s| BenchRow {
            layers: layers.into(),
            steps: 3,
            tokens_per_step: 126.0,
            seconds_per_step: s,
            cpu_seconds_per_step: Some(2.0 * s),
            joules_per_step: 3.0 * s,
            energy_source: "power model x CPU time".into(),
            peak_rss_mb: None,
        };
        let t = markdown(&[row("all 30", 2.5), row("top 4", 0.8)], 128, 2);
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[1].contains("| all 30 | 3 | 126 | 2.50 | 5.00 | 7.5 |"));
        assert!(lines[2].contains("| top 4 | 3 | 126 | 0.80 | 1.60 | 2.4 |"));
        assert!(lines[2].ends_with("| n/a |"));
    }
}
