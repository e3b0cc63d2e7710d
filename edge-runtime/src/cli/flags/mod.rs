//! Flag groups several commands share, each mapped onto the library's plain options or
//! merged onto a configuration section: the model and sampling flags here, the governor
//! (`governor`), telemetry (`telemetry`), eco accounting (`accounting`), retrieval (`rag`)
//! and configuration (`config`) flags in their files. Commands import these; these import no
//! command.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use edge_runtime::config::{Config, Layers};
use edge_runtime::eco::EcoConfig;

pub mod accounting;
pub mod config;
pub mod governor;
pub mod rag;
pub mod telemetry;
pub mod when;

use accounting::FootprintArgs;
use telemetry::TelemetryArgs;

/// Which model to use and how to sample from it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model folder (ONNX + tokenizer); default: the imported default model, fetched if absent.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Weight format of the default model to use or import (f32, q4, ggml).
    #[arg(long, default_value = "ggml", value_name = "FORMAT")]
    pub format: String,
    /// Compute threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

impl ModelArgs {
    /// The model folder these flags name (the default model fetched on first use).
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        edge_runtime::session::model::resolve_model(self.model.as_deref(), &self.format)
    }
}

/// Sampling and length flags shared by `run` and `chat`.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose probabilities sum to P.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Penalise tokens seen in the last 64 (1.0: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (sampling is reproducible for a given seed).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// System message (default: the one the model's chat template provides).
    #[arg(long)]
    pub system: Option<String>,
    /// End the answer when this string appears (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
}

/// Replaces `field` with the flag's value when the flag was given.
pub fn merge<T>(field: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *field = v;
    }
}

/// The main job's configuration: the `--config` file, else `/etc/thermo/thermo.toml` when
/// it exists (the service's file) < `THERMO_<SECTION>_<KEY>` < the flags (`eco` puts the
/// `[eco]` flags over it). `run`, `chat` and `train` use its `[eco]` and `[telemetry]`
/// sections.
pub fn main_job_config(
    footprint: &FootprintArgs,
    eco: impl FnOnce(&mut EcoConfig),
    telemetry: &TelemetryArgs,
) -> Result<Config> {
    let layers = Layers::from_process(footprint.config.as_deref(), vec![])?;
    Ok(Config::load_with(&layers, |config| {
        eco(&mut config.eco);
        telemetry.merge_onto(&mut config.telemetry);
    })?)
}
