//! The inference engine: the only code that imports tract. It loads a decoder-only
//! transformer from an ONNX model folder (Hugging Face Optimum layout), runs prefill and
//! incremental decode with the KV cache fed back, samples, and imports GGUF files into that
//! layout. Nothing here knows about temperatures, telemetry or the network.
pub mod bert_attention;
pub mod bert_dense;
pub mod chat;
pub mod embed;
pub mod generate;
pub mod ggml_op;
pub mod gguf;
pub mod gguf_llama;
pub mod hf_files;
pub mod import;
pub mod kernels;
pub mod kv_attention;
pub mod llama;
pub mod model;
pub mod onnx_export;
pub mod quant;
pub mod row_pool;
pub mod sampling;
pub mod tokenizer;

pub use onnx_export::WeightFormat;

/// Sets how many threads tract's matrix products use from now on, process-wide.
pub fn set_compute_threads(threads: usize) {
    use tract_linalg::multithread::set_default_executor;
    set_default_executor(executor(threads));
}

fn executor(threads: usize) -> tract_linalg::multithread::Executor {
    use tract_linalg::multithread::Executor;
    if threads <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(threads)
    }
}

/// Switches tract's thread count between steps without rebuilding a thread pool each time:
/// every pool size used once is kept (idle pool threads sleep), so a governor that moves
/// between 1 and N threads costs one pointer swap per change.
#[derive(Debug)]
pub struct ComputeThreads {
    pools: Vec<Option<tract_linalg::multithread::Executor>>,
    current: usize,
}

impl ComputeThreads {
    /// Starts at `threads` (at least 1), the most this will ever use being `max`.
    pub fn new(threads: usize, max: usize) -> Self {
        let max = max.max(1);
        let mut pools = vec![None; max];
        let current = threads.clamp(1, max);
        let exec = executor(current);
        tract_linalg::multithread::set_default_executor(exec.clone());
        pools[current - 1] = Some(exec);
        Self { pools, current }
    }

    /// Threads in use now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Uses `threads` (clamped to `1..=max`) from the next matrix product on; a no-op when
    /// unchanged.
    pub fn set(&mut self, threads: usize) {
        let n = threads.clamp(1, self.pools.len());
        if n == self.current {
            return;
        }
        let slot = &mut self.pools[n - 1];
        let exec = slot.get_or_insert_with(|| executor(n)).clone();
        tract_linalg::multithread::set_default_executor(exec);
        self.current = n;
    }
}

#[cfg(test)]
mod tests {
    use super::ComputeThreads;

    #[test]
    fn thread_count_is_clamped_to_the_configured_range() {
        let mut t = ComputeThreads::new(2, 2);
        assert_eq!(t.current(), 2);
        t.set(8);
        assert_eq!(t.current(), 2);
        t.set(0);
        assert_eq!(t.current(), 1);
        t.set(2);
        assert_eq!(t.current(), 2);
    }
}
