//! The inference engine: the only code that imports tract. It loads a decoder-only
//! transformer from an ONNX model folder (Hugging Face Optimum layout), runs prefill and
//! incremental decode with the KV cache fed back, samples, and imports GGUF files into that
//! layout. Nothing here knows about temperatures, telemetry or the network.
pub mod chat;
pub mod generate;
pub mod gguf;
pub mod hf_files;
pub mod import;
pub mod llama;
pub mod model;
pub mod onnx_export;
pub mod quant;
pub mod sampling;
pub mod tokenizer;

pub use onnx_export::WeightFormat;

/// Sets how many threads tract's matrix products use from now on, process-wide.
pub fn set_compute_threads(threads: usize) {
    use tract_linalg::multithread::{Executor, set_default_executor};
    if threads <= 1 {
        set_default_executor(Executor::SingleThread);
    } else {
        set_default_executor(Executor::multithread(threads));
    }
}
