//! Sentence embeddings on tract: a BERT encoder folder as sentence-transformers ships one
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`; the
//! layout of all-MiniLM-L6-v2) imported into the ONNX graph of
//! [`bert`](crate::engine::onnx_export::bert) when it loads: word pieces in, one unit-length
//! vector per text out, the mean of the token states as sentence-transformers pools them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, ensure};
use tokenizers::{Tokenizer, TruncationParams};
use tract_onnx::prelude::*;

use crate::engine::onnx_export::bert::{BertConfig, BertWeights, bert_model_proto};

/// Largest `model.safetensors` read, bytes.
pub const MAX_WEIGHTS_BYTES: u64 = 2 << 30;
/// Longest text embedded, in bytes; the tokens beyond the model's window are cut anyway.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Tokens per text when the folder does not say (`sentence_bert_config.json`).
const DEFAULT_MAX_TOKENS: usize = 256;

/// A loaded sentence encoder.
pub struct Embedder {
    plan: Arc<TypedSimplePlan>,
    tokenizer: Tokenizer,
    dim: usize,
    max_tokens: usize,
    vocab: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the encoder folder at `dir`, building its graph.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
        };
        let config: BertConfig =
            serde_json::from_slice(&read("config.json")?).context("parsing config.json")?;
        config.validate()?;
        let max_tokens = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map_or(DEFAULT_MAX_TOKENS, |m| m as usize)
            .clamp(2, config.max_position_embeddings);
        let weights_path = dir.join("model.safetensors");
        let size = std::fs::metadata(&weights_path)
            .with_context(|| format!("reading {}", weights_path.display()))?
            .len();
        ensure!(
            size <= MAX_WEIGHTS_BYTES,
            "{} is {size} bytes, above the {MAX_WEIGHTS_BYTES} an encoder may take",
            weights_path.display()
        );
        let weights = BertWeights::from_safetensors(config.clone(), &read("model.safetensors")?)
            .with_context(|| format!("loading {}", weights_path.display()))?;
        let proto = bert_model_proto(&weights)?;
        drop(weights);
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.into_optimized())
            .context("building the encoder graph")?;
        drop(proto);
        let plan = TypedSimplePlan::new(model).context("planning the encoder")?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| anyhow!("invalid tokenizer.json: {e}"))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| anyhow!("tokenizer.json: {e}"))?;
        Ok(Self {
            plan,
            tokenizer,
            dim: config.hidden_size,
            max_tokens,
            vocab: config.vocab_size,
        })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens of a text the encoder reads; the rest is cut.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Word-piece ids of `text` with the encoder's special tokens, cut to its window.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        ensure!(
            text.len() <= MAX_TEXT_BYTES,
            "a text to embed is {} bytes, above {MAX_TEXT_BYTES}",
            text.len()
        );
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let ids = enc.get_ids().to_vec();
        check_ids(&ids, self.vocab)?;
        Ok(ids)
    }

    /// The unit vector of one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.token_ids(text)?;
        let n = ids.len();
        ensure!(n > 0, "the tokenizer gave no tokens");
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let mask = vec![1i64; n];
        let positions: Vec<i64> = (0..n as i64).collect();
        let input = |v: &[i64]| Tensor::from_shape(&[1, n], v).map(IntoTValue::into_tvalue);
        let out = self
            .plan
            .run(tvec![input(&ids)?, input(&mask)?, input(&positions)?])
            .context("running the encoder")?;
        let v = out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(v.len() == self.dim, "the encoder gave {} values", v.len());
        Ok(v)
    }
}

/// Refuses a token id beyond the encoder's word table (a `tokenizer.json` that does not
/// belong to the weights), which the graph's lookup would otherwise read out of bounds.
fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        anyhow::bail!(
            "token id {id} is outside the encoder's {vocab} words: tokenizer.json does not match config.json"
        );
    }
    Ok(())
}

/// Cosine similarity of two vectors (their dot product when both have unit length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_the_encoder_files_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Embedder::load(dir.path())
            .expect_err("empty folder")
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 0}").expect("write");
        assert!(Embedder::load(dir.path()).is_err());
    }

    #[test]
    fn a_token_id_beyond_the_word_table_is_an_error() {
        assert!(check_ids(&[0, 5, 9], 10).is_ok());
        let err = check_ids(&[0, 10], 10)
            .expect_err("out of range")
            .to_string();
        assert!(err.contains("token id 10"), "{err}");
    }

    #[test]
    fn cosine_of_parallel_opposite_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
