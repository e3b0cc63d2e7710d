//! The inference engine: the only code that imports tract. It loads a decoder-only
//! transformer from an ONNX model folder (Hugging Face Optimum layout), runs prefill and
//! incremental decode with the KV cache fed back, samples, and imports GGUF files into that
//! layout. Nothing here knows about temperatures, telemetry or the network.
pub mod chat;
pub mod gguf;
pub mod hf_files;
pub mod llama;
pub mod quant;
pub mod sampling;
